// The metrics module: every series of the README's table from start-up, the mapping
// from scheduler and dispatcher hooks to counters, the state gauges, the
// process collector, and the exposer's address handling.
#include "fakes/fake_engine.hpp"
#include "fakes/process.hpp"
#include "readreceiptd/common/version.hpp"
#include "readreceiptd/metrics/metrics.hpp"
#include "readreceiptd/metrics/process_collector.hpp"

#include <arpa/inet.h>
#include <cstdio>
#include <ctime>
#include <doctest/doctest.h>
#include <filesystem>
#include <httplib.h>
#include <limits>
#include <map>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <optional>
#include <prometheus/metric_family.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace rrd;
using metrics::Metrics;
using prometheus::MetricFamily;
using prometheus::MetricType;
using rrd::testing::FakeEngine;
using rrd::testing::TakenPort;

namespace {

using Labels = std::map<std::string, std::string>;

struct Found {
  MetricType type;
  prometheus::ClientMetric metric;
};

// The series `name` with exactly `labels`, if any.
std::optional<Found> sample(const std::vector<MetricFamily>& families, const std::string& name,
                            const Labels& labels = {}) {
  for (const auto& f : families) {
    if (f.name != name) {
      continue;
    }
    for (const auto& m : f.metric) {
      Labels have;
      for (const auto& l : m.label) {
        have[l.name] = l.value;
      }
      if (have == labels) {
        return Found{f.type, m};
      }
    }
  }
  return std::nullopt;
}

// The value of a counter or gauge; fails the test when the series is absent.
double value(const std::vector<MetricFamily>& families, const std::string& name,
             const Labels& labels = {}) {
  const auto s = sample(families, name, labels);
  INFO(name);
  REQUIRE(s.has_value());
  switch (s->type) {
  case MetricType::Counter:
    return s->metric.counter.value;
  case MetricType::Gauge:
    return s->metric.gauge.value;
  default:
    FAIL("not a counter or gauge");
  }
  return -1;
}

prometheus::ClientMetric::Histogram histogram(const std::vector<MetricFamily>& families,
                                              const std::string& name, const Labels& labels = {}) {
  const auto s = sample(families, name, labels);
  INFO(name);
  REQUIRE(s.has_value());
  REQUIRE(s->type == MetricType::Histogram);
  return s->metric.histogram;
}

MetricType type_of(const std::vector<MetricFamily>& families, const std::string& name) {
  for (const auto& f : families) {
    if (f.name == name) {
      return f.type;
    }
  }
  FAIL("no family " << name);
  return MetricType::Untyped;
}

config::Webhook make_webhook(const std::string& name) {
  config::Webhook w;
  w.name = name;
  w.url = "http://hooks.test/" + name;
  w.secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  return w;
}

config::Config base_config(std::vector<std::string> webhooks = {"ops", "audit"}) {
  config::Config cfg;
  cfg.metrics.listen = "";
  cfg.dingtalk.endpoint = "http://dingtalk.test";
  cfg.dingtalk.auth_kind = config::DingTalk::AuthKind::fixed_token;
  cfg.dingtalk.fixed_token.access_token = "fixed-token-value";
  cfg.dingtalk.robot_code = "robot";
  cfg.dingtalk.requests_per_second = 100;
  for (const auto& w : webhooks) {
    cfg.webhooks.push_back(make_webhook(w));
  }
  return cfg;
}

const std::vector<std::string> k_stop_reason_names{"fully_read", "recalled", "expired",
                                                   "max_age",    "invalid",  "removed"};
const std::vector<std::string> k_dingtalk_reason_names{
    "throttled", "auth", "server", "network", "timeout", "bad_response", "client"};
const std::vector<std::string> k_webhook_reason_names{"timeout", "network", "status"};

} // namespace

TEST_CASE("metrics: every series exists from start-up, known label values at 0") {
  Metrics m(base_config());
  const auto f = m.registry()->Collect();

  CHECK(value(f, "readreceiptd_build_info", {{"version", k_version}}) == 1);
  CHECK(type_of(f, "readreceiptd_build_info") == MetricType::Gauge);
  CHECK(value(f, "readreceiptd_messages_tracked") == 0);
  CHECK(type_of(f, "readreceiptd_messages_tracked") == MetricType::Gauge);
  for (const auto& reason : k_stop_reason_names) {
    CHECK(value(f, "readreceiptd_messages_stopped_total", {{"reason", reason}}) == 0);
  }
  CHECK(type_of(f, "readreceiptd_messages_stopped_total") == MetricType::Counter);
  CHECK(value(f, "readreceiptd_reads_detected_total", {{"via", "poll"}}) == 0);
  CHECK(value(f, "readreceiptd_reads_detected_total", {{"via", "push"}}) == 0);
  CHECK(type_of(f, "readreceiptd_reads_detected_total") == MetricType::Counter);
  for (const std::string api : {"query", "token"}) {
    CHECK(value(f, "readreceiptd_dingtalk_requests_total", {{"api", api}}) == 0);
    for (const auto& reason : k_dingtalk_reason_names) {
      CHECK(value(f, "readreceiptd_dingtalk_requests_failed_total",
                  {{"api", api}, {"reason", reason}}) == 0);
    }
    const auto h = histogram(f, "readreceiptd_dingtalk_request_duration_seconds", {{"api", api}});
    CHECK(h.sample_count == 0);
    // 5 ms .. 10 s, then +Inf.
    REQUIRE(h.bucket.size() == metrics::k_request_duration_buckets.size() + 1);
    CHECK(h.bucket.front().upper_bound == doctest::Approx(0.005));
    CHECK(h.bucket[h.bucket.size() - 2].upper_bound == doctest::Approx(10));
  }
  CHECK(histogram(f, "readreceiptd_poll_delay_seconds").sample_count == 0);
  for (const std::string hook : {"ops", "audit"}) {
    CHECK(value(f, "readreceiptd_webhook_deliveries_total", {{"webhook", hook}}) == 0);
    for (const auto& reason : k_webhook_reason_names) {
      CHECK(value(f, "readreceiptd_webhook_deliveries_failed_total",
                  {{"webhook", hook}, {"reason", reason}}) == 0);
    }
    CHECK(histogram(f, "readreceiptd_webhook_delivery_duration_seconds", {{"webhook", hook}})
              .sample_count == 0);
    CHECK(value(f, "readreceiptd_webhook_pending_events", {{"webhook", hook}}) == 0);
    CHECK(value(f, "readreceiptd_webhook_dead_letters", {{"webhook", hook}}) == 0);
    CHECK(value(f, "readreceiptd_webhook_oldest_pending_age_seconds", {{"webhook", hook}}) == 0);
    CHECK(value(f, "readreceiptd_webhook_disabled", {{"webhook", hook}}) == 0);
  }
  CHECK(type_of(f, "readreceiptd_webhook_oldest_pending_age_seconds") == MetricType::Gauge);
  CHECK(type_of(f, "readreceiptd_webhook_disabled") == MetricType::Gauge);
  CHECK(value(f, "readreceiptd_config_last_reload_successful") == 1);
  CHECK(type_of(f, "readreceiptd_config_last_reload_successful") == MetricType::Gauge);
  CHECK(type_of(f, "readreceiptd_config_last_reload_success_timestamp_seconds") ==
        MetricType::Gauge);
  CHECK(type_of(f, "readreceiptd_webhook_pending_events") == MetricType::Gauge);
  CHECK(type_of(f, "readreceiptd_webhook_dead_letters") == MetricType::Gauge);
  CHECK(value(f, "readreceiptd_config_reloads_total") == 0);
  CHECK(value(f, "readreceiptd_config_reloads_failed_total") == 0);
  CHECK(value(f, "readreceiptd_last_successful_poll_timestamp_seconds") == 0);
  CHECK(value(f, "readreceiptd_api_update_subscribers") == 0);
  CHECK(type_of(f, "readreceiptd_api_update_subscribers") == MetricType::Gauge);
  for (const std::string reason : {"queue_full", "write_timeout"}) {
    CHECK(value(f, "readreceiptd_api_update_subscribers_dropped_total", {{"reason", reason}}) == 0);
  }
  CHECK(type_of(f, "readreceiptd_api_update_subscribers_dropped_total") == MetricType::Counter);
  CHECK_FALSE(m.port().has_value()); // metrics.listen "" : no exposer
}

TEST_CASE("metrics: the live-update subscribers and their drops follow the hub's counts") {
  Metrics m(base_config());
  api::UpdateStats stats;
  stats.subscribers = 3;
  stats.dropped = {2, 1}; // queue_full, write_timeout
  m.set_update_stats(stats);
  auto f = m.registry()->Collect();
  CHECK(value(f, "readreceiptd_api_update_subscribers") == 3);
  CHECK(value(f, "readreceiptd_api_update_subscribers_dropped_total", {{"reason", "queue_full"}}) ==
        2);
  CHECK(value(f, "readreceiptd_api_update_subscribers_dropped_total",
              {{"reason", "write_timeout"}}) == 1);
  // The hub's counts only grow; the counters add what is new.
  stats.subscribers = 1;
  stats.dropped = {5, 1};
  m.set_update_stats(stats);
  m.set_update_stats(stats);
  f = m.registry()->Collect();
  CHECK(value(f, "readreceiptd_api_update_subscribers") == 1);
  CHECK(value(f, "readreceiptd_api_update_subscribers_dropped_total", {{"reason", "queue_full"}}) ==
        5);
  CHECK(value(f, "readreceiptd_api_update_subscribers_dropped_total",
              {{"reason", "write_timeout"}}) == 1);
}

TEST_CASE("metrics: scheduler hooks move the DingTalk, poll, read and stop series") {
  Metrics m(base_config());
  scheduler::Observer& o = m;
  o.request_finished(scheduler::Api::query, Millis{120}, dingtalk::FailureReason::none);
  o.request_finished(scheduler::Api::query, Millis{30}, dingtalk::FailureReason::server);
  o.request_finished(scheduler::Api::query, Millis{2'000}, dingtalk::FailureReason::throttled);
  o.request_finished(scheduler::Api::token, Millis{50}, dingtalk::FailureReason::auth);
  o.poll_started(Millis{2'500});
  o.poll_started(Millis{0});
  o.poll_succeeded(from_unix_ms(1'764'064'800'500));
  tracking::Observer& t = m;
  for (int i = 0; i < 3; ++i) {
    t.read_committed(ReadVia::poll, std::nullopt);
  }
  t.read_committed(ReadVia::push, Millis{40});
  t.read_committed(ReadVia::push, Millis{2'000});
  t.message_stopped(StopReason::fully_read);
  t.message_stopped(StopReason::fully_read);
  t.message_stopped(StopReason::removed);
  t.tracked_changed(7);

  const auto f = m.registry()->Collect();
  CHECK(value(f, "readreceiptd_dingtalk_requests_total", {{"api", "query"}}) == 3);
  CHECK(value(f, "readreceiptd_dingtalk_requests_total", {{"api", "token"}}) == 1);
  CHECK(value(f, "readreceiptd_dingtalk_requests_failed_total",
              {{"api", "query"}, {"reason", "server"}}) == 1);
  CHECK(value(f, "readreceiptd_dingtalk_requests_failed_total",
              {{"api", "query"}, {"reason", "throttled"}}) == 1);
  CHECK(value(f, "readreceiptd_dingtalk_requests_failed_total",
              {{"api", "token"}, {"reason", "auth"}}) == 1);
  CHECK(value(f, "readreceiptd_dingtalk_requests_failed_total",
              {{"api", "query"}, {"reason", "auth"}}) == 0);
  const auto q = histogram(f, "readreceiptd_dingtalk_request_duration_seconds", {{"api", "query"}});
  CHECK(q.sample_count == 3);
  CHECK(q.sample_sum == doctest::Approx(2.15));
  const auto delay = histogram(f, "readreceiptd_poll_delay_seconds");
  CHECK(delay.sample_count == 2);
  CHECK(delay.sample_sum == doctest::Approx(2.5));
  for (const auto& b : delay.bucket) {
    CAPTURE(b.upper_bound);
    CHECK(b.cumulative_count == (b.upper_bound < 2.5 ? 1u : 2u));
  }
  CHECK(value(f, "readreceiptd_last_successful_poll_timestamp_seconds") ==
        doctest::Approx(1'764'064'800.5));
  CHECK(value(f, "readreceiptd_reads_detected_total", {{"via", "poll"}}) == 3);
  CHECK(value(f, "readreceiptd_reads_detected_total", {{"via", "push"}}) == 2);
  const auto push_delay = histogram(f, "readreceiptd_read_delay_seconds", {{"via", "push"}});
  CHECK(push_delay.sample_count == 2);
  CHECK(push_delay.sample_sum == doctest::Approx(2.04));
  CHECK(histogram(f, "readreceiptd_read_delay_seconds", {{"via", "poll"}}).sample_count == 0);
  CHECK(value(f, "readreceiptd_messages_stopped_total", {{"reason", "fully_read"}}) == 2);
  CHECK(value(f, "readreceiptd_messages_stopped_total", {{"reason", "removed"}}) == 1);
  CHECK(value(f, "readreceiptd_messages_stopped_total", {{"reason", "recalled"}}) == 0);
  CHECK(value(f, "readreceiptd_messages_tracked") == 7);
}

TEST_CASE("metrics: dispatcher hooks count attempts, failures by reason, and dead letters") {
  Metrics m(base_config());
  const auto o = m.webhook_observer();
  REQUIRE(o.on_attempt);
  REQUIRE(o.on_delivered);
  REQUIRE(o.on_failed);
  REQUIRE(o.on_dead);
  o.on_attempt("ops", Millis{40});
  o.on_delivered("ops", Millis{40});
  o.on_attempt("ops", Millis{2'000});
  o.on_failed("ops", webhook::FailureReason::timeout);
  o.on_attempt("ops", Millis{10});
  o.on_failed("ops", webhook::FailureReason::status);
  o.on_dead("ops");
  o.on_attempt("audit", Millis{10});
  o.on_failed("audit", webhook::FailureReason::network);

  const auto f = m.registry()->Collect();
  CHECK(value(f, "readreceiptd_webhook_deliveries_total", {{"webhook", "ops"}}) == 3);
  CHECK(value(f, "readreceiptd_webhook_deliveries_failed_total",
              {{"webhook", "ops"}, {"reason", "timeout"}}) == 1);
  CHECK(value(f, "readreceiptd_webhook_deliveries_failed_total",
              {{"webhook", "ops"}, {"reason", "status"}}) == 1);
  CHECK(value(f, "readreceiptd_webhook_deliveries_failed_total",
              {{"webhook", "ops"}, {"reason", "network"}}) == 0);
  CHECK(value(f, "readreceiptd_webhook_deliveries_total", {{"webhook", "audit"}}) == 1);
  CHECK(value(f, "readreceiptd_webhook_deliveries_failed_total",
              {{"webhook", "audit"}, {"reason", "network"}}) == 1);
  const auto d =
      histogram(f, "readreceiptd_webhook_delivery_duration_seconds", {{"webhook", "ops"}});
  CHECK(d.sample_count == 3);
  CHECK(d.sample_sum == doctest::Approx(2.05));
  CHECK(value(f, "readreceiptd_webhook_dead_letters", {{"webhook", "ops"}}) == 1);
  CHECK(value(f, "readreceiptd_webhook_dead_letters", {{"webhook", "audit"}}) == 0);
}

TEST_CASE("metrics: reloads are counted, and a webhook added by a reload gets its series at 0") {
  Metrics m(base_config({"ops"}));
  CHECK_FALSE(sample(m.registry()->Collect(), "readreceiptd_webhook_deliveries_total",
                     {{"webhook", "billing"}}));
  m.reload_failed();
  m.reload_succeeded(base_config({"ops", "billing"}), from_unix_ms(1'764'064'800'000));
  const auto f = m.registry()->Collect();
  CHECK(value(f, "readreceiptd_config_reloads_total") == 2);
  CHECK(value(f, "readreceiptd_config_reloads_failed_total") == 1);
  CHECK(value(f, "readreceiptd_webhook_deliveries_total", {{"webhook", "billing"}}) == 0);
  for (const auto& reason : k_webhook_reason_names) {
    CHECK(value(f, "readreceiptd_webhook_deliveries_failed_total",
                {{"webhook", "billing"}, {"reason", reason}}) == 0);
  }
  CHECK(value(f, "readreceiptd_webhook_pending_events", {{"webhook", "billing"}}) == 0);
  CHECK(value(f, "readreceiptd_webhook_dead_letters", {{"webhook", "billing"}}) == 0);
  CHECK(histogram(f, "readreceiptd_webhook_delivery_duration_seconds", {{"webhook", "billing"}})
            .sample_count == 0);
}

TEST_CASE("metrics: the last reload's outcome and time, 1 and the start time from start-up") {
  const TimePoint start = from_unix_ms(1'764'064'800'000);
  Metrics m(base_config({"ops"}), start);
  auto f = m.registry()->Collect();
  CHECK(value(f, "readreceiptd_config_last_reload_successful") == 1);
  CHECK(value(f, "readreceiptd_config_last_reload_success_timestamp_seconds") == 1'764'064'800);

  // A rejected file: 0 until a reload succeeds, the time stays.
  m.reload_failed();
  f = m.registry()->Collect();
  CHECK(value(f, "readreceiptd_config_last_reload_successful") == 0);
  CHECK(value(f, "readreceiptd_config_last_reload_success_timestamp_seconds") == 1'764'064'800);
  m.reload_failed();
  CHECK(value(m.registry()->Collect(), "readreceiptd_config_last_reload_successful") == 0);

  m.reload_succeeded(base_config({"ops"}), start + Millis{90'500});
  f = m.registry()->Collect();
  CHECK(value(f, "readreceiptd_config_last_reload_successful") == 1);
  CHECK(value(f, "readreceiptd_config_last_reload_success_timestamp_seconds") ==
        doctest::Approx(1'764'064'890.5));
}

namespace {

// The scheduler and the dispatcher on a fake clock and engine, with Metrics
// as their observer, as the app wires them.
struct Loop {
  explicit Loop(config::Config c, std::unique_ptr<store::Store> existing = nullptr)
      : cfg(std::move(c)), store(existing ? std::move(existing) : store::Store::open(":memory:")),
        metrics(cfg, clock.now()),
        dispatcher(
            *store, engine, clock, [] { return 0.5; }, metrics.webhook_observer()),
        table(
            cfg, *store, clock, [this](std::vector<Delivery> d) { dispatcher.enqueue(d); }, metrics,
            7),
        sched(cfg, table, *store, engine, clock, metrics, 7) {
    dispatcher.configure(cfg.webhooks);
    dispatcher.load(store->load_pending_deliveries());
    sched.start();
    table.start();
    metrics.after_turn(clock.now(), table, sched, dispatcher, *store);
  }

  void turn() {
    clock.advance(Millis{100});
    sched.pump();
    dispatcher.pump();
    engine.run_once(Millis{0});
    table.flush();
    dispatcher.flush();
    metrics.after_turn(clock.now(), table, sched, dispatcher, *store);
  }

  // Answers every pending DingTalk query with `query_answer` and every
  // webhook delivery with `hook_status`, then runs the callbacks.
  void answer_all(const http::Response& query_answer, int hook_status = 200) {
    while (!engine.pending().empty()) {
      const bool query =
          engine.pending().front().request.url.find("dingtalk.test") != std::string::npos;
      engine.answer(query ? query_answer : FakeEngine::reply(hook_status, ""));
    }
    engine.run_once(Millis{0});
    table.flush();
    dispatcher.flush();
    metrics.after_turn(clock.now(), table, sched, dispatcher, *store);
  }

  std::vector<MetricFamily> collect() const { return metrics.registry()->Collect(); }

  config::Config cfg;
  FakeClock clock;
  FakeEngine engine{&clock};
  std::unique_ptr<store::Store> store;
  Metrics metrics;
  webhook::Dispatcher dispatcher;
  tracking::MessageTable table;
  scheduler::Scheduler sched;
};

MessageSpec spec(const std::string& key, std::vector<std::string> readers) {
  MessageSpec s;
  s.process_query_key = key;
  s.robot_code = "robot";
  s.expected_readers = std::move(readers);
  return s;
}

std::string page(std::vector<std::string> ids) {
  return nlohmann::json{{"sendStatus", "SUCCESS"}, {"readUserIds", ids}, {"hasMore", false}}.dump();
}

} // namespace

TEST_CASE("metrics: driven by the real scheduler and dispatcher, the series follow the run") {
  auto cfg = base_config({"ops"});
  cfg.messages = {spec("k1", {"u1", "u2"}), spec("k2", {"u1", "u2", "u3"})};
  Loop loop(cfg);
  auto f = loop.collect();
  CHECK(value(f, "readreceiptd_messages_tracked") == 2);

  // A server error on both polls first.
  for (int i = 0; i < 50 && loop.engine.pending().size() < 2; ++i) {
    loop.turn();
  }
  REQUIRE(loop.engine.pending().size() == 2);
  loop.answer_all(FakeEngine::reply(500, R"({"code":"system.error","message":"x"})"));
  f = loop.collect();
  CHECK(value(f, "readreceiptd_dingtalk_requests_total", {{"api", "query"}}) == 2);
  CHECK(value(f, "readreceiptd_dingtalk_requests_failed_total",
              {{"api", "query"}, {"reason", "server"}}) == 2);
  CHECK(value(f, "readreceiptd_last_successful_poll_timestamp_seconds") == 0);

  // Then both polls succeed: k1 fully read (2 reads), k2 one read of three.
  for (int i = 0; i < 200 && loop.engine.pending().size() < 2; ++i) {
    loop.turn();
  }
  REQUIRE(loop.engine.pending().size() == 2);
  while (!loop.engine.pending().empty()) {
    const auto key = nlohmann::json::parse(loop.engine.pending().front().request.body)
                         .at("processQueryKey")
                         .get<std::string>();
    loop.engine.answer(FakeEngine::reply(200, key == "k1" ? page({"u1", "u2"}) : page({"u3"})));
  }
  loop.engine.run_once(Millis{0});
  loop.table.flush();
  loop.metrics.after_turn(loop.clock.now(), loop.table, loop.sched, loop.dispatcher, *loop.store);
  f = loop.collect();
  CHECK(value(f, "readreceiptd_dingtalk_requests_total", {{"api", "query"}}) == 4);
  CHECK(value(f, "readreceiptd_reads_detected_total", {{"via", "poll"}}) == 3);
  CHECK(value(f, "readreceiptd_messages_stopped_total", {{"reason", "fully_read"}}) == 1);
  CHECK(value(f, "readreceiptd_messages_tracked") == 1);
  CHECK(
      value(f, "readreceiptd_last_successful_poll_timestamp_seconds") ==
      doctest::Approx(std::chrono::duration<double>(loop.clock.now().time_since_epoch()).count()));
  CHECK(histogram(f, "readreceiptd_poll_delay_seconds").sample_count == 4);
  // Three events committed (two reads, one stop), none delivered yet.
  CHECK(value(f, "readreceiptd_webhook_pending_events", {{"webhook", "ops"}}) == 3);

  // The webhook answers 200: everything delivered, pending back to 0.
  for (int i = 0; i < 10; ++i) {
    loop.dispatcher.pump();
    loop.answer_all(FakeEngine::reply(200, page({"u3"})), 200);
    loop.clock.advance(Millis{10});
  }
  f = loop.collect();
  CHECK(value(f, "readreceiptd_webhook_pending_events", {{"webhook", "ops"}}) == 0);
  CHECK(value(f, "readreceiptd_webhook_deliveries_total", {{"webhook", "ops"}}) == 3);
  CHECK(histogram(f, "readreceiptd_webhook_delivery_duration_seconds", {{"webhook", "ops"}})
            .sample_count == 3);
}

TEST_CASE("metrics: per webhook, the age of the oldest pending event and the disabled state") {
  auto cfg = base_config({"ops"});
  cfg.messages = {spec("k1", {"u1", "u2"})};
  Loop loop(cfg);
  auto f = loop.collect();
  CHECK(value(f, "readreceiptd_webhook_oldest_pending_age_seconds", {{"webhook", "ops"}}) == 0);
  CHECK(value(f, "readreceiptd_webhook_disabled", {{"webhook", "ops"}}) == 0);

  // One read: one event waits; its age grows with the clock.
  for (int i = 0; i < 50 && loop.engine.pending().empty(); ++i) {
    loop.turn();
  }
  REQUIRE(loop.engine.pending().size() == 1);
  loop.answer_all(FakeEngine::reply(200, page({"u1"})));
  REQUIRE(loop.dispatcher.pending("ops") == 1);
  loop.clock.advance(Millis{30'000});
  loop.metrics.after_turn(loop.clock.now(), loop.table, loop.sched, loop.dispatcher, *loop.store);
  f = loop.collect();
  CHECK(value(f, "readreceiptd_webhook_oldest_pending_age_seconds", {{"webhook", "ops"}}) ==
        doctest::Approx(30));

  // The receiver answers 410: disabled, the event still waits.
  loop.dispatcher.pump();
  loop.answer_all(FakeEngine::reply(200, page({"u1"})), 410);
  REQUIRE(loop.dispatcher.disabled("ops"));
  f = loop.collect();
  CHECK(value(f, "readreceiptd_webhook_disabled", {{"webhook", "ops"}}) == 1);
  CHECK(value(f, "readreceiptd_webhook_pending_events", {{"webhook", "ops"}}) == 1);
  CHECK(value(f, "readreceiptd_webhook_oldest_pending_age_seconds", {{"webhook", "ops"}}) ==
        doctest::Approx(30));

  // A changed configuration enables it again; once delivered, the age is 0.
  auto changed = cfg.webhooks;
  changed[0].url += "v2";
  loop.dispatcher.configure(changed);
  loop.metrics.after_turn(loop.clock.now(), loop.table, loop.sched, loop.dispatcher, *loop.store);
  CHECK(value(loop.collect(), "readreceiptd_webhook_disabled", {{"webhook", "ops"}}) == 0);
  for (int i = 0; i < 10 && loop.dispatcher.pending("ops") > 0; ++i) {
    loop.dispatcher.pump();
    loop.answer_all(FakeEngine::reply(200, page({"u1"})), 204);
    loop.clock.advance(Millis{10});
  }
  f = loop.collect();
  CHECK(value(f, "readreceiptd_webhook_pending_events", {{"webhook", "ops"}}) == 0);
  CHECK(value(f, "readreceiptd_webhook_oldest_pending_age_seconds", {{"webhook", "ops"}}) == 0);
}

TEST_CASE("metrics: an answer to a message removed while its poll was in flight is counted") {
  auto cfg = base_config({"ops"});
  cfg.messages = {spec("gone", {"u1"})};
  Loop loop(cfg);
  loop.turn();
  REQUIRE(loop.engine.pending().size() == 1);
  REQUIRE(loop.table.remove("gone"));
  loop.table.flush();
  loop.answer_all(FakeEngine::reply(500, R"({"code":"system.error","message":"x"})"));
  const auto f = loop.collect();
  CHECK(value(f, "readreceiptd_dingtalk_requests_total", {{"api", "query"}}) == 1);
  CHECK(value(f, "readreceiptd_dingtalk_requests_failed_total",
              {{"api", "query"}, {"reason", "server"}}) == 1);
  CHECK(value(f, "readreceiptd_messages_stopped_total", {{"reason", "removed"}}) == 1);
  CHECK(value(f, "readreceiptd_messages_tracked") == 0);
}

TEST_CASE("metrics: state gauges are right from start-up, from the store and the dispatcher") {
  // A previous run left one pending delivery for ops and dead letters for
  // ops and for a webhook that is no longer configured.
  auto kept = store::Store::open(":memory:");
  {
    store::Commit c;
    c.message.spec = spec("k", {"u1", "u2"});
    c.message.sent_at = from_unix_ms(1'764'064'800'000);
    c.message.added_at = c.message.sent_at;
    c.message.next_poll = c.message.sent_at;
    c.message.last_sequence = 2;
    for (int seq = 1; seq <= 2; ++seq) {
      OutboxEvent e;
      e.id = "evt_" + std::to_string(seq);
      e.process_query_key = "k";
      e.sequence = seq;
      e.created_at = c.message.sent_at;
      e.body = "{}";
      c.events.push_back(e);
      c.routes.push_back({"ops", "old"});
    }
    kept->commit(c);
    kept->mark_dead("evt_1", "ops", 10, c.message.sent_at, "HTTP 500");
    kept->mark_dead("evt_1", "old", 10, c.message.sent_at, "HTTP 500");
  }
  auto cfg = base_config({"ops"});
  cfg.messages = {spec("k", {"u1", "u2"}), spec("k2", {"u1"})};
  Loop loop(cfg, std::move(kept));
  auto f = loop.collect();
  CHECK(value(f, "readreceiptd_messages_tracked") == 2);
  CHECK(value(f, "readreceiptd_webhook_pending_events", {{"webhook", "ops"}}) == 1);
  CHECK(value(f, "readreceiptd_webhook_dead_letters", {{"webhook", "ops"}}) == 1);
  CHECK(value(f, "readreceiptd_webhook_dead_letters", {{"webhook", "old"}}) == 1);

  // A replay (as the API does it) lowers the gauge at the next count.
  REQUIRE(loop.store->replay_dead("evt_1", loop.clock.now()) == 2);
  loop.metrics.after_turn(loop.clock.now(), loop.table, loop.sched, loop.dispatcher, *loop.store);
  CHECK(value(loop.collect(), "readreceiptd_webhook_dead_letters", {{"webhook", "ops"}}) == 1);
  loop.clock.advance(metrics::k_dead_letter_sync_interval);
  loop.metrics.after_turn(loop.clock.now(), loop.table, loop.sched, loop.dispatcher, *loop.store);
  f = loop.collect();
  CHECK(value(f, "readreceiptd_webhook_dead_letters", {{"webhook", "ops"}}) == 0);
  CHECK(value(f, "readreceiptd_webhook_dead_letters", {{"webhook", "old"}}) == 0);
}

// ------------------------------------------------------------- process

TEST_CASE("process collector: this process's values are plausible") {
  metrics::ProcessCollector collector;
  const auto before = collector.Collect();
  CHECK(type_of(before, "process_cpu_seconds_total") == MetricType::Counter);
  CHECK(value(before, "process_cpu_seconds_total") >= 0);
  const double rss = value(before, "process_resident_memory_bytes");
  CHECK(rss > 0);
  CHECK(value(before, "process_virtual_memory_bytes") >= rss);
  const double max_fds = value(before, "process_max_fds");
  CHECK(max_fds > 0);
  const double now = static_cast<double>(std::time(nullptr));
  const double start = value(before, "process_start_time_seconds");
  CHECK(start <= now + 1);
  CHECK(start > now - 24 * 3600); // the test binary started today

  std::vector<FILE*> files;
  for (int i = 0; i < 3; ++i) {
    files.push_back(std::fopen("/dev/null", "r"));
    REQUIRE(files.back() != nullptr);
  }
  const double with_files = value(collector.Collect(), "process_open_fds");
  for (FILE* file : files) {
    std::fclose(file);
  }
  const double without = value(collector.Collect(), "process_open_fds");
  CHECK(without > 0);
  CHECK(with_files >= without + 3);
  CHECK(max_fds >= with_files);
}

TEST_CASE("process collector: values from a procfs whose command name has spaces and parens") {
  rrd::testing::TempDir dir;
  std::filesystem::create_directories(dir.path() + "/self/fd");
  for (const std::string fd : {"0", "1", "2", "7"}) {
    rrd::testing::write_file(dir.file("self/fd/" + fd), "");
  }
  // Fields 3..24; utime 150, stime 50, starttime 12345, vsize 1 MiB, rss 10 pages.
  rrd::testing::write_file(dir.file("self/stat"),
                           "4242 (rrd) (x y) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 0 0 20 "
                           "0 3 0 12345 1048576 10 18446744073709551615 1 1 0 0 0 0 0 0 0\n");
  rrd::testing::write_file(dir.file("stat"), "cpu  1 2 3 4\nintr 0\nbtime 1700000000\n"
                                             "processes 1\n");
  rrd::testing::write_file(dir.file("self/limits"),
                           "Limit                     Soft Limit           Hard Limit           "
                           "Units     \n"
                           "Max cpu time              unlimited            unlimited            "
                           "seconds   \n"
                           "Max open files            1024                 524288               "
                           "files     \n");
  metrics::ProcessCollector collector(dir.path());
  const auto f = collector.Collect();
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page_size = static_cast<double>(sysconf(_SC_PAGESIZE));
  CHECK(value(f, "process_cpu_seconds_total") == doctest::Approx(200 / ticks));
  CHECK(value(f, "process_virtual_memory_bytes") == 1048576);
  CHECK(value(f, "process_resident_memory_bytes") == 10 * page_size);
  CHECK(value(f, "process_open_fds") == 4);
  CHECK(value(f, "process_max_fds") == 1024);
  CHECK(value(f, "process_start_time_seconds") == doctest::Approx(1700000000 + 12345 / ticks));
}

TEST_CASE("process collector: a value whose source is missing or garbled is left out") {
  rrd::testing::TempDir dir;
  rrd::testing::write_file(dir.file("stat"), "no boot time here\n");
  std::filesystem::create_directories(dir.path() + "/self");
  rrd::testing::write_file(dir.file("self/stat"), "4242 (rrd) S 1 2 3\n");
  metrics::ProcessCollector collector(dir.path());
  CHECK(collector.Collect().empty());

  CHECK_FALSE(metrics::parse_proc_stat("no parenthesis at all"));
  CHECK_FALSE(metrics::parse_boot_time("btime x\n"));
  CHECK(metrics::parse_boot_time("cpu 1\nbtime 42") == 42);
  CHECK(metrics::parse_max_open_files("Max open files  unlimited  unlimited  files\n") ==
        std::numeric_limits<std::uint64_t>::max());
  CHECK_FALSE(metrics::parse_max_open_files("Max processes 10 10 processes\n"));
}

// ------------------------------------------------------------- exposer

TEST_CASE("metrics: GET /metrics serves the registry and the process metrics, no secrets") {
  auto cfg = base_config({"ops"});
  cfg.metrics.listen = "127.0.0.1:0";
  Metrics m(cfg);
  REQUIRE(m.port().has_value());
  REQUIRE(*m.port() > 0);
  for (int i = 0; i < 4; ++i) {
    m.read_committed(ReadVia::poll, std::nullopt);
  }
  httplib::Client client("127.0.0.1", *m.port());
  const auto res = client.Get("/metrics");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->body.find("readreceiptd_reads_detected_total{via=\"poll\"} 4") != std::string::npos);
  CHECK(res->body.find("# TYPE readreceiptd_dingtalk_request_duration_seconds histogram") !=
        std::string::npos);
  CHECK(res->body.find("process_resident_memory_bytes ") != std::string::npos);
  CHECK(res->body.find("process_start_time_seconds ") != std::string::npos);
  CHECK(res->body.find("fixed-token-value") == std::string::npos);
  CHECK(res->body.find("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == std::string::npos);
}

TEST_CASE("metrics: a metrics address that is taken is a start-up error naming it") {
  TakenPort taken;
  auto cfg = base_config();
  cfg.metrics.listen = "127.0.0.1:" + std::to_string(taken.port());
  try {
    Metrics m(cfg);
    FAIL("listening on a taken port succeeded");
  } catch (const metrics::MetricsError& e) {
    CHECK(std::string(e.what()).find(cfg.metrics.listen) != std::string::npos);
  }
}

TEST_CASE("metrics: a port another exposer listens on is refused, not shared") {
  auto cfg = base_config();
  cfg.metrics.listen = "127.0.0.1:0";
  Metrics first(cfg);
  REQUIRE(first.port().has_value());
  cfg.metrics.listen = "127.0.0.1:" + std::to_string(*first.port());
  try {
    Metrics second(cfg);
    FAIL("a second exposer bound the same port");
  } catch (const metrics::MetricsError& e) {
    CHECK(std::string(e.what()) ==
          "cannot listen on metrics.listen " + cfg.metrics.listen + ": Address already in use");
  }
  httplib::Client client("127.0.0.1", *first.port());
  const auto res = client.Get("/metrics");
  REQUIRE(res);
  CHECK(res->status == 200);
}

TEST_CASE("metrics: GET / is a small page linking to /metrics") {
  auto cfg = base_config();
  cfg.metrics.listen = "127.0.0.1:0";
  Metrics m(cfg);
  httplib::Client client("127.0.0.1", *m.port());
  const auto res = client.Get("/");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("Content-Type").rfind("text/html", 0) == 0);
  CHECK(res->body.find("<a href=\"/metrics\">") != std::string::npos);
  CHECK(res->body.find(k_version) != std::string::npos);
  const auto other = client.Get("/nothing-here");
  REQUIRE(other);
  CHECK(other->status == 404);
}

TEST_CASE("metrics: localhost and bracketed IPv6 listen addresses") {
  auto cfg = base_config();
  cfg.metrics.listen = "localhost:0";
  {
    Metrics m(cfg);
    REQUIRE(m.port().has_value());
    httplib::Client client("127.0.0.1", *m.port());
    const auto res = client.Get("/metrics");
    REQUIRE(res);
    CHECK(res->status == 200);
  }
  // IPv6 only where the machine has a ::1 to bind.
  const int probe = ::socket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  const bool has_ipv6 = probe >= 0 && ::bind(probe, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  if (probe >= 0) {
    ::close(probe);
  }
  if (has_ipv6) {
    cfg.metrics.listen = "[::1]:0";
    Metrics m(cfg);
    REQUIRE(m.port().has_value());
    httplib::Client client("::1", *m.port());
    const auto res = client.Get("/metrics");
    REQUIRE(res);
    CHECK(res->status == 200);
  }
}

TEST_CASE("metrics: readreceiptd_leader is 1 on SQLite, on PostgreSQL it follows the lease") {
  const Metrics sqlite(base_config());
  CHECK(value(sqlite.registry()->Collect(), "readreceiptd_leader") == 1);
  CHECK(value(sqlite.registry()->Collect(), "readreceiptd_leader_changes_total") == 0);

  config::Config cfg = base_config();
  cfg.state.path.clear();
  cfg.state.postgres = "host=db";
  Metrics m(cfg);
  CHECK(value(m.registry()->Collect(), "readreceiptd_leader") == 0);
  m.leadership_changed(true);
  CHECK(value(m.registry()->Collect(), "readreceiptd_leader") == 1);
  m.leadership_changed(false);
  const auto f = m.registry()->Collect();
  CHECK(value(f, "readreceiptd_leader") == 0);
  CHECK(value(f, "readreceiptd_leader_changes_total") == 2);
}

TEST_CASE("metrics: readreceiptd_store_commit_duration_seconds counts each commit") {
  Metrics m(base_config());
  CHECK(histogram(m.registry()->Collect(), "readreceiptd_store_commit_duration_seconds")
            .sample_count == 0);
  m.store_committed(0.004);
  m.store_committed(0.2);
  const auto h = histogram(m.registry()->Collect(), "readreceiptd_store_commit_duration_seconds");
  CHECK(h.sample_count == 2);
  CHECK(h.sample_sum == doctest::Approx(0.204));
}
