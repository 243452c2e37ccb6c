#include "readreceiptd/dingtalk/protocol.hpp"

#include "readreceiptd/common/version.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <nlohmann/json.hpp>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

namespace rrd::dingtalk {
namespace {

using nlohmann::json;

// Parses without throwing; a discarded value means "not JSON". A raw NUL
// cannot occur in JSON text, and the parser would take it for the end of the
// input and ignore what follows, so it is refused up front.
json parse_json(std::string_view body) {
  if (body.find('\0') != std::string_view::npos) {
    return json(json::value_t::discarded);
  }
  try {
    return json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  } catch (...) {
    return json(json::value_t::discarded);
  }
}

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Appends `text` as a JSON string. Printable ASCII without quotes or
// backslashes (every id DingTalk issues) is copied as it is; anything else
// goes through nlohmann::json, which escapes it and replaces invalid UTF-8.
void append_json_string(std::string& out, std::string_view text) {
  const bool plain = std::all_of(text.begin(), text.end(), [](char c) {
    return c >= 0x20 && c < 0x7F && c != '"' && c != '\\';
  });
  if (!plain) {
    out += dump(json(std::string(text)));
    return;
  }
  out += '"';
  out += text;
  out += '"';
}

std::string base_url(const std::string& endpoint) {
  std::string url = endpoint;
  while (!url.empty() && url.back() == '/') {
    url.pop_back();
  }
  return url;
}

// The request fields every DingTalk call shares.
http::Request base_request(const config::DingTalk& cfg, std::string_view path) {
  http::Request r;
  r.method = "POST";
  r.url = base_url(cfg.endpoint) + std::string(path);
  r.headers = {
      {"Content-Type", "application/json"},
      {"Accept", "application/json"},
      {"User-Agent", std::string("readreceiptd/") + k_version},
  };
  r.total_timeout = cfg.request_timeout;
  r.connect_timeout = std::min(cfg.request_timeout, http::k_default_connect_timeout);
  r.max_response_bytes = k_max_response_bytes;
  r.ca_file = cfg.ca_file;
  r.hot = true;
  return r;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

const char* type_name(const json& j) {
  return j.type_name();
}

} // namespace

bool has_control_character(std::string_view text) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7F) {
      return true;
    }
    // C1 controls, U+0080..U+009F: 0xC2 0x80..0x9F in UTF-8.
    if (c == 0xC2 && i + 1 < text.size()) {
      const auto next = static_cast<unsigned char>(text[i + 1]);
      if (next >= 0x80 && next <= 0x9F) {
        return true;
      }
    }
  }
  return false;
}

std::string cap_text(std::string_view text, std::size_t max_bytes) {
  bool cut = false;
  if (text.size() > max_bytes) {
    std::size_t end = max_bytes;
    // Back up over UTF-8 continuation bytes so no sequence is split.
    while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) {
      --end;
    }
    text = text.substr(0, end);
    cut = true;
  }
  std::string out(text);
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      c = ' ';
    }
  }
  if (cut) {
    out += "...";
  }
  return out;
}

std::string url_encode(std::string_view text) {
  static constexpr char k_hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size() + 8);
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if ((u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z') || (u >= '0' && u <= '9') || u == '-' ||
        u == '.' || u == '_' || u == '~') {
      out += c;
    } else {
      out += '%';
      out += k_hex[u >> 4];
      out += k_hex[u & 0x0F];
    }
  }
  return out;
}

http::Request build_query_request(const config::DingTalk& cfg, const MessageSpec& m,
                                  const std::string& token, const std::string* next_token) {
  if (m.kind == MessageKind::oto) {
    http::Request r = base_request(cfg, k_oto_status_path);
    r.method = "GET";
    r.url += "?robotCode=" + url_encode(m.robot_code) +
             "&processQueryKey=" + url_encode(m.process_query_key);
    // A GET has no body, hence no Content-Type.
    r.headers.erase(std::remove_if(r.headers.begin(), r.headers.end(),
                                   [](const auto& h) { return h.first == "Content-Type"; }),
                    r.headers.end());
    r.headers.insert(r.headers.begin(), {std::string(k_token_header), token});
    return r;
  }
  http::Request r =
      base_request(cfg, m.kind == MessageKind::group ? k_group_query_path : k_query_path);
  r.headers.insert(r.headers.begin(), {std::string(k_token_header), token});

  // Written directly (this runs for every page of every poll): the same
  // bytes nlohmann::json would write, keys in its (sorted) order.
  std::string& body = r.body;
  body.reserve(64 + m.open_conversation_id.size() + m.robot_code.size() +
               m.process_query_key.size() + m.token.size() +
               (next_token == nullptr ? 0 : next_token->size()));
  body += R"({"maxResults":)";
  body += std::to_string(cfg.page_size);
  if (next_token != nullptr) {
    body += R"(,"nextToken":)";
    append_json_string(body, *next_token);
  }
  if (!m.open_conversation_id.empty()) {
    body += R"(,"openConversationId":)";
    append_json_string(body, m.open_conversation_id);
  }
  body += R"(,"processQueryKey":)";
  append_json_string(body, m.process_query_key);
  if (!m.robot_code.empty()) {
    body += R"(,"robotCode":)";
    append_json_string(body, m.robot_code);
  }
  if (m.kind == MessageKind::group && !m.token.empty()) {
    body += R"(,"token":)";
    append_json_string(body, m.token);
  }
  body += '}';
  return r;
}

std::optional<http::Request> build_token_request(const config::DingTalk& cfg) {
  using Kind = config::DingTalk::AuthKind;
  switch (cfg.auth_kind) {
  case Kind::internal_app: {
    http::Request r = base_request(cfg, k_internal_token_path);
    r.body = dump(
        json{{"appKey", cfg.internal_app.app_key}, {"appSecret", cfg.internal_app.app_secret}});
    return r;
  }
  case Kind::third_party: {
    http::Request r = base_request(cfg, k_third_party_token_path);
    r.body = dump(json{{"suiteKey", cfg.third_party.suite_key},
                       {"suiteSecret", cfg.third_party.suite_secret},
                       {"authCorpId", cfg.third_party.auth_corp_id},
                       {"suiteTicket", cfg.third_party.suite_ticket}});
    return r;
  }
  case Kind::fixed_token:
    return std::nullopt;
  }
  return std::nullopt;
}

namespace {

// The query answer read with nlohmann's SAX interface: no document tree,
// only the four fields, each as its last occurrence (as a parsed object
// would keep it). Every check parse_query_page() makes is decided from what
// this records, in the same order as a check of the tree would make it;
// fuzz/dingtalk_answer_fuzz.cpp compares the two on every input.
class PageReader final : public nlohmann::json_sax<json> {
public:
  // A string field: sendStatus or nextToken.
  struct Text {
    std::string value;         // "" when absent or null
    const char* bad = nullptr; // the type, when not a string
  };
  struct Ids {
    bool present = false;      // an array
    const char* bad = nullptr; // the type, when neither array nor null
    std::vector<std::string> values;
    std::string error; // the first bad element
  };

  const char* top = nullptr; // the type of the body's value
  bool known_key = false;    // one of the four fields appeared
  Text send_status;
  Text next_token;
  Ids ids;
  std::optional<bool> has_more;
  const char* has_more_bad = nullptr;

  bool null() override { return value("null", nullptr); }
  bool boolean(bool v) override { return value("boolean", nullptr, &v); }
  bool number_integer(number_integer_t /*v*/) override { return value("number", nullptr); }
  bool number_unsigned(number_unsigned_t /*v*/) override { return value("number", nullptr); }
  bool number_float(number_float_t /*v*/, const string_t& /*s*/) override {
    return value("number", nullptr);
  }
  bool string(string_t& v) override { return value("string", &v); }
  bool binary(binary_t& /*v*/) override { return value("binary", nullptr); }

  bool start_object(std::size_t /*n*/) override {
    value("object", nullptr);
    ++m_depth;
    return true;
  }
  bool start_array(std::size_t /*n*/) override {
    const bool starts_ids = m_depth == 1 && m_field == Field::ids;
    value("array", nullptr);
    if (starts_ids) {
      ids.present = true;
      ids.bad = nullptr;
      m_in_ids = true;
    }
    ++m_depth;
    return true;
  }
  bool end_object() override { return end(); }
  bool end_array() override { return end(); }

  bool key(string_t& k) override {
    if (m_depth == 1) {
      m_field = k == "sendStatus"    ? Field::send_status
                : k == "nextToken"   ? Field::next_token
                : k == "readUserIds" ? Field::ids
                : k == "hasMore"     ? Field::has_more
                                     : Field::other;
      known_key = known_key || m_field != Field::other;
    }
    return true;
  }

  bool parse_error(std::size_t /*position*/, const std::string& /*token*/,
                   const nlohmann::detail::exception& /*e*/) override {
    return false;
  }

private:
  enum class Field { other, send_status, next_token, ids, has_more };

  bool end() {
    --m_depth;
    if (m_depth == 1) {
      m_in_ids = false;
    }
    return true;
  }

  // A value starts (a scalar, or the start of an object or array) at the
  // current depth.
  bool value(const char* type, string_t* text, const bool* flag = nullptr) {
    if (m_depth == 0) {
      top = type;
    } else if (m_depth == 1) {
      member(type, text, flag);
    } else if (m_depth == 2 && m_in_ids) {
      element(type, text);
    }
    return true;
  }

  void member(const char* type, string_t* text, const bool* flag) {
    const bool is_null = text == nullptr && flag == nullptr && std::string_view(type) == "null";
    switch (m_field) {
    case Field::other:
      break;
    case Field::send_status:
    case Field::next_token: {
      Text& t = m_field == Field::send_status ? send_status : next_token;
      t = Text{};
      if (text != nullptr) {
        t.value = std::move(*text);
      } else if (!is_null) {
        t.bad = type;
      }
      break;
    }
    case Field::ids:
      ids = Ids{};
      m_in_ids = false;
      m_index = 0;
      if (!is_null) {
        ids.bad = type; // an array clears this in start_array()
      }
      break;
    case Field::has_more:
      has_more.reset();
      has_more_bad = nullptr;
      if (flag != nullptr) {
        has_more = *flag;
      } else if (!is_null) {
        has_more_bad = type;
      }
      break;
    }
  }

  void element(const char* type, string_t* text) {
    const std::size_t index = m_index++;
    if (!ids.error.empty()) {
      return;
    }
    if (text == nullptr) {
      ids.error = "readUserIds[" + std::to_string(index) + "]: expected a string, got " + type;
    } else if (text->empty()) {
      ids.error = "readUserIds[" + std::to_string(index) + "]: empty string";
    } else if (has_control_character(*text)) {
      ids.error = "readUserIds[" + std::to_string(index) + "]: control character in a user id";
    } else {
      ids.values.push_back(std::move(*text));
    }
  }

  std::size_t m_depth = 0;
  Field m_field = Field::other;
  bool m_in_ids = false;
  std::size_t m_index = 0; // of the next element of readUserIds
};

} // namespace

Result<Page, std::string> parse_query_page(std::string_view body) {
  try {
    PageReader r;
    if (body.find('\0') != std::string_view::npos ||
        !json::sax_parse(body.begin(), body.end(), &r, json::input_format_t::json,
                         /*strict=*/true, /*ignore_comments=*/false)) {
      return err(std::string("body is not valid JSON"));
    }
    if (std::string_view(r.top) != "object") {
      return err(std::string("body: expected a JSON object, got ") + r.top);
    }
    if (!r.known_key) {
      return err(std::string("body: none of sendStatus, readUserIds, hasMore, nextToken"));
    }
    Page page;
    for (const auto& [name, field, out] :
         {std::tuple{"sendStatus", &r.send_status, &page.send_status},
          std::tuple{"nextToken", &r.next_token, &page.next_token}}) {
      if (field->bad != nullptr) {
        return err(std::string(name) + ": expected a string, got " + field->bad);
      }
      *out = std::move(field->value);
    }
    if (r.ids.bad != nullptr) {
      return err(std::string("readUserIds: expected an array, got ") + r.ids.bad);
    }
    if (!r.ids.error.empty()) {
      return err(std::move(r.ids.error));
    }
    page.read_user_ids = std::move(r.ids.values);
    if (r.has_more_bad != nullptr) {
      return err(std::string("hasMore: expected a boolean, got ") + r.has_more_bad);
    }
    page.has_more = r.has_more.value_or(false);
    if (page.has_more && page.next_token.empty()) {
      return err(std::string("nextToken: missing or empty while hasMore is true"));
    }
    return page;
  } catch (...) {
    return err(std::string("body could not be parsed"));
  }
}

namespace {

// The earliest and latest read time believed (2015 .. 2200).
constexpr std::int64_t k_min_read_time_ms = 1'420'070'400'000;
constexpr std::int64_t k_max_read_time_ms = 7'258'118'400'000;

} // namespace

std::optional<std::int64_t> epoch_ms(const nlohmann::json& value) {
  if (value.is_number_integer()) {
    return value.get<std::int64_t>();
  }
  if (!value.is_string()) {
    return std::nullopt;
  }
  const std::string& text = value.get_ref<const std::string&>();
  if (text.empty() || text.front() == '-') {
    return std::nullopt;
  }
  std::int64_t ms = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), ms);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return std::nullopt;
  }
  return ms;
}

bool plausible_read_time_ms(std::int64_t ms) {
  return ms >= k_min_read_time_ms && ms <= k_max_read_time_ms;
}

Result<Page, std::string> parse_group_page(std::string_view body) {
  json j = parse_json(body);
  if (!j.is_object() || !j.contains("readUsers") || j["readUsers"].is_null()) {
    return parse_query_page(body); // and its errors for what is not an object
  }
  const json users = std::move(j["readUsers"]);
  j.erase("readUsers");
  if (!users.is_array()) {
    return err(std::string("readUsers: expected an array, got ") + type_name(users));
  }
  Page page;
  if (j.contains("sendStatus") || j.contains("readUserIds") || j.contains("hasMore") ||
      j.contains("nextToken")) {
    auto rest = parse_query_page(dump(j));
    if (!rest) {
      return rest;
    }
    page = std::move(rest).value();
  }
  std::unordered_set<std::string> seen(page.read_user_ids.begin(), page.read_user_ids.end());
  for (std::size_t i = 0; i < users.size(); ++i) {
    const json& u = users[i];
    const std::string where = "readUsers[" + std::to_string(i) + "]";
    if (!u.is_object()) {
      return err(where + ": expected an object, got " + type_name(u));
    }
    const auto id = u.find("userId");
    if (id == u.end() || !id->is_string() || id->get_ref<const std::string&>().empty()) {
      return err(where + ".userId: expected a non-empty string");
    }
    const std::string& text = id->get_ref<const std::string&>();
    if (has_control_character(text)) {
      return err(where + ".userId: control character in a user id");
    }
    if (seen.insert(text).second) {
      page.read_user_ids.push_back(text);
    }
  }
  return page;
}

Result<Page, std::string> parse_oto_status(std::string_view body) {
  const json j = parse_json(body);
  if (j.is_discarded()) {
    return err(std::string("body is not valid JSON"));
  }
  if (!j.is_object()) {
    return err(std::string("body: expected a JSON object, got ") + type_name(j));
  }
  Page page;
  page.lists_recipients = true;
  if (const auto status = j.find("sendStatus"); status != j.end() && !status->is_null()) {
    if (!status->is_string()) {
      return err(std::string("sendStatus: expected a string, got ") + type_name(*status));
    }
    page.send_status = status->get<std::string>();
  }
  const auto list = j.find("messageReadInfoList");
  if (list == j.end() || list->is_null()) {
    if (j.find("sendStatus") == j.end()) {
      return err(std::string("body: neither sendStatus nor messageReadInfoList"));
    }
    return page;
  }
  if (!list->is_array()) {
    return err(std::string("messageReadInfoList: expected an array, got ") + type_name(*list));
  }
  if (list->size() > k_max_oto_entries) {
    return err("messageReadInfoList: more than " + std::to_string(k_max_oto_entries) + " entries");
  }
  std::unordered_map<std::string, std::size_t> read_index;
  std::unordered_set<std::string> listed;
  for (std::size_t i = 0; i < list->size(); ++i) {
    const json& e = (*list)[i];
    const std::string where = "messageReadInfoList[" + std::to_string(i) + "]";
    if (!e.is_object()) {
      return err(where + ": expected an object, got " + type_name(e));
    }
    const auto user = e.find("userId");
    if (user == e.end() || !user->is_string() || user->get_ref<const std::string&>().empty()) {
      return err(where + ".userId: expected a non-empty string");
    }
    const std::string& id = user->get_ref<const std::string&>();
    if (has_control_character(id)) {
      return err(where + ".userId: holds a control character");
    }
    const auto status = e.find("readStatus");
    if (status == e.end() || !status->is_string() ||
        (status->get_ref<const std::string&>() != "READ" &&
         status->get_ref<const std::string&>() != "UNREAD")) {
      return err(where + ".readStatus: expected \"READ\" or \"UNREAD\"");
    }
    std::optional<TimePoint> read_at;
    if (const auto t = e.find("readTimestamp"); t != e.end() && !t->is_null()) {
      const auto ms = epoch_ms(*t);
      if (!ms || *ms < 0) {
        return err(where + ".readTimestamp: expected epoch milliseconds");
      }
      if (*ms != 0) {
        if (!plausible_read_time_ms(*ms)) {
          return err(where + ".readTimestamp: not a plausible time");
        }
        read_at = from_unix_ms(*ms);
      }
    }
    if (listed.insert(id).second) {
      page.recipients.push_back(id);
    }
    if (status->get_ref<const std::string&>() != "READ") {
      continue;
    }
    const auto [it, fresh] = read_index.try_emplace(id, page.read_user_ids.size());
    if (fresh) {
      page.read_user_ids.push_back(id);
      page.read_at.push_back(read_at);
    } else if (!page.read_at[it->second]) {
      page.read_at[it->second] = read_at;
    }
  }
  return page;
}

Result<Token, std::string> parse_token_answer(std::string_view body) {
  try {
    const json j = parse_json(body);
    if (j.is_discarded()) {
      return err(std::string("body is not valid JSON"));
    }
    if (!j.is_object()) {
      return err(std::string("body: expected a JSON object, got ") + type_name(j));
    }
    Token t;
    const auto tok = j.find("accessToken");
    if (tok == j.end() || tok->is_null()) {
      return err(std::string("accessToken: missing"));
    }
    if (!tok->is_string()) {
      return err(std::string("accessToken: expected a string, got ") + type_name(*tok));
    }
    t.access_token = tok->get_ref<const std::string&>();
    if (t.access_token.empty()) {
      return err(std::string("accessToken: empty"));
    }
    const auto exp = j.find("expireIn");
    if (exp == j.end() || exp->is_null()) {
      return err(std::string("expireIn: missing"));
    }
    if (exp->is_number_unsigned()) {
      const auto v = exp->get<std::uint64_t>();
      if (v == 0) {
        return err(std::string("expireIn: must be positive"));
      }
      t.expire_in_seconds = static_cast<std::int64_t>(
          std::min<std::uint64_t>(v, static_cast<std::uint64_t>(k_max_token_lifetime_seconds)));
    } else if (exp->is_number_integer()) {
      // Only negative values reach here: non-negative ones are unsigned.
      return err(std::string("expireIn: must be positive"));
    } else {
      return err(std::string("expireIn: expected an integer, got ") + type_name(*exp));
    }
    return t;
  } catch (...) {
    return err(std::string("body could not be parsed"));
  }
}

std::optional<ErrorBody> parse_error_body(std::string_view body) {
  try {
    const json j = parse_json(body);
    if (!j.is_object()) {
      return std::nullopt;
    }
    const auto code = j.find("code");
    if (code == j.end() || !code->is_string() || code->get_ref<const std::string&>().empty()) {
      return std::nullopt;
    }
    ErrorBody e;
    e.code = cap_text(code->get_ref<const std::string&>());
    if (const auto m = j.find("message"); m != j.end() && m->is_string()) {
      e.message = cap_text(m->get_ref<const std::string&>());
    }
    if (const auto id = j.find("requestid"); id != j.end() && id->is_string()) {
      e.request_id = cap_text(id->get_ref<const std::string&>());
    }
    return e;
  } catch (...) {
    return std::nullopt;
  }
}

std::string redact_url(std::string_view url) {
  static constexpr std::array<std::string_view, 3> k_api_paths = {
      k_query_path, k_internal_token_path, k_third_party_token_path};
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    return std::string(k_redacted);
  }
  std::string out(cap_text(url.substr(0, scheme_end + 3)));
  const std::string_view rest = url.substr(scheme_end + 3);
  const auto path_start = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, path_start);
  const std::string_view tail =
      path_start == std::string_view::npos ? std::string_view() : rest.substr(path_start);
  if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
    out += k_redacted;
    out += '@';
    authority.remove_prefix(at + 1);
  }
  out += cap_text(authority);
  // The API path ends the URL when the request was built from the endpoint
  // (whatever the endpoint's own path and query were).
  const auto whole = std::find_if(k_api_paths.begin(), k_api_paths.end(),
                                  [&](std::string_view p) { return tail.ends_with(p); });
  if (whole != k_api_paths.end()) {
    if (tail.size() > whole->size()) {
      out += '/';
      out += k_redacted;
    }
    out += *whole;
    return out;
  }
  const std::string_view path = tail.substr(0, tail.find_first_of("?#"));
  const auto api = std::find_if(k_api_paths.begin(), k_api_paths.end(),
                                [&](std::string_view p) { return path.ends_with(p); });
  if (api != k_api_paths.end()) {
    if (path.size() > api->size()) {
      out += '/';
      out += k_redacted;
    }
    out += *api;
  } else if (!path.empty() && path != "/") {
    out += '/';
    out += k_redacted;
  }
  if (tail.size() > path.size()) {
    out += '?';
    out += k_redacted;
  }
  return out;
}

std::string redact_request(const http::Request& request) {
  static constexpr std::array<std::string_view, 4> k_secret_fields = {"appSecret", "suiteSecret",
                                                                      "suiteTicket", "token"};
  std::string out = request.method + " " + redact_url(request.url) + " headers=[";
  bool first = true;
  for (const auto& [name, value] : request.headers) {
    if (!first) {
      out += ", ";
    }
    first = false;
    out += name;
    out += ": ";
    if (iequals(name, k_token_header) || iequals(name, "authorization")) {
      out += k_redacted;
    } else {
      out += cap_text(value);
    }
  }
  out += "] body=";
  if (request.body.empty()) {
    out += "<empty>";
    return out;
  }
  try {
    json j = parse_json(request.body);
    if (j.is_discarded()) {
      out += "<" + std::to_string(request.body.size()) + " bytes, not JSON>";
      return out;
    }
    if (j.is_object()) {
      for (const auto field : k_secret_fields) {
        if (const auto it = j.find(std::string(field)); it != j.end()) {
          *it = std::string(k_redacted);
        }
      }
    }
    out += dump(j);
  } catch (...) {
    out += "<" + std::to_string(request.body.size()) + " bytes>";
  }
  return out;
}

http::Request request_for(const config::DingTalk& cfg, std::string_view path) {
  return base_request(cfg, path);
}

} // namespace rrd::dingtalk
