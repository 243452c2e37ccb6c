// FixedServer: the lightest HTTP/1.1 server that can stand in for DingTalk in
// a throughput benchmark. One thread, epoll, keep-alive, pipelining, request
// bodies with Content-Length or chunked (the official SDKs send chunked
// bodies); every request gets the same answer. It does no validation at all:
// it exists so that the client, not the server, is what is measured (wrk
// against it gives the loopback ceiling).
//
// Not thread-safe: run() blocks the calling thread until stop() (which may be
// called from any thread or a signal handler: it only sets an atomic).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>

namespace rrd::bench {

class FixedServer {
public:
  // Binds 127.0.0.1:port (0: ephemeral). Every answer is sent `delay_ms`
  // after its request has arrived (a slow DingTalk). Throws
  // std::runtime_error.
  FixedServer(int port, std::string content_type, std::string body, int delay_ms = 0);
  ~FixedServer();
  FixedServer(const FixedServer&) = delete;
  FixedServer& operator=(const FixedServer&) = delete;

  // Called on the serving thread with each whole request (head and body)
  // as it is answered; set before run().
  using Recorder = void (*)(std::string_view request, void* user);
  void set_recorder(Recorder recorder, void* user) {
    m_recorder = recorder;
    m_recorder_user = user;
  }

  int port() const { return m_port; }
  // Serves until stop(). About every `tick_ms`, and once at the end, calls
  // on_tick.
  void run(int tick_ms, void (*on_tick)(const FixedServer&, void*), void* user);
  void stop() { m_stop = true; }

  std::uint64_t requests() const { return m_requests.load(std::memory_order_relaxed); }
  int max_connections() const { return m_max_connections; }

private:
  struct Connection;
  void accept_all();
  // Returns false when the connection must be closed.
  bool on_readable(Connection& c);
  bool flush(Connection& c);
  void close_connection(Connection* c);
  // Sends the delayed answers that are due; returns the ms until the next.
  int send_due_answers();

  int m_listen_fd = -1;
  int m_epoll_fd = -1;
  int m_port = 0;
  std::string m_answer; // the whole response, status line to body
  std::atomic<bool> m_stop{false};
  std::atomic<std::uint64_t> m_requests{0};
  std::chrono::milliseconds m_delay{0};
  Recorder m_recorder = nullptr;
  void* m_recorder_user = nullptr;
  std::unordered_map<std::uint64_t, Connection*> m_open; // by id; owned
  std::uint64_t m_next_id = 1;
  // Delayed answers, in arrival order (the delay is the same for all).
  std::deque<std::pair<std::chrono::steady_clock::time_point, std::uint64_t>> m_due;
  int m_connections = 0;
  int m_max_connections = 0;
};

} // namespace rrd::bench
