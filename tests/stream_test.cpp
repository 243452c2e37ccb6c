// The Stream mode's pure parts: the gateway call, frames and their answers
// (STREAM.md's examples as test vectors), the WebSocket handshake and
// framing, and the reconnect and keep-alive policy.
#include "fakes/ws_frame.hpp"
#include "readreceiptd/common/version.hpp"
#include "readreceiptd/stream/frames.hpp"
#include "readreceiptd/stream/handshake.hpp"
#include "readreceiptd/stream/policy.hpp"
#include "readreceiptd/stream/websocket.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <string>

using namespace rrd;
using namespace rrd::stream;
using nlohmann::json;

namespace {

constexpr const char* k_app_secret = "app-SECRET-value-0123456789";

config::DingTalk internal_cfg() {
  config::DingTalk c;
  c.endpoint = "http://127.0.0.1:8080";
  c.auth_kind = config::DingTalk::AuthKind::internal_app;
  c.internal_app = {"dingappkey", k_app_secret};
  c.request_timeout = Millis{7'000};
  return c;
}

http::Response answer(int status, std::string body, std::string content_type = "application/json") {
  http::Response r;
  r.status = status;
  r.body = std::move(body);
  r.headers = {{"content-type", std::move(content_type)}};
  return r;
}

// STREAM.md section 2's EVENT example, as DingTalk sends it.
constexpr const char* k_event_frame =
    R"({"specVersion": "1.0", "type": "EVENT",
 "headers": {"topic": "*", "messageId": "213d841d_972_1898bb26334_70a7",
             "contentType": "application/json", "time": "1683533823336",
             "eventType": "robot_msg_read", "eventId": "c7c7120f2c07419ebdba0318c8",
             "eventBornTime": "1683533823336", "eventCorpId": "ding9f50b15bxxxx16741",
             "eventUnifiedAppId": "bbb381b6-f01x-58daac"},
 "data": "{\"processQueryKey\":\"dsadfsafaewsrdefe\",\"userId\":\"manager\",\"unionId\":\"sdjkqwheda\",\"operatTime\":\"1654641965416\",\"robotCode\":\"dingnxkjdhasdw\",\"openConversationId\":\"cidajsdhqwiocid111\"}"})";

// A server's frame (unmasked): FIN and opcode as the first byte writes them.
std::string server_frame(unsigned char first_byte, std::string_view payload) {
  testing::ws::Frame f;
  f.fin = (first_byte & 0x80) != 0;
  f.opcode = static_cast<testing::ws::Opcode>(first_byte & 0x0F);
  f.payload = std::string(payload);
  return testing::ws::encode(f);
}

// The one client frame in `bytes`, which must be masked; sets its opcode.
std::string client_payload(std::string_view bytes, int& opcode, std::size_t& used) {
  testing::ws::FrameReader reader;
  reader.feed(bytes);
  const auto f = reader.next();
  REQUIRE(f);
  CHECK(f->masked);
  CHECK(testing::ws::violation(*f, /*from_client=*/true) == "");
  opcode = static_cast<int>(f->opcode);
  used = bytes.size() - reader.buffered();
  return f->payload;
}

} // namespace

TEST_CASE("stream gateway: the request names the app's credentials and subscribes to events") {
  const auto c = credentials(internal_cfg());
  REQUIRE(c);
  CHECK(c->client_id == "dingappkey");
  const http::Request r = build_gateway_request(internal_cfg(), *c);
  CHECK(r.method == "POST");
  CHECK(r.url == "http://127.0.0.1:8080/v1.0/gateway/connections/open");
  CHECK(r.hot);
  bool accept_json = false;
  for (const auto& [name, value] : r.headers) {
    accept_json = accept_json || (name == "Accept" && value == "application/json");
  }
  CHECK(accept_json); // without it DingTalk answers XML
  const json body = json::parse(r.body);
  CHECK(body["clientId"] == "dingappkey");
  CHECK(body["clientSecret"] == k_app_secret);
  CHECK(body["subscriptions"] == json::parse(R"([{"type":"EVENT","topic":"*"}])"));
  CHECK(body["ua"] == std::string("readreceiptd/") + k_version);

  config::DingTalk third = internal_cfg();
  third.auth_kind = config::DingTalk::AuthKind::third_party;
  third.third_party = {"suitekey", "suite-SECRET", "corp1", "ticket-SECRET"};
  CHECK(credentials(third)->client_id == "suitekey");
  CHECK(credentials(third)->client_secret == "suite-SECRET");

  config::DingTalk fixed = internal_cfg();
  fixed.auth_kind = config::DingTalk::AuthKind::fixed_token;
  CHECK_FALSE(credentials(fixed));
}

TEST_CASE("stream gateway: answers") {
  SUBCASE("a ticket, URL-encoded into the endpoint") {
    const auto a = classify_gateway(
        answer(200, R"({"endpoint":"wss://wss-open-connection.dingtalk.com:443/connect",)"
                    R"("ticket":"7724109a-+/="})"),
        false);
    REQUIRE(a.outcome == GatewayOutcome::ok);
    CHECK(a.ticket.url ==
          "wss://wss-open-connection.dingtalk.com:443/connect?ticket=7724109a-%2B%2F%3D");
    CHECK(a.ticket.ticket == "7724109a-+/=");
  }
  SUBCASE("an endpoint with a query of its own gets &ticket=") {
    const auto a = classify_gateway(
        answer(200, R"({"endpoint":"ws://127.0.0.1:9/c?x=1","ticket":"t"})"), true);
    REQUIRE(a.outcome == GatewayOutcome::ok);
    CHECK(a.ticket.url == "ws://127.0.0.1:9/c?x=1&ticket=t");
  }
  SUBCASE("ws:// only when allowed") {
    const auto a = classify_gateway(
        answer(200, R"({"endpoint":"ws://example.com/connect","ticket":"t"})"), false);
    CHECK(a.outcome == GatewayOutcome::transient);
    CHECK(a.message.find("ws://") != std::string::npos);
  }
  SUBCASE("empty or missing endpoint and ticket, other schemes, not JSON") {
    for (const char* body :
         {R"({"endpoint":"","ticket":"t"})", R"({"endpoint":"wss://h/c","ticket":""})",
          R"({"ticket":"t"})", R"({"endpoint":"wss://h/c"})",
          R"({"endpoint":"https://h/c","ticket":"t"})",
          R"({"endpoint":"wss://h/c#f","ticket":"t"})", R"({"endpoint":"wss:///c","ticket":"t"})",
          R"({"endpoint":7,"ticket":"t"})", "[]", "not json", ""}) {
      CAPTURE(body);
      const auto a = classify_gateway(answer(200, body), true);
      CHECK(a.outcome == GatewayOutcome::transient);
      CHECK_FALSE(a.message.empty());
      CHECK(a.message.find("\"t\"") == std::string::npos);
    }
  }
  SUBCASE("refused credentials, throttling, server errors, the network") {
    CHECK(classify_gateway(answer(400, R"({"code":"invalidClientIdOrSecret","message":"x"})"), true)
              .outcome == GatewayOutcome::credentials);
    CHECK(classify_gateway(answer(401, R"({"code":"Unauthorized","message":"x"})"), true).outcome ==
          GatewayOutcome::credentials);
    CHECK(classify_gateway(answer(403, R"({"code":"Forbidden.AccessDenied.QpsLimitForApi"})"), true)
              .outcome == GatewayOutcome::throttled);
    CHECK(classify_gateway(answer(429, ""), true).outcome == GatewayOutcome::throttled);
    CHECK(classify_gateway(answer(403, "<html>banned</html>", "text/html"), true).outcome ==
          GatewayOutcome::throttled);
    CHECK(classify_gateway(answer(503, R"({"code":"system.error"})"), true).outcome ==
          GatewayOutcome::transient);
    http::Response timeout;
    timeout.failure = http::Failure::timeout;
    CHECK(classify_gateway(timeout, true).outcome == GatewayOutcome::transient);
  }
}

TEST_CASE("stream frames: STREAM.md's event, read strictly") {
  const Frame f = parse_frame(k_event_frame);
  REQUIRE(f.kind == Frame::Kind::event);
  CHECK(f.message_id == "213d841d_972_1898bb26334_70a7");
  CHECK(f.event_type == "robot_msg_read");
  CHECK(f.event_id == "c7c7120f2c07419ebdba0318c8");
  CHECK(f.event_corp_id == "ding9f50b15bxxxx16741");
  const auto e = parse_read_event(f.data);
  REQUIRE(e);
  CHECK(e->process_query_key == "dsadfsafaewsrdefe");
  CHECK(e->user_id == std::optional<std::string>("manager"));
  CHECK(e->union_id == "sdjkqwheda");
  CHECK(e->read_at == std::optional<TimePoint>(from_unix_ms(1654641965416)));
  CHECK(e->robot_code == "dingnxkjdhasdw");
  CHECK(e->open_conversation_id == "cidajsdhqwiocid111");
}

TEST_CASE("stream frames: system frames and what is not a frame") {
  const Frame ping = parse_frame(
      R"({"specVersion":"1.0","type":"SYSTEM","headers":{"topic":"ping","messageId":"m1",)"
      R"("contentType":"application/json","time":"1"},"data":"{\"opaque\":\"a-b-c\"}"})");
  CHECK(ping.kind == Frame::Kind::ping);
  const json answer_json = json::parse(ping_answer(ping));
  CHECK(answer_json ==
        json::parse(R"({"code":200,"headers":{"contentType":"application/json",)"
                    R"("messageId":"m1"},"message":"OK","data":"{\"opaque\":\"a-b-c\"}"})"));
  // The opaque value, compared as a value, is the ping's.
  CHECK(json::parse(answer_json["data"].get<std::string>())["opaque"] == "a-b-c");

  const Frame disconnect =
      parse_frame(R"({"type":"SYSTEM","headers":{"topic":"disconnect","messageId":"m2"},)"
                  R"("data":"{\"reason\":\"connection is expired\"}"})");
  CHECK(disconnect.kind == Frame::Kind::disconnect);
  CHECK(disconnect_reason(disconnect) == "connection is expired");
  CHECK(disconnect_reason(parse_frame(
            R"({"type":"SYSTEM","headers":{"topic":"disconnect","messageId":"m"}})")) == "");

  CHECK(parse_frame(R"({"type":"SYSTEM","headers":{"topic":"KEEPALIVE","messageId":"m"}})").kind ==
        Frame::Kind::system_other);
  const Frame callback = parse_frame(
      R"({"type":"CALLBACK","headers":{"topic":"/v1.0/im/bot","messageId":"m9"},"data":"{}"})");
  CHECK(callback.kind == Frame::Kind::callback);
  CHECK(json::parse(callback_refusal(callback.message_id))["code"] == 404);
  CHECK(parse_frame(R"({"type":"NEW","headers":{"messageId":"m"}})").kind == Frame::Kind::other);

  for (const char* text :
       {"", "not json", "[]", "\"x\"", R"({"headers":{"messageId":"m"}})",
        R"({"type":1,"headers":{"messageId":"m"}})", R"({"type":"EVENT"})",
        R"({"type":"EVENT","headers":[]})", R"({"type":"EVENT","headers":{}})",
        R"({"type":"EVENT","headers":{"messageId":""}})",
        R"({"type":"EVENT","headers":{"messageId":7}})",
        R"({"type":"EVENT","headers":{"messageId":"m","time":1683533823336}})",
        R"({"type":"EVENT","headers":{"messageId":"m"},"data":{"processQueryKey":"k"}})"}) {
    CAPTURE(text);
    const Frame f = parse_frame(text);
    CHECK(f.kind == Frame::Kind::bad);
    CHECK_FALSE(f.why.empty());
  }
  CHECK(
      parse_frame(std::string_view("{\"type\":\"EVENT\",\"headers\":{\"messageId\":\"m\"}}\0x", 46))
          .kind == Frame::Kind::bad);
  const std::string long_id(k_max_field_bytes + 1, 'x');
  CHECK(parse_frame(R"({"type":"EVENT","headers":{"messageId":")" + long_id + R"("}})").kind ==
        Frame::Kind::bad);
}

TEST_CASE("stream frames: the acknowledgement of an event") {
  const json ack = json::parse(event_ack("213d841d_972_1898bb26334_70a7"));
  CHECK(
      ack ==
      json::parse(
          R"({"code": 200, "headers": {"contentType": "application/json", "messageId": "213d841d_972_1898bb26334_70a7"},
 "message": "OK", "data": "{\"status\":\"SUCCESS\",\"message\":\"\"}"})"));
  // A messageId with quotes or control characters stays a JSON string.
  CHECK(json::parse(event_ack("a\"b\n"))["headers"]["messageId"] == "a\"b\n");
}

TEST_CASE("stream frames: robot_msg_read data, every reading accepted, hostile ones refused") {
  SUBCASE("a reader outside the organisation has no userId") {
    const auto e =
        parse_read_event(R"({"processQueryKey":"k","unionId":"u","operatTime":"1654641965416"})");
    REQUIRE(e);
    CHECK_FALSE(e->user_id);
  }
  SUBCASE("operatTime as a number, or absent") {
    CHECK(parse_read_event(R"({"processQueryKey":"k","userId":"a","operatTime":1654641965416})")
              ->read_at == std::optional<TimePoint>(from_unix_ms(1654641965416)));
    CHECK_FALSE(parse_read_event(R"({"processQueryKey":"k","userId":"a"})")->read_at);
    CHECK(parse_read_event(R"({"processQueryKey":"k","userId":"a","robotCode":null})"));
  }
  SUBCASE("refused") {
    for (const char* data :
         {"", "x", "[]", R"({"userId":"a"})", R"({"processQueryKey":""})",
          R"({"processQueryKey":7})", R"({"processQueryKey":"k","userId":""})",
          R"({"processQueryKey":"k","userId":7})", R"({"processQueryKey":"k","userId":"a\nb"})",
          R"({"processQueryKey":"k\u0000"})",
          R"({"processQueryKey":"k","userId":"a","operatTime":"soon"})",
          R"({"processQueryKey":"k","userId":"a","operatTime":"-1654641965416"})",
          R"({"processQueryKey":"k","userId":"a","operatTime":"1654641965"})",
          R"({"processQueryKey":"k","userId":"a","operatTime":"99999999999999999999"})",
          R"({"processQueryKey":"k","userId":"a","operatTime":1.5})",
          R"({"processQueryKey":"k","userId":"a","unionId":7})"}) {
      CAPTURE(data);
      const auto e = parse_read_event(data);
      CHECK_FALSE(e);
      if (!e) {
        CHECK(e.error().find("\\n") == std::string::npos);
      }
    }
  }
  SUBCASE("a C1 control (U+0080..U+009F) in an id is refused, as in a polled answer") {
    const auto user = parse_read_event(R"({"processQueryKey":"k","userId":"a\u0085b"})");
    REQUIRE_FALSE(user);
    CHECK(user.error() == "`userId` holds a control character");
    const auto key = parse_read_event(R"({"processQueryKey":"k\u009f"})");
    REQUIRE_FALSE(key);
    CHECK(key.error() == "`processQueryKey` holds a control character");
    // The neighbours of the C1 range are ordinary characters.
    CHECK(parse_read_event(R"({"processQueryKey":"k\u00a0","userId":"\u007e\u00ff"})"));
  }
}

TEST_CASE("websocket handshake: RFC 6455's example key and the answer's checks") {
  CHECK(websocket_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  std::array<unsigned char, 16> nonce{};
  for (std::size_t i = 0; i < nonce.size(); ++i) {
    nonce[i] = static_cast<unsigned char>(i + 1);
  }
  CHECK(make_websocket_key(nonce) == "AQIDBAUGBwgJCgsMDQ4PEA==");

  std::string why;
  const auto t =
      parse_ws_url("wss://wss-open-connection.dingtalk.com:443/connect?ticket=a%2Bb", why);
  REQUIRE(t);
  CHECK(t->tls);
  CHECK(t->host == "wss-open-connection.dingtalk.com");
  CHECK(t->port == "443");
  CHECK(t->path == "/connect?ticket=a%2Bb");
  CHECK(t->http_url == "https://wss-open-connection.dingtalk.com:443/connect?ticket=a%2Bb");
  CHECK(
      upgrade_request(*t, "dGhlIHNhbXBsZSBub25jZQ==", "readreceiptd/1") ==
      "GET /connect?ticket=a%2Bb HTTP/1.1\r\nHost: wss-open-connection.dingtalk.com:443\r\n"
      "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
      "Sec-WebSocket-Version: 13\r\nUser-Agent: readreceiptd/1\r\n\r\n");
  CHECK(parse_ws_url("ws://127.0.0.1:9000", why)->path == "/");
  CHECK_FALSE(parse_ws_url("https://h/c", why));
  CHECK_FALSE(parse_ws_url("ws://h/c#x", why));
  CHECK_FALSE(parse_ws_url("ws://user@h/c", why));

  const std::string accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
  const std::string good = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Accept: " +
                           accept + "\r\n\r\n";
  SUBCASE("accepted, whole or byte by byte, with the first frame's bytes kept") {
    UpgradeParser whole(accept);
    CHECK(whole.feed(good + "\x81\x02hi") == UpgradeParser::State::accepted);
    CHECK(whole.take_leftover() == "\x81\x02hi");
    UpgradeParser split(accept);
    for (std::size_t i = 0; i + 1 < good.size(); ++i) {
      REQUIRE(split.feed(good.substr(i, 1)) == UpgradeParser::State::more);
    }
    CHECK(split.feed("\nX") == UpgradeParser::State::accepted);
    CHECK(split.take_leftover() == "X");
  }
  SUBCASE("header names and the Connection token are case-insensitive") {
    UpgradeParser p(accept);
    CHECK(p.feed("HTTP/1.1 101 OK\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\n"
                 "sec-websocket-accept: " +
                 accept + "\r\n\r\n") == UpgradeParser::State::accepted);
  }
  SUBCASE("refused with a status") {
    UpgradeParser p(accept);
    CHECK(p.feed("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n") ==
          UpgradeParser::State::refused);
    CHECK(p.status() == 401);
  }
  SUBCASE("every failed check") {
    for (const std::string& bad :
         {std::string("HTTP/1.1 200 OK\r\n\r\n"), std::string("garbage\r\n\r\n"),
          std::string("HTTP/1.0 101 x\r\nUpgrade: websocket\r\nConnection: "
                      "Upgrade\r\nSec-WebSocket-Accept: ") +
              accept + "\r\n\r\n",
          std::string("HTTP/1.1 101 x\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ") + accept +
              "\r\n\r\n",
          std::string("HTTP/1.1 101 x\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: ") + accept +
              "\r\n\r\n",
          std::string("HTTP/1.1 101 x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
          std::string("HTTP/1.1 101 x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"),
          good.substr(0, good.size() - 2) + "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
          good.substr(0, good.size() - 2) + "Sec-WebSocket-Protocol: chat\r\n\r\n",
          good.substr(0, good.size() - 2) + "Sec-WebSocket-Accept: " + accept + "\r\n\r\n",
          good.substr(0, good.size() - 2) + " folded\r\n\r\n"}) {
      CAPTURE(bad);
      UpgradeParser p(accept);
      CHECK(p.feed(bad) == UpgradeParser::State::invalid);
      CHECK_FALSE(p.error().empty());
    }
  }
  SUBCASE("a head too long, a close before it is whole") {
    UpgradeParser p(accept);
    CHECK(p.feed("HTTP/1.1 101 x\r\n" + std::string(k_max_upgrade_answer_bytes, 'a')) ==
          UpgradeParser::State::invalid);
    UpgradeParser q(accept);
    CHECK(q.feed("HTTP/1.1 101") == UpgradeParser::State::more);
    CHECK(q.end_of_input() == UpgradeParser::State::invalid);
  }
}

TEST_CASE("websocket framing: text, fragments, control frames in between, caps") {
  WebSocket ws(1024);
  SUBCASE("a text message") {
    REQUIRE(ws.receive(server_frame(0x81, "hello")));
    REQUIRE(ws.messages().size() == 1);
    CHECK(ws.messages()[0].type == WsMessage::Type::text);
    CHECK(ws.messages()[0].payload == "hello");
    CHECK(ws.frames_received() == 1);
  }
  SUBCASE("a fragmented message with a ping between its fragments, split at every byte") {
    const std::string bytes =
        server_frame(0x01, "Hel") + server_frame(0x89, "p!") + server_frame(0x80, "lo");
    for (const char c : bytes) {
      REQUIRE(ws.receive(std::string_view(&c, 1)));
    }
    REQUIRE(ws.messages().size() == 1);
    CHECK(ws.messages()[0].payload == "Hello");
    // The ping was answered with a masked pong carrying its payload.
    const std::string out = ws.take_output();
    int opcode = 0;
    std::size_t used = 0;
    CHECK(client_payload(out, opcode, used) == "p!");
    CHECK(opcode == 0xA);
    CHECK(used == out.size());
  }
  SUBCASE("what the client sends is masked") {
    REQUIRE(ws.queue_text(R"({"code":200})"));
    const std::string out = ws.take_output();
    int opcode = 0;
    std::size_t used = 0;
    CHECK(client_payload(out, opcode, used) == R"({"code":200})");
    CHECK(opcode == 0x1);
    REQUIRE(ws.queue_ping("k"));
    CHECK(client_payload(ws.take_output(), opcode, used) == "k");
    CHECK(opcode == 0x9);
  }
  SUBCASE("pongs and binary messages are handed over") {
    REQUIRE(ws.receive(server_frame(0x8A, "k") + server_frame(0x82, "\x01\x02")));
    REQUIRE(ws.messages().size() == 2);
    CHECK(ws.messages()[0].type == WsMessage::Type::pong);
    CHECK(ws.messages()[1].type == WsMessage::Type::binary);
  }
  SUBCASE("a message over the cap closes with 1009") {
    CHECK_FALSE(ws.receive(server_frame(0x81, std::string(1025, 'x'))));
    CHECK(ws.close_code_sent() == 1009);
    CHECK(ws.read_closed());
    CHECK(ws.messages().empty());
    CHECK_FALSE(ws.error().empty());
  }
  SUBCASE("a masked frame from the server is broken framing: 1002") {
    const std::string masked = std::string("\x81\x81\x00\x00\x00\x00", 6) + "x";
    CHECK_FALSE(ws.receive(masked));
    CHECK(ws.close_code_sent() == 1002);
  }
  SUBCASE("a reserved opcode, a continuation with nothing to continue: 1002") {
    CHECK_FALSE(ws.receive(server_frame(0x83, "x")));
    CHECK(ws.close_code_sent() == 1002);
    WebSocket other(1024);
    CHECK_FALSE(other.receive(server_frame(0x80, "x")));
    CHECK(other.close_code_sent() == 1002);
  }
  SUBCASE("invalid UTF-8 in a text message: 1007") {
    CHECK_FALSE(ws.receive(server_frame(0x81, "\xff\xfe")));
    CHECK(ws.close_code_sent() == 1007);
  }
  SUBCASE("the server's close is answered and ends reading") {
    REQUIRE(ws.receive(server_frame(0x88, std::string("\x03\xe8", 2) + "bye")));
    REQUIRE(ws.messages().size() == 1);
    CHECK(ws.messages()[0].type == WsMessage::Type::close);
    CHECK(ws.messages()[0].close_code == 1000);
    CHECK(ws.read_closed());
    CHECK(ws.close_sent());
    int opcode = 0;
    std::size_t used = 0;
    (void)client_payload(ws.take_output(), opcode, used);
    CHECK(opcode == 0x8);
    CHECK_FALSE(ws.queue_text("late"));
  }
}

TEST_CASE("stream policy: reconnect waits 1 s doubling to 60 s, with jitter") {
  CHECK(reconnect_delay(1, false, 0.5) == Millis{1'000});
  CHECK(reconnect_delay(2, false, 0.5) == Millis{2'000});
  CHECK(reconnect_delay(3, false, 0.5) == Millis{4'000});
  CHECK(reconnect_delay(6, false, 0.5) == Millis{32'000});
  CHECK(reconnect_delay(7, false, 0.5) == Millis{60'000});
  CHECK(reconnect_delay(1000, false, 0.5) == Millis{60'000});
  CHECK(reconnect_delay(1, false, 0.0) == Millis{800});
  CHECK(reconnect_delay(1, false, 0.999999) == Millis{1'200});
  CHECK(reconnect_delay(0, false, 0.5) == Millis{1'000});
  // Refused credentials: the slowest step at once.
  CHECK(reconnect_delay(1, true, 0.5) == Millis{60'000});
  // A connection that lasted a minute starts the count again.
  CHECK(failures_after_loss(5, Millis{60'000}) == 1);
  CHECK(failures_after_loss(5, Millis{59'999}) == 6);
  CHECK(failures_after_loss(0, Millis{10}) == 1);
}

TEST_CASE("stream policy: keep-alive pings a quiet connection and gives up without an answer") {
  const TimePoint t0 = from_unix_ms(1'764'064'800'000);
  using A = KeepAlive::Action;
  auto k = keep_alive(t0 + Millis{59'999}, t0, std::nullopt);
  CHECK(k.action == A::wait);
  CHECK(k.next == t0 + k_ping_after);
  k = keep_alive(t0 + k_ping_after, t0, std::nullopt);
  CHECK(k.action == A::send_ping);
  const TimePoint sent = t0 + k_ping_after;
  k = keep_alive(sent + Millis{4'999}, t0, sent);
  CHECK(k.action == A::wait);
  CHECK(k.next == sent + k_pong_timeout);
  CHECK(keep_alive(sent + k_pong_timeout, t0, sent).action == A::dead);
  // Any frame after the ping (the pong or another) keeps it alive.
  k = keep_alive(sent + Millis{10'000}, sent + Millis{1}, sent);
  CHECK(k.action == A::wait);
  CHECK(k.next == sent + Millis{1} + k_ping_after);
}
