#include "readreceiptd/app/logging.hpp"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
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

// Formats, redacts and writes each record to stderr, one line at a time.
class RedactingSink final : public spdlog::sinks::base_sink<std::mutex> {
public:
  explicit RedactingSink(app::LogFormat format) : m_format(format) {}

  void set_secrets(std::vector<std::string> secrets) {
    std::lock_guard lock(mutex_);
    m_secrets = std::move(secrets);
  }

protected:
  // base_sink holds mutex_ while these run.
  void sink_it_(const spdlog::details::log_msg& msg) override {
    const auto time = std::chrono::time_point_cast<Millis>(msg.time);
    const std::string_view text(msg.payload.data(), msg.payload.size());
    std::string line = format_line(m_format, TimePoint{time.time_since_epoch()}, msg.level,
                                   redact(text, m_secrets));
    line.push_back('\n');
    std::fwrite(line.data(), 1, line.size(), stderr);
  }
  void flush_() override { std::fflush(stderr); }

private:
  app::LogFormat m_format;
  std::vector<std::string> m_secrets; // guarded by mutex_
};

std::shared_ptr<RedactingSink>& installed_sink() {
  static std::shared_ptr<RedactingSink> sink;
  return sink;
}

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

std::string redact(std::string_view text, const std::vector<std::string>& secrets) {
  std::string out(text);
  for (const auto& s : secrets) {
    if (s.empty()) {
      continue;
    }
    std::size_t pos = 0;
    while ((pos = out.find(s, pos)) != std::string::npos) {
      out.replace(pos, s.size(), k_redacted);
      pos += std::char_traits<char>::length(k_redacted);
    }
  }
  return out;
}

std::string format_line(app::LogFormat format, TimePoint time, spdlog::level::level_enum level,
                        std::string_view message) {
  if (format == app::LogFormat::json) {
    nlohmann::ordered_json j;
    j["time"] = format_rfc3339(time);
    j["level"] = level_name(level);
    j["message"] = message;
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::string line = format_rfc3339(time);
  line += ' ';
  std::string name = level_name(level);
  name.resize(5, ' ');
  line += name;
  line += ' ';
  line += message;
  return line;
}

void setup(app::LogLevel level, app::LogFormat format) {
  auto sink = std::make_shared<RedactingSink>(format);
  installed_sink() = sink;
  auto logger = std::make_shared<spdlog::logger>("readreceiptd", sink);
  logger->set_level(to_spdlog(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

void set_secrets(std::vector<std::string> secrets) {
  // Longest first, so that a secret containing another is replaced whole.
  std::sort(secrets.begin(), secrets.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  if (auto& sink = installed_sink()) {
    sink->set_secrets(std::move(secrets));
  }
}

} // namespace rrd::logging
