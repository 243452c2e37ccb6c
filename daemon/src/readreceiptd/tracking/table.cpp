#include "readreceiptd/tracking/table.hpp"

#include "readreceiptd/app/logging.hpp"
#include "readreceiptd/common/heap.hpp"
#include "readreceiptd/common/plural.hpp"

#include <algorithm>
#include <spdlog/spdlog.h>
#include <unordered_set>

namespace rrd::tracking {

namespace {

// `text`, or nothing when it is empty (the field is left out).
std::optional<std::string_view> non_empty(const std::string& text) {
  return text.empty() ? std::nullopt : std::optional<std::string_view>(text);
}

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

MessageTable::MessageTable(config::Config cfg, store::Store& store, const Clock& clock,
                           DeliverySink deliveries, Observer& observer, std::uint64_t seed)
    : m_cfg(std::move(cfg)), m_store(store), m_clock(clock), m_deliveries(std::move(deliveries)),
      m_observer(observer), m_rng(seed) {}

MessageTable::~MessageTable() {
  if (!m_in_flight) {
    return;
  }
  try {
    m_store.finish_commit(true);
  } catch (const std::exception& e) {
    logging::warn("a commit in flight at shutdown failed; its reads are read again later",
                  {{"reason", e.what()}});
  }
}

double MessageTable::random01() {
  return std::uniform_real_distribution<double>(0.0, 1.0)(m_rng);
}

// ---------------------------------------------------------------- messages

MessageTable::Entry& MessageTable::place(MessageRecord&& record) {
  std::string key = record.spec.process_query_key;
  auto [pos, inserted] = m_messages.try_emplace(std::move(key), std::move(record));
  if (inserted) {
    m_unsorted.push_back(&*pos);
  }
  return pos->second;
}

void MessageTable::announce(const Entry& entry) {
  if (entry.record.stopped) {
    return;
  }
  ++m_tracked;
  if (m_listener != nullptr) {
    m_listener->scheduled(entry.record);
  }
}

MessageTable::Entry& MessageTable::insert(MessageRecord&& record) {
  Entry& entry = place(std::move(record));
  announce(entry);
  return entry;
}

void MessageTable::start() {
  // Row by row, into a map sized once: a million messages are never held
  // twice, nor rehashed on the way. The poller hears of them once they are
  // all in, told first how many to expect, so that its queues are sized once
  // too.
  const std::size_t stored = m_store.message_count();
  // The memory the loaded records will fill, made ready in one step rather
  // than faulted in page by page (common/heap.hpp).
  heap::prepare_heap(stored * k_heap_bytes_per_loaded_message);
  m_messages.reserve(stored + m_cfg.messages.size());
  m_unsorted.reserve(stored);
  std::size_t never_polled = 0;
  std::size_t polled = 0;
  std::size_t tracked_from_config = 0;
  m_store.visit_messages([&](MessageRecord& record) {
    if (!record.stopped) {
      ++(record.last_poll ? polled : never_polled);
      tracked_from_config += record.source == MessageSource::config ? 1 : 0;
    }
    place(std::move(record));
  });
  if (m_listener != nullptr) {
    m_listener->reserve(never_polled, polled);
  }
  for (const Slot* slot : m_unsorted) { // storage order, without a look-up
    announce(slot->second);
  }
  reconcile(tracked_from_config);
  flush(true);
  m_observer.tracked_changed(m_tracked);
  logging::info("tracking " + count_of(m_tracked, "message") + " (" +
                count_of(m_messages.size(), "message") + " known in the state database)");
}

void MessageTable::reconfigure(config::Config cfg) {
  m_cfg = std::move(cfg);
  reconcile();
  flush(true);
}

void MessageTable::reconcile(std::optional<std::size_t> tracked_from_config) {
  const TimePoint now = m_clock.now();
  std::unordered_set<std::string_view> in_config;
  std::size_t still_in_config = 0; // of the tracked_from_config
  for (const auto& spec : m_cfg.messages) {
    in_config.insert(spec.process_query_key);
    auto it = m_messages.find(spec.process_query_key);
    if (it != m_messages.end() && !it->second.record.stopped &&
        it->second.record.source == MessageSource::config) {
      ++still_in_config;
    }
    if (it == m_messages.end()) {
      Entry& entry = insert(tracker::new_record(spec, MessageSource::config, now));
      logging::info("message added", {{"key", spec.process_query_key}, {"source", "config"}});
      queue_step(entry, tracker::Step{entry.record, {}}, true);
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
      queue_step(entry, tracker::Step{std::move(updated), {}}, true);
    }
  }
  if (tracked_from_config && *tracked_from_config == still_in_config) {
    // Every tracked message that came from the file is still in it: nothing
    // to stop, and no pass over every message (a million of them, added
    // through the API, at start-up).
    m_observer.tracked_changed(m_tracked);
    return;
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
  m_observer.tracked_changed(m_tracked);
}

MessageTable::AddOutcome MessageTable::add(const MessageSpec& spec) {
  auto it = m_messages.find(spec.process_query_key);
  if (it != m_messages.end()) {
    // Stopped or not: a processQueryKey is tracked at most once.
    return it->second.record.spec == spec ? AddOutcome::unchanged : AddOutcome::conflict;
  }
  Entry& entry = insert(tracker::new_record(spec, MessageSource::api, m_clock.now()));
  m_observer.tracked_changed(m_tracked);
  logging::info("message added", {{"key", spec.process_query_key}, {"source", "api"}});
  queue_step(entry, tracker::Step{entry.record, {}}, true);
  return AddOutcome::created;
}

bool MessageTable::remove(const std::string& key) {
  auto it = m_messages.find(key);
  if (it == m_messages.end()) {
    return false;
  }
  if (!it->second.record.stopped) {
    queue_step(it->second, tracker::stop(it->second.record, StopReason::removed, "", m_clock.now()),
               true);
  }
  return true;
}

const MessageRecord* MessageTable::find(const std::string& key) const {
  auto it = m_messages.find(key);
  return it == m_messages.end() ? nullptr : &it->second.record;
}

void MessageTable::visit_from(std::string_view after,
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

void MessageTable::visit_tracked(const std::function<void(const MessageRecord&)>& visit) const {
  for (const auto& [key, entry] : m_messages) {
    if (!entry.record.stopped) {
      visit(entry.record);
    }
  }
}

// ---------------------------------------------------------------- polls

void MessageTable::apply_poll(const std::string& key, const tracker::PollResult& result,
                              const PollPlan& plan) {
  Entry& entry = m_messages.at(key);
  tracker::Context ctx{m_cfg.poll, m_clock.now(), entry.failures, random01()};
  ctx.schedule = plan.schedule;
  ctx.stretch = plan.stretch;
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

bool MessageTable::close_window(const std::string& key) {
  auto it = m_messages.find(key);
  if (it == m_messages.end()) {
    return false;
  }
  auto step = tracker::close_window(it->second.record, m_clock.now());
  if (!step) {
    return false;
  }
  queue_step(it->second, std::move(*step), true);
  return true;
}

void MessageTable::reschedule(const std::string& key, TimePoint next_poll) {
  auto it = m_messages.find(key);
  if (it == m_messages.end() || it->second.record.stopped ||
      it->second.record.next_poll == next_poll) {
    return;
  }
  MessageRecord moved = it->second.record;
  moved.next_poll = next_poll;
  queue_step(it->second, tracker::Step{std::move(moved), {}}, false);
}

// ---------------------------------------------------------------- pushes

MessageTable::Outcome MessageTable::push_read(const stream::ReadEvent& event,
                                              std::function<void(bool)> committed) {
  const auto it = m_messages.find(event.process_query_key);
  if (it == m_messages.end() || it->second.record.stopped || !event.user_id) {
    return Outcome::untracked;
  }
  const auto& ids = it->second.record.read_user_ids;
  if (std::find(ids.begin(), ids.end(), *event.user_id) != ids.end()) {
    return Outcome::duplicate;
  }
  if (nothing_unwritten()) {
    m_pending_since = m_clock.now();
  }
  auto [batch, fresh] = m_pushes.try_emplace(event.process_query_key);
  if (fresh) {
    m_push_order.push_back(event.process_query_key);
  }
  batch->second.reads.push_back({*event.user_id, event.read_at});
  batch->second.acks.push_back(std::move(committed));
  return Outcome::pending;
}

void MessageTable::apply_pushes() {
  const TimePoint now = m_clock.now();
  std::vector<std::string> order;
  order.swap(m_push_order);
  for (const auto& key : order) {
    auto node = m_pushes.extract(key);
    PushBatch& batch = node.mapped();
    auto it = m_messages.find(key);
    if (it == m_messages.end() || it->second.record.stopped) {
      // Stopped in the same turn (removed, fully read by a poll): nothing to
      // record, and nothing to send again.
      for (auto& ack : batch.acks) {
        ack(true);
      }
      continue;
    }
    // Without events when a poll of this turn saw every reader first: the
    // acknowledgements still wait for the commit.
    queue_step(it->second, tracker::apply_push(it->second.record, batch.reads, now), true,
               std::move(batch.acks));
  }
  m_pushes.clear();
}

// ---------------------------------------------------------------- commits

void MessageTable::mark_dirty(Entry& entry) {
  if (!entry.poll_state_dirty) {
    entry.poll_state_dirty = true;
    m_dirty.push_back(entry.record.spec.process_query_key);
  }
}

void MessageTable::queue_step(Entry& entry, tracker::Step step, bool durable,
                              std::vector<std::function<void(bool)>> acks) {
  if (nothing_unwritten()) {
    m_pending_since = m_clock.now();
  }
  if (!durable && acks.empty() && step.events.empty() &&
      only_poll_state_differs(entry.record, step.record)) {
    // A poll that found nothing new: no commit of its own, and no copy of
    // the record to roll back to; flush() writes the poll times as they are
    // then.
    entry.record = std::move(step.record);
    if (m_listener != nullptr) {
      m_listener->scheduled(entry.record);
    }
    mark_dirty(entry);
    return;
  }
  const std::string key = step.record.spec.process_query_key;
  PendingCommit pending;
  m_pending_durable += durable ? 1 : 0;
  pending.previous = entry.record;
  pending.acks = std::move(acks);
  pending.new_readers = step.record.read_user_ids.size() - entry.record.read_user_ids.size();
  for (auto& event : step.events) {
    event.id = make_event_id(event.created_at, m_rng(), m_rng());
    pending.commit.routes.push_back(routes_for(step.record, event.type));
  }
  if (pending.new_readers > 0) {
    logging::debug("new readers", {{"key", key},
                                   {"new_readers", pending.new_readers},
                                   {"readers", step.record.read_user_ids.size()}});
  }
  const bool was_stopped = entry.record.stopped;
  entry.record = step.record;
  if (entry.record.stopped) {
    if (!was_stopped) {
      --m_tracked;
      if (m_listener != nullptr) {
        m_listener->stopped(key);
      }
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
  } else if (m_listener != nullptr) {
    m_listener->scheduled(entry.record);
  }
  pending.commit.message = std::move(step.record);
  pending.commit.events = std::move(step.events);
  m_pending.push_back(std::move(pending));
}

std::vector<std::string> MessageTable::routes_for(const MessageRecord& m, EventType type) const {
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

std::optional<TimePoint> MessageTable::next_flush() const {
  if (m_in_flight) {
    return m_clock.now() + k_commit_check_interval;
  }
  if (nothing_unwritten()) {
    return std::nullopt;
  }
  if (m_pending_durable > 0 || !m_pushes.empty()) {
    return m_clock.now();
  }
  return m_pending_since + k_bookkeeping_flush_interval;
}

void MessageTable::flush(bool all) {
  if (m_in_flight && !finish_commit(all)) {
    return; // still in flight: what came meanwhile waits for it
  }
  apply_pushes();
  if (nothing_unwritten()) {
    return;
  }
  if (m_pending_durable == 0 && !all &&
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
    m_store.begin_commit_all(commits);
  } catch (const store::StoreError& e) {
    logging::error("cannot write to the state database, will poll again", {{"reason", e.what()}});
    rolled_back(pending, dirty);
    return;
  }
  m_in_flight = InFlight{std::move(pending), std::move(commits), std::move(dirty)};
  // SQLite: landed already. PostgreSQL: landed when `all`, else perhaps.
  finish_commit(all);
}

bool MessageTable::finish_commit(bool wait) {
  try {
    if (!m_store.finish_commit(wait)) {
      return false;
    }
  } catch (const store::StoreError& e) {
    logging::error("cannot write to the state database, will poll again", {{"reason", e.what()}});
    InFlight failed = std::move(*m_in_flight);
    m_in_flight.reset();
    // What was queued since rests on what failed: undone first, newest
    // first (the poll times waiting in m_dirty stay there).
    std::vector<PendingCommit> later;
    later.swap(m_pending);
    m_pending_durable = 0;
    rolled_back(later, {});
    rolled_back(failed.pending, failed.dirty);
    return true;
  }
  InFlight done = std::move(*m_in_flight);
  m_in_flight.reset();
  committed(done);
  return true;
}

void MessageTable::committed(const InFlight& done) {
  const std::vector<PendingCommit>& pending = done.pending;
  const std::vector<store::Commit>& commits = done.commits;
  const TimePoint now = m_clock.now();
  std::vector<Delivery> deliveries;
  for (std::size_t n = 0; n < pending.size(); ++n) {
    const store::Commit& c = commits[n];
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
    const auto& ids = c.message.read_user_ids;
    for (std::size_t i = ids.size() - pending[n].new_readers; i < ids.size(); ++i) {
      const ReadInfo info = i < c.message.read_info.size() ? c.message.read_info[i] : ReadInfo{};
      std::optional<Millis> delay;
      if (info.read_at) {
        delay = std::max(now - *info.read_at, Millis{0});
      }
      m_observer.read_committed(info.via, delay);
    }
  }
  if (!deliveries.empty() && m_deliveries) {
    m_deliveries(std::move(deliveries));
  }
  for (const auto& p : pending) {
    for (const auto& ack : p.acks) {
      ack(true);
    }
  }
  std::unordered_set<std::string_view> changed;
  for (const auto& p : pending) {
    const std::string& key = p.previous.spec.process_query_key;
    const auto found = m_messages.find(key);
    if (found != m_messages.end() && changed.insert(found->first).second) {
      m_observer.message_changed(found->second.record);
    }
  }
}

// Nothing was written: the in-memory changes are undone too, and the
// messages polled again soon. The reads are still on DingTalk's side (a
// pushed one is sent again, being unacknowledged); the next poll finds them.
// Poll times are kept, and written by the next flush.
void MessageTable::rolled_back(std::vector<PendingCommit>& pending,
                               const std::vector<std::string>& dirty) {
  for (const auto& key : dirty) {
    auto found = m_messages.find(key);
    if (found != m_messages.end()) {
      mark_dirty(found->second);
    }
  }
  m_pending_since = m_clock.now();
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
      found->second.record.next_poll = retry_at;
      if (m_listener != nullptr) {
        m_listener->scheduled(found->second.record);
      }
    }
  }
  m_observer.tracked_changed(m_tracked);
  for (auto& p : pending) {
    for (auto& ack : p.acks) {
      ack(false);
    }
  }
}

} // namespace rrd::tracking
