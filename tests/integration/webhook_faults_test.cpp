// Consumers that misbehave: down for a while, answering 500, slower than the
// timeout, 429 with Retry-After, 410 Gone. One daemon delivers the same
// events to a healthy webhook and to one webhook per misbehaviour, each with
// its own sink; every one of them gets every event once it recovers, with
// the same webhook-id on every repeat and in sequence order per message.
#include "integration/harness.hpp"

#include <csignal>

using namespace rrd::testing;
using namespace std::chrono_literals;

namespace {

constexpr int k_messages = 5;
constexpr auto k_deadline = 60s; // covers the 5 s (+20%) first retry with room to spare

std::string key_of(int i) {
  return "hook+" + std::to_string(i) + "/Kna29=";
}

// The attempts of each event id at `sink`, in order of arrival.
std::map<std::string, std::vector<Delivery>> attempts_by_id(const WebhookSink& sink) {
  std::map<std::string, std::vector<Delivery>> out;
  for (const auto& d : sink.deliveries()) {
    out[d.webhook_id].push_back(d);
  }
  return out;
}

std::set<std::string> accepted_ids(const WebhookSink& sink) {
  std::set<std::string> out;
  for (const auto& d : sink.accepted()) {
    out.insert(d.webhook_id);
  }
  return out;
}

double seconds_between(const Delivery& a, const Delivery& b) {
  return std::chrono::duration<double>(b.arrived - a.arrived).count();
}

} // namespace

TEST_CASE("webhook faults: down, 500, slow, 429 and 410 consumers all get every event, in order") {
  DaemonHarness h; // `ops`: a healthy consumer, the reference
  WebhookSink down(k_test_secret);
  WebhookSink flaky(k_test_secret);
  WebhookSink slow(k_test_secret);
  WebhookSink throttled(k_test_secret);
  WebhookSink gone(k_test_secret);
  h.more_webhooks_yaml = {
      DaemonHarness::webhook_item("down", down.url()),
      DaemonHarness::webhook_item("flaky", flaky.url()),
      DaemonHarness::webhook_item("slow", slow.url(), "1s"),
      DaemonHarness::webhook_item("throttled", throttled.url()),
      DaemonHarness::webhook_item("gone", gone.url()),
  };

  // Every message has a first reader already, so that the first poll makes
  // k_messages events at once (the scripted answers below go to different
  // messages' first events); more readers come over the next seconds.
  const SteadyTime t0 = SteadyClock::now();
  for (int i = 0; i < k_messages; ++i) {
    h.watch(key_of(i), {"a", "b", "c"});
    h.dingtalk.read(key_of(i), "a");
    h.dingtalk.schedule_read(key_of(i), "b", t0 + std::chrono::milliseconds(1500 + 300 * i));
    h.dingtalk.schedule_read(key_of(i), "c", t0 + std::chrono::milliseconds(3000 + 300 * i));
  }
  down.stop();
  flaky.script(SinkAnswer{500, 0ms, {}}, 4);
  slow.script(SinkAnswer{200, 3000ms, {}}, 2); // past the webhook's 1 s timeout
  throttled.script(SinkAnswer{429, 0ms, {{"Retry-After", "1"}}}, 3);
  gone.script(SinkAnswer{410, 0ms, {}}, 1000);
  h.start();

  // Down: the consumer comes back after the first attempts failed (before
  // their retry, 5 s later, so that no second retry, 30 s later, is needed).
  REQUIRE_MESSAGE(
      wait_until([&] { return h.log_count("webhook delivery failed webhook=down") > 0; },
                 k_deadline),
      h.log());
  const std::string log = h.log();
  CHECK((log.find("reason=\"could not connect\"") != std::string::npos ||
         log.find("reason=\"connection refused\"") != std::string::npos));
  down.start();

  // The healthy consumer: every message read by all and stopped. (Each has
  // 4 events, read a, b, c and stopped, unless a slow start merged reads.)
  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        for (int i = 0; i < k_messages; ++i) {
                          if (!h.stopped_event(key_of(i))) {
                            return false;
                          }
                        }
                        return true;
                      },
                      k_deadline),
                  h.log());
  const auto ids = accepted_ids(h.sink);
  const std::size_t k_events = ids.size();
  CHECK(k_events >= 3 * k_messages);
  const auto all_events = [&](const WebhookSink& sink) {
    return accepted_ids(sink).size() == k_events;
  };

  for (auto* sink : {&down, &flaky, &slow, &throttled}) {
    REQUIRE_MESSAGE(wait_until([&] { return all_events(*sink); }, k_deadline), h.log());
    CHECK(accepted_ids(*sink) == ids);
    check_sequences(*sink);
    check_history(*sink);
  }

  // 500: retried after the first step of the schedule, 5 s give or take 20%.
  int failed_500 = 0;
  for (const auto& [id, attempts] : attempts_by_id(flaky)) {
    for (std::size_t i = 0; i + 1 < attempts.size(); ++i) {
      if (attempts[i].answered == 500) {
        ++failed_500;
        CHECK(seconds_between(attempts[i], attempts[i + 1]) >= 3.9);
      }
    }
  }
  CHECK(failed_500 == 4);
  // Slow past the timeout: the same event again, later.
  CHECK(h.log().find("webhook delivery failed webhook=slow") != std::string::npos);
  CHECK(h.log().find("reason=timeout") != std::string::npos);
  // 429 with Retry-After: 1: retried after about a second, not after 5 s.
  int throttled_429 = 0;
  for (const auto& [id, attempts] : attempts_by_id(throttled)) {
    for (std::size_t i = 0; i + 1 < attempts.size(); ++i) {
      if (attempts[i].answered == 429) {
        ++throttled_429;
        const double gap = seconds_between(attempts[i], attempts[i + 1]);
        CHECK(gap >= 0.9);
        CHECK(gap < 3.5);
      }
    }
  }
  CHECK(throttled_429 == 3);

  // 410: the webhook is disabled; nothing more is sent to it, not even after
  // a restart, although its events are pending (a retry would have come
  // after 5 s by now).
  REQUIRE(h.log_count("webhook disabled by HTTP 410 Gone") == 1);
  const std::size_t gone_attempts = gone.delivery_count();
  CHECK(gone_attempts >= 1);
  CHECK(gone_attempts <= k_messages); // the first events, sent at the same time
  CHECK(accepted_ids(gone).empty());
  h.stop();
  h.start();
  CHECK_FALSE(wait_until([&] { return gone.delivery_count() > gone_attempts; }, 3s));
  CHECK(query_int(h.state_path(), "SELECT count(*) FROM disabled_webhooks WHERE name = 'gone'") ==
        1);

  // A changed configuration enables it again: every event arrives, in order.
  gone.clear_script();
  h.more_webhooks_yaml.back() =
      DaemonHarness::webhook_item("gone", gone.url()) + "    headers: { X-Endpoint: v2 }\n";
  h.reload();
  REQUIRE_MESSAGE(wait_until([&] { return all_events(gone); }, k_deadline), h.log());
  CHECK(accepted_ids(gone) == ids);
  check_sequences(gone);
  check_history(gone);
  for (const auto& d : gone.accepted()) {
    CHECK(d.headers.count("x-endpoint") == 1);
  }
  CHECK(query_int(h.state_path(), "SELECT count(*) FROM disabled_webhooks") == 0);

  // The healthy consumer saw each event exactly once, in order, untouched by
  // the others' trouble.
  CHECK(h.sink.accepted().size() == k_events);
  check_sequences(h.sink);
  check_history(h.sink);
  h.stop();
  // Nothing is left pending or dead.
  CHECK(query_int(h.state_path(), "SELECT count(*) FROM deliveries WHERE state <> 'delivered'") ==
        0);
}

// Dead letters (after the 10th failed attempt, hours later) and their replay
// through the HTTP API are covered where the API lives; the schedule itself
// is unit-tested in webhook_test.cpp.
