#include "readreceiptd/common/base64.hpp"
#include "readreceiptd/common/version.hpp"
#include "readreceiptd/store/store.hpp"
#include "readreceiptd/webhook/dispatcher.hpp"
#include "readreceiptd/webhook/retry.hpp"
#include "readreceiptd/webhook/signing.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <doctest/doctest.h>
#include <memory>
#include <set>

using namespace rrd;
using namespace rrd::webhook;
using namespace std::chrono_literals;

namespace {
constexpr const char* k_spec_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
constexpr const char* k_spec_id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
constexpr std::int64_t k_spec_ts = 1614265330;
constexpr const char* k_spec_body = R"({"test": 2432232314})";
constexpr const char* k_spec_signature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
} // namespace

// --- signing

TEST_CASE("signing matches the Standard Webhooks test vector") {
  const auto key = decode_secret(k_spec_secret);
  REQUIRE(key.ok());
  CHECK(key->size() == 24);
  CHECK(sign(*key, k_spec_id, k_spec_ts, k_spec_body) == k_spec_signature);
}

TEST_CASE("a malformed secret is an error whose text does not contain it") {
  for (const std::string bad : {"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_MfKQ9r8G!KYq",
                                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "WHSEC_MfKQ9r8GKYqr"}) {
    CAPTURE(bad);
    const auto key = decode_secret(bad);
    REQUIRE_FALSE(key.ok());
    CHECK_FALSE(key.error().empty());
    if (bad.size() > 6) {
      CHECK(key.error().find(bad.substr(6)) == std::string::npos);
    }
    CHECK(key.error().find("MfKQ") == std::string::npos);
  }
}

TEST_CASE("verify accepts the right signature and rejects any change") {
  const auto key = *decode_secret(k_spec_secret);
  CHECK(verify(key, k_spec_id, k_spec_ts, k_spec_body, k_spec_signature));
  CHECK_FALSE(verify(key, k_spec_id, k_spec_ts + 1, k_spec_body, k_spec_signature));
  CHECK_FALSE(verify(key, "msg_other", k_spec_ts, k_spec_body, k_spec_signature));
  CHECK_FALSE(verify(key, k_spec_id, k_spec_ts, R"({"test": 2432232315})", k_spec_signature));
  CHECK_FALSE(verify(key + "x", k_spec_id, k_spec_ts, k_spec_body, k_spec_signature));
  CHECK_FALSE(verify(key, k_spec_id, k_spec_ts, k_spec_body, ""));
  CHECK_FALSE(verify(key, k_spec_id, k_spec_ts, k_spec_body,
                     "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
}

TEST_CASE("verify finds a valid signature among several space-separated ones") {
  const auto key = *decode_secret(k_spec_secret);
  CHECK(verify(key, k_spec_id, k_spec_ts, k_spec_body,
               std::string("v1,bm90IHRoaXMgb25l ") + k_spec_signature));
  CHECK(verify(key, k_spec_id, k_spec_ts, k_spec_body,
               std::string(k_spec_signature) + " v1a,whatever"));
  CHECK_FALSE(verify(key, k_spec_id, k_spec_ts, k_spec_body, "v1,bm90 v1,YWxzb25vdA=="));
}

TEST_CASE("sha256_hex matches the known digest of abc") {
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

// --- retry schedule

TEST_CASE("the retry schedule waits 5s 30s 2m 10m 30m 1h 2h 4h 8h without jitter at 0.5") {
  const Millis expected[] = {5s, 30s, 2min, 10min, 30min, 1h, 2h, 4h, 8h};
  for (int n = 1; n <= 9; ++n) {
    CAPTURE(n);
    const auto d = retry_delay(n, 0.5);
    REQUIRE(d.has_value());
    CHECK(*d == expected[n - 1]);
  }
}

TEST_CASE("the retry jitter stays within plus or minus 20 percent") {
  const Millis expected[] = {5s, 30s, 2min, 10min, 30min, 1h, 2h, 4h, 8h};
  const double just_below_one = std::nextafter(1.0, 0.0);
  for (int n = 1; n <= 9; ++n) {
    CAPTURE(n);
    const auto base = expected[n - 1].count();
    const auto low = retry_delay(n, 0.0);
    const auto high = retry_delay(n, just_below_one);
    REQUIRE(low.has_value());
    REQUIRE(high.has_value());
    CHECK(low->count() == base * 8 / 10);
    CHECK(high->count() < base * 12 / 10);
    CHECK(high->count() >= base * 12 / 10 - 1);
    const auto mid = retry_delay(n, 0.25);
    CHECK(mid->count() == base * 9 / 10);
  }
}

TEST_CASE("the event is dead after the tenth attempt fails") {
  CHECK(k_max_attempts == 10);
  CHECK(retry_delay(9, 0.5).has_value());
  CHECK_FALSE(retry_delay(10, 0.5).has_value());
  CHECK_FALSE(retry_delay(10, 0.5, Millis{1s}).has_value());
  CHECK_FALSE(retry_delay(11, 0.5).has_value());
}

TEST_CASE("Retry-After on 429 and 503 replaces the schedule, within bounds") {
  CHECK(honours_retry_after(429));
  CHECK(honours_retry_after(503));
  CHECK_FALSE(honours_retry_after(500));
  CHECK_FALSE(honours_retry_after(200));
  CHECK_FALSE(honours_retry_after(410));
  // Longer than the schedule's step, shorter than it, and without jitter.
  CHECK(retry_delay(1, 0.0, Millis{120s}) == Millis{120s});
  CHECK(retry_delay(5, 0.99, Millis{7s}) == Millis{7s});
  // Floored and capped.
  CHECK(retry_delay(1, 0.5, Millis{0}) == k_min_retry_after);
  CHECK(retry_delay(1, 0.5, Millis{24h * 30}) == k_max_retry_after);
}

// --- dispatcher

namespace {

// An HTTP engine that records requests; the test completes them by hand and
// the callbacks run in the next run_once(), as the Engine contract says.
class FakeEngine final : public http::Engine {
public:
  struct Call {
    http::Request request;
    http::Callback done;
    bool completed = false;
  };

  void submit(http::Request request, http::Callback done) override {
    calls.push_back({std::move(request), std::move(done), false});
  }
  void run_once(Millis) override {
    auto ready = std::move(m_ready);
    m_ready.clear();
    for (auto& [done, response] : ready) {
      done(std::move(response));
    }
  }
  void wakeup() override {}
  std::size_t in_flight() const override { return open().size(); }

  // Indexes of the calls not completed yet.
  std::vector<std::size_t> open() const {
    std::vector<std::size_t> out;
    for (std::size_t i = 0; i < calls.size(); ++i) {
      if (!calls[i].completed) {
        out.push_back(i);
      }
    }
    return out;
  }
  // Completes call `i`; its callback runs in the next run_once().
  void complete(std::size_t i, http::Response response) {
    REQUIRE(i < calls.size());
    REQUIRE_FALSE(calls[i].completed);
    calls[i].completed = true;
    m_ready.emplace_back(std::move(calls[i].done), std::move(response));
  }

  std::vector<Call> calls;

private:
  std::vector<std::pair<http::Callback, http::Response>> m_ready;
};

http::Response answer(int status, std::vector<std::pair<std::string, std::string>> headers = {}) {
  http::Response r;
  r.status = status;
  r.headers = std::move(headers);
  r.duration = Millis{12};
  return r;
}
http::Response failure(http::Failure f, std::string error = "") {
  http::Response r;
  r.failure = f;
  r.error = std::move(error);
  return r;
}

std::optional<std::string> header(const http::Request& r, const std::string& name) {
  auto lower = [](std::string s) {
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
  };
  std::optional<std::string> found;
  for (const auto& [k, v] : r.headers) {
    if (lower(k) == lower(name)) {
      REQUIRE_FALSE(found.has_value()); // each header at most once
      found = v;
    }
  }
  return found;
}

config::Webhook make_webhook(const std::string& name) {
  config::Webhook w;
  w.name = name;
  w.url = "http://127.0.0.1:9/" + name;
  w.secret = k_spec_secret;
  w.headers = {{"X-Team", name}};
  w.timeout = Millis{3s};
  w.ca_file = "/etc/hooks-ca.pem";
  return w;
}

struct Counted {
  int attempts = 0;
  int delivered = 0;
  int dead = 0;
  int disabled = 0;
  std::map<FailureReason, int> failed;
};

struct Harness {
  FakeClock clock;
  FakeEngine engine;
  std::unique_ptr<store::Store> store = store::Store::open(":memory:");
  double random = 0.5;
  Counted counted;
  std::vector<config::Webhook> webhooks{make_webhook("ops")};
  std::unique_ptr<Dispatcher> dispatcher;
  std::map<std::string, std::int64_t> sequences;
  std::uint64_t ids = 0;

  Harness() { restart(); }

  // A new Dispatcher on the same store, as after a restart.
  void restart() {
    Observer o;
    o.on_attempt = [this](const std::string&, Millis) { ++counted.attempts; };
    o.on_delivered = [this](const std::string&, Millis) { ++counted.delivered; };
    o.on_failed = [this](const std::string&, FailureReason r) { ++counted.failed[r]; };
    o.on_dead = [this](const std::string&) { ++counted.dead; };
    o.on_disabled = [this](const std::string&) { ++counted.disabled; };
    dispatcher.reset();
    dispatcher = std::make_unique<Dispatcher>(
        *store, engine, clock, [this] { return random; }, o);
    dispatcher->configure(webhooks);
    dispatcher->load(store->load_pending_deliveries());
  }

  // Commits the next event of message `key`, routed to `routes`, and hands
  // its deliveries to the dispatcher. Returns the event id.
  std::string emit(const std::string& key, std::vector<std::string> routes = {"ops"}) {
    const std::int64_t seq = ++sequences[key];
    OutboxEvent e;
    e.id = make_event_id(clock.now(), ++ids, static_cast<std::uint64_t>(seq));
    e.process_query_key = key;
    e.sequence = seq;
    e.created_at = clock.now();
    e.body = R"({"type":"message.read","data":{"process_query_key":")" + key + R"(","sequence":)" +
             std::to_string(seq) + "}}";
    store::Commit c;
    c.message.spec.process_query_key = key;
    c.message.sent_at = clock.now();
    c.message.added_at = clock.now();
    c.message.next_poll = clock.now();
    c.message.last_sequence = seq;
    c.events = {e};
    c.routes = {std::move(routes)};
    store->commit(c);
    std::vector<Delivery> fresh;
    for (const auto& d : store->load_pending_deliveries()) {
      if (d.event_id == e.id) {
        fresh.push_back(d);
      }
    }
    dispatcher->enqueue(fresh);
    return e.id;
  }

  // Completes call `i` and runs the engine's callbacks.
  void finish(std::size_t i, http::Response r) {
    engine.complete(i, std::move(r));
    engine.run_once(Millis{0});
    if (dispatcher) {
      dispatcher->flush(); // as the daemon's loop does after each turn
    }
  }
  // pump() and return the indexes of the calls it made.
  std::vector<std::size_t> pump() {
    const std::size_t before = engine.calls.size();
    dispatcher->pump();
    std::vector<std::size_t> out;
    for (std::size_t i = before; i < engine.calls.size(); ++i) {
      out.push_back(i);
    }
    return out;
  }
  std::string event_of(std::size_t call) {
    return header(engine.calls.at(call).request, "webhook-id").value_or("");
  }
  std::optional<Delivery> stored(const std::string& event_id, const std::string& webhook = "ops") {
    for (auto& d : store->load_pending_deliveries()) {
      if (d.event_id == event_id && d.webhook == webhook) {
        return d;
      }
    }
    return std::nullopt;
  }
};

} // namespace

TEST_CASE("an attempt is a signed POST with the Standard Webhooks headers") {
  Harness h;
  h.clock.advance(Millis{1234});
  const auto id = h.emit("A");
  CHECK(h.dispatcher->next_due() == h.clock.now());
  const auto calls = h.pump();
  REQUIRE(calls.size() == 1);
  const http::Request& r = h.engine.calls[calls[0]].request;
  CHECK(r.method == "POST");
  CHECK(r.url == "http://127.0.0.1:9/ops");
  CHECK(r.body == h.stored(id)->body);
  CHECK(header(r, "user-agent") == std::string("readreceiptd/") + k_version);
  CHECK(header(r, "x-team") == "ops");
  CHECK(header(r, "webhook-id") == id);
  const std::int64_t ts = to_unix_ms(h.clock.now()) / 1000;
  CHECK(header(r, "webhook-timestamp") == std::to_string(ts));
  const auto key = *decode_secret(k_spec_secret);
  CHECK(verify(key, id, ts, r.body, header(r, "webhook-signature").value()));
  CHECK(r.total_timeout == Millis{3s});
  CHECK(r.connect_timeout <= Millis{3s});
  CHECK(r.ca_file == "/etc/hooks-ca.pem");
  CHECK(h.dispatcher->in_flight() == 1);
  CHECK_FALSE(h.dispatcher->idle());
  CHECK(h.dispatcher->pending("ops") == 1);

  h.finish(calls[0], answer(204));
  CHECK(h.dispatcher->idle());
  CHECK(h.dispatcher->pending("ops") == 0);
  CHECK_FALSE(h.stored(id).has_value());
  CHECK(h.store->load_dead_letters().empty());
  CHECK(h.counted.delivered == 1);
  CHECK(h.counted.attempts == 1);
  CHECK_FALSE(h.dispatcher->next_due().has_value());
  CHECK(h.pump().empty());
}

TEST_CASE("a retry keeps the webhook-id and signs with the time of the new attempt") {
  Harness h;
  const auto id = h.emit("A");
  auto calls = h.pump();
  REQUIRE(calls.size() == 1);
  const auto first_ts = header(h.engine.calls[calls[0]].request, "webhook-timestamp");
  h.finish(calls[0], answer(500));
  h.clock.advance(Millis{5s});
  calls = h.pump();
  REQUIRE(calls.size() == 1);
  const http::Request& r = h.engine.calls[calls[0]].request;
  CHECK(header(r, "webhook-id") == id);
  const std::int64_t ts = to_unix_ms(h.clock.now()) / 1000;
  CHECK(header(r, "webhook-timestamp") == std::to_string(ts));
  CHECK(header(r, "webhook-timestamp") != first_ts);
  CHECK(verify(*decode_secret(k_spec_secret), id, ts, r.body,
               header(r, "webhook-signature").value()));
}

TEST_CASE("a webhook's own headers cannot replace the signature headers, but may set the "
          "User-Agent") {
  Harness h;
  h.webhooks[0].headers = {{"Webhook-Signature", "v1,forged"},
                           {"webhook-id", "evt_forged"},
                           {"Content-Type", "text/plain"},
                           {"User-Agent", "custom/1"},
                           {"Authorization", "Bearer abc"}};
  h.dispatcher->configure(h.webhooks);
  const auto id = h.emit("A");
  const auto calls = h.pump();
  REQUIRE(calls.size() == 1);
  const http::Request& r = h.engine.calls[calls[0]].request;
  CHECK(header(r, "webhook-id") == id);
  CHECK(header(r, "webhook-signature") != "v1,forged");
  CHECK(header(r, "content-type") == "application/json");
  CHECK(header(r, "user-agent") == "custom/1");
  CHECK(header(r, "authorization") == "Bearer abc");
}

TEST_CASE("a later event of a message waits while an earlier one is retried, other messages "
          "do not wait") {
  Harness h;
  const auto a1 = h.emit("A");
  const auto a2 = h.emit("A");
  const auto b1 = h.emit("B");
  auto calls = h.pump();
  REQUIRE(calls.size() == 2);
  std::set<std::string> sent{h.event_of(calls[0]), h.event_of(calls[1])};
  CHECK(sent == std::set<std::string>{a1, b1});
  const std::size_t call_a1 = h.event_of(calls[0]) == a1 ? calls[0] : calls[1];
  const std::size_t call_b1 = h.event_of(calls[0]) == b1 ? calls[0] : calls[1];

  h.finish(call_a1, answer(500));
  const auto d = h.stored(a1);
  REQUIRE(d.has_value());
  CHECK(d->attempts == 1);
  CHECK(d->next_attempt == h.clock.now() + Millis{5s});
  CHECK(d->last_error == "HTTP 500");
  CHECK(h.counted.failed[FailureReason::status] == 1);
  CHECK(h.pump().empty()); // a2 waits behind a1

  h.finish(call_b1, answer(200));
  const auto b2 = h.emit("B");
  calls = h.pump();
  REQUIRE(calls.size() == 1);
  CHECK(h.event_of(calls[0]) == b2); // B goes on while A waits
  h.finish(calls[0], answer(200));

  CHECK(h.dispatcher->next_due() == h.clock.now() + Millis{5s});
  h.clock.advance(Millis{4999});
  CHECK(h.pump().empty());
  h.clock.advance(Millis{1});
  calls = h.pump();
  REQUIRE(calls.size() == 1);
  CHECK(h.event_of(calls[0]) == a1);
  h.finish(calls[0], answer(200));
  calls = h.pump();
  REQUIRE(calls.size() == 1);
  CHECK(h.event_of(calls[0]) == a2);
  h.finish(calls[0], answer(200));
  CHECK(h.store->load_pending_deliveries().empty());
  CHECK(h.counted.delivered == 4);
}

TEST_CASE("one event to two webhooks is queued separately for each") {
  Harness h;
  h.webhooks.push_back(make_webhook("audit"));
  h.dispatcher->configure(h.webhooks);
  const auto a1 = h.emit("A", {"ops", "audit"});
  const auto a2 = h.emit("A", {"ops", "audit"});
  auto calls = h.pump();
  REQUIRE(calls.size() == 2);
  const auto& r0 = h.engine.calls[calls[0]].request;
  const std::size_t ops_call = r0.url.ends_with("/ops") ? calls[0] : calls[1];
  const std::size_t audit_call = ops_call == calls[0] ? calls[1] : calls[0];
  h.finish(ops_call, answer(500)); // ops retries a1 ...
  h.finish(audit_call, answer(200));
  calls = h.pump(); // ... while audit goes on with a2
  REQUIRE(calls.size() == 1);
  CHECK(h.event_of(calls[0]) == a2);
  CHECK(h.engine.calls[calls[0]].request.url.ends_with("/audit"));
  CHECK(h.dispatcher->pending("ops") == 2);
  CHECK(h.dispatcher->pending("audit") == 1);
  CHECK(h.stored(a1, "ops").has_value());
  CHECK_FALSE(h.stored(a1, "audit").has_value());
}

TEST_CASE("retries follow the schedule and the tenth failure makes a dead letter, the next event "
          "proceeds") {
  Harness h;
  h.random = 0.0; // the shortest jitter: 80 % of each step
  const auto a1 = h.emit("A");
  const auto a2 = h.emit("A");
  const Millis schedule[] = {5s, 30s, 2min, 10min, 30min, 1h, 2h, 4h, 8h};
  for (int attempt = 1; attempt <= 10; ++attempt) {
    CAPTURE(attempt);
    auto calls = h.pump();
    REQUIRE(calls.size() == 1);
    CHECK(h.event_of(calls[0]) == a1);
    h.finish(calls[0], failure(http::Failure::timeout, "Operation timed out"));
    if (attempt == 10) {
      break;
    }
    const Millis wait = schedule[attempt - 1] * 8 / 10;
    const auto d = h.stored(a1);
    REQUIRE(d.has_value());
    CHECK(d->attempts == attempt);
    CHECK(d->last_error == "timeout");
    CHECK(d->next_attempt == h.clock.now() + wait);
    CHECK(h.dispatcher->next_due() == h.clock.now() + wait);
    h.clock.advance(wait - Millis{1});
    CHECK(h.pump().empty());
    h.clock.advance(Millis{1});
  }
  CHECK_FALSE(h.stored(a1).has_value());
  const auto dead = h.store->load_dead_letters();
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].delivery.event_id == a1);
  CHECK(dead[0].delivery.attempts == 10);
  CHECK(dead[0].delivery.last_error == "timeout");
  CHECK(h.counted.dead == 1);
  CHECK(h.counted.failed[FailureReason::timeout] == 10);
  CHECK(h.counted.attempts == 10);
  // The next event goes at once.
  auto calls = h.pump();
  REQUIRE(calls.size() == 1);
  CHECK(h.event_of(calls[0]) == a2);
  CHECK(h.dispatcher->pending("ops") == 1);
}

TEST_CASE("a replayed dead letter is delivered again before later events") {
  Harness h;
  const auto a1 = h.emit("A");
  for (int attempt = 1; attempt <= 10; ++attempt) {
    auto calls = h.pump();
    REQUIRE(calls.size() == 1);
    h.finish(calls[0], answer(500));
    h.clock.advance(Millis{24h});
  }
  REQUIRE(h.store->load_dead_letters().size() == 1);
  const auto a2 = h.emit("A");
  auto calls = h.pump();
  REQUIRE(calls.size() == 1);
  CHECK(h.event_of(calls[0]) == a2);
  const auto a3 = h.emit("A");
  CHECK(h.store->replay_dead(a1, h.clock.now()) == 1);
  h.dispatcher->enqueue(h.store->load_pending_deliveries()); // a2 and a3 are known already
  CHECK(h.dispatcher->pending("ops") == 3);
  h.finish(calls[0], answer(200));
  calls = h.pump();
  REQUIRE(calls.size() == 1);
  CHECK(h.event_of(calls[0]) == a1);
  h.finish(calls[0], answer(200));
  calls = h.pump();
  REQUIRE(calls.size() == 1);
  CHECK(h.event_of(calls[0]) == a3);
}

TEST_CASE("delivered events are written at flush(), and a crash before it delivers them again") {
  Harness h;
  const auto a1 = h.emit("A");
  const auto b1 = h.emit("B");
  const auto calls = h.pump();
  REQUIRE(calls.size() == 2);
  h.engine.complete(calls[0], answer(200));
  h.engine.complete(calls[1], answer(200));
  h.engine.run_once(Millis{0});
  // Delivered, not written yet: the store still has both pending...
  CHECK(h.stored(a1).has_value());
  CHECK(h.stored(b1).has_value());
  CHECK(h.dispatcher->pending("ops") == 0);
  CHECK_FALSE(h.dispatcher->idle()); // something left to write
  // ...and handing them back (as after a dead-letter replay) sends nothing.
  h.dispatcher->enqueue(h.store->load_pending_deliveries());
  CHECK(h.dispatcher->pending("ops") == 0);
  CHECK(h.pump().empty());

  // A crash now: a new Dispatcher sends both again, with the same ids.
  h.restart();
  auto again = h.pump();
  REQUIRE(again.size() == 2);
  std::set<std::string> ids{h.event_of(again[0]), h.event_of(again[1])};
  CHECK(ids == std::set<std::string>{a1, b1});
  h.engine.complete(again[0], answer(200));
  h.engine.complete(again[1], answer(200));
  h.engine.run_once(Millis{0});
  h.dispatcher->flush();
  CHECK(h.dispatcher->idle());
  CHECK_FALSE(h.stored(a1).has_value());
  CHECK_FALSE(h.stored(b1).has_value());

  // After the write, a restart sends nothing.
  h.restart();
  CHECK(h.pump().empty());
}

TEST_CASE("the same delivery enqueued twice is sent once") {
  Harness h;
  h.emit("A");
  h.dispatcher->enqueue(h.store->load_pending_deliveries());
  h.dispatcher->load(h.store->load_pending_deliveries());
  CHECK(h.dispatcher->pending("ops") == 1);
  CHECK(h.pump().size() == 1);
  h.dispatcher->enqueue(h.store->load_pending_deliveries()); // in flight: still known
  CHECK(h.pump().empty());
  CHECK(h.dispatcher->pending("ops") == 1);
}

TEST_CASE("410 disables the webhook and holds its events until its configuration changes") {
  Harness h;
  const auto a1 = h.emit("A");
  const auto b1 = h.emit("B");
  auto calls = h.pump();
  REQUIRE(calls.size() == 2);
  const std::size_t call_a1 = h.event_of(calls[0]) == a1 ? calls[0] : calls[1];
  const std::size_t call_b1 = call_a1 == calls[0] ? calls[1] : calls[0];

  h.finish(call_a1, answer(410));
  CHECK(h.dispatcher->disabled("ops"));
  CHECK(h.counted.disabled == 1);
  CHECK(h.counted.failed[FailureReason::status] == 1);
  CHECK(h.store->webhook_disabled_fingerprint("ops") == fingerprint(h.webhooks[0]));
  const auto held = h.stored(a1);
  REQUIRE(held.has_value()); // pending, not lost, not counted as an attempt
  CHECK(held->attempts == 0);
  CHECK(held->last_error == "HTTP 410");
  // A request already in flight still completes normally.
  h.finish(call_b1, answer(200));
  CHECK_FALSE(h.stored(b1).has_value());

  const auto a2 = h.emit("A");
  const auto c1 = h.emit("C");
  CHECK(h.pump().empty());
  CHECK_FALSE(h.dispatcher->next_due().has_value());
  h.clock.advance(Millis{48h});
  CHECK(h.pump().empty());
  CHECK(h.dispatcher->pending("ops") == 3);
  CHECK(h.store->load_dead_letters().empty());

  // A reload with the same configuration, and a restart, keep it disabled.
  h.dispatcher->configure(h.webhooks);
  CHECK(h.pump().empty());
  h.restart();
  CHECK(h.dispatcher->disabled("ops"));
  CHECK(h.pump().empty());
  CHECK(h.dispatcher->pending("ops") == 3);

  // A changed configuration enables it again.
  h.webhooks[0].url = "http://127.0.0.1:9/ops-v2";
  h.dispatcher->configure(h.webhooks);
  CHECK_FALSE(h.dispatcher->disabled("ops"));
  CHECK_FALSE(h.store->webhook_disabled_fingerprint("ops").has_value());
  calls = h.pump();
  REQUIRE(calls.size() == 2);
  std::set<std::string> sent{h.event_of(calls[0]), h.event_of(calls[1])};
  CHECK(sent == std::set<std::string>{a1, c1});
  CHECK(h.engine.calls[calls[0]].request.url == "http://127.0.0.1:9/ops-v2");
  for (auto c : calls) {
    h.finish(c, answer(200));
  }
  calls = h.pump();
  REQUIRE(calls.size() == 1);
  CHECK(h.event_of(calls[0]) == a2);
}

TEST_CASE("a 410 disables only that webhook") {
  Harness h;
  h.webhooks.push_back(make_webhook("audit"));
  h.dispatcher->configure(h.webhooks);
  h.emit("A", {"ops"});
  h.emit("B", {"audit"});
  auto calls = h.pump();
  REQUIRE(calls.size() == 2);
  for (auto c : calls) {
    const bool ops = h.engine.calls[c].request.url.ends_with("/ops");
    h.finish(c, ops ? answer(410) : answer(500));
  }
  CHECK(h.dispatcher->disabled("ops"));
  CHECK_FALSE(h.dispatcher->disabled("audit"));
  h.clock.advance(Millis{5s});
  calls = h.pump();
  REQUIRE(calls.size() == 1);
  CHECK(h.engine.calls[calls[0]].request.url.ends_with("/audit"));
}

TEST_CASE("429 and 503 with Retry-After wait as long as the server asks") {
  for (const int status : {429, 503}) {
    CAPTURE(status);
    Harness h;
    const auto a1 = h.emit("A");
    auto calls = h.pump();
    REQUIRE(calls.size() == 1);
    h.finish(calls[0], answer(status, {{"retry-after", "120"}}));
    const auto d = h.stored(a1);
    REQUIRE(d.has_value());
    CHECK(d->attempts == 1);
    CHECK(d->last_error == "HTTP " + std::to_string(status));
    CHECK(d->next_attempt == h.clock.now() + Millis{120s});
    CHECK(h.dispatcher->next_due() == h.clock.now() + Millis{120s});
    h.clock.advance(Millis{119s});
    CHECK(h.pump().empty());
    h.clock.advance(Millis{1s});
    CHECK(h.pump().size() == 1);
  }
}

TEST_CASE("Retry-After on other statuses is ignored, and its absence means the schedule") {
  Harness h;
  const auto a1 = h.emit("A");
  auto calls = h.pump();
  h.finish(calls.at(0), answer(500, {{"retry-after", "120"}}));
  CHECK(h.stored(a1)->next_attempt == h.clock.now() + Millis{5s});
  h.clock.advance(Millis{5s});
  calls = h.pump();
  h.finish(calls.at(0), answer(429));
  CHECK(h.stored(a1)->next_attempt == h.clock.now() + Millis{30s});
}

TEST_CASE("deliveries to a webhook that is not configured stay pending and are not sent") {
  Harness h;
  const auto a1 = h.emit("A", {"later"});
  CHECK(h.pump().empty());
  CHECK_FALSE(h.dispatcher->next_due().has_value());
  CHECK(h.dispatcher->pending("later") == 1);
  CHECK(h.stored(a1, "later").has_value());

  h.webhooks.push_back(make_webhook("later"));
  h.dispatcher->configure(h.webhooks);
  auto calls = h.pump();
  REQUIRE(calls.size() == 1);
  CHECK(h.engine.calls[calls[0]].request.url.ends_with("/later"));
  h.finish(calls[0], answer(200));

  // Removed from the configuration again: held.
  h.webhooks.pop_back();
  h.dispatcher->configure(h.webhooks);
  h.emit("A", {"later"});
  CHECK(h.pump().empty());
  CHECK(h.dispatcher->pending("later") == 1);
}

TEST_CASE("a webhook with an unusable secret holds its events") {
  Harness h;
  h.webhooks[0].secret = "not-a-whsec-secret";
  h.dispatcher->configure(h.webhooks);
  h.emit("A");
  CHECK(h.pump().empty());
  CHECK(h.dispatcher->pending("ops") == 1);
}

TEST_CASE("in flight at most 64 per webhook, a completion lets the next one go") {
  static_assert(k_max_in_flight_per_webhook == 64);
  Harness h;
  for (std::size_t i = 0; i < k_max_in_flight_per_webhook + 8; ++i) {
    h.emit("M" + std::to_string(i));
  }
  auto calls = h.pump();
  CHECK(calls.size() == k_max_in_flight_per_webhook);
  CHECK(h.dispatcher->in_flight() == k_max_in_flight_per_webhook);
  // Due work that cannot go yet must not make the loop spin.
  CHECK_FALSE(h.dispatcher->next_due().has_value());
  CHECK(h.pump().empty());
  h.finish(calls[0], answer(200));
  CHECK(h.dispatcher->next_due() == h.clock.now());
  CHECK(h.pump().size() == 1);
  CHECK(h.dispatcher->in_flight() == k_max_in_flight_per_webhook);
}

TEST_CASE("in flight at most 256 in total across webhooks") {
  Harness h;
  h.webhooks.clear();
  const std::size_t n_webhooks = k_max_in_flight_total / k_max_in_flight_per_webhook + 2;
  std::vector<std::string> names;
  for (std::size_t w = 0; w < n_webhooks; ++w) {
    names.push_back("w" + std::to_string(w));
    h.webhooks.push_back(make_webhook(names.back()));
  }
  h.dispatcher->configure(h.webhooks);
  for (std::size_t i = 0; i < k_max_in_flight_per_webhook; ++i) {
    h.emit("M" + std::to_string(i), names);
  }
  auto calls = h.pump();
  CHECK(calls.size() == k_max_in_flight_total);
  CHECK(h.dispatcher->in_flight() == k_max_in_flight_total);
  std::map<std::string, std::size_t> per_webhook;
  for (auto c : calls) {
    ++per_webhook[h.engine.calls[c].request.url];
  }
  for (const auto& [url, n] : per_webhook) {
    CHECK(n <= k_max_in_flight_per_webhook);
  }
  CHECK_FALSE(h.dispatcher->next_due().has_value());
  h.finish(calls[0], answer(200));
  CHECK(h.pump().size() == 1);
}

TEST_CASE("after a restart, deliveries continue from their stored attempts and next attempt") {
  Harness h;
  h.random = 0.0;
  const auto a1 = h.emit("A");
  const auto a2 = h.emit("A");
  for (int attempt = 1; attempt <= 3; ++attempt) {
    auto calls = h.pump();
    REQUIRE(calls.size() == 1);
    h.finish(calls[0], failure(http::Failure::network, "Failed to connect: Connection refused"));
    if (attempt < 3) {
      h.clock.advance(Millis{24h});
    }
  }
  auto d = h.stored(a1);
  REQUIRE(d.has_value());
  CHECK(d->attempts == 3);
  CHECK(d->last_error == "connection refused");
  const TimePoint due = d->next_attempt;
  CHECK(due == h.clock.now() + Millis{2min} * 8 / 10);

  h.restart();
  CHECK(h.dispatcher->pending("ops") == 2);
  CHECK(h.dispatcher->next_due() == due);
  CHECK(h.pump().empty());
  h.clock.set(due);
  auto calls = h.pump();
  REQUIRE(calls.size() == 1);
  CHECK(h.event_of(calls[0]) == a1);
  h.finish(calls[0], answer(502));
  d = h.stored(a1);
  CHECK(d->attempts == 4);
  CHECK(d->next_attempt == h.clock.now() + Millis{10min} * 8 / 10);
  CHECK(h.stored(a2)->attempts == 0);
}

TEST_CASE("a request that completes after its Dispatcher is gone changes nothing") {
  Harness h;
  const auto a1 = h.emit("A");
  auto calls = h.pump();
  REQUIRE(calls.size() == 1);
  h.dispatcher.reset();
  h.finish(calls[0], answer(200));
  CHECK(h.stored(a1).has_value());
}

TEST_CASE("failure texts are short and carry no URL") {
  CHECK(describe_failure(answer(503)) == "HTTP 503");
  CHECK(describe_failure(failure(http::Failure::timeout, "Operation timed out after 3000 ms")) ==
        "timeout");
  CHECK(describe_failure(failure(
            http::Failure::network,
            "Failed to connect to hooks.example.com port 443 after 1 ms: Connection refused")) ==
        "connection refused");
  CHECK(describe_failure(failure(http::Failure::network,
                                 "Couldn't connect to server: Failed to connect to 127.0.0.1 "
                                 "port 9 after 0 ms: Couldn't connect to server")) ==
        "could not connect");
  CHECK(describe_failure(
            failure(http::Failure::network, "Could not resolve host: hooks.example.com")) ==
        "could not resolve host");
  CHECK(describe_failure(failure(http::Failure::network, "SSL certificate problem")) ==
        "TLS error");
  CHECK(describe_failure(
            failure(http::Failure::network, "https://user:token@hooks.example.com/x went wrong")) ==
        "network error");
  CHECK(describe_failure(failure(http::Failure::too_large)) == "response too large");
}

TEST_CASE("the configuration fingerprint changes with each delivery field and hides the secret") {
  const auto base = make_webhook("ops");
  const auto fp = fingerprint(base);
  CHECK(fp.size() == 64);
  CHECK(fingerprint(base) == fp);
  CHECK(fp.find("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == std::string::npos);
  auto changed = [&](auto edit) {
    auto w = base;
    edit(w);
    return fingerprint(w) != fp;
  };
  CHECK(changed([](config::Webhook& w) { w.url += "x"; }));
  CHECK(changed([](config::Webhook& w) { w.secret = "whsec_dGVzdA=="; }));
  CHECK(changed([](config::Webhook& w) { w.headers.emplace_back("X-More", "1"); }));
  CHECK(changed([](config::Webhook& w) { w.headers[0].second = "dev"; }));
  CHECK(changed([](config::Webhook& w) { w.ca_file = ""; }));
  CHECK(changed([](config::Webhook& w) { w.timeout = Millis{4s}; }));
  CHECK(changed([](config::Webhook& w) { w.events = {EventType::message_read}; }));
  // The name is not part of it.
  CHECK_FALSE(changed([](config::Webhook& w) { w.name = "other"; }));
  // Field boundaries are unambiguous.
  auto a = base;
  a.headers = {{"X-Ab", "c"}};
  auto b = base;
  b.headers = {{"X-A", "bc"}};
  CHECK(fingerprint(a) != fingerprint(b));
}

namespace {
// A work gate the test opens and closes.
struct SwitchGate final : ha::WorkGate {
  bool open = true;
  bool may_start() const override { return open; }
};
} // namespace

TEST_CASE("no delivery starts while the work gate is closed, it goes once the gate opens") {
  Harness h;
  SwitchGate gate;
  h.dispatcher->set_gate(&gate);
  gate.open = false;
  const auto id = h.emit("A");
  CHECK(h.pump().empty());
  h.clock.advance(Millis{60'000});
  CHECK(h.pump().empty());
  CHECK(h.stored(id).has_value()); // still pending, for whoever leads
  gate.open = true;
  const auto calls = h.pump();
  REQUIRE(calls.size() == 1);
  CHECK(h.event_of(calls[0]) == id);
}
