#include "readreceiptd/api/command_queue.hpp"
#include "readreceiptd/api/healthcheck.hpp"
#include "readreceiptd/api/router.hpp"

#include <cstdio>
#include <doctest/doctest.h>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>
#include <tuple>

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
  void visit_messages(const std::string& after,
                      const std::function<bool(const MessageRecord&)>& visit) const override {
    ++visits;
    for (auto it = records.upper_bound(after); it != records.end(); ++it) {
      ++visited;
      if (!visit(it->second)) {
        return;
      }
    }
  }
  std::optional<MessageRecord> message(const std::string& key) const override {
    auto it = records.find(key);
    return it == records.end() ? std::nullopt : std::optional<MessageRecord>(it->second);
  }
  AddOutcome add_message(const MessageSpec& spec) override {
    auto it = records.find(spec.process_query_key);
    if (it != records.end()) {
      return it->second.spec == spec ? AddOutcome::unchanged : AddOutcome::conflict;
    }
    MessageRecord r;
    r.spec = spec;
    r.source = MessageSource::api;
    records[spec.process_query_key] = r;
    return AddOutcome::created;
  }
  bool remove_message(const std::string& key) override {
    removed.push_back(key);
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
  std::vector<store::StoredEvent> message_events(const std::string& key, std::int64_t after,
                                                 std::size_t limit) override {
    event_limits.push_back(limit);
    std::vector<store::StoredEvent> out;
    for (const auto& e : events[key]) {
      if (e.sequence > after && out.size() < limit) {
        out.push_back(e);
      }
    }
    return out;
  }
  DaemonStatus status() override { return daemon_status; }
  std::optional<std::string> standby_leader() const override { return leader; }

  config::Config cfg;
  std::map<std::string, MessageRecord> records;
  std::vector<store::DeadLetter> dead;
  std::vector<std::string> replayed;
  std::vector<std::string> removed; // every remove_message() call
  std::map<std::string, std::vector<store::StoredEvent>> events;
  std::vector<std::size_t> event_limits; // the limit of every message_events() call
  DaemonStatus daemon_status;
  std::optional<std::string> leader; // set: a standby, with the leader's holder info
  mutable int visits = 0;            // visit_messages() calls
  mutable std::size_t visited = 0;   // records they handed out
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
Reply run(Backend& backend, const Request& request, const std::string& token = "",
          Health health = k_healthy) {
  Routed routed = route(request, token, health);
  if (routed.reply) {
    REQUIRE_FALSE(routed.command);
    return *routed.reply;
  }
  REQUIRE(routed.command);
  return routed.command(backend);
}

// A request whose body, if any, is application/json.
Reply call(Backend& backend, const std::string& method, const std::string& target,
           const std::string& body = "", const std::string& token = "",
           const std::string& authorization = "", Health health = k_healthy) {
  return run(backend,
             Request{method, target, authorization, body.empty() ? "" : "application/json", body},
             token, health);
}

// A request with this Content-Type ("" for none).
Reply typed(Backend& backend, const std::string& method, const std::string& target,
            const std::string& content_type, const std::string& body) {
  return run(backend, Request{method, target, "", content_type, body});
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

TEST_CASE("api: a message lists each reader with read time and source, in first-read order") {
  MessageRecord m = record("k");
  m.spec.expected_readers = {"u1", "u2", "u3"};
  m.read_user_ids = {"u2", "u1"};
  m.read_info = {ReadInfo{from_unix_ms(1'764'064'803'250), ReadVia::push},
                 ReadInfo{std::nullopt, ReadVia::poll}};
  const json j = json::parse(message_json(m));
  CHECK(j.at("readers") ==
        json::array({{{"user_id", "u2"}, {"read_at", "2025-11-25T10:00:03.250Z"}, {"via", "push"}},
                     {{"user_id", "u1"}, {"read_at", nullptr}, {"via", "poll"}}}));
  CHECK(j["read_user_ids"] == json({"u2", "u1"})); // kept beside readers
  CHECK(j["read_count"] == 2);
}

TEST_CASE("api: a reader without read info renders as polled at an unknown time") {
  MessageRecord m = record("k"); // read_user_ids {"u1"}, read_info empty
  m.read_user_ids = {"u1", "u2"};
  m.read_info = {ReadInfo{from_unix_ms(1'764'064'800'000), ReadVia::push}};
  const json j = json::parse(message_json(m));
  CHECK(j.at("readers") ==
        json::array({{{"user_id", "u1"}, {"read_at", "2025-11-25T10:00:00.000Z"}, {"via", "push"}},
                     {{"user_id", "u2"}, {"read_at", nullptr}, {"via", "poll"}}}));

  const json none = json::parse(message_json(record("k")));
  CHECK(none.at("readers") ==
        json::array({{{"user_id", "u1"}, {"read_at", nullptr}, {"via", "poll"}}}));

  MessageRecord unread = record("k");
  unread.read_user_ids.clear();
  CHECK(json::parse(message_json(unread)).at("readers") == json::array());
}

TEST_CASE("api: unread user ids are the expected readers not read yet, null without a list") {
  MessageRecord m = record("k");
  m.spec.expected_readers = {"u1", "u2", "u3"};
  m.read_user_ids = {"u3", "u1"};
  CHECK(json::parse(message_json(m)).at("unread_user_ids") == json({"u2"}));

  m.read_user_ids = {"u1", "u2", "u3"};
  const json all = json::parse(message_json(m));
  REQUIRE(all.contains("unread_user_ids"));
  CHECK(all.at("unread_user_ids") == json::array());

  // Only a count, or nothing: who is missing is unknown, and the field is
  // there all the same, as null.
  MessageRecord counted = record("k");
  counted.spec.expected_readers.clear();
  counted.spec.expected_reader_count = 3;
  const json c = json::parse(message_json(counted));
  REQUIRE(c.contains("unread_user_ids"));
  CHECK(c.at("unread_user_ids").is_null());

  counted.spec.expected_reader_count.reset();
  const json n = json::parse(message_json(counted));
  REQUIRE(n.contains("unread_user_ids"));
  CHECK(n.at("unread_user_ids").is_null());
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

TEST_CASE("api: cursors are base64url of the last key, and nothing else decodes") {
  CHECK(encode_cursor("Kna+/x=") == "S25hKy94PQ");
  CHECK(decode_cursor("S25hKy94PQ") == std::optional<std::string>("Kna+/x="));
  for (const std::string& key :
       std::vector<std::string>{"a", "ab", "abc", "k+/=?&", std::string("\xff\xfe", 2)}) {
    INFO(key);
    const std::string c = encode_cursor(key);
    CHECK(c.find_first_of("+/=") == std::string::npos);
    CHECK(decode_cursor(c) == std::optional<std::string>(key));
  }
  CHECK_FALSE(decode_cursor("").has_value());
  CHECK_FALSE(decode_cursor("!!").has_value());
  CHECK_FALSE(decode_cursor("S25hKy94PQ==").has_value()); // padded
  CHECK_FALSE(decode_cursor("S25hKy94PR").has_value());   // not canonical
  CHECK_FALSE(decode_cursor("YQ+").has_value());
}

TEST_CASE("api: query parameters of the list - each error names its parameter") {
  using Params = std::vector<std::pair<std::string, std::string>>;
  auto q = parse_message_query(Params{{"state", "stopped"},
                                      {"label", "team=a"},
                                      {"label", "url=x=y"},
                                      {"label", "empty="},
                                      {"webhook", "ops"},
                                      {"limit", "25"},
                                      {"cursor", encode_cursor("k9")}});
  REQUIRE(q.ok());
  CHECK(q->stopped == std::optional<bool>(true));
  CHECK(q->labels == Params{{"team", "a"}, {"url", "x=y"}, {"empty", ""}});
  CHECK(q->webhook == std::optional<std::string>("ops"));
  CHECK(q->limit == 25);
  CHECK(q->after == "k9");
  const auto defaults = parse_message_query({});
  REQUIRE(defaults.ok());
  CHECK(defaults->limit == k_default_page_size);
  CHECK(defaults->after.empty());
  CHECK(parse_message_query(Params{{"limit", "10000"}})->limit == k_max_page_size);

  auto error_of = [](Params p) {
    auto r = parse_message_query(p);
    REQUIRE_FALSE(r.ok());
    return r.error();
  };
  CHECK(error_of({{"limit", "0"}}) == "limit: must be a whole number from 1 to 10000, not \"0\"");
  CHECK(error_of({{"limit", "10001"}}).rfind("limit:", 0) == 0);
  CHECK(error_of({{"limit", "-1"}}).rfind("limit:", 0) == 0);
  CHECK(error_of({{"limit", "99999999999999999999"}}).rfind("limit:", 0) == 0);
  CHECK(error_of({{"limit", ""}}).rfind("limit:", 0) == 0);
  CHECK(error_of({{"limit", "1"}, {"limit", "2"}}) == "limit: given more than once");
  CHECK(error_of({{"state", "a"}, {"state", "b"}}).rfind("state:", 0) == 0);
  CHECK(error_of({{"state", "done"}}) == "state: must be tracking or stopped, not \"done\"");
  CHECK(error_of({{"cursor", "%%"}}).rfind("cursor:", 0) == 0);
  CHECK(error_of({{"label", "team"}}) == "label: must be key=value, not \"team\"");
  CHECK(error_of({{"label", "=a"}}).rfind("label:", 0) == 0);
  CHECK(error_of({{"webhook", ""}}).rfind("webhook:", 0) == 0);
}

TEST_CASE("api: filters - every label must match, a webhook takes the messages for every one") {
  MessageRecord m = record("k");
  m.spec.labels = {{"team", "a"}, {"tier", "1"}};
  MessageQuery q;
  CHECK(matches(q, m));
  q.labels = {{"team", "a"}};
  CHECK(matches(q, m));
  q.labels = {{"team", "a"}, {"tier", "2"}};
  CHECK_FALSE(matches(q, m));
  q.labels = {{"owner", ""}};
  CHECK_FALSE(matches(q, m));
  q.labels.clear();
  q.webhook = "ops";
  CHECK(matches(q, m)); // no webhooks listed: every webhook
  m.spec.webhooks = std::vector<std::string>{"audit"};
  CHECK_FALSE(matches(q, m));
  m.spec.webhooks = std::vector<std::string>{"audit", "ops"};
  CHECK(matches(q, m));
  q.stopped = true;
  CHECK_FALSE(matches(q, m));
  m.stopped = true;
  CHECK(matches(q, m));
}

TEST_CASE("api: the list comes in pages of 1000 by default, with a cursor to the next") {
  FakeBackend b;
  for (int i = 0; i < 1500; ++i) {
    char key[16];
    std::snprintf(key, sizeof(key), "k%04d", i);
    b.records[key] = record(key, i % 2 == 1);
  }
  auto first = call(b, "GET", "/v1/messages");
  REQUIRE(first.status == 200);
  auto page = body_of(first);
  REQUIRE(page["messages"].size() == 1000);
  CHECK(page["messages"][0]["process_query_key"] == "k0000");
  CHECK(page["messages"][999]["process_query_key"] == "k0999");
  CHECK(page["next_cursor"] == encode_cursor("k0999"));
  CHECK(b.visited == 1001); // one more, to know whether another page follows
  // A message added before the cursor is not seen; one after it is.
  b.records["k0000a"] = record("k0000a");
  b.records["k9999"] = record("k9999");
  auto rest =
      body_of(call(b, "GET", "/v1/messages?cursor=" + page["next_cursor"].get<std::string>()));
  REQUIRE(rest["messages"].size() == 501);
  CHECK(rest["messages"][0]["process_query_key"] == "k1000");
  CHECK(rest["messages"][500]["process_query_key"] == "k9999");
  CHECK_FALSE(rest.contains("next_cursor"));

  // Filters and a limit: pages of matches.
  auto stopped = body_of(call(b, "GET", "/v1/messages?state=stopped&limit=2"));
  REQUIRE(stopped["messages"].size() == 2);
  CHECK(stopped["messages"][1]["process_query_key"] == "k0003");
  auto after = body_of(call(b, "GET",
                            "/v1/messages?state=stopped&limit=2&cursor=" +
                                stopped["next_cursor"].get<std::string>()));
  CHECK(after["messages"][0]["process_query_key"] == "k0005");
  // Exactly a page left: no next_cursor.
  auto last = body_of(call(b, "GET", "/v1/messages?limit=2&cursor=" + encode_cursor("k1499")));
  CHECK(last["messages"].size() == 1);
  CHECK_FALSE(last.contains("next_cursor"));

  auto unknown = call(b, "GET", "/v1/messages?webhook=nope");
  CHECK(unknown.status == 400);
  CHECK(body_of(unknown)["error"] == "webhook: no webhook is named \"nope\"");
  CHECK(call(b, "GET", "/v1/messages?webhook=ops").status == 200);
  CHECK(call(b, "GET", "/v1/messages?limit=10001").status == 400);
  CHECK(call(b, "GET", "/v1/messages?cursor=k0001").status == 400);
}

TEST_CASE("api: a page looks at no more than 100,000 messages for its filters") {
  FakeBackend b;
  for (std::size_t i = 0; i < k_max_scanned_per_page + 5; ++i) {
    char key[16];
    std::snprintf(key, sizeof(key), "k%07zu", i);
    MessageRecord m;
    m.spec.process_query_key = key;
    b.records.emplace_hint(b.records.end(), key, std::move(m));
  }
  b.records["k0100003"].spec.labels = {{"find", "me"}};
  auto first = body_of(call(b, "GET", "/v1/messages?label=find=me"));
  CHECK(first["messages"].empty());
  CHECK(first["next_cursor"] == encode_cursor("k0099999"));
  CHECK(b.visited == k_max_scanned_per_page);
  auto second = body_of(call(
      b, "GET", "/v1/messages?label=find=me&cursor=" + first["next_cursor"].get<std::string>()));
  REQUIRE(second["messages"].size() == 1);
  CHECK(second["messages"][0]["process_query_key"] == "k0100003");
  CHECK_FALSE(second.contains("next_cursor"));
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

  // Other fields: the 409 names them.
  CHECK(body_of(conflict)["error"].get<std::string>().find("(expected_readers)") !=
        std::string::npos);
  auto conflict2 = call(b, "POST", "/v1/messages",
                        R"({"process_query_key": "new+key=", "expected_readers": ["u1"],)"
                        R"( "labels": {"a": "b"}, "robot_code": "other"})");
  CHECK(conflict2.status == 409);
  CHECK(body_of(conflict2)["error"].get<std::string>().find("(robot_code, labels)") !=
        std::string::npos);

  auto invalid =
      call(b, "POST", "/v1/messages", R"({"process_query_key": "x", "expected_readers": [1]})");
  CHECK(invalid.status == 400);
  CHECK(body_of(invalid)["error"].get<std::string>().rfind("expected_readers[0]", 0) == 0);
  CHECK(call(b, "POST", "/v1/messages", "not json").status == 400);
  CHECK(call(b, "POST", "/v1/messages", R"({"process_query_key": "x", "webhooks": ["nope"]})")
            .status == 400);
}

TEST_CASE("api: kinds - a group message's token is taken, compared and never shown") {
  FakeBackend b;
  const std::string token = "grp-SECRET-5d1c7e90aa";
  const std::string body =
      R"({"process_query_key": "g1", "kind": "group", "token": ")" + token + R"("})";
  auto created = call(b, "POST", "/v1/messages", body);
  REQUIRE(created.status == 201);
  CHECK(body_of(created)["kind"] == "group");
  CHECK(created.body.find(token) == std::string::npos);
  CHECK(b.records.at("g1").spec.token == token);
  CHECK(call(b, "POST", "/v1/messages", body).status == 200);
  // Another token is another message: the 409 names the field, not the value.
  auto other =
      call(b, "POST", "/v1/messages",
           R"({"process_query_key": "g1", "kind": "group", "token": "grp-SECRET-other000"})");
  CHECK(other.status == 409);
  CHECK(body_of(other)["error"].get<std::string>().find("(token)") != std::string::npos);
  CHECK(other.body.find("SECRET") == std::string::npos);
  auto kind = call(b, "POST", "/v1/messages", R"({"process_query_key": "g1", "kind": "oto"})");
  CHECK(kind.status == 409);
  CHECK(body_of(kind)["error"].get<std::string>().find("(kind, token)") != std::string::npos);
  const auto listed = call(b, "GET", "/v1/messages");
  CHECK(listed.body.find(token) == std::string::npos);
  // A token for another kind is refused, still without its value.
  auto wrong = call(b, "POST", "/v1/messages",
                    R"({"process_query_key": "p1", "token": "grp-SECRET-5d1c7e90aa"})");
  CHECK(wrong.status == 400);
  CHECK(wrong.body.find("SECRET") == std::string::npos);
  CHECK(body_of(wrong)["error"].get<std::string>().find("token: only for kind group") !=
        std::string::npos);
}

TEST_CASE("api: kinds - an oto message expects the recipients DingTalk lists") {
  MessageRecord m = record("o1");
  m.spec.kind = MessageKind::oto;
  m.spec.expected_readers.clear();
  m.recipients = {"u1", "u2", "u3"};
  const json j = json::parse(message_json(m));
  CHECK(j["kind"] == "oto");
  CHECK(j["expected_readers"] == json({"u1", "u2", "u3"}));
  CHECK(j["expected_reader_count"] == 3);
  CHECK(j["unread_user_ids"] == json({"u2", "u3"}));
  m.recipients.clear(); // before the first answer: nothing known
  const json before = json::parse(message_json(m));
  CHECK(before["expected_readers"] == json::array());
  CHECK(before["unread_user_ids"].is_null());
  CHECK(before["expected_reader_count"].is_null());
  CHECK(json::parse(message_json(record("p")))["kind"] == "private_chat");
}

TEST_CASE("api: POSTing a stopped message again: 200 with it as it is, 409 for other fields") {
  FakeBackend b;
  b.records["done"] = record("done", true);
  auto same = call(b, "POST", "/v1/messages",
                   R"({"process_query_key": "done", "expected_readers": ["u1", "u2"]})");
  CHECK(same.status == 200);
  CHECK(body_of(same)["state"] == "stopped");
  CHECK(body_of(same)["stop_reason"] == "fully_read");
  auto other = call(b, "POST", "/v1/messages", R"({"process_query_key": "done"})");
  CHECK(other.status == 409);
  const std::string text = body_of(other)["error"];
  CHECK(text.find("(expected_readers)") != std::string::npos);
  CHECK(text.find("stopped (fully_read)") != std::string::npos);
  CHECK(text.find("at most once") != std::string::npos);
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

TEST_CASE("api: DELETE stops with 204 - 404 unknown - 409 stopped or from the configuration file") {
  FakeBackend b;
  b.records["k/1"] = record("k/1");
  b.records["k/1"].source = MessageSource::api;
  auto deleted = call(b, "DELETE", "/v1/messages/k%2F1");
  CHECK(deleted.status == 204);
  CHECK(deleted.body.empty());
  CHECK(b.records["k/1"].stop_reason == StopReason::removed);
  CHECK(b.removed == std::vector<std::string>{"k/1"});
  CHECK(call(b, "DELETE", "/v1/messages/unknown").status == 404);

  // Already stopped: nothing happens again, the answer says why.
  auto again = call(b, "DELETE", "/v1/messages/k%2F1");
  CHECK(again.status == 409);
  CHECK(body_of(again)["error"] == "process_query_key: \"k/1\" has already stopped (removed)");
  b.records["read"] = record("read", true);
  CHECK(body_of(call(b, "DELETE", "/v1/messages/read"))["error"].get<std::string>().find(
            "(fully_read)") != std::string::npos);

  // The configuration file's messages are declarative: removed there.
  b.cfg.path = "/etc/readreceiptd/config.yaml";
  b.records["yaml"] = record("yaml");
  auto listed = call(b, "DELETE", "/v1/messages/yaml");
  CHECK(listed.status == 409);
  CHECK(body_of(listed)["error"] ==
        "process_query_key: \"yaml\" is listed in the configuration file "
        "(/etc/readreceiptd/config.yaml); remove it there and reload");
  CHECK_FALSE(b.records["yaml"].stopped);
  CHECK(b.removed == std::vector<std::string>{"k/1"});
}

TEST_CASE("api: a body must be application/json (415 naming the header) - an empty one is none") {
  CHECK(is_json_media_type("application/json"));
  CHECK(is_json_media_type("Application/JSON"));
  CHECK(is_json_media_type("application/json; charset=utf-8"));
  CHECK(is_json_media_type(" application/json ;charset=UTF-8"));
  CHECK_FALSE(is_json_media_type(""));
  CHECK_FALSE(is_json_media_type("text/plain"));
  CHECK_FALSE(is_json_media_type("application/x-www-form-urlencoded"));
  CHECK_FALSE(is_json_media_type("application/jsonx"));
  CHECK_FALSE(is_json_media_type("application/json-patch+json"));

  FakeBackend b;
  const std::string body = R"({"process_query_key": "k"})";
  auto form = typed(b, "POST", "/v1/messages", "application/x-www-form-urlencoded", body);
  CHECK(form.status == 415);
  CHECK(body_of(form)["error"] ==
        "Content-Type: must be application/json, not \"application/x-www-form-urlencoded\"");
  CHECK(form.headers == decltype(form.headers){{"Accept", "application/json"}});
  auto none = typed(b, "POST", "/v1/messages", "", body);
  CHECK(none.status == 415);
  CHECK(body_of(none)["error"].get<std::string>().rfind("Content-Type: missing", 0) == 0);
  CHECK(b.records.empty());
  CHECK(typed(b, "POST", "/v1/messages", "application/json; charset=utf-8", body).status == 201);
  // Any call with a body: the replay takes none, but one it is given is JSON.
  CHECK(typed(b, "POST", "/v1/dead-letters/evt_known/replay", "text/plain", "x").status == 415);

  // No body at all, whatever the Content-Type: the replay needs none, and
  // POST /v1/messages says what is missing.
  CHECK(typed(b, "POST", "/v1/dead-letters/evt_known/replay", "", "").status == 202);
  auto empty = typed(b, "POST", "/v1/messages", "application/x-www-form-urlencoded", "");
  CHECK(empty.status == 400);
  CHECK(body_of(empty)["error"].get<std::string>().rfind("request body: empty", 0) == 0);
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

TEST_CASE("api: a message's events with each delivery's state, a page at a time") {
  FakeBackend b;
  b.records["k+/="] = record("k+/=");
  for (std::int64_t seq = 1; seq <= 3; ++seq) {
    store::StoredEvent e;
    e.id = "evt_" + std::to_string(seq);
    e.type = seq == 3 ? EventType::tracking_stopped : EventType::message_read;
    e.sequence = seq;
    e.created_at = from_unix_ms(1'764'064'800'000 + seq * 1'000);
    b.events["k+/="].push_back(e);
  }
  auto& first = b.events["k+/="][0];
  first.deliveries.push_back(
      {"audit", DeliveryState::pending, 2, from_unix_ms(1'764'064'830'000), "HTTP 503", {}});
  first.deliveries.push_back({"ops", DeliveryState::dead, 10, from_unix_ms(1'764'064'830'000),
                              "timeout", from_unix_ms(1'764'064'900'000)});
  b.events["k+/="][1].deliveries.push_back(
      {"ops", DeliveryState::delivered, 1, from_unix_ms(1'764'064'802'000), "", {}});

  auto all = call(b, "GET", "/v1/messages/k%2B%2F%3D/events");
  REQUIRE(all.status == 200);
  const json j = body_of(all);
  CHECK(j["process_query_key"] == "k+/=");
  CHECK_FALSE(j.contains("next_cursor"));
  REQUIRE(j["events"].size() == 3);
  CHECK(j["events"][0] == json::parse(R"({
    "event_id": "evt_1", "type": "message.read", "sequence": 1,
    "timestamp": "2025-11-25T10:00:01.000Z",
    "deliveries": [
      {"webhook": "audit", "state": "pending", "attempts": 2, "last_error": "HTTP 503",
       "next_attempt": "2025-11-25T10:00:30.000Z", "died_at": null},
      {"webhook": "ops", "state": "dead", "attempts": 10, "last_error": "timeout",
       "next_attempt": null, "died_at": "2025-11-25T10:01:40.000Z"}]})"));
  // Only a pending delivery has a next attempt.
  CHECK(j["events"][1]["deliveries"][0]["state"] == "delivered");
  CHECK(j["events"][1]["deliveries"][0]["next_attempt"].is_null());
  CHECK(j["events"][2]["type"] == "message.tracking_stopped");
  CHECK(j["events"][2]["deliveries"] == json::array());
  CHECK(b.event_limits.back() == k_default_page_size + 1); // one more: is there a next page?

  auto page = call(b, "GET", "/v1/messages/k%2B%2F%3D/events?limit=2");
  REQUIRE(page.status == 200);
  const json p = body_of(page);
  REQUIRE(p["events"].size() == 2);
  REQUIRE(p.contains("next_cursor"));
  auto rest =
      call(b, "GET",
           "/v1/messages/k%2B%2F%3D/events?limit=2&cursor=" + p["next_cursor"].get<std::string>());
  REQUIRE(rest.status == 200);
  const json r = body_of(rest);
  REQUIRE(r["events"].size() == 1);
  CHECK(r["events"][0]["sequence"] == 3);
  CHECK_FALSE(r.contains("next_cursor"));

  // Errors name what is wrong.
  auto unknown = call(b, "GET", "/v1/messages/nope/events");
  CHECK(unknown.status == 404);
  CHECK(body_of(unknown)["error"] == "no such message");
  auto limit = call(b, "GET", "/v1/messages/k%2B%2F%3D/events?limit=0");
  CHECK(limit.status == 400);
  CHECK(body_of(limit)["error"].get<std::string>().rfind("limit: ", 0) == 0);
  // A cursor of the message list is not one of this call.
  auto cursor = call(b, "GET", "/v1/messages/k%2B%2F%3D/events?cursor=" + encode_cursor("abc"));
  CHECK(cursor.status == 400);
  CHECK(body_of(cursor)["error"].get<std::string>().rfind("cursor: ", 0) == 0);
  CHECK(call(b, "GET", "/v1/messages/k%2B%2F%3D/events?state=stopped").status == 400);
  CHECK(call(b, "DELETE", "/v1/messages/k%2B%2F%3D/events").status == 405);
  // The message itself is still /v1/messages/{key}.
  CHECK(body_of(call(b, "GET", "/v1/messages/k%2B%2F%3D"))["process_query_key"] == "k+/=");
}

TEST_CASE("api: /v1/status renders the daemon at a glance") {
  FakeBackend b;
  DaemonStatus& s = b.daemon_status;
  s.version = "1.2.3";
  s.started_at = from_unix_ms(1'764'064'800'000);
  s.ready = true;
  s.messages_tracking = 4;
  s.messages_stopped = 2;
  s.stream_enabled = true;
  s.stream_connected = true;
  s.stream_since = from_unix_ms(1'764'064'801'000);
  s.month = "2025-11";
  s.month_calls = 1234;
  s.month_call_budget = 5000;
  s.stretch = 1.23456;
  s.poll_mode = "reconcile";
  s.configured_rate = 20;
  s.current_rate = 12.3456;
  s.last_throttled = from_unix_ms(1'764'064'802'000);
  s.webhooks.push_back({"ops", true, 3, from_unix_ms(1'764'064'803'000), 1, false});
  s.webhooks.push_back({"old", false, 0, std::nullopt, 2, false});
  auto r = call(b, "GET", "/v1/status");
  REQUIRE(r.status == 200);
  CHECK(body_of(r) == json::parse(R"({
    "version": "1.2.3", "started_at": "2025-11-25T10:00:00.000Z", "ready": true,
    "role": "single", "leader": null,
    "messages": {"tracking": 4, "stopped": 2},
    "stream": {"enabled": true, "connected": true, "since": "2025-11-25T10:00:01.000Z",
               "last_event_at": null},
    "dingtalk": {"month": "2025-11", "read_status_calls": 1234, "budget": 5000,
                 "stretch": 1.235, "quota_exhausted": false, "poll_mode": "reconcile",
                 "throttling": {"throttled": true, "current_rate": 12.35,
                                "configured_rate": 20.0,
                                "last_throttled_at": "2025-11-25T10:00:02.000Z"}},
    "webhooks": [
      {"name": "ops", "configured": true, "pending_events": 3,
       "oldest_pending_at": "2025-11-25T10:00:03.000Z", "dead_letters": 1, "disabled": false},
      {"name": "old", "configured": false, "pending_events": 0, "oldest_pending_at": null,
       "dead_letters": 2, "disabled": false}]})"));
  CHECK(r.body == status_json(s));
  s.month_call_budget.reset();
  s.current_rate = 20;
  const json plain = body_of(call(b, "GET", "/v1/status"));
  CHECK(plain["dingtalk"]["budget"].is_null());
  CHECK(plain["dingtalk"]["throttling"]["throttled"] == false);
  // On PostgreSQL: the role, and who leads.
  s.role = "standby";
  s.leader = "host-a (API 10.0.0.1:8080)";
  const json standby = body_of(call(b, "GET", "/v1/status"));
  CHECK(standby["role"] == "standby");
  CHECK(standby["leader"] == "host-a (API 10.0.0.1:8080)");
  CHECK(call(b, "POST", "/v1/status").status == 405);
  CHECK(call(b, "GET", "/v1/status?verbose=1").status == 400);
}

TEST_CASE("api: /v1/updates is routed to the server's stream, with the same token and checks") {
  const auto routed = [](const std::string& method, const std::string& target,
                         const std::string& token = "", const std::string& authorization = "") {
    return route(Request{method, target, authorization, "", ""}, token, k_healthy);
  };
  const Routed ok = routed("GET", "/v1/updates");
  CHECK(ok.updates);
  CHECK_FALSE(ok.reply);
  CHECK_FALSE(ok.command);
  CHECK(routed("GET", "/v1/updates", "t0ken", "Bearer t0ken").updates);
  const Routed missing = routed("GET", "/v1/updates", "t0ken");
  CHECK_FALSE(missing.updates);
  REQUIRE(missing.reply);
  CHECK(missing.reply->status == 401);
  const Routed wrong = routed("GET", "/v1/updates", "t0ken", "Bearer nope");
  REQUIRE(wrong.reply);
  CHECK(wrong.reply->status == 401);
  const Routed post = routed("POST", "/v1/updates");
  REQUIRE(post.reply);
  CHECK(post.reply->status == 405);
  const Routed param = routed("GET", "/v1/updates?messages=a,b");
  REQUIRE(param.reply);
  CHECK(param.reply->status == 400);
  CHECK_FALSE(param.updates);
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
  // "/" is the status page (page_test.cpp); a name next to it is no file.
  check_405("POST", "/", "GET");
  CHECK(call(b, "GET", "/index.htm").status == 404);
  CHECK(call(b, "GET", "/v1/messages/").status == 404);
  CHECK(call(b, "GET", "/v1/dead-letters/evt_1").status == 404);
  CHECK(call(b, "GET", "/v2/messages").status == 404);
}

TEST_CASE("api: a query parameter the call does not take is a 400 naming it") {
  FakeBackend b;
  b.records["k"] = record("k");
  auto bad = call(b, "GET", "/v1/messages/k?verbose=1");
  CHECK(bad.status == 400);
  CHECK(body_of(bad)["error"] == "unknown query parameter \"verbose\"");
  CHECK(call(b, "GET", "/healthz?x").status == 400);
  CHECK(call(b, "GET", "/v1/messages/k?").status == 200);
  CHECK(call(b, "GET", "/v1/messages?state=%zz").status == 400);
}

TEST_CASE("api: with a token, every call but /healthz and /readyz needs it - 401 never echoes it") {
  FakeBackend b;
  const std::string token = "api-t0ken";
  auto missing = call(b, "GET", "/v1/messages", "", token);
  CHECK(missing.status == 401);
  CHECK(missing.headers == decltype(missing.headers){{"WWW-Authenticate", "Bearer"}});
  auto wrong = call(b, "GET", "/v1/messages", "", token, "Bearer nope");
  CHECK(wrong.status == 401);
  CHECK(wrong.body.find("nope") == std::string::npos);
  CHECK(wrong.body.find(token) == std::string::npos);
  CHECK(call(b, "GET", "/nowhere", "", token).status == 401);
  // Probes need no secret.
  CHECK(call(b, "GET", "/healthz", "", token).status == 200);
  CHECK(call(b, "GET", "/readyz", "", token).status == 200);
  CHECK(call(b, "GET", "/readyz", "", token, "", {true, Readiness::starting}).status == 503);
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
          std::string first;
          be.visit_messages("", [&](const MessageRecord& m) {
            first = m.spec.process_query_key;
            return false;
          });
          return Reply{200, first, {}};
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

TEST_CASE("api: a standby answers GETs, refuses writes with 503 naming the leader, /readyz "
          "503 standby") {
  FakeBackend b;
  b.records["k1"] = record("k1");
  b.records["k1"].source = MessageSource::api;
  b.leader = "db2.example 10.0.0.2:9465";
  CHECK(call(b, "GET", "/v1/messages").status == 200);
  CHECK(call(b, "GET", "/v1/messages/k1").status == 200);
  CHECK(call(b, "GET", "/v1/dead-letters").status == 200);
  for (const auto& [method, target, body] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"POST", "/v1/messages", R"({"process_query_key": "k2"})"},
           {"DELETE", "/v1/messages/k1", ""},
           {"POST", "/v1/dead-letters/evt_known/replay", ""}}) {
    const std::string what = method + " " + target;
    CAPTURE(what);
    const Reply r = call(b, method, target, body);
    CHECK(r.status == 503);
    CHECK(body_of(r)["leader"] == "db2.example 10.0.0.2:9465");
    CHECK(body_of(r)["error"] ==
          "this daemon is a standby; send writes to the leader, db2.example 10.0.0.2:9465");
  }
  CHECK(b.records.count("k2") == 0);
  CHECK(b.removed.empty());
  CHECK(b.replayed.empty());
  b.leader = "";
  CHECK(body_of(call(b, "DELETE", "/v1/messages/k1"))["error"] ==
        "this daemon is a standby and no leader is known yet; try again shortly");

  const Reply standby = call(b, "GET", "/readyz", "", "", "", {true, Readiness::standby});
  CHECK(standby.status == 503);
  CHECK(body_of(standby) == json{{"ready", false}, {"reason", "standby"}});
  CHECK(call(b, "GET", "/healthz", "", "", "", {true, Readiness::standby}).status == 200);
  b.leader.reset(); // the leader writes
  CHECK(call(b, "DELETE", "/v1/messages/k1").status == 204);
}
