// Dispatcher: delivers the outbox's pending deliveries to the configured
// webhooks through the HTTP engine, and records every
// outcome in the store.
//
// - One FIFO queue per (process_query_key, webhook), ordered by sequence.
//   Only a queue's head is ever in flight or waiting for its retry, so a
//   later event of a message waits while an earlier one is retried; queues
//   never wait for each other.
// - Each attempt POSTs the stored body, signed per signing.hpp with a fresh
//   `webhook-timestamp`. A webhook's own headers may replace User-Agent but
//   not Content-Type, Content-Length, Host or the webhook-* headers (those
//   are dropped with a warning at configure()). 2xx: delivered, the next event goes. 410: the
//   webhook is disabled (in the store, under its configuration's fingerprint)
//   and its queues hold until the configuration changes; the attempt is not
//   counted. Anything else (status, timeout, network error): the attempt is
//   counted and retried per retry.hpp, honouring Retry-After on 429/503;
//   after the last attempt the delivery is dead and the next event goes.
// - Deliveries to a webhook that is not (or no longer) configured, or whose
//   secret is unusable, stay pending and are not sent. Event-type filters
//   (`events:`) are applied when events are routed, not here.
// - In flight at most k_max_in_flight_per_webhook per webhook and
//   k_max_in_flight_total overall.
// - If a store write fails, the in-memory state keeps the delivery as it was
//   and tries it again after k_store_failure_retry; the database stays the
//   truth (a delivery not marked delivered may be repeated, same webhook-id).
//
// Thread-safety: none. Owned by the loop thread, which also runs the engine's
// run_once() (the completion callbacks run there). The Dispatcher may be
// destroyed with requests in flight: their callbacks then do nothing.
#pragma once

#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/common/model.hpp"
#include "readreceiptd/config/config.hpp"
#include "readreceiptd/ha/gate.hpp"
#include "readreceiptd/http/http_engine.hpp"
#include "readreceiptd/store/store.hpp"

#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace rrd::webhook {

using namespace std::chrono_literals;

// As many as the HTTP client keeps connections to one origin: a backlog
// drains over all of them.
inline constexpr std::size_t k_max_in_flight_per_webhook = 64;
inline constexpr std::size_t k_max_in_flight_total = 256;
// A webhook's answer is read for its status only; a longer body is a failure.
inline constexpr std::size_t k_max_response_bytes = 64 * 1024;
// How soon a delivery is tried again after the store failed to record an
// outcome.
inline constexpr Millis k_store_failure_retry{5s};
// A failing flush() is logged at most this often.
inline constexpr Millis k_flush_error_log_interval{10s};

// The `reason` label of readreceiptd_webhook_deliveries_failed_total.
enum class FailureReason { timeout, network, status };
const char* to_string(FailureReason r);
inline constexpr FailureReason k_all_failure_reasons[] = {
    FailureReason::timeout, FailureReason::network, FailureReason::status};

// Hooks for metrics; any of them may be empty. Called on the loop thread.
struct Observer {
  // Every attempt that completed, whatever its outcome, with its duration;
  // called before on_delivered / on_failed.
  std::function<void(const std::string& webhook, Millis duration)> on_attempt;
  // A 2xx answer; `duration` is the attempt's.
  std::function<void(const std::string& webhook, Millis duration)> on_delivered;
  // An attempt that did not succeed (a 410 included).
  std::function<void(const std::string& webhook, FailureReason reason)> on_failed;
  // A delivery became a dead letter.
  std::function<void(const std::string& webhook)> on_dead;
  // A webhook was disabled by a 410 answer.
  std::function<void(const std::string& webhook)> on_disabled;
};

// Lower-case hex SHA-256 of the delivery-relevant configuration of a webhook
// (url, secret, headers, ca_file, timeout, events). Stored instead of the
// configuration itself when a 410 disables the webhook, so a changed
// configuration is recognised without storing the secret.
std::string fingerprint(const config::Webhook& webhook);

// `last_error` text for an attempt that failed: "HTTP 500", "timeout",
// "connection refused", ... Short, fixed vocabulary: never a URL or secret.
std::string describe_failure(const http::Response& response);

class Dispatcher {
public:
  // `random01` returns a value in [0, 1) for the retry jitter.
  Dispatcher(store::Store& store, http::Engine& engine, const Clock& clock,
             std::function<double()> random01, Observer observer = {});
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  // Sets the webhooks, at start and on every reload. A webhook disabled by a
  // 410 stays disabled while its fingerprint is unchanged; a changed one is
  // enabled again (and cleared in the store). Requests in flight finish.
  void configure(const std::vector<config::Webhook>& webhooks);

  // At start-up: the store's pending deliveries. They continue from their
  // `attempts` and `next_attempt`. Same as enqueue().
  void load(const std::vector<Delivery>& pending);

  // Deliveries the loop has just committed. Deliveries already queued (same
  // event id and webhook) and ones not pending are ignored, so passing the
  // whole of store.load_pending_deliveries() again (after a dead-letter
  // replay, say) is safe.
  void enqueue(const std::vector<Delivery>& deliveries);

  // The work gate (ha/gate.hpp): while it says no, no delivery starts. nullptr (the
  // default, SQLite): always yes. The gate outlives this object.
  void set_gate(const ha::WorkGate* gate) { m_gate = gate; }

  // Submits every delivery that is due now, within the in-flight limits.
  void pump();

  // When pump() next has something to submit; a time not after now when it
  // has something already. nullopt: nothing until a request completes or new
  // deliveries or configuration arrive.
  std::optional<TimePoint> next_due() const;

  // Writes the deliveries completed since the last call as delivered, in one
  // transaction. Call after the engine ran callbacks, as Scheduler::flush().
  // Until then, a delivered event is only known to this Dispatcher: a crash
  // before the write delivers it again after the restart, with the same
  // webhook-id (at least once); one transaction per loop turn instead of one
  // per delivery is what lets a backlog drain quickly. When the write fails
  // the deliveries are kept and written by a later call, and so they are
  // while the store has a commit in flight (Store::commit_in_flight).
  void flush();

  // Nothing in flight and nothing left to write (for draining at shutdown).
  bool idle() const { return m_in_flight == 0 && m_delivered.empty(); }
  std::size_t in_flight() const { return m_in_flight; }
  // Deliveries to `webhook` not yet delivered or dead, in flight included.
  std::size_t pending(const std::string& webhook) const;
  // Whether `webhook` is configured and disabled by a 410.
  bool disabled(const std::string& webhook) const;
  // When the oldest event still pending for `webhook` was made (from its
  // event id; an id not of the daemon's form is left out); nullopt when
  // none is pending.
  std::optional<TimePoint> oldest_pending(const std::string& webhook) const;

  void set_observer(Observer observer) { m_observer = std::move(observer); }

private:
  struct QueueKey {
    std::string process_query_key;
    std::string webhook;
    auto operator<=>(const QueueKey&) const = default;
  };
  struct Queue {
    std::deque<Delivery> items; // by sequence
    bool head_in_flight = false;
  };
  struct Target {
    config::Webhook config;
    std::string key; // decoded secret; empty when unusable
    std::string fingerprint;
    std::vector<std::pair<std::string, std::string>> headers; // the fixed ones
    bool usable = false;
    bool disabled = false;
  };
  struct Counts {
    std::size_t pending = 0;
    std::size_t in_flight = 0;
    std::multiset<TimePoint> made; // when each pending event was made
  };
  // A head waiting to be submitted: (due, queue).
  using ReadyEntry = std::pair<TimePoint, QueueKey>;

  bool active(const std::string& webhook) const;
  void make_ready(const QueueKey& key, const Queue& queue);
  void unready(const QueueKey& key, const Queue& queue);
  void rebuild_ready();
  void submit(const QueueKey& key);
  void on_complete(const QueueKey& key, const std::string& event_id, const std::string& fingerprint,
                   http::Response response);
  void hold_after_store_failure(const QueueKey& key, Queue& queue, TimePoint now);
  void pop_head(const QueueKey& key);

  store::Store& m_store;
  http::Engine& m_engine;
  const ha::WorkGate* m_gate = nullptr;
  const Clock& m_clock;
  std::function<double()> m_random01;
  Observer m_observer;

  std::map<QueueKey, Queue> m_queues;
  std::map<std::string, Target> m_targets; // the configured webhooks, by name
  std::map<std::string, Counts> m_counts;  // by webhook name, configured or not
  // Heads not in flight of active webhooks, per webhook, earliest due first.
  std::map<std::string, std::set<ReadyEntry>> m_ready;
  std::size_t m_in_flight = 0;
  // Delivered, (event id, webhook), not written to the store yet (flush());
  // enqueue() does not take them for pending ones.
  std::set<std::pair<std::string, std::string>> m_delivered;
  std::optional<TimePoint> m_last_flush_error_log;
  std::size_t m_pump_round = 0; // rotates which webhook pump() serves first
  // Callbacks hold a weak_ptr to this, so that they do nothing once the
  // Dispatcher is gone.
  std::shared_ptr<int> m_alive = std::make_shared<int>(0);
};

} // namespace rrd::webhook
