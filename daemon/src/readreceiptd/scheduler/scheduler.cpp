#include "readreceiptd/scheduler/scheduler.hpp"

#include "readreceiptd/app/logging.hpp"
#include "readreceiptd/common/plural.hpp"
#include "readreceiptd/dingtalk/protocol.hpp"
#include "readreceiptd/scheduler/schedule.hpp"

#include <algorithm>
#include <cmath>
#include <spdlog/spdlog.h>

namespace rrd::scheduler {

const char* to_string(Api api) {
  switch (api) {
  case Api::query:
    return "query";
  case Api::token:
    return "token";
  case Api::gateway:
    return "gateway";
  }
  return "query";
}

namespace {
// The HTTP status, when an answer came.
std::optional<int> answer_status(const http::Response& r) {
  return r.failure == http::Failure::none ? std::optional<int>(r.status) : std::nullopt;
}
// `text`, or nothing when it is empty (the field is left out).
std::optional<std::string_view> non_empty(const std::string& text) {
  return text.empty() ? std::nullopt : std::optional<std::string_view>(text);
}
// The pages a poll of `m` is expected to take.
double pages_per_poll(const MessageRecord& m, int page_size) {
  const auto per_page = static_cast<double>(std::max(page_size, 1));
  return std::max(1.0, std::ceil(static_cast<double>(m.read_user_ids.size()) / per_page));
}
} // namespace

Scheduler::Scheduler(config::Config cfg, tracking::MessageTable& table, store::Store& store,
                     http::Engine& engine, const Clock& clock, Observer& observer,
                     std::uint64_t /*seed*/)
    : m_cfg(std::move(cfg)), m_table(table), m_store(store), m_engine(engine), m_clock(clock),
      m_observer(observer), m_limiter(m_cfg.dingtalk.requests_per_second),
      m_tokens(m_cfg.dingtalk) {
  m_push.enabled = m_cfg.dingtalk.stream.enabled;
  m_push.fallback_after = m_cfg.dingtalk.stream.fallback_after;
  m_push.since = clock.now();
  // Until the Stream says otherwise, polls reconcile: a connection that opens
  // within fallback_after changes no schedule. The start is an outage: what
  // was pushed while the daemon was not running never arrived.
  m_mode = m_push.enabled ? PollMode::reconcile : PollMode::normal;
  m_catch_up_owed = m_push.enabled;
}

// ---------------------------------------------------------------- messages

void Scheduler::start() {
  m_table.set_listener(this);
  roll_month(m_clock.now());
}

void Scheduler::reconfigure(config::Config cfg) {
  if (cfg.dingtalk.requests_per_second != m_cfg.dingtalk.requests_per_second) {
    m_limiter = RateLimiter(cfg.dingtalk.requests_per_second);
  }
  const bool auth_changed =
      cfg.dingtalk.auth_kind != m_cfg.dingtalk.auth_kind ||
      cfg.dingtalk.internal_app.app_key != m_cfg.dingtalk.internal_app.app_key ||
      cfg.dingtalk.internal_app.app_secret != m_cfg.dingtalk.internal_app.app_secret ||
      cfg.dingtalk.third_party.suite_key != m_cfg.dingtalk.third_party.suite_key ||
      cfg.dingtalk.third_party.suite_secret != m_cfg.dingtalk.third_party.suite_secret ||
      cfg.dingtalk.third_party.auth_corp_id != m_cfg.dingtalk.third_party.auth_corp_id ||
      cfg.dingtalk.third_party.suite_ticket != m_cfg.dingtalk.third_party.suite_ticket ||
      cfg.dingtalk.endpoint != m_cfg.dingtalk.endpoint ||
      cfg.dingtalk.ca_file != m_cfg.dingtalk.ca_file;
  const bool push_was = m_push.enabled;
  m_cfg = std::move(cfg);
  if (auth_changed) {
    m_tokens = dingtalk::TokenCache(m_cfg.dingtalk);
  }
  m_push.enabled = m_cfg.dingtalk.stream.enabled;
  m_push.fallback_after = m_cfg.dingtalk.stream.fallback_after;
  if (m_push.enabled && !push_was) {
    m_push.connected = false;
    m_push.since = m_clock.now();
    m_catch_up_owed = true;
  }
  m_next_review = m_clock.now(); // the budget may have changed
}

void Scheduler::reserve(std::size_t never_polled, std::size_t polled) {
  m_first.reserve(never_polled);
  // After their first poll the never-polled ones are due here too.
  m_due.reserve(never_polled + polled);
}

void Scheduler::scheduled(const MessageRecord& record) {
  const std::string& key = record.spec.process_query_key;
  if (m_active.count(key) != 0) {
    return; // queued again when its poll finishes
  }
  if (!record.last_poll) {
    m_due.erase(key);
    m_first.upsert(key, record.next_poll);
  } else {
    m_first.erase(key);
    m_due.upsert(key, record.next_poll);
  }
}

void Scheduler::stopped(const std::string& key) {
  m_first.erase(key);
  m_due.erase(key);
  m_active.erase(key); // an answer still on its way is ignored
}

const std::vector<config::ScheduleStep>& Scheduler::active_schedule() const {
  return m_mode == PollMode::reconcile ? m_cfg.poll.reconcile_schedule : m_cfg.poll.schedule;
}

// ---------------------------------------------------------------- push

void Scheduler::set_push_state(bool connected, TimePoint since) {
  if (!m_push.enabled) {
    return;
  }
  if (m_push.connected && !connected) {
    m_down_since = since; // an outage begins
  }
  m_push.connected = connected;
  m_push.since = since;
  apply_mode(decide_mode(m_mode, m_catch_up_owed, m_push, m_clock.now()), m_clock.now());
}

void Scheduler::apply_mode(const ModeDecision& d, TimePoint now) {
  const PollMode before = m_mode;
  m_mode = d.mode;
  m_catch_up_owed = d.catch_up_owed;
  if (d.fell_back) {
    logging::warn("Stream down: polls follow poll.schedule until it is back",
                  {{"down_seconds",
                    std::chrono::duration_cast<std::chrono::seconds>(now - m_push.since).count()}});
    std::vector<std::pair<std::string, TimePoint>> moves;
    m_table.visit_tracked([&](const MessageRecord& m) {
      const TimePoint next = fallback_next_poll(m, m_cfg.poll.schedule, now);
      if (next != m.next_poll) {
        moves.emplace_back(m.spec.process_query_key, next);
      }
    });
    for (const auto& [key, next] : moves) {
      m_table.reschedule(key, next);
    }
  }
  if (d.catch_up) {
    std::vector<std::pair<std::string, TimePoint>> moves;
    m_table.visit_tracked([&](const MessageRecord& m) {
      // Since start: from the message's last poll (or its addition).
      const TimePoint down = m_down_since.value_or(m.last_poll.value_or(m.added_at));
      const TimePoint next = std::min(m.next_poll, catch_up_time(m, down));
      if (next != m.next_poll) {
        moves.emplace_back(m.spec.process_query_key, next);
      }
    });
    logging::info("Stream up: polls reconcile; a catch-up poll for each message tracked while it "
                  "was down",
                  {{"messages", moves.size()}});
    for (const auto& [key, next] : moves) {
      m_table.reschedule(key, next);
    }
    m_down_since.reset();
  } else if (before != m_mode && m_mode == PollMode::reconcile) {
    logging::info("Stream up: polls reconcile");
  }
  if (before != m_mode) {
    m_next_review = now; // the projection follows the schedule
  }
}

// ---------------------------------------------------------------- tokens

bool Scheduler::has_token() const {
  return current_token(m_clock.now()).has_value();
}

std::optional<std::string> Scheduler::current_token(TimePoint now) const {
  if (m_cfg.dingtalk.auth_kind == config::DingTalk::AuthKind::fixed_token) {
    return m_cfg.dingtalk.fixed_token.access_token;
  }
  return m_tokens.token(now);
}

void Scheduler::maybe_refresh_token(TimePoint now) {
  if (m_cfg.dingtalk.auth_kind == config::DingTalk::AuthKind::fixed_token ||
      !m_tokens.needs_refresh(now) || m_tokens.refresh_in_flight() ||
      now < m_tokens.next_refresh_allowed()) {
    return;
  }
  if (!m_limiter.try_acquire(now)) {
    m_waiting_for_slot = true;
    return;
  }
  auto request = dingtalk::build_token_request(m_cfg.dingtalk);
  if (!request || !m_tokens.begin_refresh()) {
    return;
  }
  logging::debug("requesting a DingTalk access token");
  m_engine.submit(std::move(*request), [this](http::Response r) { on_token_answer(std::move(r)); });
}

void Scheduler::on_token_answer(http::Response r) {
  const TimePoint now = m_clock.now();
  dingtalk::Token token;
  auto decision = dingtalk::classify_token(r, &token);
  dingtalk::withhold_quoted_secrets(decision, r.body,
                                    {m_cfg.dingtalk.internal_app.app_secret,
                                     m_cfg.dingtalk.third_party.suite_secret,
                                     m_cfg.dingtalk.third_party.suite_ticket});
  m_observer.request_finished(Api::token, r.duration, decision.reason);
  if (decision.action == dingtalk::Action::ok) {
    m_tokens.on_refreshed(token, now);
    m_limiter.on_success(now);
    logging::info("DingTalk access token refreshed",
                  {{"expires_in_seconds", token.expire_in_seconds}});
    return;
  }
  if (decision.action == dingtalk::Action::throttled) {
    note_throttled(now);
  } else {
    m_tokens.on_refresh_failed(now);
    const auto retry_in =
        std::chrono::duration_cast<std::chrono::seconds>(m_tokens.next_refresh_allowed() - now);
    logging::error("cannot get a DingTalk access token",
                   {{"code", non_empty(decision.code)},
                    {"reason", decision.message.empty() ? http::describe(r) : decision.message},
                    {"status", answer_status(r)},
                    {"retry_in_seconds", retry_in.count()}});
    return;
  }
  m_tokens.on_refresh_failed(now);
}

// ---------------------------------------------------------------- the month's calls

void Scheduler::roll_month(TimePoint now) {
  const Month bounds = month_of(now);
  if (bounds.name == m_month.month) {
    return;
  }
  const bool turned = !m_month.month.empty();
  if (turned) {
    m_previous_first_polls = m_month.first_polls;
    logging::info("a new month (Beijing time): the read-status call count starts again",
                  {{"month", bounds.name}, {"last_month_calls", m_month.calls}});
  } else if (const auto previous = m_store.load_month(month_of(bounds.start - Millis{1}).name)) {
    m_previous_first_polls = previous->first_polls;
  }
  m_bounds = bounds;
  m_month = m_store.load_month(bounds.name).value_or(store::MonthCalls{bounds.name, 0, 0, false});
  m_reserved = m_month.calls;
  m_quota_logged = m_month.quota_exhausted;
  m_blocked_until.reset();
  m_blocked_all = false;
  m_next_review = now;
}

void Scheduler::review_budget(TimePoint now) {
  m_next_review = now + k_budget_review_interval;
  if (!m_cfg.dingtalk.monthly_call_budget) {
    m_decision = BudgetDecision{};
    return;
  }
  const auto& schedule = active_schedule();
  double projected = 0;
  m_table.visit_tracked([&](const MessageRecord& m) {
    const Millis from = now - m.sent_at;
    const Millis to = std::min(m_cfg.poll.max_age, m_bounds.end - m.sent_at);
    projected += projected_calls(schedule, from, to, pages_per_poll(m, m_cfg.dingtalk.page_size));
  });
  // Messages still to come: their first polls held back, the rest of their
  // lives (cut at the month's end, on average half-way) projected.
  const Month last = month_of(m_bounds.start - Millis{1});
  const double arrivals = expected_arrivals(
      m_month.first_polls + m_previous_first_polls,
      (now - m_bounds.start) + (m_previous_first_polls > 0 ? last.end - last.start : Millis{0}),
      m_bounds.end - now);
  const Millis life = std::min(m_cfg.poll.max_age, (m_bounds.end - now) / 2);
  projected += arrivals * std::max(projected_calls(schedule, Millis{0}, life) - 1.0, 0.0);
  const BudgetDecision before = m_decision;
  m_decision = decide({*m_cfg.dingtalk.monthly_call_budget, m_month.calls, projected, arrivals});
  if (m_decision.stretch > 1.0 &&
      std::abs(m_decision.stretch - before.stretch) >= 0.05 * before.stretch) {
    logging::info("monthly call budget: polls spread out to last the month",
                  {{"stretch", std::round(m_decision.stretch * 100) / 100},
                   {"calls", m_month.calls},
                   {"budget", *m_cfg.dingtalk.monthly_call_budget},
                   {"projected", std::llround(projected)}});
  }
}

bool Scheduler::may_call(TimePoint now, bool first) {
  roll_month(now);
  if (m_month.quota_exhausted) {
    m_blocked_until = m_bounds.end;
    m_blocked_all = true;
    return false;
  }
  if (now >= m_next_review) {
    review_budget(now);
  }
  const auto& budget = m_cfg.dingtalk.monthly_call_budget;
  if (!budget) {
    m_blocked_until.reset();
    m_blocked_all = false;
    return true;
  }
  const std::int64_t left = *budget - m_month.calls;
  if (left <= 0) {
    if (!m_blocked_until) {
      logging::warn("monthly call budget spent: no read-status call until the month turns",
                    {{"budget", *budget}, {"month", m_month.month}});
    }
    m_blocked_until = m_bounds.end;
    m_blocked_all = true;
    return false;
  }
  m_blocked_all = false;
  if (!first && left <= m_decision.first_polls_only_below) {
    m_blocked_until = std::min(m_bounds.end, m_next_review); // first polls still go
    return false;
  }
  m_blocked_until.reset();
  return true;
}

std::int64_t next_call_reservation(std::int64_t previous, std::optional<Millis> lasted,
                                   double requests_per_second) {
  if (!lasted || *lasted >= k_call_reservation_interval) {
    return k_call_reservation;
  }
  const double per_interval =
      requests_per_second * std::chrono::duration<double>(k_call_reservation_interval).count();
  const auto most =
      std::max(k_call_reservation, static_cast<std::int64_t>(std::ceil(per_interval)));
  return std::clamp(previous * 2, k_call_reservation, most);
}

void Scheduler::count_call(bool first) {
  ++m_month.calls;
  m_month.first_polls += first ? 1 : 0;
  if (m_month.calls > m_reserved) {
    // Counted before it is made: a crash forgets no call.
    const TimePoint now = m_clock.now();
    std::optional<Millis> lasted;
    if (m_reserved_at) {
      lasted = std::chrono::duration_cast<Millis>(now - *m_reserved_at);
    }
    m_reservation =
        next_call_reservation(m_reservation, lasted, m_cfg.dingtalk.requests_per_second);
    store::MonthCalls saved = m_month;
    saved.calls = m_month.calls + m_reservation - 1;
    if (m_cfg.dingtalk.monthly_call_budget) {
      saved.calls =
          std::min(saved.calls, std::max(*m_cfg.dingtalk.monthly_call_budget, m_month.calls));
    }
    try {
      m_store.save_month(saved);
      m_reserved = saved.calls;
      m_reserved_at = now;
    } catch (const store::StoreError& e) {
      logging::error("cannot write the month's call count", {{"reason", e.what()}});
    }
  }
}

void Scheduler::quota_spent(TimePoint now, const std::string& code) {
  roll_month(now);
  m_month.quota_exhausted = true;
  m_blocked_until = m_bounds.end;
  m_blocked_all = true;
  store::MonthCalls saved = m_month;
  saved.calls = std::max(m_reserved, m_month.calls);
  try {
    m_store.save_month(saved);
  } catch (const store::StoreError& e) {
    logging::error("cannot write the month's call count", {{"reason", e.what()}});
  }
  if (!m_quota_logged) {
    m_quota_logged = true;
    logging::error("DingTalk's monthly API call quota is spent: read-status calls pause until the "
                   "month turns (Beijing time); pushes still arrive",
                   {{"code", code}, {"month", m_month.month}});
  }
}

CallBudget Scheduler::call_budget() const {
  return CallBudget{m_month.month,           m_month.calls,      m_cfg.dingtalk.monthly_call_budget,
                    m_month.quota_exhausted, m_decision.stretch, m_mode};
}

// ---------------------------------------------------------------- polling

void Scheduler::pump() {
  if (m_gate != nullptr && !m_gate->may_start()) {
    return; // not the leader, or past its deadline: no DingTalk call starts
  }
  const TimePoint now = m_clock.now();
  m_waiting_for_slot = false;
  if (m_push.enabled && !m_push.connected) {
    apply_mode(decide_mode(m_mode, m_catch_up_owed, m_push, now), now); // a fallback is due?
  }
  maybe_refresh_token(now);
  if (m_cancelled) {
    return;
  }
  const auto token = current_token(now);
  if (!token) {
    return; // polls wait for the token; the refresh above is on its way
  }
  while (!m_continuations.empty()) {
    const std::string& key = m_continuations.front();
    const auto active = m_active.find(key);
    if (active == m_active.end()) {
      m_continuations.pop_front();
      continue;
    }
    if (!may_call(now, active->second.first)) {
      // The budget ran out inside a poll: it is abandoned (never emit from a
      // partial answer), the message polled again when calls may go.
      const std::string abandoned = key;
      m_continuations.pop_front();
      tracker::PollResult result;
      result.kind = tracker::PollResult::Kind::transient;
      finish(abandoned, result);
      continue;
    }
    if (!m_limiter.try_acquire(now)) {
      m_waiting_for_slot = true;
      return;
    }
    const std::string next = key;
    m_continuations.pop_front();
    count_call(m_active.at(next).first);
    send_page(next);
  }
  while (m_active.size() < k_max_polls_in_flight) {
    DueQueue* queue = nullptr;
    std::optional<TimePoint> due;
    for (DueQueue* q : {&m_first, &m_due}) {
      const auto d = q->next_due();
      if (d && *d <= now) {
        queue = q;
        due = d;
        break;
      }
    }
    if (queue == nullptr) {
      break;
    }
    const bool first = queue == &m_first;
    if (!may_call(now, first)) {
      break;
    }
    if (!m_limiter.try_acquire(now)) {
      m_waiting_for_slot = true;
      break;
    }
    auto popped = queue->pop_due(now);
    if (m_table.close_window(popped->first)) {
      continue; // an oto message whose read status window closed: no call
    }
    count_call(first);
    start_poll(popped->first, popped->second, first, now);
  }
}

std::optional<TimePoint> Scheduler::next_wakeup() const {
  const TimePoint now = m_clock.now();
  std::optional<TimePoint> next;
  auto consider = [&](TimePoint t) {
    if (!next || t < *next) {
      next = t;
    }
  };
  if (m_waiting_for_slot) {
    consider(m_limiter.next_allowed(now));
  }
  if (m_cfg.dingtalk.auth_kind != config::DingTalk::AuthKind::fixed_token &&
      !m_tokens.refresh_in_flight()) {
    if (auto due = m_tokens.next_refresh_due()) {
      consider(std::max(*due, m_tokens.next_refresh_allowed()));
    } else {
      consider(m_tokens.next_refresh_allowed());
    }
  }
  if (!m_cancelled && m_active.size() < k_max_polls_in_flight) {
    for (const DueQueue* q : {&m_first, &m_due}) {
      if (auto due = q->next_due()) {
        // Blocked by the budget: not before calls may go again.
        const bool blocked = m_blocked_until && (q == &m_due || m_blocked_all);
        consider(blocked ? std::max(*due, *m_blocked_until) : *due);
      }
    }
    if (m_blocked_until) {
      consider(*m_blocked_until);
    }
  }
  if (m_push.enabled && !m_push.connected && m_mode == PollMode::reconcile) {
    consider(m_push.since + m_push.fallback_after); // the fallback
  }
  return next;
}

void Scheduler::start_poll(const std::string& key, TimePoint due, bool first, TimePoint now) {
  m_observer.poll_started(now > due ? now - due : Millis{0});
  ActivePoll poll;
  poll.id = m_next_poll_id++;
  poll.first = first;
  (void)poll.walk.start();
  m_active[key] = std::move(poll);
  send_page(key);
}

void Scheduler::send_page(const std::string& key) {
  auto& poll = m_active.at(key);
  const auto& spec = m_table.find(key)->spec;
  poll.token = current_token(m_clock.now()).value_or("");
  auto request = dingtalk::build_query_request(m_cfg.dingtalk, spec, poll.token,
                                               poll.next_token ? &*poll.next_token : nullptr);
  const std::uint64_t id = poll.id;
  m_engine.submit(std::move(request),
                  [this, key, id](http::Response r) { on_page(key, id, std::move(r)); });
}

void Scheduler::on_page(const std::string& key, std::uint64_t id, http::Response r) {
  auto it = m_active.find(key);
  if (it == m_active.end() || it->second.id != id) {
    // Removed or cancelled while the request was in flight: the answer is
    // ignored, but the call was made (and counts against DingTalk's quota).
    m_observer.request_finished(Api::query, r.duration, dingtalk::classify(r).reason);
    return;
  }
  ActivePoll& poll = it->second;
  const TimePoint now = m_clock.now();
  const MessageSpec& spec = m_table.find(key)->spec;
  dingtalk::Page page;
  auto decision = dingtalk::classify(r, spec.kind, &page);
  dingtalk::withhold_quoted_secrets(decision, r.body, {poll.token, spec.token});
  m_observer.request_finished(Api::query, r.duration, decision.reason);

  tracker::PollResult result;
  result.kind = tracker::PollResult::Kind::transient;
  switch (decision.action) {
  case dingtalk::Action::ok: {
    m_limiter.on_success(now);
    if (page.lists_recipients) {
      // oto: one answer, every recipient listed, with read times.
      result.kind = tracker::PollResult::Kind::answer;
      result.send_status = std::move(page.send_status);
      result.read_user_ids = std::move(page.read_user_ids);
      result.read_at = std::move(page.read_at);
      result.lists_recipients = true;
      result.recipients = std::move(page.recipients);
      m_observer.poll_succeeded(now);
      break;
    }
    const auto next = poll.walk.on_page(page);
    if (next.kind == dingtalk::Next::Kind::fetch) {
      poll.next_token = next.next_token;
      m_continuations.push_back(key);
      return;
    }
    if (next.kind == dingtalk::Next::Kind::done) {
      result.kind = tracker::PollResult::Kind::answer;
      result.send_status = next.send_status;
      result.read_user_ids = next.read_user_ids;
      m_observer.poll_succeeded(now);
    } else {
      note_failure(key, next.why, now);
    }
    break;
  }
  case dingtalk::Action::refresh_token:
    if (m_cfg.dingtalk.auth_kind != config::DingTalk::AuthKind::fixed_token &&
        !poll.token_retried) {
      poll.token_retried = true;
      m_tokens.invalidate(poll.token);
      m_continuations.push_front(key); // the same page again, with a new token
      return;
    }
    logging::warn("DingTalk rejected the access token",
                  {{"key", key}, {"code", decision.code}, {"reason", decision.message}});
    break;
  case dingtalk::Action::restart_pagination: {
    const auto next = poll.walk.on_cursor_invalid();
    if (next.kind == dingtalk::Next::Kind::fetch) {
      poll.next_token.reset();
      m_continuations.push_back(key);
      return;
    }
    note_failure(key, next.why, now);
    break;
  }
  case dingtalk::Action::not_ready_or_expired:
    result.kind = tracker::PollResult::Kind::expire_time;
    result.code = decision.code;
    break;
  case dingtalk::Action::stop_invalid:
    result.kind = tracker::PollResult::Kind::invalid;
    result.code = decision.code;
    break;
  case dingtalk::Action::pause:
    result.kind = tracker::PollResult::Kind::paused;
    result.code = decision.code;
    break;
  case dingtalk::Action::throttled:
    note_throttled(now);
    break;
  case dingtalk::Action::quota_exhausted:
    quota_spent(now, decision.code);
    break;
  case dingtalk::Action::client_bug:
    // The request shape, logged as a bug with its secrets redacted.
    logging::error("DingTalk rejected a request as malformed",
                   {{"key", key},
                    {"code", decision.code},
                    {"reason", decision.message},
                    {"status", answer_status(r)},
                    {"request", dingtalk::redact_request(dingtalk::build_query_request(
                                    m_cfg.dingtalk, m_table.find(key)->spec, poll.token,
                                    poll.next_token ? &*poll.next_token : nullptr))}});
    break;
  case dingtalk::Action::auth_failed:
    logging::warn("DingTalk refused the credentials while polling",
                  {{"key", key}, {"code", decision.code}, {"reason", decision.message}});
    break;
  case dingtalk::Action::transient:
    note_failure(
        key, decision.code.empty() ? http::describe(r) : http::describe(r) + " " + decision.code,
        now);
    break;
  case dingtalk::Action::bad_response:
    // Counted and logged, never emitted from.
    note_failure(key, "DingTalk's answer is unusable: " + decision.message, now);
    break;
  }
  finish(key, result);
}

void Scheduler::note_throttled(TimePoint now) {
  m_limiter.on_throttled(now);
  if (!m_last_throttle_log || now - *m_last_throttle_log >= k_throttle_log_interval) {
    m_last_throttle_log = now;
    logging::warn("DingTalk is throttling: slowing all calls down",
                  {{"rate_per_second", std::round(m_limiter.effective_rate() * 10) / 10}});
  }
}

void Scheduler::note_failure(const std::string& key, const std::string& what, TimePoint now) {
  ++m_failures_since_log;
  logging::debug("poll failed", {{"key", key}, {"reason", what}});
  if (!m_last_failure_log || now - *m_last_failure_log >= k_failure_log_interval) {
    m_last_failure_log = now;
    logging::warn("DingTalk calls are failing: retrying with backoff",
                  {{"failures", m_failures_since_log}, {"key", key}, {"reason", what}});
    m_failures_since_log = 0;
  }
}

void Scheduler::finish(const std::string& key, const tracker::PollResult& result) {
  m_active.erase(key);
  const MessageRecord* m = m_table.find(key);
  if (m == nullptr || m->stopped) {
    return;
  }
  m_table.apply_poll(key, result, tracking::PollPlan{&active_schedule(), m_decision.stretch});
}

void Scheduler::cancel_all() {
  m_cancelled = true;
  m_active.clear();
  m_continuations.clear();
}

} // namespace rrd::scheduler
