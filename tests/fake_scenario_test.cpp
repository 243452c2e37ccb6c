// Tests of the simulator's scenario files (fakes/scenario.hpp): what each key
// becomes, and the error, naming the file and the key, for each bad value.
// The demo's scenario, config/demo-scenario.yaml, must load too.
#include "fakes/process.hpp"
#include "fakes/scenario.hpp"

#include <doctest/doctest.h>
#include <filesystem>
#include <map>

using namespace rrd::testing;
using namespace std::chrono_literals;

namespace {

// The scenario `text`, loaded from a file named scenario.yaml.
Scenario load(const std::string& text, const std::string& robot_code = "dingdefaultrobot") {
  TempDir dir;
  write_file(dir.file("scenario.yaml"), text);
  return load_scenario(dir.file("scenario.yaml"), robot_code);
}

// The error load() throws, after the directory's path; "" when it loads.
std::string error_of(const std::string& text) {
  try {
    load(text);
  } catch (const std::exception& e) {
    const std::string what = e.what();
    const auto at = what.find("scenario.yaml");
    return at == std::string::npos ? what : what.substr(at);
  }
  return "";
}

} // namespace

TEST_CASE("fake scenario: durations are ms, s, m or h") {
  CHECK(parse_scenario_duration("500ms") == 500ms);
  CHECK(parse_scenario_duration("15s") == 15s);
  CHECK(parse_scenario_duration("10m") == 10min);
  CHECK(parse_scenario_duration("2h") == 2h);
  CHECK(parse_scenario_duration("0s") == 0ms);
  for (const char* bad : {"", "s", "15", "1.5s", "-1s", "7d", "15 s", "1234567890123s"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_scenario_duration(bad));
  }
}

TEST_CASE("fake scenario: a private-chat message and how its recipients read it") {
  const Scenario s = load(R"(
messages:
  - process_query_key: "Kna29pdJznx1+ghav/bumkQ="
    open_conversation_id: "cid6KeBBLo7EeiodoA=="
    robot_code: dingotherrobot
    recipients: [alice, bob]
    read_delay_mean: 20s
    read_delay_max: 45s
    never_read_fraction: 0.5
    ready_after: 5s
    recall_after: 40s
    send_status: PROCESSING
  - process_query_key: counted
    recipients: 3
)");
  REQUIRE(s.messages.size() == 2);
  const ScenarioMessage& m = s.messages[0];
  CHECK(m.key == "Kna29pdJznx1+ghav/bumkQ=");
  CHECK(m.spec.kind == MessageKind::private_chat);
  CHECK(m.spec.open_conversation_id == "cid6KeBBLo7EeiodoA==");
  CHECK(m.spec.robot_code == "dingotherrobot");
  CHECK(m.spec.recipients == std::vector<std::string>{"alice", "bob"});
  CHECK(m.read_delay_mean == 20s);
  CHECK(m.read_delay_max == 45s);
  CHECK(m.never_read_fraction == 0.5);
  CHECK(m.ready_after == 5s);
  CHECK(m.recall_after == 40s);
  CHECK(m.spec.send_status == "PROCESSING");
  const ScenarioMessage& counted = s.messages[1];
  CHECK(counted.spec.recipients == std::vector<std::string>{"user1", "user2", "user3"});
  CHECK(counted.spec.robot_code == "dingdefaultrobot");
  CHECK(counted.spec.open_conversation_id.empty());
  CHECK(counted.read_delay_mean == 0ms);
  CHECK_FALSE(counted.read_delay_max);
  CHECK_FALSE(counted.recall_after);
  CHECK_FALSE(s.stream);
}

TEST_CASE("fake scenario: the stream block sets Stream mode's switches") {
  const Scenario s = load(R"(
messages: []
stream:
  port: 0
  ack_timeout: 20s
  max_redeliveries: 3
  ping_interval: 15s
  disconnect_after: 40s
  disconnect_grace: 5s
  distribution: round_robin
  faults:
    push_loss: 0.15
    gateway_errors: 0.1
    drop_style: fin
    oversized: true
)");
  REQUIRE(s.stream);
  const FakeStreamOptions& o = s.stream->options;
  CHECK(o.keep_log);
  CHECK(o.ack_timeout == 20s);
  CHECK(o.max_redeliveries == 3);
  CHECK(o.ping_interval == 15s);
  CHECK(o.disconnect_after == 40s);
  CHECK(o.disconnect_grace == 5s);
  CHECK(o.distribution == StreamDistribution::round_robin);
  CHECK(o.push_loss == 0.15);
  CHECK(o.drop_style == StreamDrop::fin);
  CHECK(o.garbage_kinds.back() == StreamGarbage::oversized);
  CHECK(s.stream->gateway_errors == 0.1);
}

TEST_CASE("fake scenario: each bad value is refused, naming the file and the key") {
  CHECK(error_of("stream: {}\n") == "scenario.yaml: expected a 'messages' list");
  CHECK(error_of("messages:\n  - recipients: 2\n") ==
        "scenario.yaml: messages[0].process_query_key: required");
  CHECK(error_of("messages:\n  - process_query_key: k\n    colour: red\n") ==
        "scenario.yaml: messages[0].colour: unknown key");
  CHECK(error_of("messages:\n  - process_query_key: k\n    read_delay_mean: soon\n") ==
        "scenario.yaml: messages[0].read_delay_mean: not a duration (500ms, 15s, 10m, 2h)");
  CHECK(error_of("messages:\n  - process_query_key: k\n    never_read_fraction: 2\n") ==
        "scenario.yaml: messages[0].never_read_fraction: must be 0..1");
  CHECK(error_of("messages: []\nstream: [1]\n") == "scenario.yaml: stream: expected a map");
  CHECK(error_of("messages: []\nstream:\n  faults:\n    push_loss: 3\n") ==
        "scenario.yaml: stream.faults.push_loss: must be 0..1");
  CHECK(error_of("messages: []\nstream:\n  distribution: fair\n") ==
        "scenario.yaml: stream.distribution: random or round_robin, not fair");
}

TEST_CASE("fake scenario: messages of every kind, with kind, recipients, token and conversation") {
  const Scenario s = load(R"(
messages:
  - process_query_key: "private-1"
    kind: private_chat
    recipients: [alice]
  - process_query_key: "group-1"
    kind: group
    open_conversation_id: "cidGr0up=="
    recipients: [alice, bob, carol]
  - process_query_key: "group-by-token"
    kind: group
    token: template-bot-token
    recipients: 2
  - process_query_key: "oto+1/=="
    kind: oto
    recipients: [bob, dave]
    names: { bob: Bob Li }
)");
  REQUIRE(s.messages.size() == 4);
  CHECK(s.messages[0].spec.kind == MessageKind::private_chat);
  const FakeMessage& group = s.messages[1].spec;
  CHECK(group.kind == MessageKind::group);
  CHECK(group.open_conversation_id == "cidGr0up==");
  CHECK(group.token.empty());
  CHECK(group.recipients == std::vector<std::string>{"alice", "bob", "carol"});
  const FakeMessage& by_token = s.messages[2].spec;
  CHECK(by_token.kind == MessageKind::group);
  CHECK(by_token.token == "template-bot-token");
  CHECK(by_token.open_conversation_id.empty());
  CHECK(by_token.recipients == std::vector<std::string>{"user1", "user2"});
  const FakeMessage& oto = s.messages[3].spec;
  CHECK(s.messages[3].key == "oto+1/==");
  CHECK(oto.kind == MessageKind::oto);
  CHECK(oto.recipients == std::vector<std::string>{"bob", "dave"});
  CHECK(oto.names == std::map<std::string, std::string>{{"bob", "Bob Li"}});
  CHECK(oto.robot_code == "dingdefaultrobot");
  // What the file says, the fake holds.
  FakeDingTalk fake;
  for (const auto& m : s.messages) {
    fake.add_message(m.key, m.spec);
  }
  fake.read("oto+1/==", "dave");
  CHECK(fake.read_list("oto+1/==") == std::vector<std::string>{"dave"});
}

TEST_CASE("fake scenario: a message no send could produce is refused, naming the key") {
  const std::string head = "messages:\n  - process_query_key: k\n";
  CHECK(error_of(head + "    kind: broadcast\n") ==
        "scenario.yaml: messages[0].kind: private_chat, group or oto, not broadcast");
  CHECK(error_of(head + "    kind: group\n    recipients: 2\n") ==
        "scenario.yaml: messages[0]: a group message needs open_conversation_id or token");
  CHECK(error_of(head + "    token: t\n") ==
        "scenario.yaml: messages[0].token: only group messages have one");
  CHECK(error_of(head + "    kind: oto\n") ==
        "scenario.yaml: messages[0].recipients: an oto message has 1..20 (batchSend's limit), "
        "not 0");
  CHECK(error_of(head + "    kind: oto\n    recipients: 21\n") ==
        "scenario.yaml: messages[0].recipients: an oto message has 1..20 (batchSend's limit), "
        "not 21");
  CHECK(error_of(head + "    kind: oto\n    recipients: [a, b, a]\n") ==
        "scenario.yaml: messages[0].recipients[2]: a is listed twice");
  CHECK(error_of(head + "    kind: oto\n    recipients: [a]\n    open_conversation_id: c\n") ==
        "scenario.yaml: messages[0].open_conversation_id: oto messages (oToMessages/batchSend) "
        "have none");
  CHECK(error_of(head + "    kind: oto\n    recipients: [a]\n    names: {b: B}\n") ==
        "scenario.yaml: messages[0].names: b is not a recipient");
  // A value of the wrong type names its key too.
  CHECK(error_of(head + "    recipients: {a: 1}\n") ==
        "scenario.yaml: messages[0].recipients: a list of user ids or a count");
  CHECK(error_of(head + "    never_read_fraction: [1]\n") ==
        "scenario.yaml: messages[0].never_read_fraction: bad conversion");
  CHECK(error_of(head + "    names: [a]\n") ==
        "scenario.yaml: messages[0].names: a map of user id to name");
  CHECK(error_of("messages: []\ncolour: red\n") == "scenario.yaml: colour: unknown key");
  CHECK(error_of("messages: []\nstream:\n  max_redeliveries: many\n") ==
        "scenario.yaml: stream.max_redeliveries: bad conversion");
  CHECK(error_of("messages: [3]\n") == "scenario.yaml: messages[0]: expected a map");
}

TEST_CASE("fake scenario: the demo's scenario loads, with a message of every kind") {
  const auto path =
      std::filesystem::path(__FILE__).parent_path().parent_path() / "config" / "demo-scenario.yaml";
  const Scenario s = load_scenario(path.string(), "dingdemorobot");
  std::map<MessageKind, std::vector<std::string>> keys;
  FakeDingTalk fake;
  for (const auto& m : s.messages) {
    keys[m.spec.kind].push_back(m.key);
    fake.add_message(m.key, m.spec); // what the simulator does with it
  }
  CHECK(keys[MessageKind::private_chat].size() == 5);
  CHECK(keys[MessageKind::group] == std::vector<std::string>{"demo-group-1"});
  CHECK(keys[MessageKind::oto] == std::vector<std::string>{"demo-oto-1"});
  CHECK(s.stream);
}
