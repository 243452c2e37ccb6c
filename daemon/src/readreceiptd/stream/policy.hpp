// The Stream connection's timing rules (SPEC section 10) as pure functions:
// when to try again after a failed or lost connection, and when a quiet
// connection gets a WebSocket ping or is given up as dead.
//
// Thread-safety: pure functions of their arguments.
#pragma once

#include "readreceiptd/common/clock.hpp"

#include <optional>

namespace rrd::stream {

// Reconnects wait 1 s, doubling up to 60 s, each ±20% jitter; a connection
// that lasted k_stable_after resets the wait to 1 s.
inline constexpr Millis k_first_retry{1'000};
inline constexpr Millis k_max_retry{60'000};
inline constexpr Millis k_stable_after{60'000};
inline constexpr double k_retry_jitter = 0.2;
// A WebSocket ping after this long without a frame; the connection is dead
// when no frame (the pong or anything else) follows within k_pong_timeout.
inline constexpr Millis k_ping_after{60'000};
inline constexpr Millis k_pong_timeout{5'000};

// The wait before attempt number `failures` + 1, after `failures` (>= 1)
// failed attempts in a row. `jitter` is uniform in [0, 1). A refusal of the
// credentials waits the longest step whatever the count.
Millis reconnect_delay(int failures, bool credentials_refused, double jitter);

// The failure count after a connection that had opened was lost having
// lasted `lasted`: 1 (a fresh start) when it was stable, else one more.
int failures_after_loss(int failures_before, Millis lasted);

// What a connection's keep-alive calls for at `now`.
struct KeepAlive {
  enum class Action { wait, send_ping, dead };
  Action action = Action::wait;
  TimePoint next; // when to ask again (wait / send_ping)
};
// `last_frame`: when the last frame arrived (or the connection opened);
// `ping_sent`: when the unanswered ping went out, if one is out.
KeepAlive keep_alive(TimePoint now, TimePoint last_frame, std::optional<TimePoint> ping_sent);

} // namespace rrd::stream
