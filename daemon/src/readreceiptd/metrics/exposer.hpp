// Exposer: serves GET /metrics in the Prometheus text format (0.0.4) on the
// `metrics.listen` address, from a list of collectables, on a small pool of
// its own threads (cpp-httplib), and on GET / a small HTML page linking to
// /metrics. The socket takes SO_REUSEADDR but not SO_REUSEPORT, so that a
// port another process listens on is a start-up error. IPv4, bracketed IPv6 ("[::1]:9464") and
// "localhost" addresses work; port 0 takes an ephemeral port. The Debian
// civetweb that prometheus::Exposer is built on has no IPv6, hence this.
//
// Thread-safety: construct and destroy on one thread; the collectables'
// Collect() runs on the exposer's threads and must be thread-safe (the
// prometheus::Registry and ProcessCollector are).
#pragma once

#include "readreceiptd/common/clock.hpp"

#include <cstddef>
#include <memory>
#include <prometheus/collectable.h>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace httplib {
class Server;
}

namespace rrd::metrics {

inline constexpr std::size_t k_exposer_threads = 2;
// A scrape's request must arrive, and its answer be taken, within these.
inline constexpr Millis k_exposer_read_timeout{5'000};
inline constexpr Millis k_exposer_write_timeout{5'000};
// A GET has no body; anything larger is refused.
inline constexpr std::size_t k_exposer_max_request_body = 1024;
inline constexpr Millis k_exposer_start_timeout{5'000};

// A start-up failure: the metrics address cannot be listened on. what()
// names the address.
class MetricsError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

class Exposer {
public:
  // Binds `listen` (the metrics.listen syntax) and starts serving. Throws
  // MetricsError naming the address when it is malformed or cannot be bound:
  // "cannot listen on metrics.listen 127.0.0.1:9464: Address already in use".
  Exposer(const std::string& listen, std::vector<std::weak_ptr<prometheus::Collectable>> sources);
  // Stops listening and joins the threads; a scrape in progress finishes.
  ~Exposer();
  Exposer(const Exposer&) = delete;
  Exposer& operator=(const Exposer&) = delete;

  int port() const { return m_port; }

private:
  std::string scrape() const;

  std::vector<std::weak_ptr<prometheus::Collectable>> m_sources;
  std::unique_ptr<httplib::Server> m_server;
  std::thread m_thread;
  int m_port = 0;
};

} // namespace rrd::metrics
