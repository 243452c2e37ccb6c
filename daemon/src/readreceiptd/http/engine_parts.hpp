// Pieces both engines' loops share: the queue of answers whose callbacks
// have not run yet, and the epoll timeout for a deadline. Private to the
// http module.
//
// Thread-safety: none; each engine uses its own from its loop thread.
#pragma once

#include "readreceiptd/http/http_engine.hpp"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <utility>

namespace rrd::http::detail {

// Events taken from epoll per wait; more stay ready for the next one.
inline constexpr int k_max_epoll_events = 256;

// Milliseconds for epoll_wait(2) to wait from `now` until `until`: rounded
// up, since waking before a deadline would only spin; 0 once it has passed.
inline int epoll_timeout_ms(std::chrono::steady_clock::time_point now,
                            std::chrono::steady_clock::time_point until) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(until - now).count();
  return static_cast<int>(
      std::clamp<std::int64_t>((std::max<std::int64_t>(0, us) + 999) / 1000, 0, INT_MAX));
}

// Answers waiting for their callbacks, in completion order.
class CompletionQueue {
public:
  void push(Callback done, Response response) {
    m_items.push_back(Item{std::move(done), std::move(response)});
  }
  bool empty() const { return m_items.empty(); }
  std::size_t size() const { return m_items.size(); }
  // Drops every answer; the callbacks are destroyed, never called.
  void clear() { m_items.clear(); }

  // Calls the callbacks of the answers queued so far, not of those their
  // callbacks queue. Each leaves the queue before its callback runs, so a
  // callback may submit() (or even run_once()) freely.
  void deliver() {
    for (std::size_t n = m_items.size(); n > 0 && !m_items.empty(); --n) {
      Item item = std::move(m_items.front());
      m_items.pop_front();
      if (item.done) {
        item.done(std::move(item.response));
      }
    }
  }

private:
  struct Item {
    Callback done;
    Response response;
  };
  std::deque<Item> m_items;
};

} // namespace rrd::http::detail
