// The HTTP API server (SPEC section 8) on `api.listen`: cpp-httplib on its
// own threads (one listener, a worker per connection being served:
// k_worker_threads always, more as needed up to k_max_worker_threads). Each
// request is routed by router.hpp; health answers come from the LoopStatus,
// GET /v1/updates streams from the UpdateHub, everything else is a command
// run on the loop through the CommandQueue, so these threads never touch the
// scheduler, the store or the dispatcher. Every answer but the event stream
// is JSON, request bodies are capped (413), and a loop that does not answer
// in time gives 503.
//
// An open /v1/updates stream holds its worker for as long as it lasts,
// waiting on its subscriber's queue (updates.hpp), never on the loop; the
// cap on subscribers leaves k_worker_threads for every other call. A client
// that stops reading blocks only its own worker, for the write timeout at
// most, and is then dropped; the hub's close() ends every stream, so that a
// stop does not wait for them.
//
// Thread-safety: start()/stop() from one controlling thread (the loop's);
// set_token() from any thread (m_token_mutex guards the token).
#pragma once

#include "readreceiptd/api/command_queue.hpp"
#include "readreceiptd/api/updates.hpp"
#include "readreceiptd/common/clock.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

namespace httplib {
class Server;
struct Request;
struct Response;
} // namespace httplib

namespace rrd::api {

inline constexpr std::size_t k_max_body_bytes = 64 * 1024;
// How long a request waits for the loop to run its command.
inline constexpr Millis k_command_timeout{5'000};
// /healthz answers 503 when the loop has not turned for this long.
inline constexpr Millis k_heartbeat_stale_after{10'000};
// Workers always running, and at most: an open /v1/updates stream holds one.
inline constexpr std::size_t k_worker_threads = 4;
inline constexpr std::size_t k_max_worker_threads = k_worker_threads + k_max_update_subscribers;
// Timeouts of a connection: reading a request, writing an answer, and how
// long an idle keep-alive connection is kept (also how long stop() may wait).
inline constexpr Millis k_read_timeout{2'000};
inline constexpr Millis k_write_timeout{2'000};
inline constexpr Millis k_keep_alive_timeout{2'000};
// How long start() waits for the accept loop to run.
inline constexpr Millis k_start_timeout{2'000};
// Refused /v1/updates streams (every place taken) are logged at most this
// often.
inline constexpr Millis k_refusal_log_interval{10'000};

// start() failed: the address cannot be bound.
class ListenError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

class Server {
public:
  // `listen` as api.listen gives it ("127.0.0.1:9465", "[::1]:0").
  // `updates` serves GET /v1/updates (nullptr: 503).
  // REQUIRES: `queue`, `status` and `updates` outlive the Server.
  Server(std::string listen, std::string token, CommandQueue& queue, const LoopStatus& status,
         UpdateHub* updates = nullptr);
  ~Server(); // stop()s
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts serving. Throws ListenError naming the address and the
  // reason ("address already in use").
  void start();
  // Stops accepting new connections without waiting; the requests being
  // served finish on their own (stop() waits for them). Closes the
  // UpdateHub: open /v1/updates streams end with "shutting down".
  void request_stop();
  // request_stop(), then waits for the requests being served and joins the
  // threads. Close the CommandQueue first, so that no request still waits
  // for the loop. (The destructor does it too, on every way out.)
  void stop();
  // The bound port (useful with port 0). REQUIRES: started.
  int port() const { return m_port; }

  // After a reload. A new token ends the open /v1/updates streams (final
  // event "token changed").
  void set_token(std::string token);

private:
  std::string token() const;
  void serve_updates(const httplib::Request& req, httplib::Response& res);
  void note_refusal();

  std::string m_listen;
  CommandQueue& m_queue;
  const LoopStatus& m_status;
  UpdateHub* m_updates;
  mutable std::mutex m_token_mutex;
  std::string m_token; // guarded by m_token_mutex
  std::unique_ptr<httplib::Server> m_server;
  std::thread m_thread;
  int m_port = 0;
  bool m_stop_requested = false;
  // note_refusal(): steady-clock ticks of the last log (0: never), and the
  // refusals since.
  std::atomic<std::chrono::steady_clock::rep> m_last_refusal_log{0};
  std::atomic<std::uint64_t> m_refused_since_log{0};
};

} // namespace rrd::api
