#include "readreceiptd/scheduler/schedule.hpp"

#include <algorithm>
#include <cmath>

namespace rrd::scheduler {

Millis interval_for_age(const std::vector<config::ScheduleStep>& schedule, Millis age) {
  if (schedule.empty()) {
    return k_fallback_interval;
  }
  for (const auto& step : schedule) {
    if (!step.until || *step.until > age) { // no `until`: open-ended
      return step.every;
    }
  }
  return schedule.back().every;
}

Millis slowest_interval(const std::vector<config::ScheduleStep>& schedule) {
  return schedule.empty() ? k_fallback_interval : schedule.back().every;
}

Millis backoff_delay(int failures_before, Millis cap, double jitter, Millis base) {
  // 2^62 ms is far beyond any cap; clamping the exponent keeps the double finite.
  constexpr int k_max_exponent = 62;
  if (cap <= Millis{0}) {
    return Millis{0};
  }
  const int exponent = std::clamp(failures_before, 0, k_max_exponent);
  if (!(jitter >= 0.0)) { // also catches NaN
    jitter = 0.0;
  }
  jitter = std::min(jitter, 1.0);
  const double factor = 1.0 - k_backoff_jitter + 2.0 * k_backoff_jitter * jitter;
  const double raw = static_cast<double>(std::max<Millis::rep>(base.count(), 0)) *
                     std::ldexp(1.0, exponent) * factor;
  const double capped = std::min(raw, static_cast<double>(cap.count()));
  return Millis{static_cast<Millis::rep>(std::llround(capped))};
}

} // namespace rrd::scheduler
