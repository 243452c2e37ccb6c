// GET /metrics of the real daemon, as Prometheus would scrape it, after runs
// against the fake DingTalk and a webhook sink: the counters move as the run
// implies, every known label value is there from the start, the process
// metrics are there, and no secret is.
#include "integration/harness.hpp"
#include "readreceiptd/common/version.hpp"

#include <arpa/inet.h>
#include <csignal>
#include <ctime>
#include <httplib.h>
#include <netinet/in.h>
#include <sstream>
#include <sys/socket.h>
#include <unistd.h>

using namespace rrd::testing;

namespace {

using Labels = std::map<std::string, std::string>;

// One scrape, parsed from the Prometheus text format.
struct Scrape {
  std::string text;
  std::map<std::pair<std::string, Labels>, double> samples;

  bool has(const std::string& name, const Labels& labels = {}) const {
    return samples.count({name, labels}) != 0;
  }
  // The sample's value, or `fallback` when it is absent (no check).
  double value_or(const std::string& name, const Labels& labels, double fallback) const {
    const auto it = samples.find({name, labels});
    return it == samples.end() ? fallback : it->second;
  }
  // The sample's value; -1 (and a failed check) when it is absent.
  double get(const std::string& name, const Labels& labels = {}) const {
    const auto it = samples.find({name, labels});
    INFO("sample " << name);
    CHECK(it != samples.end());
    return it == samples.end() ? -1 : it->second;
  }
};

// Parses `name{k="v",...} value` lines (our label values hold no escapes).
Scrape parse(std::string text) {
  Scrape s;
  s.text = std::move(text);
  std::istringstream in(s.text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') {
      continue;
    }
    const auto brace = line.find('{');
    const auto space = line.rfind(' ');
    if (space == std::string::npos) {
      continue;
    }
    Labels labels;
    std::string name;
    if (brace != std::string::npos && brace < space) {
      name = line.substr(0, brace);
      const auto close = line.find('}', brace);
      std::string body = line.substr(brace + 1, close - brace - 1);
      std::size_t pos = 0;
      while (pos < body.size()) {
        const auto eq = body.find("=\"", pos);
        const auto end = body.find('"', eq + 2);
        labels[body.substr(pos, eq - pos)] = body.substr(eq + 2, end - eq - 2);
        pos = end + 2; // past '"' and ','
      }
    } else {
      name = line.substr(0, space);
    }
    s.samples[{name, labels}] = std::stod(line.substr(space + 1));
  }
  return s;
}

std::optional<Scrape> scrape(int port) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2);
  client.set_read_timeout(5);
  const auto res = client.Get("/metrics");
  if (!res || res->status != 200) {
    return std::nullopt;
  }
  return parse(res->body);
}

// Waits until a scrape answers and `cond` holds for it; returns the last scrape.
Scrape scrape_until(int port, const std::function<bool(const Scrape&)>& cond,
                    std::chrono::milliseconds timeout = k_wait) {
  std::optional<Scrape> last;
  wait_until(
      [&] {
        last = scrape(port);
        return last && cond(*last);
      },
      timeout);
  REQUIRE_MESSAGE(last.has_value(), "no answer on /metrics");
  return *last;
}

const std::vector<std::string> k_stop_reasons{"fully_read", "recalled", "expired",
                                              "max_age",    "invalid",  "removed"};
const std::vector<std::string> k_dingtalk_reasons{"throttled", "auth",         "server", "network",
                                                  "timeout",   "bad_response", "client"};
const std::vector<std::string> k_webhook_reasons{"timeout", "network", "status"};

// Every series the daemon exports, with every known label value.
void check_every_known_series(const Scrape& s, const std::vector<std::string>& webhooks) {
  CHECK(s.get("readreceiptd_build_info", {{"version", rrd::k_version}}) == 1);
  CHECK(s.has("readreceiptd_messages_tracked"));
  for (const auto& reason : k_stop_reasons) {
    CHECK(s.has("readreceiptd_messages_stopped_total", {{"reason", reason}}));
  }
  CHECK(s.has("readreceiptd_reads_detected_total", {{"via", "poll"}}));
  CHECK(s.has("readreceiptd_reads_detected_total", {{"via", "push"}}));
  for (const std::string api : {"query", "token"}) {
    CHECK(s.has("readreceiptd_dingtalk_requests_total", {{"api", api}}));
    for (const auto& reason : k_dingtalk_reasons) {
      CHECK(
          s.has("readreceiptd_dingtalk_requests_failed_total", {{"api", api}, {"reason", reason}}));
    }
    CHECK(s.has("readreceiptd_dingtalk_request_duration_seconds_count", {{"api", api}}));
    CHECK(s.has("readreceiptd_dingtalk_request_duration_seconds_bucket",
                {{"api", api}, {"le", "+Inf"}}));
  }
  CHECK(s.has("readreceiptd_poll_delay_seconds_count"));
  for (const auto& hook : webhooks) {
    CHECK(s.has("readreceiptd_webhook_deliveries_total", {{"webhook", hook}}));
    for (const auto& reason : k_webhook_reasons) {
      CHECK(s.has("readreceiptd_webhook_deliveries_failed_total",
                  {{"webhook", hook}, {"reason", reason}}));
    }
    CHECK(s.has("readreceiptd_webhook_delivery_duration_seconds_count", {{"webhook", hook}}));
    CHECK(s.has("readreceiptd_webhook_pending_events", {{"webhook", hook}}));
    CHECK(s.has("readreceiptd_webhook_dead_letters", {{"webhook", hook}}));
  }
  CHECK(s.has("readreceiptd_config_reloads_total"));
  CHECK(s.has("readreceiptd_config_reloads_failed_total"));
  CHECK(s.has("readreceiptd_last_successful_poll_timestamp_seconds"));
  for (const std::string name : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                                 "process_virtual_memory_bytes", "process_open_fds",
                                 "process_max_fds", "process_start_time_seconds"}) {
    CHECK(s.has(name));
  }
}

void check_no_secret(const Scrape& s) {
  CHECK(s.text.find("fake-app-secret") == std::string::npos);
  CHECK(s.text.find("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == std::string::npos);
  CHECK(s.text.find("whsec_") == std::string::npos);
}

} // namespace

TEST_CASE("metrics: a scrape after a run shows the reads, deliveries, stops and failures") {
  DaemonHarness h;
  const int port = free_port();
  h.metrics_listen = "127.0.0.1:" + std::to_string(port);
  h.watch("metrics-a", {"a1", "a2"});
  h.watch("metrics-b", {"b1", "b2", "b3"});
  h.watch("metrics-c", {"c1"});
  h.dingtalk.read("metrics-a", "a1");
  h.dingtalk.read("metrics-b", "b1");
  h.dingtalk.inject(Fault::server_error());
  h.start();

  // From the first scrape on, every known series is there.
  const Scrape first = scrape_until(port, [](const Scrape&) { return true; });
  check_every_known_series(first, {"ops"});
  CHECK(first.get("readreceiptd_messages_stopped_total", {{"reason", "recalled"}}) == 0);
  CHECK(first.get("readreceiptd_webhook_deliveries_failed_total",
                  {{"webhook", "ops"}, {"reason", "status"}}) == 0);
  check_no_secret(first);

  REQUIRE_MESSAGE(wait_until([&] { return h.events().size() >= 2; }), h.log());
  h.dingtalk.read("metrics-a", "a2");
  h.dingtalk.read("metrics-b", "b2");
  h.dingtalk.read("metrics-b", "b3");
  h.dingtalk.read("metrics-c", "c1");
  for (const std::string key : {"metrics-a", "metrics-b", "metrics-c"}) {
    REQUIRE_MESSAGE(h.wait_for_stop(key), h.log());
  }

  // Every message stopped, so polling is over; the last delivery is
  // counted once its answer is processed.
  const Scrape s = scrape_until(port, [&](const Scrape& x) {
    return x.value_or("readreceiptd_webhook_deliveries_total", {{"webhook", "ops"}}, -1) ==
               static_cast<double>(h.sink.accepted().size()) &&
           x.value_or("readreceiptd_webhook_pending_events", {{"webhook", "ops"}}, -1) == 0 &&
           x.value_or("readreceiptd_reads_detected_total", {{"via", "poll"}}, -1) ==
               static_cast<double>(h.dingtalk.reads_served().size());
  });
  INFO(s.text);
  check_every_known_series(s, {"ops"});
  CHECK(s.get("readreceiptd_webhook_deliveries_total", {{"webhook", "ops"}}) ==
        static_cast<double>(h.sink.accepted().size()));
  CHECK(s.get("readreceiptd_webhook_pending_events", {{"webhook", "ops"}}) == 0);
  CHECK(s.get("readreceiptd_webhook_dead_letters", {{"webhook", "ops"}}) == 0);
  CHECK(s.get("readreceiptd_webhook_delivery_duration_seconds_count", {{"webhook", "ops"}}) >=
        static_cast<double>(h.sink.accepted().size()));
  CHECK(s.get("readreceiptd_reads_detected_total", {{"via", "poll"}}) ==
        static_cast<double>(h.dingtalk.reads_served().size()));
  CHECK(h.dingtalk.reads_served().size() == 6);
  CHECK(s.get("readreceiptd_messages_stopped_total", {{"reason", "fully_read"}}) == 3);
  CHECK(s.get("readreceiptd_messages_tracked") == 0);
  CHECK(s.get("readreceiptd_dingtalk_requests_total", {{"api", "query"}}) >=
        static_cast<double>(h.dingtalk.query_calls()));
  CHECK(s.get("readreceiptd_dingtalk_requests_total", {{"api", "token"}}) >=
        static_cast<double>(h.dingtalk.token_calls()));
  CHECK(h.dingtalk.token_calls() >= 1);
  CHECK(s.get("readreceiptd_dingtalk_requests_failed_total",
              {{"api", "query"}, {"reason", "server"}}) >= 1);
  CHECK(s.get("readreceiptd_dingtalk_request_duration_seconds_count", {{"api", "query"}}) ==
        s.get("readreceiptd_dingtalk_requests_total", {{"api", "query"}}));
  CHECK(s.get("readreceiptd_poll_delay_seconds_count") >= 3);
  const double now = static_cast<double>(std::time(nullptr));
  CHECK(s.get("readreceiptd_last_successful_poll_timestamp_seconds") > now - 120);
  CHECK(s.get("readreceiptd_last_successful_poll_timestamp_seconds") <= now + 1);
  CHECK(s.get("process_start_time_seconds") > now - 120);
  CHECK(s.get("process_resident_memory_bytes") > 0);
  CHECK(s.get("process_open_fds") > 0);
  check_no_secret(s);
  h.stop();
}

TEST_CASE("metrics: reloads are counted, and a webhook added by a reload is exported at 0") {
  DaemonHarness h;
  const int port = free_port();
  h.metrics_listen = "127.0.0.1:" + std::to_string(port);
  h.watch("reload-key", {"r1", "r2"});
  h.start();
  scrape_until(port, [](const Scrape&) { return true; });

  // A valid new configuration with a second webhook.
  std::string yaml = read_file(h.config_path());
  const std::string hooks = "webhooks:\n";
  const auto at = yaml.find(hooks);
  REQUIRE(at != std::string::npos);
  yaml.insert(at + hooks.size(), "  - name: audit\n    url: " + h.sink.url() +
                                     "audit\n    secret: " + std::string(k_test_secret) + "\n");
  write_file(h.config_path(), yaml);
  h.daemon->signal(SIGHUP);
  Scrape s = scrape_until(port, [](const Scrape& x) {
    return x.value_or("readreceiptd_config_reloads_total", {}, -1) == 1;
  });
  CHECK(s.get("readreceiptd_config_reloads_failed_total") == 0);
  check_every_known_series(s, {"ops", "audit"});

  // An invalid one is rejected, counted, and the daemon goes on.
  write_file(h.config_path(), yaml + "bogus_section: 1\n");
  h.daemon->signal(SIGHUP);
  s = scrape_until(port, [](const Scrape& x) {
    return x.value_or("readreceiptd_config_reloads_total", {}, -1) == 2;
  });
  CHECK(s.get("readreceiptd_config_reloads_failed_total") == 1);
  CHECK(h.daemon->running());
  check_no_secret(s);
  h.stop();
}

TEST_CASE("metrics: a metrics address already in use stops the start with exit code 1") {
  TakenPort taken;
  DaemonHarness h;
  h.metrics_listen = "127.0.0.1:" + std::to_string(taken.port());
  h.watch("taken-key");
  h.start();
  REQUIRE(h.daemon->wait(std::chrono::seconds(10)) == 1);
  CHECK(h.log().find(h.metrics_listen) != std::string::npos);
}

TEST_CASE("metrics: a second daemon on the first one's metrics port exits 1 naming it") {
  DaemonHarness first;
  const int port = free_port();
  first.metrics_listen = "127.0.0.1:" + std::to_string(port);
  first.api_listen = "127.0.0.1:" + std::to_string(free_port());
  first.watch("first-key");
  first.start();
  REQUIRE_MESSAGE(first.wait_for_api(), first.log());
  scrape_until(port, [](const Scrape&) { return true; });

  // Its own state and API port, the same metrics port.
  DaemonHarness second;
  second.metrics_listen = first.metrics_listen;
  second.api_listen = "127.0.0.1:" + std::to_string(free_port());
  second.watch("second-key");
  second.start();
  REQUIRE(second.daemon->wait(std::chrono::seconds(10)) == 1);
  CHECK_MESSAGE(second.log().find("cannot listen on metrics.listen " + first.metrics_listen +
                                  ": Address already in use") != std::string::npos,
                second.log());
  // The first one still answers every scrape alone.
  for (int i = 0; i < 5; ++i) {
    const auto s = scrape(port);
    REQUIRE(s);
    CHECK(s->text.find("readreceiptd_messages_tracked 1") != std::string::npos);
  }
  first.stop();
}
