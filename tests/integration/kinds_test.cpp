// Every kind of bot message in one daemon: private chats, group chats (by
// conversation and by a template bot's token) and one-to-one sends, with
// push on and off. Each read is reported once, with the message's kind,
// DingTalk's read time where it gives one, and the right stop.
#include "harness.hpp"

#include <map>
#include <set>

using namespace rrd::testing;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

constexpr const char* k_group_token = "tmpl-bot-SECRET-4f0c2a9e";

struct Read {
  int times = 0;
  std::string via;
  json read_at;
  std::string kind;
};

// (key, user) -> how it was reported, over distinct message.read events.
std::map<std::pair<std::string, std::string>, Read> reads_at(const WebhookSink& sink) {
  std::map<std::pair<std::string, std::string>, Read> out;
  std::set<std::string> seen;
  for (const auto& d : sink.accepted()) {
    if (!seen.insert(d.webhook_id).second || d.json["type"] != "message.read") {
      continue;
    }
    const json& data = d.json["data"];
    for (const auto& n : data["newly_read"]) {
      Read& r =
          out[{data["process_query_key"].get<std::string>(), n["user_id"].get<std::string>()}];
      ++r.times;
      r.via = n["via"];
      r.read_at = n["read_at"];
      r.kind = data["kind"];
    }
  }
  return out;
}

void run_every_kind(bool push) {
  FakeDingTalkOptions options;
  if (push) {
    options.stream = FakeStreamOptions{};
  }
  DaemonHarness h(options);
  h.api_listen = "127.0.0.1:" + std::to_string(free_port());
  if (push) {
    h.dingtalk_extra_yaml = "  stream: { enabled: true, fallback_after: 30s }\n";
    h.reconcile_yaml = "[ { every: 1h } ]"; // after the first polls, only pushes report
  }
  const std::vector<std::string> people{"ann", "bo", "cy"};
  h.watch("pc-1", people);
  h.watch_group("grp-conv", "cidGroupConv01==", people);
  FakeMessage by_token;
  by_token.kind = MessageKind::group;
  by_token.token = k_group_token;
  h.watch_message("grp-token", by_token, {"ann", "bo"});
  h.watch_oto("oto+1/=", people); // no expected readers: the recipients are
  // A group message whose configured token names no robot: invalid.
  FakeMessage other;
  other.kind = MessageKind::group;
  other.token = "tmpl-bot-right-token-77";
  h.dingtalk.add_message("grp-bad-token", other);
  h.messages.push_back(
      TestMessage{"grp-bad-token", {"ann"}, "", MessageKind::group, "", "tmpl-bot-wrong-token-88"});
  h.start();
  REQUIRE_MESSAGE(h.wait_for_api(), h.log());
  if (push) {
    REQUIRE_MESSAGE(wait_until([&] { return h.dingtalk.stream().stats().connections_open > 0; }),
                    h.log());
  }
  REQUIRE_MESSAGE(h.wait_for_stop("grp-bad-token"), h.log());
  const auto bad = h.stopped_event("grp-bad-token").value()["data"];
  CHECK(bad["reason"] == "invalid");
  CHECK(bad["detail"] == "invalidParameter.invalid");
  CHECK(bad["kind"] == "group");

  // Every message's first poll has committed (the oto one learnt its
  // recipients) before anyone reads.
  for (const char* path : {"pc-1", "grp-conv", "grp-token", "oto%2B1%2F%3D"}) {
    REQUIRE_MESSAGE(wait_until([&] {
                      const auto m = h.api("GET", std::string("/v1/messages/") + path);
                      return m.status == 200 && !m.json()["last_poll"].is_null();
                    }),
                    h.log());
  }
  std::vector<std::pair<std::string, std::string>> all;
  for (const auto& u : people) {
    for (const char* key : {"pc-1", "grp-conv", "oto+1/="}) {
      all.emplace_back(key, u);
    }
  }
  all.emplace_back("grp-token", "ann");
  all.emplace_back("grp-token", "bo");
  for (const auto& r : all) {
    h.dingtalk.read(r.first, r.second);
    std::this_thread::sleep_for(30ms);
  }
  const std::map<std::string, std::string> kinds{
      {"pc-1", "private_chat"}, {"grp-conv", "group"}, {"grp-token", "group"}, {"oto+1/=", "oto"}};
  for (const auto& k : kinds) {
    CAPTURE(k.first);
    REQUIRE_MESSAGE(h.wait_for_stop(k.first, 60s), h.log());
    const auto stop = h.stopped_event(k.first).value()["data"];
    CHECK(stop["reason"] == "fully_read");
    CHECK(stop["kind"] == k.second);
  }
  const auto reads = reads_at(h.sink);
  CHECK(reads.size() == all.size());
  for (const auto& entry : reads) {
    CAPTURE(entry.first.first);
    CAPTURE(entry.first.second);
    const Read& r = entry.second;
    CHECK(r.times == 1);
    CHECK(r.kind == kinds.at(entry.first.first));
    if (push) {
      CHECK(r.via == "push");
    } else {
      CHECK(r.via == "poll");
    }
    // A push carries operatTime; an oto answer its readTimestamp; the
    // other answers give no time.
    const bool timed = push || entry.first.first == "oto+1/=";
    CHECK(r.read_at.is_null() == !timed);
  }
  // The oto message expected its recipients without being told.
  const auto oto = h.api("GET", "/v1/messages/oto%2B1%2F%3D");
  REQUIRE(oto.status == 200);
  CHECK(oto.json()["kind"] == "oto");
  CHECK(oto.json()["expected_readers"] == json(people));
  CHECK(oto.json()["unread_user_ids"] == json::array());
  // The template bot's token is nowhere to be seen.
  const auto listed = h.api("GET", "/v1/messages");
  CHECK(listed.body.find(k_group_token) == std::string::npos);
  CHECK(h.log().find(k_group_token) == std::string::npos);
  CHECK(h.log().find("tmpl-bot-wrong-token-88") == std::string::npos);
  for (const auto& d : h.sink.accepted()) {
    CHECK(d.body.find(k_group_token) == std::string::npos);
  }
  h.stop();
}

} // namespace

TEST_CASE("kinds: one daemon, every kind, polls only") {
  run_every_kind(false);
}

TEST_CASE("kinds: one daemon, every kind, with push") {
  run_every_kind(true);
}
