#include "readreceiptd/app/leadership.hpp"

#include "readreceiptd/app/logging.hpp"

namespace rrd::app {

Leadership::Leadership(metrics::Metrics& metrics, api::LoopStatus& status, Hooks hooks)
    : m_metrics(metrics), m_status(status), m_hooks(std::move(hooks)) {}

void Leadership::became_leader(std::int64_t epoch, const std::string& previous_holder_info) {
  m_outage_logged = false;
  logging::info("became the leader",
                {{"epoch", std::to_string(epoch)},
                 {"previous", previous_holder_info.empty() ? "none" : previous_holder_info}});
  if (!m_leader) {
    m_leader = true;
    m_metrics.leadership_changed(true);
  }
  // Ready again once the new working parts have a token.
  m_status.set_readiness(api::Readiness::waiting_for_token);
  if (m_hooks.start_work) {
    m_hooks.start_work(epoch);
  }
}

void Leadership::became_standby(const std::string& leader_info,
                                std::optional<ha::StepDownReason> why) {
  const std::string leader = leader_info.empty() ? "unknown" : leader_info;
  if (m_leader) {
    m_leader = false;
    // Work stops first: nothing more starts after this.
    if (m_hooks.stop_work) {
      m_hooks.stop_work();
    }
    m_metrics.leadership_changed(false);
    logging::warn("stepped down, now a standby",
                  {{"reason", why ? ha::to_string(*why) : "unknown"}, {"leader", leader}});
  } else {
    logging::info("standby", {{"leader", leader}});
  }
  if (why != ha::StepDownReason::stopping) {
    m_status.set_readiness(api::Readiness::standby);
  }
}

void Leadership::store_unavailable(const std::string& reason, Millis retry_in) {
  const std::string retry = std::to_string(retry_in.count()) + "ms";
  if (!m_outage_logged) {
    m_outage_logged = true;
    logging::warn("cannot reach the state database for the lease",
                  {{"reason", reason}, {"retry_in", retry}});
  } else {
    logging::debug("still cannot reach the state database for the lease",
                   {{"reason", reason}, {"retry_in", retry}});
  }
}

} // namespace rrd::app
