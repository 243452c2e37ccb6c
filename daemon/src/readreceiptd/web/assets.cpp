#include "readreceiptd/web/assets.hpp"

namespace rrd::web {

const Asset* find_asset(std::string_view path) {
  if (path == "/") {
    path = "/index.html";
  }
  for (const auto& a : assets()) {
    if (a.path == path) {
      return &a;
    }
  }
  return nullptr;
}

} // namespace rrd::web
