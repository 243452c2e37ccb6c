#include "readreceiptd/app/cli.hpp"
#include "readreceiptd/common/plural.hpp"

#include <doctest/doctest.h>

using namespace rrd;
using namespace rrd::app;

TEST_CASE("cli: --config defaults to the documented path, options parse in both spellings") {
  for (const auto& args :
       {std::vector<std::string>{}, std::vector<std::string>{"--check-config"}}) {
    auto d = parse_args(args);
    REQUIRE(d.ok());
    CHECK(d->config_path == k_default_config_path);
    CHECK_FALSE(d->config_given);
  }
  CHECK(std::string(usage()).find("(default /etc/readreceiptd/config.yaml)") != std::string::npos);
  CHECK(std::string(k_default_config_path) == "/etc/readreceiptd/config.yaml");
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

TEST_CASE("cli: a bad command line is one line pointing to --help") {
  const auto unknown = parse_args({"--bogus"});
  REQUIRE_FALSE(unknown.ok());
  CHECK(usage_error(unknown.error()) ==
        "readreceiptd: unknown argument \"--bogus\" (see readreceiptd --help)");
  CHECK(usage_error("--config: needs a value").find('\n') == std::string::npos);
}

TEST_CASE("plurals: counts in words") {
  CHECK(count_of(0, "message") == "0 messages");
  CHECK(count_of(1, "message") == "1 message");
  CHECK(count_of(2, "webhook") == "2 webhooks");
  CHECK(count_of(1, "pending delivery", "pending deliveries") == "1 pending delivery");
  CHECK(count_of(3, "pending delivery", "pending deliveries") == "3 pending deliveries");
}

TEST_CASE("cli: --copy-state-from takes a path and needs --config") {
  auto o =
      parse_args({"--config", "/c.yaml", "--copy-state-from", "/var/lib/readreceiptd/state.db"});
  REQUIRE(o.ok());
  CHECK(o->command == Command::copy_state);
  CHECK(o->copy_state_from == "/var/lib/readreceiptd/state.db");
  CHECK(parse_args({"--copy-state-from=/s.db", "--config=/c.yaml"})->copy_state_from == "/s.db");
  auto no_config = parse_args({"--copy-state-from", "/s.db"});
  REQUIRE_FALSE(no_config.ok());
  CHECK(no_config.error() ==
        "--copy-state-from: needs --config (the configuration whose state.postgres receives "
        "the state)");
  auto empty = parse_args({"--config", "/c", "--copy-state-from="});
  REQUIRE_FALSE(empty.ok());
  CHECK(empty.error() == "--copy-state-from: empty path");
  CHECK(parse_args({"--config", "/c", "--copy-state-from"}).error() ==
        "--copy-state-from: needs a value");
  CHECK_FALSE(parse_args({"--config", "/c", "--copy-state-from", "/s", "--check-config"}).ok());
  CHECK(std::string(usage()).find("--copy-state-from SQLITE_PATH") != std::string::npos);
}
