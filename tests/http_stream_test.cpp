// The engine's raw streams (Engine::open_stream): the Stream mode's WebSocket
// rides on them. Against echo servers on 127.0.0.1, plain and TLS.
#include "fakes/test_certificate.hpp"
#include "readreceiptd/http/http_engine.hpp"
#include "readreceiptd/http/owned_fd.hpp"

#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <doctest/doctest.h>
#include <functional>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

using namespace rrd;
using namespace std::chrono_literals;
using rrd::http::detail::OwnedFd;
using rrd::testing::TestCertificate;

namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr auto k_patience = 10s;

sockaddr_in loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

// Accepts connections one at a time on its own thread and echoes what it
// reads, over TLS when given a certificate. `close_after`: closes the
// connection once it has echoed that many bytes (0: never).
class EchoServer {
public:
  explicit EchoServer(const TestCertificate* tls = nullptr, std::size_t close_after = 0,
                      bool silent = false)
      : m_close_after(close_after), m_silent(silent) {
    m_listener.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(m_listener.get() >= 0);
    sockaddr_in addr = loopback(0);
    REQUIRE(::bind(m_listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(m_listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    m_port = ntohs(addr.sin_port);
    REQUIRE(::listen(m_listener.get(), 16) == 0);
    if (tls != nullptr) {
      m_ctx = SSL_CTX_new(TLS_server_method());
      REQUIRE(m_ctx != nullptr);
      REQUIRE(SSL_CTX_use_certificate(m_ctx, tls->cert.get()) == 1);
      REQUIRE(SSL_CTX_use_PrivateKey(m_ctx, tls->key.get()) == 1);
    }
    m_thread = std::thread([this] { run(); });
  }
  EchoServer(const EchoServer&) = delete;
  EchoServer& operator=(const EchoServer&) = delete;
  ~EchoServer() {
    m_stop = true;
    m_thread.join();
    SSL_CTX_free(m_ctx);
  }

  int port() const { return m_port; }
  std::string url(const char* scheme = "http") const {
    return std::string(scheme) + "://127.0.0.1:" + std::to_string(m_port) + "/";
  }
  int accepted() const { return m_accepted; }

private:
  bool wait_readable(int fd) const {
    while (!m_stop) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 20) > 0) {
        return true;
      }
    }
    return false;
  }

  void run() {
    while (!m_stop) {
      if (!wait_readable(m_listener.get())) {
        return;
      }
      OwnedFd conn(::accept4(m_listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (conn.get() < 0) {
        continue;
      }
      ++m_accepted;
      if (m_silent) {
        while (wait_readable(conn.get())) {
          char buf[256];
          if (::recv(conn.get(), buf, sizeof buf, 0) <= 0) {
            break;
          }
        }
        continue;
      }
      SSL* ssl = nullptr;
      if (m_ctx != nullptr) {
        ssl = SSL_new(m_ctx);
        SSL_set_fd(ssl, conn.get());
        if (SSL_accept(ssl) != 1) {
          SSL_free(ssl);
          continue;
        }
      }
      std::size_t echoed = 0;
      while ((ssl != nullptr && SSL_pending(ssl) > 0) || wait_readable(conn.get())) {
        char buf[4096];
        const int n = ssl != nullptr ? SSL_read(ssl, buf, sizeof buf)
                                     : static_cast<int>(::recv(conn.get(), buf, sizeof buf, 0));
        if (n <= 0) {
          break;
        }
        if (ssl != nullptr) {
          SSL_write(ssl, buf, n);
        } else {
          (void)::send(conn.get(), buf, static_cast<std::size_t>(n), MSG_NOSIGNAL);
        }
        echoed += static_cast<std::size_t>(n);
        if (m_close_after != 0 && echoed >= m_close_after) {
          break;
        }
      }
      if (ssl != nullptr) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
      }
    }
  }

  std::size_t m_close_after;
  bool m_silent;
  OwnedFd m_listener;
  int m_port = 0;
  SSL_CTX* m_ctx = nullptr;
  std::atomic<bool> m_stop{false};
  std::atomic<int> m_accepted{0};
  std::thread m_thread;
};

// Records what a stream reports; may act from a callback.
struct Recorder final : http::StreamHandler {
  bool opened = false;
  bool closed = false;
  http::Failure failure = http::Failure::none;
  std::string why;
  std::string data;
  int calls_after_close = 0;
  std::function<void()> on_open_do;
  std::function<void()> on_data_do;

  void on_open() override {
    calls_after_close += closed ? 1 : 0;
    opened = true;
    if (on_open_do) {
      on_open_do();
    }
  }
  void on_data(std::string_view bytes) override {
    calls_after_close += closed ? 1 : 0;
    data.append(bytes);
    if (on_data_do) {
      on_data_do();
    }
  }
  void on_closed(http::Failure f, const std::string& text) override {
    calls_after_close += closed ? 1 : 0;
    closed = true;
    failure = f;
    why = text;
  }
};

bool run_until(http::Engine& engine, const std::function<bool()>& done) {
  const auto deadline = SteadyClock::now() + k_patience;
  while (!done() && SteadyClock::now() < deadline) {
    engine.run_once(Millis{20});
  }
  return done();
}

http::StreamRequest stream_to(const std::string& url) {
  http::StreamRequest r;
  r.url = url;
  r.connect_timeout = Millis{2'000};
  return r;
}

} // namespace

TEST_CASE("a raw stream opens, carries bytes both ways and closes when asked") {
  const EchoServer server;
  const auto engine = http::make_engine(http::Proxies::none);
  Recorder rec;
  auto stream = engine->open_stream(stream_to(server.url()), rec);
  REQUIRE(stream != nullptr);
  stream->send("queued before the connection opened;");
  CHECK_FALSE(rec.opened); // never from inside open_stream() or send()
  REQUIRE(run_until(*engine, [&] { return rec.opened; }));
  stream->send("after");
  REQUIRE(run_until(*engine, [&] { return rec.data.size() == 41; }));
  CHECK(rec.data == "queued before the connection opened;after");
  stream->close();
  CHECK_FALSE(rec.closed);
  REQUIRE(run_until(*engine, [&] { return rec.closed; }));
  CHECK(rec.failure == http::Failure::none);
  CHECK(rec.calls_after_close == 0);
}

TEST_CASE("a raw stream reports the peer's close, a refused port and a silent TLS peer") {
  SUBCASE("closed by the peer") {
    const EchoServer server(nullptr, 4);
    const auto engine = http::make_engine(http::Proxies::none);
    Recorder rec;
    auto stream = engine->open_stream(stream_to(server.url()), rec);
    stream->send("ping");
    REQUIRE(run_until(*engine, [&] { return rec.closed; }));
    CHECK(rec.data == "ping");
    CHECK(rec.failure == http::Failure::network);
    CHECK(rec.why == "connection closed by the peer");
  }
  SUBCASE("nothing listening") {
    OwnedFd reserved(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr = loopback(0);
    REQUIRE(::bind(reserved.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(reserved.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    const auto engine = http::make_engine(http::Proxies::none);
    Recorder rec;
    auto stream = engine->open_stream(
        stream_to("http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/"), rec);
    REQUIRE(run_until(*engine, [&] { return rec.closed; }));
    CHECK_FALSE(rec.opened);
    CHECK(rec.failure == http::Failure::network);
    CHECK_FALSE(rec.why.empty());
  }
  SUBCASE("a TLS handshake that never comes is a connect timeout") {
    const EchoServer server(nullptr, 0, /*silent=*/true);
    const auto engine = http::make_engine(http::Proxies::none);
    Recorder rec;
    auto request = stream_to(server.url("https"));
    request.connect_timeout = Millis{300};
    const auto started = SteadyClock::now();
    auto stream = engine->open_stream(request, rec);
    REQUIRE(run_until(*engine, [&] { return rec.closed; }));
    CHECK(rec.failure == http::Failure::timeout);
    CHECK(SteadyClock::now() - started >= 250ms);
  }
  SUBCASE("a URL that is not http(s) fails from the next run_once()") {
    const auto engine = http::make_engine(http::Proxies::none);
    Recorder rec;
    auto stream = engine->open_stream(stream_to("ftp://127.0.0.1/"), rec);
    CHECK_FALSE(rec.closed);
    REQUIRE(run_until(*engine, [&] { return rec.closed; }));
    CHECK(rec.failure == http::Failure::network);
  }
}

TEST_CASE("a raw stream over TLS verifies the peer like every other call") {
  const TestCertificate good("IP:127.0.0.1");
  const TestCertificate other("IP:127.0.0.1");
  const EchoServer server(&good);
  const auto engine = http::make_engine(http::Proxies::none);
  SUBCASE("trusted") {
    Recorder rec;
    auto request = stream_to(server.url("https"));
    request.ca_file = good.pem_path.string();
    auto stream = engine->open_stream(request, rec);
    stream->send("secure");
    REQUIRE(run_until(*engine, [&] { return rec.data == "secure"; }));
  }
  SUBCASE("a certificate the CA file does not vouch for") {
    Recorder rec;
    auto request = stream_to(server.url("https"));
    request.ca_file = other.pem_path.string();
    auto stream = engine->open_stream(request, rec);
    REQUIRE(run_until(*engine, [&] { return rec.closed; }));
    CHECK_FALSE(rec.opened);
    CHECK(rec.failure == http::Failure::network);
    CHECK(rec.why.find("certificate verify failed") != std::string::npos);
  }
}

TEST_CASE("a stream's handler may drop it from a callback, and the engine may go first") {
  const EchoServer server;
  const auto engine = http::make_engine(http::Proxies::none);
  Recorder rec;
  std::unique_ptr<http::StreamConnection> stream;
  rec.on_data_do = [&] { stream.reset(); };
  stream = engine->open_stream(stream_to(server.url()), rec);
  stream->send("x");
  REQUIRE(run_until(*engine, [&] { return stream == nullptr; }));
  engine->run_once(Millis{50});
  CHECK_FALSE(rec.closed); // a dropped stream says nothing more

  Recorder second;
  auto survivor = engine->open_stream(stream_to(server.url()), second);
  REQUIRE(run_until(*engine, [&] { return second.opened; }));
  auto gone = http::make_engine(http::Proxies::none);
  Recorder third;
  auto orphan = gone->open_stream(stream_to(server.url()), third);
  gone.reset(); // the handle outlives its engine: destroying it is harmless
  orphan.reset();
  CHECK_FALSE(third.closed);
}

TEST_CASE("the libcurl engine carries no raw streams") {
  const auto engine = http::make_curl_engine();
  Recorder rec;
  CHECK(engine->open_stream(stream_to("http://127.0.0.1:1/"), rec) == nullptr);
}
