// Tests of the engines against in-process servers on 127.0.0.1: cpp-httplib
// for well-behaved HTTP, raw sockets for servers that misbehave. Every test
// of the Engine contract runs twice: on the libcurl engine, and on
// make_engine()'s own HTTP/1.1 client (requests marked hot). Plus what only
// make_engine() does (a second try on a connection the server closed,
// proxies), and the pure helpers (Retry-After, failure names, header
// look-up).
#include "fakes/local_server.hpp"
#include "fakes/scoped_env.hpp"
#include "fakes/test_certificate.hpp"
#include "readreceiptd/http/http_engine.hpp"
#include "readreceiptd/http/owned_fd.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <doctest/doctest.h>
#include <functional>
#include <httplib.h>
#include <map>
#include <memory>
#include <mutex>
#include <netinet/in.h>
#include <optional>
#include <poll.h>
#include <set>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;
using rrd::Millis;
using rrd::TimePoint;
namespace http = rrd::http;

namespace {

using SteadyClock = std::chrono::steady_clock;

// How long a test waits for something that should happen at once. Generous:
// it only bounds a failing test.
constexpr SteadyClock::duration k_patience = 20s;
// What "promptly" means in assertions about timeouts and wake-ups.
constexpr SteadyClock::duration k_prompt = 5s;
// The small timeouts the tests provoke.
constexpr Millis k_short_timeout{300};
// How often the helper loops look at their condition.
constexpr Millis k_loop_step{50};

// Runs the engine until `done()` holds or k_patience passes.
bool run_until(http::Engine& engine, const std::function<bool()>& done) {
  const auto deadline = SteadyClock::now() + k_patience;
  while (!done() && SteadyClock::now() < deadline) {
    engine.run_once(k_loop_step);
  }
  return done();
}

// One request, start to finish.
http::Response fetch(http::Engine& engine, http::Request request) {
  std::optional<http::Response> out;
  engine.submit(std::move(request), [&](http::Response r) { out = std::move(r); });
  REQUIRE(run_until(engine, [&] { return out.has_value(); }));
  return std::move(*out);
}

http::Request get(std::string url) {
  http::Request r;
  r.method = "GET";
  r.url = std::move(url);
  return r;
}

using Fd = rrd::http::detail::OwnedFd;

sockaddr_in loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

// A TCP socket bound to 127.0.0.1 on an ephemeral port.
Fd bound_socket(int& port) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(fd.get() >= 0);
  sockaddr_in addr = loopback(0);
  REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  port = ntohs(addr.sin_port);
  return fd;
}

std::string local_url(int port, const std::string& path = "/", const std::string& scheme = "http",
                      const std::string& host = "127.0.0.1") {
  return scheme + "://" + host + ":" + std::to_string(port) + path;
}

void send_all(int fd, const std::string& data) {
  std::size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      return;
    }
    sent += static_cast<std::size_t>(n);
  }
}

// Reads until the end of a request head (or the peer goes, or k_patience).
std::string read_request_head(int fd) {
  std::string head;
  const auto deadline = SteadyClock::now() + k_patience;
  while (head.find("\r\n\r\n") == std::string::npos && SteadyClock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(k_loop_step.count())) <= 0) {
      continue;
    }
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      break;
    }
    head.append(buf, static_cast<std::size_t>(n));
  }
  return head;
}

// A listening socket that misbehaves on purpose. Without a handler it never
// accepts (the kernel still completes handshakes into the backlog); with one,
// it accepts on its own thread and hands each connection to the handler,
// closing it when the handler returns.
class RawServer {
public:
  using Handler = std::function<void(int fd)>;

  explicit RawServer(int backlog, Handler handler = nullptr) : m_listener(bound_socket(m_port)) {
    REQUIRE(::listen(m_listener.get(), backlog) == 0);
    if (handler) {
      m_thread = std::thread([this, h = std::move(handler)] { accept_loop(h); });
    }
  }
  RawServer(const RawServer&) = delete;
  RawServer& operator=(const RawServer&) = delete;
  ~RawServer() {
    m_stop = true;
    if (m_thread.joinable()) {
      m_thread.join();
    }
  }

  int port() const { return m_port; }
  std::string url(const std::string& path = "/") const { return local_url(m_port, path); }

private:
  void accept_loop(const Handler& handler) {
    while (!m_stop) {
      pollfd p{m_listener.get(), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(k_loop_step.count())) <= 0) {
        continue;
      }
      Fd conn(::accept4(m_listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (conn.get() >= 0) {
        handler(conn.get());
      }
    }
  }

  int m_port = 0;
  Fd m_listener;
  std::atomic<bool> m_stop{false};
  std::thread m_thread;
};

// A cpp-httplib server on its own thread. Register routes through server()
// before start().
class HttpServer {
public:
  explicit HttpServer(std::unique_ptr<httplib::Server> server = std::make_unique<httplib::Server>())
      : m_server(std::move(server)) {
    // More workers than the engine opens connections to one host, so that
    // every kept-alive connection has a thread.
    m_server->new_task_queue = [] { return new httplib::ThreadPool(k_server_threads); };
    m_server->set_keep_alive_max_count(k_keep_alive_requests);
  }
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  ~HttpServer() {
    if (m_thread.joinable()) {
      m_server->stop();
      m_thread.join();
    }
  }

  httplib::Server& server() { return *m_server; }

  void start() {
    REQUIRE(m_server->is_valid());
    m_port = m_server->bind_to_any_port("127.0.0.1");
    REQUIRE(m_port > 0);
    REQUIRE(rrd::testing::widen_listen_backlog(m_port));
    m_thread = std::thread([this] { m_server->listen_after_bind(); });
    const auto deadline = SteadyClock::now() + k_patience;
    while (!m_server->is_running() && SteadyClock::now() < deadline) {
      std::this_thread::yield();
    }
    REQUIRE(m_server->is_running());
  }

  int port() const { return m_port; }
  std::string url(const std::string& path = "/", const std::string& scheme = "http") const {
    return local_url(m_port, path, scheme);
  }

private:
  // httplib serves each connection on a thread: more threads than the
  // engine's 64 connections per host, so that none waits for one.
  static constexpr std::size_t k_server_threads = 80;
  static constexpr std::size_t k_keep_alive_requests = 1000;

  std::unique_ptr<httplib::Server> m_server;
  int m_port = 0;
  std::thread m_thread;
};

using rrd::testing::TestCertificate;

// make_engine() with every request marked hot: its own client carries them.
class HotRequests final : public http::Engine {
public:
  explicit HotRequests(std::unique_ptr<http::Engine> inner) : m_inner(std::move(inner)) {}
  void submit(http::Request request, http::Callback done) override {
    request.hot = true;
    m_inner->submit(std::move(request), std::move(done));
  }
  void run_once(Millis max_wait) override { m_inner->run_once(max_wait); }
  void wakeup() override { m_inner->wakeup(); }
  std::size_t in_flight() const override { return m_inner->in_flight(); }

private:
  std::unique_ptr<http::Engine> m_inner;
};

// Answers GET / with "ok" and records the client port of each request (the
// same port: the same connection) in `ports`, under `mutex`.
void serve_ok_recording_ports(HttpServer& server, std::mutex& mutex, std::vector<int>& ports) {
  server.server().Get("/", [&mutex, &ports](const httplib::Request& req, httplib::Response& res) {
    const std::lock_guard lock(mutex);
    ports.push_back(req.remote_port);
    res.set_content("ok", "text/plain");
  });
}

struct EngineKind {
  const char* name;
  std::unique_ptr<http::Engine> (*make)();
};
const std::array<EngineKind, 2> k_engines{{
    {"libcurl engine", [] { return http::make_curl_engine(); }},
    {"direct HTTP/1.1 client",
     []() -> std::unique_ptr<http::Engine> {
       return std::make_unique<HotRequests>(http::make_engine(http::Proxies::none));
     }},
}};

// The engine a contract test runs on: the test runs once per engine, as a
// subcase. (Tests with subcases of their own loop over k_engines instead:
// doctest runs sibling subcases one at a time.)
std::unique_ptr<http::Engine> engine_under_test() {
  std::unique_ptr<http::Engine> engine;
  for (const EngineKind& kind : k_engines) {
    SUBCASE(kind.name) {
      engine = kind.make();
    }
  }
  return engine;
}

} // namespace

TEST_CASE("a POST round trip carries method, path, headers and body both ways") {
  struct Seen {
    std::string method, path, test_header, content_type, body;
    bool expect_sent = true;
  };
  std::mutex mutex;
  Seen seen;
  HttpServer server;
  server.server().Post("/echo", [&](const httplib::Request& req, httplib::Response& res) {
    {
      std::lock_guard lock(mutex);
      seen = Seen{req.method,
                  req.path,
                  req.get_header_value("X-Test"),
                  req.get_header_value("Content-Type"),
                  req.body,
                  req.has_header("Expect")};
    }
    res.status = 201;
    res.set_header("X-Reply", "yes");
    res.set_content("got " + std::to_string(req.body.size()), "text/plain");
  });
  server.start();
  const auto engine = engine_under_test();

  http::Request request;
  request.url = server.url("/echo");
  request.headers = {{"Content-Type", "application/json"}, {"X-Test", "abc"}};
  // Large enough that libcurl would ask for 100-continue by default.
  request.body = "{\"data\":\"" + std::string(2 * 1024 * 1024, 'z') + "\"}";
  const auto response = fetch(*engine, request);

  CHECK(response.failure == http::Failure::none);
  CHECK(response.error.empty());
  CHECK(response.status == 201);
  CHECK(response.body == "got " + std::to_string(request.body.size()));
  CHECK(response.header("x-reply") == "yes");
  CHECK(response.header("content-type") == "text/plain");
  for (const auto& [name, value] : response.headers) {
    CHECK(std::none_of(name.begin(), name.end(), [](char c) { return c >= 'A' && c <= 'Z'; }));
  }
  std::lock_guard lock(mutex);
  CHECK(seen.method == "POST");
  CHECK(seen.path == "/echo");
  CHECK(seen.test_header == "abc");
  CHECK(seen.content_type == "application/json");
  CHECK(seen.body == request.body);
  CHECK_FALSE(seen.expect_sent);
}

TEST_CASE("a GET sends no body and carries the query string") {
  std::mutex mutex;
  std::string method, id, body;
  HttpServer server;
  server.server().Get("/items", [&](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard lock(mutex);
    method = req.method;
    id = req.get_param_value("id");
    body = req.body;
    res.set_content("item", "text/plain");
  });
  server.start();
  const auto engine = engine_under_test();

  const auto response = fetch(*engine, get(server.url("/items?id=7")));
  CHECK(response.failure == http::Failure::none);
  CHECK(response.status == 200);
  CHECK(response.body == "item");
  std::lock_guard lock(mutex);
  CHECK(method == "GET");
  CHECK(id == "7");
  CHECK(body.empty());
}

TEST_CASE("error statuses are answers, not failures, and redirects are not followed") {
  std::atomic<int> elsewhere_hits{0};
  HttpServer server;
  server.server().Get("/missing", [](const httplib::Request&, httplib::Response& res) {
    res.status = 404;
    res.set_content("{\"code\":\"nope\"}", "application/json");
  });
  server.server().Get("/busy", [](const httplib::Request&, httplib::Response& res) {
    res.status = 503;
    res.set_header("Retry-After", "7");
    res.set_content("later", "text/plain");
  });
  server.server().Get("/moved", [](const httplib::Request&, httplib::Response& res) {
    res.set_redirect("/elsewhere");
  });
  server.server().Get("/elsewhere", [&](const httplib::Request&, httplib::Response& res) {
    ++elsewhere_hits;
    res.set_content("here", "text/plain");
  });
  server.start();
  const auto engine = engine_under_test();

  const auto missing = fetch(*engine, get(server.url("/missing")));
  CHECK(missing.failure == http::Failure::none);
  CHECK(missing.status == 404);
  CHECK(missing.body == "{\"code\":\"nope\"}");

  const auto busy = fetch(*engine, get(server.url("/busy")));
  CHECK(busy.failure == http::Failure::none);
  CHECK(busy.status == 503);
  CHECK(busy.header("retry-after") == "7");
  CHECK(busy.body == "later");

  const auto moved = fetch(*engine, get(server.url("/moved")));
  CHECK(moved.failure == http::Failure::none);
  CHECK(moved.status == 302);
  CHECK(moved.header("location") == "/elsewhere");
  CHECK(elsewhere_hits == 0);
}

TEST_CASE("100 requests in flight at once all complete over at most 64 reused connections") {
  constexpr int k_requests = 100;
  std::mutex mutex;
  std::set<int> client_ports;
  HttpServer server;
  server.server().Get("/n", [&](const httplib::Request& req, httplib::Response& res) {
    {
      std::lock_guard lock(mutex);
      client_ports.insert(req.remote_port);
    }
    res.set_content(req.get_param_value("i"), "text/plain");
  });
  server.start();
  const auto engine = engine_under_test();

  std::map<int, http::Response> responses;
  for (int i = 0; i < k_requests; ++i) {
    engine->submit(get(server.url("/n?i=" + std::to_string(i))),
                   [&responses, i](http::Response r) { responses.emplace(i, std::move(r)); });
  }
  CHECK(engine->in_flight() == k_requests);
  REQUIRE(run_until(*engine, [&] { return responses.size() == k_requests; }));
  CHECK(engine->in_flight() == 0);

  for (const auto& entry : responses) {
    const int i = entry.first;
    const http::Response& r = entry.second;
    CAPTURE(i);
    CHECK(r.failure == http::Failure::none);
    CHECK(r.status == 200);
    CHECK(r.body == std::to_string(i));
  }
  std::lock_guard lock(mutex);
  // The engine's connections per host (k_max_connections_per_host).
  CHECK(client_ports.size() <= 64);
}

TEST_CASE("sequential requests to one host reuse one connection") {
  std::mutex mutex;
  std::vector<int> client_ports;
  HttpServer server;
  serve_ok_recording_ports(server, mutex, client_ports);
  server.start();
  const auto engine = engine_under_test();

  for (int i = 0; i < 3; ++i) {
    CHECK(fetch(*engine, get(server.url())).status == 200);
  }
  std::lock_guard lock(mutex);
  REQUIRE(client_ports.size() == 3);
  CHECK(client_ports[0] == client_ports[1]);
  CHECK(client_ports[1] == client_ports[2]);
}

TEST_CASE("an idle connection the server closes is replaced, and the engine does not spin on it") {
  std::mutex mutex;
  std::vector<int> client_ports;
  HttpServer server;
  server.server().set_keep_alive_timeout(1); // closes an idle connection after 1 s
  serve_ok_recording_ports(server, mutex, client_ports);
  server.start();
  const auto engine = engine_under_test();
  CHECK(fetch(*engine, get(server.url())).status == 200);

  // The server closes the idle connection meanwhile; its socket turns
  // readable (end of file) while no transfer waits for it. Each run_once
  // must still wait its max_wait, not return at once again and again.
  constexpr Millis k_step{100};
  int turns = 0;
  const auto until = SteadyClock::now() + 2500ms;
  while (SteadyClock::now() < until) {
    engine->run_once(k_step);
    ++turns;
  }
  CHECK(turns <= 2500 / k_step.count() + 5);

  CHECK(fetch(*engine, get(server.url())).status == 200);
  std::lock_guard lock(mutex);
  REQUIRE(client_ports.size() == 2);
  CHECK(client_ports[0] != client_ports[1]);
}

TEST_CASE("a port with nothing listening is a fast network failure") {
  int port = 0;
  const Fd reserved = bound_socket(port); // bound, never listening: connections are refused
  const auto engine = engine_under_test();

  auto request = get(local_url(port));
  request.connect_timeout = 10s;
  request.total_timeout = 20s;
  const auto response = fetch(*engine, request);
  CHECK(response.failure == http::Failure::network);
  CHECK(response.status == 0);
  CHECK_FALSE(response.error.empty());
  CHECK(response.duration < k_prompt);
}

TEST_CASE("a server whose accept queue is full gives a connect timeout") {
  // With a backlog of 0 the kernel queues one connection and then drops
  // further SYNs, so the engine's connect never completes.
  const RawServer server(0);
  std::vector<Fd> fillers;
  for (int i = 0; i < 2; ++i) {
    Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    REQUIRE(fd.get() >= 0);
    sockaddr_in addr = loopback(server.port());
    ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    fillers.push_back(std::move(fd));
  }
  const auto engine = engine_under_test();

  auto request = get(server.url());
  request.connect_timeout = k_short_timeout;
  request.total_timeout = 20s;
  const auto response = fetch(*engine, request);
  CHECK(response.failure == http::Failure::timeout);
  CHECK(response.status == 0);
  CHECK_FALSE(response.error.empty());
  CHECK(response.duration >= k_short_timeout - 50ms);
  CHECK(response.duration < k_prompt);
}

TEST_CASE("a server that accepts and never answers gives a total timeout") {
  const RawServer server(16); // handshakes complete in the backlog; nobody reads
  const auto engine = engine_under_test();

  http::Request request;
  request.url = server.url("/slow");
  request.body = "{}";
  request.connect_timeout = 10s;
  request.total_timeout = k_short_timeout;
  const auto response = fetch(*engine, request);
  CHECK(response.failure == http::Failure::timeout);
  CHECK(response.status == 0);
  CHECK(response.body.empty());
  CHECK(response.duration >= k_short_timeout - 50ms);
  CHECK(response.duration < k_prompt);
}

TEST_CASE("an endless streamed body is cut off at the cap") {
  constexpr std::size_t k_cap = 64 * 1024;
  std::atomic<bool> stop{false};
  HttpServer server;
  server.server().Get("/endless", [&](const httplib::Request&, httplib::Response& res) {
    // Not a type httplib compresses: libcurl asks for gzip, and 64 KiB of
    // 'x' would then take httplib seconds of deflating to send.
    res.set_chunked_content_provider("application/octet-stream",
                                     [&](std::size_t, httplib::DataSink& sink) {
                                       static const std::string chunk(16 * 1024, 'x');
                                       return !stop && sink.write(chunk.data(), chunk.size());
                                     });
  });
  server.start();
  const auto engine = engine_under_test();

  auto request = get(server.url("/endless"));
  request.max_response_bytes = k_cap;
  request.total_timeout = 20s;
  const auto response = fetch(*engine, request);
  stop = true;
  // Without the cap the body would grow until the total timeout.
  CHECK(response.failure == http::Failure::too_large);
  CHECK(response.status == 0);
  CHECK(response.body.size() <= k_cap);
  CHECK_FALSE(response.error.empty());
  CHECK(response.duration < k_prompt);
}

TEST_CASE("the size cap is inclusive and also applies to announced lengths") {
  constexpr std::size_t k_cap = 1000;
  HttpServer server;
  server.server().Get("/size", [](const httplib::Request& req, httplib::Response& res) {
    res.set_content(std::string(std::stoul(req.get_param_value("n")), 'a'), "text/plain");
  });
  server.start();
  const auto engine = engine_under_test();
  const auto fetch_size = [&](std::size_t n) {
    auto request = get(server.url("/size?n=" + std::to_string(n)));
    request.max_response_bytes = k_cap;
    return fetch(*engine, request);
  };

  const auto at_cap = fetch_size(k_cap);
  CHECK(at_cap.failure == http::Failure::none);
  CHECK(at_cap.body.size() == k_cap);

  const auto over = fetch_size(k_cap + 1);
  CHECK(over.failure == http::Failure::too_large);
  CHECK(over.body.empty());

  const auto far_over = fetch_size(100 * k_cap);
  CHECK(far_over.failure == http::Failure::too_large);

  // The engine still works after cutting transfers off.
  CHECK(fetch_size(10).failure == http::Failure::none);
}

TEST_CASE("a server that breaks the connection is a network failure") {
  std::function<void(int)> behaviour;
  SUBCASE("reset after reading the request") {
    behaviour = [](int fd) {
      read_request_head(fd);
      const linger hard{1, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
    };
  }
  SUBCASE("closed without an answer") {
    behaviour = [](int fd) { read_request_head(fd); };
  }
  SUBCASE("closed in the middle of the body") {
    behaviour = [](int fd) {
      read_request_head(fd);
      send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc");
    };
  }
  SUBCASE("not HTTP at all") {
    behaviour = [](int fd) {
      read_request_head(fd);
      send_all(fd, std::string(64, '\x01') + "\r\n\r\n");
    };
  }
  const RawServer server(16, behaviour);
  for (const EngineKind& kind : k_engines) {
    INFO(kind.name);
    const auto engine = kind.make();
    auto request = get(server.url());
    request.total_timeout = 20s;
    const auto response = fetch(*engine, request);
    CHECK(response.failure == http::Failure::network);
    CHECK(response.status == 0);
    CHECK(response.body.empty());
    CHECK(response.headers.empty());
    CHECK_FALSE(response.error.empty());
  }
}

TEST_CASE("only the final response's headers are kept after a 100 Continue") {
  const RawServer server(16, [](int fd) {
    read_request_head(fd);
    send_all(fd, "HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
                 "HTTP/1.1 200 OK\r\nX-Final:   spaced out  \r\nX-Folded: one\r\n two\r\n"
                 "Content-Length: 2\r\nConnection: close\r\n\r\nok");
  });
  const auto engine = engine_under_test();

  const auto response = fetch(*engine, get(server.url()));
  CHECK(response.failure == http::Failure::none);
  CHECK(response.status == 200);
  CHECK(response.body == "ok");
  CHECK(response.header("x-final") == "spaced out");
  CHECK(response.header("x-folded") == "one two");
  CHECK_FALSE(response.header("x-interim").has_value());
  CHECK(response.headers.size() == 4);
}

TEST_CASE("schemes other than http and https are refused") {
  const auto engine = engine_under_test();
  for (const std::string url :
       {"file:///etc/hostname", "ftp://127.0.0.1:1/", "gopher://127.0.0.1:1/"}) {
    CAPTURE(url);
    const auto response = fetch(*engine, get(url));
    CHECK(response.failure == http::Failure::network);
    CHECK(response.body.empty());
  }
}

TEST_CASE("callbacks never run inside submit, even for requests that fail at once") {
  const auto engine = engine_under_test();
  int calls = 0;
  http::Response last;
  const auto count = [&](http::Response r) {
    ++calls;
    last = std::move(r);
  };

  auto bad_header = get("http://127.0.0.1:1/");
  bad_header.headers = {{"X-Injected", "a\r\nHost: elsewhere"}};
  engine->submit(bad_header, count);
  CHECK(calls == 0);
  CHECK(engine->in_flight() == 1);
  engine->run_once(Millis{0});
  CHECK(calls == 1);
  CHECK(last.failure == http::Failure::network);
  CHECK(engine->in_flight() == 0);

  engine->submit(get("not a url"), count);
  CHECK(calls == 1);
  REQUIRE(run_until(*engine, [&] { return calls == 2; }));
  CHECK(last.failure == http::Failure::network);
}

TEST_CASE("a callback may submit another request") {
  HttpServer server;
  server.server().Get(R"(/step/(\d+))", [](const httplib::Request& req, httplib::Response& res) {
    res.set_content(req.matches[1].str(), "text/plain");
  });
  server.start();
  const auto engine = engine_under_test();

  std::vector<std::string> bodies;
  int invalid = 0;
  int depth = 0;
  bool nested = false;
  std::function<void(http::Response)> on_done = [&](http::Response r) {
    nested = nested || depth > 0;
    ++depth;
    bodies.push_back(r.body);
    if (bodies.size() < 3) {
      engine->submit(get(server.url("/step/" + std::to_string(bodies.size()))), on_done);
      // A request that fails before it starts is not reported from here either.
      auto bad = get(server.url());
      bad.headers = {{"Bad\nName", "x"}};
      engine->submit(bad, [&](http::Response) {
        nested = nested || depth > 0;
        ++invalid;
      });
    }
    --depth;
  };
  engine->submit(get(server.url("/step/0")), on_done);
  REQUIRE(run_until(*engine, [&] { return engine->in_flight() == 0; }));

  CHECK_FALSE(nested);
  CHECK(invalid == 2);
  CHECK(bodies == std::vector<std::string>{"0", "1", "2"});
}

TEST_CASE("wakeup from another thread ends a long run_once early") {
  const auto engine = engine_under_test();
  const auto started = SteadyClock::now();
  std::thread waker([&] { engine->wakeup(); });
  engine->run_once(10s);
  const auto waited = SteadyClock::now() - started;
  waker.join();
  CHECK(waited < k_prompt);
}

TEST_CASE("run_once with nothing to do waits about max_wait") {
  const auto engine = engine_under_test();
  const auto started = SteadyClock::now();
  engine->run_once(Millis{100});
  CHECK(SteadyClock::now() - started >= 90ms);
}

TEST_CASE("destroying the engine cancels transfers without calling their callbacks") {
  const RawServer silent(16);
  auto token = std::make_shared<int>(0);
  bool called = false;
  {
    const auto engine = engine_under_test();
    for (int i = 0; i < 5; ++i) {
      engine->submit(get(silent.url()), [&called, token](http::Response) { called = true; });
    }
    for (int i = 0; i < 3; ++i) {
      engine->run_once(Millis{20});
    }
    // Completed before it started; its callback would run in the next run_once().
    auto bad = get(silent.url());
    bad.headers = {{"X-Bad", "a\r\nb"}};
    engine->submit(bad, [&called, token](http::Response) { called = true; });
    CHECK(engine->in_flight() == 6);
  }
  CHECK_FALSE(called);
  CHECK(token.use_count() == 1);
}

TEST_CASE("TLS peers are verified against the CA file or the system's CAs") {
  const TestCertificate good("IP:127.0.0.1");
  const TestCertificate wrong_name("DNS:elsewhere.example");
  const TestCertificate named("DNS:localhost");
  const TestCertificate* served = &good;
  std::string ca_file;
  std::string host = "127.0.0.1";
  http::Failure expected = http::Failure::none;

  SUBCASE("trusted through the CA file") {
    ca_file = good.pem_path.string();
  }
  SUBCASE("trusted through the CA file, for a host name (SNI, a name look-up)") {
    served = &named;
    ca_file = named.pem_path.string();
    host = "localhost";
  }
  SUBCASE("trusted certificate for another name than the URL's") {
    served = &named;
    ca_file = named.pem_path.string();
    expected = http::Failure::network;
  }
  SUBCASE("self-signed, not among the system's CAs") {
    expected = http::Failure::network;
  }
  SUBCASE("trusted certificate for another name") {
    served = &wrong_name;
    ca_file = wrong_name.pem_path.string();
    expected = http::Failure::network;
  }

  HttpServer server(std::make_unique<httplib::SSLServer>(served->cert.get(), served->key.get()));
  server.server().Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("secure", "text/plain");
  });
  server.start();
  for (const EngineKind& kind : k_engines) {
    INFO(kind.name);
    const auto engine = kind.make();
    auto request = get(local_url(server.port(), "/", "https", host));
    request.ca_file = ca_file;
    const auto response = fetch(*engine, request);
    CHECK(response.failure == expected);
    if (expected == http::Failure::none) {
      CHECK(response.status == 200);
      CHECK(response.body == "secure");
    } else {
      CHECK(response.status == 0);
      CHECK_FALSE(response.error.empty());
    }
  }
}

TEST_CASE("https to a plain HTTP server is a network failure") {
  HttpServer server;
  server.server().Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("x", "text/plain");
  });
  server.start();
  const auto engine = engine_under_test();

  const auto response = fetch(*engine, get(server.url("/", "https")));
  CHECK(response.failure == http::Failure::network);
}

TEST_CASE("a connection the server closed after its answer does not fail the next request") {
  std::atomic<int> connections{0};
  // Answers one request per connection, then closes it without a word.
  const RawServer server(16, [&connections](int fd) {
    ++connections;
    read_request_head(fd);
    send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  });
  const auto engine = engine_under_test();

  CHECK(fetch(*engine, get(server.url())).status == 200);
  // The close reaches the client while its loop is not running: the next
  // request goes out on the dead connection, gets nothing back, and must
  // go once more on a new one.
  std::this_thread::sleep_for(200ms);
  const auto second = fetch(*engine, get(server.url()));
  CHECK(second.failure == http::Failure::none);
  CHECK(second.status == 200);
  CHECK(second.body == "ok");
  CHECK(connections == 2);
}

TEST_CASE("make_engine runs other requests on libcurl in the same loop, timeouts included") {
  HttpServer server;
  server.server().Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("hello", "text/plain");
  });
  server.start();
  const RawServer silent(16);
  const auto engine = http::make_engine(http::Proxies::none);

  std::vector<std::optional<http::Response>> out(4);
  const auto submit = [&](std::size_t i, std::string url, bool hot) {
    auto request = get(std::move(url));
    request.hot = hot;
    request.total_timeout = k_short_timeout;
    engine->submit(std::move(request), [&out, i](http::Response r) { out[i] = std::move(r); });
  };
  const auto started = SteadyClock::now();
  submit(0, server.url(), true);
  submit(1, server.url(), false);
  submit(2, silent.url(), true);
  submit(3, silent.url(), false);
  CHECK(engine->in_flight() == 4);
  REQUIRE(run_until(*engine, [&] {
    return std::all_of(out.begin(), out.end(), [](const auto& r) { return r.has_value(); });
  }));
  CHECK(SteadyClock::now() - started < k_prompt);
  CHECK(engine->in_flight() == 0);
  for (std::size_t i : {0U, 1U}) {
    CHECK(out[i]->status == 200);
    CHECK(out[i]->body == "hello");
  }
  for (std::size_t i : {2U, 3U}) {
    CHECK(out[i]->failure == http::Failure::timeout);
  }
}

TEST_CASE("make_engine leaves hot requests to libcurl when a proxy is configured") {
  std::mutex mutex;
  std::string seen;
  const RawServer proxy(16, [&](int fd) {
    std::string head = read_request_head(fd);
    {
      const std::lock_guard lock(mutex);
      seen = std::move(head);
    }
    send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nproxied");
  });
  const rrd::testing::ScopedEnv no_proxy("no_proxy", std::nullopt);
  const rrd::testing::ScopedEnv no_proxy_upper("NO_PROXY", std::nullopt);
  const rrd::testing::ScopedEnv all_proxy("all_proxy", std::nullopt);
  const rrd::testing::ScopedEnv all_proxy_upper("ALL_PROXY", std::nullopt);
  const rrd::testing::ScopedEnv http_proxy("http_proxy", proxy.url());

  SUBCASE("from the environment") {
    const auto engine = http::make_engine();
    auto request = get("http://dingtalk.invalid:8080/v1.0/x?y=1");
    request.hot = true;
    const auto response = fetch(*engine, request);
    CHECK(response.status == 200);
    CHECK(response.body == "proxied");
    const std::lock_guard lock(mutex);
    CHECK(seen.rfind("GET http://dingtalk.invalid:8080/v1.0/x?y=1 HTTP/1.1\r\n", 0) == 0);
  }
  SUBCASE("unless told to ignore it") {
    HttpServer server;
    server.server().Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("direct", "text/plain");
    });
    server.start();
    const auto engine = http::make_engine(http::Proxies::none);
    auto request = get(server.url());
    request.hot = true;
    const auto response = fetch(*engine, request);
    CHECK(response.body == "direct");
    const std::lock_guard lock(mutex);
    CHECK(seen.empty());
  }
}

TEST_CASE("Retry-After accepts delay-seconds") {
  const TimePoint now = rrd::from_unix_ms(1'445'412'480'000);
  CHECK(http::parse_retry_after("120", now) == Millis{120'000});
  CHECK(http::parse_retry_after("0", now) == Millis{0});
  CHECK(http::parse_retry_after(" 5\t", now) == Millis{5'000});
  CHECK(http::parse_retry_after("86400", now) == Millis{86'400'000});
  CHECK(http::parse_retry_after("86401", now) == Millis{86'400'000});
  CHECK(http::parse_retry_after("99999999999999999999999", now) == Millis{86'400'000});
  CHECK_FALSE(http::parse_retry_after("", now).has_value());
  CHECK_FALSE(http::parse_retry_after("  ", now).has_value());
  CHECK_FALSE(http::parse_retry_after("-5", now).has_value());
  CHECK_FALSE(http::parse_retry_after("+5", now).has_value());
  CHECK_FALSE(http::parse_retry_after("5.5", now).has_value());
  CHECK_FALSE(http::parse_retry_after("5s", now).has_value());
  CHECK_FALSE(http::parse_retry_after("soon", now).has_value());
}

TEST_CASE("Retry-After accepts HTTP dates, past ones meaning now") {
  using namespace std::chrono;
  // Wed, 21 Oct 2015 07:28:00 GMT
  const TimePoint date = time_point_cast<Millis>(sys_days{2015y / October / 21} + 7h + 28min);
  const TimePoint now = date - 30s;

  CHECK(http::parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == Millis{30'000});
  CHECK(http::parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", date - 1500ms) == Millis{1'500});
  CHECK(http::parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", date) == Millis{0});
  CHECK(http::parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", date + 1h) == Millis{0});
  CHECK(http::parse_retry_after("Thu, 01 Jan 2099 00:00:00 GMT", now) == Millis{86'400'000});
  // The obsolete formats recipients must still accept.
  CHECK(http::parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now) == Millis{30'000});
  CHECK(http::parse_retry_after("Wed Oct 21 07:28:00 2015", now) == Millis{30'000});
  CHECK(http::parse_retry_after("Thu Oct  1 07:28:00 2015", now) == Millis{0});

  CHECK_FALSE(http::parse_retry_after("Wed, 21 Oct 2015 07:28:00 UTC", now).has_value());
  CHECK_FALSE(http::parse_retry_after("Wed, 31 Feb 2015 07:28:00 GMT", now).has_value());
  CHECK_FALSE(http::parse_retry_after("Wed, 21 Oct 2015 24:00:00 GMT", now).has_value());
  CHECK_FALSE(http::parse_retry_after("Wed, 21 Oct 2015 07:28 GMT", now).has_value());
  CHECK_FALSE(http::parse_retry_after("Wed, 21 Foo 2015 07:28:00 GMT", now).has_value());
  CHECK_FALSE(http::parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT trailing", now).has_value());
  CHECK_FALSE(http::parse_retry_after("2015-10-21T07:28:00Z", now).has_value());
}

TEST_CASE("failures have stable names and headers are found by name") {
  CHECK(std::string(http::to_string(http::Failure::none)) == "none");
  CHECK(std::string(http::to_string(http::Failure::timeout)) == "timeout");
  CHECK(std::string(http::to_string(http::Failure::network)) == "network");
  CHECK(std::string(http::to_string(http::Failure::too_large)) == "too_large");

  http::Response r;
  r.headers = {{"retry-after", "3"}, {"x-dup", "first"}, {"x-dup", "second"}};
  CHECK(r.header("retry-after") == "3");
  CHECK(r.header("Retry-After") == "3");
  CHECK(r.header("x-dup") == "first");
  CHECK_FALSE(r.header("content-type").has_value());
}
