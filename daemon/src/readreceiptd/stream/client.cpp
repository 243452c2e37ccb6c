#include "readreceiptd/stream/client.hpp"

#include "readreceiptd/app/logging.hpp"
#include "readreceiptd/common/version.hpp"
#include "readreceiptd/stream/policy.hpp"

#include <algorithm>
#include <array>
#include <openssl/rand.h>

namespace rrd::stream {

const char* to_string(DisconnectReason r) {
  switch (r) {
  case DisconnectReason::server:
    return "server";
  case DisconnectReason::network:
    return "network";
  case DisconnectReason::ping_timeout:
    return "ping_timeout";
  case DisconnectReason::protocol:
    return "protocol";
  }
  return "network";
}

const char* to_string(EventResult r) {
  switch (r) {
  case EventResult::applied:
    return "applied";
  case EventResult::duplicate:
    return "duplicate";
  case EventResult::untracked:
    return "untracked";
  case EventResult::ignored:
    return "ignored";
  case EventResult::bad:
    return "bad";
  }
  return "bad";
}

namespace {

// WebSocket close codes (RFC 6455 section 7.4.1).
constexpr std::uint16_t k_close_normal = 1000;
constexpr std::uint16_t k_close_protocol = 1002;

std::string new_key() {
  std::array<unsigned char, 16> nonce{};
  if (RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) != 1) {
    // Only uniqueness matters for the key (RFC 6455 4.1); fall back on the clock.
    const auto t = std::chrono::steady_clock::now().time_since_epoch().count();
    for (std::size_t i = 0; i < nonce.size(); ++i) {
      nonce[i] = static_cast<unsigned char>(t >> ((i % 8) * 8));
    }
  }
  return make_websocket_key(nonce);
}

} // namespace

// One WebSocket connection, and the engine's handler for its socket.
struct Client::Connection final : http::StreamHandler {
  enum class Phase { connecting, upgrading, open, closing };

  Connection(Client& owner, std::uint64_t connection_id, std::string expected_accept, TimePoint now)
      : client(owner), id(connection_id), upgrade(std::move(expected_accept)), started(now),
        last_frame(now) {}

  void on_open() override { client.on_socket_open(*this); }
  void on_data(std::string_view bytes) override { client.on_socket_data(*this, bytes); }
  void on_closed(http::Failure failure, const std::string& why) override {
    client.on_socket_closed(*this, failure, why);
  }

  Client& client;
  std::uint64_t id;
  std::unique_ptr<http::StreamConnection> socket;
  std::string request; // the upgrade request, sent once the socket opens
  UpgradeParser upgrade;
  WebSocket ws{k_max_message_bytes};
  Phase phase = Phase::connecting;
  TimePoint started;
  TimePoint opened_at{};
  TimePoint last_frame;
  std::uint64_t frames_seen = 0;
  std::optional<TimePoint> ping_sent;
  std::size_t acks_pending = 0;
  std::optional<TimePoint> close_by; // closing, or retiring after a handover
  bool retiring = false;             // replaced by a newer connection
  bool counted_loss = false;         // its loss was reported already
  DisconnectReason close_reason = DisconnectReason::network;
};

Client::Client(const config::DingTalk& cfg, http::Engine& engine, const Clock& clock,
               scheduler::RateLimiter& limiter, ReadSink& sink, Observer& observer,
               std::uint64_t seed)
    : m_cfg(cfg), m_credentials(credentials(cfg)), m_engine(engine), m_clock(clock),
      m_limiter(limiter), m_sink(sink), m_observer(observer), m_rng(seed), m_retry_at(clock.now()),
      m_state_since(clock.now()), m_alive(std::make_shared<Client*>(this)) {}

Client::~Client() = default;

double Client::random01() {
  return std::uniform_real_distribution<double>(0.0, 1.0)(m_rng);
}

bool Client::connected() const {
  return m_connected;
}

Client::Connection* Client::find(std::uint64_t id) {
  const auto it = m_connections.find(id);
  return it == m_connections.end() ? nullptr : it->second.get();
}

void Client::set_connected(bool up, TimePoint now) {
  if (up == m_connected) {
    return;
  }
  m_connected = up;
  m_state_since = now;
  m_observer.connected_changed(up);
}

void Client::reconfigure(const config::DingTalk& cfg) {
  const bool changed =
      cfg.endpoint != m_cfg.endpoint || cfg.ca_file != m_cfg.ca_file ||
      credentials(cfg).has_value() != m_credentials.has_value() ||
      (m_credentials && (credentials(cfg)->client_id != m_credentials->client_id ||
                         credentials(cfg)->client_secret != m_credentials->client_secret)) ||
      cfg.third_party.auth_corp_id != m_cfg.third_party.auth_corp_id;
  m_cfg = cfg;
  m_credentials = credentials(cfg);
  if (!changed) {
    return;
  }
  logging::info("Stream: the DingTalk endpoint or credentials changed; reconnecting");
  m_credentials_logged = false;
  m_failures = 0;
  m_gateway_attempt = 0; // an answer for the old settings is ignored
  for (auto& [id, c] : m_connections) {
    if (c->phase != Connection::Phase::closing) {
      c->counted_loss = true; // a chosen move, not a loss
      close(*c, k_close_normal, DisconnectReason::server, "reconfigured");
    }
  }
  m_current = 0;
  m_handover = false;
  set_connected(false, m_clock.now());
  m_retry_at = m_clock.now();
}

void Client::stop() {
  m_stopped = true;
  m_gateway_attempt = 0;
  for (auto& [id, c] : m_connections) {
    if (c->phase != Connection::Phase::closing) {
      c->counted_loss = true;
      close(*c, k_close_normal, DisconnectReason::server, "stopping");
    }
  }
  m_current = 0;
  set_connected(false, m_clock.now());
}

// ---------------------------------------------------------------- the loop

void Client::pump() {
  m_dead.clear();
  const TimePoint now = m_clock.now();
  m_waiting_for_slot = false;
  // Keep-alive, handover and close deadlines.
  std::vector<Connection*> to_close;
  std::vector<Connection*> to_drop;
  for (auto& [id, c] : m_connections) {
    if (c->phase == Connection::Phase::closing || c->retiring) {
      if (c->close_by && now >= *c->close_by) {
        (c->phase == Connection::Phase::closing ? to_drop : to_close).push_back(c.get());
      } else if (c->retiring && c->acks_pending == 0) {
        to_close.push_back(c.get());
      }
      continue;
    }
    if (c->phase != Connection::Phase::open) {
      if (now >= c->started + m_cfg.request_timeout + http::k_default_connect_timeout) {
        c->close_reason = DisconnectReason::network;
        to_close.push_back(c.get());
      }
      continue;
    }
    const KeepAlive k = keep_alive(now, c->last_frame, c->ping_sent);
    if (k.action == KeepAlive::Action::send_ping) {
      c->ping_sent = now;
      c->ws.queue_ping("readreceiptd");
      flush(*c);
    } else if (k.action == KeepAlive::Action::dead) {
      to_close.push_back(c.get());
      c->close_reason = DisconnectReason::ping_timeout;
    }
  }
  for (Connection* c : to_close) {
    if (c->retiring) {
      c->counted_loss = true;
      close(*c, k_close_normal, DisconnectReason::server, "moved to a new connection");
    } else if (c->phase != Connection::Phase::open) {
      logging::warn("Stream: the WebSocket handshake did not complete in time");
      lost(*c, DisconnectReason::network, "handshake timed out");
    } else {
      logging::warn("Stream: no answer to a WebSocket ping; reconnecting",
                    {{"timeout_seconds", k_pong_timeout.count() / 1000}});
      lost(*c, DisconnectReason::ping_timeout, "ping timeout");
    }
  }
  for (Connection* c : to_drop) {
    auto it = m_connections.find(c->id);
    if (it != m_connections.end()) {
      m_dead.push_back(std::move(it->second)); // its socket closes with it
      m_connections.erase(it);
    }
  }
  // A (re)connect: when none is open or being opened, or for a handover.
  if (wants_connection() && now >= m_retry_at) {
    start_gateway(now);
  }
}

bool Client::wants_connection() const {
  if (m_stopped || !m_credentials || m_gateway_attempt != 0 || (m_current != 0 && !m_handover)) {
    return false;
  }
  // Not while one is being opened.
  return std::none_of(m_connections.begin(), m_connections.end(), [](const auto& e) {
    return e.second->phase == Connection::Phase::connecting ||
           e.second->phase == Connection::Phase::upgrading;
  });
}

std::optional<TimePoint> Client::next_wakeup() const {
  const TimePoint now = m_clock.now();
  std::optional<TimePoint> next;
  auto consider = [&](TimePoint t) {
    if (!next || t < *next) {
      next = t;
    }
  };
  if (!m_dead.empty()) {
    consider(now);
  }
  for (const auto& [id, c] : m_connections) {
    if (c->close_by) {
      consider(*c->close_by);
    }
    if (c->retiring && c->acks_pending == 0) {
      consider(now);
    }
    if (c->phase == Connection::Phase::open && !c->retiring) {
      consider(keep_alive(now, c->last_frame, c->ping_sent).next);
    } else if (c->phase == Connection::Phase::connecting ||
               c->phase == Connection::Phase::upgrading) {
      consider(c->started + m_cfg.request_timeout + http::k_default_connect_timeout);
    }
  }
  if (wants_connection()) {
    consider(m_waiting_for_slot ? m_limiter.next_allowed(now) : std::max(now, m_retry_at));
  }
  return next;
}

// ---------------------------------------------------------------- opening

void Client::start_gateway(TimePoint now) {
  if (m_gate != nullptr && !m_gate->may_start()) {
    return; // not the leader, or past its deadline: no DingTalk call starts
  }
  if (!m_limiter.try_acquire(now)) {
    m_waiting_for_slot = true;
    return;
  }
  const std::uint64_t attempt = m_next_id++;
  m_gateway_attempt = attempt;
  logging::debug("Stream: asking DingTalk's gateway for a connection");
  m_engine.submit(build_gateway_request(m_cfg, *m_credentials),
                  [this, attempt](http::Response r) { on_gateway(attempt, std::move(r)); });
}

void Client::on_gateway(std::uint64_t attempt, http::Response r) {
  const TimePoint now = m_clock.now();
  const bool plain = m_cfg.endpoint.rfind("http://", 0) == 0;
  const GatewayAnswer a = classify_gateway(r, plain);
  dingtalk::FailureReason reason = dingtalk::FailureReason::none;
  switch (a.outcome) {
  case GatewayOutcome::ok:
    break;
  case GatewayOutcome::throttled:
    reason = dingtalk::FailureReason::throttled;
    break;
  case GatewayOutcome::credentials:
    reason = dingtalk::FailureReason::auth;
    break;
  case GatewayOutcome::transient:
    reason = r.failure == http::Failure::timeout ? dingtalk::FailureReason::timeout
             : r.failure != http::Failure::none  ? dingtalk::FailureReason::network
             : r.status >= 500                   ? dingtalk::FailureReason::server
                                                 : dingtalk::FailureReason::bad_response;
    break;
  }
  m_observer.gateway_finished(r.duration, reason);
  if (attempt != m_gateway_attempt || m_stopped) {
    return; // reconfigured or stopped meanwhile
  }
  m_gateway_attempt = 0;
  if (a.outcome == GatewayOutcome::throttled) {
    m_limiter.on_throttled(now);
  } else if (r.failure == http::Failure::none) {
    m_limiter.on_success(now);
  }
  if (a.outcome == GatewayOutcome::credentials) {
    if (!m_credentials_logged) {
      m_credentials_logged = true;
      logging::error("Stream: DingTalk's gateway refused the app's credentials; retrying at the "
                     "slowest step; reads are still polled",
                     {{"reason", a.message}, {"retry_seconds", k_max_retry.count() / 1000}});
    }
    attempt_failed(now, true);
    return;
  }
  if (a.outcome != GatewayOutcome::ok) {
    logging::warn("Stream: cannot open a connection", {{"reason", a.message}});
    attempt_failed(now, false);
    return;
  }
  std::string why;
  const auto target = parse_ws_url(a.ticket.url, why);
  if (!target) {
    logging::warn("Stream: the gateway's endpoint is unusable", {{"reason", why}});
    attempt_failed(now, false);
    return;
  }
  const std::string key = new_key();
  const std::uint64_t id = m_next_id++;
  auto owned = std::make_unique<Connection>(*this, id, websocket_accept(key), now);
  Connection& c = *owned;
  c.request = upgrade_request(*target, key, std::string("readreceiptd/") + k_version);
  m_connections.emplace(id, std::move(owned));
  http::StreamRequest request;
  request.url = target->http_url;
  request.connect_timeout = std::min(m_cfg.request_timeout, http::k_default_connect_timeout);
  request.ca_file = m_cfg.ca_file;
  c.socket = m_engine.open_stream(request, c);
  if (!c.socket) {
    logging::warn("Stream: the HTTP engine cannot open a WebSocket");
    m_dead.push_back(std::move(m_connections[id]));
    m_connections.erase(id);
    attempt_failed(now, false);
    return;
  }
  logging::debug("Stream: connecting", {{"host", target->host}, {"port", target->port}});
}

void Client::attempt_failed(TimePoint now, bool credentials_refused) {
  // During a handover the current connection still works meanwhile.
  ++m_failures;
  m_retry_at = now + reconnect_delay(m_failures, credentials_refused, random01());
}

void Client::on_socket_open(Connection& c) {
  c.phase = Connection::Phase::upgrading;
  c.socket->send(c.request);
  c.request.clear();
}

void Client::on_socket_data(Connection& c, std::string_view bytes) {
  const TimePoint now = m_clock.now();
  if (c.phase == Connection::Phase::closing) {
    if (c.ws.receive(bytes)) {
      c.ws.messages().clear();
    }
    flush(c);
    return;
  }
  std::string leftover;
  if (c.phase == Connection::Phase::upgrading) {
    switch (c.upgrade.feed(bytes)) {
    case UpgradeParser::State::more:
      return;
    case UpgradeParser::State::refused:
      logging::warn("Stream: the WebSocket handshake was refused",
                    {{"status", c.upgrade.status()}});
      lost(c, DisconnectReason::protocol, "handshake refused");
      return;
    case UpgradeParser::State::invalid:
      logging::warn("Stream: the WebSocket handshake failed", {{"reason", c.upgrade.error()}});
      lost(c, DisconnectReason::protocol, "handshake failed");
      return;
    case UpgradeParser::State::accepted:
      accepted(c);
      leftover = c.upgrade.take_leftover();
      bytes = leftover;
      if (bytes.empty()) {
        return;
      }
      break;
    }
  }
  if (c.phase != Connection::Phase::open) {
    return;
  }
  const bool ok = c.ws.receive(bytes);
  if (c.ws.frames_received() != c.frames_seen) {
    c.frames_seen = c.ws.frames_received();
    c.last_frame = now;
    c.ping_sent.reset();
  }
  std::vector<WsMessage> messages;
  messages.swap(c.ws.messages());
  const std::uint64_t id = c.id;
  for (auto& m : messages) {
    if (find(id) == nullptr || c.phase != Connection::Phase::open) {
      break;
    }
    switch (m.type) {
    case WsMessage::Type::text:
      handle_text(c, m.payload);
      break;
    case WsMessage::Type::binary:
      m_observer.event(EventResult::bad);
      logging::debug("Stream: a binary frame, dropped");
      break;
    case WsMessage::Type::pong:
      break;
    case WsMessage::Type::close:
      logging::info("Stream: DingTalk closed the connection", {{"code", m.close_code}});
      flush(c); // wslay answered the close
      lost(c, DisconnectReason::server, "closed by the server");
      return;
    }
  }
  if (find(id) == nullptr || c.phase != Connection::Phase::open) {
    return;
  }
  if (!ok) {
    const bool too_large = c.ws.close_code_sent() == 1009;
    logging::warn("Stream: the connection is unusable; reconnecting", {{"reason", c.ws.error()}});
    flush(c); // the close frame wslay queued
    lost(c, DisconnectReason::protocol, too_large ? "message too large" : "broken framing");
    return;
  }
  flush(c);
}

void Client::accepted(Connection& c) {
  const TimePoint now = m_clock.now();
  c.phase = Connection::Phase::open;
  c.opened_at = now;
  c.last_frame = now;
  m_observer.connection_opened();
  if (m_current != 0 && m_current != c.id) {
    if (Connection* old = find(m_current)) {
      // A handover: the old connection finishes its acknowledgements, then goes.
      old->retiring = true;
      old->close_by = now + k_handover_grace;
    }
    logging::info("Stream: moved to a new connection");
  } else {
    logging::info("Stream: connected; reads arrive as people read");
  }
  m_current = c.id;
  m_handover = false;
  set_connected(true, now);
}

void Client::handle_text(Connection& c, const std::string& text) {
  const Frame f = parse_frame(text);
  switch (f.kind) {
  case Frame::Kind::ping:
    send(c, ping_answer(f));
    return;
  case Frame::Kind::disconnect:
    logging::info("Stream: DingTalk asks to move to a new connection",
                  {{"reason", disconnect_reason(f)}});
    c.close_reason = DisconnectReason::server; // if it goes before the move
    if (c.id == m_current && !m_handover) {
      m_handover = true;
      m_retry_at = m_clock.now(); // a new connection at once
    }
    return;
  case Frame::Kind::event:
    handle_event(c, f);
    return;
  case Frame::Kind::callback:
    m_observer.event(EventResult::ignored);
    send(c, callback_refusal(f.message_id));
    return;
  case Frame::Kind::system_other:
  case Frame::Kind::other:
    m_observer.event(EventResult::ignored);
    logging::debug("Stream: ignored a frame", {{"topic", f.topic}});
    return;
  case Frame::Kind::bad:
    m_observer.event(EventResult::bad);
    logging::warn("Stream: dropped a frame that is not DingTalk's", {{"reason", f.why}});
    return;
  }
}

void Client::handle_event(Connection& c, const Frame& f) {
  m_last_event = m_clock.now();
  if (f.event_type != k_event_robot_msg_read) {
    m_observer.event(EventResult::ignored);
    send(c, event_ack(f.message_id));
    return;
  }
  if (m_cfg.auth_kind == config::DingTalk::AuthKind::third_party &&
      f.event_corp_id != m_cfg.third_party.auth_corp_id) {
    m_observer.event(EventResult::ignored);
    logging::debug("Stream: an event for another organisation, ignored");
    send(c, event_ack(f.message_id));
    return;
  }
  auto parsed = parse_read_event(f.data);
  if (!parsed) {
    // Sending it again would not make it readable: consumed, and counted.
    m_observer.event(EventResult::bad);
    logging::warn("Stream: a robot_msg_read event that cannot be read",
                  {{"reason", parsed.error()}});
    send(c, event_ack(f.message_id));
    return;
  }
  if (!parsed->user_id) {
    m_observer.event(EventResult::ignored); // a reader outside the organisation
    send(c, event_ack(f.message_id));
    return;
  }
  const std::uint64_t id = c.id;
  const std::string message_id = f.message_id;
  ++c.acks_pending;
  const std::weak_ptr<Client*> alive = m_alive;
  const auto outcome = m_sink.push_read(*parsed, [alive, id, message_id](bool committed) {
    const auto self = alive.lock();
    if (!self) {
      return; // the client is gone (shutdown): DingTalk sends the event again
    }
    Client& client = **self;
    Connection* conn = client.find(id);
    if (conn == nullptr) {
      return; // gone: DingTalk sends the event again, or a poll finds the read
    }
    --conn->acks_pending;
    if (committed && conn->phase == Connection::Phase::open) {
      client.send(*conn, event_ack(message_id));
    }
  });
  switch (outcome) {
  case ReadSink::Outcome::pending:
    m_observer.event(EventResult::applied);
    return;
  case ReadSink::Outcome::duplicate:
    m_observer.event(EventResult::duplicate);
    break;
  case ReadSink::Outcome::untracked:
    m_observer.event(EventResult::untracked);
    break;
  }
  --c.acks_pending;
  send(c, event_ack(message_id));
}

// ---------------------------------------------------------------- writing

void Client::send(Connection& c, const std::string& text) {
  if (c.phase != Connection::Phase::open) {
    return;
  }
  if (m_gate != nullptr && !m_gate->may_start()) {
    // Past the leader's deadline: nothing is acknowledged. DingTalk sends
    // an unacknowledged event again, to whoever leads by then.
    return;
  }
  c.ws.queue_text(text);
  flush(c);
}

void Client::flush(Connection& c) {
  std::string out = c.ws.take_output();
  if (!out.empty() && c.socket) {
    c.socket->send(out);
  }
}

// ---------------------------------------------------------------- closing

void Client::close(Connection& c, std::uint16_t code, DisconnectReason reason,
                   const std::string& why) {
  if (c.phase == Connection::Phase::closing) {
    return;
  }
  const bool was_open = c.phase == Connection::Phase::open;
  c.phase = Connection::Phase::closing;
  c.close_reason = reason;
  c.close_by = m_clock.now() + k_close_grace;
  if (was_open && !c.ws.close_sent()) {
    c.ws.queue_close(code, why);
  }
  flush(c);
  if (c.socket) {
    c.socket->close(); // writes the close frame, then on_closed()
  }
  if (c.id == m_current) {
    m_current = 0;
  }
}

// The current connection (or one being opened) is lost: report it and
// schedule the next attempt.
void Client::lost(Connection& c, DisconnectReason reason, const std::string& why) {
  const TimePoint now = m_clock.now();
  const bool was_current = c.id == m_current;
  const bool had_opened = c.opened_at != TimePoint{};
  const bool was_retiring = c.retiring;
  const bool already = c.counted_loss;
  c.counted_loss = true;
  close(c, reason == DisconnectReason::protocol ? k_close_protocol : k_close_normal, reason, why);
  if (already || was_retiring || m_stopped) {
    return;
  }
  if (was_current) {
    m_observer.disconnected(reason);
    set_connected(false, now);
    m_handover = false;
    m_failures = failures_after_loss(m_failures, had_opened ? now - c.opened_at : Millis{0});
    m_retry_at = now + reconnect_delay(m_failures, false, random01());
    logging::warn("Stream: connection lost; polls carry the reads meanwhile",
                  {{"reason", to_string(reason)}, {"retry_in_ms", (m_retry_at - now).count()}});
  } else {
    attempt_failed(now, false); // a new connection that never opened
  }
}

void Client::on_socket_closed(Connection& c, http::Failure failure, const std::string& why) {
  if (c.phase != Connection::Phase::closing) {
    if (c.phase == Connection::Phase::connecting) {
      logging::warn("Stream: cannot connect", {{"reason", why}});
    } else if (!c.retiring) {
      logging::warn("Stream: the connection ended", {{"reason", why}});
    }
    lost(c, failure == http::Failure::timeout ? DisconnectReason::network : c.close_reason, why);
  }
  // The socket is done: forget the connection once this callback returns.
  auto it = m_connections.find(c.id);
  if (it != m_connections.end()) {
    m_dead.push_back(std::move(it->second));
    m_connections.erase(it);
  }
}

} // namespace rrd::stream
