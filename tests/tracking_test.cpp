// The message table's one path for reads: pushed reads of a turn make one
// event, are acknowledged only after their commit (and refused when it
// fails), and meet polled reads in the same read set. Plus the pure schedule
// switches of push mode.
#include "fakes/fake_engine.hpp"
#include "fakes/postgres.hpp"
#include "readreceiptd/scheduler/push_mode.hpp"
#include "readreceiptd/scheduler/scheduler.hpp"
#include "readreceiptd/tracking/table.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <thread>

using namespace rrd;
using nlohmann::json;
using rrd::testing::FakeEngine;

namespace {

constexpr Millis k_s{1'000};
constexpr Millis k_min{60'000};

config::Config base_config() {
  config::Config cfg;
  cfg.dingtalk.endpoint = "http://dingtalk.test";
  cfg.dingtalk.auth_kind = config::DingTalk::AuthKind::fixed_token;
  cfg.dingtalk.fixed_token.access_token = "tok-0123456789abcdef";
  cfg.dingtalk.robot_code = "robot";
  cfg.dingtalk.requests_per_second = 1000;
  config::Webhook hook;
  hook.name = "ops";
  cfg.webhooks.push_back(hook);
  MessageSpec m;
  m.process_query_key = "key";
  m.robot_code = "robot";
  m.expected_readers = {"a", "b", "c"};
  cfg.messages.push_back(m);
  return cfg;
}

struct Counting final : tracking::Observer {
  std::map<ReadVia, int> reads;
  std::vector<Millis> delays;
  std::vector<MessageRecord> changed; // message_changed(), in order
  void read_committed(ReadVia via, std::optional<Millis> delay) override {
    ++reads[via];
    if (delay) {
      delays.push_back(*delay);
    }
  }
  void message_changed(const MessageRecord& m) override { changed.push_back(m); }
};

stream::ReadEvent read(const std::string& user, std::optional<TimePoint> at = std::nullopt,
                       const std::string& key = "key") {
  stream::ReadEvent e;
  e.process_query_key = key;
  e.user_id = user;
  e.read_at = at;
  return e;
}

struct Harness {
  explicit Harness(config::Config cfg = base_config(),
                   std::unique_ptr<store::Store> on = store::Store::open(":memory:"))
      : store(std::move(on)), engine(&clock),
        table(
            cfg, *store, clock,
            [this](std::vector<Delivery> d) {
              deliveries.insert(deliveries.end(), d.begin(), d.end());
            },
            observer, 7),
        sched(cfg, table, *store, engine, clock, poller_observer, 7) {
    sched.start();
    table.start();
  }

  // flush() until the acknowledgement of push `i` came (a commit in flight
  // lands in real time), at most 10 s.
  void flush_until_acked(std::size_t i) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!acks.at(i) && std::chrono::steady_clock::now() < deadline) {
      table.flush();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  // Pushes `e`, recording what the Stream client would send back.
  stream::ReadSink::Outcome push(const stream::ReadEvent& e) {
    const std::size_t i = acks.size();
    acks.push_back(std::nullopt);
    return table.push_read(e, [this, i](bool ok) { acks[i] = ok; });
  }

  FakeClock clock;
  std::unique_ptr<store::Store> store;
  FakeEngine engine;
  Counting observer;
  scheduler::Observer poller_observer;
  std::vector<Delivery> deliveries;
  std::vector<std::optional<bool>> acks;
  tracking::MessageTable table;
  scheduler::Scheduler sched;
};

} // namespace

TEST_CASE("table: the pushes of one turn make one event, acknowledged after the commit") {
  Harness h;
  h.deliveries.clear();
  const TimePoint read_at = h.clock.now() - 3 * k_s;
  CHECK(h.push(read("a", read_at)) == stream::ReadSink::Outcome::pending);
  CHECK(h.push(read("b")) == stream::ReadSink::Outcome::pending);
  CHECK(h.push(read("a", read_at)) == stream::ReadSink::Outcome::pending); // redelivered
  CHECK(h.push(read("z", std::nullopt, "unknown")) == stream::ReadSink::Outcome::untracked);
  CHECK(h.acks == std::vector<std::optional<bool>>(4, std::nullopt)); // nothing before the commit
  REQUIRE(h.table.next_flush() == std::optional<TimePoint>(h.clock.now()));
  h.table.flush();
  CHECK(h.acks[0] == std::optional<bool>(true));
  CHECK(h.acks[1] == std::optional<bool>(true));
  CHECK(h.acks[2] == std::optional<bool>(true));
  REQUIRE(h.deliveries.size() == 1);
  const json body = json::parse(h.deliveries[0].body);
  CHECK(body["data"]["newly_read_user_ids"] == json{"a", "b"});
  CHECK(body["data"]["newly_read"][0]["via"] == "push");
  CHECK(body["data"]["newly_read"][0]["read_at"] == format_rfc3339(read_at));
  CHECK(body["data"]["unread_user_ids"] == json{"c"});
  // Durable before the acknowledgement.
  const auto stored = h.store->load_message("key");
  CHECK(stored->read_user_ids == std::vector<std::string>{"a", "b"});
  CHECK(stored->read_info[0] == ReadInfo{read_at, ReadVia::push});
  CHECK(h.observer.reads[ReadVia::push] == 2);
  CHECK(h.observer.delays == std::vector<Millis>{3 * k_s});
  // Known now: a duplicate, acknowledged by the client at once.
  CHECK(h.push(read("a")) == stream::ReadSink::Outcome::duplicate);
}

// A Harness on a PostgreSQL store of a schema of its own, its server
// process named `<schema>_table` (schema->terminate() cuts it off), its
// deliveries cleared; `h` is empty (the test skipped) without a test
// server.
struct PgHarness {
  std::unique_ptr<rrd::testing::PgSchema> schema;
  std::unique_ptr<Harness> h;
  PgHarness() {
    const auto server = rrd::testing::test_postgres();
    if (!server) {
      if (rrd::testing::postgres_required()) {
        FAIL("CI=true, but RRD_TEST_POSTGRES is not set");
      }
      return;
    }
    schema = std::make_unique<rrd::testing::PgSchema>(*server);
    store::PostgresOptions o;
    o.conninfo = schema->conninfo() + " application_name=" + schema->name() + "_table";
    o.connect_timeout = std::chrono::seconds(5);
    h = std::make_unique<Harness>(base_config(), store::Store::open_postgres(o));
    h->deliveries.clear();
  }
};

TEST_CASE("postgres: table: the loop goes on while a commit is in flight and what comes meanwhile "
          "goes in the next commit") {
  PgHarness pg;
  if (!pg.h) {
    return;
  }
  rrd::testing::PgSchema& other = *pg.schema;
  Harness& h = *pg.h;
  h.push(read("a"));
  other.exec("BEGIN; LOCK TABLE events IN EXCLUSIVE MODE"); // the commit's insert waits
  h.table.flush();
  CHECK(h.store->commit_in_flight());
  CHECK(h.table.next_flush() ==
        std::optional<TimePoint>(h.clock.now() + tracking::k_commit_check_interval));
  h.push(read("b"));
  for (int i = 0; i < 10; ++i) {
    h.table.flush(); // returns at once: nothing landed, nothing handed on
  }
  CHECK(h.acks == std::vector<std::optional<bool>>(2, std::nullopt));
  CHECK(h.deliveries.empty());
  // The push waits for the commit in flight to land, as it waits for a turn.
  CHECK(h.table.find("key")->read_user_ids == std::vector<std::string>{"a"});

  other.exec("COMMIT");
  h.flush_until_acked(0);
  CHECK(h.acks[0] == std::optional<bool>(true));
  REQUIRE(h.deliveries.size() == 1);
  CHECK(json::parse(h.deliveries[0].body)["data"]["newly_read_user_ids"] == json{"a"});
  h.flush_until_acked(1);
  CHECK(h.acks[1] == std::optional<bool>(true));
  REQUIRE(h.deliveries.size() == 2);
  CHECK(json::parse(h.deliveries[1].body)["data"]["newly_read_user_ids"] == json{"b"});
  h.table.flush(true);
  CHECK_FALSE(h.store->commit_in_flight());
  CHECK(h.store->load_message("key")->read_user_ids == std::vector<std::string>{"a", "b"});
}

TEST_CASE("postgres: table: a commit in flight that fails undoes what was queued after it too") {
  PgHarness pg;
  if (!pg.h) {
    return;
  }
  rrd::testing::PgSchema& other = *pg.schema;
  Harness& h = *pg.h;
  h.sched.pump(); // the first poll goes out (its call counted in the store now)
  REQUIRE(h.engine.pending().size() == 1);
  h.push(read("a"));
  other.exec("BEGIN; LOCK TABLE events IN EXCLUSIVE MODE");
  h.table.flush();
  REQUIRE(h.store->commit_in_flight());
  // The poll's answer, applied on top of the read in flight: queued.
  h.engine.answer(FakeEngine::reply(200, R"({"sendStatus":"SUCCESS","readUserIds":["a","b"]})"));
  h.engine.run_once(Millis{0});
  h.table.flush();
  CHECK(h.table.find("key")->read_user_ids == std::vector<std::string>{"a", "b"});
  // The connection is cut off while the commit waits: it never lands.
  CHECK(other.terminate(other.name() + "_table") == "1");
  other.exec("COMMIT");
  h.flush_until_acked(0);
  CHECK(h.acks[0] == std::optional<bool>(false)); // DingTalk sends it again
  CHECK(h.deliveries.empty());
  CHECK(h.table.find("key")->read_user_ids.empty()); // the poll's "b" too
  CHECK(h.store->take_trouble() == store::Store::Trouble::unavailable);
  h.table.flush(true);
  CHECK(h.store->load_message("key")->read_user_ids.empty());
  CHECK(h.table.find("key")->next_poll > h.clock.now()); // polled again soon
  // Sent again, it is applied.
  h.push(read("a"));
  h.table.flush(true);
  CHECK(h.acks[1] == std::optional<bool>(true));
  CHECK(h.store->load_message("key")->read_user_ids == std::vector<std::string>{"a"});
}

TEST_CASE("table: a push that completes the message stops it fully_read") {
  Harness h;
  h.deliveries.clear();
  h.push(read("a"));
  h.push(read("b"));
  h.push(read("c"));
  h.table.flush();
  REQUIRE(h.deliveries.size() == 2);
  CHECK(json::parse(h.deliveries[1].body)["data"]["reason"] == "fully_read");
  CHECK(h.table.find("key")->stopped);
  CHECK(h.table.tracked() == 0);
  CHECK(h.push(read("d")) == stream::ReadSink::Outcome::untracked);
}

TEST_CASE("table: a failed commit refuses the pushes' acknowledgements and forgets them") {
  Harness h;
  h.deliveries.clear();
  h.push(read("a"));
  // A label that is not UTF-8 makes the store refuse the commit it is in,
  // and the turn's commit is all or nothing: the push goes with it.
  MessageSpec bad;
  bad.process_query_key = "bad-label";
  bad.robot_code = "robot";
  bad.labels = {{"k", "\xff"}};
  REQUIRE(h.table.add(bad) == tracking::MessageTable::AddOutcome::created);
  h.table.flush();
  CHECK(h.acks[0] == std::optional<bool>(false)); // DingTalk sends it again
  CHECK(h.table.find("key")->read_user_ids.empty());
  CHECK(h.deliveries.empty());
  CHECK(h.store->load_message("key")->read_user_ids.empty());
  // Sent again, it is applied (the refused commit is not tried again).
  h.push(read("a"));
  h.table.flush();
  CHECK(h.acks[1] == std::optional<bool>(true));
  CHECK(h.store->load_message("key")->read_user_ids == std::vector<std::string>{"a"});
}

TEST_CASE("table: a poll and a push of the same reader in one turn report it once") {
  Harness h;
  h.deliveries.clear();
  h.sched.pump(); // the first poll goes out
  REQUIRE(h.engine.pending().size() == 1);
  h.push(read("a"));
  h.engine.answer(FakeEngine::reply(200, R"({"sendStatus":"SUCCESS","readUserIds":["a","b"]})"));
  h.engine.run_once(Millis{0});
  h.table.flush();
  std::vector<std::string> reported;
  for (const auto& d : h.deliveries) {
    const json body = json::parse(d.body);
    for (const auto& id : body["data"]["newly_read_user_ids"]) {
      reported.push_back(id.get<std::string>());
    }
  }
  std::sort(reported.begin(), reported.end());
  CHECK(reported == std::vector<std::string>{"a", "b"});
  CHECK(h.acks[0] == std::optional<bool>(true));
}

TEST_CASE("table: each committed change of a message is reported once per commit, after it - "
          "polls that only move poll times and refused commits are not") {
  Harness h;
  // The configuration's message, added at start.
  REQUIRE(h.observer.changed.size() == 1);
  CHECK(h.observer.changed[0].spec.process_query_key == "key");
  h.observer.changed.clear();

  // Two pushes and an API addition in one turn: each message once, as it is
  // after the commit, and only after it.
  h.push(read("a"));
  h.push(read("b"));
  MessageSpec other;
  other.process_query_key = "other";
  other.robot_code = "robot";
  REQUIRE(h.table.add(other) == tracking::MessageTable::AddOutcome::created);
  CHECK(h.observer.changed.empty());
  h.table.flush();
  REQUIRE(h.observer.changed.size() == 2);
  CHECK(h.observer.changed[0].spec.process_query_key == "other");
  CHECK(h.observer.changed[1].spec.process_query_key == "key");
  CHECK(h.observer.changed[1].read_user_ids == std::vector<std::string>{"a", "b"});
  CHECK(h.observer.changed[1] == *h.store->load_message("key")); // what was committed
  h.observer.changed.clear();

  // A poll that finds nothing new only moves the poll times: no report.
  h.sched.pump();
  REQUIRE_FALSE(h.engine.pending().empty());
  while (!h.engine.pending().empty()) {
    h.engine.answer(FakeEngine::reply(200, R"({"sendStatus":"SUCCESS","readUserIds":[]})"));
  }
  h.engine.run_once(Millis{0});
  h.table.flush(true);
  CHECK(h.observer.changed.empty());

  // A removal is a change (the stop).
  REQUIRE(h.table.remove("other"));
  h.table.flush();
  REQUIRE(h.observer.changed.size() == 1);
  CHECK(h.observer.changed[0].stopped);
  CHECK(h.observer.changed[0].stop_reason == StopReason::removed);
  h.observer.changed.clear();

  // A refused commit reports nothing.
  h.push(read("c"));
  MessageSpec bad;
  bad.process_query_key = "bad-label";
  bad.robot_code = "robot";
  bad.labels = {{"k", "\xff"}};
  REQUIRE(h.table.add(bad) == tracking::MessageTable::AddOutcome::created);
  h.table.flush();
  CHECK(h.observer.changed.empty());
}

TEST_CASE(
    "push mode: reconcile while up, poll.schedule after fallback_after down, then a catch-up") {
  using scheduler::decide_mode;
  using scheduler::ModeDecision;
  using scheduler::PollMode;
  const TimePoint t0 = from_unix_ms(1'764'064'800'000);
  scheduler::PushState push{true, false, t0, 30 * k_s};
  // Just started: polls reconcile, a catch-up is owed (what was pushed while
  // the daemon was down never arrived).
  CHECK(decide_mode(PollMode::reconcile, true, push, t0 + 10 * k_s) ==
        ModeDecision{PollMode::reconcile, false, false, true});
  // It connects: the catch-up, once.
  push.connected = true;
  push.since = t0 + 12 * k_s;
  CHECK(decide_mode(PollMode::reconcile, true, push, t0 + 12 * k_s) ==
        ModeDecision{PollMode::reconcile, false, true, false});
  // A short gap changes nothing.
  push.connected = false;
  push.since = t0 + k_min;
  CHECK(decide_mode(PollMode::reconcile, false, push, t0 + k_min + 29 * k_s) ==
        ModeDecision{PollMode::reconcile, false, false, false});
  // Down fallback_after: poll.schedule, once; a catch-up will be owed.
  CHECK(decide_mode(PollMode::reconcile, false, push, t0 + k_min + 30 * k_s) ==
        ModeDecision{PollMode::normal, true, false, true});
  CHECK(decide_mode(PollMode::normal, true, push, t0 + 5 * k_min) ==
        ModeDecision{PollMode::normal, false, false, true});
  // Back: reconcile, and the catch-up.
  push.connected = true;
  push.since = t0 + 6 * k_min;
  CHECK(decide_mode(PollMode::normal, true, push, t0 + 6 * k_min) ==
        ModeDecision{PollMode::reconcile, false, true, false});
  // Push off: poll.schedule, nothing owed.
  push.enabled = false;
  CHECK(decide_mode(PollMode::reconcile, true, push, t0) ==
        ModeDecision{PollMode::normal, false, false, false});
}

namespace {

// Records what the table tells the poller, in order.
struct Recording final : tracking::Listener {
  std::vector<std::string> calls;
  void reserve(std::size_t never_polled, std::size_t polled) override {
    calls.push_back("reserve " + std::to_string(never_polled) + " " + std::to_string(polled));
  }
  void scheduled(const MessageRecord& record) override {
    calls.push_back("scheduled " + record.spec.process_query_key);
  }
  void stopped(const std::string& key) override { calls.push_back("stopped " + key); }
};

} // namespace

TEST_CASE("table: at start-up the poller hears how many loaded messages to expect, first") {
  auto store = store::Store::open(":memory:");
  FakeClock clock;
  const auto stored = [&](const std::string& key, bool polled, bool stopped) {
    MessageSpec spec;
    spec.process_query_key = key;
    spec.robot_code = "robot";
    store::Commit c;
    c.message = tracker::new_record(spec, MessageSource::api, clock.now());
    if (polled) {
      c.message.last_poll = clock.now();
    }
    c.message.stopped = stopped;
    if (stopped) {
      c.message.stop_reason = StopReason::fully_read;
    }
    store->commit(c);
  };
  stored("never-1", false, false);
  stored("polled-1", true, false);
  stored("never-2", false, false);
  stored("done", true, true);
  config::Config cfg = base_config(); // lists "key": added after the loaded ones
  Counting observer;
  tracking::MessageTable table(
      cfg, *store, clock, [](const std::vector<Delivery>&) {}, observer, 7);
  Recording poller;
  table.set_listener(&poller);
  table.start();
  std::string said;
  for (const auto& c : poller.calls) {
    said += c + "; ";
  }
  INFO(said);
  REQUIRE(poller.calls.size() == 6);
  CHECK(poller.calls[0] == "reserve 2 1"); // tracked rows only: "done" has stopped
  std::vector<std::string> loaded(poller.calls.begin() + 1, poller.calls.begin() + 4);
  std::sort(loaded.begin(), loaded.end()); // in storage order
  CHECK(loaded ==
        std::vector<std::string>{"scheduled never-1", "scheduled never-2", "scheduled polled-1"});
  CHECK(poller.calls[4] == "scheduled key"); // added
  CHECK(poller.calls[5] == "scheduled key"); // and committed
  CHECK(table.tracked() == 4);
  CHECK(table.size() == 5);
}

TEST_CASE("push mode: the next poll after a fallback, and the catch-up's order") {
  const TimePoint t0 = from_unix_ms(1'764'064'800'000);
  const config::Poll poll;
  MessageRecord m;
  m.sent_at = t0;
  m.added_at = t0;
  m.last_poll = t0 + k_min;      // age 1 min: poll.schedule says every 15 s
  m.next_poll = t0 + 21 * k_min; // the reconcile schedule's 20 min
  CHECK(scheduler::fallback_next_poll(m, poll.schedule, t0 + 2 * k_min) == t0 + 2 * k_min);
  CHECK(scheduler::fallback_next_poll(m, poll.schedule, t0 + k_min + 5 * k_s) ==
        t0 + k_min + 15 * k_s);
  m.next_poll = t0 + k_min + 10 * k_s; // sooner already: kept
  CHECK(scheduler::fallback_next_poll(m, poll.schedule, t0 + k_min + 5 * k_s) ==
        t0 + k_min + 10 * k_s);
  // Catch-up: from the outage's start, or the message's addition if later.
  CHECK(scheduler::catch_up_time(m, t0 + 30 * k_s) == t0 + 30 * k_s);
  CHECK(scheduler::catch_up_time(m, t0 - k_min) == t0);
}
