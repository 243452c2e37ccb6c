// WebhookSink: an in-process webhook receiver on 127.0.0.1 that checks the
// Standard Webhooks signature on its own, with OpenSSL, and
// answers 401 to a bad one; records every delivery; and answers as a test
// scripts it: N times with a status (500, 410, 429 + Retry-After), slowly,
// or not at all (stop() and start() again on the same port).
//
// Thread-safe: m_mutex guards the script, the delay, the deliveries and the
// listener callback; stop()/start() are for one controlling thread.
#pragma once

#include "fakes/local_server.hpp"

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace rrd::testing {

struct Delivery {
  std::string path;
  std::string webhook_id;
  std::string timestamp;     // the header's text (Unix seconds)
  std::string signature;     // the header's text
  bool signature_ok = false; // a v1 signature matches and the timestamp is fresh
  bool timestamp_ok = false;
  std::string body;
  nlohmann::json json;                        // null when the body is not JSON
  std::map<std::string, std::string> headers; // lower-case names
  std::chrono::steady_clock::time_point arrived;
  std::chrono::system_clock::time_point arrived_wall;
  int answered = 0; // the status the sink answered with
};

struct SinkAnswer {
  int status = 200;
  std::chrono::milliseconds delay{0};
  std::vector<std::pair<std::string, std::string>> headers; // e.g. {"Retry-After", "2"}
};

class WebhookSink {
public:
  // Standard Webhooks: timestamps further than this from now are rejected.
  static constexpr std::chrono::seconds k_timestamp_tolerance{300};

  // Starts listening on 127.0.0.1:port (0: ephemeral). `secret` is "whsec_..."
  // With `tls`, it serves HTTPS with that certificate.
  explicit WebhookSink(std::string secret, int port = 0,
                       std::optional<TlsFiles> tls = std::nullopt);
  ~WebhookSink();
  WebhookSink(const WebhookSink&) = delete;
  WebhookSink& operator=(const WebhookSink&) = delete;

  int port() const { return m_port; }
  std::string url() const; // "http://127.0.0.1:PORT/" (https with tls)

  // Down and up again: stop() closes the listener (deliveries fail to
  // connect); start() listens on the same port again.
  void stop();
  void start();
  bool running() const { return m_server.running(); }

  // The next `count` well-signed deliveries get `answer`; then 200 again.
  void script(SinkAnswer answer, int count = 1);
  // Drops what is left of the script: 200 from now on.
  void clear_script();
  // Every answer waits this long first.
  void set_delay(std::chrono::milliseconds delay);
  // Called (outside the lock, on a server thread) after each delivery is
  // recorded. A delivery is recorded when it has been answered (after any delay).
  void on_delivery(std::function<void(const Delivery&)> listener);

  std::vector<Delivery> deliveries() const;
  std::size_t delivery_count() const;
  // Deliveries with a good signature that were answered 2xx.
  std::vector<Delivery> accepted() const;
  // How many accepted() holds, without copying them: for waiting on many
  // (a copy of thousands of deliveries every 10 ms, under the lock the
  // server threads need, slows the sink down).
  std::size_t accepted_count() const;
  void clear();

  // Standard Webhooks, checked independently of the daemon's code.
  // `signatures` is the header: space-separated "v1,<base64>" entries.
  static bool verify(const std::string& secret, const std::string& id, const std::string& timestamp,
                     const std::string& body, const std::string& signatures);
  // "v1,<base64>"; throws std::invalid_argument on a malformed secret.
  static std::string sign(const std::string& secret, const std::string& id,
                          const std::string& timestamp, const std::string& body);

private:
  void handle(const httplib::Request& req, httplib::Response& res);

  const std::string m_secret;
  int m_port = 0; // written by the constructor only
  std::atomic<bool> m_stopping{false};

  mutable std::mutex m_mutex;
  // --- guarded by m_mutex ---
  std::deque<SinkAnswer> m_script;
  std::chrono::milliseconds m_delay{0};
  std::vector<Delivery> m_deliveries;
  std::function<void(const Delivery&)> m_listener;
  // --- end of guarded state ---

  LocalHttpServer m_server; // last: stopped first
};

} // namespace rrd::testing
