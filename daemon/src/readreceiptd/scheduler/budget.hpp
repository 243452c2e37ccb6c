// The monthly call budget's arithmetic (SPEC section 4), as pure functions:
// the calendar month in Beijing time (UTC+8), the calls a schedule would make
// over a span of a message's life, and the one stretch factor by which every
// poll interval grows so that what is left of the budget lasts until the
// month turns.
//
// The daemon counts every read-status call (every page) per month and never
// makes one past `monthly_call_budget`. Around that hard limit it spends the
// budget evenly: every minute or so it adds up what the tracked messages'
// schedules would call for until the month ends (projected_calls) and keeps
// back a share for the first polls of messages still to come (whose later
// polls it adds to the projection); when that is more than what is left,
// decide() stretches every interval by projected / (left - reserve). A new
// message's first poll is never stretched.
//
// Thread-safety: pure functions; call from any thread.
#pragma once

#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/config/config.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace rrd::scheduler {

// DingTalk's months run in Beijing time.
inline constexpr Millis k_budget_utc_offset{8 * 3'600'000};
// The stretch never exceeds this: a message is still polled about once per
// k_max_stretch intervals (in practice the month's end comes first).
inline constexpr double k_max_stretch = 1'000.0;
inline constexpr double k_max_reserve_share = 0.5;
// Later polls stop while no more is left than the first polls expected,
// times this margin (arrivals are an estimate).
inline constexpr double k_first_poll_margin = 1.25;

// A calendar month in UTC+8: its name ("2026-12") and its bounds.
struct Month {
  std::string name;
  TimePoint start; // 00:00 on the 1st, UTC+8
  TimePoint end;   // the next month's start
  bool operator==(const Month&) const = default;
};
Month month_of(TimePoint t);

// The calls (polls times pages_per_poll) that `schedule`, stretched by
// `stretch`, makes while a message's age goes from `from` to `to` (ages;
// `to` <= `from` gives 0). A poll at each interval; fractions are kept so
// that many messages add up without rounding.
double projected_calls(const std::vector<config::ScheduleStep>& schedule, Millis from, Millis to,
                       double pages_per_poll = 1.0, double stretch = 1.0);

struct BudgetInput {
  std::int64_t budget = 0; // monthly_call_budget
  std::int64_t used = 0;   // read-status calls made this month
  // What the schedules would make until the month's end, unstretched: the
  // tracked messages' polls, and those of messages expected to arrive
  // (their first polls excepted).
  double projected = 0;
  // First polls expected before the month's end: never stretched. At most
  // k_max_reserve_share of what is left is held back for them.
  double reserved = 0;
};
struct BudgetDecision {
  std::int64_t left = 0;  // budget - used, never negative
  bool exhausted = false; // nothing left: no read-status call until the month turns
  double stretch = 1.0;   // every poll interval is multiplied by this (>= 1)
  // Calls only first polls may spend: a later poll waits while no more than
  // this is left (the expected first polls, with k_first_poll_margin, not
  // capped by k_max_reserve_share), so that messages yet to come still get
  // their first poll when the projection fell short.
  std::int64_t first_polls_only_below = 0;
  bool operator==(const BudgetDecision&) const = default;
};
BudgetDecision decide(const BudgetInput& in);

// How many messages are expected to arrive (each with a first poll) in the
// `remaining` time: `first_polls` seen over the last `over`, extrapolated.
// `over` counts as at least k_min_arrival_window, so that the month's first
// hours do not extrapolate a burst.
inline constexpr Millis k_min_arrival_window{24 * 3'600'000};
double expected_arrivals(std::int64_t first_polls, Millis over, Millis remaining);

} // namespace rrd::scheduler
