// The status page's files on api.listen (SPEC section 11): GET / and the
// page's assets, as compiled into the binary (web/assets.hpp). They need no
// token: they hold no data, and the page asks for the token before its data
// calls. Every answer carries the headers that keep the page to its own
// origin: Content-Security-Policy default-src 'self' (no inline script or
// style, nothing from elsewhere), nosniff, no referrer, no framing.
//
// Caching: every file has a strong ETag (its version) and an If-None-Match
// that holds it is answered 304. index.html is revalidated on every load
// (no-cache); an asset asked for with its current version (?v=..., as
// index.html names it) may be kept for a year, since another version has
// another address.
//
// Thread-safety: pure functions of their arguments.
#pragma once

#include "readreceiptd/api/router.hpp"
#include "readreceiptd/web/assets.hpp"

#include <string_view>

namespace rrd::api {

inline constexpr std::string_view k_page_csp =
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
inline constexpr std::string_view k_revalidate = "no-cache";
inline constexpr std::string_view k_immutable = "public, max-age=31536000, immutable";

// The answer to a GET of `asset`, with the request's query ("" when none)
// and If-None-Match header ("" when absent).
Reply asset_reply(const web::Asset& asset, std::string_view query, std::string_view if_none_match);

// Whether an If-None-Match header value names `etag` (a quoted strong tag;
// weak tags compare by their value, "*" matches any).
bool etag_matches(std::string_view if_none_match, std::string_view etag);

} // namespace rrd::api
