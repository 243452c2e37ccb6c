// GET /v1/updates, GET /v1/status and GET /v1/messages/{key}/events of the
// real daemon, with the fake DingTalk and the webhook sink, as the status
// page uses them: a read shows up as a message event once it is committed;
// a page that stops reading is dropped while polls and the other pages
// carry on; the cap on streams; the token; and a stop with streams open.
#include "integration/harness.hpp"
#include "integration/sse_client.hpp"
#include "readreceiptd/common/version.hpp"

#include <algorithm>
#include <atomic>
#include <httplib.h>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

using namespace rrd::testing;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// Percent-encodes every byte but the unreserved ones.
std::string encode(const std::string& s) {
  static const char* k_hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += '%';
      out += k_hex[c >> 4];
      out += k_hex[c & 15];
    }
  }
  return out;
}

std::string local_listen() {
  return "127.0.0.1:" + std::to_string(free_port());
}

bool is_message(const SseEvent& e, const std::string& key) {
  return e.type == "message" && e.json().value("process_query_key", "") == key;
}

// The sum of a metric's samples (every label set) in one scrape; -1 when
// the scrape fails.
double metric_sum(const std::string& listen, const std::string& name) {
  httplib::Client client("http://" + listen);
  client.set_read_timeout(10);
  const auto r = client.Get("/metrics");
  if (!r || r->status != 200) {
    return -1;
  }
  double sum = 0;
  const std::regex line("^" + name + "(\\{[^}]*\\})? ([0-9.e+-]+)$");
  std::istringstream in(r->body);
  std::string l;
  while (std::getline(in, l)) {
    std::smatch m;
    if (std::regex_match(l, m, line)) {
      sum += std::stod(m[2]);
    }
  }
  return sum;
}

// A `messages:` item as JSON with `readers` expected readers (about 17
// bytes each in the body, twice that in the message's JSON).
std::string big_message(const std::string& key, int readers) {
  json ids = json::array();
  for (int i = 0; i < readers; ++i) {
    ids.push_back("reader-" + std::to_string(1'000'000 + i));
  }
  return json{{"process_query_key", key}, {"expected_readers", ids}}.dump();
}

} // namespace

TEST_CASE("api: updates - a read shows as a message event once committed, with the "
          "status, the message's events and their delivery") {
  DaemonHarness h;
  h.api_listen = local_listen();
  const std::string key = "Kna+/1=";
  h.watch(key, {"u1", "u2"});
  h.start();
  REQUIRE_MESSAGE(h.wait_for_api(), h.log());

  SseClient c(h.api_listen);
  REQUIRE(c.status() == 200);
  CHECK(c.header("content-type").rfind("text/event-stream", 0) == 0);
  CHECK(c.header("cache-control") == "no-cache");
  CHECK(c.header("transfer-encoding") == "chunked");
  // It opens with the status (the one last published).
  const auto opening = c.next(10s);
  REQUIRE(opening);
  CHECK(opening->type == "status");
  const json first_status = opening->json();
  CHECK(first_status["version"] == rrd::k_version);
  CHECK(first_status["messages"]["tracking"] == 1);
  CHECK(first_status["stream"]["enabled"] == false);
  CHECK(first_status["webhooks"][0]["name"] == "ops");

  // A person reads it: the poll's commit is pushed to the page.
  h.dingtalk.read(key, "u1");
  const auto read = c.wait_for(
      [&](const SseEvent& e) { return is_message(e, key) && e.json()["read_count"] == 1; });
  REQUIRE(read);
  json event = read->json();
  CHECK(event["state"] == "tracking");
  CHECK(event["readers"][0]["user_id"] == "u1");
  CHECK(event["readers"][0]["via"] == "poll");
  CHECK(event["unread_user_ids"] == json{"u2"});
  // The same rendering as GET /v1/messages/{key} (whose poll times may
  // have moved since, by polls that found nothing new).
  json got = h.api("GET", "/v1/messages/" + encode(key)).json();
  for (auto* j : {&event, &got}) {
    j->erase("last_poll");
    j->erase("next_poll");
  }
  CHECK(event == got);

  // Its event and the event's delivery to the webhook.
  const std::string events_path = "/v1/messages/" + encode(key) + "/events";
  REQUIRE(wait_until([&] {
    const json e = h.api("GET", events_path).json();
    return e["events"].size() == 1 && e["events"][0]["deliveries"].size() == 1 &&
           e["events"][0]["deliveries"][0]["state"] == "delivered";
  }));
  const json events = h.api("GET", events_path).json();
  CHECK(events["process_query_key"] == key);
  const json& e0 = events["events"][0];
  CHECK(e0["type"] == "message.read");
  CHECK(e0["sequence"] == 1);
  REQUIRE_FALSE(h.sink.accepted().empty());
  CHECK(e0["event_id"] == h.sink.accepted()[0].webhook_id);
  CHECK(e0["deliveries"][0]["webhook"] == "ops");
  CHECK(e0["deliveries"][0]["attempts"] == 0);
  CHECK(e0["deliveries"][0]["next_attempt"].is_null());
  CHECK(h.api("GET", "/v1/messages/nope/events").status == 404);

  // The second read completes it: it stops, fully read, and the status
  // follows (at most a second later).
  h.dingtalk.read(key, "u2");
  const auto stopped = c.wait_for(
      [&](const SseEvent& e) { return is_message(e, key) && e.json()["state"] == "stopped"; });
  REQUIRE(stopped);
  CHECK(stopped->json()["stop_reason"] == "fully_read");
  const auto status = c.wait_for([&](const SseEvent& e) {
    return e.type == "status" && e.json()["messages"]["stopped"] == 1;
  });
  REQUIRE(status);
  CHECK(status->json()["messages"]["tracking"] == 0);
  const json now = h.api("GET", "/v1/status").json();
  CHECK(now["messages"] == json{{"tracking", 0}, {"stopped", 1}});
  CHECK(now["dingtalk"]["read_status_calls"].get<int>() > 0);
  CHECK(now["dingtalk"]["budget"].is_null());
  CHECK(now["dingtalk"]["throttling"]["configured_rate"] == 50.0);
  CHECK(now["ready"] == true);

  // Added and removed through the API: an event each.
  h.dingtalk.add_message("api-1", {});
  REQUIRE(h.api("POST", "/v1/messages", R"({"process_query_key": "api-1"})").status == 201);
  const auto added = c.wait_for([&](const SseEvent& e) { return is_message(e, "api-1"); });
  REQUIRE(added);
  CHECK(added->json()["source"] == "api");
  CHECK(added->json()["state"] == "tracking");
  REQUIRE(h.api("DELETE", "/v1/messages/api-1").status == 204);
  const auto removed = c.wait_for(
      [&](const SseEvent& e) { return is_message(e, "api-1") && e.json()["state"] == "stopped"; });
  REQUIRE(removed);
  CHECK(removed->json()["stop_reason"] == "removed");
  h.stop();
}

TEST_CASE("api: updates - a page that stops reading is dropped - polls and the other "
          "pages carry on") {
  DaemonHarness h;
  h.api_listen = local_listen();
  h.metrics_listen = local_listen();
  h.log_level = "info";      // hundreds of large API calls
  h.watch("polled", {"u1"}); // polled every 200 ms throughout
  h.start();
  REQUIRE_MESSAGE(h.wait_for_api(), h.log());

  // A page that reads its first event, then nothing (a small TCP window,
  // so that the daemon's side fills soon).
  SseClient stuck(h.api_listen, "", 4096);
  REQUIRE(stuck.status() == 200);
  REQUIRE(stuck.next(10s));
  // A page that reads everything, on a thread of its own.
  auto good = std::make_unique<SseClient>(h.api_listen);
  REQUIRE(good->status() == 200);
  std::mutex seen_mutex;
  std::set<std::string> seen; // guarded by seen_mutex
  std::atomic<bool> done{false};
  std::thread reader([&] {
    while (!done && !good->ended()) {
      if (auto e = good->next(200ms); e && e->type == "message") {
        const std::lock_guard lock(seen_mutex);
        seen.insert(e->json().value("process_query_key", ""));
      }
    }
  });
  // Joined however the test ends (a failed REQUIRE included).
  struct Joiner {
    std::atomic<bool>& done;
    std::thread& thread;
    ~Joiner() {
      done = true;
      thread.join();
    }
  } joiner{done, reader};
  const auto seen_all = [&](const std::vector<std::string>& keys) {
    const std::lock_guard lock(seen_mutex);
    return std::all_of(keys.begin(), keys.end(),
                       [&](const std::string& k) { return seen.count(k) != 0; });
  };

  // Large messages (about 90 KB of JSON each) added one after the other
  // until the stuck page is dropped: its queue fills, or (sooner, at this
  // pace) a write to it blocks for the write timeout. Every addition is
  // answered by the loop meanwhile: it never waits for the stuck page.
  const std::string dropped_total = "readreceiptd_api_update_subscribers_dropped_total";
  std::vector<std::string> keys;
  while (metric_sum(h.metrics_listen, dropped_total) < 1 && keys.size() < 1'000) {
    const std::string key = "big-" + std::to_string(keys.size());
    h.dingtalk.add_message(key, {});
    const auto r = h.api("POST", "/v1/messages", big_message(key, 2'500));
    REQUIRE(r.status == 201);
    keys.push_back(key);
  }
  INFO(keys.size() << " messages added");
  REQUIRE(metric_sum(h.metrics_listen, dropped_total) == 1);
  CHECK(wait_until(
      [&] { return metric_sum(h.metrics_listen, "readreceiptd_api_update_subscribers") == 1; }));

  // Polls carry on, and the other page got every message.
  const int polls = h.dingtalk.query_calls("polled");
  CHECK(wait_until([&] { return h.dingtalk.query_calls("polled") >= polls + 3; }));
  CHECK(wait_until([&] { return seen_all(keys); }, 60s));
  CHECK(h.api("GET", "/healthz").status == 200);

  // The stuck page, reading again, finds its stream ended: after its last
  // event, "too slow", when that could still be written.
  REQUIRE(stuck.wait_for_end(60s));
  const auto rest = stuck.drain();
  if (!rest.empty() && rest.back().type == "end") {
    CHECK(rest.back().json()["reason"] == "too slow");
  }
  // And it may come back: a new stream is accepted.
  SseClient again(h.api_listen);
  CHECK(again.status() == 200);

  h.stop();
}

TEST_CASE("api: updates - at most 128 streams - one more gets 503, a closed one makes "
          "room") {
  DaemonHarness h;
  h.api_listen = local_listen();
  h.log_level = "info";
  h.watch("polled", {"u1"}); // its polls change the status every second
  h.start();
  REQUIRE_MESSAGE(h.wait_for_api(), h.log());

  std::vector<std::unique_ptr<SseClient>> open;
  for (int i = 0; i < 128; ++i) {
    open.push_back(std::make_unique<SseClient>(h.api_listen));
    INFO("stream " << i);
    REQUIRE(open.back()->status() == 200);
  }
  SseClient refused(h.api_listen);
  REQUIRE(refused.status() == 503);
  CHECK(refused.header("retry-after") == "5");
  REQUIRE(wait_until([&] {
    refused.next(100ms);
    return refused.body_complete();
  }));
  const json error = json::parse(refused.body());
  CHECK(error["error"].get<std::string>().find("at most 128") != std::string::npos);
  // Every other call is still served (the streams hold workers of their own).
  CHECK(h.api("GET", "/v1/status").status == 200);
  CHECK(h.api("GET", "/v1/messages").status == 200);

  // A page closes: its place is free once the daemon notices (its next
  // write, the status at most a second later, fails).
  open.pop_back();
  CHECK(wait_until([&] {
    SseClient another(h.api_listen);
    return another.status() == 200;
  }));
  h.stop();
}

TEST_CASE("api: updates - with api.token_file the stream, the status and the events "
          "need the token - a new token ends the old streams") {
  DaemonHarness h;
  h.api_listen = local_listen();
  h.api_token = "updates-token-Hq7wP2";
  h.watch("k1", {"u1"});
  h.start();
  REQUIRE_MESSAGE(h.wait_for_api(), h.log());

  SseClient missing(h.api_listen);
  REQUIRE(missing.status() == 401);
  CHECK(missing.header("www-authenticate") == "Bearer");
  REQUIRE(wait_until([&] {
    missing.next(100ms);
    return missing.body_complete();
  }));
  CHECK(json::parse(missing.body())["error"] == "missing bearer token");
  SseClient wrong(h.api_listen, "nope");
  CHECK(wrong.status() == 401);
  CHECK(h.api("GET", "/v1/status").status == 401);
  CHECK(h.api("GET", "/v1/messages/k1/events").status == 401);

  SseClient right(h.api_listen, h.api_token);
  REQUIRE(right.status() == 200);
  const auto opening = right.next(10s);
  REQUIRE(opening);
  CHECK(opening->type == "status");
  CHECK(opening->data.find(h.api_token) == std::string::npos);
  CHECK(h.api("GET", "/v1/status", "", h.api_token).status == 200);
  CHECK(h.api("GET", "/v1/messages/k1/events", "", h.api_token).status == 200);

  // A new token (a reload) ends the streams opened with the old one; the
  // page must show the new one to listen again.
  const std::string old_token = h.api_token;
  h.api_token = "updates-token-Zr4mK9";
  h.reload();
  const auto end = right.wait_for([](const SseEvent& e) { return e.type == "end"; });
  REQUIRE(end);
  CHECK(end->json()["reason"] == "token changed");
  CHECK(right.wait_for_end(10s));
  SseClient stale(h.api_listen, old_token);
  CHECK(stale.status() == 401);
  SseClient renewed(h.api_listen, h.api_token);
  CHECK(renewed.status() == 200);
  h.stop();
}

TEST_CASE("api: updates - SIGTERM with streams open ends them and the daemon exits "
          "promptly") {
  DaemonHarness h;
  h.api_listen = local_listen();
  h.watch("k1", {"u1"});
  h.start();
  REQUIRE_MESSAGE(h.wait_for_api(), h.log());
  std::vector<std::unique_ptr<SseClient>> readers;
  for (int i = 0; i < 3; ++i) {
    readers.push_back(std::make_unique<SseClient>(h.api_listen));
    REQUIRE(readers.back()->status() == 200);
    REQUIRE(readers.back()->next(10s)); // the opening status
  }
  // One that reads nothing at all.
  SseClient silent(h.api_listen, "", 4096);
  REQUIRE(silent.status() == 200);

  const auto before = std::chrono::steady_clock::now();
  REQUIRE(h.daemon);
  const int code = h.daemon->stop(10s);
  const auto took = std::chrono::steady_clock::now() - before;
  INFO(h.daemon->log());
  CHECK(code == 0);
  CHECK(took < 5s); // no stream holds the stop up
  for (auto& r : readers) {
    const auto end = r->wait_for([](const SseEvent& e) { return e.type == "end"; }, 10s);
    REQUIRE(end);
    CHECK(end->json()["reason"] == "shutting down");
    CHECK(r->wait_for_end(10s));
  }
  CHECK(silent.wait_for_end(10s));
}
