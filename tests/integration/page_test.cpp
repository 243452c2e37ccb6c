// The status page served by the real daemon on api.listen: GET / without the
// token (which the data calls still need), the page's headers as a browser
// receives them, a 304 without a body for the ETag it holds, and nosniff on
// the JSON answers too. (tests/browser/ drives the page itself.)
#include "integration/harness.hpp"

#include <httplib.h>
#include <string>

using rrd::testing::DaemonHarness;
using rrd::testing::free_port;

namespace {

httplib::Result get(const std::string& listen, const std::string& target,
                    const httplib::Headers& headers = {}) {
  httplib::Client client("http://" + listen);
  client.set_connection_timeout(5);
  client.set_read_timeout(10);
  return client.Get(target, headers);
}

} // namespace

TEST_CASE("page: the daemon serves the status page without the token, with its headers and 304") {
  DaemonHarness h;
  h.api_listen = "127.0.0.1:" + std::to_string(free_port());
  h.api_token = "page-token-Hq2w8Ze4Lm";
  h.start();
  REQUIRE_MESSAGE(h.wait_for_api(), h.log());

  const auto page = get(h.api_listen, "/");
  REQUIRE(page);
  CHECK(page->status == 200);
  CHECK(page->get_header_value("Content-Type") == "text/html; charset=utf-8");
  CHECK(page->get_header_value("Cache-Control") == "no-cache");
  CHECK(page->get_header_value("Content-Security-Policy").rfind("default-src 'self'", 0) == 0);
  CHECK(page->get_header_value("X-Content-Type-Options") == "nosniff");
  CHECK(page->get_header_value("Referrer-Policy") == "no-referrer");
  CHECK(page->body.find("<script src=\"app.js?v=") != std::string::npos);
  const std::string etag = page->get_header_value("ETag");
  REQUIRE(etag.size() == 18); // "<16 hex digits>"

  const auto again = get(h.api_listen, "/", {{"If-None-Match", etag}});
  REQUIRE(again);
  CHECK(again->status == 304);
  CHECK(again->body.empty());
  CHECK(again->get_header_value("ETag") == etag);

  const auto script = get(h.api_listen, "/app.js");
  REQUIRE(script);
  CHECK(script->status == 200);
  CHECK(script->get_header_value("Content-Type") == "text/javascript; charset=utf-8");
  CHECK(script->body.find("'use strict';") != std::string::npos);

  // The data still needs the token; JSON is never sniffed either.
  const auto data = get(h.api_listen, "/v1/messages");
  REQUIRE(data);
  CHECK(data->status == 401);
  CHECK(data->get_header_value("X-Content-Type-Options") == "nosniff");
  const auto with_token =
      get(h.api_listen, "/v1/messages", {{"Authorization", "Bearer " + h.api_token}});
  REQUIRE(with_token);
  CHECK(with_token->status == 200);
  CHECK(with_token->get_header_value("Content-Type") == "application/json");
}
