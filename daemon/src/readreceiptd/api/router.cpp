#include "readreceiptd/api/router.hpp"

#include "readreceiptd/api/page.hpp"
#include "readreceiptd/common/base64.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <nlohmann/json.hpp>
#include <openssl/crypto.h>
#include <openssl/sha.h>

namespace rrd::api {

// What a handler is given: the request and what route() made of it.
struct Call {
  const Request& request;
  const Health& health;
  std::string param; // the decoded {parameter}; "" for a route without one
  // The query's parameters, decoded, each one the operation accepts.
  std::vector<std::pair<std::string, std::string>> query;
};

namespace {

using nlohmann::json;

std::string dump(const json& j) {
  // Keys and labels come from users: never throw on bad UTF-8.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

json time_or_null(const std::optional<TimePoint>& t) {
  return t ? json(format_rfc3339(*t)) : json(nullptr);
}

// Each reader with what is known of the read, in first-read order. A
// reader without read_info (a record that should not exist) is one a poll
// saw at an unknown time.
json readers_to_json(const MessageRecord& m) {
  json out = json::array();
  for (std::size_t i = 0; i < m.read_user_ids.size(); ++i) {
    const ReadInfo info = i < m.read_info.size() ? m.read_info[i] : ReadInfo{};
    out.push_back(json{{"user_id", m.read_user_ids[i]},
                       {"read_at", time_or_null(info.read_at)},
                       {"via", to_string(info.via)}});
  }
  return out;
}

// The resource keeps one set of fields: unread_user_ids is null, not
// absent, when no list of expected readers says who is missing (the
// webhook event leaves it out instead).
json message_to_json(const MessageRecord& m) {
  json j;
  j["process_query_key"] = m.spec.process_query_key;
  j["kind"] = to_string(m.spec.kind); // the token, a secret, is never shown
  j["open_conversation_id"] = m.spec.open_conversation_id;
  j["robot_code"] = m.spec.robot_code;
  j["source"] = to_string(m.source);
  j["state"] = m.stopped ? "stopped" : "tracking";
  j["read_count"] = m.read_user_ids.size();
  j["read_user_ids"] = m.read_user_ids;
  j["readers"] = readers_to_json(m);
  // The readers it waits for: the configured ones, else (oto) the
  // recipients DingTalk lists.
  const auto& expected_ids = expected_reader_ids(m);
  j["expected_readers"] = expected_ids;
  j["unread_user_ids"] = expected_ids.empty() ? json(nullptr) : json(unread_user_ids(m));
  const auto expected = expected_count(m);
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

json event_to_json(const store::StoredEvent& e) {
  json deliveries = json::array();
  for (const auto& d : e.deliveries) {
    const bool pending = d.state == DeliveryState::pending;
    deliveries.push_back(
        json{{"webhook", d.webhook},
             {"state", to_string(d.state)},
             {"attempts", d.attempts},
             {"last_error", d.last_error},
             {"next_attempt", pending ? json(format_rfc3339(d.next_attempt)) : json(nullptr)},
             {"died_at", time_or_null(d.died_at)}});
  }
  return json{{"event_id", e.id},
              {"type", to_string(e.type)},
              {"sequence", e.sequence},
              {"timestamp", format_rfc3339(e.created_at)},
              {"deliveries", std::move(deliveries)}};
}

// `value` rounded to 1/`scale`: the status shows rates and the stretch, it
// does not measure them (and a status that differs in the tenth decimal
// would be sent again). Dividing gives the double nearest the decimal.
double rounded(double value, double scale) {
  return std::round(value * scale) / scale;
}

json status_to_json(const DaemonStatus& s) {
  json webhooks = json::array();
  for (const auto& w : s.webhooks) {
    webhooks.push_back(json{{"name", w.name},
                            {"configured", w.configured},
                            {"pending_events", w.pending_events},
                            {"oldest_pending_at", time_or_null(w.oldest_pending)},
                            {"dead_letters", w.dead_letters},
                            {"disabled", w.disabled}});
  }
  return json{
      {"version", s.version},
      {"started_at", format_rfc3339(s.started_at)},
      {"ready", s.ready},
      {"role", s.role},
      {"leader", s.leader.empty() ? json(nullptr) : json(s.leader)},
      {"messages", json{{"tracking", s.messages_tracking}, {"stopped", s.messages_stopped}}},
      {"stream", json{{"enabled", s.stream_enabled},
                      {"connected", s.stream_connected},
                      {"since", time_or_null(s.stream_since)},
                      {"last_event_at", time_or_null(s.stream_last_event)}}},
      {"dingtalk",
       json{{"month", s.month},
            {"read_status_calls", s.month_calls},
            {"budget", s.month_call_budget ? json(*s.month_call_budget) : json(nullptr)},
            {"stretch", rounded(s.stretch, 1000)},
            {"quota_exhausted", s.quota_exhausted},
            {"poll_mode", s.poll_mode},
            {"throttling", json{{"throttled", s.current_rate < s.configured_rate},
                                {"current_rate", rounded(s.current_rate, 100)},
                                {"configured_rate", rounded(s.configured_rate, 100)},
                                {"last_throttled_at", time_or_null(s.last_throttled)}}}}},
      {"webhooks", std::move(webhooks)}};
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

Routed healthz(const Call& c) {
  return immediate(c.health.loop_alive
                       ? json_reply(200, json{{"status", "ok"}})
                       : json_reply(503, json{{"status", "unhealthy"},
                                              {"reason", "the scheduler loop is not turning"}}));
}

Routed readyz(const Call& c) {
  if (!c.health.loop_alive) {
    return immediate(
        json_reply(503, json{{"ready", false}, {"reason", "the scheduler loop is not turning"}}));
  }
  if (c.health.readiness != Readiness::ready) {
    return immediate(
        json_reply(503, json{{"ready", false}, {"reason", describe(c.health.readiness)}}));
  }
  return immediate(json_reply(200, json{{"ready", true}}));
}

// One page of messages, in key order, from the cursor on: no more than
// `limit`, built straight from the loop's records (none is copied). The
// page has a next_cursor when another may follow: when one more message
// matched, or when k_max_scanned_per_page messages were looked at.
Routed list_messages(const Call& c) {
  auto query = parse_message_query(c.query);
  if (!query) {
    return immediate(error_reply(400, query.error()));
  }
  return later([q = std::move(*query)](Backend& b) {
    if (q.webhook) {
      const auto& hooks = b.config().webhooks;
      if (std::none_of(hooks.begin(), hooks.end(),
                       [&](const config::Webhook& w) { return w.name == *q.webhook; })) {
        return error_reply(400, "webhook: no webhook is named \"" + *q.webhook + "\"");
      }
    }
    json list = json::array();
    std::optional<std::string> next;
    std::size_t scanned = 0;
    b.visit_messages(q.after, [&](const MessageRecord& m) {
      if (matches(q, m)) {
        if (list.size() == q.limit) {
          next = list.back()["process_query_key"].get<std::string>();
          return false;
        }
        list.push_back(message_to_json(m));
      }
      if (++scanned == k_max_scanned_per_page) {
        next = m.spec.process_query_key;
        return false;
      }
      return true;
    });
    json answer{{"messages", std::move(list)}};
    if (next) {
      answer["next_cursor"] = encode_cursor(*next);
    }
    return json_reply(200, answer);
  });
}

// Why a POST of `spec` conflicts with the message `m` already known.
std::string conflict_text(const MessageRecord& m, const MessageSpec& spec) {
  std::string fields;
  for (const auto& f : differing_fields(m.spec, spec)) {
    fields += (fields.empty() ? "" : ", ") + f;
  }
  std::string text = "process_query_key: \"" + m.spec.process_query_key + "\" ";
  text += m.stopped ? "was tracked" : "is already watched";
  text += " with other fields" + (fields.empty() ? "" : " (" + fields + ")");
  if (m.stopped) {
    return text + " and has stopped (" +
           (m.stop_reason ? to_string(*m.stop_reason) : std::string("unknown")) +
           "); a processQueryKey is tracked at most once";
  }
  if (m.source == MessageSource::config) {
    return text + "; it is listed in the configuration file: change it there and reload";
  }
  return text + "; a message keeps the fields it was added with";
}

// A standby's answer to a write (503 naming the leader), or nullopt while
// this daemon leads.
std::optional<Reply> refuse_on_standby(const Backend& b) {
  const auto leader = b.standby_leader();
  if (!leader) {
    return std::nullopt;
  }
  const std::string text =
      leader->empty() ? "this daemon is a standby and no leader is known yet; try again shortly"
                      : "this daemon is a standby; send writes to the leader, " + *leader;
  return json_reply(503, json{{"error", text}, {"leader", *leader}});
}

Routed add_message(const Call& c) {
  if (c.request.body.empty()) {
    return immediate(
        error_reply(400, "request body: empty; send one messages: item as a JSON object, e.g. "
                         "{\"process_query_key\": \"...\"}"));
  }
  return later([body = c.request.body](Backend& b) {
    if (auto refused = refuse_on_standby(b)) {
      return std::move(*refused);
    }
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
    const AddOutcome outcome = b.add_message(spec);
    const auto m = b.message(key);
    if (!m) {
      return error_reply(500, "internal error");
    }
    switch (outcome) {
    case AddOutcome::created:
      return json_reply(201, with_warnings(message_to_json(*m)));
    case AddOutcome::unchanged:
      // As it is now, whatever its state.
      return json_reply(200, with_warnings(message_to_json(*m)));
    case AddOutcome::conflict:
      return error_reply(409, conflict_text(*m, spec));
    }
    return error_reply(500, "internal error");
  });
}

Routed get_message(const Call& c) {
  return later([key = c.param](Backend& b) {
    const auto m = b.message(key);
    return m ? json_reply(200, message_to_json(*m)) : error_reply(404, "no such message");
  });
}

// Only a message that is tracking and came through the API is stopped:
// a stopped one stays as it stopped, and the configuration file's messages
// are declarative, removed by removing them from the file.
Routed delete_message(const Call& c) {
  return later([key = c.param](Backend& b) {
    if (auto refused = refuse_on_standby(b)) {
      return std::move(*refused);
    }
    const auto m = b.message(key);
    if (!m) {
      return error_reply(404, "no such message");
    }
    const std::string what = "process_query_key: \"" + key + "\" ";
    if (m->stopped) {
      return error_reply(409, what + "has already stopped (" +
                                  (m->stop_reason ? to_string(*m->stop_reason) : "unknown") + ")");
    }
    // A tracking message from the file is one the file lists: a reload
    // stops those it no longer lists.
    if (m->source == MessageSource::config) {
      return error_reply(409, what + "is listed in the configuration file (" + b.config().path +
                                  "); remove it there and reload");
    }
    return b.remove_message(key) ? Reply{204, "", {}} : error_reply(404, "no such message");
  });
}

Routed list_dead_letters(const Call&) {
  return later([](Backend& b) {
    json list = json::array();
    for (const auto& d : b.dead_letters()) {
      list.push_back(dead_letter_to_json(d));
    }
    return json_reply(200, json{{"dead_letters", std::move(list)}});
  });
}

Routed replay_dead_letter(const Call& c) {
  return later([event_id = c.param](Backend& b) {
    if (auto refused = refuse_on_standby(b)) {
      return std::move(*refused);
    }
    const int n = b.replay_dead_letter(event_id);
    if (n == 0) {
      return error_reply(404, "no dead letter with this event id");
    }
    return json_reply(202, json{{"event_id", event_id}, {"requeued", n}});
  });
}

// One page of a message's events, from the store, in sequence order. The
// cursor is the last sequence seen.
Routed list_message_events(const Call& c) {
  auto query = parse_message_query(c.query);
  if (!query) {
    return immediate(error_reply(400, query.error()));
  }
  std::int64_t after = 0;
  if (!query->after.empty()) {
    bool digits = query->after.size() <= 18; // fits: sequences are int64
    for (const char ch : query->after) {
      digits = digits && ch >= '0' && ch <= '9';
      if (!digits) {
        break;
      }
      after = after * 10 + (ch - '0');
    }
    if (!digits) {
      return immediate(error_reply(
          400,
          "cursor: not a cursor of this call (pass next_cursor from the previous page as is)"));
    }
  }
  return later([key = c.param, after, limit = query->limit](Backend& b) {
    if (!b.message(key)) {
      return error_reply(404, "no such message");
    }
    auto events = b.message_events(key, after, limit + 1);
    json answer{{"process_query_key", key}};
    if (events.size() > limit) {
      events.resize(limit);
      answer["next_cursor"] = encode_cursor(std::to_string(events.back().sequence));
    }
    json list = json::array();
    for (const auto& e : events) {
      list.push_back(event_to_json(e));
    }
    answer["events"] = std::move(list);
    return json_reply(200, answer);
  });
}

Routed get_status(const Call&) {
  return later([](Backend& b) { return json_reply(200, status_to_json(b.status())); });
}

// Served by the server as a stream (updates.hpp): the router only checks
// the token, the method and the parameters.
Routed updates(const Call&) {
  Routed r;
  r.updates = true;
  return r;
}

// The raw text a path template's {parameter} matched in `path`, or nullopt
// when the path does not match. Templates have at most one parameter.
std::optional<std::string_view> match(std::string_view pattern, std::string_view path) {
  const auto open = pattern.find('{');
  if (open == std::string_view::npos) {
    return pattern == path ? std::optional<std::string_view>(std::string_view{}) : std::nullopt;
  }
  const auto close = pattern.find('}', open);
  const std::string_view prefix = pattern.substr(0, open);
  const std::string_view suffix = pattern.substr(close + 1);
  if (path.size() <= prefix.size() + suffix.size() || path.substr(0, prefix.size()) != prefix ||
      path.substr(path.size() - suffix.size()) != suffix) {
    return std::nullopt;
  }
  return path.substr(prefix.size(), path.size() - prefix.size() - suffix.size());
}

std::string allowed_methods(const Route& r) {
  std::string out;
  for (const auto& op : r.operations) {
    out += (out.empty() ? "" : ", ") + std::string(op.method);
  }
  return out;
}

} // namespace

const std::vector<Route>& routes() {
  static const std::vector<Route> k_routes{
      {"/healthz", false, {{"GET", {}, healthz}}},
      {"/readyz", false, {{"GET", {}, readyz}}},
      {"/v1/messages",
       true,
       {{"GET", {"state", "label", "webhook", "limit", "cursor"}, list_messages},
        {"POST", {}, add_message}}},
      // Before /v1/messages/{key}, whose {key} would match "K/events" too.
      {"/v1/messages/{key}/events", true, {{"GET", {"limit", "cursor"}, list_message_events}}},
      {"/v1/messages/{key}", true, {{"GET", {}, get_message}, {"DELETE", {}, delete_message}}},
      {"/v1/dead-letters", true, {{"GET", {}, list_dead_letters}}},
      {"/v1/dead-letters/{event_id}/replay", true, {{"POST", {}, replay_dead_letter}}},
      {"/v1/status", true, {{"GET", {}, get_status}}},
      {"/v1/updates", true, {{"GET", {}, updates}}},
  };
  return k_routes;
}

const char* describe(Readiness r) {
  switch (r) {
  case Readiness::starting:
    return "starting";
  case Readiness::waiting_for_token:
    return "waiting for the first DingTalk access token";
  case Readiness::ready:
    return "ready";
  case Readiness::standby:
    return "standby";
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

bool is_json_media_type(std::string_view content_type) {
  constexpr std::string_view k_type = "application/json";
  std::string_view t = content_type.substr(0, content_type.find(';'));
  while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) {
    t.remove_prefix(1);
  }
  while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) {
    t.remove_suffix(1);
  }
  if (t.size() != k_type.size()) {
    return false;
  }
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(t[i])) != k_type[i]) {
      return false;
    }
  }
  return true;
}

std::string error_body(std::string_view text) {
  return dump(json{{"error", std::string(text)}});
}

Reply error_reply(int status, std::string_view text) {
  return Reply{status, error_body(text), {}};
}

Result<MessageQuery, std::string>
parse_message_query(const std::vector<std::pair<std::string, std::string>>& params) {
  MessageQuery q;
  std::vector<std::string> seen;
  for (const auto& [name, value] : params) {
    if (name != "label") {
      if (std::find(seen.begin(), seen.end(), name) != seen.end()) {
        return err(name + ": given more than once");
      }
      seen.push_back(name);
    }
    if (name == "state") {
      if (value != "tracking" && value != "stopped") {
        return err("state: must be tracking or stopped, not \"" + value + "\"");
      }
      q.stopped = value == "stopped";
    } else if (name == "label") {
      const auto eq = value.find('=');
      if (eq == std::string::npos || eq == 0) {
        return err("label: must be key=value, not \"" + value + "\"");
      }
      q.labels.emplace_back(value.substr(0, eq), value.substr(eq + 1));
    } else if (name == "webhook") {
      if (value.empty()) {
        return err(std::string("webhook: must name a webhook"));
      }
      q.webhook = value;
    } else if (name == "limit") {
      std::size_t n = 0;
      bool digits = !value.empty() && value.size() <= 6;
      for (const char ch : value) {
        digits = digits && ch >= '0' && ch <= '9';
        n = n * 10 + static_cast<std::size_t>(ch - '0');
      }
      if (!digits || n < 1 || n > k_max_page_size) {
        return err("limit: must be a whole number from 1 to " + std::to_string(k_max_page_size) +
                   ", not \"" + value + "\"");
      }
      q.limit = n;
    } else if (name == "cursor") {
      auto key = decode_cursor(value);
      if (!key) {
        return err(std::string(
            "cursor: not a cursor of this API (pass next_cursor from the previous page as is)"));
      }
      q.after = std::move(*key);
    } else {
      return err("unknown query parameter \"" + name + "\"");
    }
  }
  return q;
}

bool matches(const MessageQuery& q, const MessageRecord& m) {
  if (q.stopped && *q.stopped != m.stopped) {
    return false;
  }
  for (const auto& [key, value] : q.labels) {
    const auto it = m.spec.labels.find(key);
    if (it == m.spec.labels.end() || it->second != value) {
      return false;
    }
  }
  if (q.webhook && m.spec.webhooks &&
      std::find(m.spec.webhooks->begin(), m.spec.webhooks->end(), *q.webhook) ==
          m.spec.webhooks->end()) {
    return false;
  }
  return true;
}

std::string encode_cursor(std::string_view key) {
  std::string out = base64_encode(key);
  while (!out.empty() && out.back() == '=') {
    out.pop_back();
  }
  for (auto& ch : out) {
    ch = ch == '+' ? '-' : ch == '/' ? '_' : ch;
  }
  return out;
}

std::optional<std::string> decode_cursor(std::string_view cursor) {
  std::string standard(cursor);
  for (auto& ch : standard) {
    if (ch == '+' || ch == '/' || ch == '=') {
      return std::nullopt; // base64url, unpadded: never these
    }
    ch = ch == '-' ? '+' : ch == '_' ? '/' : ch;
  }
  auto key = base64_decode(standard);
  if (!key || key->empty() || encode_cursor(*key) != cursor) {
    return std::nullopt;
  }
  return key;
}

std::vector<std::string> differing_fields(const MessageSpec& a, const MessageSpec& b) {
  std::vector<std::string> out;
  auto check = [&](bool same, const char* name) {
    if (!same) {
      out.emplace_back(name);
    }
  };
  check(a.process_query_key == b.process_query_key, "process_query_key");
  check(a.kind == b.kind, "kind");
  check(a.token == b.token, "token"); // named, never shown
  check(a.open_conversation_id == b.open_conversation_id, "open_conversation_id");
  check(a.robot_code == b.robot_code, "robot_code");
  check(a.expected_readers == b.expected_readers, "expected_readers");
  check(a.expected_reader_count == b.expected_reader_count, "expected_reader_count");
  check(a.sent_at == b.sent_at, "sent_at");
  check(a.webhooks == b.webhooks, "webhooks");
  check(a.labels == b.labels, "labels");
  return out;
}

std::string message_json(const MessageRecord& m) {
  return dump(message_to_json(m));
}

std::string dead_letter_json(const store::DeadLetter& d) {
  return dump(dead_letter_to_json(d));
}

std::string event_json(const store::StoredEvent& e) {
  return dump(event_to_json(e));
}

std::string status_json(const DaemonStatus& s) {
  return dump(status_to_json(s));
}

Routed route(const Request& request, const std::string& token, const Health& health) {
  const std::string_view target = request.target;
  const auto question = target.find('?');
  const std::string_view path = target.substr(0, question);
  const std::string_view query =
      question == std::string_view::npos ? std::string_view{} : target.substr(question + 1);

  // The status page and its files: no token, no data.
  if (const web::Asset* asset = web::find_asset(path)) {
    if (request.method != "GET") {
      return immediate(method_not_allowed("GET"));
    }
    return immediate(asset_reply(*asset, query, request.if_none_match));
  }

  const Route* found = nullptr;
  std::string_view raw_param;
  for (const auto& r : routes()) {
    if (const auto m = match(r.path, path)) {
      found = &r;
      raw_param = *m;
      break;
    }
  }
  // Unknown paths need the token too: without it, nothing is revealed.
  if ((found == nullptr || found->needs_token) && !token.empty() &&
      !bearer_matches(request.authorization, token)) {
    Reply r = error_reply(401, request.authorization.empty() ? "missing bearer token"
                                                             : "wrong bearer token");
    r.headers.emplace_back("WWW-Authenticate", "Bearer");
    return immediate(std::move(r));
  }
  if (found == nullptr) {
    return immediate(not_found());
  }
  const Operation* op = nullptr;
  for (const auto& o : found->operations) {
    if (o.method == request.method) {
      op = &o;
    }
  }
  if (op == nullptr) {
    return immediate(method_not_allowed(allowed_methods(*found)));
  }
  const auto param = url_decode(raw_param);
  if (!param) {
    return immediate(error_reply(400, "malformed percent-encoding in the path"));
  }
  auto params = parse_query(query);
  if (!params) {
    return immediate(error_reply(400, "malformed query string"));
  }
  for (const auto& [name, value] : *params) {
    if (std::find(op->query_parameters.begin(), op->query_parameters.end(), name) ==
        op->query_parameters.end()) {
      return immediate(error_reply(400, "unknown query parameter \"" + name + "\""));
    }
  }
  // A body is JSON, and says so. An empty one (a POST without -d) is no
  // body at all: the calls that need one say what is missing.
  if (!request.body.empty() && !is_json_media_type(request.content_type)) {
    Reply r = error_reply(
        415, request.content_type.empty()
                 ? "Content-Type: missing; a request body must be application/json"
                 : "Content-Type: must be application/json, not \"" + request.content_type + "\"");
    r.headers.emplace_back("Accept", "application/json");
    return immediate(std::move(r));
  }
  return op->handler(Call{request, health, *param, std::move(*params)});
}

} // namespace rrd::api
