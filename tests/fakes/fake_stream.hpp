// FakeStream: DingTalk's Stream mode as the fake DingTalk serves it
// (../shared/dingtalk/STREAM.md, SPEC section 10): the tickets the gateway
// call hands out, and a plain ws:// WebSocket server on its own port
// (RFC 6455 framing by libwslay; the upgrade handshake checked by hand) that
// pushes SYSTEM pings and disconnects and EVENT frames, reads the client's
// answers, redelivers events that are not acknowledged, and misbehaves on
// request (dropped and stalled connections, lost pushes, refused handshakes,
// garbage and oversized frames, duplicates). Everything a test may want to
// assert is recorded: events with every delivery and their acknowledgement,
// pings and their answers, connections and how they ended, counters.
//
// FakeDingTalk owns one when FakeDingTalkOptions::stream is set, and feeds
// it: the gateway call (POST /v1.0/gateway/connections/open on the fake's
// HTTP port) asks issue_ticket(), and every read of a message becomes a
// robot_msg_read event through push(). Protocol times (ticket lifetime, ack
// timeouts, pings, disconnects, drops, retention) run on the fake's clock
// (FakeDingTalk::set_time_source); the server thread looks at that clock
// every k_turn of real time.
//
// Thread-safe: every public method may be called from any thread. One server
// thread owns the sockets and does all I/O; m_mutex guards all other state
// (options, tickets, events, connections' protocol state, records), and the
// server thread holds it while it works, never while it waits in poll(). The
// "now" actions (drop_connections() and the like) only mark what to do and
// wake the thread; settle() waits until it has done it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace rrd::testing {

using SteadyClock = std::chrono::steady_clock;
using SteadyTime = SteadyClock::time_point;

// Which open connection an event goes to.
enum class StreamDistribution { random, round_robin };

// How a connection is dropped.
enum class StreamDrop {
  reset,       // TCP RST, no close frame
  fin,         // the TCP connection closed without a close frame
  close_frame, // a close frame (1001 going away), then the TCP close
};

// How a WebSocket handshake is refused on request.
enum class HandshakeRefusal {
  invalid_ticket, // 401, as for an unknown, used or expired ticket
  bad_request,    // 400
};

// Frames a client must count and drop without losing the connection, and
// one it may close the connection for (oversized, over 1 MiB: 1009).
enum class StreamGarbage {
  not_json,             // a text frame that is not JSON
  binary,               // a binary frame
  no_message_id,        // a JSON EVENT frame without headers.messageId
  unknown_system_topic, // a SYSTEM frame with a topic the protocol does not define
  oversized,            // a text frame over 1 MiB (an EVENT of an unknown type, never redelivered)
};

std::string to_string(StreamGarbage kind);
std::string to_string(StreamDrop how);

struct FakeStreamOptions {
  int port = 0; // the WebSocket port on 127.0.0.1; 0: ephemeral

  // --- protocol, on the fake's clock ---
  std::chrono::milliseconds ticket_lifetime{90'000};
  // An event not acknowledged this long after it was sent is sent again...
  std::chrono::milliseconds ack_timeout{20'000};
  // ...at most this many times (on any open connection), then it is lost.
  int max_redeliveries = 3;
  // An event that finds no open connection (at first or for a redelivery)
  // waits at most this long after it was born, then it is lost.
  std::chrono::milliseconds offline_retention{60'000};
  std::chrono::milliseconds ping_interval{0}; // SYSTEM ping on each connection this often; 0: none
  std::chrono::milliseconds disconnect_after{
      0}; // a connection this old gets a SYSTEM disconnect; 0: never
  std::chrono::milliseconds disconnect_grace{10'000}; // ...and is closed this long after it
  std::string disconnect_reason = "connection is expired";
  StreamDistribution distribution = StreamDistribution::random;
  // Undocumented at DingTalk: the fake gives each delivery a new messageId
  // (the eventId stays); true keeps the first delivery's messageId.
  bool redelivery_keeps_message_id = false;
  std::string corp_id = "";        // eventCorpId; "": FakeDingTalkOptions::auth_corp_id
  std::string unified_app_id = ""; // eventUnifiedAppId; "": one made up from the seed
  int max_connections = 50;        // per clientId; more handshakes get 400

  // --- faults, settable at run time through configure() ---
  std::chrono::milliseconds drop_after{
      0}; // a connection this old is dropped (drop_style); 0: never
  StreamDrop drop_style = StreamDrop::reset;
  double push_loss = 0;      // an event is never sent at all with this probability
  double refuse_tickets = 0; // a handshake is answered 401 "invalid ticket" with this probability
  double refuse_handshakes = 0; // a handshake is answered 400 with this probability
  double garbage = 0;           // before a frame is sent, a garbage frame with this probability...
  std::vector<StreamGarbage> garbage_kinds = {StreamGarbage::not_json, StreamGarbage::binary,
                                              StreamGarbage::no_message_id,
                                              StreamGarbage::unknown_system_topic};
  double duplicate_acked = 0; // an acknowledged event is sent once more with this probability

  bool keep_log = false; // keep human-readable lines for take_log() (the stand-alone simulator)
};

// An event to push.
struct StreamEventSpec {
  std::string event_type = "robot_msg_read";
  nlohmann::json data = nlohmann::json::object(); // the data object (sent as a string)
  std::string corp_id;                            // "": FakeStreamOptions::corp_id
  std::optional<SteadyTime> born_at;              // when it happened (eventBornTime); default now
};

enum class StreamEventState {
  waiting,      // not sent yet, or waiting for a connection to be sent again
  in_flight,    // sent, not acknowledged yet
  acknowledged, // a 200 answer came on the connection it was sent on
  lost,         // never to be sent again (lost_reason says why)
};
std::string to_string(StreamEventState state);

struct StreamDelivery {
  std::string message_id;
  int connection = 0;
  SteadyTime sent_at{};
  bool duplicate = false; // a duplicate of an acknowledged event
};

struct StreamEventRecord {
  std::string event_id;
  std::string event_type;
  nlohmann::json data;
  std::string corp_id;
  SteadyTime born_at{};
  StreamEventState state = StreamEventState::waiting;
  // "dropped" (push_loss: never sent), "offline" (no open connection within
  // offline_retention), "unacknowledged" (max_redeliveries used up).
  std::string lost_reason;
  std::vector<StreamDelivery> deliveries; // every frame that carried it
  int redeliveries = 0;                   // deliveries after the first, duplicates not counted
  int refusals = 0; // answers that did not acknowledge it (code not 200, or status LATER)
  std::optional<SteadyTime> acked_at;
  std::chrono::milliseconds ack_latency{0}; // acked_at - the acknowledged delivery's sent_at
  bool ack_well_formed = false;             // the acknowledgement had the documented shape
};

struct StreamPingRecord {
  int connection = 0;
  std::string message_id;
  std::string opaque;
  SteadyTime sent_at{};
  bool answered = false;
  // code 200, the same messageId, and data's opaque the same value.
  bool answer_ok = false;
  std::string answer; // the answer's text
};

struct StreamConnectionRecord {
  int id = 0;
  std::string client_id;
  SteadyTime opened_at{}; // the 101 answer
  std::optional<SteadyTime> closed_at;
  // "" while open; "client" (it sent a close frame), "peer_gone" (EOF or
  // reset without a close frame), "disconnect" (closed after a SYSTEM
  // disconnect), "drop" (a drop fault), "stall" (stalled, then the client
  // went away), "protocol_error" (closed 1002), "message_too_big" (1009),
  // "stopped" (the fake stopped).
  std::string closed_by;
  int close_code_received = 0; // the client's close frame's code; 0: none
  bool stalled = false;
  int answers = 0;    // text frames from the client
  int ws_pings = 0;   // WebSocket pings from the client (each answered with a pong)
  int bad_frames = 0; // text frames that are not answers, and binary frames
};

struct FakeStreamStats {
  int tickets_issued = 0;
  int handshakes = 0;         // upgrade requests that were read whole
  int handshakes_refused = 0; // answered 4xx
  int connections_opened = 0;
  int connections_open = 0;
  int max_connections_open = 0;
  int events = 0;       // events born (pushed or lost at once)
  int pushed = 0;       // first deliveries
  int redelivered = 0;  // later deliveries (same eventId), duplicates not counted
  int duplicated = 0;   // duplicates of acknowledged events
  int acknowledged = 0; // events acknowledged
  int refusals = 0;     // answers that did not acknowledge (code not 200, or status LATER)
  int lost_dropped = 0; // never sent (push_loss)
  int lost_offline = 0;
  int lost_unacknowledged = 0;
  int malformed_acks = 0;    // acknowledgements not in the documented shape (still accepted)
  int misrouted_answers = 0; // answers on another connection than the frame's (ignored)
  int unmatched_answers = 0; // answers naming no messageId the server sent
  int bad_frames = 0;        // client frames that are neither answers nor control frames
  int pings_sent = 0;
  int pings_answered_ok = 0;
  int pings_answered_wrong = 0;
  int disconnects_sent = 0;
  int drops = 0;
  int stalls = 0;
  int garbage_sent = 0;
  int ws_pings_received = 0;
  int protocol_errors = 0; // connections closed 1002 for broken framing (unmasked frames...)
  int lost() const { return lost_dropped + lost_offline + lost_unacknowledged; }
};

class FakeStream {
public:
  // The server thread looks at the clock, and calls `on_turn`, this often.
  static constexpr std::chrono::milliseconds k_turn{10};
  static constexpr std::size_t k_max_handshake_bytes = 16 * 1024;
  static constexpr std::chrono::seconds k_handshake_timeout{10}; // real time
  static constexpr std::chrono::seconds k_close_linger{
      2}; // real time: waiting for the client's close
  static constexpr std::uint64_t k_max_client_message = 1024 * 1024; // more: closed 1009
  static constexpr std::size_t k_oversized_frame_bytes = 1024 * 1024 + 64 * 1024;
  static constexpr std::chrono::minutes k_max_stall{5}; // a stalled connection is reset then

  // `now`: the fake's clock. `on_turn`: called by the server thread at every
  // turn, without m_mutex held (FakeDingTalk promotes scheduled reads that
  // are due, which push()es them). Binds the port and starts the server
  // thread; throws std::runtime_error when the port cannot be bound.
  FakeStream(FakeStreamOptions options, std::function<SteadyTime()> now, std::uint64_t seed,
             std::function<void()> on_turn = {});
  ~FakeStream(); // stop()
  FakeStream(const FakeStream&) = delete;
  FakeStream& operator=(const FakeStream&) = delete;

  // Closes every connection (recorded as "stopped") and joins the thread.
  void stop();

  int port() const { return m_port; }
  std::string endpoint() const; // "ws://127.0.0.1:PORT/connect", what the gateway answers

  FakeStreamOptions options() const;
  // Changes options at run time, e.g. configure([](auto& o) { o.push_loss = 0.5; }).
  // A new ping_interval, disconnect_after or drop_after applies to every
  // open connection from its opening.
  void configure(const std::function<void(FakeStreamOptions&)>& change);
  void set_time_source(std::function<SteadyTime()> now);

  // --- the gateway's side (FakeDingTalk's handler) ---
  // A new ticket for `client_id`, valid ticket_lifetime, for one connection.
  std::string issue_ticket(const std::string& client_id);
  std::string ws_url(const std::string& ticket) const; // endpoint() + "?ticket=" + ticket

  // --- events ---
  // A new event (a new eventId, returned); sent at once to an open
  // connection, or kept for offline_retention; or lost at once (push_loss).
  std::string push(StreamEventSpec event);

  // --- actions now (done by the server thread at its next turn) ---
  void ping_now();                       // a SYSTEM ping on every open connection
  void disconnect_now();                 // a SYSTEM disconnect on every open connection
  void drop_connections(StreamDrop how); // every connection
  // Every open connection freezes: the server neither reads from it nor
  // writes to it (no pongs, no frames; events routed to it are not
  // acknowledged, so they are redelivered elsewhere after ack_timeout),
  // until the client goes away (or k_max_stall).
  void stall_connections();
  void send_garbage(StreamGarbage kind); // on every open connection
  // The next `count` handshakes are refused so.
  void refuse_handshakes(HandshakeRefusal how, int count = 1);
  // Returns once the server thread has completed a whole turn begun after
  // the call: what was asked before is done, and the fake's clock as it is
  // now has been looked at. False if that took over 5 s.
  bool settle();

  // --- observation ---
  FakeStreamStats stats() const;
  std::vector<StreamEventRecord> events() const;
  std::optional<StreamEventRecord> event(const std::string& event_id) const;
  std::vector<StreamPingRecord> pings() const;
  std::vector<StreamConnectionRecord> connections() const;
  int open_connections() const;
  // Lines kept since the last call (options.keep_log), oldest first.
  std::vector<std::string> take_log();

  // The epoch milliseconds of a time on the fake's clock, as DingTalk writes
  // them (operatTime, eventBornTime, time): the wall clock at construction
  // plus the time since then on the steady clock.
  std::int64_t epoch_ms(SteadyTime t) const;

  // The server's state of one socket; opaque (public for the libwslay
  // callbacks in the implementation).
  struct Connection;

private:
  struct Ticket {
    std::string client_id;
    SteadyTime expires_at;
  };
  struct Event {
    StreamEventRecord record;
    SteadyTime deadline{};   // in_flight: when it is sent again
    bool redelivery = false; // waiting to be sent again
  };
  struct Target {
    bool ping = false;
    std::size_t index = 0;    // into m_events or m_pings
    std::size_t delivery = 0; // into the event's deliveries
  };
  enum class Action { none, ping, disconnect, drop, stall, garbage };

  void run();
  // REQUIRES (all below): m_mutex held; the server thread.
  void accept_connections();
  void handle_io(Connection& c, short revents);
  void read_handshake(Connection& c);
  void answer_handshake(Connection& c, const std::string& request);
  void refuse(Connection& c, int status, const std::string& code, const std::string& message,
              const std::string& extra_headers = "");
  void open_websocket(Connection& c, const std::string& accept);
  void write_raw(Connection& c);
  void websocket_io(Connection& c, short revents);
  void handle_answer(Connection& c, const std::string& text);
  void timers(SteadyTime t);
  void route(SteadyTime t);
  void deliver(std::size_t index, Connection& c, SteadyTime t, bool duplicate);
  void send_frame(Connection& c, const std::string& text, bool binary = false);
  void maybe_garbage(Connection& c);
  void send_garbage_frame(Connection& c, StreamGarbage kind);
  void send_ping(Connection& c, SteadyTime t);
  void send_disconnect(Connection& c, SteadyTime t);
  void drop(Connection& c, StreamDrop how);
  void close_connection(Connection& c, const std::string& by);
  void lose(Event& e, const std::string& reason);
  Connection* pick_connection();
  std::vector<Connection*> live_connections(); // open WebSocket connections, not draining
  StreamConnectionRecord& record(const Connection& c);
  std::string new_message_id(SteadyTime t);
  std::string new_uuid();
  std::string hex(std::size_t digits);
  std::string describe(const Event& e) const;
  void note(const std::string& line);
  void wake();
  SteadyTime now() const; // REQUIRES: m_mutex held
  void set_action(Action action, StreamDrop how = StreamDrop::reset,
                  StreamGarbage kind = StreamGarbage::not_json);

  const std::chrono::system_clock::time_point m_epoch_base;
  const SteadyTime m_steady_base;
  std::function<void()> m_on_turn;
  int m_port = 0;
  int m_listen_fd = -1;
  int m_wake_fd = -1; // an eventfd: public methods wake the server thread

  mutable std::mutex m_mutex;
  std::condition_variable m_turned;
  // --- guarded by m_mutex ---
  FakeStreamOptions m_options;
  std::function<SteadyTime()> m_now;
  std::mt19937_64 m_rng;
  std::map<std::string, Ticket> m_tickets;
  std::vector<Event> m_events;
  std::vector<std::size_t> m_active;       // indices of waiting and in_flight events, oldest first
  std::map<std::string, Target> m_targets; // messageId -> what it was sent for
  std::vector<StreamPingRecord> m_pings;
  std::vector<StreamConnectionRecord> m_connection_records; // by id - 1
  std::vector<std::unique_ptr<Connection>> m_connections;   // live sockets
  std::vector<std::pair<HandshakeRefusal, int>> m_refusals;
  struct PendingAction {
    Action action;
    StreamDrop how;
    StreamGarbage kind;
  };
  std::vector<PendingAction> m_actions;
  FakeStreamStats m_stats;
  std::deque<std::string> m_log;
  std::uint64_t m_turns = 0;
  std::uint64_t m_counter = 0;
  std::size_t m_round_robin = 0;
  bool m_stopping = false;
  // --- end of guarded state ---

  std::thread m_thread;
};

} // namespace rrd::testing
