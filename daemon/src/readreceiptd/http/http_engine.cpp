// The engine-independent parts of the HTTP module: failure names and
// descriptions, header look-up and Retry-After parsing. Pure functions; thread-safe.
#include "readreceiptd/http/http_engine.hpp"

#include "readreceiptd/http/text.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <string_view>

namespace rrd::http {

namespace {

// A Retry-After longer than this is treated as this: a server asking for days
// of silence is more likely broken than serious.
constexpr std::chrono::seconds k_max_retry_after{24 * 60 * 60};

using detail::iequals;
using detail::is_digit;

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

// A cursor over an HTTP date; every method consumes input only on success.
class DateCursor {
public:
  explicit DateCursor(std::string_view s) : m_s(s) {}

  bool done() const { return m_s.empty(); }

  bool literal(std::string_view lit) {
    if (m_s.substr(0, lit.size()) != lit) {
      return false;
    }
    m_s.remove_prefix(lit.size());
    return true;
  }

  // Exactly `n` digits.
  bool digits(std::size_t n, int& out) {
    if (m_s.size() < n) {
      return false;
    }
    int value = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (!is_digit(m_s[i])) {
        return false;
      }
      value = value * 10 + (m_s[i] - '0');
    }
    m_s.remove_prefix(n);
    out = value;
    return true;
  }

  // One of `names` (case-sensitive, as HTTP dates are); `out` is its index.
  template <std::size_t N> bool one_of(const std::array<std::string_view, N>& names, int& out) {
    for (std::size_t i = 0; i < N; ++i) {
      if (literal(names[i])) {
        out = static_cast<int>(i);
        return true;
      }
    }
    return false;
  }

  // "HH:MM:SS"
  bool time_of_day(int& h, int& m, int& s) {
    DateCursor c = *this;
    if (c.digits(2, h) && c.literal(":") && c.digits(2, m) && c.literal(":") && c.digits(2, s)) {
      *this = c;
      return true;
    }
    return false;
  }

private:
  std::string_view m_s;
};

constexpr std::array<std::string_view, 7> k_day_names{"Mon", "Tue", "Wed", "Thu",
                                                      "Fri", "Sat", "Sun"};
constexpr std::array<std::string_view, 7> k_long_day_names{
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"};
constexpr std::array<std::string_view, 12> k_month_names{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

struct DateFields {
  int year = 0;
  int month = 0; // 1-12
  int day = 0;
  int hour = 0;
  int minute = 0;
  int second = 0;
};

// IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
bool parse_imf_fixdate(std::string_view s, DateFields& f) {
  DateCursor c(s);
  int ignored = 0;
  if (!(c.one_of(k_day_names, ignored) && c.literal(", ") && c.digits(2, f.day) && c.literal(" ") &&
        c.one_of(k_month_names, f.month) && c.literal(" ") && c.digits(4, f.year) &&
        c.literal(" ") && c.time_of_day(f.hour, f.minute, f.second) && c.literal(" GMT") &&
        c.done())) {
    return false;
  }
  f.month += 1;
  return true;
}

// Obsolete RFC 850 date: "Sunday, 06-Nov-94 08:49:37 GMT". A two-digit year
// that would be more than 50 years in the future is in the past century
// (RFC 9110, section 5.6.7).
bool parse_rfc850_date(std::string_view s, int current_year, DateFields& f) {
  DateCursor c(s);
  int ignored = 0;
  int yy = 0;
  if (!(c.one_of(k_long_day_names, ignored) && c.literal(", ") && c.digits(2, f.day) &&
        c.literal("-") && c.one_of(k_month_names, f.month) && c.literal("-") && c.digits(2, yy) &&
        c.literal(" ") && c.time_of_day(f.hour, f.minute, f.second) && c.literal(" GMT") &&
        c.done())) {
    return false;
  }
  f.month += 1;
  f.year = current_year - current_year % 100 + yy;
  if (f.year > current_year + 50) {
    f.year -= 100;
  }
  return true;
}

// Obsolete asctime() date: "Sun Nov  6 08:49:37 1994"
bool parse_asctime_date(std::string_view s, DateFields& f) {
  DateCursor c(s);
  int ignored = 0;
  if (!(c.one_of(k_day_names, ignored) && c.literal(" ") && c.one_of(k_month_names, f.month) &&
        c.literal(" "))) {
    return false;
  }
  if (!(c.digits(2, f.day) || (c.literal(" ") && c.digits(1, f.day)))) {
    return false;
  }
  if (!(c.literal(" ") && c.time_of_day(f.hour, f.minute, f.second) && c.literal(" ") &&
        c.digits(4, f.year) && c.done())) {
    return false;
  }
  f.month += 1;
  return true;
}

std::optional<std::chrono::sys_seconds> to_time(const DateFields& f) {
  using namespace std::chrono;
  const year_month_day ymd{year{f.year}, month{static_cast<unsigned>(f.month)},
                           day{static_cast<unsigned>(f.day)}};
  // Second 60 is a leap second; treat it as 59.
  if (!ymd.ok() || f.hour > 23 || f.minute > 59 || f.second > 60) {
    return std::nullopt;
  }
  return sys_days{ymd} + hours{f.hour} + minutes{f.minute} +
         seconds{f.second == 60 ? 59 : f.second};
}

} // namespace

const char* to_string(Failure f) {
  switch (f) {
  case Failure::none:
    return "none";
  case Failure::timeout:
    return "timeout";
  case Failure::network:
    return "network";
  case Failure::too_large:
    return "too_large";
  }
  return "unknown";
}

std::string describe(const Response& r) {
  switch (r.failure) {
  case Failure::none:
    return "HTTP " + std::to_string(r.status);
  case Failure::timeout:
    return "timeout";
  case Failure::too_large:
    return "response too large";
  case Failure::network:
    break;
  }
  std::string e = r.error;
  std::transform(e.begin(), e.end(), e.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const auto has = [&e](std::string_view part) { return e.find(part) != std::string::npos; };
  if (has("refused")) {
    return "connection refused";
  }
  // libcurl 7.86 and later no longer say why a connection failed ("Failed to
  // connect to HOST port N after 0 ms: Couldn't connect to server").
  if (has("couldn't connect") || has("failed to connect")) {
    return "could not connect";
  }
  if (has("resolve") || has("name or service not known") || has("no addresses")) {
    return "could not resolve host";
  }
  if (has("user information")) {
    return "URLs with user information are not supported";
  }
  if (has("ssl") || has("tls") || has("certificate")) {
    return "TLS error";
  }
  if (has("reset")) {
    return "connection reset";
  }
  if (has("empty reply") || has("closed")) {
    return "connection closed";
  }
  return "network error";
}

std::optional<std::string> Response::header(const std::string& name) const {
  for (const auto& [key, value] : headers) {
    if (iequals(key, name)) {
      return value;
    }
  }
  return std::nullopt;
}

std::optional<Millis> parse_retry_after(const std::string& value, TimePoint now) {
  const std::string_view text = trim_ows(value);
  if (text.empty()) {
    return std::nullopt;
  }

  // delay-seconds = 1*DIGIT
  if (is_digit(text.front())) {
    std::int64_t seconds = 0;
    for (char c : text) {
      if (!is_digit(c)) {
        return std::nullopt;
      }
      if (seconds < k_max_retry_after.count()) {
        seconds = seconds * 10 + (c - '0');
      }
    }
    return std::chrono::duration_cast<Millis>(
        std::min(std::chrono::seconds{seconds}, k_max_retry_after));
  }

  // HTTP-date
  const auto current_year = static_cast<int>(
      std::chrono::year_month_day{std::chrono::floor<std::chrono::days>(now)}.year());
  DateFields fields;
  if (!parse_imf_fixdate(text, fields) && !parse_rfc850_date(text, current_year, fields) &&
      !parse_asctime_date(text, fields)) {
    return std::nullopt;
  }
  const auto when = to_time(fields);
  if (!when) {
    return std::nullopt;
  }
  const Millis delay = std::chrono::duration_cast<Millis>(*when - now);
  if (delay <= Millis{0}) {
    return Millis{0};
  }
  return std::min(delay, std::chrono::duration_cast<Millis>(k_max_retry_after));
}

} // namespace rrd::http
