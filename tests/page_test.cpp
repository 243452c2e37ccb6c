// The status page's files on api.listen: served from the binary at / without
// the token, with their Content-Type, a strong ETag (304 when the browser has
// it), index.html revalidated and versioned assets kept, and the headers
// that keep the page to its own origin. The page's sources (daemon/web/) are
// what is embedded, and they hold no inline script or style and never insert
// HTML.
#include "readreceiptd/api/page.hpp"
#include "readreceiptd/api/router.hpp"
#include "readreceiptd/web/assets.hpp"

#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

using namespace rrd;
using namespace rrd::api;

namespace {

namespace fs = std::filesystem;

const Health k_healthy{true, Readiness::ready};

fs::path web_dir() {
  return fs::path(__FILE__).parent_path().parent_path() / "daemon" / "web";
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

Reply get(const std::string& target, const std::string& token = "",
          const std::string& if_none_match = "") {
  Request r;
  r.method = "GET";
  r.target = target;
  r.if_none_match = if_none_match;
  Routed routed = route(r, token, k_healthy);
  REQUIRE(routed.reply); // answered at once, never by the loop
  return *routed.reply;
}

std::string header(const Reply& r, const std::string& name) {
  for (const auto& [n, v] : r.headers) {
    if (n == name) {
      return v;
    }
  }
  return "";
}

const web::Asset& asset(const std::string& path) {
  const web::Asset* a = web::find_asset(path);
  REQUIRE_MESSAGE(a != nullptr, path);
  return *a;
}

} // namespace

TEST_CASE("page: / is index.html, with its type, and needs no token even when one is set") {
  for (const std::string token : {"", "s3cret-token"}) {
    CAPTURE(token);
    const Reply r = get("/", token);
    CHECK(r.status == 200);
    CHECK(r.content_type == "text/html; charset=utf-8");
    CHECK(r.body.find("<!doctype html>") == 0);
    CHECK(r.body == get("/index.html", token).body);
    CHECK(get("/app.js", token).content_type == "text/javascript; charset=utf-8");
    CHECK(get("/app.css", token).content_type == "text/css; charset=utf-8");
  }
  // The data calls still need it, and so does a path that is no file.
  CHECK(get("/v1/messages", "s3cret-token").status == 401);
  CHECK(get("/app.jsx", "s3cret-token").status == 401);
  CHECK(get("/nope.html").status == 404);
}

TEST_CASE("page: every file keeps the page to its own origin") {
  for (const auto& a : web::assets()) {
    CAPTURE(a.path);
    const Reply r = get(std::string(a.path));
    CHECK(header(r, "Content-Security-Policy").rfind("default-src 'self'", 0) == 0);
    CHECK(header(r, "Content-Security-Policy").find("unsafe") == std::string::npos);
    CHECK(header(r, "X-Content-Type-Options") == "nosniff");
    CHECK(header(r, "Referrer-Policy") == "no-referrer");
    CHECK(header(r, "X-Frame-Options") == "DENY");
  }
}

TEST_CASE("page: a strong ETag per file, 304 when the browser has it") {
  const web::Asset& js = asset("/app.js");
  REQUIRE(js.version.size() == 16);
  const std::string etag = "\"" + std::string(js.version) + "\"";
  const Reply first = get("/app.js");
  CHECK(header(first, "ETag") == etag);
  CHECK(first.body == js.body);

  const Reply again = get("/app.js", "", etag);
  CHECK(again.status == 304);
  CHECK(again.body.empty());
  CHECK(header(again, "ETag") == etag);
  CHECK(get("/app.js", "", "\"0000000000000000\"").status == 200);
  CHECK(get("/app.js", "", "\"0000000000000000\", " + etag).status == 304);
  CHECK(get("/app.js", "", "W/" + etag).status == 304);
  CHECK(get("/app.js", "", "*").status == 304);
  CHECK(get("/app.js", "", std::string(js.version)).status == 200); // unquoted: no tag

  // Different files, different tags.
  std::set<std::string> versions;
  for (const auto& a : web::assets()) {
    versions.insert(std::string(a.version));
  }
  CHECK(versions.size() == web::assets().size());
}

TEST_CASE("page: index.html is revalidated, an asset at its version is kept for a year") {
  CHECK(header(get("/"), "Cache-Control") == "no-cache");
  const web::Asset& js = asset("/app.js");
  CHECK(header(get("/app.js?v=" + std::string(js.version)), "Cache-Control") ==
        "public, max-age=31536000, immutable");
  // Another version's address, or none: the browser must ask again.
  CHECK(header(get("/app.js"), "Cache-Control") == "no-cache");
  CHECK(header(get("/app.js?v=0000000000000000"), "Cache-Control") == "no-cache");
}

TEST_CASE("page: index.html names each asset by its current version") {
  const std::string html = get("/").body;
  for (const auto& a : web::assets()) {
    if (a.path == "/index.html") {
      continue;
    }
    const std::string name = std::string(a.path).substr(1);
    CAPTURE(name);
    CHECK(html.find("\"" + name + "?v=" + std::string(a.version) + "\"") != std::string::npos);
  }
}

TEST_CASE("page: a method other than GET on a page file is a 405 naming GET") {
  Request r;
  r.method = "POST";
  r.target = "/";
  Routed routed = route(r, "", k_healthy);
  REQUIRE(routed.reply);
  CHECK(routed.reply->status == 405);
  CHECK(header(*routed.reply, "Allow") == "GET");
}

TEST_CASE("page: what is embedded is daemon/web/, every file of it") {
  std::set<std::string> on_disk;
  for (const auto& entry : fs::directory_iterator(web_dir())) {
    on_disk.insert("/" + entry.path().filename().string());
  }
  std::set<std::string> embedded;
  for (const auto& a : web::assets()) {
    embedded.insert(std::string(a.path));
    if (a.path != "/index.html") {
      CHECK_MESSAGE(read_file(web_dir() / std::string(a.path).substr(1)) == a.body, a.path);
    }
  }
  CHECK(embedded == on_disk);
}

TEST_CASE("page: no inline script or style, no HTML built from strings") {
  const std::string html = read_file(web_dir() / "index.html");
  // Every <script> has a src; no <style> element, style attribute or
  // on... handler (the CSP would refuse them anyway).
  const std::regex script_tag(R"(<script\b[^>]*>)", std::regex::icase);
  int scripts = 0;
  for (auto it = std::sregex_iterator(html.begin(), html.end(), script_tag);
       it != std::sregex_iterator(); ++it) {
    ++scripts;
    CHECK_MESSAGE(it->str().find(" src=") != std::string::npos, it->str());
  }
  CHECK(scripts >= 1);
  CHECK_FALSE(std::regex_search(html, std::regex(R"(<style\b)", std::regex::icase)));
  CHECK_FALSE(std::regex_search(html, std::regex(R"(\sstyle\s*=)", std::regex::icase)));
  CHECK_FALSE(std::regex_search(html, std::regex(R"(\son[a-z]+\s*=)", std::regex::icase)));
  // Data goes into the page as text: the script never parses HTML.
  const std::string js = read_file(web_dir() / "app.js");
  for (const char* sink : {"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                           "eval(", "new Function", "createContextualFragment"}) {
    CHECK_MESSAGE(js.find(sink) == std::string::npos, sink);
  }
}
