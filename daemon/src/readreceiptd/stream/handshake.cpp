#include "readreceiptd/stream/handshake.hpp"

#include "readreceiptd/common/base64.hpp"
#include "readreceiptd/http/http1.hpp"

#include <algorithm>
#include <cctype>
#include <openssl/sha.h>

namespace rrd::stream {

namespace {

constexpr std::string_view k_guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

// True when the comma-separated header value lists `token` (case-insensitive).
bool lists_token(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const auto comma = value.find(',');
    if (lower(trim(value.substr(0, comma))) == token) {
      return true;
    }
    if (comma == std::string_view::npos) {
      break;
    }
    value.remove_prefix(comma + 1);
  }
  return false;
}

} // namespace

std::optional<WsTarget> parse_ws_url(std::string_view url, std::string& why) {
  WsTarget t;
  std::string_view rest;
  const std::string l = lower(url.substr(0, 6));
  if (l.rfind("wss://", 0) == 0) {
    t.tls = true;
    rest = url.substr(6);
  } else if (l.rfind("ws://", 0) == 0) {
    rest = url.substr(5);
  } else {
    why = "not a ws:// or wss:// URL";
    return std::nullopt;
  }
  if (url.find('#') != std::string_view::npos) {
    why = "a WebSocket URL has no fragment";
    return std::nullopt;
  }
  t.http_url = std::string(t.tls ? "https://" : "http://") + std::string(rest);
  const auto parsed = http::http1::parse_url(t.http_url, why);
  if (!parsed) {
    return std::nullopt;
  }
  t.host = std::string(parsed->host);
  t.port = std::string(parsed->port);
  t.authority = std::string(parsed->authority);
  t.path = std::string(parsed->path);
  return t;
}

std::string make_websocket_key(const std::array<unsigned char, 16>& nonce) {
  return base64_encode(std::string_view(reinterpret_cast<const char*>(nonce.data()), nonce.size()));
}

std::string websocket_accept(std::string_view key) {
  std::string input(key);
  input += k_guid;
  std::array<unsigned char, SHA_DIGEST_LENGTH> digest{};
  SHA1(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest.data());
  return base64_encode(
      std::string_view(reinterpret_cast<const char*>(digest.data()), digest.size()));
}

std::string upgrade_request(const WsTarget& target, std::string_view key,
                            std::string_view user_agent) {
  std::string out;
  out.reserve(256 + target.path.size());
  out += "GET ";
  out += target.path;
  out += " HTTP/1.1\r\nHost: ";
  out += target.authority;
  out += "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ";
  out += key;
  out += "\r\nSec-WebSocket-Version: 13\r\nUser-Agent: ";
  out += user_agent;
  out += "\r\n\r\n";
  return out;
}

UpgradeParser::State UpgradeParser::fail(std::string why) {
  m_error = std::move(why);
  m_state = State::invalid;
  return m_state;
}

UpgradeParser::State UpgradeParser::feed(std::string_view data) {
  if (m_state != State::more) {
    return m_state;
  }
  // Only the new bytes (and the three before them) can complete the end of
  // the head.
  const std::size_t search_from = m_buffer.size() >= 3 ? m_buffer.size() - 3 : 0;
  m_buffer.append(data);
  const auto end = m_buffer.find("\r\n\r\n", search_from);
  if (end == std::string::npos) {
    if (m_buffer.size() > k_max_upgrade_answer_bytes) {
      return fail("the handshake answer's head is longer than " +
                  std::to_string(k_max_upgrade_answer_bytes) + " bytes");
    }
    return State::more;
  }
  if (end + 4 > k_max_upgrade_answer_bytes) {
    return fail("the handshake answer's head is longer than " +
                std::to_string(k_max_upgrade_answer_bytes) + " bytes");
  }
  return parse(end);
}

UpgradeParser::State UpgradeParser::end_of_input() {
  if (m_state != State::more) {
    return m_state;
  }
  return fail(m_buffer.empty() ? "the server closed the connection without an answer"
                               : "the server closed the connection inside the handshake answer");
}

UpgradeParser::State UpgradeParser::parse(std::size_t head_end) {
  const std::string_view head(m_buffer.data(), head_end);
  const auto line_end = head.find("\r\n");
  const std::string_view status_line = head.substr(0, line_end);
  // "HTTP/1.1 101 Switching Protocols"
  if (status_line.size() < 12 || status_line.substr(0, 5) != "HTTP/" || status_line[8] != ' ' ||
      !std::isdigit(static_cast<unsigned char>(status_line[9])) ||
      !std::isdigit(static_cast<unsigned char>(status_line[10])) ||
      !std::isdigit(static_cast<unsigned char>(status_line[11])) ||
      (status_line.size() > 12 && status_line[12] != ' ')) {
    return fail("the handshake answer is not HTTP");
  }
  if (status_line.substr(0, 8) != "HTTP/1.1") {
    return fail("the handshake answer is not HTTP/1.1");
  }
  m_status = (status_line[9] - '0') * 100 + (status_line[10] - '0') * 10 + (status_line[11] - '0');
  if (m_status >= 400) {
    m_state = State::refused;
    return m_state;
  }
  if (m_status != 101) {
    return fail("the server answered the handshake with HTTP " + std::to_string(m_status) +
                ", not 101");
  }
  bool upgrade = false;
  bool connection = false;
  std::optional<std::string> accept;
  std::string_view rest =
      line_end == std::string_view::npos ? std::string_view{} : head.substr(line_end + 2);
  while (!rest.empty()) {
    const auto eol = rest.find("\r\n");
    const std::string_view line = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view{} : rest.substr(eol + 2);
    const auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0 || line.front() == ' ' ||
        line.front() == '\t') {
      return fail("a malformed header line in the handshake answer");
    }
    const std::string name = lower(line.substr(0, colon));
    const std::string_view value = trim(line.substr(colon + 1));
    if (name == "upgrade") {
      upgrade = lower(value) == "websocket";
    } else if (name == "connection") {
      connection = lists_token(value, "upgrade");
    } else if (name == "sec-websocket-accept") {
      if (accept) {
        return fail("Sec-WebSocket-Accept appears twice in the handshake answer");
      }
      accept = std::string(value);
    } else if (name == "sec-websocket-extensions" && !value.empty()) {
      return fail("the server chose a WebSocket extension that was not offered");
    } else if (name == "sec-websocket-protocol" && !value.empty()) {
      return fail("the server chose a WebSocket subprotocol that was not offered");
    }
  }
  if (!upgrade) {
    return fail("the handshake answer lacks \"Upgrade: websocket\"");
  }
  if (!connection) {
    return fail("the handshake answer lacks \"Connection: Upgrade\"");
  }
  if (!accept) {
    return fail("the handshake answer lacks Sec-WebSocket-Accept");
  }
  if (*accept != m_expected) {
    return fail("the handshake answer's Sec-WebSocket-Accept does not match the key sent");
  }
  m_leftover = m_buffer.substr(head_end + 4);
  m_buffer.clear();
  m_state = State::accepted;
  return m_state;
}

} // namespace rrd::stream
