// libFuzzer target: the two texts the Stream client reads besides the
// frames themselves, the input being both:
//  - a robot_msg_read event's data: parse_read_event() must agree with a
//    reference read off a document tree; an accepted event has a non-empty
//    processQueryKey and userId (when present) without control characters
//    and a read time within range; an error is a fixed text naming a field,
//    never quoting the data;
//  - the server's answer to the WebSocket upgrade: an UpgradeParser fed it
//    whole, a byte at a time and split in two at every position (at chosen
//    positions for a long input) must reach the same outcome, status, error
//    and leftover bytes, and accept only an answer that passes every check
//    of RFC 6455 4.1 for the key the client sent.
// Nothing may crash, throw or hang.
// Thread-safety: libFuzzer calls it from one thread.
#include "readreceiptd/stream/handshake.hpp"
#include "stream_fuzz_checks.hpp"

#include <array>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace {

using rrd::fuzz::check;
using rrd::stream::k_max_upgrade_answer_bytes;
using rrd::stream::UpgradeParser;
using State = UpgradeParser::State;

// RFC 6455 section 1.3's example: the key for the nonce "the sample nonce"
// and the accept value a server answers it with. Seeds use this accept.
constexpr std::string_view k_nonce = "the sample nonce";
constexpr std::string_view k_key = "dGhlIHNhbXBsZSBub25jZQ==";
constexpr std::string_view k_accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
// Up to this size the answer is split at every position; past it, at
// k_chosen_splits positions the input chooses, and around the limits.
constexpr std::size_t k_split_everywhere_bytes = 256;
constexpr std::size_t k_chosen_splits = 32;
constexpr std::string_view k_end_of_head = "\r\n\r\n";

struct Outcome {
  State state = State::more;
  int status = 0;
  std::string error;
  std::string after; // accepted: the leftover and the bytes never fed
};

// Feeds `bytes` cut at `cuts` (ascending), as the client does: pieces until
// an outcome, then the end of input if none came.
Outcome run(std::string_view bytes, const std::vector<std::size_t>& cuts) {
  UpgradeParser p{std::string(k_accept)};
  Outcome o;
  std::size_t at = 0;
  for (std::size_t i = 0; i <= cuts.size() && o.state == State::more; ++i) {
    const std::size_t next = i < cuts.size() ? cuts[i] : bytes.size();
    o.state = p.feed(bytes.substr(at, next - at));
    check(o.state == p.state(), "feed() returns the state");
    at = next;
  }
  if (o.state == State::more) {
    check(at == bytes.size(), "every byte was fed");
    o.state = p.end_of_input();
    check(o.state != State::more, "the end of input decides");
  }
  check(p.feed("HTTP/1.1 101 Switching Protocols\r\n\r\n") == o.state &&
            p.end_of_input() == o.state,
        "an outcome is final");
  o.status = p.status();
  o.error = p.error();
  if (o.state == State::accepted) {
    o.after = p.take_leftover();
    o.after += bytes.substr(at);
  }
  return o;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

std::string_view trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t");
  if (first == std::string_view::npos) {
    return {};
  }
  return s.substr(first, s.find_last_not_of(" \t") - first + 1);
}

bool lists_upgrade(std::string_view value) {
  for (std::size_t start = 0; start <= value.size();) {
    const auto comma = std::min(value.find(',', start), value.size());
    if (lower(trim(value.substr(start, comma - start))) == "upgrade") {
      return true;
    }
    start = comma + 1;
  }
  return false;
}

// The answer's head read the plain way, for what RFC 6455 4.1 asks of it.
struct Head {
  bool whole = false;         // "\r\n\r\n" within k_max_upgrade_answer_bytes
  std::size_t end = 0;        // where it starts
  bool http11 = false;        // "HTTP/1.1 ddd" then a space or nothing
  int status = 0;             // http11: ddd
  bool lines_ok = true;       // every header line is name ":" value, the name unindented
  bool any_upgrade = false;   // some Upgrade says websocket
  bool every_upgrade = false; // there is an Upgrade, and each says websocket
  bool any_connection = false;
  bool every_connection = false;
  int accepts = 0; // Sec-WebSocket-Accept lines
  bool accept_matches = false;
  bool chose_more = false; // a non-empty extension or subprotocol
};

Head read_head(std::string_view bytes) {
  Head h;
  const auto end = bytes.find(k_end_of_head);
  h.whole = end != std::string_view::npos && end + 4 <= k_max_upgrade_answer_bytes;
  if (!h.whole) {
    return h;
  }
  h.end = end;
  const std::string_view head = bytes.substr(0, end);
  const auto eol = head.find("\r\n");
  const std::string_view status_line = head.substr(0, eol);
  h.http11 = status_line.size() >= 12 && status_line.substr(0, 9) == "HTTP/1.1 " &&
             std::isdigit(static_cast<unsigned char>(status_line[9])) &&
             std::isdigit(static_cast<unsigned char>(status_line[10])) &&
             std::isdigit(static_cast<unsigned char>(status_line[11])) &&
             (status_line.size() == 12 || status_line[12] == ' ');
  if (h.http11) {
    h.status = std::stoi(std::string(status_line.substr(9, 3)));
  }
  bool upgrade_seen = false;
  bool connection_seen = false;
  bool every_upgrade = true;
  bool every_connection = true;
  std::string_view rest = eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);
  while (!rest.empty()) {
    const auto line_end = rest.find("\r\n");
    const std::string_view line = rest.substr(0, line_end);
    rest = line_end == std::string_view::npos ? std::string_view() : rest.substr(line_end + 2);
    const auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0 || line[0] == ' ' || line[0] == '\t') {
      h.lines_ok = false;
      continue;
    }
    const std::string name = lower(line.substr(0, colon));
    const std::string_view value = trim(line.substr(colon + 1));
    if (name == "upgrade") {
      upgrade_seen = true;
      const bool ws = lower(value) == "websocket";
      h.any_upgrade = h.any_upgrade || ws;
      every_upgrade = every_upgrade && ws;
    } else if (name == "connection") {
      connection_seen = true;
      const bool up = lists_upgrade(value);
      h.any_connection = h.any_connection || up;
      every_connection = every_connection && up;
    } else if (name == "sec-websocket-accept") {
      ++h.accepts;
      h.accept_matches = value == k_accept;
    } else if ((name == "sec-websocket-extensions" || name == "sec-websocket-protocol") &&
               !value.empty()) {
      h.chose_more = true;
    }
  }
  h.every_upgrade = upgrade_seen && every_upgrade;
  h.every_connection = connection_seen && every_connection;
  return h;
}

// Every error an UpgradeParser may give: fixed texts, and the status as a
// number; never a header or a value.
bool is_upgrade_error(const std::string& error, int status) {
  for (const char* fixed : {
           "the server closed the connection without an answer",
           "the server closed the connection inside the handshake answer",
           "the handshake answer is not HTTP",
           "the handshake answer is not HTTP/1.1",
           "a malformed header line in the handshake answer",
           "Sec-WebSocket-Accept appears twice in the handshake answer",
           "the server chose a WebSocket extension that was not offered",
           "the server chose a WebSocket subprotocol that was not offered",
           "the handshake answer lacks \"Upgrade: websocket\"",
           "the handshake answer lacks \"Connection: Upgrade\"",
           "the handshake answer lacks Sec-WebSocket-Accept",
           "the handshake answer's Sec-WebSocket-Accept does not match the key sent",
       }) {
    if (error == fixed) {
      return true;
    }
  }
  return error == "the handshake answer's head is longer than " +
                      std::to_string(k_max_upgrade_answer_bytes) + " bytes" ||
         error ==
             "the server answered the handshake with HTTP " + std::to_string(status) + ", not 101";
}

void check_outcome(const Outcome& o, std::string_view bytes) {
  const Head h = read_head(bytes);
  const bool acceptable = h.whole && h.http11 && h.status == 101 && h.lines_ok && h.accepts == 1 &&
                          h.accept_matches && !h.chose_more;
  switch (o.state) {
  case State::more:
    check(false, "an outcome after the end of input");
    break;
  case State::accepted:
    check(o.status == 101 && o.error.empty(), "accepted is a 101 without an error");
    check(acceptable && h.any_upgrade && h.any_connection,
          "an accepted answer passed every check for the key sent");
    check(o.after == bytes.substr(h.end + 4), "the bytes after the head are handed on");
    break;
  case State::refused:
    check(o.error.empty(), "a refusal is a status, not an error");
    check(h.whole && h.http11 && o.status == h.status && o.status >= 400 && o.status <= 999,
          "refused is an HTTP/1.1 status of 400 or more");
    break;
  case State::invalid:
    check(is_upgrade_error(o.error, o.status),
          "an error is a fixed text, never the answer's bytes");
    check(o.status >= 0 && o.status < 400, "an invalid answer's status is none or below 400");
    if (bytes.empty()) {
      check(o.error == "the server closed the connection without an answer",
            "nothing at all is told apart");
    }
    break;
  }
  if (acceptable && h.every_upgrade && h.every_connection) {
    check(o.state == State::accepted, "an answer that passes every check is accepted");
  }
  if (h.whole && h.http11 && h.status >= 400) {
    check(o.state == State::refused, "an HTTP/1.1 status of 400 or more is a refusal");
  }
}

bool same(const Outcome& a, const Outcome& b) {
  return a.state == b.state && a.status == b.status && a.error == b.error && a.after == b.after;
}

// A cheap hash of the input, to choose split positions from.
std::uint64_t mix(std::string_view bytes) {
  std::uint64_t h = 1469598103934665603ULL;
  for (const char c : bytes) {
    h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  }
  return h;
}

void check_upgrade(std::string_view bytes) {
  const Outcome whole = run(bytes, {});
  check_outcome(whole, bytes);

  std::vector<std::size_t> every(bytes.size());
  for (std::size_t i = 0; i < every.size(); ++i) {
    every[i] = i + 1;
  }
  if (!every.empty()) {
    every.pop_back();
  }
  check(same(run(bytes, every), whole), "a byte at a time reaches the same outcome");

  std::vector<std::size_t> splits;
  if (bytes.size() <= k_split_everywhere_bytes) {
    for (std::size_t i = 0; i <= bytes.size(); ++i) {
      splits.push_back(i);
    }
  } else {
    std::uint64_t h = mix(bytes);
    for (std::size_t i = 0; i < k_chosen_splits; ++i) {
      splits.push_back(static_cast<std::size_t>(h % (bytes.size() + 1)));
      h = h * 6364136223846793005ULL + 1442695040888963407ULL;
    }
    const auto end = bytes.find(k_end_of_head);
    for (const std::size_t around :
         {k_max_upgrade_answer_bytes, end == std::string_view::npos ? 0 : end}) {
      for (std::size_t i = around >= 4 ? around - 4 : 0; i <= around + 4; ++i) {
        if (i <= bytes.size()) {
          splits.push_back(i);
        }
      }
    }
  }
  for (const std::size_t at : splits) {
    check(same(run(bytes, {at}), whole), "every split in two reaches the same outcome");
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    static const bool k_rfc_example = [] {
      std::array<unsigned char, 16> nonce{};
      std::copy(k_nonce.begin(), k_nonce.end(), nonce.begin());
      return rrd::stream::make_websocket_key(nonce) == k_key &&
             rrd::stream::websocket_accept(k_key) == k_accept;
    }();
    check(k_rfc_example, "RFC 6455's example key and accept value");

    rrd::fuzz::check_read_event(bytes);
    check_upgrade(bytes);
  } catch (...) {
    check(false, "no exception escapes the event or handshake parsing");
  }
  return 0;
}
