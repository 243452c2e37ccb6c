// WebSocket frames written and read by hand for tests (RFC 6455 section 5):
// a server's unmasked frames, and the masked frames a client writes taken
// apart, strictly (every client frame must be masked). Pure; thread-safe.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace rrd::testing {

// A server's frame: unmasked, FIN and opcode in `first_byte` (0x81: a whole
// text frame), with a 7-, 16- or 64-bit length.
inline std::string server_frame(unsigned char first_byte, std::string_view payload) {
  std::string f(1, static_cast<char>(first_byte));
  const std::uint64_t n = payload.size();
  if (n < 126) {
    f += static_cast<char>(n);
  } else if (n < 65536) {
    f += static_cast<char>(126);
    f += static_cast<char>(n >> 8);
    f += static_cast<char>(n & 0xFF);
  } else {
    f += static_cast<char>(127);
    for (int shift = 56; shift >= 0; shift -= 8) {
      f += static_cast<char>((n >> shift) & 0xFF);
    }
  }
  f += payload;
  return f;
}

struct ClientFrame {
  bool fin = true;
  int opcode = 0;
  std::string payload; // unmasked
};

// Takes apart the client frames in `bytes`; throws std::runtime_error on an
// unmasked frame or a frame cut short.
inline std::vector<ClientFrame> client_frames(std::string_view bytes) {
  std::vector<ClientFrame> out;
  std::size_t pos = 0;
  auto byte = [&](std::size_t i) { return static_cast<unsigned char>(bytes.at(i)); };
  while (pos < bytes.size()) {
    if (bytes.size() - pos < 2) {
      throw std::runtime_error("a client frame cut short");
    }
    ClientFrame f;
    f.fin = (byte(pos) & 0x80) != 0;
    f.opcode = byte(pos) & 0x0F;
    if ((byte(pos + 1) & 0x80) == 0) {
      throw std::runtime_error("an unmasked client frame");
    }
    std::uint64_t len = byte(pos + 1) & 0x7F;
    pos += 2;
    if (len == 126) {
      len = (static_cast<std::uint64_t>(byte(pos)) << 8) | byte(pos + 1);
      pos += 2;
    } else if (len == 127) {
      len = 0;
      for (int i = 0; i < 8; ++i) {
        len = (len << 8) | byte(pos + static_cast<std::size_t>(i));
      }
      pos += 8;
    }
    if (bytes.size() < pos + 4 + len) {
      throw std::runtime_error("a client frame cut short");
    }
    const std::string_view mask = bytes.substr(pos, 4);
    pos += 4;
    f.payload.assign(bytes.substr(pos, len));
    for (std::size_t i = 0; i < f.payload.size(); ++i) {
      f.payload[i] = static_cast<char>(f.payload[i] ^ mask[i % 4]);
    }
    pos += len;
    out.push_back(std::move(f));
  }
  return out;
}

} // namespace rrd::testing
