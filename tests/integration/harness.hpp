// The integration tests' harness: a fake DingTalk and a webhook sink in the
// test process, the real readreceiptd binary as a child process, a
// configuration written for them, and helpers that look at what a user of
// readreceiptd would see (the events at the sink). Not thread-safe; one test
// drives it.
#pragma once

#include "fakes/fake_dingtalk.hpp"
#include "fakes/process.hpp"
#include "fakes/webhook_sink.hpp"

#include <chrono>
#include <doctest/doctest.h>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace rrd::testing {

inline constexpr const char* k_test_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
inline constexpr std::chrono::seconds k_wait{30};

struct TestMessage {
  std::string key;
  std::vector<std::string> expected_readers;
  std::string extra_yaml; // more keys of the item, e.g. "labels: {a: b}"
};

class DaemonHarness {
public:
  explicit DaemonHarness(FakeDingTalkOptions options = {})
      : dingtalk(options), sink(k_test_secret) {}

  ~DaemonHarness() {
    if (daemon && daemon->running()) {
      daemon->kill_hard();
    }
  }

  // The `dingtalk.auth` block; default: the internal app the fake knows.
  std::string auth_yaml = "{ app_key: dingfakeappkey, app_secret_file: app_secret }";
  std::string schedule_yaml = "[ { every: 200ms } ]";
  std::string extra_yaml; // appended to the file as is
  double requests_per_second = 50;
  int page_size = 200;
  std::vector<TestMessage> messages;

  std::string config_path() const { return dir.file("readreceiptd.yaml"); }
  std::string state_path() const { return dir.file("state.db"); }
  std::string log_path() const { return dir.file("daemon.log"); }

  void write_config() {
    write_file(dir.file("app_secret"), "fake-app-secret\n");
    std::string y;
    y += "dingtalk:\n";
    y += "  endpoint: " + dingtalk.endpoint() + "\n";
    y += "  auth: " + auth_yaml + "\n";
    y += "  robot_code: dingfakerobot\n";
    y += "  requests_per_second: " + std::to_string(requests_per_second) + "\n";
    y += "  request_timeout: 2s\n";
    y += "  page_size: " + std::to_string(page_size) + "\n";
    y += "poll:\n  schedule: " + schedule_yaml + "\n  not_ready_grace: 2s\n  max_age: 1h\n";
    y += "state:\n  path: " + state_path() + "\n";
    y += "metrics:\n  listen: \"\"\n";
    y += "api:\n  listen: \"\"\n";
    y += "webhooks:\n  - name: ops\n    url: " + sink.url() + "\n    secret: " + k_test_secret +
         "\n    timeout: 2s\n";
    y += "messages:\n";
    if (messages.empty()) {
      y.resize(y.size() - std::string("messages:\n").size());
    }
    for (const auto& m : messages) {
      y += "  - process_query_key: \"" + m.key + "\"\n";
      if (!m.expected_readers.empty()) {
        y += "    expected_readers: [";
        for (std::size_t i = 0; i < m.expected_readers.size(); ++i) {
          y += (i ? ", " : "") + m.expected_readers[i];
        }
        y += "]\n";
      }
      if (!m.extra_yaml.empty()) {
        y += "    " + m.extra_yaml + "\n";
      }
    }
    y += extra_yaml;
    write_file(config_path(), y);
  }

  // Adds the message to the fake and to the configuration (call
  // write_config() or start() afterwards).
  void watch(const std::string& key, std::vector<std::string> expected = {},
             std::string item_yaml = "") {
    FakeMessage m;
    m.recipients = expected;
    dingtalk.add_message(key, m);
    messages.push_back({key, std::move(expected), std::move(item_yaml)});
  }

  void start(std::vector<std::string> extra_args = {}) {
    write_config();
    std::vector<std::string> argv{RRD_DAEMON_PATH, "--config", config_path(), "--log-level",
                                  "debug"};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    daemon = std::make_unique<ChildProcess>(argv, log_path());
  }

  // SIGTERM; the daemon must exit 0 within the SPEC's 10 s.
  void stop() {
    REQUIRE(daemon);
    const int code = daemon->stop(std::chrono::seconds(10));
    INFO(daemon->log());
    CHECK(code == 0);
  }

  // Events received with a good signature, answered 2xx, in arrival order.
  std::vector<nlohmann::json> events() const {
    std::vector<nlohmann::json> out;
    for (const auto& d : sink.accepted()) {
      out.push_back(d.json);
    }
    return out;
  }

  std::vector<nlohmann::json> events_of(const std::string& key) const {
    std::vector<nlohmann::json> out;
    for (auto& e : events()) {
      if (e["data"]["process_query_key"] == key) {
        out.push_back(e);
      }
    }
    return out;
  }

  // Every (key, user) that reached the sink in a message.read event.
  std::set<std::pair<std::string, std::string>> reads_delivered() const {
    std::set<std::pair<std::string, std::string>> out;
    for (const auto& e : events()) {
      if (e["type"] == "message.read") {
        for (const auto& u : e["data"]["newly_read_user_ids"]) {
          out.emplace(e["data"]["process_query_key"].get<std::string>(), u.get<std::string>());
        }
      }
    }
    return out;
  }

  std::optional<nlohmann::json> stopped_event(const std::string& key) const {
    for (auto& e : events_of(key)) {
      if (e["type"] == "message.tracking_stopped") {
        return e;
      }
    }
    return std::nullopt;
  }

  bool wait_for_stop(const std::string& key, std::chrono::milliseconds timeout = k_wait) const {
    return wait_until([&] { return stopped_event(key).has_value(); }, timeout);
  }

  std::string log() const { return daemon ? daemon->log() : read_file(log_path()); }

  TempDir dir;
  FakeDingTalk dingtalk;
  WebhookSink sink;
  std::unique_ptr<ChildProcess> daemon;
};

// Per message, the sequences delivered (first delivery of each webhook-id)
// must be 1..n with no gap, and repeats must carry the same webhook-id.
inline void check_sequences(const WebhookSink& sink) {
  std::map<std::string, std::string> body_by_id;
  std::map<std::string, std::set<std::int64_t>> seqs;
  std::map<std::pair<std::string, std::int64_t>, std::string> id_by_seq;
  for (const auto& d : sink.accepted()) {
    const std::string key = d.json["data"]["process_query_key"];
    const std::int64_t seq = d.json["data"]["sequence"];
    auto [it, fresh] = id_by_seq.emplace(std::make_pair(key, seq), d.webhook_id);
    INFO("message " << key << " sequence " << seq);
    CHECK(it->second == d.webhook_id); // a repeat has the same webhook-id
    auto [bit, bfresh] = body_by_id.emplace(d.webhook_id, d.body);
    CHECK(bit->second == d.body);
    seqs[key].insert(seq);
  }
  // Not a structured binding: clang 14 cannot capture one in INFO's lambda.
  for (const auto& entry : seqs) {
    const std::string& key = entry.first;
    const std::set<std::int64_t>& s = entry.second;
    INFO("message " << key);
    CHECK(*s.begin() == 1);
    CHECK(*s.rbegin() == static_cast<std::int64_t>(s.size()));
  }
}

} // namespace rrd::testing
