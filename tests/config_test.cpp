#include "fakes/scoped_env.hpp"
#include "readreceiptd/config/config.hpp"

#include <cstdlib>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace doctest {
// Lists of errors print one to a line when a check fails.
template <> struct StringMaker<std::vector<std::string>> {
  static String convert(const std::vector<std::string>& lines) {
    std::string out = "{";
    for (const auto& line : lines) {
      out += "\n  " + line;
    }
    return String((out + "\n}").c_str());
  }
};
} // namespace doctest

using namespace rrd;
using namespace rrd::config;
using namespace std::chrono_literals;

namespace {

namespace fs = std::filesystem;

// A fresh directory, removed with everything in it at the end of the test.
class TempDir {
public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "rrd-config-test-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    m_path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(m_path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& path() const { return m_path; }
  // Writes `text` to `name` (relative to the directory) and returns its path.
  fs::path write(const std::string& name, const std::string& text) const {
    const fs::path p = m_path / name;
    fs::create_directories(p.parent_path());
    std::ofstream out(p, std::ios::binary);
    out << text;
    REQUIRE(out.good());
    return p;
  }

private:
  fs::path m_path;
};

using rrd::testing::ScopedEnv;

constexpr const char* k_file = "/cfg/c.yaml";
constexpr const char* k_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

// The smallest valid configuration, for tests that add one section.
const std::string k_min = "dingtalk:\n"
                          "  auth:\n"
                          "    access_token: tok\n"
                          "  robot_code: robot\n";

// The error text load_string gives, or "" when it loads.
std::string error_of(const std::string& yaml, const std::string& path = k_file) {
  try {
    load_string(yaml, path);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

std::string json_error_of(const std::string& json, const Config& defaults) {
  try {
    parse_message_json(json, defaults);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

fs::path source_dir() {
  return fs::path(__FILE__).parent_path().parent_path();
}

} // namespace

TEST_CASE("parse_duration takes an integer and one unit") {
  CHECK(parse_duration("500ms") == Millis{500});
  CHECK(parse_duration("15s") == Millis{15'000});
  CHECK(parse_duration("10m") == Millis{600'000});
  CHECK(parse_duration("2h") == Millis{7'200'000});
  CHECK(parse_duration("7d") == Millis{604'800'000});
  CHECK(parse_duration("0s") == Millis{0});
  CHECK(parse_duration("007s") == Millis{7'000});
  CHECK(parse_duration("9223372036854775807ms") == Millis{9'223'372'036'854'775'807});
  CHECK(parse_duration("106751991167d") == Millis{106'751'991'167LL * 86'400'000});
}

TEST_CASE("parse_duration rejects negatives, missing units, other units and overflow") {
  for (const char* bad :
       {"", "10", "-5s", "+5s", " 5s", "5s ", "5 s", "5S", "1.5s", "10x", "s", "ms", "1h30m",
        "5sec", "0x10s", "9223372036854775808ms", "106751991168d", "99999999999999999999999s"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_duration(bad).has_value());
  }
}

TEST_CASE("listen addresses are IPv4, [IPv6] or localhost with a port") {
  CHECK(parse_listen_address("127.0.0.1:9464") == ListenAddress{"127.0.0.1", 9464});
  CHECK(parse_listen_address("0.0.0.0:0") == ListenAddress{"0.0.0.0", 0});
  CHECK(parse_listen_address("[::1]:65535") == ListenAddress{"::1", 65535});
  CHECK(parse_listen_address("[::]:80") == ListenAddress{"::", 80});
  CHECK(parse_listen_address("localhost:8080") == ListenAddress{"localhost", 8080});
  for (const char* bad :
       {"", "127.0.0.1", "127.0.0.1:", ":9464", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:http",
        "::1:80", "[::1]80", "[::1]:", "[127.0.0.1]:80", "example.com:80", "256.0.0.1:80",
        "127.1:80", "127.0.0.1:123456", " 127.0.0.1:80"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_listen_address(bad).has_value());
  }
}

TEST_CASE("loopback hosts are localhost, 127.0.0.0/8 and ::1") {
  CHECK(is_loopback_host("localhost"));
  CHECK(is_loopback_host("127.0.0.1"));
  CHECK(is_loopback_host("127.255.1.2"));
  CHECK(is_loopback_host("::1"));
  CHECK(is_loopback_host("::ffff:127.0.0.1"));
  CHECK_FALSE(is_loopback_host("0.0.0.0"));
  CHECK_FALSE(is_loopback_host("10.0.0.1"));
  CHECK_FALSE(is_loopback_host("128.0.0.1"));
  CHECK_FALSE(is_loopback_host("::"));
  CHECK_FALSE(is_loopback_host("::ffff:10.0.0.1"));
  CHECK_FALSE(is_loopback_host("example.com"));
}

TEST_CASE("webhook secrets decode to 1..64 bytes of base64 after whsec_") {
  const auto key = webhook_signing_key(k_secret);
  REQUIRE(key.has_value());
  CHECK(key->size() == 24);
  CHECK(static_cast<unsigned char>((*key)[0]) == 0x31); // "MfKQ" -> 31 f2 90
  CHECK(static_cast<unsigned char>((*key)[1]) == 0xf2);
  CHECK(webhook_signing_key("whsec_YQ==") == std::string("a"));
  CHECK(webhook_signing_key("whsec_YQ") == std::string("a"));
  CHECK(webhook_signing_key("whsec_YWI=") == std::string("ab"));
  CHECK(webhook_signing_key("whsec_" + std::string(86, 'A') + "==") == std::string(64, '\0'));
  CHECK(webhook_signing_key("whsec_" + std::string(86, 'A')) == std::string(64, '\0'));
  for (const std::string& bad :
       std::vector<std::string>{"", "whsec_", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_Y",
                                "whsec_YQ=", "whsec_Y===", "whsec_YQ==YQ==", "whsec_a-b_",
                                "whsec_YQ ==", "WHSEC_YQ==", "whsec_" + std::string(88, 'A'),
                                "whsec_" + std::string(87, 'A') + "="}) {
    CAPTURE(bad);
    CHECK_FALSE(webhook_signing_key(bad).has_value());
  }
}

TEST_CASE("a full configuration loads into every field") {
  TempDir dir;
  dir.write("app.secret", "s3cr3t-app\n\n");
  dir.write("hook.secret", std::string(k_secret) + "\n");
  dir.write("ca.pem", "not really a CA\n");
  const fs::path config = dir.write("readreceiptd.yaml", R"(
dingtalk:
  endpoint: http://127.0.0.1:8089//
  auth:
    app_key: dingkey
    app_secret_file: app.secret
  robot_code: dingrobot
  requests_per_second: 2.5
  request_timeout: 3s
  page_size: 50
  ca_file: ca.pem
poll:
  schedule:
    - { until: 1m, every: 500ms }
    - until: 1h
      every: 30s
    - { every: 5m }
  not_ready_grace: 0s
  max_age: 7d
state:
  path: data/state.db
metrics:
  listen: "[::1]:0"
api:
  listen: 0.0.0.0:9465
  token: api-token-0123456789
webhooks:
  - name: ops
    url: https://hooks.example.com/r?x=1
    secret_file: hook.secret
    headers: { X-Team: ops, Authorization: Bearer abc }
    timeout: 2s
    ca_file: ca.pem
    events: [message.tracking_stopped]
  - name: audit-2
    url: http://localhost:1/
    secret: whsec_YWJjZGVmZ2hpamtsbW5vcA==
messages:
  - process_query_key: "Kna29pdJznx1ghavbumkQKwDzgfxZLapw55G7x0Q="
    open_conversation_id: "cid6KeBBLo7EeiodoA=="
    robot_code: other
    expected_readers: [user1, user2]
    sent_at: 2026-11-25T10:00:00Z
    webhooks: [ops]
    labels: { campaign: outage-42, team: ops }
  - process_query_key: k2
    expected_reader_count: 3
    sent_at: "2026-11-25T18:00:00.5+08:00"
    webhooks: []
  - process_query_key: k3
)");
  const ScopedEnv no_credentials("CREDENTIALS_DIRECTORY", std::nullopt);
  const Config c = load_file(config.string());

  CHECK(c.path == config.string());
  CHECK(c.dingtalk.endpoint == "http://127.0.0.1:8089");
  CHECK(c.dingtalk.auth_kind == DingTalk::AuthKind::internal_app);
  CHECK(c.dingtalk.internal_app.app_key == "dingkey");
  CHECK(c.dingtalk.internal_app.app_secret == "s3cr3t-app");
  CHECK(c.dingtalk.robot_code == "dingrobot");
  CHECK(c.dingtalk.requests_per_second == 2.5);
  CHECK(c.dingtalk.request_timeout == 3s);
  CHECK(c.dingtalk.page_size == 50);
  CHECK(c.dingtalk.ca_file == (dir.path() / "ca.pem").string());

  REQUIRE(c.poll.schedule.size() == 3);
  CHECK(c.poll.schedule[0] == ScheduleStep{Millis{60'000}, Millis{500}});
  CHECK(c.poll.schedule[1] == ScheduleStep{Millis{3'600'000}, Millis{30'000}});
  CHECK(c.poll.schedule[2] == ScheduleStep{std::nullopt, Millis{300'000}});
  CHECK(c.poll.not_ready_grace == 0ms);
  CHECK(c.poll.max_age == std::chrono::hours{7 * 24});

  CHECK(c.state.path == (dir.path() / "data/state.db").string());
  CHECK(c.metrics.listen == "[::1]:0");
  CHECK(c.api.listen == "0.0.0.0:9465");
  CHECK(c.api.token == "api-token-0123456789");

  REQUIRE(c.webhooks.size() == 2);
  Webhook ops;
  ops.name = "ops";
  ops.url = "https://hooks.example.com/r?x=1";
  ops.secret = k_secret;
  ops.headers = {{"X-Team", "ops"}, {"Authorization", "Bearer abc"}};
  ops.timeout = 2s;
  ops.ca_file = (dir.path() / "ca.pem").string();
  ops.events = {EventType::tracking_stopped};
  CHECK(c.webhooks[0] == ops);
  Webhook audit;
  audit.name = "audit-2";
  audit.url = "http://localhost:1/";
  audit.secret = "whsec_YWJjZGVmZ2hpamtsbW5vcA==";
  CHECK(c.webhooks[1] == audit); // defaults: no headers, 10 s, system CAs, all events

  REQUIRE(c.messages.size() == 3);
  MessageSpec m0;
  m0.process_query_key = "Kna29pdJznx1ghavbumkQKwDzgfxZLapw55G7x0Q=";
  m0.open_conversation_id = "cid6KeBBLo7EeiodoA==";
  m0.robot_code = "other";
  m0.expected_readers = {"user1", "user2"};
  REQUIRE(parse_rfc3339("2026-11-25T10:00:00Z", m0.sent_at.emplace()));
  m0.webhooks = std::vector<std::string>{"ops"};
  m0.labels = {{"campaign", "outage-42"}, {"team", "ops"}};
  CHECK(c.messages[0] == m0);
  MessageSpec m1;
  m1.process_query_key = "k2";
  m1.robot_code = "dingrobot";
  m1.expected_reader_count = 3;
  m1.sent_at = from_unix_ms(1'795'600'800'500); // 2026-11-25T10:00:00.5Z
  m1.webhooks = std::vector<std::string>{};
  CHECK(c.messages[1] == m1);
  MessageSpec m2;
  m2.process_query_key = "k3";
  m2.robot_code = "dingrobot";
  CHECK(c.messages[2] == m2);
}

TEST_CASE("sections left out take the defaults, only dingtalk is required") {
  const Config c = load_string(k_min, k_file);
  const Config defaults;
  CHECK(c.dingtalk.endpoint == "https://api.dingtalk.com");
  CHECK(c.dingtalk.auth_kind == DingTalk::AuthKind::fixed_token);
  CHECK(c.dingtalk.fixed_token.access_token == "tok");
  CHECK(c.dingtalk.requests_per_second == 20);
  CHECK(c.dingtalk.request_timeout == 10s);
  CHECK(c.dingtalk.page_size == 200);
  CHECK(c.dingtalk.ca_file.empty());
  CHECK(c.poll.schedule == defaults.poll.schedule);
  CHECK(c.poll.not_ready_grace == 2min);
  CHECK(c.poll.max_age == 72h);
  CHECK(c.state.path == "/var/lib/readreceiptd/state.db");
  CHECK(c.metrics.listen == "127.0.0.1:9464");
  CHECK(c.api.listen == "127.0.0.1:9465");
  CHECK(c.api.token.empty());
  CHECK(c.webhooks.empty());
  CHECK(c.messages.empty());

  // Empty sections and lists read as left out.
  const Config e = load_string(k_min + "poll:\nmetrics:\napi:\nwebhooks:\nmessages: []\n", k_file);
  CHECK(e.poll.schedule == defaults.poll.schedule);
  CHECK(e.metrics.listen == "127.0.0.1:9464");

  CHECK(error_of("") == "/cfg/c.yaml: dingtalk: required");
  CHECK(error_of("# nothing\n") == "/cfg/c.yaml: dingtalk: required");
  CHECK(error_of("state:\n  path: /x\n") == "/cfg/c.yaml:1:1: dingtalk: required");
}

TEST_CASE("the third-party auth form needs all four keys") {
  const Config c = load_string("dingtalk:\n"
                               "  auth:\n"
                               "    suite_key: sk\n"
                               "    suite_secret: ss\n"
                               "    auth_corp_id: corp\n"
                               "    suite_ticket: ticket\n",
                               k_file);
  CHECK(c.dingtalk.auth_kind == DingTalk::AuthKind::third_party);
  CHECK(c.dingtalk.third_party.suite_key == "sk");
  CHECK(c.dingtalk.third_party.suite_secret == "ss");
  CHECK(c.dingtalk.third_party.auth_corp_id == "corp");
  CHECK(c.dingtalk.third_party.suite_ticket == "ticket");

  CHECK(error_of("dingtalk:\n"
                 "  auth:\n"
                 "    suite_key: sk\n"
                 "    suite_secret: ss\n"
                 "    suite_ticket: ticket\n") ==
        "/cfg/c.yaml:3:5: dingtalk.auth.auth_corp_id: required");
  CHECK(error_of("dingtalk:\n"
                 "  auth:\n"
                 "    suite_key: sk\n"
                 "    suite_secret: ss\n"
                 "    auth_corp_id: corp\n") ==
        "/cfg/c.yaml:3:5: dingtalk.auth.suite_ticket: required (or suite_ticket_file)");
}

TEST_CASE("dingtalk.auth must hold exactly one complete form") {
  const std::string forms = "exactly one of app_key/app_secret, "
                            "suite_key/suite_secret/auth_corp_id/suite_ticket, access_token";
  CHECK(error_of("dingtalk:\n  auth:\n    app_key: k\n    access_token: t\n") ==
        "/cfg/c.yaml:3:5: dingtalk.auth: " + forms);
  CHECK(error_of("dingtalk:\n  auth: {}\n") == "/cfg/c.yaml:2:9: dingtalk.auth: " + forms);
  CHECK(error_of("dingtalk:\n  auth:\n  robot_code: x\n") ==
        "/cfg/c.yaml:2:3: dingtalk.auth: required");
  CHECK(error_of("dingtalk:\n  robot_code: x\n") == "/cfg/c.yaml:2:3: dingtalk.auth: required");
  CHECK(error_of("dingtalk:\n  auth:\n    app_key: k\n") ==
        "/cfg/c.yaml:3:5: dingtalk.auth.app_secret: required (or app_secret_file)");
  CHECK(error_of("dingtalk:\n  auth:\n    app_secret: s\n") ==
        "/cfg/c.yaml:3:5: dingtalk.auth.app_key: required");
  CHECK(error_of("dingtalk:\n  auth:\n    app_key: ''\n    app_secret: s\n") ==
        "/cfg/c.yaml:3:14: dingtalk.auth.app_key: must not be empty");
  CHECK(error_of("dingtalk:\n  auth:\n    access_token: ''\n") ==
        "/cfg/c.yaml:3:19: dingtalk.auth.access_token: must not be empty");
  CHECK(error_of("dingtalk:\n  auth: token\n") ==
        "/cfg/c.yaml:2:9: dingtalk.auth: must be a map, not a string");
  CHECK(error_of("dingtalk: [1]\n") == "/cfg/c.yaml:1:11: dingtalk: must be a map, not a list");
}

TEST_CASE("dingtalk fields are checked") {
  const std::string head = "dingtalk:\n  auth: { access_token: t }\n";
  CHECK(load_string(head + "  endpoint: https://x.example/\n", k_file).dingtalk.endpoint ==
        "https://x.example");
  CHECK(load_string(head + "  endpoint: http://x.example/base\n", k_file).dingtalk.endpoint ==
        "http://x.example/base");
  // Each bad endpoint says what is wrong with it.
  const std::string scheme = "must start with http:// or https://";
  const std::string no_host = "has no host (http://HOST/...)";
  for (const auto& bad_why : std::vector<std::pair<std::string, std::string>>{
           {"ftp://x.example", scheme},
           {"x.example", scheme},
           {"https://", no_host},
           {"https:///path", no_host},
           {"'https://x.example/?a=1'", "must not have a query (?...) or a fragment (#...): it "
                                        "is the base of every request's path"},
           {"'https://x .example'", "must not contain spaces (one is at byte 9)"},
           {"'http://:80'", no_host}}) {
    const std::string& bad = bad_why.first;
    const std::string& why = bad_why.second;
    CAPTURE(bad);
    CHECK(error_of(head + "  endpoint: " + bad + "\n") ==
          "/cfg/c.yaml:3:13: dingtalk.endpoint: " + why);
  }
  CHECK(load_string(head + "  requests_per_second: 0.5\n", k_file).dingtalk.requests_per_second ==
        0.5);
  CHECK(error_of(head + "  requests_per_second: 0\n") ==
        "/cfg/c.yaml:3:24: dingtalk.requests_per_second: must be greater than 0");
  CHECK(error_of(head + "  requests_per_second: -3\n") ==
        "/cfg/c.yaml:3:24: dingtalk.requests_per_second: must be greater than 0");
  CHECK(error_of(head + "  requests_per_second: fast\n") ==
        "/cfg/c.yaml:3:24: dingtalk.requests_per_second: must be a number, not \"fast\"");
  CHECK(error_of(head + "  requests_per_second: .nan\n") ==
        "/cfg/c.yaml:3:24: dingtalk.requests_per_second: must be a number, not \".nan\"");
  CHECK(error_of(head + "  page_size: 0\n") ==
        "/cfg/c.yaml:3:14: dingtalk.page_size: must be between 1 and 200");
  CHECK(error_of(head + "  page_size: 201\n") ==
        "/cfg/c.yaml:3:14: dingtalk.page_size: must be between 1 and 200");
  CHECK(error_of(head + "  page_size: 1.5\n") ==
        "/cfg/c.yaml:3:14: dingtalk.page_size: must be an integer, not \"1.5\"");
  CHECK(error_of(head + "  page_size: 99999999999999999999\n") ==
        "/cfg/c.yaml:3:14: dingtalk.page_size: integer \"99999999999999999999\" is out of range");
  CHECK(load_string(head + "  page_size: 1\n", k_file).dingtalk.page_size == 1);
  CHECK(error_of(head + "  request_timeout: 0s\n") ==
        "/cfg/c.yaml:3:20: dingtalk.request_timeout: must be greater than 0");
  CHECK(error_of(head + "  request_timeout: 10\n") ==
        "/cfg/c.yaml:3:20: dingtalk.request_timeout: invalid duration \"10\" (use e.g. 500ms, "
        "15s, 10m, 2h, 7d)");
  CHECK(error_of(head + "  request_timeout: [10s]\n") ==
        "/cfg/c.yaml:3:20: dingtalk.request_timeout: must be a duration string (use e.g. "
        "500ms, 15s, 10m, 2h, 7d), not a list");
  CHECK(error_of(head + "  robot_code: { a: 1 }\n") ==
        "/cfg/c.yaml:3:15: dingtalk.robot_code: must be a string, not a map");
  CHECK(error_of(head + "  ca_file: /nonexistent/ca.pem\n") ==
        "/cfg/c.yaml:3:12: dingtalk.ca_file: cannot read /nonexistent/ca.pem: No such file or "
        "directory");
}

TEST_CASE("unknown keys fail at every level, suggesting near misses") {
  CHECK(error_of(k_min + "massages: []\n") ==
        "/cfg/c.yaml:5:1: massages: unknown key (did you mean \"messages\"?)");
  CHECK(error_of(k_min + "colour: red\n") ==
        "/cfg/c.yaml:5:1: colour: unknown key (expected one of: dingtalk, poll, state, metrics, "
        "api, webhooks, messages)");
  CHECK(error_of(k_min + "  robotcode: x\n") ==
        "/cfg/c.yaml:5:3: dingtalk.robotcode: unknown key (did you mean \"robot_code\"?)");
  CHECK(error_of("dingtalk:\n  auth:\n    app_key: k\n    app_secert: s\n") ==
        "/cfg/c.yaml:3:5: dingtalk.auth.app_secret: required (or app_secret_file)\n"
        "/cfg/c.yaml:4:5: dingtalk.auth.app_secert: unknown key (did you mean \"app_secret\"?)");
  CHECK(error_of(k_min + "poll:\n  schedule:\n    - { every: 1m, untill: 2m }\n") ==
        "/cfg/c.yaml:7:20: poll.schedule[0].untill: unknown key (did you mean \"until\"?)");
  CHECK(error_of(k_min + "state:\n  Path: /x\n") ==
        "/cfg/c.yaml:6:3: state.path: required\n"
        "/cfg/c.yaml:6:3: state.Path: unknown key (did you mean \"path\"?)");
  CHECK(error_of(k_min + "metrics:\n  listen: ''\n  port: 1\n") ==
        "/cfg/c.yaml:7:3: metrics.port: unknown key (expected one of: listen)");
  CHECK(error_of(k_min + "api:\n  token-file: x\n") ==
        "/cfg/c.yaml:6:3: api.token-file: unknown key (did you mean \"token_file\"?)");
  CHECK(error_of(k_min + "webhooks:\n  - name: a\n    uri: http://x\n") ==
        "/cfg/c.yaml:6:5: webhooks[0].url: required\n"
        "/cfg/c.yaml:6:5: webhooks[0].secret: required (or secret_file)\n"
        "/cfg/c.yaml:7:5: webhooks[0].uri: unknown key (did you mean \"url\"?)");
  CHECK(error_of(k_min + "messages:\n  - processQueryKey: k\n") ==
        "/cfg/c.yaml:6:5: messages[0].process_query_key: required\n"
        "/cfg/c.yaml:6:5: messages[0].processQueryKey: unknown key (did you mean "
        "\"process_query_key\"?)");
  CHECK(error_of(k_min + "messages:\n  - process_query_key: k\n    expected_reader: [a]\n") ==
        "/cfg/c.yaml:7:5: messages[0].expected_reader: unknown key (did you mean "
        "\"expected_readers\"?)");
}

TEST_CASE("repeated keys, non-string keys and YAML syntax errors name line and column") {
  CHECK(error_of(k_min + "  robot_code: again\n") ==
        "/cfg/c.yaml:5:3: dingtalk.robot_code: duplicate key (first at line 4)");
  CHECK(error_of(k_min + "messages:\n  - { process_query_key: k, labels: { a: x, a: y } }\n") ==
        "/cfg/c.yaml:6:45: messages[0].labels.a: duplicate key");
  CHECK(error_of(k_min + "state:\n  ? [a]\n  : b\n") ==
        "/cfg/c.yaml:6:3: state.path: required\n/cfg/c.yaml:6:5: state: keys must be strings");
  CHECK(error_of("dingtalk:\n  auth: [1,\n") ==
        "/cfg/c.yaml:3:1: invalid YAML: end of sequence flow not found");
  CHECK(error_of("dingtalk: a: b\n") == "/cfg/c.yaml:1:12: invalid YAML: illegal map value");
  CHECK(error_of("dingtalk:\n\tauth: x\n").rfind("/cfg/c.yaml:2:", 0) == 0);
  CHECK(error_of(k_min + "---\n" + k_min) ==
        "/cfg/c.yaml:6:1: the file must hold one YAML document, not 2");
  // A stray token after a node: yaml-cpp's LoadAll() would never return.
  CHECK(error_of("{},") == "/cfg/c.yaml:1:3: invalid YAML: unexpected token");
  CHECK(error_of(",") == "/cfg/c.yaml:1:1: invalid YAML: unexpected token");
  CHECK(error_of("[a], b\n") == "/cfg/c.yaml:1:4: invalid YAML: unexpected token");
  CHECK(error_of("- dingtalk\n") ==
        "/cfg/c.yaml:1:1: the configuration must be a map of sections, not a list");
  CHECK(error_of("just text\n") ==
        "/cfg/c.yaml:1:1: the configuration must be a map of sections, not a string");
}

TEST_CASE("self-referencing or exploding aliases fail cleanly") {
  CHECK(contains(error_of(k_min + "messages: &a [*a]\n"), "nested too deeply"));
  std::string laughs = k_min + "x0: &x0 [a, a, a, a, a, a, a, a, a, a]\n";
  for (int i = 1; i < 8; ++i) {
    const std::string prev = "*x" + std::to_string(i - 1);
    laughs += "x" + std::to_string(i) + ": &x" + std::to_string(i) + " [" + prev;
    for (int j = 0; j < 9; ++j) {
      laughs += ", " + prev;
    }
    laughs += "]\n";
  }
  CHECK(contains(error_of(laughs), "too many nodes"));
}

TEST_CASE("poll.schedule steps are checked") {
  const auto poll = [](const std::string& schedule) {
    return error_of(k_min + "poll:\n  schedule:\n" + schedule);
  };
  CHECK(poll("    - { until: 1m, every: 15s }\n    - { until: 2h, every: 10x }\n    - { every: "
             "1h }\n") ==
        "/cfg/c.yaml:8:27: poll.schedule[1].every: invalid duration \"10x\" (use e.g. 500ms, "
        "15s, 10m, 2h, 7d)");
  CHECK(error_of(k_min + "poll:\n  schedule: []\n") ==
        "/cfg/c.yaml:6:13: poll.schedule: must have at least one step");
  CHECK(error_of(k_min + "poll:\n  schedule: { every: 1m }\n") ==
        "/cfg/c.yaml:6:13: poll.schedule: must be a list, not a map");
  CHECK(poll("    - { every: 15s }\n    - { every: 1h }\n") ==
        "/cfg/c.yaml:7:7: poll.schedule[0].until: required on every step but the last");
  CHECK(poll("    - { until: 1m, every: 15s }\n    - { until: 2h, every: 1h }\n") ==
        "/cfg/c.yaml:8:16: poll.schedule[1].until: must not be set on the last step (it "
        "applies until max_age)");
  CHECK(poll("    - { until: 1h, every: 15s }\n    - { until: 60m, every: 1m }\n    - { every: "
             "1h }\n") ==
        "/cfg/c.yaml:8:16: poll.schedule[1].until: must be greater than poll.schedule[0].until");
  CHECK(poll("    - { until: 1m, every: 0s }\n    - { every: 1h }\n") ==
        "/cfg/c.yaml:7:27: poll.schedule[0].every: must be greater than 0");
  CHECK(poll("    - { until: 0s, every: 1s }\n    - { every: 1h }\n") ==
        "/cfg/c.yaml:7:16: poll.schedule[0].until: must be greater than 0");
  CHECK(poll("    - { until: 1m }\n    - { every: 1h }\n") ==
        "/cfg/c.yaml:7:7: poll.schedule[0].every: required");
  CHECK(poll("    - 15s\n") == "/cfg/c.yaml:7:7: poll.schedule[0]: must be a map, not a string");
  CHECK(poll("    -\n") == "/cfg/c.yaml:7:5: poll.schedule[0]: must be a map with until and every");
  CHECK(load_string(k_min + "poll:\n  schedule:\n    - every: 2m\n", k_file).poll.schedule ==
        std::vector<ScheduleStep>{{std::nullopt, Millis{120'000}}});
}

TEST_CASE("poll grace may be zero, max_age must be positive") {
  CHECK(load_string(k_min + "poll:\n  not_ready_grace: 0s\n", k_file).poll.not_ready_grace == 0ms);
  CHECK(error_of(k_min + "poll:\n  not_ready_grace: -1s\n") ==
        "/cfg/c.yaml:6:20: poll.not_ready_grace: invalid duration \"-1s\" (use e.g. 500ms, 15s, "
        "10m, 2h, 7d)");
  CHECK(error_of(k_min + "poll:\n  max_age: 0d\n") ==
        "/cfg/c.yaml:6:12: poll.max_age: must be greater than 0");
}

TEST_CASE("state.path is required, relative to the configuration file") {
  CHECK(error_of(k_min + "state: {}\n") == "/cfg/c.yaml:5:8: state.path: required");
  CHECK(error_of(k_min + "state:\n  path: ''\n") ==
        "/cfg/c.yaml:6:9: state.path: must not be empty");
  CHECK(load_string(k_min + "state:\n  path: db/s.db\n", k_file).state.path == "/cfg/db/s.db");
  CHECK(load_string(k_min + "state:\n  path: ../s.db\n", k_file).state.path == "/s.db");
  CHECK(load_string(k_min + "state:\n  path: /abs/s.db\n", k_file).state.path == "/abs/s.db");
  CHECK(load_string(k_min + "state:\n  path: ':memory:'\n", k_file).state.path == ":memory:");
}

TEST_CASE("listen addresses are checked, an empty one disables the listener") {
  CHECK(load_string(k_min + "metrics:\n  listen: ''\n", k_file).metrics.listen.empty());
  CHECK(load_string(k_min + "api:\n  listen: ''\n", k_file).api.listen.empty());
  CHECK(load_string(k_min + "metrics:\n  listen: 0.0.0.0:9999\n", k_file).metrics.listen ==
        "0.0.0.0:9999");
  CHECK(error_of(k_min + "metrics:\n  listen: 127.0.0.1:70000\n") ==
        "/cfg/c.yaml:6:11: metrics.listen: invalid address \"127.0.0.1:70000\" (use host:port "
        "with an IPv4 address, [IPv6] or localhost, port 0..65535; \"\" disables)");
  CHECK(contains(error_of(k_min + "api:\n  listen: example.com:80\n"),
                 "/cfg/c.yaml:6:11: api.listen: invalid address \"example.com:80\""));
  CHECK(error_of(k_min + "metrics:\n  listen: 9464\n")
            .rfind("/cfg/c.yaml:6:11: metrics.listen: invalid address \"9464\"", 0) == 0);
}

TEST_CASE("the API needs a token unless it listens on a loopback address") {
  CHECK(error_of(k_min + "api:\n  listen: 0.0.0.0:9465\n") ==
        "/cfg/c.yaml:6:11: api.token_file: required when api.listen is not a loopback address");
  CHECK(error_of(k_min + "api:\n  listen: '[::]:9465'\n") ==
        "/cfg/c.yaml:6:11: api.token_file: required when api.listen is not a loopback address");
  CHECK(load_string(k_min + "api:\n  listen: 127.0.0.2:1\n", k_file).api.token.empty());
  CHECK(load_string(k_min + "api:\n  listen: '[::1]:1'\n", k_file).api.token.empty());
  CHECK(load_string(k_min + "api:\n  listen: localhost:1\n", k_file).api.token.empty());
  CHECK(load_string(k_min + "api:\n  listen: ''\n", k_file).api.token.empty());
  CHECK(load_string(k_min + "api:\n  listen: 10.1.2.3:80\n  token: t0k-0123456789abc\n", k_file)
            .api.token == "t0k-0123456789abc");
  CHECK(error_of(k_min + "api:\n  token: a\n  token_file: b\n") ==
        "/cfg/c.yaml:7:15: api.token_file: cannot be combined with token");
}

TEST_CASE("webhooks are checked") {
  const auto hook = [](const std::string& body) {
    return error_of(k_min + "webhooks:\n  - name: ops\n    url: http://h/\n" + body);
  };
  const std::string secret = std::string("    secret: ") + k_secret + "\n";
  CHECK(hook(secret).empty());
  const std::string url_and_secret = "/cfg/c.yaml:6:5: webhooks[0].url: required\n"
                                     "/cfg/c.yaml:6:5: webhooks[0].secret: required (or "
                                     "secret_file)\n";
  CHECK(error_of(k_min + "webhooks:\n  - name: Ops\n") ==
        url_and_secret +
            "/cfg/c.yaml:6:11: webhooks[0].name: invalid name \"Ops\" (use a-z, 0-9, _ and -)");
  CHECK(error_of(k_min + "webhooks:\n  - name: ''\n") ==
        url_and_secret +
            "/cfg/c.yaml:6:11: webhooks[0].name: invalid name \"\" (use a-z, 0-9, _ and -)");
  CHECK(error_of(k_min + "webhooks:\n  - url: http://h\n") ==
        "/cfg/c.yaml:6:5: webhooks[0].name: required\n"
        "/cfg/c.yaml:6:5: webhooks[0].secret: required (or secret_file)");
  CHECK(error_of(k_min + "webhooks:\n  - name: ops\n") ==
        "/cfg/c.yaml:6:5: webhooks[0].url: required\n"
        "/cfg/c.yaml:6:5: webhooks[0].secret: required (or secret_file)");
  CHECK(error_of(k_min + "webhooks:\n  - name: ops\n    url: mailto:x@y\n    secret: " + k_secret +
                 "\n") == "/cfg/c.yaml:7:10: webhooks[0].url: must start with http:// or https://");
  CHECK(hook("") == "/cfg/c.yaml:6:5: webhooks[0].secret: required (or secret_file)");
  CHECK(hook(secret + "    timeout: 0ms\n") ==
        "/cfg/c.yaml:9:14: webhooks[0].timeout: must be greater than 0");
  CHECK(hook(secret + "    headers: [a]\n") ==
        "/cfg/c.yaml:9:14: webhooks[0].headers: must be a map, not a list");
  CHECK(hook(secret + "    headers: { X-A: [1] }\n") ==
        "/cfg/c.yaml:9:21: webhooks[0].headers.X-A: must be a string, not a list");
  CHECK(hook(secret + "    headers: { 'X A': b }\n") ==
        "/cfg/c.yaml:9:16: webhooks[0].headers.X A: invalid header name");
  CHECK(hook(secret + "    headers: { Webhook-Signature: b }\n") ==
        "/cfg/c.yaml:9:16: webhooks[0].headers.Webhook-Signature: is set by readreceiptd and "
        "cannot be overridden");
  CHECK(hook(secret + "    headers: { X-A: \"a\\nInjected: b\" }\n") ==
        "/cfg/c.yaml:9:21: webhooks[0].headers.X-A: header value must not contain control "
        "characters");
  CHECK(hook(secret + "    events: []\n") ==
        "/cfg/c.yaml:9:13: webhooks[0].events: must list at least one event (or be left out)");
  CHECK(hook(secret + "    events: [message.raed]\n") ==
        "/cfg/c.yaml:9:14: webhooks[0].events[0]: unknown event \"message.raed\" (did you mean "
        "\"message.read\"?) (known: message.read, message.tracking_stopped)");
  CHECK(hook(secret + "    events: [message.read, message.read]\n") ==
        "/cfg/c.yaml:9:28: webhooks[0].events[1]: duplicate of webhooks[0].events[0]");
  CHECK(error_of(k_min + "webhooks:\n  - name: a\n    url: http://h\n    secret: " + k_secret +
                 "\n  - name: a\n    url: http://h\n    secret: " + k_secret + "\n") ==
        "/cfg/c.yaml:9:11: webhooks[1].name: duplicate of webhooks[0].name (\"a\")");
  CHECK(error_of(k_min + "webhooks: { name: a }\n") ==
        "/cfg/c.yaml:5:11: webhooks: must be a list, not a map");
  CHECK(error_of(k_min + "webhooks:\n  -\n") ==
        "/cfg/c.yaml:6:3: webhooks[0]: must be a map with name, url and secret");
}

TEST_CASE("webhook secrets must be whsec_ base64 and are never printed") {
  const auto with_secret = [](const std::string& s) {
    return error_of(k_min + "webhooks:\n  - name: ops\n    url: http://h/\n    secret: " + s +
                    "\n");
  };
  const std::string problem = "/cfg/c.yaml:8:13: webhooks[0].secret: must be \"whsec_\" followed "
                              "by base64 of 16 to 64 bytes";
  for (const std::string& bad :
       std::vector<std::string>{"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not*base64*at*all",
                                "whsec_" + std::string(100, 'Q'), "whsec_"}) {
    CAPTURE(bad);
    const std::string e = with_secret(bad);
    CHECK(e == problem);
    if (bad.size() > 6) {
      CHECK_FALSE(contains(e, bad.substr(6)));
    }
  }

  // An unrelated error in a webhook that has a secret does not show it.
  const std::string e =
      error_of(k_min + "webhooks:\n  - name: ops\n    url: http://h/\n    secret: " + k_secret +
               "\n    timeout: soon\n");
  CHECK(contains(e, "webhooks[0].timeout: invalid duration"));
  CHECK_FALSE(contains(e, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
}

TEST_CASE("messages are checked") {
  const auto msg = [](const std::string& body) {
    return error_of(k_min + "webhooks:\n  - { name: ops, url: 'http://h', secret: " + k_secret +
                    " }\nmessages:\n  - process_query_key: k0\n" + body);
  };
  CHECK(msg("").empty());
  CHECK(error_of(k_min + "messages:\n  - process_query_key: k0\n  - process_query_key: k1\n  - "
                         "open_conversation_id: c\n") ==
        "/cfg/c.yaml:8:5: messages[2].process_query_key: required");
  CHECK(error_of(k_min + "messages:\n  - process_query_key:\n") ==
        "/cfg/c.yaml:6:5: messages[0].process_query_key: required");
  CHECK(error_of(k_min + "messages:\n  - process_query_key: ''\n") ==
        "/cfg/c.yaml:6:24: messages[0].process_query_key: must not be empty");
  CHECK(error_of(k_min + "messages:\n  - process_query_key: [k]\n") ==
        "/cfg/c.yaml:6:24: messages[0].process_query_key: must be a string, not a list");
  CHECK(error_of(k_min + "messages:\n  - process_query_key: a\n  - process_query_key: b\n  - "
                         "process_query_key: a\n") ==
        "/cfg/c.yaml:8:24: messages[2].process_query_key: duplicate of "
        "messages[0].process_query_key");
  CHECK(error_of("dingtalk:\n  auth: { access_token: t }\nmessages:\n  - process_query_key: "
                 "k\n") ==
        "/cfg/c.yaml:4:5: messages[0].robot_code: required (no dingtalk.robot_code default)");
  CHECK(msg("    expected_readers: [a]\n    expected_reader_count: 1\n") ==
        "/cfg/c.yaml:10:28: messages[0].expected_reader_count: cannot be combined with "
        "expected_readers");
  CHECK(msg("    expected_readers: [a, b, a]\n") ==
        "/cfg/c.yaml:9:30: messages[0].expected_readers[2]: duplicate of "
        "messages[0].expected_readers[0]");
  CHECK(msg("    expected_readers: [a, '']\n") ==
        "/cfg/c.yaml:9:27: messages[0].expected_readers[1]: must not be empty");
  CHECK(msg("    expected_readers: [a, [b]]\n") ==
        "/cfg/c.yaml:9:27: messages[0].expected_readers[1]: must be a string, not a list");
  CHECK(msg("    expected_readers: []\n") ==
        "/cfg/c.yaml:9:23: messages[0].expected_readers: must list at least one reader (or be "
        "left out)");
  CHECK(msg("    expected_readers: a\n") ==
        "/cfg/c.yaml:9:23: messages[0].expected_readers: must be a list, not a string");
  CHECK(msg("    expected_reader_count: 0\n") ==
        "/cfg/c.yaml:9:28: messages[0].expected_reader_count: must be at least 1");
  CHECK(msg("    expected_reader_count: two\n") ==
        "/cfg/c.yaml:9:28: messages[0].expected_reader_count: must be an integer, not \"two\"");
  CHECK(msg("    sent_at: yesterday\n") ==
        "/cfg/c.yaml:9:14: messages[0].sent_at: invalid time \"yesterday\" (use RFC 3339, e.g. "
        "2026-11-25T10:00:00Z)");
  CHECK(msg("    sent_at: 2026-11-25\n") ==
        "/cfg/c.yaml:9:14: messages[0].sent_at: invalid time \"2026-11-25\" (use RFC 3339, e.g. "
        "2026-11-25T10:00:00Z)");
  CHECK(msg("    webhooks: [opz]\n") ==
        "/cfg/c.yaml:9:16: messages[0].webhooks[0]: unknown webhook \"opz\" (did you mean "
        "\"ops\"?)");
  CHECK(msg("    webhooks: [ops, ops]\n") ==
        "/cfg/c.yaml:9:21: messages[0].webhooks[1]: duplicate of messages[0].webhooks[0]");
  CHECK(msg("    labels: [a]\n") ==
        "/cfg/c.yaml:9:13: messages[0].labels: must be a map, not a list");
  CHECK(msg("    labels: { a: { b: c } }\n") ==
        "/cfg/c.yaml:9:18: messages[0].labels.a: must be a string, not a map");
  CHECK(msg("    labels: { a: }\n") ==
        "/cfg/c.yaml:9:15: messages[0].labels.a: must be a string, not null");
  CHECK(msg("    open_conversation_id: { a: b }\n") ==
        "/cfg/c.yaml:9:27: messages[0].open_conversation_id: must be a string, not a map");
  CHECK(error_of(k_min + "messages:\n  - k0\n") ==
        "/cfg/c.yaml:6:5: messages[0]: must be a map, not a string");
  CHECK(error_of(k_min + "messages: k0\n") ==
        "/cfg/c.yaml:5:11: messages: must be a list, not a string");
}

TEST_CASE("${NAME} is replaced by the environment variable in any string value") {
  const ScopedEnv token("RRD_TEST_TOKEN", "from-env");
  const ScopedEnv port("RRD_TEST_PORT", "9999");
  const ScopedEnv page("RRD_TEST_PAGE", "5");
  const ScopedEnv empty("RRD_TEST_EMPTY", "");
  const Config c =
      load_string("dingtalk:\n"
                  "  auth: { access_token: '${RRD_TEST_TOKEN}' }\n"
                  "  robot_code: r-${RRD_TEST_TOKEN}-${RRD_TEST_PORT}${RRD_TEST_EMPTY}\n"
                  "  page_size: ${RRD_TEST_PAGE}0\n"
                  "metrics:\n"
                  "  listen: 127.0.0.1:${RRD_TEST_PORT}\n",
                  k_file);
  CHECK(c.dingtalk.fixed_token.access_token == "from-env");
  CHECK(c.dingtalk.robot_code == "r-from-env-9999");
  CHECK(c.dingtalk.page_size == 50);
  CHECK(c.metrics.listen == "127.0.0.1:9999");

  const ScopedEnv unset("RRD_TEST_UNSET", std::nullopt);
  CHECK(error_of("dingtalk:\n  auth:\n    app_key: k\n    app_secret: ${RRD_TEST_UNSET}\n") ==
        "/cfg/c.yaml:4:17: dingtalk.auth.app_secret: environment variable RRD_TEST_UNSET is not "
        "set");
  CHECK(error_of(k_min + "messages:\n  - process_query_key: \"${RRD_TEST_TOKEN\"\n") ==
        "/cfg/c.yaml:6:24: messages[0].process_query_key: unterminated \"${\" (write ${NAME} "
        "for an environment variable)");
  CHECK(error_of(k_min + "messages:\n  - process_query_key: \"${}\"\n") ==
        "/cfg/c.yaml:6:24: messages[0].process_query_key: invalid environment variable name "
        "\"\" in ${...}");
  CHECK(error_of(k_min + "messages:\n  - process_query_key: \"${A-B}\"\n") ==
        "/cfg/c.yaml:6:24: messages[0].process_query_key: invalid environment variable name "
        "\"A-B\" in ${...}");
  // A lone '$' or '{' is text.
  CHECK(load_string(k_min + "messages:\n  - process_query_key: \"a$b{c}$\"\n", k_file)
            .messages[0]
            .process_query_key == "a$b{c}$");
  // A variable's value is not expanded again.
  const ScopedEnv nested("RRD_TEST_NESTED", "${RRD_TEST_UNSET}");
  CHECK(load_string(k_min + "messages:\n  - process_query_key: ${RRD_TEST_NESTED}\n", k_file)
            .messages[0]
            .process_query_key == "${RRD_TEST_UNSET}");
}

TEST_CASE("secrets from the environment never appear in errors") {
  const ScopedEnv secret("RRD_TEST_SECRET", "hunter2-do-not-print");
  const std::string base =
      "dingtalk:\n  auth:\n    app_key: k\n    app_secret: ${RRD_TEST_SECRET}\n";
  for (const std::string& tail :
       {std::string("  page_size: 0\n"), std::string("  endpoint: nope\n"),
        std::string("    app_secret_file: x\n"), std::string("    access_token: t\n"),
        std::string("bogus: 1\n")}) {
    const std::string e = error_of(base + tail);
    CAPTURE(e);
    CHECK_FALSE(e.empty());
    CHECK_FALSE(contains(e, "hunter2"));
  }
  const ScopedEnv hook_secret("RRD_TEST_HOOK_SECRET", "whsec_hunter2-do-not-print");
  const std::string e = error_of(k_min + "webhooks:\n  - { name: a, url: 'http://h', secret: "
                                         "'${RRD_TEST_HOOK_SECRET}' }\n");
  CHECK(contains(e, "webhooks[0].secret: must be"));
  CHECK_FALSE(contains(e, "hunter2"));
  const ScopedEnv header("RRD_TEST_HEADER", "Bearer hunter2\r\nX: y");
  const std::string h =
      error_of(k_min + "webhooks:\n  - { name: a, url: 'http://h', secret: " + k_secret +
               ", headers: { Authorization: '${RRD_TEST_HEADER}' } }\n");
  CHECK(contains(h, "webhooks[0].headers.Authorization: header value must not contain"));
  CHECK_FALSE(contains(h, "hunter2"));
}

TEST_CASE("*_file secrets come from CREDENTIALS_DIRECTORY first, then next to the config") {
  TempDir config_dir;
  TempDir credentials;
  const fs::path config = config_dir.write("c.yaml", R"(dingtalk:
  auth:
    suite_key: sk
    suite_secret_file: suite_secret
    auth_corp_id: corp
    suite_ticket_file: sub/ticket
api:
  token_file: api_token
webhooks:
  - name: a
    url: http://h
    secret_file: hook_secret
)");
  config_dir.write("suite_secret", "secret-next-to-config\n");
  config_dir.write("sub/ticket", "ticket-next-to-config\r\n");
  config_dir.write("api_token", "token-next-to-config");
  config_dir.write("hook_secret", std::string(k_secret) + "\n\n");

  SUBCASE("without CREDENTIALS_DIRECTORY, relative to the config file") {
    const ScopedEnv env("CREDENTIALS_DIRECTORY", std::nullopt);
    const Config c = load_file(config.string());
    CHECK(c.dingtalk.third_party.suite_secret == "secret-next-to-config");
    CHECK(c.dingtalk.third_party.suite_ticket == "ticket-next-to-config");
    CHECK(c.api.token == "token-next-to-config");
    CHECK(c.webhooks[0].secret == k_secret);
  }
  SUBCASE("files present in CREDENTIALS_DIRECTORY win; the others fall back") {
    credentials.write("suite_secret", "secret-from-credentials\n");
    credentials.write("api_token", "token-from-credentials\n");
    const ScopedEnv env("CREDENTIALS_DIRECTORY", credentials.path().string());
    const Config c = load_file(config.string());
    CHECK(c.dingtalk.third_party.suite_secret == "secret-from-credentials");
    CHECK(c.dingtalk.third_party.suite_ticket == "ticket-next-to-config");
    CHECK(c.api.token == "token-from-credentials");
    CHECK(c.webhooks[0].secret == k_secret);
  }
  SUBCASE("an empty CREDENTIALS_DIRECTORY is ignored") {
    const ScopedEnv env("CREDENTIALS_DIRECTORY", "");
    CHECK(load_file(config.string()).api.token == "token-next-to-config");
  }
}

TEST_CASE("*_file paths may be absolute, only trailing newlines are trimmed") {
  TempDir dir;
  const fs::path secret = dir.write("tok", "  a b \n\n\n");
  const ScopedEnv env("CREDENTIALS_DIRECTORY", std::nullopt);
  const Config c = load_string(
      "dingtalk:\n  auth:\n    access_token_file: " + secret.string() + "\n", "relative.yaml");
  CHECK(c.dingtalk.fixed_token.access_token == "  a b ");
}

TEST_CASE("*_file errors name the path but never the contents") {
  TempDir dir;
  const ScopedEnv env("CREDENTIALS_DIRECTORY", std::nullopt);
  const std::string file = (dir.path() / "c.yaml").string();
  const auto load = [&](const std::string& auth) {
    try {
      load_string("dingtalk:\n  auth:\n" + auth, file);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(load("    access_token_file: missing\n") ==
        file + ":3:24: dingtalk.auth.access_token_file: cannot read " +
            (dir.path() / "missing").string() + ": No such file or directory");
  dir.write("empty", "\n\n");
  CHECK(load("    access_token_file: empty\n") ==
        file + ":3:24: dingtalk.auth.access_token_file: " + (dir.path() / "empty").string() +
            " is empty");
  fs::create_directory(dir.path() / "adir");
  CHECK(load("    access_token_file: adir\n") ==
        file + ":3:24: dingtalk.auth.access_token_file: cannot read " +
            (dir.path() / "adir").string() + ": Is a directory");
  dir.write("big", std::string(70'000, 'x'));
  CHECK(contains(load("    access_token_file: big\n"), "larger than 65536 bytes"));
  CHECK(load("    access_token_file: ''\n") ==
        file + ":3:24: dingtalk.auth.access_token_file: must not be empty");
  CHECK(load("    access_token: a\n    access_token_file: missing\n") ==
        file + ":4:24: dingtalk.auth.access_token_file: cannot be combined with access_token");

  dir.write("hook", "whsec_top-secret-value\n");
  try {
    load_string(k_min + "webhooks:\n  - { name: a, url: 'http://h', secret_file: hook }\n", file);
    FAIL("a malformed secret_file must not load");
  } catch (const ConfigError& e) {
    CHECK(std::string(e.what()) ==
          file + ":6:46: webhooks[0].secret_file: must be \"whsec_\" followed by base64 of 16 "
                 "to 64 bytes");
    CHECK_FALSE(contains(e.what(), "top-secret"));
  }
}

TEST_CASE("load_file names a file it cannot read") {
  try {
    load_file("/nonexistent/readreceiptd.yaml");
    FAIL("must throw");
  } catch (const ConfigError& e) {
    CHECK(std::string(e.what()) == "/nonexistent/readreceiptd.yaml: cannot read the "
                                   "configuration: No such file or directory");
  }
}

TEST_CASE("the annotated example configuration loads") {
  TempDir credentials;
  credentials.write("app_secret", "example-app-secret\n");
  credentials.write("api_token", "example-api-token\n");
  credentials.write("audit_webhook_secret", "whsec_YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4\n");
  credentials.write("group_bot_token", "example-group-bot-token\n");
  const ScopedEnv env("CREDENTIALS_DIRECTORY", credentials.path().string());
  const ScopedEnv hook("OPS_WEBHOOK_SECRET", k_secret);
  const Config c = load_file((source_dir() / "config" / "example.yaml").string());
  CHECK(c.dingtalk.endpoint == "https://api.dingtalk.com");
  CHECK(c.dingtalk.internal_app.app_secret == "example-app-secret");
  CHECK(c.api.token == "example-api-token");
  CHECK(c.poll.schedule == Poll{}.schedule);
  REQUIRE(c.webhooks.size() == 2);
  CHECK(c.webhooks[0].secret == k_secret);
  CHECK(c.webhooks[0].headers ==
        std::vector<std::pair<std::string, std::string>>{{"X-Team", "ops"}});
  REQUIRE(c.messages.size() == 4);
  CHECK(c.messages[0].kind == MessageKind::private_chat);
  CHECK(c.messages[0].expected_readers == std::vector<std::string>{"user1", "user2"});
  CHECK(c.messages[0].labels.at("campaign") == "outage-42");
  CHECK(c.messages[1].kind == MessageKind::group);
  CHECK(c.messages[1].token == "example-group-bot-token");
  CHECK(c.messages[2].kind == MessageKind::oto);
  CHECK(c.messages[2].expected_readers.empty());
  CHECK(c.messages[3].robot_code == "dingrobotcode");
  CHECK_FALSE(c.messages[3].webhooks.has_value());
}

TEST_CASE("parse_message_json applies the messages: rules to one JSON object") {
  Config defaults = load_string(
      k_min + "webhooks:\n  - { name: ops, url: 'http://h', secret: " + k_secret + " }\n", k_file);
  const MessageSpec m = parse_message_json(R"({
      "process_query_key": "Kna+/=", "open_conversation_id": "cid",
      "expected_readers": ["u1", "u2"], "sent_at": "2026-11-25T10:00:00Z",
      "webhooks": ["ops"], "labels": {"campaign": "x"}})",
                                           defaults)
                            .spec;
  CHECK(m.process_query_key == "Kna+/=");
  CHECK(m.open_conversation_id == "cid");
  CHECK(m.robot_code == "robot");
  CHECK(m.expected_readers == std::vector<std::string>{"u1", "u2"});
  CHECK(m.sent_at == from_unix_ms(1'795'600'800'000));
  CHECK(m.webhooks == std::vector<std::string>{"ops"});
  CHECK(m.labels == std::map<std::string, std::string>{{"campaign", "x"}});

  const MessageSpec n =
      parse_message_json(
          R"({"process_query_key": "k", "robot_code": "r2", "expected_reader_count": 4,
          "open_conversation_id": null})",
          defaults)
          .spec;
  CHECK(n.robot_code == "r2");
  CHECK(n.expected_reader_count == 4);
  CHECK_FALSE(n.webhooks.has_value());

  CHECK(json_error_of(R"({"process_query_key": "k", "expected_readers": ["a", 1]})", defaults) ==
        "expected_readers[1]: must be a string, not a number");
  CHECK(json_error_of(R"({"open_conversation_id": "c"})", defaults) ==
        "process_query_key: required");
  CHECK(json_error_of(R"({"process_query_key": 12})", defaults) ==
        "process_query_key: must be a string, not a number");
  CHECK(json_error_of(R"({"process_query_key": "k", "expected_reader_count": "2"})", defaults) ==
        "expected_reader_count: must be an integer, not a string");
  CHECK(json_error_of(R"({"process_query_key": "k", "expected_reader_count": 2.5})", defaults) ==
        "expected_reader_count: must be an integer, not a number");
  CHECK(json_error_of(R"({"process_query_key": "k", "labels": {"a": true}})", defaults) ==
        "labels.a: must be a string, not a boolean");
  CHECK(json_error_of(R"({"process_query_key": "k", "processQueryKey": "k"})", defaults) ==
        "processQueryKey: unknown key (did you mean \"process_query_key\"?)");
  CHECK(json_error_of(R"({"process_query_key": "k", "webhooks": ["nope"]})", defaults) ==
        "webhooks[0]: unknown webhook \"nope\"");
  CHECK(json_error_of(R"({"process_query_key": "k", "sent_at": "soon"})", defaults) ==
        "sent_at: invalid time \"soon\" (use RFC 3339, e.g. 2026-11-25T10:00:00Z)");
  CHECK(json_error_of(R"({"process_query_key": "k", "expected_readers": ["a"],
                          "expected_reader_count": 1})",
                      defaults) ==
        "expected_reader_count: cannot be combined with expected_readers");
  CHECK(json_error_of(R"(["k"])", defaults) == "the message must be a JSON object");
  CHECK(json_error_of(R"({"process_query_key": )", defaults) == "invalid JSON at byte 23");
  CHECK(json_error_of(R"({"process_query_key": "k", "expected_reader_count": 1e400})", defaults) ==
        "invalid JSON: a number is out of range");

  defaults.dingtalk.robot_code.clear();
  CHECK(json_error_of(R"({"process_query_key": "k"})", defaults) ==
        "robot_code: required (no dingtalk.robot_code default)");
}

TEST_CASE("parse_message_json does not expand ${NAME}") {
  const ScopedEnv secret("RRD_TEST_SECRET", "hunter2");
  const Config defaults = load_string(k_min, k_file);
  const MessageSpec m =
      parse_message_json(
          R"({"process_query_key": "${RRD_TEST_SECRET}", "labels": {"x": "${RRD_TEST_SECRET}"}})",
          defaults)
          .spec;
  CHECK(m.process_query_key == "${RRD_TEST_SECRET}");
  CHECK(m.labels.at("x") == "${RRD_TEST_SECRET}");
}

TEST_CASE("every prefix of the example fails with a ConfigError or loads, never anything else") {
  TempDir credentials;
  credentials.write("app_secret", "example-app-secret\n");
  credentials.write("api_token", "example-api-token\n");
  credentials.write("audit_webhook_secret", std::string(k_secret) + "\n");
  const ScopedEnv env("CREDENTIALS_DIRECTORY", credentials.path().string());
  const ScopedEnv hook("OPS_WEBHOOK_SECRET", k_secret);
  std::ifstream in(source_dir() / "config" / "example.yaml", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(text.size() > 1000);
  int loaded = 0;
  int rejected = 0;
  for (std::size_t n = 0; n <= text.size(); n += 3) {
    try {
      load_string(text.substr(0, n), k_file);
      ++loaded;
    } catch (const ConfigError& e) {
      ++rejected;
      REQUIRE(std::string(e.what()).rfind(std::string(k_file) + ":", 0) == 0);
    }
  }
  CHECK(loaded > 0);
  CHECK(rejected > 0);
  CHECK(contains(error_of(std::string(5000, '[')), "invalid YAML"));
  CHECK(contains(error_of("dingtalk:\n  auth: " + std::string(100, '[') + std::string(100, ']')),
                 "nested too deeply"));
}

namespace {

// Every error load_string gives, or none when it loads.
std::vector<std::string> errors_of(const std::string& yaml) {
  try {
    load_string(yaml, k_file);
  } catch (const ConfigError& e) {
    return e.errors();
  }
  return {};
}

std::vector<std::string> json_errors_of(const std::string& json, const Config& defaults) {
  try {
    parse_message_json(json, defaults);
  } catch (const ConfigError& e) {
    return e.errors();
  }
  return {};
}

// A webhook secret whose key is `bytes` bytes long.
std::string secret_of(std::size_t bytes) {
  static constexpr char k_alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string b64;
  for (std::size_t i = 0; i < (bytes * 8 + 5) / 6; ++i) {
    b64 += k_alphabet[(i * 7) % 64];
  }
  // The last character's unused bits must be zero for a canonical decode;
  // webhook_signing_key does not insist, so any character will do.
  return "whsec_" + b64;
}

} // namespace

TEST_CASE("every error is reported at once, in file order") {
  const std::string yaml = "dingtalk:\n"
                           "  auth: { app_key: k }\n"
                           "  robot_cod: r\n"
                           "  page_size: 500\n"
                           "poll:\n"
                           "  max_age: 0d\n"
                           "api:\n"
                           "  listen: 0.0.0.0:9465\n"
                           "webhooks:\n"
                           "  - name: ops\n"
                           "    url: http://h:99999/\n"
                           "    secret: " +
                           std::string(k_secret) +
                           "\n"
                           "messages:\n"
                           "  - process_query_key: a\n"
                           "    robot_code: r\n"
                           "    webhooks: [ops]\n"
                           "  - process_query_key: a\n"
                           "    robot_code: r\n"
                           "    expected_reader_count: zero\n";
  const std::vector<std::string> expected = {
      "/cfg/c.yaml:2:9: dingtalk.auth.app_secret: required (or app_secret_file)",
      "/cfg/c.yaml:3:3: dingtalk.robot_cod: unknown key (did you mean \"robot_code\"?)",
      "/cfg/c.yaml:4:14: dingtalk.page_size: must be between 1 and 200",
      "/cfg/c.yaml:6:12: poll.max_age: must be greater than 0",
      "/cfg/c.yaml:8:11: api.token_file: required when api.listen is not a loopback address",
      "/cfg/c.yaml:11:10: webhooks[0].url: port 99999 is out of range (1..65535)",
      // The webhook named "ops" is refused, but the message naming it is not.
      "/cfg/c.yaml:17:24: messages[1].process_query_key: duplicate of "
      "messages[0].process_query_key",
      "/cfg/c.yaml:19:28: messages[1].expected_reader_count: must be an integer, not \"zero\"",
  };
  CHECK(errors_of(yaml) == expected);
  try {
    load_string(yaml, k_file);
    FAIL("must throw");
  } catch (const ConfigError& e) {
    std::string joined;
    for (const auto& line : expected) {
      joined += (joined.empty() ? "" : "\n") + line;
    }
    CHECK(std::string(e.what()) == joined);
  }
}

TEST_CASE("at most 50 errors are reported, then how many more there were") {
  std::string yaml = k_min + "messages:\n";
  for (int i = 0; i < 60; ++i) {
    yaml += "  - { open_conversation_id: c }\n";
  }
  const auto errors = errors_of(yaml);
  REQUIRE(errors.size() == k_max_reported_errors + 1);
  CHECK(errors[0] == "/cfg/c.yaml:6:5: messages[0].process_query_key: required");
  CHECK(errors[49] == "/cfg/c.yaml:55:5: messages[49].process_query_key: required");
  CHECK(errors[50] == "... and 10 more errors");
}

TEST_CASE("errors in one item do not hide the checks of the others") {
  // A webhook with a bad secret still counts for messages that name it; a
  // refused dingtalk.robot_code is not reported again for every message.
  CHECK(errors_of(k_min + "  robot_code: \"r\\x01\"\n" +
                  "webhooks:\n  - { name: ops, url: 'http://h', secret: whsec_ }\n"
                  "messages:\n  - { process_query_key: k, webhooks: [ops, opz] }\n") ==
        std::vector<std::string>{
            "/cfg/c.yaml:5:3: dingtalk.robot_code: duplicate key (first at line 4)",
            "/cfg/c.yaml:7:43: webhooks[0].secret: must be \"whsec_\" followed by base64 of 16 "
            "to 64 bytes",
            "/cfg/c.yaml:9:45: messages[0].webhooks[1]: unknown webhook \"opz\" (did you mean "
            "\"ops\"?)"});
  CHECK(errors_of("dingtalk:\n  auth: { access_token: t }\n  robot_code: \"r\\x01\"\n"
                  "messages:\n  - process_query_key: k\n  - process_query_key: ''\n") ==
        std::vector<std::string>{
            "/cfg/c.yaml:3:15: dingtalk.robot_code: must not contain control characters (U+0001 "
            "at byte 1)",
            "/cfg/c.yaml:6:24: messages[1].process_query_key: must not be empty"});
}

TEST_CASE("a quoted string that the end of the file cuts off is refused at its quote") {
  const std::string head = k_min + "messages:\n  - process_query_key: ";
  for (const char* tail : {"\"unterminated", "\"unterminated\n", "'unterminated", "'unterminated\n",
                           "\"a\\\"b\n", "'it''s\n", "!!str \"x\n", "&anchor 'x\n"}) {
    CAPTURE(tail);
    const char quote = std::string(tail).find('\'') != std::string::npos &&
                               std::string(tail).find('"') == std::string::npos
                           ? '\''
                           : '"';
    const std::size_t column =
        std::string("  - process_query_key: ").size() + 1 + std::string(tail).find(quote);
    CHECK(error_of(head + tail) == "/cfg/c.yaml:6:" + std::to_string(column) +
                                       ": invalid YAML: unterminated string (the closing " + quote +
                                       " is missing)");
  }
  // Closed strings load, also on the last line without a line break.
  for (const char* tail : {"\"done\"", "\"done\"\n", "'it''s'", "\"a\\\"b\"\n", "\"x\" # \""}) {
    CAPTURE(tail);
    CHECK(error_of(head + tail).empty());
  }
  // Over several lines, the quote is where the string starts.
  CHECK(error_of(head + "\"first\n    second\n") ==
        "/cfg/c.yaml:6:24: invalid YAML: unterminated string (the closing \" is missing)");
}

TEST_CASE("a file past the old limit of a million nodes loads - aliases have a budget") {
  // 1,000,001 nodes spelled out: refused before only for their number.
  std::string list = "x: [";
  for (int i = 0; i < 1'000'000; ++i) {
    list += "0,";
  }
  list += "0]\n";
  CHECK(errors_of(k_min + list) ==
        std::vector<std::string>{"/cfg/c.yaml:5:1: x: unknown key (expected one of: dingtalk, "
                                 "poll, state, metrics, api, webhooks, messages)"});

  // Aliases used as aliases are: a team named in 2,000 messages (200,000
  // nodes through aliases).
  std::string team = "[";
  for (int i = 0; i < 100; ++i) {
    team += (i ? ", u" : "u") + std::to_string(i);
  }
  team += "]";
  std::string yaml =
      k_min + "messages:\n  - { process_query_key: k0, expected_readers: &team " + team + " }\n";
  for (int i = 1; i < 2'000; ++i) {
    yaml += "  - { process_query_key: k" + std::to_string(i) + ", expected_readers: *team }\n";
  }
  const Config c = load_string(yaml, k_file);
  REQUIRE(c.messages.size() == 2'000);
  CHECK(c.messages[1999].expected_readers.size() == 100);
  CHECK(c.messages[1999].expected_readers[99] == "u99");

  // A billion laughs: refused with the budget named, where it runs out.
  std::string laughs = k_min + "x0: &x0 [a, a, a, a, a, a, a, a, a, a]\n";
  for (int i = 1; i < 9; ++i) {
    laughs += "x" + std::to_string(i) + ": &x" + std::to_string(i) + " [";
    for (int j = 0; j < 10; ++j) {
      laughs += (j ? ", *x" : "*x") + std::to_string(i - 1);
    }
    laughs += "]\n";
  }
  const std::string e = error_of(laughs);
  CAPTURE(e);
  CHECK(e.rfind("/cfg/c.yaml:10:45: ", 0) == 0);
  CHECK(contains(e, "too many nodes: aliases expand to more than 1000000 nodes (the limit is one "
                    "per byte of the file, and at least 1000000)"));
  CHECK(contains(error_of(k_min + "messages: &a [*a]\n"),
                 "/cfg/c.yaml:5:15: nested too deeply (more than 64 levels): this alias names a "
                 "node that contains it"));
}

TEST_CASE("bad URLs say what is wrong, never what they are") {
  const auto url = [](const std::string& u) {
    return error_of(k_min + "webhooks:\n  - name: ops\n    url: '" + u +
                    "'\n    secret: " + k_secret + "\n");
  };
  const std::string at = "/cfg/c.yaml:7:10: webhooks[0].url: ";
  CHECK(url("https://h.example:443/x").empty());
  CHECK(url("http://[::1]:8080/x").empty());
  CHECK(url("HTTP://h.example/").empty());
  CHECK(url("http://host:99999/t0ken") == at + "port 99999 is out of range (1..65535)");
  CHECK(url("http://host:0/t0ken") == at + "port 0 is out of range (1..65535)");
  CHECK(url("http://host:123456789012/t0ken") ==
        at + "port 123456789012 is out of range (1..65535)");
  CHECK(url("http://host:/t0ken") == at + "has an empty port after ':'");
  CHECK(url("http://host:http/t0ken") == at + "has a port that is not a number");
  CHECK(url("ftp://host/t0ken") == at + "must start with http:// or https://");
  CHECK(url("host/t0ken") == at + "must start with http:// or https://");
  CHECK(url("http:///t0ken") == at + "has no host (http://HOST/...)");
  CHECK(url("http://user:t0ken@host/") ==
        at + "must not contain a user name or password (user:password@host); send credentials "
             "in headers");
  CHECK(url("http://host/t0 ken") == at + "must not contain spaces (one is at byte 14)");
  CHECK(error_of(k_min +
                 "webhooks:\n  - name: ops\n    url: \"http://host/t0\\tken\"\n"
                 "    secret: " +
                 k_secret + "\n") ==
        at + "must not contain control characters (one is at byte 14)");
  CHECK(url("http://ho<st/t0ken") ==
        at + "has a character that is not allowed in a host name (at byte 9)");
  CHECK(url("http://[::g]/t0ken") == at + "has an invalid IPv6 address between [ and ]");
  CHECK(url("http://[::1/t0ken") == at + "has a '[' without ']' in its host");
  CHECK(url("http://[::1]x/t0ken") == at + "has something other than :port after its IPv6 address");
  for (const char* bad : {"http://host:99999/t0ken", "http://user:t0ken@host/"}) {
    CHECK_FALSE(contains(url(bad), "t0ken"));
  }
  // dingtalk.endpoint likewise.
  const std::string head = "dingtalk:\n  auth: { access_token: t }\n";
  const std::string e = error_of(head + "  endpoint: https://api.example:70000/t0ken\n");
  CHECK(e == "/cfg/c.yaml:3:13: dingtalk.endpoint: port 70000 is out of range (1..65535)");
}

TEST_CASE("a tab in the indentation is named as such, where it is") {
  CHECK(error_of("dingtalk:\n\tauth: x\n") ==
        "/cfg/c.yaml:2:1: invalid YAML: tab characters are not allowed in YAML indentation");
  CHECK(error_of(k_min + "\trobot_code: x\n") ==
        "/cfg/c.yaml:5:1: invalid YAML: tab characters are not allowed in YAML indentation");
  CHECK(error_of("dingtalk:\n \tauth: x\n") ==
        "/cfg/c.yaml:2:2: invalid YAML: tab characters are not allowed in YAML indentation");
  CHECK(error_of("dingtalk:\n  auth:\n\t- x\n") ==
        "/cfg/c.yaml:3:1: invalid YAML: tab characters are not allowed in YAML indentation");
  // After a block indicator, a tab indents what follows it.
  CHECK(error_of(k_min + "messages:\n  -\tprocess_query_key: k\n") ==
        "/cfg/c.yaml:6:4: invalid YAML: tab characters are not allowed in YAML indentation");
  // A tab inside a value, or separating a value from its key, is no
  // indentation.
  CHECK(error_of("dingtalk:\n  auth: { access_token: \"a\tb\" }\n") == "");
  CHECK(error_of(k_min + "messages:\n  - process_query_key:\tk\n  -\tk2\n") ==
        "/cfg/c.yaml:7:5: messages[1]: must be a map, not a string");
}

TEST_CASE("a sent_at in the future is a warning, not an error") {
  const Config c =
      load_string(k_min + "messages:\n"
                          "  - { process_query_key: past, sent_at: 2020-01-01T00:00:00Z }\n"
                          "  - { process_query_key: future, sent_at: 2999-01-01T00:00:00Z }\n",
                  k_file);
  REQUIRE(c.messages.size() == 2);
  REQUIRE(c.warnings.size() == 1);
  CAPTURE(c.warnings[0]);
  CHECK(c.warnings[0].rfind("/cfg/c.yaml:7:43: messages[1].sent_at: 2999-01-01T00:00:00Z is in "
                            "the future (",
                            0) == 0);
  CHECK(contains(c.warnings[0], "until then the message is polled as if it had just been sent"));
  CHECK(load_string(k_min, k_file).warnings.empty());

  const Config defaults = load_string(k_min, k_file);
  const ParsedMessage m = parse_message_json(
      R"({"process_query_key": "k", "sent_at": "2999-01-01T00:00:00Z"})", defaults);
  CHECK(m.spec.process_query_key == "k");
  REQUIRE(m.warnings.size() == 1);
  CHECK(m.warnings[0].rfind("sent_at: 2999-01-01T00:00:00Z is in the future (", 0) == 0);
  CHECK(parse_message_json(R"({"process_query_key": "k", "sent_at": "2020-01-01T00:00:00Z"})",
                           defaults)
            .warnings.empty());
}

TEST_CASE("an API token or a webhook key shorter than 16 bytes is refused, unprinted") {
  const auto api = [](const std::string& token) {
    return error_of(k_min + "api:\n  token: '" + token + "'\n");
  };
  CHECK(api("0123456789abcdef").empty());
  CHECK(api("0123456789abcde") == "/cfg/c.yaml:6:10: api.token: is too short to be a secret: an "
                                  "API token must be at least 16 bytes");
  CHECK_FALSE(contains(api("0123456789abcde"), "0123456789"));

  TempDir dir;
  const ScopedEnv env("CREDENTIALS_DIRECTORY", std::nullopt);
  dir.write("short_token", "s3cr3t\n");
  const std::string file = (dir.path() / "c.yaml").string();
  try {
    load_string(k_min + "api:\n  token_file: short_token\n", file);
    FAIL("a short token_file must not load");
  } catch (const ConfigError& e) {
    CHECK(std::string(e.what()) == file + ":6:15: api.token_file: is too short to be a secret: an "
                                          "API token must be at least 16 bytes");
    CHECK_FALSE(contains(e.what(), "s3cr3t"));
  }

  const auto hook = [](const std::string& secret) {
    return error_of(k_min + "webhooks:\n  - { name: ops, url: 'http://h', secret: '" + secret +
                    "' }\n");
  };
  CHECK(webhook_signing_key(secret_of(16))->size() == 16);
  CHECK(webhook_signing_key(secret_of(15))->size() == 15);
  CHECK(hook(secret_of(16)).empty());
  CHECK(hook(secret_of(64)).empty());
  CHECK(hook(k_secret).empty()); // the SPEC's test vector: 24 bytes
  const std::string e = hook(secret_of(15));
  CHECK(e == "/cfg/c.yaml:6:43: webhooks[0].secret: is too short to be a secret: its key (the "
             "base64 after \"whsec_\") must decode to at least 16 bytes");
  CHECK_FALSE(contains(e, secret_of(15).substr(6)));
  CHECK(hook("whsec_YWI=") == "/cfg/c.yaml:6:43: webhooks[0].secret: is too short to be a "
                              "secret: its key (the base64 after \"whsec_\") must decode to at "
                              "least 16 bytes");
}

TEST_CASE("ids and labels with control characters or bad UTF-8 are refused where they enter") {
  const auto msg = [](const std::string& fields) {
    return errors_of(k_min + "messages:\n  - { process_query_key: k, " + fields + " }\n");
  };
  CHECK(msg("open_conversation_id: \"c\\x01\"") ==
        std::vector<std::string>{"/cfg/c.yaml:6:51: messages[0].open_conversation_id: must not "
                                 "contain control characters (U+0001 at byte 1)"});
  CHECK(msg("robot_code: \"r\\x7f\"") ==
        std::vector<std::string>{"/cfg/c.yaml:6:41: messages[0].robot_code: must not contain "
                                 "control characters (U+007F at byte 1)"});
  CHECK(msg("expected_readers: [a, \"b\\nc\"]") ==
        std::vector<std::string>{"/cfg/c.yaml:6:51: messages[0].expected_readers[1]: must not "
                                 "contain control characters (U+000A at byte 1)"});
  CHECK(msg("labels: { \"a\\tb\": x, c: \"d\\x85\" }") ==
        std::vector<std::string>{
            "/cfg/c.yaml:6:39: messages[0].labels: a key must not contain control characters "
            "(U+0009 at byte 1)",
            "/cfg/c.yaml:6:53: messages[0].labels.c: must not contain control characters "
            "(U+0085 at byte 1)"});
  CHECK(errors_of(k_min + "messages:\n  - process_query_key: \"a\\0b\"\n") ==
        std::vector<std::string>{"/cfg/c.yaml:6:24: messages[0].process_query_key: must not "
                                 "contain control characters (U+0000 at byte 1)"});
  CHECK(errors_of(k_min + "messages:\n  - process_query_key: a\xff"
                          "b\n") ==
        std::vector<std::string>{
            "/cfg/c.yaml:6:24: messages[0].process_query_key: is not valid UTF-8 (at byte 1)"});
  CHECK(errors_of(k_min + "messages:\n  - process_query_key: a\xc3(\n") ==
        std::vector<std::string>{
            "/cfg/c.yaml:6:24: messages[0].process_query_key: is not valid UTF-8 (at byte 1)"});
  // Other characters are fine, including tabs' printable neighbours and
  // non-Latin text.
  CHECK(msg("labels: { 团队: 运维, emoji: \"\xf0\x9f\x98\x80\" }").empty());

  const Config defaults = load_string(k_min, k_file);
  CHECK(json_errors_of(R"({"process_query_key":"a\nb\u0000c"})", defaults) ==
        std::vector<std::string>{
            "process_query_key: must not contain control characters (U+000A at byte 1)"});
  CHECK(json_errors_of(R"({"process_query_key":"k","labels":{"x":"\u009f"}})", defaults) ==
        std::vector<std::string>{"labels.x: must not contain control characters (U+009F at "
                                 "byte 0)"});
  CHECK(json_errors_of(R"({"process_query_key":"k","robot_code":"r\u0001",
                           "open_conversation_id":"\u007f","expected_readers":["\u001f"]})",
                       defaults) ==
        std::vector<std::string>{
            "open_conversation_id: must not contain control characters (U+007F at byte 0)",
            "robot_code: must not contain control characters (U+0001 at byte 1)",
            "expected_readers[0]: must not contain control characters (U+001F at byte 0)"});
}

TEST_CASE("JSON messages refuse duplicate keys, at every level") {
  const Config defaults = load_string(k_min, k_file);
  CHECK(json_errors_of(R"({"process_query_key":"k","labels":{"campaign":"a","campaign":"b"}})",
                       defaults) == std::vector<std::string>{"labels.campaign: duplicate key"});
  CHECK(json_errors_of(R"({"process_query_key":"k","process_query_key":"j"})", defaults) ==
        std::vector<std::string>{"process_query_key: duplicate key"});
  CHECK(json_error_of(R"({"process_query_key":"k","labels":{"a":"1","b":"2"}})", defaults).empty());
}

TEST_CASE("keys with control characters are escaped in key paths") {
  const Config defaults = load_string(k_min, k_file);
  CHECK(
      json_errors_of(std::string(R"({"process_query_key":"k","a\u0000\u001b[2J":1})"), defaults) ==
      std::vector<std::string>{"\"a\\x00\\x1b[2J\": unknown key (expected one of: "
                               "process_query_key, kind, open_conversation_id, token, "
                               "token_file, robot_code, expected_readers, "
                               "expected_reader_count, sent_at, webhooks, "
                               "labels)"});
  CHECK(errors_of(k_min + "state: { path: /x, \"p\\e\": 1 }\n") ==
        std::vector<std::string>{
            "/cfg/c.yaml:5:20: state.\"p\\x1b\": unknown key (expected one of: path, postgres, "
            "password, password_file, lease_ttl)"});
}

TEST_CASE("ConfigError carries its list") {
  const ConfigError one("a: b");
  CHECK(one.errors() == std::vector<std::string>{"a: b"});
  CHECK(std::string(one.what()) == "a: b");
  const ConfigError two(std::vector<std::string>{"x", "y"});
  CHECK(std::string(two.what()) == "x\ny");
  CHECK(two.errors().size() == 2);
}

TEST_CASE("push, the monthly budget and the reconcile schedule") {
  const std::string app = "dingtalk:\n"
                          "  auth: { app_key: k, app_secret: s }\n"
                          "  robot_code: robot\n";
  const Config defaults;
  const Config plain = load_string(app, k_file);
  CHECK_FALSE(plain.dingtalk.stream.enabled);
  CHECK(plain.dingtalk.stream.fallback_after == 30s);
  CHECK_FALSE(plain.dingtalk.monthly_call_budget);
  CHECK(plain.poll.reconcile_schedule ==
        std::vector<ScheduleStep>{{Millis{3'600'000}, 20min}, {24h, 4h}, {std::nullopt, 24h}});

  const Config on =
      load_string(app + "  monthly_call_budget: 5000\n"
                        "  stream: { enabled: true, fallback_after: 2m }\n"
                        "poll:\n  reconcile_schedule:\n    - { until: 1h, every: 30m }\n"
                        "    - { every: 12h }\n",
                  k_file);
  CHECK(on.dingtalk.stream.enabled);
  CHECK(on.dingtalk.stream.fallback_after == 2min);
  CHECK(on.dingtalk.monthly_call_budget == std::optional<std::int64_t>(5000));
  CHECK(on.poll.reconcile_schedule ==
        std::vector<ScheduleStep>{{Millis{3'600'000}, 30min}, {std::nullopt, 12h}});
  CHECK(on.poll.schedule == defaults.poll.schedule);

  CHECK(error_of(k_min + "  stream: { enabled: true }\n") ==
        "/cfg/c.yaml:5:11: dingtalk.stream.enabled: needs the internal-app (app_key) or the "
        "third-party (suite_key) auth: a fixed access_token cannot open a Stream connection");
  CHECK(load_string(k_min + "  stream: { enabled: false }\n", k_file).dingtalk.stream.enabled ==
        false);
  CHECK(error_of(app + "  stream: { enabled: yes-please }\n") ==
        "/cfg/c.yaml:4:22: dingtalk.stream.enabled: must be true or false, not \"yes-please\"");
  CHECK(error_of(app + "  stream: { enabeld: true }\n") ==
        "/cfg/c.yaml:4:13: dingtalk.stream.enabeld: unknown key (did you mean \"enabled\"?)");
  CHECK(error_of(app + "  stream: { fallback_after: 0s }\n") ==
        "/cfg/c.yaml:4:29: dingtalk.stream.fallback_after: must be greater than 0");
  CHECK(error_of(app + "  monthly_call_budget: 0\n") ==
        "/cfg/c.yaml:4:24: dingtalk.monthly_call_budget: must be between 1 and 2147483647");
  CHECK(error_of(app + "  monthly_call_budget: lots\n") ==
        "/cfg/c.yaml:4:24: dingtalk.monthly_call_budget: must be an integer, not \"lots\"");
  CHECK(error_of(app + "poll:\n  reconcile_schedule: []\n") ==
        "/cfg/c.yaml:5:23: poll.reconcile_schedule: must have at least one step");
}

TEST_CASE("state.postgres replaces state.path, with lease_ttl and password_file") {
  const std::string pg = "host=db.internal dbname=readreceiptd user=rrd";
  const Config c = load_string(k_min + "state:\n  postgres: \"" + pg + "\"\n", k_file);
  CHECK(c.state.postgres == pg);
  CHECK(c.state.uses_postgres());
  CHECK(c.state.path.empty());
  CHECK(c.state.password.empty());
  CHECK(c.state.lease_ttl == 10s);
  CHECK(c.warnings.empty());
  CHECK_FALSE(load_string(k_min, k_file).state.uses_postgres());

  const Config t =
      load_string(k_min + "state:\n  postgres: \"" + pg + "\"\n  lease_ttl: 2s\n", k_file);
  CHECK(t.state.lease_ttl == 2s);
  CHECK(error_of(k_min + "state:\n  postgres: \"" + pg + "\"\n  lease_ttl: 1999ms\n") ==
        "/cfg/c.yaml:7:14: state.lease_ttl: must be at least 2s (a renewal every lease_ttl/3 "
        "must have time to reach the database)");
  CHECK(error_of(k_min + "state:\n  postgres: \"" + pg + "\"\n  lease_ttl: soon\n") ==
        "/cfg/c.yaml:7:14: state.lease_ttl: invalid duration \"soon\" (use e.g. 500ms, 15s, "
        "10m, 2h, 7d)");
  CHECK(error_of(k_min + "state:\n  postgres: ''\n") ==
        "/cfg/c.yaml:6:13: state.postgres: must not be empty");
}

TEST_CASE("state.path and state.postgres cannot both be set, postgres-only keys need postgres") {
  CHECK(error_of(k_min + "state:\n  path: /x.db\n  postgres: host=db\n") ==
        "/cfg/c.yaml:7:13: state.postgres: cannot be combined with state.path (one state "
        "database: SQLite at path, or PostgreSQL)");
  CHECK(error_of(k_min + "state:\n  path: /x.db\n  lease_ttl: 5s\n") ==
        "/cfg/c.yaml:7:14: state.lease_ttl: only with state.postgres (the leadership lease of a "
        "pair of daemons on PostgreSQL)");
  CHECK(error_of(k_min + "state:\n  lease_ttl: 5s\n") ==
        "/cfg/c.yaml:6:3: state.path: required\n"
        "/cfg/c.yaml:6:14: state.lease_ttl: only with state.postgres (the leadership lease of a "
        "pair of daemons on PostgreSQL)");
  CHECK(error_of(k_min + "state:\n  path: /x.db\n  password_file: pw\n") ==
        "/cfg/c.yaml:7:18: state.password_file: only with state.postgres (the PostgreSQL "
        "password)");
  // Without postgres, path is still required in a written state section.
  CHECK(error_of(k_min + "state:\n  password_file: pw\n") ==
        "/cfg/c.yaml:6:3: state.path: required\n"
        "/cfg/c.yaml:6:18: state.password_file: only with state.postgres (the PostgreSQL "
        "password)");
}

TEST_CASE("state.password_file is a secret read like the others, never printed") {
  TempDir config_dir;
  TempDir credentials;
  const fs::path config = config_dir.write(
      "c.yaml", k_min + "state:\n  postgres: host=db\n  password_file: pg_password\n");
  config_dir.write("pg_password", "pg-secret-next-to-config\n");
  SUBCASE("relative to the configuration file") {
    const ScopedEnv env("CREDENTIALS_DIRECTORY", std::nullopt);
    CHECK(load_file(config.string()).state.password == "pg-secret-next-to-config");
  }
  SUBCASE("from CREDENTIALS_DIRECTORY first") {
    credentials.write("pg_password", "pg-secret-from-credentials\n");
    const ScopedEnv env("CREDENTIALS_DIRECTORY", credentials.path().string());
    CHECK(load_file(config.string()).state.password == "pg-secret-from-credentials");
  }
  SUBCASE("a missing file is named") {
    const ScopedEnv env("CREDENTIALS_DIRECTORY", std::nullopt);
    const std::string file = (config_dir.path() / "d.yaml").string();
    try {
      load_string(k_min + "state:\n  postgres: host=db\n  password_file: nope\n", file);
      FAIL("a missing password_file must not load");
    } catch (const ConfigError& e) {
      CHECK(std::string(e.what()) == file + ":7:18: state.password_file: cannot read " +
                                         (config_dir.path() / "nope").string() +
                                         ": No such file or directory");
    }
  }
}

TEST_CASE("a password inside state.postgres is a warning naming password_file, unprinted") {
  for (const std::string conninfo :
       {"host=db password=hunter2hunter2 dbname=x", "host=db PASSWORD = 'hunter2hunter2'",
        "postgresql://rrd:hunter2hunter2@db/x",
        "postgres://db/x?sslmode=require&password=hunter2hunter2"}) {
    CAPTURE(conninfo);
    const Config c = load_string(k_min + "state:\n  postgres: \"" + conninfo + "\"\n", k_file);
    REQUIRE(c.warnings.size() == 1);
    CHECK(c.warnings[0] ==
          "/cfg/c.yaml:6:13: state.postgres: holds a password; put it in state.password_file "
          "(a secret file) instead, so that it stays out of the configuration");
    CHECK_FALSE(contains(c.warnings[0], "hunter2"));
  }
  for (const std::string conninfo : {"host=db user=password dbname=passwords",
                                     "postgresql://rrd@db/x", "passfile=/etc/pgpass host=db"}) {
    CAPTURE(conninfo);
    CHECK(
        load_string(k_min + "state:\n  postgres: \"" + conninfo + "\"\n", k_file).warnings.empty());
  }
}

TEST_CASE("a reload names the keys that only take effect at the next start") {
  const Config running = load_string(k_min + "state:\n  postgres: host=a\n", k_file);
  CHECK(restart_only_changes(running, running).empty());
  Config loaded = running;
  loaded.state.postgres = "host=b";
  loaded.state.lease_ttl = Millis{20'000};
  loaded.state.password = "other";
  loaded.api.listen = "127.0.0.1:1";
  CHECK(restart_only_changes(running, loaded) ==
        std::vector<std::string>{"state.postgres", "state.password_file", "state.lease_ttl",
                                 "api.listen"});
  const Config sqlite = load_string(k_min, k_file);
  CHECK(restart_only_changes(sqlite, running) ==
        std::vector<std::string>{"state.path", "state.postgres"});
}
