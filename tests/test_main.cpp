// The doctest runner shared by the unit and integration test binaries. The
// daemon's modules log through spdlog; tests keep it quiet unless
// RRD_TEST_LOG is set (e.g. RRD_TEST_LOG=debug).
#define DOCTEST_CONFIG_IMPLEMENT
#include <cstdlib>
#include <doctest/doctest.h>
#include <spdlog/spdlog.h>

int main(int argc, char** argv) {
  const char* level = std::getenv("RRD_TEST_LOG");
  spdlog::set_level(level != nullptr ? spdlog::level::from_str(level) : spdlog::level::off);
  return doctest::Context(argc, argv).run();
}
