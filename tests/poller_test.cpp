// The poller on a fake clock and a fake engine: the monthly budget (never
// exceeded, first polls ahead, counted before the calls go and across a
// restart, the month's turn), DingTalk's quota, and the schedule switches of
// push mode.
#include "fakes/fake_engine.hpp"
#include "readreceiptd/scheduler/scheduler.hpp"
#include "readreceiptd/tracker/tracker.hpp"
#include "readreceiptd/tracking/table.hpp"

#include <algorithm>
#include <doctest/doctest.h>

using namespace rrd;
using rrd::testing::FakeEngine;

namespace {

constexpr Millis k_s{1'000};
constexpr Millis k_min{60'000};
constexpr Millis k_h{3'600'000};

TimePoint at(const std::string& text) {
  TimePoint t;
  REQUIRE(parse_rfc3339(text, t));
  return t;
}

config::Config base_config(int messages, std::optional<std::int64_t> budget) {
  config::Config cfg;
  cfg.dingtalk.endpoint = "http://dingtalk.test";
  cfg.dingtalk.auth_kind = config::DingTalk::AuthKind::fixed_token;
  cfg.dingtalk.fixed_token.access_token = "tok-0123456789abcdef";
  cfg.dingtalk.robot_code = "robot";
  cfg.dingtalk.requests_per_second = 1000;
  cfg.dingtalk.monthly_call_budget = budget;
  cfg.poll.schedule = {{std::nullopt, k_min}};
  cfg.poll.max_age = 72 * k_h;
  for (int i = 0; i < messages; ++i) {
    MessageSpec m;
    m.process_query_key = "key" + std::to_string(i);
    m.robot_code = "robot";
    m.expected_readers = {"never"};
    cfg.messages.push_back(m);
  }
  return cfg;
}

constexpr const char* k_nothing_read = R"({"sendStatus":"SUCCESS","readUserIds":[]})";

struct Harness {
  Harness(config::Config c, TimePoint start, std::unique_ptr<store::Store> existing = nullptr)
      : clock(start), cfg(std::move(c)),
        store(existing ? std::move(existing) : store::Store::open(":memory:")), engine(&clock),
        table(
            cfg, *store, clock, [](const std::vector<Delivery>&) {}, table_observer, 3),
        sched(cfg, table, *store, engine, clock, observer, 3) {
    sched.start();
    table.start();
  }

  // Runs the loop for `span` in steps of `step`, answering every query with
  // `answer`; returns how many queries went out.
  int run(Millis span, Millis step = k_s, const std::string& answer = k_nothing_read,
          int status = 200) {
    int queries = 0;
    const TimePoint until = clock.now() + span;
    while (clock.now() < until) {
      sched.pump();
      while (!engine.pending().empty()) {
        engine.answer(FakeEngine::reply(status, answer));
        ++queries;
      }
      engine.run_once(Millis{0});
      table.flush();
      clock.advance(step);
    }
    return queries;
  }

  FakeClock clock;
  config::Config cfg;
  std::unique_ptr<store::Store> store;
  FakeEngine engine;
  scheduler::Observer observer;
  tracking::Observer table_observer;
  tracking::MessageTable table;
  scheduler::Scheduler sched;
};

} // namespace

TEST_CASE("poller: a budget is never exceeded, and the count is in the store before the calls") {
  Harness h(base_config(3, 20), at("2026-12-10T00:00:00Z"));
  // Unbudgeted, these messages (and one more each hour) polled every minute
  // for three days would make thousands of calls.
  int calls = 0;
  for (int hour = 0; hour < 73; ++hour) {
    MessageSpec m;
    m.process_query_key = "hourly" + std::to_string(hour);
    m.robot_code = "robot";
    h.table.add(m);
    calls += h.run(k_h, k_min);
    REQUIRE(calls <= 20);
  }
  CHECK(calls >= 15); // spent, not hoarded
  const auto b = h.sched.call_budget();
  CHECK(b.month == "2026-12");
  CHECK(b.calls == calls);
  CHECK(b.budget == std::optional<std::int64_t>(20));
  CHECK(b.stretch > 1.0);
  const auto saved = h.store->load_month("2026-12");
  REQUIRE(saved);
  CHECK(saved->calls >= calls); // reserved ahead of the calls
  CHECK(saved->calls <= 20);
}

TEST_CASE("poller: the month's count survives a restart, and no call is forgotten") {
  auto first = std::make_unique<Harness>(base_config(2, 30), at("2026-12-10T00:00:00Z"));
  const int before = first->run(10 * k_min);
  CHECK(before > 0);
  auto store = std::move(first->store);
  const TimePoint t = first->clock.now();
  first.reset();
  Harness second(base_config(2, 30), t, std::move(store));
  CHECK(second.sched.call_budget().calls >= before);
  const int after = second.run(2 * k_h);
  CHECK(before + after <= 30);
}

TEST_CASE("poller: a new message's first poll goes ahead of the stretched ones") {
  Harness h(base_config(3, 12), at("2026-12-10T00:00:00Z"));
  h.run(3 * k_h);
  const std::int64_t spent = h.sched.call_budget().calls;
  REQUIRE(spent < 12); // something held back for first polls
  MessageSpec late;
  late.process_query_key = "late";
  late.robot_code = "robot";
  REQUIRE(h.table.add(late) == tracking::MessageTable::AddOutcome::created);
  h.table.flush();
  h.sched.pump();
  REQUIRE(h.engine.pending().size() == 1);
  CHECK(h.engine.pending().front().request.body.find("\"late\"") != std::string::npos);
}

TEST_CASE("poller: a spent budget pauses polls until the month turns, in Beijing time") {
  // 20 minutes before midnight on 31 December in UTC+8.
  Harness h(base_config(1, 5), at("2026-12-31T15:40:00Z"));
  const int december = h.run(19 * k_min, 10 * k_s);
  CHECK(december <= 5);
  h.run(59 * k_s, 10 * k_s);
  CHECK(h.sched.call_budget().month == "2026-12");
  const int january = h.run(10 * k_min, 10 * k_s);
  CHECK(h.sched.call_budget().month == "2027-01");
  CHECK(january > 0);
  CHECK(h.store->load_month("2026-12")->calls <= 5);
  CHECK_FALSE(h.table.find("key0")->stopped);
}

TEST_CASE("poller: DingTalk's ApiCountLimit pauses read-status calls until the month turns") {
  Harness h(base_config(2, std::nullopt), at("2026-12-31T15:00:00Z"));
  h.sched.pump();
  h.clock.advance(Millis{10}); // the rate limiter's spacing
  h.sched.pump();
  REQUIRE(h.engine.pending().size() == 2);
  h.engine.answer(FakeEngine::reply(
      403, R"({"code":"Forbidden.AccessDenied.ApiCountLimitForOrg","message":"quota"})"));
  h.engine.answer(FakeEngine::reply(200, k_nothing_read));
  h.engine.run_once(Millis{0});
  h.table.flush();
  CHECK(h.sched.call_budget().quota_exhausted);
  CHECK(h.store->load_month("2026-12")->quota_exhausted);
  // No read-status call for the rest of the month; the message is not dropped.
  CHECK(h.run(59 * k_min, 30 * k_s) == 0);
  CHECK_FALSE(h.table.find("key0")->stopped);
  const auto wake = h.sched.next_wakeup();
  REQUIRE(wake);
  CHECK(*wake <= at("2026-12-31T16:00:00Z")); // it knows when to look again
  CHECK(h.run(5 * k_min, 30 * k_s) > 0);      // January
  CHECK_FALSE(h.sched.call_budget().quota_exhausted);
}

TEST_CASE("poller: reconcile schedule while push is up, poll.schedule after the fallback") {
  auto cfg = base_config(1, std::nullopt);
  cfg.dingtalk.auth_kind = config::DingTalk::AuthKind::internal_app;
  cfg.dingtalk.internal_app = {"appkey", "app-secret-0123456789"};
  cfg.dingtalk.stream.enabled = true;
  cfg.poll.reconcile_schedule = {{std::nullopt, 20 * k_min}};
  const TimePoint t0 = at("2026-12-10T00:00:00Z");
  Harness h(cfg, t0);
  h.sched.set_push_state(true, t0);
  // The token first, then the first poll.
  h.sched.pump();
  h.engine.answer(
      FakeEngine::reply(200, R"({"accessToken":"tok-abcdef0123456789","expireIn":7200})"));
  h.engine.run_once(Millis{0});
  h.run(10 * k_s);
  const TimePoint first_poll = *h.table.find("key0")->last_poll;
  CHECK(h.table.find("key0")->next_poll == first_poll + 20 * k_min);
  // Down 29 s: no change. Down 30 s: poll.schedule, next poll brought forward.
  h.sched.set_push_state(false, h.clock.now());
  const TimePoint down = h.clock.now();
  h.run(29 * k_s);
  CHECK(h.table.find("key0")->next_poll == first_poll + 20 * k_min);
  h.run(2 * k_s);
  CHECK(h.sched.call_budget().mode == scheduler::PollMode::normal);
  CHECK(h.table.find("key0")->next_poll <= first_poll + k_min);
  h.run(3 * k_min);
  const TimePoint polled = *h.table.find("key0")->last_poll;
  CHECK(polled > down);
  // Back: a catch-up poll at once, then the reconcile schedule.
  h.sched.set_push_state(true, h.clock.now());
  CHECK(h.table.find("key0")->next_poll <= h.clock.now());
  h.run(2 * k_s);
  CHECK(*h.table.find("key0")->last_poll > polled);
  CHECK(h.table.find("key0")->next_poll == *h.table.find("key0")->last_poll + 20 * k_min);
}

TEST_CASE("poller: each kind asks its own API, and the oto window closes without a call") {
  config::Config cfg = base_config(0, std::nullopt);
  cfg.poll.schedule = {{std::nullopt, 3 * k_h}};
  const TimePoint start = at("2026-12-10T00:00:00Z");
  for (const MessageKind kind : k_all_message_kinds) {
    MessageSpec m;
    m.process_query_key = std::string(to_string(kind)) + "+/=";
    m.kind = kind;
    m.robot_code = "robot";
    m.sent_at = start;
    if (kind == MessageKind::group) {
      m.token = "group-bot-token-0123";
    }
    cfg.messages.push_back(m);
  }
  Harness h(cfg, start);
  const std::string oto_key = "oto+/=";
  std::vector<std::string> requests;
  std::vector<TimePoint> oto_polls;
  const std::int64_t read_ms = to_unix_ms(start + 5 * k_min);
  const auto answer_all = [&] {
    while (!h.engine.pending().empty()) {
      const http::Request& r = h.engine.pending().front().request;
      const std::string path = r.url.substr(std::string("http://dingtalk.test").size());
      requests.push_back(r.method + " " + path);
      if (r.method == "GET") {
        oto_polls.push_back(h.clock.now());
        h.engine.answer(FakeEngine::reply(
            200, R"({"sendStatus":"SUCCESS","messageReadInfoList":[)"
                 R"({"name":"A","userId":"a","readStatus":"READ","readTimestamp":)" +
                     std::to_string(read_ms) +
                     R"(},{"name":"B","userId":"b","readStatus":"UNREAD"}]})"));
      } else {
        h.engine.answer(FakeEngine::reply(200, R"({"sendStatus":"SUCCESS","readUserIds":["a"]})"));
      }
    }
  };
  const auto turn = [&] {
    h.sched.pump();
    answer_all();
    h.engine.run_once(Millis{0});
    h.table.flush();
  };
  for (int i = 0; i < 5; ++i) {
    turn();
    h.clock.advance(Millis{10}); // the rate limit's next slot
  }
  std::sort(requests.begin(), requests.end());
  CHECK(requests ==
        std::vector<std::string>{
            "GET /v1.0/robot/oToMessages/readStatus?robotCode=robot&processQueryKey=oto%2B%2F%3D",
            "POST /v1.0/robot/groupMessages/query", "POST /v1.0/robot/privateChatMessages/query"});
  const MessageRecord* oto = h.table.find(oto_key);
  REQUIRE(oto != nullptr);
  CHECK(oto->recipients == std::vector<std::string>{"a", "b"});
  CHECK(oto->read_info == std::vector<ReadInfo>{{from_unix_ms(read_ms), ReadVia::poll}});
  CHECK(unread_user_ids(*oto) == std::vector<std::string>{"b"});

  // A day in 10 s steps: polls every 3 h, the last one in the window's last
  // minute, then the close, which makes no call.
  const TimePoint close = start + tracker::k_oto_window;
  while (h.clock.now() < close + k_min) {
    turn();
    h.clock.advance(10 * k_s);
  }
  REQUIRE_FALSE(oto_polls.empty());
  CHECK(oto_polls.back() >= close - k_min);
  CHECK(oto_polls.back() < close);
  CHECK(oto_polls.size() <= 10); // 8 scheduled, the last poll, the first
  oto = h.table.find(oto_key);
  REQUIRE(oto != nullptr);
  CHECK(oto->stopped);
  CHECK(oto->stop_reason == StopReason::expired);
  CHECK(oto->stop_detail == "read status window closed");
  const auto stored = h.store->load_message(oto_key);
  REQUIRE(stored);
  CHECK(stored->spec.kind == MessageKind::oto);
  CHECK(stored->recipients == std::vector<std::string>{"a", "b"});
  const auto group = h.store->load_message("group+/=");
  REQUIRE(group);
  CHECK(group->spec.token == "group-bot-token-0123");
  CHECK_FALSE(group->stopped); // groups and private chats have no window
}

namespace {
// A work gate the test opens and closes.
struct SwitchGate final : ha::WorkGate {
  bool open = true;
  bool may_start() const override { return open; }
};
} // namespace

TEST_CASE("poller: no DingTalk call starts while the work gate is closed") {
  Harness h(base_config(3, std::nullopt), at("2026-12-10T00:00:00Z"));
  SwitchGate gate;
  h.sched.set_gate(&gate);
  gate.open = false;
  CHECK(h.run(5 * k_min) == 0);
  gate.open = true;
  CHECK(h.run(k_min) >= 3); // the due polls go once it opens
}
