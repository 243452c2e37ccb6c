#include "fixed_server.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdexcept>
#include <string_view>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace rrd::bench {

namespace {

// A request head larger than this closes the connection.
constexpr std::size_t k_max_head_bytes = 64 * 1024;
constexpr std::size_t k_read_chunk = 64 * 1024;
constexpr int k_max_events = 256;
constexpr int k_backlog = 1024;

bool iequals_prefix(std::string_view line, std::string_view name) {
  if (line.size() < name.size()) {
    return false;
  }
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) {
      return false;
    }
  }
  return true;
}

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL, 0);
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

} // namespace

struct FixedServer::Connection {
  std::uint64_t id = 0;
  int fd = -1;
  std::string in;
  std::size_t parsed = 0; // bytes of `in` consumed by complete requests
  std::string out;
  std::size_t written = 0;
  bool want_write = false;
};

FixedServer::FixedServer(int port, std::string content_type, std::string body, int delay_ms)
    : m_delay(delay_ms) {
  m_answer = "HTTP/1.1 200 OK\r\nContent-Type: " + content_type +
             "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  m_listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (m_listen_fd < 0) {
    throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  }
  const int one = 1;
  ::setsockopt(m_listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(m_listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(m_listen_fd, k_backlog) != 0) {
    const int e = errno;
    ::close(m_listen_fd);
    throw std::runtime_error("cannot listen on 127.0.0.1:" + std::to_string(port) + ": " +
                             std::strerror(e));
  }
  socklen_t len = sizeof addr;
  ::getsockname(m_listen_fd, reinterpret_cast<sockaddr*>(&addr), &len);
  m_port = ntohs(addr.sin_port);
  set_nonblocking(m_listen_fd);
  m_epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr; // the listening socket
  ::epoll_ctl(m_epoll_fd, EPOLL_CTL_ADD, m_listen_fd, &ev);
}

FixedServer::~FixedServer() {
  for (auto& [id, c] : m_open) {
    ::close(c->fd);
    delete c;
  }
  if (m_epoll_fd >= 0) {
    ::close(m_epoll_fd);
  }
  if (m_listen_fd >= 0) {
    ::close(m_listen_fd);
  }
}

void FixedServer::accept_all() {
  for (;;) {
    const int fd = ::accept4(m_listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      return;
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto* c = new Connection;
    c->id = m_next_id++;
    c->fd = fd;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    ::epoll_ctl(m_epoll_fd, EPOLL_CTL_ADD, fd, &ev);
    m_open.emplace(c->id, c);
    m_max_connections = std::max(m_max_connections, ++m_connections);
  }
}

// Parses as many complete requests as `c.in` holds and queues an answer for
// each. Returns false on a request it cannot frame.
bool FixedServer::on_readable(Connection& c) {
  std::array<char, k_read_chunk> buf;
  for (;;) {
    const ssize_t n = ::read(c.fd, buf.data(), buf.size());
    if (n > 0) {
      c.in.append(buf.data(), static_cast<std::size_t>(n));
      if (static_cast<std::size_t>(n) < buf.size()) {
        break;
      }
      continue;
    }
    if (n == 0) {
      return false; // the client closed
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      break;
    }
    if (errno != EINTR) {
      return false;
    }
  }
  const std::string_view in(c.in);
  for (;;) {
    const std::size_t head_end = in.find("\r\n\r\n", c.parsed);
    if (head_end == std::string_view::npos) {
      if (in.size() - c.parsed > k_max_head_bytes) {
        return false;
      }
      break;
    }
    std::size_t content_length = 0;
    bool chunked = false;
    std::size_t line = in.find("\r\n", c.parsed) + 2; // skip the request line
    while (line < head_end) {
      const std::size_t eol = in.find("\r\n", line);
      const std::string_view h = in.substr(line, eol - line);
      if (iequals_prefix(h, "content-length:")) {
        content_length = std::strtoull(std::string(h.substr(15)).c_str(), nullptr, 10);
      } else if (iequals_prefix(h, "transfer-encoding:")) {
        chunked = h.find("chunked") != std::string_view::npos;
      }
      line = eol + 2;
    }
    std::size_t end = head_end + 4;
    if (chunked) {
      bool complete = false;
      for (;;) {
        const std::size_t eol = in.find("\r\n", end);
        if (eol == std::string_view::npos) {
          break;
        }
        const std::size_t size =
            std::strtoull(std::string(in.substr(end, eol - end)).c_str(), nullptr, 16);
        if (size == 0) {
          // Trailers (none, usually), then an empty line.
          const std::size_t trailer_end =
              in.substr(eol, 4) == "\r\n\r\n" ? eol + 4 : in.find("\r\n\r\n", eol + 2);
          if (trailer_end != std::string_view::npos) {
            end = in.substr(eol, 4) == "\r\n\r\n" ? trailer_end : trailer_end + 4;
            complete = true;
          }
          break;
        }
        if (in.size() < eol + 2 + size + 2) {
          break;
        }
        end = eol + 2 + size + 2;
      }
      if (!complete) {
        break;
      }
    } else {
      if (in.size() < end + content_length) {
        break;
      }
      end += content_length;
    }
    if (m_recorder != nullptr) {
      m_recorder(in.substr(c.parsed, end - c.parsed), m_recorder_user);
    }
    c.parsed = end;
    if (m_delay.count() > 0) {
      m_due.emplace_back(std::chrono::steady_clock::now() + m_delay, c.id);
    } else {
      c.out += m_answer;
      m_requests.fetch_add(1, std::memory_order_relaxed);
    }
  }
  if (c.parsed == c.in.size()) {
    c.in.clear();
    c.parsed = 0;
  }
  return flush(c);
}

bool FixedServer::flush(Connection& c) {
  while (c.written < c.out.size()) {
    const ssize_t n = ::write(c.fd, c.out.data() + c.written, c.out.size() - c.written);
    if (n > 0) {
      c.written += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    return false;
  }
  if (c.written == c.out.size()) {
    c.out.clear();
    c.written = 0;
  }
  const bool want = !c.out.empty();
  if (want != c.want_write) {
    c.want_write = want;
    epoll_event ev{};
    ev.events = EPOLLIN | (want ? EPOLLOUT : 0u);
    ev.data.ptr = &c;
    ::epoll_ctl(m_epoll_fd, EPOLL_CTL_MOD, c.fd, &ev);
  }
  return true;
}

void FixedServer::close_connection(Connection* c) {
  ::epoll_ctl(m_epoll_fd, EPOLL_CTL_DEL, c->fd, nullptr);
  ::close(c->fd);
  m_open.erase(c->id);
  delete c;
  --m_connections;
}

int FixedServer::send_due_answers() {
  const auto now = std::chrono::steady_clock::now();
  while (!m_due.empty() && m_due.front().first <= now) {
    const auto it = m_open.find(m_due.front().second);
    m_due.pop_front();
    if (it == m_open.end()) {
      continue; // the client went away
    }
    Connection* c = it->second;
    c->out += m_answer;
    m_requests.fetch_add(1, std::memory_order_relaxed);
    if (!flush(*c)) {
      close_connection(c);
    }
  }
  if (m_due.empty()) {
    return INT32_MAX;
  }
  const auto wait = std::chrono::ceil<std::chrono::milliseconds>(m_due.front().first - now);
  return static_cast<int>(std::max<long long>(0, wait.count()));
}

void FixedServer::run(int tick_ms, void (*on_tick)(const FixedServer&, void*), void* user) {
  std::array<epoll_event, k_max_events> events;
  const auto period = std::chrono::milliseconds(tick_ms);
  auto next_tick = std::chrono::steady_clock::now() + period;
  int wait_ms = tick_ms;
  while (!m_stop) {
    const int n = ::epoll_wait(m_epoll_fd, events.data(), k_max_events, wait_ms);
    for (int i = 0; i < n; ++i) {
      auto* c = static_cast<Connection*>(events[i].data.ptr);
      if (c == nullptr) {
        accept_all();
        continue;
      }
      bool keep = true;
      if ((events[i].events & (EPOLLERR | EPOLLHUP)) != 0 && (events[i].events & EPOLLIN) == 0) {
        keep = false;
      }
      if (keep && (events[i].events & EPOLLIN) != 0) {
        keep = on_readable(*c);
      }
      if (keep && (events[i].events & EPOLLOUT) != 0) {
        keep = flush(*c);
      }
      if (!keep) {
        close_connection(c);
      }
    }
    wait_ms = std::min(tick_ms, send_due_answers());
    if (on_tick != nullptr && std::chrono::steady_clock::now() >= next_tick) {
      next_tick += period;
      on_tick(*this, user);
    }
  }
  if (on_tick != nullptr) {
    on_tick(*this, user);
  }
}

} // namespace rrd::bench
