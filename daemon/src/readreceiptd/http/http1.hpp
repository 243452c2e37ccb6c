// HTTP/1.1 on the wire, for the direct client (direct_engine.cpp): URL
// parsing, request serialisation and an incremental response parser. Pure;
// no I/O. Private to the http module.
//
// Thread-safety: the functions are pure; a ResponseParser is a plain value
// used by one thread at a time.
#pragma once

#include "readreceiptd/http/http_engine.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rrd::http::http1 {

// Response header bytes accepted per response (every header block of it
// together, 1xx ones and trailers included); more is treated like a body
// over the cap.
inline constexpr std::size_t k_max_header_bytes = 64 * 1024;

// An http:// or https:// URL, taken apart. The views point into the URL.
struct Target {
  bool tls = false;
  std::string_view host;      // a name or an address; IPv6 without brackets
  std::string_view port;      // digits; 80 or 443 when the URL has none
  std::string_view authority; // host[:port] as the URL writes it: the Host header
  std::string_view path;      // path and query; "/" when the URL has none
};

// Takes `url` apart; nullopt (and `why`) for anything but an absolute http or
// https URL without user info.
std::optional<Target> parse_url(std::string_view url, std::string& why);

// Why a request header cannot be sent as it is (a line break, a colon or
// nothing in its name, a line break in its value); empty when it can.
std::string check_headers(const std::vector<std::pair<std::string, std::string>>& headers);

// Appends the request's bytes to `out`: the request line, Host, the
// request's headers, Content-Length when there is a body (or the method is
// one that carries one), then the body. Headers named Host, Content-Length,
// Transfer-Encoding or Connection are the client's to send and are skipped.
void write_request(std::string& out, const Request& request, const Target& target);

// Parses one response from the bytes of a connection, as they arrive.
class ResponseParser {
public:
  enum class State {
    more,      // needs more bytes
    done,      // a whole response: status, headers(), body() are set
    invalid,   // not HTTP, or broken framing: see error()
    too_large, // the head passed k_max_header_bytes or the body the cap
  };

  // Starts on a new response. `no_body`: the request was HEAD, whose answer
  // has no body whatever its headers say.
  void reset(bool no_body, std::size_t max_body_bytes);

  // Consumes bytes from `data`; `used` says how many (fewer than given only
  // once the state is no longer `more`: the rest follow the response).
  State feed(std::string_view data, std::size_t& used);
  // The peer closed the connection: ends a body that runs until the close;
  // anything else still incomplete is invalid.
  State end_of_input();

  State state() const { return m_state; }
  // Bytes of this response received so far.
  std::uint64_t received() const { return m_received; }
  int status() const { return m_status; }
  // Whether the connection can carry another request after this response.
  bool keep_alive() const { return m_keep_alive; }
  const std::string& error() const { return m_error; }
  std::vector<std::pair<std::string, std::string>>& headers() { return m_headers; }
  std::string& body() { return m_body; }

private:
  enum class Phase { head, length, until_close, chunk_size, chunk_data, chunk_end, trailers, done };

  State fail(State s, std::string why);
  // Parses the head in m_head[0, end); sets what the body framing needs.
  State parse_head(std::size_t end);
  State body_bytes(std::string_view& data);
  // Reads one line of the chunked framing into m_line; false when it needs
  // more bytes.
  bool take_line(std::string_view& data, State& failed);

  bool m_no_body = false;
  std::size_t m_max_body = 0;
  State m_state = State::more;
  Phase m_phase = Phase::head;
  std::uint64_t m_received = 0;
  std::size_t m_header_bytes = 0;
  std::string m_head;
  std::string m_line;
  bool m_line_complete = false; // m_line holds a whole line, already taken
  std::uint64_t m_remaining = 0;
  int m_status = 0;
  bool m_keep_alive = true;
  std::string m_error;
  std::vector<std::pair<std::string, std::string>> m_headers;
  std::string m_body;
};

} // namespace rrd::http::http1
