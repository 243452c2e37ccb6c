#include "readreceiptd/scheduler/rate_limiter.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace rrd::scheduler {

RateLimiter::RateLimiter(double requests_per_second)
    : m_configured(requests_per_second >= k_min_configured_rate ? requests_per_second
                                                                : k_min_configured_rate),
      m_rate(m_configured) {}

std::size_t RateLimiter::capacity() const {
  return std::max<std::size_t>(1, static_cast<std::size_t>(std::floor(m_rate)));
}

Millis RateLimiter::spacing() const {
  const double gap = static_cast<double>(k_window.count()) / m_rate;
  // Below 1/s the gap is the limit itself: round up. Above, it only smooths
  // bursts: round down, so that it never costs throughput.
  return Millis{static_cast<Millis::rep>(m_rate < 1.0 ? std::ceil(gap) : std::floor(gap))};
}

Millis RateLimiter::backwards_shift(TimePoint now) const {
  if (m_last_seen && now < *m_last_seen) {
    return *m_last_seen - now;
  }
  return Millis{0};
}

void RateLimiter::observe(TimePoint now) {
  const Millis shift = backwards_shift(now);
  if (shift > Millis{0}) {
    for (auto& t : m_grants) {
      t -= shift;
    }
    if (m_last_grant) {
      *m_last_grant -= shift;
    }
    if (m_last_decrease) {
      *m_last_decrease -= shift;
    }
    m_paused_until -= shift;
    m_last_adjust -= shift;
  }
  m_last_seen = now;
  while (!m_grants.empty() && m_grants.front() <= now - k_counted_window) {
    m_grants.pop_front();
  }
}

bool RateLimiter::try_acquire(TimePoint now) {
  observe(now);
  if (next_allowed(now) > now) {
    return false;
  }
  m_grants.push_back(now);
  m_last_grant = now;
  return true;
}

TimePoint RateLimiter::next_allowed(TimePoint now) const {
  const Millis shift = backwards_shift(now);
  TimePoint t = std::max(now, m_paused_until - shift);
  const Millis gap = spacing();
  if (gap > Millis{0} && m_last_grant) {
    t = std::max(t, *m_last_grant - shift + gap);
  }
  // A call at t is allowed when fewer than capacity() grants lie in
  // (t - k_counted_window, t]: the oldest of the last capacity() grants must
  // be out.
  const std::size_t cap = capacity();
  if (m_grants.size() >= cap) {
    t = std::max(t, m_grants[m_grants.size() - cap] - shift + k_counted_window);
  }
  return t;
}

void RateLimiter::on_throttled(TimePoint now) {
  observe(now);
  m_last_throttled = now;
  if (!m_last_decrease || now - *m_last_decrease >= k_decrease_hold) {
    const double floor_rate = std::min(m_configured, k_min_rate);
    m_rate = std::max(floor_rate, m_rate / 2.0);
    m_last_decrease = now;
  }
  m_paused_until = std::max(m_paused_until, now + k_throttle_pause);
  m_last_adjust = now;
}

void RateLimiter::on_success(TimePoint now) {
  observe(now);
  if (m_rate < m_configured) {
    const auto elapsed = std::max(Millis{0}, now - m_last_adjust);
    const double seconds = std::chrono::duration<double>(elapsed).count();
    m_rate = std::min(m_configured, m_rate + k_recovery_per_second * m_configured * seconds);
  }
  m_last_adjust = now;
}

bool RateLimiter::paused(TimePoint now) const {
  return now < m_paused_until - backwards_shift(now);
}

} // namespace rrd::scheduler
