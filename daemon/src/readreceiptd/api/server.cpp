#include "readreceiptd/api/server.hpp"

#include "readreceiptd/api/sse.hpp"
#include "readreceiptd/config/config.hpp"

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <httplib.h>
#include <list>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

namespace rrd::api {

namespace {

constexpr const char* k_json = "application/json";
constexpr const char* k_event_stream = "text/event-stream";

time_t whole_seconds(Millis m) {
  return static_cast<time_t>(m.count() / 1000);
}
time_t micros_part(Millis m) {
  return static_cast<time_t>((m.count() % 1000) * 1000);
}

// The text of an error that httplib answers by itself (the request never
// reached a handler).
std::string status_text(int status) {
  switch (status) {
  case 400:
    return "malformed request";
  case 404:
    return "no such resource";
  case 413:
    return "request body too large (at most " + std::to_string(k_max_body_bytes) + " bytes)";
  case 414:
    return "request target too long";
  case 500:
    return "internal error";
  default:
    return "HTTP " + std::to_string(status);
  }
}

// SO_REUSEADDR only. httplib's default adds SO_REUSEPORT, which would let a
// second daemon bind the same port silently instead of failing.
void socket_options(socket_t sock) {
  int yes = 1;
  setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

// httplib's task queue: a worker thread per connection being served, as
// httplib's ThreadPool, but `min` of them from the start and more as needed,
// up to `max` (an open /v1/updates stream holds its worker while it lasts);
// a worker once started stays until shutdown(). Beyond `max`, connections
// wait for a worker.
class WorkerPool final : public httplib::TaskQueue {
public:
  WorkerPool(std::size_t min, std::size_t max) : m_max(max) {
    const std::lock_guard lock(m_mutex);
    for (std::size_t i = 0; i < min; ++i) {
      m_threads.emplace_back([this] { work(); });
    }
  }
  ~WorkerPool() override = default; // httplib calls shutdown() first
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void enqueue(std::function<void()> fn) override {
    {
      const std::lock_guard lock(m_mutex);
      m_jobs.push_back(std::move(fn));
      // Each queued job wants a worker waiting for it.
      if (m_jobs.size() > m_idle && m_threads.size() < m_max) {
        m_threads.emplace_back([this] { work(); });
      }
    }
    m_wake.notify_one();
  }

  void shutdown() override {
    {
      const std::lock_guard lock(m_mutex);
      m_shutdown = true;
    }
    m_wake.notify_all();
    // No thread is added once m_shutdown is set: httplib stops enqueueing
    // before it calls this.
    for (auto& t : m_threads) {
      t.join();
    }
  }

private:
  void work() {
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock lock(m_mutex);
        ++m_idle;
        m_wake.wait(lock, [this] { return !m_jobs.empty() || m_shutdown; });
        --m_idle;
        if (m_jobs.empty()) {
          return; // shutting down
        }
        fn = std::move(m_jobs.front());
        m_jobs.pop_front();
      }
      fn();
    }
  }

  const std::size_t m_max;
  std::mutex m_mutex;
  std::condition_variable m_wake;
  std::list<std::function<void()>> m_jobs; // guarded by m_mutex
  std::vector<std::thread> m_threads;      // guarded by m_mutex
  std::size_t m_idle = 0;                  // guarded by m_mutex: workers waiting
  bool m_shutdown = false;                 // guarded by m_mutex
};

void set_reply(httplib::Response& res, const Reply& reply) {
  res.status = reply.status;
  // Every answer is what its Content-Type says, never sniffed as more.
  res.set_header("X-Content-Type-Options", "nosniff");
  for (const auto& [name, value] : reply.headers) {
    if (name != "X-Content-Type-Options") {
      res.set_header(name, value);
    }
  }
  if (reply.status != 204 && reply.status != 304) {
    res.set_content(reply.body, reply.content_type);
  }
}

} // namespace

Server::Server(std::string listen, std::string token, CommandQueue& queue, const LoopStatus& status,
               UpdateHub* updates)
    : m_listen(std::move(listen)), m_queue(queue), m_status(status), m_updates(updates),
      m_token(std::move(token)) {}

Server::~Server() {
  stop();
}

void Server::set_token(std::string token) {
  bool changed = false;
  {
    const std::lock_guard lock(m_token_mutex);
    changed = token != m_token;
    m_token = std::move(token);
  }
  // A stream opened with the old token does not outlive it.
  if (changed && m_updates != nullptr) {
    m_updates->end_all(k_end_token_changed);
  }
}

std::string Server::token() const {
  std::lock_guard lock(m_token_mutex);
  return m_token;
}

void Server::start() {
  const auto address = config::parse_listen_address(m_listen);
  if (!address) {
    throw ListenError("api.listen: \"" + m_listen + "\" is not a listen address");
  }
  auto server = std::make_unique<httplib::Server>();
  server->new_task_queue = [] { return new WorkerPool(k_worker_threads, k_max_worker_threads); };
  server->set_socket_options(socket_options);
  server->set_payload_max_length(k_max_body_bytes);
  server->set_read_timeout(whole_seconds(k_read_timeout), micros_part(k_read_timeout));
  server->set_write_timeout(whole_seconds(k_write_timeout), micros_part(k_write_timeout));
  server->set_keep_alive_timeout(whole_seconds(k_keep_alive_timeout));

  auto handler = [this](const httplib::Request& req, httplib::Response& res) {
    Request request;
    // A HEAD is answered as a GET, without the body (httplib drops it).
    request.method = req.method == "HEAD" ? "GET" : req.method;
    request.target = req.target;
    request.authorization = req.get_header_value("Authorization");
    request.content_type = req.get_header_value("Content-Type");
    request.if_none_match = req.get_header_value("If-None-Match");
    request.body = req.body;
    const Health health{m_status.alive(std::chrono::steady_clock::now(), k_heartbeat_stale_after),
                        m_status.readiness()};
    Routed routed = route(request, token(), health);
    if (routed.updates) {
      serve_updates(req, res);
      return;
    }
    Reply reply;
    if (routed.reply) {
      reply = std::move(*routed.reply);
    } else {
      auto answer = m_queue.call(std::move(routed.command), k_command_timeout);
      if (answer) {
        reply = std::move(*answer);
      } else if (answer.error() == CallFailure::timeout) {
        spdlog::warn("API: {} {} got no answer from the loop within {} ms", req.method, req.path,
                     k_command_timeout.count());
        reply = error_reply(503, "the daemon did not answer in time; try again");
      } else {
        reply = error_reply(503, "the daemon is shutting down");
      }
    }
    set_reply(res, reply);
    spdlog::debug("API: {} {} -> {}", req.method, req.path, reply.status);
  };
  // A request without Content-Length or Transfer-Encoding has no body (RFC
  // 9112 section 6.3), but this httplib (0.11, Debian 12) reads the body of
  // every POST, PUT, PATCH and DELETE until the client closes the
  // connection: `curl -X POST` without -d waited for the read timeout and
  // got 400. Such requests are answered here, before httplib reads, with an
  // empty body.
  server->set_pre_routing_handler([handler](const httplib::Request& req, httplib::Response& res) {
    if (req.has_header("Content-Length") || req.has_header("Transfer-Encoding")) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    handler(req, res);
    return httplib::Server::HandlerResponse::Handled;
  });
  const std::string any = ".*";
  server->Get(any, handler);
  server->Post(any, handler);
  server->Put(any, handler);
  server->Patch(any, handler);
  server->Delete(any, handler);
  server->Options(any, handler);
  // Errors httplib answers itself (413, 400, ...) get a JSON body too.
  server->set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      res.set_content(error_body(status_text(res.status)), k_json);
    }
  });
  server->set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, const std::exception_ptr&) {
        res.status = 500;
        res.set_content(error_body(status_text(500)), k_json);
      });

  errno = 0;
  int port = 0;
  if (address->port == 0) {
    port = server->bind_to_any_port(address->host);
  } else {
    port = server->bind_to_port(address->host, address->port) ? address->port : -1;
  }
  if (port < 0) {
    const int e = errno;
    throw ListenError("cannot listen on api.listen " + m_listen + ": " +
                      (e != 0 ? std::strerror(e) : "cannot bind the address"));
  }
  m_port = port;
  m_server = std::move(server);
  m_thread = std::thread([s = m_server.get()] { s->listen_after_bind(); });
  // httplib's stop() does nothing before the accept loop runs, which would
  // leave stop() waiting forever: wait until it does.
  const auto deadline = std::chrono::steady_clock::now() + k_start_timeout;
  while (!m_server->is_running() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(Millis{1});
  }
  spdlog::info("HTTP API listening on {} (port {})", m_listen, m_port);
}

// Pages that keep trying while every place is taken are logged once per
// k_refusal_log_interval, with how many were refused.
void Server::note_refusal() {
  using Steady = std::chrono::steady_clock;
  const auto now = Steady::now().time_since_epoch().count();
  const auto interval =
      std::chrono::duration_cast<Steady::duration>(k_refusal_log_interval).count();
  const auto refused = m_refused_since_log.fetch_add(1) + 1;
  auto last = m_last_refusal_log.load();
  if ((last == 0 || now - last >= interval) &&
      m_last_refusal_log.compare_exchange_strong(last, now)) {
    m_refused_since_log -= refused;
    spdlog::warn("API: GET /v1/updates refused {} stream(s): {} are open, the most allowed",
                 refused, m_updates->limits().max_subscribers);
  }
}

// GET /v1/updates: an event stream fed by the subscriber's queue. The
// worker waits on that queue (never on the loop), writes what comes, a
// comment after k_update_keep_alive of silence, and ends after the final
// event (the hub dropped or closed it) or when a write fails. A write that
// failed only after the write timeout is a client that stopped reading: a
// drop. One that failed at once is a client that went away.
void Server::serve_updates(const httplib::Request& req, httplib::Response& res) {
  if (m_updates == nullptr) {
    set_reply(res, error_reply(503, "live updates are not available"));
    return;
  }
  if (req.method == "HEAD") {
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_content("", k_event_stream);
    return;
  }
  auto subscribed = m_updates->subscribe();
  if (!subscribed) {
    Reply refused = subscribed.error() == UpdateHub::Refusal::full
                        ? error_reply(503, "too many open /v1/updates streams (at most " +
                                               std::to_string(m_updates->limits().max_subscribers) +
                                               "); close one, or try again later")
                        : error_reply(503, "the daemon is shutting down");
    refused.headers.emplace_back("Retry-After", "5");
    if (subscribed.error() == UpdateHub::Refusal::full) {
      note_refusal();
    }
    set_reply(res, refused);
    return;
  }
  spdlog::debug("API: GET /v1/updates: a stream opened ({} open)", m_updates->subscribers());
  const std::shared_ptr<UpdateSubscriber> subscriber(std::move(*subscribed));
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  // Proxies that buffer answers (nginx) pass each event on at once.
  res.set_header("X-Accel-Buffering", "no");
  using Steady = std::chrono::steady_clock;
  res.set_chunked_content_provider(
      k_event_stream,
      [subscriber, last_write = Steady::now()](std::size_t, httplib::DataSink& sink) mutable {
        const auto quiet = std::chrono::duration_cast<Millis>(Steady::now() - last_write);
        auto next = subscriber->next(std::max(Millis{0}, k_update_keep_alive - quiet));
        std::string bytes = std::move(next.bytes);
        if (bytes.empty() && !next.end) {
          if (Steady::now() - last_write < k_update_keep_alive) {
            return true; // woken early: httplib calls again
          }
          bytes = sse_comment("keep-alive");
        }
        const auto started = Steady::now();
        if (!bytes.empty() && !sink.write(bytes.data(), bytes.size())) {
          if (Steady::now() - started >= k_write_timeout) {
            subscriber->write_timed_out();
          }
          return false;
        }
        last_write = Steady::now();
        if (next.end) {
          sink.done();
        }
        return true;
      });
}

void Server::request_stop() {
  // Once only: httplib's stop() must not run twice on a running server.
  if (m_server && !m_stop_requested) {
    m_stop_requested = true;
    m_server->stop();
  }
  // Open streams end (their final event says why), so that their workers
  // are free to be joined; later ones are refused.
  if (m_updates != nullptr) {
    m_updates->close();
  }
}

void Server::stop() {
  if (!m_server) {
    return;
  }
  request_stop();
  if (m_thread.joinable()) {
    m_thread.join();
  }
  m_server.reset();
}

} // namespace rrd::api
