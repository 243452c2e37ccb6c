// DingTalk Stream mode's messages as pure functions (SPEC section 10,
// shared/dingtalk/STREAM.md): the gateway call that opens a connection, the
// JSON frames the server sends over the WebSocket, the `robot_msg_read`
// event inside them, and the client's answers. No I/O, no clock.
//
// Thread-safety: every function is pure and may be called from any thread.
#pragma once

#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/common/result.hpp"
#include "readreceiptd/config/config.hpp"
#include "readreceiptd/http/http_engine.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace rrd::stream {

inline constexpr std::string_view k_gateway_path = "/v1.0/gateway/connections/open";
inline constexpr std::string_view k_event_robot_msg_read = "robot_msg_read";
// The largest gateway answer read; DingTalk's is about 150 bytes.
inline constexpr std::size_t k_max_gateway_answer_bytes = 64 * 1024;
// Values taken from frames (ids, topics, reasons) are capped at this many
// bytes; a longer one makes the frame bad.
inline constexpr std::size_t k_max_field_bytes = 1024;

// ---- the gateway ----------------------------------------------------------

// The client id and secret the gateway wants: app_key/app_secret for an
// internal app, suite_key/suite_secret for a third-party one. nullopt for a
// fixed access token, which cannot open a Stream connection.
struct Credentials {
  std::string client_id;
  std::string client_secret; // secret
};
std::optional<Credentials> credentials(const config::DingTalk& cfg);

// POST {endpoint}/v1.0/gateway/connections/open with
// {"clientId", "clientSecret", "subscriptions": [{"type": "EVENT", "topic": "*"}],
//  "ua": "readreceiptd/<version>"}.
http::Request build_gateway_request(const config::DingTalk& cfg, const Credentials& c);

// Where to connect: the WebSocket URL with the ticket.
struct Ticket {
  std::string url;    // endpoint + "?ticket=" + the URL-encoded ticket
  std::string ticket; // a secret while unused: never logged
};

// What a gateway answer means.
enum class GatewayOutcome {
  ok,          // a ticket
  throttled,   // 429, 403 Forbidden.AccessDenied.Qps*, an HTML page
  credentials, // the client id or secret was refused (4xx naming them)
  transient,   // timeout, network, 5xx, a body that is not the documented JSON
};
struct GatewayAnswer {
  GatewayOutcome outcome = GatewayOutcome::transient;
  Ticket ticket;       // ok only
  std::string message; // for logs: what went wrong, never a secret or the ticket
};
// `allow_plain`: a ws:// endpoint is accepted (dingtalk.endpoint is http://,
// the simulator); otherwise only wss://.
GatewayAnswer classify_gateway(const http::Response& r, bool allow_plain);

// ---- frames from the server -----------------------------------------------

// A text frame from the server, read strictly: a JSON object with a string
// `type`, an object `headers` whose values are all strings, a string
// `messageId` among them, and a string `data` (or none).
struct Frame {
  enum class Kind {
    ping,         // SYSTEM ping: answer with ping_answer()
    disconnect,   // SYSTEM disconnect: move to a new connection
    system_other, // another SYSTEM topic (CONNECTED, KEEPALIVE, ...): ignore
    event,        // EVENT: acknowledge once handled
    callback,     // CALLBACK (never subscribed to): answer callback_refusal()
    other,        // another type: ignore
    bad,          // not a frame: count and drop; nothing to answer
  };
  Kind kind = Kind::bad;
  std::string message_id;
  std::string topic;
  std::string event_type;    // EVENT: headers.eventType ("" when absent)
  std::string event_id;      // EVENT: headers.eventId ("" when absent)
  std::string event_corp_id; // EVENT: headers.eventCorpId ("" when absent)
  std::string data;          // the JSON document inside `data`, unparsed
  std::string why;           // bad: what is wrong (never quotes values)
};
Frame parse_frame(std::string_view text);

// The `reason` of a SYSTEM disconnect's data, capped; "" when there is none.
std::string disconnect_reason(const Frame& f);

// A `robot_msg_read` event's data. All of DingTalk's fields are strings;
// `operatTime` is also accepted as a number.
struct ReadEvent {
  std::string process_query_key;
  std::optional<std::string> user_id; // absent for readers outside the organisation
  std::string union_id;
  std::optional<TimePoint> read_at; // operatTime; nullopt when absent
  std::string robot_code;
  std::string open_conversation_id;

  bool operator==(const ReadEvent&) const = default;
};
// Strict: a JSON object with a non-empty string processQueryKey; userId, when
// present, a non-empty string without control characters; operatTime, when
// present, epoch milliseconds (digits) within a sane range. The error names
// the field and never quotes its value.
Result<ReadEvent, std::string> parse_read_event(std::string_view data);

// ---- answers from the client ----------------------------------------------

// {"code": 200, "headers": {"contentType": "application/json", "messageId": id},
//  "message": "OK", "data": <the ping's data>}
std::string ping_answer(const Frame& ping);
// The same with "data": "{\"status\":\"SUCCESS\",\"message\":\"\"}".
std::string event_ack(std::string_view message_id);
// code 404 ("unknown topic") for a CALLBACK, which readreceiptd never
// subscribes to.
std::string callback_refusal(std::string_view message_id);

} // namespace rrd::stream
