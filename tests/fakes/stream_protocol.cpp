#include "fakes/stream_protocol.hpp"

namespace rrd::testing {

namespace {

using json = nlohmann::json;

json parse_or_null(const std::string& text) {
  try {
    return json::parse(text);
  } catch (const json::exception&) {
    return nullptr;
  }
}

} // namespace

std::string StreamFrame::header(const std::string& name) const {
  const auto it = headers.find(name);
  return it == headers.end() ? "" : it->second;
}

json StreamFrame::data_json() const {
  return parse_or_null(data);
}

std::string to_json(const StreamFrame& frame) {
  json headers = json::object();
  for (const auto& [name, value] : frame.headers) {
    headers[name] = value;
  }
  return json{{"specVersion", frame.spec_version},
              {"type", frame.type},
              {"headers", headers},
              {"data", frame.data}}
      .dump();
}

std::optional<StreamFrame> parse_stream_frame(const std::string& text) {
  const json j = parse_or_null(text);
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string() || !j.contains("headers") ||
      !j["headers"].is_object() || !j.contains("data") || !j["data"].is_string()) {
    return std::nullopt;
  }
  StreamFrame f;
  if (j.contains("specVersion") && j["specVersion"].is_string()) {
    f.spec_version = j["specVersion"].get<std::string>();
  }
  f.type = j["type"].get<std::string>();
  for (const auto& [name, value] : j["headers"].items()) {
    if (!value.is_string()) {
      return std::nullopt;
    }
    f.headers[name] = value.get<std::string>();
  }
  f.data = j["data"].get<std::string>();
  return f;
}

std::string answer_json(int code, const std::string& message_id, const std::string& data,
                        const std::string& message) {
  return json{{"code", code},
              {"headers", {{"contentType", "application/json"}, {"messageId", message_id}}},
              {"message", message},
              {"data", data}}
      .dump();
}

std::string event_ack(const std::string& message_id, const std::string& status, int code) {
  return answer_json(code, message_id, json{{"status", status}, {"message", ""}}.dump());
}

std::string ping_answer(const StreamFrame& ping) {
  return answer_json(200, ping.message_id(), ping.data);
}

std::string StreamAnswer::status() const {
  if (data.is_object() && data.contains("status") && data["status"].is_string()) {
    return data["status"].get<std::string>();
  }
  return "";
}

std::optional<StreamAnswer> parse_answer(const std::string& text) {
  const json j = parse_or_null(text);
  if (!j.is_object() || !j.contains("code") || !j["code"].is_number_integer() ||
      !j.contains("headers") || !j["headers"].is_object()) {
    return std::nullopt;
  }
  const json& headers = j["headers"];
  if (!headers.contains("messageId") || !headers["messageId"].is_string()) {
    return std::nullopt;
  }
  StreamAnswer a;
  a.code = j["code"].get<int>();
  a.message_id = headers["messageId"].get<std::string>();
  if (headers.contains("contentType") && headers["contentType"].is_string()) {
    a.content_type = headers["contentType"].get<std::string>();
  }
  if (j.contains("message") && j["message"].is_string()) {
    a.message = j["message"].get<std::string>();
  }
  if (j.contains("data")) {
    if (j["data"].is_string()) {
      a.data_was_string = true;
      a.data = parse_or_null(j["data"].get<std::string>());
    } else {
      a.data = j["data"];
    }
  }
  a.well_formed = a.content_type == "application/json" && a.message == "OK" && a.data_was_string &&
                  !a.data.is_null();
  return a;
}

} // namespace rrd::testing
