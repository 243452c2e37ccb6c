#include "readreceiptd/common/version.hpp"
#include "readreceiptd/dingtalk/errors.hpp"
#include "readreceiptd/dingtalk/pagination.hpp"
#include "readreceiptd/dingtalk/protocol.hpp"
#include "readreceiptd/dingtalk/token_cache.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

using namespace rrd;
using namespace rrd::dingtalk;
using nlohmann::json;

namespace {

constexpr const char* k_token = "tok-SECRET-8ca04016";
constexpr const char* k_app_secret = "app-SECRET-value";
constexpr const char* k_suite_secret = "suite-SECRET-value";
constexpr const char* k_suite_ticket = "ticket-SECRET-value";

config::DingTalk internal_cfg() {
  config::DingTalk c;
  c.endpoint = "http://127.0.0.1:8080";
  c.auth_kind = config::DingTalk::AuthKind::internal_app;
  c.internal_app = {"dingappkey", k_app_secret};
  c.robot_code = "dingrobot";
  c.page_size = 50;
  c.request_timeout = Millis{7'000};
  c.ca_file = "/etc/ca.pem";
  return c;
}

config::DingTalk third_party_cfg() {
  config::DingTalk c = internal_cfg();
  c.auth_kind = config::DingTalk::AuthKind::third_party;
  c.third_party = {"suitekey", k_suite_secret, "corp1", k_suite_ticket};
  return c;
}

config::DingTalk fixed_cfg() {
  config::DingTalk c = internal_cfg();
  c.auth_kind = config::DingTalk::AuthKind::fixed_token;
  c.fixed_token = {k_token};
  return c;
}

MessageSpec message() {
  MessageSpec m;
  m.process_query_key = "Kna29pdJznx1ghavbumkQKwDzgfxZLapw55G7x0Q=";
  m.open_conversation_id = "cid6KeBBLo7EeiodoA==";
  m.robot_code = "dingrobot";
  return m;
}

std::optional<std::string> header(const http::Request& r, const std::string& name) {
  for (const auto& [n, v] : r.headers) {
    if (n == name) {
      return v;
    }
  }
  return std::nullopt;
}

http::Response answer(int status, std::string body,
                      std::string content_type = "application/json;charset=utf-8") {
  http::Response r;
  r.status = status;
  r.body = std::move(body);
  r.headers = {{"content-type", std::move(content_type)}, {"x-acs-request-id", "abc"}};
  return r;
}

http::Response transport(http::Failure f, std::string error = "what happened") {
  http::Response r;
  r.failure = f;
  r.error = std::move(error);
  return r;
}

std::string error_body(const std::string& code, const std::string& message = "some message") {
  return json{{"code", code}, {"message", message}, {"requestid", "7F2A"}}.dump();
}

const char* k_html_page = "<!DOCTYPE html>\n<html><head><title>Access Denied</title></head>"
                          "<body>Your IP has been blocked</body></html>";

// Every code that stops a message with reason `invalid`.
const std::vector<std::string> k_invalid_codes = {
    "invalid.processQueryKey",
    "invalidParameter.processQueryKey.missing",
    "invalid.openConversationId",
    "openConversationId.notExisted",
    "conversation.org.dismatch",
    "invalidParameter.robotCode.notExsit",
    "invalidParameter.robotCode.invalid",
    "invalidParameter.robotCode.missing",
    "resource.not.found",
};

} // namespace

// ---------------------------------------------------------------- requests

TEST_CASE("query request: documented URL, headers and body with only the set fields") {
  const auto cfg = internal_cfg();
  const auto r = build_query_request(cfg, message(), k_token, nullptr);
  CHECK(r.method == "POST");
  CHECK(r.url == "http://127.0.0.1:8080/v1.0/robot/privateChatMessages/query");
  CHECK(header(r, "x-acs-dingtalk-access-token") == std::optional<std::string>(k_token));
  CHECK(header(r, "Content-Type") == std::optional<std::string>("application/json"));
  CHECK(header(r, "Accept") == std::optional<std::string>("application/json"));
  CHECK(header(r, "User-Agent") ==
        std::optional<std::string>(std::string("readreceiptd/") + k_version));
  CHECK(r.total_timeout == Millis{7'000});
  CHECK(r.connect_timeout <= r.total_timeout);
  CHECK(r.ca_file == "/etc/ca.pem");
  CHECK(r.max_response_bytes == k_max_response_bytes);
  CHECK(k_max_response_bytes == 4u * 1024 * 1024);

  const auto body = json::parse(r.body);
  CHECK(body == json{{"openConversationId", "cid6KeBBLo7EeiodoA=="},
                     {"robotCode", "dingrobot"},
                     {"processQueryKey", "Kna29pdJznx1ghavbumkQKwDzgfxZLapw55G7x0Q="},
                     {"maxResults", 50}});
  CHECK(body["maxResults"].is_number_integer());
}

TEST_CASE("query request: the body is exactly what a JSON library writes, whatever the ids hold") {
  const auto cfg = internal_cfg();
  for (const std::string& odd :
       {std::string("plain"), std::string("quote\" back\\slash"),
        std::string("tab\tnew\nline\x01\x7f"), std::string("\xe9\x92\x89\xe9\x92\x89"),
        std::string("bad \xff\xfe utf-8"), std::string("")}) {
    INFO(odd);
    auto m = message();
    m.open_conversation_id = odd;
    m.robot_code = odd;
    m.process_query_key = "key " + odd;
    const std::string next = "next " + odd;
    for (const std::string* token : {static_cast<const std::string*>(nullptr), &next}) {
      json expected = {{"processQueryKey", m.process_query_key}, {"maxResults", cfg.page_size}};
      if (!odd.empty()) {
        expected["openConversationId"] = odd;
        expected["robotCode"] = odd;
      }
      if (token != nullptr) {
        expected["nextToken"] = *token;
      }
      const auto r = build_query_request(cfg, m, k_token, token);
      CHECK(r.body == expected.dump(-1, ' ', false, json::error_handler_t::replace));
    }
  }
}

TEST_CASE("query request: nextToken only on later pages, empty optional fields are omitted") {
  auto cfg = internal_cfg();
  cfg.endpoint = "https://api.dingtalk.com/";
  cfg.request_timeout = Millis{1'000};
  auto m = message();
  m.open_conversation_id.clear();
  m.robot_code.clear();
  const std::string next = "Kna29znx1ghav";
  const auto r = build_query_request(cfg, m, k_token, &next);
  CHECK(r.url == "https://api.dingtalk.com/v1.0/robot/privateChatMessages/query");
  CHECK(r.connect_timeout <= Millis{1'000});
  const auto body = json::parse(r.body);
  CHECK(body == json{{"processQueryKey", m.process_query_key},
                     {"maxResults", 50},
                     {"nextToken", "Kna29znx1ghav"}});
}

TEST_CASE("token requests: internal app, third-party app, and none for a fixed token") {
  const auto internal = build_token_request(internal_cfg());
  REQUIRE(internal);
  CHECK(internal->method == "POST");
  CHECK(internal->url == "http://127.0.0.1:8080/v1.0/oauth2/accessToken");
  CHECK(json::parse(internal->body) == json{{"appKey", "dingappkey"}, {"appSecret", k_app_secret}});
  CHECK_FALSE(header(*internal, "x-acs-dingtalk-access-token"));
  CHECK(header(*internal, "Content-Type") == std::optional<std::string>("application/json"));
  CHECK(internal->max_response_bytes == k_max_response_bytes);
  CHECK(internal->total_timeout == Millis{7'000});

  const auto third = build_token_request(third_party_cfg());
  REQUIRE(third);
  CHECK(third->url == "http://127.0.0.1:8080/v1.0/oauth2/corpAccessToken");
  CHECK(json::parse(third->body) == json{{"suiteKey", "suitekey"},
                                         {"suiteSecret", k_suite_secret},
                                         {"authCorpId", "corp1"},
                                         {"suiteTicket", k_suite_ticket}});

  CHECK_FALSE(build_token_request(fixed_cfg()));
}

TEST_CASE("redacted request shapes hide the token and every secret body field") {
  const std::string next = "page2";
  const auto q = redact_request(build_query_request(internal_cfg(), message(), k_token, &next));
  CHECK(q.find(k_token) == std::string::npos);
  CHECK(q.find("x-acs-dingtalk-access-token: <redacted>") != std::string::npos);
  CHECK(q.find("privateChatMessages/query") != std::string::npos);
  CHECK(q.find("Kna29pdJznx1ghavbumkQKwDzgfxZLapw55G7x0Q=") != std::string::npos);
  CHECK(q.find("\"nextToken\":\"page2\"") != std::string::npos);
  CHECK(q.find('\n') == std::string::npos);

  const auto i = redact_request(*build_token_request(internal_cfg()));
  CHECK(i.find(k_app_secret) == std::string::npos);
  CHECK(i.find("\"appSecret\":\"<redacted>\"") != std::string::npos);
  CHECK(i.find("dingappkey") != std::string::npos);

  const auto t = redact_request(*build_token_request(third_party_cfg()));
  CHECK(t.find(k_suite_secret) == std::string::npos);
  CHECK(t.find(k_suite_ticket) == std::string::npos);
  CHECK(t.find("\"suiteKey\":\"suitekey\"") != std::string::npos);

  http::Request raw;
  raw.url = "http://x/";
  raw.headers = {{"Authorization", "Bearer abc-SECRET"}, {"X-ACS-DINGTALK-ACCESS-TOKEN", k_token}};
  raw.body = std::string("appSecret=") + k_app_secret;
  const auto shown = redact_request(raw);
  CHECK(shown.find("SECRET") == std::string::npos);
  CHECK(shown.find("not JSON") != std::string::npos);
}

TEST_CASE("redacted request shapes show the endpoint's host, never its credentials") {
  auto cfg = internal_cfg();
  cfg.endpoint = "https://user:pass-SECRET@gw.example.com/key-SECRET/?sig=SECRET";
  const auto token = redact_request(*build_token_request(cfg));
  CHECK(token.find("SECRET") == std::string::npos);
  CHECK(token.rfind("POST https://<redacted>@gw.example.com/<redacted>/v1.0/oauth2/accessToken "
                    "headers=[",
                    0) == 0);
  cfg.endpoint = "https://gw.example.com";
  CHECK(redact_request(build_query_request(cfg, message(), k_token, nullptr))
            .rfind("POST https://gw.example.com/v1.0/robot/privateChatMessages/query headers=",
                   0) == 0);
  CHECK(redact_url("https://gw.example.com:8443/v1.0/robot/privateChatMessages/query?x=SECRET") ==
        "https://gw.example.com:8443/v1.0/robot/privateChatMessages/query?<redacted>");
  CHECK(redact_url("https://hooks.example.com/T0/B0/SECRET") ==
        "https://hooks.example.com/<redacted>");
  CHECK(redact_url("https://hooks.example.com/") == "https://hooks.example.com");
  CHECK(redact_url("not a url SECRET") == "<redacted>");
}

// ---------------------------------------------------------------- parsing

TEST_CASE("query page: the documented example parses") {
  const auto p = parse_query_page(R"({
    "sendStatus" : "SUCCESS",
    "readUserIds" : [ "123xxxx", "456" ],
    "nextToken" : "Kna29znx1ghavbumkQKwDzgfxZLapw55G7x0Q=",
    "hasMore" : true
  })");
  REQUIRE(p.ok());
  CHECK(p->send_status == "SUCCESS");
  CHECK(p->read_user_ids == std::vector<std::string>{"123xxxx", "456"});
  CHECK(p->has_more);
  CHECK(p->next_token == "Kna29znx1ghavbumkQKwDzgfxZLapw55G7x0Q=");
}

TEST_CASE("query page: absent or null optional fields take their defaults, extras are ignored") {
  auto p = parse_query_page(R"({"sendStatus":"PROCESSING"})");
  REQUIRE(p.ok());
  CHECK(p->read_user_ids.empty());
  CHECK_FALSE(p->has_more);
  CHECK(p->next_token.empty());

  p = parse_query_page(R"({"readUserIds":["u1"]})");
  REQUIRE(p.ok());
  CHECK(p->send_status.empty());

  p = parse_query_page(
      R"({"sendStatus":"RECALLED","readUserIds":null,"hasMore":null,"nextToken":null,"extra":{"x":[1]}})");
  REQUIRE(p.ok());
  CHECK(p->send_status == "RECALLED");
  CHECK(p->read_user_ids.empty());

  p = parse_query_page(
      R"({"sendStatus":"SOMETHING_NEW","readUserIds":[],"hasMore":false,"nextToken":""})");
  REQUIRE(p.ok());
  CHECK(p->send_status == "SOMETHING_NEW");
}

TEST_CASE("query page: wrong field types are errors that name the field") {
  struct Case {
    const char* body;
    const char* field;
  };
  const Case cases[] = {
      {R"({"sendStatus":1})", "sendStatus"},
      {R"({"sendStatus":["SUCCESS"]})", "sendStatus"},
      {R"({"readUserIds":"u1"})", "readUserIds"},
      {R"({"readUserIds":{"0":"u1"}})", "readUserIds"},
      {R"({"readUserIds":["u1",2]})", "readUserIds[1]"},
      {R"({"readUserIds":["u1",null]})", "readUserIds[1]"},
      {R"({"readUserIds":[["u1"]]})", "readUserIds[0]"},
      {R"({"readUserIds":["u1",""]})", "readUserIds[1]"},
      {R"({"readUserIds":[123456789012345678901234567890]})", "readUserIds[0]"},
      {R"({"hasMore":"true","nextToken":"x"})", "hasMore"},
      {R"({"hasMore":1,"nextToken":"x"})", "hasMore"},
      {R"({"nextToken":42})", "nextToken"},
      {R"({"hasMore":true})", "nextToken"},
      {R"({"hasMore":true,"nextToken":""})", "nextToken"},
      {R"({"hasMore":true,"nextToken":null})", "nextToken"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.body);
    const auto p = parse_query_page(c.body);
    REQUIRE_FALSE(p.ok());
    CHECK(p.error().rfind(c.field, 0) == 0);
  }
}

TEST_CASE("query page: a field given twice counts as its last value, as in a parsed object") {
  const auto p = parse_query_page(
      R"({"readUserIds":[1,{"a":[2]}],"x":{"readUserIds":5},"readUserIds":["u1","u2"],)"
      R"("hasMore":"yes","hasMore":null,"sendStatus":7,"sendStatus":"SUCCESS"})");
  REQUIRE(p.ok());
  CHECK(p.value().read_user_ids == std::vector<std::string>{"u1", "u2"});
  CHECK_FALSE(p.value().has_more);
  CHECK(p.value().send_status == "SUCCESS");

  const auto q = parse_query_page(R"({"readUserIds":["u1"],"readUserIds":["u1",{}]})");
  REQUIRE_FALSE(q.ok());
  CHECK(q.error() == "readUserIds[1]: expected a string, got object");
  const auto r = parse_query_page(R"({"nextToken":"t","sendStatus":"S","sendStatus":[]})");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error() == "sendStatus: expected a string, got array");
}

TEST_CASE("query page: hostile bodies are errors, never exceptions") {
  const std::string deep = std::string(100'000, '[') + std::string(100'000, ']');
  const std::string invalid_utf8 = "{\"sendStatus\":\"SUCC\xff\xfe\"}";
  const std::vector<std::string> bodies = {
      "",
      "   ",
      "{",
      R"({"sendStatus":"SUCCESS","readUserIds":["u1")",
      R"({"sendStatus":"SUCCESS",})",
      "[]",
      R"([{"sendStatus":"SUCCESS"}])",
      "42",
      "1e400",
      R"({"hasMore":1e400})",
      "null",
      "true",
      R"("a string")",
      "{}",
      R"({"code":"system.error","message":"x"})",
      k_html_page,
      deep,
      invalid_utf8,
      std::string("{\"sendStatus\":\"SUCCESS\"}\0garbage", 32),
      std::string("{\"sendStatus\":\"SUCCESS\"}\0", 25),
      R"({"sendStatus":"SUCCESS"} trailing)",
  };
  for (const auto& b : bodies) {
    CAPTURE(b.substr(0, 60));
    const auto p = parse_query_page(b);
    CHECK_FALSE(p.ok());
  }
}

TEST_CASE("query page: a user id with a control character is a bad answer, not quoted") {
  for (const std::string id :
       {R"(a\nb)", R"(a\u0000c)", R"(tab\t)", R"(del\u007f)", R"(c1\u0085)", "c1\xC2\x9F"}) {
    CAPTURE(id);
    const std::string body = R"({"sendStatus":"SUCCESS","readUserIds":["user1",")" + id + R"("]})";
    const auto p = parse_query_page(body);
    REQUIRE_FALSE(p.ok());
    CHECK(p.error() == "readUserIds[1]: control character in a user id");
    const auto d = classify(answer(200, body));
    CHECK(d.action == Action::bad_response);
    CHECK(d.reason == FailureReason::bad_response);
    CHECK(d.message.find("control character") != std::string::npos);
  }
  // Other Unicode is a user id like any other.
  const auto ok = parse_query_page(R"({"readUserIds":["用户","\u00e9t\u00e9","a b"]})");
  REQUIRE(ok.ok());
  CHECK(ok.value().read_user_ids == std::vector<std::string>{"用户", "\xC3\xA9t\xC3\xA9", "a b"});
  CHECK(has_control_character(std::string("a\0b", 3)));
  CHECK(has_control_character("\x7f"));
  CHECK(has_control_character("\xC2\x80"));
  CHECK_FALSE(has_control_character("\xC2\xA0 \xC3\x80"));
}

TEST_CASE(
    "token answer: parses, clamps the lifetime, rejects bad shapes without quoting the token") {
  auto t = parse_token_answer(R"({"accessToken":"abc","expireIn":7200})");
  REQUIRE(t.ok());
  CHECK(t->access_token == "abc");
  CHECK(t->expire_in_seconds == 7200);

  t = parse_token_answer(R"({"accessToken":"abc","expireIn":99999999999999999999})");
  CHECK_FALSE(t.ok()); // a float after overflow: not an integer
  t = parse_token_answer(R"({"accessToken":"abc","expireIn":18446744073709551615})");
  REQUIRE(t.ok());
  CHECK(t->expire_in_seconds == k_max_token_lifetime_seconds);

  const std::string secret = "tok-SECRET";
  const std::vector<std::string> bad = {
      "",
      "not json",
      "[]",
      "null",
      R"({"expireIn":7200})",
      R"({"accessToken":"","expireIn":7200})",
      R"({"accessToken":null,"expireIn":7200})",
      R"({"accessToken":7,"expireIn":7200})",
      R"({"accessToken":"tok-SECRET"})",
      R"({"accessToken":"tok-SECRET","expireIn":0})",
      R"({"accessToken":"tok-SECRET","expireIn":-5})",
      R"({"accessToken":"tok-SECRET","expireIn":"7200"})",
      R"({"accessToken":"tok-SECRET","expireIn":7200.5})",
      R"({"accessToken":"tok-SECRET","expireIn":true})",
  };
  for (const auto& b : bad) {
    CAPTURE(b);
    const auto r = parse_token_answer(b);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().find(secret) == std::string::npos);
  }
}

TEST_CASE("error bodies: code, message and request id, capped and cleaned") {
  auto e = parse_error_body(error_body("bot.stopped", "The Group bot has been disabled"));
  REQUIRE(e);
  CHECK(e->code == "bot.stopped");
  CHECK(e->message == "The Group bot has been disabled");
  CHECK(e->request_id == "7F2A");

  e = parse_error_body(error_body("x", std::string(10'000, 'm') + "\n"));
  REQUIRE(e);
  CHECK(e->message.size() <= k_max_message_chars + 3);

  CHECK_FALSE(parse_error_body(R"({"message":"no code"})"));
  CHECK_FALSE(parse_error_body(R"({"code":""})"));
  CHECK_FALSE(parse_error_body(R"({"code":5})"));
  CHECK_FALSE(parse_error_body(R"(["code"])"));
  CHECK_FALSE(parse_error_body("<html>"));
  CHECK_FALSE(parse_error_body(""));
}

TEST_CASE("cap_text cuts at the limit without splitting UTF-8 and blanks control characters") {
  CHECK(cap_text("short") == "short");
  CHECK(cap_text("a\nb\tc\x1b") == "a b c ");
  CHECK(cap_text(std::string(300, 'x')) == std::string(200, 'x') + "...");
  // "é" is two bytes; a cut at byte 3 must not leave half of the second one.
  CHECK(cap_text("\xC3\xA9\xC3\xA9", 3) == "\xC3\xA9...");
}

// ---------------------------------------------------------------- taxonomy

TEST_CASE("taxonomy: transport failures") {
  auto d = classify(transport(http::Failure::timeout, "Operation timed out after 10000 ms"));
  CHECK(d.action == Action::transient);
  CHECK(d.reason == FailureReason::timeout);
  CHECK(d.message == "timeout");

  d = classify(transport(http::Failure::network, "Connection refused"));
  CHECK(d.action == Action::transient);
  CHECK(d.reason == FailureReason::network);
  CHECK(d.message == "connection refused");

  // The engine's own text may quote a URL or a proxy with credentials: the
  // decision says what happened in fixed words.
  d = classify(
      transport(http::Failure::network, "Could not resolve proxy: user:SECRET@proxy.example.com"));
  CHECK(d.message == "could not resolve host");
  d = classify(transport(http::Failure::network, "Send failure to https://gw/?sig=SECRET"));
  CHECK(d.message == "network error");
  d = classify_token(transport(http::Failure::network, "URLs with user information are not "
                                                       "supported"));
  CHECK(d.message == "URLs with user information are not supported");

  d = classify(transport(http::Failure::too_large, "body over limit"));
  CHECK(d.action == Action::bad_response);
  CHECK(d.reason == FailureReason::bad_response);
  CHECK(d.failed());
}

TEST_CASE("taxonomy: a body over 4 MiB is a bad response even if the engine let it through") {
  std::string body = R"({"sendStatus":"SUCCESS","readUserIds":[)";
  while (body.size() <= k_max_response_bytes) {
    body += "\"user-0123456789\",";
  }
  body += "\"last\"]}";
  Page page;
  const auto d = classify(answer(200, body), &page);
  CHECK(d.action == Action::bad_response);
  CHECK(d.reason == FailureReason::bad_response);
  CHECK(page.read_user_ids.empty());
}

TEST_CASE("taxonomy: 200 with a good page is ok and hands over the parsed page") {
  Page page;
  const auto d = classify(
      answer(200, R"({"sendStatus":"SUCCESS","readUserIds":["u1","u2"],"hasMore":false})"), &page);
  CHECK(d.action == Action::ok);
  CHECK(d.reason == FailureReason::none);
  CHECK_FALSE(d.failed());
  CHECK(page.send_status == "SUCCESS");
  CHECK(page.read_user_ids == std::vector<std::string>{"u1", "u2"});

  CHECK(classify(answer(200, R"({"sendStatus":"RECALLED"})")).action == Action::ok);
}

TEST_CASE("taxonomy: a 200 that is not the documented JSON is a bad response") {
  const std::vector<std::string> bodies = {
      "",
      "{",
      R"({"sendStatus":"SUCCESS","readUserIds":["u1")",
      "[]",
      "42",
      "null",
      R"({"readUserIds":["u1",7]})",
      R"({"hasMore":true})",
      R"({"errcode":0,"errmsg":"ok"})",
      R"({"sendStatus":"SUCCESS","hasMore":1e400})",
  };
  for (const auto& b : bodies) {
    CAPTURE(b);
    Page page;
    page.send_status = "untouched";
    const auto d = classify(answer(200, b), &page);
    CHECK(d.action == Action::bad_response);
    CHECK(d.reason == FailureReason::bad_response);
    CHECK(page.send_status == "untouched");
  }
  const auto d = classify(answer(200, R"({"readUserIds":["u1",7]})"));
  CHECK(d.message.find("readUserIds[1]") != std::string::npos);
}

TEST_CASE("taxonomy: HTML instead of JSON is throttling, whatever the status") {
  for (int status : {200, 403, 500, 502, 503}) {
    CAPTURE(status);
    auto d = classify(answer(status, k_html_page, "text/html; charset=utf-8"));
    CHECK(d.action == Action::throttled);
    CHECK(d.reason == FailureReason::throttled);
    // Detected from the body alone too, after whitespace.
    d = classify(answer(status, std::string("\r\n  ") + k_html_page, "application/octet-stream"));
    CHECK(d.action == Action::throttled);
  }
  // A text/html answer whose body is not markup.
  CHECK(classify(answer(403, "Too many requests", "text/html")).action == Action::throttled);
  CHECK(classify_token(answer(200, k_html_page, "text/html")).action == Action::throttled);
}

TEST_CASE("taxonomy: 403 QPS codes and 429 are throttling") {
  for (const char* code :
       {"Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", "Forbidden.AccessDenied.QpsLimitForApi",
        "Forbidden.AccessDenied.QpsLimitForSuiteKeyAndApi",
        "Forbidden.AccessDenied.QpmLimitForAppkeyAndApi"}) {
    CAPTURE(code);
    const auto d = classify(answer(403, error_body(code)));
    CHECK(d.action == Action::throttled);
    CHECK(d.reason == FailureReason::throttled);
    CHECK(d.code == code);
    CHECK(classify_token(answer(403, error_body(code))).action == Action::throttled);
  }
  CHECK(classify(answer(429, "")).action == Action::throttled);
  CHECK(classify(answer(429, "slow down", "text/plain")).action == Action::throttled);
  CHECK(classify(answer(429, error_body("whatever"))).reason == FailureReason::throttled);
  CHECK(classify_token(answer(429, "")).action == Action::throttled);
}

TEST_CASE("taxonomy: ApiCountLimit is DingTalk's monthly quota, spent") {
  for (const char* code :
       {"Forbidden.AccessDenied.ApiCountLimitForOrg", "Forbidden.AccessDenied.ApiCountLimit"}) {
    CAPTURE(code);
    const auto d = classify(answer(403, error_body(code)));
    CHECK(d.action == Action::quota_exhausted);
    CHECK(d.reason == FailureReason::throttled);
    CHECK(d.code == code);
    // Token calls do not count against the quota: such an answer to one is throttling.
    CHECK(classify_token(answer(403, error_body(code))).action == Action::throttled);
  }
}

TEST_CASE("taxonomy: 403 with another code is a missing permission, not throttling") {
  for (const char* code : {"Forbidden.AccessDenied.AccessTokenPermissionDenied",
                           "Forbidden.AccessDenied.IpNotInWhiteList"}) {
    CAPTURE(code);
    const auto d = classify(answer(403, error_body(code, "no permission")));
    CHECK(d.action == Action::pause);
    CHECK(d.reason == FailureReason::auth);
    CHECK(d.code == code);
    CHECK(d.message == "no permission");
  }
}

TEST_CASE("taxonomy: 5xx and system.error are transient server failures") {
  for (int status : {500, 502, 503, 504}) {
    CAPTURE(status);
    for (const std::string& body :
         {error_body("system.error", "Unknown system error"), std::string(), std::string("oops")}) {
      const auto d = classify(answer(status, body, "text/plain"));
      CHECK(d.action == Action::transient);
      CHECK(d.reason == FailureReason::server);
    }
  }
  const auto d = classify(answer(400, error_body("system.error")));
  CHECK(d.action == Action::transient);
  CHECK(d.reason == FailureReason::server);
  CHECK(d.code == "system.error");
  CHECK(classify_token(answer(500, error_body("system.error"))).action == Action::transient);
}

TEST_CASE("taxonomy: processQueryKey.expireTime is 'not ready or expired', not a failure") {
  const auto d = classify(answer(400, error_body("processQueryKey.expireTime")));
  CHECK(d.action == Action::not_ready_or_expired);
  CHECK(d.reason == FailureReason::none);
  CHECK_FALSE(d.failed());
  CHECK(d.code == "processQueryKey.expireTime");
}

TEST_CASE("taxonomy: every invalid code stops the message with the code") {
  for (const auto& code : k_invalid_codes) {
    CAPTURE(code);
    const auto d = classify(answer(400, error_body(code, "Invalid")));
    CHECK(d.action == Action::stop_invalid);
    CHECK(d.reason == FailureReason::client);
    CHECK(d.code == code);
    CHECK(d.message == "Invalid");
  }
}

TEST_CASE("taxonomy: bot, template and permission codes pause the message") {
  for (const char* code : {"bot.stopped", "template.not.existed", "template.stopped"}) {
    CAPTURE(code);
    const auto d = classify(answer(400, error_body(code)));
    CHECK(d.action == Action::pause);
    CHECK(d.reason == FailureReason::client);
    CHECK(d.code == code);
  }
  for (const char* code : {"unauthorized", "auth.error"}) {
    CAPTURE(code);
    const auto d = classify(answer(400, error_body(code)));
    CHECK(d.action == Action::pause);
    CHECK(d.reason == FailureReason::auth);
  }
}

TEST_CASE("taxonomy: InvalidAuthentication asks for a new token, a missing header is our bug") {
  for (int status : {400, 401}) {
    const auto d = classify(answer(status, error_body("InvalidAuthentication", "token expired")));
    CHECK(d.action == Action::refresh_token);
    CHECK(d.reason == FailureReason::auth);
  }
  const auto d = classify(answer(400, error_body("AuthenticationFailed.MissingParameter")));
  CHECK(d.action == Action::client_bug);
  CHECK(d.reason == FailureReason::auth);
}

TEST_CASE("taxonomy: cursor.invalid restarts pagination, parameter codes are client bugs") {
  auto d = classify(answer(400, error_body("invalidParameter.cursor.invalid")));
  CHECK(d.action == Action::restart_pagination);
  CHECK(d.reason == FailureReason::client);
  for (const char* code : {"invalidParameter.param.invalid", "invalidParameter.pageSize.invalid",
                           "something.nobody.documented"}) {
    CAPTURE(code);
    d = classify(answer(400, error_body(code)));
    CHECK(d.action == Action::client_bug);
    CHECK(d.reason == FailureReason::client);
    CHECK(d.code == code);
  }
  d = classify(answer(404, error_body("Unknown.Path")));
  CHECK(d.action == Action::client_bug);
}

TEST_CASE("taxonomy: 4xx without a DingTalk error body and odd statuses are bad responses") {
  for (const auto& r : {answer(400, ""), answer(400, "Bad Request", "text/plain"),
                        answer(404, "[]"), answer(403, R"({"message":"no code"})"),
                        answer(400, "{"), answer(302, ""), answer(0, ""), answer(101, "")}) {
    CAPTURE(r.status);
    CAPTURE(r.body);
    const auto d = classify(r);
    CHECK(d.action == Action::bad_response);
    CHECK(d.reason == FailureReason::bad_response);
  }
}

TEST_CASE("taxonomy: DingTalk messages are capped, decisions never carry the token") {
  const auto d = classify(answer(400, error_body("bot.stopped", std::string(5'000, 'x'))));
  CHECK(d.message.size() <= k_max_message_chars + 3);
  // A token answer that fails to parse must not echo the token in the text.
  const auto t =
      classify_token(answer(200, json{{"accessToken", k_token}, {"expireIn", "soon"}}.dump()));
  CHECK(t.action == Action::bad_response);
  CHECK(t.message.find(k_token) == std::string::npos);
  CHECK(t.code.find(k_token) == std::string::npos);
}

TEST_CASE("taxonomy: DingTalk's text quoting a credential of the request is withheld") {
  // A token call's answer that echoes the appSecret.
  auto d = classify_token(answer(
      400, error_body("invalidClientIdOrSecret",
                      std::string("appkey dingappkey with secret ") + k_app_secret + " is wrong")));
  REQUIRE(d.action == Action::auth_failed);
  withhold_quoted_secrets(d, error_body("x", k_app_secret), {k_app_secret, ""});
  CHECK(d.action == Action::auth_failed);
  CHECK(d.code == "invalidClientIdOrSecret");
  CHECK(d.message == k_withheld);

  // Cut at the cap, the message would hold only the start of the secret:
  // the body still shows it whole.
  const std::string long_message = std::string(k_max_message_chars - 4, 'x') + k_token;
  const std::string body = error_body("invalidParameter.param.invalid", long_message);
  d = classify(answer(400, body));
  REQUIRE(d.action == Action::client_bug);
  CHECK(d.message.find("tok-") != std::string::npos); // the start of the token
  withhold_quoted_secrets(d, body, {k_token});
  CHECK(d.message == k_withheld);
  CHECK(d.code == "invalidParameter.param.invalid");

  // A code that quotes it, or that was cut, is withheld too.
  const std::string code_body = error_body(std::string("bad.") + k_token, "m");
  d = classify(answer(400, code_body));
  withhold_quoted_secrets(d, code_body, {k_token});
  CHECK(d.code == k_withheld);
  const std::string long_code = error_body(std::string(k_max_message_chars + 10, 'c'), "m");
  d = classify(answer(400, long_code));
  withhold_quoted_secrets(d, long_code, {k_token});
  CHECK(d.code == k_withheld);

  // Nothing quoted: nothing changes.
  const std::string plain = error_body("bot.stopped", "the bot is stopped");
  d = classify(answer(400, plain));
  withhold_quoted_secrets(d, plain, {k_token, k_app_secret});
  CHECK(d.code == "bot.stopped");
  CHECK(d.message == "the bot is stopped");
}

TEST_CASE("taxonomy: token calls") {
  Token token;
  auto d = classify_token(answer(200, R"({"accessToken":"abc","expireIn":7200})"), &token);
  CHECK(d.action == Action::ok);
  CHECK(token.access_token == "abc");
  CHECK(token.expire_in_seconds == 7200);

  for (const char* body : {"", "{}", R"({"accessToken":"abc"})", "[1]"}) {
    CAPTURE(body);
    d = classify_token(answer(200, body));
    CHECK(d.action == Action::bad_response);
    CHECK(d.reason == FailureReason::bad_response);
  }
  for (const char* code :
       {"invalidClientIdOrSecret", "invalidSuiteKey", "invalidSuiteTicket", "invalidAuthInfo",
        "InvalidAuthentication", "unauthorized", "AuthenticationFailed.MissingParameter",
        "Forbidden.AccessDenied.AccessTokenPermissionDenied"}) {
    CAPTURE(code);
    d = classify_token(answer(400, error_body(code)));
    CHECK(d.action == Action::auth_failed);
    CHECK(d.reason == FailureReason::auth);
    CHECK(d.code == code);
  }
  d = classify_token(answer(400, error_body("invalidParameter.param.invalid")));
  CHECK(d.action == Action::client_bug);
  CHECK(classify_token(transport(http::Failure::timeout)).reason == FailureReason::timeout);
  CHECK(classify_token(transport(http::Failure::too_large)).action == Action::bad_response);
}

TEST_CASE("failure reasons are exactly the metrics' label values") {
  std::vector<std::string> names;
  for (auto r : k_all_failure_reasons) {
    names.emplace_back(to_string(r));
  }
  CHECK(names == std::vector<std::string>{"throttled", "auth", "server", "network", "timeout",
                                          "bad_response", "client"});
  CHECK(std::string(to_string(Action::restart_pagination)) == "restart_pagination");
}

// ---------------------------------------------------------------- pagination

namespace {
Page page(std::vector<std::string> ids, std::string next = {}, std::string status = "SUCCESS") {
  Page p;
  p.send_status = std::move(status);
  p.read_user_ids = std::move(ids);
  p.has_more = !next.empty();
  p.next_token = std::move(next);
  return p;
}
} // namespace

TEST_CASE("page walk: one page gives its read set") {
  PageWalk walk;
  auto n = walk.start();
  REQUIRE(n.kind == Next::Kind::fetch);
  CHECK(n.token_ptr() == nullptr);
  n = walk.on_page(page({"u1", "u2"}));
  REQUIRE(n.kind == Next::Kind::done);
  CHECK(n.read_user_ids == std::vector<std::string>{"u1", "u2"});
  CHECK(n.send_status == "SUCCESS");
}

TEST_CASE("page walk: follows nextToken and returns the union in first-seen order") {
  PageWalk walk;
  auto n = walk.start();
  n = walk.on_page(page({"u3", "u1"}, "t1", "PROCESSING"));
  REQUIRE(n.kind == Next::Kind::fetch);
  REQUIRE(n.token_ptr() != nullptr);
  CHECK(*n.token_ptr() == "t1");
  CHECK(n.read_user_ids.empty()); // nothing from a partial walk
  n = walk.on_page(page({"u1", "u2"}, "t2", ""));
  REQUIRE(n.kind == Next::Kind::fetch);
  CHECK(n.next_token == std::optional<std::string>("t2"));
  n = walk.on_page(page({"u4", "u3"}, "", "SUCCESS"));
  REQUIRE(n.kind == Next::Kind::done);
  CHECK(n.read_user_ids == std::vector<std::string>{"u3", "u1", "u2", "u4"});
  CHECK(n.send_status == "SUCCESS");
  CHECK(walk.pages() == 0); // the walk is over; nothing is kept

  // The last non-empty sendStatus wins when later pages omit it.
  walk.start();
  walk.on_page(page({}, "a", "RECALLED"));
  n = walk.on_page(page({"u1"}, "", ""));
  REQUIRE(n.kind == Next::Kind::done);
  CHECK(n.send_status == "RECALLED");
}

TEST_CASE("page walk: a nextToken seen twice in one poll is a page loop") {
  PageWalk walk;
  walk.start();
  REQUIRE(walk.on_page(page({"u1"}, "t1")).kind == Next::Kind::fetch);
  REQUIRE(walk.on_page(page({"u2"}, "t2")).kind == Next::Kind::fetch);
  const auto n = walk.on_page(page({"u3"}, "t1"));
  CHECK(n.kind == Next::Kind::fail);
  CHECK(n.why.find("loop") != std::string::npos);
  CHECK(n.read_user_ids.empty());

  // The same token handed back at once is a loop too.
  walk.start();
  walk.on_page(page({}, "same"));
  CHECK(walk.on_page(page({}, "same")).kind == Next::Kind::fail);

  // A new poll may see the same tokens again.
  auto m = walk.start();
  m = walk.on_page(page({"u1"}, "t1"));
  CHECK(m.kind == Next::Kind::fetch);
}

TEST_CASE("page walk: more than max_pages pages fails, exactly max_pages is fine") {
  PageWalk small(3);
  small.start();
  CHECK(small.on_page(page({"a"}, "1")).kind == Next::Kind::fetch);
  CHECK(small.on_page(page({"b"}, "2")).kind == Next::Kind::fetch);
  CHECK(small.on_page(page({"c"})).kind == Next::Kind::done);

  small.start();
  small.on_page(page({"a"}, "1"));
  small.on_page(page({"b"}, "2"));
  const auto n = small.on_page(page({"c"}, "3"));
  CHECK(n.kind == Next::Kind::fail);
  CHECK(n.why.find("more than 3 pages") != std::string::npos);

  PageWalk walk; // the default: 1000 pages
  walk.start();
  Next last;
  for (int i = 1; i <= 1000; ++i) {
    last = walk.on_page(page({"u" + std::to_string(i % 7)}, "t" + std::to_string(i)));
    if (last.kind != Next::Kind::fetch) {
      break;
    }
  }
  CHECK(last.kind == Next::Kind::fail);
  CHECK(walk.pages() == 0);

  walk.start();
  for (int i = 1; i < 1000; ++i) {
    REQUIRE(walk.on_page(page({}, "t" + std::to_string(i))).kind == Next::Kind::fetch);
  }
  CHECK(walk.on_page(page({"u"})).kind == Next::Kind::done);
}

TEST_CASE("page walk: an invalid cursor restarts from the first page once per poll") {
  PageWalk walk;
  walk.start();
  walk.on_page(page({"u1"}, "t1"));
  auto n = walk.on_cursor_invalid();
  REQUIRE(n.kind == Next::Kind::fetch);
  CHECK(n.token_ptr() == nullptr);
  CHECK(walk.restarted());
  // The aborted walk's ids are not kept; the tokens may come again.
  n = walk.on_page(page({"u2"}, "t1"));
  REQUIRE(n.kind == Next::Kind::fetch);
  n = walk.on_page(page({"u3"}));
  REQUIRE(n.kind == Next::Kind::done);
  CHECK(n.read_user_ids == std::vector<std::string>{"u2", "u3"});

  walk.start();
  CHECK_FALSE(walk.restarted());
  walk.on_page(page({"u1"}, "t1"));
  REQUIRE(walk.on_cursor_invalid().kind == Next::Kind::fetch);
  walk.on_page(page({"u1"}, "t1"));
  n = walk.on_cursor_invalid();
  CHECK(n.kind == Next::Kind::fail);
  CHECK(n.read_user_ids.empty());
}

TEST_CASE("page walk: answers out of turn fail instead of producing a read set") {
  PageWalk walk;
  CHECK(walk.on_page(page({"u1"})).kind == Next::Kind::fail);
  CHECK(walk.on_cursor_invalid().kind == Next::Kind::fail);
  walk.start();
  REQUIRE(walk.on_page(page({"u1"})).kind == Next::Kind::done);
  CHECK(walk.on_page(page({"u2"})).kind == Next::Kind::fail);

  // has_more without a token (a Page built by hand) is refused.
  walk.start();
  Page p;
  p.has_more = true;
  CHECK(walk.on_page(p).kind == Next::Kind::fail);
}

// ---------------------------------------------------------------- tokens

namespace {
const TimePoint t0 = from_unix_ms(1'764'064'800'000);
Millis seconds(std::int64_t s) {
  return Millis{s * 1000};
}
} // namespace

TEST_CASE("token cache: refreshes at 90% of expireIn and stays usable until near expiry") {
  TokenCache cache(internal_cfg());
  CHECK_FALSE(cache.fixed());
  CHECK_FALSE(cache.token(t0));
  CHECK(cache.needs_refresh(t0));
  CHECK(cache.next_refresh_due() <= std::optional<TimePoint>(t0));

  REQUIRE(cache.begin_refresh());
  cache.on_refreshed("t1", 7200, t0);
  CHECK_FALSE(cache.refresh_in_flight());
  CHECK(cache.token(t0) == std::optional<std::string>("t1"));
  CHECK_FALSE(cache.needs_refresh(t0 + seconds(6479)));
  CHECK(cache.needs_refresh(t0 + seconds(6480)));
  CHECK(cache.next_refresh_due() == std::optional<TimePoint>(t0 + seconds(6480)));
  // Still handed out while the refresh runs, until 30 s before expiry.
  CHECK(cache.token(t0 + seconds(7169)) == std::optional<std::string>("t1"));
  CHECK_FALSE(cache.token(t0 + seconds(7170)));
  CHECK_FALSE(cache.token(t0 + seconds(9000)));

  // A short lifetime: refresh at 90 s, usable until 95 s.
  cache.on_refreshed("t2", 100, t0);
  CHECK(cache.needs_refresh(t0 + seconds(90)));
  CHECK_FALSE(cache.needs_refresh(t0 + seconds(89)));
  CHECK(cache.token(t0 + Millis{94'999}));
  CHECK_FALSE(cache.token(t0 + seconds(95)));
}

TEST_CASE("token cache: lifetimes are clamped") {
  TokenCache cache(internal_cfg());
  cache.on_refreshed("t", 0, t0);
  CHECK(cache.needs_refresh(t0 + Millis{900}));
  cache.on_refreshed("t", 10'000'000'000, t0);
  CHECK(cache.needs_refresh(t0 + seconds(k_max_token_lifetime_seconds)));
}

TEST_CASE("token cache: only one refresh is in flight") {
  TokenCache cache(internal_cfg());
  REQUIRE(cache.begin_refresh());
  CHECK(cache.refresh_in_flight());
  CHECK_FALSE(cache.begin_refresh());
  CHECK_FALSE(cache.needs_refresh(t0));
  CHECK_FALSE(cache.next_refresh_due());
  cache.on_refreshed("t1", 7200, t0);
  CHECK_FALSE(cache.refresh_in_flight());
  CHECK(cache.begin_refresh());
}

TEST_CASE("token cache: failed refreshes back off exponentially up to the cap, success resets") {
  TokenCache cache(internal_cfg());
  TimePoint now = t0;
  const std::vector<std::int64_t> expected_s = {1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300};
  for (std::size_t i = 0; i < expected_s.size(); ++i) {
    CAPTURE(i);
    REQUIRE(cache.needs_refresh(now));
    REQUIRE(cache.begin_refresh());
    cache.on_refresh_failed(now);
    CHECK(cache.consecutive_failures() == static_cast<int>(i + 1));
    CHECK(cache.next_refresh_allowed() == now + seconds(expected_s[i]));
    CHECK(cache.next_refresh_due() == std::optional<TimePoint>(now + seconds(expected_s[i])));
    CHECK_FALSE(cache.needs_refresh(now + seconds(expected_s[i]) - Millis{1}));
    now += seconds(expected_s[i]);
  }
  REQUIRE(cache.begin_refresh());
  cache.on_refreshed("t1", 7200, now);
  CHECK(cache.consecutive_failures() == 0);
  REQUIRE(cache.begin_refresh());
  cache.on_refresh_failed(now);
  CHECK(cache.next_refresh_allowed() == now + seconds(1));
}

TEST_CASE("token cache: a failed refresh keeps a token that is still usable") {
  TokenCache cache(internal_cfg());
  cache.on_refreshed("t1", 7200, t0);
  const TimePoint late = t0 + seconds(6500);
  REQUIRE(cache.needs_refresh(late));
  REQUIRE(cache.begin_refresh());
  cache.on_refresh_failed(late);
  CHECK(cache.token(late) == std::optional<std::string>("t1"));
  CHECK_FALSE(cache.needs_refresh(late));
  CHECK(cache.needs_refresh(late + seconds(1)));
}

TEST_CASE(
    "token cache: invalidate drops only the current token, so parallel failures refresh once") {
  TokenCache cache(internal_cfg());
  cache.on_refreshed("t1", 7200, t0);
  CHECK_FALSE(cache.invalidate("older"));
  CHECK(cache.token(t0) == std::optional<std::string>("t1"));

  CHECK(cache.invalidate("t1"));
  CHECK_FALSE(cache.token(t0));
  CHECK(cache.needs_refresh(t0));
  CHECK_FALSE(cache.invalidate("t1")); // a second failed call with the same token
  REQUIRE(cache.begin_refresh());
  CHECK_FALSE(cache.invalidate("t1"));
  cache.on_refreshed("t2", 7200, t0 + seconds(1));
  CHECK_FALSE(cache.invalidate("t1")); // late failure of a call made with t1
  CHECK(cache.token(t0 + seconds(1)) == std::optional<std::string>("t2"));
}

TEST_CASE("token cache: a fixed token is always usable and never refreshed") {
  TokenCache cache(fixed_cfg());
  CHECK(cache.fixed());
  CHECK(cache.token(t0) == std::optional<std::string>(k_token));
  CHECK(cache.token(t0 + seconds(365 * 86'400)) == std::optional<std::string>(k_token));
  CHECK_FALSE(cache.needs_refresh(t0));
  CHECK_FALSE(cache.next_refresh_due());
  CHECK_FALSE(cache.begin_refresh());
  CHECK_FALSE(cache.invalidate(k_token));
  CHECK(cache.token(t0) == std::optional<std::string>(k_token));
}

TEST_CASE("dingtalk: epoch_ms reads DingTalk's times, integers or strings of digits") {
  CHECK(epoch_ms(nlohmann::json(1'795'600'800'000)) == 1'795'600'800'000);
  CHECK(epoch_ms(nlohmann::json("1795600800000")) == 1'795'600'800'000);
  CHECK(epoch_ms(nlohmann::json(0)) == 0);
  CHECK(epoch_ms(nlohmann::json(-5)) == -5); // the caller decides
  for (const nlohmann::json& bad :
       {nlohmann::json(""), nlohmann::json("-5"), nlohmann::json("+5"), nlohmann::json("12a"),
        nlohmann::json(" 12"), nlohmann::json("99999999999999999999"), nlohmann::json(1.5),
        nlohmann::json(true), nlohmann::json(nullptr), nlohmann::json::array(),
        nlohmann::json::object()}) {
    CAPTURE(bad.dump());
    CHECK_FALSE(epoch_ms(bad).has_value());
  }
  CHECK(plausible_read_time_ms(1'420'070'400'000));
  CHECK(plausible_read_time_ms(7'258'118'400'000));
  CHECK_FALSE(plausible_read_time_ms(1'420'070'399'999));
  CHECK_FALSE(plausible_read_time_ms(7'258'118'400'001));
  CHECK_FALSE(plausible_read_time_ms(0));
}
