// The HTTP API's logic (SPEC section 8), without sockets or threads: routing
// of a request to an immediate reply or to a command for the loop, bearer
// token checks, URL decoding and the JSON renderings of messages and dead
// letters, of a message's events and of the daemon's status. The HTTP
// server (server.hpp) feeds it; the loop runs the commands
// (command_queue.hpp) against a Backend. GET /v1/updates is routed here
// (token, method, parameters) and then served by the server as a stream
// (updates.hpp).
//
// Thread-safety: route() and the helpers are pure and may be called from any
// thread. A Command may only be run on the loop thread: it calls the Backend,
// which is the loop's state.
#pragma once

#include "readreceiptd/common/model.hpp"
#include "readreceiptd/common/result.hpp"
#include "readreceiptd/config/config.hpp"
#include "readreceiptd/store/store.hpp"

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rrd::api {

// An answer. Every body is JSON, but the status page's files (page.hpp);
// 204 and 304 have none.
struct Reply {
  int status = 200;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers; // extra ones: Allow, ...
  std::string content_type = "application/json";
};

// What adding a message did. A key already known, tracking or stopped, is
// never tracked again: unchanged when it has the same fields, a conflict
// otherwise.
enum class AddOutcome { created, unchanged, conflict };

// GET /v1/messages: messages per page when `limit` is not given, and the
// largest `limit` (10,000 messages are about 5 MB of JSON).
inline constexpr std::size_t k_default_page_size = 1'000;
inline constexpr std::size_t k_max_page_size = 10'000;
// How many messages one page looks at, at most, for its filters: a page
// with few matches ends early, with a next_cursor, rather than holding
// the loop while it reads the whole table.
inline constexpr std::size_t k_max_scanned_per_page = 100'000;

// One webhook in the daemon's status: the configured ones, and any other
// that still has events pending or dead.
struct WebhookStatus {
  std::string name;
  bool configured = true;
  std::size_t pending_events = 0;          // not yet delivered or dead, in flight included
  std::optional<TimePoint> oldest_pending; // when the oldest of them was made
  std::int64_t dead_letters = 0;
  bool disabled = false; // by a 410, until its configuration changes
};

// The daemon at a glance (GET /v1/status, and the `status` event of
// GET /v1/updates), as the loop gathers it.
struct DaemonStatus {
  std::string version;
  TimePoint started_at;
  bool ready = false; // as GET /readyz says
  // "single" on SQLite; on PostgreSQL "leader" or "standby", with the
  // leader's host name and API address ("" when none is known).
  std::string role = "single";
  std::string leader;
  std::size_t messages_tracking = 0;
  std::size_t messages_stopped = 0;
  // Push (dingtalk.stream).
  bool stream_enabled = false;
  bool stream_connected = false;
  std::optional<TimePoint> stream_since;      // connected, or down, since; nullopt when not enabled
  std::optional<TimePoint> stream_last_event; // the last frame of an event received
  // The month's read-status calls and the budget.
  std::string month; // "2026-12", Beijing time
  std::int64_t month_calls = 0;
  std::optional<std::int64_t> month_call_budget;
  double stretch = 1.0;
  bool quota_exhausted = false; // DingTalk said its monthly quota is spent
  std::string poll_mode;        // "normal" or "reconcile"
  // The client-side rate limit: the configured rate, the current one
  // (lower after throttling answers, recovering gradually) and the last
  // throttling answer.
  double configured_rate = 0;
  double current_rate = 0;
  std::optional<TimePoint> last_throttled;
  std::vector<WebhookStatus> webhooks;
};

// What the API asks of the loop's state. Implemented by the app over the
// scheduler, the store and the dispatcher. Loop thread only.
class Backend {
public:
  virtual ~Backend() = default;
  // The configuration in force (dingtalk.robot_code and webhook names are
  // the defaults of a new message).
  virtual const config::Config& config() const = 0;
  // Visits the messages, tracking and stopped, whose key sorts after
  // `after` ("": from the first), in key order, until `visit` returns false.
  virtual void visit_messages(const std::string& after,
                              const std::function<bool(const MessageRecord&)>& visit) const = 0;
  virtual std::optional<MessageRecord> message(const std::string& key) const = 0;
  // Adds a message (source api), persisted before this returns (as far as
  // the store allows).
  virtual AddOutcome add_message(const MessageSpec& spec) = 0;
  // Stops tracking with reason `removed`, persisted before this returns.
  // False for an unknown key. The router calls it only for a tracking
  // message that came through the API.
  virtual bool remove_message(const std::string& key) = 0;
  virtual std::vector<store::DeadLetter> dead_letters() = 0;
  // Moves the event's dead deliveries back to pending and queues them.
  // Returns how many; 0 for an unknown event.
  virtual int replay_dead_letter(const std::string& event_id) = 0;
  // The stored events of the message with a sequence after `after`, in
  // sequence order, at most `limit`, each with its deliveries.
  virtual std::vector<store::StoredEvent> message_events(const std::string& key, std::int64_t after,
                                                         std::size_t limit) = 0;
  virtual DaemonStatus status() = 0;
  // On PostgreSQL, while this daemon is a standby: the leader's holder info
  // ("" when no daemon leads or it is not known yet); writes are refused
  // with 503 naming it. nullopt while this daemon leads (on SQLite, always).
  virtual std::optional<std::string> standby_leader() const { return std::nullopt; }
};

using Command = std::function<Reply(Backend&)>;

// Why the daemon is not ready (GET /readyz), as the loop publishes it.
enum class Readiness { starting, waiting_for_token, ready, standby, stopping };
// The text of `reason` in a 503 from /readyz.
const char* describe(Readiness r);

// What the server knows without asking the loop.
struct Health {
  bool loop_alive = false; // the loop turned recently
  Readiness readiness = Readiness::starting;
};

struct Request {
  std::string method;             // "GET", "POST", ...
  std::string target;             // the raw request target: path and query, still encoded
  std::string authorization;      // the Authorization header, "" when absent
  std::string content_type;       // the Content-Type header, "" when absent
  std::string body;               // "" when the request has none
  std::string if_none_match = {}; // the If-None-Match header, "" when absent
};

// A request either answered at once (health, errors), a command to run on
// the loop, or GET /v1/updates, which the server serves as a stream. Exactly
// one of the three is set.
struct Routed {
  std::optional<Reply> reply;
  Command command;
  bool updates = false;
};

// Routes one request. `token` is api.token ("" when none is configured: no
// authentication). A GET of the status page ("/") or one of its files is
// answered at once, without the token (page.hpp).
Routed route(const Request& request, const std::string& token, const Health& health);

// --- the route table: what route() serves, and what docs/openapi.yaml
// must describe (tests/api_test.cpp holds the two together)

struct Call; // what a handler is given (router.cpp)
using Handler = Routed (*)(const Call&);

struct Operation {
  std::string_view method;                        // "GET", "POST", "DELETE"
  std::vector<std::string_view> query_parameters; // the only ones accepted
  Handler handler;
};

struct Route {
  // An OpenAPI path template: "/v1/messages/{key}". A {parameter} matches
  // one or more characters of the raw path, '/' included, and is
  // percent-decoded before the handler sees it.
  std::string_view path;
  bool needs_token; // false: served without the bearer token
  std::vector<Operation> operations;
};

// Every route, in the order route() tries them.
const std::vector<Route>& routes();

// --- helpers, exposed for tests

// Percent-decodes `text`. A '+' stays a '+' (paths are not form data).
// nullopt for a malformed escape ("%4", "%zz") or a decoded NUL.
std::optional<std::string> url_decode(std::string_view text);

// True when `authorization` is "Bearer <token>" (scheme case-insensitive).
// The token comparison takes the same time whatever the bytes.
// REQUIRES: !token.empty()
bool bearer_matches(std::string_view authorization, const std::string& token);

// True when a Content-Type names application/json, in any case, with or
// without parameters ("application/json; charset=utf-8").
bool is_json_media_type(std::string_view content_type);

// {"error": text}
std::string error_body(std::string_view text);
Reply error_reply(int status, std::string_view text);

// The filters and position of one page of GET /v1/messages.
struct MessageQuery {
  std::optional<bool> stopped;                             // state=
  std::vector<std::pair<std::string, std::string>> labels; // label=k=v, all must match
  std::optional<std::string> webhook;                      // webhook=
  std::size_t limit = k_default_page_size;                 // limit=
  std::string after;                                       // cursor= (decoded); "": start
};

// Parses GET /v1/messages's query parameters (decoded). The error names the
// parameter: "limit: must be a whole number from 1 to 10000".
Result<MessageQuery, std::string>
parse_message_query(const std::vector<std::pair<std::string, std::string>>& params);

// Whether `m` passes the query's filters (state, labels, webhook).
bool matches(const MessageQuery& q, const MessageRecord& m);

// The opaque cursor that continues a listing after `key` (base64url of the
// key, without padding), and back; nullopt for text no cursor can be.
std::string encode_cursor(std::string_view key);
std::optional<std::string> decode_cursor(std::string_view cursor);

// The names of the `messages:` item fields that differ between `a` and `b`,
// in the item's order ("expected_readers", "labels").
std::vector<std::string> differing_fields(const MessageSpec& a, const MessageSpec& b);

// A message as the API shows it (one element of GET /v1/messages).
std::string message_json(const MessageRecord& m);
std::string dead_letter_json(const store::DeadLetter& d);
// One element of GET /v1/messages/{key}/events.
std::string event_json(const store::StoredEvent& e);
// GET /v1/status.
std::string status_json(const DaemonStatus& s);

} // namespace rrd::api
