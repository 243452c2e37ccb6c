// DueQueue: the watched messages ordered by when their next poll is due.
// pop_due() hands out the longest-overdue message first (ties broken by key,
// so the order is deterministic); because a message's due time never changes
// while it waits, newer arrivals can never overtake it: no message starves.
//
// O(log n) per operation. Each key is stored once (in the hash map); the
// ordered index holds a pointer to that stored key, which stays valid because
// unordered_map nodes never move.
//
// Not thread-safe: owned by the scheduler loop.
#pragma once

#include "readreceiptd/common/clock.hpp"

#include <cstddef>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>

namespace rrd::scheduler {

class DueQueue {
public:
  DueQueue() = default;
  // Not copyable: the index points into the map.
  DueQueue(const DueQueue&) = delete;
  DueQueue& operator=(const DueQueue&) = delete;
  DueQueue(DueQueue&&) = default;
  DueQueue& operator=(DueQueue&&) = default;

  // Adds the key, or moves it to the new due time.
  void upsert(const std::string& key, TimePoint due);
  // Removes the key; false if it was not there.
  bool erase(const std::string& key);
  // Removes and returns the entry with the earliest due time if that time is
  // <= now (ties: the smallest key); nullopt if nothing is due.
  std::optional<std::pair<std::string, TimePoint>> pop_due(TimePoint now);

  // The earliest due time, or nullopt when empty.
  std::optional<TimePoint> next_due() const;
  // The key's due time, or nullopt if it is not queued.
  std::optional<TimePoint> due_time(const std::string& key) const;
  bool contains(const std::string& key) const { return m_by_key.count(key) != 0; }
  std::size_t size() const { return m_by_key.size(); }
  bool empty() const { return m_by_key.empty(); }
  void clear();
  // Makes room for `keys` keys in all without rehashing on the way.
  void reserve(std::size_t keys) { m_by_key.reserve(keys); }

private:
  using Entry = std::pair<TimePoint, const std::string*>;
  struct ByDueThenKey {
    bool operator()(const Entry& a, const Entry& b) const {
      if (a.first != b.first) {
        return a.first < b.first;
      }
      return *a.second < *b.second;
    }
  };

  std::unordered_map<std::string, TimePoint> m_by_key;
  std::set<Entry, ByDueThenKey> m_by_due;
};

} // namespace rrd::scheduler
