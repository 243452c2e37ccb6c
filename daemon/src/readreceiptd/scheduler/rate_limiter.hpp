// RateLimiter: the client-side limit shared by ALL DingTalk calls (token and
// query, every page). It never grants more than
// max(1, floor(rate)) calls in any 1 s window (a sliding-window log of the
// grants), and it keeps 1/rate between grants so that calls are spread over
// the window instead of leaving in bursts. DingTalk counts calls as they
// arrive, after a network delay that varies from call to call; each grant is
// therefore counted for k_arrival_margin longer than the 1 s window, so that
// the arrivals stay within the limit too.
//
// Throttling answers slow all calls down and the rate recovers gradually
// (AIMD): on_throttled() halves the effective rate and pauses every call for
// k_throttle_pause (DingTalk's guidance: wait about 1 s after a QPS error);
// on_success() raises the rate again by k_recovery_per_second of the
// configured rate per second elapsed, up to the configured rate.
//
// Time comes in as arguments (no clock reads). If the time goes backwards
// (a wall-clock step), everything recorded is shifted back by the same amount,
// so the limiter neither stalls until the clock catches up nor forgets the
// calls it just granted.
//
// Not thread-safe: owned by the scheduler loop.
#pragma once

#include "readreceiptd/common/clock.hpp"

#include <cstddef>
#include <deque>
#include <optional>

namespace rrd::scheduler {

class RateLimiter {
public:
  // The window in which at most capacity() calls are granted.
  static constexpr Millis k_window{1'000};
  // How much longer than k_window a grant is counted (see above): calls
  // whose network delays differ by less than this still arrive within the
  // limit. The price: at full demand, k_window / (k_window + margin) of the
  // configured rate.
  static constexpr Millis k_arrival_margin{100};
  static constexpr Millis k_counted_window = k_window + k_arrival_margin;
  // How long every call waits after a throttling answer.
  static constexpr Millis k_throttle_pause{1'000};
  // Throttling answers that arrive within this long of the last decrease
  // belong to the same episode (calls already in flight) and do not halve the
  // rate again; they only extend the pause.
  static constexpr Millis k_decrease_hold{1'000};
  // The effective rate never falls below this (or the configured rate, if
  // lower). One call a second is what DingTalk asks for after a QPS error;
  // with the pause after each throttle, a persistently throttled daemon makes
  // at most about one call every 2 s, and token refreshes still get through.
  static constexpr double k_min_rate = 1.0;
  // Additive increase: this fraction of the configured rate per second.
  static constexpr double k_recovery_per_second = 0.1;
  // A configured rate that is not positive is treated as this.
  static constexpr double k_min_configured_rate = 0.01;

  // REQUIRES: requests_per_second > 0 (smaller values are raised to
  // k_min_configured_rate).
  explicit RateLimiter(double requests_per_second);

  // Grants one call at `now` if the limit allows it, and records it.
  bool try_acquire(TimePoint now);

  // The earliest time >= now at which try_acquire would succeed, if nothing
  // else changes in between. (If `now` lies before a time already seen, the
  // answer assumes the clock stepped back at `now`; the first mutating call
  // after a step back fixes where it stepped.)
  TimePoint next_allowed(TimePoint now) const;

  // A throttling answer (403 Qps/ApiCountLimit, 429, an HTML page) arrived.
  void on_throttled(TimePoint now);
  // A call completed without being throttled.
  void on_success(TimePoint now);

  double configured_rate() const { return m_configured; }
  double effective_rate() const { return m_rate; }
  // Calls granted per window at the current effective rate: max(1, floor(rate)).
  std::size_t capacity() const;
  // True while the pause after a throttling answer lasts.
  bool paused(TimePoint now) const;
  // When the last throttling answer arrived (as given to on_throttled());
  // nullopt before the first.
  std::optional<TimePoint> last_throttled() const { return m_last_throttled; }

private:
  // The minimum time between two grants: 1/rate (whole milliseconds).
  Millis spacing() const;
  // How far `now` lies before the latest time seen (zero if it does not).
  Millis backwards_shift(TimePoint now) const;
  // Shifts recorded times back if `now` went backwards; remembers `now`.
  void observe(TimePoint now);

  double m_configured;
  double m_rate;
  std::deque<TimePoint> m_grants; // ascending; only the last k_window matters
  std::optional<TimePoint> m_last_grant;
  std::optional<TimePoint> m_last_seen;
  std::optional<TimePoint> m_last_decrease;
  std::optional<TimePoint> m_last_throttled;
  TimePoint m_paused_until{};
  TimePoint m_last_adjust{}; // last change of m_rate (or success at full rate)
};

} // namespace rrd::scheduler
