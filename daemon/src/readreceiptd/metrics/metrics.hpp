// Metrics: the daemon's Prometheus metrics (the README's table). Owns the
// registry with every readreceiptd_* metric, the process collector, and,
// when `metrics.listen` is set, the exposer that serves GET /metrics there.
//
// The loop feeds it: it is the scheduler's Observer, it makes the
// dispatcher's Observer, and after each loop turn it copies the state gauges
// (messages tracked; per webhook the pending events, the age of the oldest
// one and whether a 410 disabled it) and now and then the dead letters per
// webhook from the store, and the API's live-update subscribers. Reloads set the last reload's
// outcome and time, as Prometheus and Alertmanager export theirs. Every known label value (api,
// failure and stop reasons, every configured webhook) is exported from start-up, at 0. No label
// holds a message key, a user id or a secret.
//
// Thread-safety: the methods below are for the loop thread only (they keep
// cached series handles in plain maps). The exposer's threads only read the
// registry and the process collector, which are thread-safe; prometheus-cpp
// metrics are atomic, so the loop updates while a scrape reads.
#pragma once

#include "readreceiptd/api/updates.hpp"
#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/common/model.hpp"
#include "readreceiptd/config/config.hpp"
#include "readreceiptd/dingtalk/errors.hpp"
#include "readreceiptd/metrics/exposer.hpp"
#include "readreceiptd/scheduler/scheduler.hpp"
#include "readreceiptd/store/store.hpp"
#include "readreceiptd/stream/client.hpp"
#include "readreceiptd/tracking/table.hpp"
#include "readreceiptd/webhook/dispatcher.hpp"

#include <array>
#include <cstddef>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <string>
#include <vector>

namespace rrd::metrics {

class ProcessCollector;

// Buckets, in seconds: DingTalk calls and webhook deliveries (5 ms..10 s, the
// default request timeouts) ...
inline const std::vector<double> k_request_duration_buckets{0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                            0.5,   1,    2.5,   5,    10};
// ... how long after a person read a message its event was committed (a
// push: milliseconds; a poll: up to the schedule's interval) ...
inline const std::vector<double> k_read_delay_buckets{
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400};
// ... and how late polls start (rate limiting can delay them by minutes).
// A state database commit: a sync is milliseconds; a batch over a network
// or a stalled disk, up to seconds.
inline const std::vector<double> k_commit_duration_buckets{
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
inline const std::vector<double> k_poll_delay_buckets{0.01, 0.05, 0.1, 0.25, 0.5, 1,   2.5,
                                                      5,    10,   30,  60,   300, 900, 3600};
// How often the dead letters per webhook are counted again in the store
// (an API replay lowers them; new ones are counted as they die).
inline constexpr Millis k_dead_letter_sync_interval{15'000};

class Metrics final : public scheduler::Observer,
                      public tracking::Observer,
                      public stream::Observer {
public:
  // Registers every metric, with series for `cfg.webhooks`, and listens on
  // `cfg.metrics.listen` unless it is empty. `loaded_at`: when `cfg` was
  // loaded (readreceiptd_config_last_reload_success_timestamp_seconds until
  // a reload). Throws MetricsError when it cannot listen (address in use,
  // not local, malformed).
  explicit Metrics(const config::Config& cfg, TimePoint loaded_at = TimePoint{});
  ~Metrics() override;
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // The registry of readreceiptd_* metrics (the process metrics are a
  // separate collectable, see process_collector()).
  const std::shared_ptr<prometheus::Registry>& registry() const { return m_registry; }
  const std::shared_ptr<ProcessCollector>& process_collector() const { return m_process; }
  // The port the exposer listens on; nullopt when metrics.listen is empty.
  std::optional<int> port() const;

  // --- scheduler::Observer
  void request_finished(scheduler::Api api, Millis duration,
                        dingtalk::FailureReason reason) override;
  void poll_started(Millis delay) override;
  void poll_succeeded(TimePoint at) override;
  // --- tracking::Observer
  void read_committed(ReadVia via, std::optional<Millis> delay) override;
  void message_stopped(StopReason reason) override;
  void tracked_changed(std::size_t tracked) override;
  // --- stream::Observer
  void gateway_finished(Millis duration, dingtalk::FailureReason reason) override;
  void connection_opened() override;
  void connected_changed(bool connected) override;
  void disconnected(stream::DisconnectReason reason) override;
  void event(stream::EventResult result) override;

  // Hooks for the webhook dispatcher. REQUIRES: this Metrics outlives the
  // dispatcher that holds them.
  webhook::Observer webhook_observer();

  // --- configuration reloads
  // A reload that took effect at `at`: counted, the last reload marked
  // successful at `at`, and webhooks new in `cfg` get their series. A
  // changed metrics.listen takes effect at the next start (logged).
  void reload_succeeded(const config::Config& cfg, TimePoint at);
  // A reload whose configuration was rejected: counted, and the last reload
  // marked failed (until one succeeds).
  void reload_failed();

  // --- leadership (state.postgres)
  // This daemon became the leader (true) or a standby (false): the gauge
  // follows and the change is counted. On SQLite the daemon is the leader
  // from start-up (1) and this is never called.
  void leadership_changed(bool leader);

  // --- the state database
  // A commit (one transaction of a loop turn's writes) took `seconds`;
  // the store's commit observer.
  void store_committed(double seconds);

  // --- state gauges
  // After each loop turn: messages tracked and every webhook's state (a few
  // lookups per webhook), and, at start-up, after a reload and then every
  // k_dead_letter_sync_interval, the dead letters per webhook from the store
  // (a store error is logged and tried again next time).
  void after_turn(TimePoint now, const tracking::MessageTable& table,
                  const scheduler::Scheduler& sched, const webhook::Dispatcher& dispatcher,
                  store::Store& store);
  // The month's read-status calls, the budget (its series exists only while
  // one is configured) and DingTalk's quota state.
  void set_call_budget(const scheduler::CallBudget& b);
  void set_tracked(std::size_t tracked);
  // Every webhook's pending events, the age of the oldest at `now` (0 when
  // none) and whether it is disabled.
  void set_webhook_state(const webhook::Dispatcher& dispatcher, TimePoint now);
  // Sets every webhook's dead-letter gauge from `by_webhook` (absent: 0).
  void set_dead_letters(const std::map<std::string, std::int64_t>& by_webhook);
  // The open GET /v1/updates streams, and the drops counted since the last
  // call (the hub counts them; the counters follow).
  void set_update_stats(const api::UpdateStats& stats);

private:
  static constexpr std::size_t k_apis = 3;
  static constexpr std::size_t k_vias = 2;
  static constexpr std::size_t k_disconnect_reasons = std::size(stream::k_all_disconnect_reasons);
  static constexpr std::size_t k_event_results = std::size(stream::k_all_event_results);
  static constexpr std::size_t k_dingtalk_reasons = std::size(dingtalk::k_all_failure_reasons);
  static constexpr std::size_t k_webhook_reasons = std::size(webhook::k_all_failure_reasons);
  static constexpr std::size_t k_stop_reasons = std::size(k_all_stop_reasons);
  static constexpr std::size_t k_drop_reasons = std::size(api::k_all_drop_reasons);

  // The cached series of one webhook.
  struct WebhookSeries {
    prometheus::Counter* deliveries = nullptr;
    std::array<prometheus::Counter*, k_webhook_reasons> failed{};
    prometheus::Histogram* duration = nullptr;
    prometheus::Gauge* pending = nullptr;
    prometheus::Gauge* oldest_pending_age = nullptr;
    prometheus::Gauge* disabled = nullptr;
    prometheus::Gauge* dead_letters = nullptr;
  };

  WebhookSeries& webhook_series(const std::string& name);
  void on_delivered(const std::string& webhook, Millis duration);
  void on_failed(const std::string& webhook, webhook::FailureReason reason);
  void on_attempt(const std::string& webhook, Millis duration);
  void on_dead(const std::string& webhook);

  std::shared_ptr<prometheus::Registry> m_registry;
  // What the exposer collects instead of m_registry: the registry under
  // m_reload_mutex, which reload_succeeded() and reload_failed() hold while
  // they add a reload's series and count it, so that a scrape sees a reload
  // whole or not at all.
  std::mutex m_reload_mutex;
  std::shared_ptr<prometheus::Collectable> m_locked_registry;
  std::shared_ptr<ProcessCollector> m_process;
  std::string m_listen;

  prometheus::Family<prometheus::Counter>& m_stopped_family;
  prometheus::Family<prometheus::Counter>& m_requests_family;
  prometheus::Family<prometheus::Counter>& m_requests_failed_family;
  prometheus::Family<prometheus::Histogram>& m_request_duration_family;
  prometheus::Family<prometheus::Counter>& m_deliveries_family;
  prometheus::Family<prometheus::Counter>& m_deliveries_failed_family;
  prometheus::Family<prometheus::Histogram>& m_delivery_duration_family;
  prometheus::Family<prometheus::Gauge>& m_pending_family;
  prometheus::Family<prometheus::Gauge>& m_oldest_pending_family;
  prometheus::Family<prometheus::Gauge>& m_disabled_family;
  prometheus::Family<prometheus::Gauge>& m_dead_letters_family;

  prometheus::Gauge* m_tracked = nullptr;
  std::array<prometheus::Counter*, k_vias> m_reads{};
  std::array<prometheus::Histogram*, k_vias> m_read_delay{};
  prometheus::Gauge* m_month_calls = nullptr;
  prometheus::Family<prometheus::Gauge>& m_budget_family;
  prometheus::Gauge* m_budget = nullptr; // while monthly_call_budget is set
  prometheus::Gauge* m_quota_exhausted = nullptr;
  prometheus::Gauge* m_stream_connected = nullptr;
  prometheus::Gauge* m_leader = nullptr;
  prometheus::Histogram* m_commit_duration = nullptr;
  prometheus::Counter* m_leader_changes = nullptr;
  prometheus::Counter* m_stream_connections = nullptr;
  std::array<prometheus::Counter*, k_disconnect_reasons> m_stream_disconnects{};
  std::array<prometheus::Counter*, k_event_results> m_stream_events{};
  prometheus::Histogram* m_poll_delay = nullptr;
  prometheus::Gauge* m_last_success = nullptr;
  prometheus::Counter* m_reloads = nullptr;
  prometheus::Counter* m_reloads_failed = nullptr;
  prometheus::Gauge* m_reload_successful = nullptr;
  prometheus::Gauge* m_reload_success_time = nullptr;
  std::array<prometheus::Counter*, k_stop_reasons> m_stopped{};
  std::array<prometheus::Counter*, k_apis> m_requests{};
  std::array<std::array<prometheus::Counter*, k_dingtalk_reasons>, k_apis> m_requests_failed{};
  std::array<prometheus::Histogram*, k_apis> m_request_duration{};
  std::map<std::string, WebhookSeries> m_webhooks;
  prometheus::Gauge* m_update_subscribers = nullptr;
  std::array<prometheus::Counter*, k_drop_reasons> m_update_dropped{};
  std::array<std::uint64_t, k_drop_reasons> m_update_dropped_seen{}; // the hub's counts so far

  std::optional<TimePoint> m_next_dead_letter_sync; // nullopt: at the next turn

  // Last: stopped first, before the collectables it serves go away.
  std::unique_ptr<Exposer> m_exposer;
};

} // namespace rrd::metrics
