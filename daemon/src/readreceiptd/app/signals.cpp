#include "readreceiptd/app/signals.hpp"

#include <csignal>
#include <ctime>
#include <pthread.h>

namespace rrd::app {

namespace {
constexpr long k_poll_interval_ns = 100'000'000; // how often the thread checks m_quit

sigset_t watched_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  return set;
}
} // namespace

void block_watched_signals() {
  const sigset_t set = watched_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

SignalWatcher::SignalWatcher() {
  block_watched_signals();
  // A consumer that closes its end must not kill the daemon.
  std::signal(SIGPIPE, SIG_IGN);
  m_thread = std::thread([this] { run(); });
}

SignalWatcher::~SignalWatcher() {
  m_quit = true;
  m_thread.join();
}

void SignalWatcher::set_wakeup(std::function<void()> wakeup) {
  std::lock_guard lock(m_mutex);
  m_wakeup = std::move(wakeup);
}

void SignalWatcher::request_stop() {
  m_stop = true;
  std::lock_guard lock(m_mutex);
  if (m_wakeup) {
    m_wakeup();
  }
}

void SignalWatcher::run() {
  const sigset_t set = watched_signals();
  const timespec timeout{0, k_poll_interval_ns};
  while (!m_quit) {
    const int sig = sigtimedwait(&set, nullptr, &timeout);
    if (sig == SIGTERM || sig == SIGINT) {
      request_stop();
    } else if (sig == SIGHUP) {
      m_reload = true;
      std::lock_guard lock(m_mutex);
      if (m_wakeup) {
        m_wakeup();
      }
    }
  }
}

} // namespace rrd::app
