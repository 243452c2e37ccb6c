// Test clients of DingTalk's Stream mode, for checking the fake DingTalk's
// Stream server (and for any test that needs to play the client):
// - open_gateway(): the gateway call, POST /v1.0/gateway/connections/open;
// - WsTestClient: one TCP connection to a WebSocket server, driven by hand
//   with ws_frame.hpp: any handshake request (well-formed or not), any frame
//   (masked or not), and the server's answer read byte-exactly (its status
//   line and headers, then its frames, each checked with ws::violation());
// - StreamTestClient: a well-behaved Stream client on top of both (gateway,
//   handshake, pings answered, events acknowledged on request).
// Blocking, with timeouts; not thread-safe (one test thread each).
#pragma once

#include "fakes/stream_protocol.hpp"
#include "fakes/ws_frame.hpp"

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace rrd::testing {

// --- the gateway call ---

struct GatewayAnswer {
  int status = 0; // 0: no HTTP answer
  std::string body;
  std::string content_type;
  nlohmann::json json; // null when the body is not JSON
  std::string code() const;
  std::string endpoint() const;
  std::string ticket() const;
};

// {"clientId", "clientSecret", "subscriptions": [{"type": "EVENT", "topic": "*"}], "ua"}
nlohmann::json gateway_body(const std::string& client_id, const std::string& client_secret);
// POSTs `body` (Content-Type: application/json) to 127.0.0.1:port; with
// `accept_json`, Accept: application/json, as DingTalk needs.
GatewayAnswer open_gateway(int port, const nlohmann::json& body, bool accept_json = true);
GatewayAnswer open_gateway(int port, const std::string& raw_body, const std::string& content_type,
                           bool accept_json);

// --- one WebSocket connection by hand ---

struct HandshakeAnswer {
  int status = 0; // 0: the server closed without an answer
  std::string status_line;
  std::map<std::string, std::string> headers; // names in lower case
  std::string body;
  std::string header(const std::string& name) const;
};

class WsTestClient {
public:
  static constexpr std::chrono::milliseconds k_default_timeout{5000};

  // Connects to 127.0.0.1:port; throws std::runtime_error on failure.
  explicit WsTestClient(int port);
  ~WsTestClient();
  WsTestClient(const WsTestClient&) = delete;
  WsTestClient& operator=(const WsTestClient&) = delete;

  // The standard upgrade request for `target` (path and query) with `key`,
  // plus `extra` header lines ("Name: value"); the headers in `omit` (lower
  // case) are left out.
  static std::string upgrade_request(const std::string& target, int port,
                                     const std::string& key = ws::k_sample_key,
                                     const std::vector<std::string>& extra = {},
                                     const std::vector<std::string>& omit = {});
  // Sends `request` and reads the answer's status line and headers (and a
  // body with Content-Length); the bytes after a 101 are kept for frames.
  HandshakeAnswer handshake(const std::string& request,
                            std::chrono::milliseconds timeout = k_default_timeout);
  // upgrade_request(target) through handshake().
  HandshakeAnswer upgrade(const std::string& target);

  void send_raw(const std::string& bytes);
  // Sends `frame` as it is (mask it with ws::masked() to behave).
  void send_frame(const ws::Frame& frame);
  // A masked text frame, as a client must send it.
  void send_text(const std::string& text);
  void send_close(std::uint16_t code = ws::k_close_normal);
  void send_ping(const std::string& payload = "");

  // The next frame from the server, or nullopt when none came within
  // `timeout`, the server closed the TCP connection (closed()), or the
  // bytes are not valid framing (framing_error()). Frames that break
  // RFC 6455 (ws::violation()) are returned and counted in violations().
  std::optional<ws::Frame> read_frame(std::chrono::milliseconds timeout = k_default_timeout);
  // Reads and discards frames until the server closes the TCP connection;
  // false when it has not within `timeout`.
  bool wait_closed(std::chrono::milliseconds timeout = k_default_timeout);
  bool closed() const { return m_closed; }
  bool reset() const { return m_reset; } // the server reset the connection
  const std::string& framing_error() const { return m_reader.error(); }
  const std::vector<std::string>& violations() const { return m_violations; }
  std::optional<std::uint16_t> close_code_received() const { return m_close_code; }
  int fd() const { return m_fd; }

private:
  // Reads what is there, waiting up to `timeout` for the first byte; false
  // on timeout or close.
  bool fill(std::chrono::milliseconds timeout);

  int m_fd = -1;
  int m_port = 0;
  std::string m_buffer; // handshake bytes not yet parsed
  ws::FrameReader m_reader;
  bool m_closed = false;
  bool m_reset = false;
  std::vector<std::string> m_violations;
  std::optional<std::uint16_t> m_close_code;
  std::mt19937 m_rng{12345};
};

// --- a well-behaved Stream client ---

class StreamTestClient {
public:
  // Opens a ticket at the gateway on 127.0.0.1:http_port and connects to
  // the endpoint it names; throws std::runtime_error naming what failed.
  StreamTestClient(int http_port, const std::string& client_id, const std::string& client_secret);

  // The next Stream frame (a text frame holding a server frame), answering
  // SYSTEM pings on the way when auto_answer_pings; nullopt on timeout,
  // close, or a frame that is not a Stream frame (then last_raw() has it).
  std::optional<StreamFrame>
  next(std::chrono::milliseconds timeout = WsTestClient::k_default_timeout);
  // The next EVENT frame (SYSTEM frames answered or skipped on the way).
  std::optional<StreamFrame>
  next_event(std::chrono::milliseconds timeout = WsTestClient::k_default_timeout);
  // Acknowledges an EVENT (status SUCCESS, code 200), or refuses it.
  void ack(const StreamFrame& event, const std::string& status = "SUCCESS", int code = 200);
  void answer_ping(const StreamFrame& ping);

  WsTestClient& ws() { return *m_ws; }
  const std::string& ticket() const { return m_ticket; }
  const std::string& last_raw() const { return m_last_raw; }
  bool auto_answer_pings = true;
  std::vector<StreamFrame> system_frames; // every SYSTEM frame next() saw

private:
  std::unique_ptr<WsTestClient> m_ws;
  std::string m_ticket;
  std::string m_last_raw;
};

// The port of a "ws://127.0.0.1:PORT/path" URL; 0 if it is not one.
int ws_url_port(const std::string& url);
// The path (with its query) of such a URL.
std::string ws_url_target(const std::string& url);

} // namespace rrd::testing
