// Store: the state database that is the source of truth for everything that
// must survive a crash: the watched messages, their read sets and stop
// state, and the outbox of events and their deliveries. Two backends behind
// this one class, with the same schema, migrations and logic: SQLite (WAL
// mode; open()) and PostgreSQL (libpq; open_postgres()), which adds the
// leadership lease and fencing of SPEC section 12. All SQL of the daemon
// lives in this module, with numbered schema migrations.
//
// Thread-safety: none. One Store is owned by one thread (the scheduler
// loop's); a second thread that needs the database opens its own Store.
// Errors: open() throws StoreError (start-up); the other calls throw
// StoreError too, which the loop treats as fatal for the operation (the
// transaction is rolled back, nothing half-written stays). On PostgreSQL a
// lost connection is a StoreUnavailable, and the next call connects again;
// a write refused by the fence is a FencedError.
// Durability: SQLite: WAL with synchronous=FULL, so a commit that returned
// survives a power loss. One process per SQLite database: open() holds an
// exclusive flock() on `<path>.lock` until the Store is destroyed; a second
// open() of the same path, from this process or another, fails at once.
// PostgreSQL: what the server's own settings guarantee (synchronous_commit);
// several daemons share the database and the lease says which one writes.
#pragma once

#include "readreceiptd/common/model.hpp"

#include <chrono>
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

// PostgreSQL only: the database cannot be reached, or the connection was
// lost (server restart, failover, network). The next call connects again;
// the caller chooses the backoff. The failed call's transaction was rolled
// back, except when the connection was lost during its COMMIT: then it may
// or may not have landed, and the caller resumes from what the database
// holds (an event may be delivered twice, never lost).
class StoreUnavailable : public StoreError {
public:
  using StoreError::StoreError;
};

// PostgreSQL only: a write refused because the lease no longer has the
// holder and epoch of set_fence() (another daemon took over). Nothing of
// the refused call was written.
class FencedError : public StoreError {
public:
  using StoreError::StoreError;
};

// How to reach a PostgreSQL state database.
struct PostgresOptions {
  // A libpq connection string ("host=... dbname=..." or a postgresql:// URI).
  // Errors never repeat it (it may hold a password): they name the host and
  // database only.
  std::string conninfo;
  // Read by the caller from state.password_file; a secret, never in an error
  // or a log. Without it libpq's own means apply (PGPASSFILE, ~/.pgpass).
  std::optional<std::string> password;
  // For each connection attempt (libpq's connect_timeout; at least 1 s).
  std::chrono::seconds connect_timeout{10};
};

// The leadership lease as the database holds it (SPEC section 12).
struct LeaseRow {
  std::string holder;       // the id the holder drew at its start
  std::int64_t epoch = 0;   // +1 at every acquisition
  std::string holder_info;  // host name and API address, for the standbys
  bool expired = true;      // by the database's clock
  std::int64_t ms_left = 0; // until it expires, by the database's clock; 0 once expired
  bool operator==(const LeaseRow&) const = default;
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

struct MessageCounts {
  std::size_t tracking = 0;
  std::size_t stopped = 0;
  bool operator==(const MessageCounts&) const = default;
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
  // Opens or creates the SQLite database at `path` (":memory:" for tests),
  // applies pending migrations. Throws StoreError naming the path and the
  // problem, e.g. when the database is in use, is not a database, or has a
  // schema version newer than this build knows.
  static std::unique_ptr<Store> open(const std::string& path);
  // Connects to the PostgreSQL database, creates or migrates its schema
  // (under an advisory lock, in one transaction). Throws StoreUnavailable
  // when it cannot connect, StoreError for a malformed connection string, a
  // newer schema or a failed migration; errors name the host and database.
  static std::unique_ptr<Store> open_postgres(const PostgresOptions& options);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  bool is_postgres() const;

  // Called with the duration of every commit(), commit_all() and
  // begin_commit_all() that committed, from its start to its end (for
  // readreceiptd_store_commit_duration_seconds). Empty: none.
  void set_commit_observer(std::function<void(double seconds)> observer);

  // --- messages
  // Every stored message, by (added_at, process_query_key).
  std::vector<MessageRecord> load_messages();
  // Every stored message, handed to `visit` one at a time, in no particular
  // order (no sort, and never all of them in memory twice: the start-up of a
  // large table). `visit` may move from the record.
  void visit_messages(const std::function<void(MessageRecord&)>& visit);
  // How many messages are stored.
  std::size_t message_count();
  // Tracking and stopped messages, in one query.
  MessageCounts count_messages();
  // At most `limit` messages whose key sorts after `after` ("": from the
  // first), in key order (byte order on both backends); a standby's
  // GET /v1/messages, page by page, from the primary key's index.
  std::vector<MessageRecord> load_messages_after(const std::string& after, std::size_t limit);
  std::optional<MessageRecord> load_message(const std::string& process_query_key);
  // Writes one message and its events/deliveries in one transaction: the
  // message row is inserted or replaced, each event inserted, and a pending
  // delivery (attempts 0, due at the event's created_at) added per route.
  // An event id or (message, sequence) already stored is a StoreError, as
  // are routes.size() != events.size() and an event of another message.
  void commit(const Commit& c);
  // Writes several commits in one transaction (all or nothing).
  void commit_all(const std::vector<Commit>& commits);
  // commit_all() without waiting for the database where it can: on
  // PostgreSQL every statement is sent, COMMIT included, and the call
  // returns while the server works; finish_commit() tells when it has
  // landed. On SQLite it has committed when it returns. Throws what
  // commit_all() throws when the batch cannot be sent (a malformed batch, a
  // fenced write, a lost connection: nothing is written). One at a time:
  // the commit begun must be finished before the next begins (a
  // StoreError otherwise). Every other call waits for the commit in flight
  // first (and finish_commit() still tells its outcome).
  void begin_commit_all(const std::vector<Commit>& commits);
  // Whether the commit begun has ended: false while it is in flight (never
  // when `wait`: it waits), true once it has committed (also when none was
  // begun); throws its StoreError, once, when it failed (then nothing of it
  // was written). The commit observer sees it when it ends.
  bool finish_commit(bool wait);
  // Whether a commit begun has not been finished yet.
  bool commit_in_flight() const;

  // --- outbox
  // Every delivery that is pending, ordered by (process_query_key, webhook,
  // sequence).
  std::vector<Delivery> load_pending_deliveries();
  // mark_delivered/mark_retry/mark_dead throw StoreError when there is no
  // such delivery.
  void mark_delivered(const std::string& event_id, const std::string& webhook);
  // Marks several deliveries, (event id, webhook), delivered in one
  // transaction (all or nothing). Ones not stored are skipped. Not synced
  // on its own (store.cpp, durability): a crash right after may lose the
  // marks, and the events are delivered again.
  void mark_delivered_all(const std::vector<std::pair<std::string, std::string>>& deliveries);
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
  // The same of pending deliveries (a standby's status).
  std::map<std::string, std::int64_t> count_pending_by_webhook();
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

  // SQLite: PRAGMA integrity_check == "ok" (false also when the check cannot
  // run). PostgreSQL: the server answers (it checks its own pages).
  bool integrity_ok();

  // --- the leadership lease and fencing (SPEC section 12). PostgreSQL only:
  // on SQLite (one process per file) every one of these throws StoreError.
  // Times are by the database's clock; each write is one statement in
  // autocommit, so that a daemon stopped between two round trips holds no
  // lock. The lease records the session its holder took or renewed it from.
  //
  // Takes the lease for `holder` when there is none, it has expired, or it
  // is `holder`'s own (a holder whose lease lapsed gets a new epoch too,
  // never its old one back): returns the new epoch. nullopt while another
  // holder's lease is unexpired, or while another session holds the lease
  // row for longer than a moment (250 ms). When that session is the expired
  // holder's, left in the middle of a write by a daemon that stopped
  // (paused, frozen), it is ended, which rolls its write back, and the lease
  // is taken.
  std::optional<std::int64_t> acquire_lease(const std::string& holder, const std::string& info,
                                            std::chrono::milliseconds ttl);
  // Extends the lease by `ttl` from now, only while it is unexpired and
  // still (holder, epoch). False otherwise: the caller has lost it.
  bool renew_lease(const std::string& holder, std::int64_t epoch, std::chrono::milliseconds ttl);
  // Expires the lease now if it is (holder, epoch), so that a standby takes
  // it at once. Nothing when it is not.
  void release_lease(const std::string& holder, std::int64_t epoch);
  // The lease as it stands; nullopt when none was ever taken.
  std::optional<LeaseRow> read_lease();
  // From now on every write of this Store checks, in its own transaction,
  // that the lease still is (holder, epoch), and throws FencedError (writing
  // nothing) when it is not: a takeover either waits for a write in flight
  // to commit or makes it fail, never lets it commit after. clear_fence()
  // stops the checks (a standby writes nothing anyway).
  void set_fence(const std::string& holder, std::int64_t epoch);
  void clear_fence();

  // What went wrong since the last call, whichever call it broke and
  // whoever caught the error: a write fenced off (fenced wins), or the
  // connection lost or not made (unavailable), even when a later call
  // connected again. A leader that sees either stops all work and resumes
  // from the database. Always none on SQLite.
  enum class Trouble { none, unavailable, fenced };
  Trouble take_trouble();

private:
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> m_impl;
  friend void copy_state(Store& from, Store& to);
};

// Copies every message, event, delivery, disabled webhook and month of
// `from` into `to`, column for column, in one transaction on `to` (all or
// nothing); for `readreceiptd --copy-state-from`. Refuses, with a
// StoreError saying so, a target that already holds state. Either store may
// be on either backend.
void copy_state(Store& from, Store& to);

} // namespace rrd::store
