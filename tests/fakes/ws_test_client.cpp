#include "fakes/ws_test_client.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <httplib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdexcept>
#include <sys/socket.h>
#include <unistd.h>

namespace rrd::testing {

namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr std::size_t k_read_chunk = 64 * 1024;
constexpr std::size_t k_max_handshake_answer = 64 * 1024;

std::string lower(std::string s) {
  for (auto& c : s) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return s;
}

std::string string_of(const json& j, const char* name) {
  return j.is_object() && j.contains(name) && j[name].is_string() ? j[name].get<std::string>() : "";
}

} // namespace

// --- the gateway call ---

std::string GatewayAnswer::code() const {
  return string_of(json, "code");
}

std::string GatewayAnswer::endpoint() const {
  return string_of(json, "endpoint");
}

std::string GatewayAnswer::ticket() const {
  return string_of(json, "ticket");
}

json gateway_body(const std::string& client_id, const std::string& client_secret) {
  return {{"clientId", client_id},
          {"clientSecret", client_secret},
          {"subscriptions", json::array({{{"type", "EVENT"}, {"topic", "*"}}})},
          {"ua", "readreceiptd-test/1.0"}};
}

GatewayAnswer open_gateway(int port, const json& body, bool accept_json) {
  return open_gateway(port, body.dump(), "application/json", accept_json);
}

GatewayAnswer open_gateway(int port, const std::string& raw_body, const std::string& content_type,
                           bool accept_json) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(5, 0);
  httplib::Headers headers;
  if (accept_json) {
    headers.emplace("Accept", "application/json");
  }
  const auto r = client.Post("/v1.0/gateway/connections/open", headers, raw_body, content_type);
  GatewayAnswer a;
  if (!r) {
    return a;
  }
  a.status = r->status;
  a.body = r->body;
  a.content_type = r->get_header_value("Content-Type");
  try {
    a.json = json::parse(r->body);
  } catch (const json::exception&) {
    a.json = nullptr;
  }
  return a;
}

// --- WsTestClient ---

std::string HandshakeAnswer::header(const std::string& name) const {
  const auto it = headers.find(lower(name));
  return it == headers.end() ? "" : it->second;
}

WsTestClient::WsTestClient(int port) : m_port(port) {
  m_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (m_fd < 0) {
    throw std::runtime_error(std::string("WsTestClient: socket: ") + std::strerror(errno));
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(m_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const std::string error = std::strerror(errno);
    ::close(m_fd);
    throw std::runtime_error("WsTestClient: connect to 127.0.0.1:" + std::to_string(port) + ": " +
                             error);
  }
  const int one = 1;
  ::setsockopt(m_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

WsTestClient::~WsTestClient() {
  if (m_fd >= 0) {
    ::close(m_fd);
  }
}

std::string WsTestClient::upgrade_request(const std::string& target, int port,
                                          const std::string& key,
                                          const std::vector<std::string>& extra,
                                          const std::vector<std::string>& omit) {
  const std::vector<std::pair<std::string, std::string>> standard = {
      {"Host", "127.0.0.1:" + std::to_string(port)},
      {"Upgrade", "websocket"},
      {"Connection", "Upgrade"},
      {"Sec-WebSocket-Key", key},
      {"Sec-WebSocket-Version", "13"},
  };
  std::string request = "GET " + target + " HTTP/1.1\r\n";
  for (const auto& [name, value] : standard) {
    bool skip = false;
    for (const auto& o : omit) {
      skip = skip || lower(name) == o;
    }
    if (!skip) {
      request.append(name).append(": ").append(value).append("\r\n");
    }
  }
  for (const auto& line : extra) {
    request += line + "\r\n";
  }
  return request + "\r\n";
}

HandshakeAnswer WsTestClient::upgrade(const std::string& target) {
  return handshake(upgrade_request(target, m_port));
}

HandshakeAnswer WsTestClient::handshake(const std::string& request,
                                        std::chrono::milliseconds timeout) {
  send_raw(request);
  HandshakeAnswer a;
  const auto deadline = Clock::now() + timeout;
  std::size_t end = std::string::npos;
  while ((end = m_buffer.find("\r\n\r\n")) == std::string::npos) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left.count() <= 0 || m_buffer.size() > k_max_handshake_answer) {
      return a;
    }
    char buf[k_read_chunk];
    pollfd p{m_fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      return a;
    }
    const ssize_t r = ::recv(m_fd, buf, sizeof buf, 0);
    if (r <= 0) {
      m_closed = true;
      m_reset = r < 0 && errno == ECONNRESET;
      return a;
    }
    m_buffer.append(buf, static_cast<std::size_t>(r));
  }
  const std::string head = m_buffer.substr(0, end);
  m_buffer.erase(0, end + 4);
  std::size_t start = 0;
  bool first = true;
  while (start <= head.size()) {
    const auto eol = head.find("\r\n", start);
    const std::string line =
        head.substr(start, eol == std::string::npos ? std::string::npos : eol - start);
    if (first) {
      a.status_line = line;
      const auto sp = line.find(' ');
      if (sp != std::string::npos) {
        a.status = std::atoi(line.c_str() + sp + 1);
      }
      first = false;
    } else {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(' '));
        a.headers[lower(line.substr(0, colon))] = value;
      }
    }
    if (eol == std::string::npos) {
      break;
    }
    start = eol + 2;
  }
  if (a.status == 101) {
    m_reader.feed(m_buffer); // the server's first frames may have come along
    m_buffer.clear();
    return a;
  }
  const std::size_t length =
      a.headers.count("content-length") != 0 ? std::stoul(a.headers["content-length"]) : 0;
  while (m_buffer.size() < length) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    pollfd p{m_fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      break;
    }
    char buf[k_read_chunk];
    const ssize_t r = ::recv(m_fd, buf, sizeof buf, 0);
    if (r <= 0) {
      break;
    }
    m_buffer.append(buf, static_cast<std::size_t>(r));
  }
  a.body = m_buffer.substr(0, length);
  m_buffer.erase(0, std::min(length, m_buffer.size()));
  return a;
}

void WsTestClient::send_raw(const std::string& bytes) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t r = ::send(m_fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (r <= 0) {
      if (r < 0 && errno == EINTR) {
        continue;
      }
      return; // the server went away: what it did is what the test checks
    }
    sent += static_cast<std::size_t>(r);
  }
}

void WsTestClient::send_frame(const ws::Frame& frame) {
  send_raw(ws::encode(frame));
}

void WsTestClient::send_text(const std::string& text) {
  std::uniform_int_distribution<int> d(0, 255);
  std::array<std::uint8_t, 4> key{};
  for (auto& b : key) {
    b = static_cast<std::uint8_t>(d(m_rng));
  }
  send_frame(ws::masked(ws::text_frame(text), key));
}

void WsTestClient::send_close(std::uint16_t code) {
  send_frame(ws::masked(ws::close_frame(code), {1, 2, 3, 4}));
}

void WsTestClient::send_ping(const std::string& payload) {
  ws::Frame f;
  f.opcode = ws::Opcode::ping;
  f.payload = payload;
  send_frame(ws::masked(f, {9, 8, 7, 6}));
}

bool WsTestClient::fill(std::chrono::milliseconds timeout) {
  if (m_closed) {
    return false;
  }
  pollfd p{m_fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(std::max<long long>(timeout.count(), 0))) <= 0) {
    return false;
  }
  char buf[k_read_chunk];
  const ssize_t r = ::recv(m_fd, buf, sizeof buf, 0);
  if (r <= 0) {
    m_closed = true;
    m_reset = r < 0 && errno == ECONNRESET;
    return false;
  }
  m_reader.feed(std::string_view(buf, static_cast<std::size_t>(r)));
  return true;
}

std::optional<ws::Frame> WsTestClient::read_frame(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    if (auto f = m_reader.next()) {
      const std::string v = ws::violation(*f, false);
      if (!v.empty()) {
        m_violations.push_back(v);
      }
      if (f->opcode == ws::Opcode::close) {
        m_close_code = ws::close_code(f->payload);
      }
      return f;
    }
    if (!m_reader.error().empty()) {
      return std::nullopt;
    }
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left.count() <= 0 || !fill(left)) {
      // A last look: the bytes that came with the close may hold a frame.
      if (auto f = m_reader.next()) {
        if (f->opcode == ws::Opcode::close) {
          m_close_code = ws::close_code(f->payload);
        }
        return f;
      }
      return std::nullopt;
    }
  }
}

bool WsTestClient::wait_closed(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!m_closed) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      return false;
    }
    if (!read_frame(left) && !m_reader.error().empty()) {
      // Broken framing: drain raw bytes until the close.
      char buf[k_read_chunk];
      pollfd p{m_fd, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
        return false;
      }
      const ssize_t r = ::recv(m_fd, buf, sizeof buf, 0);
      if (r <= 0) {
        m_closed = true;
      }
    }
  }
  return true;
}

// --- StreamTestClient ---

int ws_url_port(const std::string& url) {
  const std::string prefix = "ws://127.0.0.1:";
  if (url.rfind(prefix, 0) != 0) {
    return 0;
  }
  return std::atoi(url.c_str() + prefix.size());
}

std::string ws_url_target(const std::string& url) {
  const auto slash = url.find('/', std::string("ws://").size());
  return slash == std::string::npos ? "/" : url.substr(slash);
}

StreamTestClient::StreamTestClient(int http_port, const std::string& client_id,
                                   const std::string& client_secret) {
  const auto g = open_gateway(http_port, gateway_body(client_id, client_secret));
  if (g.status != 200 || g.endpoint().empty() || g.ticket().empty()) {
    throw std::runtime_error("StreamTestClient: the gateway answered " + std::to_string(g.status) +
                             ": " + g.body);
  }
  m_ticket = g.ticket();
  const int port = ws_url_port(g.endpoint());
  if (port == 0) {
    throw std::runtime_error("StreamTestClient: not a ws://127.0.0.1 endpoint: " + g.endpoint());
  }
  m_ws = std::make_unique<WsTestClient>(port);
  const auto h = m_ws->upgrade(ws_url_target(g.endpoint()) + "?ticket=" + m_ticket);
  if (h.status != 101) {
    throw std::runtime_error("StreamTestClient: the handshake answered " + h.status_line + ": " +
                             h.body);
  }
}

std::optional<StreamFrame> StreamTestClient::next(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    const auto f = m_ws->read_frame(std::max(left, milliseconds(0)));
    if (!f) {
      return std::nullopt;
    }
    if (f->opcode == ws::Opcode::ping) {
      ws::Frame pong;
      pong.opcode = ws::Opcode::pong;
      pong.payload = f->payload;
      m_ws->send_frame(ws::masked(pong, {4, 3, 2, 1}));
      continue;
    }
    if (f->opcode != ws::Opcode::text) {
      m_last_raw = f->payload;
      if (f->opcode == ws::Opcode::close) {
        return std::nullopt;
      }
      continue; // binary and pong frames
    }
    m_last_raw = f->payload;
    auto frame = parse_stream_frame(f->payload);
    if (!frame) {
      return std::nullopt;
    }
    if (frame->type == "SYSTEM") {
      system_frames.push_back(*frame);
      if (frame->topic() == "ping" && auto_answer_pings) {
        answer_ping(*frame);
      }
    }
    return frame;
  }
}

std::optional<StreamFrame> StreamTestClient::next_event(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      return std::nullopt;
    }
    auto f = next(left);
    if (!f) {
      if (m_ws->closed() || !m_ws->framing_error().empty() || left.count() <= 0) {
        return std::nullopt;
      }
      if (Clock::now() >= deadline) {
        return std::nullopt;
      }
      continue; // a garbage frame: skipped
    }
    if (f->type == "EVENT") {
      return f;
    }
  }
}

void StreamTestClient::ack(const StreamFrame& event, const std::string& status, int code) {
  m_ws->send_text(event_ack(event.message_id(), status, code));
}

void StreamTestClient::answer_ping(const StreamFrame& ping) {
  m_ws->send_text(ping_answer(ping));
}

} // namespace rrd::testing
