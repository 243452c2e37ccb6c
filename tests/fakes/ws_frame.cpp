#include "fakes/ws_frame.hpp"

#include "fakes/codec.hpp"

#include <openssl/evp.h>
#include <stdexcept>

namespace rrd::testing::ws {

namespace {

constexpr std::size_t k_max_control_payload = 125;
constexpr std::uint8_t k_length_16 = 126;
constexpr std::uint8_t k_length_64 = 127;
constexpr std::size_t k_key_bytes = 16;

bool known_opcode(Opcode op) {
  switch (op) {
  case Opcode::continuation:
  case Opcode::text:
  case Opcode::binary:
  case Opcode::close:
  case Opcode::ping:
  case Opcode::pong:
    return true;
  }
  return false;
}

bool is_control(Opcode op) {
  return (static_cast<std::uint8_t>(op) & 0x8) != 0;
}

std::string sha1(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha1(), nullptr) != 1) {
    throw std::runtime_error("SHA-1 failed");
  }
  return {reinterpret_cast<const char*>(digest), length};
}

} // namespace

Frame text_frame(std::string payload) {
  Frame f;
  f.payload = std::move(payload);
  return f;
}

Frame close_frame(std::uint16_t code, std::string_view reason) {
  Frame f;
  f.opcode = Opcode::close;
  f.payload += static_cast<char>(code >> 8);
  f.payload += static_cast<char>(code & 0xff);
  f.payload.append(reason);
  return f;
}

Frame masked(Frame frame, std::array<std::uint8_t, 4> key) {
  frame.masked = true;
  frame.mask = key;
  return frame;
}

std::string encode(const Frame& frame, bool long_length) {
  std::string out;
  out += static_cast<char>((frame.fin ? 0x80 : 0) | ((frame.rsv & 0x7) << 4) |
                           (static_cast<std::uint8_t>(frame.opcode) & 0xf));
  const std::uint8_t mask_bit = frame.masked ? 0x80 : 0;
  const std::uint64_t n = frame.payload.size();
  if (n <= k_max_control_payload && !long_length) {
    out += static_cast<char>(mask_bit | n);
  } else if (n <= 0xffff && !long_length) {
    out += static_cast<char>(mask_bit | k_length_16);
    out += static_cast<char>(n >> 8);
    out += static_cast<char>(n & 0xff);
  } else {
    out += static_cast<char>(mask_bit | k_length_64);
    for (int shift = 56; shift >= 0; shift -= 8) {
      out += static_cast<char>((n >> shift) & 0xff);
    }
  }
  if (!frame.masked) {
    out += frame.payload;
    return out;
  }
  for (const auto b : frame.mask) {
    out += static_cast<char>(b);
  }
  for (std::size_t i = 0; i < frame.payload.size(); ++i) {
    out += static_cast<char>(static_cast<std::uint8_t>(frame.payload[i]) ^ frame.mask[i % 4]);
  }
  return out;
}

std::optional<std::uint16_t> close_code(std::string_view payload) {
  if (payload.size() < 2) {
    return std::nullopt;
  }
  return static_cast<std::uint16_t>((static_cast<std::uint8_t>(payload[0]) << 8) |
                                    static_cast<std::uint8_t>(payload[1]));
}

std::optional<Frame> FrameReader::next() {
  if (!m_error.empty() || m_buffer.size() < 2) {
    return std::nullopt;
  }
  const auto byte = [&](std::size_t i) { return static_cast<std::uint8_t>(m_buffer[i]); };
  Frame f;
  f.fin = (byte(0) & 0x80) != 0;
  f.rsv = (byte(0) >> 4) & 0x7;
  f.opcode = static_cast<Opcode>(byte(0) & 0xf);
  f.masked = (byte(1) & 0x80) != 0;
  std::uint64_t n = byte(1) & 0x7f;
  std::size_t at = 2;
  if (n == k_length_16) {
    if (m_buffer.size() < at + 2) {
      return std::nullopt;
    }
    n = (static_cast<std::uint64_t>(byte(2)) << 8) | byte(3);
    at += 2;
  } else if (n == k_length_64) {
    if (m_buffer.size() < at + 8) {
      return std::nullopt;
    }
    n = 0;
    for (std::size_t i = 0; i < 8; ++i) {
      n = (n << 8) | byte(at + i);
    }
    at += 8;
    if ((n >> 63) != 0) {
      m_error = "64-bit payload length with the most significant bit set";
      return std::nullopt;
    }
  }
  if (n > m_max_payload) {
    m_error = "payload of " + std::to_string(n) + " bytes, over the cap of " +
              std::to_string(m_max_payload);
    return std::nullopt;
  }
  if (f.masked) {
    if (m_buffer.size() < at + 4) {
      return std::nullopt;
    }
    for (std::size_t i = 0; i < 4; ++i) {
      f.mask[i] = byte(at + i);
    }
    at += 4;
  }
  if (m_buffer.size() < at + n) {
    return std::nullopt;
  }
  f.payload = m_buffer.substr(at, n);
  if (f.masked) {
    for (std::size_t i = 0; i < f.payload.size(); ++i) {
      f.payload[i] = static_cast<char>(static_cast<std::uint8_t>(f.payload[i]) ^ f.mask[i % 4]);
    }
  }
  m_buffer.erase(0, at + n);
  return f;
}

std::string violation(const Frame& frame, bool from_client) {
  if (frame.rsv != 0) {
    return "reserved bits set without a negotiated extension";
  }
  if (!known_opcode(frame.opcode)) {
    return "unknown opcode " + std::to_string(static_cast<int>(frame.opcode));
  }
  if (is_control(frame.opcode) && !frame.fin) {
    return "fragmented control frame";
  }
  if (is_control(frame.opcode) && frame.payload.size() > k_max_control_payload) {
    return "control frame payload over 125 bytes";
  }
  if (frame.opcode == Opcode::close && frame.payload.size() == 1) {
    return "close frame with a 1-byte payload";
  }
  if (from_client && !frame.masked) {
    return "unmasked frame from a client";
  }
  if (!from_client && frame.masked) {
    return "masked frame from a server";
  }
  return "";
}

std::string accept_key(std::string_view key) {
  std::string input(key);
  input += k_accept_guid;
  return base64_encode(sha1(input));
}

bool valid_key(std::string_view key) {
  const auto decoded = base64_decode(std::string(key));
  return decoded && decoded->size() == k_key_bytes;
}

} // namespace rrd::testing::ws
