// LocalHttpServer: a cpp-httplib server on 127.0.0.1 served by its own thread,
// the base of the fake DingTalk and the webhook sink; plain HTTP, or HTTPS
// with a certificate and key from PEM files. Plus the raw-socket
// helpers the fakes use to misbehave: find the connection a request came on,
// notice that the client went away, reset the connection without an answer.
// start()/stop() are for one controlling thread; handlers run on the server's
// worker threads.
#pragma once

#include <chrono>
#include <functional>
#include <httplib.h>
#include <memory>
#include <optional>
#include <string>
#include <thread>

namespace rrd::testing {

// A certificate chain and its private key, PEM files (see TestCertificate).
struct TlsFiles {
  std::string cert_file;
  std::string key_file;
};

class LocalHttpServer {
public:
  using Setup = std::function<void(httplib::Server&)>; // registers the routes

  // Worker threads: each open connection holds one (thread per connection).
  static constexpr std::size_t k_worker_threads = 64;
  // Short idle keep-alive, so that stop() returns promptly: httplib waits
  // for an idle connection's next request up to this long before it exits.
  static constexpr time_t k_keep_alive_timeout_s = 1;
  static constexpr std::size_t k_keep_alive_max_requests = 1000;

  // With `tls`, serves HTTPS (httplib::SSLServer) instead of HTTP.
  explicit LocalHttpServer(Setup setup, std::optional<TlsFiles> tls = std::nullopt);
  ~LocalHttpServer();
  LocalHttpServer(const LocalHttpServer&) = delete;
  LocalHttpServer& operator=(const LocalHttpServer&) = delete;

  // Binds 127.0.0.1:port (0: an ephemeral port) and serves on a thread.
  // Throws std::runtime_error when the port cannot be bound.
  // REQUIRES: not running.
  void start(int port = 0);
  // Stops listening and joins the thread. Handlers must return by
  // themselves: the owner tells them to (see FakeDingTalk::m_stopping).
  void stop();
  bool running() const { return m_server != nullptr; }
  int port() const { return m_port; }
  bool tls() const { return m_tls.has_value(); }
  std::string scheme() const { return m_tls ? "https" : "http"; }

private:
  Setup m_setup;
  std::optional<TlsFiles> m_tls;
  std::unique_ptr<httplib::Server> m_server;
  std::thread m_thread;
  int m_port = 0;
};

// The server-side socket of the connection `req` arrived on, or -1.
int connection_socket(const httplib::Request& req);
// The listen backlog of the test servers: what ordinary servers use
// (nginx's), where httplib's library build listens with 5. With 5, a client
// that opens dozens of connections at once (the daemon opens up to 64 to one
// host) has the overflow's handshakes dropped, and those requests wait for
// TCP to retry them, seconds later, when the server is slow to accept.
inline constexpr int k_listen_backlog = 511;
// Sets the backlog of this process's socket listening on `port` to
// k_listen_backlog; false when there is no such socket.
bool widen_listen_backlog(int port);
// True when the peer of `fd` has closed its side (or the socket failed).
bool peer_closed(int fd);
// Aborts the connection on `fd` with a TCP RST and leaves a dead, harmless
// socket in its place, so that httplib's own later writes and close() fail
// quietly instead of touching a reused descriptor.
void reset_connection(int fd);

// Process-wide: a write to a connection the client has closed must not kill
// the process. Called by LocalHttpServer::start().
void ignore_sigpipe();

} // namespace rrd::testing
