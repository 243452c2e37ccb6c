// The fake-dingtalk simulator's scenario, a YAML (or JSON) file: the
// messages, who receives each and how they read it, and Stream mode's
// switches (the format is in fake_dingtalk_main.cpp's opening comment).
// Loading parses and checks the file; nothing runs until the simulator
// schedules what it says. Thread-safe: functions of their arguments.
#pragma once

#include "fakes/fake_dingtalk.hpp"
#include "fakes/fake_stream.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace rrd::testing {

// One message of the scenario and how its recipients read it.
struct ScenarioMessage {
  std::string key;
  FakeMessage spec;                             // robot_code filled in with the default
  std::chrono::milliseconds read_delay_mean{0}; // exponential; 0: read at once
  std::optional<std::chrono::milliseconds> read_delay_max;
  double never_read_fraction = 0; // round(n * f) recipients never read
  std::optional<std::chrono::milliseconds> ready_after;
  std::optional<std::chrono::milliseconds> recall_after;
};

// The scenario's stream block, with the share of gateway calls that fail.
struct StreamScenario {
  FakeStreamOptions options;
  double gateway_errors = 0;
};

struct Scenario {
  std::vector<ScenarioMessage> messages;
  std::optional<StreamScenario> stream; // set: Stream mode on
};

// "500ms", "15s", "10m", "2h"; nullopt for anything else.
std::optional<std::chrono::milliseconds> parse_scenario_duration(const std::string& text);

// The scenario in the file at `path`; `robot_code` is the default robotCode
// of its messages. Throws std::runtime_error naming the file and the key
// (`scenario.yaml: messages[2].read_delay_mean: not a duration ...`).
Scenario load_scenario(const std::string& path, const std::string& robot_code);

} // namespace rrd::testing
