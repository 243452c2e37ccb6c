#include "readreceiptd/scheduler/due_queue.hpp"

namespace rrd::scheduler {

void DueQueue::upsert(const std::string& key, TimePoint due) {
  auto [it, inserted] = m_by_key.try_emplace(key, due);
  if (!inserted) {
    if (it->second == due) {
      return;
    }
    m_by_due.erase(Entry{it->second, &it->first});
    it->second = due;
  }
  m_by_due.insert(Entry{due, &it->first});
}

bool DueQueue::erase(const std::string& key) {
  const auto it = m_by_key.find(key);
  if (it == m_by_key.end()) {
    return false;
  }
  m_by_due.erase(Entry{it->second, &it->first});
  m_by_key.erase(it);
  return true;
}

std::optional<std::pair<std::string, TimePoint>> DueQueue::pop_due(TimePoint now) {
  if (m_by_due.empty() || m_by_due.begin()->first > now) {
    return std::nullopt;
  }
  const Entry first = *m_by_due.begin();
  m_by_due.erase(m_by_due.begin());
  const auto it = m_by_key.find(*first.second);
  std::pair<std::string, TimePoint> out{std::move(m_by_key.extract(it).key()), first.first};
  return out;
}

std::optional<TimePoint> DueQueue::next_due() const {
  if (m_by_due.empty()) {
    return std::nullopt;
  }
  return m_by_due.begin()->first;
}

std::optional<TimePoint> DueQueue::due_time(const std::string& key) const {
  const auto it = m_by_key.find(key);
  if (it == m_by_key.end()) {
    return std::nullopt;
  }
  return it->second;
}

void DueQueue::clear() {
  m_by_due.clear();
  m_by_key.clear();
}

} // namespace rrd::scheduler
