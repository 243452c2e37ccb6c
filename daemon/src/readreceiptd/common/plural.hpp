// Counts in words, for everything the daemon prints for people (logs, the
// --check-config summary, systemd's STATUS=): "1 message", "2 messages",
// "0 webhooks", "1 pending delivery". Pure; thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace rrd {

// `n` and the noun: `singular` for 1, else `plural` (default: singular + "s").
inline std::string count_of(std::size_t n, std::string_view singular,
                            std::string_view plural = {}) {
  std::string out = std::to_string(n);
  out += ' ';
  if (n == 1) {
    out += singular;
  } else if (plural.empty()) {
    out += singular;
    out += 's';
  } else {
    out += plural;
  }
  return out;
}

} // namespace rrd
