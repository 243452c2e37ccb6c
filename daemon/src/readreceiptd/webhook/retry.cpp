#include "readreceiptd/webhook/retry.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>

namespace rrd::webhook {

bool honours_retry_after(int status) {
  return status == 429 || status == 503;
}

std::optional<Millis> retry_delay(int attempts_made, double random01,
                                  std::optional<Millis> retry_after) {
  assert(attempts_made >= 1);
  if (attempts_made >= k_max_attempts) {
    return std::nullopt;
  }
  if (retry_after) {
    return std::clamp(*retry_after, k_min_retry_after, k_max_retry_after);
  }
  const auto index = static_cast<std::size_t>(std::max(attempts_made, 1) - 1);
  const Millis::rep base = k_retry_delays[index].count();
  // The delay is base - span + offset with offset in [0, 2 * span): computed
  // in integers, with the upper end clamped, because in doubles r just below
  // 1 can round up to exactly 2 * span.
  const auto span = static_cast<Millis::rep>(static_cast<double>(base) * k_retry_jitter);
  const double r = std::clamp(random01, 0.0, 1.0);
  const auto offset =
      std::min(static_cast<Millis::rep>(std::floor(2.0 * static_cast<double>(span) * r)),
               std::max<Millis::rep>(2 * span - 1, 0));
  return Millis{base - span + offset};
}

} // namespace rrd::webhook
