// The WebSocket opening handshake of RFC 6455 section 4, client side, as
// pure functions: the upgrade request's bytes and a parser that checks the
// server's answer (101, Upgrade, Connection, Sec-WebSocket-Accept, no
// extension or subprotocol that was not offered).
//
// Thread-safety: the functions are pure; an UpgradeParser is a plain value
// used by one thread at a time.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace rrd::stream {

// The answer's head is refused beyond this many bytes.
inline constexpr std::size_t k_max_upgrade_answer_bytes = 16 * 1024;

// A ws:// or wss:// URL taken apart, as the connection needs it.
struct WsTarget {
  bool tls = false;
  std::string host;      // a name or an address; IPv6 without brackets
  std::string port;      // digits; 80 or 443 when the URL has none
  std::string authority; // host[:port] as written: the Host header
  std::string path;      // path and query; "/" when none
  // The http:// or https:// URL of the same place (what the engine connects to).
  std::string http_url;
};
// nullopt (and `why`) for anything but an absolute ws:// or wss:// URL
// without user info or fragment.
std::optional<WsTarget> parse_ws_url(std::string_view url, std::string& why);

// base64 of 16 random bytes.
std::string make_websocket_key(const std::array<unsigned char, 16>& nonce);
// base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")).
std::string websocket_accept(std::string_view key);

// GET <path> HTTP/1.1 with Host, Upgrade: websocket, Connection: Upgrade,
// Sec-WebSocket-Key, Sec-WebSocket-Version: 13 and User-Agent.
std::string upgrade_request(const WsTarget& target, std::string_view key,
                            std::string_view user_agent);

// Reads the server's answer to upgrade_request() as it arrives.
class UpgradeParser {
public:
  enum class State {
    more,     // needs more bytes
    accepted, // 101 and every check passed; leftover() holds the first frames' bytes
    refused,  // an HTTP status of 400 or more: status()
    invalid,  // anything else: error()
  };
  explicit UpgradeParser(std::string expected_accept) : m_expected(std::move(expected_accept)) {}

  State feed(std::string_view data);
  // The connection closed before the answer was whole.
  State end_of_input();

  State state() const { return m_state; }
  int status() const { return m_status; }
  const std::string& error() const { return m_error; }
  // The bytes after the answer's head (WebSocket frames already sent).
  std::string take_leftover() { return std::move(m_leftover); }

private:
  State fail(std::string why);
  State parse(std::size_t head_end);

  std::string m_expected;
  std::string m_buffer;
  std::string m_leftover;
  State m_state = State::more;
  int m_status = 0;
  std::string m_error;
};

} // namespace rrd::stream
