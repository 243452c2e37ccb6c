#include "readreceiptd/api/sse.hpp"

namespace rrd::api {

namespace {

// Appends `prefix` + line + "\n" for each line of `text`.
void append_lines(std::string& out, std::string_view prefix, std::string_view text) {
  std::size_t start = 0;
  for (;;) {
    const auto end = text.find_first_of("\r\n", start);
    out += prefix;
    out += text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    out += '\n';
    if (end == std::string_view::npos) {
      return;
    }
    start = end + 1;
    if (text[end] == '\r' && start < text.size() && text[start] == '\n') {
      ++start;
    }
  }
}

} // namespace

std::string sse_event(std::string_view type, std::string_view data) {
  std::string out;
  out.reserve(type.size() + data.size() + 16);
  out += "event: ";
  out += type;
  out += '\n';
  append_lines(out, "data: ", data);
  out += '\n';
  return out;
}

std::string sse_comment(std::string_view text) {
  std::string out;
  append_lines(out, ": ", text);
  out += '\n';
  return out;
}

std::string sse_retry(Millis delay) {
  return "retry: " + std::to_string(delay.count()) + "\n\n";
}

} // namespace rrd::api
