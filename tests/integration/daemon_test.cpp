// The real readreceiptd binary against the fake DingTalk and a webhook sink on
// 127.0.0.1, checked by the events a user would receive.
#include "integration/harness.hpp"

#include <csignal>
#include <fstream>
#include <optional>
#include <thread>

using namespace rrd::testing;
using nlohmann::json;

TEST_CASE("daemon: reads arrive as signed events, and a fully read message stops") {
  DaemonHarness h;
  h.watch("Kna29pdJznx1+ghav/bumkQ=", {"alice", "bob", "carol"}, "labels: { campaign: outage-42 }");
  h.dingtalk.read("Kna29pdJznx1+ghav/bumkQ=", "alice");
  h.start();

  REQUIRE_MESSAGE(wait_until([&] { return h.events().size() >= 1; }), h.log());
  auto first = h.events().at(0);
  CHECK(first["type"] == "message.read");
  CHECK(first["data"]["newly_read_user_ids"] == json({"alice"}));
  CHECK(first["data"]["read_count"] == 1);
  CHECK(first["data"]["expected_reader_count"] == 3);
  CHECK(first["data"]["sequence"] == 1);
  CHECK(first["data"]["robot_code"] == "dingfakerobot");
  CHECK(first["data"]["labels"] == json({{"campaign", "outage-42"}}));
  CHECK(h.sink.deliveries().at(0).signature_ok);
  CHECK(h.sink.deliveries().at(0).headers.at("user-agent").rfind("readreceiptd/", 0) == 0);

  h.dingtalk.read("Kna29pdJznx1+ghav/bumkQ=", "bob");
  h.dingtalk.read("Kna29pdJznx1+ghav/bumkQ=", "carol");
  REQUIRE_MESSAGE(h.wait_for_stop("Kna29pdJznx1+ghav/bumkQ="), h.log());
  const auto events = h.events_of("Kna29pdJznx1+ghav/bumkQ=");
  REQUIRE(events.size() == 3);
  CHECK(events[1]["data"]["newly_read_user_ids"] == json({"bob", "carol"}));
  CHECK(events[2]["data"]["reason"] == "fully_read");
  CHECK(events[2]["data"]["sequence"] == 3);
  CHECK(events[2]["data"]["read_user_ids"] == json({"alice", "bob", "carol"}));
  check_sequences(h.sink);

  // A stopped message is not polled again.
  const int calls = h.dingtalk.query_calls("Kna29pdJznx1+ghav/bumkQ=");
  CHECK_FALSE(wait_until([&] { return h.dingtalk.query_calls("Kna29pdJznx1+ghav/bumkQ=") > calls; },
                         std::chrono::milliseconds(1000)));
  h.stop();
}

TEST_CASE("daemon: a read list longer than a page is followed to its end") {
  FakeDingTalkOptions options;
  options.page_size = 3;
  DaemonHarness h(options);
  std::vector<std::string> readers;
  for (int i = 0; i < 11; ++i) {
    readers.push_back("user" + std::to_string(i));
  }
  h.watch("paged", readers);
  for (const auto& r : readers) {
    h.dingtalk.read("paged", r);
  }
  h.start();
  REQUIRE_MESSAGE(h.wait_for_stop("paged"), h.log());
  const auto events = h.events_of("paged");
  REQUIRE(events.size() == 2);
  CHECK(events[0]["data"]["newly_read_user_ids"] == json(readers));
  CHECK(events[1]["data"]["reason"] == "fully_read");
  h.stop();
}

TEST_CASE("daemon: after a restart, no event is repeated and reads made while down arrive") {
  DaemonHarness h;
  h.watch("restart-key", {"u1", "u2", "u3"});
  h.dingtalk.read("restart-key", "u1");
  h.start();
  REQUIRE_MESSAGE(wait_until([&] { return h.events().size() == 1; }), h.log());
  h.stop();

  h.dingtalk.read("restart-key", "u2"); // while the daemon is down
  h.start();
  REQUIRE_MESSAGE(wait_until([&] { return h.events().size() == 2; }), h.log());
  auto events = h.events_of("restart-key");
  CHECK(events[1]["data"]["newly_read_user_ids"] == json({"u2"}));
  CHECK(events[1]["data"]["sequence"] == 2);

  h.dingtalk.read("restart-key", "u3");
  REQUIRE_MESSAGE(h.wait_for_stop("restart-key"), h.log());
  events = h.events_of("restart-key");
  REQUIRE(events.size() == 4);
  CHECK(events[3]["data"]["sequence"] == 4);
  check_sequences(h.sink);
  h.stop();

  // And once stopped, it stays stopped across a restart.
  h.start();
  CHECK_FALSE(wait_until([&] { return h.events().size() > 4; }, std::chrono::milliseconds(1500)));
  h.stop();
}

TEST_CASE("daemon: stop conditions: recalled, invalid and expired") {
  DaemonHarness h;
  h.watch("recalled-key", {"a", "b"});
  h.dingtalk.read("recalled-key", "a");
  h.watch("expired-key");
  h.dingtalk.set_ready_at("expired-key", SteadyClock::now() + std::chrono::hours(1));
  h.messages.push_back({"unknown-key", {}, ""}); // the fake does not know it
  h.start();

  REQUIRE_MESSAGE(wait_until([&] { return h.events_of("recalled-key").size() == 1; }), h.log());
  h.dingtalk.set_send_status("recalled-key", "RECALLED");
  REQUIRE_MESSAGE(h.wait_for_stop("recalled-key"), h.log());
  CHECK((*h.stopped_event("recalled-key"))["data"]["reason"] == "recalled");

  REQUIRE_MESSAGE(h.wait_for_stop("unknown-key"), h.log());
  CHECK((*h.stopped_event("unknown-key"))["data"]["reason"] == "invalid");
  CHECK((*h.stopped_event("unknown-key"))["data"]["detail"] == "invalid.processQueryKey");

  // Not ready within the 2 s grace, then expired.
  REQUIRE_MESSAGE(h.wait_for_stop("expired-key"), h.log());
  CHECK((*h.stopped_event("expired-key"))["data"]["reason"] == "expired");
  check_sequences(h.sink);
  h.stop();
}

TEST_CASE("daemon: a token revoked early is replaced and polling goes on") {
  DaemonHarness h;
  h.watch("token-key", {"a", "b"});
  h.dingtalk.read("token-key", "a");
  h.start();
  REQUIRE_MESSAGE(wait_until([&] { return h.events().size() == 1; }), h.log());
  const int tokens_before = h.dingtalk.token_calls();
  h.dingtalk.revoke_tokens();
  h.dingtalk.read("token-key", "b");
  REQUIRE_MESSAGE(h.wait_for_stop("token-key"), h.log());
  CHECK(h.dingtalk.token_calls() == tokens_before + 1);
  h.stop();
}

TEST_CASE("daemon: a consumer that is down gets every event, in order, once it is back") {
  DaemonHarness h;
  h.watch("down-key", {"a", "b", "c"});
  h.sink.stop();
  h.start();
  h.dingtalk.read("down-key", "a");
  // Wait until the daemon has polled after the read, then add more reads.
  REQUIRE(wait_until([&] { return h.dingtalk.reads_served().count({"down-key", "a"}) == 1; }));
  h.dingtalk.read("down-key", "b");
  h.dingtalk.read("down-key", "c");
  REQUIRE(wait_until([&] { return h.dingtalk.reads_served().size() == 3; }));
  h.sink.start();
  // The first retry comes after about 5 s.
  REQUIRE_MESSAGE(h.wait_for_stop("down-key", std::chrono::seconds(60)), h.log());
  const auto events = h.events_of("down-key");
  REQUIRE(events.size() >= 2);
  std::int64_t last = 0;
  for (const auto& e : events) {
    CHECK(e["data"]["sequence"].get<std::int64_t>() > last);
    last = e["data"]["sequence"];
  }
  CHECK(h.reads_delivered().size() == 3);
  check_sequences(h.sink);
  h.stop();
}

TEST_CASE("daemon: DingTalk calls never exceed requests_per_second in any 1 s window") {
  DaemonHarness h;
  h.requests_per_second = 4;
  for (int i = 0; i < 12; ++i) {
    h.watch("rate-" + std::to_string(i), {"x"});
  }
  h.start();
  REQUIRE_MESSAGE(
      wait_until([&] { return h.dingtalk.query_calls() >= 20; }, std::chrono::seconds(20)),
      h.log());
  h.stop();
  CHECK(FakeDingTalk::max_in_window(h.dingtalk.request_times(), std::chrono::milliseconds(1000)) <=
        4);
}

namespace {

// From /proc/PID/status: whether `sig` is blocked in the main thread, and
// how many threads the process has (nullopt once it is gone).
struct ProcessStatus {
  bool blocked = false;
  int threads = 0;
};

std::optional<ProcessStatus> process_status(pid_t pid, int sig) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  if (!in) {
    return std::nullopt;
  }
  ProcessStatus out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("SigBlk:", 0) == 0) {
      const unsigned long long mask = std::stoull(line.substr(7), nullptr, 16);
      out.blocked = ((mask >> (sig - 1)) & 1U) != 0;
    } else if (line.rfind("Threads:", 0) == 0) {
      out.threads = std::stoi(line.substr(8));
    }
  }
  return out;
}

} // namespace

TEST_CASE("daemon: a SIGTERM while the configuration is still being read stops it cleanly") {
  // Enough messages that reading them takes a while.
  DaemonHarness h;
  for (int i = 0; i < 30'000; ++i) {
    h.messages.emplace_back("early-stop-" + std::to_string(i) + "/Kna29pdJznx1ghav=");
  }
  h.write_config();
  ChildProcess p({RRD_DAEMON_PATH, "--config", h.config_path()}, h.log_path(), h.env);
  // The stop signals are blocked from the start of main, while the daemon
  // has one thread and reads its configuration (0.3 s here): seen
  // so for 50 ms on end. The signal watcher blocks them too, a moment
  // before it starts its thread; that moment alone would not do.
  using Clock = std::chrono::steady_clock;
  const auto give_up = Clock::now() + std::chrono::seconds(10);
  Clock::time_point blocked_since = give_up; // give_up: not blocked
  bool early = false;
  while (!early && Clock::now() < give_up) {
    const auto status = process_status(p.pid(), SIGTERM);
    if (!status || status->threads > 1) {
      break;
    }
    const auto now = Clock::now();
    if (!status->blocked) {
      blocked_since = give_up;
    } else if (blocked_since == give_up) {
      blocked_since = now;
    }
    early = blocked_since != give_up && now - blocked_since >= std::chrono::milliseconds(50);
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  REQUIRE_MESSAGE(early, "the stop signals were not blocked while the configuration was read");
  p.signal(SIGTERM);
  CHECK(p.wait(std::chrono::seconds(30)) == 0);
  CHECK(p.log().find("stopped") != std::string::npos);
}

TEST_CASE("daemon: an invalid configuration exits 2 and names the key path") {
  DaemonHarness h;
  h.watch("k");
  h.extra_yaml = "bogus_section: 1\n";
  h.start();
  REQUIRE(h.daemon->wait(std::chrono::seconds(10)) == 2);
  CHECK(h.log().find("bogus_section") != std::string::npos);

  ChildProcess check({RRD_DAEMON_PATH, "--config", h.config_path(), "--check-config"},
                     h.dir.file("check.log"));
  CHECK(check.wait(std::chrono::seconds(10)) == 2);
  CHECK(check.log().find(h.config_path()) != std::string::npos);
}

TEST_CASE("daemon: --check-config prints every error on its own line, and warnings") {
  DaemonHarness h;
  const std::string bad = h.dir.file("bad.yaml");
  write_file(bad, "dingtalk:\n"
                  "  auth: { access_token: t }\n"
                  "  page_size: 0\n"
                  "messages:\n"
                  "  - { process_query_key: k, robot_code: r, expected_reader_count: 0 }\n");
  ChildProcess check({RRD_DAEMON_PATH, "--config", bad, "--check-config"}, h.dir.file("bad.log"));
  CHECK(check.wait(std::chrono::seconds(10)) == 2);
  CHECK(check.log() == bad + ":3:14: dingtalk.page_size: must be between 1 and 200\n" + bad +
                           ":5:67: messages[0].expected_reader_count: must be at least 1\n");

  const std::string odd = h.dir.file("odd.yaml");
  write_file(odd, "dingtalk:\n"
                  "  auth: { access_token: t }\n"
                  "state: { path: ':memory:' }\n"
                  "messages:\n"
                  "  - { process_query_key: k, robot_code: r, sent_at: 2999-01-01T00:00:00Z }\n");
  ChildProcess warn({RRD_DAEMON_PATH, "--config", odd, "--check-config"}, h.dir.file("odd.log"));
  CHECK(warn.wait(std::chrono::seconds(10)) == 0);
  const std::string log = warn.log();
  CHECK(log.rfind("warning: " + odd +
                      ":5:53: messages[0].sent_at: 2999-01-01T00:00:00Z is in the "
                      "future",
                  0) == 0);
  CHECK(log.find("configuration is valid (1 message, 0 webhooks)") != std::string::npos);
}

TEST_CASE("daemon: the app secret never appears in the logs, even at debug level") {
  DaemonHarness h;
  h.watch("secret-key", {"a"});
  h.dingtalk.read("secret-key", "a");
  h.start();
  REQUIRE_MESSAGE(h.wait_for_stop("secret-key"), h.log());
  h.dingtalk.revoke_tokens();
  h.stop();
  const auto log = h.log();
  CHECK(log.find("fake-app-secret") == std::string::npos);
  CHECK(log.find(rrd::testing::k_test_secret) == std::string::npos);
}
