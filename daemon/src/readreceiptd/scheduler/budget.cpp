#include "readreceiptd/scheduler/budget.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

namespace rrd::scheduler {

Month month_of(TimePoint t) {
  using namespace std::chrono;
  const auto local = t + k_budget_utc_offset;
  const year_month_day ymd{floor<days>(local)};
  const year_month first = ymd.year() / ymd.month();
  const year_month next = first + months{1};
  Month m;
  char name[16];
  std::snprintf(name, sizeof name, "%04d-%02u", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()));
  m.name = name;
  m.start = TimePoint{sys_days{first / 1}.time_since_epoch()} - k_budget_utc_offset;
  m.end = TimePoint{sys_days{next / 1}.time_since_epoch()} - k_budget_utc_offset;
  return m;
}

double projected_calls(const std::vector<config::ScheduleStep>& schedule, Millis from, Millis to,
                       double pages_per_poll, double stretch) {
  if (to <= from || schedule.empty()) {
    return 0.0;
  }
  stretch = std::max(stretch, 1.0);
  double polls = 0.0;
  Millis step_start = Millis::min();
  for (std::size_t i = 0; i < schedule.size(); ++i) {
    const auto& step = schedule[i];
    const bool last = i + 1 == schedule.size() || !step.until;
    const Millis step_end = last ? Millis::max() : *step.until;
    const Millis a = std::max(from, step_start);
    const Millis b = std::min(to, step_end);
    if (b > a && step.every > Millis{0}) {
      polls += static_cast<double>((b - a).count()) /
               (static_cast<double>(step.every.count()) * stretch);
    }
    if (last) {
      break;
    }
    step_start = step_end;
  }
  return polls * std::max(pages_per_poll, 1.0);
}

BudgetDecision decide(const BudgetInput& in) {
  BudgetDecision d;
  d.left = std::max<std::int64_t>(in.budget - in.used, 0);
  if (d.left == 0) {
    d.exhausted = true;
    d.stretch = k_max_stretch;
    return d;
  }
  const double reserve =
      std::min(std::max(in.reserved, 0.0), static_cast<double>(d.left) * k_max_reserve_share);
  const double available = static_cast<double>(d.left) - reserve;
  d.first_polls_only_below = std::min(
      d.left,
      static_cast<std::int64_t>(std::ceil(std::max(in.reserved, 0.0) * k_first_poll_margin)));
  if (in.projected <= available) {
    return d; // the schedules fit
  }
  d.stretch = std::clamp(in.projected / available, 1.0, k_max_stretch);
  return d;
}

double expected_arrivals(std::int64_t first_polls, Millis over, Millis remaining) {
  const double window = static_cast<double>(std::max(over, k_min_arrival_window).count());
  return static_cast<double>(std::max<std::int64_t>(first_polls, 0)) *
         static_cast<double>(std::max(remaining, Millis{0}).count()) / window;
}

} // namespace rrd::scheduler
