#include "readreceiptd/stream/policy.hpp"

#include <algorithm>
#include <cmath>

namespace rrd::stream {

Millis reconnect_delay(int failures, bool credentials_refused, double jitter) {
  Millis base = k_max_retry;
  if (!credentials_refused) {
    const int doublings = std::clamp(failures, 1, 32) - 1;
    const double grown = static_cast<double>(k_first_retry.count()) * std::pow(2.0, doublings);
    base =
        Millis{static_cast<Millis::rep>(std::min(grown, static_cast<double>(k_max_retry.count())))};
  }
  const double factor = 1.0 + k_retry_jitter * (2.0 * std::clamp(jitter, 0.0, 1.0) - 1.0);
  return Millis{static_cast<Millis::rep>(std::llround(static_cast<double>(base.count()) * factor))};
}

int failures_after_loss(int failures_before, Millis lasted) {
  return lasted >= k_stable_after ? 1 : std::max(failures_before, 0) + 1;
}

KeepAlive keep_alive(TimePoint now, TimePoint last_frame, std::optional<TimePoint> ping_sent) {
  if (ping_sent && *ping_sent >= last_frame) {
    const TimePoint deadline = *ping_sent + k_pong_timeout;
    if (now >= deadline) {
      return {KeepAlive::Action::dead, deadline};
    }
    return {KeepAlive::Action::wait, deadline};
  }
  const TimePoint quiet_until = last_frame + k_ping_after;
  if (now >= quiet_until) {
    return {KeepAlive::Action::send_ping, now + k_pong_timeout};
  }
  return {KeepAlive::Action::wait, quiet_until};
}

} // namespace rrd::stream
