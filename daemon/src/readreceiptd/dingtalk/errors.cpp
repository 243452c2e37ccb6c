#include "readreceiptd/dingtalk/errors.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <string_view>

namespace rrd::dingtalk {
namespace {

// query: privateChatMessages; group_query, oto_query: the other kinds'.
enum class Api { query, group_query, oto_query, token };

constexpr std::string_view k_code_not_ready = "processQueryKey.expireTime";
constexpr std::string_view k_code_system_error = "system.error";
constexpr std::string_view k_code_invalid_auth = "InvalidAuthentication";
constexpr std::string_view k_code_cursor_invalid = "invalidParameter.cursor.invalid";
// groupMessages/query: the token names no robot.
constexpr std::string_view k_code_group_invalid = "invalidParameter.invalid";
constexpr std::string_view k_prefix_auth_failed = "AuthenticationFailed.";
constexpr std::string_view k_prefix_forbidden = "Forbidden.";
constexpr std::array<std::string_view, 3> k_throttle_prefixes = {
    "Forbidden.AccessDenied.Qps", "Forbidden.AccessDenied.Qpm",
    "Forbidden.AccessDenied.ApiCountLimit"};
constexpr std::string_view k_prefix_quota = "Forbidden.AccessDenied.ApiCountLimit";

constexpr std::array<std::string_view, 9> k_invalid_codes = {
    "invalid.processQueryKey",
    "invalidParameter.processQueryKey.missing",
    "invalid.openConversationId",
    "openConversationId.notExisted",
    "conversation.org.dismatch",
    "invalidParameter.robotCode.notExsit",
    "invalidParameter.robotCode.invalid",
    "invalidParameter.robotCode.missing",
    "resource.not.found",
};
constexpr std::array<std::string_view, 3> k_pause_bot_codes = {
    "bot.stopped", "template.not.existed", "template.stopped"};
constexpr std::array<std::string_view, 2> k_pause_auth_codes = {"unauthorized", "auth.error"};
constexpr std::array<std::string_view, 4> k_token_credential_codes = {
    "invalidClientIdOrSecret", "invalidSuiteKey", "invalidSuiteTicket", "invalidAuthInfo"};

template <std::size_t N>
bool one_of(std::string_view code, const std::array<std::string_view, N>& list) {
  return std::find(list.begin(), list.end(), code) != list.end();
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

bool is_throttle_code(std::string_view code) {
  return std::any_of(k_throttle_prefixes.begin(), k_throttle_prefixes.end(),
                     [&](std::string_view p) { return starts_with(code, p); });
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

std::string_view header_value(const http::Response& r, std::string_view name) {
  for (const auto& [n, v] : r.headers) {
    if (lower(n) == name) {
      return v;
    }
  }
  return {};
}

// DingTalk's IP ban (and proxies in front of it) answer with an HTML page.
bool looks_like_html(const http::Response& r) {
  std::string_view body = r.body;
  if (starts_with(body, "\xEF\xBB\xBF")) {
    body.remove_prefix(3);
  }
  const auto first = body.find_first_not_of(" \t\r\n");
  const char lead = first == std::string_view::npos ? '\0' : body[first];
  if (lead == '<') {
    return true;
  }
  const bool html_type =
      lower(header_value(r, "content-type")).find("text/html") != std::string::npos;
  return html_type && lead != '{' && lead != '[';
}

Decision make(Action a, FailureReason reason, std::string code, std::string message) {
  return Decision{a, reason, std::move(code), std::move(message)};
}

std::string status_text(int status) {
  return "HTTP " + std::to_string(status);
}

Decision classify_code(Api api, const ErrorBody& e) {
  const std::string_view code = e.code;
  if (api == Api::token) {
    if (one_of(code, k_token_credential_codes) || code == k_code_invalid_auth ||
        one_of(code, k_pause_auth_codes) || starts_with(code, k_prefix_auth_failed) ||
        starts_with(code, k_prefix_forbidden)) {
      return make(Action::auth_failed, FailureReason::auth, e.code, e.message);
    }
    return make(Action::client_bug, FailureReason::client, e.code, e.message);
  }
  if (code == k_code_not_ready) {
    return make(Action::not_ready_or_expired, FailureReason::none, e.code, e.message);
  }
  if (one_of(code, k_invalid_codes) || (api == Api::group_query && code == k_code_group_invalid)) {
    return make(Action::stop_invalid, FailureReason::client, e.code, e.message);
  }
  if (one_of(code, k_pause_bot_codes)) {
    return make(Action::pause, FailureReason::client, e.code, e.message);
  }
  if (one_of(code, k_pause_auth_codes) || starts_with(code, k_prefix_forbidden)) {
    return make(Action::pause, FailureReason::auth, e.code, e.message);
  }
  if (code == k_code_invalid_auth) {
    return make(Action::refresh_token, FailureReason::auth, e.code, e.message);
  }
  if (starts_with(code, k_prefix_auth_failed)) {
    return make(Action::client_bug, FailureReason::auth, e.code, e.message);
  }
  if (code == k_code_cursor_invalid) {
    return make(Action::restart_pagination, FailureReason::client, e.code, e.message);
  }
  // invalidParameter.param.invalid, invalidParameter.pageSize.invalid and
  // every code the table does not know: a request DingTalk refused that we
  // cannot act on; logged as a bug and retried on the schedule.
  return make(Action::client_bug, FailureReason::client, e.code, e.message);
}

Decision classify_answer(const http::Response& r, Api api, Page* page, Token* token) {
  switch (r.failure) {
  case http::Failure::timeout:
    return make(Action::transient, FailureReason::timeout, "", http::describe(r));
  case http::Failure::network:
    return make(Action::transient, FailureReason::network, "", http::describe(r));
  case http::Failure::too_large:
    return make(Action::bad_response, FailureReason::bad_response, "",
                "answer body larger than " + std::to_string(k_max_response_bytes) + " bytes");
  case http::Failure::none:
    break;
  }
  if (r.body.size() > k_max_response_bytes) {
    return make(Action::bad_response, FailureReason::bad_response, "",
                "answer body larger than " + std::to_string(k_max_response_bytes) + " bytes");
  }
  if (looks_like_html(r)) {
    return make(Action::throttled, FailureReason::throttled, "",
                "HTML page instead of JSON (" + status_text(r.status) + ")");
  }
  if (r.status >= 200 && r.status < 300) {
    if (api != Api::token) {
      auto parsed = api == Api::oto_query     ? parse_oto_status(r.body)
                    : api == Api::group_query ? parse_group_page(r.body)
                                              : parse_query_page(r.body);
      if (!parsed) {
        return make(Action::bad_response, FailureReason::bad_response, "",
                    status_text(r.status) +
                        " answer is not the documented JSON: " + parsed.error());
      }
      if (page != nullptr) {
        *page = std::move(parsed).value();
      }
    } else {
      auto parsed = parse_token_answer(r.body);
      if (!parsed) {
        return make(Action::bad_response, FailureReason::bad_response, "",
                    status_text(r.status) +
                        " token answer is not the documented JSON: " + parsed.error());
      }
      if (token != nullptr) {
        *token = std::move(parsed).value();
      }
    }
    return make(Action::ok, FailureReason::none, "", "");
  }

  const auto body = parse_error_body(r.body);
  const std::string code = body ? body->code : std::string();
  const std::string message = body ? body->message : std::string();
  if (api != Api::token && code.rfind(k_prefix_quota, 0) == 0) {
    return make(Action::quota_exhausted, FailureReason::throttled, code,
                message.empty() ? status_text(r.status) : message);
  }
  if (r.status == 429 || is_throttle_code(code)) {
    return make(Action::throttled, FailureReason::throttled, code,
                message.empty() ? status_text(r.status) : message);
  }
  if (r.status >= 500 || code == k_code_system_error) {
    return make(Action::transient, FailureReason::server, code,
                message.empty() ? status_text(r.status) : message);
  }
  if (r.status >= 400 && r.status < 500) {
    if (!body) {
      return make(Action::bad_response, FailureReason::bad_response, "",
                  status_text(r.status) + " without a DingTalk error body");
    }
    return classify_code(api, *body);
  }
  return make(Action::bad_response, FailureReason::bad_response, code,
              "unexpected " + status_text(r.status));
}

} // namespace

const char* to_string(Action a) {
  switch (a) {
  case Action::ok:
    return "ok";
  case Action::not_ready_or_expired:
    return "not_ready_or_expired";
  case Action::stop_invalid:
    return "stop_invalid";
  case Action::pause:
    return "pause";
  case Action::refresh_token:
    return "refresh_token";
  case Action::restart_pagination:
    return "restart_pagination";
  case Action::client_bug:
    return "client_bug";
  case Action::throttled:
    return "throttled";
  case Action::transient:
    return "transient";
  case Action::bad_response:
    return "bad_response";
  case Action::quota_exhausted:
    return "quota_exhausted";
  case Action::auth_failed:
    return "auth_failed";
  }
  return "unknown";
}

const char* to_string(FailureReason r) {
  switch (r) {
  case FailureReason::none:
    return "none";
  case FailureReason::throttled:
    return "throttled";
  case FailureReason::auth:
    return "auth";
  case FailureReason::server:
    return "server";
  case FailureReason::network:
    return "network";
  case FailureReason::timeout:
    return "timeout";
  case FailureReason::bad_response:
    return "bad_response";
  case FailureReason::client:
    return "client";
  }
  return "unknown";
}

void withhold_quoted_secrets(Decision& d, std::string_view body,
                             std::initializer_list<std::string_view> secrets) {
  bool quoted = false;
  bool in_code = d.code.size() > k_max_message_chars; // cut: part of a secret could end it
  for (const std::string_view secret : secrets) {
    if (secret.empty()) {
      continue;
    }
    quoted = quoted || body.find(secret) != std::string_view::npos ||
             d.message.find(secret) != std::string::npos;
    in_code = in_code || d.code.find(secret) != std::string::npos;
  }
  if (quoted || in_code) {
    d.message = std::string(k_withheld);
  }
  if (in_code) {
    d.code = std::string(k_withheld);
  }
}

Decision classify(const http::Response& r, Page* page) {
  return classify_answer(r, Api::query, page, nullptr);
}

Decision classify(const http::Response& r, MessageKind kind, Page* page) {
  switch (kind) {
  case MessageKind::private_chat:
    break;
  case MessageKind::group:
    return classify_answer(r, Api::group_query, page, nullptr);
  case MessageKind::oto:
    return classify_answer(r, Api::oto_query, page, nullptr);
  }
  return classify_answer(r, Api::query, page, nullptr);
}

Decision classify_token(const http::Response& r, Token* token) {
  return classify_answer(r, Api::token, nullptr, token);
}

} // namespace rrd::dingtalk
