// The DingTalk wire protocol as pure functions: building the read-list query
// and the token requests as http::Request values, and parsing their answers
// strictly into plain values. No I/O, no clock, no exceptions escape.
// Thread-safety: every function is pure and may be called from any thread.
#pragma once

#include "readreceiptd/common/model.hpp"
#include "readreceiptd/common/result.hpp"
#include "readreceiptd/config/config.hpp"
#include "readreceiptd/http/http_engine.hpp"

#include <cstddef>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rrd::dingtalk {

// The largest answer body read from DingTalk; a longer one is cut off by the
// engine (Failure::too_large) and treated as a bad response.
inline constexpr std::size_t k_max_response_bytes = 4 * 1024 * 1024;
// Text taken from DingTalk bodies (error messages) into logs is capped here.
inline constexpr std::size_t k_max_message_chars = 200;
// A token's lifetime is clamped to this, whatever expireIn says, so that time
// arithmetic stays small and a wild value cannot pin a token for years.
inline constexpr std::int64_t k_max_token_lifetime_seconds = 24 * 3600;

inline constexpr std::string_view k_query_path = "/v1.0/robot/privateChatMessages/query";
inline constexpr std::string_view k_group_query_path = "/v1.0/robot/groupMessages/query";
inline constexpr std::string_view k_oto_status_path = "/v1.0/robot/oToMessages/readStatus";
// An oto answer lists at most batchSend's 20 recipients; a longer list is
// refused as a bad answer beyond this (a hostile or broken answer).
inline constexpr std::size_t k_max_oto_entries = 1000;
inline constexpr std::string_view k_internal_token_path = "/v1.0/oauth2/accessToken";
inline constexpr std::string_view k_third_party_token_path = "/v1.0/oauth2/corpAccessToken";
inline constexpr std::string_view k_token_header = "x-acs-dingtalk-access-token";
inline constexpr std::string_view k_redacted = "<redacted>";

// One page of a read-status answer: privateChatMessages/query and
// groupMessages/query (paginated), or oToMessages/readStatus (one page that
// lists every recipient, read or not, with read times).
struct Page {
  std::string send_status;                // "" when the answer omits it
  std::vector<std::string> read_user_ids; // in the answer's order
  bool has_more = false;
  std::string next_token; // non-empty whenever has_more
  // oto only: read_at[i] is when read_user_ids[i] read it; every recipient
  // listed, read or not, in the answer's order, each once.
  std::vector<std::optional<TimePoint>> read_at;
  bool lists_recipients = false;
  std::vector<std::string> recipients;

  bool operator==(const Page&) const = default;
};

// An access token answer. `access_token` is a secret.
struct Token {
  std::string access_token;
  std::int64_t expire_in_seconds = 0; // 1..k_max_token_lifetime_seconds

  bool operator==(const Token&) const = default;
};

// DingTalk's error body: {"code", "message", "requestid"}.
struct ErrorBody {
  std::string code;       // capped at k_max_message_chars
  std::string message;    // capped and cleaned of control characters
  std::string request_id; // capped

  bool operator==(const ErrorBody&) const = default;
};

// The read-status call for one page of message `m`, by its kind:
// private_chat and group POST a JSON body with only the fields that are set
// (openConversationId and robotCode omitted when empty, nextToken only on
// later pages, maxResults cfg.page_size; group adds `token` when set); oto
// GETs oToMessages/readStatus?robotCode=&processQueryKey= (both
// percent-encoded, `+`, `/` and `=` included) and has no pages. `next_token`
// is null for the first page.
http::Request build_query_request(const config::DingTalk& cfg, const MessageSpec& m,
                                  const std::string& token, const std::string* next_token);

// The token request for cfg's auth kind: internal app (accessToken) or
// third-party app (corpAccessToken). nullopt for a fixed token, which needs
// no request.
std::optional<http::Request> build_token_request(const config::DingTalk& cfg);

// Parses a 200 answer of the query. Strict: the body must be a JSON object
// holding at least one of the documented fields; `readUserIds` an array of
// non-empty strings without control characters (has_control_character: such
// an id would be stored, sent in events and logged, and no id DingTalk
// issues holds one), `sendStatus` and `nextToken` strings, `hasMore` a bool.
// Absent (or null) fields take their defaults ([], "", false, ""); unknown
// fields are ignored; an unknown sendStatus value is passed through.
// `hasMore: true` without a non-empty nextToken is an error. The error text
// names the offending field and never quotes values.
Result<Page, std::string> parse_query_page(std::string_view body);

// Parses a 200 answer of groupMessages/query: parse_query_page's answer,
// which newer SDKs also read as `readUsers`, an array of objects each with a
// non-empty `userId` (and a `unionId`, ignored). Both readings are accepted:
// the read set is readUserIds followed by the readUsers' ids not already in
// it, and an answer with readUsers alone is a page. A bad readUsers is an
// error named by its index, as readUserIds' are.
Result<Page, std::string> parse_group_page(std::string_view body);

// Parses a 200 answer of oToMessages/readStatus: a JSON object with
// `sendStatus` (a string, optional) and `messageReadInfoList`, an array of
// objects with a non-empty `userId` (no control characters), `readStatus`
// "READ" or "UNREAD", and for READ a `readTimestamp` in epoch milliseconds
// (a number or a string of digits; 0 or absent: unknown). A user listed twice
// counts once (read if any entry says so). The page it gives has no more
// pages; read_user_ids are the READ entries, in order, with read_at.
Result<Page, std::string> parse_oto_status(std::string_view body);

// Percent-encodes a query-string value: everything but RFC 3986's
// unreserved characters.
std::string url_encode(std::string_view text);

// Parses a 200 answer of a token endpoint: {"accessToken": non-empty string,
// "expireIn": positive integer seconds}. expireIn is clamped to
// k_max_token_lifetime_seconds. The error text never contains the token.
Result<Token, std::string> parse_token_answer(std::string_view body);

// Parses a DingTalk error body. nullopt unless it is a JSON object with a
// non-empty string `code`.
std::optional<ErrorBody> parse_error_body(std::string_view body);

// A one-line printable shape of a request, for logs: method, URL
// (redact_url), headers and body, with the token header, any Authorization
// header and the secret body fields (appSecret, suiteSecret, suiteTicket,
// token) replaced by "<redacted>". A body that is not JSON is shown only by
// its size.
std::string redact_request(const http::Request& request);

// A URL for logs: scheme and host, and of the path only the DingTalk API
// path it ends with. `dingtalk.endpoint` may carry credentials in its user
// information, path or query: those are "<redacted>".
//   https://u:p@gw.example.com/k3y/v1.0/oauth2/accessToken?sig=x
//   -> https://<redacted>@gw.example.com/<redacted>/v1.0/oauth2/accessToken?<redacted>
std::string redact_url(std::string_view url);

// Whether `text` holds a C0 control character, DEL or a C1 control (U+0080
// to U+009F, as UTF-8).
bool has_control_character(std::string_view text);

// `text` cut to at most `max_bytes` bytes (never inside a UTF-8 sequence),
// with control characters replaced by spaces and "..." appended when cut.
std::string cap_text(std::string_view text, std::size_t max_bytes = k_max_message_chars);

// A POST to `path` under cfg.endpoint with the headers, timeouts, size cap,
// CA file and `hot` flag every DingTalk call shares, and no body yet.
http::Request request_for(const config::DingTalk& cfg, std::string_view path);

// A time as DingTalk sends it (a read's `readTimestamp`, a push's
// `operatTime`): Unix milliseconds as a JSON integer or as a string of
// digits. nullopt for anything else (a string with a sign, a fraction,
// other characters, or empty). A negative integer is returned as it is.
std::optional<std::int64_t> epoch_ms(const nlohmann::json& value);

// Whether `ms` is a read time to believe: 2015-01-01 .. 2200-01-01 UTC.
bool plausible_read_time_ms(std::int64_t ms);

} // namespace rrd::dingtalk
