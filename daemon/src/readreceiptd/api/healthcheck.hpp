// `readreceiptd --healthcheck`: asks a running daemon's GET /healthz (on the
// configuration's api.listen) whether its loop is alive, for Docker's
// HEALTHCHECK and other probes. One blocking libcurl easy request.
//
// Thread-safety: healthz_url() is pure; check_health() may be called from
// any one thread at a time.
#pragma once

#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/common/result.hpp"
#include "readreceiptd/config/config.hpp"

#include <string>

namespace rrd::api {

inline constexpr Millis k_healthcheck_timeout{3'000};

// "http://127.0.0.1:9465/healthz" for api.listen "127.0.0.1:9465";
// a wildcard address is asked on loopback ("0.0.0.0" -> 127.0.0.1,
// "::" -> [::1]); IPv6 hosts are bracketed. The error says why there is
// nothing to ask (the API disabled, port 0, a malformed address).
Result<std::string, std::string> healthz_url(const std::string& listen);

// GETs /healthz with a k_healthcheck_timeout deadline. On success returns
// a short text ("healthy"); otherwise what went wrong. Never puts the token
// in the text.
Result<std::string, std::string> check_health(const config::Api& api);

} // namespace rrd::api
