// Store: the SQLite database (WAL mode) that is the source of truth for
// everything that must survive a crash: the watched messages, their read sets
// and stop state, and the outbox of events and their deliveries. All SQL of
// the daemon lives in this module, with numbered schema migrations.
//
// Thread-safety: none. One Store is owned by the scheduler loop's thread.
// Errors: open() throws StoreError (start-up); the other calls throw
// StoreError too, which the loop treats as fatal for the operation (the
// transaction is rolled back, nothing half-written stays).
// Durability: WAL with synchronous=FULL, so a commit that returned survives a
// power loss. One process per database: open() holds an exclusive flock() on
// `<path>.lock` until the Store is destroyed; a second open() of the same
// path, from this process or another, fails at once.
#pragma once

#include "readreceiptd/common/model.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace rrd::store {

class StoreError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

// One unit of work committed atomically: a message's new state and the events
// it produced, each with a delivery per webhook it is routed to.
struct Commit {
  MessageRecord message;
  std::vector<OutboxEvent> events;
  // For each event (same index), the names of the webhooks it goes to.
  std::vector<std::vector<std::string>> routes;
  // Set by a writer that knows the stored row differs from `message` in
  // send_status, last_poll and next_poll at most (a poll that found nothing
  // new): only those columns are written. Ignored when there are events; a
  // row that is not stored is written whole.
  bool poll_state_only = false;
};

// The read-status calls of one calendar month (scheduler/budget.hpp).
struct MonthCalls {
  std::string month; // "2026-12"
  std::int64_t calls = 0;
  std::int64_t first_polls = 0;
  bool quota_exhausted = false; // DingTalk answered ApiCountLimit this month
  bool operator==(const MonthCalls&) const = default;
};

struct DeadLetter {
  Delivery delivery;
  std::optional<TimePoint> died_at;
};

// One delivery of a stored event, as it stands.
struct EventDelivery {
  std::string webhook;
  DeliveryState state = DeliveryState::pending;
  int attempts = 0;
  TimePoint next_attempt; // meaningful while pending
  std::string last_error;
  std::optional<TimePoint> died_at; // set while dead
  bool operator==(const EventDelivery&) const = default;
};

// A stored event of a message with its deliveries (by webhook name), without
// its body.
struct StoredEvent {
  std::string id;
  EventType type = EventType::message_read;
  std::int64_t sequence = 0;
  TimePoint created_at;
  std::vector<EventDelivery> deliveries;
  bool operator==(const StoredEvent&) const = default;
};

class Store {
public:
  // Opens or creates the database at `path` (":memory:" for tests), applies
  // pending migrations. Throws StoreError naming the path and the problem,
  // e.g. when the database is in use, is not a database, or has a schema
  // version newer than this build knows.
  static std::unique_ptr<Store> open(const std::string& path);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // --- messages
  // Every stored message, by (added_at, process_query_key).
  std::vector<MessageRecord> load_messages();
  // Every stored message, handed to `visit` one at a time, in no particular
  // order (no sort, and never all of them in memory twice: the start-up of a
  // large table). `visit` may move from the record.
  void visit_messages(const std::function<void(MessageRecord&)>& visit);
  // How many messages are stored.
  std::size_t message_count();
  std::optional<MessageRecord> load_message(const std::string& process_query_key);
  // Writes one message and its events/deliveries in one transaction: the
  // message row is inserted or replaced, each event inserted, and a pending
  // delivery (attempts 0, due at the event's created_at) added per route.
  // An event id or (message, sequence) already stored is a StoreError, as
  // are routes.size() != events.size() and an event of another message.
  void commit(const Commit& c);
  // Writes several commits in one transaction (all or nothing).
  void commit_all(const std::vector<Commit>& commits);

  // --- outbox
  // Every delivery that is pending, ordered by (process_query_key, webhook,
  // sequence).
  std::vector<Delivery> load_pending_deliveries();
  // mark_delivered/mark_retry/mark_dead throw StoreError when there is no
  // such delivery.
  void mark_delivered(const std::string& event_id, const std::string& webhook);
  // Marks several deliveries, (event id, webhook), delivered in one
  // transaction (all or nothing). Ones not stored are skipped: returns how
  // many were marked.
  std::size_t
  mark_delivered_all(const std::vector<std::pair<std::string, std::string>>& deliveries);
  // Records a failed attempt and when to try next.
  void mark_retry(const std::string& event_id, const std::string& webhook, int attempts,
                  TimePoint next_attempt, const std::string& last_error);
  void mark_dead(const std::string& event_id, const std::string& webhook, int attempts,
                 TimePoint died_at, const std::string& last_error);
  std::vector<DeadLetter> load_dead_letters();
  // The events of one message whose sequence is after `after_sequence`, in
  // sequence order, at most `limit` of them, each with its deliveries in
  // webhook order (none when no webhook was routed). Pruned events are gone.
  // Two indexed queries' worth: the events by (message, sequence), their
  // deliveries by event id.
  std::vector<StoredEvent> load_message_events(const std::string& process_query_key,
                                               std::int64_t after_sequence, std::size_t limit);
  // The number of dead deliveries per webhook name (webhooks without any are
  // absent). One indexed query; for the dead-letter gauge.
  std::map<std::string, std::int64_t> count_dead_by_webhook();
  // Moves every dead delivery of `event_id` back to pending, due at `when`
  // with its attempts reset and last_error cleared. Returns the number of
  // deliveries requeued (0 for an unknown event).
  int replay_dead(const std::string& event_id, TimePoint when);
  // Deletes delivered deliveries and events that have none left pending or
  // dead, older than `before`. Returns the number of events deleted.
  // "Older" is by the event's created_at. Messages are never deleted.
  int prune_delivered(TimePoint before);

  // --- webhooks disabled by a 410 answer, keyed by name; `fingerprint`
  // identifies the configuration that was disabled, so that a changed
  // configuration enables the webhook again.
  void set_webhook_disabled(const std::string& name, const std::string& fingerprint, TimePoint at,
                            const std::string& reason);
  void clear_webhook_disabled(const std::string& name);
  // The fingerprint the webhook was disabled under, if it is disabled.
  std::optional<std::string> webhook_disabled_fingerprint(const std::string& name);

  // --- the monthly call count
  // The month's record, if any calls were counted in it.
  std::optional<MonthCalls> load_month(const std::string& month);
  // Writes the month's record (in a transaction of its own: it is durable
  // when this returns).
  void save_month(const MonthCalls& m);

  // PRAGMA integrity_check == "ok" (false also when the check cannot run).
  bool integrity_ok();

private:
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> m_impl;
};

} // namespace rrd::store
