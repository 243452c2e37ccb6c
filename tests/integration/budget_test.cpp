// The monthly call budget and DingTalk's own monthly quota, with the real
// daemon: never more read-status calls than the budget, first polls still
// made, and polls paused until the month turns in Beijing time, which the
// daemon is made to reach by libfaketime (Debian's faketime) moving its
// wall clock to just before midnight, UTC+8.
#include "harness.hpp"

#include <filesystem>

using namespace rrd::testing;
using namespace std::chrono_literals;

namespace {

constexpr const char* k_libfaketime = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

// The daemon's wall clock starts at `utc` ("2026-12-31 15:59:50") and runs
// on; its monotonic clock is left alone.
void fake_wall_clock(DaemonHarness& h, const std::string& utc) {
  h.env["LD_PRELOAD"] = k_libfaketime;
  h.env["FAKETIME"] = "@" + utc;
  h.env["TZ"] = "UTC";
  h.env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1";
  h.env["FAKETIME_NO_CACHE"] = "1";
}

} // namespace

TEST_CASE("budget: a monthly budget of N calls is never exceeded, and new messages still get their "
          "first poll") {
  DaemonHarness h;
  constexpr int k_budget = 40;
  h.dingtalk_extra_yaml = "  monthly_call_budget: " + std::to_string(k_budget) + "\n";
  h.api_listen = "127.0.0.1:" + std::to_string(free_port());
  for (int m = 0; m < 6; ++m) {
    h.watch("budget-" + std::to_string(m), {"nobody"});
  }
  h.start();
  // Without a budget, six messages every 200 ms would make 30 calls a second.
  std::this_thread::sleep_for(4s);
  REQUIRE(h.wait_for_api());
  const auto late = h.api("POST", "/v1/messages", R"({"process_query_key": "late"})");
  REQUIRE(late.status == 201);
  REQUIRE_MESSAGE(wait_until([&] { return h.dingtalk.query_calls("late") > 0; }), h.log());
  std::this_thread::sleep_for(3s);
  MESSAGE(h.dingtalk.query_calls() << " read-status calls under a budget of " << k_budget);
  CHECK(h.dingtalk.query_calls() <= k_budget);
  CHECK(h.dingtalk.query_calls() >= 7); // every message's first poll at least
  const auto month = query_int(h.state_path(), "SELECT calls FROM call_months");
  REQUIRE(month);
  CHECK(*month >= h.dingtalk.query_calls()); // counted before they were made
  CHECK(*month <= k_budget);
  h.stop();
}

TEST_CASE("budget: DingTalk's monthly quota spent pauses polls until the month turns, losing "
          "nothing") {
  if (!std::filesystem::exists(k_libfaketime)) {
    // scripts/setup.sh installs it with the test tools.
    FAIL("libfaketime is missing (" << k_libfaketime << "): apt-get install faketime");
  }
  DaemonHarness h;
  // Ten seconds before 1 January, 00:00 in Beijing.
  fake_wall_clock(h, "2026-12-31 15:59:50");
  h.metrics_listen = "127.0.0.1:" + std::to_string(free_port());
  h.watch("quota", {"a"});
  h.dingtalk.set_fault_rate(Fault::quota_exceeded(), 1.0);
  h.start();
  REQUIRE_MESSAGE(wait_until([&] { return h.dingtalk.query_calls() >= 1; }), h.log());
  REQUIRE_MESSAGE(wait_until([&] { return h.log_count("monthly API call quota is spent") == 1; }),
                  h.log());
  httplib::Client metrics("http://" + h.metrics_listen);
  const auto exhausted = metrics.Get("/metrics");
  REQUIRE(exhausted);
  CHECK(exhausted->body.find("readreceiptd_dingtalk_quota_exhausted 1") != std::string::npos);
  // Paused: the schedule (every 200 ms) would have made dozens of calls.
  std::this_thread::sleep_for(3s);
  CHECK(h.dingtalk.query_calls() == 1);
  CHECK(h.log_count("monthly API call quota is spent") == 1); // said once
  // DingTalk's quota is back with the new month; so are the polls.
  h.dingtalk.set_fault_rate(Fault::quota_exceeded(), 0.0);
  h.dingtalk.read("quota", "a");
  // The sink refuses the events as stale (its clock is the real one, weeks
  // before the daemon's): the first is checked as it arrived, signature
  // included, freshness excepted (the next waits behind it, in order), and
  // the stop in the state database.
  const auto arrived = [&](const std::string& type) {
    for (const auto& d : h.sink.deliveries()) {
      if (d.json.is_object() && d.json["type"] == type &&
          WebhookSink::verify(k_test_secret, d.webhook_id, d.timestamp, d.body, d.signature)) {
        return std::optional<nlohmann::json>(d.json);
      }
    }
    return std::optional<nlohmann::json>();
  };
  REQUIRE_MESSAGE(wait_until([&] { return arrived("message.read").has_value(); }, 40s), h.log());
  CHECK(arrived("message.read").value()["data"]["newly_read_user_ids"] == nlohmann::json{"a"});
  REQUIRE(wait_until([&] {
    return query_int(h.state_path(), "SELECT stopped FROM messages WHERE process_query_key = "
                                     "'quota'") == std::optional<std::int64_t>(1);
  }));
  const auto resumed = metrics.Get("/metrics");
  REQUIRE(resumed);
  CHECK(resumed->body.find("readreceiptd_dingtalk_quota_exhausted 0") != std::string::npos);
  CHECK(query_int(h.state_path(),
                  "SELECT quota_exhausted FROM call_months WHERE month = '2026-12'") ==
        std::optional<std::int64_t>(1));
  CHECK(query_int(h.state_path(),
                  "SELECT quota_exhausted FROM call_months WHERE month = '2027-01'") ==
        std::optional<std::int64_t>(0));
  h.stop();
}
