#include "readreceiptd/webhook/signing.hpp"

#include "readreceiptd/common/base64.hpp"

#include <array>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdexcept>

namespace rrd::webhook {

Result<std::string, std::string> decode_secret(std::string_view secret) {
  if (secret.substr(0, k_secret_prefix.size()) != k_secret_prefix) {
    return err(std::string("secret must start with \"whsec_\""));
  }
  auto key = base64_decode(secret.substr(k_secret_prefix.size()));
  if (!key) {
    return err(std::string("secret after \"whsec_\" is not valid base64"));
  }
  if (key->empty()) {
    return err(std::string("secret after \"whsec_\" is empty"));
  }
  return std::move(*key);
}

namespace {

std::string hmac_sha256(std::string_view key, std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
  unsigned int len = 0;
  // HMAC() rejects a null key pointer even with length 0; an empty key never
  // comes from decode_secret, but keep sign() total.
  static const unsigned char k_empty = 0;
  const void* key_ptr = key.empty() ? static_cast<const void*>(&k_empty) : key.data();
  if (HMAC(EVP_sha256(), key_ptr, static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac.data(),
           &len) == nullptr) {
    throw std::runtime_error("HMAC-SHA256 failed");
  }
  return std::string(reinterpret_cast<const char*>(mac.data()), len);
}

std::string signed_content(std::string_view id, std::int64_t unix_seconds, std::string_view body) {
  std::string content;
  content.reserve(id.size() + body.size() + 24);
  content.append(id);
  content += '.';
  content += std::to_string(unix_seconds);
  content += '.';
  content.append(body);
  return content;
}

} // namespace

std::string sign(std::string_view key, std::string_view id, std::int64_t unix_seconds,
                 std::string_view body) {
  std::string out(k_signature_version);
  out += ',';
  out += base64_encode(hmac_sha256(key, signed_content(id, unix_seconds, body)));
  return out;
}

bool verify(std::string_view key, std::string_view id, std::int64_t unix_seconds,
            std::string_view body, std::string_view signature_header) {
  const std::string expected = sign(key, id, unix_seconds, body);
  bool found = false;
  std::size_t pos = 0;
  while (pos <= signature_header.size()) {
    std::size_t end = signature_header.find(' ', pos);
    if (end == std::string_view::npos) {
      end = signature_header.size();
    }
    const std::string_view candidate = signature_header.substr(pos, end - pos);
    // Check every entry, so that the time taken does not depend on which one
    // matched.
    if (candidate.size() == expected.size() &&
        CRYPTO_memcmp(candidate.data(), expected.data(), expected.size()) == 0) {
      found = true;
    }
    pos = end + 1;
  }
  return found;
}

std::string sha256_hex(std::string_view bytes) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), md.data(), &len, EVP_sha256(), nullptr) != 1) {
    throw std::runtime_error("SHA-256 failed");
  }
  static constexpr char k_hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned int i = 0; i < len; ++i) {
    out += k_hex[md[i] >> 4];
    out += k_hex[md[i] & 15];
  }
  return out;
}

} // namespace rrd::webhook
