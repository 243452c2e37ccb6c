#include "readreceiptd/stream/websocket.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <openssl/rand.h>
#include <wslay/wslay.h>

namespace rrd::stream {

// libwslay's callbacks, with the WebSocket as user_data.
struct WebSocket::Callbacks {
  static WebSocket& self(void* user) { return *static_cast<WebSocket*>(user); }

  static ssize_t recv(wslay_event_context_ptr ctx, std::uint8_t* buf, std::size_t len,
                      int /*flags*/, void* user) {
    WebSocket& ws = self(user);
    if (ws.m_input.empty()) {
      wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
      return -1;
    }
    const std::size_t n = std::min(len, ws.m_input.size());
    std::memcpy(buf, ws.m_input.data(), n);
    ws.m_input.remove_prefix(n);
    return static_cast<ssize_t>(n);
  }

  static ssize_t send(wslay_event_context_ptr /*ctx*/, const std::uint8_t* data, std::size_t len,
                      int /*flags*/, void* user) {
    self(user).m_output.append(reinterpret_cast<const char*>(data), len);
    return static_cast<ssize_t>(len);
  }

  static int genmask(wslay_event_context_ptr /*ctx*/, std::uint8_t* buf, std::size_t len,
                     void* /*user*/) {
    // RFC 6455 section 5.3: masking keys from a strong source of entropy.
    return RAND_bytes(buf, static_cast<int>(len)) == 1 ? 0 : -1;
  }

  static void frame_start(wslay_event_context_ptr /*ctx*/,
                          const wslay_event_on_frame_recv_start_arg* /*arg*/, void* user) {
    ++self(user).m_frames;
  }

  static void message(wslay_event_context_ptr /*ctx*/, const wslay_event_on_msg_recv_arg* arg,
                      void* user) {
    WsMessage m;
    switch (arg->opcode) {
    case WSLAY_TEXT_FRAME:
      m.type = WsMessage::Type::text;
      break;
    case WSLAY_BINARY_FRAME:
      m.type = WsMessage::Type::binary;
      break;
    case WSLAY_PONG:
      m.type = WsMessage::Type::pong;
      break;
    case WSLAY_CONNECTION_CLOSE:
      m.type = WsMessage::Type::close;
      m.close_code = arg->status_code;
      break;
    default:
      return; // pings are answered by wslay itself
    }
    m.payload.assign(reinterpret_cast<const char*>(arg->msg), arg->msg_length);
    self(user).m_messages.push_back(std::move(m));
  }
};

WebSocket::WebSocket(std::size_t max_message_bytes) {
  const wslay_event_callbacks callbacks{
      &Callbacks::recv, &Callbacks::send, &Callbacks::genmask, &Callbacks::frame_start,
      nullptr,          nullptr,          &Callbacks::message};
  if (wslay_event_context_client_init(&m_ctx, &callbacks, this) != 0) {
    throw std::bad_alloc();
  }
  wslay_event_config_set_max_recv_msg_length(m_ctx, max_message_bytes);
}

WebSocket::~WebSocket() {
  wslay_event_context_free(m_ctx);
}

bool WebSocket::receive(std::string_view bytes) {
  if (!m_error.empty()) {
    return false;
  }
  m_input = bytes;
  const int rc = wslay_event_recv(m_ctx);
  m_input = {};
  if (rc != 0) {
    m_error = "WebSocket receive failed (wslay error " + std::to_string(rc) + ")";
    return false;
  }
  if (!flush()) {
    return false;
  }
  if (read_closed() && wslay_event_get_close_received(m_ctx) == 0) {
    // wslay stopped reading on its own and queued a close (now sent): a
    // message over the cap, broken framing or invalid UTF-8.
    switch (close_code_sent()) {
    case WSLAY_CODE_MESSAGE_TOO_BIG:
      m_error = "a message was larger than the cap";
      break;
    case WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA:
      m_error = "a text message was not valid UTF-8";
      break;
    default:
      m_error = "broken WebSocket framing";
      break;
    }
  }
  return m_error.empty();
}

bool WebSocket::queue_text(std::string_view text) {
  const wslay_event_msg msg{WSLAY_TEXT_FRAME, reinterpret_cast<const std::uint8_t*>(text.data()),
                            text.size()};
  return wslay_event_queue_msg(m_ctx, &msg) == 0 && flush();
}

bool WebSocket::queue_ping(std::string_view payload) {
  const wslay_event_msg msg{WSLAY_PING, reinterpret_cast<const std::uint8_t*>(payload.data()),
                            std::min<std::size_t>(payload.size(), 125)};
  return wslay_event_queue_msg(m_ctx, &msg) == 0 && flush();
}

bool WebSocket::queue_close(std::uint16_t code, std::string_view reason) {
  reason = reason.substr(0, 122);
  return wslay_event_queue_close(m_ctx, code, reinterpret_cast<const std::uint8_t*>(reason.data()),
                                 reason.size()) == 0 &&
         flush();
}

bool WebSocket::flush() {
  if (wslay_event_want_write(m_ctx) == 0) {
    return true;
  }
  if (wslay_event_send(m_ctx) != 0) {
    m_error = "WebSocket send failed";
    return false;
  }
  return true;
}

std::string WebSocket::take_output() {
  std::string out;
  out.swap(m_output);
  return out;
}

bool WebSocket::read_closed() const {
  return wslay_event_get_read_enabled(m_ctx) == 0;
}

bool WebSocket::close_sent() const {
  return wslay_event_get_close_sent(m_ctx) != 0;
}

std::uint16_t WebSocket::close_code_sent() const {
  return close_sent() ? wslay_event_get_status_code_sent(m_ctx) : 0;
}

} // namespace rrd::stream
