// The message table: every watched message and its tracking state, and the
// one path by which reads become events. Both sources of reads feed it: the
// poller (scheduler/) hands it each completed poll, the Stream client
// (stream/) each pushed robot_msg_read. Either way the read goes through the
// pure tracker, and what it produced (the new read set, its events, a stop)
// is committed to the store in one transaction per turn of the loop
// (transactional outbox) before the deliveries go to the dispatcher; pushed
// reads are acknowledged only then. Reads pushed for one message in one turn
// make one event.
//
// The table knows nothing of schedules' reasons: the poller says which
// schedule and stretch a poll's next time follows, and hears (Listener)
// whenever a message's next poll changes or it stops being tracked.
//
// Thread-safety: none. Everything runs on the loop thread.
#pragma once

#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/common/model.hpp"
#include "readreceiptd/config/config.hpp"
#include "readreceiptd/store/store.hpp"
#include "readreceiptd/stream/client.hpp"
#include "readreceiptd/tracker/tracker.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace rrd::tracking {

// A store failure is retried this long after: the affected messages are
// polled again then (their reads are detected again: nothing is lost).
inline constexpr Millis k_store_failure_retry{5'000};
// A poll that changed nothing but the message's poll times is written with
// the next commit that must be durable, or after this long at the latest,
// instead of in a commit (a sync) of its own every turn of the loop. Losing
// such a write in a crash only makes the message be polled again sooner.
inline constexpr Millis k_bookkeeping_flush_interval{1'000};
// While a commit is in flight (PostgreSQL: Store::begin_commit_all), the
// loop looks for its answer this often.
inline constexpr Millis k_commit_check_interval{1};
// The heap made ready at start-up per stored message: below what a loaded
// message takes in the table and the poller's queue (about 700 bytes with
// no readers or labels, more with them), so that none of it is left unused.
inline constexpr std::size_t k_heap_bytes_per_loaded_message = 640;

// What the table reports; the metrics module and the API's live updates
// implement it. No-op defaults.
class Observer {
public:
  virtual ~Observer() = default;
  // New readers committed, by source; `delay` from the read to the commit
  // where the read's time is known.
  virtual void read_committed(ReadVia, std::optional<Millis> /*delay*/) {}
  virtual void message_stopped(StopReason) {}
  virtual void tracked_changed(std::size_t) {}
  // A message's change is committed: new readers, a stop, its addition or a
  // change of its fields (not a poll that only moved its poll times). Once
  // per message per commit, after it, with the record as it is then.
  virtual void message_changed(const MessageRecord&) {}
};

// The poller's side: keeps its due queue in step with the table.
class Listener {
public:
  virtual ~Listener() = default;
  // At start-up, before the messages loaded from the store are handed over:
  // how many of them are tracked, never polled and polled (to size queues
  // once). No-op by default.
  virtual void reserve(std::size_t /*never_polled*/, std::size_t /*polled*/) {}
  // The message is tracked and next due at record.next_poll (loaded, added,
  // polled, or rolled back after a store failure).
  virtual void scheduled(const MessageRecord& record) = 0;
  // The message is no longer tracked: an answer still on its way is ignored.
  virtual void stopped(const std::string& key) = 0;
};

// Receives the deliveries of committed events (the webhook dispatcher).
using DeliverySink = std::function<void(std::vector<Delivery>)>;

// How a poll's next time is decided (the poller's choice).
struct PollPlan {
  const std::vector<config::ScheduleStep>* schedule = nullptr; // nullptr: poll.schedule
  double stretch = 1.0;                                        // the monthly budget's
};

class MessageTable final : public stream::ReadSink {
public:
  MessageTable(config::Config cfg, store::Store& store, const Clock& clock, DeliverySink deliveries,
               Observer& observer, std::uint64_t seed);
  // A commit still in flight is waited for; what it carried is not handed
  // on (the parts it would go to may be gone): a read it held is read again
  // from the database, a push it held is sent again by DingTalk.
  ~MessageTable() override;
  MessageTable(const MessageTable&) = delete;
  MessageTable& operator=(const MessageTable&) = delete;

  void set_listener(Listener* listener) { m_listener = listener; }

  // Loads the state database and reconciles it with the configuration's
  // messages (new ones added, removed ones stopped, stopped ones stay so).
  // REQUIRES: called once, first.
  void start();
  // A new configuration (after SIGHUP): the same reconciliation.
  void reconfigure(config::Config cfg);
  const config::Config& config() const { return m_cfg; }

  enum class AddOutcome { created, unchanged, conflict };
  // Adds a message at run time (the HTTP API). A known key, tracking or
  // stopped, is never tracked again: unchanged when its fields are `spec`'s,
  // a conflict otherwise.
  AddOutcome add(const MessageSpec& spec);
  // Stops tracking with reason `removed`. False if unknown.
  bool remove(const std::string& key);

  const MessageRecord* find(const std::string& key) const;
  // Visits the messages, tracking and stopped, whose key sorts after
  // `after` ("": from the first), in key order, until `visit` returns false.
  // Nothing is copied; `visit` must not change the table.
  void visit_from(std::string_view after,
                  const std::function<bool(const MessageRecord&)>& visit) const;
  // Visits the tracked messages, in no order.
  void visit_tracked(const std::function<void(const MessageRecord&)>& visit) const;
  std::size_t tracked() const { return m_tracked; }
  std::size_t size() const { return m_messages.size(); }

  // A completed poll of a tracked message.
  // REQUIRES: find(key) is tracking
  void apply_poll(const std::string& key, const tracker::PollResult& result, const PollPlan& plan);
  // Stops an oto message whose read status window has closed
  // (tracker::close_window), without a poll; false when it is not one.
  bool close_window(const std::string& key);
  // Moves a tracked message's next poll (a schedule switch, a catch-up):
  // kept in memory and written with the next commit.
  void reschedule(const std::string& key, TimePoint next_poll);

  // stream::ReadSink: a pushed read, applied at the next flush().
  Outcome push_read(const stream::ReadEvent& event, std::function<void(bool)> committed) override;

  // Commits what this turn produced, in one transaction, then hands the
  // deliveries on and acknowledges the pushes. Changes of poll times only
  // wait up to k_bookkeeping_flush_interval, unless `all`.
  // On PostgreSQL the commit does not hold the loop up: it is begun, and a
  // later flush() finds it landed and hands on what it carried; what came
  // meanwhile waits for it and goes in the next commit. One commit is in
  // flight at a time. `all`: whatever is in flight, then everything, has
  // landed (or failed) when flush() returns.
  void flush(bool all = false);
  // When flush() has something to write, if ever.
  std::optional<TimePoint> next_flush() const;

private:
  struct Entry {
    explicit Entry(MessageRecord&& r) : record(std::move(r)) {}
    MessageRecord record;
    int failures = 0;              // consecutive failed polls
    bool warned_paused = false;    // "bot stopped"-like warning logged
    bool poll_state_dirty = false; // in m_dirty: its poll times wait to be written
  };
  struct PendingCommit {
    MessageRecord previous;
    store::Commit commit;
    std::vector<std::function<void(bool)>> acks; // pushes this commit carries
    std::size_t new_readers = 0;
  };
  // The commit begun and not yet landed.
  struct InFlight {
    std::vector<PendingCommit> pending; // their commits moved into `commits`
    std::vector<store::Commit> commits;
    std::vector<std::string> dirty;
  };
  struct PushBatch {
    std::vector<tracker::PushedRead> reads;
    std::vector<std::function<void(bool)>> acks;
  };
  using Slot = std::unordered_map<std::string, Entry>::value_type;

  // Adds and updates the configuration's messages and stops those that left
  // it. `tracked_from_config`, when known, is how many tracked messages came
  // from the file before: when all of them are still there, the pass over
  // every message that looks for the ones that left is skipped.
  void reconcile(std::optional<std::size_t> tracked_from_config = std::nullopt);
  // Adds the record to the map (a key already there keeps its entry).
  Entry& place(MessageRecord&& record);
  // Counts the entry as tracked, unless it has stopped, and tells the poller.
  void announce(const Entry& entry);
  // place() and announce().
  Entry& insert(MessageRecord&& record);
  void queue_step(Entry& entry, tracker::Step step, bool durable,
                  std::vector<std::function<void(bool)>> acks = {});
  void apply_pushes();
  bool nothing_unwritten() const {
    return m_pending.empty() && m_dirty.empty() && m_pushes.empty();
  }
  void mark_dirty(Entry& entry);
  std::vector<std::string> routes_for(const MessageRecord& m, EventType type) const;
  void rolled_back(std::vector<PendingCommit>& pending, const std::vector<std::string>& dirty);
  // Whether the commit in flight has ended (`wait`: waits for it), handing
  // on what it carried, or undoing it and what was queued since.
  bool finish_commit(bool wait);
  // After a commit landed: the deliveries handed on, the pushes
  // acknowledged, the observer told.
  void committed(const InFlight& done);
  double random01();

  config::Config m_cfg;
  store::Store& m_store;
  const Clock& m_clock;
  DeliverySink m_deliveries;
  Observer& m_observer;
  Listener* m_listener = nullptr;
  std::mt19937_64 m_rng;

  std::unordered_map<std::string, Entry> m_messages; // never erased from
  // m_messages in key order, for visit_from(): pointers to the map's
  // elements (stable: nothing is erased). m_sorted is sorted; keys added since
  // the last visit wait in m_unsorted (8 bytes a message in all).
  mutable std::vector<const Slot*> m_sorted;
  mutable std::vector<const Slot*> m_unsorted;
  std::size_t m_tracked = 0;

  std::vector<PendingCommit> m_pending;
  std::optional<InFlight> m_in_flight;
  // Messages whose poll times (and sendStatus) changed since the last write,
  // and nothing else: written once each by the next flush(), from the
  // record as it is then, however often they were polled meanwhile.
  std::vector<std::string> m_dirty;
  // Pushed reads of this turn, by message, in arrival order of the messages.
  std::unordered_map<std::string, PushBatch> m_pushes;
  std::vector<std::string> m_push_order;
  std::size_t m_pending_durable = 0; // entries of m_pending that must not wait
  TimePoint m_pending_since{};       // when something last became unwritten
};

} // namespace rrd::tracking
