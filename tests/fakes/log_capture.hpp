// LogCapture: while it lives, the daemon's log lines (as logging::setup
// formats them) go to memory instead of stderr, for tests that check what
// is logged. The previous default logger comes back when it is destroyed.
// Thread-safe: lines may be logged from any thread; read them from the test.
#pragma once

#include "readreceiptd/app/logging.hpp"

#include <memory>
#include <mutex>
#include <spdlog/spdlog.h>
#include <string>
#include <string_view>
#include <vector>

namespace rrd::testing {

class LogCapture {
public:
  explicit LogCapture(app::LogLevel level = app::LogLevel::trace,
                      app::LogFormat format = app::LogFormat::text)
      : m_previous(spdlog::default_logger()), m_state(std::make_shared<State>()) {
    logging::setup(level, format, [state = m_state](std::string_view line) {
      const std::lock_guard lock(state->mutex);
      state->lines.emplace_back(line);
    });
  }
  ~LogCapture() { spdlog::set_default_logger(m_previous); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  std::vector<std::string> lines() const {
    const std::lock_guard lock(m_state->mutex);
    return m_state->lines;
  }
  // Every line, each followed by a newline.
  std::string text() const {
    std::string out;
    for (const auto& l : lines()) {
      out += l;
      out += '\n';
    }
    return out;
  }
  bool contains(std::string_view needle) const { return text().find(needle) != std::string::npos; }
  void clear() {
    const std::lock_guard lock(m_state->mutex);
    m_state->lines.clear();
  }

private:
  struct State {
    std::mutex mutex;
    std::vector<std::string> lines;
  };
  std::shared_ptr<spdlog::logger> m_previous;
  std::shared_ptr<State> m_state;
};

} // namespace rrd::testing
