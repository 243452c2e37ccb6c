// The Stream client (SPEC section 10): one DingTalk Stream connection kept
// open from the daemon's loop. It asks the gateway for a ticket, opens the
// WebSocket over the HTTP engine's raw streams (the same TCP, TLS and epoll
// loop as every other call), answers pings, moves to a new connection when
// DingTalk says `disconnect`, pings a quiet connection and gives up a dead
// one, reconnects with backoff and a new ticket each time, and hands every
// `robot_msg_read` to a ReadSink, acknowledging it only once the sink says
// the read is committed. Nothing here stops the daemon or its polls.
//
// Thread-safety: none. Everything runs on the loop thread; the engine calls
// back from inside run_once().
#pragma once

#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/config/config.hpp"
#include "readreceiptd/dingtalk/errors.hpp"
#include "readreceiptd/ha/gate.hpp"
#include "readreceiptd/http/http_engine.hpp"
#include "readreceiptd/scheduler/rate_limiter.hpp"
#include "readreceiptd/stream/frames.hpp"
#include "readreceiptd/stream/handshake.hpp"
#include "readreceiptd/stream/websocket.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace rrd::stream {

// A message over this size closes the connection (WebSocket close 1009).
inline constexpr std::size_t k_max_message_bytes = 1024 * 1024;
// After moving to a new connection, the old one is closed once its
// acknowledgements are out, or after this long at the latest.
inline constexpr Millis k_handover_grace{10'000};
// A closing connection whose peer does not finish the close is dropped
// after this long.
inline constexpr Millis k_close_grace{5'000};

// The `reason` label of readreceiptd_stream_disconnects_total.
enum class DisconnectReason { server, network, ping_timeout, protocol };
const char* to_string(DisconnectReason r);
inline constexpr DisconnectReason k_all_disconnect_reasons[] = {
    DisconnectReason::server, DisconnectReason::network, DisconnectReason::ping_timeout,
    DisconnectReason::protocol};

// The `result` label of readreceiptd_stream_events_total.
enum class EventResult { applied, duplicate, untracked, ignored, bad };
const char* to_string(EventResult r);
inline constexpr EventResult k_all_event_results[] = {EventResult::applied, EventResult::duplicate,
                                                      EventResult::untracked, EventResult::ignored,
                                                      EventResult::bad};

// What the client reports; the metrics module implements it. No-op defaults.
class Observer {
public:
  virtual ~Observer() = default;
  virtual void gateway_finished(Millis /*duration*/, dingtalk::FailureReason) {}
  virtual void connection_opened() {}
  virtual void connected_changed(bool /*connected*/) {}
  virtual void disconnected(DisconnectReason) {}
  virtual void event(EventResult) {}
};

// Where pushed reads go: the message table's owner.
class ReadSink {
public:
  virtual ~ReadSink() = default;
  enum class Outcome {
    pending,   // a new reader: `committed` follows once the commit is done
    duplicate, // the reader was known already
    untracked, // no tracked message has this key
  };
  // `committed` is called later, from the loop (never inside push_read()):
  // true once the read and its events are durable, false when the commit
  // failed (the read was rolled back; DingTalk sends it again, or a poll
  // finds it). Only called for `pending`. It may outlive the client (it
  // then does nothing).
  virtual Outcome push_read(const ReadEvent& event, std::function<void(bool)> committed) = 0;
};

class Client {
public:
  // REQUIRES: cfg's auth is an app's (credentials(cfg) is set).
  Client(const config::DingTalk& cfg, http::Engine& engine, const Clock& clock,
         scheduler::RateLimiter& limiter, ReadSink& sink, Observer& observer, std::uint64_t seed);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // The work gate (ha/gate.hpp): while it says no, no gateway call starts and no
  // frame (an acknowledgement above all) is sent. nullptr (the
  // default, SQLite): always yes. The gate outlives this object.
  void set_gate(const ha::WorkGate* gate) { m_gate = gate; }

  // New credentials or endpoint: reconnect with them.
  void reconfigure(const config::DingTalk& cfg);
  // Starts what is due: the gateway call of a (re)connect, keep-alive pings,
  // closes of connections that are done.
  void pump();
  std::optional<TimePoint> next_wakeup() const;
  // Closes every connection (at shutdown); nothing is opened again.
  void stop();

  bool connected() const;
  // While connected: since when. Otherwise: since when it has been down
  // (the client's start, if it never was up).
  TimePoint state_since() const { return m_state_since; }
  std::optional<TimePoint> last_event() const { return m_last_event; }

private:
  struct Connection;
  friend struct Connection;

  bool wants_connection() const;
  void start_gateway(TimePoint now);
  void on_gateway(std::uint64_t attempt, http::Response r);
  void attempt_failed(TimePoint now, bool credentials_refused);
  void on_socket_open(Connection& c);
  void on_socket_data(Connection& c, std::string_view bytes);
  void on_socket_closed(Connection& c, http::Failure failure, const std::string& why);
  void handle_text(Connection& c, const std::string& text);
  void handle_event(Connection& c, const Frame& f);
  void accepted(Connection& c);
  void send(Connection& c, const std::string& text);
  void flush(Connection& c);
  void close(Connection& c, std::uint16_t code, DisconnectReason reason, const std::string& why);
  void lost(Connection& c, DisconnectReason reason, const std::string& why);
  void set_connected(bool up, TimePoint now);
  Connection* find(std::uint64_t id);
  double random01();

  config::DingTalk m_cfg;
  std::optional<Credentials> m_credentials;
  http::Engine& m_engine;
  const ha::WorkGate* m_gate = nullptr;
  const Clock& m_clock;
  scheduler::RateLimiter& m_limiter;
  ReadSink& m_sink;
  Observer& m_observer;
  std::mt19937_64 m_rng;

  // Connections by id: the current one, one being opened for a handover,
  // old ones closing.
  std::map<std::uint64_t, std::unique_ptr<Connection>> m_connections;
  std::vector<std::unique_ptr<Connection>> m_dead; // freed by pump(), after the callbacks
  std::uint64_t m_current = 0;                     // 0: none
  std::uint64_t m_next_id = 1;
  std::uint64_t m_gateway_attempt = 0; // the gateway call in flight, 0: none
  bool m_handover = false;             // the current one was told to go
  bool m_stopped = false;
  int m_failures = 0; // failed attempts in a row
  TimePoint m_retry_at;
  bool m_waiting_for_slot = false;
  bool m_credentials_logged = false;
  bool m_connected = false;
  TimePoint m_state_since;
  std::optional<TimePoint> m_last_event;
  // Held by the acknowledgement callbacks the sink keeps, weakly: one that
  // runs after the client is gone does nothing.
  std::shared_ptr<Client*> m_alive;
};

} // namespace rrd::stream
