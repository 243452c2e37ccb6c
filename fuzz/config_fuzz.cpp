// libFuzzer target: configuration text. The input goes, as YAML, into
// config::load_string() and, as JSON, into config::parse_message_json().
// A ConfigError is the only acceptable failure; any other exception, a crash
// or a hang is a bug. A configuration that loads must keep the promises of
// config.hpp.
// Thread-safety: libFuzzer calls it from one thread.
#include "readreceiptd/config/config.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <string_view>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;

// Where the target's configuration "lives": relative *_file and ca_file
// names are looked up next to it, so a few such files exist there.
std::string g_config_path;
rrd::config::Config g_defaults;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

void write_file(const fs::path& p, std::string_view text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

// Inputs naming special files (a terminal, a pipe, /proc) could make the
// loader block on a read that never ends: that is the operating system's
// behaviour, not the loader's, so they are skipped.
bool names_special_files(std::string_view text) {
  for (const std::string_view s : {"/dev", "/proc", "/sys", "/run"}) {
    if (text.find(s) != std::string_view::npos) {
      return true;
    }
  }
  return false;
}

bool has_control(std::string_view s) {
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      return true;
    }
  }
  return false;
}

void check_message(const rrd::MessageSpec& m) {
  check(!m.process_query_key.empty(), "a message has a process_query_key");
  check(!has_control(m.process_query_key) && !has_control(m.open_conversation_id) &&
            !has_control(m.robot_code),
        "ids hold no control characters");
  for (const auto& id : m.expected_readers) {
    check(!id.empty() && !has_control(id), "reader ids hold no control characters");
  }
  for (const auto& [key, value] : m.labels) {
    check(!has_control(key) && !has_control(value), "labels hold no control characters");
  }
}

void check_config(const rrd::config::Config& c) {
  check(c.dingtalk.endpoint.empty() || c.dingtalk.endpoint.back() != '/',
        "the endpoint has no trailing '/'");
  check(c.dingtalk.page_size >= 1 && c.dingtalk.page_size <= 200, "page_size is 1..200");
  check(!c.poll.schedule.empty(), "the schedule has a step");
  for (std::size_t i = 0; i < c.poll.schedule.size(); ++i) {
    const bool last = i + 1 == c.poll.schedule.size();
    check(c.poll.schedule[i].until.has_value() != last, "only the last step has no until");
    check(c.poll.schedule[i].every.count() > 0, "a step's interval is positive");
  }
  for (const auto& w : c.webhooks) {
    const auto key = rrd::config::webhook_signing_key(w.secret);
    check(key.has_value(), "every webhook secret decodes");
    check(key->size() >= rrd::config::k_min_secret_bytes, "every webhook key is long enough");
    check(!w.name.empty(), "a webhook has a name");
  }
  for (const std::string* listen : {&c.metrics.listen, &c.api.listen}) {
    check(listen->empty() || rrd::config::parse_listen_address(*listen).has_value(),
          "listen addresses parse");
  }
  check(c.api.token.empty() || c.api.token.size() >= rrd::config::k_min_secret_bytes,
        "an API token is long enough");
  for (const auto& m : c.messages) {
    check_message(m);
  }
}

// The text of every error: one or more, each a line.
void check_errors(const rrd::config::ConfigError& e) {
  const auto& errors = e.errors();
  check(!errors.empty(), "a ConfigError has an error");
  check(errors.size() <= rrd::config::k_max_reported_errors + 1, "errors are capped");
  std::string joined;
  for (const auto& line : errors) {
    joined += (joined.empty() ? "" : "\n") + line;
  }
  check(joined == e.what(), "what() joins the errors");
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char dir_template[] = "/tmp/rrd-config-fuzz-XXXXXX";
  const char* dir = ::mkdtemp(dir_template);
  if (dir == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  const fs::path base(dir);
  write_file(base / "app_secret", "fuzz-app-secret\n");
  write_file(base / "api_token", "fuzz-api-token-0123456789\n");
  write_file(base / "ops_webhook_secret", "whsec_UbAAtRMp9XykOn+0g1GODB2rRzBWgyPs\n");
  write_file(base / "ca.pem", "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n");
  write_file(base / "empty", "");
  g_config_path = (base / "config.yaml").string();
  ::unsetenv("CREDENTIALS_DIRECTORY");
  ::setenv("RRD_FUZZ_KEY", "dingfuzzkey", 1);
  ::setenv("RRD_FUZZ_EMPTY", "", 1);

  g_defaults.dingtalk.robot_code = "dingdefaultrobot";
  rrd::config::Webhook hook;
  hook.name = "ops";
  hook.url = "https://hooks.example.com/";
  hook.secret = "whsec_UbAAtRMp9XykOn+0g1GODB2rRzBWgyPs";
  g_defaults.webhooks.push_back(hook);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  if (!names_special_files(text)) {
    try {
      check_config(rrd::config::load_string(text, g_config_path));
    } catch (const rrd::config::ConfigError& e) {
      check_errors(e);
      // The secret files' contents never appear in an error (unless the
      // input itself spells them out).
      for (const std::string_view secret : {"fuzz-app-secret", "fuzz-api-token"}) {
        check(text.find(secret) != std::string::npos ||
                  std::string_view(e.what()).find(secret) == std::string_view::npos,
              "a secret file's contents never appear in an error");
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "load_string threw %s\n", e.what());
      std::abort();
    }
  }

  try {
    check_message(rrd::config::parse_message_json(text, g_defaults).spec);
  } catch (const rrd::config::ConfigError& e) {
    check_errors(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "parse_message_json threw %s\n", e.what());
    std::abort();
  }
  return 0;
}
