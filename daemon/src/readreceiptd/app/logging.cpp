#include "readreceiptd/app/logging.hpp"

#include <cmath>
#include <cstdio>
#include <fmt/format.h>
#include <memory>
#include <mutex>
#include <optional>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

namespace rrd::logging {

namespace {

const char* level_name(spdlog::level::level_enum level) {
  switch (level) {
  case spdlog::level::trace:
    return "trace";
  case spdlog::level::debug:
    return "debug";
  case spdlog::level::info:
    return "info";
  case spdlog::level::warn:
    return "warn";
  case spdlog::level::err:
    return "error";
  case spdlog::level::critical:
    return "critical";
  default:
    return "off";
  }
}

// The fields of the log() call running on this thread; empty otherwise.
thread_local std::span<const Field> t_fields;

// Sets t_fields for one call, and puts back what was there (a log call made
// while a field value is computed runs inside another).
class FieldScope {
public:
  explicit FieldScope(std::span<const Field> fields) : m_previous(t_fields) { t_fields = fields; }
  ~FieldScope() { t_fields = m_previous; }
  FieldScope(const FieldScope&) = delete;
  FieldScope& operator=(const FieldScope&) = delete;

private:
  std::span<const Field> m_previous;
};

// ------------------------------------------------------------- UTF-8

constexpr char32_t k_replacement = 0xFFFD;

// Decodes the code point at text[i] and moves i past it. nullopt for a byte
// that does not start a well-formed UTF-8 sequence (overlong forms,
// surrogates and values past U+10FFFF included); i then moves by one byte.
std::optional<char32_t> next_code_point(std::string_view text, std::size_t& i) {
  const auto byte = [&](std::size_t at) { return static_cast<unsigned char>(text[at]); };
  const unsigned char lead = byte(i);
  if (lead < 0x80) {
    ++i;
    return lead;
  }
  std::size_t length = 0;
  char32_t cp = 0;
  char32_t min = 0;
  if ((lead & 0xE0) == 0xC0) {
    length = 2;
    cp = lead & 0x1F;
    min = 0x80;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3;
    cp = lead & 0x0F;
    min = 0x800;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4;
    cp = lead & 0x07;
    min = 0x10000;
  } else {
    ++i;
    return std::nullopt;
  }
  if (i + length > text.size()) {
    ++i;
    return std::nullopt;
  }
  for (std::size_t k = 1; k < length; ++k) {
    const unsigned char c = byte(i + k);
    if ((c & 0xC0) != 0x80) {
      ++i;
      return std::nullopt;
    }
    cp = (cp << 6) | (c & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++i;
    return std::nullopt;
  }
  i += length;
  return cp;
}

// Code points that are escaped in both formats: controls (C0, DEL, C1), the
// Unicode line and paragraph separators, and the bidirectional embeddings,
// overrides and isolates (which can make a line read as something else).
bool must_escape(char32_t cp) {
  return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 ||
         (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

void append_u_escape(std::string& out, char32_t cp) {
  out += fmt::format("\\u{:04x}", static_cast<std::uint32_t>(cp));
}

// Appends `text` escaped for a text line.
void append_text(std::string& out, std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t start = i;
    const auto cp = next_code_point(text, i);
    if (!cp) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(text[start]));
      continue;
    }
    switch (*cp) {
    case '\\':
      out += "\\\\";
      continue;
    case '\n':
      out += "\\n";
      continue;
    case '\r':
      out += "\\r";
      continue;
    case '\t':
      out += "\\t";
      continue;
    default:
      break;
    }
    if (*cp < 0x20 || *cp == 0x7F) {
      out += fmt::format("\\x{:02x}", static_cast<std::uint32_t>(*cp));
    } else if (must_escape(*cp)) {
      append_u_escape(out, *cp);
    } else {
      out.append(text.substr(start, i - start));
    }
  }
}

void append_json(std::string& out, std::string_view text) {
  out += '"';
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t start = i;
    const auto cp = next_code_point(text, i);
    if (!cp) {
      append_u_escape(out, k_replacement);
      continue;
    }
    switch (*cp) {
    case '"':
      out += "\\\"";
      continue;
    case '\\':
      out += "\\\\";
      continue;
    case '\n':
      out += "\\n";
      continue;
    case '\r':
      out += "\\r";
      continue;
    case '\t':
      out += "\\t";
      continue;
    default:
      break;
    }
    if (must_escape(*cp)) {
      append_u_escape(out, *cp);
    } else {
      out.append(text.substr(start, i - start));
    }
  }
  out += '"';
}

std::string number_text(double v) {
  return std::isfinite(v) ? fmt::format("{}", v) : std::string();
}

// A text value needs quotes when it is empty or holds a space, a quote, an
// equals sign or anything append_text() escapes.
bool needs_quotes(std::string_view text) {
  if (text.empty()) {
    return true;
  }
  std::size_t i = 0;
  while (i < text.size()) {
    const auto cp = next_code_point(text, i);
    if (!cp || *cp == ' ' || *cp == '"' || *cp == '=' || *cp == '\\' || must_escape(*cp)) {
      return true;
    }
  }
  return false;
}

void append_text_value(std::string& out, const Value& v) {
  switch (v.kind()) {
  case Value::Kind::absent:
    return;
  case Value::Kind::text: {
    const std::string_view text = v.text();
    if (!needs_quotes(text)) {
      out.append(text);
      return;
    }
    out += '"';
    std::size_t from = 0;
    for (std::size_t quote = text.find('"'); quote != std::string_view::npos;
         quote = text.find('"', from)) {
      append_text(out, text.substr(from, quote - from));
      out += "\\\"";
      from = quote + 1;
    }
    append_text(out, text.substr(from));
    out += '"';
    return;
  }
  case Value::Kind::integer:
    out += std::to_string(v.integer());
    return;
  case Value::Kind::unsigned_integer:
    out += std::to_string(v.unsigned_integer());
    return;
  case Value::Kind::real: {
    const std::string n = number_text(v.real());
    out += n.empty() ? "NaN" : n;
    return;
  }
  case Value::Kind::boolean:
    out += v.boolean() ? "true" : "false";
    return;
  }
}

void append_json_value(std::string& out, const Value& v) {
  switch (v.kind()) {
  case Value::Kind::absent:
    return;
  case Value::Kind::text:
    append_json(out, v.text());
    return;
  case Value::Kind::integer:
    out += std::to_string(v.integer());
    return;
  case Value::Kind::unsigned_integer:
    out += std::to_string(v.unsigned_integer());
    return;
  case Value::Kind::real: {
    const std::string n = number_text(v.real());
    out += n.empty() ? "null" : n;
    return;
  }
  case Value::Kind::boolean:
    out += v.boolean() ? "true" : "false";
    return;
  }
}

// Formats each record with the fields of its log() call and hands the line
// to the writer.
class FieldSink final : public spdlog::sinks::base_sink<std::mutex> {
public:
  FieldSink(app::LogFormat format, Writer writer) : m_format(format), m_writer(std::move(writer)) {}

protected:
  // base_sink holds mutex_ while these run.
  void sink_it_(const spdlog::details::log_msg& msg) override {
    const auto time = std::chrono::time_point_cast<Millis>(msg.time);
    const std::string_view text(msg.payload.data(), msg.payload.size());
    std::string line =
        format_line(m_format, TimePoint{time.time_since_epoch()}, msg.level, text, t_fields);
    if (m_writer) {
      m_writer(line);
      return;
    }
    line.push_back('\n');
    std::fwrite(line.data(), 1, line.size(), stderr);
  }
  void flush_() override { std::fflush(stderr); }

private:
  app::LogFormat m_format;
  Writer m_writer;
};

} // namespace

spdlog::level::level_enum to_spdlog(app::LogLevel level) {
  switch (level) {
  case app::LogLevel::trace:
    return spdlog::level::trace;
  case app::LogLevel::debug:
    return spdlog::level::debug;
  case app::LogLevel::info:
    return spdlog::level::info;
  case app::LogLevel::warn:
    return spdlog::level::warn;
  case app::LogLevel::error:
    return spdlog::level::err;
  }
  return spdlog::level::info;
}

std::string escape_text(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  append_text(out, text);
  return out;
}

std::string json_string(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  append_json(out, text);
  return out;
}

std::string format_line(app::LogFormat format, TimePoint time, spdlog::level::level_enum level,
                        std::string_view message, std::span<const Field> fields) {
  std::string line;
  line.reserve(64 + message.size() + 24 * fields.size());
  if (format == app::LogFormat::json) {
    line += R"({"time":")";
    line += format_rfc3339(time);
    line += R"(","level":")";
    line += level_name(level);
    line += R"(","message":)";
    append_json(line, message);
    for (const auto& f : fields) {
      if (f.value.kind() == Value::Kind::absent) {
        continue;
      }
      line += ',';
      append_json(line, f.name);
      line += ':';
      append_json_value(line, f.value);
    }
    line += '}';
    return line;
  }
  line += format_rfc3339(time);
  line += ' ';
  std::string name = level_name(level);
  name.resize(5, ' ');
  line += name;
  line += ' ';
  append_text(line, message);
  for (const auto& f : fields) {
    if (f.value.kind() == Value::Kind::absent) {
      continue;
    }
    line += ' ';
    append_text(line, f.name);
    line += '=';
    append_text_value(line, f.value);
  }
  return line;
}

void setup(app::LogLevel level, app::LogFormat format, Writer writer) {
  auto sink = std::make_shared<FieldSink>(format, std::move(writer));
  auto logger = std::make_shared<spdlog::logger>("readreceiptd", sink);
  logger->set_level(to_spdlog(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

void log(spdlog::level::level_enum level, std::string_view message, Fields fields) {
  spdlog::logger* logger = spdlog::default_logger_raw();
  if (logger == nullptr || !logger->should_log(level)) {
    return;
  }
  const FieldScope scope(std::span<const Field>(fields.begin(), fields.size()));
  logger->log(level, spdlog::string_view_t(message.data(), message.size()));
}

} // namespace rrd::logging
