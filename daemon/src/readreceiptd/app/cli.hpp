// The command line (SPEC section 2), parsed into Options by a pure function.
// Not thread-safe; plain values.
#pragma once

#include "readreceiptd/common/result.hpp"

#include <string>
#include <vector>

namespace rrd::app {

inline constexpr const char* k_default_config_path = "/etc/readreceiptd/config.yaml";

enum class Command { run, check_config, version, healthcheck, help };
enum class LogFormat { text, json };
enum class LogLevel { trace, debug, info, warn, error };

struct Options {
  Command command = Command::run;
  std::string config_path = k_default_config_path;
  bool config_given = false;
  LogLevel log_level = LogLevel::info;
  LogFormat log_format = LogFormat::text;
};

// Parses argv[1..]. The error text is meant for stderr, followed by usage().
Result<Options, std::string> parse_args(const std::vector<std::string>& args);
const char* usage();

} // namespace rrd::app
