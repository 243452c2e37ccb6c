// The scheduler loop end to end on a fake clock and a fake HTTP engine: rate
// limit (token calls included), pagination, token refresh, ordering, the
// outbox commit and a restart on the same store.
#include "fakes/fake_engine.hpp"
#include "fakes/log_capture.hpp"
#include "readreceiptd/scheduler/scheduler.hpp"
#include "readreceiptd/tracking/table.hpp"

#include <algorithm>
#include <doctest/doctest.h>
#include <map>
#include <nlohmann/json.hpp>

using namespace rrd;
using rrd::testing::FakeEngine;
using rrd::testing::LogCapture;

namespace {

config::Config base_config(int messages, double rps) {
  config::Config cfg;
  cfg.dingtalk.endpoint = "http://dingtalk.test";
  cfg.dingtalk.auth_kind = config::DingTalk::AuthKind::fixed_token;
  cfg.dingtalk.fixed_token.access_token = "tok";
  cfg.dingtalk.robot_code = "robot";
  cfg.dingtalk.requests_per_second = rps;
  cfg.dingtalk.page_size = 2;
  config::Webhook hook;
  hook.name = "ops";
  hook.url = "http://hooks.test/";
  hook.secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  cfg.webhooks.push_back(hook);
  for (int i = 0; i < messages; ++i) {
    MessageSpec m;
    m.process_query_key = "key" + std::to_string(i);
    m.robot_code = "robot";
    m.expected_readers = {"u1", "u2", "u3"};
    cfg.messages.push_back(m);
  }
  return cfg;
}

std::string page(std::vector<std::string> ids, const std::string& next = "",
                 const std::string& status = "SUCCESS") {
  nlohmann::json j{{"sendStatus", status}, {"readUserIds", ids}, {"hasMore", !next.empty()}};
  if (!next.empty()) {
    j["nextToken"] = next;
  }
  return j.dump();
}

std::string body_key(const http::Request& r) {
  return nlohmann::json::parse(r.body).at("processQueryKey").get<std::string>();
}

struct Harness {
  explicit Harness(config::Config cfg, std::unique_ptr<store::Store> existing = nullptr)
      : store(existing ? std::move(existing) : store::Store::open(":memory:")), engine(&clock),
        table(
            cfg, *store, clock,
            [this](std::vector<Delivery> d) {
              deliveries.insert(deliveries.end(), d.begin(), d.end());
            },
            table_observer, 42),
        sched(std::move(cfg), table, *store, engine, clock, observer, 42) {}

  // What the daemon does at start: the poller listens, the table loads.
  void start() {
    sched.start();
    table.start();
  }

  // A reload, as the daemon applies it.
  void reconfigure(const config::Config& cfg) {
    sched.reconfigure(cfg);
    table.reconfigure(cfg);
  }

  // Runs one loop iteration a little later: pump, callbacks, flush.
  void turn() {
    clock.advance(Millis{100});
    sched.pump();
    engine.run_once(Millis{0});
    table.flush();
  }

  FakeClock clock;
  std::unique_ptr<store::Store> store;
  FakeEngine engine;
  scheduler::Observer observer;
  tracking::Observer table_observer;
  std::vector<Delivery> deliveries;
  tracking::MessageTable table;
  scheduler::Scheduler sched;
};

int max_in_any_window(std::vector<TimePoint> times, Millis window) {
  std::sort(times.begin(), times.end());
  int best = 0;
  std::size_t lo = 0;
  for (std::size_t hi = 0; hi < times.size(); ++hi) {
    while (times[hi] - times[lo] >= window) {
      ++lo;
    }
    best = std::max(best, static_cast<int>(hi - lo + 1));
  }
  return best;
}

} // namespace

TEST_CASE("scheduler: never more than requests_per_second calls in any 1 s window") {
  Harness h(base_config(60, 5));
  h.start();
  for (int step = 0; step < 400; ++step) {
    h.turn();
    while (!h.engine.pending().empty()) {
      h.engine.answer(FakeEngine::reply(200, page({})));
    }
    h.engine.run_once(Millis{0});
    h.table.flush();
    h.clock.advance(Millis{37});
  }
  REQUIRE(h.engine.submitted().size() >= 60);
  CHECK(max_in_any_window(h.engine.submit_times(), Millis{1000}) <= 5);
}

TEST_CASE("scheduler: token calls count against the rate limit too") {
  auto cfg = base_config(10, 2);
  cfg.dingtalk.auth_kind = config::DingTalk::AuthKind::internal_app;
  cfg.dingtalk.internal_app = {"key", "secret"};
  Harness h(cfg);
  h.start();
  for (int step = 0; step < 200; ++step) {
    h.turn();
    while (!h.engine.pending().empty()) {
      const bool token = h.engine.pending().front().request.url.find("oauth2") != std::string::npos;
      h.engine.answer(
          FakeEngine::reply(200, token ? R"({"accessToken":"abc","expireIn":7200})" : page({})));
    }
    h.engine.run_once(Millis{0});
    h.table.flush();
    h.clock.advance(Millis{50});
  }
  const auto& sub = h.engine.submitted();
  REQUIRE(sub.size() >= 11);
  CHECK(sub.front().url.find("/v1.0/oauth2/accessToken") != std::string::npos);
  CHECK(max_in_any_window(h.engine.submit_times(), Millis{1000}) <= 2);
}

TEST_CASE("scheduler: pages are followed and their union becomes one read event") {
  Harness h(base_config(1, 100));
  h.start();
  h.turn();
  auto first = h.engine.answer(FakeEngine::reply(200, page({"u1", "u2"}, "n1")));
  CHECK(nlohmann::json::parse(first.body).count("nextToken") == 0);
  h.engine.run_once(Millis{0});
  h.table.flush();
  CHECK(h.deliveries.empty()); // nothing is emitted from a partial answer
  h.turn();
  auto second = h.engine.answer(FakeEngine::reply(200, page({"u2", "u4"})));
  CHECK(nlohmann::json::parse(second.body).at("nextToken") == "n1");
  h.engine.run_once(Millis{0});
  h.table.flush();
  REQUIRE(h.deliveries.size() == 1);
  const auto body = nlohmann::json::parse(h.deliveries[0].body);
  CHECK(body["type"] == "message.read");
  CHECK(body["data"]["newly_read_user_ids"] == nlohmann::json({"u1", "u2", "u4"}));
  CHECK(body["data"]["sequence"] == 1);
  CHECK(h.deliveries[0].webhook == "ops");
  // The read set and the event are in the store before the delivery was handed on.
  auto stored = h.store->load_message("key0");
  REQUIRE(stored);
  CHECK(stored->read_user_ids == std::vector<std::string>{"u1", "u2", "u4"});
  CHECK(h.store->load_pending_deliveries().size() == 1);
}

TEST_CASE("scheduler: fully read stops the message with a tracking_stopped event") {
  Harness h(base_config(1, 100));
  h.start();
  h.turn();
  h.engine.answer(FakeEngine::reply(200, page({"u1", "u2", "u3"})));
  h.engine.run_once(Millis{0});
  h.table.flush();
  REQUIRE(h.deliveries.size() == 2);
  CHECK(nlohmann::json::parse(h.deliveries[1].body)["data"]["reason"] == "fully_read");
  CHECK(h.table.tracked() == 0);
  h.clock.advance(Millis{3'600'000});
  h.turn();
  CHECK(h.engine.pending().empty()); // never polled again
}

TEST_CASE("scheduler: InvalidAuthentication refreshes the token once and repeats the call") {
  auto cfg = base_config(1, 100);
  cfg.dingtalk.auth_kind = config::DingTalk::AuthKind::internal_app;
  cfg.dingtalk.internal_app = {"key", "secret"};
  Harness h(cfg);
  h.start();
  h.turn();
  h.engine.answer(FakeEngine::reply(200, R"({"accessToken":"t1","expireIn":7200})"),
                  "/accessToken");
  h.engine.run_once(Millis{0});
  h.turn();
  auto q1 = h.engine.answer(
      FakeEngine::reply(400, R"({"code":"InvalidAuthentication","message":"x","requestid":"r"})"),
      "/query");
  CHECK(q1.headers.end() !=
        std::find(q1.headers.begin(), q1.headers.end(),
                  std::make_pair(std::string("x-acs-dingtalk-access-token"), std::string("t1"))));
  h.engine.run_once(Millis{0});
  h.turn();
  h.engine.answer(FakeEngine::reply(200, R"({"accessToken":"t2","expireIn":7200})"),
                  "/accessToken");
  h.engine.run_once(Millis{0});
  h.turn();
  auto q2 = h.engine.answer(FakeEngine::reply(200, page({"u1"})), "/query");
  CHECK(q2.headers.end() !=
        std::find(q2.headers.begin(), q2.headers.end(),
                  std::make_pair(std::string("x-acs-dingtalk-access-token"), std::string("t2"))));
  h.engine.run_once(Millis{0});
  h.table.flush();
  CHECK(h.deliveries.size() == 1);
}

TEST_CASE("scheduler: the longest overdue message goes first") {
  auto cfg = base_config(0, 1);
  Harness h(cfg);
  h.start();
  MessageSpec late;
  late.process_query_key = "zz-late";
  late.robot_code = "robot";
  h.table.add(late);
  h.clock.advance(Millis{5'000});
  MessageSpec early;
  early.process_query_key = "aa-new";
  early.robot_code = "robot";
  h.table.add(early);
  h.turn();
  REQUIRE(h.engine.pending().size() == 1);
  CHECK(body_key(h.engine.pending().front().request) == "zz-late");
}

TEST_CASE("scheduler: a restart on the same store repeats no event and resumes polling") {
  auto cfg = base_config(1, 100);
  std::unique_ptr<store::Store> kept;
  {
    Harness h(cfg);
    h.start();
    h.turn();
    h.engine.answer(FakeEngine::reply(200, page({"u1"})));
    h.engine.run_once(Millis{0});
    h.table.flush();
    REQUIRE(h.deliveries.size() == 1);
    kept = std::move(h.store);
  }
  Harness h2(cfg, std::move(kept));
  h2.start();
  h2.clock.advance(Millis{3'600'000});
  h2.turn();
  h2.engine.answer(FakeEngine::reply(200, page({"u1", "u2"})));
  h2.engine.run_once(Millis{0});
  h2.table.flush();
  REQUIRE(h2.deliveries.size() == 1);
  const auto body = nlohmann::json::parse(h2.deliveries[0].body);
  CHECK(body["data"]["newly_read_user_ids"] == nlohmann::json({"u2"}));
  CHECK(body["data"]["sequence"] == 2);
}

TEST_CASE("scheduler: removing a message from the configuration stops it with reason removed") {
  auto cfg = base_config(2, 100);
  Harness h(cfg);
  h.start();
  CHECK(h.table.tracked() == 2);
  auto smaller = cfg;
  smaller.messages.pop_back();
  h.reconfigure(smaller);
  CHECK(h.table.tracked() == 1);
  REQUIRE(h.deliveries.size() == 1);
  CHECK(nlohmann::json::parse(h.deliveries[0].body)["data"]["reason"] == "removed");
  // Stopped stays stopped even if the file lists it again.
  h.reconfigure(cfg);
  CHECK(h.table.tracked() == 1);
}

TEST_CASE("scheduler: at start-up, a message that left the file while the daemon was down is "
          "stopped removed, and only that one") {
  auto cfg = base_config(3, 100);
  std::unique_ptr<store::Store> kept;
  {
    Harness h(cfg);
    h.start();
    MessageSpec api;
    api.process_query_key = "from-api";
    api.robot_code = "robot";
    h.table.add(api);
    h.table.flush();
    CHECK(h.table.tracked() == 4);
    kept = std::move(h.store);
  }
  // Restarts with every message of the file still in it: nothing stops.
  {
    Harness h(cfg, std::move(kept));
    h.start();
    CHECK(h.table.tracked() == 4);
    CHECK(h.deliveries.empty());
    kept = std::move(h.store);
  }
  // Restarts with one fewer: that one stops, the API's stays.
  auto smaller = cfg;
  const std::string gone = smaller.messages.back().process_query_key;
  smaller.messages.pop_back();
  Harness h(smaller, std::move(kept));
  h.start();
  CHECK(h.table.tracked() == 3);
  REQUIRE(h.table.find(gone) != nullptr);
  CHECK(h.table.find(gone)->stop_reason == StopReason::removed);
  CHECK_FALSE(h.table.find("from-api")->stopped);
  REQUIRE(h.deliveries.size() == 1);
  CHECK(nlohmann::json::parse(h.deliveries[0].body)["data"]["reason"] == "removed");
}

TEST_CASE("scheduler: a poll that changes only the poll times is written within a second, "
          "not at once") {
  Harness h(base_config(1, 100));
  h.start();
  const auto added = h.store->load_message("key0");
  REQUIRE(added); // a new message is written at once
  h.turn();
  h.engine.answer(FakeEngine::reply(200, page({})));
  h.engine.run_once(Millis{0});
  h.table.flush();
  // Nothing was read: the new poll times wait for a commit that must be durable.
  CHECK(h.store->load_message("key0")->last_poll == added->last_poll);
  REQUIRE(h.table.next_flush());
  CHECK(*h.table.next_flush() <= h.clock.now() + tracking::k_bookkeeping_flush_interval);
  h.clock.advance(tracking::k_bookkeeping_flush_interval);
  h.table.flush();
  const auto written = h.store->load_message("key0");
  CHECK(written->last_poll == h.table.find("key0")->last_poll);
  CHECK(written->next_poll == h.table.find("key0")->next_poll);
}

TEST_CASE("scheduler: a message polled several times within a second has its latest poll "
          "times written") {
  auto cfg = base_config(1, 100);
  cfg.poll.schedule = {{std::nullopt, Millis{100}}};
  Harness h(cfg);
  h.start();
  const auto added = h.store->load_message("key0");
  REQUIRE(added);
  std::optional<TimePoint> polled_at;
  for (int i = 0; i < 5; ++i) {
    h.turn();
    h.engine.answer(FakeEngine::reply(200, page({})));
    h.engine.run_once(Millis{0});
    h.table.flush();
    CHECK(h.table.find("key0")->last_poll > polled_at); // polled again
    polled_at = h.table.find("key0")->last_poll;
  }
  CHECK(h.store->load_message("key0")->last_poll == added->last_poll); // nothing written yet
  h.clock.advance(tracking::k_bookkeeping_flush_interval);
  h.table.flush();
  const auto written = h.store->load_message("key0");
  CHECK(written->last_poll == polled_at);
  CHECK(written->next_poll == h.table.find("key0")->next_poll);
  CHECK(*written == *h.table.find("key0"));
}

TEST_CASE("scheduler: a read is written at once, with the poll times waiting before it") {
  Harness h(base_config(1, 100));
  h.start();
  h.turn();
  h.engine.answer(FakeEngine::reply(200, page({})));
  h.engine.run_once(Millis{0});
  h.table.flush();
  h.clock.advance(Millis{15'000});
  h.turn();
  h.engine.answer(FakeEngine::reply(200, page({"u1"})));
  h.engine.run_once(Millis{0});
  h.table.flush();
  const auto stored = h.store->load_message("key0");
  CHECK(stored->read_user_ids == std::vector<std::string>{"u1"});
  CHECK(stored->last_poll == h.table.find("key0")->last_poll);
  CHECK(h.deliveries.size() == 1);
}

TEST_CASE("scheduler: poll times still waiting are written when the loop stops") {
  Harness h(base_config(1, 100));
  h.start();
  h.turn();
  h.engine.answer(FakeEngine::reply(200, page({})));
  h.engine.run_once(Millis{0});
  h.table.flush();
  h.sched.cancel_all();
  h.table.flush(/*all=*/true); // as the daemon does when it stops
  CHECK(h.store->load_message("key0")->last_poll == h.table.find("key0")->last_poll);
}

TEST_CASE("scheduler: DingTalk's answers that quote the app secret or the token are not logged") {
  LogCapture log;
  const std::string app_secret = "app-secret-0123456789abcdef";
  const std::string token = "access-token-0123456789";
  auto cfg = base_config(1, 100);
  cfg.dingtalk.endpoint = "https://user:endpoint-password@dingtalk.test/prefix-SECRET?sig=SECRET";
  cfg.dingtalk.auth_kind = config::DingTalk::AuthKind::internal_app;
  cfg.dingtalk.internal_app = {"key", app_secret};
  Harness h(cfg);
  h.start();
  h.turn();
  // A refused token call whose message echoes the request.
  h.engine.answer(FakeEngine::reply(400, nlohmann::json{{"code", "invalidClientIdOrSecret"},
                                                        {"message", "appSecret " + app_secret +
                                                                        " does not match"},
                                                        {"requestid", "r1"}}
                                             .dump()),
                  "/accessToken");
  h.engine.run_once(Millis{0});
  h.clock.advance(Millis{600'000});
  h.turn();
  h.engine.answer(
      FakeEngine::reply(200, nlohmann::json{{"accessToken", token}, {"expireIn", 7200}}.dump()),
      "/accessToken");
  h.engine.run_once(Millis{0});
  h.turn();
  // A query DingTalk calls malformed, echoing the token header: the request
  // shape is logged as a bug, redacted, and the message is withheld.
  h.engine.answer(FakeEngine::reply(400, nlohmann::json{{"code", "invalidParameter.param.invalid"},
                                                        {"message", "header " + token + " bad"},
                                                        {"requestid", "r2"}}
                                             .dump()),
                  "/query");
  h.engine.run_once(Millis{0});
  h.table.flush();
  // A transport failure whose engine text quotes the endpoint.
  h.clock.advance(Millis{600'000});
  h.turn();
  http::Response failed;
  failed.failure = http::Failure::network;
  failed.error = "Failed sending to " + cfg.dingtalk.endpoint;
  h.engine.answer(failed, "/query");
  h.engine.run_once(Millis{0});
  h.table.flush();

  const std::string text = log.text();
  INFO(text);
  CHECK(text.find("invalidClientIdOrSecret") != std::string::npos);
  CHECK(text.find("invalidParameter.param.invalid") != std::string::npos);
  CHECK(text.find("privateChatMessages/query") != std::string::npos);
  CHECK(text.find("dingtalk.test") != std::string::npos);
  for (const std::string& secret :
       {app_secret, token, std::string("endpoint-password"), std::string("SECRET")}) {
    CAPTURE(secret);
    CHECK(text.find(secret) == std::string::npos);
  }
}

TEST_CASE("scheduler: adding a stopped message again is unchanged with the same fields, a "
          "conflict with others") {
  Harness h(base_config(0, 100));
  h.start();
  MessageSpec spec;
  spec.process_query_key = "once";
  spec.robot_code = "robot";
  spec.expected_readers = {"u1"};
  REQUIRE(h.table.add(spec) == tracking::MessageTable::AddOutcome::created);
  REQUIRE(h.table.remove("once"));
  h.table.flush();
  REQUIRE(h.table.find("once")->stopped);
  CHECK(h.table.add(spec) == tracking::MessageTable::AddOutcome::unchanged);
  MessageSpec other = spec;
  other.expected_readers = {"u2"};
  CHECK(h.table.add(other) == tracking::MessageTable::AddOutcome::conflict);
  CHECK(h.table.find("once")->stopped); // never tracked again
  CHECK(h.table.tracked() == 0);
}

TEST_CASE("scheduler: messages are visited in key order from any key, new ones included") {
  auto cfg = base_config(0, 100);
  for (const char* key : {"m5", "m1", "m3"}) {
    MessageSpec m;
    m.process_query_key = key;
    m.robot_code = "robot";
    cfg.messages.push_back(m);
  }
  Harness h(cfg);
  h.start();
  auto keys_after = [&](std::string_view after, std::size_t at_most = 100) {
    std::vector<std::string> out;
    h.table.visit_from(after, [&](const MessageRecord& m) {
      out.push_back(m.spec.process_query_key);
      return out.size() < at_most;
    });
    return out;
  };
  CHECK(keys_after("") == std::vector<std::string>{"m1", "m3", "m5"});
  MessageSpec late;
  late.process_query_key = "m2";
  late.robot_code = "robot";
  h.table.add(late);
  late.process_query_key = "m9";
  h.table.add(late);
  late.process_query_key = "m0";
  h.table.add(late);
  REQUIRE(h.table.remove("m3"));
  h.table.flush();
  CHECK(keys_after("") == std::vector<std::string>{"m0", "m1", "m2", "m3", "m5", "m9"});
  CHECK(keys_after("m2") == std::vector<std::string>{"m3", "m5", "m9"});
  CHECK(keys_after("m25") == std::vector<std::string>{"m3", "m5", "m9"});
  CHECK(keys_after("m1", 2) == std::vector<std::string>{"m2", "m3"});
  CHECK(keys_after("m9").empty());
  CHECK(keys_after("zzz").empty());
}
