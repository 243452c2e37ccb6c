#include "fakes/webhook_sink.hpp"

#include "fakes/codec.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace rrd::testing {

namespace {

bool is_accepted(const Delivery& d) {
  return d.signature_ok && d.answered >= 200 && d.answered < 300;
}

constexpr auto k_poll_interval = std::chrono::milliseconds(10);
constexpr char k_secret_prefix[] = "whsec_";

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::optional<std::string> secret_key(const std::string& secret) {
  const std::string prefix = k_secret_prefix;
  if (secret.rfind(prefix, 0) != 0) {
    return std::nullopt;
  }
  return base64_decode(secret.substr(prefix.size()));
}

// Compares without an early exit, as a receiver should.
bool same(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) {
    return false;
  }
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

bool timestamp_fresh(const std::string& text) {
  if (text.empty() || text.size() > 12 ||
      !std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); })) {
    return false;
  }
  const long long ts = std::stoll(text);
  const long long now = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
  return std::llabs(now - ts) <= WebhookSink::k_timestamp_tolerance.count();
}

} // namespace

WebhookSink::WebhookSink(std::string secret, int port, std::optional<TlsFiles> tls)
    : m_secret(std::move(secret)),
      m_server(
          [this](httplib::Server& server) {
            server.Post(".*", [this](const auto& req, auto& res) { handle(req, res); });
          },
          std::move(tls)) {
  if (!secret_key(m_secret)) {
    throw std::invalid_argument("WebhookSink: the secret must be whsec_ + base64");
  }
  m_server.start(port);
  m_port = m_server.port();
}

WebhookSink::~WebhookSink() {
  stop();
}

std::string WebhookSink::url() const {
  return m_server.scheme() + "://127.0.0.1:" + std::to_string(m_port) + "/";
}

void WebhookSink::stop() {
  m_stopping = true;
  m_server.stop();
}

void WebhookSink::start() {
  if (m_server.running()) {
    return;
  }
  m_stopping = false;
  m_server.start(m_port);
}

void WebhookSink::script(SinkAnswer answer, int count) {
  std::lock_guard lock(m_mutex);
  for (int i = 0; i < count; ++i) {
    m_script.push_back(answer);
  }
}

void WebhookSink::clear_script() {
  std::lock_guard lock(m_mutex);
  m_script.clear();
}

void WebhookSink::set_delay(std::chrono::milliseconds delay) {
  std::lock_guard lock(m_mutex);
  m_delay = delay;
}

void WebhookSink::on_delivery(std::function<void(const Delivery&)> listener) {
  std::lock_guard lock(m_mutex);
  m_listener = std::move(listener);
}

std::vector<Delivery> WebhookSink::deliveries() const {
  std::lock_guard lock(m_mutex);
  return m_deliveries;
}

std::size_t WebhookSink::delivery_count() const {
  std::lock_guard lock(m_mutex);
  return m_deliveries.size();
}

std::vector<Delivery> WebhookSink::accepted() const {
  std::lock_guard lock(m_mutex);
  std::vector<Delivery> out;
  for (const auto& d : m_deliveries) {
    if (is_accepted(d)) {
      out.push_back(d);
    }
  }
  return out;
}

std::size_t WebhookSink::accepted_count() const {
  std::lock_guard lock(m_mutex);
  return static_cast<std::size_t>(
      std::count_if(m_deliveries.begin(), m_deliveries.end(), is_accepted));
}

void WebhookSink::clear() {
  std::lock_guard lock(m_mutex);
  m_deliveries.clear();
}

std::string WebhookSink::sign(const std::string& secret, const std::string& id,
                              const std::string& timestamp, const std::string& body) {
  const auto key = secret_key(secret);
  if (!key) {
    throw std::invalid_argument("the secret must be whsec_ + base64");
  }
  return "v1," + base64_encode(hmac_sha256(*key, id + "." + timestamp + "." + body));
}

bool WebhookSink::verify(const std::string& secret, const std::string& id,
                         const std::string& timestamp, const std::string& body,
                         const std::string& signatures) {
  if (!secret_key(secret) || id.empty() || timestamp.empty()) {
    return false;
  }
  const std::string expected = sign(secret, id, timestamp, body);
  std::istringstream in(signatures);
  std::string candidate;
  bool ok = false;
  while (in >> candidate) {
    ok = same(candidate, expected) || ok;
  }
  return ok;
}

void WebhookSink::handle(const httplib::Request& req, httplib::Response& res) {
  Delivery d;
  d.arrived = std::chrono::steady_clock::now();
  d.arrived_wall = std::chrono::system_clock::now();
  d.path = req.path;
  d.webhook_id = req.get_header_value("webhook-id");
  d.timestamp = req.get_header_value("webhook-timestamp");
  d.signature = req.get_header_value("webhook-signature");
  d.body = req.body;
  for (const auto& [name, value] : req.headers) {
    d.headers[lower(name)] = value;
  }
  try {
    d.json = nlohmann::json::parse(req.body);
  } catch (const nlohmann::json::exception&) {
    d.json = nullptr;
  }
  d.timestamp_ok = timestamp_fresh(d.timestamp);
  d.signature_ok =
      d.timestamp_ok && verify(m_secret, d.webhook_id, d.timestamp, d.body, d.signature);

  SinkAnswer answer;
  std::chrono::milliseconds delay{0};
  {
    std::lock_guard lock(m_mutex);
    delay = m_delay;
    if (!d.signature_ok) {
      answer.status = 401;
    } else if (!m_script.empty()) {
      answer = m_script.front();
      m_script.pop_front();
    }
  }
  delay += answer.delay;
  const auto until = std::chrono::steady_clock::now() + delay;
  while (!m_stopping && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(k_poll_interval);
  }
  res.status = answer.status;
  for (const auto& [name, value] : answer.headers) {
    res.set_header(name, value);
  }
  if (answer.status == 401) {
    res.set_content(R"({"error":"bad signature"})", "application/json");
  }
  d.answered = answer.status;

  std::function<void(const Delivery&)> listener;
  {
    std::lock_guard lock(m_mutex);
    m_deliveries.push_back(d);
    listener = m_listener;
  }
  if (listener) {
    listener(d);
  }
}

} // namespace rrd::testing
