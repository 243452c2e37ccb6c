// FakeDingTalk: an in-process stand-in for api.dingtalk.com that speaks the
// real contract (../shared/dingtalk/): the two token APIs and
// POST /v1.0/robot/privateChatMessages/query with DingTalk's validation, its
// error bodies {"code","message","requestid"}, opaque signed nextTokens and
// token expiry answered as 400 InvalidAuthentication. With
// FakeDingTalkOptions::stream it also speaks Stream mode: the gateway call
// POST /v1.0/gateway/connections/open, and a FakeStream (fake_stream.hpp)
// that pushes a robot_msg_read event the moment a person reads a message.
// Tests script it (messages, reads, recalls, faults) and observe it (calls,
// timing, what it served). It runs httplib on 127.0.0.1 on its own threads.
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
  // Faults that only apply to a request carrying a nextToken.
  bool later_pages_only() const;
  // Faults that change DingTalk's normal answer rather than replace it
  // (next_token_loop, cursor_invalid, delay): they are only taken by a call
  // that DingTalk would answer 200, so that they are met as what they are,
  // not hidden behind an InvalidAuthentication or processQueryKey error.
  bool shapes_answer() const;
};

std::string to_string(FaultKind kind);

enum class Endpoint { query, token, gateway };

struct FakeMessage {
  std::string open_conversation_id;          // "" when the message has none
  std::string robot_code;                    // "": FakeDingTalkOptions::robot_code
  std::vector<std::string> recipients;       // who may read it (informational)
  std::string send_status = "SUCCESS";       // SUCCESS, PROCESSING, RECALLED
  SteadyTime ready_at{};                     // before: 400 processQueryKey.expireTime
  SteadyTime expires_at = SteadyTime::max(); // from then on: the same error
};

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

// One query call as the server saw it.
struct QueryRecord {
  SteadyTime at;
  nlohmann::json body;      // null when the body was not JSON
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
  void read(const std::string& key, const std::string& user_id); // appended, order kept
  void schedule_read(const std::string& key, const std::string& user_id, SteadyTime at);
  void set_send_status(const std::string& key, const std::string& status);
  void set_ready_at(const std::string& key, SteadyTime at);
  void set_expires_at(const std::string& key, SteadyTime at);
  // The read list the server answers with now (scheduled reads that are due included).
  std::vector<std::string> read_list(const std::string& key);
  // A person outside the organisation reads the message: a robot_msg_read
  // push without userId; the read list (which holds user ids) is unchanged.
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
  // Endpoint::gateway: the gateway call (refused tickets, as errors, cut
  // connections, delays...).
  void inject(Fault fault, int count = 1, Endpoint endpoint = Endpoint::query);
  // Each call to `endpoint` gets `fault` with probability `p` (seeded RNG).
  // A fault of the same kind, status and code is replaced; p = 0 removes it.
  void set_fault_rate(Fault fault, double p, Endpoint endpoint = Endpoint::query);
  void clear_faults();

  // --- observation ---
  int token_calls() const;
  int gateway_calls() const;
  std::vector<GatewayRecord> gateway_requests() const;
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

private:
  struct Message {
    FakeMessage spec;
    std::vector<std::string> reads;                          // visible, in order
    std::vector<std::pair<SteadyTime, std::string>> pending; // scheduled reads
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
  void handle_query(const httplib::Request& req, httplib::Response& res);
  void handle_gateway(const httplib::Request& req, httplib::Response& res);
  // The gateway's error answer for the call, or nullopt when it is valid.
  std::optional<Answer> gateway_refusal(const httplib::Request& req,
                                        const nlohmann::json& body) const; // REQUIRES: m_mutex held
  // Returns false when the fault has fully answered (or cut) the request.
  bool apply_fault(const Fault& fault, const httplib::Request& req, httplib::Response& res,
                   const std::string& request_id_text);
  std::optional<Fault> take_fault(Endpoint endpoint, bool has_next_token,
                                  bool answerable); // REQUIRES: m_mutex held
  // The error answer DingTalk gives the call, or nullopt when it answers 200.
  std::optional<Answer> refusal(const httplib::Request& req, const nlohmann::json& body,
                                SteadyTime t) const; // REQUIRES: m_mutex held
  Answer answer_query(const httplib::Request& req, const nlohmann::json& body, bool loop_fault,
                      bool cursor_fault);   // REQUIRES: m_mutex held
  Message& message(const std::string& key); // REQUIRES: m_mutex held
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
  std::atomic<bool> m_stopping{false};
  // Set once in the constructor (Stream mode); stopped after the server.
  std::unique_ptr<FakeStream> m_stream;
  LocalHttpServer m_server; // last: stopped first, while the state above lives
};

} // namespace rrd::testing
