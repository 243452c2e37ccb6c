// TestCertificate: a self-signed certificate (also its own CA) and its key,
// generated with OpenSSL at test time, for TLS servers on 127.0.0.1. The
// certificate and the key are written as PEM files (removed by the
// destructor), so that a client can trust the certificate through a CA file
// and httplib::SSLServer can serve it. Not thread-safe; immutable once built.
#pragma once

#include <filesystem>
#include <memory>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <string>

namespace rrd::testing {

struct TestCertificate {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key{nullptr, &EVP_PKEY_free};
  std::unique_ptr<X509, decltype(&X509_free)> cert{nullptr, &X509_free};
  std::filesystem::path pem_path;     // the certificate, PEM
  std::filesystem::path key_pem_path; // the private key, PEM (unencrypted)

  // `subject_alt_name` in OpenSSL's syntax, e.g. "IP:127.0.0.1".
  // Throws std::runtime_error when OpenSSL or the file system fails.
  explicit TestCertificate(const std::string& subject_alt_name);
  ~TestCertificate();
  TestCertificate(const TestCertificate&) = delete;
  TestCertificate& operator=(const TestCertificate&) = delete;
};

} // namespace rrd::testing
