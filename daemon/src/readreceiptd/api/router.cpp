#include "readreceiptd/api/router.hpp"

#include <array>
#include <cctype>
#include <nlohmann/json.hpp>
#include <openssl/crypto.h>
#include <openssl/sha.h>

namespace rrd::api {

namespace {

using nlohmann::json;

constexpr std::string_view k_messages = "/v1/messages";
constexpr std::string_view k_messages_prefix = "/v1/messages/";
constexpr std::string_view k_dead_letters = "/v1/dead-letters";
constexpr std::string_view k_dead_letters_prefix = "/v1/dead-letters/";
constexpr std::string_view k_replay_suffix = "/replay";

std::string dump(const json& j) {
  // Keys and labels come from users: never throw on bad UTF-8.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

json time_or_null(const std::optional<TimePoint>& t) {
  return t ? json(format_rfc3339(*t)) : json(nullptr);
}

json message_to_json(const MessageRecord& m) {
  json j;
  j["process_query_key"] = m.spec.process_query_key;
  j["open_conversation_id"] = m.spec.open_conversation_id;
  j["robot_code"] = m.spec.robot_code;
  j["source"] = to_string(m.source);
  j["state"] = m.stopped ? "stopped" : "tracking";
  j["read_count"] = m.read_user_ids.size();
  j["read_user_ids"] = m.read_user_ids;
  j["expected_readers"] = m.spec.expected_readers;
  const auto expected = expected_count(m.spec);
  j["expected_reader_count"] = expected ? json(*expected) : json(nullptr);
  j["send_status"] = m.send_status;
  j["stop_reason"] = m.stop_reason ? json(to_string(*m.stop_reason)) : json(nullptr);
  j["stop_detail"] = m.stop_detail;
  j["stopped_at"] = time_or_null(m.stopped_at);
  j["sent_at"] = format_rfc3339(m.sent_at);
  j["added_at"] = format_rfc3339(m.added_at);
  j["last_poll"] = time_or_null(m.last_poll);
  j["next_poll"] = m.stopped ? json(nullptr) : json(format_rfc3339(m.next_poll));
  j["last_sequence"] = m.last_sequence;
  j["webhooks"] = m.spec.webhooks ? json(*m.spec.webhooks) : json(nullptr);
  j["labels"] = m.spec.labels.empty() ? json::object() : json(m.spec.labels);
  return j;
}

json dead_letter_to_json(const store::DeadLetter& d) {
  return json{{"event_id", d.delivery.event_id},
              {"webhook", d.delivery.webhook},
              {"process_query_key", d.delivery.process_query_key},
              {"type", to_string(d.delivery.type)},
              {"sequence", d.delivery.sequence},
              {"attempts", d.delivery.attempts},
              {"last_error", d.delivery.last_error},
              {"died_at", time_or_null(d.died_at)}};
}

Reply json_reply(int status, const json& j) {
  return Reply{status, dump(j), {}};
}

Reply method_not_allowed(std::string_view allow) {
  Reply r = error_reply(405, "method not allowed; use " + std::string(allow));
  r.headers.emplace_back("Allow", std::string(allow));
  return r;
}

Reply not_found() {
  return error_reply(404, "no such resource");
}

Routed immediate(Reply r) {
  return Routed{std::move(r), {}};
}
Routed later(Command c) {
  return Routed{std::nullopt, std::move(c)};
}

// Splits "a=b&c=d" into decoded pairs ('+' is a space in a query).
std::optional<std::vector<std::pair<std::string, std::string>>> parse_query(std::string_view q) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!q.empty()) {
    const auto amp = q.find('&');
    std::string part(q.substr(0, amp));
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    if (part.empty()) {
      continue;
    }
    for (auto& c : part) {
      if (c == '+') {
        c = ' ';
      }
    }
    const auto eq = part.find('=');
    auto name = url_decode(std::string_view(part).substr(0, eq));
    auto value = url_decode(eq == std::string::npos ? std::string_view{}
                                                    : std::string_view(part).substr(eq + 1));
    if (!name || !value) {
      return std::nullopt;
    }
    out.emplace_back(std::move(*name), std::move(*value));
  }
  return out;
}

Routed list_messages(std::string_view query) {
  const auto params = parse_query(query);
  if (!params) {
    return immediate(error_reply(400, "malformed query string"));
  }
  std::optional<bool> want_stopped;
  for (const auto& [name, value] : *params) {
    if (name != "state") {
      return immediate(error_reply(400, "unknown query parameter \"" + name + "\""));
    }
    if (value == "tracking") {
      want_stopped = false;
    } else if (value == "stopped") {
      want_stopped = true;
    } else {
      return immediate(error_reply(400, "state: must be tracking or stopped"));
    }
  }
  return later([want_stopped](Backend& b) {
    json list = json::array();
    for (const auto& m : b.messages()) {
      if (!want_stopped || *want_stopped == m.stopped) {
        list.push_back(message_to_json(m));
      }
    }
    return json_reply(200, json{{"messages", std::move(list)}});
  });
}

Routed add_message(std::string body) {
  return later([body = std::move(body)](Backend& b) {
    config::ParsedMessage parsed;
    try {
      parsed = config::parse_message_json(body, b.config());
    } catch (const config::ConfigError& e) {
      std::string all;
      for (const auto& error : e.errors()) {
        all += (all.empty() ? "" : "; ") + error;
      }
      return json_reply(400, json{{"error", all}, {"errors", e.errors()}});
    }
    const MessageSpec& spec = parsed.spec;
    const auto with_warnings = [&](json j) {
      if (!parsed.warnings.empty()) {
        j["warnings"] = parsed.warnings;
      }
      return j;
    };
    const std::string& key = spec.process_query_key;
    switch (b.add_message(spec)) {
    case AddOutcome::created:
      return json_reply(201, with_warnings(message_to_json(*b.message(key))));
    case AddOutcome::unchanged:
      return json_reply(200, with_warnings(message_to_json(*b.message(key))));
    case AddOutcome::conflict:
      return error_reply(409, "process_query_key: \"" + key +
                                  "\" is already watched with other fields; delete it first");
    case AddOutcome::already_stopped: {
      const auto m = b.message(key);
      std::string reason = m && m->stop_reason ? to_string(*m->stop_reason) : "unknown";
      return error_reply(409, "process_query_key: \"" + key + "\" was tracked and has stopped (" +
                                  reason + "); a processQueryKey is tracked at most once");
    }
    }
    return error_reply(500, "internal error");
  });
}

Routed one_message(const std::string& method, const std::string& key) {
  if (method == "GET") {
    return later([key](Backend& b) {
      const auto m = b.message(key);
      return m ? json_reply(200, message_to_json(*m)) : error_reply(404, "no such message");
    });
  }
  if (method == "DELETE") {
    return later([key](Backend& b) {
      return b.remove_message(key) ? Reply{204, "", {}} : error_reply(404, "no such message");
    });
  }
  return immediate(method_not_allowed("GET, DELETE"));
}

Routed dead_letters(const std::string& method) {
  if (method != "GET") {
    return immediate(method_not_allowed("GET"));
  }
  return later([](Backend& b) {
    json list = json::array();
    for (const auto& d : b.dead_letters()) {
      list.push_back(dead_letter_to_json(d));
    }
    return json_reply(200, json{{"dead_letters", std::move(list)}});
  });
}

Routed replay(const std::string& method, const std::string& event_id) {
  if (method != "POST") {
    return immediate(method_not_allowed("POST"));
  }
  return later([event_id](Backend& b) {
    const int n = b.replay_dead_letter(event_id);
    if (n == 0) {
      return error_reply(404, "no dead letter with this event id");
    }
    return json_reply(202, json{{"event_id", event_id}, {"requeued", n}});
  });
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

} // namespace

const char* describe(Readiness r) {
  switch (r) {
  case Readiness::starting:
    return "starting";
  case Readiness::waiting_for_token:
    return "waiting for the first DingTalk access token";
  case Readiness::ready:
    return "ready";
  case Readiness::stopping:
    return "stopping";
  }
  return "unknown";
}

std::optional<std::string> url_decode(std::string_view text) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') {
      return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
      return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
      return c - 'A' + 10;
    }
    return -1;
  };
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    if (i + 2 >= text.size()) {
      return std::nullopt;
    }
    const int hi = hex(text[i + 1]);
    const int lo = hex(text[i + 2]);
    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
      return std::nullopt;
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

bool bearer_matches(std::string_view authorization, const std::string& token) {
  constexpr std::string_view k_scheme = "bearer ";
  if (authorization.size() < k_scheme.size()) {
    return false;
  }
  for (std::size_t i = 0; i < k_scheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != k_scheme[i]) {
      return false;
    }
  }
  std::string_view given = authorization.substr(k_scheme.size());
  while (!given.empty() && given.front() == ' ') {
    given.remove_prefix(1);
  }
  // Compare digests, so that the time taken depends on neither the bytes
  // nor the length of the token.
  std::array<unsigned char, SHA256_DIGEST_LENGTH> a{};
  std::array<unsigned char, SHA256_DIGEST_LENGTH> b{};
  SHA256(reinterpret_cast<const unsigned char*>(given.data()), given.size(), a.data());
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), b.data());
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string error_body(std::string_view text) {
  return dump(json{{"error", std::string(text)}});
}

Reply error_reply(int status, std::string_view text) {
  return Reply{status, error_body(text), {}};
}

std::string message_json(const MessageRecord& m) {
  return dump(message_to_json(m));
}

std::string dead_letter_json(const store::DeadLetter& d) {
  return dump(dead_letter_to_json(d));
}

Routed route(const Request& request, const std::string& token, const Health& health) {
  const std::string_view target = request.target;
  const auto question = target.find('?');
  const std::string_view path = target.substr(0, question);
  const std::string_view query =
      question == std::string_view::npos ? std::string_view{} : target.substr(question + 1);
  const std::string& method = request.method;

  if (path == "/healthz") {
    if (method != "GET") {
      return immediate(method_not_allowed("GET"));
    }
    return immediate(health.loop_alive
                         ? json_reply(200, json{{"status", "ok"}})
                         : json_reply(503, json{{"status", "unhealthy"},
                                                {"reason", "the scheduler loop is not turning"}}));
  }

  if (!token.empty() && !bearer_matches(request.authorization, token)) {
    Reply r = error_reply(401, request.authorization.empty() ? "missing bearer token"
                                                             : "wrong bearer token");
    r.headers.emplace_back("WWW-Authenticate", "Bearer");
    return immediate(std::move(r));
  }

  if (path == "/readyz") {
    if (method != "GET") {
      return immediate(method_not_allowed("GET"));
    }
    if (!health.loop_alive) {
      return immediate(
          json_reply(503, json{{"ready", false}, {"reason", "the scheduler loop is not turning"}}));
    }
    if (health.readiness != Readiness::ready) {
      return immediate(
          json_reply(503, json{{"ready", false}, {"reason", describe(health.readiness)}}));
    }
    return immediate(json_reply(200, json{{"ready", true}}));
  }

  if (path == k_messages) {
    if (method == "GET") {
      return list_messages(query);
    }
    if (method == "POST") {
      return add_message(request.body);
    }
    return immediate(method_not_allowed("GET, POST"));
  }

  if (starts_with(path, k_messages_prefix) && path.size() > k_messages_prefix.size()) {
    const auto key = url_decode(path.substr(k_messages_prefix.size()));
    if (!key) {
      return immediate(error_reply(400, "malformed percent-encoding in the path"));
    }
    return one_message(method, *key);
  }

  if (path == k_dead_letters) {
    return dead_letters(method);
  }

  if (starts_with(path, k_dead_letters_prefix) && ends_with(path, k_replay_suffix) &&
      path.size() > k_dead_letters_prefix.size() + k_replay_suffix.size()) {
    const auto id = url_decode(
        path.substr(k_dead_letters_prefix.size(),
                    path.size() - k_dead_letters_prefix.size() - k_replay_suffix.size()));
    if (!id) {
      return immediate(error_reply(400, "malformed percent-encoding in the path"));
    }
    return replay(method, *id);
  }

  return immediate(not_found());
}

} // namespace rrd::api
