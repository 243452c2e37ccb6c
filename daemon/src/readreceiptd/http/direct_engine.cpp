// The direct engine: a small HTTP/1.1 client for the requests marked hot
// (DingTalk's calls, webhook deliveries), with the libcurl engine nested in
// the same loop for everything else.
//
// Why: at full speed libcurl spent most of a poll's CPU on per-transfer work
// a keep-alive connection to one host does not need (re-parsing the URL,
// formatting the headers, two poll(2) checks of the connection, several
// allocations); bench/poll_throughput.sh. Here a request is one prepared
// buffer and one send(2); its answer is usually one recv(2), parsed in
// place (http1.hpp).
//
// Per origin (scheme, host, port, CA file): up to
// k_max_connections_per_origin connections, idle ones reused most recent
// first, requests beyond that wait in order. Connections are opened only when
// no idle one is free. Names are resolved by getaddrinfo(3) on a short-lived
// thread (the loop never blocks), kept k_address_ttl, and refreshed in the
// background; every address is tried in turn. TLS is OpenSSL's, with the
// peer verified against the CA file or the system's CAs and the host name
// (or IP address) checked, SNI set and TLS 1.2 at least.
//
// Outcomes are the same as the libcurl engine's (http_engine.hpp): a request
// on a reused connection that the server had closed (nothing received) is
// sent once more on another connection, as libcurl does; the total timeout
// runs from submit(); the connect timeout covers TCP and the TLS handshake.
//
// Raw streams (open_stream(): the Stream mode's WebSocket) use the same
// connection code, name look-ups and TLS checks, outside the pools: a
// stream connection is never idle, never reused, and its bytes go to its
// StreamHandler instead of the response parser.
//
// Thread-safety: as Engine. wakeup() writes to an eventfd from any thread;
// the resolver threads only touch ResolverBox.
#include "readreceiptd/http/engine_parts.hpp"
#include "readreceiptd/http/http1.hpp"
#include "readreceiptd/http/http_engine.hpp"
#include "readreceiptd/http/nestable_engine.hpp"
#include "readreceiptd/http/owned_fd.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace rrd::http {

namespace {

using detail::CompletionQueue;
using detail::epoll_timeout_ms;
using detail::k_max_epoll_events;
using detail::OwnedFd;
using SteadyClock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Connections to one origin at a time, as the libcurl engine allows per host
// (curl_engine.cpp says why 64: calls in flight = rate x latency).
constexpr std::size_t k_max_connections_per_origin = 64;
// An idle connection is closed after this long (libcurl's default too).
constexpr SteadyClock::duration k_max_idle = 118s;
// How long resolved addresses are used before they are looked up again (in
// the background; the old ones serve meanwhile).
constexpr SteadyClock::duration k_address_ttl = 60s;
// Bytes read from a socket per recv(2).
constexpr std::size_t k_read_chunk = 64 * 1024;
// Finished request records kept for reuse.
constexpr std::size_t k_spare_exchanges = 128;
// The timeouts' floor (a timeout of 0 would fail before anything happened)
// and ceiling (so that a deadline cannot overflow the clock).
constexpr Millis k_min_timeout{1};
constexpr Millis k_max_timeout{30LL * 24 * 3600 * 1000};

Millis clamp_timeout(Millis m) {
  return std::clamp(m, k_min_timeout, k_max_timeout);
}

std::string errno_text(int err) {
  return std::strerror(err);
}

bool env_set(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0';
}

// ---- OpenSSL ---------------------------------------------------------------

struct SslCtxDeleter {
  void operator()(SSL_CTX* ctx) const noexcept { SSL_CTX_free(ctx); }
};
struct SslDeleter {
  void operator()(SSL* ssl) const noexcept { SSL_free(ssl); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;
using SslPtr = std::unique_ptr<SSL, SslDeleter>;

// OpenSSL's queued error, as text; `fallback` when there is none.
std::string openssl_error(const char* fallback) {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) {
    return fallback;
  }
  std::array<char, 256> text{};
  ERR_error_string_n(code, text.data(), text.size());
  return text.data();
}

// A socket BIO whose writes cannot raise SIGPIPE (send(2) with MSG_NOSIGNAL;
// OpenSSL's own socket BIO uses write(2)). The BIO's data is the
// connection's OwnedFd, which outlives the SSL that owns the BIO.
int bio_fd(BIO* bio) {
  return static_cast<const OwnedFd*>(BIO_get_data(bio))->get();
}

bool would_block(int err) {
  return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

int bio_write(BIO* bio, const char* data, int len) {
  BIO_clear_retry_flags(bio);
  const ssize_t n = ::send(bio_fd(bio), data, static_cast<std::size_t>(len), MSG_NOSIGNAL);
  if (n < 0 && would_block(errno)) {
    BIO_set_retry_write(bio);
  }
  return static_cast<int>(n);
}

int bio_read(BIO* bio, char* data, int len) {
  BIO_clear_retry_flags(bio);
  const ssize_t n = ::recv(bio_fd(bio), data, static_cast<std::size_t>(len), 0);
  if (n < 0 && would_block(errno)) {
    BIO_set_retry_read(bio);
  }
  return static_cast<int>(n);
}

long bio_ctrl(BIO* /*bio*/, int cmd, long /*num*/, void* /*ptr*/) {
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

int bio_create(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

const BIO_METHOD* nosigpipe_socket() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m =
        BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "socket, MSG_NOSIGNAL");
    if (m != nullptr) {
      BIO_meth_set_write(m, &bio_write);
      BIO_meth_set_read(m, &bio_read);
      BIO_meth_set_ctrl(m, &bio_ctrl);
      BIO_meth_set_create(m, &bio_create);
    }
    return m;
  }();
  return method;
}

// One SSL_CTX per CA file (empty: the system's CAs), rebuilt when the file
// changes on disk.
struct TlsContext {
  SslCtxPtr ctx;
  struct timespec mtime {};
  off_t size = 0;
};

// ---- addresses ---------------------------------------------------------------

struct Address {
  sockaddr_storage storage{};
  socklen_t length = 0;
};

// The address of a numeric host, if it is one.
std::optional<Address> numeric_address(const std::string& host, const std::string& port) {
  const auto number = static_cast<std::uint16_t>(std::strtoul(port.c_str(), nullptr, 10));
  Address a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage);
  if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(number);
    a.length = sizeof(sockaddr_in);
    return a;
  }
  a = Address{};
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
  if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(number);
    a.length = sizeof(sockaddr_in6);
    return a;
  }
  return std::nullopt;
}

struct Origin;

// What the resolver threads hand back, through an eventfd the loop watches.
// Shared with them: it outlives an engine destroyed while a look-up runs.
struct ResolverBox {
  struct Answer {
    Origin* origin; // only used by the engine that asked
    std::vector<Address> addresses;
    std::string error;
  };
  OwnedFd event{::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)};
  std::mutex mutex;
  std::vector<Answer> answers;
};

// ---- requests and connections ---------------------------------------------

struct Exchange {
  Request request;
  Callback done;
  http1::Target target; // views into request.url
  SteadyClock::time_point started;
  SteadyClock::time_point deadline;
  bool retried = false; // already sent again after a reused connection failed
};
using ExchangePtr = std::unique_ptr<Exchange>;

struct Conn;

// What a stream's handle and its connection share: the handle clears
// `handler` when it goes, the engine clears `conn` when the connection does.
struct StreamLink {
  Conn* conn = nullptr;
  StreamHandler* handler = nullptr;
};

struct Origin {
  bool tls = false;
  std::string host;
  std::string port;
  std::string ca_file;
  bool numeric = false;
  std::vector<Address> addresses;
  SteadyClock::time_point resolved_at;
  bool resolving = false;
  std::vector<Conn*> idle;            // most recently used last
  std::deque<ExchangePtr> waiting;    // for a connection, oldest first
  std::vector<Conn*> streams_waiting; // raw streams waiting for addresses
  std::size_t open = 0;               // connections, whatever their state
  std::size_t connecting = 0;         // of which not ready yet
};

enum class ConnState { connecting, handshaking, idle, busy, stream };

struct Conn {
  Origin* origin = nullptr;
  ConnState state = ConnState::connecting;
  OwnedFd fd;
  SslPtr ssl;
  std::uint32_t watched = 0; // the events epoll watches fd for
  std::size_t next_address = 0;
  int last_error = 0;
  SteadyClock::time_point connect_deadline;
  Millis connect_timeout{0};
  SteadyClock::time_point idle_since;
  bool reused = false; // has carried an exchange to its end before
  bool closed = false; // closed; freed after the current batch of events
  ExchangePtr exchange;
  std::string out; // the request's bytes (a stream's queued bytes)
  std::size_t sent = 0;
  http1::ResponseParser parser;
  std::shared_ptr<StreamLink> stream; // set for a raw stream
  bool stream_closing = false;        // close() asked: close once `out` is written
};

class DirectEngine final : public Engine {
public:
  DirectEngine(std::unique_ptr<NestableEngine> fallback, Proxies proxies)
      : m_epoll(::epoll_create1(EPOLL_CLOEXEC)), m_wake(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
        m_resolver(std::make_shared<ResolverBox>()), m_fallback(std::move(fallback)),
        m_read_buffer(k_read_chunk) {
    if (m_epoll.get() < 0 || m_wake.get() < 0 || m_resolver->event.get() < 0) {
      throw std::runtime_error(std::string("cannot create the HTTP engine's event queue: ") +
                               errno_text(errno));
    }
    watch_fd(m_wake.get(), &m_wake);
    watch_fd(m_resolver->event.get(), m_resolver.get());
    watch_fd(m_fallback->event_fd(), m_fallback.get());
    if (proxies == Proxies::from_environment) {
      // libcurl's rules: only the lower-case http_proxy (CGI's HTTP_PROXY
      // comes from a request header), either case for the others; libcurl
      // then applies no_proxy itself.
      const bool all = env_set("all_proxy") || env_set("ALL_PROXY");
      m_proxy_http = all || env_set("http_proxy");
      m_proxy_https = all || env_set("https_proxy") || env_set("HTTPS_PROXY");
    }
  }

  DirectEngine(const DirectEngine&) = delete;
  DirectEngine& operator=(const DirectEngine&) = delete;

  // Cancels what is in flight without calling any callback; stream handles
  // still held only forget their connection.
  ~DirectEngine() override {
    for (auto& [conn, owned] : m_conns) {
      if (conn->stream) {
        conn->stream->conn = nullptr;
        conn->stream->handler = nullptr;
      }
    }
  }

  void submit(Request request, Callback done) override {
    if (!request.hot) {
      m_fallback->submit(std::move(request), std::move(done));
      return;
    }
    ExchangePtr ex = take_exchange();
    ex->request = std::move(request);
    ex->done = std::move(done);
    ex->started = SteadyClock::now();
    ex->deadline = ex->started + clamp_timeout(ex->request.total_timeout);
    ex->retried = false;

    std::string why;
    const auto target = http1::parse_url(ex->request.url, why);
    if (target && (target->tls ? m_proxy_https : m_proxy_http)) {
      m_fallback->submit(std::move(ex->request), std::move(ex->done));
      recycle(std::move(ex));
      return;
    }
    ++m_exchanges;
    if (target) {
      why = http1::check_headers(ex->request.headers);
    }
    if (!target || !why.empty()) {
      complete(std::move(ex), failure(Failure::network, why));
      return;
    }
    ex->target = *target;
    note_deadline(ex->deadline);
    Origin& origin = origin_for(*target, ex->request.ca_file);
    origin.waiting.push_back(std::move(ex));
    dispatch(origin);
  }

  void run_once(Millis max_wait) override {
    const InLoop in_loop(m_in_loop);
    expire(SteadyClock::now());
    if (m_completed.empty()) {
      wait_and_act(max_wait);
      expire(SteadyClock::now());
    } else if (fallback_due(SteadyClock::now())) {
      m_fallback->run_once(Millis{0});
    }
    m_closed.clear();
    m_completed.deliver();
  }

  void wakeup() override {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(m_wake.get(), &one, sizeof one);
  }

  std::size_t in_flight() const override {
    return m_exchanges + m_completed.size() + m_fallback->in_flight();
  }

  std::unique_ptr<StreamConnection> open_stream(const StreamRequest& request,
                                                StreamHandler& handler) override;

  // ---- raw streams: what their handles ask ----

  void stream_send(Conn& c, std::string_view bytes) {
    if (c.closed || c.stream_closing) {
      return;
    }
    if (c.sent == c.out.size()) {
      c.out.clear();
      c.sent = 0;
    }
    c.out.append(bytes);
    if (c.state == ConnState::stream) {
      stream_write(c);
    }
  }

  void stream_close(Conn& c) {
    if (c.closed) {
      return;
    }
    c.stream_closing = true;
    if (c.state != ConnState::stream) {
      close(c); // never opened: nothing to write
      stream_ended(c, Failure::none, "");
      return;
    }
    stream_write(c);
  }

  void stream_drop(Conn& c) {
    c.stream->handler = nullptr;
    close(c);
  }

private:
  // ---- the loop ----

  // Marks run_once() as running: stream handlers are called directly then,
  // and deferred to its next call otherwise.
  class InLoop {
  public:
    explicit InLoop(bool& flag) : m_flag(flag), m_was(flag) { m_flag = true; }
    InLoop(const InLoop&) = delete;
    InLoop& operator=(const InLoop&) = delete;
    ~InLoop() { m_flag = m_was; }

  private:
    bool& m_flag;
    bool m_was;
  };

  void watch_fd(int fd, void* tag) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = tag;
    if (::epoll_ctl(m_epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      throw std::runtime_error(std::string("cannot watch the HTTP engine's descriptors: ") +
                               errno_text(errno));
    }
  }

  bool fallback_due(SteadyClock::time_point now) const {
    const auto due = m_fallback->next_due();
    return due && *due <= now;
  }

  void wait_and_act(Millis max_wait) {
    const auto now = SteadyClock::now();
    auto until = now + max_wait;
    until = std::min(until, m_next_scan);
    if (const auto due = m_fallback->next_due()) {
      until = std::min(until, *due);
    }
    std::array<epoll_event, k_max_epoll_events> events{};
    const int n = ::epoll_wait(m_epoll.get(), events.data(), k_max_epoll_events,
                               epoll_timeout_ms(now, until));
    bool fallback_ready = false;
    for (int i = 0; i < n; ++i) {
      const epoll_event& ev = events[static_cast<std::size_t>(i)];
      if (ev.data.ptr == &m_wake) {
        std::uint64_t count = 0;
        [[maybe_unused]] const auto r = ::read(m_wake.get(), &count, sizeof count);
      } else if (ev.data.ptr == m_resolver.get()) {
        take_answers();
      } else if (ev.data.ptr == m_fallback.get()) {
        fallback_ready = true;
      } else {
        on_event(*static_cast<Conn*>(ev.data.ptr), ev.events);
      }
    }
    if (fallback_ready || fallback_due(SteadyClock::now())) {
      m_fallback->run_once(Millis{0});
    }
  }

  // ---- requests ----

  ExchangePtr take_exchange() {
    if (m_spare.empty()) {
      return std::make_unique<Exchange>();
    }
    ExchangePtr ex = std::move(m_spare.back());
    m_spare.pop_back();
    return ex;
  }

  void recycle(ExchangePtr ex) {
    if (m_spare.size() < k_spare_exchanges) {
      ex->done = nullptr;
      m_spare.push_back(std::move(ex));
    }
  }

  static Response failure(Failure kind, std::string why) {
    Response r;
    r.failure = kind;
    r.error = std::move(why);
    return r;
  }

  void complete(ExchangePtr ex, Response response) {
    response.duration = std::chrono::duration_cast<Millis>(SteadyClock::now() - ex->started);
    m_completed.push(std::move(ex->done), std::move(response));
    --m_exchanges;
    recycle(std::move(ex));
  }

  void note_deadline(SteadyClock::time_point t) { m_next_scan = std::min(m_next_scan, t); }

  Origin& origin_for(const http1::Target& target, const std::string& ca_file) {
    m_key.clear();
    m_key += target.tls ? "https://" : "http://";
    m_key += target.host;
    m_key += ':';
    m_key += target.port;
    m_key += '\n';
    m_key += ca_file;
    const auto found = m_origins.find(m_key);
    if (found != m_origins.end()) {
      return *found->second;
    }
    auto origin = std::make_unique<Origin>();
    origin->tls = target.tls;
    origin->host = std::string(target.host);
    origin->port = std::string(target.port);
    origin->ca_file = ca_file;
    if (auto numeric = numeric_address(origin->host, origin->port)) {
      origin->numeric = true;
      origin->addresses.push_back(*numeric);
    }
    return *m_origins.emplace(m_key, std::move(origin)).first->second;
  }

  // Gives waiting requests idle connections, and opens connections for the
  // ones no connection being opened will take.
  void dispatch(Origin& o) {
    while (!o.waiting.empty()) {
      if (!o.idle.empty()) {
        Conn& c = *o.idle.back();
        o.idle.pop_back();
        ExchangePtr ex = std::move(o.waiting.front());
        o.waiting.pop_front();
        start(c, std::move(ex));
        continue;
      }
      if (o.connecting >= o.waiting.size() || o.open >= k_max_connections_per_origin) {
        return;
      }
      const auto now = SteadyClock::now();
      if (!o.numeric && (o.addresses.empty() || now - o.resolved_at >= k_address_ttl)) {
        resolve(o);
        if (o.addresses.empty()) {
          return;
        }
      }
      open(o);
    }
  }

  // ---- name resolution ----

  void resolve(Origin& o) {
    if (o.resolving) {
      return;
    }
    o.resolving = true;
    try {
      std::thread([box = m_resolver, origin = &o, host = o.host, port = o.port] {
        ResolverBox::Answer answer{origin, {}, {}};
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* found = nullptr;
        const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
        if (rc != 0) {
          answer.error = rc == EAI_SYSTEM ? errno_text(errno) : ::gai_strerror(rc);
        }
        for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
          if (ai->ai_addrlen <= sizeof(sockaddr_storage)) {
            Address a;
            std::memcpy(&a.storage, ai->ai_addr, ai->ai_addrlen);
            a.length = ai->ai_addrlen;
            answer.addresses.push_back(a);
          }
        }
        if (found != nullptr) {
          ::freeaddrinfo(found);
        }
        if (rc == 0 && answer.addresses.empty()) {
          answer.error = "no addresses";
        }
        const std::lock_guard lock(box->mutex);
        box->answers.push_back(std::move(answer));
        const std::uint64_t one = 1;
        [[maybe_unused]] const auto n = ::write(box->event.get(), &one, sizeof one);
      }).detach();
    } catch (const std::system_error& e) {
      o.resolving = false;
      resolve_failed(o, std::string("cannot start a name look-up: ") + e.what());
    }
  }

  void take_answers() {
    std::uint64_t count = 0;
    [[maybe_unused]] const auto r = ::read(m_resolver->event.get(), &count, sizeof count);
    std::vector<ResolverBox::Answer> answers;
    {
      const std::lock_guard lock(m_resolver->mutex);
      answers.swap(m_resolver->answers);
    }
    for (auto& answer : answers) {
      Origin& o = *answer.origin;
      o.resolving = false;
      if (answer.error.empty()) {
        o.addresses = std::move(answer.addresses);
        o.resolved_at = SteadyClock::now();
        start_waiting_streams(o);
        dispatch(o);
      } else if (o.addresses.empty()) {
        resolve_failed(o, answer.error);
      } else {
        start_waiting_streams(o);
      }
      // Otherwise a refresh failed: the addresses known keep serving.
    }
  }

  void resolve_failed(Origin& o, const std::string& why) {
    const std::vector<Conn*> streams = std::move(o.streams_waiting);
    o.streams_waiting.clear();
    for (Conn* c : streams) {
      fail_connect(*c, Failure::network, "Could not resolve host: " + o.host + " (" + why + ")");
    }
    if (o.open > 0) {
      return; // the connections open take the waiting requests in turn
    }
    while (!o.waiting.empty()) {
      ExchangePtr ex = std::move(o.waiting.front());
      o.waiting.pop_front();
      complete(std::move(ex),
               failure(Failure::network, "Could not resolve host: " + o.host + " (" + why + ")"));
    }
  }

  // ---- connections ----

  void watch(Conn& c, std::uint32_t events) {
    if (c.watched == events) {
      return;
    }
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = &c;
    if (::epoll_ctl(m_epoll.get(), c.watched == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c.fd.get(),
                    &ev) == 0) {
      c.watched = events;
    }
  }

  void open(Origin& o) {
    auto owned = std::make_unique<Conn>();
    Conn& c = *owned;
    c.origin = &o;
    c.connect_timeout = clamp_timeout(o.waiting.front()->request.connect_timeout);
    c.connect_deadline = SteadyClock::now() + c.connect_timeout;
    note_deadline(c.connect_deadline);
    ++o.open;
    ++o.connecting;
    m_conns.emplace(&c, std::move(owned));
    connect_next(c);
  }

  // Tries the origin's addresses from c.next_address on.
  void connect_next(Conn& c) {
    const Origin& o = *c.origin;
    while (c.next_address < o.addresses.size()) {
      const Address& a = o.addresses[c.next_address++];
      c.fd.reset(::socket(a.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      c.watched = 0;
      if (c.fd.get() < 0) {
        c.last_error = errno;
        continue;
      }
      const int one = 1;
      ::setsockopt(c.fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ::setsockopt(c.fd.get(), SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
      if (::connect(c.fd.get(), reinterpret_cast<const sockaddr*>(&a.storage), a.length) == 0) {
        connected(c);
        return;
      }
      if (errno == EINPROGRESS) {
        watch(c, EPOLLOUT);
        return;
      }
      c.last_error = errno;
    }
    fail_connect(c, Failure::network,
                 "Failed to connect to " + o.host + " port " + o.port + ": " +
                     errno_text(c.last_error == 0 ? ECONNREFUSED : c.last_error));
  }

  void connected(Conn& c) {
    if (!c.origin->tls) {
      ready(c);
      return;
    }
    std::string why;
    SSL_CTX* ctx = tls_context(c.origin->ca_file, why);
    BIO* bio = ctx == nullptr ? nullptr : BIO_new(nosigpipe_socket());
    if (ctx != nullptr && bio == nullptr) {
      why = openssl_error("cannot create a TLS connection");
    }
    if (bio != nullptr) {
      BIO_set_data(bio, &c.fd);
      c.ssl.reset(SSL_new(ctx));
      if (!c.ssl) {
        BIO_free(bio);
        why = openssl_error("cannot create a TLS connection");
      }
    }
    if (!c.ssl) {
      fail_connect(c, Failure::network, "TLS set-up for " + c.origin->host + " failed: " + why);
      return;
    }
    SSL* ssl = c.ssl.get();
    SSL_set_bio(ssl, bio, bio);
    const Origin& o = *c.origin;
    bool ok = true;
    if (o.numeric) {
      ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), o.host.c_str()) == 1;
    } else {
      ok = SSL_set_tlsext_host_name(ssl, o.host.c_str()) == 1 &&
           SSL_set1_host(ssl, o.host.c_str()) == 1;
      SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    }
    static constexpr unsigned char k_alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    ok = ok && SSL_set_alpn_protos(ssl, k_alpn, sizeof k_alpn) == 0;
    if (!ok) {
      fail_connect(c, Failure::network,
                   "TLS set-up for " + o.host + " failed: " + openssl_error("bad host name"));
      return;
    }
    SSL_set_connect_state(ssl);
    c.state = ConnState::handshaking;
    handshake(c);
  }

  void handshake(Conn& c) {
    ERR_clear_error();
    const int rc = SSL_do_handshake(c.ssl.get());
    if (rc == 1) {
      ready(c);
      return;
    }
    const int err = SSL_get_error(c.ssl.get(), rc);
    if (err == SSL_ERROR_WANT_READ) {
      watch(c, EPOLLIN);
      return;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
      watch(c, EPOLLIN | EPOLLOUT);
      return;
    }
    fail_connect(c, Failure::network,
                 "TLS handshake with " + c.origin->host + " failed: " + tls_failure(c, err));
  }

  static std::string tls_failure(Conn& c, int err) {
    const long verify = SSL_get_verify_result(c.ssl.get());
    if (verify != X509_V_OK) {
      ERR_clear_error();
      return std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify);
    }
    if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
      return errno == 0 ? "connection closed" : errno_text(errno);
    }
    if (err == SSL_ERROR_ZERO_RETURN) {
      return "connection closed";
    }
    return openssl_error("TLS error");
  }

  SSL_CTX* tls_context(const std::string& ca_file, std::string& why) {
    struct stat st {};
    if (!ca_file.empty() && ::stat(ca_file.c_str(), &st) != 0) {
      why = "cannot read the CA file " + ca_file + ": " + errno_text(errno);
      return nullptr;
    }
    TlsContext& entry = m_tls[ca_file];
    if (entry.ctx && (ca_file.empty() ||
                      (entry.mtime.tv_sec == st.st_mtim.tv_sec &&
                       entry.mtime.tv_nsec == st.st_mtim.tv_nsec && entry.size == st.st_size))) {
      return entry.ctx.get();
    }
    entry.ctx.reset();
    SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
    if (!ctx) {
      why = openssl_error("cannot create a TLS context");
      return nullptr;
    }
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    SSL_CTX_set_mode(ctx.get(),
                     SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    // A server that closes without close_notify ends a body that runs until
    // the close, as it does in plain HTTP; lengths and chunks still say
    // whether an answer is whole.
    SSL_CTX_set_options(ctx.get(), SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    const int loaded = ca_file.empty()
                           ? SSL_CTX_set_default_verify_paths(ctx.get())
                           : SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr);
    if (loaded != 1) {
      why = ca_file.empty() ? "cannot load the system's CA certificates: "
                            : "cannot load the CA file " + ca_file + ": ";
      why += openssl_error("no certificates");
      return nullptr;
    }
    entry.ctx = std::move(ctx);
    entry.mtime = st.st_mtim;
    entry.size = st.st_size;
    return entry.ctx.get();
  }

  // The connection is open (and its TLS set up): it joins the idle ones.
  void ready(Conn& c) {
    if (c.stream) {
      stream_ready(c);
      return;
    }
    --c.origin->connecting;
    make_idle(c);
  }

  void make_idle(Conn& c) {
    c.state = ConnState::idle;
    c.idle_since = SteadyClock::now();
    note_deadline(c.idle_since + k_max_idle);
    watch(c, EPOLLIN);
    c.origin->idle.push_back(&c);
  }

  // A connection could not be opened: the oldest waiting request fails
  // (each failed attempt fails one request, as with libcurl, where each
  // transfer makes its own).
  void fail_connect(Conn& c, Failure kind, const std::string& why) {
    if (c.stream) {
      close(c);
      stream_ended(c, kind, why);
      return;
    }
    Origin& o = *c.origin;
    close(c);
    if (!o.waiting.empty()) {
      ExchangePtr ex = std::move(o.waiting.front());
      o.waiting.pop_front();
      complete(std::move(ex), failure(kind, why));
    }
  }

  void close(Conn& c) {
    if (c.closed) {
      return;
    }
    c.closed = true;
    Origin& o = *c.origin;
    if (c.stream) {
      auto& waiting = o.streams_waiting;
      waiting.erase(std::remove(waiting.begin(), waiting.end(), &c), waiting.end());
      c.stream->conn = nullptr;
    } else {
      if (c.state == ConnState::connecting || c.state == ConnState::handshaking) {
        --o.connecting;
      } else if (c.state == ConnState::idle) {
        o.idle.erase(std::remove(o.idle.begin(), o.idle.end(), &c), o.idle.end());
      }
      --o.open;
    }
    c.ssl.reset();
    c.fd.reset(); // closing drops it from the epoll set
    const auto it = m_conns.find(&c);
    m_closed.push_back(std::move(it->second));
    m_conns.erase(it);
  }

  // ---- one exchange on a connection ----

  void start(Conn& c, ExchangePtr ex) {
    c.state = ConnState::busy;
    c.out.clear();
    http1::write_request(c.out, ex->request, ex->target);
    c.sent = 0;
    c.parser.reset(ex->request.method == "HEAD", ex->request.max_response_bytes);
    c.exchange = std::move(ex);
    send_some(c);
  }

  void send_some(Conn& c) {
    while (c.sent < c.out.size()) {
      const std::size_t left = c.out.size() - c.sent;
      if (c.ssl) {
        ERR_clear_error();
        const int n = SSL_write(c.ssl.get(), c.out.data() + c.sent,
                                static_cast<int>(std::min<std::size_t>(left, INT_MAX)));
        if (n > 0) {
          c.sent += static_cast<std::size_t>(n);
          continue;
        }
        const int err = SSL_get_error(c.ssl.get(), n);
        if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
          watch(c, EPOLLIN | EPOLLOUT);
          return;
        }
        broken(c, "TLS send failure: " + tls_failure(c, err));
        return;
      }
      const ssize_t n = ::send(c.fd.get(), c.out.data() + c.sent, left, MSG_NOSIGNAL);
      if (n >= 0) {
        c.sent += static_cast<std::size_t>(n);
        continue;
      }
      if (would_block(errno)) {
        watch(c, EPOLLIN | EPOLLOUT);
        return;
      }
      broken(c, "Send failure: " + errno_text(errno));
      return;
    }
    watch(c, EPOLLIN);
  }

  void receive(Conn& c) {
    char* buffer = m_read_buffer.data();
    while (!c.closed && c.state == ConnState::busy) {
      if (c.ssl) {
        ERR_clear_error();
        const int n = SSL_read(c.ssl.get(), buffer, static_cast<int>(k_read_chunk));
        if (n > 0) {
          take(c, std::string_view(buffer, static_cast<std::size_t>(n)));
          continue;
        }
        const int err = SSL_get_error(c.ssl.get(), n);
        if (err == SSL_ERROR_WANT_READ) {
          return;
        }
        if (err == SSL_ERROR_WANT_WRITE) {
          watch(c, EPOLLIN | EPOLLOUT);
          return;
        }
        if (err == SSL_ERROR_ZERO_RETURN ||
            (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && n == 0)) {
          end_of_input(c);
          return;
        }
        broken(c, "TLS receive failure: " + tls_failure(c, err));
        return;
      }
      const ssize_t n = ::recv(c.fd.get(), buffer, k_read_chunk, 0);
      if (n > 0) {
        take(c, std::string_view(buffer, static_cast<std::size_t>(n)));
        if (static_cast<std::size_t>(n) < k_read_chunk) {
          return; // drained; epoll says when more comes
        }
        continue;
      }
      if (n == 0) {
        end_of_input(c);
        return;
      }
      if (errno == EINTR) {
        continue;
      }
      if (!would_block(errno)) {
        broken(c, errno == ECONNRESET ? "Connection reset by peer"
                                      : "Receive failure: " + errno_text(errno));
      }
      return;
    }
  }

  void take(Conn& c, std::string_view data) {
    std::size_t used = 0;
    switch (c.parser.feed(data, used)) {
    case http1::ResponseParser::State::more:
      return;
    case http1::ResponseParser::State::done:
      finish(c, used == data.size());
      return;
    case http1::ResponseParser::State::invalid:
      broken(c, c.parser.error());
      return;
    case http1::ResponseParser::State::too_large:
      fail_exchange(c, Failure::too_large, c.parser.error());
      return;
    }
  }

  void end_of_input(Conn& c) {
    if (c.parser.end_of_input() == http1::ResponseParser::State::done) {
      finish(c, false);
      return;
    }
    broken(c, c.parser.error());
  }

  // The answer is whole. `reusable`: nothing followed it on the connection.
  void finish(Conn& c, bool reusable) {
    Response r;
    r.status = c.parser.status();
    r.headers = std::move(c.parser.headers());
    r.body = std::move(c.parser.body());
    ExchangePtr ex = std::move(c.exchange);
    c.reused = true;
    if (reusable && c.parser.keep_alive()) {
      make_idle(c);
    } else {
      close(c);
    }
    complete(std::move(ex), std::move(r));
  }

  // The connection failed under an exchange. One that had been used before
  // may have been closed by the server just as the request went out: if
  // nothing of an answer came, the request goes again on another one.
  void broken(Conn& c, const std::string& why) {
    ExchangePtr& ex = c.exchange;
    if (ex && c.reused && !ex->retried && c.parser.received() == 0) {
      ex->retried = true;
      Origin& o = *c.origin;
      o.waiting.push_front(std::move(ex));
      close(c);
      return;
    }
    fail_exchange(c, Failure::network, why);
  }

  void fail_exchange(Conn& c, Failure kind, const std::string& why) {
    ExchangePtr ex = std::move(c.exchange);
    close(c);
    if (ex) {
      complete(std::move(ex), failure(kind, why));
    }
  }

  void on_event(Conn& c, std::uint32_t events) {
    if (c.closed) {
      return;
    }
    Origin& o = *c.origin;
    switch (c.state) {
    case ConnState::connecting: {
      int err = 0;
      socklen_t len = sizeof err;
      if (::getsockopt(c.fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        err = errno;
      }
      if (err == 0) {
        connected(c);
      } else if (err != EINPROGRESS) {
        c.last_error = err;
        connect_next(c);
      }
      break;
    }
    case ConnState::handshaking:
      handshake(c);
      break;
    case ConnState::idle:
      idle_event(c);
      break;
    case ConnState::stream:
      stream_event(c, events);
      return;
    case ConnState::busy:
      if ((events & EPOLLOUT) != 0 && c.sent < c.out.size()) {
        send_some(c);
      }
      if (!c.closed && c.state == ConnState::busy &&
          ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0 ||
           ((events & EPOLLOUT) != 0 && c.sent == c.out.size()))) {
        receive(c);
      }
      break;
    }
    dispatch(o);
  }

  // An idle connection turned readable: the server closed it (or sent what
  // nobody asked for), unless it was TLS bookkeeping such as a session
  // ticket.
  void idle_event(Conn& c) {
    if (c.ssl) {
      ERR_clear_error();
      char byte = 0;
      const int n = SSL_read(c.ssl.get(), &byte, 1);
      if (n <= 0 && SSL_get_error(c.ssl.get(), n) == SSL_ERROR_WANT_READ) {
        return;
      }
    }
    close(c);
  }

  // ---- raw streams ----

  void start_waiting_streams(Origin& o) {
    const std::vector<Conn*> streams = std::move(o.streams_waiting);
    o.streams_waiting.clear();
    for (Conn* c : streams) {
      if (!c->closed) {
        c->next_address = 0;
        connect_next(*c);
      }
    }
  }

  // Calls the handler now inside run_once(), else from the next one.
  void notify(const std::shared_ptr<StreamLink>& link, std::function<void(StreamHandler&)> call) {
    if (m_in_loop) {
      if (link->handler != nullptr) {
        call(*link->handler);
      }
      return;
    }
    m_completed.push(
        [link, call = std::move(call)](Response) {
          if (link->handler != nullptr) {
            call(*link->handler);
          }
        },
        Response{});
  }

  void stream_ready(Conn& c) {
    c.state = ConnState::stream;
    watch(c, EPOLLIN);
    notify(c.stream, [](StreamHandler& h) { h.on_open(); });
    if (!c.closed && c.sent < c.out.size()) {
      stream_write(c);
    }
  }

  // The connection is closed: the handler hears it last.
  void stream_ended(Conn& c, Failure failure, std::string why) {
    const std::shared_ptr<StreamLink> link = c.stream;
    notify(link, [link, failure, why = std::move(why)](StreamHandler& h) {
      link->handler = nullptr; // nothing after on_closed()
      h.on_closed(failure, why);
    });
  }

  void stream_failed(Conn& c, const std::string& why) {
    close(c);
    stream_ended(c, Failure::network, why);
  }

  void stream_write(Conn& c) {
    while (c.sent < c.out.size()) {
      const std::size_t left = c.out.size() - c.sent;
      if (c.ssl) {
        ERR_clear_error();
        const int n = SSL_write(c.ssl.get(), c.out.data() + c.sent,
                                static_cast<int>(std::min<std::size_t>(left, INT_MAX)));
        if (n > 0) {
          c.sent += static_cast<std::size_t>(n);
          continue;
        }
        const int err = SSL_get_error(c.ssl.get(), n);
        if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
          watch(c, EPOLLIN | EPOLLOUT);
          return;
        }
        stream_failed(c, "TLS send failure: " + tls_failure(c, err));
        return;
      }
      const ssize_t n = ::send(c.fd.get(), c.out.data() + c.sent, left, MSG_NOSIGNAL);
      if (n >= 0) {
        c.sent += static_cast<std::size_t>(n);
        continue;
      }
      if (would_block(errno)) {
        watch(c, EPOLLIN | EPOLLOUT);
        return;
      }
      stream_failed(c, "Send failure: " + errno_text(errno));
      return;
    }
    c.out.clear();
    c.sent = 0;
    if (c.stream_closing) {
      close(c);
      stream_ended(c, Failure::none, "");
      return;
    }
    watch(c, EPOLLIN);
  }

  void stream_event(Conn& c, std::uint32_t events) {
    if ((events & EPOLLOUT) != 0 && c.sent < c.out.size()) {
      stream_write(c);
    }
    if (!c.closed && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0) {
      stream_read(c);
    }
  }

  void stream_read(Conn& c) {
    char* buffer = m_read_buffer.data();
    while (!c.closed) {
      if (c.ssl) {
        ERR_clear_error();
        const int n = SSL_read(c.ssl.get(), buffer, static_cast<int>(k_read_chunk));
        if (n > 0) {
          deliver_stream_bytes(c, std::string_view(buffer, static_cast<std::size_t>(n)));
          continue;
        }
        const int err = SSL_get_error(c.ssl.get(), n);
        if (err == SSL_ERROR_WANT_READ) {
          return;
        }
        if (err == SSL_ERROR_WANT_WRITE) {
          watch(c, EPOLLIN | EPOLLOUT);
          return;
        }
        if (err == SSL_ERROR_ZERO_RETURN ||
            (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && n == 0)) {
          stream_failed(c, "connection closed by the peer");
          return;
        }
        stream_failed(c, "TLS receive failure: " + tls_failure(c, err));
        return;
      }
      const ssize_t n = ::recv(c.fd.get(), buffer, k_read_chunk, 0);
      if (n > 0) {
        deliver_stream_bytes(c, std::string_view(buffer, static_cast<std::size_t>(n)));
        if (static_cast<std::size_t>(n) < k_read_chunk) {
          return; // drained; epoll says when more comes
        }
        continue;
      }
      if (n == 0) {
        stream_failed(c, "connection closed by the peer");
        return;
      }
      if (errno == EINTR) {
        continue;
      }
      if (!would_block(errno)) {
        stream_failed(c, errno == ECONNRESET ? "Connection reset by peer"
                                             : "Receive failure: " + errno_text(errno));
      }
      return;
    }
  }

  void deliver_stream_bytes(Conn& c, std::string_view bytes) {
    if (c.stream->handler != nullptr) {
      c.stream->handler->on_data(bytes); // may close or drop the connection
    }
  }

  // ---- timeouts ----

  void expire(SteadyClock::time_point now) {
    if (now < m_next_scan) {
      return;
    }
    auto next = SteadyClock::time_point::max();
    std::vector<Conn*> late;
    for (const auto& [key, conn] : m_conns) {
      const Conn& c = *conn;
      SteadyClock::time_point due;
      switch (c.state) {
      case ConnState::stream:
        continue; // keep-alive is the stream's owner's business
      case ConnState::busy:
        due = c.exchange->deadline;
        break;
      case ConnState::idle:
        due = c.idle_since + k_max_idle;
        break;
      case ConnState::connecting:
      case ConnState::handshaking:
        due = c.connect_deadline;
        break;
      }
      if (due <= now) {
        late.push_back(key);
      } else {
        next = std::min(next, due);
      }
    }
    for (Conn* c : late) {
      switch (c->state) {
      case ConnState::stream:
        break;
      case ConnState::busy:
        fail_exchange(*c, Failure::timeout, timed_out(*c->exchange, now));
        break;
      case ConnState::idle:
        close(*c);
        break;
      case ConnState::connecting:
      case ConnState::handshaking:
        fail_connect(*c, Failure::timeout,
                     "Connection timed out after " + std::to_string(c->connect_timeout.count()) +
                         " milliseconds");
        break;
      }
    }
    for (auto& [key, origin] : m_origins) {
      auto& waiting = origin->waiting;
      for (auto it = waiting.begin(); it != waiting.end();) {
        if ((*it)->deadline <= now) {
          ExchangePtr ex = std::move(*it);
          it = waiting.erase(it);
          std::string why = timed_out(*ex, now);
          complete(std::move(ex), failure(Failure::timeout, std::move(why)));
        } else {
          next = std::min(next, (*it)->deadline);
          ++it;
        }
      }
    }
    m_next_scan = next;
    for (auto& [key, origin] : m_origins) {
      dispatch(*origin);
    }
  }

  static std::string timed_out(const Exchange& ex, SteadyClock::time_point now) {
    return "Operation timed out after " +
           std::to_string(std::chrono::duration_cast<Millis>(now - ex.started).count()) +
           " milliseconds";
  }

  OwnedFd m_epoll; // the connections, m_wake, the resolver's and the fallback's events
  OwnedFd m_wake;  // eventfd: wakeup() from any thread
  std::shared_ptr<ResolverBox> m_resolver;
  std::unique_ptr<NestableEngine> m_fallback; // libcurl: everything not hot
  bool m_proxy_http = false;                  // hot http:// requests go to m_fallback
  bool m_proxy_https = false;                 // hot https:// requests go to m_fallback
  std::map<std::string, TlsContext> m_tls;    // by CA file
  std::unordered_map<std::string, std::unique_ptr<Origin>> m_origins;
  std::unordered_map<Conn*, std::unique_ptr<Conn>> m_conns;
  std::vector<std::unique_ptr<Conn>> m_closed; // freed once no event can name them
  CompletionQueue m_completed;                 // callbacks not yet called
  std::vector<ExchangePtr> m_spare;            // finished, for reuse
  std::size_t m_exchanges = 0; // submitted here, not answered yet (waiting or on a connection)
  SteadyClock::time_point m_next_scan = SteadyClock::time_point::max(); // earliest deadline
  std::string m_key;                                                    // origin_for's scratch
  std::vector<char> m_read_buffer;
  bool m_in_loop = false; // inside run_once()
};

// The handle of a raw stream.
class DirectStream final : public StreamConnection {
public:
  DirectStream(DirectEngine& engine, std::shared_ptr<StreamLink> link)
      : m_engine(engine), m_link(std::move(link)) {}
  DirectStream(const DirectStream&) = delete;
  DirectStream& operator=(const DirectStream&) = delete;

  ~DirectStream() override {
    m_link->handler = nullptr;
    if (m_link->conn != nullptr) {
      m_engine.stream_drop(*m_link->conn);
    }
  }

  void send(std::string_view bytes) override {
    if (m_link->conn != nullptr) {
      m_engine.stream_send(*m_link->conn, bytes);
    }
  }
  std::size_t unsent() const override {
    const Conn* c = m_link->conn;
    return c == nullptr ? 0 : c->out.size() - c->sent;
  }
  void close() override {
    if (m_link->conn != nullptr) {
      m_engine.stream_close(*m_link->conn);
    }
  }

private:
  DirectEngine& m_engine;
  std::shared_ptr<StreamLink> m_link;
};

std::unique_ptr<StreamConnection> DirectEngine::open_stream(const StreamRequest& request,
                                                            StreamHandler& handler) {
  auto link = std::make_shared<StreamLink>();
  link->handler = &handler;
  auto stream = std::make_unique<DirectStream>(*this, link);
  std::string why;
  const auto target = http1::parse_url(request.url, why);
  if (!target) {
    notify(link, [link, why](StreamHandler& h) {
      link->handler = nullptr;
      h.on_closed(Failure::network, why);
    });
    return stream;
  }
  auto owned = std::make_unique<Conn>();
  Conn& c = *owned;
  c.stream = link;
  link->conn = &c;
  Origin& o = origin_for(*target, request.ca_file);
  c.origin = &o;
  c.connect_timeout = clamp_timeout(request.connect_timeout);
  c.connect_deadline = SteadyClock::now() + c.connect_timeout;
  note_deadline(c.connect_deadline);
  m_conns.emplace(&c, std::move(owned));
  const bool stale =
      !o.numeric && (o.addresses.empty() || SteadyClock::now() - o.resolved_at >= k_address_ttl);
  if (stale) {
    o.streams_waiting.push_back(&c);
    const bool known = !o.addresses.empty();
    resolve(o); // refreshes in the background when addresses are known
    if (known && !c.closed) {
      start_waiting_streams(o);
    }
    return stream;
  }
  connect_next(c);
  return stream;
}

} // namespace

std::unique_ptr<Engine> make_engine(Proxies proxies) {
  return std::make_unique<DirectEngine>(make_nestable_curl_engine(), proxies);
}

} // namespace rrd::http
