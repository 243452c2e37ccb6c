#include "readreceiptd/metrics/exposer.hpp"

#include "readreceiptd/common/version.hpp"
#include "readreceiptd/config/config.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <httplib.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>
#include <sstream>

namespace rrd::metrics {

namespace {

constexpr const char* k_content_type = "text/plain; version=0.0.4; charset=utf-8";
constexpr const char* k_html_type = "text/html; charset=utf-8";

// GET /: what exporters serve there, a page that links the metrics.
constexpr const char* k_landing_page = R"(<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>readreceiptd metrics</title></head>
<body>
<h1>readreceiptd</h1>
<p>Version @VERSION@. Prometheus metrics: <a href="/metrics">/metrics</a></p>
</body>
</html>
)";

// SO_REUSEADDR only. httplib's default adds SO_REUSEPORT, with which a
// second daemon binds the same port silently and scrapes alternate between
// the two.
void socket_options(socket_t sock) {
  int yes = 1;
  setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

std::string landing_page() {
  std::string page = k_landing_page;
  const std::string marker = "@VERSION@";
  page.replace(page.find(marker), marker.size(), k_version);
  return page;
}

} // namespace

Exposer::Exposer(const std::string& listen,
                 std::vector<std::weak_ptr<prometheus::Collectable>> sources)
    : m_sources(std::move(sources)), m_server(std::make_unique<httplib::Server>()) {
  const auto address = config::parse_listen_address(listen);
  if (!address) {
    throw MetricsError("metrics.listen: \"" + listen + "\" is not an address:port");
  }
  const std::string host = address->host == "localhost" ? "127.0.0.1" : address->host;

  m_server->new_task_queue = [] { return new httplib::ThreadPool(k_exposer_threads); };
  m_server->set_read_timeout(k_exposer_read_timeout);
  m_server->set_write_timeout(k_exposer_write_timeout);
  m_server->set_payload_max_length(k_exposer_max_request_body);
  m_server->set_socket_options(socket_options);
  m_server->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(scrape(), k_content_type);
  });
  m_server->Get("/", [page = landing_page()](const httplib::Request&, httplib::Response& res) {
    res.set_content(page, k_html_type);
  });

  errno = 0;
  if (address->port == 0) {
    m_port = m_server->bind_to_any_port(host);
  } else if (m_server->bind_to_port(host, address->port)) {
    m_port = address->port;
  }
  if (m_port <= 0) {
    const int e = errno;
    throw MetricsError("cannot listen on metrics.listen " + listen + ": " +
                       (e != 0 ? std::strerror(e) : "cannot bind the address"));
  }
  httplib::Server* server = m_server.get();
  m_thread = std::thread([server] { server->listen_after_bind(); });
  // stop() only takes effect once the server runs: wait for it.
  const auto deadline = std::chrono::steady_clock::now() + k_exposer_start_timeout;
  while (!m_server->is_running() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!m_server->is_running()) {
    m_server->stop();
    m_thread.join();
    throw MetricsError("metrics.listen: the server on " + listen + " did not start");
  }
}

Exposer::~Exposer() {
  m_server->stop();
  if (m_thread.joinable()) {
    m_thread.join();
  }
}

std::string Exposer::scrape() const {
  std::vector<prometheus::MetricFamily> families;
  for (const auto& weak : m_sources) {
    if (const auto source = weak.lock()) {
      auto collected = source->Collect();
      families.insert(families.end(), std::make_move_iterator(collected.begin()),
                      std::make_move_iterator(collected.end()));
    }
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

} // namespace rrd::metrics
