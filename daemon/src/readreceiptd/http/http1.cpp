// HTTP/1.1 on the wire (RFC 9112): see http1.hpp.
#include "readreceiptd/http/http1.hpp"

#include "readreceiptd/http/text.hpp"

#include <algorithm>
#include <limits>

namespace rrd::http::http1 {

namespace {

using detail::has_blank;
using detail::has_line_break;
using detail::iequals;
using detail::is_digit;
using detail::to_lower_ascii;
using detail::trim;

// A chunk-size line, or a trailer line, longer than this is not HTTP.
constexpr std::size_t k_max_line_bytes = 4096;
constexpr std::uint64_t k_max_port = 65535;

// A decimal number of digits only; nullopt for anything else or an
// overflow.
std::optional<std::uint64_t> parse_decimal(std::string_view s) {
  if (s.empty()) {
    return std::nullopt;
  }
  std::uint64_t value = 0;
  for (const char c : s) {
    if (!is_digit(c)) {
      return std::nullopt;
    }
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) {
      return std::nullopt;
    }
    value = value * 10 + digit;
  }
  return value;
}

// Whether the comma-separated list `list` holds `token` (any case).
bool has_token(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    const auto comma = list.find(',');
    if (iequals(trim(list.substr(0, comma)), token)) {
      return true;
    }
    if (comma == std::string_view::npos) {
      break;
    }
    list.remove_prefix(comma + 1);
  }
  return false;
}

// The last entry of a comma-separated list, trimmed.
std::string_view last_token(std::string_view list) {
  const auto comma = list.rfind(',');
  return trim(comma == std::string_view::npos ? list : list.substr(comma + 1));
}

bool client_owned(std::string_view name) {
  return iequals(name, "host") || iequals(name, "content-length") ||
         iequals(name, "transfer-encoding") || iequals(name, "connection");
}

} // namespace

std::optional<Target> parse_url(std::string_view url, std::string& why) {
  Target t;
  const auto scheme_end = url.find("://");
  const std::string_view scheme =
      scheme_end == std::string_view::npos ? std::string_view() : url.substr(0, scheme_end);
  if (iequals(scheme, "http")) {
    t.tls = false;
  } else if (iequals(scheme, "https")) {
    t.tls = true;
  } else {
    why = "unsupported URL scheme (only http and https)";
    return std::nullopt;
  }
  std::string_view rest = url.substr(scheme_end + 3);
  rest = rest.substr(0, rest.find('#'));
  const auto path_start = std::min(rest.find('/'), rest.find('?'));
  t.authority = rest.substr(0, path_start);
  t.path = path_start == std::string_view::npos ? std::string_view("/") : rest.substr(path_start);
  if (t.authority.find('@') != std::string_view::npos) {
    why = "URLs with user information are not supported";
    return std::nullopt;
  }
  std::string_view host = t.authority;
  std::string_view port;
  if (!host.empty() && host.front() == '[') {
    const auto close = host.find(']');
    if (close == std::string_view::npos) {
      why = "invalid IPv6 address in URL";
      return std::nullopt;
    }
    const std::string_view after = host.substr(close + 1);
    host = host.substr(1, close - 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        why = "invalid URL authority";
        return std::nullopt;
      }
      port = after.substr(1);
    }
  } else if (const auto colon = host.find(':'); colon != std::string_view::npos) {
    port = host.substr(colon + 1);
    host = host.substr(0, colon);
  }
  if (host.empty()) {
    why = "URL without a host";
    return std::nullopt;
  }
  if (port.empty()) {
    port = t.tls ? "443" : "80";
  }
  const auto number = parse_decimal(port);
  if (!number || *number == 0 || *number > k_max_port) {
    why = "invalid port in URL";
    return std::nullopt;
  }
  if (has_line_break(url) || has_blank(url)) {
    why = "URL with white space";
    return std::nullopt;
  }
  t.host = host;
  t.port = port;
  return t;
}

std::string check_headers(const std::vector<std::pair<std::string, std::string>>& headers) {
  for (const auto& [name, value] : headers) {
    if (name.empty() || has_line_break(name) || name.find(':') != std::string::npos ||
        has_blank(name) || has_line_break(value)) {
      return "invalid request header";
    }
  }
  return {};
}

void write_request(std::string& out, const Request& request, const Target& target) {
  out += request.method;
  out += ' ';
  if (target.path.front() == '?') {
    out += '/'; // "http://host?q": the path is empty, the query is not
  }
  out += target.path;
  out += " HTTP/1.1\r\nHost: ";
  out += target.authority;
  out += "\r\n";
  for (const auto& [name, value] : request.headers) {
    if (client_owned(name)) {
      continue;
    }
    out += name;
    out += value.empty() ? ":" : ": ";
    out += value;
    out += "\r\n";
  }
  const bool carries_body = !request.body.empty() || request.method == "POST" ||
                            request.method == "PUT" || request.method == "PATCH";
  if (carries_body) {
    out += "Content-Length: ";
    out += std::to_string(request.body.size());
    out += "\r\n";
  }
  out += "\r\n";
  out += request.body;
}

void ResponseParser::reset(bool no_body, std::size_t max_body_bytes) {
  m_no_body = no_body;
  m_max_body = max_body_bytes;
  m_state = State::more;
  m_phase = Phase::head;
  m_received = 0;
  m_header_bytes = 0;
  m_head.clear();
  m_line.clear();
  m_line_complete = false;
  m_remaining = 0;
  m_status = 0;
  m_keep_alive = true;
  m_error.clear();
  m_headers.clear();
  m_body.clear();
}

ResponseParser::State ResponseParser::fail(State s, std::string why) {
  m_state = s;
  m_error = std::move(why);
  m_keep_alive = false;
  return s;
}

ResponseParser::State ResponseParser::feed(std::string_view data, std::size_t& used) {
  const std::size_t given = data.size();
  while (m_state == State::more && !data.empty()) {
    switch (m_phase) {
    case Phase::head: {
      // Searches only the new bytes (and the three before them) for the
      // blank line that ends the head.
      const std::size_t from = m_head.size() < 3 ? 0 : m_head.size() - 3;
      const std::size_t room = k_max_header_bytes - std::min(m_header_bytes, k_max_header_bytes);
      const std::size_t take = std::min(data.size(), room + 1);
      m_head.append(data.data(), take);
      const std::string_view head(m_head);
      std::size_t end = std::string_view::npos;
      for (std::size_t i = head.find('\n', from); i != std::string_view::npos;
           i = head.find('\n', i + 1)) {
        if (i + 1 < head.size() && head[i + 1] == '\n') {
          end = i + 2;
          break;
        }
        if (i + 2 < head.size() && head[i + 1] == '\r' && head[i + 2] == '\n') {
          end = i + 3;
          break;
        }
      }
      if (end == std::string_view::npos) {
        if (m_header_bytes + m_head.size() > k_max_header_bytes) {
          return fail(State::too_large, "response headers larger than " +
                                            std::to_string(k_max_header_bytes) + " bytes");
        }
        data.remove_prefix(take);
        break;
      }
      // Bytes after the head go back to `data`.
      const std::size_t beyond = m_head.size() - end;
      data.remove_prefix(take - beyond);
      m_header_bytes += end;
      if (m_header_bytes > k_max_header_bytes) {
        return fail(State::too_large, "response headers larger than " +
                                          std::to_string(k_max_header_bytes) + " bytes");
      }
      parse_head(end);
      m_head.clear();
      break;
    }
    case Phase::length:
    case Phase::until_close:
    case Phase::chunk_data:
      body_bytes(data);
      break;
    case Phase::chunk_size: {
      if (!take_line(data, m_state)) {
        break;
      }
      const std::string_view line(m_line);
      const std::string_view digits = trim(line.substr(0, line.find(';')));
      std::uint64_t size = 0;
      bool ok = !digits.empty() && digits.size() <= 15;
      for (const char c : digits) {
        const char l = to_lower_ascii(c);
        const int v = is_digit(l) ? l - '0' : (l >= 'a' && l <= 'f') ? l - 'a' + 10 : -1;
        ok = ok && v >= 0;
        size = size * 16 + static_cast<std::uint64_t>(std::max(v, 0));
      }
      if (!ok) {
        return fail(State::invalid, "invalid chunk size in response");
      }
      m_remaining = size;
      m_phase = size == 0 ? Phase::trailers : Phase::chunk_data;
      break;
    }
    case Phase::chunk_end:
      if (!take_line(data, m_state)) {
        break;
      }
      if (!trim(m_line).empty()) {
        return fail(State::invalid, "chunk not followed by CRLF in response");
      }
      m_phase = Phase::chunk_size;
      break;
    case Phase::trailers:
      if (!take_line(data, m_state)) {
        break;
      }
      m_header_bytes += m_line.size() + 2;
      if (m_header_bytes > k_max_header_bytes) {
        return fail(State::too_large, "response headers larger than " +
                                          std::to_string(k_max_header_bytes) + " bytes");
      }
      if (trim(m_line).empty()) {
        m_phase = Phase::done;
        m_state = State::done;
      }
      break;
    case Phase::done:
      m_state = State::done;
      break;
    }
  }
  used = given - data.size();
  m_received += used;
  return m_state;
}

bool ResponseParser::take_line(std::string_view& data, State& failed) {
  if (m_line_complete) {
    m_line.clear();
    m_line_complete = false;
  }
  const auto nl = data.find('\n');
  const std::size_t take = nl == std::string_view::npos ? data.size() : nl + 1;
  m_line.append(data.data(), take);
  data.remove_prefix(take);
  if (m_line.size() > k_max_line_bytes) {
    failed = fail(State::invalid, "overlong line in a chunked response");
    return false;
  }
  if (nl == std::string_view::npos) {
    return false;
  }
  m_line.pop_back();
  if (!m_line.empty() && m_line.back() == '\r') {
    m_line.pop_back();
  }
  m_line_complete = true;
  return true;
}

ResponseParser::State ResponseParser::body_bytes(std::string_view& data) {
  std::size_t n = data.size();
  if (m_phase != Phase::until_close) {
    n = static_cast<std::size_t>(std::min<std::uint64_t>(n, m_remaining));
  }
  if (n > m_max_body - std::min(m_body.size(), m_max_body)) {
    return fail(State::too_large, "response larger than " + std::to_string(m_max_body) + " bytes");
  }
  m_body.append(data.data(), n);
  data.remove_prefix(n);
  if (m_phase == Phase::until_close) {
    return m_state;
  }
  m_remaining -= n;
  if (m_remaining == 0) {
    if (m_phase == Phase::length) {
      m_phase = Phase::done;
      m_state = State::done;
    } else {
      m_phase = Phase::chunk_end;
    }
  }
  return m_state;
}

ResponseParser::State ResponseParser::parse_head(std::size_t end) {
  std::string_view head(m_head.data(), end);
  const auto next_line = [&head]() {
    const auto nl = head.find('\n');
    std::string_view line = head.substr(0, nl);
    head.remove_prefix(nl == std::string_view::npos ? head.size() : nl + 1);
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    return line;
  };

  // HTTP/1.x SSS[ reason]
  const std::string_view status_line = next_line();
  if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." ||
      !is_digit(status_line[7]) || status_line[8] != ' ' || !is_digit(status_line[9]) ||
      !is_digit(status_line[10]) || !is_digit(status_line[11]) ||
      (status_line.size() > 12 && status_line[12] != ' ')) {
    return fail(State::invalid, "invalid HTTP status line in response");
  }
  const bool http11 = status_line[7] != '0';
  const int status =
      (status_line[9] - '0') * 100 + (status_line[10] - '0') * 10 + (status_line[11] - '0');
  if (status < 100) {
    return fail(State::invalid, "invalid HTTP status in response");
  }

  m_headers.clear();
  std::optional<std::uint64_t> length;
  bool chunked = false;
  bool other_coding = false;
  bool close = !http11;
  while (!head.empty()) {
    const std::string_view line = next_line();
    if (line.empty()) {
      break;
    }
    if ((line.front() == ' ' || line.front() == '\t') && !m_headers.empty()) {
      // obs-fold: a continuation of the previous header's value.
      const std::string_view more = trim(line);
      if (!more.empty()) {
        auto& value = m_headers.back().second;
        if (!value.empty()) {
          value += ' ';
        }
        value.append(more);
      }
      continue;
    }
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) {
      continue;
    }
    std::string name(trim(line.substr(0, colon)));
    if (name.empty()) {
      continue;
    }
    std::transform(name.begin(), name.end(), name.begin(), to_lower_ascii);
    const std::string_view value = trim(line.substr(colon + 1));
    if (name == "content-length") {
      const auto n = parse_decimal(value);
      if (!n || (length && *length != *n)) {
        return fail(State::invalid, "invalid Content-Length in response");
      }
      length = n;
    } else if (name == "transfer-encoding") {
      chunked = iequals(last_token(value), "chunked");
      other_coding = !chunked;
    } else if (name == "connection") {
      if (has_token(value, "close")) {
        close = true;
      } else if (!http11 && has_token(value, "keep-alive")) {
        close = false;
      }
    }
    m_headers.emplace_back(std::move(name), std::string(value));
  }

  if (status < 200) {
    if (status == 101) {
      return fail(State::invalid, "unexpected 101 Switching Protocols");
    }
    // An interim answer (100 Continue, 103 Early Hints): the final one follows.
    m_headers.clear();
    return m_state;
  }
  m_status = status;
  m_keep_alive = !close;
  const bool framed_by_length = !chunked && !other_coding && length.has_value();
  if (m_no_body || status == 204 || status == 304 || (framed_by_length && *length == 0)) {
    m_phase = Phase::done;
    m_state = State::done;
  } else if (chunked) {
    m_phase = Phase::chunk_size;
  } else if (other_coding || !length) {
    m_phase = Phase::until_close;
    m_keep_alive = false;
  } else if (*length > m_max_body) {
    return fail(State::too_large, "response larger than " + std::to_string(m_max_body) + " bytes");
  } else {
    m_remaining = *length;
    m_phase = Phase::length;
  }
  return m_state;
}

ResponseParser::State ResponseParser::end_of_input() {
  if (m_state != State::more) {
    return m_state;
  }
  if (m_phase == Phase::until_close) {
    m_phase = Phase::done;
    m_state = State::done;
    return m_state;
  }
  return fail(State::invalid, m_received == 0 ? "empty reply from server"
                                              : "connection closed before the answer was complete");
}

} // namespace rrd::http::http1
