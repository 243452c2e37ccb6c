#include "readreceiptd/api/page.hpp"

#include <string>

namespace rrd::api {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

} // namespace

bool etag_matches(std::string_view if_none_match, std::string_view etag) {
  while (!if_none_match.empty()) {
    const auto comma = if_none_match.find(',');
    std::string_view tag = trim(if_none_match.substr(0, comma));
    if_none_match =
        comma == std::string_view::npos ? std::string_view{} : if_none_match.substr(comma + 1);
    if (tag == "*") {
      return true;
    }
    if (tag.substr(0, 2) == "W/") {
      tag.remove_prefix(2);
    }
    if (tag == etag) {
      return true;
    }
  }
  return false;
}

Reply asset_reply(const web::Asset& asset, std::string_view query, std::string_view if_none_match) {
  const std::string etag = "\"" + std::string(asset.version) + "\"";
  const bool current_version = query == "v=" + std::string(asset.version);
  const bool is_page = asset.path == "/index.html";
  Reply r;
  r.content_type = std::string(asset.content_type);
  r.headers = {
      {"ETag", etag},
      {"Cache-Control", std::string(!is_page && current_version ? k_immutable : k_revalidate)},
      {"Content-Security-Policy", std::string(k_page_csp)},
      {"X-Content-Type-Options", "nosniff"},
      {"Referrer-Policy", "no-referrer"},
      {"X-Frame-Options", "DENY"},
  };
  if (etag_matches(if_none_match, etag)) {
    r.status = 304;
    return r;
  }
  r.status = 200;
  r.body = std::string(asset.body);
  return r;
}

} // namespace rrd::api
