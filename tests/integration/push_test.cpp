// Push: the real daemon against the fake DingTalk speaking Stream mode.
// Every read arrives once, by push when push works, by a reconciling poll
// when a push was lost, across dropped connections and crashes.
#include "harness.hpp"

#include <algorithm>
#include <random>

using namespace rrd::testing;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

// Push on; polls reconcile so rarely that only pushes can report reads.
void push_only(DaemonHarness& h) {
  h.dingtalk_extra_yaml = "  stream: { enabled: true, fallback_after: 30s }\n";
  h.reconcile_yaml = "[ { every: 1h } ]";
}

FakeDingTalkOptions with_stream(FakeStreamOptions stream = {}) {
  FakeDingTalkOptions o;
  o.stream = stream;
  return o;
}

// Every (key, user) of the message.read events at the sink, with how it came
// and how often it was reported as new (by distinct events).
struct Reported {
  std::map<std::pair<std::string, std::string>, int> times;
  std::map<std::pair<std::string, std::string>, std::string> via;
};
Reported reported(const WebhookSink& sink) {
  Reported r;
  std::set<std::string> seen;
  for (const auto& d : sink.accepted()) {
    if (!seen.insert(d.webhook_id).second || d.json["type"] != "message.read") {
      continue; // a repeat of an event already counted
    }
    const std::string key = d.json["data"]["process_query_key"];
    for (const auto& n : d.json["data"]["newly_read"]) {
      const auto k = std::make_pair(key, n["user_id"].get<std::string>());
      ++r.times[k];
      r.via[k] = n["via"];
    }
  }
  return r;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) {
    return 0;
  }
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

} // namespace

TEST_CASE("push: every read arrives by push, within a second of the person reading") {
  DaemonHarness h(with_stream());
  push_only(h);
  constexpr int k_messages = 5;
  constexpr int k_readers = 8;
  for (int m = 0; m < k_messages; ++m) {
    std::vector<std::string> readers;
    for (int u = 0; u < k_readers; ++u) {
      readers.push_back("user" + std::to_string(u));
    }
    h.watch("push-" + std::to_string(m), readers);
  }
  h.start();
  REQUIRE_MESSAGE(wait_until([&] { return h.dingtalk.stream().stats().connections_open > 0; }),
                  h.log());
  // The first polls are made (they find nothing yet), then people read.
  REQUIRE_MESSAGE(wait_until([&] { return h.dingtalk.query_calls() >= k_messages; }), h.log());
  std::map<std::pair<std::string, std::string>, SteadyTime> read_at;
  std::mt19937 rng(7);
  for (int u = 0; u < k_readers; ++u) {
    for (int m = 0; m < k_messages; ++m) {
      const std::string key = "push-" + std::to_string(m);
      const std::string user = "user" + std::to_string(u);
      read_at[{key, user}] = SteadyClock::now();
      h.dingtalk.read(key, user);
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 20));
    }
  }
  REQUIRE_MESSAGE(wait_until([&] { return reported(h.sink).times.size() == read_at.size(); }),
                  h.log());
  for (int m = 0; m < k_messages; ++m) {
    REQUIRE(h.wait_for_stop("push-" + std::to_string(m)));
    CHECK(h.stopped_event("push-" + std::to_string(m)).value()["data"]["reason"] == "fully_read");
  }
  const Reported r = reported(h.sink);
  std::vector<double> delays_ms;
  for (const auto& [k, n] : r.times) {
    CHECK(n == 1);
    CHECK(r.via.at(k) == "push");
  }
  for (const auto& d : h.sink.accepted()) {
    if (d.json["type"] != "message.read") {
      continue;
    }
    for (const auto& n : d.json["data"]["newly_read"]) {
      const auto k = std::make_pair(d.json["data"]["process_query_key"].get<std::string>(),
                                    n["user_id"].get<std::string>());
      CHECK_FALSE(n["read_at"].is_null()); // operatTime
      delays_ms.push_back(
          std::chrono::duration<double, std::milli>(d.arrived - read_at.at(k)).count());
    }
  }
  const double p50 = percentile(delays_ms, 0.5);
  const double p99 = percentile(delays_ms, 0.99);
  MESSAGE("push, read to webhook event: median " << p50 << " ms, p99 " << p99 << " ms over "
                                                 << delays_ms.size() << " reads");
  CHECK(p99 < 1000);
  // Acknowledged, each once it was committed: nothing is redelivered.
  const auto stats = h.dingtalk.stream().stats();
  CHECK(stats.acknowledged >= static_cast<int>(read_at.size()));
  CHECK(stats.pings_answered_wrong == 0);
  check_sequences(h.sink);
  h.stop();
}

TEST_CASE("push: a Stream that drops every few seconds and loses a fifth of the pushes loses no "
          "read") {
  FakeStreamOptions flaky;
  flaky.drop_after = 3s;
  flaky.push_loss = 0.2;
  flaky.ack_timeout = 2s;
  flaky.ping_interval = 1s;
  flaky.disconnect_after = 5s;
  flaky.disconnect_grace = 2s;
  flaky.garbage = 0.1;
  DaemonHarness h(with_stream(flaky));
  h.dingtalk_extra_yaml = "  stream: { enabled: true, fallback_after: 2s }\n";
  // Lost pushes are found by reconciling polls.
  h.reconcile_yaml = "[ { every: 2s } ]";
  h.schedule_yaml = "[ { every: 1s } ]";
  constexpr int k_messages = 4;
  constexpr int k_readers = 15;
  std::vector<std::pair<std::string, std::string>> all;
  for (int m = 0; m < k_messages; ++m) {
    std::vector<std::string> readers;
    for (int u = 0; u < k_readers; ++u) {
      readers.push_back("u" + std::to_string(u));
      all.emplace_back("flaky-" + std::to_string(m), readers.back());
    }
    h.watch("flaky-" + std::to_string(m), readers);
  }
  h.start();
  std::mt19937 rng(11);
  std::shuffle(all.begin(), all.end(), rng);
  for (const auto& [key, user] : all) {
    h.dingtalk.read(key, user);
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 150));
  }
  for (int m = 0; m < k_messages; ++m) {
    REQUIRE_MESSAGE(h.wait_for_stop("flaky-" + std::to_string(m), 60s), h.log());
  }
  const Reported r = reported(h.sink);
  CHECK(r.times.size() == all.size());
  int by_push = 0;
  for (const auto& entry : r.times) {
    const auto& k = entry.first;
    CAPTURE(k.first);
    CAPTURE(k.second);
    CHECK(entry.second == 1); // exactly once per reader
    by_push += r.via.at(k) == "push" ? 1 : 0;
  }
  const auto stats = h.dingtalk.stream().stats();
  MESSAGE(by_push << " of " << all.size() << " reads by push; " << stats.connections_opened
                  << " connections, " << stats.drops << " drops, " << stats.lost()
                  << " pushes lost, " << stats.garbage_sent << " garbage frames");
  CHECK(by_push > 0);
  CHECK(by_push < static_cast<int>(all.size())); // some only a poll could find
  CHECK(stats.drops > 0);
  CHECK(stats.connections_opened >= 2);
  check_sequences(h.sink);
  h.stop();
}

TEST_CASE("push: a crash between a push and its acknowledgement loses nothing and repeats no "
          "read") {
  FakeStreamOptions o;
  o.ack_timeout = 1s;
  DaemonHarness h(with_stream(o));
  push_only(h);
  constexpr int k_rounds = 6;
  std::vector<std::string> readers;
  for (int u = 0; u < k_rounds; ++u) {
    readers.push_back("r" + std::to_string(u));
  }
  h.watch("crash", readers);
  std::mt19937 rng(5);
  for (int round = 0; round < k_rounds; ++round) {
    h.start();
    REQUIRE_MESSAGE(wait_until([&] { return h.dingtalk.stream().stats().connections_open > 0; }),
                    h.log());
    h.dingtalk.read("crash", readers[static_cast<std::size_t>(round)]);
    // Somewhere between the push arriving, its commit and its acknowledgement.
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    h.kill();
  }
  h.start();
  REQUIRE_MESSAGE(h.wait_for_stop("crash", 60s), h.log());
  const Reported r = reported(h.sink);
  CHECK(r.times.size() == readers.size());
  for (const auto& entry : r.times) {
    CAPTURE(entry.first.second);
    CHECK(entry.second == 1);
  }
  check_sequences(h.sink);
  h.stop();
}

TEST_CASE("push: the app secret and the Stream's tickets never reach the logs, even at trace "
          "level") {
  DaemonHarness h(with_stream());
  push_only(h);
  h.log_level = "trace";
  h.api_listen = "127.0.0.1:" + std::to_string(free_port());
  h.metrics_listen = "127.0.0.1:" + std::to_string(free_port());
  h.watch("secret-push", {"a", "b"});
  h.start();
  REQUIRE_MESSAGE(wait_until([&] { return h.dingtalk.stream().stats().connections_open > 0; }),
                  h.log());
  h.dingtalk.read("secret-push", "a");
  REQUIRE_MESSAGE(wait_until([&] { return !h.events_of("secret-push").empty(); }), h.log());
  h.dingtalk.stream().drop_connections(StreamDrop::reset); // a new ticket
  REQUIRE_MESSAGE(wait_until([&] { return h.dingtalk.gateway_calls() >= 2; }), h.log());
  REQUIRE(wait_until([&] { return h.dingtalk.stream().stats().connections_open > 0; }));
  std::vector<std::string> answers;
  answers.push_back(h.api("GET", "/v1/messages").body);
  answers.push_back(h.api("GET", "/v1/messages/secret-push").body);
  httplib::Client metrics("http://" + h.metrics_listen);
  const auto scraped = metrics.Get("/metrics");
  REQUIRE(scraped);
  answers.push_back(scraped->body);
  h.stop();
  std::vector<std::string> secrets{"fake-app-secret"};
  for (const auto& g : h.dingtalk.gateway_requests()) {
    if (!g.ticket.empty()) {
      secrets.push_back(g.ticket);
    }
  }
  REQUIRE(secrets.size() >= 3);
  const std::string log = h.log();
  CHECK(log.find("Stream: connected") != std::string::npos);
  for (const auto& secret : secrets) {
    CAPTURE(secret);
    CHECK(log.find(secret) == std::string::npos);
    for (const auto& a : answers) {
      CHECK(a.find(secret) == std::string::npos);
    }
  }
}
