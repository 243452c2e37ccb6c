#include "readreceiptd/app/notify.hpp"

#include <algorithm>
#include <cstdint>
#include <ctime>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

namespace rrd::app {

namespace {
// The smallest interval the loop is asked to keep, whatever WATCHDOG_USEC says.
constexpr Millis k_min_watchdog_interval{10};
} // namespace

SystemdNotifier::SystemdNotifier() {
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    m_watchdog_interval =
        std::max(k_min_watchdog_interval, Millis{static_cast<Millis::rep>(usec / 2000)});
    spdlog::debug("systemd watchdog enabled: WATCHDOG=1 every {} ms", m_watchdog_interval->count());
  }
}

void SystemdNotifier::send(const std::string& text) {
  const int rc = sd_notify(0, text.c_str());
  if (rc < 0) {
    spdlog::debug("sd_notify failed: {}", rc);
  }
}

void SystemdNotifier::ready() {
  m_ready_sent = true;
  send("READY=1");
}

void SystemdNotifier::reloading() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const std::uint64_t usec = static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000 +
                             static_cast<std::uint64_t>(ts.tv_nsec) / 1000;
  send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec));
}

void SystemdNotifier::stopping() {
  send("STOPPING=1");
}

void SystemdNotifier::status(const std::string& text, SteadyTime now) {
  if (text == m_status_sent) {
    return;
  }
  if (m_status_sent_at && now - *m_status_sent_at < k_status_min_interval) {
    return;
  }
  m_status_sent = text;
  m_status_sent_at = now;
  send("STATUS=" + text);
}

void SystemdNotifier::watchdog(SteadyTime now) {
  if (!m_watchdog_interval) {
    return;
  }
  if (m_last_watchdog && now - *m_last_watchdog < *m_watchdog_interval) {
    return;
  }
  m_last_watchdog = now;
  send("WATCHDOG=1");
}

} // namespace rrd::app
