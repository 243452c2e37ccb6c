#include "readreceiptd/metrics/metrics.hpp"

#include "readreceiptd/app/logging.hpp"
#include "readreceiptd/common/version.hpp"
#include "readreceiptd/metrics/process_collector.hpp"

#include <algorithm>
#include <chrono>

namespace rrd::metrics {

namespace {

template <typename T, std::size_t N> std::size_t index_of(const T (&values)[N], T value) {
  for (std::size_t i = 0; i < N; ++i) {
    if (values[i] == value) {
      return i;
    }
  }
  return N;
}

constexpr scheduler::Api k_all_apis[] = {scheduler::Api::query, scheduler::Api::token,
                                         scheduler::Api::gateway};
constexpr ReadVia k_all_vias[] = {ReadVia::poll, ReadVia::push};

double seconds(Millis d) {
  return std::chrono::duration<double>(d).count();
}

// A registry collected under a lock (Metrics::m_locked_registry).
class LockedRegistry final : public prometheus::Collectable {
public:
  LockedRegistry(std::shared_ptr<prometheus::Registry> registry, std::mutex& mutex)
      : m_registry(std::move(registry)), m_mutex(mutex) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    const std::lock_guard lock(m_mutex);
    return m_registry->Collect();
  }

private:
  std::shared_ptr<prometheus::Registry> m_registry;
  std::mutex& m_mutex;
};

} // namespace

Metrics::Metrics(const config::Config& cfg, TimePoint loaded_at)
    : m_registry(std::make_shared<prometheus::Registry>()),
      m_locked_registry(std::make_shared<LockedRegistry>(m_registry, m_reload_mutex)),
      m_process(std::make_shared<ProcessCollector>()), m_listen(cfg.metrics.listen),
      m_stopped_family(prometheus::BuildCounter()
                           .Name("readreceiptd_messages_stopped_total")
                           .Help("Messages that stopped being tracked, by reason.")
                           .Register(*m_registry)),
      m_requests_family(prometheus::BuildCounter()
                            .Name("readreceiptd_dingtalk_requests_total")
                            .Help("DingTalk API calls that completed (failed ones included), "
                                  "by API: query (every page) or token.")
                            .Register(*m_registry)),
      m_requests_failed_family(prometheus::BuildCounter()
                                   .Name("readreceiptd_dingtalk_requests_failed_total")
                                   .Help("DingTalk API calls that failed, by API and reason.")
                                   .Register(*m_registry)),
      m_request_duration_family(prometheus::BuildHistogram()
                                    .Name("readreceiptd_dingtalk_request_duration_seconds")
                                    .Help("Duration of DingTalk API calls, by API.")
                                    .Register(*m_registry)),
      m_deliveries_family(prometheus::BuildCounter()
                              .Name("readreceiptd_webhook_deliveries_total")
                              .Help("Webhook delivery attempts that completed (failed ones "
                                    "included), by webhook.")
                              .Register(*m_registry)),
      m_deliveries_failed_family(prometheus::BuildCounter()
                                     .Name("readreceiptd_webhook_deliveries_failed_total")
                                     .Help("Webhook delivery attempts that did not get a 2xx "
                                           "answer, by webhook and reason.")
                                     .Register(*m_registry)),
      m_delivery_duration_family(prometheus::BuildHistogram()
                                     .Name("readreceiptd_webhook_delivery_duration_seconds")
                                     .Help("Duration of webhook delivery attempts, by webhook.")
                                     .Register(*m_registry)),
      m_pending_family(prometheus::BuildGauge()
                           .Name("readreceiptd_webhook_pending_events")
                           .Help("Events waiting to be delivered (in flight included), by "
                                 "webhook.")
                           .Register(*m_registry)),
      m_oldest_pending_family(
          prometheus::BuildGauge()
              .Name("readreceiptd_webhook_oldest_pending_age_seconds")
              .Help("Age of the oldest event waiting for delivery, by webhook; 0 when none.")
              .Register(*m_registry)),
      m_disabled_family(prometheus::BuildGauge()
                            .Name("readreceiptd_webhook_disabled")
                            .Help("1 while an HTTP 410 answer keeps the webhook disabled (until "
                                  "its configuration changes), else 0.")
                            .Register(*m_registry)),
      m_dead_letters_family(prometheus::BuildGauge()
                                .Name("readreceiptd_webhook_dead_letters")
                                .Help("Events given up on after the last retry, by webhook.")
                                .Register(*m_registry)),
      m_budget_family(prometheus::BuildGauge()
                          .Name("readreceiptd_dingtalk_month_call_budget")
                          .Help("dingtalk.monthly_call_budget: read-status calls allowed per "
                                "calendar month (Beijing time); exported only when set.")
                          .Register(*m_registry)) {
  prometheus::BuildGauge()
      .Name("readreceiptd_build_info")
      .Help("Always 1; the version of readreceiptd as a label.")
      .Register(*m_registry)
      .Add({{"version", k_version}})
      .Set(1);
  m_tracked = &prometheus::BuildGauge()
                   .Name("readreceiptd_messages_tracked")
                   .Help("Messages being tracked (not stopped).")
                   .Register(*m_registry)
                   .Add({});
  auto& reads = prometheus::BuildCounter()
                    .Name("readreceiptd_reads_detected_total")
                    .Help("Newly read (message, user) pairs committed, by how they became known: "
                          "poll or push.")
                    .Register(*m_registry);
  auto& read_delay = prometheus::BuildHistogram()
                         .Name("readreceiptd_read_delay_seconds")
                         .Help("From a person's read (where DingTalk says when) to its event's "
                               "commit, by how it became known.")
                         .Register(*m_registry);
  for (std::size_t v = 0; v < k_vias; ++v) {
    m_reads[v] = &reads.Add({{"via", to_string(k_all_vias[v])}});
    m_read_delay[v] = &read_delay.Add({{"via", to_string(k_all_vias[v])}}, k_read_delay_buckets);
  }
  m_month_calls = &prometheus::BuildGauge()
                       .Name("readreceiptd_dingtalk_month_calls")
                       .Help("Read-status calls (every page) counted this calendar month, "
                             "Beijing time (UTC+8).")
                       .Register(*m_registry)
                       .Add({});
  m_quota_exhausted = &prometheus::BuildGauge()
                           .Name("readreceiptd_dingtalk_quota_exhausted")
                           .Help("1 while DingTalk says its monthly API call quota is spent "
                                 "(read-status calls pause until the month turns), else 0.")
                           .Register(*m_registry)
                           .Add({});
  m_leader = &prometheus::BuildGauge()
                  .Name("readreceiptd_leader")
                  .Help("1 while this daemon is the leader (always, on SQLite), 0 while it "
                        "is a standby (state.postgres).")
                  .Register(*m_registry)
                  .Add({});
  m_leader->Set(cfg.state.uses_postgres() ? 0 : 1);
  m_commit_duration = &prometheus::BuildHistogram()
                           .Name("readreceiptd_store_commit_duration_seconds")
                           .Help("How long each commit to the state database took (SQLite or "
                                 "PostgreSQL), its sync included.")
                           .Register(*m_registry)
                           .Add({}, k_commit_duration_buckets);
  m_leader_changes = &prometheus::BuildCounter()
                          .Name("readreceiptd_leader_changes_total")
                          .Help("Times this daemon became the leader or a standby.")
                          .Register(*m_registry)
                          .Add({});
  m_stream_connected = &prometheus::BuildGauge()
                            .Name("readreceiptd_stream_connected")
                            .Help("1 while a DingTalk Stream connection is open, else 0.")
                            .Register(*m_registry)
                            .Add({});
  m_stream_connections = &prometheus::BuildCounter()
                              .Name("readreceiptd_stream_connections_total")
                              .Help("DingTalk Stream connections opened.")
                              .Register(*m_registry)
                              .Add({});
  auto& disconnects = prometheus::BuildCounter()
                          .Name("readreceiptd_stream_disconnects_total")
                          .Help("DingTalk Stream connections lost, by reason.")
                          .Register(*m_registry);
  for (std::size_t i = 0; i < k_disconnect_reasons; ++i) {
    m_stream_disconnects[i] =
        &disconnects.Add({{"reason", stream::to_string(stream::k_all_disconnect_reasons[i])}});
  }
  auto& events = prometheus::BuildCounter()
                     .Name("readreceiptd_stream_events_total")
                     .Help("Frames and events received over the Stream, by what became of "
                           "them.")
                     .Register(*m_registry);
  for (std::size_t i = 0; i < k_event_results; ++i) {
    m_stream_events[i] =
        &events.Add({{"result", stream::to_string(stream::k_all_event_results[i])}});
  }
  if (cfg.dingtalk.monthly_call_budget) {
    m_budget = &m_budget_family.Add({});
    m_budget->Set(static_cast<double>(*cfg.dingtalk.monthly_call_budget));
  }
  m_poll_delay = &prometheus::BuildHistogram()
                      .Name("readreceiptd_poll_delay_seconds")
                      .Help("How late polls start versus their schedule.")
                      .Register(*m_registry)
                      .Add({}, k_poll_delay_buckets);
  m_last_success = &prometheus::BuildGauge()
                        .Name("readreceiptd_last_successful_poll_timestamp_seconds")
                        .Help("Unix time of the last poll that DingTalk answered in full; 0 "
                              "before the first.")
                        .Register(*m_registry)
                        .Add({});
  m_reloads = &prometheus::BuildCounter()
                   .Name("readreceiptd_config_reloads_total")
                   .Help("Configuration reloads (SIGHUP), rejected ones included.")
                   .Register(*m_registry)
                   .Add({});
  m_reloads_failed = &prometheus::BuildCounter()
                          .Name("readreceiptd_config_reloads_failed_total")
                          .Help("Configuration reloads rejected as invalid.")
                          .Register(*m_registry)
                          .Add({});
  m_reload_successful = &prometheus::BuildGauge()
                             .Name("readreceiptd_config_last_reload_successful")
                             .Help("Whether the last configuration load (the start, or the last "
                                   "reload) succeeded: 1, or 0 while a rejected file stands.")
                             .Register(*m_registry)
                             .Add({});
  m_reload_successful->Set(1);
  m_reload_success_time = &prometheus::BuildGauge()
                               .Name("readreceiptd_config_last_reload_success_timestamp_seconds")
                               .Help("Unix time of the last successful configuration load (the "
                                     "start, or a reload).")
                               .Register(*m_registry)
                               .Add({});
  m_reload_success_time->Set(seconds(loaded_at.time_since_epoch()));

  for (std::size_t i = 0; i < k_stop_reasons; ++i) {
    m_stopped[i] = &m_stopped_family.Add({{"reason", to_string(k_all_stop_reasons[i])}});
  }
  for (std::size_t a = 0; a < k_apis; ++a) {
    const std::string api = scheduler::to_string(k_all_apis[a]);
    m_requests[a] = &m_requests_family.Add({{"api", api}});
    m_request_duration[a] =
        &m_request_duration_family.Add({{"api", api}}, k_request_duration_buckets);
    for (std::size_t r = 0; r < k_dingtalk_reasons; ++r) {
      m_requests_failed[a][r] = &m_requests_failed_family.Add(
          {{"api", api}, {"reason", dingtalk::to_string(dingtalk::k_all_failure_reasons[r])}});
    }
  }
  for (const auto& hook : cfg.webhooks) {
    webhook_series(hook.name);
  }
  m_update_subscribers = &prometheus::BuildGauge()
                              .Name("readreceiptd_api_update_subscribers")
                              .Help("Open GET /v1/updates streams (the status pages listening).")
                              .Register(*m_registry)
                              .Add({});
  auto& dropped = prometheus::BuildCounter()
                      .Name("readreceiptd_api_update_subscribers_dropped_total")
                      .Help("GET /v1/updates streams ended because the client did not read fast "
                            "enough, by reason: queue_full (its queue of updates filled up) or "
                            "write_timeout (a write did not go out in time).")
                      .Register(*m_registry);
  for (std::size_t i = 0; i < k_drop_reasons; ++i) {
    m_update_dropped[i] = &dropped.Add({{"reason", api::to_string(api::k_all_drop_reasons[i])}});
  }

  if (!m_listen.empty()) {
    m_exposer = std::make_unique<Exposer>(
        m_listen,
        std::vector<std::weak_ptr<prometheus::Collectable>>{m_locked_registry, m_process});
    logging::info("metrics listening (GET /metrics)",
                  {{"listen", m_listen}, {"port", m_exposer->port()}});
  }
}

Metrics::~Metrics() = default;

std::optional<int> Metrics::port() const {
  return m_exposer ? std::optional<int>(m_exposer->port()) : std::nullopt;
}

Metrics::WebhookSeries& Metrics::webhook_series(const std::string& name) {
  auto it = m_webhooks.find(name);
  if (it != m_webhooks.end()) {
    return it->second;
  }
  WebhookSeries s;
  s.deliveries = &m_deliveries_family.Add({{"webhook", name}});
  for (std::size_t r = 0; r < k_webhook_reasons; ++r) {
    s.failed[r] = &m_deliveries_failed_family.Add(
        {{"webhook", name}, {"reason", webhook::to_string(webhook::k_all_failure_reasons[r])}});
  }
  s.duration = &m_delivery_duration_family.Add({{"webhook", name}}, k_request_duration_buckets);
  s.pending = &m_pending_family.Add({{"webhook", name}});
  s.oldest_pending_age = &m_oldest_pending_family.Add({{"webhook", name}});
  s.disabled = &m_disabled_family.Add({{"webhook", name}});
  s.dead_letters = &m_dead_letters_family.Add({{"webhook", name}});
  return m_webhooks.emplace(name, s).first->second;
}

// ------------------------------------------------------------- scheduler

void Metrics::request_finished(scheduler::Api api, Millis duration,
                               dingtalk::FailureReason reason) {
  const std::size_t a = index_of(k_all_apis, api);
  if (a >= k_apis) {
    return;
  }
  m_requests[a]->Increment();
  m_request_duration[a]->Observe(seconds(duration));
  if (reason != dingtalk::FailureReason::none) {
    const std::size_t r = index_of(dingtalk::k_all_failure_reasons, reason);
    if (r < k_dingtalk_reasons) {
      m_requests_failed[a][r]->Increment();
    }
  }
}

void Metrics::poll_started(Millis delay) {
  m_poll_delay->Observe(seconds(std::max(delay, Millis{0})));
}

void Metrics::poll_succeeded(TimePoint at) {
  m_last_success->Set(seconds(at.time_since_epoch()));
}

void Metrics::read_committed(ReadVia via, std::optional<Millis> delay) {
  const std::size_t v = index_of(k_all_vias, via);
  if (v >= k_vias) {
    return;
  }
  m_reads[v]->Increment();
  if (delay) {
    m_read_delay[v]->Observe(seconds(*delay));
  }
}

// ------------------------------------------------------------- stream

void Metrics::gateway_finished(Millis duration, dingtalk::FailureReason reason) {
  request_finished(scheduler::Api::gateway, duration, reason);
}

void Metrics::connection_opened() {
  m_stream_connections->Increment();
}

void Metrics::connected_changed(bool connected) {
  m_stream_connected->Set(connected ? 1 : 0);
}

void Metrics::disconnected(stream::DisconnectReason reason) {
  const std::size_t i = index_of(stream::k_all_disconnect_reasons, reason);
  if (i < k_disconnect_reasons) {
    m_stream_disconnects[i]->Increment();
  }
}

void Metrics::event(stream::EventResult result) {
  const std::size_t i = index_of(stream::k_all_event_results, result);
  if (i < k_event_results) {
    m_stream_events[i]->Increment();
  }
}

void Metrics::message_stopped(StopReason reason) {
  const std::size_t r = index_of(k_all_stop_reasons, reason);
  if (r < k_stop_reasons) {
    m_stopped[r]->Increment();
  }
}

void Metrics::tracked_changed(std::size_t tracked) {
  set_tracked(tracked);
}

// ------------------------------------------------------------- webhooks

webhook::Observer Metrics::webhook_observer() {
  webhook::Observer o;
  o.on_attempt = [this](const std::string& hook, Millis d) { on_attempt(hook, d); };
  o.on_delivered = [this](const std::string& hook, Millis d) { on_delivered(hook, d); };
  o.on_failed = [this](const std::string& hook, webhook::FailureReason r) { on_failed(hook, r); };
  o.on_dead = [this](const std::string& hook) { on_dead(hook); };
  return o;
}

void Metrics::on_attempt(const std::string& webhook, Millis duration) {
  webhook_series(webhook).duration->Observe(seconds(duration));
}

void Metrics::on_delivered(const std::string& webhook, Millis /*duration*/) {
  webhook_series(webhook).deliveries->Increment();
}

void Metrics::on_failed(const std::string& webhook, webhook::FailureReason reason) {
  auto& s = webhook_series(webhook);
  s.deliveries->Increment();
  const std::size_t r = index_of(webhook::k_all_failure_reasons, reason);
  if (r < k_webhook_reasons) {
    s.failed[r]->Increment();
  }
}

void Metrics::on_dead(const std::string& webhook) {
  webhook_series(webhook).dead_letters->Increment();
}

// ------------------------------------------------------------- reloads

void Metrics::reload_succeeded(const config::Config& cfg, TimePoint at) {
  {
    const std::lock_guard lock(m_reload_mutex);
    for (const auto& hook : cfg.webhooks) {
      webhook_series(hook.name);
    }
    m_reloads->Increment();
    m_reload_successful->Set(1);
    m_reload_success_time->Set(seconds(at.time_since_epoch()));
  }
  m_next_dead_letter_sync.reset();
  if (cfg.metrics.listen != m_listen) {
    logging::warn("metrics.listen changed; the new address takes effect at the next start");
  }
}

void Metrics::leadership_changed(bool leader) {
  m_leader->Set(leader ? 1 : 0);
  m_leader_changes->Increment();
}

void Metrics::store_committed(double seconds) {
  m_commit_duration->Observe(seconds);
}

void Metrics::reload_failed() {
  const std::lock_guard lock(m_reload_mutex);
  m_reloads->Increment();
  m_reloads_failed->Increment();
  m_reload_successful->Set(0);
}

// ------------------------------------------------------------- state

void Metrics::after_turn(TimePoint now, const tracking::MessageTable& table,
                         const scheduler::Scheduler& sched, const webhook::Dispatcher& dispatcher,
                         store::Store& store) {
  set_tracked(table.tracked());
  set_call_budget(sched.call_budget());
  set_webhook_state(dispatcher, now);
  if (m_next_dead_letter_sync && now < *m_next_dead_letter_sync) {
    return;
  }
  m_next_dead_letter_sync = now + k_dead_letter_sync_interval;
  try {
    set_dead_letters(store.count_dead_by_webhook());
  } catch (const store::StoreError& e) {
    logging::warn("cannot count the dead letters for the metrics", {{"reason", e.what()}});
  }
}

void Metrics::set_call_budget(const scheduler::CallBudget& b) {
  m_month_calls->Set(static_cast<double>(b.calls));
  m_quota_exhausted->Set(b.quota_exhausted ? 1 : 0);
  if (b.budget && m_budget == nullptr) {
    const std::lock_guard lock(m_reload_mutex);
    m_budget = &m_budget_family.Add({});
  } else if (!b.budget && m_budget != nullptr) {
    const std::lock_guard lock(m_reload_mutex);
    m_budget_family.Remove(m_budget);
    m_budget = nullptr;
  }
  if (m_budget != nullptr) {
    m_budget->Set(static_cast<double>(*b.budget));
  }
}

void Metrics::set_tracked(std::size_t tracked) {
  m_tracked->Set(static_cast<double>(tracked));
}

void Metrics::set_webhook_state(const webhook::Dispatcher& dispatcher, TimePoint now) {
  for (auto& [name, series] : m_webhooks) {
    series.pending->Set(static_cast<double>(dispatcher.pending(name)));
    const auto oldest = dispatcher.oldest_pending(name);
    series.oldest_pending_age->Set(oldest ? seconds(std::max(Millis{0}, now - *oldest)) : 0.0);
    series.disabled->Set(dispatcher.disabled(name) ? 1.0 : 0.0);
  }
}

void Metrics::set_update_stats(const api::UpdateStats& stats) {
  m_update_subscribers->Set(static_cast<double>(stats.subscribers));
  for (std::size_t i = 0; i < k_drop_reasons; ++i) {
    if (stats.dropped[i] > m_update_dropped_seen[i]) {
      m_update_dropped[i]->Increment(
          static_cast<double>(stats.dropped[i] - m_update_dropped_seen[i]));
      m_update_dropped_seen[i] = stats.dropped[i];
    }
  }
}

void Metrics::set_dead_letters(const std::map<std::string, std::int64_t>& by_webhook) {
  for (const auto& [name, count] : by_webhook) {
    webhook_series(name); // a webhook no longer configured still has its dead letters
  }
  for (auto& [name, series] : m_webhooks) {
    const auto it = by_webhook.find(name);
    series.dead_letters->Set(it == by_webhook.end() ? 0.0 : static_cast<double>(it->second));
  }
}

} // namespace rrd::metrics
