#include "fakes/log_capture.hpp"
#include "readreceiptd/app/leadership.hpp"

#include <doctest/doctest.h>
#include <prometheus/registry.h>
#include <string>
#include <vector>

using namespace rrd;

namespace {

double gauge_or_counter(const metrics::Metrics& m, const std::string& name) {
  for (const auto& family : m.registry()->Collect()) {
    if (family.name == name && !family.metric.empty()) {
      const auto& metric = family.metric.front();
      return family.type == prometheus::MetricType::Gauge ? metric.gauge.value
                                                          : metric.counter.value;
    }
  }
  FAIL("no metric " << name);
  return -1;
}

config::Config postgres_config() {
  config::Config cfg;
  cfg.metrics.listen = "";
  cfg.state.path.clear();
  cfg.state.postgres = "host=db";
  return cfg;
}

} // namespace

TEST_CASE("leadership: each change starts or stops the work, moves the metrics, readiness, "
          "and is logged with the epoch and the other holder") {
  testing::LogCapture log(app::LogLevel::info);
  metrics::Metrics metrics(postgres_config());
  api::LoopStatus status;
  std::vector<std::string> hooks;
  app::Leadership l(
      metrics, status,
      {[&hooks](std::int64_t epoch) { hooks.push_back("start " + std::to_string(epoch)); },
       [&hooks] { hooks.emplace_back("stop"); }});

  l.became_standby("a.host 10.0.0.1:9465", std::nullopt); // at start-up
  CHECK(hooks.empty());
  CHECK(status.readiness() == api::Readiness::standby);
  CHECK(gauge_or_counter(metrics, "readreceiptd_leader") == 0);
  CHECK(gauge_or_counter(metrics, "readreceiptd_leader_changes_total") == 0);
  CHECK(log.contains("standby leader=\"a.host 10.0.0.1:9465\""));

  l.became_leader(7, "a.host 10.0.0.1:9465");
  CHECK(hooks == std::vector<std::string>{"start 7"});
  CHECK(l.leader());
  CHECK(status.readiness() == api::Readiness::waiting_for_token);
  CHECK(gauge_or_counter(metrics, "readreceiptd_leader") == 1);
  CHECK(log.contains("became the leader epoch=7 previous=\"a.host 10.0.0.1:9465\""));

  l.became_standby("b.host 10.0.0.2:9465", ha::StepDownReason::deadline_passed);
  CHECK(hooks == std::vector<std::string>{"start 7", "stop"});
  CHECK(status.readiness() == api::Readiness::standby);
  CHECK(gauge_or_counter(metrics, "readreceiptd_leader") == 0);
  CHECK(gauge_or_counter(metrics, "readreceiptd_leader_changes_total") == 2);
  CHECK(log.contains("stepped down, now a standby reason=deadline_passed leader=\"b.host "
                     "10.0.0.2:9465\""));

  log.clear();
  l.store_unavailable("connection refused", Millis{500});
  l.store_unavailable("connection refused", Millis{1000});
  const auto lines = log.lines();
  REQUIRE(lines.size() == 1); // warned once per outage
  CHECK(lines[0].find("cannot reach the state database for the lease") != std::string::npos);
}
