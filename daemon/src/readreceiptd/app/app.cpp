#include "readreceiptd/app/app.hpp"

#include "readreceiptd/app/cli.hpp"
#include "readreceiptd/app/logging.hpp"
#include "readreceiptd/app/signals.hpp"
#include "readreceiptd/common/version.hpp"
#include "readreceiptd/config/config.hpp"
#include "readreceiptd/http/http_engine.hpp"
#include "readreceiptd/scheduler/scheduler.hpp"
#include "readreceiptd/store/store.hpp"
#include "readreceiptd/webhook/dispatcher.hpp"

#include <algorithm>
#include <cstdio>
#include <random>
#include <spdlog/spdlog.h>

namespace rrd::app {

namespace {

// The loop never sleeps longer than this, so that it notices a stop or a
// reload request even if a wake-up were lost.
constexpr Millis k_max_loop_wait{1'000};
// How long a graceful stop waits for deliveries in flight (SPEC: stop
// within 10 s in all).
constexpr Millis k_drain_timeout{5'000};
constexpr int k_exit_ok = 0;
constexpr int k_exit_failure = 1;
constexpr int k_exit_usage = 2;

std::vector<std::string> secrets_of(const config::Config& cfg) {
  std::vector<std::string> s{
      cfg.dingtalk.internal_app.app_secret, cfg.dingtalk.third_party.suite_secret,
      cfg.dingtalk.third_party.suite_ticket, cfg.dingtalk.fixed_token.access_token, cfg.api.token};
  for (const auto& hook : cfg.webhooks) {
    s.push_back(hook.secret);
  }
  s.erase(std::remove(s.begin(), s.end(), std::string()), s.end());
  return s;
}

class NullObserver final : public scheduler::Observer {};

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
    try {
      store = store::Store::open(m_cfg.state.path);
    } catch (const store::StoreError& e) {
      spdlog::error("cannot open the state database: {}", e.what());
      return k_exit_failure;
    }
    auto engine = http::make_curl_engine();
    signals.set_wakeup([&engine] { engine->wakeup(); });
    // The watcher's thread may be inside the wake-up (a stop request sets the
    // flag, then wakes the loop) when the loop ends; clearing it waits for
    // that call, so the engine is destroyed only after it. Also on the early
    // returns below.
    const WakeupClearer clear_wakeup{signals};
    RealClock clock;
    std::mt19937_64 seeder(std::random_device{}());
    std::mt19937_64 dispatcher_rng(seeder());
    webhook::Dispatcher dispatcher(*store, *engine, clock, [&dispatcher_rng] {
      return std::uniform_real_distribution<double>(0.0, 1.0)(dispatcher_rng);
    });
    dispatcher.configure(m_cfg.webhooks);
    dispatcher.load(store->load_pending_deliveries());
    NullObserver observer;
    scheduler::Scheduler sched(
        m_cfg, *store, *engine, clock,
        [&dispatcher](const std::vector<Delivery>& d) { dispatcher.enqueue(d); }, observer,
        seeder());
    try {
      sched.start();
    } catch (const store::StoreError& e) {
      spdlog::error("cannot load the state database: {}", e.what());
      return k_exit_failure;
    }
    spdlog::info("readreceiptd {} started: {} messages tracked, {} webhooks, state in {}",
                 k_version, sched.tracked(), m_cfg.webhooks.size(), m_cfg.state.path);

    while (!signals.stop_requested()) {
      if (signals.take_reload()) {
        reload(sched, dispatcher);
      }
      sched.pump();
      dispatcher.pump();
      const TimePoint now = clock.now();
      Millis wait = k_max_loop_wait;
      for (auto next : {sched.next_wakeup(), dispatcher.next_due()}) {
        if (next) {
          wait = std::min(wait, std::max(Millis{0}, *next - now));
        }
      }
      engine->run_once(wait);
      try {
        sched.flush();
      } catch (const std::exception& e) {
        spdlog::error("{}", e.what());
      }
    }

    spdlog::info("stopping");
    sched.cancel_all();
    const TimePoint deadline = clock.now() + k_drain_timeout;
    while (!dispatcher.idle() && clock.now() < deadline) {
      engine->run_once(Millis{100});
    }
    sched.flush();
    signals.set_wakeup({});
    engine.reset(); // cancels what is still in flight; those events stay pending
    spdlog::info("stopped");
    return k_exit_ok;
  }

private:
  void reload(scheduler::Scheduler& sched, webhook::Dispatcher& dispatcher) {
    spdlog::info("reloading the configuration from {}", m_options.config_path);
    try {
      auto cfg = config::load_file(m_options.config_path);
      logging::set_secrets(secrets_of(cfg));
      if (cfg.state.path != m_cfg.state.path) {
        spdlog::warn("state.path changed; the new path takes effect at the next start");
      }
      dispatcher.configure(cfg.webhooks);
      sched.reconfigure(cfg);
      m_cfg = std::move(cfg);
      spdlog::info("configuration reloaded: {} messages tracked", sched.tracked());
    } catch (const config::ConfigError& e) {
      spdlog::error("configuration rejected, keeping the previous one: {}", e.what());
    }
  }

  Options m_options;
  config::Config m_cfg;
};

} // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = parse_args(args);
  if (!parsed) {
    std::fprintf(stderr, "readreceiptd: %s\n\n%s", parsed.error().c_str(), usage());
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
    if (options.command == Command::check_config) {
      std::fprintf(stderr, "%s\n", e.what());
    } else {
      spdlog::error("invalid configuration: {}", e.what());
    }
    return k_exit_usage;
  }
  logging::set_secrets(secrets_of(cfg));

  if (options.command == Command::check_config) {
    std::printf("%s: configuration is valid (%zu messages, %zu webhooks)\n",
                options.config_path.c_str(), cfg.messages.size(), cfg.webhooks.size());
    return k_exit_ok;
  }
  if (options.command == Command::healthcheck) {
    std::fprintf(stderr, "readreceiptd: --healthcheck needs the HTTP API\n");
    return k_exit_failure;
  }
  try {
    return Daemon(options, std::move(cfg)).run();
  } catch (const std::exception& e) {
    spdlog::critical("fatal: {}", e.what());
    return k_exit_failure;
  }
}

} // namespace rrd::app
