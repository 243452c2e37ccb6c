#include "readreceiptd/api/command_queue.hpp"

#include <exception>
#include <spdlog/spdlog.h>

namespace rrd::api {

CommandQueue::CommandQueue(std::function<void()> wakeup) : m_wakeup(std::move(wakeup)) {}

CommandQueue::~CommandQueue() {
  close();
}

Result<Reply, CallFailure> CommandQueue::call(Command command, Millis timeout) {
  auto abandoned = std::make_shared<std::atomic<bool>>(false);
  std::future<Result<Reply, CallFailure>> answer;
  {
    std::lock_guard lock(m_mutex);
    if (m_closed) {
      return err(CallFailure::closed);
    }
    Item item{std::move(command), {}, abandoned};
    answer = item.promise.get_future();
    m_items.push_back(std::move(item));
  }
  if (m_wakeup) {
    m_wakeup();
  }
  if (answer.wait_for(timeout) != std::future_status::ready) {
    abandoned->store(true);
    return err(CallFailure::timeout);
  }
  return answer.get();
}

void CommandQueue::run_pending(Backend& backend) {
  std::deque<Item> items;
  {
    std::lock_guard lock(m_mutex);
    items.swap(m_items);
  }
  for (auto& item : items) {
    if (item.abandoned->load()) {
      continue; // the caller has already answered 503
    }
    try {
      item.promise.set_value(Result<Reply, CallFailure>(item.command(backend)));
    } catch (const std::exception& e) {
      spdlog::error("API request failed: {}", e.what());
      item.promise.set_value(
          Result<Reply, CallFailure>(error_reply(500, "internal error; see the daemon's log")));
    }
  }
}

void CommandQueue::close() {
  std::deque<Item> items;
  {
    std::lock_guard lock(m_mutex);
    m_closed = true;
    items.swap(m_items);
  }
  for (auto& item : items) {
    item.promise.set_value(Result<Reply, CallFailure>(err(CallFailure::closed)));
  }
}

std::size_t CommandQueue::queued() const {
  std::lock_guard lock(m_mutex);
  return m_items.size();
}

bool LoopStatus::alive(SteadyTime now, Millis stale_after) const {
  const auto last = m_heartbeat.load();
  if (last == 0) {
    return false;
  }
  return now - SteadyTime(SteadyTime::duration(last)) <= stale_after;
}

} // namespace rrd::api
