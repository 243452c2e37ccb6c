// The command line of readreceiptd, run as a user runs it: --help, bad
// flags, defaults.
#include "integration/harness.hpp"

#include <string>
#include <vector>

using namespace rrd::testing;

namespace {

struct Run {
  int code = -1;
  std::string output; // stdout and stderr
};

Run run(const TempDir& dir, std::vector<std::string> argv) {
  static int counter = 0;
  Run r;
  ChildProcess p(std::move(argv), dir.file("run-" + std::to_string(++counter) + ".log"));
  r.code = p.wait(std::chrono::seconds(20));
  r.output = p.log();
  return r;
}

} // namespace

TEST_CASE("cli: readreceiptd --help lists every option and exits 0") {
  TempDir dir;
  const Run help = run(dir, {RRD_DAEMON_PATH, "--help"});
  CHECK(help.code == 0);
  for (const char* option :
       {"--config PATH", "--check-config", "--healthcheck", "--log-level", "--log-format",
        "--version", "--help", "(default /etc/readreceiptd/config.yaml)"}) {
    CAPTURE(option);
    CHECK(help.output.find(option) != std::string::npos);
  }
}

TEST_CASE("cli: readreceiptd with a bad flag prints one line pointing to --help and exits 2") {
  TempDir dir;
  const Run bogus = run(dir, {RRD_DAEMON_PATH, "--bogus"});
  CHECK(bogus.code == 2);
  CHECK(bogus.output == "readreceiptd: unknown argument \"--bogus\" (see readreceiptd --help)\n");
  const Run missing = run(dir, {RRD_DAEMON_PATH, "--log-level"});
  CHECK(missing.code == 2);
  CHECK(missing.output == "readreceiptd: --log-level: needs a value (see readreceiptd --help)\n");
}

TEST_CASE("cli: without --config, readreceiptd reads the default path --help names") {
  TempDir dir;
  const Run check = run(dir, {RRD_DAEMON_PATH, "--check-config"});
  INFO(check.output);
  CHECK(check.output.find("/etc/readreceiptd/config.yaml") != std::string::npos);
  CHECK(check.output.find("required") == std::string::npos);
  CHECK(check.output.find("usage:") == std::string::npos);
}

TEST_CASE("cli: --check-config counts messages and webhooks in proper plurals") {
  DaemonHarness h;
  h.watch("only-key");
  h.write_config();
  const Run one = run(h.dir, {RRD_DAEMON_PATH, "--config", h.config_path(), "--check-config"});
  CHECK(one.code == 0);
  CHECK(one.output == h.config_path() + ": configuration is valid (1 message, 1 webhook)\n");
  h.watch("second-key");
  h.more_webhooks_yaml.push_back(DaemonHarness::webhook_item("audit", h.sink.url()));
  h.write_config();
  const Run two = run(h.dir, {RRD_DAEMON_PATH, "--config", h.config_path(), "--check-config"});
  CHECK(two.code == 0);
  CHECK(two.output == h.config_path() + ": configuration is valid (2 messages, 2 webhooks)\n");
}
