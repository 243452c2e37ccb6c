#include "readreceiptd/common/base64.hpp"
#include "readreceiptd/webhook/retry.hpp"
#include "readreceiptd/webhook/signing.hpp"

#include <cmath>
#include <doctest/doctest.h>

using namespace rrd;
using namespace rrd::webhook;
using namespace std::chrono_literals;

namespace {
constexpr const char* k_spec_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
constexpr const char* k_spec_id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
constexpr std::int64_t k_spec_ts = 1614265330;
constexpr const char* k_spec_body = R"({"test": 2432232314})";
constexpr const char* k_spec_signature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
} // namespace

// --- signing

TEST_CASE("signing matches the Standard Webhooks test vector of the SPEC") {
  const auto key = decode_secret(k_spec_secret);
  REQUIRE(key.ok());
  CHECK(key->size() == 24);
  CHECK(sign(*key, k_spec_id, k_spec_ts, k_spec_body) == k_spec_signature);
}

TEST_CASE("a malformed secret is an error whose text does not contain it") {
  for (const std::string bad : {"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_MfKQ9r8G!KYq",
                                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "WHSEC_MfKQ9r8GKYqr"}) {
    CAPTURE(bad);
    const auto key = decode_secret(bad);
    REQUIRE_FALSE(key.ok());
    CHECK_FALSE(key.error().empty());
    if (bad.size() > 6) {
      CHECK(key.error().find(bad.substr(6)) == std::string::npos);
    }
    CHECK(key.error().find("MfKQ") == std::string::npos);
  }
}

TEST_CASE("verify accepts the right signature and rejects any change") {
  const auto key = *decode_secret(k_spec_secret);
  CHECK(verify(key, k_spec_id, k_spec_ts, k_spec_body, k_spec_signature));
  CHECK_FALSE(verify(key, k_spec_id, k_spec_ts + 1, k_spec_body, k_spec_signature));
  CHECK_FALSE(verify(key, "msg_other", k_spec_ts, k_spec_body, k_spec_signature));
  CHECK_FALSE(verify(key, k_spec_id, k_spec_ts, R"({"test": 2432232315})", k_spec_signature));
  CHECK_FALSE(verify(key + "x", k_spec_id, k_spec_ts, k_spec_body, k_spec_signature));
  CHECK_FALSE(verify(key, k_spec_id, k_spec_ts, k_spec_body, ""));
  CHECK_FALSE(verify(key, k_spec_id, k_spec_ts, k_spec_body,
                     "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
}

TEST_CASE("verify finds a valid signature among several space-separated ones") {
  const auto key = *decode_secret(k_spec_secret);
  CHECK(verify(key, k_spec_id, k_spec_ts, k_spec_body,
               std::string("v1,bm90IHRoaXMgb25l ") + k_spec_signature));
  CHECK(verify(key, k_spec_id, k_spec_ts, k_spec_body,
               std::string(k_spec_signature) + " v1a,whatever"));
  CHECK_FALSE(verify(key, k_spec_id, k_spec_ts, k_spec_body, "v1,bm90 v1,YWxzb25vdA=="));
}

TEST_CASE("sha256_hex matches the known digest of abc") {
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

// --- retry schedule

TEST_CASE("the retry schedule waits 5s 30s 2m 10m 30m 1h 2h 4h 8h without jitter at 0.5") {
  const Millis expected[] = {5s, 30s, 2min, 10min, 30min, 1h, 2h, 4h, 8h};
  for (int n = 1; n <= 9; ++n) {
    CAPTURE(n);
    const auto d = retry_delay(n, 0.5);
    REQUIRE(d.has_value());
    CHECK(*d == expected[n - 1]);
  }
}

TEST_CASE("the retry jitter stays within plus or minus 20 percent") {
  const Millis expected[] = {5s, 30s, 2min, 10min, 30min, 1h, 2h, 4h, 8h};
  const double just_below_one = std::nextafter(1.0, 0.0);
  for (int n = 1; n <= 9; ++n) {
    CAPTURE(n);
    const auto base = expected[n - 1].count();
    const auto low = retry_delay(n, 0.0);
    const auto high = retry_delay(n, just_below_one);
    REQUIRE(low.has_value());
    REQUIRE(high.has_value());
    CHECK(low->count() == base * 8 / 10);
    CHECK(high->count() < base * 12 / 10);
    CHECK(high->count() >= base * 12 / 10 - 1);
    const auto mid = retry_delay(n, 0.25);
    CHECK(mid->count() == base * 9 / 10);
  }
}

TEST_CASE("the event is dead after the tenth attempt fails") {
  CHECK(k_max_attempts == 10);
  CHECK(retry_delay(9, 0.5).has_value());
  CHECK_FALSE(retry_delay(10, 0.5).has_value());
  CHECK_FALSE(retry_delay(10, 0.5, Millis{1s}).has_value());
  CHECK_FALSE(retry_delay(11, 0.5).has_value());
}

TEST_CASE("Retry-After on 429 and 503 replaces the schedule, within bounds") {
  CHECK(honours_retry_after(429));
  CHECK(honours_retry_after(503));
  CHECK_FALSE(honours_retry_after(500));
  CHECK_FALSE(honours_retry_after(200));
  CHECK_FALSE(honours_retry_after(410));
  // Longer than the schedule's step, shorter than it, and without jitter.
  CHECK(retry_delay(1, 0.0, Millis{120s}) == Millis{120s});
  CHECK(retry_delay(5, 0.99, Millis{7s}) == Millis{7s});
  // Floored and capped.
  CHECK(retry_delay(1, 0.5, Millis{0}) == k_min_retry_after);
  CHECK(retry_delay(1, 0.5, Millis{24h * 30}) == k_max_retry_after);
}
