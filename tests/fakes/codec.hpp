// Base64 and HMAC-SHA256 for the fakes, written on OpenSSL directly so that
// the webhook sink checks signatures independently of the daemon's own
// signing code. Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>

namespace rrd::testing {

// Standard base64 (RFC 4648 section 4) with '=' padding.
std::string base64_encode(const std::string& bytes);
// Strict decoding: nullopt on a wrong length, a bad character or bad padding.
std::optional<std::string> base64_decode(const std::string& text);

// The raw 32-byte HMAC-SHA256 of `data` under `key`.
std::string hmac_sha256(const std::string& key, const std::string& data);

std::string hex_encode(const std::string& bytes);

} // namespace rrd::testing
