// config/prometheus-alerts.yaml: a Prometheus rule file whose rules cover the
// conditions operators page on, and whose expressions use only the metrics
// the daemon exports (the README's table). (promtool, when installed, checks
// the PromQL itself and runs the rules' unit tests: see tests/deploy.cmake.)
#include <algorithm>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <set>
#include <string>
#include <vector>
#include <yaml-cpp/yaml.h>

namespace {

namespace fs = std::filesystem;

fs::path source_dir() {
  return fs::path(__FILE__).parent_path().parent_path();
}

YAML::Node load_alerts() {
  return YAML::LoadFile((source_dir() / "config" / "prometheus-alerts.yaml").string());
}

// The metric names the daemon exports, with the series a histogram exposes.
std::set<std::string> spec_metrics() {
  std::set<std::string> names = {
      "readreceiptd_build_info",
      "readreceiptd_messages_tracked",
      "readreceiptd_messages_stopped_total",
      "readreceiptd_reads_detected_total",
      "readreceiptd_dingtalk_requests_total",
      "readreceiptd_dingtalk_requests_failed_total",
      "readreceiptd_webhook_deliveries_total",
      "readreceiptd_webhook_deliveries_failed_total",
      "readreceiptd_webhook_pending_events",
      "readreceiptd_webhook_dead_letters",
      "readreceiptd_config_reloads_total",
      "readreceiptd_config_reloads_failed_total",
      "readreceiptd_config_last_reload_successful",
      "readreceiptd_config_last_reload_success_timestamp_seconds",
      "readreceiptd_webhook_disabled",
      "readreceiptd_webhook_oldest_pending_age_seconds",
      "readreceiptd_last_successful_poll_timestamp_seconds",
  };
  for (const char* histogram :
       {"readreceiptd_dingtalk_request_duration_seconds", "readreceiptd_poll_delay_seconds",
        "readreceiptd_webhook_delivery_duration_seconds"}) {
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      names.insert(std::string(histogram) + suffix);
    }
  }
  return names;
}

struct Rule {
  std::string alert;
  std::string expr;
};

std::vector<Rule> all_rules(const YAML::Node& file) {
  std::vector<Rule> rules;
  for (const auto& group : file["groups"]) {
    for (const auto& rule : group["rules"]) {
      rules.push_back({rule["alert"].as<std::string>(""), rule["expr"].as<std::string>("")});
    }
  }
  return rules;
}

bool any_expr_contains(const std::vector<Rule>& rules, const std::string& text) {
  return std::any_of(rules.begin(), rules.end(),
                     [&](const Rule& r) { return r.expr.find(text) != std::string::npos; });
}

} // namespace

TEST_CASE("alert rules: the file has the Prometheus rule-file shape") {
  const YAML::Node file = load_alerts();
  REQUIRE(file.IsMap());
  CHECK(file.size() == 1); // only `groups`
  REQUIRE(file["groups"].IsSequence());
  REQUIRE(file["groups"].size() >= 1);
  const std::set<std::string> rule_keys = {"alert", "expr", "for", "labels", "annotations"};
  const std::set<std::string> severities = {"critical", "warning", "info"};
  const std::regex duration(R"(^([0-9]+(ms|s|m|h|d|w|y))+$)");
  const std::regex alert_name(R"(^[A-Za-z_][A-Za-z0-9_]*$)");
  std::set<std::string> names;
  for (const auto& group : file["groups"]) {
    REQUIRE(group.IsMap());
    CHECK_FALSE(group["name"].as<std::string>("").empty());
    REQUIRE(group["rules"].IsSequence());
    for (const auto& rule : group["rules"]) {
      REQUIRE(rule.IsMap());
      const std::string alert = rule["alert"].as<std::string>("");
      CAPTURE(alert);
      CHECK(std::regex_match(alert, alert_name));
      CHECK(names.insert(alert).second); // unique
      for (const auto& kv : rule) {
        CHECK(rule_keys.count(kv.first.as<std::string>()) == 1);
      }
      CHECK_FALSE(rule["expr"].as<std::string>("").empty());
      if (rule["for"]) {
        CHECK(std::regex_match(rule["for"].as<std::string>(), duration));
      }
      CHECK(severities.count(rule["labels"]["severity"].as<std::string>("")) == 1);
      CHECK_FALSE(rule["annotations"]["summary"].as<std::string>("").empty());
      CHECK_FALSE(rule["annotations"]["description"].as<std::string>("").empty());
    }
  }
}

TEST_CASE("alert rules: every readreceiptd metric they use is one the daemon exports") {
  const std::set<std::string> known = spec_metrics();
  const std::regex metric(R"(readreceiptd_[a-z_]+)");
  for (const Rule& rule : all_rules(load_alerts())) {
    CAPTURE(rule.alert);
    for (auto it = std::sregex_iterator(rule.expr.begin(), rule.expr.end(), metric);
         it != std::sregex_iterator(); ++it) {
      const std::string name = it->str();
      CAPTURE(name);
      CHECK(known.count(name) == 1);
    }
  }
}

TEST_CASE("alert rules: down, no poll, throttling, auth, dead letters, backlog, failing "
          "deliveries, disabled webhooks, waiting events and failed reloads are covered") {
  const std::vector<Rule> rules = all_rules(load_alerts());
  for (const char* text : {
           R"(up{job="readreceiptd"} == 0)",
           "time() - readreceiptd_last_successful_poll_timestamp_seconds > 900",
           R"(readreceiptd_dingtalk_requests_failed_total{reason="throttled"})",
           R"(readreceiptd_dingtalk_requests_failed_total{reason="auth"})",
           "readreceiptd_webhook_dead_letters > 0",
           "readreceiptd_webhook_pending_events",
           "readreceiptd_webhook_deliveries_failed_total",
           // While the rejected file stands, not for a while after the failure.
           "readreceiptd_config_last_reload_successful == 0",
           "readreceiptd_webhook_disabled == 1",
           "readreceiptd_webhook_oldest_pending_age_seconds > 3600",
       }) {
    CAPTURE(text);
    CHECK(any_expr_contains(rules, text));
  }
}

TEST_CASE("alert rules: the file points only to what the repository holds") {
  // The repository has no SPEC.md: the rules and their comments must not
  // send an operator looking for one.
  std::ifstream in((source_dir() / "config" / "prometheus-alerts.yaml").string());
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE_FALSE(text.empty());
  CHECK(text.find("SPEC") == std::string::npos);
  CHECK(fs::exists(source_dir() / "tests" / "deploy" / "prometheus-alerts.test.yaml"));
}
