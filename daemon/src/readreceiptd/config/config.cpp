// The public face of the configuration module: the loaders, which build a
// tree (tree.cpp), read readreceiptd's schema out of it (schema.cpp) with the
// typed reader (reader.cpp), and throw every error found at once; and the
// small parsers that the rest of the daemon shares.
#include "readreceiptd/config/config.hpp"

#include "readreceiptd/config/reader.hpp"
#include "readreceiptd/config/schema.hpp"
#include "readreceiptd/config/tree.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <charconv>
#include <chrono>
#include <filesystem>
#include <limits>
#include <netinet/in.h>
#include <string_view>
#include <system_error>

namespace rrd::config {

namespace {

namespace fs = std::filesystem;

constexpr std::size_t k_max_webhook_key_bytes = 64;
constexpr std::string_view k_webhook_secret_prefix = "whsec_";

std::string joined(const std::vector<std::string>& lines, std::string_view separator) {
  std::string out;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (i > 0) {
      out.append(separator);
    }
    out += lines[i];
  }
  return out;
}

// Standard-alphabet base64 without padding.
std::optional<std::string> base64_decode(std::string_view s) {
  if (s.size() % 4 == 1) {
    return std::nullopt;
  }
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    int v = 0;
    if (c >= 'A' && c <= 'Z') {
      v = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      v = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      v = c - '0' + 52;
    } else if (c == '+') {
      v = 62;
    } else if (c == '/') {
      v = 63;
    } else {
      return std::nullopt;
    }
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

fs::path base_dir_of(const std::string& file) {
  fs::path dir = fs::path(file).parent_path();
  std::error_code ec;
  fs::path abs = fs::absolute(dir.empty() ? fs::path(".") : dir, ec);
  return ec ? dir : abs.lexically_normal();
}

TimePoint wall_clock_now() {
  return std::chrono::time_point_cast<Millis>(std::chrono::system_clock::now());
}

// A syntax error as the one error of a load.
[[noreturn]] void throw_syntax(const reader::Options& options, const tree::SyntaxError& e) {
  reader::Context ctx(options);
  ctx.error(e.mark, "", e.what());
  throw ConfigError(ctx.errors());
}

} // namespace

ConfigError::ConfigError(std::vector<std::string> errors)
    : std::runtime_error(joined(errors, "\n")), m_errors(std::move(errors)) {}

// ---------------------------------------------------------------------------
// Small parsers

std::optional<Millis> parse_duration(const std::string& text) {
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
    ++digits;
  }
  if (digits == 0) {
    return std::nullopt;
  }
  const std::string_view unit = std::string_view(text).substr(digits);
  std::int64_t factor = 0;
  if (unit == "ms") {
    factor = 1;
  } else if (unit == "s") {
    factor = 1'000;
  } else if (unit == "m") {
    factor = 60'000;
  } else if (unit == "h") {
    factor = 3'600'000;
  } else if (unit == "d") {
    factor = 86'400'000;
  } else {
    return std::nullopt;
  }
  std::int64_t n = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + digits, n);
  if (ec != std::errc() || ptr != text.data() + digits) {
    return std::nullopt;
  }
  if (n > std::numeric_limits<Millis::rep>::max() / factor) {
    return std::nullopt;
  }
  return Millis{n * factor};
}

std::optional<ListenAddress> parse_listen_address(const std::string& text) {
  std::string host;
  std::string port;
  if (!text.empty() && text[0] == '[') {
    const std::size_t close = text.find("]:");
    if (close == std::string::npos) {
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    in6_addr a6{};
    if (inet_pton(AF_INET6, host.c_str(), &a6) != 1) {
      return std::nullopt;
    }
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string::npos) {
      return std::nullopt;
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    in_addr a4{};
    if (host != "localhost" && inet_pton(AF_INET, host.c_str(), &a4) != 1) {
      return std::nullopt;
    }
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  const int n = std::stoi(port);
  if (n > 65535) {
    return std::nullopt;
  }
  return ListenAddress{host, static_cast<std::uint16_t>(n)};
}

bool is_loopback_host(const std::string& host) {
  if (host == "localhost") {
    return true;
  }
  in_addr a4{};
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) {
    return (ntohl(a4.s_addr) >> 24) == 127;
  }
  in6_addr a6{};
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&a6)) {
      return true;
    }
    return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
  }
  return false;
}

std::optional<std::string> webhook_signing_key(const std::string& secret) {
  if (secret.rfind(k_webhook_secret_prefix, 0) != 0) {
    return std::nullopt;
  }
  std::string_view b64 = std::string_view(secret).substr(k_webhook_secret_prefix.size());
  // Padding is optional, but when present it must be complete.
  const std::size_t size = b64.size();
  std::size_t pad = 0;
  while (!b64.empty() && b64.back() == '=') {
    b64.remove_suffix(1);
    ++pad;
  }
  if (pad > 0 && (pad > 2 || size % 4 != 0)) {
    return std::nullopt;
  }
  auto key = base64_decode(b64);
  if (!key || key->empty() || key->size() > k_max_webhook_key_bytes) {
    return std::nullopt;
  }
  return key;
}

// ---------------------------------------------------------------------------
// Loaders

Config load_string(const std::string& yaml, const std::string& path) {
  reader::Options options;
  options.file = path;
  options.expand_env = true;
  options.read_files = true;
  options.base_dir = base_dir_of(path);
  options.now = wall_clock_now();
  std::optional<tree::Tree> t;
  try {
    t = tree::from_yaml(yaml);
  } catch (const tree::SyntaxError& e) {
    throw_syntax(options, e);
  }
  reader::Context ctx(std::move(options));
  Config c = schema::read_config(ctx, t->root(), path);
  if (ctx.error_count() > 0) {
    throw ConfigError(ctx.errors());
  }
  c.warnings = ctx.warnings();
  return c;
}

Config load_file(const std::string& path) {
  std::string text;
  if (const auto error = reader::read_whole_file(fs::path(path), k_max_config_bytes, text)) {
    throw ConfigError(path + ": cannot read the configuration: " + *error);
  }
  return load_string(text, path);
}

std::vector<std::string> restart_only_changes(const Config& running, const Config& loaded) {
  std::vector<std::string> keys;
  const auto check = [&keys](bool changed, const char* key) {
    if (changed) {
      keys.emplace_back(key);
    }
  };
  const State& a = running.state;
  const State& b = loaded.state;
  check(a.path != b.path, "state.path");
  check(a.postgres != b.postgres, "state.postgres");
  check(a.password != b.password, "state.password_file");
  check(a.lease_ttl != b.lease_ttl, "state.lease_ttl");
  check(running.api.listen != loaded.api.listen, "api.listen");
  return keys;
}

ParsedMessage parse_message_json(const std::string& json, const Config& defaults) {
  reader::Options options; // no file, no ${NAME}, no files
  options.now = wall_clock_now();
  std::optional<tree::Tree> t;
  try {
    t = tree::from_json(json);
  } catch (const tree::SyntaxError& e) {
    throw_syntax(options, e);
  }
  if (t->root().kind() != tree::Kind::map) {
    throw ConfigError("the message must be a JSON object");
  }
  reader::Context ctx(std::move(options));
  ParsedMessage out{schema::read_message(ctx, t->root(), defaults), {}};
  if (ctx.error_count() > 0) {
    throw ConfigError(ctx.errors());
  }
  out.warnings = ctx.warnings();
  return out;
}

} // namespace rrd::config
