#include "fakes/scenario.hpp"

#include <cctype>
#include <map>
#include <stdexcept>
#include <yaml-cpp/yaml.h>

namespace rrd::testing {

namespace {

using Millis = std::chrono::milliseconds;

Millis duration_field(const YAML::Node& node, const std::string& where) {
  const auto d = parse_scenario_duration(node.as<std::string>());
  if (!d) {
    throw std::runtime_error(where + ": not a duration (500ms, 15s, 10m, 2h)");
  }
  return *d;
}

MessageKind kind_field(const YAML::Node& node, const std::string& where) {
  const auto text = node.as<std::string>();
  for (const auto kind : {MessageKind::private_chat, MessageKind::group, MessageKind::oto}) {
    if (text == to_string(kind)) {
      return kind;
    }
  }
  throw std::runtime_error(
      std::string(where).append(": private_chat, group or oto, not ").append(text));
}

// One key `k` of a message item into `m`; `at` names it for errors.
void read_message_key(ScenarioMessage& m, const std::string& k, const YAML::Node& v,
                      const std::string& at) {
  if (k == "process_query_key") {
    m.key = v.as<std::string>();
  } else if (k == "kind") {
    m.spec.kind = kind_field(v, at);
  } else if (k == "open_conversation_id") {
    m.spec.open_conversation_id = v.as<std::string>();
  } else if (k == "token") {
    m.spec.token = v.as<std::string>();
  } else if (k == "robot_code") {
    m.spec.robot_code = v.as<std::string>();
  } else if (k == "recipients") {
    if (v.IsSequence()) {
      m.spec.recipients = v.as<std::vector<std::string>>();
    } else if (v.IsScalar()) {
      const int n = v.as<int>();
      if (n < 0) {
        throw std::runtime_error(at + ": must be 0 or more");
      }
      for (int i = 1; i <= n; ++i) {
        m.spec.recipients.push_back("user" + std::to_string(i));
      }
    } else {
      throw std::runtime_error(at + ": a list of user ids or a count");
    }
  } else if (k == "names") {
    if (!v.IsMap()) {
      throw std::runtime_error(at + ": a map of user id to name");
    }
    m.spec.names = v.as<std::map<std::string, std::string>>();
  } else if (k == "read_delay_mean") {
    m.read_delay_mean = duration_field(v, at);
  } else if (k == "read_delay_max") {
    m.read_delay_max = duration_field(v, at);
  } else if (k == "never_read_fraction") {
    m.never_read_fraction = v.as<double>();
    if (m.never_read_fraction < 0 || m.never_read_fraction > 1) {
      throw std::runtime_error(at + ": must be 0..1");
    }
  } else if (k == "ready_after") {
    m.ready_after = duration_field(v, at);
  } else if (k == "recall_after") {
    m.recall_after = duration_field(v, at);
  } else if (k == "send_status") {
    m.spec.send_status = v.as<std::string>();
  } else {
    throw std::runtime_error(at + ": unknown key");
  }
}

// A problem message_problem() names: after the item's path, with a '.'
// when it starts with the field at fault ("recipients[2]: ..."), else ": ".
std::string problem_at(const std::string& where, const std::string& problem) {
  const auto colon = problem.find(':');
  const bool field = colon != std::string::npos && colon > 0 && problem.find(' ') > colon &&
                     std::islower(static_cast<unsigned char>(problem[0])) != 0;
  return where + (field ? "." : ": ") + problem;
}

std::vector<ScenarioMessage> load_messages(const YAML::Node& root, const std::string& path,
                                           const std::string& robot_code) {
  if (!root["messages"] || !root["messages"].IsSequence()) {
    throw std::runtime_error(path + ": expected a 'messages' list");
  }
  std::vector<ScenarioMessage> out;
  int index = 0;
  for (const auto& item : root["messages"]) {
    const std::string where = path + ": messages[" + std::to_string(index++) + "]";
    if (!item.IsMap()) {
      throw std::runtime_error(where + ": expected a map");
    }
    ScenarioMessage m;
    for (const auto& kv : item) {
      const std::string k = kv.first.as<std::string>();
      const std::string at = std::string(where).append(".").append(k);
      try {
        read_message_key(m, k, kv.second, at);
      } catch (const YAML::Exception& e) { // a value of the wrong type
        throw std::runtime_error(std::string(at).append(": ").append(e.msg));
      }
    }
    if (m.key.empty()) {
      throw std::runtime_error(where + ".process_query_key: required");
    }
    if (const std::string problem = message_problem(m.spec); !problem.empty()) {
      throw std::runtime_error(problem_at(where, problem));
    }
    if (m.spec.robot_code.empty()) {
      m.spec.robot_code = robot_code;
    }
    out.push_back(std::move(m));
  }
  return out;
}

double share_field(const YAML::Node& node, const std::string& where) {
  const double p = node.as<double>();
  if (p < 0 || p > 1) {
    throw std::runtime_error(where + ": must be 0..1");
  }
  return p;
}

std::optional<StreamScenario> load_stream(const YAML::Node& root, const std::string& path) {
  const YAML::Node node = root["stream"];
  if (!node) {
    return std::nullopt;
  }
  const std::string where = path + ": stream";
  if (!node.IsMap()) {
    throw std::runtime_error(where + ": expected a map");
  }
  StreamScenario out;
  FakeStreamOptions& o = out.options;
  o.keep_log = true;
  bool oversized = false;
  for (const auto& kv : node) {
    const std::string k = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    const std::string at = std::string(where).append(".").append(k);
    try {
      if (k == "port") {
        o.port = v.as<int>();
      } else if (k == "ack_timeout") {
        o.ack_timeout = duration_field(v, at);
      } else if (k == "max_redeliveries") {
        o.max_redeliveries = v.as<int>();
        if (o.max_redeliveries < 0) {
          throw std::runtime_error(at + ": must be 0 or more");
        }
      } else if (k == "offline_retention") {
        o.offline_retention = duration_field(v, at);
      } else if (k == "ping_interval") {
        o.ping_interval = duration_field(v, at);
      } else if (k == "disconnect_after") {
        o.disconnect_after = duration_field(v, at);
      } else if (k == "disconnect_grace") {
        o.disconnect_grace = duration_field(v, at);
      } else if (k == "distribution") {
        const auto d = v.as<std::string>();
        if (d != "random" && d != "round_robin") {
          throw std::runtime_error(
              std::string(at).append(": random or round_robin, not ").append(d));
        }
        o.distribution =
            d == "random" ? StreamDistribution::random : StreamDistribution::round_robin;
      } else if (k == "redelivery_keeps_message_id") {
        o.redelivery_keeps_message_id = v.as<bool>();
      } else if (k == "faults") {
        if (!v.IsMap()) {
          throw std::runtime_error(at + ": expected a map");
        }
        for (const auto& fkv : v) {
          const std::string f = fkv.first.as<std::string>();
          const YAML::Node& fv = fkv.second;
          const std::string fat = std::string(at).append(".").append(f);
          if (f == "drop_after") {
            o.drop_after = duration_field(fv, fat);
          } else if (f == "drop_style") {
            const auto style = fv.as<std::string>();
            if (style == "reset") {
              o.drop_style = StreamDrop::reset;
            } else if (style == "fin") {
              o.drop_style = StreamDrop::fin;
            } else if (style == "close_frame") {
              o.drop_style = StreamDrop::close_frame;
            } else {
              throw std::runtime_error(
                  std::string(fat).append(": reset, fin or close_frame, not ").append(style));
            }
          } else if (f == "push_loss") {
            o.push_loss = share_field(fv, fat);
          } else if (f == "gateway_errors") {
            out.gateway_errors = share_field(fv, fat);
          } else if (f == "refuse_tickets") {
            o.refuse_tickets = share_field(fv, fat);
          } else if (f == "refuse_handshakes") {
            o.refuse_handshakes = share_field(fv, fat);
          } else if (f == "garbage") {
            o.garbage = share_field(fv, fat);
          } else if (f == "oversized") {
            oversized = fv.as<bool>();
          } else if (f == "duplicate_acked") {
            o.duplicate_acked = share_field(fv, fat);
          } else {
            throw std::runtime_error(fat + ": unknown key");
          }
        }
      } else {
        throw std::runtime_error(at + ": unknown key");
      }
    } catch (const YAML::Exception& e) { // a value of the wrong type
      throw std::runtime_error(std::string(at).append(": ").append(e.msg));
    }
  }
  if (oversized) {
    o.garbage_kinds.push_back(StreamGarbage::oversized);
  }
  return out;
}

} // namespace

std::optional<Millis> parse_scenario_duration(const std::string& text) {
  std::size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits])) != 0) {
    ++digits;
  }
  if (digits == 0 || digits > 12) {
    return std::nullopt;
  }
  const long long n = std::stoll(text.substr(0, digits));
  const std::string unit = text.substr(digits);
  if (unit == "ms") {
    return Millis(n);
  }
  if (unit == "s") {
    return Millis(n * 1000);
  }
  if (unit == "m") {
    return Millis(n * 60'000);
  }
  if (unit == "h") {
    return Millis(n * 3'600'000);
  }
  return std::nullopt;
}

Scenario load_scenario(const std::string& path, const std::string& robot_code) {
  const YAML::Node root = YAML::LoadFile(path);
  if (!root.IsMap()) {
    throw std::runtime_error(path + ": expected a map with a 'messages' list");
  }
  for (const auto& kv : root) {
    const auto key = kv.first.as<std::string>();
    if (key != "messages" && key != "stream") {
      throw std::runtime_error(std::string(path).append(": ").append(key).append(": unknown key"));
    }
  }
  Scenario out;
  out.messages = load_messages(root, path, robot_code);
  out.stream = load_stream(root, path);
  return out;
}

} // namespace rrd::testing
