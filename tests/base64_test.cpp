#include "readreceiptd/common/base64.hpp"

#include <doctest/doctest.h>

using namespace rrd;

TEST_CASE("base64 encodes the RFC 4648 test vectors") {
  CHECK(base64_encode("") == "");
  CHECK(base64_encode("f") == "Zg==");
  CHECK(base64_encode("fo") == "Zm8=");
  CHECK(base64_encode("foo") == "Zm9v");
  CHECK(base64_encode("foob") == "Zm9vYg==");
  CHECK(base64_encode("fooba") == "Zm9vYmE=");
  CHECK(base64_encode("foobar") == "Zm9vYmFy");
  CHECK(base64_encode(std::string("\xff\xfe\x00", 3)) == "//4A");
}

TEST_CASE("base64 decodes with and without padding") {
  CHECK(base64_decode("Zm9vYmFy") == "foobar");
  CHECK(base64_decode("Zm9vYg==") == "foob");
  CHECK(base64_decode("Zm9vYg") == "foob");
  CHECK(base64_decode("Zm9vYmE=") == "fooba");
  CHECK(base64_decode("Zm9vYmE") == "fooba");
  CHECK(base64_decode("") == "");
  CHECK(base64_decode("//4A") == std::string("\xff\xfe\x00", 3));
}

TEST_CASE("base64 rejects malformed text") {
  CHECK_FALSE(base64_decode("Zm9v!").has_value());     // bad character
  CHECK_FALSE(base64_decode("Zm9v YmFy").has_value()); // whitespace
  CHECK_FALSE(base64_decode("_-4A").has_value());      // URL-safe alphabet
  CHECK_FALSE(base64_decode("Zm9vY").has_value());     // dangling character
  CHECK_FALSE(base64_decode("Zm9vYg=").has_value());   // wrong padding
  CHECK_FALSE(base64_decode("Zm9v===").has_value());
  CHECK_FALSE(base64_decode("Zm9vYh==").has_value()); // non-zero leftover bits
  CHECK_FALSE(base64_decode("Zg==Zg==").has_value()); // data after padding
}

TEST_CASE("base64 round trips every byte value") {
  std::string all;
  for (int i = 0; i < 256; ++i) {
    all += static_cast<char>(i);
  }
  for (std::size_t n = 0; n <= all.size(); n += 17) {
    const auto part = all.substr(0, n);
    CHECK(base64_decode(base64_encode(part)) == part);
  }
}
