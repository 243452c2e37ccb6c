// TokenCache: the pure bookkeeping of the DingTalk access token, with time
// passed in. It says whether a token is usable, when to refresh it (at 90% of
// expireIn), keeps a single refresh in flight, backs off exponentially after
// failed refreshes, and drops a token that DingTalk rejected so that parallel
// failures cause one refresh. The caller performs the token request.
//
// A fixed token (dingtalk.auth.access_token) is always usable and never
// refreshed: invalidate() does nothing for it, and the caller treats
// InvalidAuthentication with a fixed token as an auth failure that is
// retried later (the operator must replace the token).
//
// Lifetime: a token is refreshed from 90% of expireIn on, and stays usable
// while the refresh runs, until its expiry less a small margin
// (min(k_token_expiry_margin, 5% of expireIn)), so queries need not stall
// while the one refresh is in flight, and a refresh that fails leaves the
// rest of the lifetime to retry in.
//
// Thread-safety: a plain value; not thread-safe (the loop thread owns it).
#pragma once

#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/config/config.hpp"
#include "readreceiptd/dingtalk/protocol.hpp"

#include <cstdint>
#include <optional>
#include <string>

namespace rrd::dingtalk {

// Refresh once this share of expireIn has passed.
inline constexpr int k_token_refresh_percent = 90;
// A token stops being handed out this long before it expires (at most 5% of
// its lifetime).
inline constexpr Millis k_token_expiry_margin{30'000};
// Backoff after failed refreshes: 1 s, 2 s, 4 s ... up to the cap.
inline constexpr Millis k_token_backoff_initial{1'000};
inline constexpr Millis k_token_backoff_max{5 * 60'000};

class TokenCache {
public:
  explicit TokenCache(const config::DingTalk& cfg);

  bool fixed() const { return m_fixed; }

  // The token to use now, if one is usable.
  std::optional<std::string> token(TimePoint now) const;

  // True when a refresh should be started now: not a fixed token, none in
  // flight, the backoff has passed, and there is no token or it has passed
  // 90% of its lifetime or was invalidated.
  bool needs_refresh(TimePoint now) const;
  // When needs_refresh() will next become true, for the loop's wake-up;
  // nullopt for a fixed token or while a refresh is in flight.
  std::optional<TimePoint> next_refresh_due() const;

  bool refresh_in_flight() const { return m_in_flight; }
  // Marks a refresh as started. Returns false (and changes nothing) when one
  // is already in flight or the token is fixed.
  bool begin_refresh();
  // The refresh produced a token. expire_in_seconds is clamped to
  // 1..k_max_token_lifetime_seconds. Resets the backoff.
  void on_refreshed(std::string token, std::int64_t expire_in_seconds, TimePoint now);
  void on_refreshed(const Token& t, TimePoint now) {
    on_refreshed(t.access_token, t.expire_in_seconds, now);
  }
  // The refresh failed; the next one waits for the backoff. A token still
  // usable stays in use.
  void on_refresh_failed(TimePoint now);
  // Before this, no refresh is started (the backoff after failures).
  TimePoint next_refresh_allowed() const { return m_next_allowed; }
  int consecutive_failures() const { return m_failures; }

  // A call made with `token` was answered InvalidAuthentication. Drops the
  // token if it is still the current one and returns true; returns false
  // when it was already replaced or dropped, or the token is fixed.
  bool invalidate(const std::string& token);

private:
  bool m_fixed = false;
  std::optional<std::string> m_token;
  TimePoint m_refresh_at{};   // 90% of the lifetime
  TimePoint m_usable_until{}; // expiry less the margin
  bool m_in_flight = false;
  int m_failures = 0;
  TimePoint m_next_allowed{};
};

} // namespace rrd::dingtalk
