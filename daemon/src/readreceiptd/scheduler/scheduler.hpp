// Scheduler: the poller. It keeps the due queue in step with the message
// table (tracking/), the client-side rate limiter (shared with the Stream
// client's gateway calls), the token cache, the polls in flight and the
// month's read-status calls against dingtalk.monthly_call_budget; it asks
// DingTalk (through the HTTP engine) for the read lists of due messages,
// page by page, and hands each completed poll to the table. Which schedule
// a poll's next time follows is its choice: poll.schedule, or
// poll.reconcile_schedule while push works (push_mode.hpp), stretched by the
// budget (budget.hpp).
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
#include "readreceiptd/ha/gate.hpp"
#include "readreceiptd/http/http_engine.hpp"
#include "readreceiptd/scheduler/budget.hpp"
#include "readreceiptd/scheduler/due_queue.hpp"
#include "readreceiptd/scheduler/push_mode.hpp"
#include "readreceiptd/scheduler/rate_limiter.hpp"
#include "readreceiptd/store/store.hpp"
#include "readreceiptd/tracking/table.hpp"

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

namespace rrd::scheduler {

// Polls in flight at once. No more than the HTTP engine's connections per
// host (64), so that no poll waits inside the engine for a connection while
// its request_timeout runs; enough for DingTalk's 20 calls/s with answers
// that take up to 3.2 s (bench/rate_limit.sh).
inline constexpr std::size_t k_max_polls_in_flight = 64;
// Throttling answers and failed calls are logged (at warn) at most this
// often each, with a count of what happened in between.
inline constexpr Millis k_throttle_log_interval{10'000};
inline constexpr Millis k_failure_log_interval{10'000};
// The budget's stretch is decided again this often (and when the month
// turns, and after a reload).
inline constexpr Millis k_budget_review_interval{60'000};
// Calls are counted in the store ahead, in reservations of at least this
// many, before they are made, so that a crash can never forget a call it
// made (it may count up to a reservation less one it did not make: the
// count errs on the side of the budget).
inline constexpr std::int64_t k_call_reservation = 10;
// A reservation used up sooner than this after the last one was written
// makes the next twice as large, up to this long's worth of calls at the
// configured requests_per_second; one that lasts longer makes it
// k_call_reservation again. At a high pace (a catch-up, a large backlog)
// the count is then written about once in this time rather than every ten
// calls, and each of those writes waits for a commit in flight.
inline constexpr Millis k_call_reservation_interval{1'000};

// The size of the next reservation, after one of `previous` calls that
// lasted `lasted` (nullopt: none was written before).
std::int64_t next_call_reservation(std::int64_t previous, std::optional<Millis> lasted,
                                   double requests_per_second);

// The `api` label: read-status queries (every page), token calls, Stream
// gateway calls (stream/client.hpp reports those).
enum class Api { query, token, gateway };
const char* to_string(Api api);

// What the poller reports as it works; the metrics module implements it.
// Every method has a no-op default.
class Observer {
public:
  virtual ~Observer() = default;
  virtual void request_finished(Api, Millis /*duration*/, dingtalk::FailureReason) {}
  virtual void poll_started(Millis /*delay*/) {}
  virtual void poll_succeeded(TimePoint) {}
};

// The month's read-status calls, as the poller counts them.
struct CallBudget {
  std::string month;                  // "2026-12", Beijing time
  std::int64_t calls = 0;             // read-status calls counted this month (every page)
  std::optional<std::int64_t> budget; // dingtalk.monthly_call_budget
  bool quota_exhausted = false;       // DingTalk said its own monthly quota is spent
  double stretch = 1.0;               // every interval is multiplied by this
  PollMode mode = PollMode::normal;
};

class Scheduler final : public tracking::Listener {
public:
  // REQUIRES: `table` outlives the scheduler, and start() comes before
  // table.start() (the table tells the scheduler what is due as it loads).
  Scheduler(config::Config cfg, tracking::MessageTable& table, store::Store& store,
            http::Engine& engine, const Clock& clock, Observer& observer, std::uint64_t seed);

  // Loads the month's call count and listens to the table.
  void start();
  // Applies a new configuration (after SIGHUP).
  void reconfigure(config::Config cfg);
  // The Stream connection's state (each turn, before pump()).
  void set_push_state(bool connected, TimePoint since);

  // The work gate (ha/gate.hpp): while it says no, pump() starts no DingTalk call
  // (no token, no page, no poll). nullptr (the
  // default, SQLite): always yes. The gate outlives this object.
  void set_gate(const ha::WorkGate* gate) { m_gate = gate; }

  // Starts what is due now: a token refresh, next pages, new polls, within
  // the rate limit and the budget.
  void pump();
  // When pump() has work next, if ever.
  std::optional<TimePoint> next_wakeup() const;

  // Shutdown: abandons the polls in flight (their answers are ignored; the
  // next start polls those messages again) and starts no new ones.
  void cancel_all();
  bool idle() const { return m_active.empty(); }

  // A token is in hand (always true with a fixed token).
  bool has_token() const;
  const config::Config& config() const { return m_cfg; }
  // The rate limit every DingTalk call shares (the Stream's gateway calls too).
  RateLimiter& limiter() { return m_limiter; }
  const RateLimiter& limiter() const { return m_limiter; }
  CallBudget call_budget() const;

  // tracking::Listener
  void reserve(std::size_t never_polled, std::size_t polled) override;
  void scheduled(const MessageRecord& record) override;
  void stopped(const std::string& key) override;

private:
  struct ActivePoll {
    std::uint64_t id = 0;
    dingtalk::PageWalk walk;
    std::optional<std::string> next_token;
    std::string token; // the access token the last page was sent with
    bool token_retried = false;
    bool first = false; // the message's first poll
  };

  std::optional<std::string> current_token(TimePoint now) const;
  void maybe_refresh_token(TimePoint now);
  void on_token_answer(http::Response r);
  void start_poll(const std::string& key, TimePoint due, bool first, TimePoint now);
  void send_page(const std::string& key);
  void on_page(const std::string& key, std::uint64_t id, http::Response r);
  void finish(const std::string& key, const tracker::PollResult& result);
  void note_throttled(TimePoint now);
  void note_failure(const std::string& key, const std::string& what, TimePoint now);
  const std::vector<config::ScheduleStep>& active_schedule() const;

  // The month's calls.
  void roll_month(TimePoint now);
  bool may_call(TimePoint now, bool first);
  void count_call(bool first);
  void quota_spent(TimePoint now, const std::string& code);
  void review_budget(TimePoint now);
  void apply_mode(const ModeDecision& d, TimePoint now);

  config::Config m_cfg;
  tracking::MessageTable& m_table;
  store::Store& m_store;
  http::Engine& m_engine;
  const ha::WorkGate* m_gate = nullptr;
  const Clock& m_clock;
  Observer& m_observer;

  DueQueue m_first; // messages never polled: their first poll goes before the rest
  DueQueue m_due;
  RateLimiter m_limiter;
  dingtalk::TokenCache m_tokens;
  std::unordered_map<std::string, ActivePoll> m_active;
  std::deque<std::string> m_continuations; // polls whose next page waits for a slot
  std::uint64_t m_next_poll_id = 1;
  bool m_waiting_for_slot = false;
  bool m_cancelled = false;
  std::optional<TimePoint> m_last_throttle_log;
  std::optional<TimePoint> m_last_failure_log;
  std::size_t m_failures_since_log = 0;

  // Push.
  PushState m_push;
  PollMode m_mode = PollMode::normal;
  bool m_catch_up_owed = false;
  std::optional<TimePoint> m_down_since; // the outage a catch-up covers; nullopt: since start

  // The month's calls (persisted in reservations, next_call_reservation).
  store::MonthCalls m_month;
  std::int64_t m_reserved = 0; // the count the store holds for this month
  std::int64_t m_reservation = k_call_reservation;
  std::optional<TimePoint> m_reserved_at;  // when the last reservation was written
  std::int64_t m_previous_first_polls = 0; // last month's, for the arrivals estimate
  Month m_bounds;
  BudgetDecision m_decision;
  TimePoint m_next_review{};
  std::optional<TimePoint> m_blocked_until; // no later poll may start before then (budget, quota)
  bool m_blocked_all = false;               // nor a first poll (nothing left)
  bool m_quota_logged = false;
};

} // namespace rrd::scheduler
