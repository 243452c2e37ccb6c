// SignalWatcher: turns SIGTERM/SIGINT (stop) and SIGHUP (reload) into atomic
// flags the loop reads. The signals are blocked in every thread and taken by
// a dedicated thread with sigtimedwait(), so no code runs in signal-handler
// context; that thread only sets the atomics and calls the wake-up function
// (HttpEngine::wakeup, which is thread-safe).
//
// Thread-safety: construct before any other thread starts (so that they
// inherit the blocked mask); the flag accessors may be called from any thread.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <thread>

namespace rrd::app {

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and the threads
// it starts afterwards. Called first thing when the daemon is to run: a
// stop or reload that arrives before the SignalWatcher exists (while the
// configuration is read) then waits for it, instead of ending the process
// with the signal's default action.
void block_watched_signals();

class SignalWatcher {
public:
  SignalWatcher();
  ~SignalWatcher();
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

  // Called (from the watcher's thread) after a flag is set.
  void set_wakeup(std::function<void()> wakeup);

  bool stop_requested() const { return m_stop.load(); }
  // True once per SIGHUP received (coalesced).
  bool take_reload() { return m_reload.exchange(false); }
  // For tests and for in-process stop requests.
  void request_stop();

private:
  void run();

  std::atomic<bool> m_stop{false};
  std::atomic<bool> m_reload{false};
  std::atomic<bool> m_quit{false};
  std::mutex m_mutex; // guards m_wakeup
  std::function<void()> m_wakeup;
  std::thread m_thread;
};

} // namespace rrd::app
