// SystemdNotifier: the daemon's side of systemd's Type=notify protocol
// (sd_notify): READY=1 once the store, the listeners and a first token are
// in place, STATUS= lines when the status text changes, WATCHDOG=1 from the
// loop at half the WATCHDOG_USEC interval, RELOADING=1 (with MONOTONIC_USEC)
// around a reload, STOPPING=1. Every call is a no-op when NOTIFY_SOCKET is
// not set.
//
// Thread-safety: none; the loop thread owns it.
#pragma once

#include "readreceiptd/common/clock.hpp"

#include <chrono>
#include <optional>
#include <string>

namespace rrd::app {

// A STATUS= text is sent at most this often (the latest one wins).
inline constexpr Millis k_status_min_interval{1'000};

class SystemdNotifier {
public:
  using SteadyTime = std::chrono::steady_clock::time_point;

  // Reads WATCHDOG_USEC (sd_watchdog_enabled).
  SystemdNotifier();

  void ready();
  // RELOADING=1 with MONOTONIC_USEC=<now>; follow with ready().
  void reloading();
  void stopping();
  // Sends STATUS=<text> if it differs from the last one sent and the last
  // was sent at least k_status_min_interval ago; otherwise keeps it for a
  // later call.
  void status(const std::string& text, SteadyTime now);
  // Sends WATCHDOG=1 when half the watchdog interval has passed since the
  // last one.
  void watchdog(SteadyTime now);
  // How long the loop may wait before it must call watchdog() again;
  // nullopt without a watchdog.
  std::optional<Millis> watchdog_interval() const { return m_watchdog_interval; }

  bool ready_sent() const { return m_ready_sent; }

private:
  void send(const std::string& text);

  std::optional<Millis> m_watchdog_interval; // half of WATCHDOG_USEC
  std::optional<SteadyTime> m_last_watchdog;
  std::string m_status_sent;
  std::optional<SteadyTime> m_status_sent_at;
  bool m_ready_sent = false;
};

} // namespace rrd::app
