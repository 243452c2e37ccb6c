#include "readreceiptd/app/app.hpp"

#include "readreceiptd/common/version.hpp"

#include <cstdio>
#include <cstring>

namespace rrd::app {

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--version") == 0) {
      std::printf("readreceiptd %s\n", k_version);
      return 0;
    }
  }
  std::fprintf(stderr, "readreceiptd: not implemented yet\n");
  return 1;
}

} // namespace rrd::app
