// A client of GET /v1/updates for the integration tests, on a plain socket:
// sends the request, reads the answer's head, undoes the chunked transfer
// coding and splits the body into Server-Sent Events, as a browser's reader
// does. It can also stop reading (a stuck page), with a small receive
// buffer so that the daemon's side fills soon. Not thread-safe: one thread
// uses one client.
#pragma once

#include <arpa/inet.h>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <optional>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

namespace rrd::testing {

struct SseEvent {
  std::string type; // "message" when the event has no `event:` line
  std::string data; // the data lines joined by '\n'
  nlohmann::json json() const { return nlohmann::json::parse(data, nullptr, false); }
};

class SseClient {
public:
  using Clock = std::chrono::steady_clock;

  // Connects to `listen` ("127.0.0.1:PORT") and sends GET `target`, with
  // `token` as a bearer token unless empty. `receive_buffer` > 0 sets
  // SO_RCVBUF before connecting (a small TCP window).
  explicit SseClient(const std::string& listen, const std::string& token = "",
                     int receive_buffer = 0, const std::string& target = "/v1/updates") {
    const auto colon = listen.rfind(':');
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(std::stoi(listen.substr(colon + 1))));
    ::inet_pton(AF_INET, listen.substr(0, colon).c_str(), &addr.sin_addr);
    m_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (receive_buffer > 0) {
      ::setsockopt(m_fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
    }
    if (::connect(m_fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close();
      return;
    }
    std::string request =
        "GET " + target + " HTTP/1.1\r\nHost: " + listen + "\r\nAccept: text/event-stream\r\n";
    if (!token.empty()) {
      request += "Authorization: Bearer " + token + "\r\n";
    }
    request += "\r\n";
    if (::send(m_fd, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      close();
    }
  }
  ~SseClient() { close(); }
  SseClient(const SseClient&) = delete;
  SseClient& operator=(const SseClient&) = delete;

  void close() {
    if (m_fd >= 0) {
      ::close(m_fd);
      m_fd = -1;
    }
  }

  // The answer's status, once its head is in (0: none within `timeout`).
  int status(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = Clock::now() + timeout;
    while (!m_head_done && read_some(deadline)) {
    }
    return m_status;
  }
  // A header of the answer (name in lower case), "" when absent.
  std::string header(const std::string& lower_name) const {
    const auto it = m_headers.find(lower_name);
    return it == m_headers.end() ? "" : it->second;
  }
  // The body read so far (the JSON of an error answer, once complete).
  const std::string& body() const { return m_body; }
  bool body_complete() const { return m_done; }
  // The connection ended (EOF, or the last chunk).
  bool ended() const { return m_eof || m_done; }
  std::size_t comments() const { return m_comments; }
  std::size_t bytes_received() const { return m_raw_total; }

  // The next event, or nullopt when none came within `timeout` or the stream
  // ended.
  std::optional<SseEvent> next(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      if (auto e = take_event()) {
        return e;
      }
      if (ended() || !read_some(deadline)) {
        return take_event();
      }
    }
  }

  // The first event for which `match` holds (the ones before it are
  // skipped), within `timeout`.
  std::optional<SseEvent> wait_for(const std::function<bool(const SseEvent&)>& match,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        return std::nullopt;
      }
      auto e = next(left);
      if (!e) {
        return std::nullopt;
      }
      if (match(*e)) {
        return e;
      }
    }
  }

  // Reads until the stream ends, within `timeout`; true when it did.
  bool wait_for_end(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!ended() && read_some(deadline)) {
    }
    return ended();
  }

  // Every event read so far and not taken by next().
  std::vector<SseEvent> drain() {
    std::vector<SseEvent> out;
    while (auto e = take_event()) {
      out.push_back(std::move(*e));
    }
    return out;
  }

private:
  // Reads what there is, waiting until `deadline` for something; false at
  // the deadline or the end.
  bool read_some(Clock::time_point deadline) {
    if (m_fd < 0 || m_eof) {
      return false;
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      return false;
    }
    pollfd p{m_fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) {
      return false;
    }
    char buf[65536];
    const ssize_t n = ::recv(m_fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      m_eof = true;
      return false;
    }
    m_raw_total += static_cast<std::size_t>(n);
    m_raw.append(buf, static_cast<std::size_t>(n));
    parse();
    return true;
  }

  void parse() {
    if (!m_head_done) {
      const auto end = m_raw.find("\r\n\r\n");
      if (end == std::string::npos) {
        return;
      }
      const std::string head = m_raw.substr(0, end);
      m_raw.erase(0, end + 4);
      m_head_done = true;
      if (head.rfind("HTTP/1.1 ", 0) == 0) {
        m_status = std::stoi(head.substr(9, 3));
      }
      std::size_t pos = head.find("\r\n");
      while (pos != std::string::npos) {
        const auto next = head.find("\r\n", pos + 2);
        const std::string line =
            head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
        const auto colon = line.find(':');
        if (colon != std::string::npos) {
          std::string name = line.substr(0, colon);
          for (auto& c : name) {
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
          }
          std::string value = line.substr(colon + 1);
          while (!value.empty() && value.front() == ' ') {
            value.erase(0, 1);
          }
          m_headers[name] = value;
        }
        pos = next;
      }
      m_chunked = header("transfer-encoding") == "chunked";
      if (!m_chunked) {
        const std::string length = header("content-length");
        m_length = length.empty() ? 0 : std::stoul(length);
      }
    }
    if (!m_chunked) {
      m_body += m_raw;
      m_raw.clear();
      m_done = m_body.size() >= m_length;
      return;
    }
    // Chunks: "<hex>\r\n<data>\r\n", the last one "0\r\n\r\n".
    while (!m_done) {
      const auto line_end = m_raw.find("\r\n");
      if (line_end == std::string::npos) {
        return;
      }
      const std::size_t size = std::stoul(m_raw.substr(0, line_end), nullptr, 16);
      if (m_raw.size() < line_end + 2 + size + 2) {
        return;
      }
      if (size == 0) {
        m_done = true;
        return;
      }
      m_events_text += m_raw.substr(line_end + 2, size);
      m_raw.erase(0, line_end + 2 + size + 2);
    }
  }

  std::optional<SseEvent> take_event() {
    for (;;) {
      const auto end = m_events_text.find("\n\n");
      if (end == std::string::npos) {
        return std::nullopt;
      }
      const std::string block = m_events_text.substr(0, end + 1);
      m_events_text.erase(0, end + 2);
      SseEvent e{"message", ""};
      bool has_data = false;
      std::size_t start = 0;
      while (start < block.size()) {
        const auto line_end = block.find('\n', start);
        const std::string line = block.substr(start, line_end - start);
        start = line_end + 1;
        if (line.rfind(':', 0) == 0) {
          ++m_comments;
        } else if (line.rfind("event: ", 0) == 0) {
          e.type = line.substr(7);
        } else if (line.rfind("data: ", 0) == 0) {
          e.data += (has_data ? "\n" : "") + line.substr(6);
          has_data = true;
        }
      }
      if (has_data) {
        return e;
      }
    }
  }

  int m_fd = -1;
  bool m_eof = false;
  bool m_head_done = false;
  bool m_chunked = false;
  bool m_done = false;
  std::size_t m_length = 0;
  int m_status = 0;
  std::map<std::string, std::string> m_headers;
  std::string m_raw;         // received, not parsed yet
  std::string m_events_text; // the dechunked body, events not taken yet
  std::string m_body;        // a body without chunks (an error answer)
  std::size_t m_raw_total = 0;
  std::size_t m_comments = 0;
};

} // namespace rrd::testing
