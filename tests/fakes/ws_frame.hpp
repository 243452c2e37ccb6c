// RFC 6455 WebSocket frames written and read by hand, for tests that check a
// WebSocket peer's framing strictly (the fake DingTalk's Stream server, the
// daemon's Stream client): encode any frame, masked or not, with any flags
// and length form; read frames incrementally and say exactly what is wrong
// with a malformed one; the handshake's accept key. Independent of libwslay
// on purpose, so that the peer under test is not checked by its own library.
// Pure functions and a plain value type; FrameReader is not thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace rrd::testing::ws {

enum class Opcode : std::uint8_t {
  continuation = 0x0,
  text = 0x1,
  binary = 0x2,
  close = 0x8,
  ping = 0x9,
  pong = 0xa,
};

// RFC 6455 section 7.4.1.
inline constexpr std::uint16_t k_close_normal = 1000;
inline constexpr std::uint16_t k_close_going_away = 1001;
inline constexpr std::uint16_t k_close_protocol_error = 1002;
inline constexpr std::uint16_t k_close_unsupported_data = 1003;
inline constexpr std::uint16_t k_close_invalid_payload = 1007;
inline constexpr std::uint16_t k_close_policy_violation = 1008;
inline constexpr std::uint16_t k_close_message_too_big = 1009;

// The GUID of RFC 6455 section 1.3.
inline constexpr char k_accept_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
// The example of RFC 6455 section 1.3: this key is answered with that accept value.
inline constexpr char k_sample_key[] = "dGhlIHNhbXBsZSBub25jZQ==";
inline constexpr char k_sample_accept[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

struct Frame {
  bool fin = true;
  std::uint8_t rsv = 0; // RSV1..3 as bits 2..0
  Opcode opcode = Opcode::text;
  bool masked = false;
  std::array<std::uint8_t, 4> mask{};
  std::string payload; // unmasked
};

Frame text_frame(std::string payload);
Frame close_frame(std::uint16_t code, std::string_view reason = {});
// Masks `frame` with `key` (a client's frames must be masked).
Frame masked(Frame frame, std::array<std::uint8_t, 4> key);

// The frame's bytes, header in the shortest length form unless `long_length`
// asks for the 64-bit form (legal, if unusual, for any length).
std::string encode(const Frame& frame, bool long_length = false);

// The status code of a close frame's payload; nullopt when it has none.
std::optional<std::uint16_t> close_code(std::string_view payload);

// Reads frames from a byte stream as they arrive. A frame's payload is
// capped: a longer one is an error, not an allocation.
class FrameReader {
public:
  static constexpr std::uint64_t k_default_max_payload = 16 * 1024 * 1024;
  explicit FrameReader(std::uint64_t max_payload = k_default_max_payload)
      : m_max_payload(max_payload) {}

  void feed(std::string_view bytes) { m_buffer.append(bytes); }
  // The next complete frame (unmasked), or nullopt when more bytes are
  // needed or the stream is broken (then error() says why, and every later
  // call returns nullopt).
  std::optional<Frame> next();
  const std::string& error() const { return m_error; }
  std::size_t buffered() const { return m_buffer.size(); }

private:
  std::uint64_t m_max_payload;
  std::string m_buffer;
  std::string m_error;
};

// What a frame breaks of RFC 6455 section 5 on its own, as seen by the side
// that receives it ("" when nothing): reserved bits without an extension,
// unknown opcodes, fragmented or long (> 125 bytes) control frames, a close
// payload of 1 byte, and the masking rule (from_client: frames must be
// masked; else they must not be).
std::string violation(const Frame& frame, bool from_client);

// Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2).
std::string accept_key(std::string_view key);
// True when `key` is base64 of exactly 16 bytes, as the RFC requires.
bool valid_key(std::string_view key);

} // namespace rrd::testing::ws
