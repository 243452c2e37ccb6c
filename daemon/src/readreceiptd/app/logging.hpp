// Logging set-up: spdlog's default logger writes one line per event to
// stderr, as text for people or as one JSON object per line for journald and
// log shippers. Every line passes through a redaction step that replaces any
// registered secret (app secret, tokens, webhook secrets, API token) with
// "<redacted>", so that a secret cannot reach the logs even by mistake.
//
// Thread-safe: set_secrets() and logging may happen on any thread; the
// secret list is guarded by a mutex inside the sink.
#pragma once

#include "readreceiptd/app/cli.hpp"
#include "readreceiptd/common/clock.hpp"

#include <spdlog/common.h>
#include <string>
#include <string_view>
#include <vector>

namespace rrd::logging {

inline constexpr const char* k_redacted = "<redacted>";

// Installs the default logger (stderr). Call once, early in main.
void setup(app::LogLevel level, app::LogFormat format);
// Replaces the set of values that must never be printed.
void set_secrets(std::vector<std::string> secrets);

// Pure helpers, exposed for tests.
std::string redact(std::string_view text, const std::vector<std::string>& secrets);
std::string format_line(app::LogFormat format, TimePoint time, spdlog::level::level_enum level,
                        std::string_view message);
spdlog::level::level_enum to_spdlog(app::LogLevel level);

} // namespace rrd::logging
