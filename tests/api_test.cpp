#include "readreceiptd/api/command_queue.hpp"
#include "readreceiptd/api/healthcheck.hpp"
#include "readreceiptd/api/router.hpp"

#include <doctest/doctest.h>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

using namespace rrd;
using namespace rrd::api;
using nlohmann::json;

namespace {

const Health k_healthy{true, Readiness::ready};

// The loop's state as plain values.
class FakeBackend final : public Backend {
public:
  FakeBackend() {
    cfg.dingtalk.robot_code = "dingrobot";
    config::Webhook ops;
    ops.name = "ops";
    cfg.webhooks.push_back(ops);
  }

  const config::Config& config() const override { return cfg; }
  std::vector<MessageRecord> messages() const override {
    std::vector<MessageRecord> out;
    for (const auto& [key, m] : records) {
      out.push_back(m);
    }
    return out;
  }
  std::optional<MessageRecord> message(const std::string& key) const override {
    auto it = records.find(key);
    return it == records.end() ? std::nullopt : std::optional<MessageRecord>(it->second);
  }
  AddOutcome add_message(const MessageSpec& spec) override {
    auto it = records.find(spec.process_query_key);
    if (it != records.end()) {
      if (it->second.stopped) {
        return AddOutcome::already_stopped;
      }
      return it->second.spec == spec ? AddOutcome::unchanged : AddOutcome::conflict;
    }
    MessageRecord r;
    r.spec = spec;
    r.source = MessageSource::api;
    records[spec.process_query_key] = r;
    return AddOutcome::created;
  }
  bool remove_message(const std::string& key) override {
    auto it = records.find(key);
    if (it == records.end()) {
      return false;
    }
    it->second.stopped = true;
    it->second.stop_reason = StopReason::removed;
    return true;
  }
  std::vector<store::DeadLetter> dead_letters() override { return dead; }
  int replay_dead_letter(const std::string& event_id) override {
    replayed.push_back(event_id);
    return event_id == "evt_known" ? 1 : 0;
  }

  config::Config cfg;
  std::map<std::string, MessageRecord> records;
  std::vector<store::DeadLetter> dead;
  std::vector<std::string> replayed;
};

MessageRecord record(const std::string& key, bool stopped = false) {
  MessageRecord r;
  r.spec.process_query_key = key;
  r.spec.robot_code = "dingrobot";
  r.spec.expected_readers = {"u1", "u2"};
  r.read_user_ids = {"u1"};
  r.sent_at = from_unix_ms(1'764'064'800'000);
  r.added_at = r.sent_at;
  r.next_poll = from_unix_ms(1'764'064'815'000);
  r.stopped = stopped;
  if (stopped) {
    r.stop_reason = StopReason::fully_read;
  }
  return r;
}

// Routes a request and, if it needs the loop, runs it against `backend`.
Reply call(Backend& backend, const std::string& method, const std::string& target,
           const std::string& body = "", const std::string& token = "",
           const std::string& authorization = "", Health health = k_healthy) {
  Routed routed = route(Request{method, target, authorization, body}, token, health);
  if (routed.reply) {
    REQUIRE_FALSE(routed.command);
    return *routed.reply;
  }
  REQUIRE(routed.command);
  return routed.command(backend);
}

json body_of(const Reply& r) {
  return json::parse(r.body);
}

} // namespace

TEST_CASE("api: url_decode keeps '+' and decodes %2B, %2F and %3D") {
  CHECK(url_decode("Kna29pdJ%2Bghav%2Fbum%3D") == std::optional<std::string>("Kna29pdJ+ghav/bum="));
  CHECK(url_decode("a+b") == std::optional<std::string>("a+b"));
  CHECK(url_decode("%2b%2f") == std::optional<std::string>("+/"));
  CHECK(url_decode("") == std::optional<std::string>(""));
  CHECK_FALSE(url_decode("%").has_value());
  CHECK_FALSE(url_decode("abc%2").has_value());
  CHECK_FALSE(url_decode("%zz").has_value());
  CHECK_FALSE(url_decode("a%00b").has_value());
}

TEST_CASE("api: bearer tokens are matched exactly, the scheme in any case") {
  CHECK(bearer_matches("Bearer s3cret", "s3cret"));
  CHECK(bearer_matches("bearer s3cret", "s3cret"));
  CHECK_FALSE(bearer_matches("Bearer s3cre", "s3cret"));
  CHECK_FALSE(bearer_matches("Bearer s3cret2", "s3cret"));
  CHECK_FALSE(bearer_matches("Basic s3cret", "s3cret"));
  CHECK_FALSE(bearer_matches("s3cret", "s3cret"));
  CHECK_FALSE(bearer_matches("", "s3cret"));
  CHECK_FALSE(bearer_matches("Bearer ", "s3cret"));
}

TEST_CASE("api: a message renders with its reads, expectations, state and times") {
  MessageRecord m = record("k+/=");
  m.spec.labels = {{"campaign", "outage-42"}};
  m.last_poll = from_unix_ms(1'764'064'810'000);
  const json j = json::parse(message_json(m));
  CHECK(j["process_query_key"] == "k+/=");
  CHECK(j["robot_code"] == "dingrobot");
  CHECK(j["source"] == "config");
  CHECK(j["state"] == "tracking");
  CHECK(j["read_count"] == 1);
  CHECK(j["read_user_ids"] == json({"u1"}));
  CHECK(j["expected_readers"] == json({"u1", "u2"}));
  CHECK(j["expected_reader_count"] == 2);
  CHECK(j["stop_reason"].is_null());
  CHECK(j["sent_at"] == "2025-11-25T10:00:00.000Z");
  CHECK(j["last_poll"] == "2025-11-25T10:00:10.000Z");
  CHECK(j["next_poll"] == "2025-11-25T10:00:15.000Z");
  CHECK(j["labels"] == json({{"campaign", "outage-42"}}));

  const json s = json::parse(message_json(record("k", true)));
  CHECK(s["state"] == "stopped");
  CHECK(s["stop_reason"] == "fully_read");
  CHECK(s["next_poll"].is_null());
}

TEST_CASE("api: a dead letter renders with its last error") {
  store::DeadLetter d;
  d.delivery.event_id = "evt_1";
  d.delivery.webhook = "ops";
  d.delivery.process_query_key = "k";
  d.delivery.type = EventType::tracking_stopped;
  d.delivery.sequence = 3;
  d.delivery.attempts = 10;
  d.delivery.last_error = "HTTP 500";
  d.died_at = from_unix_ms(1'764'064'800'000);
  const json j = json::parse(dead_letter_json(d));
  CHECK(j == json{{"event_id", "evt_1"},
                  {"webhook", "ops"},
                  {"process_query_key", "k"},
                  {"type", "message.tracking_stopped"},
                  {"sequence", 3},
                  {"attempts", 10},
                  {"last_error", "HTTP 500"},
                  {"died_at", "2025-11-25T10:00:00.000Z"}});
}

TEST_CASE("api: listing filters by state - a bad state or parameter is a 400") {
  FakeBackend b;
  b.records["a"] = record("a");
  b.records["b"] = record("b", true);
  auto all = body_of(call(b, "GET", "/v1/messages"));
  CHECK(all["messages"].size() == 2);
  auto tracking = call(b, "GET", "/v1/messages?state=tracking");
  CHECK(tracking.status == 200);
  REQUIRE(body_of(tracking)["messages"].size() == 1);
  CHECK(body_of(tracking)["messages"][0]["process_query_key"] == "a");
  auto stopped = body_of(call(b, "GET", "/v1/messages?state=stopped"));
  REQUIRE(stopped["messages"].size() == 1);
  CHECK(stopped["messages"][0]["process_query_key"] == "b");

  auto bad = call(b, "GET", "/v1/messages?state=done");
  CHECK(bad.status == 400);
  CHECK(body_of(bad)["error"].get<std::string>().find("state") != std::string::npos);
  CHECK(call(b, "GET", "/v1/messages?color=red").status == 400);
}

TEST_CASE("api: one message by its URL-encoded key, 404 when unknown") {
  FakeBackend b;
  b.records["Kna+/x="] = record("Kna+/x=");
  auto one = call(b, "GET", "/v1/messages/Kna%2B%2Fx%3D");
  CHECK(one.status == 200);
  CHECK(body_of(one)["process_query_key"] == "Kna+/x=");
  // Unencoded, a '+' stays a '+' and a '/' is part of the key.
  CHECK(call(b, "GET", "/v1/messages/Kna+/x=").status == 200);
  auto missing = call(b, "GET", "/v1/messages/nope");
  CHECK(missing.status == 404);
  CHECK(body_of(missing).contains("error"));
  CHECK(call(b, "GET", "/v1/messages/bad%zz").status == 400);
}

TEST_CASE("api: POST adds (201), repeats (200), conflicts (409) and validates (400)") {
  FakeBackend b;
  const std::string body = R"({"process_query_key": "new+key=", "expected_readers": ["u1"]})";
  auto created = call(b, "POST", "/v1/messages", body);
  CHECK(created.status == 201);
  CHECK(body_of(created)["process_query_key"] == "new+key=");
  CHECK(body_of(created)["robot_code"] == "dingrobot"); // the configuration's default
  CHECK(b.records.count("new+key=") == 1);

  CHECK(call(b, "POST", "/v1/messages", body).status == 200);
  auto conflict = call(b, "POST", "/v1/messages",
                       R"({"process_query_key": "new+key=", "expected_readers": ["u2"]})");
  CHECK(conflict.status == 409);

  b.records["done"] = record("done", true);
  auto stopped = call(b, "POST", "/v1/messages", R"({"process_query_key": "done"})");
  CHECK(stopped.status == 409);
  CHECK(body_of(stopped)["error"].get<std::string>().find("at most once") != std::string::npos);

  auto invalid =
      call(b, "POST", "/v1/messages", R"({"process_query_key": "x", "expected_readers": [1]})");
  CHECK(invalid.status == 400);
  CHECK(body_of(invalid)["error"].get<std::string>().rfind("expected_readers[0]", 0) == 0);
  CHECK(call(b, "POST", "/v1/messages", "not json").status == 400);
  CHECK(call(b, "POST", "/v1/messages", R"({"process_query_key": "x", "webhooks": ["nope"]})")
            .status == 400);
}

TEST_CASE("api: a refused POST lists every error - warnings come with the answer") {
  FakeBackend b;
  auto invalid = call(b, "POST", "/v1/messages",
                      R"({"process_query_key": "x", "expected_readers": [1], "labels": {"a": 2}})");
  CHECK(invalid.status == 400);
  const auto body = body_of(invalid);
  CHECK(body["errors"] == json{"expected_readers[0]: must be a string, not a number",
                               "labels.a: must be a string, not a number"});
  CHECK(body["error"] == "expected_readers[0]: must be a string, not a number; labels.a: must be "
                         "a string, not a number");
  auto duplicate = call(b, "POST", "/v1/messages",
                        R"({"process_query_key": "x", "labels": {"c": "1", "c": "2"}})");
  CHECK(duplicate.status == 400);
  CHECK(body_of(duplicate)["errors"] == json{"labels.c: duplicate key"});
  CHECK(call(b, "POST", "/v1/messages", R"({"process_query_key": "a\nb\u0000c"})").status == 400);

  const std::string future = R"({"process_query_key": "later", "sent_at": "2999-01-01T00:00:00Z"})";
  auto created = call(b, "POST", "/v1/messages", future);
  CHECK(created.status == 201);
  REQUIRE(body_of(created)["warnings"].size() == 1);
  CHECK(body_of(created)["warnings"][0].get<std::string>().rfind(
            "sent_at: 2999-01-01T00:00:00Z is in the future", 0) == 0);
  CHECK(body_of(call(b, "POST", "/v1/messages", future))["warnings"].size() == 1); // 200
  auto plain = call(b, "POST", "/v1/messages", R"({"process_query_key": "now"})");
  CHECK(plain.status == 201);
  CHECK_FALSE(body_of(plain).contains("warnings"));
}

TEST_CASE("api: DELETE stops with 204, 404 when unknown") {
  FakeBackend b;
  b.records["k/1"] = record("k/1");
  auto deleted = call(b, "DELETE", "/v1/messages/k%2F1");
  CHECK(deleted.status == 204);
  CHECK(deleted.body.empty());
  CHECK(b.records["k/1"].stop_reason == StopReason::removed);
  CHECK(call(b, "DELETE", "/v1/messages/unknown").status == 404);
}

TEST_CASE("api: dead letters are listed and replayed (202), unknown ones 404") {
  FakeBackend b;
  store::DeadLetter d;
  d.delivery.event_id = "evt_known";
  d.delivery.webhook = "ops";
  b.dead.push_back(d);
  auto list = body_of(call(b, "GET", "/v1/dead-letters"));
  REQUIRE(list["dead_letters"].size() == 1);
  CHECK(list["dead_letters"][0]["event_id"] == "evt_known");
  CHECK(call(b, "POST", "/v1/dead-letters/evt_known/replay").status == 202);
  CHECK(call(b, "POST", "/v1/dead-letters/evt_other/replay").status == 404);
  CHECK(b.replayed == std::vector<std::string>{"evt_known", "evt_other"});
}

TEST_CASE("api: wrong methods get 405 with Allow - unknown paths 404") {
  FakeBackend b;
  auto check_405 = [&](const std::string& method, const std::string& target,
                       const std::string& allow) {
    INFO(method << " " << target);
    auto r = call(b, method, target);
    CHECK(r.status == 405);
    REQUIRE(r.headers.size() == 1);
    CHECK(r.headers[0] == std::make_pair(std::string("Allow"), allow));
    CHECK(body_of(r).contains("error"));
  };
  check_405("PUT", "/v1/messages", "GET, POST");
  check_405("POST", "/v1/messages/k", "GET, DELETE");
  check_405("DELETE", "/v1/dead-letters", "GET");
  check_405("GET", "/v1/dead-letters/evt_1/replay", "POST");
  check_405("POST", "/healthz", "GET");
  check_405("POST", "/readyz", "GET");
  CHECK(call(b, "GET", "/").status == 404);
  CHECK(call(b, "GET", "/v1/messages/").status == 404);
  CHECK(call(b, "GET", "/v1/dead-letters/evt_1").status == 404);
  CHECK(call(b, "GET", "/v2/messages").status == 404);
}

TEST_CASE("api: with a token, every call but /healthz needs it - 401 never echoes it") {
  FakeBackend b;
  const std::string token = "api-t0ken";
  auto missing = call(b, "GET", "/v1/messages", "", token);
  CHECK(missing.status == 401);
  CHECK(missing.headers == decltype(missing.headers){{"WWW-Authenticate", "Bearer"}});
  auto wrong = call(b, "GET", "/v1/messages", "", token, "Bearer nope");
  CHECK(wrong.status == 401);
  CHECK(wrong.body.find("nope") == std::string::npos);
  CHECK(wrong.body.find(token) == std::string::npos);
  CHECK(call(b, "GET", "/readyz", "", token).status == 401);
  CHECK(call(b, "GET", "/nowhere", "", token).status == 401);
  CHECK(call(b, "GET", "/healthz", "", token).status == 200);
  CHECK(call(b, "GET", "/v1/messages", "", token, "Bearer api-t0ken").status == 200);
  CHECK(call(b, "GET", "/readyz", "", token, "Bearer api-t0ken").status == 200);
}

TEST_CASE("api: /healthz follows the loop - /readyz also waits for the first token") {
  FakeBackend b;
  CHECK(call(b, "GET", "/healthz", "", "", "", {true, Readiness::waiting_for_token}).status == 200);
  CHECK(call(b, "GET", "/healthz", "", "", "", {false, Readiness::ready}).status == 503);
  auto waiting = call(b, "GET", "/readyz", "", "", "", {true, Readiness::waiting_for_token});
  CHECK(waiting.status == 503);
  CHECK(body_of(waiting)["ready"] == false);
  CHECK(body_of(waiting)["reason"].get<std::string>().find("token") != std::string::npos);
  CHECK(call(b, "GET", "/readyz", "", "", "", {false, Readiness::ready}).status == 503);
  auto ready = call(b, "GET", "/readyz");
  CHECK(ready.status == 200);
  CHECK(body_of(ready)["ready"] == true);
}

TEST_CASE("api: the command queue runs commands on the loop and answers their callers") {
  int wakeups = 0;
  CommandQueue queue([&] { ++wakeups; });
  FakeBackend b;
  b.records["a"] = record("a");
  std::optional<Result<Reply, CallFailure>> answer;
  std::thread caller([&] {
    answer.emplace(queue.call(
        [](Backend& be) {
          return Reply{200, be.messages()[0].spec.process_query_key, {}};
        },
        Millis{30'000}));
  });
  // The "loop": runs what is queued until the caller has its answer.
  while (queue.queued() == 0) {
    std::this_thread::yield();
  }
  queue.run_pending(b);
  caller.join();
  REQUIRE(answer.has_value());
  REQUIRE(answer->ok());
  CHECK((*answer)->body == "a");
  CHECK(wakeups == 1);
}

TEST_CASE("api: a command that throws answers 500 - a closed queue answers at once") {
  CommandQueue queue({});
  FakeBackend b;
  std::optional<Result<Reply, CallFailure>> answer;
  std::thread caller([&] {
    answer.emplace(
        queue.call([](Backend&) -> Reply { throw std::runtime_error("boom"); }, Millis{30'000}));
  });
  while (queue.queued() == 0) {
    std::this_thread::yield();
  }
  queue.run_pending(b);
  caller.join();
  REQUIRE(answer->ok());
  CHECK((*answer)->status == 500);
  CHECK((*answer)->body.find("boom") == std::string::npos);

  queue.close();
  auto closed = queue.call([](Backend&) { return Reply{}; }, Millis{30'000});
  REQUIRE_FALSE(closed.ok());
  CHECK(closed.error() == CallFailure::closed);
}

TEST_CASE("api: a caller that gives up is answered timeout and its command is skipped") {
  CommandQueue queue({});
  FakeBackend b;
  bool ran = false;
  auto r = queue.call(
      [&](Backend&) {
        ran = true;
        return Reply{};
      },
      Millis{0});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error() == CallFailure::timeout);
  queue.run_pending(b);
  CHECK_FALSE(ran);
}

TEST_CASE("api: the loop is alive while its heartbeat is recent") {
  LoopStatus status;
  const auto t0 = std::chrono::steady_clock::time_point(std::chrono::seconds(1000));
  CHECK_FALSE(status.alive(t0, Millis{10'000})); // never beat
  status.beat(t0);
  CHECK(status.alive(t0 + std::chrono::seconds(10), Millis{10'000}));
  CHECK_FALSE(status.alive(t0 + std::chrono::seconds(11), Millis{10'000}));
  CHECK(status.readiness() == Readiness::starting);
  status.set_readiness(Readiness::ready);
  CHECK(status.readiness() == Readiness::ready);
}

TEST_CASE("api: --healthcheck asks /healthz on loopback, IPv6 bracketed") {
  CHECK(*healthz_url("127.0.0.1:9465") == "http://127.0.0.1:9465/healthz");
  CHECK(*healthz_url("[::1]:9465") == "http://[::1]:9465/healthz");
  CHECK(*healthz_url("0.0.0.0:80") == "http://127.0.0.1:80/healthz");
  CHECK(*healthz_url("[::]:80") == "http://[::1]:80/healthz");
  CHECK(*healthz_url("localhost:1") == "http://localhost:1/healthz");
  REQUIRE_FALSE(healthz_url("").ok());
  CHECK(healthz_url("").error().find("disabled") != std::string::npos);
  CHECK_FALSE(healthz_url("127.0.0.1:0").ok());
}
