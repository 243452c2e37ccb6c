// Webhook signing per the Standard Webhooks specification:
// the secret "whsec_<base64 key>", and the signature
//   "v1," + base64(HMAC-SHA256(key, id + "." + timestamp + "." + body)).
// Pure functions (no I/O, no clock); thread-safe.
#pragma once

#include "readreceiptd/common/result.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace rrd::webhook {

inline constexpr std::string_view k_secret_prefix = "whsec_";
inline constexpr std::string_view k_signature_version = "v1";

// The HMAC key of a "whsec_..." secret: the base64-decoded part after the
// prefix. The error text says what is wrong and never contains the secret.
Result<std::string, std::string> decode_secret(std::string_view secret);

// The `webhook-signature` header value for one attempt: "v1,<base64>".
std::string sign(std::string_view key, std::string_view id, std::int64_t unix_seconds,
                 std::string_view body);

// True when `signature_header` (one or more space-separated "v1,<base64>"
// entries, as Standard Webhooks allows) holds a valid signature of this id,
// timestamp and body. Compares in constant time. Checking that the timestamp
// is recent is the caller's business.
bool verify(std::string_view key, std::string_view id, std::int64_t unix_seconds,
            std::string_view body, std::string_view signature_header);

// Lower-case hex SHA-256 of `bytes`.
std::string sha256_hex(std::string_view bytes);

} // namespace rrd::webhook
