// FakeDingTalk: an in-process stand-in for api.dingtalk.com that speaks the
// real contract (../shared/dingtalk/): the two token APIs and the three
// read-status APIs, one per message kind (MessageKind):
//   POST /v1.0/robot/privateChatMessages/query   private_chat (the default)
//   POST /v1.0/robot/groupMessages/query          group (also `token`, `readUsers`)
//   GET  /v1.0/robot/oToMessages/readStatus       oto (one page, every recipient)
// with DingTalk's validation, its error bodies {"code","message","requestid"},
// opaque signed nextTokens and token expiry answered as 400
// InvalidAuthentication. With FakeDingTalkOptions::stream it also speaks
// Stream mode: the gateway call POST /v1.0/gateway/connections/open, and a
// FakeStream (fake_stream.hpp) that pushes a robot_msg_read event the moment
// a person reads a message of any kind. Tests script it (messages, reads,
// recalls, faults) and observe it (calls, timing, what it served). It runs
// httplib on 127.0.0.1 on its own threads.
//
// Where DingTalk's behaviour is not documented, the fake makes one guess and
// keeps to it (the tests in fake_dingtalk_test.cpp pin each):
// - A key asked of another kind's API (a group message through the
//   private-chat API, and so on) is unknown to that API: 400
//   invalid.processQueryKey, as for a key that names no message.
// - Group: a query needs openConversationId or token; with neither, 400
//   openConversationId.notExisted ("openConversationId is empty"). An
//   openConversationId other than the message's is 400
//   invalid.openConversationId, as the private-chat API answers it (the
//   other org's conversation.org.dismatch is left to Fault::error). A token no group message was
//   sent with names no robot: 400 invalidParameter.invalid; a known token of another message's
//   robot: invalid.processQueryKey. robotCode is required unless a token is given.
// - Oto: the parameters are decoded once, as a servlet container does (the
//   value runs from the first '=' to the '&', "%XX" is a byte, '+' is a
//   space), so a key whose '+' was not encoded names no message (400
//   invalid.processQueryKey) and one encoded twice neither; a bad escape or a
//   repeated parameter is 400 invalidParameter.param.invalid. The answer lists
//   every recipient in send order; UNREAD entries carry readTimestamp 0 (the
//   SDK's model makes the field a required number). From sent_at + 24 h on,
//   400 processQueryKey.expireTime.
//
// Thread-safe: every public method may be called from any thread while the
// server answers requests. m_mutex guards all mutable state (options that
// can change at run time, tokens, messages, faults, the RNG and every
// observation record); handlers hold it only while they compute, never while
// they wait, hang or stream. Lock order: m_mutex, then the FakeStream's (a
// read pushes its event while m_mutex is held); the stream's thread never
// holds its own lock while it calls back.
#pragma once

#include "fakes/fake_stream.hpp"
#include "fakes/local_server.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace rrd::testing {

using SteadyClock = std::chrono::steady_clock;
using SteadyTime = SteadyClock::time_point;

// Which read-status API a call went to, and so which kind of message it
// asks about: each kind has its own API, request and answer (SPEC section 1).
enum class MessageKind { private_chat, group, oto };

std::string to_string(MessageKind kind); // "private_chat", "group", "oto"

// The bodies that replace an answer (malformed_json ... endless_body) take
// the shape of the API called: readUserIds for private_chat and group,
// messageReadInfoList for oto (wrong_shape: a list that is an object).
enum class FaultKind {
  error_answer,     // `status` with a DingTalk error body carrying `code`
  html_page,        // `status` (200 or 403) with an HTML page, as an IP ban
  malformed_json,   // 200, a body that is not JSON
  truncated_json,   // 200, the real answer cut in the middle
  wrong_shape,      // 200, JSON but not the documented object
  oversized_body,   // 200, valid JSON larger than 4 MiB
  endless_body,     // 200, a chunked body that never ends
  no_answer,        // no answer until the client disconnects
  connection_reset, // the connection is reset without an answer
  next_token_loop,  // later pages only: nextToken repeats the request's token
  cursor_invalid,   // later pages only: 400 invalidParameter.cursor.invalid
  revoke_tokens,    // every token is revoked; this call gets InvalidAuthentication
  delay,            // the normal answer (as of the call's arrival), after `delay`
  // The normal answer with one hostile change (as of the call's arrival):
  read_without_user_id, // oto, group only: one more reader without a userId (oto: a
                        //   READ entry {name, readStatus, readTimestamp}; group: a
                        //   readUsers entry {unionId}); the read ids are unchanged
  timestamp_not_number, // oto only: every readTimestamp is a string of its digits
  duplicate_users,      // the answer names a reader twice: oto, its first READ entry
                        //   again (the first entry when none is READ);
                        //   the others, the page's first id again (readUsers too);
                        //   an empty page is left as it is
};

struct Fault {
  FaultKind kind = FaultKind::error_answer;
  int status = 0;   // error_answer, html_page
  std::string code; // error_answer
  std::chrono::milliseconds delay{0};
  bool chunked = false; // oversized_body: chunked, without a Content-Length
  std::vector<std::pair<std::string, std::string>> headers; // e.g. Retry-After

  static Fault error(int status, std::string code);
  static Fault throttled() { return error(403, "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"); }
  static Fault quota_exceeded() { return error(403, "Forbidden.AccessDenied.ApiCountLimitForOrg"); }
  static Fault server_error() { return error(500, "system.error"); }
  static Fault html(int status);
  static Fault of(FaultKind kind);
  static Fault slow(std::chrono::milliseconds delay);
  // Faults that only apply to a request carrying a nextToken (so never to
  // an oto call, which has no cursor).
  bool later_pages_only() const;
  // Faults that change DingTalk's normal answer rather than replace it
  // (next_token_loop, cursor_invalid, delay and the hostile changes): they
  // are only taken by a call that DingTalk would answer 200, so that they are
  // met as what they are, not hidden behind an InvalidAuthentication or
  // processQueryKey error.
  bool shapes_answer() const;
  // Whether a call to the read-status API of `kind` can take the fault
  // (read_without_user_id: oto and group; timestamp_not_number: oto).
  bool applies_to(MessageKind kind) const;
};

std::string to_string(FaultKind kind);

// Where a fault goes. Endpoint::query is every read-status call, whatever
// its kind; the three after it narrow that to one API.
enum class Endpoint {
  query,              // every read-status call (the three below)
  private_chat_query, // POST /v1.0/robot/privateChatMessages/query only
  group_query,        // POST /v1.0/robot/groupMessages/query only
  oto_query,          // GET /v1.0/robot/oToMessages/readStatus only
  token,              // the two token APIs
  gateway,            // POST /v1.0/gateway/connections/open
};

// The read-status endpoint of a kind's API (private_chat_query, ...).
Endpoint query_endpoint(MessageKind kind);

// A message as DingTalk holds it. add_message() refuses (std::invalid_argument,
// naming the field) what no send could produce: a group message with neither
// open_conversation_id nor token, a token on another kind, an oto message with
// an open_conversation_id or without 1..20 recipients.
struct FakeMessage {
  MessageKind kind = MessageKind::private_chat;
  std::string open_conversation_id; // "" when the message has none
  std::string token;                // group only: the template bot's token, "" none
  std::string robot_code;           // "": FakeDingTalkOptions::robot_code
  // Who received it: informational for private_chat and group (any user id
  // may read those); oto: the batchSend userIds, in the order readStatus
  // lists them, and only they can read it.
  std::vector<std::string> recipients;
  std::map<std::string, std::string> names; // oto: "name" by user id; default the id
  std::string send_status = "SUCCESS";      // SUCCESS, PROCESSING, RECALLED
  std::optional<SteadyTime> sent_at;        // unset: when it is added (the fake's clock)
  SteadyTime ready_at{};                    // before: 400 processQueryKey.expireTime
  // From then on: the same error. Left at max, an oto message's is sent_at +
  // k_oto_window (DingTalk's 24 h); the others' stays max.
  SteadyTime expires_at = SteadyTime::max();
};

// What no send could produce in `message`, or "" when DingTalk could hold
// it: the field at fault first where there is one ("recipients[2]: a is
// listed twice"), else the rule ("a group message needs ..."). What
// add_message() refuses.
std::string message_problem(const FakeMessage& message);

struct FakeDingTalkOptions {
  int port = 0; // 0: ephemeral
  std::string app_key = "dingfakeappkey";
  std::string app_secret = "fake-app-secret";
  std::string suite_key = "suitefakesuitekey";
  std::string suite_secret = "fake-suite-secret";
  std::string auth_corp_id = "dingfakecorp";
  std::string suite_ticket = "fake-suite-ticket";
  std::string robot_code = "dingfakerobot";
  std::chrono::seconds token_lifetime{7200}; // expireIn
  int page_size = 200;                       // the server's own page cap
  std::uint64_t seed = 1;                    // for fault rates and ids
  std::optional<TlsFiles> tls;               // set: serve HTTPS with this certificate
  // Set: Stream mode on (the gateway call and the WebSocket server, which is
  // plain ws:// even when `tls` is set). Unset: the gateway path is a 404.
  std::optional<FakeStreamOptions> stream;
};

// One read-status call, of any kind, as the server saw it.
struct QueryRecord {
  SteadyTime at;
  MessageKind kind = MessageKind::private_chat; // the API called
  std::string target;                           // path and query as sent, undecoded
  nlohmann::json body;      // POST: null when the body was not JSON; oto (GET): null
  nlohmann::json params;    // oto: the query parameters decoded once, as an object
                            //   (null when they could not be decoded); POST: null
  std::string access_token; // the header's value
  bool chunked = false;     // the request body came with Transfer-Encoding: chunked
  int status = 0;           // the answer's status (0: none, the connection was cut)
  std::string code;         // the error code, or the fault's name, or ""
};

// One gateway call (POST /v1.0/gateway/connections/open) as the server saw it.
struct GatewayRecord {
  SteadyTime at;
  nlohmann::json body; // null when the body was not JSON (it holds clientSecret)
  std::string accept;
  std::string content_type;
  int status = 0;     // the answer's status (0: none, the connection was cut)
  std::string code;   // the error code, or the fault's name, or ""
  std::string ticket; // the ticket handed out, or ""
};

class FakeDingTalk {
public:
  explicit FakeDingTalk(FakeDingTalkOptions options = {});
  ~FakeDingTalk(); // stops promptly even with hung requests, and joins
  FakeDingTalk(const FakeDingTalk&) = delete;
  FakeDingTalk& operator=(const FakeDingTalk&) = delete;

  int port() const { return m_server.port(); }
  std::string endpoint() const; // "http://127.0.0.1:PORT" (https with options.tls)
  // Stops the server; hung requests are released. Also done by the destructor.
  void stop();

  // --- scenario ---
  // REQUIRES (all but add_message): `key` was added; throws std::invalid_argument.
  void add_message(const std::string& key, FakeMessage message);
  // The person reads it now, or (the second form) read it at `at`, which may
  // be in the past: that is the read time its push and an oto answer's
  // readTimestamp carry. Appended, order kept; a second read changes nothing.
  // REQUIRES for oto: `user_id` is a recipient (std::invalid_argument).
  void read(const std::string& key, const std::string& user_id);
  void read(const std::string& key, const std::string& user_id, SteadyTime at);
  // The person reads it at `at`: the read shows from then on (promoted by
  // the next call that looks, or the Stream's loop).
  void schedule_read(const std::string& key, const std::string& user_id, SteadyTime at);
  void set_send_status(const std::string& key, const std::string& status);
  void set_ready_at(const std::string& key, SteadyTime at);
  void set_expires_at(const std::string& key, SteadyTime at);
  // The read list the server answers with now (scheduled reads that are due included).
  std::vector<std::string> read_list(const std::string& key);
  // When `user_id` read it (scheduled reads that are due included), or nullopt.
  std::optional<SteadyTime> read_time(const std::string& key, const std::string& user_id);
  // The Unix time in ms the fake reports for `t` (an oto readTimestamp, a
  // push's operatTime); the same mapping as the Stream's when it is on.
  std::int64_t epoch_ms(SteadyTime t) const;
  // A person outside the organisation reads the message: a robot_msg_read
  // push without userId; the read list (which holds user ids) is unchanged.
  // REQUIRES: not an oto message, whose recipients are all users of the
  // organisation (std::invalid_argument).
  void read_by_outsider(const std::string& key, const std::string& union_id);
  // The unionId the fake gives a user id in its pushes (a stable function of it).
  static std::string union_id_of(const std::string& user_id);

  void set_page_size(int page_size);
  void set_token_lifetime(std::chrono::seconds lifetime);
  // Registers a token that is valid for `lifetime` (default: forever).
  void add_token(const std::string& token, std::optional<std::chrono::seconds> lifetime = {});
  // Every token issued or registered so far becomes invalid.
  void revoke_tokens();
  // Tests can drive the server's notion of time (token expiry, ready_at,
  // scheduled reads, recorded times, and all of the Stream's times).
  // Default: the steady clock.
  void set_time_source(std::function<SteadyTime()> now);

  // --- Stream mode ---
  bool stream_enabled() const { return m_stream != nullptr; }
  // REQUIRES: options.stream was set; throws std::logic_error otherwise.
  FakeStream& stream();

  // --- faults ---
  // The next `count` calls to `endpoint` (that the fault applies to) get it.
  // Endpoint::query: read-status calls of every kind, in arrival order;
  // Endpoint::group_query etc.: that API's calls only. Endpoint::gateway: the
  // gateway call (refused tickets, as errors, cut connections, delays...).
  void inject(Fault fault, int count = 1, Endpoint endpoint = Endpoint::query);
  // Each call to `endpoint` gets `fault` with probability `p` (seeded RNG).
  // A fault of the same kind, status and code is replaced; p = 0 removes it.
  void set_fault_rate(Fault fault, double p, Endpoint endpoint = Endpoint::query);
  void clear_faults();

  // --- observation ---
  int token_calls() const;
  int gateway_calls() const;
  std::vector<GatewayRecord> gateway_requests() const;
  // Read-status calls of every kind (oto: by the key as decoded).
  int query_calls() const;
  int query_calls(const std::string& key) const;
  // Every (processQueryKey, user id) the server has put in a 200 answer.
  std::set<std::pair<std::string, std::string>> reads_served() const;
  int max_concurrent_requests() const;
  int in_flight_requests() const;
  std::vector<SteadyTime> query_times() const;
  std::vector<SteadyTime> request_times() const; // token, query and gateway calls
  std::vector<QueryRecord> queries() const;
  // The most calls among `times` inside any window of length `window`.
  static int max_in_window(std::vector<SteadyTime> times, std::chrono::milliseconds window);

  // Limits of the misbehaving answers.
  static constexpr std::size_t k_oversized_body_bytes = 5 * 1024 * 1024;
  static constexpr std::chrono::seconds k_max_hold{60}; // no_answer, endless_body
  static constexpr int k_max_page_size = 200;
  static constexpr std::size_t k_max_oto_recipients = 20; // batchSend's userIds limit
  static constexpr std::chrono::hours k_oto_window{24};   // oto: answered this long after sending

private:
  struct Message {
    FakeMessage spec;
    std::vector<std::string> reads;                          // visible, in order
    std::map<std::string, SteadyTime> read_at;               // when each of `reads` read it
    std::vector<std::pair<SteadyTime, std::string>> pending; // scheduled reads
  };
  // A read-status call: its API, and its fields as a JSON value (POST: the
  // body; oto: the query parameters decoded once; null when unreadable).
  struct Call {
    MessageKind kind = MessageKind::private_chat;
    nlohmann::json args;
  };
  struct Token {
    SteadyTime expires_at;
    bool revoked = false;
  };
  struct Injected {
    Fault fault;
    int remaining = 0;
    Endpoint endpoint = Endpoint::query;
  };
  struct RateFault {
    Fault fault;
    double p = 0;
    Endpoint endpoint = Endpoint::query;
  };
  struct Answer {
    int status = 200;
    nlohmann::json body;
    std::string code; // error code for the record
  };

  void handle_access_token(const httplib::Request& req, httplib::Response& res);
  void handle_corp_access_token(const httplib::Request& req, httplib::Response& res);
  void handle_query(MessageKind kind, const httplib::Request& req, httplib::Response& res);
  void handle_gateway(const httplib::Request& req, httplib::Response& res);
  // The gateway's error answer for the call, or nullopt when it is valid.
  std::optional<Answer> gateway_refusal(const httplib::Request& req,
                                        const nlohmann::json& body) const; // REQUIRES: m_mutex held
  // Returns false when the fault has fully answered (or cut) the request.
  // `api`: the shape of the bodies that replace an answer.
  bool apply_fault(const Fault& fault, const httplib::Request& req, httplib::Response& res,
                   const std::string& request_id_text, MessageKind api = MessageKind::private_chat);
  // `endpoint`: the call's own (a kind's query endpoint, token or gateway).
  std::optional<Fault> take_fault(Endpoint endpoint, bool has_next_token,
                                  bool answerable); // REQUIRES: m_mutex held
  // The error answer DingTalk gives the call, or nullopt when it answers 200.
  std::optional<Answer> refusal(const httplib::Request& req, const Call& call,
                                SteadyTime t) const; // REQUIRES: m_mutex held
  std::optional<Answer> private_chat_refusal(const nlohmann::json& body,
                                             SteadyTime t) const; // REQUIRES: m_mutex held
  std::optional<Answer> group_refusal(const nlohmann::json& body,
                                      SteadyTime t) const; // REQUIRES: m_mutex held
  std::optional<Answer> oto_refusal(const nlohmann::json& params,
                                    SteadyTime t) const; // REQUIRES: m_mutex held
  // maxResults, nextToken and the message's window (both paginated APIs).
  std::optional<Answer> page_refusal(const nlohmann::json& body, const std::string& key,
                                     const Message& m,
                                     SteadyTime t) const; // REQUIRES: m_mutex held
  static Answer refused_with(int status, std::string code);
  bool robot_known(const std::string& robot_code) const; // REQUIRES: m_mutex held
  // DingTalk's answer to the call, with the changes `fault` (a fault that
  // shapes the answer, or null) makes to it.
  Answer answer_query(const httplib::Request& req, const Call& call,
                      const Fault* fault); // REQUIRES: m_mutex held
  Answer answer_pages(const Call& call, SteadyTime t, bool loop_fault,
                      bool cursor_fault);            // REQUIRES: m_mutex held
  Answer answer_oto(const Call& call, SteadyTime t); // REQUIRES: m_mutex held
  void spoil(Answer& answer, FaultKind kind, MessageKind api,
             SteadyTime t) const;           // REQUIRES: m_mutex held
  Message& message(const std::string& key); // REQUIRES: m_mutex held
  // Records a new read (and pushes it); false when `user_id` had read it.
  bool add_read(const std::string& key, Message& m, const std::string& user_id,
                SteadyTime at); // REQUIRES: m_mutex held
  void promote_due_reads(const std::string& key, Message& m,
                         SteadyTime now); // REQUIRES: m_mutex held
  // Promotes every message's due reads (the stream's thread, every turn).
  void promote_all_due_reads();
  // A new read of `key` becomes a push (when Stream mode is on).
  void push_read(const std::string& key, const Message& m, const std::string& user_id,
                 const std::string& union_id, SteadyTime at);              // REQUIRES: m_mutex held
  std::string issue_token(SteadyTime now);                                 // REQUIRES: m_mutex held
  std::string make_next_token(const std::string& key, std::size_t offset); // REQUIRES: m_mutex held
  std::optional<std::size_t> parse_next_token(const std::string& key,
                                              const std::string& token) const;
  std::string request_id(); // REQUIRES: m_mutex held
  SteadyTime now() const;   // REQUIRES: m_mutex held
  void send_error(httplib::Response& res, int status, const std::string& code,
                  const std::string& message, const std::string& request_id) const;
  void hold_until_gone(const httplib::Request& req) const;

  mutable std::mutex m_mutex;
  // --- guarded by m_mutex ---
  FakeDingTalkOptions m_options;
  std::function<SteadyTime()> m_now;
  std::map<std::string, Token> m_tokens;
  std::string m_app_token; // the internal app's current token, "" before the first
  std::map<std::string, Message> m_messages;
  std::vector<Injected> m_injected;
  std::vector<RateFault> m_rate_faults;
  std::mt19937_64 m_rng;
  std::uint64_t m_counter = 0; // tokens, nonces, request ids
  int m_token_calls = 0;
  std::vector<GatewayRecord> m_gateway_requests;
  std::map<std::string, int> m_query_calls_by_key;
  std::set<std::pair<std::string, std::string>> m_reads_served;
  std::vector<SteadyTime> m_query_times;
  std::vector<SteadyTime> m_request_times;
  std::vector<QueryRecord> m_queries;
  int m_in_flight = 0;
  int m_max_in_flight = 0;
  // --- end of guarded state ---

  const std::string m_cursor_key; // signs nextTokens; set once in the constructor
  // epoch_ms() without Stream mode: a steady time and the Unix time then.
  const std::chrono::system_clock::time_point m_epoch_base;
  const SteadyTime m_steady_base;
  std::atomic<bool> m_stopping{false};
  // Set once in the constructor (Stream mode); stopped after the server.
  std::unique_ptr<FakeStream> m_stream;
  LocalHttpServer m_server; // last: stopped first, while the state above lives
};

} // namespace rrd::testing
