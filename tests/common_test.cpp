#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/common/heap.hpp"
#include "readreceiptd/common/model.hpp"
#include "readreceiptd/common/result.hpp"

#include <cstddef>
#include <doctest/doctest.h>
#include <fstream>
#include <memory>
#include <set>
#include <unistd.h>
#include <vector>

using namespace rrd;

TEST_CASE("rfc3339 round trip and offsets") {
  TimePoint t;
  REQUIRE(parse_rfc3339("2026-11-25T10:00:00Z", t));
  CHECK(format_rfc3339(t) == "2026-11-25T10:00:00.000Z");
  REQUIRE(parse_rfc3339("2026-11-25T10:03:12.123Z", t));
  CHECK(format_rfc3339(t) == "2026-11-25T10:03:12.123Z");
  REQUIRE(parse_rfc3339("2026-11-25T18:00:00+08:00", t));
  CHECK(format_rfc3339(t) == "2026-11-25T10:00:00.000Z");
  CHECK_FALSE(parse_rfc3339("2026-11-25", t));
  CHECK_FALSE(parse_rfc3339("2026-02-30T10:00:00Z", t));
  CHECK_FALSE(parse_rfc3339("2026-11-25T10:00:00", t));
  CHECK_FALSE(parse_rfc3339("2026-11-25T10:00:00Zjunk", t));
}

TEST_CASE("event ids are evt_ plus 26 Crockford characters, unique and time-ordered") {
  const auto a = make_event_id(from_unix_ms(1'000), 1, 2);
  const auto b = make_event_id(from_unix_ms(2'000), 0, 0);
  CHECK(a.size() == 30);
  CHECK(a.rfind("evt_", 0) == 0);
  CHECK(a < b);
  CHECK(make_event_id(from_unix_ms(1'000), 1, 3) != a);
  for (char c : a.substr(4)) {
    CHECK(std::string("0123456789ABCDEFGHJKMNPQRSTVWXYZ").find(c) != std::string::npos);
  }
}

TEST_CASE("stop reasons and event types round trip through their names") {
  for (auto r : k_all_stop_reasons) {
    CHECK(stop_reason_from_string(to_string(r)) == r);
  }
  CHECK_FALSE(stop_reason_from_string("bogus").has_value());
  CHECK(event_type_from_string("message.read") == EventType::message_read);
  CHECK(event_type_from_string(to_string(EventType::tracking_stopped)) ==
        EventType::tracking_stopped);
}

TEST_CASE("expected_count prefers expected_readers") {
  MessageSpec s;
  CHECK_FALSE(expected_count(s).has_value());
  s.expected_reader_count = 5;
  CHECK(expected_count(s) == 5);
  s.expected_readers = {"a", "b"};
  CHECK(expected_count(s) == 2);
}

TEST_CASE("Result holds a value or an error") {
  Result<int, std::string> good = 3;
  Result<int, std::string> bad = err(std::string("boom"));
  CHECK(good.ok());
  CHECK(*good == 3);
  CHECK_FALSE(bad.ok());
  CHECK(bad.error() == "boom");
  Result<std::string, std::string> same = err(std::string("e"));
  CHECK_FALSE(same.ok());
}

TEST_CASE("event ids: the time they were made is read back from the id") {
  for (const std::int64_t ms : {0LL, 1'000LL, 1'764'064'800'123LL, (1LL << 48) - 1}) {
    CAPTURE(ms);
    const auto id = make_event_id(from_unix_ms(ms), 0xFFFF, ~0ULL);
    REQUIRE(event_id_time(id).has_value());
    CHECK(to_unix_ms(*event_id_time(id)) == ms);
  }
  CHECK_FALSE(event_id_time("evt_1"));
  CHECK_FALSE(event_id_time("evt_01JD8X4M2QZZZZZZZZZZZZZZZU")); // U is not Crockford base32
  CHECK_FALSE(event_id_time("xyz_01JD8X4M2QZZZZZZZZZZZZZZ"));
  CHECK_FALSE(event_id_time("evt_ZZZZZZZZZZ0000000000000000")); // past 48 bits
}

namespace {

// This process's resident memory, in bytes (/proc/self/statm).
std::size_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t size = 0;
  std::size_t resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

} // namespace

TEST_CASE("heap: prepare_heap makes the memory resident at once, and allocations use it") {
  CHECK(heap::prepare_heap(heap::k_min_prepare_bytes - 1) == 0);
  constexpr std::size_t k_bytes = heap::k_min_prepare_bytes;
  const std::size_t before = resident_bytes();
  const std::size_t prepared = heap::prepare_heap(k_bytes);
  if (prepared == 0) {
    // Sanitizers' allocators, or a kernel without MADV_POPULATE_WRITE.
    MESSAGE("prepare_heap is a no-op here");
    return;
  }
  CHECK(prepared >= k_bytes - (2U << 20));
  const std::size_t after = resident_bytes();
  CHECK(after >= before + prepared / 2);
  // Small allocations now come from the prepared memory: filling most of
  // it barely grows the resident set.
  std::vector<std::unique_ptr<char[]>> blocks;
  for (std::size_t filled = 0; filled < prepared / 2; filled += 1000) {
    blocks.push_back(std::make_unique<char[]>(1000));
    blocks.back()[0] = 1;
  }
  CHECK(resident_bytes() < after + prepared / 8);
}
