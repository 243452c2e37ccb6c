// Tests of the fake DingTalk's Stream mode: the gateway call, tickets, the
// WebSocket handshake and framing (checked with frames written by hand),
// SYSTEM pings and disconnects, robot_msg_read pushes, acknowledgements and
// redelivery, and every fault switch. The daemon's Stream client is tested
// against this server, so it must speak the protocol as DingTalk does.
#include "fakes/fake_dingtalk.hpp"
#include "fakes/process.hpp"
#include "fakes/stream_protocol.hpp"
#include "fakes/ws_frame.hpp"
#include "fakes/ws_test_client.hpp"

#include <atomic>
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

using namespace rrd::testing;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

constexpr char k_key[] = "Kna29pdJznx1ghavbumkQKwDzgfxZLapw55G7x0Q=";
constexpr char k_cid[] = "cid6KeBBLo7EeiodoA==";
constexpr auto k_quiet = std::chrono::milliseconds(150); // "nothing more came"

// The fake's clock, moved by the test.
class ManualClock {
public:
  SteadyTime now() const { return SteadyTime(SteadyClock::duration(m_ticks.load())); }
  void advance(std::chrono::milliseconds d) {
    m_ticks += std::chrono::duration_cast<SteadyClock::duration>(d).count();
  }
  std::function<SteadyTime()> source() {
    return [this] { return now(); };
  }

private:
  std::atomic<SteadyClock::rep> m_ticks{SteadyClock::now().time_since_epoch().count()};
};

FakeDingTalkOptions stream_options(const FakeStreamOptions& stream) {
  FakeDingTalkOptions o;
  o.stream = stream;
  return o;
}

// A fake DingTalk in Stream mode on a manual clock, with one message.
struct StreamSetup {
  explicit StreamSetup(const FakeStreamOptions& options = {}) : fake(stream_options(options)) {
    fake.set_time_source(clock.source());
    FakeMessage m;
    m.open_conversation_id = k_cid;
    m.recipients = {"alice", "bob", "carol", "dave"};
    fake.add_message(k_key, m);
  }
  FakeStream& stream() { return fake.stream(); }
  std::unique_ptr<StreamTestClient> connect() {
    return std::make_unique<StreamTestClient>(fake.port(), FakeDingTalkOptions{}.app_key,
                                              FakeDingTalkOptions{}.app_secret);
  }
  // Moves the fake's clock and waits until the server has looked at it.
  void advance(std::chrono::milliseconds d) {
    clock.advance(d);
    REQUIRE(stream().settle());
  }
  bool wait_open(int n) {
    return wait_until([&] { return stream().open_connections() == n; }, 5s);
  }

  ManualClock clock; // first: the fake reads it until it is gone
  FakeDingTalk fake;
};

std::string percent_encode_all(const std::string& s) {
  static constexpr char k_hex[] = "0123456789ABCDEF";
  std::string out;
  for (const unsigned char c : s) {
    out += '%';
    out += k_hex[c >> 4];
    out += k_hex[c & 0xf];
  }
  return out;
}

int ws_port(StreamSetup& s) {
  return s.stream().port();
}

std::string ticket(StreamSetup& s) {
  const auto g = open_gateway(
      s.fake.port(), gateway_body(FakeDingTalkOptions{}.app_key, FakeDingTalkOptions{}.app_secret));
  REQUIRE(g.status == 200);
  return g.ticket();
}

} // namespace

// --- the frame helpers themselves ---

TEST_CASE("ws frames: the accept key of RFC 6455's example, and every length form") {
  CHECK(ws::accept_key(ws::k_sample_key) == ws::k_sample_accept);
  CHECK(ws::valid_key(ws::k_sample_key));
  CHECK_FALSE(ws::valid_key("dGhlIHNhbXBsZSBub25jZQ")); // no padding
  CHECK_FALSE(ws::valid_key("c2hvcnQ="));               // 5 bytes

  for (const std::size_t n : {0U, 1U, 125U, 126U, 65535U, 65536U, 200000U}) {
    CAPTURE(n);
    for (const bool mask : {false, true}) {
      for (const bool long_form : {false, true}) {
        ws::Frame f = ws::text_frame(std::string(n, 'a') + "z");
        if (mask) {
          f = ws::masked(f, {0x12, 0x34, 0x56, 0x78});
        }
        const std::string bytes = ws::encode(f, long_form);
        ws::FrameReader reader;
        // Fed a byte at a time at first, then the rest: a frame is whole or absent.
        for (std::size_t i = 0; i < std::min<std::size_t>(bytes.size() - 1, 20); ++i) {
          reader.feed(bytes.substr(i, 1));
          REQUIRE_FALSE(reader.next());
        }
        reader.feed(bytes.substr(std::min<std::size_t>(bytes.size() - 1, 20)));
        const auto back = reader.next();
        REQUIRE(back);
        CHECK(back->payload == f.payload);
        CHECK(back->masked == mask);
        CHECK(back->opcode == ws::Opcode::text);
        CHECK(reader.buffered() == 0);
      }
    }
  }
  // The header's forms, byte by byte (RFC 6455 section 5.2).
  CHECK(ws::encode(ws::text_frame("Hello")) == std::string("\x81\x05Hello"));
  CHECK(ws::encode(ws::masked(ws::text_frame("Hello"), {0x37, 0xfa, 0x21, 0x3d})) ==
        std::string("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11));
  CHECK(ws::encode(ws::text_frame(std::string(256, 'x'))).substr(0, 4) ==
        std::string("\x81\x7e\x01\x00", 4));

  ws::Frame control;
  control.opcode = ws::Opcode::ping;
  control.payload = std::string(126, 'p');
  CHECK(ws::violation(control, false) == "control frame payload over 125 bytes");
  control.payload = "p";
  control.fin = false;
  CHECK(ws::violation(control, false) == "fragmented control frame");
  CHECK(ws::violation(ws::text_frame("x"), true) == "unmasked frame from a client");
  CHECK(ws::violation(ws::masked(ws::text_frame("x"), {1, 2, 3, 4}), false) ==
        "masked frame from a server");
  ws::Frame rsv = ws::text_frame("x");
  rsv.rsv = 4;
  CHECK(ws::violation(rsv, false) == "reserved bits set without a negotiated extension");
  CHECK(ws::close_code(ws::close_frame(1009, "too big").payload) == 1009);
  CHECK_FALSE(ws::close_code(""));

  ws::FrameReader capped(10);
  capped.feed(ws::encode(ws::text_frame(std::string(11, 'a'))));
  CHECK_FALSE(capped.next());
  CHECK(capped.error().find("over the cap") != std::string::npos);
}

TEST_CASE("stream protocol: STREAM.md's frames and answers read and written") {
  const std::string example =
      R"({"specVersion": "1.0", "type": "EVENT",
 "headers": {"topic": "*", "messageId": "213d841d_972_1898bb26334_70a7",
             "contentType": "application/json", "time": "1683533823336",
             "eventType": "robot_msg_read", "eventId": "c7c7120f2c07419ebdba0318c8",
             "eventBornTime": "1683533823336", "eventCorpId": "ding9f50b15bxxxx16741",
             "eventUnifiedAppId": "bbb381b6-f01x-58daac"},
 "data": "{\"processQueryKey\":\"dsadfsafaewsrdefe\",\"userId\":\"manager\",\"unionId\":\"sdjkqwheda\",\"operatTime\":\"1654641965416\",\"robotCode\":\"dingnxkjdhasdw\",\"openConversationId\":\"cidajsdhqwiocid111\"}"})";
  const auto f = parse_stream_frame(example);
  REQUIRE(f);
  CHECK(f->type == "EVENT");
  CHECK(f->message_id() == "213d841d_972_1898bb26334_70a7");
  CHECK(f->header("eventType") == "robot_msg_read");
  CHECK(f->data_json()["operatTime"] == "1654641965416");
  CHECK(parse_stream_frame(to_json(*f))->headers == f->headers);
  // A header that is not a string, or data that is not a string: not a Stream frame.
  CHECK_FALSE(parse_stream_frame(R"({"type":"EVENT","headers":{"time":1},"data":"{}"})"));
  CHECK_FALSE(parse_stream_frame(R"({"type":"EVENT","headers":{},"data":{}})"));
  CHECK_FALSE(parse_stream_frame("not json"));

  const json ack = json::parse(event_ack("m-1"));
  CHECK(
      ack ==
      json::parse(
          R"({"code":200,"headers":{"contentType":"application/json","messageId":"m-1"},"message":"OK","data":"{\"message\":\"\",\"status\":\"SUCCESS\"}"})"));
  const auto a = parse_answer(event_ack("m-1"));
  REQUIRE(a);
  CHECK(a->well_formed);
  CHECK(a->status() == "SUCCESS");
  CHECK(parse_answer(event_ack("m-1", "LATER", 500))->status() == "LATER");
  // The Python SDK's way: data echoed without a status; still code 200.
  const auto echo =
      parse_answer(R"({"code":200,"headers":{"messageId":"m"},"message":"OK","data":"{\"x\":1}"})");
  REQUIRE(echo);
  CHECK(echo->code == 200);
  CHECK(echo->status().empty());
  CHECK_FALSE(echo->well_formed); // no contentType
  CHECK_FALSE(parse_answer(R"({"code":"200","headers":{"messageId":"m"}})"));
  CHECK_FALSE(parse_answer(R"({"code":200,"headers":{}})"));
}

// --- the gateway ---

TEST_CASE("fake stream: the gateway checks the call and answers JSON only when asked") {
  StreamSetup s;
  const FakeDingTalkOptions defaults;
  const int port = s.fake.port();
  const auto good = gateway_body(defaults.app_key, defaults.app_secret);

  const auto ok = open_gateway(port, good);
  CHECK(ok.status == 200);
  CHECK(ok.content_type.find("application/json") == 0);
  CHECK(ok.endpoint() == "ws://127.0.0.1:" + std::to_string(s.stream().port()) + "/connect");
  CHECK(ok.ticket().size() == 36);
  CHECK(ok.json.size() == 2);

  // Without Accept: application/json, DingTalk answers XML.
  const auto xml = open_gateway(port, good, false);
  CHECK(xml.status == 200);
  CHECK(xml.content_type.find("application/xml") == 0);
  CHECK(xml.json.is_null());
  CHECK(xml.body.find("<ticket>") != std::string::npos);
  const auto xml_error = open_gateway(port, gateway_body(defaults.app_key, "wrong"), false);
  CHECK(xml_error.status == 401);
  CHECK(xml_error.body.find("<code>authFailed</code>") != std::string::npos);

  // Bad credentials: 401 authFailed, DingTalk's error body.
  const auto bad = open_gateway(port, gateway_body(defaults.app_key, "wrong-secret"));
  CHECK(bad.status == 401);
  CHECK(bad.code() == "authFailed");
  CHECK(bad.json["requestid"].get<std::string>().size() == 36);
  CHECK(bad.json.contains("message"));
  CHECK(open_gateway(port, gateway_body("unknown-app", defaults.app_secret)).status == 401);
  // A third-party app's suite key and secret open connections too.
  CHECK(open_gateway(port, gateway_body(defaults.suite_key, defaults.suite_secret)).status == 200);

  const auto refused = [&](json body) {
    const auto a = open_gateway(port, body);
    CAPTURE(body.dump());
    CHECK(a.status == 400);
    CHECK(a.code() == "invalidParameter.param.invalid");
    return a.json.value("message", "");
  };
  json b = good;
  b.erase("clientId");
  CHECK(refused(b).find("clientId") != std::string::npos);
  b = good;
  b["clientSecret"] = "";
  CHECK(refused(b).find("clientSecret") != std::string::npos);
  b = good;
  b["subscriptions"] = json::array();
  CHECK(refused(b).find("subscriptions") != std::string::npos);
  b = good;
  b.erase("subscriptions");
  refused(b);
  b = good;
  b["subscriptions"] = json::array({{{"type", "EVENT"}, {"topic", "robot_msg_read"}}});
  CHECK(refused(b).find("topic") != std::string::npos);
  b = good;
  b["subscriptions"] =
      json::array({{{"type", "CALLBACK"}, {"topic", "/v1.0/im/bot/messages/get"}}});
  CHECK(refused(b).find("EVENT") != std::string::npos);
  b = good;
  b["subscriptions"] = json::array({{{"type", "EVENT"}}});
  refused(b);
  b = good;
  b["ua"] = 5;
  CHECK(refused(b).find("ua") != std::string::npos);
  refused(json::array());
  CHECK(open_gateway(port, "{not json", "application/json", true).status == 400);
  const auto form = open_gateway(port, good.dump(), "application/x-www-form-urlencoded", true);
  CHECK(form.status == 400);
  CHECK(form.json["message"].get<std::string>().find("Content-Type") != std::string::npos);

  // SYSTEM ping/disconnect subscriptions (the Go SDK's), CALLBACKs, localIp: accepted.
  b = good;
  b["subscriptions"] =
      json::array({{{"type", "SYSTEM"}, {"topic", "ping"}},
                   {{"type", "SYSTEM"}, {"topic", "disconnect"}},
                   {{"type", "EVENT"}, {"topic", "*"}},
                   {{"type", "CALLBACK"}, {"topic", "/v1.0/im/bot/messages/get"}}});
  b["localIp"] = "10.0.0.1";
  b.erase("ua");
  CHECK(open_gateway(port, b).status == 200);

  // Every call is counted and recorded, and shares the fake's call times.
  const int calls = s.fake.gateway_calls();
  CHECK(calls == 18);
  const auto records = s.fake.gateway_requests();
  REQUIRE(records.size() == static_cast<std::size_t>(calls));
  CHECK(records[0].status == 200);
  CHECK(records[0].ticket == ok.ticket());
  CHECK(records[0].accept == "application/json");
  CHECK(records[2].code == "authFailed");
  CHECK(s.fake.request_times().size() == static_cast<std::size_t>(calls));
  CHECK(s.stream().stats().tickets_issued == 4);
}

TEST_CASE("fake stream: without Stream mode there is no gateway") {
  FakeDingTalk fake;
  CHECK_FALSE(fake.stream_enabled());
  CHECK_THROWS_AS(fake.stream(), std::logic_error);
  const FakeDingTalkOptions defaults;
  CHECK(open_gateway(fake.port(), gateway_body(defaults.app_key, defaults.app_secret)).status ==
        404);
  fake.add_message(k_key, {});
  fake.read(k_key, "alice"); // no push, no harm
  CHECK(fake.read_list(k_key) == std::vector<std::string>{"alice"});
}

TEST_CASE("fake stream: gateway faults are injected like any endpoint's") {
  StreamSetup s;
  const FakeDingTalkOptions defaults;
  s.fake.inject(Fault::server_error(), 1, Endpoint::gateway);
  s.fake.inject(Fault::of(FaultKind::connection_reset), 1, Endpoint::gateway);
  const auto body = gateway_body(defaults.app_key, defaults.app_secret);
  const auto first = open_gateway(s.fake.port(), body);
  CHECK(first.status == 500);
  CHECK(first.code() == "system.error");
  CHECK(open_gateway(s.fake.port(), body).status == 0);
  CHECK(open_gateway(s.fake.port(), body).status == 200);
  const auto records = s.fake.gateway_requests();
  REQUIRE(records.size() == 3);
  CHECK(records[0].code == "system.error");
  CHECK(records[1].status == 0);
  // The query endpoint's faults are not the gateway's.
  s.fake.inject(Fault::server_error(), 1, Endpoint::query);
  CHECK(open_gateway(s.fake.port(), body).status == 200);
}

// --- tickets and the handshake ---

TEST_CASE("fake stream: a ticket opens one connection, within 90 s on the fake's clock") {
  StreamSetup s;
  const std::string t = ticket(s);
  {
    WsTestClient c(ws_port(s));
    const auto h = c.upgrade("/connect?ticket=" + t);
    CHECK(h.status == 101);
    CHECK(h.header("Upgrade") == "websocket");
    CHECK(h.header("Connection") == "Upgrade");
    CHECK(h.header("Sec-WebSocket-Accept") == ws::k_sample_accept);
    CHECK(h.header("Sec-WebSocket-Extensions").empty());
  }
  {
    WsTestClient again(ws_port(s));
    const auto h = again.upgrade("/connect?ticket=" + t);
    CHECK(h.status == 401);
    CHECK(json::parse(h.body)["code"] == "invalidTicket");
    CHECK(again.wait_closed());
  }
  // URL-encoded (every byte, here) or not, the same ticket.
  {
    WsTestClient c(ws_port(s));
    CHECK(c.upgrade("/connect?ticket=" + percent_encode_all(ticket(s))).status == 101);
  }
  {
    WsTestClient c(ws_port(s));
    CHECK(c.upgrade("/connect?x=1&ticket=" + ticket(s) + "&y=2").status == 101);
  }
  // Expiry: valid just before 90 s, not at 90 s.
  const std::string late = ticket(s);
  const std::string early = ticket(s);
  s.clock.advance(89'999ms);
  {
    WsTestClient c(ws_port(s));
    CHECK(c.upgrade("/connect?ticket=" + early).status == 101);
  }
  s.clock.advance(1ms);
  {
    WsTestClient c(ws_port(s));
    CHECK(c.upgrade("/connect?ticket=" + late).status == 401);
  }
  {
    WsTestClient c(ws_port(s));
    CHECK(c.upgrade("/connect?ticket=made-up").status == 401);
  }
  CHECK(s.stream().stats().connections_opened == 4);
  CHECK(s.stream().stats().handshakes_refused == 3);
}

TEST_CASE("fake stream: the upgrade handshake is checked as a server must") {
  StreamSetup s;
  const int port = ws_port(s);
  struct Case {
    const char* what;
    std::string request;
    int status;
  };
  const auto request = [&](const std::string& target, std::vector<std::string> extra = {},
                           std::vector<std::string> omit = {},
                           const std::string& key = ws::k_sample_key) {
    return WsTestClient::upgrade_request(target, port, key, extra, omit);
  };
  const std::string good_target = "/connect?ticket=";
  std::vector<Case> cases = {
      {"no Upgrade", request(good_target + ticket(s), {}, {"upgrade"}), 400},
      {"Upgrade: h2c", request(good_target + ticket(s), {"Upgrade: h2c"}, {"upgrade"}), 400},
      {"no Connection: upgrade",
       request(good_target + ticket(s), {"Connection: keep-alive"}, {"connection"}), 400},
      {"version 8",
       request(good_target + ticket(s), {"Sec-WebSocket-Version: 8"}, {"sec-websocket-version"}),
       400},
      {"no key", request(good_target + ticket(s), {}, {"sec-websocket-key"}), 400},
      {"a key of 5 bytes", request(good_target + ticket(s), {}, {}, "c2hvcnQ="), 400},
      {"no Host", request(good_target + ticket(s), {}, {"host"}), 400},
      {"another path", request("/other?ticket=" + ticket(s)), 404},
      {"no ticket", request("/connect"), 400},
      {"an empty ticket", request("/connect?ticket="), 400},
  };
  std::string post = request(good_target + ticket(s));
  post.replace(0, 3, "POST");
  cases.push_back({"POST", post, 400});
  std::string http10 = request(good_target + ticket(s));
  http10.replace(http10.find("HTTP/1.1"), 8, "HTTP/1.0");
  cases.push_back({"HTTP/1.0", http10, 400});
  cases.push_back({"garbage", "NOT HTTP AT ALL\r\n\r\n", 400});
  for (const auto& c : cases) {
    CAPTURE(c.what);
    WsTestClient client(port);
    const auto h = client.handshake(c.request);
    CHECK(h.status == c.status);
    CHECK(json::parse(h.body).contains("message"));
    if (std::string(c.what) == "version 8") {
      CHECK(h.header("Sec-WebSocket-Version") == "13");
    }
    CHECK(client.wait_closed());
  }
  // Header names and tokens in any case, Connection as a list, extensions not taken.
  WsTestClient client(port);
  const auto h = client.handshake(
      request(good_target + ticket(s),
              {"connection: keep-alive, UPGRADE", "upgrade: WebSocket",
               "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"},
              {"connection", "upgrade"}));
  CHECK(h.status == 101);
  CHECK(h.header("Sec-WebSocket-Extensions").empty());
  CHECK(s.stream().stats().connections_opened == 1);
}

TEST_CASE("fake stream: frames the client sends with the handshake are read") {
  StreamSetup s;
  WsTestClient c(ws_port(s));
  ws::Frame ping;
  ping.opcode = ws::Opcode::ping;
  ping.payload = "early";
  const auto h =
      c.handshake(WsTestClient::upgrade_request("/connect?ticket=" + ticket(s), ws_port(s)) +
                  ws::encode(ws::masked(ping, {1, 1, 1, 1})));
  REQUIRE(h.status == 101);
  const auto pong = c.read_frame();
  REQUIRE(pong);
  CHECK(pong->opcode == ws::Opcode::pong);
  CHECK(pong->payload == "early");
}

TEST_CASE("fake stream: an unmasked client frame closes the connection with 1002") {
  StreamSetup s;
  auto client = s.connect();
  client->ws().send_frame(ws::text_frame(event_ack("x")));
  const auto f = client->ws().read_frame();
  REQUIRE(f);
  CHECK(f->opcode == ws::Opcode::close);
  CHECK(ws::close_code(f->payload) == ws::k_close_protocol_error);
  CHECK(client->ws().violations().empty());
  CHECK(client->ws().wait_closed());
  REQUIRE(wait_until([&] { return s.stream().open_connections() == 0; }, 5s));
  CHECK(s.stream().stats().protocol_errors == 1);
  CHECK(s.stream().connections()[0].closed_by == "protocol_error");
}

TEST_CASE("fake stream: WebSocket pings get pongs, a close gets a close") {
  StreamSetup s;
  auto client = s.connect();
  client->ws().send_ping("are you there");
  const auto pong = client->ws().read_frame();
  REQUIRE(pong);
  CHECK(pong->opcode == ws::Opcode::pong);
  CHECK(pong->payload == "are you there");
  CHECK_FALSE(pong->masked);
  CHECK(s.stream().stats().ws_pings_received == 1);

  client->ws().send_close(ws::k_close_normal);
  const auto close = client->ws().read_frame();
  REQUIRE(close);
  CHECK(close->opcode == ws::Opcode::close);
  CHECK(ws::close_code(close->payload) == ws::k_close_normal);
  CHECK(client->ws().wait_closed());
  REQUIRE(wait_until([&] { return s.stream().open_connections() == 0; }, 5s));
  const auto record = s.stream().connections().at(0);
  CHECK(record.closed_by == "client");
  CHECK(record.close_code_received == 1000);
  CHECK(record.ws_pings == 1);
  CHECK(record.closed_at);
}

TEST_CASE("fake stream: at most max_connections per app") {
  FakeStreamOptions o;
  o.max_connections = 2;
  StreamSetup s(o);
  auto a = s.connect();
  auto b = s.connect();
  CHECK_THROWS_WITH_AS(s.connect(), doctest::Contains("400"), std::runtime_error);
  REQUIRE(s.wait_open(2));
  CHECK(s.stream().stats().max_connections_open == 2);
  // The suite is another app.
  const FakeDingTalkOptions defaults;
  StreamTestClient suite(s.fake.port(), defaults.suite_key, defaults.suite_secret);
  CHECK(s.wait_open(3));
}

// --- SYSTEM frames ---

TEST_CASE("fake stream: SYSTEM pings every ping_interval, and their answers checked") {
  FakeStreamOptions o;
  o.ping_interval = 30s;
  StreamSetup s(o);
  auto client = s.connect();
  client->auto_answer_pings = false;
  REQUIRE(s.wait_open(1));
  s.advance(29'999ms);
  CHECK_FALSE(client->next(k_quiet));
  s.advance(1ms);
  const auto ping = client->next();
  REQUIRE(ping);
  CHECK(ping->type == "SYSTEM");
  CHECK(ping->spec_version == "1.0");
  CHECK(ping->topic() == "ping");
  CHECK(ping->header("contentType") == "application/json");
  CHECK_FALSE(ping->message_id().empty());
  const json data = ping->data_json();
  REQUIRE(data.is_object());
  REQUIRE(data["opaque"].is_string());
  // Answered with the same value, re-serialised (spaces, key order), as SDKs do.
  client->ws().send_text(
      answer_json(200, ping->message_id(), "{ \"opaque\" : " + data["opaque"].dump() + " }"));
  REQUIRE(wait_until([&] { return s.stream().stats().pings_answered_ok == 1; }, 5s));

  s.advance(30s);
  const auto second = client->next();
  REQUIRE(second);
  CHECK(second->data_json()["opaque"] != data["opaque"]);
  client->ws().send_text(answer_json(200, second->message_id(), R"({"opaque":"not it"})"));
  REQUIRE(wait_until([&] { return s.stream().stats().pings_answered_wrong == 1; }, 5s));

  s.stream().ping_now();
  const auto third = client->next();
  REQUIRE(third);
  client->ws().send_text(answer_json(500, third->message_id(), third->data));
  REQUIRE(wait_until([&] { return s.stream().stats().pings_answered_wrong == 2; }, 5s));

  const auto pings = s.stream().pings();
  REQUIRE(pings.size() == 3);
  CHECK(pings[0].answered);
  CHECK(pings[0].answer_ok);
  CHECK(pings[0].opaque == data["opaque"]);
  CHECK(pings[0].connection == 1);
  CHECK_FALSE(pings[1].answer_ok);
  CHECK_FALSE(pings[2].answer_ok);
  CHECK(s.stream().stats().pings_sent == 3);
}

TEST_CASE("fake stream: a SYSTEM disconnect, then nothing more, then the close") {
  FakeStreamOptions o;
  o.disconnect_after = 60s;
  StreamSetup s(o);
  auto old_client = s.connect();
  REQUIRE(s.wait_open(1));
  s.advance(60s);
  const auto disconnect = old_client->next();
  REQUIRE(disconnect);
  CHECK(disconnect->type == "SYSTEM");
  CHECK(disconnect->topic() == "disconnect");
  CHECK(disconnect->data_json() == json{{"reason", "connection is expired"}});
  CHECK(s.stream().stats().disconnects_sent == 1);

  // Until it closes, the old connection gets nothing; a read waits for a new one.
  s.fake.read(k_key, "alice");
  s.advance(1s);
  CHECK_FALSE(old_client->next(k_quiet));
  auto new_client = s.connect();
  const auto event = new_client->next_event();
  REQUIRE(event);
  new_client->ack(*event);
  s.advance(8'999ms);
  CHECK_FALSE(old_client->ws().closed());
  s.advance(1ms);
  const auto close = old_client->ws().read_frame();
  REQUIRE(close);
  CHECK(close->opcode == ws::Opcode::close);
  CHECK(ws::close_code(close->payload) == ws::k_close_normal);
  old_client->ws().send_close();
  CHECK(old_client->ws().wait_closed());
  REQUIRE(wait_until([&] { return s.stream().open_connections() == 1; }, 5s));
  CHECK(s.stream().connections()[0].closed_by == "disconnect");
  CHECK(s.stream().stats().acknowledged == 1);

  // disconnect_now(), with disconnect_after off.
  s.stream().configure([](FakeStreamOptions& opts) { opts.disconnect_after = 0ms; });
  s.stream().disconnect_now();
  const auto now = new_client->next();
  REQUIRE(now);
  CHECK(now->topic() == "disconnect");
}

// --- events ---

TEST_CASE("fake stream: a read is pushed as robot_msg_read with DingTalk's headers and data") {
  StreamSetup s;
  auto client = s.connect();
  REQUIRE(s.wait_open(1));
  const SteadyTime read_at = s.clock.now();
  s.fake.read(k_key, "alice");
  const auto event = client->next_event();
  REQUIRE(event);
  CHECK(event->spec_version == "1.0");
  CHECK(event->type == "EVENT");
  for (const char* h : {"topic", "messageId", "contentType", "time", "eventType", "eventId",
                        "eventBornTime", "eventCorpId", "eventUnifiedAppId"}) {
    CAPTURE(h);
    CHECK_FALSE(event->header(h).empty());
  }
  CHECK(event->headers.size() == 9);
  CHECK(event->topic() == "*");
  CHECK(event->header("contentType") == "application/json");
  CHECK(event->header("eventType") == "robot_msg_read");
  CHECK(event->header("eventCorpId") == FakeDingTalkOptions{}.auth_corp_id);
  const std::string operat_time = std::to_string(s.stream().epoch_ms(read_at));
  CHECK(event->header("eventBornTime") == operat_time);
  const json data = event->data_json();
  CHECK(data == json{{"processQueryKey", k_key},
                     {"userId", "alice"},
                     {"unionId", FakeDingTalk::union_id_of("alice")},
                     {"operatTime", operat_time},
                     {"robotCode", FakeDingTalkOptions{}.robot_code},
                     {"openConversationId", k_cid}});
  // The epoch is today's.
  const auto wall = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
  CHECK(std::abs(std::stoll(operat_time) - wall) < 60'000);

  client->ack(*event);
  REQUIRE(wait_until([&] { return s.stream().stats().acknowledged == 1; }, 5s));
  const auto record = s.stream().event(event->header("eventId"));
  REQUIRE(record);
  CHECK(record->state == StreamEventState::acknowledged);
  CHECK(record->ack_well_formed);
  CHECK(record->deliveries.size() == 1);
  CHECK(record->deliveries[0].message_id == event->message_id());
  CHECK(record->deliveries[0].connection == 1);
  CHECK(record->ack_latency == 0ms); // the manual clock did not move
  CHECK(s.stream().stats().pushed == 1);

  // A read already made is not pushed again; a scheduled one at its time.
  s.fake.read(k_key, "alice");
  const SteadyTime later = s.clock.now() + 5s;
  s.fake.schedule_read(k_key, "bob", later);
  s.advance(4'999ms);
  CHECK_FALSE(client->next_event(k_quiet));
  s.advance(2s);
  const auto bob = client->next_event();
  REQUIRE(bob);
  CHECK(bob->data_json()["userId"] == "bob");
  CHECK(bob->data_json()["operatTime"] == std::to_string(s.stream().epoch_ms(later)));
  client->ack(*bob);
  // The query API lists the same reads.
  CHECK(s.fake.read_list(k_key) == std::vector<std::string>{"alice", "bob"});

  // A reader outside the organisation: no userId, not in the read list.
  s.fake.read_by_outsider(k_key, "outsider-union-id");
  const auto outsider = client->next_event();
  REQUIRE(outsider);
  CHECK_FALSE(outsider->data_json().contains("userId"));
  CHECK(outsider->data_json()["unionId"] == "outsider-union-id");
  CHECK(s.fake.read_list(k_key).size() == 2);

  // A message sent without openConversationId; any event through push().
  s.fake.add_message("no-cid", {});
  s.fake.read("no-cid", "carol");
  const auto no_cid = client->next_event();
  REQUIRE(no_cid);
  CHECK_FALSE(no_cid->data_json().contains("openConversationId"));
  StreamEventSpec other;
  other.event_type = "chat_update_title";
  other.data = {{"title", "x"}};
  other.corp_id = "dingothercorp";
  const std::string id = s.stream().push(other);
  const auto pushed = client->next_event();
  REQUIRE(pushed);
  CHECK(pushed->header("eventId") == id);
  CHECK(pushed->header("eventType") == "chat_update_title");
  CHECK(pushed->header("eventCorpId") == "dingothercorp");
  CHECK(s.stream().stats().events == 5);
}

TEST_CASE("fake stream: a read of every kind is pushed, naming only its processQueryKey") {
  // The event does not say the message's kind: a group's names its
  // conversation (when the send named one), an oto message's none.
  StreamSetup s;
  FakeMessage group;
  group.kind = MessageKind::group;
  group.open_conversation_id = "cidgroup==";
  s.fake.add_message("group-key", group);
  FakeMessage template_group;
  template_group.kind = MessageKind::group;
  template_group.token = "template-token";
  s.fake.add_message("template-key", template_group);
  FakeMessage oto;
  oto.kind = MessageKind::oto;
  oto.recipients = {"alice", "bob"};
  s.fake.add_message("oto+key/=", oto);
  auto client = s.connect();
  REQUIRE(s.wait_open(1));

  auto pushed = [&](const std::string& key, const std::string& user, SteadyTime at) {
    CAPTURE(key);
    const auto event = client->next_event();
    REQUIRE(event);
    CHECK(event->header("eventType") == "robot_msg_read");
    client->ack(*event);
    json data = event->data_json();
    CHECK(data["processQueryKey"] == key);
    CHECK(data["userId"] == user);
    CHECK(data["unionId"] == FakeDingTalk::union_id_of(user));
    CHECK(data["operatTime"] == std::to_string(s.fake.epoch_ms(at)));
    CHECK(data["robotCode"] == FakeDingTalkOptions{}.robot_code);
    return data;
  };
  const SteadyTime t = s.clock.now();
  s.fake.read("group-key", "anyone");
  CHECK(pushed("group-key", "anyone", t)["openConversationId"] == "cidgroup==");
  s.fake.read("template-key", "carol");
  CHECK_FALSE(pushed("template-key", "carol", t).contains("openConversationId"));
  const SteadyTime earlier = t - 3s;
  s.fake.read("oto+key/=", "bob", earlier); // its push carries the read's own time
  const json data = pushed("oto+key/=", "bob", earlier);
  CHECK_FALSE(data.contains("openConversationId"));
  CHECK(data.size() == 5);
  s.fake.schedule_read("oto+key/=", "alice", t + 2s);
  s.advance(2s);
  pushed("oto+key/=", "alice", t + 2s);
  CHECK(s.fake.read_list("oto+key/=") == std::vector<std::string>{"bob", "alice"});
  CHECK(s.stream().stats().pushed == 4);
}

TEST_CASE("fake stream: unacknowledged events come again with their eventId, a bounded number "
          "of times") {
  FakeStreamOptions o;
  o.ack_timeout = 20s;
  o.max_redeliveries = 2;
  StreamSetup s(o);
  auto client = s.connect();
  REQUIRE(s.wait_open(1));
  s.fake.read(k_key, "alice");
  const auto first = client->next_event();
  REQUIRE(first);
  s.advance(19'999ms);
  CHECK_FALSE(client->next_event(k_quiet));
  s.advance(1ms);
  const auto second = client->next_event();
  REQUIRE(second);
  CHECK(second->header("eventId") == first->header("eventId"));
  CHECK(second->message_id() != first->message_id());
  CHECK(second->data == first->data);
  // LATER (the Go SDK's code 500) is no acknowledgement.
  client->ack(*second, "LATER", 500);
  REQUIRE(wait_until([&] { return s.stream().stats().refusals == 1; }, 5s));
  s.advance(20s);
  const auto third = client->next_event();
  REQUIRE(third);
  CHECK(third->header("eventId") == first->header("eventId"));
  client->ack(*third, "LATER", 200); // code 200 but status LATER: not either
  REQUIRE(wait_until([&] { return s.stream().stats().refusals == 2; }, 5s));
  s.advance(20s);
  CHECK_FALSE(client->next_event(k_quiet));
  const auto stats = s.stream().stats();
  CHECK(stats.pushed == 1);
  CHECK(stats.redelivered == 2);
  CHECK(stats.lost_unacknowledged == 1);
  CHECK(stats.acknowledged == 0);
  const auto record = s.stream().events().at(0);
  CHECK(record.state == StreamEventState::lost);
  CHECK(record.lost_reason == "unacknowledged");
  CHECK(record.deliveries.size() == 3);
  CHECK(record.redeliveries == 2);
  CHECK(record.refusals == 2);

  // An acknowledgement of an earlier delivery acknowledges the event.
  s.fake.read(k_key, "bob");
  const auto bob = client->next_event();
  REQUIRE(bob);
  s.advance(20s);
  REQUIRE(client->next_event());
  client->ack(*bob);
  REQUIRE(wait_until([&] { return s.stream().stats().acknowledged == 1; }, 5s));
  CHECK(s.stream().events().at(1).ack_latency == 20s);
}

TEST_CASE("fake stream: redelivery can keep the messageId") {
  FakeStreamOptions o;
  o.ack_timeout = 1s;
  o.redelivery_keeps_message_id = true;
  StreamSetup s(o);
  auto client = s.connect();
  REQUIRE(s.wait_open(1));
  s.fake.read(k_key, "alice");
  const auto first = client->next_event();
  REQUIRE(first);
  s.advance(1s);
  const auto second = client->next_event();
  REQUIRE(second);
  CHECK(second->message_id() == first->message_id());
  client->ack(*second);
  REQUIRE(wait_until([&] { return s.stream().stats().acknowledged == 1; }, 5s));
}

TEST_CASE("fake stream: events wait for a connection for offline_retention, then are lost") {
  FakeStreamOptions o;
  o.offline_retention = 60s;
  StreamSetup s(o);
  s.fake.read(k_key, "alice");
  s.advance(59s);
  auto client = s.connect();
  const auto kept = client->next_event();
  REQUIRE(kept);
  CHECK(kept->data_json()["userId"] == "alice");
  client->ack(*kept);
  client->ws().send_close();
  CHECK(client->ws().wait_closed());
  REQUIRE(s.wait_open(0));

  s.fake.read(k_key, "bob");
  s.advance(60s);
  auto late = s.connect();
  CHECK_FALSE(late->next_event(k_quiet));
  const auto stats = s.stream().stats();
  CHECK(stats.lost_offline == 1);
  CHECK(stats.acknowledged == 1);
  CHECK(s.stream().events().at(1).lost_reason == "offline");
  // The query API still has both reads: polls reconcile.
  CHECK(s.fake.read_list(k_key) == std::vector<std::string>{"alice", "bob"});
}

TEST_CASE("fake stream: each event goes to one open connection, round robin or at random") {
  FakeStreamOptions o;
  o.distribution = StreamDistribution::round_robin;
  StreamSetup s(o);
  std::vector<std::unique_ptr<StreamTestClient>> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(s.connect());
  }
  REQUIRE(s.wait_open(3));
  for (int i = 0; i < 6; ++i) {
    s.fake.add_message("m" + std::to_string(i), {});
    s.fake.read("m" + std::to_string(i), "alice");
  }
  REQUIRE(wait_until([&] { return s.stream().stats().pushed == 6; }, 5s));
  std::set<std::string> seen;
  for (auto& c : clients) {
    for (int i = 0; i < 2; ++i) {
      const auto e = c->next_event();
      REQUIRE(e);
      CHECK(seen.insert(e->header("eventId")).second);
      c->ack(*e);
    }
    CHECK_FALSE(c->next_event(k_quiet));
  }
  REQUIRE(wait_until([&] { return s.stream().stats().acknowledged == 6; }, 5s));

  // At random: each event once, spread over the connections.
  s.stream().configure(
      [](FakeStreamOptions& opts) { opts.distribution = StreamDistribution::random; });
  for (int i = 0; i < 30; ++i) {
    s.fake.add_message("r" + std::to_string(i), {});
    s.fake.read("r" + std::to_string(i), "alice");
  }
  REQUIRE(wait_until([&] { return s.stream().stats().pushed == 36; }, 5s));
  REQUIRE(s.stream().settle());
  int used = 0;
  int total = 0;
  for (auto& c : clients) {
    int got = 0;
    while (auto e = c->next_event(k_quiet)) {
      CHECK(seen.insert(e->header("eventId")).second);
      c->ack(*e);
      ++got;
    }
    used += got > 0 ? 1 : 0;
    total += got;
  }
  CHECK(total == 30);
  CHECK(used >= 2);
  // An answer on another connection than the event's is no acknowledgement.
  s.fake.add_message("x", {});
  s.fake.read("x", "alice");
  std::optional<StreamFrame> e;
  std::size_t holder = 0;
  REQUIRE(wait_until(
      [&] {
        for (std::size_t i = 0; i < clients.size() && !e; ++i) {
          e = clients[i]->next_event(10ms);
          holder = i;
        }
        return e.has_value();
      },
      5s));
  clients[(holder + 1) % clients.size()]->ack(*e);
  REQUIRE(wait_until([&] { return s.stream().stats().misrouted_answers == 1; }, 5s));
  CHECK(s.stream().stats().acknowledged == 36);
}

// --- faults ---

TEST_CASE("fake stream: connections dropped by reset, FIN or close frame, now or by age") {
  FakeStreamOptions o;
  o.ack_timeout = 5s;
  StreamSetup s(o);
  {
    auto c = s.connect();
    REQUIRE(s.wait_open(1));
    s.fake.read(k_key, "alice"); // in flight when the connection goes
    REQUIRE(c->next_event());
    s.stream().drop_connections(StreamDrop::reset);
    CHECK(c->ws().wait_closed());
    CHECK(c->ws().reset());
    CHECK_FALSE(c->ws().close_code_received());
  }
  REQUIRE(s.wait_open(0));
  CHECK(s.stream().connections()[0].closed_by == "drop");
  {
    // The unacknowledged event comes again on the next connection.
    auto c = s.connect();
    s.advance(5s);
    const auto again = c->next_event();
    REQUIRE(again);
    CHECK(again->data_json()["userId"] == "alice");
    c->ack(*again);
    s.stream().drop_connections(StreamDrop::fin);
    CHECK(c->ws().wait_closed());
    CHECK_FALSE(c->ws().close_code_received());
  }
  {
    auto c = s.connect();
    REQUIRE(s.wait_open(1));
    s.stream().drop_connections(StreamDrop::close_frame);
    const auto close = c->ws().read_frame();
    REQUIRE(close);
    CHECK(close->opcode == ws::Opcode::close);
    CHECK(ws::close_code(close->payload) == ws::k_close_going_away);
    c->ws().send_close();
    CHECK(c->ws().wait_closed());
  }
  s.stream().configure([](FakeStreamOptions& opts) {
    opts.drop_after = 30s;
    opts.drop_style = StreamDrop::reset;
  });
  {
    auto c = s.connect();
    REQUIRE(s.wait_open(1));
    s.advance(29s);
    CHECK_FALSE(c->ws().read_frame(k_quiet));
    CHECK_FALSE(c->ws().closed());
    s.advance(1s);
    CHECK(c->ws().wait_closed());
  }
  CHECK(s.stream().stats().drops == 4);
  CHECK(s.stream().stats().acknowledged == 1);
}

TEST_CASE("fake stream: lost pushes are never sent, and the query still lists the read") {
  FakeStreamOptions o;
  o.push_loss = 1.0;
  StreamSetup s(o);
  auto client = s.connect();
  REQUIRE(s.wait_open(1));
  s.fake.read(k_key, "alice");
  s.advance(1s);
  CHECK_FALSE(client->next_event(k_quiet));
  CHECK(s.stream().stats().lost_dropped == 1);
  CHECK(s.stream().events().at(0).lost_reason == "dropped");
  CHECK(s.fake.read_list(k_key) == std::vector<std::string>{"alice"});
  // A share: seeded, and some of each.
  s.stream().configure([](FakeStreamOptions& opts) { opts.push_loss = 0.5; });
  for (int i = 0; i < 40; ++i) {
    s.fake.read(k_key, "user" + std::to_string(i));
  }
  REQUIRE(s.stream().settle());
  const auto stats = s.stream().stats();
  CHECK(stats.lost_dropped > 1);
  CHECK(stats.lost_dropped < 41);
  CHECK(stats.pushed + stats.lost_dropped == 41);
}

TEST_CASE("fake stream: tickets and handshakes refused on request") {
  StreamSetup s;
  s.stream().refuse_handshakes(HandshakeRefusal::invalid_ticket, 1);
  s.stream().refuse_handshakes(HandshakeRefusal::bad_request, 1);
  {
    WsTestClient c(ws_port(s));
    CHECK(c.upgrade("/connect?ticket=" + ticket(s)).status == 401);
  }
  {
    WsTestClient c(ws_port(s));
    CHECK(c.upgrade("/connect?ticket=" + ticket(s)).status == 400);
  }
  {
    WsTestClient c(ws_port(s));
    CHECK(c.upgrade("/connect?ticket=" + ticket(s)).status == 101);
  }
  s.stream().configure([](FakeStreamOptions& opts) { opts.refuse_tickets = 1.0; });
  {
    WsTestClient c(ws_port(s));
    CHECK(c.upgrade("/connect?ticket=" + ticket(s)).status == 401);
  }
  s.stream().configure([](FakeStreamOptions& opts) {
    opts.refuse_tickets = 0;
    opts.refuse_handshakes = 1.0;
  });
  {
    WsTestClient c(ws_port(s));
    CHECK(c.upgrade("/connect?ticket=" + ticket(s)).status == 400);
  }
  CHECK(s.stream().stats().handshakes_refused == 4);
  CHECK(s.stream().stats().connections_opened == 1);
}

TEST_CASE("fake stream: garbage frames of every kind, now or now and then") {
  StreamSetup s;
  auto client = s.connect();
  REQUIRE(s.wait_open(1));
  auto& ws_client = client->ws();
  s.stream().send_garbage(StreamGarbage::not_json);
  auto f = ws_client.read_frame();
  REQUIRE(f);
  CHECK(f->opcode == ws::Opcode::text);
  CHECK_FALSE(json::accept(f->payload));

  s.stream().send_garbage(StreamGarbage::binary);
  f = ws_client.read_frame();
  REQUIRE(f);
  CHECK(f->opcode == ws::Opcode::binary);

  s.stream().send_garbage(StreamGarbage::no_message_id);
  f = ws_client.read_frame();
  REQUIRE(f);
  auto frame = parse_stream_frame(f->payload);
  REQUIRE(frame);
  CHECK(frame->type == "EVENT");
  CHECK(frame->message_id().empty());

  s.stream().send_garbage(StreamGarbage::unknown_system_topic);
  f = ws_client.read_frame();
  REQUIRE(f);
  frame = parse_stream_frame(f->payload);
  REQUIRE(frame);
  CHECK(frame->type == "SYSTEM");
  CHECK(frame->topic() != "ping");
  CHECK(frame->topic() != "disconnect");

  s.stream().send_garbage(StreamGarbage::oversized);
  f = ws_client.read_frame();
  REQUIRE(f);
  CHECK(f->opcode == ws::Opcode::text);
  CHECK(f->payload.size() > 1024 * 1024);
  CHECK(parse_stream_frame(f->payload));
  CHECK(ws_client.violations().empty());
  CHECK(s.stream().stats().garbage_sent == 5);

  // garbage = 1: a garbage frame before every frame; the events still come.
  s.stream().configure([](FakeStreamOptions& opts) { opts.garbage = 1.0; });
  s.fake.read(k_key, "alice");
  const auto event = client->next_event();
  REQUIRE(event);
  CHECK(event->data_json()["userId"] == "alice");
  CHECK(s.stream().stats().garbage_sent == 6);
}

TEST_CASE("fake stream: acknowledged events duplicated on request") {
  FakeStreamOptions o;
  o.duplicate_acked = 1.0;
  StreamSetup s(o);
  auto client = s.connect();
  REQUIRE(s.wait_open(1));
  s.fake.read(k_key, "alice");
  const auto first = client->next_event();
  REQUIRE(first);
  client->ack(*first);
  const auto duplicate = client->next_event();
  REQUIRE(duplicate);
  CHECK(duplicate->header("eventId") == first->header("eventId"));
  CHECK(duplicate->message_id() != first->message_id());
  client->ack(*duplicate);
  REQUIRE(s.stream().settle());
  CHECK_FALSE(client->next_event(k_quiet)); // once, and its ack ends it
  const auto stats = s.stream().stats();
  CHECK(stats.duplicated == 1);
  CHECK(stats.acknowledged == 1);
  const auto record = s.stream().events().at(0);
  REQUIRE(record.deliveries.size() == 2);
  CHECK(record.deliveries[1].duplicate);
  CHECK(record.redeliveries == 0);
}

TEST_CASE("fake stream: a stalled connection answers nothing, its events come again elsewhere") {
  FakeStreamOptions o;
  o.ack_timeout = 10s;
  StreamSetup s(o);
  auto stalled = s.connect();
  REQUIRE(s.wait_open(1));
  s.stream().stall_connections();
  REQUIRE(s.stream().settle());
  stalled->ws().send_ping("hello?");
  CHECK_FALSE(stalled->ws().read_frame(300ms));
  s.fake.read(k_key, "alice"); // sent to the stalled connection: it never leaves
  REQUIRE(s.stream().settle());
  CHECK_FALSE(stalled->next_event(k_quiet));
  CHECK(s.stream().stats().pushed == 1);
  // The client gives up on it, as a client whose pings go unanswered must,
  // and the server notices.
  auto fresh = s.connect();
  stalled->ws().send_close();
  stalled.reset();
  REQUIRE(wait_until([&] { return s.stream().connections()[0].closed_at.has_value(); }, 5s));
  CHECK(s.stream().connections()[0].closed_by == "stall");
  CHECK(s.stream().connections()[0].stalled);
  s.advance(10s);
  const auto event = fresh->next_event();
  REQUIRE(event);
  CHECK(event->data_json()["userId"] == "alice");
  fresh->ack(*event);
  REQUIRE(wait_until([&] { return s.stream().stats().acknowledged == 1; }, 5s));
  CHECK(s.stream().stats().stalls == 1);
  CHECK(s.stream().stats().redelivered == 1);
}

TEST_CASE("fake stream: client frames that are not answers are counted, the connection stays") {
  StreamSetup s;
  auto client = s.connect();
  REQUIRE(s.wait_open(1));
  ws::Frame binary;
  binary.opcode = ws::Opcode::binary;
  binary.payload = "\x01\x02";
  client->ws().send_frame(ws::masked(binary, {5, 6, 7, 8}));
  client->ws().send_text("not an answer");
  client->ws().send_text(event_ack("no-such-message-id"));
  REQUIRE(wait_until(
      [&] {
        const auto st = s.stream().stats();
        return st.bad_frames == 2 && st.unmatched_answers == 1;
      },
      5s));
  s.fake.read(k_key, "alice");
  const auto event = client->next_event();
  REQUIRE(event);
  // A malformed acknowledgement is still one (code 200), and counted as malformed.
  client->ws().send_text(
      json{{"code", 200}, {"headers", {{"messageId", event->message_id()}}}}.dump());
  REQUIRE(wait_until([&] { return s.stream().stats().acknowledged == 1; }, 5s));
  CHECK(s.stream().stats().malformed_acks == 1);
  CHECK_FALSE(s.stream().events().at(0).ack_well_formed);
  CHECK(s.stream().open_connections() == 1);
  const auto record = s.stream().connections().at(0);
  CHECK(record.bad_frames == 2);
  CHECK(record.answers == 3);
}

TEST_CASE("fake stream: the log says what happened, when asked") {
  FakeStreamOptions o;
  o.keep_log = true;
  StreamSetup s(o);
  auto client = s.connect();
  REQUIRE(s.wait_open(1));
  s.fake.read(k_key, "alice");
  const auto event = client->next_event();
  REQUIRE(event);
  client->ack(*event);
  REQUIRE(wait_until([&] { return s.stream().stats().acknowledged == 1; }, 5s));
  const auto log = s.stream().take_log();
  const auto has = [&](const std::string& text) {
    return std::any_of(log.begin(), log.end(),
                       [&](const auto& line) { return line.find(text) != std::string::npos; });
  };
  CHECK(has("connection 1 opened by " + FakeDingTalkOptions{}.app_key));
  CHECK(has("pushed event " + event->header("eventId") + " robot_msg_read (alice read " +
            std::string(k_key) + ") on connection 1"));
  CHECK(has("acknowledged event " + event->header("eventId")));
  CHECK(s.stream().take_log().empty());
  for (const auto& line : log) {
    CHECK(line.find(FakeDingTalkOptions{}.app_secret) == std::string::npos);
  }
}

TEST_CASE("fake stream: stops promptly with connections open") {
  auto s = std::make_unique<StreamSetup>();
  auto client = s->connect();
  auto stalled = s->connect();
  REQUIRE(s->wait_open(2));
  const auto started = SteadyClock::now();
  s->fake.stop();
  CHECK(SteadyClock::now() - started < 2s);
  CHECK(client->ws().wait_closed());
  const auto records = s->stream().connections();
  CHECK(records[0].closed_by == "stopped");
  CHECK(s->stream().open_connections() == 0);
  s.reset();
}
