#include "readreceiptd/app/app.hpp"

#include "readreceiptd/api/command_queue.hpp"
#include "readreceiptd/api/healthcheck.hpp"
#include "readreceiptd/api/server.hpp"
#include "readreceiptd/api/updates.hpp"
#include "readreceiptd/app/cli.hpp"
#include "readreceiptd/app/logging.hpp"
#include "readreceiptd/app/notify.hpp"
#include "readreceiptd/app/signals.hpp"
#include "readreceiptd/common/plural.hpp"
#include "readreceiptd/common/version.hpp"
#include "readreceiptd/config/config.hpp"
#include "readreceiptd/http/http_engine.hpp"
#include "readreceiptd/metrics/metrics.hpp"
#include "readreceiptd/scheduler/scheduler.hpp"
#include "readreceiptd/store/store.hpp"
#include "readreceiptd/stream/client.hpp"
#include "readreceiptd/tracking/table.hpp"
#include "readreceiptd/webhook/dispatcher.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <spdlog/spdlog.h>
#include <system_error>

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

// The HTTP API's view of the loop's state. Runs on the loop thread only
// (the CommandQueue calls it from run_pending()).
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
    m_table.flush(); // persisted before the API answers
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
    m_table.flush();
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

// One run of the daemon: the start-up steps in order, the loop, teardown.
class Daemon {
public:
  Daemon(Options options, config::Config cfg)
      : m_options(std::move(options)), m_cfg(std::move(cfg)) {}

  int run() {
    SignalWatcher signals; // first: every later thread inherits the blocked mask
    std::unique_ptr<store::Store> store;
    if (m_cfg.state.uses_postgres()) {
      logging::error("cannot run on PostgreSQL yet",
                     {{"reason", "state.postgres: this build can copy a state into PostgreSQL "
                                 "(--copy-state-from) but runs on SQLite only (state.path)"}});
      return k_exit_failure;
    }
    try {
      store = store::Store::open(m_cfg.state.path);
    } catch (const store::StoreError& e) {
      logging::error("cannot open the state database", {{"reason", e.what()}});
      return k_exit_failure;
    }
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
    std::mt19937_64 seeder(std::random_device{}());
    std::mt19937_64 dispatcher_rng(seeder());
    webhook::Dispatcher dispatcher(*store, *engine, clock, [&dispatcher_rng] {
      return std::uniform_real_distribution<double>(0.0, 1.0)(dispatcher_rng);
    });
    DeadLetterCounts dead_letters(*store);
    webhook::Observer hooks = m_metrics->webhook_observer();
    hooks.on_dead = [&dead_letters, metrics_dead = hooks.on_dead](const std::string& hook) {
      if (metrics_dead) {
        metrics_dead(hook);
      }
      dead_letters.died(hook);
    };
    dispatcher.set_observer(std::move(hooks));
    dispatcher.configure(m_cfg.webhooks);
    dispatcher.load(store->load_pending_deliveries());
    // GET /v1/updates: the hub its streams subscribe to, and the loop's
    // feed of it. Before the table (which reports to the feed) and the API
    // server (whose streams the hub outlives).
    api::UpdateHub updates;
    api::UpdateFeed feed(updates);
    TableObservers table_observers(*m_metrics, feed);
    // The message table, and its two sources of reads: the poller and the
    // Stream client.
    tracking::MessageTable table(
        m_cfg, *store, clock,
        [&dispatcher](const std::vector<Delivery>& d) { dispatcher.enqueue(d); }, table_observers,
        seeder());
    scheduler::Scheduler sched(m_cfg, table, *store, *engine, clock, *m_metrics, seeder());
    try {
      sched.start();
      table.start();
    } catch (const store::StoreError& e) {
      logging::error("cannot load the state database", {{"reason", e.what()}});
      return k_exit_failure;
    }
    std::unique_ptr<stream::Client> push;
    const auto push_seed = seeder();
    const auto configure_push = [&] {
      if (!m_cfg.dingtalk.stream.enabled || !stream::credentials(m_cfg.dingtalk)) {
        push.reset();
      } else if (push) {
        push->reconfigure(m_cfg.dingtalk);
      } else {
        push = std::make_unique<stream::Client>(m_cfg.dingtalk, *engine, clock, sched.limiter(),
                                                table, *m_metrics, push_seed);
      }
    };
    configure_push();
    m_metrics->after_turn(clock.now(), table, sched, dispatcher, *store);

    // Listeners: the HTTP API. Its threads only talk to the loop through
    // `commands` and read `loop_status`.
    api::LoopStatus loop_status;
    loop_status.beat(steady_now());
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
    SystemdNotifier notifier;
    const auto status = [&] {
      return gather_status(started_at, notifier.ready_sent(), m_cfg, table, sched, push.get(),
                           dispatcher, dead_letters);
    };
    LoopBackend backend(table, *store, dispatcher, clock, dead_letters, status);
    loop_status.set_readiness(api::Readiness::waiting_for_token);
    logging::info("readreceiptd started: " + count_of(table.tracked(), "message") + " tracked, " +
                      count_of(m_cfg.webhooks.size(), "webhook"),
                  {{"version", k_version},
                   // The connection string may hold a password: never logged.
                   {"state", m_cfg.state.uses_postgres() ? "postgres" : m_cfg.state.path},
                   {"push", push ? "stream" : "off"}});

    while (!signals.stop_requested()) {
      loop_status.beat(steady_now());
      notifier.watchdog(steady_now());
      if (signals.take_reload()) {
        const bool was_ready = notifier.ready_sent();
        if (was_ready) {
          notifier.reloading();
        }
        if (reload(table, sched, dispatcher, api_server.get())) {
          configure_push();
        }
        if (was_ready) {
          notifier.ready();
        }
      }
      commands.run_pending(backend);
      if (push) {
        push->pump();
        sched.set_push_state(push->connected(), push->state_since());
      }
      sched.pump();
      dispatcher.pump();
      const TimePoint now = clock.now();
      Millis wait = k_max_loop_wait;
      if (auto watchdog = notifier.watchdog_interval()) {
        wait = std::min(wait, *watchdog);
      }
      // The status is looked at again when due only while someone listens.
      const auto status_due = updates.subscribers() > 0 ? feed.next_wakeup() : std::nullopt;
      for (auto next : {sched.next_wakeup(), dispatcher.next_due(), table.next_flush(),
                        push ? push->next_wakeup() : std::nullopt, status_due}) {
        if (next) {
          wait = std::min(wait, std::max(Millis{0}, *next - now));
        }
      }
      engine->run_once(wait);
      // Polled and pushed reads of this turn, committed together; pushes are
      // acknowledged once this returns.
      try {
        table.flush();
      } catch (const std::exception& e) {
        logging::error("cannot commit the reads", {{"reason", e.what()}});
      }
      dispatcher.flush();
      m_metrics->after_turn(clock.now(), table, sched, dispatcher, *store);
      if (api_server) {
        // The turn's changed messages, and the status when it changed.
        feed.end_turn(clock.now(), status);
        m_metrics->set_update_stats(updates.stats());
      }
      if (!notifier.ready_sent() && sched.has_token()) {
        // Store, listeners and a first token are in place.
        notifier.ready();
        loop_status.set_readiness(api::Readiness::ready);
        logging::info("ready: " + count_of(table.tracked(), "message") + " tracked");
      }
      notifier.status(status_text(table, dispatcher, notifier.ready_sent()), steady_now());
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
    sched.cancel_all();
    table.flush(true); // what was pushed is committed and acknowledged
    if (push) {
      push->stop();
    }
    const TimePoint deadline = clock.now() + k_drain_timeout;
    while (!dispatcher.idle() && clock.now() < deadline) {
      engine->run_once(Millis{100});
      dispatcher.flush();
    }
    engine->run_once(Millis{0}); // the Stream's close frames
    table.flush(true);
    push.reset();
    if (api_server) {
      api_server->stop();
    }
    signals.set_wakeup({});
    engine.reset(); // cancels what is still in flight; those events stay pending
    logging::info("stopped");
    return k_exit_ok;
  }

private:
  std::string status_text(const tracking::MessageTable& table,
                          const webhook::Dispatcher& dispatcher, bool ready) const {
    std::size_t pending = 0;
    for (const auto& hook : m_cfg.webhooks) {
      pending += dispatcher.pending(hook.name);
    }
    std::string text = "tracking " + count_of(table.tracked(), "message") + ", " +
                       count_of(pending, "pending delivery", "pending deliveries");
    return ready ? text : "waiting for the first DingTalk access token; " + text;
  }

  // True when the new configuration took effect.
  bool reload(tracking::MessageTable& table, scheduler::Scheduler& sched,
              webhook::Dispatcher& dispatcher, api::Server* api_server) {
    logging::info("reloading the configuration", {{"path", m_options.config_path}});
    config::Config cfg;
    try {
      cfg = config::load_file(m_options.config_path);
    } catch (const config::ConfigError& e) {
      for (const auto& error : e.errors()) {
        spdlog::error("configuration rejected, keeping the previous one: {}", error);
      }
      m_metrics->reload_failed();
      return false;
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
    try {
      dispatcher.configure(cfg.webhooks);
      sched.reconfigure(cfg);
      table.reconfigure(cfg);
    } catch (const std::exception& e) {
      logging::error("applying the new configuration failed", {{"reason", e.what()}});
    }
    m_cfg = std::move(cfg);
    m_metrics->reload_succeeded(m_cfg, RealClock().now());
    logging::info("configuration reloaded: " + count_of(table.tracked(), "message") + " tracked, " +
                  count_of(m_cfg.webhooks.size(), "webhook"));
    return true;
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
