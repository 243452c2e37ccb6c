// How the HTTP API's threads talk to the loop, which owns all mutable state
// (DESIGN: one thread owns the mutable state).
//
// - CommandQueue: API threads call call(), which queues a command, wakes the
//   loop and waits for its reply with a deadline. The loop thread calls
//   run_pending() once per turn (before pumping), which runs the queued
//   commands against the Backend and hands back their replies; and close()
//   when it stops. A command whose caller gave up waiting before the loop
//   reached it is skipped, not run.
// - LoopStatus: what the loop publishes for /healthz and /readyz without a
//   round trip: a heartbeat (bumped every turn) and the readiness.
//
// Thread-safety: both are thread-safe as described; m_mutex guards the
// queue and the closed flag.
#pragma once

#include "readreceiptd/api/router.hpp"
#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/common/result.hpp"

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>

namespace rrd::api {

enum class CallFailure {
  timeout, // the loop did not answer in time
  closed,  // the loop has stopped taking commands (shutting down)
};

class CommandQueue {
public:
  // `wakeup` makes the loop turn (http::Engine::wakeup); any thread.
  explicit CommandQueue(std::function<void()> wakeup);
  ~CommandQueue();
  CommandQueue(const CommandQueue&) = delete;
  CommandQueue& operator=(const CommandQueue&) = delete;

  // API threads: runs `command` on the loop and returns its reply, or a
  // failure after `timeout`. A command that throws gets a 500 reply.
  Result<Reply, CallFailure> call(Command command, Millis timeout);

  // Loop thread: runs every queued command.
  void run_pending(Backend& backend);
  // Loop thread: queued and later calls fail with `closed` at once.
  void close();

  std::size_t queued() const;

private:
  struct Item {
    Command command;
    std::promise<Result<Reply, CallFailure>> promise;
    std::shared_ptr<std::atomic<bool>> abandoned;
  };

  std::function<void()> m_wakeup;
  mutable std::mutex m_mutex;
  std::deque<Item> m_items; // guarded by m_mutex
  bool m_closed = false;    // guarded by m_mutex
};

class LoopStatus {
public:
  using SteadyTime = std::chrono::steady_clock::time_point;

  // Loop thread, every turn.
  void beat(SteadyTime now) { m_heartbeat.store(now.time_since_epoch().count()); }
  void set_readiness(Readiness r) { m_readiness.store(r); }

  // Any thread. Alive when the last beat is no older than `stale_after`.
  bool alive(SteadyTime now, Millis stale_after) const;
  Readiness readiness() const { return m_readiness.load(); }

private:
  std::atomic<SteadyTime::rep> m_heartbeat{0}; // 0: never
  std::atomic<Readiness> m_readiness{Readiness::starting};
};

} // namespace rrd::api
