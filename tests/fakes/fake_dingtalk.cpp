#include "fakes/fake_dingtalk.hpp"

#include "fakes/codec.hpp"

#include <algorithm>
#include <stdexcept>
#include <thread>

namespace rrd::testing {

namespace {

using json = nlohmann::json;

constexpr auto k_poll_interval = std::chrono::milliseconds(10);
constexpr auto k_endless_chunk_interval = std::chrono::milliseconds(20);
constexpr char k_token_header[] = "x-acs-dingtalk-access-token";
// DingTalk's own Content-Type. Also what keeps httplib from compressing the
// misbehaving answers when the client accepts gzip or brotli: it compresses a
// bare "application/json" only, and brotli on a 5 MiB body takes seconds of
// CPU, during which the answer is not misbehaving the way the test meant.
constexpr char k_json_type[] = "application/json;charset=utf-8";

const std::map<std::string, std::string>& error_messages() {
  static const std::map<std::string, std::string> messages = {
      {"invalidParameter.param.invalid", "Invalid parameter"},
      {"invalidParameter.robotCode.notExsit", "Bot does not exist"},
      {"invalidParameter.robotCode.missing", "Missing robotCode"},
      {"invalidParameter.processQueryKey.missing", "Missing processQueryKey"},
      {"invalidParameter.cursor.invalid", "Invalid nextToken"},
      {"invalidParameter.pageSize.invalid", "Invalid maxResults"},
      {"invalidParameter.robotCode.invalid", "Invalid robotCode"},
      {"invalid.openConversationId", "Invalid openConversationId"},
      {"openConversationId.notExisted", "openConversationId is empty"},
      {"invalid.processQueryKey", "Invalid processQueryKey"},
      {"bot.stopped", "The Group bot has been disabled"},
      {"template.not.existed", "Bot template does not exist"},
      {"template.stopped", "Bot template has been disabled"},
      {"processQueryKey.expireTime",
       "processQueryKey has not yet generated message query data or has expired"},
      {"conversation.org.dismatch", "The chat does not belong to the current organization"},
      {"invalidParameter.invalid", "Invalid parameter: the token's robot does not exist"},
      {"resource.not.found", "The Bot does not exist"},
      {"unauthorized", "Unauthorized"},
      {"auth.error", "Insufficient permissions. The operation is not allowed."},
      {"system.error", "Unknown system error"},
      {"InvalidAuthentication", "The access token is invalid or has expired"},
      {"AuthenticationFailed.MissingParameter", "The access token header is missing"},
      {"invalidClientIdOrSecret", "Invalid appKey or appSecret"},
      {"invalidSuiteKey", "Invalid suiteKey or suiteSecret"},
      {"invalidSuiteTicket", "Invalid suiteTicket"},
      {"invalidAuthInfo", "The organization has not authorized the app"},
      {"Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
       "The request was throttled: too many calls per second for this app and API"},
      {"Forbidden.AccessDenied.QpsLimitForApi",
       "The request was throttled: too many calls per second for this API"},
      {"Forbidden.AccessDenied.ApiCountLimitForOrg",
       "The organization has used up its monthly quota of API calls"},
      // The gateway's answer to bad credentials, as DingTalk gives it (401).
      {"authFailed", "Authentication failed"},
  };
  return messages;
}

const char* k_html_page =
    "<!DOCTYPE html>\n<html><head><title>Access denied</title></head>\n"
    "<body><h1>Access denied</h1><p>Your IP address sent too many requests and "
    "has been blocked for 5 minutes.</p></body></html>\n";

// An epoch-ms time for the bodies that replace an answer (2023-11-14).
constexpr char k_some_epoch_ms[] = "1700000000000";

// Valid JSON of the API's shape, larger than k_oversized_body_bytes.
const std::string& oversized_body(MessageKind api) {
  static const std::string ids = [] {
    std::string s = R"({"sendStatus":"SUCCESS","readUserIds":[)";
    for (int i = 0; s.size() < FakeDingTalk::k_oversized_body_bytes; ++i) {
      if (i > 0) {
        s += ',';
      }
      s += "\"oversized-user-" + std::to_string(i) + "\"";
    }
    s += R"(],"hasMore":false})";
    return s;
  }();
  static const std::string list = [] {
    std::string s = R"({"sendStatus":"SUCCESS","messageReadInfoList":[)";
    for (int i = 0; s.size() < FakeDingTalk::k_oversized_body_bytes; ++i) {
      if (i > 0) {
        s += ',';
      }
      const std::string user = "oversized-user-" + std::to_string(i);
      s.append(R"({"name":")").append(user).append(R"(","userId":")").append(user);
      s.append(R"(","readStatus":"READ","readTimestamp":)").append(k_some_epoch_ms).append("}");
    }
    s += "]}";
    return s;
  }();
  return api == MessageKind::oto ? list : ids;
}

const char* malformed_body(MessageKind api) {
  return api == MessageKind::oto
             ? R"({"sendStatus": SUCCESS, "messageReadInfoList": [{userId: user-a,}], })"
             : R"({"sendStatus": SUCCESS, "readUserIds": [user-a,], })";
}

const char* truncated_body(MessageKind api) {
  return api == MessageKind::oto
             ? R"({"sendStatus":"SUCCESS","messageReadInfoList":[{"name":"user-a","userId":"us)"
             : R"({"sendStatus":"SUCCESS","readUserIds":["user-a","us)";
}

// JSON, but not the documented object: the list is not a list.
const char* wrong_shape_body(MessageKind api) {
  return api == MessageKind::oto
             ? R"({"sendStatus":"SUCCESS","messageReadInfoList":{"userId":"user-a","readStatus":"READ"}})"
             : R"({"sendStatus":"SUCCESS","readUserIds":"user-a","hasMore":"no"})";
}

const char* endless_head(MessageKind api) {
  return api == MessageKind::oto ? R"({"sendStatus":"SUCCESS","messageReadInfoList":[)"
                                 : R"({"sendStatus":"SUCCESS","readUserIds":[)";
}

const char* endless_item(MessageKind api) {
  return api == MessageKind::oto
             ? R"({"name":"endless-user","userId":"endless-user","readStatus":"READ","readTimestamp":1},)"
             : R"("endless-user",)";
}

// One "%XX"-escaped, '+'-is-space component of a query string, decoded;
// nullopt for a bad escape or a result that is not UTF-8 text.
std::optional<std::string> form_decode(const std::string& text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '+') {
      out += ' ';
    } else if (c != '%') {
      out += c;
    } else {
      if (i + 2 >= text.size()) {
        return std::nullopt;
      }
      const auto hex = [](char h) {
        if (h >= '0' && h <= '9') {
          return h - '0';
        }
        if (h >= 'a' && h <= 'f') {
          return h - 'a' + 10;
        }
        if (h >= 'A' && h <= 'F') {
          return h - 'A' + 10;
        }
        return -1;
      };
      const int hi = hex(text[i + 1]);
      const int lo = hex(text[i + 2]);
      if (hi < 0 || lo < 0) {
        return std::nullopt;
      }
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    }
  }
  try {
    (void)nlohmann::json(out).dump();
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
  return out;
}

bool body_is_chunked(const httplib::Request& req) {
  const auto te = req.get_header_value("Transfer-Encoding");
  return te.find("chunked") != std::string::npos;
}

json parse_json(const std::string& text) {
  try {
    return json::parse(text);
  } catch (const json::exception&) {
    return nullptr;
  }
}

std::string string_field(const json& body, const char* name) {
  if (body.is_object() && body.contains(name) && body[name].is_string()) {
    return body[name].get<std::string>();
  }
  return {};
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    const auto pos = s.find(sep, start);
    if (pos == std::string::npos) {
      parts.push_back(s.substr(start));
      return parts;
    }
    parts.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

// The query string of a request target, decoded once as a servlet container
// does: '&' separates parameters, the first '=' a name from its value. null
// for a bad escape or a repeated parameter.
json decode_query(const std::string& target) {
  json out = json::object();
  const auto q = target.find('?');
  if (q == std::string::npos) {
    return out;
  }
  for (const auto& part : split(target.substr(q + 1), '&')) {
    if (part.empty()) {
      continue;
    }
    const auto eq = part.find('=');
    const auto name = form_decode(part.substr(0, eq));
    const auto value = form_decode(eq == std::string::npos ? "" : part.substr(eq + 1));
    if (!name || !value || out.contains(*name)) {
      return nullptr;
    }
    out[*name] = *value;
  }
  return out;
}

// REQUIRES: `user_id` can read the message: anyone, or for oto a recipient.
void require_reader(const std::string& key, const FakeMessage& m, const std::string& user_id) {
  if (m.kind == MessageKind::oto &&
      std::find(m.recipients.begin(), m.recipients.end(), user_id) == m.recipients.end()) {
    throw std::invalid_argument("FakeDingTalk: " + user_id + " did not receive the oto message " +
                                key);
  }
}

// The message kind whose read-status API `endpoint` is, or nullopt.
std::optional<MessageKind> api_of(Endpoint endpoint) {
  switch (endpoint) {
  case Endpoint::private_chat_query:
    return MessageKind::private_chat;
  case Endpoint::group_query:
    return MessageKind::group;
  case Endpoint::oto_query:
    return MessageKind::oto;
  default:
    return std::nullopt;
  }
}

// Handlers count themselves in flight for max_concurrent_requests().
class InFlight {
public:
  InFlight(std::mutex& mutex, int& in_flight, int& max_in_flight)
      : m_mutex(mutex), m_in_flight(in_flight) {
    std::lock_guard lock(m_mutex);
    ++m_in_flight;
    max_in_flight = std::max(max_in_flight, m_in_flight);
  }
  ~InFlight() {
    std::lock_guard lock(m_mutex);
    --m_in_flight;
  }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

private:
  std::mutex& m_mutex;
  int& m_in_flight;
};

} // namespace

// --- messages ---

std::string message_problem(const FakeMessage& m) {
  switch (m.kind) {
  case MessageKind::private_chat:
    if (!m.token.empty()) {
      return "token: only group messages have one";
    }
    break;
  case MessageKind::group:
    if (m.open_conversation_id.empty() && m.token.empty()) {
      return "a group message needs open_conversation_id or token";
    }
    break;
  case MessageKind::oto:
    if (!m.token.empty()) {
      return "token: only group messages have one";
    }
    if (!m.open_conversation_id.empty()) {
      return "open_conversation_id: oto messages (oToMessages/batchSend) have none";
    }
    if (m.recipients.empty() || m.recipients.size() > FakeDingTalk::k_max_oto_recipients) {
      return "recipients: an oto message has 1.." +
             std::to_string(FakeDingTalk::k_max_oto_recipients) + " (batchSend's limit), not " +
             std::to_string(m.recipients.size());
    }
    for (std::size_t i = 0; i < m.recipients.size(); ++i) {
      if (m.recipients[i].empty()) {
        return "recipients[" + std::to_string(i) + "]: an empty user id";
      }
      if (std::find(m.recipients.begin(), m.recipients.begin() + static_cast<std::ptrdiff_t>(i),
                    m.recipients[i]) != m.recipients.begin() + static_cast<std::ptrdiff_t>(i)) {
        return "recipients[" + std::to_string(i) + "]: " + m.recipients[i] + " is listed twice";
      }
    }
    break;
  }
  for (const auto& [user, name] : m.names) {
    if (std::find(m.recipients.begin(), m.recipients.end(), user) == m.recipients.end()) {
      return "names: " + user + " is not a recipient";
    }
  }
  return "";
}

// --- Fault ---

Fault Fault::error(int status, std::string code) {
  Fault f;
  f.kind = FaultKind::error_answer;
  f.status = status;
  f.code = std::move(code);
  return f;
}

Fault Fault::html(int status) {
  Fault f;
  f.kind = FaultKind::html_page;
  f.status = status;
  return f;
}

Fault Fault::of(FaultKind kind) {
  Fault f;
  f.kind = kind;
  if (kind == FaultKind::error_answer) {
    f.status = 500;
    f.code = "system.error";
  } else if (kind == FaultKind::html_page) {
    f.status = 403;
  }
  return f;
}

Fault Fault::slow(std::chrono::milliseconds delay) {
  Fault f;
  f.kind = FaultKind::delay;
  f.delay = delay;
  return f;
}

bool Fault::later_pages_only() const {
  return kind == FaultKind::next_token_loop || kind == FaultKind::cursor_invalid;
}

bool Fault::shapes_answer() const {
  return kind == FaultKind::next_token_loop || kind == FaultKind::cursor_invalid ||
         kind == FaultKind::delay || kind == FaultKind::read_without_user_id ||
         kind == FaultKind::timestamp_not_number || kind == FaultKind::duplicate_users;
}

bool Fault::applies_to(MessageKind api) const {
  switch (kind) {
  case FaultKind::read_without_user_id:
    return api == MessageKind::oto || api == MessageKind::group;
  case FaultKind::timestamp_not_number:
    return api == MessageKind::oto;
  default:
    return true;
  }
}

std::string to_string(MessageKind kind) {
  switch (kind) {
  case MessageKind::private_chat:
    return "private_chat";
  case MessageKind::group:
    return "group";
  case MessageKind::oto:
    return "oto";
  }
  return "unknown";
}

Endpoint query_endpoint(MessageKind kind) {
  switch (kind) {
  case MessageKind::private_chat:
    return Endpoint::private_chat_query;
  case MessageKind::group:
    return Endpoint::group_query;
  case MessageKind::oto:
    return Endpoint::oto_query;
  }
  return Endpoint::query;
}

std::string to_string(FaultKind kind) {
  switch (kind) {
  case FaultKind::error_answer:
    return "error_answer";
  case FaultKind::html_page:
    return "html_page";
  case FaultKind::malformed_json:
    return "malformed_json";
  case FaultKind::truncated_json:
    return "truncated_json";
  case FaultKind::wrong_shape:
    return "wrong_shape";
  case FaultKind::oversized_body:
    return "oversized_body";
  case FaultKind::endless_body:
    return "endless_body";
  case FaultKind::no_answer:
    return "no_answer";
  case FaultKind::connection_reset:
    return "connection_reset";
  case FaultKind::next_token_loop:
    return "next_token_loop";
  case FaultKind::cursor_invalid:
    return "cursor_invalid";
  case FaultKind::revoke_tokens:
    return "revoke_tokens";
  case FaultKind::delay:
    return "delay";
  case FaultKind::read_without_user_id:
    return "read_without_user_id";
  case FaultKind::timestamp_not_number:
    return "timestamp_not_number";
  case FaultKind::duplicate_users:
    return "duplicate_users";
  }
  return "unknown";
}

// --- FakeDingTalk ---

FakeDingTalk::FakeDingTalk(FakeDingTalkOptions options)
    : m_options(std::move(options)), m_now([] { return SteadyClock::now(); }),
      m_rng(m_options.seed), m_cursor_key([] {
        std::random_device rd;
        std::string key;
        for (int i = 0; i < 32; ++i) {
          key += static_cast<char>(rd() & 0xff);
        }
        return key;
      }()),
      m_epoch_base(std::chrono::system_clock::now()), m_steady_base(SteadyClock::now()),
      m_server(
          [this](httplib::Server& server) {
            server.Post("/v1.0/oauth2/accessToken",
                        [this](const auto& req, auto& res) { handle_access_token(req, res); });
            server.Post("/v1.0/oauth2/corpAccessToken",
                        [this](const auto& req, auto& res) { handle_corp_access_token(req, res); });
            server.Post("/v1.0/robot/privateChatMessages/query",
                        [this](const auto& req, auto& res) {
                          handle_query(MessageKind::private_chat, req, res);
                        });
            server.Post("/v1.0/robot/groupMessages/query", [this](const auto& req, auto& res) {
              handle_query(MessageKind::group, req, res);
            });
            server.Get("/v1.0/robot/oToMessages/readStatus", [this](const auto& req, auto& res) {
              handle_query(MessageKind::oto, req, res);
            });
            if (m_options.stream) {
              server.Post("/v1.0/gateway/connections/open",
                          [this](const auto& req, auto& res) { handle_gateway(req, res); });
            }
          },
          m_options.tls) {
  if (m_options.stream) {
    FakeStreamOptions stream_options = *m_options.stream;
    if (stream_options.corp_id.empty()) {
      stream_options.corp_id = m_options.auth_corp_id;
    }
    m_stream = std::make_unique<FakeStream>(stream_options, m_now, m_options.seed,
                                            [this] { promote_all_due_reads(); });
  }
  m_server.start(m_options.port);
}

FakeDingTalk::~FakeDingTalk() {
  stop();
}

void FakeDingTalk::stop() {
  m_stopping = true;
  m_server.stop();
  if (m_stream) {
    m_stream->stop();
  }
}

FakeStream& FakeDingTalk::stream() {
  if (!m_stream) {
    throw std::logic_error("FakeDingTalk: Stream mode is off (FakeDingTalkOptions::stream)");
  }
  return *m_stream;
}

std::string FakeDingTalk::endpoint() const {
  return m_server.scheme() + "://127.0.0.1:" + std::to_string(port());
}

// --- scenario ---

FakeDingTalk::Message& FakeDingTalk::message(const std::string& key) {
  const auto it = m_messages.find(key);
  if (it == m_messages.end()) {
    throw std::invalid_argument("FakeDingTalk: no message " + key);
  }
  return it->second;
}

void FakeDingTalk::add_message(const std::string& key, FakeMessage spec) {
  if (const std::string problem = message_problem(spec); !problem.empty()) {
    throw std::invalid_argument("FakeDingTalk: message " + key + ": " + problem);
  }
  std::lock_guard lock(m_mutex);
  if (spec.robot_code.empty()) {
    spec.robot_code = m_options.robot_code;
  }
  if (!spec.sent_at) {
    spec.sent_at = now();
  }
  if (spec.kind == MessageKind::oto && spec.expires_at == SteadyTime::max()) {
    spec.expires_at = *spec.sent_at + k_oto_window;
  }
  m_messages[key] = Message{std::move(spec), {}, {}, {}};
}

void FakeDingTalk::read(const std::string& key, const std::string& user_id) {
  std::lock_guard lock(m_mutex);
  const SteadyTime t = now();
  auto& m = message(key);
  require_reader(key, m.spec, user_id);
  add_read(key, m, user_id, t);
}

void FakeDingTalk::read(const std::string& key, const std::string& user_id, SteadyTime at) {
  std::lock_guard lock(m_mutex);
  auto& m = message(key);
  require_reader(key, m.spec, user_id);
  add_read(key, m, user_id, at);
}

bool FakeDingTalk::add_read(const std::string& key, Message& m, const std::string& user_id,
                            SteadyTime at) {
  if (std::find(m.reads.begin(), m.reads.end(), user_id) != m.reads.end()) {
    return false;
  }
  m.reads.push_back(user_id);
  m.read_at[user_id] = at;
  push_read(key, m, user_id, union_id_of(user_id), at);
  return true;
}

void FakeDingTalk::read_by_outsider(const std::string& key, const std::string& union_id) {
  std::lock_guard lock(m_mutex);
  const Message& m = message(key);
  if (m.spec.kind == MessageKind::oto) { // batchSend reaches only the organisation's users
    throw std::invalid_argument("FakeDingTalk: " + union_id + " did not receive the oto message " +
                                key);
  }
  push_read(key, m, "", union_id, now());
}

std::string FakeDingTalk::union_id_of(const std::string& user_id) {
  return hex_encode(hmac_sha256("fake-dingtalk-union-id", user_id)).substr(0, 24);
}

void FakeDingTalk::push_read(const std::string& key, const Message& m, const std::string& user_id,
                             const std::string& union_id, SteadyTime at) {
  if (!m_stream) {
    return;
  }
  json data = {{"processQueryKey", key},
               {"unionId", union_id},
               {"operatTime", std::to_string(m_stream->epoch_ms(at))},
               {"robotCode", m.spec.robot_code}};
  if (!user_id.empty()) {
    data["userId"] = user_id;
  }
  if (!m.spec.open_conversation_id.empty()) { // a group's, or a private chat's
    data["openConversationId"] = m.spec.open_conversation_id;
  }
  StreamEventSpec event;
  event.event_type = "robot_msg_read";
  event.data = std::move(data);
  event.born_at = at;
  m_stream->push(std::move(event));
}

void FakeDingTalk::schedule_read(const std::string& key, const std::string& user_id,
                                 SteadyTime at) {
  std::lock_guard lock(m_mutex);
  auto& m = message(key);
  require_reader(key, m.spec, user_id);
  m.pending.emplace_back(at, user_id);
  std::stable_sort(m.pending.begin(), m.pending.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
}

void FakeDingTalk::set_send_status(const std::string& key, const std::string& status) {
  std::lock_guard lock(m_mutex);
  message(key).spec.send_status = status;
}

void FakeDingTalk::set_ready_at(const std::string& key, SteadyTime at) {
  std::lock_guard lock(m_mutex);
  message(key).spec.ready_at = at;
}

void FakeDingTalk::set_expires_at(const std::string& key, SteadyTime at) {
  std::lock_guard lock(m_mutex);
  message(key).spec.expires_at = at;
}

std::vector<std::string> FakeDingTalk::read_list(const std::string& key) {
  std::lock_guard lock(m_mutex);
  auto& m = message(key);
  promote_due_reads(key, m, now());
  return m.reads;
}

std::optional<SteadyTime> FakeDingTalk::read_time(const std::string& key,
                                                  const std::string& user_id) {
  std::lock_guard lock(m_mutex);
  auto& m = message(key);
  promote_due_reads(key, m, now());
  const auto it = m.read_at.find(user_id);
  if (it == m.read_at.end()) {
    return std::nullopt;
  }
  return it->second;
}

std::int64_t FakeDingTalk::epoch_ms(SteadyTime t) const {
  if (m_stream) {
    return m_stream->epoch_ms(t);
  }
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  return duration_cast<milliseconds>(m_epoch_base.time_since_epoch()).count() +
         duration_cast<milliseconds>(t - m_steady_base).count();
}

void FakeDingTalk::promote_due_reads(const std::string& key, Message& m, SteadyTime t) {
  auto it = m.pending.begin();
  for (; it != m.pending.end() && it->first <= t; ++it) {
    // The person read it at the scheduled time, whenever that is noticed.
    add_read(key, m, it->second, it->first);
  }
  m.pending.erase(m.pending.begin(), it);
}

void FakeDingTalk::promote_all_due_reads() {
  std::lock_guard lock(m_mutex);
  const SteadyTime t = now();
  for (auto& [key, m] : m_messages) {
    if (!m.pending.empty() && m.pending.front().first <= t) {
      promote_due_reads(key, m, t);
    }
  }
}

void FakeDingTalk::set_page_size(int page_size) {
  std::lock_guard lock(m_mutex);
  m_options.page_size = std::clamp(page_size, 1, k_max_page_size);
}

void FakeDingTalk::set_token_lifetime(std::chrono::seconds lifetime) {
  std::lock_guard lock(m_mutex);
  m_options.token_lifetime = lifetime;
}

void FakeDingTalk::add_token(const std::string& token,
                             std::optional<std::chrono::seconds> lifetime) {
  std::lock_guard lock(m_mutex);
  m_tokens[token] = Token{lifetime ? now() + *lifetime : SteadyTime::max(), false};
}

void FakeDingTalk::revoke_tokens() {
  std::lock_guard lock(m_mutex);
  for (auto& [token, state] : m_tokens) {
    state.revoked = true;
  }
}

void FakeDingTalk::set_time_source(std::function<SteadyTime()> now_fn) {
  std::lock_guard lock(m_mutex);
  m_now = std::move(now_fn);
  if (m_stream) {
    m_stream->set_time_source(m_now);
  }
}

SteadyTime FakeDingTalk::now() const {
  return m_now();
}

// --- faults ---

void FakeDingTalk::inject(Fault fault, int count, Endpoint endpoint) {
  std::lock_guard lock(m_mutex);
  if (count > 0) {
    m_injected.push_back(Injected{std::move(fault), count, endpoint});
  }
}

void FakeDingTalk::set_fault_rate(Fault fault, double p, Endpoint endpoint) {
  std::lock_guard lock(m_mutex);
  std::erase_if(m_rate_faults, [&](const RateFault& r) {
    return r.endpoint == endpoint && r.fault.kind == fault.kind && r.fault.status == fault.status &&
           r.fault.code == fault.code;
  });
  if (p > 0) {
    m_rate_faults.push_back(RateFault{std::move(fault), p, endpoint});
  }
}

void FakeDingTalk::clear_faults() {
  std::lock_guard lock(m_mutex);
  m_injected.clear();
  m_rate_faults.clear();
}

std::optional<Fault> FakeDingTalk::take_fault(Endpoint endpoint, bool has_next_token,
                                              bool answerable) {
  const std::optional<MessageKind> api = api_of(endpoint);
  const auto aimed = [&](Endpoint target) {
    return target == endpoint || (target == Endpoint::query && api);
  };
  const auto applies = [&](const Fault& f) {
    return (!f.later_pages_only() || has_next_token) && (!f.shapes_answer() || answerable) &&
           (!api || f.applies_to(*api));
  };
  for (auto it = m_injected.begin(); it != m_injected.end(); ++it) {
    if (!aimed(it->endpoint) || !applies(it->fault)) {
      continue;
    }
    Fault f = it->fault;
    if (--it->remaining <= 0) {
      m_injected.erase(it);
    }
    return f;
  }
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (const auto& r : m_rate_faults) {
    if (!aimed(r.endpoint) || !applies(r.fault)) {
      continue;
    }
    if (uniform(m_rng) < r.p) {
      return r.fault;
    }
  }
  return std::nullopt;
}

void FakeDingTalk::hold_until_gone(const httplib::Request& req) const {
  const int fd = connection_socket(req);
  const auto deadline = SteadyClock::now() + k_max_hold;
  while (!m_stopping && !peer_closed(fd) && SteadyClock::now() < deadline) {
    std::this_thread::sleep_for(k_poll_interval);
  }
}

bool FakeDingTalk::apply_fault(const Fault& fault, const httplib::Request& req,
                               httplib::Response& res, const std::string& request_id_text,
                               MessageKind api) {
  for (const auto& [name, value] : fault.headers) {
    res.set_header(name, value);
  }
  switch (fault.kind) {
  case FaultKind::error_answer: {
    const auto it = error_messages().find(fault.code);
    send_error(res, fault.status, fault.code,
               it != error_messages().end() ? it->second : "Error injected by the test",
               request_id_text);
    return false;
  }
  case FaultKind::html_page:
    res.status = fault.status;
    res.set_content(k_html_page, "text/html; charset=utf-8");
    return false;
  case FaultKind::malformed_json:
    res.status = 200;
    res.set_content(malformed_body(api), k_json_type);
    return false;
  case FaultKind::truncated_json:
    res.status = 200;
    res.set_content(truncated_body(api), k_json_type);
    return false;
  case FaultKind::wrong_shape:
    res.status = 200;
    res.set_content(wrong_shape_body(api), k_json_type);
    return false;
  case FaultKind::oversized_body:
    res.status = 200;
    if (!fault.chunked) {
      res.set_content(oversized_body(api), k_json_type);
      return false;
    }
    res.set_chunked_content_provider(
        k_json_type, [api](std::size_t offset, httplib::DataSink& sink) {
          const std::string& body = oversized_body(api);
          if (offset >= body.size()) {
            sink.done();
            return true;
          }
          constexpr std::size_t k_chunk = 64 * 1024;
          return sink.write(body.data() + offset, std::min(k_chunk, body.size() - offset));
        });
    return false;
  case FaultKind::endless_body: {
    res.status = 200;
    const auto deadline = SteadyClock::now() + k_max_hold;
    res.set_chunked_content_provider(
        k_json_type, [this, deadline, api](std::size_t offset, httplib::DataSink& sink) {
          if (m_stopping || SteadyClock::now() >= deadline) {
            return false; // the connection is dropped without the last chunk
          }
          std::string chunk;
          if (offset == 0) {
            chunk = endless_head(api);
          }
          for (int i = 0; i < 256; ++i) {
            chunk += endless_item(api);
          }
          if (!sink.write(chunk.data(), chunk.size())) {
            return false;
          }
          std::this_thread::sleep_for(k_endless_chunk_interval);
          return true;
        });
    return false;
  }
  case FaultKind::no_answer: {
    hold_until_gone(req);
    reset_connection(connection_socket(req));
    return false;
  }
  case FaultKind::connection_reset:
    reset_connection(connection_socket(req));
    return false;
  case FaultKind::delay: {
    const auto until = SteadyClock::now() + fault.delay;
    while (!m_stopping && SteadyClock::now() < until) {
      std::this_thread::sleep_for(
          std::min<SteadyClock::duration>(k_poll_interval, until - SteadyClock::now()));
    }
    return true;
  }
  case FaultKind::revoke_tokens:
    revoke_tokens();
    return true;
  case FaultKind::next_token_loop:
  case FaultKind::cursor_invalid:
  case FaultKind::read_without_user_id:
  case FaultKind::timestamp_not_number:
  case FaultKind::duplicate_users:
    return true; // applied while answering
  }
  return true;
}

// --- handlers ---

void FakeDingTalk::send_error(httplib::Response& res, int status, const std::string& code,
                              const std::string& message_text,
                              const std::string& request_id_text) const {
  res.status = status;
  const json body = {{"code", code}, {"message", message_text}, {"requestid", request_id_text}};
  res.set_content(body.dump(), "application/json;charset=utf-8");
}

std::string FakeDingTalk::request_id() {
  ++m_counter;
  std::uniform_int_distribution<std::uint32_t> d;
  std::string raw;
  for (int i = 0; i < 4; ++i) {
    const std::uint32_t v = d(m_rng);
    raw.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  const std::string hex = hex_encode(raw);
  // Shaped like DingTalk's: 8-4-4-4-12 upper-case hex.
  std::string id = hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
                   hex.substr(16, 4) + "-" + hex.substr(20, 12);
  std::transform(id.begin(), id.end(), id.begin(), [](char c) {
    return static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  });
  return id;
}

std::string FakeDingTalk::issue_token(SteadyTime t) {
  std::uniform_int_distribution<std::uint64_t> d;
  std::string raw = std::to_string(++m_counter) + ":" + std::to_string(d(m_rng));
  std::string token = hex_encode(hmac_sha256(m_cursor_key, "token:" + raw)).substr(0, 32);
  m_tokens[token] = Token{t + m_options.token_lifetime, false};
  return token;
}

void FakeDingTalk::handle_access_token(const httplib::Request& req, httplib::Response& res) {
  InFlight guard(m_mutex, m_in_flight, m_max_in_flight);
  std::optional<Fault> fault;
  std::string rid;
  {
    std::lock_guard lock(m_mutex);
    ++m_token_calls;
    m_request_times.push_back(now());
    fault = take_fault(Endpoint::token, false, true);
    rid = request_id();
  }
  if (fault && !apply_fault(*fault, req, res, rid)) {
    return;
  }
  const json body = parse_json(req.body);
  std::lock_guard lock(m_mutex);
  if (string_field(body, "appKey") != m_options.app_key ||
      string_field(body, "appSecret") != m_options.app_secret) {
    send_error(res, 400, "invalidClientIdOrSecret", error_messages().at("invalidClientIdOrSecret"),
               rid);
    return;
  }
  const SteadyTime t = now();
  const auto it = m_tokens.find(m_app_token);
  if (it != m_tokens.end() && !it->second.revoked && t < it->second.expires_at) {
    // DingTalk: asked again while valid, the same token, renewed.
    it->second.expires_at = t + m_options.token_lifetime;
  } else {
    m_app_token = issue_token(t);
  }
  res.status = 200;
  res.set_content(
      json{{"accessToken", m_app_token}, {"expireIn", m_options.token_lifetime.count()}}.dump(),
      "application/json;charset=utf-8");
}

void FakeDingTalk::handle_corp_access_token(const httplib::Request& req, httplib::Response& res) {
  InFlight guard(m_mutex, m_in_flight, m_max_in_flight);
  std::optional<Fault> fault;
  std::string rid;
  {
    std::lock_guard lock(m_mutex);
    ++m_token_calls;
    m_request_times.push_back(now());
    fault = take_fault(Endpoint::token, false, true);
    rid = request_id();
  }
  if (fault && !apply_fault(*fault, req, res, rid)) {
    return;
  }
  const json body = parse_json(req.body);
  std::lock_guard lock(m_mutex);
  std::string code;
  if (string_field(body, "suiteKey") != m_options.suite_key ||
      string_field(body, "suiteSecret") != m_options.suite_secret) {
    code = "invalidSuiteKey";
  } else if (string_field(body, "suiteTicket") != m_options.suite_ticket) {
    code = "invalidSuiteTicket";
  } else if (string_field(body, "authCorpId") != m_options.auth_corp_id) {
    code = "invalidAuthInfo";
  }
  if (!code.empty()) {
    send_error(res, 400, code, error_messages().at(code), rid);
    return;
  }
  res.status = 200;
  res.set_content(
      json{{"accessToken", issue_token(now())}, {"expireIn", m_options.token_lifetime.count()}}
          .dump(),
      "application/json;charset=utf-8");
}

void FakeDingTalk::handle_query(MessageKind kind, const httplib::Request& req,
                                httplib::Response& res) {
  InFlight guard(m_mutex, m_in_flight, m_max_in_flight);
  const bool get = kind == MessageKind::oto;
  const Call call{kind, get ? decode_query(req.target) : parse_json(req.body)};
  const std::string key = string_field(call.args, "processQueryKey");
  const bool has_next_token = !get && !string_field(call.args, "nextToken").empty();
  std::optional<Fault> fault;
  std::optional<Answer> shaped; // the answer a fault that shapes it gives, computed on arrival
  std::string rid;
  std::size_t record = 0;
  {
    std::lock_guard lock(m_mutex);
    const SteadyTime t = now();
    m_query_times.push_back(t);
    m_request_times.push_back(t);
    ++m_query_calls_by_key[key];
    // A fault that shapes the answer goes only to a call DingTalk answers,
    // and that answer is fixed now, under the same lock: tokens revoked or a
    // message changed meanwhile (during a delay, say) cannot turn it into an
    // error, so the fault is met as what it is.
    fault = take_fault(query_endpoint(kind), has_next_token, !refusal(req, call, t));
    if (fault && fault->shapes_answer()) {
      shaped = answer_query(req, call, &*fault);
    }
    rid = request_id();
    QueryRecord r;
    r.at = t;
    r.kind = kind;
    r.target = req.target;
    r.body = get ? json(nullptr) : call.args;
    r.params = get ? call.args : json(nullptr);
    r.access_token = req.get_header_value(k_token_header);
    r.chunked = body_is_chunked(req);
    r.code = fault ? to_string(fault->kind) : "";
    m_queries.push_back(std::move(r));
    record = m_queries.size() - 1;
  }
  if (fault && !apply_fault(*fault, req, res, rid, kind)) {
    std::lock_guard lock(m_mutex);
    const bool cut =
        fault->kind == FaultKind::no_answer || fault->kind == FaultKind::connection_reset;
    m_queries[record].status = cut ? 0 : res.status;
    if (fault->kind == FaultKind::error_answer) {
      m_queries[record].code = fault->code;
    }
    return;
  }
  std::lock_guard lock(m_mutex);
  Answer answer = shaped ? std::move(*shaped) : answer_query(req, call, nullptr);
  if (answer.status != 200) {
    const std::string code = answer.code;
    const auto it = error_messages().find(code);
    send_error(res, answer.status, code, it != error_messages().end() ? it->second : "Error", rid);
  } else {
    res.status = 200;
    res.set_content(answer.body.dump(), "application/json;charset=utf-8");
  }
  m_queries[record].status = answer.status;
  if (!fault || answer.status != 200) {
    m_queries[record].code = answer.code;
  }
}

// --- Stream mode: the gateway ---

namespace {

// DingTalk answers the gateway call in XML unless the client accepts JSON.
bool accepts_json(const httplib::Request& req) {
  return req.get_header_value("Accept").find("application/json") != std::string::npos;
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
    case '<':
      out += "&lt;";
      break;
    case '>':
      out += "&gt;";
      break;
    case '&':
      out += "&amp;";
      break;
    default:
      out += c;
    }
  }
  return out;
}

std::string xml_document(const std::string& root,
                         const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<" + root + ">";
  for (const auto& [name, value] : fields) {
    out.append("<").append(name).append(">").append(xml_escape(value));
    out.append("</").append(name).append(">");
  }
  return out + "</" + root + ">\n";
}

} // namespace

void FakeDingTalk::handle_gateway(const httplib::Request& req, httplib::Response& res) {
  InFlight guard(m_mutex, m_in_flight, m_max_in_flight);
  const json body = parse_json(req.body);
  std::optional<Fault> fault;
  std::string rid;
  std::size_t record = 0;
  {
    std::lock_guard lock(m_mutex);
    const SteadyTime t = now();
    m_request_times.push_back(t);
    fault = take_fault(Endpoint::gateway, false, !gateway_refusal(req, body));
    rid = request_id();
    GatewayRecord r;
    r.at = t;
    r.body = body;
    r.accept = req.get_header_value("Accept");
    r.content_type = req.get_header_value("Content-Type");
    r.code = fault ? to_string(fault->kind) : "";
    m_gateway_requests.push_back(std::move(r));
    record = m_gateway_requests.size() - 1;
  }
  if (fault && !apply_fault(*fault, req, res, rid)) {
    std::lock_guard lock(m_mutex);
    const bool cut =
        fault->kind == FaultKind::no_answer || fault->kind == FaultKind::connection_reset;
    m_gateway_requests[record].status = cut ? 0 : res.status;
    if (fault->kind == FaultKind::error_answer) {
      m_gateway_requests[record].code = fault->code;
    }
    return;
  }
  std::lock_guard lock(m_mutex);
  const bool json_answer = accepts_json(req);
  if (auto refused = gateway_refusal(req, body)) {
    const auto it = error_messages().find(refused->code);
    const std::string message = refused->body.is_string()
                                    ? refused->body.get<std::string>()
                                    : (it != error_messages().end() ? it->second : "Error");
    if (json_answer) {
      send_error(res, refused->status, refused->code, message, rid);
    } else {
      res.status = refused->status;
      res.set_content(
          xml_document("Error",
                       {{"code", refused->code}, {"message", message}, {"requestid", rid}}),
          "application/xml;charset=utf-8");
    }
    m_gateway_requests[record].status = refused->status;
    m_gateway_requests[record].code = refused->code;
    return;
  }
  const std::string ticket = m_stream->issue_ticket(string_field(body, "clientId"));
  res.status = 200;
  if (json_answer) {
    res.set_content(json{{"endpoint", m_stream->endpoint()}, {"ticket", ticket}}.dump(),
                    "application/json;charset=utf-8");
  } else {
    res.set_content(xml_document("OpenConnectionResponse",
                                 {{"endpoint", m_stream->endpoint()}, {"ticket", ticket}}),
                    "application/xml;charset=utf-8");
  }
  m_gateway_requests[record].status = 200;
  m_gateway_requests[record].ticket = ticket;
}

std::optional<FakeDingTalk::Answer> FakeDingTalk::gateway_refusal(const httplib::Request& req,
                                                                  const json& body) const {
  // The message travels in Answer::body (a string) for these answers.
  const auto fail = [](int status, std::string code, std::string message) {
    return Answer{status, json(std::move(message)), std::move(code)};
  };
  constexpr char k_invalid[] = "invalidParameter.param.invalid";
  if (req.get_header_value("Content-Type").find("application/json") == std::string::npos) {
    return fail(400, k_invalid, "Content-Type must be application/json");
  }
  if (!body.is_object()) {
    return fail(400, k_invalid, "the body must be a JSON object");
  }
  for (const char* field : {"clientId", "clientSecret"}) {
    if (!body.contains(field) || !body[field].is_string() ||
        body[field].get<std::string>().empty()) {
      return fail(400, k_invalid, std::string(field) + " is required (a non-empty string)");
    }
  }
  for (const char* field : {"ua", "localIp"}) {
    if (body.contains(field) && !body[field].is_string()) {
      return fail(400, k_invalid, std::string(field) + " must be a string");
    }
  }
  if (!body.contains("subscriptions") || !body["subscriptions"].is_array() ||
      body["subscriptions"].empty()) {
    return fail(400, k_invalid, "subscriptions must be a non-empty list");
  }
  bool events = false;
  int index = 0;
  for (const auto& sub : body["subscriptions"]) {
    const std::string where = "subscriptions[" + std::to_string(index++) + "]";
    if (!sub.is_object() || !sub.contains("type") || !sub["type"].is_string() ||
        !sub.contains("topic") || !sub["topic"].is_string() ||
        sub["topic"].get<std::string>().empty()) {
      return fail(400, k_invalid, where + " must be {\"type\": string, \"topic\": string}");
    }
    const std::string type = sub["type"].get<std::string>();
    const std::string topic = sub["topic"].get<std::string>();
    if (type == "EVENT") {
      if (topic != "*") {
        return fail(400, k_invalid, where + ": an EVENT subscription's topic must be \"*\"");
      }
      events = true;
    } else if (type == "SYSTEM") {
      if (topic != "ping" && topic != "disconnect") {
        return fail(400, k_invalid,
                    std::string(where).append(": unknown SYSTEM topic ").append(topic));
      }
    } else if (type != "CALLBACK") {
      return fail(400, k_invalid, std::string(where).append(": unknown type ").append(type));
    }
  }
  if (!events) {
    return fail(400, k_invalid,
                "subscriptions must include {\"type\": \"EVENT\", \"topic\": \"*\"}");
  }
  const std::string id = string_field(body, "clientId");
  const std::string secret = string_field(body, "clientSecret");
  const bool internal = id == m_options.app_key && secret == m_options.app_secret;
  const bool suite = id == m_options.suite_key && secret == m_options.suite_secret;
  if (!internal && !suite) {
    return fail(401, "authFailed", error_messages().at("authFailed"));
  }
  return std::nullopt;
}

namespace {

constexpr char k_param_invalid[] = "invalidParameter.param.invalid";

// The body's fields that must be strings when present: DingTalk refuses the
// rest as invalid parameters.
bool string_fields_ok(const json& body, std::initializer_list<const char*> fields) {
  return std::all_of(fields.begin(), fields.end(), [&](const char* field) {
    return !body.contains(field) || body[field].is_string();
  });
}

} // namespace

FakeDingTalk::Answer FakeDingTalk::refused_with(int status, std::string code) {
  return Answer{status, nullptr, std::move(code)};
}

std::optional<FakeDingTalk::Answer> FakeDingTalk::refusal(const httplib::Request& req,
                                                          const Call& call, SteadyTime t) const {
  if (!req.has_header(k_token_header)) {
    return refused_with(400, "AuthenticationFailed.MissingParameter");
  }
  const auto token = m_tokens.find(req.get_header_value(k_token_header));
  if (token == m_tokens.end() || token->second.revoked || t >= token->second.expires_at) {
    return refused_with(400, "InvalidAuthentication");
  }
  switch (call.kind) {
  case MessageKind::private_chat:
    return private_chat_refusal(call.args, t);
  case MessageKind::group:
    return group_refusal(call.args, t);
  case MessageKind::oto:
    return oto_refusal(call.args, t);
  }
  return std::nullopt;
}

bool FakeDingTalk::robot_known(const std::string& robot_code) const {
  return robot_code == m_options.robot_code ||
         std::any_of(m_messages.begin(), m_messages.end(),
                     [&](const auto& entry) { return entry.second.spec.robot_code == robot_code; });
}

std::optional<FakeDingTalk::Answer> FakeDingTalk::private_chat_refusal(const json& body,
                                                                       SteadyTime t) const {
  if (!body.is_object() || !string_fields_ok(body, {"processQueryKey", "robotCode",
                                                    "openConversationId", "nextToken"})) {
    return refused_with(400, k_param_invalid);
  }
  const std::string key = string_field(body, "processQueryKey");
  if (key.empty()) {
    return refused_with(400, "invalidParameter.processQueryKey.missing");
  }
  const std::string robot = string_field(body, "robotCode");
  if (robot.empty()) {
    return refused_with(400, "invalidParameter.robotCode.missing");
  }
  if (!robot_known(robot)) {
    return refused_with(400, "invalidParameter.robotCode.notExsit");
  }
  const auto it = m_messages.find(key);
  if (it == m_messages.end() || it->second.spec.kind != MessageKind::private_chat) {
    return refused_with(400, "invalid.processQueryKey");
  }
  const Message& m = it->second;
  if (m.spec.robot_code != robot) {
    return refused_with(400, "invalidParameter.robotCode.notExsit");
  }
  if (body.contains("openConversationId") &&
      body["openConversationId"].get<std::string>() != m.spec.open_conversation_id) {
    return refused_with(400, "invalid.openConversationId");
  }
  return page_refusal(body, key, m, t);
}

std::optional<FakeDingTalk::Answer> FakeDingTalk::group_refusal(const json& body,
                                                                SteadyTime t) const {
  if (!body.is_object() || !string_fields_ok(body, {"processQueryKey", "robotCode",
                                                    "openConversationId", "nextToken", "token"})) {
    return refused_with(400, k_param_invalid);
  }
  const std::string key = string_field(body, "processQueryKey");
  if (key.empty()) {
    return refused_with(400, "invalidParameter.processQueryKey.missing");
  }
  const std::string conversation = string_field(body, "openConversationId");
  const std::string token = string_field(body, "token");
  if (conversation.empty() && token.empty()) {
    return refused_with(400, "openConversationId.notExisted");
  }
  if (!token.empty() && std::none_of(m_messages.begin(), m_messages.end(), [&](const auto& entry) {
        return entry.second.spec.kind == MessageKind::group && entry.second.spec.token == token;
      })) {
    return refused_with(400, "invalidParameter.invalid");
  }
  const std::string robot = string_field(body, "robotCode");
  if (robot.empty() && token.empty()) {
    return refused_with(400, "invalidParameter.robotCode.missing");
  }
  if (!robot.empty() && !robot_known(robot)) {
    return refused_with(400, "invalidParameter.robotCode.notExsit");
  }
  const auto it = m_messages.find(key);
  if (it == m_messages.end() || it->second.spec.kind != MessageKind::group) {
    return refused_with(400, "invalid.processQueryKey");
  }
  const Message& m = it->second;
  if (!token.empty() && m.spec.token != token) {
    return refused_with(400, "invalid.processQueryKey"); // not a message of the token's robot
  }
  if (!robot.empty() && m.spec.robot_code != robot) {
    return refused_with(400, "invalidParameter.robotCode.notExsit");
  }
  if (!conversation.empty() && conversation != m.spec.open_conversation_id) {
    return refused_with(400, "invalid.openConversationId");
  }
  return page_refusal(body, key, m, t);
}

std::optional<FakeDingTalk::Answer> FakeDingTalk::page_refusal(const json& body,
                                                               const std::string& key,
                                                               const Message& m,
                                                               SteadyTime t) const {
  if (body.contains("maxResults")) {
    const auto& max_results = body["maxResults"];
    if (!max_results.is_number_integer()) {
      return refused_with(400, k_param_invalid);
    }
    const auto n = max_results.get<std::int64_t>();
    if (n < 1 || n > k_max_page_size) {
      return refused_with(400, "invalidParameter.pageSize.invalid");
    }
  }
  const std::string next_token = string_field(body, "nextToken");
  if (!next_token.empty() && !parse_next_token(key, next_token)) {
    return refused_with(400, "invalidParameter.cursor.invalid");
  }
  if (t < m.spec.ready_at || t >= m.spec.expires_at) {
    return refused_with(400, "processQueryKey.expireTime");
  }
  return std::nullopt;
}

std::optional<FakeDingTalk::Answer> FakeDingTalk::oto_refusal(const json& params,
                                                              SteadyTime t) const {
  if (!params.is_object()) {
    return refused_with(400, k_param_invalid);
  }
  const std::string key = string_field(params, "processQueryKey");
  if (key.empty()) {
    return refused_with(400, "invalidParameter.processQueryKey.missing");
  }
  const std::string robot = string_field(params, "robotCode");
  if (robot.empty()) {
    return refused_with(400, "invalidParameter.robotCode.missing");
  }
  if (!robot_known(robot)) {
    return refused_with(400, "invalidParameter.robotCode.notExsit");
  }
  const auto it = m_messages.find(key);
  if (it == m_messages.end() || it->second.spec.kind != MessageKind::oto) {
    return refused_with(400, "invalid.processQueryKey");
  }
  const Message& m = it->second;
  if (m.spec.robot_code != robot) {
    return refused_with(400, "invalidParameter.robotCode.notExsit");
  }
  if (t < m.spec.ready_at || t >= m.spec.expires_at) {
    return refused_with(400, "processQueryKey.expireTime");
  }
  return std::nullopt;
}

FakeDingTalk::Answer FakeDingTalk::answer_query(const httplib::Request& req, const Call& call,
                                                const Fault* fault) {
  const SteadyTime t = now();
  if (auto refused = refusal(req, call, t)) {
    return *refused;
  }
  const bool loop_fault = fault != nullptr && fault->kind == FaultKind::next_token_loop;
  const bool cursor_fault = fault != nullptr && fault->kind == FaultKind::cursor_invalid;
  Answer answer = call.kind == MessageKind::oto ? answer_oto(call, t)
                                                : answer_pages(call, t, loop_fault, cursor_fault);
  if (fault != nullptr && answer.status == 200) {
    spoil(answer, fault->kind, call.kind, t);
  }
  return answer;
}

FakeDingTalk::Answer FakeDingTalk::answer_pages(const Call& call, SteadyTime t, bool loop_fault,
                                                bool cursor_fault) {
  // Valid from here on: refusal() checked every field.
  const json& body = call.args;
  const std::string key = string_field(body, "processQueryKey");
  Message& m = m_messages.at(key);
  int page = m_options.page_size;
  if (body.contains("maxResults")) {
    page = std::min(page, static_cast<int>(body["maxResults"].get<std::int64_t>()));
  }
  const std::string next_token = string_field(body, "nextToken");
  std::size_t offset = 0;
  if (!next_token.empty()) {
    offset = *parse_next_token(key, next_token);
  }
  if (cursor_fault) {
    return refused_with(400, "invalidParameter.cursor.invalid");
  }
  promote_due_reads(key, m, t);
  offset = std::min(offset, m.reads.size());
  const std::size_t end = std::min(m.reads.size(), offset + static_cast<std::size_t>(page));
  json users = json::array();
  json readers = json::array(); // group: readUsers, as newer SDKs read it
  for (std::size_t i = offset; i < end; ++i) {
    users.push_back(m.reads[i]);
    readers.push_back({{"unionId", union_id_of(m.reads[i])}, {"userId", m.reads[i]}});
    m_reads_served.emplace(key, m.reads[i]);
  }
  Answer answer;
  answer.body = {{"sendStatus", m.spec.send_status}, {"readUserIds", users}};
  if (call.kind == MessageKind::group) {
    answer.body["readUsers"] = std::move(readers);
  }
  if (loop_fault) {
    answer.body["hasMore"] = true;
    answer.body["nextToken"] = next_token;
  } else if (end < m.reads.size()) {
    answer.body["hasMore"] = true;
    answer.body["nextToken"] = make_next_token(key, end);
  } else {
    answer.body["hasMore"] = false;
  }
  return answer;
}

FakeDingTalk::Answer FakeDingTalk::answer_oto(const Call& call, SteadyTime t) {
  const std::string key = string_field(call.args, "processQueryKey");
  Message& m = m_messages.at(key);
  promote_due_reads(key, m, t);
  json list = json::array();
  for (const auto& user : m.spec.recipients) {
    const auto name = m.spec.names.find(user);
    const auto read = m.read_at.find(user);
    json entry = {{"name", name != m.spec.names.end() ? name->second : user},
                  {"userId", user},
                  {"readStatus", read != m.read_at.end() ? "READ" : "UNREAD"},
                  {"readTimestamp", read != m.read_at.end() ? epoch_ms(read->second) : 0}};
    if (read != m.read_at.end()) {
      m_reads_served.emplace(key, user);
    }
    list.push_back(std::move(entry));
  }
  Answer answer;
  answer.body = {{"sendStatus", m.spec.send_status}, {"messageReadInfoList", std::move(list)}};
  return answer;
}

void FakeDingTalk::spoil(Answer& answer, FaultKind kind, MessageKind api, SteadyTime t) const {
  json& body = answer.body;
  const bool oto = api == MessageKind::oto;
  switch (kind) {
  case FaultKind::read_without_user_id:
    if (oto) {
      body["messageReadInfoList"].push_back(
          {{"name", "Outsider"}, {"readStatus", "READ"}, {"readTimestamp", epoch_ms(t)}});
    } else if (body.contains("readUsers")) {
      body["readUsers"].push_back({{"unionId", union_id_of("\noutsider")}});
    }
    return;
  case FaultKind::timestamp_not_number:
    for (auto& entry : body["messageReadInfoList"]) {
      entry["readTimestamp"] = std::to_string(entry["readTimestamp"].get<std::int64_t>());
    }
    return;
  case FaultKind::duplicate_users:
    if (oto) {
      // A reader twice: the first READ entry, or the first of all if none is.
      json& list = body["messageReadInfoList"];
      const auto read = std::find_if(list.begin(), list.end(),
                                     [](const json& e) { return e["readStatus"] == "READ"; });
      if (read != list.end()) {
        const json entry = *read;
        list.push_back(entry);
        return;
      }
    }
    for (const char* list : {"messageReadInfoList", "readUserIds", "readUsers"}) {
      if (body.contains(list) && !body[list].empty()) {
        const json first = body[list].front();
        body[list].push_back(first);
      }
    }
    return;
  default:
    return;
  }
}

std::string FakeDingTalk::make_next_token(const std::string& key, std::size_t offset) {
  const std::string payload =
      key + "\n" + std::to_string(offset) + "\n" + std::to_string(++m_counter);
  const std::string mac = hex_encode(hmac_sha256(m_cursor_key, payload)).substr(0, 32);
  return base64_encode(payload + "\n" + mac);
}

std::optional<std::size_t> FakeDingTalk::parse_next_token(const std::string& key,
                                                          const std::string& token) const {
  const auto decoded = base64_decode(token);
  if (!decoded) {
    return std::nullopt;
  }
  const auto parts = split(*decoded, '\n');
  if (parts.size() != 4) {
    return std::nullopt;
  }
  const std::string payload = parts[0] + "\n" + parts[1] + "\n" + parts[2];
  if (hex_encode(hmac_sha256(m_cursor_key, payload)).substr(0, 32) != parts[3] || parts[0] != key) {
    return std::nullopt;
  }
  try {
    return static_cast<std::size_t>(std::stoull(parts[1]));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// --- observation ---

int FakeDingTalk::token_calls() const {
  std::lock_guard lock(m_mutex);
  return m_token_calls;
}

int FakeDingTalk::gateway_calls() const {
  std::lock_guard lock(m_mutex);
  return static_cast<int>(m_gateway_requests.size());
}

std::vector<GatewayRecord> FakeDingTalk::gateway_requests() const {
  std::lock_guard lock(m_mutex);
  return m_gateway_requests;
}

int FakeDingTalk::query_calls() const {
  std::lock_guard lock(m_mutex);
  return static_cast<int>(m_queries.size());
}

int FakeDingTalk::query_calls(const std::string& key) const {
  std::lock_guard lock(m_mutex);
  const auto it = m_query_calls_by_key.find(key);
  return it == m_query_calls_by_key.end() ? 0 : it->second;
}

std::set<std::pair<std::string, std::string>> FakeDingTalk::reads_served() const {
  std::lock_guard lock(m_mutex);
  return m_reads_served;
}

int FakeDingTalk::max_concurrent_requests() const {
  std::lock_guard lock(m_mutex);
  return m_max_in_flight;
}

int FakeDingTalk::in_flight_requests() const {
  std::lock_guard lock(m_mutex);
  return m_in_flight;
}

std::vector<SteadyTime> FakeDingTalk::query_times() const {
  std::lock_guard lock(m_mutex);
  return m_query_times;
}

std::vector<SteadyTime> FakeDingTalk::request_times() const {
  std::lock_guard lock(m_mutex);
  return m_request_times;
}

std::vector<QueryRecord> FakeDingTalk::queries() const {
  std::lock_guard lock(m_mutex);
  return m_queries;
}

int FakeDingTalk::max_in_window(std::vector<SteadyTime> times, std::chrono::milliseconds window) {
  std::sort(times.begin(), times.end());
  int best = 0;
  std::size_t first = 0;
  for (std::size_t last = 0; last < times.size(); ++last) {
    while (times[last] - times[first] >= window) {
      ++first;
    }
    best = std::max(best, static_cast<int>(last - first + 1));
  }
  return best;
}

} // namespace rrd::testing
