#include "readreceiptd/scheduler/scheduler.hpp"

#include "readreceiptd/app/logging.hpp"
#include "readreceiptd/common/plural.hpp"
#include "readreceiptd/dingtalk/protocol.hpp"

#include <algorithm>
#include <cmath>
#include <spdlog/spdlog.h>
#include <unordered_set>

namespace rrd::scheduler {

const char* to_string(Api api) {
  return api == Api::query ? "query" : "token";
}

Scheduler::Scheduler(config::Config cfg, store::Store& store, http::Engine& engine,
                     const Clock& clock, DeliverySink deliveries, Observer& observer,
                     std::uint64_t seed)
    : m_cfg(std::move(cfg)), m_store(store), m_engine(engine), m_clock(clock),
      m_deliveries(std::move(deliveries)), m_observer(observer), m_rng(seed),
      m_limiter(m_cfg.dingtalk.requests_per_second), m_tokens(m_cfg.dingtalk) {}

namespace {
// The HTTP status, when an answer came.
std::optional<int> answer_status(const http::Response& r) {
  return r.failure == http::Failure::none ? std::optional<int>(r.status) : std::nullopt;
}
// `text`, or nothing when it is empty (the field is left out).
std::optional<std::string_view> non_empty(const std::string& text) {
  return text.empty() ? std::nullopt : std::optional<std::string_view>(text);
}
} // namespace

double Scheduler::random01() {
  return std::uniform_real_distribution<double>(0.0, 1.0)(m_rng);
}

// ---------------------------------------------------------------- messages

void Scheduler::start() {
  for (auto& record : m_store.load_messages()) {
    const std::string key = record.spec.process_query_key;
    if (!record.stopped) {
      m_due.upsert(key, record.next_poll);
      ++m_tracked;
    }
    auto [pos, inserted] = m_messages.emplace(key, Entry{std::move(record)});
    if (inserted) {
      m_unsorted.push_back(&*pos);
    }
  }
  reconcile();
  flush();
  logging::info("tracking " + count_of(m_tracked, "message") + " (" +
                count_of(m_messages.size(), "message") + " known in the state database)");
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
  m_cfg = std::move(cfg);
  if (auth_changed) {
    m_tokens = dingtalk::TokenCache(m_cfg.dingtalk);
  }
  reconcile();
  flush();
}

void Scheduler::reconcile() {
  const TimePoint now = m_clock.now();
  std::unordered_set<std::string> in_config;
  for (const auto& spec : m_cfg.messages) {
    in_config.insert(spec.process_query_key);
    auto it = m_messages.find(spec.process_query_key);
    if (it == m_messages.end()) {
      auto record = tracker::new_record(spec, MessageSource::config, now);
      auto [pos, inserted] = m_messages.emplace(spec.process_query_key, Entry{record});
      (void)inserted;
      m_unsorted.push_back(&*pos);
      m_due.upsert(spec.process_query_key, record.next_poll);
      ++m_tracked;
      logging::info("message added", {{"key", spec.process_query_key}, {"source", "config"}});
      queue_step(pos->second, tracker::Step{std::move(record), {}});
      continue;
    }
    Entry& entry = it->second;
    if (entry.record.stopped) {
      continue; // a processQueryKey is tracked at most once
    }
    if (entry.record.spec != spec || entry.record.source != MessageSource::config) {
      MessageRecord updated = entry.record;
      updated.spec = spec;
      updated.source = MessageSource::config;
      if (spec.sent_at) {
        updated.sent_at = *spec.sent_at;
      }
      logging::info("message updated", {{"key", spec.process_query_key}, {"source", "config"}});
      queue_step(entry, tracker::Step{std::move(updated), {}});
    }
  }
  std::vector<std::string> removed;
  for (const auto& [key, entry] : m_messages) {
    if (!entry.record.stopped && entry.record.source == MessageSource::config &&
        in_config.count(key) == 0) {
      removed.push_back(key);
    }
  }
  std::sort(removed.begin(), removed.end());
  for (const auto& key : removed) {
    remove(key);
  }
}

Scheduler::AddOutcome Scheduler::add(const MessageSpec& spec) {
  auto it = m_messages.find(spec.process_query_key);
  if (it != m_messages.end()) {
    // Stopped or not: a processQueryKey is tracked at most once.
    return it->second.record.spec == spec ? AddOutcome::unchanged : AddOutcome::conflict;
  }
  const TimePoint now = m_clock.now();
  auto record = tracker::new_record(spec, MessageSource::api, now);
  auto [pos, inserted] = m_messages.emplace(spec.process_query_key, Entry{record});
  (void)inserted;
  m_unsorted.push_back(&*pos);
  m_due.upsert(spec.process_query_key, record.next_poll);
  ++m_tracked;
  m_observer.tracked_changed(m_tracked);
  logging::info("message added", {{"key", spec.process_query_key}, {"source", "api"}});
  queue_step(pos->second, tracker::Step{std::move(record), {}});
  return AddOutcome::created;
}

bool Scheduler::remove(const std::string& key) {
  auto it = m_messages.find(key);
  if (it == m_messages.end()) {
    return false;
  }
  if (it->second.record.stopped) {
    return true;
  }
  m_active.erase(key); // an answer still on its way is ignored
  queue_step(it->second, tracker::stop(it->second.record, StopReason::removed, "", m_clock.now()));
  return true;
}

const MessageRecord* Scheduler::find(const std::string& key) const {
  auto it = m_messages.find(key);
  return it == m_messages.end() ? nullptr : &it->second.record;
}

void Scheduler::visit_from(std::string_view after,
                           const std::function<bool(const MessageRecord&)>& visit) const {
  const auto by_key = [](const Slot* a, const Slot* b) { return a->first < b->first; };
  if (!m_unsorted.empty()) {
    std::sort(m_unsorted.begin(), m_unsorted.end(), by_key);
    const auto middle = static_cast<std::ptrdiff_t>(m_sorted.size());
    m_sorted.insert(m_sorted.end(), m_unsorted.begin(), m_unsorted.end());
    std::inplace_merge(m_sorted.begin(), m_sorted.begin() + middle, m_sorted.end(), by_key);
    m_unsorted.clear();
    m_unsorted.shrink_to_fit(); // a start-up's worth of keys is not kept twice
  }
  auto it = std::upper_bound(m_sorted.begin(), m_sorted.end(), after,
                             [](std::string_view a, const Slot* b) { return a < b->first; });
  for (; it != m_sorted.end(); ++it) {
    if (!visit((*it)->second.record)) {
      return;
    }
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

// ---------------------------------------------------------------- polling

void Scheduler::pump() {
  const TimePoint now = m_clock.now();
  m_waiting_for_slot = false;
  maybe_refresh_token(now);
  if (m_cancelled) {
    return;
  }
  const auto token = current_token(now);
  if (!token) {
    return; // polls wait for the token; the refresh above is on its way
  }
  while (!m_continuations.empty()) {
    if (!m_limiter.try_acquire(now)) {
      m_waiting_for_slot = true;
      return;
    }
    const std::string key = std::move(m_continuations.front());
    m_continuations.pop_front();
    if (m_active.count(key) != 0) {
      send_page(key);
    }
  }
  while (m_active.size() < k_max_polls_in_flight) {
    const auto due = m_due.next_due();
    if (!due || *due > now) {
      break;
    }
    if (!m_limiter.try_acquire(now)) {
      m_waiting_for_slot = true;
      break;
    }
    auto popped = m_due.pop_due(now);
    start_poll(popped->first, popped->second, now);
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
    if (auto due = m_due.next_due()) {
      consider(*due);
    }
  }
  if (!nothing_unwritten()) {
    consider(m_pending_since + k_bookkeeping_flush_interval); // flush() writes them then
  }
  return next;
}

void Scheduler::start_poll(const std::string& key, TimePoint due, TimePoint now) {
  m_observer.poll_started(now > due ? now - due : Millis{0});
  ActivePoll poll;
  poll.id = m_next_poll_id++;
  (void)poll.walk.start();
  m_active[key] = std::move(poll);
  send_page(key);
}

void Scheduler::send_page(const std::string& key) {
  auto& poll = m_active.at(key);
  const auto& spec = m_messages.at(key).record.spec;
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
  dingtalk::Page page;
  auto decision = dingtalk::classify(r, &page);
  dingtalk::withhold_quoted_secrets(decision, r.body, {poll.token});
  m_observer.request_finished(Api::query, r.duration, decision.reason);

  tracker::PollResult result;
  result.kind = tracker::PollResult::Kind::transient;
  switch (decision.action) {
  case dingtalk::Action::ok: {
    m_limiter.on_success(now);
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
  case dingtalk::Action::client_bug:
    // The request shape, logged as a bug with its secrets redacted.
    logging::error("DingTalk rejected a request as malformed",
                   {{"key", key},
                    {"code", decision.code},
                    {"reason", decision.message},
                    {"status", answer_status(r)},
                    {"request", dingtalk::redact_request(dingtalk::build_query_request(
                                    m_cfg.dingtalk, m_messages.at(key).record.spec, poll.token,
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
  Entry& entry = m_messages.at(key);
  const TimePoint now = m_clock.now();
  const tracker::Context ctx{m_cfg.poll, now, entry.failures, random01()};
  auto step = tracker::apply(entry.record, result, ctx);
  if (result.kind == tracker::PollResult::Kind::transient) {
    ++entry.failures;
  } else {
    entry.failures = 0;
  }
  if (result.kind == tracker::PollResult::Kind::paused) {
    if (!entry.warned_paused) {
      entry.warned_paused = true;
      logging::warn("message paused: polling it at the slowest schedule step until DingTalk's "
                    "answer changes",
                    {{"key", key}, {"code", result.code}});
    }
  } else if (result.kind == tracker::PollResult::Kind::answer) {
    entry.warned_paused = false;
  }
  // tracker::apply emits an event for every read and every stop: a step
  // without one changed only the poll times (and sendStatus).
  const bool durable = !step.events.empty();
  queue_step(entry, std::move(step), durable);
}

namespace {

// True when `a` and `b` differ in send_status, last_poll and next_poll at
// most (store::Commit::poll_state_only). Compares everything else with the
// record's own operator==, so that a field added later counts as a change.
bool only_poll_state_differs(const MessageRecord& a, MessageRecord& b) {
  std::string status = std::move(b.send_status);
  const auto last_poll = b.last_poll;
  const auto next_poll = b.next_poll;
  b.send_status = a.send_status;
  b.last_poll = a.last_poll;
  b.next_poll = a.next_poll;
  const bool same = a == b;
  b.send_status = std::move(status);
  b.last_poll = last_poll;
  b.next_poll = next_poll;
  return same;
}

} // namespace

void Scheduler::queue_step(Entry& entry, tracker::Step step, bool durable) {
  const std::string& key = step.record.spec.process_query_key;
  if (nothing_unwritten()) {
    m_pending_since = m_clock.now();
  }
  if (!durable && step.events.empty() && only_poll_state_differs(entry.record, step.record)) {
    // A poll that found nothing new: no commit of its own, and no copy of
    // the record to roll back to; flush() writes the poll times as they are
    // then.
    entry.record = std::move(step.record); // `key` pointed into step.record
    const std::string& moved_key = entry.record.spec.process_query_key;
    m_due.upsert(moved_key, entry.record.next_poll);
    if (!entry.poll_state_dirty) {
      entry.poll_state_dirty = true;
      m_dirty.push_back(moved_key);
    }
    return;
  }
  PendingCommit pending;
  m_pending_durable += durable ? 1 : 0;
  pending.previous = entry.record;
  std::size_t newly_read = 0;
  for (auto& event : step.events) {
    event.id = make_event_id(event.created_at, m_rng(), m_rng());
    pending.commit.routes.push_back(routes_for(step.record, event.type));
    if (event.type == EventType::message_read) {
      newly_read += step.record.read_user_ids.size() - entry.record.read_user_ids.size();
    }
  }
  if (newly_read > 0) {
    m_observer.reads_detected(newly_read);
    logging::debug(
        "new readers",
        {{"key", key}, {"new_readers", newly_read}, {"readers", step.record.read_user_ids.size()}});
  }
  const bool was_stopped = entry.record.stopped;
  entry.record = step.record;
  if (entry.record.stopped) {
    m_due.erase(key);
    if (!was_stopped) {
      --m_tracked;
      m_observer.message_stopped(*entry.record.stop_reason);
      m_observer.tracked_changed(m_tracked);
      // DingTalk calling a message invalid wants a look (a wrong key, robot
      // or conversation); the other stops are the normal end of tracking.
      const StopReason reason = *entry.record.stop_reason;
      logging::log(reason == StopReason::invalid ? spdlog::level::warn : spdlog::level::info,
                   "message stopped",
                   {{"key", key},
                    {"reason", to_string(reason)},
                    {"detail", non_empty(entry.record.stop_detail)},
                    {"readers", entry.record.read_user_ids.size()}});
    }
  } else {
    m_due.upsert(key, entry.record.next_poll);
  }
  pending.commit.message = std::move(step.record);
  pending.commit.events = std::move(step.events);
  m_pending.push_back(std::move(pending));
}

std::vector<std::string> Scheduler::routes_for(const MessageRecord& m, EventType type) const {
  std::vector<std::string> out;
  for (const auto& hook : m_cfg.webhooks) {
    if (m.spec.webhooks && std::find(m.spec.webhooks->begin(), m.spec.webhooks->end(), hook.name) ==
                               m.spec.webhooks->end()) {
      continue;
    }
    if (std::find(hook.events.begin(), hook.events.end(), type) == hook.events.end()) {
      continue;
    }
    out.push_back(hook.name);
  }
  return out;
}

void Scheduler::flush() {
  if (nothing_unwritten()) {
    return;
  }
  if (m_pending_durable == 0 && !m_cancelled &&
      m_clock.now() - m_pending_since < k_bookkeeping_flush_interval) {
    return; // only poll times: they wait for a durable commit, or a second
  }
  std::vector<PendingCommit> pending;
  pending.swap(m_pending);
  std::vector<std::string> dirty;
  dirty.swap(m_dirty);
  m_pending_durable = 0;
  std::vector<store::Commit> commits;
  commits.reserve(pending.size() + dirty.size());
  for (auto& p : pending) {
    commits.push_back(std::move(p.commit)); // a rollback needs only p.previous
  }
  // After the whole rows above: these carry the newest poll times.
  for (const auto& key : dirty) {
    auto found = m_messages.find(key);
    if (found == m_messages.end() || !found->second.poll_state_dirty) {
      continue;
    }
    found->second.poll_state_dirty = false;
    store::Commit c;
    c.message = found->second.record;
    c.poll_state_only = true;
    commits.push_back(std::move(c));
  }
  try {
    m_store.commit_all(commits);
  } catch (const store::StoreError& e) {
    // Nothing was written: forget the in-memory changes too, and ask again
    // later. The reads are still on DingTalk's side; the next poll finds them.
    // Poll times are kept, and written by the next flush.
    logging::error("cannot write to the state database, will poll again", {{"reason", e.what()}});
    for (const auto& key : dirty) {
      auto found = m_messages.find(key);
      if (found != m_messages.end() && !found->second.poll_state_dirty) {
        found->second.poll_state_dirty = true;
        m_dirty.push_back(key);
      }
    }
    if (!nothing_unwritten()) {
      m_pending_since = m_clock.now();
    }
    const TimePoint retry_at = m_clock.now() + k_store_failure_retry;
    for (auto it = pending.rbegin(); it != pending.rend(); ++it) {
      const std::string& key = it->previous.spec.process_query_key;
      auto found = m_messages.find(key);
      if (found == m_messages.end()) {
        continue;
      }
      const bool was_stopped = found->second.record.stopped;
      found->second.record = it->previous;
      if (!it->previous.stopped) {
        if (was_stopped) {
          ++m_tracked;
        }
        found->second.record.next_poll = std::min(found->second.record.next_poll, retry_at);
        m_due.upsert(key, retry_at);
      }
    }
    m_observer.tracked_changed(m_tracked);
    return;
  }
  std::vector<Delivery> deliveries;
  for (const auto& c : commits) {
    for (std::size_t i = 0; i < c.events.size(); ++i) {
      const auto& event = c.events[i];
      for (const auto& hook : c.routes[i]) {
        Delivery d;
        d.event_id = event.id;
        d.webhook = hook;
        d.process_query_key = event.process_query_key;
        d.type = event.type;
        d.sequence = event.sequence;
        d.body = event.body;
        d.next_attempt = event.created_at;
        deliveries.push_back(std::move(d));
      }
    }
  }
  if (!deliveries.empty() && m_deliveries) {
    m_deliveries(std::move(deliveries));
  }
}

void Scheduler::cancel_all() {
  m_cancelled = true;
  m_active.clear();
  m_continuations.clear();
}

} // namespace rrd::scheduler
