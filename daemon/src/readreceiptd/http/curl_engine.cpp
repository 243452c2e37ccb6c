// The libcurl multi engine: one CURLM* drives every transfer from the loop
// thread. Connections live in the multi handle's connection cache and are
// reused across requests to the same host (HTTP/1.1 keep-alive); easy handles
// are recycled through a pool.
//
// Event-driven (libcurl's multi_socket API): libcurl tells the engine which
// sockets to watch and when its next timeout is due; run_once() waits in
// epoll and hands libcurl only the sockets that are ready. (curl_multi_perform
// instead checks every transfer's socket with a poll(2) of its own on every
// call: with 64 transfers in flight that was three system calls per request,
// bench/poll_throughput.sh.)
//
// Thread-safety: as Engine says. wakeup() only writes to an eventfd, from
// any thread.
//
// Outcomes:
// - failure == none: an HTTP answer arrived; status, headers and body are set.
// - any other failure: status is 0 and body and headers are empty (a partial
//   answer is never handed out); `error` says what went wrong.
// - `duration` runs from submit() to the moment the transfer finished, so it
//   includes time spent waiting for a free connection.
//
// Destruction cancels every transfer still in flight, and drops completed
// ones whose callbacks have not run yet, WITHOUT calling their callbacks: the
// callbacks are only destroyed.
#include "readreceiptd/http/curl_handles.hpp"
#include "readreceiptd/http/engine_parts.hpp"
#include "readreceiptd/http/http_engine.hpp"
#include "readreceiptd/http/nestable_engine.hpp"
#include "readreceiptd/http/owned_fd.hpp"
#include "readreceiptd/http/text.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <unordered_map>
#include <utility>
#include <vector>

namespace rrd::http {

namespace detail {

void ensure_curl_global_init() {
  static const CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (rc != CURLE_OK) {
    throw std::runtime_error(std::string("libcurl initialisation failed: ") +
                             curl_easy_strerror(rc));
  }
}

} // namespace detail

namespace {

using detail::CompletionQueue;
using detail::CurlEasy;
using detail::CurlMulti;
using detail::CurlSlist;
using detail::epoll_timeout_ms;
using detail::has_line_break;
using detail::k_max_epoll_events;
using detail::to_lower_ascii;
using detail::trim;
using SteadyClock = std::chrono::steady_clock;

// Idle connections kept open in the multi handle's cache, all hosts together.
// More than one host's cap, so that a busy host's connections are reused
// rather than closed after each request.
constexpr long k_max_cached_connections = 128;
// Connections opened to one host at a time; further requests to that host
// queue inside libcurl until one is free, with their total timeout running.
// Calls in flight = rate x latency: at DingTalk's 20 calls/s, 64 connections
// keep up with answers that take up to 3.2 s; and a webhook's deliveries
// (webhook::k_max_in_flight_per_webhook, 32) never wait for a connection.
// libcurl opens a connection only when every open one is busy, so a fast
// host uses few. (8 capped a DingTalk answering in 1 s at 8 calls/s, and
// the polls queued behind timed out; bench/rate_limit.sh.)
constexpr long k_max_connections_per_host = 64;
// Easy handles kept for reuse once their transfer is done: as many as can be
// in flight to the busiest host and more, so that a steady stream of
// requests never creates and frees handles (libcurl's set-up and a calloc of
// several KiB each; a pool of 16 under 64 polls in flight cost a sixth of the
// daemon's CPU per poll, bench/poll_throughput.sh).
constexpr std::size_t k_easy_handle_pool_size = k_max_connections_per_host + 32;
// Response header bytes accepted per response (all header lines together);
// more is treated like a body over the cap.
constexpr std::size_t k_max_response_header_bytes = 64 * 1024;
// libcurl treats a timeout of 0 as "none": the smallest timeout we pass.
constexpr Millis k_min_timeout{1};

struct Transfer {
  Request request;
  Callback done;
  CurlEasy easy;
  CurlSlist request_headers;
  SteadyClock::time_point started;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::size_t header_bytes = 0;
  bool too_large = false; // set by a callback that stopped the transfer
  std::array<char, CURL_ERROR_SIZE> errbuf{};
};

// CURLOPT_WRITEFUNCTION: appends body bytes up to the cap; a short count
// makes libcurl abort the transfer with CURLE_WRITE_ERROR.
std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  if (n > t->request.max_response_bytes - std::min(t->body.size(), t->request.max_response_bytes)) {
    t->too_large = true;
    return 0;
  }
  t->body.append(data, n);
  return n;
}

// CURLOPT_HEADERFUNCTION: called once per header line, status lines included.
// A status line starts a new response (1xx answers come before the final
// one), so only the last response's headers are kept.
std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  t->header_bytes += n;
  if (t->header_bytes > k_max_response_header_bytes) {
    t->too_large = true;
    return 0;
  }
  std::string_view line(data, n);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) {
    line.remove_suffix(1);
  }
  if (line.empty()) {
    return n;
  }
  if (line.substr(0, 5) == "HTTP/") {
    t->headers.clear();
    return n;
  }
  if ((line.front() == ' ' || line.front() == '\t') && !t->headers.empty()) {
    // obs-fold: a continuation of the previous header's value.
    const std::string_view more = trim(line);
    if (!more.empty()) {
      auto& value = t->headers.back().second;
      if (!value.empty()) {
        value += ' ';
      }
      value.append(more);
    }
    return n;
  }
  const auto colon = line.find(':');
  if (colon == std::string_view::npos) {
    return n;
  }
  std::string name(trim(line.substr(0, colon)));
  std::transform(name.begin(), name.end(), name.begin(), to_lower_ascii);
  if (!name.empty()) {
    t->headers.emplace_back(std::move(name), std::string(trim(line.substr(colon + 1))));
  }
  return n;
}

std::string describe(CURLcode code, const Transfer& t) {
  std::string text = curl_easy_strerror(code);
  const std::string_view detail = trim(std::string_view(t.errbuf.data()));
  if (!detail.empty()) {
    text += ": ";
    text += detail;
  }
  return text;
}

long timeout_ms(Millis m) {
  return static_cast<long>(std::clamp(m, k_min_timeout, Millis{LONG_MAX}).count());
}

// Sets every option of one transfer. Returns an error text, empty on success.
std::string configure(Transfer& t) {
  CURL* easy = t.easy.get();
  const Request& r = t.request;
  CURLcode rc = CURLE_OK;
  const auto set = [&](CURLoption option, auto value) {
    if (rc == CURLE_OK) {
      rc = curl_easy_setopt(easy, option, value);
    }
  };

  set(CURLOPT_ERRORBUFFER, t.errbuf.data());
  set(CURLOPT_URL, r.url.c_str());
#if LIBCURL_VERSION_NUM >= 0x075500
  set(CURLOPT_PROTOCOLS_STR, "http,https");
#else
  set(CURLOPT_PROTOCOLS, static_cast<long>(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  set(CURLOPT_NOSIGNAL, 1L);
  set(CURLOPT_CONNECTTIMEOUT_MS, timeout_ms(r.connect_timeout));
  set(CURLOPT_TIMEOUT_MS, timeout_ms(r.total_timeout));
  set(CURLOPT_SSL_VERIFYPEER, 1L);
  set(CURLOPT_SSL_VERIFYHOST, 2L);
  if (!r.ca_file.empty()) {
    set(CURLOPT_CAINFO, r.ca_file.c_str());
  }
  set(CURLOPT_FOLLOWLOCATION, 0L);
  set(CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
  set(CURLOPT_ACCEPT_ENCODING, "");
  set(CURLOPT_TCP_KEEPALIVE, 1L);
  // Refuses early when the answer announces a Content-Length over the cap;
  // the write callback catches the rest while the body streams in.
  set(CURLOPT_MAXFILESIZE_LARGE,
      static_cast<curl_off_t>(
          std::min<std::uintmax_t>(r.max_response_bytes, std::numeric_limits<curl_off_t>::max())));
  set(CURLOPT_WRITEFUNCTION, &on_body);
  set(CURLOPT_WRITEDATA, static_cast<void*>(&t));
  set(CURLOPT_HEADERFUNCTION, &on_header);
  set(CURLOPT_HEADERDATA, static_cast<void*>(&t));

  if (r.method == "GET" && r.body.empty()) {
    set(CURLOPT_HTTPGET, 1L);
  } else if (r.method == "HEAD" && r.body.empty()) {
    set(CURLOPT_NOBODY, 1L);
  } else {
    // The body stays owned by t.request for the whole transfer.
    set(CURLOPT_POST, 1L);
    set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
    set(CURLOPT_POSTFIELDS, r.body.data());
    if (r.method != "POST") {
      set(CURLOPT_CUSTOMREQUEST, r.method.c_str());
    }
  }
  if (rc != CURLE_OK) {
    return describe(rc, t);
  }

  bool has_expect = false;
  for (const auto& [name, value] : r.headers) {
    if (name.empty() || has_line_break(name) || has_line_break(value) ||
        name.find(':') != std::string::npos) {
      return "invalid request header";
    }
    std::string lower = name;
    std::transform(lower.begin(), lower.end(), lower.begin(), to_lower_ascii);
    has_expect = has_expect || lower == "expect";
    // "Name;" is how libcurl is told to send a header with an empty value.
    std::string line = name;
    line += value.empty() ? ";" : ": ";
    line += value;
    if (!detail::slist_append(t.request_headers, line.c_str())) {
      return "out of memory";
    }
  }
  // libcurl sends "Expect: 100-continue" for larger bodies and then waits up
  // to a second for a 100 answer that many servers never send.
  if (!has_expect && !detail::slist_append(t.request_headers, "Expect:")) {
    return "out of memory";
  }
  set(CURLOPT_HTTPHEADER, t.request_headers.get());
  return rc == CURLE_OK ? std::string() : describe(rc, t);
}

using detail::OwnedFd;

class CurlEngine final : public NestableEngine {
public:
  CurlEngine()
      : m_epoll(::epoll_create1(EPOLL_CLOEXEC)), m_wake(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (m_epoll.get() < 0 || m_wake.get() < 0) {
      throw std::runtime_error(std::string("cannot create the HTTP engine's event queue: ") +
                               std::strerror(errno));
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = m_wake.get();
    if (::epoll_ctl(m_epoll.get(), EPOLL_CTL_ADD, m_wake.get(), &ev) != 0) {
      throw std::runtime_error(std::string("cannot watch the HTTP engine's wake-up event: ") +
                               std::strerror(errno));
    }
    detail::ensure_curl_global_init();
    m_multi.reset(curl_multi_init());
    if (!m_multi) {
      throw std::runtime_error("curl_multi_init failed");
    }
    CURLM* multi = m_multi.get();
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, k_max_cached_connections);
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, k_max_connections_per_host);
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, &CurlEngine::on_socket);
    curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, static_cast<void*>(this));
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, &CurlEngine::on_timer);
    curl_multi_setopt(multi, CURLMOPT_TIMERDATA, static_cast<void*>(this));
  }

  CurlEngine(const CurlEngine&) = delete;
  CurlEngine& operator=(const CurlEngine&) = delete;

  // Cancels what is in flight without calling any callback.
  ~CurlEngine() override {
    for (const auto& entry : m_active) {
      curl_multi_remove_handle(m_multi.get(), entry.first);
    }
    m_active.clear();
    m_completed.clear();
    m_pool.clear();
    // m_multi is destroyed before m_epoll, m_watched and m_timer, which are
    // declared before it: closing the cached connections still calls
    // on_socket, on_close_socket and on_timer.
  }

  void submit(Request request, Callback done) override {
    auto t = std::make_unique<Transfer>();
    t->request = std::move(request);
    t->done = std::move(done);
    t->started = SteadyClock::now();
    t->easy = take_easy();

    std::string error;
    if (!t->easy) {
      error = "could not create a transfer handle";
    } else {
      error = configure(*t);
    }
    if (error.empty()) {
      CURL* easy = t->easy.get();
      curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, &CurlEngine::on_open_socket);
      curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, static_cast<void*>(this));
      curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, &CurlEngine::on_close_socket);
      curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, static_cast<void*>(this));
    }
    if (error.empty()) {
      CURL* key = t->easy.get();
      auto [it, inserted] = m_active.emplace(key, std::move(t));
      const CURLMcode mc = curl_multi_add_handle(m_multi.get(), key);
      if (mc == CURLM_OK) {
        return;
      }
      error = curl_multi_strerror(mc);
      t = std::move(it->second);
      m_active.erase(it);
      (void)inserted;
    }

    // Reported from the next run_once(), never from here.
    Response response;
    response.failure = Failure::network;
    response.error = std::move(error);
    recycle(std::move(t->easy));
    m_completed.push(std::move(t->done), std::move(response));
  }

  void run_once(Millis max_wait) override {
    run_due_timer();
    collect();
    if (m_completed.empty()) {
      wait_and_act(max_wait);
      run_due_timer();
      collect();
    }
    m_completed.deliver();
  }

  void wakeup() override {
    const std::uint64_t one = 1;
    // A full counter (after 2^64 - 2 wake-ups nobody read) still wakes.
    [[maybe_unused]] const auto n = ::write(m_wake.get(), &one, sizeof one);
  }

  std::size_t in_flight() const override { return m_active.size() + m_completed.size(); }

  int event_fd() const override { return m_epoll.get(); }

  std::optional<SteadyClock::time_point> next_due() const override {
    if (!m_completed.empty()) {
      return SteadyClock::time_point::min();
    }
    return m_timer;
  }

private:
  CurlEasy take_easy() {
    if (m_pool.empty()) {
      return CurlEasy(curl_easy_init());
    }
    CurlEasy easy = std::move(m_pool.back());
    m_pool.pop_back();
    return easy;
  }

  void recycle(CurlEasy easy) {
    if (easy && m_pool.size() < k_easy_handle_pool_size) {
      curl_easy_reset(easy.get());
      m_pool.push_back(std::move(easy));
    }
  }

  // libcurl asks to watch `s` for `what` (CURL_POLL_IN, _OUT, _INOUT), or to
  // stop watching it (CURL_POLL_REMOVE). libcurl removes a connection's
  // socket when a transfer ends and adds it again, with the same interest,
  // when the next request reuses the connection: so a removal only marks the
  // socket unwanted and leaves it in the epoll set, saving two epoll_ctl(2)
  // per request. An unwanted socket that turns ready (the server closed an
  // idle connection) leaves the set then; on_close_socket() forgets sockets
  // as libcurl closes them, so a reused descriptor number starts afresh.
  static int on_socket(CURL* /*easy*/, curl_socket_t s, int what, void* userp, void* /*socketp*/) {
    auto* self = static_cast<CurlEngine*>(userp);
    const auto found = self->m_watched.find(s);
    if (what == CURL_POLL_REMOVE) {
      if (found != self->m_watched.end()) {
        found->second.wanted = false;
      }
      return 0;
    }
    const std::uint32_t events =
        (what & CURL_POLL_IN ? EPOLLIN : 0U) | (what & CURL_POLL_OUT ? EPOLLOUT : 0U);
    if (found != self->m_watched.end() && found->second.events == events) {
      found->second.wanted = true;
      return 0;
    }
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = s;
    const bool known = found != self->m_watched.end();
    if (::epoll_ctl(self->m_epoll.get(), known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, s, &ev) != 0 &&
        ::epoll_ctl(self->m_epoll.get(), known ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, s, &ev) != 0) {
      self->m_watched.erase(s);
      return -1; // libcurl fails the transfers on this socket
    }
    self->m_watched[s] = Watched{events, true};
    return 0;
  }

  // Every socket libcurl uses is opened here (CURLOPT_OPENSOCKETFUNCTION): a
  // descriptor number seen before is a new socket, not watched yet.
  static curl_socket_t on_open_socket(void* clientp, curlsocktype /*purpose*/,
                                      curl_sockaddr* address) {
    auto* self = static_cast<CurlEngine*>(clientp);
    const int fd = ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
    if (fd < 0) {
      return CURL_SOCKET_BAD;
    }
    self->m_watched.erase(fd); // the kernel dropped the old one from the set when it closed
    return fd;
  }

  // Every socket libcurl opened is closed here (CURLOPT_CLOSESOCKETFUNCTION).
  static int on_close_socket(void* clientp, curl_socket_t s) {
    auto* self = static_cast<CurlEngine*>(clientp);
    if (self->m_watched.erase(s) != 0) {
      ::epoll_ctl(self->m_epoll.get(), EPOLL_CTL_DEL, s, nullptr);
    }
    return ::close(s);
  }

  // libcurl's next timeout: -1 none, 0 at once, else in that many ms.
  static int on_timer(CURLM* /*multi*/, long timeout_ms, void* userp) {
    auto* self = static_cast<CurlEngine*>(userp);
    if (timeout_ms < 0) {
      self->m_timer.reset();
    } else {
      self->m_timer = SteadyClock::now() + std::chrono::milliseconds(timeout_ms);
    }
    return 0;
  }

  // Lets libcurl handle its timeouts (and start newly added transfers) once
  // they are due.
  void run_due_timer() {
    if (m_timer && *m_timer <= SteadyClock::now()) {
      m_timer.reset();
      int running = 0;
      curl_multi_socket_action(m_multi.get(), CURL_SOCKET_TIMEOUT, 0, &running);
    }
  }

  // Waits in epoll up to `max_wait` (less when libcurl's timer is due
  // earlier), then hands libcurl the sockets that are ready.
  void wait_and_act(Millis max_wait) {
    const auto now = SteadyClock::now();
    auto until = now + max_wait;
    if (m_timer) {
      until = std::min(until, *m_timer);
    }
    std::array<epoll_event, k_max_epoll_events> events{};
    const int n = ::epoll_wait(m_epoll.get(), events.data(), k_max_epoll_events,
                               epoll_timeout_ms(now, until));
    for (int i = 0; i < n; ++i) {
      const int fd = events[static_cast<std::size_t>(i)].data.fd;
      const std::uint32_t ev = events[static_cast<std::size_t>(i)].events;
      if (fd == m_wake.get()) {
        std::uint64_t count = 0;
        [[maybe_unused]] const auto r = ::read(fd, &count, sizeof count);
        continue;
      }
      const auto watched = m_watched.find(fd);
      if (watched == m_watched.end() || !watched->second.wanted) {
        // Ready, but libcurl does not wait for it (an idle connection the
        // server closed): stop watching it; libcurl notices on reuse.
        ::epoll_ctl(m_epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
        if (watched != m_watched.end()) {
          m_watched.erase(watched);
        }
        continue;
      }
      int flags = 0;
      if ((ev & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) != 0) {
        flags |= CURL_CSELECT_IN;
      }
      if ((ev & EPOLLOUT) != 0) {
        flags |= CURL_CSELECT_OUT;
      }
      if ((ev & EPOLLERR) != 0) {
        flags |= CURL_CSELECT_ERR;
      }
      int running = 0;
      curl_multi_socket_action(m_multi.get(), fd, flags, &running);
    }
  }

  // Moves the transfers libcurl finished to m_completed.
  void collect() {
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(m_multi.get(), &queued)) {
      if (msg->msg != CURLMSG_DONE) {
        continue;
      }
      // Copy out before the message is invalidated by remove_handle.
      CURL* easy = msg->easy_handle;
      const CURLcode code = msg->data.result;
      const auto it = m_active.find(easy);
      if (it == m_active.end()) {
        continue;
      }
      std::unique_ptr<Transfer> t = std::move(it->second);
      m_active.erase(it);
      curl_multi_remove_handle(m_multi.get(), easy);
      Response response = finish(*t, code);
      recycle(std::move(t->easy));
      m_completed.push(std::move(t->done), std::move(response));
    }
  }

  static Response finish(Transfer& t, CURLcode code) {
    Response r;
    r.duration = std::chrono::duration_cast<Millis>(SteadyClock::now() - t.started);
    if (code == CURLE_OK) {
      long status = 0;
      curl_easy_getinfo(t.easy.get(), CURLINFO_RESPONSE_CODE, &status);
      r.status = static_cast<int>(status);
      r.body = std::move(t.body);
      r.headers = std::move(t.headers);
      return r;
    }
    if (t.too_large || code == CURLE_FILESIZE_EXCEEDED) {
      r.failure = Failure::too_large;
      r.error = "response larger than " + std::to_string(t.request.max_response_bytes) + " bytes";
    } else if (code == CURLE_OPERATION_TIMEDOUT) {
      r.failure = Failure::timeout;
      r.error = describe(code, t);
    } else {
      r.failure = Failure::network;
      r.error = describe(code, t);
    }
    return r;
  }

  struct Watched {
    std::uint32_t events = 0; // what the epoll set watches the socket for
    bool wanted = false;      // libcurl waits for it (not removed since)
  };

  OwnedFd m_epoll; // the sockets libcurl asked to watch, and m_wake
  OwnedFd m_wake;  // eventfd: wakeup() from any thread
  std::unordered_map<curl_socket_t, Watched> m_watched; // sockets in the epoll set
  std::optional<SteadyClock::time_point> m_timer;       // libcurl's next timeout
  CurlMulti m_multi;
  std::unordered_map<CURL*, std::unique_ptr<Transfer>> m_active; // added to m_multi
  CompletionQueue m_completed;                                   // callbacks not yet called
  std::vector<CurlEasy> m_pool;                                  // reset, ready for reuse
};

} // namespace

std::unique_ptr<NestableEngine> make_nestable_curl_engine() {
  return std::make_unique<CurlEngine>();
}

std::unique_ptr<Engine> make_curl_engine() {
  return std::make_unique<CurlEngine>();
}

} // namespace rrd::http
