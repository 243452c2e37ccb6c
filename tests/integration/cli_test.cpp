// The command lines of readreceiptd and of the fakes (fake-dingtalk,
// webhook-sink), run as a user runs them: --help, bad flags, defaults.
#include "fakes/postgres.hpp"
#include "integration/harness.hpp"

#include <filesystem>
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

std::size_t lines(const std::string& text) {
  std::size_t n = 0;
  for (const char c : text) {
    n += c == '\n' ? 1 : 0;
  }
  return n;
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

TEST_CASE("cli: webhook-sink and fake-dingtalk have a --help listing every option") {
  TempDir dir;
  const Run sink = run(dir, {RRD_WEBHOOK_SINK_PATH, "--help"});
  CHECK(sink.code == 0);
  for (const char* option :
       {"usage: webhook-sink", "--port N", "--secret", "WEBHOOK_SECRET", "--help"}) {
    CAPTURE(option);
    CHECK(sink.output.find(option) != std::string::npos);
  }
  CHECK(sink.output.find("needs a value") == std::string::npos);

  const Run fake = run(dir, {RRD_FAKE_DINGTALK_PATH, "--help"});
  CHECK(fake.code == 0);
  for (const char* option :
       {"usage: fake-dingtalk", "--port N", "--app-key", "--app-secret", "--robot-code",
        "--page-size", "--token-lifetime", "--seed", "--scenario", "--help",
        "privateChatMessages/query", "groupMessages/query", "oToMessages/readStatus",
        "kind: private_chat, group or oto"}) {
    CAPTURE(option);
    CHECK(fake.output.find(option) != std::string::npos);
  }
}

TEST_CASE("cli: the fakes answer a bad flag with one line pointing to --help, exit 2") {
  TempDir dir;
  const Run sink = run(dir, {RRD_WEBHOOK_SINK_PATH, "--bogus"});
  CHECK(sink.code == 2);
  CHECK(sink.output == "webhook-sink: unknown argument \"--bogus\" (see webhook-sink --help)\n");
  const Run sink_missing = run(dir, {RRD_WEBHOOK_SINK_PATH, "--port"});
  CHECK(sink_missing.code == 2);
  CHECK(lines(sink_missing.output) == 1);
  CHECK(sink_missing.output.find("--port: needs a value") != std::string::npos);

  const Run fake = run(dir, {RRD_FAKE_DINGTALK_PATH, "--bogus", "1"});
  CHECK(fake.code == 2);
  CHECK(fake.output == "fake-dingtalk: unknown argument \"--bogus\" (see fake-dingtalk --help)\n");
  const Run fake_bad = run(dir, {RRD_FAKE_DINGTALK_PATH, "--page-size", "500"});
  CHECK(fake_bad.code == 2);
  CHECK(lines(fake_bad.output) == 1);
  CHECK(fake_bad.output.find("(see fake-dingtalk --help)") != std::string::npos);
}

TEST_CASE("cli: --copy-state-from refuses, exit 2, a configuration without state.postgres or a "
          "missing file") {
  TempDir dir;
  const std::string sqlite_config = dir.file("sqlite.yaml");
  const std::string pg_config = dir.file("pg.yaml");
  const std::string dingtalk = "dingtalk:\n  auth:\n    access_token: tok\n  robot_code: r\n";
  write_file(sqlite_config, dingtalk + "state:\n  path: " + dir.file("state.db") + "\n");
  write_file(pg_config, dingtalk + "state:\n  postgres: host=127.0.0.1 port=1 dbname=none\n");
  write_file(dir.file("old.db"), "");

  const Run no_postgres = run(
      dir, {RRD_DAEMON_PATH, "--config", sqlite_config, "--copy-state-from", dir.file("old.db")});
  CHECK(no_postgres.code == 2);
  CHECK(no_postgres.output == "readreceiptd: --copy-state-from: " + sqlite_config +
                                  " has no state.postgres to copy the state into\n");

  const Run missing =
      run(dir, {RRD_DAEMON_PATH, "--config", pg_config, "--copy-state-from", dir.file("nope.db")});
  CHECK(missing.code == 2);
  CHECK(missing.output == "readreceiptd: --copy-state-from: cannot read " + dir.file("nope.db") +
                              ": No such file or directory\n");

  const Run no_config = run(dir, {RRD_DAEMON_PATH, "--copy-state-from", dir.file("old.db")});
  CHECK(no_config.code == 2);
}

TEST_CASE("postgres: --copy-state-from copies a SQLite state database into an empty PostgreSQL "
          "one, once") {
  const auto server = test_postgres();
  if (!server) {
    if (postgres_required()) {
      FAIL("CI=true, but RRD_TEST_POSTGRES is not set (ctest starts a server for these tests)");
    }
    MESSAGE("skipped: RRD_TEST_POSTGRES is not set (a libpq connection string to a test server)");
    return;
  }
  TempDir dir;
  PgSchema schema(*server);
  // A state database of the previous release, with deliveries of every state.
  const std::string old_db = dir.file("state.db");
  std::filesystem::copy_file(std::string(RRD_SOURCE_DIR) + "/tests/fixtures/state-schema2.db",
                             old_db);
  const std::string password = "pg-SECRET-password-5f2a9c";
  write_file(dir.file("pg_password"), password + "\n");
  const std::string config = dir.file("pg.yaml");
  write_file(config, "dingtalk:\n  auth:\n    access_token: tok\n  robot_code: r\n"
                     "state:\n  postgres: \"" +
                         schema.conninfo() + "\"\n  password_file: pg_password\n");

  const Run copied = run(dir, {RRD_DAEMON_PATH, "--config", config, "--copy-state-from", old_db});
  CAPTURE(copied.output);
  CHECK(copied.code == 0);
  CHECK(copied.output.find("copied ") != std::string::npos);
  CHECK(copied.output.find(password) == std::string::npos);
  const std::string messages = schema.text("SELECT count(*) FROM messages");
  CHECK(messages != "0");
  CHECK(copied.output.find("copied " + messages + " message") != std::string::npos);
  CHECK(schema.text("SELECT count(*) FROM deliveries") != "0");

  // A second copy would mix two states: refused, nothing written.
  const Run again = run(dir, {RRD_DAEMON_PATH, "--config", config, "--copy-state-from", old_db});
  CAPTURE(again.output);
  CHECK(again.code == 1);
  CHECK(again.output.find("already holds state") != std::string::npos);
  CHECK(again.output.find(password) == std::string::npos);
  CHECK(again.output.find(schema.conninfo()) == std::string::npos);
  CHECK(schema.text("SELECT count(*) FROM messages") == messages);
}
