// Logging: spdlog's default logger writes one line per event to stderr, as
// text for people or as one JSON object per line for journald and log
// shippers, with structured fields.
//
// A call site names its fields once:
//   logging::warn("webhook delivery failed",
//                 {{"webhook", "ops"}, {"event_id", id}, {"attempt", 3}, {"reason", "HTTP 500"}});
// The text format renders them after the message, logfmt-style:
//   2026-11-25T10:00:00.000Z warn  webhook delivery failed webhook=ops event_id=evt_... attempt=3
//   reason="HTTP 500"
// and the JSON format makes them members of the line's object, next to
// "time", "level" and "message" (numbers and booleans as JSON numbers and
// booleans). spdlog 1.10 has no fields of its own: log() puts the call's
// fields in a thread-local list for the duration of the call, and the sink,
// which a synchronous logger runs on the calling thread, reads them there.
// Plain spdlog::info(...) calls still work; their lines have no fields.
//
// Untrusted text (DingTalk's messages, user ids, keys, webhook answers) may
// be logged as it is: the sink escapes it. A text line never holds a control
// character (C0, DEL, C1), a Unicode line or paragraph separator, a
// bidirectional override, or invalid UTF-8: they are written as \n, \r, \t,
// \xNN (bytes) or \uNNNN (code points), and a backslash as \\. A JSON line is
// valid JSON in valid UTF-8 (invalid bytes become U+FFFD), with the same
// characters escaped as \uNNNN.
//
// Secrets are never formatted into a log call: there is no search for
// secret values in the lines. Fields and messages that could carry one are
// redacted where they are produced (dingtalk::redact_request, the
// fixed-vocabulary failure descriptions, webhooks logged by name).
//
// Thread-safety: setup() once, early, before other threads log; logging may
// then happen on any thread (the sink holds a mutex while it writes).
#pragma once

#include "readreceiptd/app/cli.hpp"
#include "readreceiptd/common/clock.hpp"

#include <concepts>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <span>
#include <spdlog/common.h>
#include <string>
#include <string_view>

namespace rrd::logging {

// A field's value: text, a number or a boolean, or absent (an empty
// std::optional: the field is left out of the line). Holds a view: the text
// must outlive the log call (a temporary in the call's expression does).
class Value {
public:
  enum class Kind { absent, text, integer, unsigned_integer, real, boolean };

  Value(std::nullopt_t /*none*/) : m_kind(Kind::absent) {}
  template <typename T> Value(const std::optional<T>& v) : Value(std::nullopt) {
    if (v) {
      *this = Value(*v);
    }
  }
  Value(std::string_view v) : m_kind(Kind::text), m_text(v) {}
  Value(const std::string& v) : m_kind(Kind::text), m_text(v) {}
  Value(const char* v) : m_kind(Kind::text), m_text(v) {}
  Value(bool v) : m_kind(Kind::boolean), m_bool(v) {}
  Value(double v) : m_kind(Kind::real), m_real(v) {}
  template <std::signed_integral T>
  requires(!std::same_as<T, char>) Value(T v) : m_kind(Kind::integer), m_int(v) {}
  template <std::unsigned_integral T>
  requires(!std::same_as<T, bool> && !std::same_as<T, char>) Value(T v)
      : m_kind(Kind::unsigned_integer), m_uint(v) {}

  Kind kind() const { return m_kind; }
  std::string_view text() const { return m_text; }
  std::int64_t integer() const { return m_int; }
  std::uint64_t unsigned_integer() const { return m_uint; }
  double real() const { return m_real; }
  bool boolean() const { return m_bool; }

private:
  Kind m_kind;
  std::string_view m_text;
  std::int64_t m_int = 0;
  std::uint64_t m_uint = 0;
  double m_real = 0;
  bool m_bool = false;
};

// REQUIRES: `name` is a lower-case identifier other than time, level and
// message.
struct Field {
  std::string_view name;
  Value value;
};

using Fields = std::initializer_list<Field>;
// Where a finished line goes (without its newline); default: stderr.
using Writer = std::function<void(std::string_view line)>;

// Installs the default logger. Call once, early in main; tests may call it
// again with a writer of their own.
void setup(app::LogLevel level, app::LogFormat format, Writer writer = {});

// Logs `message` with `fields` through the default logger, when `level` is
// enabled. The message is not a format string.
void log(spdlog::level::level_enum level, std::string_view message, Fields fields = {});
inline void trace(std::string_view message, Fields fields = {}) {
  log(spdlog::level::trace, message, fields);
}
inline void debug(std::string_view message, Fields fields = {}) {
  log(spdlog::level::debug, message, fields);
}
inline void info(std::string_view message, Fields fields = {}) {
  log(spdlog::level::info, message, fields);
}
inline void warn(std::string_view message, Fields fields = {}) {
  log(spdlog::level::warn, message, fields);
}
inline void error(std::string_view message, Fields fields = {}) {
  log(spdlog::level::err, message, fields);
}
inline void critical(std::string_view message, Fields fields = {}) {
  log(spdlog::level::critical, message, fields);
}

// Pure helpers, exposed for tests.
std::string format_line(app::LogFormat format, TimePoint time, spdlog::level::level_enum level,
                        std::string_view message, std::span<const Field> fields = {});
// `text` as it appears in a text line (see above).
std::string escape_text(std::string_view text);
// `text` as a JSON string, quotes included (see above).
std::string json_string(std::string_view text);
spdlog::level::level_enum to_spdlog(app::LogLevel level);

} // namespace rrd::logging
