#include "readreceiptd/dingtalk/token_cache.hpp"

#include <algorithm>

namespace rrd::dingtalk {

TokenCache::TokenCache(const config::DingTalk& cfg)
    : m_fixed(cfg.auth_kind == config::DingTalk::AuthKind::fixed_token) {
  if (m_fixed) {
    m_token = cfg.fixed_token.access_token;
  }
}

std::optional<std::string> TokenCache::token(TimePoint now) const {
  if (m_fixed) {
    return m_token;
  }
  if (!m_token || now >= m_usable_until) {
    return std::nullopt;
  }
  return m_token;
}

bool TokenCache::needs_refresh(TimePoint now) const {
  if (m_fixed || m_in_flight || now < m_next_allowed) {
    return false;
  }
  return !m_token || now >= m_refresh_at;
}

std::optional<TimePoint> TokenCache::next_refresh_due() const {
  if (m_fixed || m_in_flight) {
    return std::nullopt;
  }
  if (!m_token) {
    return m_next_allowed;
  }
  return std::max(m_refresh_at, m_next_allowed);
}

bool TokenCache::begin_refresh() {
  if (m_fixed || m_in_flight) {
    return false;
  }
  m_in_flight = true;
  return true;
}

void TokenCache::on_refreshed(std::string token, std::int64_t expire_in_seconds, TimePoint now) {
  if (m_fixed) {
    return;
  }
  const std::int64_t lifetime_s =
      std::clamp<std::int64_t>(expire_in_seconds, 1, k_max_token_lifetime_seconds);
  const Millis lifetime{lifetime_s * 1000};
  const Millis margin = std::min(k_token_expiry_margin, lifetime / 20);
  m_token = std::move(token);
  m_refresh_at = now + lifetime * k_token_refresh_percent / 100;
  m_usable_until = now + lifetime - margin;
  m_in_flight = false;
  m_failures = 0;
  m_next_allowed = now;
}

void TokenCache::on_refresh_failed(TimePoint now) {
  if (m_fixed) {
    return;
  }
  m_in_flight = false;
  ++m_failures;
  Millis delay = k_token_backoff_initial;
  for (int i = 1; i < m_failures && delay < k_token_backoff_max; ++i) {
    delay *= 2;
  }
  m_next_allowed = now + std::min(delay, k_token_backoff_max);
}

bool TokenCache::invalidate(const std::string& token) {
  if (m_fixed || !m_token || *m_token != token) {
    return false;
  }
  m_token.reset();
  return true;
}

} // namespace rrd::dingtalk
