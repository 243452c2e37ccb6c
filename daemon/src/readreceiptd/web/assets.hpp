// The status page's files (SPEC section 11), compiled into the binary: the
// sources are the ordinary files in daemon/web/, which cmake/embed_web.cmake
// turns into a generated .cpp at build time. Nothing is read from disk at
// run time.
//
// Thread-safety: the table is built once, on first use (a function-local
// static), and never changes; any thread may read it.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

namespace rrd::web {

struct Asset {
  std::string_view path;         // "/index.html", "/app.js"
  std::string_view content_type; // "text/javascript; charset=utf-8"
  std::string_view body;
  // The first 16 hex digits of the body's SHA-256: the ETag, and the
  // ?v= query by which index.html names the file.
  std::string_view version;
};

// Every embedded file (generated; see cmake/embed_web.cmake).
const std::vector<Asset>& assets();

// The file a request path names: "/" is index.html. nullptr for any other.
const Asset* find_asset(std::string_view path);

} // namespace rrd::web
