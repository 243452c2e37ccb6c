// What the app does when the lease (state.postgres) changes hands: it logs
// each change with the epoch and the other holder, moves the leadership
// metrics, publishes readiness (`standby` while a standby) and calls the
// loop's hooks that start the working parts (poller, Stream, deliveries)
// on becoming leader and stop them at once on stepping down. Not used on
// SQLite, where the daemon is always the leader.
//
// Thread-safety: none; the coordinator calls it on the loop's thread.
#pragma once

#include "readreceiptd/api/command_queue.hpp"
#include "readreceiptd/ha/coordinator.hpp"
#include "readreceiptd/metrics/metrics.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace rrd::app {

class Leadership final : public ha::CoordinatorObserver {
public:
  struct Hooks {
    std::function<void(std::int64_t epoch)> start_work; // build from the database, start
    std::function<void()> stop_work;                    // tear down at once
  };
  Leadership(metrics::Metrics& metrics, api::LoopStatus& status, Hooks hooks);

  void became_leader(std::int64_t epoch, const std::string& previous_holder_info) override;
  void became_standby(const std::string& leader_info,
                      std::optional<ha::StepDownReason> why) override;
  void store_unavailable(const std::string& reason, Millis retry_in) override;

  bool leader() const { return m_leader; }

private:
  metrics::Metrics& m_metrics;
  api::LoopStatus& m_status;
  Hooks m_hooks;
  bool m_leader = false;
  // The store's unavailability is logged at warn once per outage, then at
  // debug at each retry.
  bool m_outage_logged = false;
};

} // namespace rrd::app
