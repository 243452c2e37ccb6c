#include "readreceiptd/app/cli.hpp"
#include "readreceiptd/app/logging.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

using namespace rrd;
using namespace rrd::app;

TEST_CASE("cli: run needs --config, options parse in both spellings") {
  CHECK_FALSE(parse_args({}).ok());
  auto o = parse_args({"--config", "/x.yaml", "--log-level=debug", "--log-format", "json"});
  REQUIRE(o.ok());
  CHECK(o->command == Command::run);
  CHECK(o->config_path == "/x.yaml");
  CHECK(o->log_level == LogLevel::debug);
  CHECK(o->log_format == LogFormat::json);
}

TEST_CASE("cli: commands") {
  CHECK(parse_args({"--version"})->command == Command::version);
  CHECK(parse_args({"--config=/c", "--check-config"})->command == Command::check_config);
  auto h = parse_args({"--healthcheck"});
  REQUIRE(h.ok());
  CHECK(h->command == Command::healthcheck);
  CHECK(h->config_path == k_default_config_path);
  CHECK(parse_args({"--help"})->command == Command::help);
}

TEST_CASE("cli: bad input names what is wrong") {
  auto bad_level = parse_args({"--config", "c", "--log-level", "loud"});
  REQUIRE_FALSE(bad_level.ok());
  CHECK(bad_level.error().find("loud") != std::string::npos);
  auto missing = parse_args({"--config"});
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error() == "--config: needs a value");
  auto unknown = parse_args({"--confg", "x"});
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.error().find("--confg") != std::string::npos);
  CHECK_FALSE(parse_args({"--version", "--healthcheck"}).ok());
  CHECK_FALSE(parse_args({"--version=3"}).ok());
  CHECK_FALSE(parse_args({"--config", "c", "--log-format", "xml"}).ok());
}

TEST_CASE("logging: redaction replaces every occurrence of every secret") {
  const std::vector<std::string> secrets{"s3cr3t-longer", "s3cr3t", ""};
  CHECK(logging::redact("a s3cr3t-longer b s3cr3t c", secrets) == "a <redacted> b <redacted> c");
  CHECK(logging::redact("nothing here", secrets) == "nothing here");
  CHECK(logging::redact("s3cr3ts3cr3t", {"s3cr3t"}) == "<redacted><redacted>");
}

TEST_CASE("logging: json lines are one valid object with time, level and message") {
  const auto line = logging::format_line(LogFormat::json, from_unix_ms(1'764'064'800'123),
                                         spdlog::level::warn, "quote \" and\nnewline");
  CHECK(line.find('\n') == std::string::npos);
  const auto j = nlohmann::json::parse(line);
  CHECK(j["time"] == "2025-11-25T10:00:00.123Z");
  CHECK(j["level"] == "warn");
  CHECK(j["message"] == "quote \" and\nnewline");
  const auto text =
      logging::format_line(LogFormat::text, from_unix_ms(0), spdlog::level::info, "hi");
  CHECK(text == "1970-01-01T00:00:00.000Z info  hi");
}
