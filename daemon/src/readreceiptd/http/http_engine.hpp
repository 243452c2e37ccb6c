// HttpEngine: asynchronous HTTP requests for the whole daemon (DingTalk calls
// and webhook deliveries alike), driven from the daemon's loop: many requests
// in flight, connection reuse, connect and total timeouts, TLS verification
// always on, and a response size cap enforced while the body streams in.
// make_engine() sends DingTalk's frequent calls and the webhook deliveries
// with a small HTTP/1.1 client of its own and everything else through one
// libcurl multi handle.
//
// Thread-safety: submit(), run_once() and in_flight() must be called from the
// loop thread only; callbacks run on that thread, inside run_once() (never
// inside submit()). wakeup() may be called from any thread.
#pragma once

#include "readreceiptd/common/clock.hpp"

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rrd::http {

inline constexpr std::size_t k_default_max_response_bytes = 4 * 1024 * 1024;
inline constexpr Millis k_default_connect_timeout{5000};
inline constexpr Millis k_default_total_timeout{10000};

struct Request {
  std::string method = "POST";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  Millis connect_timeout = k_default_connect_timeout;
  Millis total_timeout = k_default_total_timeout;
  std::size_t max_response_bytes = k_default_max_response_bytes;
  std::string ca_file; // empty: the system's CAs
  // One of many calls to one origin (DingTalk's calls, webhook deliveries):
  // make_engine() sends it with its own HTTP/1.1 client rather than
  // libcurl, unless a proxy is configured for its scheme.
  bool hot = false;
};

// Why a request produced no HTTP answer. `none` means an answer arrived
// (whatever its status).
enum class Failure {
  none,
  timeout,   // connect or total timeout
  network,   // DNS, refused, reset, closed early, TLS handshake or verification
  too_large, // the body passed max_response_bytes; cut off while streaming
};
const char* to_string(Failure f);

// On a failure, body and headers are empty: a partial answer is never handed
// out.
struct Response {
  Failure failure = Failure::none;
  int status = 0; // HTTP status; 0 unless failure == none
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers; // names lower-cased
  std::string error;                                        // what went wrong, for logs
  Millis duration{0};

  // The value of header `name` (lower case), if present.
  std::optional<std::string> header(const std::string& name) const;
};

// What went wrong with `r`, for logs and stored errors, from a fixed
// vocabulary: "HTTP 503", "timeout", "response too large", "connection
// refused", "could not connect", "could not resolve host", "TLS error",
// "connection reset", "connection closed", "URLs with user information are
// not supported", "network error". Never the engine's own text, which may
// quote a URL, a proxy's address or their credentials.
std::string describe(const Response& r);

using Callback = std::function<void(Response)>;

// A raw, long-lived byte stream to one origin (the Stream mode's WebSocket),
// over the engine's own TCP and TLS code in the same loop: the same name
// look-ups, the same certificate and host name checks, the same connect
// timeout (covering TCP and the TLS handshake).
struct StreamRequest {
  std::string url; // http:// or https:// host, port (and path, which is not used)
  Millis connect_timeout = k_default_connect_timeout;
  std::string ca_file; // empty: the system's CAs
};

// What a stream reports, always from inside Engine::run_once() (never from
// open_stream(), send() or close()). The handler may destroy the connection
// from any of these; on_closed() is the last call.
class StreamHandler {
public:
  virtual ~StreamHandler() = default;
  // Connected (and TLS set up): bytes can flow.
  virtual void on_open() = 0;
  virtual void on_data(std::string_view bytes) = 0;
  // The connection ended: refused, timed out, reset, closed by the peer
  // (`failure` network, `why` "connection closed by the peer") or after
  // close() once the queued bytes are out (failure none).
  virtual void on_closed(Failure failure, const std::string& why) = 0;
};

class StreamConnection {
public:
  // Closes the connection at once, without calling the handler again.
  virtual ~StreamConnection() = default;
  // Queues bytes; they are written in order as the socket allows (those
  // queued before the connection opened, once it has).
  virtual void send(std::string_view bytes) = 0;
  // Bytes queued and not written yet.
  virtual std::size_t unsent() const = 0;
  // Writes what is queued, then closes; on_closed(none) follows.
  virtual void close() = 0;
};

class Engine {
public:
  // Cancels the requests still in flight WITHOUT calling their callbacks.
  virtual ~Engine() = default;
  // Starts a request; `done` is called exactly once, from a later run_once().
  virtual void submit(Request request, Callback done) = 0;
  // Performs I/O, waiting at most `max_wait` for something to happen, and
  // calls the callbacks of requests that completed.
  virtual void run_once(Millis max_wait) = 0;
  // Makes a run_once() that is waiting return early. Any thread.
  virtual void wakeup() = 0;
  virtual std::size_t in_flight() const = 0;
  // Opens a raw stream; `handler` must outlive the connection. nullptr when
  // this engine carries no raw streams (the libcurl engine, proxies).
  virtual std::unique_ptr<StreamConnection> open_stream(const StreamRequest& /*request*/,
                                                        StreamHandler& /*handler*/) {
    return nullptr;
  }
};

// The libcurl multi engine.
std::unique_ptr<Engine> make_curl_engine();

// Whether make_engine() honours the proxy variables of the environment
// (http_proxy, https_proxy, HTTPS_PROXY, all_proxy, ALL_PROXY).
enum class Proxies { from_environment, none };

// The daemon's engine: hot requests go over its own HTTP/1.1 client
// (direct_engine.cpp: keep-alive connections, TLS with OpenSSL, one system
// call to send a request and usually one to read its answer), every other
// request, and hot ones a proxy must carry, over the libcurl engine. Both
// run in one loop, with the outcomes and guarantees described above.
std::unique_ptr<Engine> make_engine(Proxies proxies = Proxies::from_environment);

// Parses a Retry-After header value (delay-seconds or an HTTP date).
std::optional<Millis> parse_retry_after(const std::string& value, TimePoint now);

} // namespace rrd::http
