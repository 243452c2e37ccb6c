// Poll schedule arithmetic: how often a message is polled at
// a given age, and the exponential backoff used after transient failures.
// Pure functions of their arguments (no clock, no randomness of their own);
// thread-safe.
#pragma once

#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/config/config.hpp"

#include <vector>

namespace rrd::scheduler {

// The first retry after a transient failure waits this long; each further
// consecutive failure doubles it (before the cap).
inline constexpr Millis k_backoff_base{1'000};
// Backoff delays are spread by up to this fraction either way (±20%).
inline constexpr double k_backoff_jitter = 0.2;
// Used only if a schedule is empty (a validated configuration never is).
inline constexpr Millis k_fallback_interval{60'000};

// The poll interval for a message of this age: the `every` of the first step
// whose `until` is greater than `age` (a step without `until` is open-ended),
// else that of the last step. A negative age (sent_at in the future) gets the
// first step. An empty schedule gets k_fallback_interval.
Millis interval_for_age(const std::vector<config::ScheduleStep>& schedule, Millis age);

// The slowest interval: the last step's `every`. Used while a message is
// paused (bot stopped, permission missing, ...).
Millis slowest_interval(const std::vector<config::ScheduleStep>& schedule);

// The delay before retrying after a transient failure:
//   base * 2^failures_before, scaled by a jitter factor in [0.8, 1.2), then
//   capped at `cap`.
// `failures_before` is the number of consecutive failures before this one
// (0 for the first failure, so the first retry waits about `base`).
// `jitter` is a uniform random number in [0, 1) supplied by the caller; values
// outside are clamped. The result is never negative and never exceeds `cap`.
Millis backoff_delay(int failures_before, Millis cap, double jitter, Millis base = k_backoff_base);

} // namespace rrd::scheduler
