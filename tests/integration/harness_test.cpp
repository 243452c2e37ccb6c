// Tests of the integration harness itself, without the daemon: a message
// declared through it must reach both the fake DingTalk (with its kind) and
// the configuration the daemon will read.
#include "harness.hpp"

#include <doctest/doctest.h>
#include <httplib.h>

using namespace rrd::testing;

namespace {

// The `messages:` items of the configuration, one string each.
std::vector<std::string> message_items(const std::string& config) {
  std::vector<std::string> items;
  auto pos = config.find("messages:\n");
  REQUIRE(pos != std::string::npos);
  pos += std::string("messages:\n").size();
  while (pos < config.size() && config.compare(pos, 4, "  - ") == 0) {
    const auto next = config.find("\n  - ", pos);
    const auto end = next == std::string::npos ? config.size() : next + 1;
    items.push_back(config.substr(pos, end - pos));
    pos = end;
  }
  return items;
}

} // namespace

TEST_CASE("harness: messages of every kind go to the fake and to the configuration") {
  DaemonHarness h;
  h.watch("private-key", {"alice"});
  h.watch_group("group+key/=", "cidGr0up==", {"alice", "bob"}, "labels: { kind: group }");
  h.watch_oto("oto+key/=", {"carol", "dave"});
  h.watch_oto("oto-expecting", {"erin", "frank"}, {"erin"});
  FakeMessage by_token;
  by_token.kind = MessageKind::group;
  by_token.token = "template-bot-token";
  h.watch_message("template-key", by_token, {"gina"});
  CHECK_THROWS_AS(h.watch_oto("too-many", std::vector<std::string>(21, "x")),
                  std::invalid_argument);
  h.write_config();

  const auto items = message_items(read_file(h.config_path()));
  REQUIRE(items.size() == 5);
  CHECK(items[0] == "  - process_query_key: \"private-key\"\n    expected_readers: [alice]\n");
  CHECK(items[1] == "  - process_query_key: \"group+key/=\"\n    kind: group\n"
                    "    open_conversation_id: \"cidGr0up==\"\n"
                    "    expected_readers: [alice, bob]\n    labels: { kind: group }\n");
  CHECK(items[2] == "  - process_query_key: \"oto+key/=\"\n    kind: oto\n");
  CHECK(items[3] ==
        "  - process_query_key: \"oto-expecting\"\n    kind: oto\n    expected_readers: [erin]\n");
  CHECK(items[4] == "  - process_query_key: \"template-key\"\n    kind: group\n"
                    "    token: \"template-bot-token\"\n    expected_readers: [gina]\n");

  // The fake holds each with its kind: each kind's API knows its own.
  h.dingtalk.add_token("t");
  h.dingtalk.read("oto+key/=", "dave");
  CHECK_THROWS_AS(h.dingtalk.read("oto+key/=", "alice"), std::invalid_argument);
  httplib::Client client("127.0.0.1", h.dingtalk.port());
  client.set_url_encode(false);
  const httplib::Headers token{{"x-acs-dingtalk-access-token", "t"}};
  const auto oto = client.Get("/v1.0/robot/oToMessages/readStatus?robotCode=dingfakerobot&"
                              "processQueryKey=oto%2Bkey%2F%3D",
                              token);
  REQUIRE(oto);
  CHECK(oto->status == 200);
  const auto list = nlohmann::json::parse(oto->body)["messageReadInfoList"];
  REQUIRE(list.size() == 2);
  CHECK(list[1]["userId"] == "dave");
  CHECK(list[1]["readStatus"] == "READ");
  const auto group = client.Post("/v1.0/robot/groupMessages/query", token,
                                 R"({"processQueryKey": "group+key/=", "robotCode": "dingfakerobot",
          "openConversationId": "cidGr0up=="})",
                                 "application/json");
  REQUIRE(group);
  CHECK(group->status == 200);
  const auto private_chat = client.Post(
      "/v1.0/robot/privateChatMessages/query", token,
      R"({"processQueryKey": "private-key", "robotCode": "dingfakerobot"})", "application/json");
  REQUIRE(private_chat);
  CHECK(private_chat->status == 200);
}
