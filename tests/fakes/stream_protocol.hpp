// DingTalk Stream mode's JSON frames (../shared/dingtalk/STREAM.md sections
// 2 and 3), written and read for the tests: what the server sends
// ({"specVersion","type","headers","data"}, every header a string, data a
// JSON document inside a string) and what the client answers
// ({"code","headers","message","data"}). The fake DingTalk builds its frames
// with these; test clients answer with them; the daemon's tests can check
// the daemon's answers with parse_answer(). Pure functions; thread-safe.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace rrd::testing {

// A frame from the server.
struct StreamFrame {
  std::string spec_version = "1.0";
  std::string type; // SYSTEM, EVENT, CALLBACK
  std::map<std::string, std::string> headers;
  std::string data; // JSON text

  std::string header(const std::string& name) const;
  std::string message_id() const { return header("messageId"); }
  std::string topic() const { return header("topic"); }
  // `data` parsed; null when it is not JSON.
  nlohmann::json data_json() const;
};

std::string to_json(const StreamFrame& frame);
// nullopt unless `text` is a JSON object with a string `type`, an object
// `headers` whose values are all strings, and a string `data`.
std::optional<StreamFrame> parse_stream_frame(const std::string& text);

// A client's answer, as documented: {"code": code, "headers": {"contentType":
// "application/json", "messageId": id}, "message": "OK", "data": data}.
std::string answer_json(int code, const std::string& message_id, const std::string& data,
                        const std::string& message = "OK");
// The acknowledgement of an EVENT: data {"status": status, "message": ""}.
std::string event_ack(const std::string& message_id, const std::string& status = "SUCCESS",
                      int code = 200);
// The answer to a SYSTEM ping: code 200, its messageId, its data.
std::string ping_answer(const StreamFrame& ping);

// A client's answer as the server reads it.
struct StreamAnswer {
  int code = 0;
  std::string message_id;
  std::string message;
  std::string content_type;
  nlohmann::json data; // the data string parsed (an object given as such is taken as it is)
  bool data_was_string = false;
  // code, headers.messageId and data present with the documented types,
  // headers.contentType "application/json" and message "OK".
  bool well_formed = false;
  // data.status when data is an object holding a string status, else "".
  std::string status() const;
};
// nullopt unless `text` is a JSON object with an integer `code` and a
// string `headers.messageId`.
std::optional<StreamAnswer> parse_answer(const std::string& text);

} // namespace rrd::testing
