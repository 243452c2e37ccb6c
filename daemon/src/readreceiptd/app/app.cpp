#include "readreceiptd/app/app.hpp"

#include "readreceiptd/api/command_queue.hpp"
#include "readreceiptd/api/healthcheck.hpp"
#include "readreceiptd/api/server.hpp"
#include "readreceiptd/api/updates.hpp"
#include "readreceiptd/app/cli.hpp"
#include "readreceiptd/app/leadership.hpp"
#include "readreceiptd/app/logging.hpp"
#include "readreceiptd/app/notify.hpp"
#include "readreceiptd/app/signals.hpp"
#include "readreceiptd/common/plural.hpp"
#include "readreceiptd/common/version.hpp"
#include "readreceiptd/config/config.hpp"
#include "readreceiptd/ha/coordinator.hpp"
#include "readreceiptd/http/http_engine.hpp"
#include "readreceiptd/http/scoped_engine.hpp"
#include "readreceiptd/metrics/metrics.hpp"
#include "readreceiptd/scheduler/budget.hpp"
#include "readreceiptd/scheduler/scheduler.hpp"
#include "readreceiptd/store/store.hpp"
#include "readreceiptd/stream/client.hpp"
#include "readreceiptd/tracking/table.hpp"
#include "readreceiptd/webhook/dispatcher.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <spdlog/spdlog.h>
#include <system_error>
#include <thread>
#include <unistd.h>
#include <utility>

namespace rrd::app {

namespace {

// The loop never sleeps longer than this, so that it notices a stop or a
// reload request even if a wake-up were lost.
constexpr Millis k_max_loop_wait{1'000};
// How long a graceful stop waits for deliveries in flight (a stop takes 10 s
// at most in all).
constexpr Millis k_drain_timeout{5'000};
constexpr int k_exit_ok = 0;
constexpr int k_exit_failure = 1;
constexpr int k_exit_usage = 2;

std::chrono::steady_clock::time_point steady_now() {
  return std::chrono::steady_clock::now();
}

// The dead letters per webhook, for the status: counted in the store at
// start-up and after a replay, and one more each time a delivery dies in
// between (no query per status). Loop thread only.
class DeadLetterCounts {
public:
  explicit DeadLetterCounts(store::Store& store) : m_store(store) { recount(); }
  void recount() {
    try {
      m_counts = m_store.count_dead_by_webhook();
    } catch (const store::StoreError& e) {
      logging::warn("cannot count the dead letters for the status", {{"reason", e.what()}});
    }
  }
  void died(const std::string& webhook) { ++m_counts[webhook]; }
  const std::map<std::string, std::int64_t>& counts() const { return m_counts; }

private:
  store::Store& m_store;
  std::map<std::string, std::int64_t> m_counts;
};

// What the message table reports goes to the metrics and to the API's live
// updates.
class TableObservers final : public tracking::Observer {
public:
  TableObservers(tracking::Observer& metrics, api::UpdateFeed& feed)
      : m_metrics(metrics), m_feed(feed) {}
  void read_committed(ReadVia via, std::optional<Millis> delay) override {
    m_metrics.read_committed(via, delay);
  }
  void message_stopped(StopReason reason) override { m_metrics.message_stopped(reason); }
  void tracked_changed(std::size_t tracked) override { m_metrics.tracked_changed(tracked); }
  void message_changed(const MessageRecord& m) override { m_feed.message_changed(m); }

private:
  tracking::Observer& m_metrics;
  api::UpdateFeed& m_feed;
};

// The daemon's status (GET /v1/status, the `status` event) from the loop's
// parts. Loop thread only.
api::DaemonStatus gather_status(TimePoint started_at, bool ready, const config::Config& cfg,
                                const tracking::MessageTable& table,
                                const scheduler::Scheduler& sched, const stream::Client* push,
                                const webhook::Dispatcher& dispatcher,
                                const DeadLetterCounts& dead) {
  api::DaemonStatus s;
  s.version = k_version;
  s.started_at = started_at;
  s.ready = ready;
  s.messages_tracking = table.tracked();
  s.messages_stopped = table.size() - table.tracked();
  s.stream_enabled = push != nullptr;
  if (push != nullptr) {
    s.stream_connected = push->connected();
    s.stream_since = push->state_since();
    s.stream_last_event = push->last_event();
  }
  const scheduler::CallBudget budget = sched.call_budget();
  s.month = budget.month;
  s.month_calls = budget.calls;
  s.month_call_budget = budget.budget;
  s.stretch = budget.stretch;
  s.quota_exhausted = budget.quota_exhausted;
  s.poll_mode = budget.mode == scheduler::PollMode::reconcile ? "reconcile" : "normal";
  const scheduler::RateLimiter& limiter = sched.limiter();
  s.configured_rate = limiter.configured_rate();
  s.current_rate = limiter.effective_rate();
  s.last_throttled = limiter.last_throttled();
  std::set<std::string> configured;
  const auto add = [&](const std::string& name, bool is_configured) {
    api::WebhookStatus w;
    w.name = name;
    w.configured = is_configured;
    w.pending_events = dispatcher.pending(name);
    w.oldest_pending = dispatcher.oldest_pending(name);
    const auto it = dead.counts().find(name);
    w.dead_letters = it == dead.counts().end() ? 0 : it->second;
    w.disabled = dispatcher.disabled(name);
    s.webhooks.push_back(std::move(w));
  };
  for (const auto& hook : cfg.webhooks) {
    configured.insert(hook.name);
    add(hook.name, true);
  }
  // A webhook no longer configured still has its dead letters (its pending
  // events, if any, wait for it to come back).
  for (const auto& [name, count] : dead.counts()) {
    if (count > 0 && configured.insert(name).second) {
      add(name, false);
    }
  }
  return s;
}

// The HTTP API's view of the loop's state while this daemon works (always
// on SQLite; the leader on PostgreSQL). Runs on the loop thread only (the
// CommandQueue calls it from run_pending()).
class LoopBackend final : public api::Backend {
public:
  LoopBackend(tracking::MessageTable& table, store::Store& store, webhook::Dispatcher& dispatcher,
              const Clock& clock, DeadLetterCounts& dead, std::function<api::DaemonStatus()> status)
      : m_table(table), m_store(store), m_dispatcher(dispatcher), m_clock(clock), m_dead(dead),
        m_status(std::move(status)) {}

  const config::Config& config() const override { return m_table.config(); }

  void visit_messages(const std::string& after,
                      const std::function<bool(const MessageRecord&)>& visit) const override {
    m_table.visit_from(after, visit);
  }

  std::optional<MessageRecord> message(const std::string& key) const override {
    const auto* m = m_table.find(key);
    return m ? std::optional<MessageRecord>(*m) : std::nullopt;
  }

  api::AddOutcome add_message(const MessageSpec& spec) override {
    const auto outcome = m_table.add(spec);
    m_table.flush(true); // landed before the API answers (a commit in flight too)
    switch (outcome) {
    case tracking::MessageTable::AddOutcome::created:
      return api::AddOutcome::created;
    case tracking::MessageTable::AddOutcome::unchanged:
      return api::AddOutcome::unchanged;
    case tracking::MessageTable::AddOutcome::conflict:
      return api::AddOutcome::conflict;
    }
    return api::AddOutcome::conflict;
  }

  bool remove_message(const std::string& key) override {
    const bool known = m_table.remove(key);
    if (known) {
      logging::info("message removed through the API", {{"key", key}});
    }
    m_table.flush(true);
    return known;
  }

  std::vector<store::DeadLetter> dead_letters() override { return m_store.load_dead_letters(); }

  int replay_dead_letter(const std::string& event_id) override {
    const int n = m_store.replay_dead(event_id, m_clock.now());
    if (n > 0) {
      m_dead.recount();
      // Deliveries already queued are skipped; only the replayed ones are new.
      m_dispatcher.load(m_store.load_pending_deliveries());
      logging::info("dead letter replayed through the API",
                    {{"event_id", event_id}, {"deliveries", n}});
    }
    return n;
  }

  std::vector<store::StoredEvent> message_events(const std::string& key, std::int64_t after,
                                                 std::size_t limit) override {
    return m_store.load_message_events(key, after, limit);
  }

  api::DaemonStatus status() override { return m_status(); }

private:
  tracking::MessageTable& m_table;
  store::Store& m_store;
  webhook::Dispatcher& m_dispatcher;
  const Clock& m_clock;
  DeadLetterCounts& m_dead;
  std::function<api::DaemonStatus()> m_status;
};

// The messages a standby reads from the database per query of a
// GET /v1/messages page.
constexpr std::size_t k_standby_page = 256;

// The HTTP API's view while this daemon is a standby (PostgreSQL): GETs are
// answered from the database, writes are refused by the router with 503
// naming the leader (standby_leader()). Loop thread only.
class StandbyBackend final : public api::Backend {
public:
  StandbyBackend(const config::Config& cfg, store::Store& store, const ha::Coordinator& coordinator,
                 std::function<api::DaemonStatus()> status)
      : m_cfg(cfg), m_store(store), m_coordinator(coordinator), m_status(std::move(status)) {}

  const config::Config& config() const override { return m_cfg; }

  void visit_messages(const std::string& after,
                      const std::function<bool(const MessageRecord&)>& visit) const override {
    std::string cursor = after;
    for (;;) {
      const auto page = m_store.load_messages_after(cursor, k_standby_page);
      for (const auto& m : page) {
        if (!visit(m)) {
          return;
        }
      }
      if (page.size() < k_standby_page) {
        return;
      }
      cursor = page.back().spec.process_query_key;
    }
  }

  std::optional<MessageRecord> message(const std::string& key) const override {
    return m_store.load_message(key);
  }

  // The router refuses every write while standby_leader() has a value; these
  // are never reached, and would change nothing.
  api::AddOutcome add_message(const MessageSpec& /*spec*/) override {
    return api::AddOutcome::conflict;
  }
  bool remove_message(const std::string& /*key*/) override { return false; }
  int replay_dead_letter(const std::string& /*event_id*/) override { return 0; }

  std::vector<store::DeadLetter> dead_letters() override { return m_store.load_dead_letters(); }

  std::vector<store::StoredEvent> message_events(const std::string& key, std::int64_t after,
                                                 std::size_t limit) override {
    return m_store.load_message_events(key, after, limit);
  }

  api::DaemonStatus status() override { return m_status(); }

  std::optional<std::string> standby_leader() const override { return m_coordinator.leader_info(); }

private:
  const config::Config& m_cfg;
  store::Store& m_store;
  const ha::Coordinator& m_coordinator;
  std::function<api::DaemonStatus()> m_status;
};

// A standby's status, from the configuration and the database (it runs no
// poller, Stream or dispatcher of its own): what the leader last wrote.
api::DaemonStatus standby_status(TimePoint started_at, const config::Config& cfg,
                                 store::Store& store, const ha::Coordinator& coordinator,
                                 TimePoint now) {
  api::DaemonStatus s;
  s.version = k_version;
  s.started_at = started_at;
  s.role = "standby";
  s.leader = coordinator.leader_info();
  s.stream_enabled = cfg.dingtalk.stream.enabled;
  s.month = scheduler::month_of(now).name;
  s.month_call_budget = cfg.dingtalk.monthly_call_budget;
  s.poll_mode = "normal";
  s.configured_rate = cfg.dingtalk.requests_per_second;
  s.current_rate = cfg.dingtalk.requests_per_second;
  std::map<std::string, std::int64_t> dead;
  std::map<std::string, std::int64_t> pending;
  try {
    const store::MessageCounts counts = store.count_messages();
    s.messages_tracking = counts.tracking;
    s.messages_stopped = counts.stopped;
    if (const auto month = store.load_month(s.month)) {
      s.month_calls = month->calls;
      s.quota_exhausted = month->quota_exhausted;
    }
    dead = store.count_dead_by_webhook();
    pending = store.count_pending_by_webhook();
  } catch (const store::StoreError& e) {
    logging::debug("cannot read the status from the state database", {{"reason", e.what()}});
  }
  std::set<std::string> listed;
  const auto add = [&](const std::string& name, bool configured) {
    api::WebhookStatus w;
    w.name = name;
    w.configured = configured;
    const auto p = pending.find(name);
    w.pending_events = p == pending.end() ? 0 : static_cast<std::size_t>(p->second);
    const auto d = dead.find(name);
    w.dead_letters = d == dead.end() ? 0 : d->second;
    s.webhooks.push_back(std::move(w));
  };
  for (const auto& hook : cfg.webhooks) {
    listed.insert(hook.name);
    add(hook.name, true);
  }
  for (const auto& [name, count] : dead) {
    if (count > 0 && listed.insert(name).second) {
      add(name, false);
    }
  }
  return s;
}

// The lease operations of the PostgreSQL store, for the coordinator.
class StoreLease final : public ha::LeaseStore {
public:
  explicit StoreLease(store::Store& store) : m_store(store) {}
  ha::LeaseRow read_lease() override {
    ha::LeaseRow out;
    if (const auto row = m_store.read_lease()) {
      out.holder = row->holder;
      out.epoch = row->epoch;
      out.holder_info = row->holder_info;
      out.expired = row->expired;
      out.remaining = Millis{row->ms_left};
    }
    return out;
  }
  std::optional<std::int64_t> acquire_lease(const std::string& holder,
                                            const std::string& holder_info, Millis ttl) override {
    return m_store.acquire_lease(holder, holder_info, ttl);
  }
  bool renew_lease(const std::string& holder, std::int64_t epoch, Millis ttl) override {
    return m_store.renew_lease(holder, epoch, ttl);
  }
  void release_lease(const std::string& holder, std::int64_t epoch) override {
    m_store.release_lease(holder, epoch);
  }
  void set_fence(const std::string& holder, std::int64_t epoch) override {
    m_store.set_fence(holder, epoch);
  }

private:
  store::Store& m_store;
};

// Who this daemon is in the lease: an id drawn now, and its host name and
// API address for the others to show.
ha::Identity draw_identity(const config::Config& cfg, std::mt19937_64& rng) {
  char id[33];
  std::snprintf(id, sizeof id, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  std::array<char, 256> host{};
  if (gethostname(host.data(), host.size() - 1) != 0) {
    host[0] = '\0';
  }
  std::string info = host[0] != '\0' ? host.data() : "unknown host";
  info += cfg.api.listen.empty() ? " (no API)" : " (API " + cfg.api.listen + ")";
  return ha::Identity{id, info};
}

// The parts that do the work: the message table, its two sources of reads
// (the poller, the Stream client), the webhook dispatcher and the API's
// view of them. Built from the database when this daemon starts working
// (at start-up on SQLite; on becoming the leader on PostgreSQL), destroyed
// at once when it steps down: their requests still in flight are forgotten
// (ScopedEngine), nothing more is written, and the next leader starts from
// the database. Loop thread only.
class Work {
public:
  Work(const config::Config& cfg, store::Store& store, http::Engine& engine, const Clock& clock,
       metrics::Metrics& metrics, tracking::Observer& table_observers, std::uint64_t seed,
       const ha::WorkGate* gate, const std::function<api::DaemonStatus(const Work&)>& status)
      : m_engine(engine), m_seeder(seed), m_dispatcher_rng(m_seeder()),
        dispatcher(
            store, m_engine, clock,
            [this] { return std::uniform_real_distribution<double>(0.0, 1.0)(m_dispatcher_rng); }),
        dead_letters(store),
        table(
            cfg, store, clock, [this](const std::vector<Delivery>& d) { dispatcher.enqueue(d); },
            table_observers, m_seeder()),
        sched(cfg, table, store, m_engine, clock, metrics, m_seeder()), m_push_seed(m_seeder()),
        backend(table, store, dispatcher, clock, dead_letters,
                [this, status] { return status(*this); }),
        m_store(store), m_clock(clock), m_metrics(metrics), m_gate(gate) {
    webhook::Observer hooks = metrics.webhook_observer();
    hooks.on_dead = [this, metrics_dead = hooks.on_dead](const std::string& hook) {
      if (metrics_dead) {
        metrics_dead(hook);
      }
      dead_letters.died(hook);
    };
    dispatcher.set_observer(std::move(hooks));
    dispatcher.set_gate(gate);
    sched.set_gate(gate);
  }
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;
  ~Work() {
    sched.cancel_all();
    push.reset(); // closes the Stream at once: what was not acknowledged comes again
  }

  // Loads the outbox and the message table and starts the Stream. Throws
  // StoreError.
  void start(const config::Config& cfg) {
    dispatcher.configure(cfg.webhooks);
    dispatcher.load(m_store.load_pending_deliveries());
    sched.start();
    table.start();
    configure_push(cfg);
  }

  void configure_push(const config::Config& cfg) {
    if (!cfg.dingtalk.stream.enabled || !stream::credentials(cfg.dingtalk)) {
      push.reset();
    } else if (push) {
      push->reconfigure(cfg.dingtalk);
    } else {
      push = std::make_unique<stream::Client>(cfg.dingtalk, m_engine, m_clock, sched.limiter(),
                                              table, m_metrics, m_push_seed);
      push->set_gate(m_gate);
    }
  }

  // Before the loop waits.
  void pump() {
    if (push) {
      push->pump();
      sched.set_push_state(push->connected(), push->state_since());
    }
    sched.pump();
    dispatcher.pump();
  }

  // After the loop's I/O: the turn's polled and pushed reads committed
  // together (pushes are acknowledged once this returns), then the
  // deliveries' outcomes.
  void end_turn() {
    try {
      table.flush();
    } catch (const std::exception& e) {
      logging::error("cannot commit the reads", {{"reason", e.what()}});
    }
    dispatcher.flush();
    m_metrics.after_turn(m_clock.now(), table, sched, dispatcher, m_store);
  }

  std::optional<TimePoint> next_wakeup() const {
    std::optional<TimePoint> next;
    for (auto t : {sched.next_wakeup(), dispatcher.next_due(), table.next_flush(),
                   push ? push->next_wakeup() : std::nullopt}) {
      if (t && (!next || *t < *next)) {
        next = t;
      }
    }
    return next;
  }

private:
  http::ScopedEngine m_engine; // first: destroyed last, after every part that submits
  std::mt19937_64 m_seeder;
  std::mt19937_64 m_dispatcher_rng;

public:
  webhook::Dispatcher dispatcher;
  DeadLetterCounts dead_letters;
  tracking::MessageTable table;
  scheduler::Scheduler sched;

private:
  std::uint64_t m_push_seed;

public:
  std::unique_ptr<stream::Client> push;
  LoopBackend backend;

private:
  store::Store& m_store;
  const Clock& m_clock;
  metrics::Metrics& m_metrics;
  const ha::WorkGate* m_gate;
};

// Clears a SignalWatcher's wake-up function when it goes out of scope.
class WakeupClearer {
public:
  explicit WakeupClearer(SignalWatcher& signals) : m_signals(signals) {}
  WakeupClearer(const WakeupClearer&) = delete;
  WakeupClearer& operator=(const WakeupClearer&) = delete;
  ~WakeupClearer() { m_signals.set_wakeup({}); }

private:
  SignalWatcher& m_signals;
};

// How long the loop sleeps at most between checks of a stop request while
// it waits to reach the database at start-up.
constexpr Millis k_start_wait_slice{100};

// One run of the daemon: the start-up steps in order, the loop, teardown.
class Daemon {
public:
  Daemon(Options options, config::Config cfg)
      : m_options(std::move(options)), m_cfg(std::move(cfg)) {}

  int run() {
    SignalWatcher signals; // first: every later thread inherits the blocked mask
    std::mt19937_64 seeder(std::random_device{}());
    std::unique_ptr<store::Store> store = open_store(signals, seeder);
    if (!store) {
      return signals.stop_requested() ? k_exit_ok : k_exit_failure;
    }
    const bool ha = store->is_postgres();
    RealClock clock;
    const TimePoint started_at = clock.now();
    try {
      m_metrics = std::make_unique<metrics::Metrics>(m_cfg, clock.now());
    } catch (const metrics::MetricsError& e) {
      logging::error(e.what());
      return k_exit_failure;
    }
    // The metrics outlive the store (a member of the daemon's).
    store->set_commit_observer(
        [metrics = m_metrics.get()](double seconds) { metrics->store_committed(seconds); });
    auto engine = http::make_engine();
    signals.set_wakeup([&engine] { engine->wakeup(); });
    // The watcher's thread may be inside the wake-up (a stop request sets the
    // flag, then wakes the loop) when the loop ends; clearing it waits for
    // that call, so the engine is destroyed only after it. Also on the early
    // returns below.
    const WakeupClearer clear_wakeup{signals};
    // GET /v1/updates: the hub its streams subscribe to, and the loop's
    // feed of it. Before the table (which reports to the feed) and the API
    // server (whose streams the hub outlives).
    api::UpdateHub updates;
    api::UpdateFeed feed(updates);
    TableObservers table_observers(*m_metrics, feed);
    api::LoopStatus loop_status;
    loop_status.beat(steady_now());
    SystemdNotifier notifier;

    // On PostgreSQL: the lease, and the parts built on becoming leader.
    std::unique_ptr<Work> work;
    bool work_ready = false;  // the working parts have a first token
    bool work_failed = false; // they could not be built: step down
    StoreLease lease_store(*store);
    ha::RealMonotonicClock monotonic;
    std::unique_ptr<ha::Coordinator> coordinator;
    std::unique_ptr<Leadership> leadership;
    const std::uint64_t work_seed = seeder();
    const auto status = [&]() -> api::DaemonStatus {
      if (!work) {
        return standby_status(started_at, m_cfg, *store, *coordinator, clock.now());
      }
      api::DaemonStatus s = gather_status(started_at, work_ready, m_cfg, work->table, work->sched,
                                          work->push.get(), work->dispatcher, work->dead_letters);
      if (coordinator) {
        s.role = "leader";
        s.leader = coordinator->identity().info;
      }
      return s;
    };
    const auto build_work = [&](const ha::WorkGate* gate) {
      work = std::make_unique<Work>(m_cfg, *store, *engine, clock, *m_metrics, table_observers,
                                    work_seed, gate, [&](const Work&) { return status(); });
      work->start(m_cfg);
      m_metrics->after_turn(clock.now(), work->table, work->sched, work->dispatcher, *store);
    };
    if (ha) {
      const ha::Identity me = draw_identity(m_cfg, seeder);
      Leadership::Hooks hooks;
      hooks.start_work = [&](std::int64_t /*epoch*/) {
        (void)store->take_trouble(); // what a standby saw is no leader's trouble
        work_ready = false;
        try {
          build_work(coordinator.get());
        } catch (const store::StoreError& e) {
          logging::error("cannot load the state database as the leader", {{"reason", e.what()}});
          work.reset();
          work_failed = true;
        }
      };
      hooks.stop_work = [&] {
        work.reset();
        work_ready = false;
      };
      leadership = std::make_unique<Leadership>(*m_metrics, loop_status, std::move(hooks));
      std::mt19937_64 lease_rng(seeder());
      coordinator = std::make_unique<ha::Coordinator>(
          lease_store, monotonic, me, m_cfg.state.lease_ttl, *leadership,
          [rng = lease_rng]() mutable {
            return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
          });
      logging::info("taking part in the leadership lease",
                    {{"id", me.id},
                     {"as", me.info},
                     {"lease_ttl", std::to_string(m_cfg.state.lease_ttl.count()) + "ms"}});
    } else {
      try {
        build_work(nullptr);
      } catch (const store::StoreError& e) {
        logging::error("cannot load the state database", {{"reason", e.what()}});
        return k_exit_failure;
      }
    }

    // Listeners: the HTTP API. Its threads only talk to the loop through
    // `commands` and read `loop_status`.
    api::CommandQueue commands([&engine] { engine->wakeup(); });
    std::unique_ptr<api::Server> api_server;
    if (!m_cfg.api.listen.empty()) {
      api_server = std::make_unique<api::Server>(m_cfg.api.listen, m_cfg.api.token, commands,
                                                 loop_status, &updates);
      try {
        api_server->start();
      } catch (const api::ListenError& e) {
        logging::error(e.what());
        signals.set_wakeup({});
        return k_exit_failure;
      }
    }
    std::unique_ptr<StandbyBackend> standby_backend;
    if (coordinator) {
      standby_backend = std::make_unique<StandbyBackend>(m_cfg, *store, *coordinator, status);
    }
    loop_status.set_readiness(ha ? api::Readiness::starting : api::Readiness::waiting_for_token);
    logging::info("readreceiptd started" +
                      (work ? ": " + count_of(work->table.tracked(), "message") + " tracked" : "") +
                      ", " + count_of(m_cfg.webhooks.size(), "webhook"),
                  {{"version", k_version},
                   // The connection string may hold a password: never logged.
                   {"state", ha ? "postgres" : m_cfg.state.path},
                   {"push", m_cfg.dingtalk.stream.enabled ? "stream" : "off"}});

    while (!signals.stop_requested()) {
      loop_status.beat(steady_now());
      notifier.watchdog(steady_now());
      if (signals.take_reload()) {
        const bool was_ready = notifier.ready_sent();
        if (was_ready) {
          notifier.reloading();
        }
        reload(work.get(), api_server.get());
        if (was_ready) {
          notifier.ready();
        }
      }
      if (work) {
        commands.run_pending(work->backend);
      } else if (standby_backend) {
        commands.run_pending(*standby_backend);
      }
      if (coordinator) {
        coordinator->pump(); // may build the working parts, or tear them down
        if (std::exchange(work_failed, false)) {
          coordinator->write_refused();
        }
      }
      if (work) {
        work->pump();
      }
      const TimePoint now = clock.now();
      Millis wait = k_max_loop_wait;
      if (auto watchdog = notifier.watchdog_interval()) {
        wait = std::min(wait, *watchdog);
      }
      // The status is looked at again when due only while someone listens.
      const auto status_due = updates.subscribers() > 0 ? feed.next_wakeup() : std::nullopt;
      for (auto next : {work ? work->next_wakeup() : std::nullopt, status_due}) {
        if (next) {
          wait = std::min(wait, std::max(Millis{0}, *next - now));
        }
      }
      if (coordinator) {
        const auto until = coordinator->next_check() - monotonic.now();
        wait = std::min(wait, std::max(Millis{0}, until));
      }
      engine->run_once(wait);
      if (work) {
        work->end_turn();
      }
      if (coordinator && coordinator->role() == ha::Role::leader) {
        step_down_on_trouble(*store, *coordinator);
      }
      if (api_server) {
        // The turn's changed messages, and the status when it changed.
        feed.end_turn(clock.now(), status);
        m_metrics->set_update_stats(updates.stats());
      }
      if (work && !work_ready && work->sched.has_token()) {
        // Store, listeners and a first token are in place.
        work_ready = true;
        loop_status.set_readiness(api::Readiness::ready);
        logging::info("ready: " + count_of(work->table.tracked(), "message") + " tracked");
      }
      // A standby has started too: systemd hears of it once it knows its role.
      if (!notifier.ready_sent() &&
          (work_ready || (coordinator && !work && leadership_known(loop_status)))) {
        notifier.ready();
      }
      notifier.status(status_text(work.get(), notifier.ready_sent(), coordinator.get()),
                      steady_now());
    }

    logging::info("stopping");
    notifier.stopping();
    loop_status.set_readiness(api::Readiness::stopping);
    commands.close(); // requests waiting for the loop get 503 at once
    if (api_server) {
      // Its requests finish while deliveries drain; its /v1/updates streams
      // end ("shutting down").
      api_server->request_stop();
    }
    if (work) {
      drain(*work, *engine, clock, coordinator.get());
    }
    if (coordinator) {
      // A leader releases its lease (a standby takes over at once); after
      // its last commits, and before the parts go.
      coordinator->stop();
    }
    work.reset();
    if (api_server) {
      api_server->stop();
    }
    signals.set_wakeup({});
    engine.reset(); // cancels what is still in flight; those events stay pending
    logging::info("stopped");
    return k_exit_ok;
  }

private:
  // Opens the state database. PostgreSQL that cannot be reached is waited
  // for, with the lease's backoff, until a stop is asked for (a daemon may
  // start before its database); any other error ends the start (nullptr).
  std::unique_ptr<store::Store> open_store(SignalWatcher& signals, std::mt19937_64& rng) {
    if (!m_cfg.state.uses_postgres()) {
      try {
        return store::Store::open(m_cfg.state.path);
      } catch (const store::StoreError& e) {
        logging::error("cannot open the state database", {{"reason", e.what()}});
        return nullptr;
      }
    }
    store::PostgresOptions pg;
    pg.conninfo = m_cfg.state.postgres;
    if (!m_cfg.state.password.empty()) {
      pg.password = m_cfg.state.password;
    }
    // A connection attempt must not hold the loop past a renewal.
    pg.connect_timeout =
        std::max(std::chrono::seconds{2}, std::chrono::duration_cast<std::chrono::seconds>(
                                              ha::renew_interval(m_cfg.state.lease_ttl)));
    for (int failures = 1; !signals.stop_requested(); ++failures) {
      try {
        return store::Store::open_postgres(pg);
      } catch (const store::StoreUnavailable& e) {
        const Millis delay =
            ha::reconnect_delay(failures, std::uniform_real_distribution<double>(0.0, 1.0)(rng));
        const std::string retry = std::to_string(delay.count()) + "ms";
        if (failures == 1) {
          logging::warn("cannot reach the state database; waiting for it",
                        {{"reason", e.what()}, {"retry_in", retry}});
        } else {
          logging::debug("still cannot reach the state database",
                         {{"reason", e.what()}, {"retry_in", retry}});
        }
        const auto until = steady_now() + delay;
        while (!signals.stop_requested() && steady_now() < until) {
          std::this_thread::sleep_for(k_start_wait_slice);
        }
      } catch (const store::StoreError& e) {
        logging::error("cannot open the state database", {{"reason", e.what()}});
        return nullptr;
      }
    }
    return nullptr;
  }

  static bool leadership_known(const api::LoopStatus& status) {
    return status.readiness() == api::Readiness::standby;
  }

  // A leader whose write was fenced off, or whose database connection was
  // lost (a commit that may or may not have landed), stops all work at once
  // and, as a standby, resumes from the database when it leads again.
  static void step_down_on_trouble(store::Store& store, ha::Coordinator& coordinator) {
    switch (store.take_trouble()) {
    case store::Store::Trouble::none:
      return;
    case store::Store::Trouble::fenced:
      logging::warn("a write was refused: another daemon holds the lease");
      break;
    case store::Store::Trouble::unavailable:
      logging::warn("lost the state database while working; stopping work to resume from it");
      break;
    }
    coordinator.write_refused();
  }

  // A graceful stop: pushed reads committed and acknowledged, deliveries in
  // flight given up to k_drain_timeout, the Stream closed. On PostgreSQL the
  // lease is renewed meanwhile; a step down ends the drain (and the parts).
  static void drain(Work& work, http::Engine& engine, const Clock& clock,
                    ha::Coordinator* coordinator) {
    work.sched.cancel_all();
    const auto flush = [&work] {
      try {
        work.table.flush(true);
      } catch (const std::exception& e) {
        logging::error("cannot commit the reads", {{"reason", e.what()}});
      }
    };
    flush(); // what was pushed is committed and acknowledged
    if (work.push) {
      work.push->stop();
    }
    const TimePoint deadline = clock.now() + k_drain_timeout;
    while (!work.dispatcher.idle() && clock.now() < deadline) {
      engine.run_once(Millis{100});
      work.dispatcher.flush();
      if (coordinator) {
        coordinator->pump();
        if (coordinator->role() != ha::Role::leader) {
          return; // stepped down: the parts are gone
        }
      }
    }
    engine.run_once(Millis{0}); // the Stream's close frames
    flush();
  }

  std::string status_text(const Work* work, bool ready, const ha::Coordinator* coordinator) const {
    if (work == nullptr) {
      const std::string leader = coordinator ? coordinator->leader_info() : "";
      return leader.empty() ? "standby; no leader known" : "standby; the leader is " + leader;
    }
    std::size_t pending = 0;
    for (const auto& hook : m_cfg.webhooks) {
      pending += work->dispatcher.pending(hook.name);
    }
    std::string text = "tracking " + count_of(work->table.tracked(), "message") + ", " +
                       count_of(pending, "pending delivery", "pending deliveries");
    if (coordinator) {
      text = "leader; " + text;
    }
    return ready ? text : "waiting for the first DingTalk access token; " + text;
  }

  // Applies a new configuration to the parts at work (none on a standby:
  // the next leader's parts are built from it).
  void reload(Work* work, api::Server* api_server) {
    logging::info("reloading the configuration", {{"path", m_options.config_path}});
    config::Config cfg;
    try {
      cfg = config::load_file(m_options.config_path);
    } catch (const config::ConfigError& e) {
      for (const auto& error : e.errors()) {
        spdlog::error("configuration rejected, keeping the previous one: {}", error);
      }
      m_metrics->reload_failed();
      return;
    }
    for (const auto& warning : cfg.warnings) {
      logging::warn("configuration warning", {{"warning", warning}});
    }
    // The state database and the API's address stay as they are until the
    // next start; the rest of the new configuration applies.
    for (const auto& key : config::restart_only_changes(m_cfg, cfg)) {
      logging::warn(key + " changed; the new value takes effect at the next start", {{"key", key}});
    }
    cfg.state = m_cfg.state;
    if (api_server != nullptr) {
      api_server->set_token(cfg.api.token);
    }
    if (work != nullptr) {
      try {
        work->dispatcher.configure(cfg.webhooks);
        work->sched.reconfigure(cfg);
        work->table.reconfigure(cfg);
      } catch (const std::exception& e) {
        logging::error("applying the new configuration failed", {{"reason", e.what()}});
      }
    }
    m_cfg = std::move(cfg);
    if (work != nullptr) {
      work->configure_push(m_cfg);
    }
    m_metrics->reload_succeeded(m_cfg, RealClock().now());
    logging::info("configuration reloaded: " +
                  (work != nullptr ? count_of(work->table.tracked(), "message") + " tracked, "
                                   : std::string("standby, ")) +
                  count_of(m_cfg.webhooks.size(), "webhook"));
  }

  Options m_options;
  config::Config m_cfg;
  std::unique_ptr<metrics::Metrics> m_metrics; // created in run(), after the store
};

// --copy-state-from: the SQLite database must be readable and the
// configuration must name the PostgreSQL database it goes into; both are
// usage errors (2).
int copy_state(const Options& options, const config::Config& cfg) {
  const std::string prefix = "readreceiptd: --copy-state-from: ";
  if (!cfg.state.uses_postgres()) {
    std::fprintf(stderr, "%s%s has no state.postgres to copy the state into\n", prefix.c_str(),
                 options.config_path.c_str());
    return k_exit_usage;
  }
  const std::string& from = options.copy_state_from;
  std::error_code ec;
  const auto status = std::filesystem::status(from, ec);
  if (ec || !std::filesystem::exists(status)) {
    std::fprintf(
        stderr, "%scannot read %s: %s\n", prefix.c_str(), from.c_str(),
        (ec ? ec : std::make_error_code(std::errc::no_such_file_or_directory)).message().c_str());
    return k_exit_usage;
  }
  if (!std::filesystem::is_regular_file(status)) {
    std::fprintf(stderr, "%s%s is not a file (a SQLite state database)\n", prefix.c_str(),
                 from.c_str());
    return k_exit_usage;
  }
  // The SQLite file is opened as the daemon opens it (migrated to this
  // build's schema first, and locked: a daemon still running on it is an
  // error); the copy is one transaction on PostgreSQL, refused when that
  // database already holds state. Errors name the databases, never the
  // password or the connection string.
  try {
    const auto source = store::Store::open(from);
    store::PostgresOptions pg;
    pg.conninfo = cfg.state.postgres;
    if (!cfg.state.password.empty()) {
      pg.password = cfg.state.password;
    }
    const auto target = store::Store::open_postgres(pg);
    const std::size_t messages = source->message_count();
    store::copy_state(*source, *target);
    std::printf("copied %s from %s into PostgreSQL\n", count_of(messages, "message").c_str(),
                from.c_str());
    return 0;
  } catch (const store::StoreError& e) {
    std::fprintf(stderr, "%s%s\n", prefix.c_str(), e.what());
    return k_exit_failure;
  }
}

} // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = parse_args(args);
  if (!parsed) {
    std::fprintf(stderr, "%s\n", usage_error(parsed.error()).c_str());
    return k_exit_usage;
  }
  const Options options = *parsed;
  if (options.command == Command::run) {
    block_watched_signals(); // before the configuration, however long it takes to read
  }
  switch (options.command) {
  case Command::help:
    std::fputs(usage(), stdout);
    return k_exit_ok;
  case Command::version:
    std::printf("readreceiptd %s\n", k_version);
    return k_exit_ok;
  default:
    break;
  }

  logging::setup(options.log_level, options.log_format);
  config::Config cfg;
  try {
    cfg = config::load_file(options.config_path);
  } catch (const config::ConfigError& e) {
    for (const auto& error : e.errors()) {
      if (options.command == Command::check_config) {
        std::fprintf(stderr, "%s\n", error.c_str());
      } else {
        spdlog::error("invalid configuration: {}", error);
      }
    }
    // A probe reports "unhealthy" as 1 (Docker reserves 2).
    return options.command == Command::healthcheck ? k_exit_failure : k_exit_usage;
  }
  for (const auto& warning : cfg.warnings) {
    if (options.command == Command::check_config) {
      std::fprintf(stderr, "warning: %s\n", warning.c_str());
    } else if (options.command != Command::healthcheck) {
      logging::warn("configuration warning", {{"warning", warning}});
    }
  }

  if (options.command == Command::check_config) {
    std::printf("%s: configuration is valid (%s, %s)\n", options.config_path.c_str(),
                count_of(cfg.messages.size(), "message").c_str(),
                count_of(cfg.webhooks.size(), "webhook").c_str());
    return k_exit_ok;
  }
  if (options.command == Command::copy_state) {
    return copy_state(options, cfg);
  }
  if (options.command == Command::healthcheck) {
    const auto health = api::check_health(cfg.api);
    if (!health) {
      std::fprintf(stderr, "readreceiptd: unhealthy: %s\n", health.error().c_str());
      return k_exit_failure;
    }
    std::printf("%s\n", health->c_str());
    return k_exit_ok;
  }
  try {
    return Daemon(options, std::move(cfg)).run();
  } catch (const std::exception& e) {
    logging::critical("fatal error", {{"reason", e.what()}});
    return k_exit_failure;
  }
}

} // namespace rrd::app
