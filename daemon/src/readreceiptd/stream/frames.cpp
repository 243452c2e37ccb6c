#include "readreceiptd/stream/frames.hpp"

#include "readreceiptd/common/version.hpp"
#include "readreceiptd/dingtalk/protocol.hpp"
#include "readreceiptd/http/http1.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace rrd::stream {

namespace {

using nlohmann::json;

// Parses without throwing; discarded means "not JSON". A raw NUL would end
// the input for the parser, so it is refused first (as dingtalk/protocol.cpp
// does).
json parse_json(std::string_view text) {
  if (text.find('\0') != std::string_view::npos) {
    return json(json::value_t::discarded);
  }
  try {
    return json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  } catch (...) {
    return json(json::value_t::discarded);
  }
}

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool has_control(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7F;
  });
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

Frame bad(std::string why) {
  Frame f;
  f.kind = Frame::Kind::bad;
  f.why = std::move(why);
  return f;
}

// A string member of `headers`, "" when absent; false when too long.
bool header(const json& headers, const char* name, std::string& out) {
  const auto it = headers.find(name);
  if (it == headers.end()) {
    out.clear();
    return true;
  }
  out = it->get<std::string>(); // every value was checked to be a string
  return out.size() <= k_max_field_bytes;
}

std::string answer(int code, std::string_view message_id, std::string_view message,
                   const std::string& data) {
  json j;
  j["code"] = code;
  j["headers"] = json{{"contentType", "application/json"}, {"messageId", std::string(message_id)}};
  j["message"] = std::string(message);
  j["data"] = data;
  return dump(j);
}

} // namespace

std::optional<Credentials> credentials(const config::DingTalk& cfg) {
  using Kind = config::DingTalk::AuthKind;
  switch (cfg.auth_kind) {
  case Kind::internal_app:
    return Credentials{cfg.internal_app.app_key, cfg.internal_app.app_secret};
  case Kind::third_party:
    return Credentials{cfg.third_party.suite_key, cfg.third_party.suite_secret};
  case Kind::fixed_token:
    return std::nullopt;
  }
  return std::nullopt;
}

http::Request build_gateway_request(const config::DingTalk& cfg, const Credentials& c) {
  http::Request r = dingtalk::request_for(cfg, k_gateway_path);
  r.max_response_bytes = k_max_gateway_answer_bytes;
  json body;
  body["clientId"] = c.client_id;
  body["clientSecret"] = c.client_secret;
  body["subscriptions"] = json::array({json{{"type", "EVENT"}, {"topic", "*"}}});
  body["ua"] = std::string("readreceiptd/") + k_version;
  r.body = dump(body);
  return r;
}

GatewayAnswer classify_gateway(const http::Response& r, bool allow_plain) {
  GatewayAnswer a;
  if (r.failure != http::Failure::none) {
    a.outcome = GatewayOutcome::transient;
    a.message = std::string(http::to_string(r.failure)) + (r.error.empty() ? "" : ": " + r.error);
    return a;
  }
  const auto content_type = r.header("content-type").value_or("");
  const bool html = content_type.find("text/html") != std::string::npos ||
                    (!r.body.empty() && r.body.front() == '<' && r.status != 200);
  if (r.status == 429 || html) {
    a.outcome = GatewayOutcome::throttled;
    a.message = "HTTP " + std::to_string(r.status) + (html ? " (an HTML page)" : "");
    return a;
  }
  if (r.status >= 500) {
    a.outcome = GatewayOutcome::transient;
    a.message = "HTTP " + std::to_string(r.status);
    if (const auto e = dingtalk::parse_error_body(r.body)) {
      a.message += " " + e->code;
    }
    return a;
  }
  if (r.status >= 400) {
    const auto e = dingtalk::parse_error_body(r.body);
    a.message = "HTTP " + std::to_string(r.status);
    if (e) {
      a.message += " " + e->code + (e->message.empty() ? "" : ": " + e->message);
    }
    a.outcome = e && (starts_with(e->code, "Forbidden.AccessDenied.Qps") ||
                      starts_with(e->code, "Forbidden.AccessDenied.Qpm"))
                    ? GatewayOutcome::throttled
                    : GatewayOutcome::credentials;
    return a;
  }
  a.outcome = GatewayOutcome::transient;
  if (r.status != 200) {
    a.message = "unexpected HTTP " + std::to_string(r.status);
    return a;
  }
  const json j = parse_json(r.body);
  if (!j.is_object()) {
    a.message = "the gateway's answer is not a JSON object";
    return a;
  }
  const auto endpoint = j.find("endpoint");
  const auto ticket = j.find("ticket");
  if (endpoint == j.end() || !endpoint->is_string() ||
      endpoint->get_ref<const std::string&>().empty()) {
    a.message = "the gateway's answer has no endpoint";
    return a;
  }
  if (ticket == j.end() || !ticket->is_string() || ticket->get_ref<const std::string&>().empty()) {
    a.message = "the gateway's answer has no ticket";
    return a;
  }
  const std::string& url = endpoint->get_ref<const std::string&>();
  const bool secure = starts_with(url, "wss://");
  const bool plain = starts_with(url, "ws://");
  if (!secure && !(plain && allow_plain)) {
    a.message = plain ? "the gateway named a ws:// endpoint; only wss:// is accepted "
                        "(ws:// only when dingtalk.endpoint is http://)"
                      : "the gateway's endpoint is not a wss:// URL";
    return a;
  }
  // The URL is checked the way the connection will take it apart.
  std::string why;
  const std::string as_http = (secure ? "https://" : "http://") + url.substr(secure ? 6 : 5);
  if (!http::http1::parse_url(as_http, why) || has_control(url) ||
      url.find('#') != std::string::npos) {
    a.message = "the gateway's endpoint is not a usable URL" + (why.empty() ? "" : ": " + why);
    return a;
  }
  a.outcome = GatewayOutcome::ok;
  a.ticket.ticket = ticket->get<std::string>();
  a.ticket.url = url + (url.find('?') == std::string::npos ? "?" : "&") +
                 "ticket=" + dingtalk::url_encode(a.ticket.ticket);
  return a;
}

Frame parse_frame(std::string_view text) {
  const json j = parse_json(text);
  if (j.is_discarded()) {
    return bad("not JSON");
  }
  if (!j.is_object()) {
    return bad("not a JSON object");
  }
  const auto type = j.find("type");
  if (type == j.end() || !type->is_string()) {
    return bad("no string `type`");
  }
  const auto headers = j.find("headers");
  if (headers == j.end() || !headers->is_object()) {
    return bad("no `headers` object");
  }
  for (const auto& [name, value] : headers->items()) {
    if (!value.is_string()) {
      return bad("header `" + dingtalk::cap_text(name, 64) + "` is not a string");
    }
  }
  Frame f;
  if (!header(*headers, "messageId", f.message_id) || !header(*headers, "topic", f.topic) ||
      !header(*headers, "eventType", f.event_type) || !header(*headers, "eventId", f.event_id) ||
      !header(*headers, "eventCorpId", f.event_corp_id)) {
    return bad("a header is longer than " + std::to_string(k_max_field_bytes) + " bytes");
  }
  if (f.message_id.empty()) {
    return bad("no `messageId` header");
  }
  if (const auto data = j.find("data"); data != j.end() && !data->is_null()) {
    if (!data->is_string()) {
      return bad("`data` is not a string");
    }
    f.data = data->get<std::string>();
  }
  const std::string& t = type->get_ref<const std::string&>();
  if (t == "SYSTEM") {
    if (f.topic == "ping") {
      f.kind = Frame::Kind::ping;
    } else if (f.topic == "disconnect") {
      f.kind = Frame::Kind::disconnect;
    } else {
      f.kind = Frame::Kind::system_other;
    }
  } else if (t == "EVENT") {
    f.kind = Frame::Kind::event;
  } else if (t == "CALLBACK") {
    f.kind = Frame::Kind::callback;
  } else {
    f.kind = Frame::Kind::other;
  }
  return f;
}

std::string disconnect_reason(const Frame& f) {
  const json j = parse_json(f.data);
  if (!j.is_object()) {
    return "";
  }
  const auto reason = j.find("reason");
  if (reason == j.end() || !reason->is_string()) {
    return "";
  }
  return dingtalk::cap_text(reason->get_ref<const std::string&>());
}

Result<ReadEvent, std::string> parse_read_event(std::string_view data) {
  const json j = parse_json(data);
  if (!j.is_object()) {
    return err(std::string(j.is_discarded() ? "the event's data is not JSON"
                                            : "the event's data is not a JSON object"));
  }
  ReadEvent e;
  // A string field: absent and null are "", another type is an error.
  auto text = [&j](const char* name, std::string& out, std::string& problem) {
    const auto it = j.find(name);
    if (it == j.end() || it->is_null()) {
      return false;
    }
    if (!it->is_string()) {
      problem = std::string("`") + name + "` is not a string";
      return false;
    }
    out = it->get<std::string>();
    if (out.size() > k_max_field_bytes) {
      problem = std::string("`") + name + "` is longer than " + std::to_string(k_max_field_bytes) +
                " bytes";
    } else if (dingtalk::has_control_character(out)) {
      problem = std::string("`") + name + "` holds a control character";
    }
    return true;
  };
  std::string problem;
  if (!text("processQueryKey", e.process_query_key, problem) || e.process_query_key.empty()) {
    return err(problem.empty() ? std::string("no `processQueryKey`") : problem);
  }
  if (!problem.empty()) {
    return err(problem);
  }
  std::string user;
  if (text("userId", user, problem)) {
    if (!problem.empty()) {
      return err(problem);
    }
    if (user.empty()) {
      return err(std::string("`userId` is empty"));
    }
    e.user_id = std::move(user);
  } else if (!problem.empty()) {
    return err(problem);
  }
  for (const auto& [name, field] : {std::pair<const char*, std::string*>{"unionId", &e.union_id},
                                    {"robotCode", &e.robot_code},
                                    {"openConversationId", &e.open_conversation_id}}) {
    text(name, *field, problem);
    if (!problem.empty()) {
      return err(problem);
    }
  }
  if (const auto t = j.find("operatTime"); t != j.end() && !t->is_null()) {
    const auto ms = dingtalk::epoch_ms(*t);
    if (!ms || !dingtalk::plausible_read_time_ms(*ms)) {
      return err(std::string("`operatTime` is not a time in epoch milliseconds"));
    }
    e.read_at = from_unix_ms(*ms);
  }
  return e;
}

std::string ping_answer(const Frame& ping) {
  return answer(200, ping.message_id, "OK", ping.data);
}

std::string event_ack(std::string_view message_id) {
  return answer(200, message_id, "OK", R"({"status":"SUCCESS","message":""})");
}

std::string callback_refusal(std::string_view message_id) {
  return answer(404, message_id, "unknown topic",
                R"({"status":"LATER","message":"not subscribed"})");
}

} // namespace rrd::stream
