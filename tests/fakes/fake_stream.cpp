#include "fakes/fake_stream.hpp"

#include "fakes/stream_protocol.hpp"
#include "fakes/ws_frame.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdexcept>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wslay/wslay.h>

namespace rrd::testing {

namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;

constexpr int k_listen_backlog = 511;
constexpr std::size_t k_max_log_lines = 10'000;
constexpr std::size_t k_read_chunk = 16 * 1024;
constexpr auto k_settle_timeout = std::chrono::seconds(5);
constexpr char k_path[] = "/connect";

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t");
  if (first == std::string::npos) {
    return "";
  }
  const auto last = s.find_last_not_of(" \t");
  return s.substr(first, last - first + 1);
}

// True when the comma-separated header value holds `token` (case-insensitive).
bool has_token(const std::string& value, const std::string& token) {
  std::size_t start = 0;
  while (start <= value.size()) {
    const auto comma = value.find(',', start);
    const auto piece =
        value.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (lower(trim(piece)) == token) {
      return true;
    }
    if (comma == std::string::npos) {
      break;
    }
    start = comma + 1;
  }
  return false;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

// %XX decoded; nullopt on a broken escape.
std::optional<std::string> url_decode(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size() || hex_value(s[i + 1]) < 0 || hex_value(s[i + 2]) < 0) {
      return std::nullopt;
    }
    out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
    i += 2;
  }
  return out;
}

// The value of query parameter `name` (still encoded), or nullopt.
std::optional<std::string> query_param(const std::string& query, const std::string& name) {
  std::size_t start = 0;
  while (start <= query.size()) {
    const auto amp = query.find('&', start);
    const auto piece =
        query.substr(start, amp == std::string::npos ? std::string::npos : amp - start);
    const auto eq = piece.find('=');
    if (piece.substr(0, eq) == name) {
      return eq == std::string::npos ? "" : piece.substr(eq + 1);
    }
    if (amp == std::string::npos) {
      break;
    }
    start = amp + 1;
  }
  return std::nullopt;
}

std::string reason_phrase(int status) {
  switch (status) {
  case 101:
    return "Switching Protocols";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 404:
    return "Not Found";
  default:
    return "Error";
  }
}

// --- wslay callbacks; user_data is the Connection ---

struct WsMessage {
  std::uint8_t opcode = 0;
  std::string payload;
  std::uint16_t status = 0;
};

} // namespace

struct FakeStream::Connection {
  enum class Phase { handshake, refusing, websocket };

  Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() {
    if (ctx != nullptr) {
      wslay_event_context_free(ctx);
    }
    if (fd >= 0) {
      ::close(fd);
    }
  }

  int fd = -1;
  int id = 0; // set by the 101 answer
  Phase phase = Phase::handshake;
  SteadyClock::time_point accepted{}; // real time
  std::string in;                     // the handshake's bytes; then bytes read past it, for wslay
  std::string out;                    // raw bytes to write first (the handshake's answer)
  wslay_event_context_ptr ctx = nullptr;
  std::vector<WsMessage> inbox;
  bool eof = false;
  bool io_error = false;
  std::string client_id;
  SteadyTime opened_at{};
  SteadyTime last_ping{};
  bool draining = false; // a SYSTEM disconnect was sent
  SteadyTime close_at{};
  bool closing = false;                                // our close frame is queued
  std::string closing_by;                              // what closed_by says once the close is done
  std::optional<SteadyClock::time_point> linger_until; // real time
  bool stalled = false;
  SteadyClock::time_point stalled_since{}; // real time
  bool dead = false;                       // closed; removed at the end of the turn
};

namespace {

ssize_t on_recv(wslay_event_context_ptr ctx, std::uint8_t* buf, std::size_t len, int /*flags*/,
                void* user_data) {
  auto* c = static_cast<FakeStream::Connection*>(user_data);
  if (!c->in.empty()) {
    const std::size_t n = std::min(len, c->in.size());
    std::copy_n(c->in.data(), n, reinterpret_cast<char*>(buf));
    c->in.erase(0, n);
    return static_cast<ssize_t>(n);
  }
  const ssize_t r = ::recv(c->fd, buf, len, 0);
  if (r > 0) {
    return r;
  }
  if (r == 0) {
    c->eof = true;
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  c->io_error = true;
  wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
  return -1;
}

ssize_t on_send(wslay_event_context_ptr ctx, const std::uint8_t* data, std::size_t len,
                int /*flags*/, void* user_data) {
  auto* c = static_cast<FakeStream::Connection*>(user_data);
  const ssize_t r = ::send(c->fd, data, len, MSG_NOSIGNAL);
  if (r >= 0) {
    return r;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  c->io_error = true;
  wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
  return -1;
}

void on_msg(wslay_event_context_ptr /*ctx*/, const wslay_event_on_msg_recv_arg* arg,
            void* user_data) {
  auto* c = static_cast<FakeStream::Connection*>(user_data);
  WsMessage m;
  m.opcode = arg->opcode;
  m.payload.assign(reinterpret_cast<const char*>(arg->msg), arg->msg_length);
  m.status = arg->status_code;
  c->inbox.push_back(std::move(m));
}

const char* k_unknown_system_topics[] = {"KEEPALIVE", "CONNECTED", "REGISTERED",
                                         "fake_unknown_topic"};

} // namespace

std::string to_string(StreamGarbage kind) {
  switch (kind) {
  case StreamGarbage::not_json:
    return "not_json";
  case StreamGarbage::binary:
    return "binary";
  case StreamGarbage::no_message_id:
    return "no_message_id";
  case StreamGarbage::unknown_system_topic:
    return "unknown_system_topic";
  case StreamGarbage::oversized:
    return "oversized";
  }
  return "unknown";
}

std::string to_string(StreamDrop how) {
  switch (how) {
  case StreamDrop::reset:
    return "reset";
  case StreamDrop::fin:
    return "fin";
  case StreamDrop::close_frame:
    return "close_frame";
  }
  return "unknown";
}

std::string to_string(StreamEventState state) {
  switch (state) {
  case StreamEventState::waiting:
    return "waiting";
  case StreamEventState::in_flight:
    return "in_flight";
  case StreamEventState::acknowledged:
    return "acknowledged";
  case StreamEventState::lost:
    return "lost";
  }
  return "unknown";
}

// --- life ---

FakeStream::FakeStream(FakeStreamOptions options, std::function<SteadyTime()> now,
                       std::uint64_t seed, std::function<void()> on_turn)
    : m_epoch_base(std::chrono::system_clock::now()), m_steady_base(SteadyClock::now()),
      m_on_turn(std::move(on_turn)), m_options(std::move(options)), m_now(std::move(now)),
      m_rng(seed ^ 0x53545245414dULL) {
  if (!m_now) {
    m_now = [] { return SteadyClock::now(); };
  }
  if (m_options.unified_app_id.empty()) {
    m_options.unified_app_id = new_uuid();
  }
  m_listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (m_listen_fd < 0) {
    throw std::runtime_error(std::string("FakeStream: socket: ") + std::strerror(errno));
  }
  const int one = 1;
  ::setsockopt(m_listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(m_options.port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(m_listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(m_listen_fd, k_listen_backlog) != 0) {
    const std::string error = std::strerror(errno);
    ::close(m_listen_fd);
    throw std::runtime_error(
        "FakeStream: cannot listen on 127.0.0.1:" + std::to_string(m_options.port) + ": " + error);
  }
  socklen_t len = sizeof addr;
  ::getsockname(m_listen_fd, reinterpret_cast<sockaddr*>(&addr), &len);
  m_port = ntohs(addr.sin_port);
  m_wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (m_wake_fd < 0) {
    ::close(m_listen_fd);
    throw std::runtime_error(std::string("FakeStream: eventfd: ") + std::strerror(errno));
  }
  m_thread = std::thread([this] { run(); });
}

FakeStream::~FakeStream() {
  stop();
  ::close(m_wake_fd);
  ::close(m_listen_fd);
}

void FakeStream::stop() {
  {
    std::lock_guard lock(m_mutex);
    m_stopping = true;
  }
  wake();
  if (m_thread.joinable()) {
    m_thread.join();
  }
  std::lock_guard lock(m_mutex);
  for (auto& c : m_connections) {
    if (!c->dead && c->phase == Connection::Phase::websocket) {
      close_connection(*c, "stopped");
    }
  }
  m_connections.clear();
  m_turned.notify_all();
}

std::string FakeStream::endpoint() const {
  return "ws://127.0.0.1:" + std::to_string(m_port) + k_path;
}

std::string FakeStream::ws_url(const std::string& ticket) const {
  return endpoint() + "?ticket=" + ticket;
}

FakeStreamOptions FakeStream::options() const {
  std::lock_guard lock(m_mutex);
  return m_options;
}

void FakeStream::configure(const std::function<void(FakeStreamOptions&)>& change) {
  {
    std::lock_guard lock(m_mutex);
    change(m_options);
  }
  wake();
}

void FakeStream::set_time_source(std::function<SteadyTime()> now_fn) {
  {
    std::lock_guard lock(m_mutex);
    m_now = std::move(now_fn);
  }
  wake();
}

SteadyTime FakeStream::now() const {
  return m_now();
}

std::int64_t FakeStream::epoch_ms(SteadyTime t) const {
  using std::chrono::duration_cast;
  return duration_cast<milliseconds>(m_epoch_base.time_since_epoch()).count() +
         duration_cast<milliseconds>(t - m_steady_base).count();
}

void FakeStream::wake() {
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto r = ::write(m_wake_fd, &one, sizeof one);
}

// --- ids ---

std::string FakeStream::hex(std::size_t digits) {
  static constexpr char k_digits[] = "0123456789abcdef";
  std::uniform_int_distribution<int> d(0, 15);
  std::string s;
  for (std::size_t i = 0; i < digits; ++i) {
    s += k_digits[d(m_rng)];
  }
  return s;
}

std::string FakeStream::new_uuid() {
  return hex(8) + "-" + hex(4) + "-4" + hex(3) + "-a" + hex(3) + "-" + hex(12);
}

std::string FakeStream::new_message_id(SteadyTime t) {
  // Shaped like DingTalk's: 213d841d_972_1898bb26334_70a7 (the third part is
  // the time in epoch ms, in hex).
  char ms[32];
  std::snprintf(ms, sizeof ms, "%llx", static_cast<unsigned long long>(epoch_ms(t)));
  return hex(8) + "_" + std::to_string(++m_counter) + "_" + ms + "_" + hex(4);
}

// --- the gateway's side and events ---

std::string FakeStream::issue_ticket(const std::string& client_id) {
  std::lock_guard lock(m_mutex);
  std::string ticket = new_uuid();
  m_tickets[ticket] = Ticket{client_id, now() + m_options.ticket_lifetime};
  ++m_stats.tickets_issued;
  return ticket;
}

std::string FakeStream::push(StreamEventSpec spec) {
  std::string id;
  {
    std::lock_guard lock(m_mutex);
    Event e;
    id = hex(26);
    e.record.event_id = id;
    e.record.event_type = std::move(spec.event_type);
    e.record.data = std::move(spec.data);
    e.record.corp_id = spec.corp_id.empty() ? m_options.corp_id : spec.corp_id;
    e.record.born_at = spec.born_at ? *spec.born_at : now();
    ++m_stats.events;
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    const bool dropped = m_options.push_loss > 0 && uniform(m_rng) < m_options.push_loss;
    m_events.push_back(std::move(e));
    Event& stored = m_events.back();
    if (dropped) {
      lose(stored, "dropped");
    } else {
      m_active.push_back(m_events.size() - 1);
    }
  }
  wake();
  return id;
}

void FakeStream::lose(Event& e, const std::string& reason) {
  e.record.state = StreamEventState::lost;
  e.record.lost_reason = reason;
  if (reason == "dropped") {
    ++m_stats.lost_dropped;
  } else if (reason == "offline") {
    ++m_stats.lost_offline;
  } else {
    ++m_stats.lost_unacknowledged;
  }
  note("lost " + describe(e) + ": " + reason);
}

std::string FakeStream::describe(const Event& e) const {
  const auto& r = e.record;
  std::string what = r.event_type;
  if (r.event_type == "robot_msg_read" && r.data.is_object()) {
    const auto field = [&](const char* name) {
      return r.data.contains(name) && r.data[name].is_string() ? r.data[name].get<std::string>()
                                                               : std::string();
    };
    const std::string user = field("userId");
    what += " (" + (user.empty() ? "outsider " + field("unionId") : user) + " read " +
            field("processQueryKey") + ")";
  }
  return "event " + r.event_id + " " + what;
}

void FakeStream::note(const std::string& line) {
  if (!m_options.keep_log) {
    return;
  }
  m_log.push_back(line);
  while (m_log.size() > k_max_log_lines) {
    m_log.pop_front();
  }
}

// --- actions ---

void FakeStream::set_action(Action action, StreamDrop how, StreamGarbage kind) {
  {
    std::lock_guard lock(m_mutex);
    m_actions.push_back(PendingAction{action, how, kind});
  }
  wake();
}

void FakeStream::ping_now() {
  set_action(Action::ping);
}

void FakeStream::disconnect_now() {
  set_action(Action::disconnect);
}

void FakeStream::drop_connections(StreamDrop how) {
  set_action(Action::drop, how);
}

void FakeStream::stall_connections() {
  set_action(Action::stall);
}

void FakeStream::send_garbage(StreamGarbage kind) {
  set_action(Action::garbage, StreamDrop::reset, kind);
}

void FakeStream::refuse_handshakes(HandshakeRefusal how, int count) {
  std::lock_guard lock(m_mutex);
  if (count > 0) {
    m_refusals.emplace_back(how, count);
  }
}

bool FakeStream::settle() {
  std::unique_lock lock(m_mutex);
  const std::uint64_t target = m_turns + 2;
  lock.unlock();
  wake();
  lock.lock();
  return m_turned.wait_for(lock, k_settle_timeout, [&] {
    return m_turns >= target || m_stopping;
  }) && !m_stopping;
}

// --- observation ---

FakeStreamStats FakeStream::stats() const {
  std::lock_guard lock(m_mutex);
  return m_stats;
}

std::vector<StreamEventRecord> FakeStream::events() const {
  std::lock_guard lock(m_mutex);
  std::vector<StreamEventRecord> out;
  out.reserve(m_events.size());
  for (const auto& e : m_events) {
    out.push_back(e.record);
  }
  return out;
}

std::optional<StreamEventRecord> FakeStream::event(const std::string& event_id) const {
  std::lock_guard lock(m_mutex);
  for (const auto& e : m_events) {
    if (e.record.event_id == event_id) {
      return e.record;
    }
  }
  return std::nullopt;
}

std::vector<StreamPingRecord> FakeStream::pings() const {
  std::lock_guard lock(m_mutex);
  return m_pings;
}

std::vector<StreamConnectionRecord> FakeStream::connections() const {
  std::lock_guard lock(m_mutex);
  return m_connection_records;
}

int FakeStream::open_connections() const {
  std::lock_guard lock(m_mutex);
  return m_stats.connections_open;
}

std::vector<std::string> FakeStream::take_log() {
  std::lock_guard lock(m_mutex);
  std::vector<std::string> out(m_log.begin(), m_log.end());
  m_log.clear();
  return out;
}

StreamConnectionRecord& FakeStream::record(const Connection& c) {
  return m_connection_records.at(static_cast<std::size_t>(c.id - 1));
}

// --- the server thread ---

void FakeStream::run() {
  std::vector<pollfd> fds;
  std::vector<Connection*> polled;
  while (true) {
    fds.clear();
    polled.clear();
    {
      std::lock_guard lock(m_mutex);
      if (m_stopping) {
        return;
      }
      fds.push_back(pollfd{m_listen_fd, POLLIN, 0});
      fds.push_back(pollfd{m_wake_fd, POLLIN, 0});
      for (const auto& c : m_connections) {
        short events = POLLRDHUP;
        if (!c->stalled) {
          events |= POLLIN;
          if (!c->out.empty() || (c->ctx != nullptr && wslay_event_want_write(c->ctx) != 0)) {
            events |= POLLOUT;
          }
        }
        fds.push_back(pollfd{c->fd, events, 0});
        polled.push_back(c.get());
      }
    }
    ::poll(fds.data(), fds.size(), static_cast<int>(k_turn.count()));
    if ((fds[1].revents & POLLIN) != 0) {
      std::uint64_t value = 0;
      [[maybe_unused]] const auto r = ::read(m_wake_fd, &value, sizeof value);
    }
    if (m_on_turn) {
      m_on_turn();
    }
    std::lock_guard lock(m_mutex);
    if (m_stopping) {
      return;
    }
    for (std::size_t i = 0; i < polled.size(); ++i) {
      if (!polled[i]->dead) {
        handle_io(*polled[i], fds[i + 2].revents);
      }
    }
    if ((fds[0].revents & POLLIN) != 0) {
      accept_connections();
    }
    const SteadyTime t = now();
    timers(t);
    route(t);
    // Flush what the turn queued, and close what is done.
    const auto real = SteadyClock::now();
    for (auto& c : m_connections) {
      if (c->dead || c->stalled) {
        continue;
      }
      if (c->phase == Connection::Phase::refusing) {
        write_raw(*c);
        if (c->linger_until && real >= *c->linger_until) {
          c->dead = true;
        }
        continue;
      }
      if (c->phase == Connection::Phase::handshake) {
        if (real - c->accepted > k_handshake_timeout) {
          c->dead = true;
        }
        continue;
      }
      if (!c->out.empty()) {
        write_raw(*c);
        if (!c->out.empty()) {
          continue;
        }
      }
      if (wslay_event_want_write(c->ctx) != 0 && wslay_event_send(c->ctx) != 0) {
        close_connection(*c, "peer_gone");
        continue;
      }
      if (wslay_event_get_close_sent(c->ctx) != 0 && !c->linger_until) {
        c->linger_until = real + k_close_linger;
      }
      const bool done = wslay_event_want_read(c->ctx) == 0 && wslay_event_want_write(c->ctx) == 0;
      if (done || (c->linger_until && real >= *c->linger_until)) {
        std::string by = c->closing_by;
        if (wslay_event_get_close_received(c->ctx) != 0 && by.empty()) {
          by = "client";
        } else if (by.empty()) {
          const auto sent = wslay_event_get_status_code_sent(c->ctx);
          if (sent == ws::k_close_protocol_error) {
            by = "protocol_error";
            ++m_stats.protocol_errors;
          } else if (sent == ws::k_close_message_too_big) {
            by = "message_too_big";
          } else {
            by = "peer_gone";
          }
        }
        close_connection(*c, by);
      }
    }
    std::erase_if(m_connections, [](const auto& c) { return c->dead; });
    ++m_turns;
    m_turned.notify_all();
  }
}

void FakeStream::accept_connections() {
  while (true) {
    const int fd = ::accept4(m_listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      return;
    }
    // libwslay sends a frame's header and its payload in two writes: without
    // TCP_NODELAY, Nagle holds the payload until the client's delayed ACK,
    // about 40 ms later, and every push looks that slow.
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_unique<Connection>();
    c->fd = fd;
    c->accepted = SteadyClock::now();
    m_connections.push_back(std::move(c));
    // Its first bytes are read at the next turn.
  }
}

void FakeStream::handle_io(Connection& c, short revents) {
  switch (c.phase) {
  case Connection::Phase::handshake:
    if ((revents & (POLLIN | POLLHUP | POLLERR | POLLRDHUP)) != 0) {
      read_handshake(c);
    }
    return;
  case Connection::Phase::refusing:
    if ((revents & (POLLHUP | POLLERR)) != 0) {
      c.dead = true;
      return;
    }
    if (c.out.empty() && (revents & POLLIN) != 0) {
      // The answer is out: read what the client still sends until it closes.
      char buf[k_read_chunk];
      const ssize_t r = ::recv(c.fd, buf, sizeof buf, 0);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        c.dead = true;
      }
      return;
    }
    write_raw(c);
    return;
  case Connection::Phase::websocket:
    websocket_io(c, revents);
    return;
  }
}

void FakeStream::read_handshake(Connection& c) {
  char buf[k_read_chunk];
  while (true) {
    const ssize_t r = ::recv(c.fd, buf, sizeof buf, 0);
    if (r > 0) {
      c.in.append(buf, static_cast<std::size_t>(r));
      if (c.in.size() > k_max_handshake_bytes) {
        break;
      }
      continue;
    }
    if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      c.dead = true; // gone before a whole request: nothing to answer
      return;
    }
    break;
  }
  const auto end = c.in.find("\r\n\r\n");
  if (end == std::string::npos) {
    if (c.in.size() > k_max_handshake_bytes) {
      ++m_stats.handshakes;
      refuse(c, 400, "invalidRequest", "the upgrade request is over 16 KiB");
    }
    return;
  }
  const std::string request = c.in.substr(0, end);
  c.in.erase(0, end + 4); // anything after it is the client's first frames
  ++m_stats.handshakes;
  answer_handshake(c, request);
}

void FakeStream::answer_handshake(Connection& c, const std::string& request) {
  // Request line and headers.
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (true) {
    const auto eol = request.find("\r\n", start);
    lines.push_back(
        request.substr(start, eol == std::string::npos ? std::string::npos : eol - start));
    if (eol == std::string::npos) {
      break;
    }
    start = eol + 2;
  }
  const std::string& line = lines.front();
  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string::npos ? std::string::npos : line.find(' ', sp1 + 1);
  if (sp2 == std::string::npos) {
    refuse(c, 400, "invalidRequest", "malformed request line");
    return;
  }
  const std::string method = line.substr(0, sp1);
  const std::string target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string version = line.substr(sp2 + 1);
  std::map<std::string, std::string> headers;
  for (std::size_t i = 1; i < lines.size(); ++i) {
    const auto colon = lines[i].find(':');
    if (colon == std::string::npos || colon == 0) {
      refuse(c, 400, "invalidRequest", "malformed header line");
      return;
    }
    const std::string name = lower(lines[i].substr(0, colon));
    const std::string value = trim(lines[i].substr(colon + 1));
    headers[name] = headers.count(name) != 0 ? headers[name] + ", " + value : value;
  }
  const auto header = [&](const std::string& name) {
    const auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  };
  if (method != "GET") {
    refuse(c, 400, "invalidRequest", "the upgrade request must be GET, not " + method);
    return;
  }
  if (version != "HTTP/1.1") {
    refuse(c, 400, "invalidRequest", "the upgrade request must be HTTP/1.1, not " + version);
    return;
  }
  const auto question = target.find('?');
  const std::string path = target.substr(0, question);
  const std::string query = question == std::string::npos ? "" : target.substr(question + 1);
  if (path != k_path) {
    refuse(c, 404, "notFound", "no WebSocket endpoint at " + path);
    return;
  }
  if (header("host").empty()) {
    refuse(c, 400, "invalidRequest", "no Host header");
    return;
  }
  if (!has_token(header("upgrade"), "websocket")) {
    refuse(c, 400, "invalidRequest", "Upgrade: websocket is missing");
    return;
  }
  if (!has_token(header("connection"), "upgrade")) {
    refuse(c, 400, "invalidRequest", "Connection: Upgrade is missing");
    return;
  }
  if (header("sec-websocket-version") != "13") {
    refuse(c, 400, "invalidRequest", "Sec-WebSocket-Version must be 13",
           "Sec-WebSocket-Version: 13\r\n");
    return;
  }
  const std::string key = header("sec-websocket-key");
  if (!ws::valid_key(key)) {
    refuse(c, 400, "invalidRequest", "Sec-WebSocket-Key must be base64 of 16 bytes");
    return;
  }
  // Refusals on request.
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::optional<HandshakeRefusal> refusal;
  if (!m_refusals.empty()) {
    refusal = m_refusals.front().first;
    if (--m_refusals.front().second <= 0) {
      m_refusals.erase(m_refusals.begin());
    }
  } else if (m_options.refuse_handshakes > 0 && uniform(m_rng) < m_options.refuse_handshakes) {
    refusal = HandshakeRefusal::bad_request;
  } else if (m_options.refuse_tickets > 0 && uniform(m_rng) < m_options.refuse_tickets) {
    refusal = HandshakeRefusal::invalid_ticket;
  }
  if (refusal == HandshakeRefusal::bad_request) {
    refuse(c, 400, "invalidRequest", "handshake refused (fault injected by the test)");
    return;
  }
  const auto raw_ticket = query_param(query, "ticket");
  const auto ticket = raw_ticket ? url_decode(*raw_ticket) : std::nullopt;
  if (!ticket || ticket->empty()) {
    refuse(c, 400, "invalidRequest", "the ticket query parameter is missing");
    return;
  }
  const SteadyTime t = now();
  const auto it = m_tickets.find(*ticket);
  if (refusal == HandshakeRefusal::invalid_ticket || it == m_tickets.end() ||
      t >= it->second.expires_at) {
    if (it != m_tickets.end()) {
      m_tickets.erase(it);
    }
    refuse(c, 401, "invalidTicket", "the ticket is invalid, used or expired");
    return;
  }
  const std::string client_id = it->second.client_id;
  m_tickets.erase(it); // one connection per ticket
  const int open_for_client = static_cast<int>(
      std::count_if(m_connections.begin(), m_connections.end(), [&](const auto& other) {
        return other->phase == Connection::Phase::websocket && !other->dead &&
               other->client_id == client_id;
      }));
  if (open_for_client >= m_options.max_connections) {
    refuse(c, 400, "connectionLimit",
           "an app may hold at most " + std::to_string(m_options.max_connections) + " connections");
    return;
  }
  c.client_id = client_id;
  open_websocket(c, ws::accept_key(key));
}

void FakeStream::refuse(Connection& c, int status, const std::string& code,
                        const std::string& message, const std::string& extra_headers) {
  ++m_stats.handshakes_refused;
  const std::string body = json{{"code", code}, {"message", message}}.dump();
  c.out = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) +
          "\r\nContent-Type: application/json;charset=utf-8\r\nContent-Length: " +
          std::to_string(body.size()) + "\r\nConnection: close\r\n" + extra_headers + "\r\n" + body;
  c.phase = Connection::Phase::refusing;
  note("handshake refused: " + std::to_string(status) + " " + message);
  write_raw(c);
}

void FakeStream::write_raw(Connection& c) {
  while (!c.out.empty()) {
    const ssize_t r = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
    if (r > 0) {
      c.out.erase(0, static_cast<std::size_t>(r));
      continue;
    }
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      return;
    }
    c.out.clear();
    c.dead = true;
    return;
  }
  if (c.phase == Connection::Phase::refusing && !c.linger_until) {
    // Half-close, and let the client read the answer before the socket goes
    // (closing it with unread bytes would reset the connection).
    ::shutdown(c.fd, SHUT_WR);
    c.linger_until = SteadyClock::now() + k_close_linger;
  }
}

void FakeStream::open_websocket(Connection& c, const std::string& accept) {
  static const wslay_event_callbacks callbacks = {on_recv, on_send, nullptr, nullptr,
                                                  nullptr, nullptr, on_msg};
  if (wslay_event_context_server_init(&c.ctx, &callbacks, &c) != 0) {
    c.ctx = nullptr;
    c.dead = true;
    return;
  }
  wslay_event_config_set_max_recv_msg_length(c.ctx, k_max_client_message);
  c.out = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          "Sec-WebSocket-Accept: " +
          accept + "\r\n\r\n";
  c.phase = Connection::Phase::websocket;
  c.id = static_cast<int>(m_connection_records.size()) + 1;
  c.opened_at = now();
  c.last_ping = c.opened_at;
  StreamConnectionRecord r;
  r.id = c.id;
  r.client_id = c.client_id;
  r.opened_at = c.opened_at;
  m_connection_records.push_back(r);
  ++m_stats.connections_opened;
  ++m_stats.connections_open;
  m_stats.max_connections_open = std::max(m_stats.max_connections_open, m_stats.connections_open);
  note("connection " + std::to_string(c.id) + " opened by " + c.client_id);
  write_raw(c);
  websocket_io(c, 0); // the bytes that came with the request
}

void FakeStream::websocket_io(Connection& c, short revents) {
  if (c.stalled) {
    if ((revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) {
      close_connection(c, "stall");
    }
    return;
  }
  const bool readable = (revents & (POLLIN | POLLHUP | POLLERR | POLLRDHUP)) != 0 || !c.in.empty();
  if (readable && wslay_event_want_read(c.ctx) != 0) {
    const int r = wslay_event_recv(c.ctx);
    // Messages that came before a failure still count.
    auto inbox = std::move(c.inbox);
    c.inbox.clear();
    auto& rec = record(c);
    for (const auto& m : inbox) {
      switch (m.opcode) {
      case WSLAY_TEXT_FRAME:
        ++rec.answers;
        handle_answer(c, m.payload);
        break;
      case WSLAY_BINARY_FRAME:
        ++rec.bad_frames;
        ++m_stats.bad_frames;
        note("connection " + std::to_string(c.id) + ": a binary frame from the client, dropped");
        break;
      case WSLAY_PING:
        ++rec.ws_pings;
        ++m_stats.ws_pings_received;
        break;
      case WSLAY_CONNECTION_CLOSE:
        rec.close_code_received = m.status;
        break;
      default:
        break;
      }
    }
    if (r != 0) {
      close_connection(c, wslay_event_get_close_received(c.ctx) != 0 ? "client" : "peer_gone");
      return;
    }
  } else if (readable && (revents & (POLLHUP | POLLERR)) != 0) {
    // Reading is over (a close was received or sent) and the peer is gone.
    close_connection(c, wslay_event_get_close_received(c.ctx) != 0 ? "client" : "peer_gone");
  }
}

void FakeStream::handle_answer(Connection& c, const std::string& text) {
  const auto a = parse_answer(text);
  if (!a) {
    ++record(c).bad_frames;
    ++m_stats.bad_frames;
    note("connection " + std::to_string(c.id) +
         ": a frame that is not an answer: " + text.substr(0, 200));
    return;
  }
  const auto it = m_targets.find(a->message_id);
  if (it == m_targets.end()) {
    ++m_stats.unmatched_answers;
    note("connection " + std::to_string(c.id) + ": an answer for unknown messageId " +
         a->message_id);
    return;
  }
  const Target target = it->second;
  if (target.ping) {
    auto& p = m_pings[target.index];
    if (p.connection != c.id) {
      ++m_stats.misrouted_answers;
      return;
    }
    if (p.answered) {
      return;
    }
    p.answered = true;
    p.answer = text;
    const bool same_opaque =
        a->data.is_object() && a->data.contains("opaque") && a->data["opaque"] == json(p.opaque);
    p.answer_ok = a->code == 200 && same_opaque;
    if (p.answer_ok) {
      ++m_stats.pings_answered_ok;
      note("ping " + p.message_id + " on connection " + std::to_string(c.id) +
           " answered correctly");
    } else {
      ++m_stats.pings_answered_wrong;
      note("ping " + p.message_id + " on connection " + std::to_string(c.id) +
           " answered wrongly: " + text.substr(0, 200));
    }
    return;
  }
  Event& e = m_events[target.index];
  const StreamDelivery& d = e.record.deliveries[target.delivery];
  if (d.connection != c.id) {
    ++m_stats.misrouted_answers;
    note("connection " + std::to_string(c.id) + ": an answer for " + describe(e) +
         " sent on connection " + std::to_string(d.connection) + ", ignored");
    return;
  }
  if (a->code != 200 || a->status() == "LATER") {
    ++e.record.refusals;
    ++m_stats.refusals;
    note("not acknowledged (code " + std::to_string(a->code) + ", status " + a->status() +
         "): " + describe(e));
    return;
  }
  if (e.record.state != StreamEventState::in_flight) {
    return; // a duplicate's acknowledgement, or a late one
  }
  const SteadyTime t = now();
  e.record.state = StreamEventState::acknowledged;
  e.record.acked_at = t;
  e.record.ack_latency = std::chrono::duration_cast<milliseconds>(t - d.sent_at);
  e.record.ack_well_formed = a->well_formed && a->status() == "SUCCESS";
  ++m_stats.acknowledged;
  if (!e.record.ack_well_formed) {
    ++m_stats.malformed_acks;
  }
  note("acknowledged " + describe(e) + " after " + std::to_string(e.record.ack_latency.count()) +
       " ms on connection " + std::to_string(c.id));
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  if (m_options.duplicate_acked > 0 && uniform(m_rng) < m_options.duplicate_acked) {
    if (Connection* other = pick_connection()) {
      deliver(target.index, *other, t, true);
    }
  }
}

std::vector<FakeStream::Connection*> FakeStream::live_connections() {
  std::vector<Connection*> out;
  for (const auto& c : m_connections) {
    if (c->phase == Connection::Phase::websocket && !c->dead && !c->draining && !c->closing &&
        wslay_event_get_close_sent(c->ctx) == 0 && wslay_event_get_close_received(c->ctx) == 0) {
      out.push_back(c.get());
    }
  }
  return out;
}

FakeStream::Connection* FakeStream::pick_connection() {
  const auto live = live_connections();
  if (live.empty()) {
    return nullptr;
  }
  if (m_options.distribution == StreamDistribution::round_robin) {
    return live[m_round_robin++ % live.size()];
  }
  std::uniform_int_distribution<std::size_t> d(0, live.size() - 1);
  return live[d(m_rng)];
}

void FakeStream::timers(SteadyTime t) {
  const auto real = SteadyClock::now();
  // Actions asked for since the last turn.
  const auto actions = std::move(m_actions);
  m_actions.clear();
  for (const auto& a : actions) {
    if (a.action == Action::drop) {
      for (auto& c : m_connections) {
        if (c->phase == Connection::Phase::websocket && !c->dead) {
          drop(*c, a.how);
        }
      }
      continue;
    }
    for (Connection* c : live_connections()) {
      switch (a.action) {
      case Action::ping:
        if (!c->stalled) {
          send_ping(*c, t);
        }
        break;
      case Action::disconnect:
        if (!c->stalled) {
          send_disconnect(*c, t);
        }
        break;
      case Action::stall:
        if (!c->stalled) {
          c->stalled = true;
          c->stalled_since = real;
          record(*c).stalled = true;
          ++m_stats.stalls;
          note("connection " + std::to_string(c->id) + " stalled");
        }
        break;
      case Action::garbage:
        if (!c->stalled) {
          send_garbage_frame(*c, a.kind);
        }
        break;
      case Action::none:
      case Action::drop:
        break;
      }
    }
  }
  // Connections' own clocks.
  for (auto& cp : m_connections) {
    Connection& c = *cp;
    if (c.phase != Connection::Phase::websocket || c.dead) {
      continue;
    }
    if (c.stalled) {
      if (real - c.stalled_since > k_max_stall) {
        drop(c, StreamDrop::reset);
      }
      continue;
    }
    const auto age = t - c.opened_at;
    if (m_options.drop_after.count() > 0 && age >= m_options.drop_after) {
      drop(c, m_options.drop_style);
      continue;
    }
    if (!c.draining && !c.closing && m_options.disconnect_after.count() > 0 &&
        age >= m_options.disconnect_after) {
      send_disconnect(c, t);
    }
    if (c.draining && !c.closing && t >= c.close_at) {
      c.closing = true;
      c.closing_by = "disconnect";
      const std::string reason = "connection is expired";
      wslay_event_queue_close(c.ctx, ws::k_close_normal,
                              reinterpret_cast<const std::uint8_t*>(reason.data()), reason.size());
    }
    if (!c.draining && !c.closing && m_options.ping_interval.count() > 0 &&
        t - c.last_ping >= m_options.ping_interval) {
      send_ping(c, t);
    }
  }
  // Events not acknowledged in time.
  for (const std::size_t i : m_active) {
    Event& e = m_events[i];
    if (e.record.state != StreamEventState::in_flight || t < e.deadline) {
      continue;
    }
    if (e.record.redeliveries < m_options.max_redeliveries) {
      e.record.state = StreamEventState::waiting;
      e.redelivery = true;
    } else {
      lose(e, "unacknowledged");
    }
  }
  // Tickets past their time.
  std::erase_if(m_tickets, [&](const auto& kv) { return t >= kv.second.expires_at; });
}

void FakeStream::route(SteadyTime t) {
  for (const std::size_t i : m_active) {
    Event& e = m_events[i];
    if (e.record.state != StreamEventState::waiting) {
      continue;
    }
    if (Connection* c = pick_connection()) {
      deliver(i, *c, t, false);
    } else if (t - e.record.born_at >= m_options.offline_retention) {
      lose(e, "offline");
    }
  }
  std::erase_if(m_active, [&](std::size_t i) {
    const auto s = m_events[i].record.state;
    return s == StreamEventState::acknowledged || s == StreamEventState::lost;
  });
}

void FakeStream::deliver(std::size_t index, Connection& c, SteadyTime t, bool duplicate) {
  Event& e = m_events[index];
  auto& r = e.record;
  const bool keep = m_options.redelivery_keeps_message_id && !duplicate && !r.deliveries.empty();
  const std::string message_id = keep ? r.deliveries.front().message_id : new_message_id(t);
  StreamFrame f;
  f.type = "EVENT";
  f.headers = {{"topic", "*"},
               {"messageId", message_id},
               {"contentType", "application/json"},
               {"time", std::to_string(epoch_ms(t))},
               {"eventType", r.event_type},
               {"eventId", r.event_id},
               {"eventBornTime", std::to_string(epoch_ms(r.born_at))},
               {"eventCorpId", r.corp_id},
               {"eventUnifiedAppId", m_options.unified_app_id}};
  f.data = r.data.dump();
  maybe_garbage(c);
  send_frame(c, to_json(f));
  r.deliveries.push_back(StreamDelivery{message_id, c.id, t, duplicate});
  m_targets[message_id] = Target{false, index, r.deliveries.size() - 1};
  if (duplicate) {
    ++m_stats.duplicated;
    note("duplicated " + describe(e) + " on connection " + std::to_string(c.id));
    return;
  }
  r.state = StreamEventState::in_flight;
  e.deadline = t + m_options.ack_timeout;
  if (e.redelivery) {
    e.redelivery = false;
    ++r.redeliveries;
    ++m_stats.redelivered;
    note("redelivered " + describe(e) + " on connection " + std::to_string(c.id) + " (delivery " +
         std::to_string(r.deliveries.size()) + ")");
  } else {
    ++m_stats.pushed;
    note("pushed " + describe(e) + " on connection " + std::to_string(c.id));
  }
}

void FakeStream::send_frame(Connection& c, const std::string& text, bool binary) {
  wslay_event_msg msg{};
  msg.opcode = binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME;
  msg.msg = reinterpret_cast<const std::uint8_t*>(text.data());
  msg.msg_length = text.size();
  wslay_event_queue_msg(c.ctx, &msg); // copies the message
}

void FakeStream::maybe_garbage(Connection& c) {
  if (m_options.garbage <= 0 || m_options.garbage_kinds.empty()) {
    return;
  }
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  if (uniform(m_rng) >= m_options.garbage) {
    return;
  }
  std::uniform_int_distribution<std::size_t> pick(0, m_options.garbage_kinds.size() - 1);
  send_garbage_frame(c, m_options.garbage_kinds[pick(m_rng)]);
}

void FakeStream::send_garbage_frame(Connection& c, StreamGarbage kind) {
  const SteadyTime t = now();
  ++m_stats.garbage_sent;
  note("garbage (" + to_string(kind) + ") sent on connection " + std::to_string(c.id));
  switch (kind) {
  case StreamGarbage::not_json:
    send_frame(c, "this frame is not JSON {\"specVersion\": \"1.0\", \"type\": ");
    return;
  case StreamGarbage::binary: {
    std::string bytes;
    std::uniform_int_distribution<int> d(0, 255);
    for (int i = 0; i < 32; ++i) {
      bytes += static_cast<char>(d(m_rng));
    }
    send_frame(c, bytes, true);
    return;
  }
  case StreamGarbage::no_message_id: {
    StreamFrame f;
    f.type = "EVENT";
    f.headers = {{"topic", "*"},
                 {"contentType", "application/json"},
                 {"time", std::to_string(epoch_ms(t))},
                 {"eventType", "robot_msg_read"},
                 {"eventId", hex(26)}};
    f.data = "{}";
    send_frame(c, to_json(f));
    return;
  }
  case StreamGarbage::unknown_system_topic: {
    StreamFrame f;
    f.type = "SYSTEM";
    f.headers = {{"topic", k_unknown_system_topics[m_counter % std::size(k_unknown_system_topics)]},
                 {"messageId", new_message_id(t)},
                 {"contentType", "application/json"},
                 {"time", std::to_string(epoch_ms(t))}};
    f.data = "{}";
    send_frame(c, to_json(f));
    return;
  }
  case StreamGarbage::oversized: {
    StreamFrame f;
    f.type = "EVENT";
    f.headers = {{"topic", "*"},
                 {"messageId", new_message_id(t)},
                 {"contentType", "application/json"},
                 {"time", std::to_string(epoch_ms(t))},
                 {"eventType", "fake_oversized_event"},
                 {"eventId", hex(26)},
                 {"eventBornTime", std::to_string(epoch_ms(t))},
                 {"eventCorpId", m_options.corp_id},
                 {"eventUnifiedAppId", m_options.unified_app_id}};
    f.data = json{{"padding", std::string(k_oversized_frame_bytes, 'x')}}.dump();
    send_frame(c, to_json(f));
    return;
  }
  }
}

void FakeStream::send_ping(Connection& c, SteadyTime t) {
  StreamPingRecord p;
  p.connection = c.id;
  p.message_id = new_message_id(t);
  p.opaque = new_uuid();
  p.sent_at = t;
  StreamFrame f;
  f.type = "SYSTEM";
  f.headers = {{"topic", "ping"},
               {"messageId", p.message_id},
               {"contentType", "application/json"},
               {"time", std::to_string(epoch_ms(t))}};
  f.data = json{{"opaque", p.opaque}}.dump();
  maybe_garbage(c);
  send_frame(c, to_json(f));
  c.last_ping = t;
  m_targets[p.message_id] = Target{true, m_pings.size(), 0};
  m_pings.push_back(p);
  ++m_stats.pings_sent;
}

void FakeStream::send_disconnect(Connection& c, SteadyTime t) {
  StreamFrame f;
  f.type = "SYSTEM";
  f.headers = {{"topic", "disconnect"},
               {"messageId", new_message_id(t)},
               {"contentType", "application/json"},
               {"time", std::to_string(epoch_ms(t))}};
  f.data = json{{"reason", m_options.disconnect_reason}}.dump();
  send_frame(c, to_json(f));
  c.draining = true;
  c.close_at = t + m_options.disconnect_grace;
  ++m_stats.disconnects_sent;
  note("disconnect sent on connection " + std::to_string(c.id));
}

void FakeStream::drop(Connection& c, StreamDrop how) {
  ++m_stats.drops;
  note("connection " + std::to_string(c.id) + " dropped (" + to_string(how) + ")");
  switch (how) {
  case StreamDrop::reset: {
    linger l{};
    l.l_onoff = 1;
    l.l_linger = 0;
    ::setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close_connection(c, "drop");
    return;
  }
  case StreamDrop::fin:
    ::shutdown(c.fd, SHUT_RDWR);
    close_connection(c, "drop");
    return;
  case StreamDrop::close_frame:
    if (c.stalled || c.closing) {
      close_connection(c, "drop");
      return;
    }
    c.closing = true;
    c.closing_by = "drop";
    wslay_event_queue_close(c.ctx, ws::k_close_going_away, nullptr, 0);
    return;
  }
}

void FakeStream::close_connection(Connection& c, const std::string& by) {
  if (c.dead) {
    return;
  }
  c.dead = true;
  if (c.fd >= 0) {
    ::close(c.fd);
    c.fd = -1;
  }
  if (c.phase != Connection::Phase::websocket) {
    return;
  }
  auto& r = record(c);
  r.closed_at = now();
  r.closed_by = by;
  --m_stats.connections_open;
  note("connection " + std::to_string(c.id) + " closed: " + by);
}

} // namespace rrd::testing
