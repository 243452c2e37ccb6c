#include "fakes/log_capture.hpp"
#include "readreceiptd/app/logging.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <string>
#include <thread>

using namespace rrd;
using namespace rrd::app;
using rrd::testing::LogCapture;

namespace {

const TimePoint k_time = from_unix_ms(1'764'064'800'123);

std::string text_line(std::string_view message, std::initializer_list<logging::Field> fields = {}) {
  return logging::format_line(LogFormat::text, k_time, spdlog::level::info, message,
                              std::span<const logging::Field>(fields.begin(), fields.size()));
}

nlohmann::json json_line(std::string_view message,
                         std::initializer_list<logging::Field> fields = {}) {
  const std::string line =
      logging::format_line(LogFormat::json, k_time, spdlog::level::warn, message,
                           std::span<const logging::Field>(fields.begin(), fields.size()));
  INFO(line);
  CHECK(line.find('\n') == std::string::npos);
  // nlohmann::json refuses invalid UTF-8 and raw control characters.
  return nlohmann::json::parse(line);
}

bool has_raw_control(std::string_view s) {
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      return true;
    }
  }
  return false;
}

} // namespace

TEST_CASE("logging: json lines are one valid object with time, level and message") {
  const auto j = json_line("quote \" and\nnewline");
  CHECK(j["time"] == "2025-11-25T10:00:00.123Z");
  CHECK(j["level"] == "warn");
  CHECK(j["message"] == "quote \" and\nnewline");
  const auto text =
      logging::format_line(LogFormat::text, from_unix_ms(0), spdlog::level::info, "hi");
  CHECK(text == "1970-01-01T00:00:00.000Z info  hi");
}

TEST_CASE("logging: a text line holds no raw control character and no invalid UTF-8") {
  const std::string key("a\nb\0c", 5);
  CHECK(logging::escape_text(key) == "a\\nb\\x00c");
  CHECK(logging::escape_text("tab\there\r\x1b[31m\x7f") == "tab\\there\\r\\x1b[31m\\x7f");
  CHECK(logging::escape_text("back\\slash") == "back\\\\slash");
  // Invalid UTF-8: a stray continuation byte, a truncated sequence, an
  // overlong form, a surrogate; each byte shown as \xNN.
  CHECK(logging::escape_text("\x80 \xE2\x82 \xC0\xAF \xED\xA0\x80") ==
        "\\x80 \\xe2\\x82 \\xc0\\xaf \\xed\\xa0\\x80");
  // Valid UTF-8 stays as it is; C1 controls, line separators and bidi
  // overrides are escaped.
  CHECK(logging::escape_text("用户 é") == "用户 é");
  CHECK(logging::escape_text("\xC2\x85|\xE2\x80\xA8|\xE2\x80\xAE|\xE2\x81\xA6") ==
        "\\u0085|\\u2028|\\u202e|\\u2066");

  const std::string line = text_line(std::string("message ") + key, {{"key", key}});
  CHECK(line == "2025-11-25T10:00:00.123Z info  message a\\nb\\x00c key=\"a\\nb\\x00c\"");
  CHECK_FALSE(has_raw_control(line));
}

TEST_CASE("logging: a json line is valid JSON in valid UTF-8, whatever the text") {
  const std::string key("a\nb\0c\x7f\xC2\x85", 8);
  auto j = json_line(key, {{"key", key}});
  CHECK(j["message"] == key);
  CHECK(j["key"] == key);
  // Invalid bytes become U+FFFD.
  j = json_line("bad \xFF\xC0\xAF end", {{"user_id", "\xE2\x82"}});
  CHECK(j["message"] == "bad \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD end");
  CHECK(j["user_id"] == "\xEF\xBF\xBD\xEF\xBF\xBD");
  const std::string raw = logging::json_string("\x7f\xE2\x80\xA8");
  CHECK(raw == "\"\\u007f\\u2028\"");
  CHECK(logging::json_string("用户") == "\"用户\"");
}

TEST_CASE("logging: fields follow the text message, logfmt-style, and are members in JSON") {
  const std::string event_id = "evt_01JD8X";
  const std::size_t attempt = 3;
  CHECK(text_line("webhook delivery failed", {{"webhook", "ops"},
                                              {"event_id", event_id},
                                              {"attempt", attempt},
                                              {"reason", "HTTP 500"},
                                              {"retry_in_seconds", 29.5},
                                              {"delta", -2},
                                              {"disabled", true},
                                              {"detail", ""},
                                              {"quoted", "say \"hi\""}}) ==
        "2025-11-25T10:00:00.123Z info  webhook delivery failed webhook=ops event_id=evt_01JD8X "
        "attempt=3 reason=\"HTTP 500\" retry_in_seconds=29.5 delta=-2 disabled=true detail=\"\" "
        "quoted=\"say \\\"hi\\\"\"");

  const auto j = json_line("webhook delivery failed", {{"webhook", "ops"},
                                                       {"attempt", attempt},
                                                       {"retry_in_seconds", 29.5},
                                                       {"delta", -2},
                                                       {"disabled", false},
                                                       {"status", 500}});
  CHECK(j["message"] == "webhook delivery failed");
  CHECK(j["webhook"] == "ops");
  CHECK(j["attempt"] == 3);
  CHECK(j["attempt"].is_number_unsigned());
  CHECK(j["retry_in_seconds"] == 29.5);
  CHECK(j["delta"] == -2);
  CHECK(j["disabled"] == false);
  CHECK(j["status"] == 500);
  CHECK(j.size() == 9);
}

TEST_CASE("logging: an absent optional value leaves its field out") {
  const std::optional<int> none;
  const std::optional<int> status = 503;
  CHECK(text_line("failed", {{"status", none}, {"reason", "timeout"}}).substr(31) ==
        "failed reason=timeout");
  CHECK(text_line("failed", {{"status", status}}).substr(31) == "failed status=503");
  const auto j = json_line("failed", {{"status", none}, {"webhook", "ops"}});
  CHECK_FALSE(j.contains("status"));
  CHECK(j["webhook"] == "ops");
}

TEST_CASE("logging: log() hands its fields to the sink, only for its own line") {
  LogCapture capture(LogLevel::info);
  logging::info("message stopped", {{"key", "k1"}, {"reason", "fully_read"}});
  spdlog::info("a plain {} line", "spdlog");
  logging::debug("not shown", {{"key", "k2"}});
  logging::warn("no fields");
  std::thread other([] { logging::error("from another thread", {{"webhook", "ops"}}); });
  other.join();

  const auto lines = capture.lines();
  REQUIRE(lines.size() == 4);
  CHECK(lines[0].substr(24) == " info  message stopped key=k1 reason=fully_read");
  CHECK(lines[1].substr(24) == " info  a plain spdlog line");
  CHECK(lines[2].substr(24) == " warn  no fields");
  CHECK(lines[3].substr(24) == " error from another thread webhook=ops");
}

TEST_CASE("logging: the JSON sink writes the fields as members") {
  LogCapture capture(LogLevel::trace, LogFormat::json);
  logging::trace("webhook delivered", {{"webhook", "ops"}, {"status", 204}});
  const auto lines = capture.lines();
  REQUIRE(lines.size() == 1);
  const auto j = nlohmann::json::parse(lines[0]);
  CHECK(j["level"] == "trace");
  CHECK(j["webhook"] == "ops");
  CHECK(j["status"] == 204);
}

TEST_CASE("logging: a line is written as it was given, whatever the configured secrets") {
  // Nothing rewrites lines around secret values: short ones used to turn
  // "stopping" into "s<redacted>opping".
  LogCapture capture(LogLevel::info);
  logging::info("stopping");
  logging::info("stopped: unterminated");
  const auto lines = capture.lines();
  REQUIRE(lines.size() == 2);
  CHECK(lines[0].substr(31) == "stopping");
  CHECK(lines[1].substr(31) == "stopped: unterminated");
}
