#include "fakes/local_server.hpp"

#include <arpa/inet.h>
#include <csignal>
#include <dirent.h>
#include <functional>
#include <mutex>
#include <netinet/in.h>
#include <poll.h>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <unistd.h>

namespace rrd::testing {

namespace {

constexpr auto k_start_timeout = std::chrono::seconds(10);

int socket_port(int fd, bool peer) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  auto* sa = reinterpret_cast<sockaddr*>(&addr);
  const int rc = peer ? ::getpeername(fd, sa, &len) : ::getsockname(fd, sa, &len);
  if (rc != 0) {
    return -1;
  }
  if (addr.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  }
  if (addr.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  }
  return -1;
}

// The first stream socket of this process for which `match(fd)` holds, or -1.
int find_stream_socket(const std::function<bool(int)>& match) {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) {
    return -1;
  }
  int found = -1;
  while (dirent* entry = ::readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == ::dirfd(dir)) {
      continue;
    }
    int type = 0;
    socklen_t len = sizeof type;
    if (::getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_TYPE, &type, &len) != 0 ||
        type != SOCK_STREAM) {
      continue;
    }
    if (match(static_cast<int>(fd))) {
      found = static_cast<int>(fd);
      break;
    }
  }
  ::closedir(dir);
  return found;
}

} // namespace

LocalHttpServer::LocalHttpServer(Setup setup, std::optional<TlsFiles> tls)
    : m_setup(std::move(setup)), m_tls(std::move(tls)) {}

LocalHttpServer::~LocalHttpServer() {
  stop();
}

void LocalHttpServer::start(int port) {
  if (m_server) {
    throw std::logic_error("LocalHttpServer::start: already running");
  }
  ignore_sigpipe();
  std::unique_ptr<httplib::Server> server;
  if (m_tls) {
    server =
        std::make_unique<httplib::SSLServer>(m_tls->cert_file.c_str(), m_tls->key_file.c_str());
  } else {
    server = std::make_unique<httplib::Server>();
  }
  if (!server->is_valid()) {
    throw std::runtime_error("cannot set up the TLS server with " + m_tls->cert_file);
  }
  server->new_task_queue = [] { return new httplib::ThreadPool(k_worker_threads); };
  server->set_keep_alive_timeout(k_keep_alive_timeout_s);
  // httplib writes an answer's head and body separately: without TCP_NODELAY,
  // Nagle holds the body until the client's delayed ACK, about 40 ms later.
  server->set_tcp_nodelay(true);
  server->set_keep_alive_max_count(k_keep_alive_max_requests);
  m_setup(*server);
  int bound = -1;
  if (port == 0) {
    bound = server->bind_to_any_port("127.0.0.1");
  } else if (server->bind_to_port("127.0.0.1", port)) {
    bound = port;
  }
  if (bound <= 0) {
    throw std::runtime_error("cannot listen on 127.0.0.1:" + std::to_string(port));
  }
  if (!widen_listen_backlog(bound)) {
    throw std::runtime_error("cannot widen the listen backlog on 127.0.0.1:" +
                             std::to_string(bound));
  }
  m_port = bound;
  httplib::Server* raw = server.get();
  m_thread = std::thread([raw] { raw->listen_after_bind(); });
  // stop() only works once the loop runs; wait for it.
  const auto deadline = std::chrono::steady_clock::now() + k_start_timeout;
  while (!raw->is_running() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  m_server = std::move(server);
}

void LocalHttpServer::stop() {
  if (!m_server) {
    return;
  }
  m_server->stop();
  if (m_thread.joinable()) {
    m_thread.join();
  }
  m_server.reset();
}

int connection_socket(const httplib::Request& req) {
  // httplib does not hand the socket to handlers; find the one connected
  // from req.remote_port to req.local_port. Exactly one socket in the
  // process has that pair of ports on the server side.
  return find_stream_socket([&](int fd) {
    return socket_port(fd, false) == req.local_port && socket_port(fd, true) == req.remote_port;
  });
}

bool widen_listen_backlog(int port) {
  const int fd = find_stream_socket([port](int candidate) {
    int listening = 0;
    socklen_t len = sizeof listening;
    return ::getsockopt(candidate, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == 0 &&
           listening != 0 && socket_port(candidate, false) == port;
  });
  // listen(2) again on a listening socket only changes its backlog.
  return fd >= 0 && ::listen(fd, k_listen_backlog) == 0;
}

bool peer_closed(int fd) {
  if (fd < 0) {
    return true;
  }
  pollfd p{fd, static_cast<short>(POLLIN | POLLRDHUP), 0};
  const int rc = ::poll(&p, 1, 0);
  if (rc < 0) {
    return true;
  }
  if (rc == 0) {
    return false;
  }
  if ((p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0) {
    return true;
  }
  char c = 0;
  const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0;
}

void reset_connection(int fd) {
  if (fd < 0) {
    return;
  }
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  // dup2 closes the connected socket (the last reference: with a zero
  // linger time the kernel sends RST) and puts an unconnected socket on the
  // same descriptor number, which httplib then writes to and closes.
  const int placeholder = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (placeholder < 0) {
    ::shutdown(fd, SHUT_RDWR);
    return;
  }
  ::dup2(placeholder, fd);
  ::close(placeholder);
}

void ignore_sigpipe() {
  static std::once_flag once;
  std::call_once(once, [] { std::signal(SIGPIPE, SIG_IGN); });
}

} // namespace rrd::testing
