#include "fakes/test_certificate.hpp"

#include <fstream>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdexcept>
#include <unistd.h>
#include <utility>

namespace rrd::testing {

namespace {

constexpr long k_valid_before_s = 3600;     // not before: an hour ago
constexpr long k_valid_after_s = 24 * 3600; // not after: a day from now

void require(bool ok, const char* what) {
  if (!ok) {
    throw std::runtime_error(std::string("TestCertificate: ") + what);
  }
}

using Bio = std::unique_ptr<BIO, decltype(&BIO_free)>;

// Writes what `write` puts into a memory BIO to a fresh temporary file.
template <typename Write> std::filesystem::path write_pem(const char* what, Write write) {
  Bio bio(BIO_new(BIO_s_mem()), &BIO_free);
  require(bio != nullptr, "BIO_new");
  require(write(bio.get()) == 1, what);
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  std::string tmpl = (std::filesystem::temp_directory_path() / "rrd-test-cert-XXXXXX").string();
  const int fd = ::mkstemp(tmpl.data());
  require(fd >= 0, "mkstemp");
  ::close(fd);
  std::ofstream out(tmpl, std::ios::binary | std::ios::trunc);
  out.write(data, len);
  require(static_cast<bool>(out), "writing a PEM file");
  return tmpl;
}

} // namespace

TestCertificate::TestCertificate(const std::string& subject_alt_name) {
  key.reset(EVP_EC_gen("prime256v1"));
  require(key != nullptr, "EVP_EC_gen");
  cert.reset(X509_new());
  require(cert != nullptr, "X509_new");
  X509* x = cert.get();
  require(X509_set_version(x, 2) == 1, "X509_set_version");
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -k_valid_before_s);
  X509_gmtime_adj(X509_getm_notAfter(x), k_valid_after_s);
  require(X509_set_pubkey(x, key.get()) == 1, "X509_set_pubkey");
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("rrd test"), -1, -1, 0);
  require(X509_set_issuer_name(x, name) == 1, "X509_set_issuer_name");
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
  for (const auto& [nid, value] :
       {std::pair{NID_subject_alt_name, subject_alt_name},
        std::pair{NID_basic_constraints, std::string("critical,CA:TRUE")}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    require(ext != nullptr, "X509V3_EXT_conf_nid");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
  }
  require(X509_sign(x, key.get(), EVP_sha256()) > 0, "X509_sign");

  pem_path = write_pem("PEM_write_bio_X509", [x](BIO* bio) { return PEM_write_bio_X509(bio, x); });
  key_pem_path = write_pem("PEM_write_bio_PrivateKey", [this](BIO* bio) {
    return PEM_write_bio_PrivateKey(bio, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  });
}

TestCertificate::~TestCertificate() {
  std::error_code ec;
  std::filesystem::remove(pem_path, ec);
  std::filesystem::remove(key_pem_path, ec);
}

} // namespace rrd::testing
