// A WebSocket connection's framing, client side (RFC 6455), by libwslay,
// over bytes: feed it what the socket received, take from it what to send.
// It reassembles fragmented messages, answers pings with pongs, masks what
// it sends, caps the size of a message (a larger one is refused with close
// code 1009) and closes on broken framing (1002) or invalid UTF-8 in a text
// message (1007). No I/O and no clock: the Stream client moves the bytes.
//
// Thread-safety: none; one thread uses a WebSocket.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct wslay_event_context;

namespace rrd::stream {

struct WsMessage {
  enum class Type { text, binary, pong, close };
  Type type = Type::text;
  std::string payload;
  std::uint16_t close_code = 0; // close: the peer's status code (0: none given)
};

class WebSocket {
public:
  explicit WebSocket(std::size_t max_message_bytes);
  ~WebSocket();
  WebSocket(const WebSocket&) = delete;
  WebSocket& operator=(const WebSocket&) = delete;

  // Takes bytes the peer sent; complete messages go to messages(). Returns
  // false once the connection is unusable (see error()).
  bool receive(std::string_view bytes);
  // Messages received so far; the caller takes them.
  std::vector<WsMessage>& messages() { return m_messages; }

  // Queue frames; false when the connection is closing or closed.
  bool queue_text(std::string_view text);
  bool queue_ping(std::string_view payload);
  bool queue_close(std::uint16_t code, std::string_view reason);

  // The bytes queued frames make, to be written to the socket in order.
  std::string take_output();

  // Frames received (of any kind, control frames too).
  std::uint64_t frames_received() const { return m_frames; }
  // No more messages will be read: a close was received or sent, a message
  // was too large, or the framing was broken.
  bool read_closed() const;
  // A close frame went out: nothing more can be queued.
  bool close_sent() const;
  // Why the connection is unusable ("" while it is fine).
  const std::string& error() const { return m_error; }
  // The close code this side sent (1009, 1002, ...), 0 before any.
  std::uint16_t close_code_sent() const;

private:
  struct Callbacks;
  bool flush();

  wslay_event_context* m_ctx = nullptr;
  std::string_view m_input; // receive()'s bytes while wslay reads them
  std::string m_output;
  std::vector<WsMessage> m_messages;
  std::uint64_t m_frames = 0;
  std::string m_error;
};

} // namespace rrd::stream
