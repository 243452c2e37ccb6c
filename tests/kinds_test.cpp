// The three kinds of bot message, side by side: each kind's request bytes,
// answer parsing and error classification, the oto recipients and read
// status window in the tracker, and messages[].kind and token in the
// configuration.
#include "readreceiptd/config/config.hpp"
#include "readreceiptd/dingtalk/errors.hpp"
#include "readreceiptd/dingtalk/protocol.hpp"
#include "readreceiptd/tracker/tracker.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

using namespace rrd;
using namespace rrd::dingtalk;
using nlohmann::json;
using tracker::PollResult;

namespace {

constexpr const char* k_access_token = "tok-SECRET-8ca04016";
constexpr const char* k_group_token = "grp-SECRET-5d1c7e90aa";
constexpr Millis k_s{1'000};
constexpr Millis k_min{60'000};
constexpr Millis k_h{3'600'000};

// 2026-11-25T10:00:00Z
const TimePoint k_t0 = from_unix_ms(1'795'600'800'000);

config::DingTalk cfg() {
  config::DingTalk c;
  c.endpoint = "http://127.0.0.1:8080/";
  c.auth_kind = config::DingTalk::AuthKind::fixed_token;
  c.fixed_token = {k_access_token};
  c.robot_code = "dingrobot";
  c.page_size = 50;
  return c;
}

MessageSpec spec(MessageKind kind) {
  MessageSpec m;
  m.process_query_key = "Kna29pdJ+nx1/ghavbumk==";
  m.kind = kind;
  m.robot_code = "dingrobot";
  if (kind != MessageKind::oto) {
    m.open_conversation_id = "cid6KeBBLo7EeiodoA==";
  }
  m.sent_at = k_t0;
  return m;
}

std::optional<std::string> header(const http::Request& r, const std::string& name) {
  for (const auto& h : r.headers) {
    if (h.first == name) {
      return h.second;
    }
  }
  return std::nullopt;
}

http::Response answer(int status, std::string body) {
  http::Response r;
  r.status = status;
  r.body = std::move(body);
  r.headers = {{"content-type", "application/json;charset=utf-8"}};
  return r;
}

std::string error_body(const std::string& code) {
  return json{{"code", code}, {"message", "some message"}, {"requestid", "7F2A"}}.dump();
}

// An oto answer entry.
json entry(const std::string& user, const char* status, json timestamp = nullptr) {
  json e = {{"name", "Name of " + user}, {"userId", user}, {"readStatus", status}};
  if (!timestamp.is_null()) {
    e["readTimestamp"] = std::move(timestamp);
  }
  return e;
}

std::string oto_body(const json& list, const char* status = "SUCCESS") {
  return json{{"sendStatus", status}, {"messageReadInfoList", list}}.dump();
}

constexpr std::int64_t k_read_ms = 1'795'601'000'000; // 2026-11-25T10:03:20Z

} // namespace

// ---------------------------------------------------------------- requests

TEST_CASE("kinds: each kind's read-status request, byte for byte") {
  SUBCASE("private_chat: privateChatMessages/query, never a token") {
    auto m = spec(MessageKind::private_chat);
    m.token = k_group_token; // not a group: never sent
    const auto r = build_query_request(cfg(), m, k_access_token, nullptr);
    CHECK(r.method == "POST");
    CHECK(r.url == "http://127.0.0.1:8080/v1.0/robot/privateChatMessages/query");
    CHECK(r.body == R"({"maxResults":50,"openConversationId":"cid6KeBBLo7EeiodoA==",)"
                    R"("processQueryKey":"Kna29pdJ+nx1/ghavbumk==","robotCode":"dingrobot"})");
  }
  SUBCASE("group: groupMessages/query with the conversation, the token and later pages") {
    auto m = spec(MessageKind::group);
    m.token = k_group_token;
    const std::string next = "cursor+/=1";
    const auto r = build_query_request(cfg(), m, k_access_token, &next);
    CHECK(r.method == "POST");
    CHECK(r.url == "http://127.0.0.1:8080/v1.0/robot/groupMessages/query");
    CHECK(header(r, "Content-Type") == std::optional<std::string>("application/json"));
    CHECK(header(r, "x-acs-dingtalk-access-token") == std::optional<std::string>(k_access_token));
    CHECK(r.body == R"({"maxResults":50,"nextToken":"cursor+/=1",)"
                    R"("openConversationId":"cid6KeBBLo7EeiodoA==",)"
                    R"("processQueryKey":"Kna29pdJ+nx1/ghavbumk==","robotCode":"dingrobot",)"
                    R"("token":"grp-SECRET-5d1c7e90aa"})");
    CHECK(json::parse(r.body) == json::parse(json::parse(r.body).dump())); // what a library writes
    // The template bot's token is a secret in the logged shape.
    const std::string shape = redact_request(r);
    CHECK(shape.find(k_group_token) == std::string::npos);
    CHECK(shape.find(k_access_token) == std::string::npos);
    CHECK(shape.find(R"("token":"<redacted>")") != std::string::npos);
  }
  SUBCASE("group by token alone: no openConversationId") {
    auto m = spec(MessageKind::group);
    m.open_conversation_id.clear();
    m.token = k_group_token;
    const auto r = build_query_request(cfg(), m, k_access_token, nullptr);
    CHECK(r.body == R"({"maxResults":50,"processQueryKey":"Kna29pdJ+nx1/ghavbumk==",)"
                    R"("robotCode":"dingrobot","token":"grp-SECRET-5d1c7e90aa"})");
  }
  SUBCASE("oto: a GET of oToMessages/readStatus, the key percent-encoded, no body") {
    const auto r = build_query_request(cfg(), spec(MessageKind::oto), k_access_token, nullptr);
    CHECK(r.method == "GET");
    CHECK(r.url == "http://127.0.0.1:8080/v1.0/robot/oToMessages/readStatus"
                   "?robotCode=dingrobot&processQueryKey=Kna29pdJ%2Bnx1%2Fghavbumk%3D%3D");
    CHECK(r.body.empty());
    CHECK_FALSE(header(r, "Content-Type"));
    CHECK(header(r, "x-acs-dingtalk-access-token") == std::optional<std::string>(k_access_token));
    CHECK(header(r, "Accept") == std::optional<std::string>("application/json"));
    CHECK(r.hot);
    CHECK(r.max_response_bytes == k_max_response_bytes);
  }
}

TEST_CASE("kinds: url_encode keeps only RFC 3986's unreserved characters") {
  CHECK(url_encode("AZaz09-._~") == "AZaz09-._~");
  CHECK(url_encode("+/=") == "%2B%2F%3D");
  CHECK(url_encode("a b&c?d#e%f") == "a%20b%26c%3Fd%23e%25f");
  CHECK(url_encode("\xE9\x92\x89") == "%E9%92%89"); // 钉, byte by byte
  CHECK(url_encode(std::string("\0x", 2)) == "%00x");
  CHECK(url_encode("").empty());
}

// ---------------------------------------------------------------- answers

TEST_CASE("kinds: a group answer as readUserIds, as readUsers, or both") {
  auto p = parse_group_page(
      R"({"sendStatus":"SUCCESS","readUserIds":["u1","u2"],"hasMore":true,"nextToken":"n"})");
  REQUIRE(p);
  CHECK(p->read_user_ids == std::vector<std::string>{"u1", "u2"});
  CHECK(p->has_more);
  CHECK(p->next_token == "n");

  p = parse_group_page(R"({"readUsers":[{"unionId":"x1","userId":"u1"},{"userId":"u2"}]})");
  REQUIRE(p);
  CHECK(p->read_user_ids == std::vector<std::string>{"u1", "u2"});
  CHECK_FALSE(p->has_more);

  p = parse_group_page(R"({"sendStatus":"SUCCESS","readUserIds":["u1"],)"
                       R"("readUsers":[{"userId":"u1"},{"userId":"u3"},{"userId":"u3"}]})");
  REQUIRE(p);
  CHECK(p->read_user_ids == std::vector<std::string>{"u1", "u3"});
  CHECK_FALSE(p->lists_recipients);

  p = parse_group_page(R"({"sendStatus":"SUCCESS","readUsers":null})");
  REQUIRE(p);
  CHECK(p->read_user_ids.empty());

  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"readUsers":"u1"})", "readUsers: expected an array, got string"},
      {R"({"readUsers":["u1"]})", "readUsers[0]: expected an object, got string"},
      {R"({"readUsers":[{"unionId":"x"}]})", "readUsers[0].userId: expected a non-empty string"},
      {R"({"readUsers":[{"userId":""}]})", "readUsers[0].userId: expected a non-empty string"},
      {R"({"readUsers":[{"userId":7}]})", "readUsers[0].userId: expected a non-empty string"},
      {R"({"readUsers":[{"userId":"a\nb"}]})",
       "readUsers[0].userId: control character in a user id"},
      {R"({"readUserIds":"u1","readUsers":[]})", "readUserIds: expected an array, got string"},
  };
  for (const auto& c : bad) {
    CAPTURE(c.first);
    const auto r = parse_group_page(c.first);
    REQUIRE_FALSE(r);
    CHECK(r.error() == c.second);
  }
  for (const char* body : {"", "[]", "{", R"({"other":1})"}) {
    CAPTURE(body);
    CHECK_FALSE(parse_group_page(body));
  }
}

TEST_CASE("kinds: the oto answer lists every recipient, READ entries with their read time") {
  const auto p = parse_oto_status(oto_body(json::array({
      entry("u1", "READ", k_read_ms),
      entry("u2", "UNREAD"),
      entry("u3", "READ", std::to_string(k_read_ms + 1'000)), // a string of digits
      entry("u4", "READ", 0),                                 // read, time unknown
      entry("u5", "UNREAD", 0),
  })));
  REQUIRE(p);
  CHECK(p->send_status == "SUCCESS");
  CHECK(p->lists_recipients);
  CHECK_FALSE(p->has_more);
  CHECK(p->recipients == std::vector<std::string>{"u1", "u2", "u3", "u4", "u5"});
  CHECK(p->read_user_ids == std::vector<std::string>{"u1", "u3", "u4"});
  CHECK(p->read_at == std::vector<std::optional<TimePoint>>{
                          from_unix_ms(k_read_ms), from_unix_ms(k_read_ms + 1'000), std::nullopt});

  // A user listed twice counts once, read if any entry says so, with the
  // first time known.
  const auto twice = parse_oto_status(oto_body(json::array({
      entry("u1", "UNREAD"),
      entry("u2", "READ"),
      entry("u1", "READ", k_read_ms),
      entry("u2", "READ", k_read_ms),
      entry("u1", "READ", k_read_ms + 5'000),
  })));
  REQUIRE(twice);
  CHECK(twice->recipients == std::vector<std::string>{"u1", "u2"});
  CHECK(twice->read_user_ids == std::vector<std::string>{"u2", "u1"});
  CHECK(twice->read_at ==
        std::vector<std::optional<TimePoint>>{from_unix_ms(k_read_ms), from_unix_ms(k_read_ms)});

  const auto empty = parse_oto_status(R"({"sendStatus":"SUCCESS","messageReadInfoList":[]})");
  REQUIRE(empty);
  CHECK(empty->recipients.empty());
  const auto status_only = parse_oto_status(R"({"sendStatus":"RECALLED"})");
  REQUIRE(status_only);
  CHECK(status_only->send_status == "RECALLED");
  CHECK(status_only->lists_recipients);
}

TEST_CASE("kinds: hostile oto answers are errors that name the entry, never exceptions") {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"sendStatus":"SUCCESS","messageReadInfoList":{"userId":"u1","readStatus":"READ"}})",
       "messageReadInfoList: expected an array, got object"},
      {R"({"messageReadInfoList":"u1"})", "messageReadInfoList: expected an array, got string"},
      {R"({"messageReadInfoList":[{"name":"A","readStatus":"READ"}]})",
       "messageReadInfoList[0].userId: expected a non-empty string"},
      {R"({"messageReadInfoList":[{"userId":"","readStatus":"READ"}]})",
       "messageReadInfoList[0].userId: expected a non-empty string"},
      {R"({"messageReadInfoList":[{"userId":12,"readStatus":"READ"}]})",
       "messageReadInfoList[0].userId: expected a non-empty string"},
      {R"({"messageReadInfoList":[{"userId":"u\u0085","readStatus":"READ"}]})",
       "messageReadInfoList[0].userId: holds a control character"},
      {R"({"messageReadInfoList":[{"userId":"u1","readStatus":"read"}]})",
       "messageReadInfoList[0].readStatus: expected \"READ\" or \"UNREAD\""},
      {R"({"messageReadInfoList":[{"userId":"u1"}]})",
       "messageReadInfoList[0].readStatus: expected \"READ\" or \"UNREAD\""},
      {R"({"messageReadInfoList":[7]})", "messageReadInfoList[0]: expected an object, got number"},
      {R"({"messageReadInfoList":[{"userId":"u1","readStatus":"READ","readTimestamp":"soon"}]})",
       "messageReadInfoList[0].readTimestamp: expected epoch milliseconds"},
      {R"({"messageReadInfoList":[{"userId":"u1","readStatus":"READ","readTimestamp":1.5}]})",
       "messageReadInfoList[0].readTimestamp: expected epoch milliseconds"},
      {R"({"messageReadInfoList":[{"userId":"u1","readStatus":"READ","readTimestamp":true}]})",
       "messageReadInfoList[0].readTimestamp: expected epoch milliseconds"},
      {R"({"messageReadInfoList":[{"userId":"u1","readStatus":"READ","readTimestamp":-5}]})",
       "messageReadInfoList[0].readTimestamp: expected epoch milliseconds"},
      {R"({"messageReadInfoList":[{"userId":"u1","readStatus":"READ","readTimestamp":"12a"}]})",
       "messageReadInfoList[0].readTimestamp: expected epoch milliseconds"},
      {R"({"messageReadInfoList":[{"userId":"u1","readStatus":"READ",)"
       R"("readTimestamp":99999999999999999999}]})",
       "messageReadInfoList[0].readTimestamp: expected epoch milliseconds"},
      {R"({"messageReadInfoList":[{"userId":"u1","readStatus":"READ","readTimestamp":1}]})",
       "messageReadInfoList[0].readTimestamp: not a plausible time"},
      {R"({"sendStatus":7})", "sendStatus: expected a string, got number"},
      {R"({"other":1})", "body: neither sendStatus nor messageReadInfoList"},
      {"[]", "body: expected a JSON object, got array"},
      {"{", "body is not valid JSON"},
      {std::string("{\"sendStatus\":\"SUCCESS\"}\0", 25), "body is not valid JSON"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.first);
    const auto r = parse_oto_status(c.first);
    REQUIRE_FALSE(r);
    CHECK(r.error() == c.second);
    CHECK(r.error().find("u1") == std::string::npos); // values are never quoted
  }
  // More entries than batchSend could ever have sent to.
  json list = json::array();
  for (std::size_t i = 0; i <= k_max_oto_entries; ++i) {
    list.push_back(entry("user" + std::to_string(i), "UNREAD"));
  }
  const auto many = parse_oto_status(oto_body(list));
  REQUIRE_FALSE(many);
  CHECK(many.error() == "messageReadInfoList: more than 1000 entries");
}

TEST_CASE("kinds: a 4 MiB oto list is a bad response, not a read set") {
  std::string body = R"({"sendStatus":"SUCCESS","messageReadInfoList":[)";
  for (int i = 0; body.size() <= k_max_response_bytes; ++i) {
    body += entry("user-" + std::to_string(i), "READ", k_read_ms).dump() + ",";
  }
  body += entry("last", "READ", k_read_ms).dump() + "]}";
  Page page;
  const auto d = classify(answer(200, body), MessageKind::oto, &page);
  CHECK(d.action == Action::bad_response);
  CHECK(page.read_user_ids.empty());
}

// ---------------------------------------------------------------- errors

TEST_CASE("kinds: every error row classifies the same for every kind") {
  std::vector<http::Response> rows;
  for (const char* code : {"processQueryKey.expireTime",
                           "invalid.processQueryKey",
                           "invalidParameter.processQueryKey.missing",
                           "invalid.openConversationId",
                           "openConversationId.notExisted",
                           "conversation.org.dismatch",
                           "invalidParameter.robotCode.notExsit",
                           "invalidParameter.robotCode.invalid",
                           "invalidParameter.robotCode.missing",
                           "resource.not.found",
                           "bot.stopped",
                           "template.not.existed",
                           "template.stopped",
                           "unauthorized",
                           "auth.error",
                           "InvalidAuthentication",
                           "invalidParameter.cursor.invalid",
                           "invalidParameter.param.invalid",
                           "invalidParameter.pageSize.invalid",
                           "system.error",
                           "AuthenticationFailed.MissingParameter",
                           "something.nobody.documented"}) {
    rows.push_back(answer(400, error_body(code)));
  }
  for (const char* code :
       {"Forbidden.AccessDenied.QpsLimitForApi", "Forbidden.AccessDenied.QpmLimitForAppkeyAndApi",
        "Forbidden.AccessDenied.ApiCountLimitForAppkey", "Forbidden.Other"}) {
    rows.push_back(answer(403, error_body(code)));
  }
  rows.push_back(answer(429, ""));
  rows.push_back(answer(500, error_body("system.error")));
  rows.push_back(answer(503, "Service Unavailable"));
  rows.push_back(answer(401, error_body("InvalidAuthentication")));
  rows.push_back(answer(200, "<!DOCTYPE html><html><body>blocked</body></html>"));
  rows.push_back(answer(200, "not json"));
  rows.push_back(answer(404, "[]"));
  http::Response timeout;
  timeout.failure = http::Failure::timeout;
  rows.push_back(timeout);
  for (const auto& r : rows) {
    CAPTURE(r.status);
    CAPTURE(r.body);
    const auto expected = classify(r, MessageKind::private_chat, nullptr);
    CHECK(expected.action == classify(r, nullptr).action);
    for (const MessageKind kind : {MessageKind::group, MessageKind::oto}) {
      CAPTURE(to_string(kind));
      const auto d = classify(r, kind, nullptr);
      CHECK(d.action == expected.action);
      CHECK(d.reason == expected.reason);
      CHECK(d.code == expected.code);
    }
  }
}

TEST_CASE("kinds: invalidParameter.invalid stops a group message, and only a group message") {
  const auto r = answer(400, error_body("invalidParameter.invalid"));
  const auto group = classify(r, MessageKind::group, nullptr);
  CHECK(group.action == Action::stop_invalid);
  CHECK(group.code == "invalidParameter.invalid");
  CHECK(classify(r, MessageKind::private_chat, nullptr).action == Action::client_bug);
  CHECK(classify(r, MessageKind::oto, nullptr).action == Action::client_bug);
}

TEST_CASE("kinds: a 200 is parsed as the kind's answer") {
  const std::string oto = oto_body(json::array({entry("u1", "READ", k_read_ms)}));
  Page page;
  CHECK(classify(answer(200, oto), MessageKind::oto, &page).action == Action::ok);
  CHECK(page.read_user_ids == std::vector<std::string>{"u1"});
  CHECK(page.lists_recipients);
  // An answer of another kind's shape is no oto answer.
  CHECK(classify(answer(200, R"({"readUserIds":["u1"]})"), MessageKind::oto, nullptr).action ==
        Action::bad_response);
  Page group;
  CHECK(classify(answer(200, R"({"readUsers":[{"userId":"u9"}]})"), MessageKind::group, &group)
            .action == Action::ok);
  CHECK(group.read_user_ids == std::vector<std::string>{"u9"});
}

// ---------------------------------------------------------------- tracker

namespace {

PollResult oto_answer(std::vector<std::string> recipients, std::vector<std::string> read,
                      std::string status = "SUCCESS") {
  PollResult r;
  r.kind = PollResult::Kind::answer;
  r.send_status = std::move(status);
  r.read_user_ids = std::move(read);
  r.read_at.assign(r.read_user_ids.size(), std::nullopt);
  r.lists_recipients = true;
  r.recipients = std::move(recipients);
  return r;
}

tracker::Context ctx_at(const config::Poll& poll, TimePoint now) {
  return tracker::Context{poll, now, 0, 0.5};
}

MessageRecord tracked(const MessageSpec& s) {
  return tracker::new_record(s, MessageSource::config, k_t0);
}

json data_of(const OutboxEvent& e) {
  return json::parse(e.body)["data"];
}

} // namespace

TEST_CASE("kinds: the recipients DingTalk lists are an oto message's expected readers") {
  const config::Poll poll;
  const auto rec = tracked(spec(MessageKind::oto));
  const auto first = tracker::apply(rec, oto_answer({"a", "b", "c"}, {"b"}), ctx_at(poll, k_t0));
  CHECK(first.record.recipients == std::vector<std::string>{"a", "b", "c"});
  REQUIRE(first.events.size() == 1);
  const auto data = data_of(first.events[0]);
  CHECK(data["kind"] == "oto");
  CHECK(data["expected_reader_count"] == 3);
  CHECK(data["unread_user_ids"] == json::array({"a", "c"}));
  CHECK(expected_reader_ids(first.record) == std::vector<std::string>{"a", "b", "c"});
  CHECK(unread_user_ids(first.record) == std::vector<std::string>{"a", "c"});

  const auto last = tracker::apply(first.record, oto_answer({"a", "b", "c"}, {"c", "b", "a"}),
                                   ctx_at(poll, k_t0 + k_min));
  REQUIRE(last.events.size() == 2);
  CHECK(data_of(last.events[0])["newly_read_user_ids"] == json::array({"c", "a"}));
  CHECK(last.record.stop_reason == StopReason::fully_read);
  CHECK(data_of(last.events[1])["kind"] == "oto");
  CHECK(data_of(last.events[1])["unread_user_ids"] == json::array());
}

TEST_CASE("kinds: configured expected readers or count win over the recipients") {
  const config::Poll poll;
  auto s = spec(MessageKind::oto);
  s.expected_readers = {"a"};
  auto step = tracker::apply(tracked(s), oto_answer({"a", "b"}, {"a"}), ctx_at(poll, k_t0));
  CHECK(step.record.stop_reason == StopReason::fully_read);
  CHECK(data_of(step.events[0])["expected_reader_count"] == 1);

  s.expected_readers.clear();
  s.expected_reader_count = 2;
  step = tracker::apply(tracked(s), oto_answer({"a", "b", "c"}, {"a"}), ctx_at(poll, k_t0));
  CHECK_FALSE(step.record.stopped);
  CHECK(data_of(step.events[0])["expected_reader_count"] == 2);
  CHECK_FALSE(data_of(step.events[0]).contains("unread_user_ids")); // who is unknown
  step = tracker::apply(step.record, oto_answer({"a", "b", "c"}, {"a", "c"}),
                        ctx_at(poll, k_t0 + k_min));
  CHECK(step.record.stop_reason == StopReason::fully_read);

  // A group or private-chat message has no recipients: nothing is expected.
  for (const MessageKind kind : {MessageKind::private_chat, MessageKind::group}) {
    PollResult r;
    r.kind = PollResult::Kind::answer;
    r.send_status = "SUCCESS";
    r.read_user_ids = {"a"};
    const auto g = tracker::apply(tracked(spec(kind)), r, ctx_at(poll, k_t0));
    CHECK(data_of(g.events[0])["kind"] == to_string(kind));
    CHECK(data_of(g.events[0])["expected_reader_count"].is_null());
    CHECK_FALSE(g.record.stopped);
  }
}

TEST_CASE("kinds: the oto window ends with a last poll in its last minute, then expired") {
  config::Poll poll;
  poll.max_age = 7 * 24 * k_h;
  const TimePoint close = k_t0 + tracker::k_oto_window;
  const TimePoint last = close - tracker::k_oto_last_poll_before_close;
  CHECK(tracker::k_oto_window == 24 * k_h);
  CHECK(close - last <= k_min);

  auto rec = tracked(spec(MessageKind::oto));
  // Late in the window, the schedule's next poll (the reconcile schedule's
  // 4 h) is pulled in to the window's last poll.
  auto ctx = ctx_at(poll, close - 2 * k_h);
  ctx.schedule = &poll.reconcile_schedule;
  rec = tracker::apply(rec, oto_answer({"a", "b"}, {}), ctx).record;
  CHECK(rec.next_poll == last);
  // Early in it, the schedule alone decides.
  ctx.now = k_t0 + k_h;
  CHECK(tracker::apply(tracked(spec(MessageKind::oto)), oto_answer({"a"}, {}), ctx)
            .record.next_poll == k_t0 + k_h + 4 * k_h);
  // The last poll: its reads, then the close itself, with no call before.
  auto step = tracker::apply(rec, oto_answer({"a", "b"}, {"a"}), ctx_at(poll, last));
  CHECK_FALSE(step.record.stopped);
  CHECK(step.record.next_poll == close);
  CHECK(step.events.size() == 1);
  CHECK_FALSE(tracker::close_window(step.record, close - Millis{1}));
  const auto closed = tracker::close_window(step.record, close);
  REQUIRE(closed);
  CHECK(closed->record.stop_reason == StopReason::expired);
  CHECK(closed->record.stop_detail == "read status window closed");
  REQUIRE(closed->events.size() == 1);
  CHECK(closed->events[0].sequence == 2);
  CHECK(data_of(closed->events[0])["reason"] == "expired");
  CHECK(data_of(closed->events[0])["unread_user_ids"] == json::array({"b"}));
  CHECK_FALSE(tracker::close_window(closed->record, close + k_h)); // stopped: once

  // A poll answered at or after the close reports its reads, then stops.
  const auto late = tracker::apply(rec, oto_answer({"a", "b"}, {"b"}), ctx_at(poll, close + k_s));
  REQUIRE(late.events.size() == 2);
  CHECK(data_of(late.events[0])["newly_read_user_ids"] == json::array({"b"}));
  CHECK(late.record.stop_reason == StopReason::expired);
  CHECK(late.record.stop_detail == "read status window closed");

  // Other kinds have no window.
  for (const MessageKind kind : {MessageKind::private_chat, MessageKind::group}) {
    CHECK_FALSE(tracker::close_window(tracked(spec(kind)), close + k_h));
  }
}

TEST_CASE("kinds: a max_age shorter than the oto window comes first") {
  config::Poll poll;
  poll.max_age = 2 * k_h;
  auto rec = tracked(spec(MessageKind::oto));
  rec = tracker::apply(rec, oto_answer({"a"}, {}), ctx_at(poll, k_t0 + k_h)).record;
  CHECK(rec.next_poll <= k_t0 + poll.max_age);
  const auto step = tracker::apply(rec, oto_answer({"a"}, {}), ctx_at(poll, k_t0 + poll.max_age));
  CHECK(step.record.stop_reason == StopReason::max_age);
}

// ---------------------------------------------------------------- config

namespace {

const std::string k_head = "dingtalk:\n"
                           "  auth:\n"
                           "    access_token: tok\n"
                           "  robot_code: robot\n"
                           "messages:\n";

std::string error_of(const std::string& messages) {
  try {
    config::load_string(k_head + messages, "/cfg/c.yaml");
  } catch (const config::ConfigError& e) {
    return e.what();
  }
  return "";
}

} // namespace

TEST_CASE("kinds: messages[].kind and token in the configuration") {
  const auto c = config::load_string(k_head +
                                         "  - process_query_key: p\n"
                                         "  - process_query_key: g\n"
                                         "    kind: group\n"
                                         "    open_conversation_id: cid1\n"
                                         "  - process_query_key: t\n"
                                         "    kind: group\n"
                                         "    token: " +
                                         std::string(k_group_token) +
                                         "\n"
                                         "  - process_query_key: o\n"
                                         "    kind: oto\n",
                                     "/cfg/c.yaml");
  REQUIRE(c.messages.size() == 4);
  CHECK(c.messages[0].kind == MessageKind::private_chat);
  CHECK(c.messages[1].kind == MessageKind::group);
  CHECK(c.messages[2].token == k_group_token);
  CHECK(c.messages[3].kind == MessageKind::oto);
  CHECK(c.messages[3].robot_code == "robot");

  CHECK(error_of("  - process_query_key: k\n    kind: groups\n") ==
        "/cfg/c.yaml:7:11: messages[0].kind: unknown kind \"groups\" (did you mean \"group\"?) "
        "(private_chat: a bot's person-to-person chat; group: groupMessages/send; oto: "
        "oToMessages/batchSend)");
  CHECK(error_of("  - process_query_key: k\n    kind: group\n") ==
        "/cfg/c.yaml:6:5: messages[0].open_conversation_id: required for kind group (or token, "
        "for a template bot)");
  CHECK(error_of("  - process_query_key: k\n    kind: oto\n    open_conversation_id: c\n") ==
        "/cfg/c.yaml:8:27: messages[0].open_conversation_id: not for kind oto "
        "(oToMessages/readStatus asks by robot_code and key alone)");
  // The token is named, never quoted, wherever it is refused.
  const std::string wrong_kind =
      error_of("  - process_query_key: k\n    token: " + std::string(k_group_token) + "\n");
  CHECK(wrong_kind ==
        "/cfg/c.yaml:7:12: messages[0].token: only for kind group (a template bot's token), not "
        "private_chat");
  const std::string oto_token = error_of(
      "  - process_query_key: k\n    kind: oto\n    token: " + std::string(k_group_token) + "\n");
  CHECK(oto_token.find("only for kind group") != std::string::npos);
  CHECK(oto_token.find(k_group_token) == std::string::npos);
  const std::string empty_token =
      error_of("  - process_query_key: k\n    kind: group\n    token: \"\"\n");
  CHECK(empty_token.find("messages[0].token") != std::string::npos);
}

TEST_CASE("kinds: kind and token through the API's JSON, files never read") {
  const auto defaults = config::load_string(k_head + "  []\n", "/cfg/c.yaml");
  const auto m = config::parse_message_json(
      R"({"process_query_key":"k","kind":"group","token":"grp-SECRET-5d1c7e90aa"})", defaults);
  CHECK(m.spec.kind == MessageKind::group);
  CHECK(m.spec.token == k_group_token);
  CHECK(
      config::parse_message_json(R"({"process_query_key":"k","kind":"oto"})", defaults).spec.kind ==
      MessageKind::oto);
  const auto refused = [&](const std::string& body) {
    try {
      config::parse_message_json(body, defaults);
    } catch (const config::ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK(refused(R"({"process_query_key":"k","kind":"group","token_file":"/etc/shadow"})") ==
        "token_file: files cannot be read here");
  CHECK(refused(R"({"process_query_key":"k","kind":7})") == "kind: must be a string, not a number");
}
