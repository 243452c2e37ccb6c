// Clock: where the daemon reads the time. Abstract so that tests can use a
// FakeClock that they advance by hand; nothing outside RealClock reads the
// system clock. RealClock is thread-safe; FakeClock is not (tests drive it
// from one thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace rrd {

using Millis = std::chrono::milliseconds;
// Wall-clock time with millisecond resolution (Unix epoch).
using TimePoint = std::chrono::sys_time<Millis>;

class Clock {
public:
  virtual ~Clock() = default;
  // The current wall-clock time.
  virtual TimePoint now() const = 0;
};

class RealClock final : public Clock {
public:
  TimePoint now() const override;
};

class FakeClock final : public Clock {
public:
  explicit FakeClock(TimePoint start = TimePoint{Millis{1'764'064'800'000}}) : m_now(start) {}
  TimePoint now() const override { return m_now; }
  void advance(Millis d) { m_now += d; }
  void set(TimePoint t) { m_now = t; }

private:
  TimePoint m_now;
};

inline std::int64_t to_unix_ms(TimePoint t) {
  return t.time_since_epoch().count();
}
inline TimePoint from_unix_ms(std::int64_t ms) {
  return TimePoint{Millis{ms}};
}

// "2026-11-25T10:03:12.123Z" (UTC, always milliseconds).
std::string format_rfc3339(TimePoint t);
// Accepts RFC 3339 / ISO 8601 date-times with a 'Z' or numeric offset and
// optional fractional seconds. Returns false on anything else.
bool parse_rfc3339(const std::string& text, TimePoint& out);

} // namespace rrd
