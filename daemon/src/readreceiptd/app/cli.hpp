// The command line, parsed into Options by a pure function.
// Not thread-safe; plain values.
#pragma once

#include "readreceiptd/common/result.hpp"

#include <string>
#include <vector>

namespace rrd::app {

inline constexpr const char* k_default_config_path = "/etc/readreceiptd/config.yaml";

enum class Command { run, check_config, version, healthcheck, help, copy_state };
enum class LogFormat { text, json };
enum class LogLevel { trace, debug, info, warn, error };

struct Options {
  Command command = Command::run;
  std::string config_path = k_default_config_path;
  bool config_given = false;   // --config was on the command line
  std::string copy_state_from; // copy_state: the SQLite state database to copy
  LogLevel log_level = LogLevel::info;
  LogFormat log_format = LogFormat::text;
};

// Parses argv[1..]. Without --config, every command reads
// k_default_config_path, except --copy-state-from, which needs it. The error text names the
// argument; main() prints it on one line with a pointer to --help.
Result<Options, std::string> parse_args(const std::vector<std::string>& args);
// The --help text.
const char* usage();
// The one line printed for a bad command line:
//   readreceiptd: unknown argument "--bogus" (see readreceiptd --help)
std::string usage_error(const std::string& problem);

} // namespace rrd::app
