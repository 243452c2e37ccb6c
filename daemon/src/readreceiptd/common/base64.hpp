// Base64 (RFC 4648, standard alphabet "A-Za-z0-9+/") encoding and decoding.
// Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace rrd {

// Encodes bytes with '=' padding.
std::string base64_encode(std::string_view bytes);

// Decodes standard base64. Padding is optional, but when present it must be
// correct; whitespace, URL-safe characters and stray data after the padding
// are rejected. Returns nullopt on malformed input.
std::optional<std::string> base64_decode(std::string_view text);

} // namespace rrd
