#include "readreceiptd/api/updates.hpp"

#include "readreceiptd/api/sse.hpp"

#include <algorithm>
#include <condition_variable>
#include <nlohmann/json.hpp>

namespace rrd::api {

const char* to_string(DropReason r) {
  switch (r) {
  case DropReason::queue_full:
    return "queue_full";
  case DropReason::write_timeout:
    return "write_timeout";
  }
  return "unknown";
}

Frame make_frame(std::string text) {
  return std::make_shared<const std::string>(std::move(text));
}

Frame message_frame(const MessageRecord& m) {
  return make_frame(sse_event("message", message_json(m)));
}

Frame status_frame(const DaemonStatus& s) {
  return make_frame(sse_event("status", status_json(s)));
}

std::string end_frame(std::string_view reason) {
  return sse_event("end", nlohmann::json{{"reason", std::string(reason)}}.dump());
}

// ---------------------------------------------------------------- queue

bool UpdateQueue::offer(const std::vector<Frame>& frames) {
  std::size_t bytes = 0;
  for (const auto& f : frames) {
    bytes += f->size();
  }
  if (m_frames.size() + frames.size() > m_max_frames || m_bytes + bytes > m_max_bytes) {
    return false;
  }
  m_frames.insert(m_frames.end(), frames.begin(), frames.end());
  m_bytes += bytes;
  return true;
}

std::vector<Frame> UpdateQueue::take() {
  std::vector<Frame> out(std::make_move_iterator(m_frames.begin()),
                         std::make_move_iterator(m_frames.end()));
  clear();
  return out;
}

void UpdateQueue::clear() {
  m_frames.clear();
  m_bytes = 0;
}

// ---------------------------------------------------------------- status

bool StatusCoalescer::due(TimePoint now) const {
  return !m_last_look || now < *m_last_look || now - *m_last_look >= m_min_interval;
}

bool StatusCoalescer::offer(TimePoint now, const std::string& status) {
  m_last_look = now;
  if (m_last_published == status) {
    return false;
  }
  m_last_published = status;
  return true;
}

std::optional<TimePoint> StatusCoalescer::next_due() const {
  if (!m_last_look) {
    return std::nullopt;
  }
  return *m_last_look + m_min_interval;
}

std::uint64_t UpdateStats::dropped_for(DropReason r) const {
  for (std::size_t i = 0; i < std::size(k_all_drop_reasons); ++i) {
    if (k_all_drop_reasons[i] == r) {
      return dropped[i];
    }
  }
  return 0;
}

// ---------------------------------------------------------------- subscribers

struct UpdateSubscriber::State {
  State(std::size_t frames, std::size_t bytes) : queue(frames, bytes) {}
  std::mutex mutex;
  std::condition_variable wake;
  UpdateQueue queue;              // guarded by mutex
  std::optional<std::string> end; // guarded by mutex: the final frame, once ended
  bool listed = true;             // guarded by the hub's m_mutex: in m_subscribers
};

UpdateSubscriber::UpdateSubscriber(UpdateHub& hub, std::shared_ptr<State> state)
    : m_hub(hub), m_state(std::move(state)) {}

UpdateSubscriber::~UpdateSubscriber() {
  m_hub.unsubscribe(m_state);
}

UpdateSubscriber::Next UpdateSubscriber::next(Millis max_wait) {
  std::unique_lock lock(m_state->mutex);
  m_state->wake.wait_for(lock, max_wait,
                         [&] { return !m_state->queue.empty() || m_state->end.has_value(); });
  Next out;
  for (const auto& f : m_state->queue.take()) {
    out.bytes += *f;
  }
  if (m_state->end) {
    out.bytes += *m_state->end;
    m_state->end = std::string(); // written once
    out.end = true;
  }
  return out;
}

void UpdateSubscriber::write_timed_out() {
  m_hub.drop(m_state, DropReason::write_timeout);
}

// ---------------------------------------------------------------- hub

UpdateHub::UpdateHub(UpdateLimits limits) : m_limits(limits) {}

UpdateHub::~UpdateHub() = default;

Result<std::unique_ptr<UpdateSubscriber>, UpdateHub::Refusal> UpdateHub::subscribe() {
  auto state =
      std::make_shared<UpdateSubscriber::State>(m_limits.queue_frames, m_limits.queue_bytes);
  {
    const std::lock_guard lock(m_mutex);
    if (m_closed) {
      return err(Refusal::closed);
    }
    if (m_subscribers.size() >= m_limits.max_subscribers) {
      return err(Refusal::full);
    }
    std::vector<Frame> first{make_frame(sse_retry(k_update_retry))};
    if (m_status) {
      first.push_back(m_status);
    }
    state->queue.offer(first); // an empty queue takes a status
    m_subscribers.push_back(state);
    m_count.store(m_subscribers.size(), std::memory_order_relaxed);
  }
  return std::unique_ptr<UpdateSubscriber>(new UpdateSubscriber(*this, std::move(state)));
}

void UpdateHub::end_locked(const StatePtr& s, std::string_view reason) {
  {
    const std::lock_guard lock(s->mutex);
    s->queue.clear();
    if (!s->end) {
      s->end = end_frame(reason);
    }
  }
  s->wake.notify_one();
  s->listed = false;
}

void UpdateHub::publish(const std::vector<Frame>& frames) {
  if (frames.empty()) {
    return;
  }
  const std::lock_guard lock(m_mutex);
  publish_locked(frames);
}

void UpdateHub::count_drop(DropReason reason) {
  for (std::size_t i = 0; i < std::size(k_all_drop_reasons); ++i) {
    if (k_all_drop_reasons[i] == reason) {
      m_dropped[i].fetch_add(1, std::memory_order_relaxed);
    }
  }
}

void UpdateHub::publish_locked(const std::vector<Frame>& frames) {
  bool dropped = false;
  for (const auto& s : m_subscribers) {
    bool taken = false;
    {
      const std::lock_guard sub(s->mutex);
      taken = s->end.has_value() || s->queue.offer(frames);
    }
    if (taken) {
      s->wake.notify_one();
      continue;
    }
    end_locked(s, k_end_too_slow);
    count_drop(DropReason::queue_full);
    dropped = true;
  }
  if (dropped) {
    std::erase_if(m_subscribers, [](const StatePtr& s) { return !s->listed; });
    m_count.store(m_subscribers.size(), std::memory_order_relaxed);
  }
}

void UpdateHub::publish_status(const Frame& status) {
  const std::lock_guard lock(m_mutex);
  m_status = status;
  publish_locked({status});
}

void UpdateHub::close() {
  const std::lock_guard lock(m_mutex);
  m_closed = true;
  end_all_locked(k_end_shutting_down);
}

void UpdateHub::end_all(std::string_view reason) {
  const std::lock_guard lock(m_mutex);
  end_all_locked(reason);
}

void UpdateHub::end_all_locked(std::string_view reason) {
  for (const auto& s : m_subscribers) {
    end_locked(s, reason);
  }
  m_subscribers.clear();
  m_count.store(0, std::memory_order_relaxed);
}

void UpdateHub::drop(const StatePtr& s, DropReason reason) {
  const std::lock_guard lock(m_mutex);
  if (!s->listed) {
    return; // dropped already, or ended by close()
  }
  end_locked(s, k_end_too_slow);
  std::erase(m_subscribers, s);
  m_count.store(m_subscribers.size(), std::memory_order_relaxed);
  count_drop(reason);
}

void UpdateHub::unsubscribe(const StatePtr& s) {
  const std::lock_guard lock(m_mutex);
  if (s->listed) {
    s->listed = false;
    std::erase(m_subscribers, s);
    m_count.store(m_subscribers.size(), std::memory_order_relaxed);
  }
}

UpdateStats UpdateHub::stats() const {
  UpdateStats out;
  out.subscribers = subscribers();
  for (std::size_t i = 0; i < out.dropped.size(); ++i) {
    out.dropped[i] = m_dropped[i].load(std::memory_order_relaxed);
  }
  return out;
}

// ---------------------------------------------------------------- feed

void UpdateFeed::message_changed(const MessageRecord& m) {
  if (m_hub.subscribers() == 0) {
    return; // nobody to render it for
  }
  Frame frame = message_frame(m);
  const auto [it, fresh] = m_index.try_emplace(m.spec.process_query_key, m_frames.size());
  if (fresh) {
    m_frames.push_back(std::move(frame));
  } else {
    m_frames[it->second] = std::move(frame); // the turn's last state, in its first place
  }
}

void UpdateFeed::end_turn(TimePoint now, const std::function<DaemonStatus()>& status) {
  if (!m_frames.empty()) {
    m_hub.publish(m_frames);
    m_frames.clear();
    m_index.clear();
  }
  if (m_status.due(now)) {
    const std::string json = status_json(status());
    if (m_status.offer(now, json)) {
      m_hub.publish_status(make_frame(sse_event("status", json))); // as status_frame() renders
    }
  }
}

} // namespace rrd::api
