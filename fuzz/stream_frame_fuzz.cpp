// libFuzzer target: what DingTalk's Stream server sends once the WebSocket
// is open, and what the client does with it. The input's first four bytes
// choose the WebSocket's message cap, a split point and a step; the rest is
// the payload, taken two ways:
//  - as a text message: parse_frame() must agree with a reference read off
//    a document tree, keep frames.hpp's promises and read every
//    re-serialisation of a frame the same; every answer built for a frame
//    (ping_answer, event_ack, callback_refusal, disconnect_reason, and
//    parse_read_event for a robot_msg_read) must be what the protocol wants;
//  - as the socket's bytes: a WebSocket fed them whole, split in two at the
//    chosen point and in steps of the chosen size must hand out the same
//    messages, send the same frames and reach the same close decision,
//    never a message over its cap; each text message then takes the first
//    way, and its answer goes out through the WebSocket as the client sends
//    it.
// Nothing may crash, throw or hang.
// Thread-safety: libFuzzer calls it from one thread.
#include "readreceiptd/dingtalk/protocol.hpp"
#include "readreceiptd/stream/client.hpp"
#include "readreceiptd/stream/frames.hpp"
#include "readreceiptd/stream/websocket.hpp"
#include "stream_fuzz_checks.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

using nlohmann::json;
using rrd::fuzz::check;
using rrd::fuzz::is_log_safe;
using rrd::fuzz::is_utf8;
using rrd::fuzz::parse_json;
using rrd::stream::Frame;
using rrd::stream::k_max_field_bytes;
using rrd::stream::WebSocket;
using rrd::stream::WsMessage;
using Kind = Frame::Kind;

constexpr std::size_t k_header_bytes = 4;
// The caps a WebSocket is made with: the client's, and small ones an input
// can reach, either side of a control frame's 125 bytes.
constexpr std::size_t k_caps[] = {rrd::stream::k_max_message_bytes, 0, 1, 16, 125, 126, 200, 1024};
constexpr std::size_t k_cap_count = sizeof k_caps / sizeof k_caps[0];
// RFC 6455: a control frame's payload is at most 125 bytes; the client's
// close reason at most 122 (WebSocket::queue_close() cuts it there).
constexpr std::size_t k_max_control_payload = 125;
constexpr std::size_t k_max_close_reason = 122;
constexpr std::string_view k_ack_data = R"({"status":"SUCCESS","message":""})";

// ---- frames ---------------------------------------------------------------

bool same_frame(const Frame& a, const Frame& b) {
  return a.kind == b.kind && a.message_id == b.message_id && a.topic == b.topic &&
         a.event_type == b.event_type && a.event_id == b.event_id &&
         a.event_corp_id == b.event_corp_id && a.data == b.data;
}

// The header `name` (every header value is a string by then), "" when absent.
std::string header_of(const json& headers, const char* name) {
  const auto it = headers.find(name);
  return it == headers.end() ? std::string() : it->get<std::string>();
}

// parse_frame()'s contract (frames.hpp) computed on the document tree: the
// kind and the fields; a default (bad, empty) frame where it must refuse.
Frame reference_frame(const json& j) {
  if (!j.is_object()) {
    return {};
  }
  const auto type = j.find("type");
  const auto headers = j.find("headers");
  if (type == j.end() || !type->is_string() || headers == j.end() || !headers->is_object()) {
    return {};
  }
  for (const auto& [name, value] : headers->items()) {
    if (!value.is_string()) {
      return {};
    }
  }
  Frame f;
  f.message_id = header_of(*headers, "messageId");
  f.topic = header_of(*headers, "topic");
  f.event_type = header_of(*headers, "eventType");
  f.event_id = header_of(*headers, "eventId");
  f.event_corp_id = header_of(*headers, "eventCorpId");
  for (const std::string* s :
       {&f.message_id, &f.topic, &f.event_type, &f.event_id, &f.event_corp_id}) {
    if (s->size() > k_max_field_bytes) {
      return {};
    }
  }
  if (f.message_id.empty()) {
    return {};
  }
  if (const auto data = j.find("data"); data != j.end() && !data->is_null()) {
    if (!data->is_string()) {
      return {};
    }
    f.data = data->get<std::string>();
  }
  const auto& t = type->get_ref<const std::string&>();
  if (t == "SYSTEM") {
    f.kind = f.topic == "ping"         ? Kind::ping
             : f.topic == "disconnect" ? Kind::disconnect
                                       : Kind::system_other;
  } else {
    f.kind = t == "EVENT" ? Kind::event : t == "CALLBACK" ? Kind::callback : Kind::other;
  }
  return f;
}

// What a bad frame's `why` may say: fixed texts, and the name (capped, never
// the value) of a header that is not a string.
bool is_frame_error(const std::string& why, const json& j) {
  for (const char* fixed :
       {"not JSON", "not a JSON object", "no string `type`", "no `headers` object",
        "no `messageId` header", "`data` is not a string"}) {
    if (why == fixed) {
      return true;
    }
  }
  if (why == "a header is longer than " + std::to_string(k_max_field_bytes) + " bytes") {
    return true;
  }
  if (j.is_object() && j.contains("headers") && j["headers"].is_object()) {
    for (const auto& [name, value] : j["headers"].items()) {
      if (!value.is_string() &&
          why == "header `" + rrd::dingtalk::cap_text(name, 64) + "` is not a string") {
        return true;
      }
    }
  }
  return false;
}

// An answer the client sends: a JSON object of exactly code, headers
// (contentType and messageId), message and data (a string), in UTF-8.
void check_answer(const std::string& text, int code, std::string_view message,
                  std::string_view message_id, std::optional<std::string_view> data) {
  check(is_utf8(text), "an answer is UTF-8 (a text message)");
  const json j = parse_json(text);
  check(j.is_object() && j.size() == 4, "an answer is a JSON object of four members");
  check(j.contains("code") && j["code"].is_number_integer() && j["code"].get<int>() == code,
        "an answer carries its code");
  check(j.contains("message") && j["message"].is_string() &&
            j["message"].get_ref<const std::string&>() == message,
        "an answer carries its message");
  check(j.contains("headers") && j["headers"].is_object() && j["headers"].size() == 2,
        "an answer has two headers");
  const json& h = j["headers"];
  check(h.contains("contentType") && h["contentType"] == "application/json",
        "an answer's contentType is application/json");
  check(h.contains("messageId") && h["messageId"].is_string(), "an answer has a messageId");
  if (is_utf8(message_id)) {
    check(h["messageId"].get_ref<const std::string&>() == message_id,
          "an answer parses back with the messageId it was built with");
  }
  check(j.contains("data") && j["data"].is_string(), "an answer's data is a string");
  if (data) {
    check(j["data"].get_ref<const std::string&>() == *data, "an answer carries its data");
  }
}

void check_acknowledgements(std::string_view message_id) {
  check_answer(rrd::stream::event_ack(message_id), 200, "OK", message_id, k_ack_data);
  const json ack = parse_json(k_ack_data);
  check(ack["status"] == "SUCCESS", "an acknowledgement says SUCCESS");
  const std::string refusal = rrd::stream::callback_refusal(message_id);
  check_answer(refusal, 404, "unknown topic", message_id, std::nullopt);
  const json data = parse_json(parse_json(refusal)["data"].get<std::string>());
  check(data.is_object() && data.contains("status") && data["status"] == "LATER",
        "a callback refusal says LATER");
}

void check_disconnect_reason(const Frame& f) {
  const std::string reason = rrd::stream::disconnect_reason(f);
  check(reason.size() <= rrd::dingtalk::k_max_message_chars + 3, "a disconnect reason is capped");
  check(is_log_safe(reason), "a disconnect reason holds no control characters");
  const json d = parse_json(f.data);
  const bool has = d.is_object() && d.contains("reason") && d["reason"].is_string();
  if (!has) {
    check(reason.empty(), "no disconnect reason without a string `reason`");
    return;
  }
  const auto& given = d["reason"].get_ref<const std::string&>();
  check(reason.empty() == given.empty(), "a disconnect reason is there when given");
  if (given.size() <= rrd::dingtalk::k_max_message_chars && is_log_safe(given)) {
    check(reason == given, "a short, clean disconnect reason is kept as it is");
  }
}

// The `type` a frame of this kind has (a copy: the type may hold a NUL).
std::string type_of(Kind k, const json& j) {
  switch (k) {
  case Kind::ping:
  case Kind::disconnect:
  case Kind::system_other:
    return "SYSTEM";
  case Kind::event:
    return "EVENT";
  case Kind::callback:
    return "CALLBACK";
  case Kind::other:
  case Kind::bad:
    break;
  }
  return j["type"].get<std::string>();
}

// One text message through parse_frame() and what the client builds for it.
Frame check_frame(std::string_view text) {
  const Frame f = rrd::stream::parse_frame(text);
  const json j = parse_json(text);
  check(same_frame(f, reference_frame(j)),
        "parse_frame and the tree-based reference agree on the kind and the fields");
  if (f.kind == Kind::bad) {
    check(!f.why.empty(), "a bad frame says why");
    check(is_log_safe(f.why), "why holds no control characters");
    check(is_frame_error(f.why, j), "why is a fixed text or names a header, never a value");
    return f;
  }
  check(f.why.empty(), "only a bad frame has a why");
  check(!f.message_id.empty(), "a frame has a messageId");
  for (const std::string* s :
       {&f.message_id, &f.topic, &f.event_type, &f.event_id, &f.event_corp_id}) {
    check(s->size() <= k_max_field_bytes, "a frame's fields are capped");
  }

  // The same frame written differently reads the same.
  for (const std::string& again : {j.dump(), j.dump(2), j.dump(-1, ' ', /*ensure_ascii=*/true)}) {
    check(same_frame(rrd::stream::parse_frame(again), f), "a re-serialised frame reads the same");
  }
  json rebuilt = {{"type", type_of(f.kind, j)}, {"headers", {{"messageId", f.message_id}}}};
  for (const auto& [name, value] : {std::pair<const char*, const std::string*>{"topic", &f.topic},
                                    {"eventType", &f.event_type},
                                    {"eventId", &f.event_id},
                                    {"eventCorpId", &f.event_corp_id}}) {
    if (!value->empty()) {
      rebuilt["headers"][name] = *value;
    }
  }
  if (!f.data.empty()) {
    rebuilt["data"] = f.data;
  }
  check(same_frame(rrd::stream::parse_frame(rebuilt.dump()), f),
        "a frame rebuilt from its fields reads the same");

  check_answer(rrd::stream::ping_answer(f), 200, "OK", f.message_id, f.data);
  check_acknowledgements(f.message_id);
  check_disconnect_reason(f);
  if (f.kind == Kind::event && f.event_type == rrd::stream::k_event_robot_msg_read) {
    rrd::fuzz::check_read_event(f.data);
  }
  return f;
}

// What the client sends for a frame (Client::handle_text), if anything.
std::optional<std::string> answer_for(const Frame& f) {
  switch (f.kind) {
  case Kind::ping:
    return rrd::stream::ping_answer(f);
  case Kind::event:
    return rrd::stream::event_ack(f.message_id);
  case Kind::callback:
    return rrd::stream::callback_refusal(f.message_id);
  case Kind::disconnect:
  case Kind::system_other:
  case Kind::other:
  case Kind::bad:
    break;
  }
  return std::nullopt;
}

// ---- the WebSocket ----------------------------------------------------------

struct Sent {
  int opcode = 0;
  std::string payload;
  bool operator==(const Sent&) const = default;
};

std::uint64_t big_endian(std::string_view bytes) {
  std::uint64_t v = 0;
  for (const char c : bytes) {
    v = v << 8 | static_cast<unsigned char>(c);
  }
  return v;
}

// The frames a client wrote, unmasked: each whole, final, without RSV bits,
// masked (RFC 6455 5.3), with the shortest length encoding.
std::vector<Sent> decode_sent(std::string_view out) {
  std::vector<Sent> frames;
  while (!out.empty()) {
    check(out.size() >= 2, "a sent frame has its two header bytes");
    const auto b0 = static_cast<unsigned char>(out[0]);
    const auto b1 = static_cast<unsigned char>(out[1]);
    out.remove_prefix(2);
    check((b0 & 0xF0) == 0x80, "a sent frame is final and has no RSV bit");
    check((b1 & 0x80) != 0, "a sent frame is masked");
    std::uint64_t length = b1 & 0x7F;
    const std::size_t extended = length == 126 ? 2 : length == 127 ? 8 : 0;
    check(out.size() >= extended + 4, "a sent frame has its length and masking key");
    if (extended != 0) {
      length = big_endian(out.substr(0, extended));
      check(extended == 2 ? length >= 126 : length >= 65536 && length < (1ULL << 63),
            "a sent frame's length is minimally encoded");
    }
    const std::string_view mask = out.substr(extended, 4);
    out.remove_prefix(extended + 4);
    check(out.size() >= length, "a sent frame's payload is whole");
    Sent s;
    s.opcode = b0 & 0x0F;
    s.payload.assign(out.substr(0, length));
    for (std::size_t i = 0; i < s.payload.size(); ++i) {
      s.payload[i] = static_cast<char>(s.payload[i] ^ mask[i % 4]);
    }
    out.remove_prefix(length);
    check(s.opcode == 0x1 || s.opcode == 0x8 || s.opcode == 0x9 || s.opcode == 0xA,
          "a sent frame is text, close, ping or pong");
    check(s.opcode == 0x1 || s.payload.size() <= k_max_control_payload,
          "a sent control frame carries at most 125 bytes");
    frames.push_back(std::move(s));
  }
  return frames;
}

// RFC 6455 7.4: the codes a close frame may carry.
bool is_valid_close_code(std::uint16_t code) {
  return (code >= 1000 && code <= 1011 && code != 1004 && code != 1005 && code != 1006) ||
         (code >= 3000 && code <= 4999);
}

struct Run {
  std::unique_ptr<WebSocket> ws;
  std::vector<WsMessage> messages;
  std::vector<Sent> sent;
  bool ok = true; // every receive() succeeded
};

Run feed(std::size_t cap, const std::vector<std::string_view>& pieces) {
  Run r;
  r.ws = std::make_unique<WebSocket>(cap);
  std::string out;
  for (const std::string_view piece : pieces) {
    const bool was_closed = r.ws->read_closed();
    const bool ok = r.ws->receive(piece);
    check(ok == r.ws->error().empty(), "receive() fails exactly when error() says why");
    std::vector<WsMessage>& got = r.ws->messages();
    const std::string more = r.ws->take_output();
    if (was_closed) {
      check(got.empty() && more.empty(), "nothing is read or sent once reading stopped");
    }
    for (WsMessage& m : got) {
      r.messages.push_back(std::move(m));
    }
    got.clear();
    out += more;
    r.ok = r.ok && ok;
  }
  r.sent = decode_sent(out);
  return r;
}

void check_run(const Run& r, std::size_t cap) {
  const WebSocket& ws = *r.ws;
  for (std::size_t i = 0; i < r.messages.size(); ++i) {
    const WsMessage& m = r.messages[i];
    switch (m.type) {
    case WsMessage::Type::text:
      check(is_utf8(m.payload), "a text message is UTF-8");
      [[fallthrough]];
    case WsMessage::Type::binary:
      check(m.payload.size() <= cap, "no message is larger than the cap");
      check(m.close_code == 0, "only a close has a close code");
      break;
    case WsMessage::Type::pong:
      check(m.payload.size() <= std::min(cap, k_max_control_payload), "a pong is capped");
      check(m.close_code == 0, "only a close has a close code");
      break;
    case WsMessage::Type::close:
      check(m.payload.size() <= std::min(cap, k_max_control_payload), "a close is capped");
      check(i + 1 == r.messages.size(), "nothing is read after a close");
      check(m.close_code ==
                (m.payload.size() >= 2 ? big_endian(std::string_view(m.payload).substr(0, 2)) : 0),
            "a close's code is its first two bytes");
      check(m.close_code == 0 || is_valid_close_code(m.close_code),
            "a close handed out carries a valid code");
      break;
    }
  }
  check(r.ok == ws.error().empty(), "receive() failed exactly when error() is set");
  check(ws.frames_received() >= r.messages.size(), "every message took a frame");
  const bool close_received =
      !r.messages.empty() && r.messages.back().type == WsMessage::Type::close;
  const std::string& e = ws.error();
  if (e.empty()) {
    check(ws.read_closed() == close_received, "reading stops without an error only on a close");
  } else {
    check(ws.read_closed(), "an error stops reading");
    check(!close_received, "a close received is not an error");
    const std::uint16_t code = ws.close_code_sent();
    // wslay's frame reader refuses some broken headers (a control frame
    // over 125 bytes or fragmented, a length not minimally encoded) as a
    // failed read: receive() then sends no close at all.
    check((e == "a message was larger than the cap" && code == 1009) ||
              (e == "a text message was not valid UTF-8" && code == 1007) ||
              (e == "broken WebSocket framing" && code == 1002) ||
              (e.rfind("WebSocket receive failed (wslay error ", 0) == 0 && !ws.close_sent()),
          "an error names what was wrong, with the close code sent for it");
  }
  // The frames sent: pongs, then the close, if any, last.
  const auto close =
      std::find_if(r.sent.begin(), r.sent.end(), [](const Sent& s) { return s.opcode == 0x8; });
  check(ws.close_sent() == (close != r.sent.end()), "close_sent() says whether a close went out");
  check(close == r.sent.end() || close + 1 == r.sent.end(), "nothing is sent after a close");
  for (auto it = r.sent.begin(); it != close; ++it) {
    check(it->opcode == 0xA, "only pongs go out on their own while reading");
  }
  check(r.sent.size() - (close != r.sent.end() ? 1 : 0) <= ws.frames_received(),
        "a pong answers a ping received");
  if (close != r.sent.end()) {
    const std::uint64_t code =
        close->payload.size() >= 2 ? big_endian(std::string_view(close->payload).substr(0, 2)) : 0;
    check(ws.close_code_sent() == (code == 0 ? 1005 : code), "close_code_sent() is what went out");
    if (close_received) {
      const std::string& got = r.messages.back().payload;
      check(close->payload == (got.size() >= 2 ? got : std::string()),
            "a close is answered with its own code and reason");
    }
  } else {
    check(ws.close_code_sent() == 0, "no close code before a close");
  }
}

bool same_messages(const std::vector<WsMessage>& a, const std::vector<WsMessage>& b) {
  return std::equal(
      a.begin(), a.end(), b.begin(), b.end(), [](const WsMessage& x, const WsMessage& y) {
        return x.type == y.type && x.payload == y.payload && x.close_code == y.close_code;
      });
}

std::vector<Sent> pongs_of(const Run& r) {
  std::vector<Sent> out;
  std::copy_if(r.sent.begin(), r.sent.end(), std::back_inserter(out),
               [](const Sent& s) { return s.opcode == 0xA; });
  return out;
}

// The pongs two splittings sent are the same, in order, but wslay drops the
// pongs still queued when it queues a close (and a failed read sends
// nothing): a splitting that read a ping and the end of reading in one
// piece may send fewer of them.
bool same_pongs(const Run& a, const Run& b) {
  const auto pa = pongs_of(a);
  const auto pb = pongs_of(b);
  const auto& fewer = pa.size() < pb.size() ? pa : pb;
  const auto& more = pa.size() < pb.size() ? pb : pa;
  return std::equal(fewer.begin(), fewer.end(), more.begin()) &&
         (pa.size() == pb.size() || a.ws->read_closed() || b.ws->read_closed());
}

// libwslay (1.1.1) checks a close frame's payload for UTF-8 piece by piece
// as it arrives, skipping the first two bytes of every piece (meant for the
// status code): whether a close is refused with 1007 depends on how its
// frame was split across reads (byte by byte, nothing is checked at all).
// This is the one difference allowed: `b` refuses a close with 1007 where
// `a`, having read the same until then, is still inside that close, takes
// it, or refuses its code (1002). Text messages are checked byte by byte
// whatever the pieces, so `b`'s 1007 can only be that close's.
bool wslay_close_utf8_split(const Run& a, const Run& b) {
  if (b.ws->error() != "a text message was not valid UTF-8" ||
      a.ws->frames_received() != b.ws->frames_received() || !same_pongs(a, b) || b.sent.empty() ||
      b.sent.back() != Sent{0x8, std::string("\x03\xef", 2)}) {
    return false;
  }
  const std::string& e = a.ws->error();
  if (e == "broken WebSocket framing" || (e.empty() && !a.ws->read_closed())) {
    return same_messages(a.messages, b.messages);
  }
  if (!e.empty() || a.messages.empty() || a.messages.back().type != WsMessage::Type::close ||
      a.messages.back().payload.size() <= 2) {
    return false;
  }
  const std::vector<WsMessage> before(a.messages.begin(), a.messages.end() - 1);
  return same_messages(before, b.messages);
}

void check_same(const Run& a, const Run& b) {
  if (wslay_close_utf8_split(a, b) || wslay_close_utf8_split(b, a)) {
    return;
  }
  check(same_messages(a.messages, b.messages), "every splitting hands out the same messages");
  check(same_pongs(a, b), "every splitting sends the same pongs");
  check(a.ok == b.ok && a.ws->error() == b.ws->error(), "every splitting fails alike");
  check(a.ws->read_closed() == b.ws->read_closed() && a.ws->close_sent() == b.ws->close_sent() &&
            a.ws->close_code_sent() == b.ws->close_code_sent(),
        "every splitting reaches the same close decision");
  check(!a.ws->close_sent() || a.sent.back() == b.sent.back(),
        "every splitting sends the same close");
  check(a.ws->frames_received() == b.ws->frames_received(), "every splitting counts the frames");
}

// After a splitting is read, the client's answers (and its keep-alive ping,
// then its close) go out through the WebSocket while it is open, and not
// once it is closing.
void send_answers(Run& r, std::string_view bytes) {
  WebSocket& ws = *r.ws;
  auto closing = [&ws] { return ws.close_sent() || !ws.error().empty(); };
  for (const WsMessage& m : r.messages) {
    if (m.type != WsMessage::Type::text) {
      continue;
    }
    const auto answer = answer_for(check_frame(m.payload));
    if (!answer) {
      continue;
    }
    const bool was_closing = closing();
    const bool queued = ws.queue_text(*answer);
    const auto out = decode_sent(ws.take_output());
    check(queued == !was_closing, "an answer is queued exactly while the connection is open");
    check(queued ? out == std::vector<Sent>{{0x1, *answer}} : out.empty(),
          "a queued answer goes out as one text frame");
  }
  const std::string_view text = bytes.substr(0, 200);
  bool was_closing = closing();
  bool queued = ws.queue_ping(text);
  check(queued == !was_closing, "a ping is queued exactly while the connection is open");
  check(queued ? decode_sent(ws.take_output()) ==
                     std::vector<Sent>{{0x9, std::string(text.substr(0, k_max_control_payload))}}
               : ws.take_output().empty(),
        "a ping carries at most 125 bytes of its payload");
  was_closing = closing();
  queued = ws.queue_close(1002, text);
  check(queued == !was_closing, "a close is queued exactly while the connection is open");
  if (queued) {
    check(decode_sent(ws.take_output()) ==
              std::vector<Sent>{{0x8, std::string("\x03\xea", 2) +
                                          std::string(text.substr(0, k_max_close_reason))}},
          "a close carries its code and at most 122 bytes of reason");
    check(ws.close_sent() && ws.close_code_sent() == 1002, "the close is recorded");
  }
  check(!ws.queue_text("late") && ws.take_output().empty(), "nothing is queued after a close");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < k_header_bytes) {
    return 0;
  }
  const std::size_t cap = k_caps[data[0] % k_cap_count];
  const std::size_t step = data[1] + 1U;
  const std::string_view bytes(reinterpret_cast<const char*>(data + k_header_bytes),
                               size - k_header_bytes);
  const std::size_t split = (data[2] | static_cast<std::size_t>(data[3]) << 8) % (bytes.size() + 1);
  try {
    check_frame(bytes);
    // Answers for any id at all, even one that is not UTF-8.
    check_acknowledgements(bytes.substr(0, k_max_field_bytes));

    Run whole = feed(cap, {bytes});
    const Run halves = feed(cap, {bytes.substr(0, split), bytes.substr(split)});
    std::vector<std::string_view> steps;
    for (std::size_t at = 0; at < bytes.size(); at += step) {
      steps.push_back(bytes.substr(at, step));
    }
    const Run stepped = feed(cap, steps);
    check_run(whole, cap);
    check_run(halves, cap);
    check_run(stepped, cap);
    check_same(whole, halves);
    check_same(whole, stepped);
    send_answers(whole, bytes);
  } catch (...) {
    check(false, "no exception escapes the frame or WebSocket handling");
  }
  return 0;
}
