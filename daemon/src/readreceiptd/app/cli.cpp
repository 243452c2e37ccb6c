#include "readreceiptd/app/cli.hpp"

namespace rrd::app {

const char* usage() {
  return "usage: readreceiptd [--config PATH] [--log-level LEVEL] [--log-format text|json]\n"
         "       readreceiptd [--config PATH] --check-config\n"
         "       readreceiptd --healthcheck [--config PATH]\n"
         "       readreceiptd --config PATH --copy-state-from SQLITE_PATH\n"
         "       readreceiptd --version\n"
         "\n"
         "  --config PATH        configuration file (default /etc/readreceiptd/config.yaml)\n"
         "  --check-config       validate the configuration and exit (0 valid, 2 invalid)\n"
         "  --healthcheck        exit 0 if the running daemon's /healthz answers 200\n"
         "  --copy-state-from SQLITE_PATH\n"
         "                       copy a SQLite state database into the empty PostgreSQL\n"
         "                       one of the configuration's state.postgres, and exit\n"
         "  --log-level LEVEL    trace, debug, info (default), warn or error\n"
         "  --log-format FORMAT  text (default) or json (one object per line)\n"
         "  --version            print the version and exit\n"
         "  --help               print this help and exit\n";
}

std::string usage_error(const std::string& problem) {
  return "readreceiptd: " + problem + " (see readreceiptd --help)";
}

namespace {

Result<LogLevel, std::string> parse_level(const std::string& v) {
  if (v == "trace") {
    return LogLevel::trace;
  }
  if (v == "debug") {
    return LogLevel::debug;
  }
  if (v == "info") {
    return LogLevel::info;
  }
  if (v == "warn" || v == "warning") {
    return LogLevel::warn;
  }
  if (v == "error") {
    return LogLevel::error;
  }
  return err("--log-level: unknown level \"" + v + "\" (use trace, debug, info, warn or error)");
}

} // namespace

Result<Options, std::string> parse_args(const std::vector<std::string>& args) {
  Options o;
  bool command_set = false;
  auto set_command = [&](Command c, const std::string& flag) -> std::string {
    if (command_set && o.command != c) {
      return flag + ": cannot be combined with another command option";
    }
    command_set = true;
    o.command = c;
    return "";
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i];
    std::string value;
    bool has_inline_value = false;
    if (a.rfind("--", 0) == 0) {
      const auto eq = a.find('=');
      if (eq != std::string::npos) {
        value = a.substr(eq + 1);
        a = a.substr(0, eq);
        has_inline_value = true;
      }
    }
    auto take_value = [&]() -> Result<std::string, std::string> {
      if (has_inline_value) {
        return value;
      }
      if (i + 1 >= args.size()) {
        return err(a + ": needs a value");
      }
      return args[++i];
    };
    std::string problem;
    if (a == "--config" || a == "-c") {
      auto v = take_value();
      if (!v) {
        return err(v.error());
      }
      if (v->empty()) {
        return err(std::string("--config: empty path"));
      }
      o.config_path = *v;
      o.config_given = true;
    } else if (a == "--log-level") {
      auto v = take_value();
      if (!v) {
        return err(v.error());
      }
      auto l = parse_level(*v);
      if (!l) {
        return err(l.error());
      }
      o.log_level = *l;
    } else if (a == "--log-format") {
      auto v = take_value();
      if (!v) {
        return err(v.error());
      }
      if (*v == "text") {
        o.log_format = LogFormat::text;
      } else if (*v == "json") {
        o.log_format = LogFormat::json;
      } else {
        return err("--log-format: unknown format \"" + *v + "\" (use text or json)");
      }
    } else if (a == "--copy-state-from") {
      auto v = take_value();
      if (!v) {
        return err(v.error());
      }
      if (v->empty()) {
        return err(std::string("--copy-state-from: empty path"));
      }
      problem = set_command(Command::copy_state, a);
      o.copy_state_from = *v;
    } else if (has_inline_value) {
      return err(a + ": takes no value");
    } else if (a == "--check-config") {
      problem = set_command(Command::check_config, a);
    } else if (a == "--version" || a == "-V") {
      problem = set_command(Command::version, a);
    } else if (a == "--healthcheck") {
      problem = set_command(Command::healthcheck, a);
    } else if (a == "--help" || a == "-h") {
      problem = set_command(Command::help, a);
    } else {
      return err("unknown argument \"" + a + "\"");
    }
    if (!problem.empty()) {
      return err(problem);
    }
  }
  if (o.command == Command::copy_state && !o.config_given) {
    return err(std::string("--copy-state-from: needs --config (the configuration whose "
                           "state.postgres receives the state)"));
  }
  return o;
}

} // namespace rrd::app
