// Small ASCII text helpers the HTTP module's parsers share. Private to the
// http module. Pure; thread-safe.
#pragma once

#include <algorithm>
#include <string_view>

namespace rrd::http::detail {

inline char to_lower_ascii(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// Equal ignoring ASCII case.
inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return to_lower_ascii(x) == to_lower_ascii(y);
         });
}

inline bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// `s` without leading and trailing spaces, tabs, CRs and LFs.
inline std::string_view trim(std::string_view s) {
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && is_space(s.front())) {
    s.remove_prefix(1);
  }
  while (!s.empty() && is_space(s.back())) {
    s.remove_suffix(1);
  }
  return s;
}

// (Two single-character finds: each is one memchr(3), while find_first_of()
// calls memchr once per character of `s`.)
inline bool has_line_break(std::string_view s) {
  return s.find('\n') != std::string_view::npos || s.find('\r') != std::string_view::npos;
}

inline bool has_blank(std::string_view s) {
  return s.find(' ') != std::string_view::npos || s.find('\t') != std::string_view::npos;
}

} // namespace rrd::http::detail
