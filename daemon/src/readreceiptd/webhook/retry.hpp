// The webhook retry schedule (the README's "Webhook events"). A delivery gets
// k_max_attempts attempts: after attempt n (n = 1..9) fails, the next waits
// k_retry_delays[n-1], give or take k_retry_jitter; when attempt 10 fails the
// event is dead.
//
// Retry-After: on a 429 or 503 answer carrying a Retry-After header, the next
// attempt waits what the server asked for instead of the schedule's delay,
// without jitter, but at least k_min_retry_after (a "Retry-After: 0" must not
// turn into a tight loop) and at most k_max_retry_after (a server asking for
// a week does not park the message's queue for a week). The attempt still
// counts towards k_max_attempts.
//
// Pure functions; thread-safe.
#pragma once

#include "readreceiptd/common/clock.hpp"

#include <array>
#include <optional>

namespace rrd::webhook {

using namespace std::chrono_literals;

inline constexpr int k_max_attempts = 10;
inline constexpr std::array<Millis, k_max_attempts - 1> k_retry_delays = {
    Millis{5s}, Millis{30s}, Millis{2min}, Millis{10min}, Millis{30min},
    Millis{1h}, Millis{2h},  Millis{4h},   Millis{8h}};
// The delay is scaled by a factor in [1 - k_retry_jitter, 1 + k_retry_jitter).
inline constexpr double k_retry_jitter = 0.2;
inline constexpr Millis k_min_retry_after{1s};
inline constexpr Millis k_max_retry_after{24h};

// Whether a Retry-After header on an answer with this status is honoured.
bool honours_retry_after(int status);

// How long to wait before the next attempt, after `attempts_made` attempts
// (the one that just failed included) have failed; nullopt when that was the
// last attempt and the event is dead. `random01` in [0, 1) picks the jitter;
// `retry_after` is the server's Retry-After, already parsed, and only passed
// when honours_retry_after(status).
// REQUIRES: attempts_made >= 1
std::optional<Millis> retry_delay(int attempts_made, double random01,
                                  std::optional<Millis> retry_after = std::nullopt);

} // namespace rrd::webhook
