// config/grafana-dashboard.json: a Grafana dashboard that imports as it is
// (a Prometheus data source variable, DS_PROMETHEUS, that every panel and
// query uses), whose queries name only metrics the daemon exports - the
// names are taken from the registry and the process collector of a real
// metrics::Metrics, not from a list kept by hand - and that covers what an
// operator watches.
#include "readreceiptd/metrics/metrics.hpp"
#include "readreceiptd/metrics/process_collector.hpp"

#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <vector>

using namespace rrd;
using nlohmann::json;

namespace {

namespace fs = std::filesystem;

json load_dashboard() {
  std::ifstream in(fs::path(__FILE__).parent_path().parent_path() / "config" /
                   "grafana-dashboard.json");
  REQUIRE(in.good());
  return json::parse(in);
}

// Every series name a scrape of the daemon can hold: each family's name,
// and a histogram's _bucket, _sum and _count.
std::set<std::string> exported_names() {
  config::Config cfg;
  cfg.metrics.listen = "";
  cfg.dingtalk.monthly_call_budget = 5000; // its gauge exists only with a budget
  config::Webhook ops;
  ops.name = "ops";
  cfg.webhooks.push_back(ops);
  metrics::Metrics m(cfg);
  std::vector<prometheus::MetricFamily> families = m.registry()->Collect();
  for (auto& f : m.process_collector()->Collect()) {
    families.push_back(std::move(f));
  }
  std::set<std::string> names;
  for (const auto& f : families) {
    names.insert(f.name);
    if (f.type == prometheus::MetricType::Histogram) {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        names.insert(f.name + suffix);
      }
    }
  }
  return names;
}

// Every query of the dashboard: the panels' targets and the variables'.
std::vector<std::string> all_queries(const json& d) {
  std::vector<std::string> out;
  for (const auto& p : d["panels"]) {
    for (const auto& t : p.value("targets", json::array())) {
      out.push_back(t.at("expr").get<std::string>());
    }
  }
  for (const auto& v : d["templating"]["list"]) {
    if (v.value("type", "") == "query") {
      out.push_back(v["query"].is_object() ? v["query"]["query"].get<std::string>()
                                           : v["query"].get<std::string>());
    }
  }
  return out;
}

} // namespace

TEST_CASE("grafana: the dashboard imports with a Prometheus data source variable") {
  const json d = load_dashboard();
  CHECK(d["title"] == "readreceiptd");
  CHECK(d["uid"] == "readreceiptd");
  CHECK(d["id"].is_null()); // a new dashboard wherever it is imported
  CHECK(d["schemaVersion"].is_number_integer());

  const auto& vars = d["templating"]["list"];
  const auto ds = std::find_if(vars.begin(), vars.end(),
                               [](const json& v) { return v["name"] == "DS_PROMETHEUS"; });
  REQUIRE(ds != vars.end());
  CHECK((*ds)["type"] == "datasource");
  CHECK((*ds)["query"] == "prometheus");

  std::set<int> ids;
  for (const auto& p : d["panels"]) {
    const std::string title = p.value("title", "");
    CAPTURE(title);
    CHECK_FALSE(title.empty());
    CHECK(ids.insert(p["id"].get<int>()).second);
    REQUIRE(p["gridPos"].is_object());
    CHECK(p["gridPos"]["x"].get<int>() + p["gridPos"]["w"].get<int>() <= 24);
    if (p["type"] == "row") {
      continue;
    }
    CHECK(p["datasource"]["uid"] == "${DS_PROMETHEUS}");
    REQUIRE_FALSE(p["targets"].empty());
    for (const auto& t : p["targets"]) {
      CHECK(t["datasource"]["uid"] == "${DS_PROMETHEUS}");
      CHECK_FALSE(t["expr"].get<std::string>().empty());
      CHECK_FALSE(t["refId"].get<std::string>().empty());
    }
  }
}

TEST_CASE("grafana: every metric the dashboard queries is one the daemon exports") {
  const std::set<std::string> known = exported_names();
  REQUIRE(known.count("readreceiptd_read_delay_seconds_bucket") == 1);
  REQUIRE(known.count("process_resident_memory_bytes") == 1);
  const std::regex metric(R"(\b(readreceiptd|process)_[a-z_]+)");
  int used = 0;
  for (const std::string& q : all_queries(load_dashboard())) {
    CAPTURE(q);
    for (auto it = std::sregex_iterator(q.begin(), q.end(), metric); it != std::sregex_iterator();
         ++it) {
      const std::string name = it->str();
      CAPTURE(name);
      CHECK(known.count(name) == 1);
      ++used;
    }
  }
  CHECK(used > 20);
}

TEST_CASE("grafana: polls, failures, throttling, read delay, Stream, budget, webhooks, memory") {
  std::string all;
  for (const std::string& q : all_queries(load_dashboard())) {
    all += q + "\n";
  }
  for (const char* text : {
           "rate(readreceiptd_dingtalk_requests_total",
           "sum by (reason) (rate(readreceiptd_dingtalk_requests_failed_total",
           "reason=\"throttled\"",
           "sum by (via, le) (rate(readreceiptd_read_delay_seconds_bucket",
           "readreceiptd_stream_connected",
           "readreceiptd_stream_disconnects_total",
           "readreceiptd_dingtalk_month_calls",
           "readreceiptd_dingtalk_month_call_budget",
           "readreceiptd_dingtalk_quota_exhausted",
           "rate(readreceiptd_webhook_deliveries_total",
           "readreceiptd_webhook_pending_events",
           "readreceiptd_webhook_dead_letters",
           "process_resident_memory_bytes",
       }) {
    CAPTURE(text);
    CHECK(all.find(text) != std::string::npos);
  }
}
