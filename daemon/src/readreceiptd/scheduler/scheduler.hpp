// Scheduler: the heart of the daemon's loop. It owns the table of watched
// messages, the due queue, the client-side rate limiter, the token cache and
// the polls in flight; it asks DingTalk (through the HTTP engine) for the
// read lists of due messages, page by page, feeds each completed poll to the
// tracker, and commits the new read sets and their events to the store
// (transactional outbox) before handing the deliveries to the dispatcher.
//
// Thread-safety: none. Everything runs on the loop thread; other threads talk
// to it through the app's command queue.
#pragma once

#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/common/model.hpp"
#include "readreceiptd/config/config.hpp"
#include "readreceiptd/dingtalk/errors.hpp"
#include "readreceiptd/dingtalk/pagination.hpp"
#include "readreceiptd/dingtalk/token_cache.hpp"
#include "readreceiptd/http/http_engine.hpp"
#include "readreceiptd/scheduler/due_queue.hpp"
#include "readreceiptd/scheduler/rate_limiter.hpp"
#include "readreceiptd/store/store.hpp"
#include "readreceiptd/tracker/tracker.hpp"

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace rrd::scheduler {

// Polls in flight at once. No more than the HTTP engine's connections per
// host (64), so that no poll waits inside the engine for a connection while
// its request_timeout runs; enough for DingTalk's 20 calls/s with answers
// that take up to 3.2 s (bench/rate_limit.sh).
inline constexpr std::size_t k_max_polls_in_flight = 64;
// After the store refuses a commit, the affected messages are polled again
// after this long (their reads are detected again: nothing is lost).
inline constexpr Millis k_store_failure_retry{5'000};
// A poll that changed nothing but the message's poll times (no reads, no
// stop: no event) is written with the next commit that must be durable, or
// after this long at the latest, instead of in a commit (a sync) of its own
// every turn of the loop: at high poll rates that sync took most of the
// loop's time (bench/poll_throughput.sh). Losing such a write in a crash only
// makes the message be polled again sooner.
inline constexpr Millis k_bookkeeping_flush_interval{1'000};
// Throttling answers and failed calls are logged (at warn) at most this
// often each, with a count of what happened in between.
inline constexpr Millis k_throttle_log_interval{10'000};
inline constexpr Millis k_failure_log_interval{10'000};

enum class Api { query, token };
const char* to_string(Api api);

// What the scheduler reports as it works; the metrics module implements it.
// Every method has a no-op default.
class Observer {
public:
  virtual ~Observer() = default;
  virtual void request_finished(Api, Millis /*duration*/, dingtalk::FailureReason) {}
  virtual void poll_started(Millis /*delay*/) {}
  virtual void poll_succeeded(TimePoint) {}
  virtual void reads_detected(std::size_t) {}
  virtual void message_stopped(StopReason) {}
  virtual void tracked_changed(std::size_t) {}
};

// Receives the deliveries of committed events (the webhook dispatcher).
using DeliverySink = std::function<void(std::vector<Delivery>)>;

class Scheduler {
public:
  Scheduler(config::Config cfg, store::Store& store, http::Engine& engine, const Clock& clock,
            DeliverySink deliveries, Observer& observer, std::uint64_t seed);

  // Loads the state database and reconciles it with the configuration's
  // messages (new ones added, removed ones stopped, stopped ones stay so).
  // REQUIRES: called once, before pump().
  void start();
  // Applies a new configuration (after SIGHUP).
  void reconfigure(config::Config cfg);

  // Starts what is due now: a token refresh, next pages, new polls, within
  // the rate limit.
  void pump();
  // Commits what completed polls produced, in one transaction, then hands
  // the deliveries on. Call after the engine ran callbacks. Polls that
  // changed only poll times wait up to k_bookkeeping_flush_interval (none
  // wait after cancel_all()).
  void flush();
  // When pump() has work next, if ever.
  std::optional<TimePoint> next_wakeup() const;

  // Shutdown: abandons the polls in flight (their answers are ignored; the
  // next start polls those messages again) and starts no new ones.
  void cancel_all();
  bool idle() const { return m_active.empty(); }

  // A token is in hand (always true with a fixed token).
  bool has_token() const;
  std::size_t tracked() const { return m_tracked; }
  const config::Config& config() const { return m_cfg; }

  enum class AddOutcome { created, unchanged, conflict };
  // Adds a message at run time (the HTTP API); persisted like the others.
  // A known key, tracking or stopped, is never tracked again: unchanged
  // when its fields are `spec`'s, a conflict otherwise.
  AddOutcome add(const MessageSpec& spec);
  // Stops tracking a message with reason `removed`. False if unknown.
  bool remove(const std::string& key);
  const MessageRecord* find(const std::string& key) const;
  // Visits the messages, tracking and stopped, whose key sorts after
  // `after` ("": from the first), in key order, until `visit` returns false.
  // Nothing is copied; `visit` must not add messages. Keys added since the
  // last visit are sorted in first (O(k log k + n) after k additions).
  void visit_from(std::string_view after,
                  const std::function<bool(const MessageRecord&)>& visit) const;

private:
  struct Entry {
    MessageRecord record;
    int failures = 0;              // consecutive failed polls
    bool warned_paused = false;    // "bot stopped"-like warning logged
    bool poll_state_dirty = false; // in m_dirty: its poll times wait to be written
  };
  struct ActivePoll {
    std::uint64_t id = 0;
    dingtalk::PageWalk walk;
    std::optional<std::string> next_token;
    std::string token; // the access token the last page was sent with
    bool token_retried = false;
  };
  struct PendingCommit {
    MessageRecord previous;
    store::Commit commit;
  };

  void reconcile();
  std::optional<std::string> current_token(TimePoint now) const;
  void maybe_refresh_token(TimePoint now);
  void on_token_answer(http::Response r);
  void start_poll(const std::string& key, TimePoint due, TimePoint now);
  void send_page(const std::string& key);
  void on_page(const std::string& key, std::uint64_t id, http::Response r);
  void finish(const std::string& key, const tracker::PollResult& result);
  void queue_step(Entry& entry, tracker::Step step, bool durable = true);
  bool nothing_unwritten() const { return m_pending.empty() && m_dirty.empty(); }
  std::vector<std::string> routes_for(const MessageRecord& m, EventType type) const;
  void note_throttled(TimePoint now);
  void note_failure(const std::string& key, const std::string& what, TimePoint now);
  double random01();

  config::Config m_cfg;
  store::Store& m_store;
  http::Engine& m_engine;
  const Clock& m_clock;
  DeliverySink m_deliveries;
  Observer& m_observer;
  std::mt19937_64 m_rng;

  std::unordered_map<std::string, Entry> m_messages; // never erased from
  // m_messages in key order, for visit_from(): pointers to the map's
  // elements (stable: nothing is erased). m_sorted is sorted; keys added since
  // the last visit wait in m_unsorted (8 bytes a message in all).
  using Slot = std::unordered_map<std::string, Entry>::value_type;
  mutable std::vector<const Slot*> m_sorted;
  mutable std::vector<const Slot*> m_unsorted;
  std::size_t m_tracked = 0;
  DueQueue m_due;
  RateLimiter m_limiter;
  dingtalk::TokenCache m_tokens;
  std::unordered_map<std::string, ActivePoll> m_active;
  std::deque<std::string> m_continuations; // polls whose next page waits for a slot
  std::uint64_t m_next_poll_id = 1;
  std::vector<PendingCommit> m_pending;
  // Messages whose poll times (and sendStatus) changed since the last write,
  // and nothing else: written once each by the next flush(), from the
  // record as it is then, however often they were polled meanwhile.
  std::vector<std::string> m_dirty;
  std::size_t m_pending_durable = 0; // entries of m_pending that must not wait
  TimePoint m_pending_since{};       // when m_pending or m_dirty last became non-empty
  bool m_waiting_for_slot = false;
  bool m_cancelled = false;
  std::optional<TimePoint> m_last_throttle_log;
  std::optional<TimePoint> m_last_failure_log;
  std::size_t m_failures_since_log = 0;
};

} // namespace rrd::scheduler
