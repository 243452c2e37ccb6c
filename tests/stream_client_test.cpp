// The Stream client on a fake clock and a fake engine: the gateway call, the
// handshake, pings, events acknowledged only after their commit, the move to
// a new connection, keep-alive, reconnects with backoff, bad frames.
#include "fakes/fake_engine.hpp"
#include "fakes/ws_frame.hpp"
#include "readreceiptd/stream/client.hpp"

#include <doctest/doctest.h>
#include <map>
#include <nlohmann/json.hpp>

using namespace rrd;
using namespace rrd::stream;
using nlohmann::json;
using rrd::testing::FakeEngine;
using rrd::testing::FakeRawStream;
namespace ws = rrd::testing::ws;

namespace {

constexpr const char* k_app_secret = "app-SECRET-value-0123456789";

config::DingTalk internal_cfg() {
  config::DingTalk c;
  c.endpoint = "http://127.0.0.1:8080";
  c.auth_kind = config::DingTalk::AuthKind::internal_app;
  c.internal_app = {"dingappkey", k_app_secret};
  c.request_timeout = Millis{7'000};
  c.requests_per_second = 1000;
  return c;
}

struct Counts final : Observer {
  std::map<EventResult, int> events;
  std::map<DisconnectReason, int> disconnects;
  int opened = 0;
  int gateway_calls = 0;
  std::vector<bool> changes;
  void gateway_finished(Millis, dingtalk::FailureReason) override { ++gateway_calls; }
  void connection_opened() override { ++opened; }
  void connected_changed(bool up) override { changes.push_back(up); }
  void disconnected(DisconnectReason r) override { ++disconnects[r]; }
  void event(EventResult r) override { ++events[r]; }
};

// Remembers the reads pushed to it; the test commits them when it likes.
struct Sink final : ReadSink {
  std::vector<ReadEvent> reads;
  std::vector<std::function<void(bool)>> waiting;
  Outcome next = Outcome::pending;
  Outcome push_read(const ReadEvent& e, std::function<void(bool)> committed) override {
    reads.push_back(e);
    if (next == Outcome::pending) {
      waiting.push_back(std::move(committed));
    }
    return next;
  }
};

std::string frame_json(const std::string& type, const json& headers, const std::string& data) {
  return json{{"specVersion", "1.0"}, {"type", type}, {"headers", headers}, {"data", data}}.dump();
}

std::string read_event(const std::string& message_id, const std::string& user,
                       const std::string& key = "key-1") {
  json data{{"processQueryKey", key}, {"unionId", "u-" + user}, {"operatTime", "1764064800123"}};
  if (!user.empty()) {
    data["userId"] = user;
  }
  return frame_json("EVENT",
                    {{"topic", "*"},
                     {"messageId", message_id},
                     {"eventType", "robot_msg_read"},
                     {"eventId", "e-" + message_id},
                     {"eventCorpId", "corp1"}},
                    data.dump());
}

class Harness {
public:
  explicit Harness(config::DingTalk cfg = internal_cfg())
      : engine(&clock), limiter(cfg.requests_per_second),
        client(cfg, engine, clock, limiter, sink, counts, 42) {}

  // Runs the loop's steps once: pump, the engine's callbacks.
  void turn() {
    client.pump();
    engine.run_once(Millis{0});
  }

  // Answers the pending gateway call with a ticket.
  void answer_gateway(const std::string& endpoint = "ws://127.0.0.1:9000/connect") {
    engine.answer(FakeEngine::reply(200, json{{"endpoint", endpoint}, {"ticket", "tk+1"}}.dump()),
                  "/v1.0/gateway/connections/open");
    engine.run_once(Millis{0});
  }

  // The newest stream, opened and upgraded.
  FakeRawStream& connect() {
    client.pump();
    answer_gateway();
    FakeRawStream& s = *engine.streams().back();
    s.open();
    engine.run_once(Millis{0});
    const std::string request = s.take_written();
    const auto k = request.find("Sec-WebSocket-Key: ");
    REQUIRE(k != std::string::npos);
    const std::string key = request.substr(k + 19, request.find("\r\n", k) - k - 19);
    s.deliver("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Accept: " +
              ws::accept_key(key) + "\r\n\r\n");
    engine.run_once(Millis{0});
    return s;
  }

  static void send_text(FakeRawStream& s, const std::string& text) {
    s.deliver(ws::encode(ws::text_frame(text)));
  }

  // The frames the client wrote on `s` since the last look.
  static std::vector<ws::Frame> written(FakeRawStream& s) {
    ws::FrameReader reader;
    reader.feed(s.take_written());
    std::vector<ws::Frame> out;
    while (auto f = reader.next()) {
      CHECK(ws::violation(*f, true) == "");
      out.push_back(std::move(*f));
    }
    CHECK(reader.error() == "");
    return out;
  }

  FakeClock clock;
  FakeEngine engine;
  scheduler::RateLimiter limiter;
  Counts counts;
  Sink sink;
  Client client;
};

} // namespace

TEST_CASE("stream client: gateway, ticket, handshake, connected") {
  Harness h;
  h.client.pump();
  REQUIRE(h.engine.pending().size() == 1);
  const auto& gateway = h.engine.pending().front().request;
  CHECK(gateway.url == "http://127.0.0.1:8080/v1.0/gateway/connections/open");
  CHECK(json::parse(gateway.body)["clientId"] == "dingappkey");
  h.answer_gateway();
  REQUIRE(h.engine.streams().size() == 1);
  FakeRawStream& s = *h.engine.streams()[0];
  CHECK(s.request.url == "http://127.0.0.1:9000/connect?ticket=tk%2B1");
  s.open();
  h.engine.run_once(Millis{0});
  const std::string upgrade = s.take_written();
  CHECK(upgrade.rfind("GET /connect?ticket=tk%2B1 HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n", 0) == 0);
  CHECK_FALSE(h.client.connected());
  SUBCASE("a wrong Sec-WebSocket-Accept is refused") {
    s.deliver("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n");
    h.engine.run_once(Millis{0});
    CHECK_FALSE(h.client.connected());
    CHECK(s.close_asked);
    CHECK(h.counts.opened == 0);
  }
  SUBCASE("a handshake refused with 401 is a failed attempt, retried after about 1 s") {
    s.deliver("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
    h.engine.run_once(Millis{0});
    CHECK_FALSE(h.client.connected());
    h.engine.run_once(Millis{0});
    h.clock.advance(Millis{790});
    h.turn();
    CHECK(h.engine.pending().empty());
    h.clock.advance(Millis{420});
    h.turn();
    CHECK(h.engine.pending().size() == 1); // a new ticket
  }
}

TEST_CASE("stream client: pings are answered at once with their messageId and opaque") {
  Harness h;
  FakeRawStream& s = h.connect();
  REQUIRE(h.client.connected());
  CHECK(h.counts.opened == 1);
  CHECK(h.counts.changes == std::vector<bool>{true});
  Harness::send_text(
      s, frame_json("SYSTEM", {{"topic", "ping"}, {"messageId", "p-1"}}, R"({"opaque":"o-42"})"));
  h.engine.run_once(Millis{0});
  const auto frames = Harness::written(s);
  REQUIRE(frames.size() == 1);
  const json answer = json::parse(frames[0].payload);
  CHECK(answer["code"] == 200);
  CHECK(answer["headers"]["messageId"] == "p-1");
  CHECK(json::parse(answer["data"].get<std::string>())["opaque"] == "o-42");
}

TEST_CASE("stream client: an event is acknowledged only after its read committed") {
  Harness h;
  FakeRawStream& s = h.connect();
  Harness::send_text(s, read_event("m-1", "alice"));
  h.engine.run_once(Millis{0});
  REQUIRE(h.sink.reads.size() == 1);
  CHECK(h.sink.reads[0].process_query_key == "key-1");
  CHECK(h.sink.reads[0].user_id == std::optional<std::string>("alice"));
  CHECK(h.sink.reads[0].read_at == std::optional<TimePoint>(from_unix_ms(1764064800123)));
  CHECK(h.counts.events[EventResult::applied] == 1);
  CHECK(Harness::written(s).empty()); // nothing before the commit
  SUBCASE("committed: the acknowledgement names the event's messageId") {
    h.sink.waiting[0](true);
    const auto frames = Harness::written(s);
    REQUIRE(frames.size() == 1);
    const json ack = json::parse(frames[0].payload);
    CHECK(ack["code"] == 200);
    CHECK(ack["headers"]["messageId"] == "m-1");
    CHECK(json::parse(ack["data"].get<std::string>())["status"] == "SUCCESS");
  }
  SUBCASE("the commit failed: no acknowledgement, DingTalk sends it again") {
    h.sink.waiting[0](false);
    CHECK(Harness::written(s).empty());
  }
  SUBCASE("the connection went before the commit: nothing is sent anywhere") {
    s.end();
    h.engine.run_once(Millis{0});
    h.sink.waiting[0](true);
    CHECK(s.take_written().empty());
  }
}

TEST_CASE("stream client: an acknowledgement callback that outlives its client is harmless") {
  std::function<void(bool)> committed;
  {
    Harness h;
    FakeRawStream& s = h.connect();
    Harness::send_text(s, read_event("m-1", "alice"));
    h.engine.run_once(Millis{0});
    REQUIRE(h.sink.waiting.size() == 1);
    committed = h.sink.waiting[0];
  }
  committed(true);
}

TEST_CASE("stream client: known readers, untracked messages, outsiders and other events") {
  Harness h;
  FakeRawStream& s = h.connect();
  h.sink.next = ReadSink::Outcome::duplicate;
  Harness::send_text(s, read_event("m-1", "alice"));
  h.engine.run_once(Millis{0});
  h.sink.next = ReadSink::Outcome::untracked;
  Harness::send_text(s, read_event("m-2", "bob", "other-key"));
  h.engine.run_once(Millis{0});
  Harness::send_text(s, read_event("m-3", "")); // no userId: a reader outside the organisation
  Harness::send_text(
      s, frame_json("EVENT", {{"messageId", "m-4"}, {"eventType", "chat_update_title"}}, "{}"));
  h.engine.run_once(Millis{0});
  const auto frames = Harness::written(s);
  REQUIRE(frames.size() == 4); // every one acknowledged at once
  for (std::size_t i = 0; i < frames.size(); ++i) {
    CHECK(json::parse(frames[i].payload)["headers"]["messageId"] == "m-" + std::to_string(i + 1));
  }
  CHECK(h.counts.events[EventResult::duplicate] == 1);
  CHECK(h.counts.events[EventResult::untracked] == 1);
  CHECK(h.counts.events[EventResult::ignored] == 2);
  CHECK(h.sink.reads.size() == 2);
}

TEST_CASE("stream client: a third-party app ignores events of other organisations") {
  config::DingTalk cfg = internal_cfg();
  cfg.auth_kind = config::DingTalk::AuthKind::third_party;
  cfg.third_party = {"suitekey", "suite-SECRET-0123456789", "corp-mine", "ticket-SECRET"};
  Harness h(cfg);
  FakeRawStream& s = h.connect();
  Harness::send_text(s, read_event("m-1", "alice")); // eventCorpId corp1
  h.engine.run_once(Millis{0});
  CHECK(h.sink.reads.empty());
  CHECK(h.counts.events[EventResult::ignored] == 1);
  CHECK(Harness::written(s).size() == 1);
}

TEST_CASE("stream client: bad frames are counted and dropped, and the connection stays up") {
  Harness h;
  FakeRawStream& s = h.connect();
  Harness::send_text(s, "not json");
  Harness::send_text(s, R"({"type":"EVENT","headers":{"eventType":"robot_msg_read"},"data":"{}"})");
  ws::Frame binary;
  binary.opcode = ws::Opcode::binary;
  binary.payload = "\x01\x02";
  s.deliver(ws::encode(binary));
  Harness::send_text(s, frame_json("SYSTEM", {{"topic", "KEEPALIVE"}, {"messageId", "k"}}, ""));
  Harness::send_text(s, frame_json("EVENT", {{"messageId", "m-9"}, {"eventType", "robot_msg_read"}},
                                   R"({"userId":"a"})"));
  h.engine.run_once(Millis{0});
  CHECK(h.counts.events[EventResult::bad] == 4);
  CHECK(h.counts.events[EventResult::ignored] == 1);
  CHECK(h.client.connected());
  const auto frames = Harness::written(s);
  REQUIRE(frames.size() == 1); // only the unreadable robot_msg_read, acknowledged
  CHECK(json::parse(frames[0].payload)["headers"]["messageId"] == "m-9");
}

TEST_CASE("stream client: a message over 1 MiB closes with 1009 and reconnects") {
  Harness h;
  FakeRawStream& s = h.connect();
  s.deliver(ws::encode(ws::text_frame(std::string(k_max_message_bytes + 1, 'x'))));
  h.engine.run_once(Millis{0});
  CHECK_FALSE(h.client.connected());
  CHECK(h.counts.disconnects[DisconnectReason::protocol] == 1);
  const auto frames = Harness::written(s);
  REQUIRE(frames.size() == 1);
  CHECK(frames[0].opcode == ws::Opcode::close);
  CHECK(ws::close_code(frames[0].payload) == std::optional<std::uint16_t>(1009));
  CHECK(s.close_asked);
}

TEST_CASE("stream client: disconnect moves to a new connection, losing nothing") {
  Harness h;
  FakeRawStream& old = h.connect();
  Harness::send_text(old, read_event("m-1", "alice"));
  Harness::send_text(old, frame_json("SYSTEM", {{"topic", "disconnect"}, {"messageId", "d"}},
                                     R"({"reason":"connection is expired"})"));
  h.engine.run_once(Millis{0});
  h.clock.advance(Millis{10}); // the rate limiter's spacing
  h.client.pump();             // a new ticket at once
  REQUIRE(h.engine.pending().size() == 1);
  FakeRawStream& fresh = h.connect(); // the next pump finds the gateway call answered
  CHECK(h.engine.streams().size() == 2);
  CHECK(h.client.connected());
  CHECK(h.counts.changes == std::vector<bool>{true}); // never down in between
  CHECK(h.counts.disconnects.empty());
  // The old one stays until its acknowledgement is out.
  h.turn();
  CHECK_FALSE(old.close_asked);
  Harness::send_text(fresh, read_event("m-2", "bob"));
  h.engine.run_once(Millis{0});
  h.sink.waiting[0](true);
  h.sink.waiting[1](true);
  CHECK(json::parse(Harness::written(old).at(0).payload)["headers"]["messageId"] == "m-1");
  CHECK(json::parse(Harness::written(fresh).at(0).payload)["headers"]["messageId"] == "m-2");
  h.turn();
  CHECK(old.close_asked);
  CHECK_FALSE(fresh.close_asked);
}

TEST_CASE("stream client: keep-alive pings a quiet connection, and gives up without an answer") {
  Harness h;
  FakeRawStream& s = h.connect();
  h.clock.advance(Millis{59'000});
  h.turn();
  CHECK(Harness::written(s).empty());
  h.clock.advance(Millis{1'000});
  h.turn();
  const auto frames = Harness::written(s);
  REQUIRE(frames.size() == 1);
  CHECK(frames[0].opcode == ws::Opcode::ping);
  SUBCASE("the pong keeps it") {
    ws::Frame pong;
    pong.opcode = ws::Opcode::pong;
    pong.payload = frames[0].payload;
    s.deliver(ws::encode(pong));
    h.engine.run_once(Millis{0});
    h.clock.advance(Millis{5'000});
    h.turn();
    CHECK(h.client.connected());
  }
  SUBCASE("no answer in 5 s: dead") {
    h.clock.advance(Millis{5'000});
    h.turn();
    CHECK_FALSE(h.client.connected());
    CHECK(h.counts.disconnects[DisconnectReason::ping_timeout] == 1);
  }
}

TEST_CASE("stream client: a lost connection reconnects with backoff and a new ticket") {
  Harness h;
  FakeRawStream& s = h.connect();
  s.end();
  h.engine.run_once(Millis{0});
  CHECK_FALSE(h.client.connected());
  CHECK(h.counts.disconnects[DisconnectReason::network] == 1);
  CHECK(h.client.state_since() == h.clock.now());
  // 1 s ± 20%, then 2 s, 4 s ... while the attempts fail.
  Millis expected_min{800};
  for (int attempt = 1; attempt <= 4; ++attempt) {
    CAPTURE(attempt);
    h.clock.advance(expected_min - Millis{1});
    h.turn();
    CHECK(h.engine.pending().empty());
    h.clock.advance(expected_min / 2); // past 1.2x
    h.turn();
    REQUIRE(h.engine.pending().size() == 1);
    h.engine.answer(FakeEngine::reply(503, R"({"code":"system.error"})"));
    h.engine.run_once(Millis{0});
    expected_min *= 2;
  }
  // Refused credentials wait the longest step, and are logged once.
  h.clock.advance(Millis{20'000});
  h.turn();
  REQUIRE(h.engine.pending().size() == 1);
  h.engine.answer(FakeEngine::reply(401, R"({"code":"authFailed","message":"bad"})"));
  h.engine.run_once(Millis{0});
  h.clock.advance(Millis{47'000});
  h.turn();
  CHECK(h.engine.pending().empty());
  h.clock.advance(Millis{26'000});
  h.turn();
  CHECK(h.engine.pending().size() == 1);
  CHECK(h.counts.gateway_calls == 6);
}

TEST_CASE("stream client: a handshake that never answers is given up") {
  Harness h;
  h.client.pump();
  h.answer_gateway();
  FakeRawStream& s = *h.engine.streams()[0];
  s.open();
  h.engine.run_once(Millis{0});
  const auto deadline = h.client.next_wakeup();
  REQUIRE(deadline);
  h.clock.set(*deadline);
  h.turn();
  CHECK(s.close_asked);
  CHECK_FALSE(h.client.connected());
}

TEST_CASE("stream client: stop closes with 1000 and opens nothing again") {
  Harness h;
  FakeRawStream& s = h.connect();
  h.client.stop();
  const auto frames = Harness::written(s);
  REQUIRE(frames.size() == 1);
  CHECK(ws::close_code(frames[0].payload) == std::optional<std::uint16_t>(1000));
  h.clock.advance(Millis{120'000});
  h.turn();
  CHECK(h.engine.pending().empty());
  CHECK(h.counts.disconnects.empty());
}

namespace {
// A work gate the test opens and closes.
struct SwitchGate final : ha::WorkGate {
  bool open = true;
  bool may_start() const override { return open; }
};
} // namespace

TEST_CASE("stream client: a closed work gate opens no gateway call and acknowledges nothing") {
  Harness h;
  SwitchGate gate;
  h.client.set_gate(&gate);
  gate.open = false;
  h.client.pump();
  CHECK(h.engine.pending().empty()); // no DingTalk call
  gate.open = true;
  FakeRawStream& s = h.connect();
  REQUIRE(h.client.connected());
  Harness::send_text(s, read_event("m-1", "alice"));
  h.engine.run_once(Millis{0});
  REQUIRE(h.sink.waiting.size() == 1);
  gate.open = false; // the deadline passed between the event and its commit
  h.sink.waiting[0](true);
  CHECK(Harness::written(s).empty()); // DingTalk sends it again, to whoever leads
}
