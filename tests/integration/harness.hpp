// The integration tests' harness: a fake DingTalk and a webhook sink in the
// test process, the real readreceiptd binary as a child process, a
// configuration written for them, and helpers that look at what a user of
// readreceiptd would see (the events at the sink). Not thread-safe; one test
// drives it.
#pragma once

#include "fakes/fake_dingtalk.hpp"
#include "fakes/process.hpp"
#include "fakes/webhook_sink.hpp"

#include <cctype>
#include <chrono>
#include <csignal>
#include <doctest/doctest.h>
#include <fstream>
#include <httplib.h>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sqlite3.h>
#include <string>
#include <vector>

namespace rrd::testing {

inline constexpr const char* k_test_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
inline constexpr std::chrono::seconds k_wait{30};

// An answer of the daemon's HTTP API.
struct ApiAnswer {
  int status = 0; // 0: no answer (connection failed)
  std::string body;
  std::multimap<std::string, std::string> headers; // lower-case names
  nlohmann::json json() const { return nlohmann::json::parse(body, nullptr, false); }
  std::string header(std::string name) const {
    for (auto& c : name) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// One item of the configuration's `messages:`. A private chat's item writes
// neither `kind:` nor, unless set, the conversation or token. Built as
// {key, expected_readers, extra_yaml} or with the kind's fields after them.
struct TestMessage {
  TestMessage(std::string key_text, std::vector<std::string> expected = {},
              std::string item_yaml = "", MessageKind message_kind = MessageKind::private_chat,
              std::string conversation = "", std::string template_token = "")
      : key(std::move(key_text)), expected_readers(std::move(expected)),
        extra_yaml(std::move(item_yaml)), kind(message_kind),
        open_conversation_id(std::move(conversation)), token(std::move(template_token)) {}

  std::string key;
  std::vector<std::string> expected_readers;
  std::string extra_yaml; // more keys of the item, e.g. "labels: {a: b}"
  MessageKind kind = MessageKind::private_chat;
  std::string open_conversation_id; // "" leaves it out
  std::string token;                // group only; "" leaves it out
};

class DaemonHarness {
public:
  // `sink_tls`: the sink serves HTTPS with that certificate.
  explicit DaemonHarness(FakeDingTalkOptions options = {},
                         std::optional<TlsFiles> sink_tls = std::nullopt)
      : dingtalk(options), sink(k_test_secret, 0, std::move(sink_tls)) {}

  ~DaemonHarness() {
    if (daemon && daemon->running()) {
      daemon->kill_hard();
    }
  }

  // The `dingtalk.auth` block; default: the internal app the fake knows.
  std::string auth_yaml = "{ app_key: dingfakeappkey, app_secret_file: app_secret }";
  std::string schedule_yaml = "[ { every: 200ms } ]";
  std::string reconcile_yaml; // poll.reconcile_schedule; "" leaves it out
  std::string extra_yaml;     // appended to the file as is
  // api.listen ("" disables the API), e.g. "127.0.0.1:" + free_port().
  std::string api_listen;
  // When set, written to a file that api.token_file names.
  std::string api_token;
  std::string webhook_url; // "" : the sink's
  std::string log_level = "debug";
  std::map<std::string, std::string> env; // extra environment of the daemon
  std::string metrics_listen; // metrics.listen; "" disables (e.g. "127.0.0.1:" + free_port())
  double requests_per_second = 50;
  int page_size = 200;
  std::string request_timeout = "2s";
  std::string dingtalk_extra_yaml; // more keys of `dingtalk:`, e.g. "  ca_file: /x.pem\n"
  std::string webhook_timeout = "2s";
  std::string webhook_extra_yaml; // more keys of the `ops` webhook, e.g. "    ca_file: /x.pem\n"
  std::vector<std::string> more_webhooks_yaml; // whole items, see webhook_item()
  std::vector<TestMessage> messages;
  // The body of `state:`; "" : `path: <state_path()>`.
  std::string state_yaml;

  std::string config_path() const { return dir.file("readreceiptd.yaml"); }
  std::string state_path() const { return dir.file("state.db"); }
  std::string log_path() const { return dir.file("daemon.log"); }

  void write_config() {
    write_file(dir.file("app_secret"), "fake-app-secret\n");
    if (!api_token.empty()) {
      write_file(dir.file("api_token"), api_token + "\n");
    }
    write_file(config_path(), config_text());
  }

  // The configuration file's text for the harness's settings.
  std::string config_text() const {
    std::string y;
    y += "dingtalk:\n";
    y += "  endpoint: " + dingtalk.endpoint() + "\n";
    y += "  auth: " + auth_yaml + "\n";
    y += "  robot_code: dingfakerobot\n";
    y += "  requests_per_second: " + std::to_string(requests_per_second) + "\n";
    y += "  request_timeout: " + request_timeout + "\n";
    y += "  page_size: " + std::to_string(page_size) + "\n";
    y += dingtalk_extra_yaml;
    y += "poll:\n  schedule: " + schedule_yaml + "\n  not_ready_grace: 2s\n  max_age: 1h\n";
    if (!reconcile_yaml.empty()) {
      y += "  reconcile_schedule: " + reconcile_yaml + "\n";
    }
    y += "state:\n" + (state_yaml.empty() ? "  path: " + state_path() + "\n" : state_yaml);
    y += "metrics:\n  listen: \"" + metrics_listen + "\"\n";
    y += "api:\n  listen: \"" + api_listen + "\"\n";
    if (!api_token.empty()) {
      y += "  token_file: api_token\n";
    }
    y += "webhooks:\n" +
         webhook_item("ops", webhook_url.empty() ? sink.url() : webhook_url, webhook_timeout) +
         webhook_extra_yaml;
    for (const auto& w : more_webhooks_yaml) {
      y += w;
    }
    y += "messages:\n";
    if (messages.empty()) {
      y.resize(y.size() - std::string("messages:\n").size());
    }
    for (const auto& m : messages) {
      y += "  - process_query_key: \"" + m.key + "\"\n";
      if (m.kind != MessageKind::private_chat) {
        y += "    kind: " + to_string(m.kind) + "\n";
      }
      if (!m.open_conversation_id.empty()) {
        y += "    open_conversation_id: \"" + m.open_conversation_id + "\"\n";
      }
      if (!m.token.empty()) {
        y += "    token: \"" + m.token + "\"\n";
      }
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
    return y;
  }

  // One item of `webhooks:` with the test secret.
  static std::string webhook_item(const std::string& name, const std::string& url,
                                  const std::string& timeout = "2s") {
    return "  - name: " + name + "\n    url: " + url + "\n    secret: " + k_test_secret +
           "\n    timeout: " + timeout + "\n";
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

  // Adds a message of any kind: `spec` to the fake as it is (it throws
  // std::invalid_argument for what no send could produce), and to the
  // configuration with its kind, open_conversation_id and token.
  void watch_message(const std::string& key, FakeMessage spec,
                     std::vector<std::string> expected = {}, std::string item_yaml = "") {
    TestMessage t{key,       std::move(expected),       std::move(item_yaml),
                  spec.kind, spec.open_conversation_id, spec.token};
    dingtalk.add_message(key, std::move(spec));
    messages.push_back(std::move(t));
  }

  // A group message in the conversation `open_conversation_id`; any user may
  // read it (the expected readers are its recipients in the fake).
  void watch_group(const std::string& key, const std::string& open_conversation_id,
                   std::vector<std::string> expected = {}, std::string item_yaml = "") {
    FakeMessage m;
    m.kind = MessageKind::group;
    m.open_conversation_id = open_conversation_id;
    m.recipients = expected;
    watch_message(key, std::move(m), std::move(expected), std::move(item_yaml));
  }

  // An oto message sent to `recipients` (1..20; only they can read it). With
  // no `expected`, the item names no expected readers: the daemon expects
  // the recipients DingTalk lists.
  void watch_oto(const std::string& key, std::vector<std::string> recipients,
                 std::vector<std::string> expected = {}, std::string item_yaml = "") {
    FakeMessage m;
    m.kind = MessageKind::oto;
    m.recipients = std::move(recipients);
    watch_message(key, std::move(m), std::move(expected), std::move(item_yaml));
  }

  void start(std::vector<std::string> extra_args = {}) {
    write_config();
    std::vector<std::string> argv{RRD_DAEMON_PATH, "--config", config_path(), "--log-level",
                                  log_level};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    daemon = std::make_unique<ChildProcess>(argv, log_path(), env);
  }

  // Calls the daemon's HTTP API (api_listen must be set). `token` "" sends
  // no Authorization header.
  ApiAnswer api(const std::string& method, const std::string& target, const std::string& body = "",
                const std::string& token = "") const {
    REQUIRE_FALSE(api_listen.empty());
    httplib::Client client("http://" + api_listen);
    client.set_connection_timeout(5);
    client.set_read_timeout(10);
    client.set_url_encode(false); // the target is sent exactly as given
    httplib::Headers headers;
    if (!token.empty()) {
      headers.emplace("Authorization", "Bearer " + token);
    }
    auto send = [&]() -> httplib::Result {
      if (method == "POST") {
        return client.Post(target, headers, body, "application/json");
      }
      if (method == "PUT") {
        return client.Put(target, headers, body, "application/json");
      }
      if (method == "DELETE") {
        return client.Delete(target, headers);
      }
      REQUIRE(method == "GET");
      return client.Get(target, headers);
    };
    const httplib::Result r = send();
    ApiAnswer a;
    if (r) {
      a.status = r->status;
      a.body = r->body;
      for (const auto& [name, value] : r->headers) {
        std::string lower = name;
        for (auto& c : lower) {
          c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        }
        a.headers.emplace(lower, value);
      }
    }
    return a;
  }

  // Waits until GET /healthz answers 200.
  bool wait_for_api() const {
    return wait_until([&] { return api("GET", "/healthz").status == 200; });
  }

  // SIGTERM; the daemon must exit 0 within 10 s.
  void stop() {
    REQUIRE(daemon);
    const int code = daemon->stop(std::chrono::seconds(10));
    INFO(daemon->log());
    CHECK(code == 0);
  }

  // SIGKILL: a crash at an arbitrary moment.
  void kill() {
    REQUIRE(daemon);
    daemon->kill_hard();
  }

  // Writes the configuration again and sends SIGHUP.
  void reload() {
    REQUIRE(daemon);
    write_config();
    daemon->signal(SIGHUP);
  }

  // How often `text` occurs in the daemon's log (all runs).
  std::size_t log_count(const std::string& text) const {
    const std::string l = log();
    std::size_t n = 0;
    for (auto pos = l.find(text); pos != std::string::npos; pos = l.find(text, pos + 1)) {
      ++n;
    }
    return n;
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

// The resident set size of process `pid` in KiB (VmRSS), or nullopt when it
// cannot be read (the process is gone).
inline std::optional<long> resident_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::stol(line.substr(6));
    }
  }
  return std::nullopt;
}

// The first column of the first row of `sql`, an integer, from the SQLite
// database at `path` opened read-only (it may be in use by the daemon: WAL
// lets a reader in). nullopt when the query fails.
inline std::optional<std::int64_t> query_int(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::optional<std::int64_t> out;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      out = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return out;
}

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
  for (const auto& entry : seqs) {
    const std::string& key = entry.first; // not a structured binding: INFO captures it
    const std::set<std::int64_t>& s = entry.second;
    INFO("message " << key);
    CHECK(*s.begin() == 1);
    CHECK(*s.rbegin() == static_cast<std::int64_t>(s.size()));
  }
}

// What a consumer can rely on, checked over everything the sink accepted
// (first delivery of each event id, in order of arrival), per message:
// - the first deliveries arrive in sequence order;
// - each user id is newly read in exactly one event, and each event's
//   read_user_ids (and read_count) is the union of the newly read ids so far;
// - at most one message.tracking_stopped, and it has the last sequence.
// Returns the stop event of each message that has one.
inline std::map<std::string, nlohmann::json> check_history(const WebhookSink& sink) {
  std::set<std::string> seen_ids;
  std::map<std::string, std::vector<nlohmann::json>> firsts; // by message, arrival order
  for (const auto& d : sink.accepted()) {
    if (seen_ids.insert(d.webhook_id).second) {
      firsts[d.json["data"]["process_query_key"].get<std::string>()].push_back(d.json);
    }
  }
  std::map<std::string, nlohmann::json> stops;
  for (const auto& entry : firsts) {
    const std::string& key = entry.first; // clang 14 cannot capture a structured binding
    const auto& events = entry.second;
    INFO("message " << key);
    std::int64_t last_seq = 0;
    std::vector<std::string> readers; // the union, in order
    std::set<std::string> reader_set;
    for (const auto& e : events) {
      const auto& data = e["data"];
      const std::int64_t seq = data["sequence"];
      INFO("sequence " << seq << ": " << e.dump());
      CHECK(seq == last_seq + 1); // in order, no gap
      last_seq = seq;
      CHECK_MESSAGE(stops.count(key) == 0, "an event after the stop event");
      if (e["type"] == "message.read") {
        for (const auto& u : data["newly_read_user_ids"]) {
          CHECK_MESSAGE(reader_set.insert(u.get<std::string>()).second,
                        "a user newly read twice: " << u);
          readers.push_back(u);
        }
      } else {
        CHECK(e["type"] == "message.tracking_stopped");
        stops[key] = e;
      }
      std::set<std::string> listed;
      for (const auto& u : data["read_user_ids"]) {
        listed.insert(u.get<std::string>());
      }
      CHECK(listed == reader_set);
      CHECK(data["read_count"] == reader_set.size());
    }
  }
  return stops;
}

} // namespace rrd::testing
