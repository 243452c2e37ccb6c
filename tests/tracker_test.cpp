#include "readreceiptd/scheduler/schedule.hpp"
#include "readreceiptd/tracker/tracker.hpp"

#include <algorithm>
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

using namespace rrd;
using tracker::PollResult;

namespace {

constexpr Millis k_s{1'000};
constexpr Millis k_min{60'000};
constexpr Millis k_h{3'600'000};

TimePoint at(const std::string& text) {
  TimePoint t{};
  REQUIRE(parse_rfc3339(text, t));
  return t;
}

// 2026-11-25T10:00:00Z
const TimePoint k_t0 = from_unix_ms(1'795'600'800'000);

MessageSpec outage_spec() {
  MessageSpec s;
  s.process_query_key = "Kna29pdJznx1ghavbumkQKwDzgfxZLapw55G7x0Q=";
  s.open_conversation_id = "cid6KeBBLo7EeiodoA==";
  s.robot_code = "dingrobotcode";
  s.expected_readers = {"user1", "user2"};
  s.sent_at = k_t0;
  s.labels = {{"campaign", "outage-42"}};
  return s;
}

MessageSpec open_spec() { // no expected readers: only age, recall and errors stop it
  MessageSpec s = outage_spec();
  s.expected_readers.clear();
  return s;
}

PollResult answer(std::vector<std::string> ids, std::string status = "SUCCESS") {
  PollResult r;
  r.kind = PollResult::Kind::answer;
  r.send_status = std::move(status);
  r.read_user_ids = std::move(ids);
  return r;
}

PollResult failure(PollResult::Kind kind, std::string code = "") {
  PollResult r;
  r.kind = kind;
  r.code = std::move(code);
  return r;
}

tracker::Context ctx_at(const config::Poll& poll, TimePoint now, int failures = 0,
                        double jitter = 0.5) {
  return tracker::Context{poll, now, failures, jitter};
}

MessageRecord tracked(const MessageSpec& spec) {
  return tracker::new_record(spec, MessageSource::config, k_t0);
}

// Sequences of the events, in order.
std::vector<std::int64_t> sequences(const std::vector<OutboxEvent>& events) {
  std::vector<std::int64_t> out;
  for (const auto& e : events) {
    out.push_back(e.sequence);
  }
  return out;
}

} // namespace

TEST_CASE("the fixed start time is what the bodies below assume") {
  CHECK(format_rfc3339(k_t0) == "2026-11-25T10:00:00.000Z");
}

TEST_CASE("new_record: sent_at defaults to now and the first poll is due right away") {
  MessageSpec spec = open_spec();
  spec.sent_at.reset();
  const TimePoint now = k_t0 + 5 * k_min;
  const auto rec = tracker::new_record(spec, MessageSource::api, now);
  CHECK(rec.sent_at == now);
  CHECK(rec.added_at == now);
  CHECK(rec.next_poll == now);
  CHECK(rec.source == MessageSource::api);
  CHECK(rec.last_sequence == 0);
  CHECK_FALSE(rec.stopped);
  CHECK_FALSE(rec.last_poll.has_value());
  CHECK(tracker::due(rec, now));
  CHECK_FALSE(tracker::due(rec, now - Millis{1}));

  const auto given = tracker::new_record(outage_spec(), MessageSource::config, now);
  CHECK(given.sent_at == k_t0);
  CHECK(given.added_at == now);
}

// The documented fields, with those added beside them: newly_read (each new
// reader's read time and via) and unread_user_ids (with expected_readers).
TEST_CASE("message.read and tracking_stopped bodies match the documented shape exactly") {
  const config::Poll poll;
  auto rec = tracked(outage_spec());
  const TimePoint t1 = at("2026-11-25T10:03:12.123Z");
  auto s1 = tracker::apply(rec, answer({"user1"}), ctx_at(poll, t1));
  REQUIRE(s1.events.size() == 1);
  const auto& e1 = s1.events[0];
  CHECK(e1.id.empty());
  CHECK(e1.process_query_key == "Kna29pdJznx1ghavbumkQKwDzgfxZLapw55G7x0Q=");
  CHECK(e1.type == EventType::message_read);
  CHECK(e1.sequence == 1);
  CHECK(e1.created_at == t1);
  CHECK(e1.body ==
        R"({"type":"message.read","timestamp":"2026-11-25T10:03:12.123Z","data":{)"
        R"("process_query_key":"Kna29pdJznx1ghavbumkQKwDzgfxZLapw55G7x0Q=","kind":"private_chat",)"
        R"("open_conversation_id":"cid6KeBBLo7EeiodoA==","robot_code":"dingrobotcode",)"
        R"("newly_read_user_ids":["user1"],)"
        R"("newly_read":[{"user_id":"user1","read_at":null,"via":"poll"}],)"
        R"("read_user_ids":["user1"],"read_count":1,)"
        R"("expected_reader_count":2,"send_status":"SUCCESS",)"
        R"("unread_user_ids":["user2"],"sequence":1,)"
        R"("labels":{"campaign":"outage-42"}}})");
  CHECK_FALSE(s1.record.stopped);

  const TimePoint t2 = at("2026-11-25T10:03:27.125Z");
  auto s2 = tracker::apply(s1.record, answer({"user1", "user2"}), ctx_at(poll, t2));
  REQUIRE(s2.events.size() == 2);
  CHECK(s2.events[0].body ==
        R"({"type":"message.read","timestamp":"2026-11-25T10:03:27.125Z","data":{)"
        R"("process_query_key":"Kna29pdJznx1ghavbumkQKwDzgfxZLapw55G7x0Q=","kind":"private_chat",)"
        R"("open_conversation_id":"cid6KeBBLo7EeiodoA==","robot_code":"dingrobotcode",)"
        R"("newly_read_user_ids":["user2"],)"
        R"("newly_read":[{"user_id":"user2","read_at":null,"via":"poll"}],)"
        R"("read_user_ids":["user1","user2"],"read_count":2,)"
        R"("expected_reader_count":2,"send_status":"SUCCESS","unread_user_ids":[],"sequence":2,)"
        R"("labels":{"campaign":"outage-42"}}})");
  CHECK(s2.events[1].type == EventType::tracking_stopped);
  CHECK(s2.events[1].sequence == 3);
  CHECK(s2.events[1].created_at == t2);
  CHECK(s2.events[1].body ==
        R"({"type":"message.tracking_stopped","timestamp":"2026-11-25T10:03:27.125Z","data":{)"
        R"("process_query_key":"Kna29pdJznx1ghavbumkQKwDzgfxZLapw55G7x0Q=","kind":"private_chat",)"
        R"("reason":"fully_read","detail":"","read_user_ids":["user1","user2"],)"
        R"("read_count":2,"unread_user_ids":[],"sequence":3,"labels":{"campaign":"outage-42"}}})");
  CHECK(s2.record.stopped);
  CHECK(s2.record.stop_reason == StopReason::fully_read);
  CHECK(s2.record.stop_detail.empty());
  CHECK(s2.record.stopped_at == t2);
  CHECK(s2.record.last_sequence == 3);
}

TEST_CASE("expected_reader_count is null in the body when unknown, labels default to {}") {
  const config::Poll poll;
  MessageSpec spec = open_spec();
  spec.labels.clear();
  auto step = tracker::apply(tracked(spec), answer({"u"}), ctx_at(poll, k_t0 + k_s));
  REQUIRE(step.events.size() == 1);
  const auto body = nlohmann::json::parse(step.events[0].body);
  CHECK(body["data"]["expected_reader_count"].is_null());
  CHECK(body["data"]["labels"] == nlohmann::json::object());
  CHECK(step.events[0].body.find(R"("expected_reader_count":null)") != std::string::npos);
}

TEST_CASE("an answer with no new readers emits nothing and keeps tracking on schedule") {
  const config::Poll poll;
  const TimePoint now = k_t0 + 30 * k_s;
  auto step = tracker::apply(tracked(open_spec()), answer({}, "PROCESSING"), ctx_at(poll, now));
  CHECK(step.events.empty());
  CHECK_FALSE(step.record.stopped);
  CHECK(step.record.send_status == "PROCESSING");
  CHECK(step.record.last_poll == now);
  CHECK(step.record.next_poll == now + 15 * k_s);
  CHECK(step.record.last_sequence == 0);
}

TEST_CASE("a user never un-reads: ids missing from a later answer are ignored") {
  const config::Poll poll;
  auto s1 = tracker::apply(tracked(open_spec()), answer({"a", "b"}), ctx_at(poll, k_t0 + k_s));
  auto s2 = tracker::apply(s1.record, answer({"b"}), ctx_at(poll, k_t0 + 20 * k_s));
  CHECK(s2.events.empty());
  CHECK(s2.record.read_user_ids == std::vector<std::string>{"a", "b"});
  auto s3 = tracker::apply(s2.record, answer({"c", "b"}), ctx_at(poll, k_t0 + 40 * k_s));
  REQUIRE(s3.events.size() == 1);
  const auto data = nlohmann::json::parse(s3.events[0].body)["data"];
  CHECK(data["newly_read_user_ids"] == nlohmann::json{"c"});
  CHECK(data["read_user_ids"] == nlohmann::json{"a", "b", "c"});
  CHECK(data["sequence"] == 2);
}

TEST_CASE("duplicate and empty ids in one answer count once, in answer order") {
  const config::Poll poll;
  auto rec = tracked(open_spec());
  rec.read_user_ids = {"x"};
  auto step =
      tracker::apply(rec, answer({"b", "a", "x", "b", "", "a", "c"}), ctx_at(poll, k_t0 + k_s));
  REQUIRE(step.events.size() == 1);
  CHECK(step.record.read_user_ids == std::vector<std::string>{"x", "b", "a", "c"});
  const auto data = nlohmann::json::parse(step.events[0].body)["data"];
  CHECK(data["newly_read_user_ids"] == nlohmann::json{"b", "a", "c"});
  CHECK(data["read_count"] == 4);
}

TEST_CASE("fully_read by the expected_readers list ignores other readers") {
  const config::Poll poll;
  auto s1 = tracker::apply(tracked(outage_spec()), answer({"user1", "guest", "other"}),
                           ctx_at(poll, k_t0 + k_s));
  CHECK_FALSE(s1.record.stopped); // three readers, but user2 is missing
  CHECK_FALSE(tracker::fully_read(s1.record));
  auto s2 = tracker::apply(s1.record, answer({"user2"}), ctx_at(poll, k_t0 + 20 * k_s));
  CHECK(s2.record.stopped);
  CHECK(s2.record.stop_reason == StopReason::fully_read);
  CHECK(sequences(s2.events) == std::vector<std::int64_t>{2, 3});
}

TEST_CASE("fully_read by expected_reader_count") {
  const config::Poll poll;
  MessageSpec spec = open_spec();
  spec.expected_reader_count = 3;
  auto s1 = tracker::apply(tracked(spec), answer({"a", "b"}), ctx_at(poll, k_t0 + k_s));
  CHECK_FALSE(s1.record.stopped);
  CHECK(nlohmann::json::parse(s1.events[0].body)["data"]["expected_reader_count"] == 3);
  auto s2 = tracker::apply(s1.record, answer({"a", "b", "c", "d"}), ctx_at(poll, k_t0 + 2 * k_s));
  CHECK(s2.record.stopped);
  CHECK(s2.record.stop_reason == StopReason::fully_read);
  CHECK(s2.record.read_user_ids.size() == 4);
}

TEST_CASE("recalled with pending reads: the read event, then the stopped event") {
  const config::Poll poll;
  auto s1 = tracker::apply(tracked(open_spec()), answer({"a"}), ctx_at(poll, k_t0 + k_s));
  auto s2 =
      tracker::apply(s1.record, answer({"a", "b"}, "RECALLED"), ctx_at(poll, k_t0 + 20 * k_s));
  REQUIRE(s2.events.size() == 2);
  CHECK(s2.events[0].type == EventType::message_read);
  CHECK(s2.events[1].type == EventType::tracking_stopped);
  CHECK(sequences(s2.events) == std::vector<std::int64_t>{2, 3});
  const auto read = nlohmann::json::parse(s2.events[0].body)["data"];
  CHECK(read["send_status"] == "RECALLED");
  CHECK(read["newly_read_user_ids"] == nlohmann::json{"b"});
  const auto stopped = nlohmann::json::parse(s2.events[1].body)["data"];
  CHECK(stopped["reason"] == "recalled");
  CHECK(stopped["detail"] == "");
  CHECK(stopped["read_user_ids"] == nlohmann::json{"a", "b"});
  CHECK(s2.record.stop_reason == StopReason::recalled);
  CHECK(s2.record.send_status == "RECALLED");
}

TEST_CASE("recalled without new reads emits only the stopped event") {
  const config::Poll poll;
  auto step =
      tracker::apply(tracked(open_spec()), answer({}, "RECALLED"), ctx_at(poll, k_t0 + k_s));
  REQUIRE(step.events.size() == 1);
  CHECK(step.events[0].type == EventType::tracking_stopped);
  CHECK(step.events[0].sequence == 1);
}

TEST_CASE("recalled wins over fully_read when both hold") {
  const config::Poll poll;
  auto step = tracker::apply(tracked(outage_spec()), answer({"user1", "user2"}, "RECALLED"),
                             ctx_at(poll, k_t0 + k_s));
  REQUIRE(step.events.size() == 2);
  CHECK(step.record.stop_reason == StopReason::recalled);
  CHECK(nlohmann::json::parse(step.events[1].body)["data"]["reason"] == "recalled");
}

TEST_CASE("fully_read wins over max_age when both hold") {
  const config::Poll poll;
  auto step = tracker::apply(tracked(outage_spec()), answer({"user1", "user2"}),
                             ctx_at(poll, k_t0 + poll.max_age + k_h));
  CHECK(step.record.stop_reason == StopReason::fully_read);
  CHECK(step.events.size() == 2);
}

TEST_CASE("max_age: the last poll is scheduled exactly at max_age, and its answer stops") {
  config::Poll poll;
  poll.max_age = 24 * k_h + 30 * k_min; // not a multiple of the 1 h last step
  auto rec = tracked(open_spec());
  const TimePoint deadline = k_t0 + poll.max_age;
  // At age 24 h the interval is 1 h, but the next poll is clamped to the deadline.
  auto s1 = tracker::apply(rec, answer({"a"}), ctx_at(poll, k_t0 + 24 * k_h));
  CHECK_FALSE(s1.record.stopped);
  CHECK(s1.record.next_poll == deadline);
  CHECK_FALSE(tracker::due(s1.record, deadline - Millis{1}));
  CHECK(tracker::due(s1.record, deadline));

  // The last poll still reports new reads, then stops with max_age.
  auto s2 = tracker::apply(s1.record, answer({"a", "late"}), ctx_at(poll, deadline));
  REQUIRE(s2.events.size() == 2);
  CHECK(s2.events[0].type == EventType::message_read);
  CHECK(s2.events[1].type == EventType::tracking_stopped);
  CHECK(sequences(s2.events) == std::vector<std::int64_t>{2, 3});
  CHECK(s2.record.stop_reason == StopReason::max_age);
  CHECK(s2.record.stop_detail.empty());
  CHECK(s2.record.last_poll == deadline);
  CHECK_FALSE(tracker::due(s2.record, deadline + k_h)); // stopped messages are never due
}

TEST_CASE("max_age: one millisecond before the deadline the message keeps tracking") {
  const config::Poll poll;
  const TimePoint just_before = k_t0 + poll.max_age - Millis{1};
  auto step = tracker::apply(tracked(open_spec()), answer({}), ctx_at(poll, just_before));
  CHECK_FALSE(step.record.stopped);
  CHECK(step.record.next_poll == k_t0 + poll.max_age);
}

TEST_CASE("a message already past max_age when added is polled once, then stops") {
  const config::Poll poll;
  const TimePoint now = k_t0 + poll.max_age + 48 * k_h;
  auto rec = tracker::new_record(open_spec(), MessageSource::api, now);
  CHECK(tracker::due(rec, now));
  auto step = tracker::apply(rec, answer({"a"}), ctx_at(poll, now));
  CHECK(sequences(step.events) == std::vector<std::int64_t>{1, 2});
  CHECK(step.record.stop_reason == StopReason::max_age);
}

TEST_CASE("failures past max_age stop the message instead of retrying for ever") {
  const config::Poll poll;
  const TimePoint now = k_t0 + poll.max_age;
  for (auto kind : {PollResult::Kind::transient, PollResult::Kind::paused}) {
    auto step =
        tracker::apply(tracked(open_spec()), failure(kind, "bot.stopped"), ctx_at(poll, now));
    CHECK(step.record.stopped);
    CHECK(step.record.stop_reason == StopReason::max_age);
    CHECK(step.record.stop_detail.empty());
    REQUIRE(step.events.size() == 1);
  }
}

TEST_CASE("expireTime within not_ready_grace is 'not ready yet', after it, expired") {
  const config::Poll poll; // grace 2 m
  const auto expire = failure(PollResult::Kind::expire_time, "processQueryKey.expireTime");
  auto rec = tracked(open_spec());
  rec.send_status = "";

  SUBCASE("right after sending") {
    const TimePoint now = k_t0 + 5 * k_s;
    auto step = tracker::apply(rec, expire, ctx_at(poll, now));
    CHECK_FALSE(step.record.stopped);
    CHECK(step.events.empty());
    CHECK(step.record.next_poll == now + 15 * k_s);
    CHECK(step.record.last_poll == now);
    CHECK(step.record.send_status.empty());
  }
  SUBCASE("exactly at the end of the grace window: still not ready") {
    const TimePoint now = k_t0 + poll.not_ready_grace;
    auto step = tracker::apply(rec, expire, ctx_at(poll, now));
    CHECK_FALSE(step.record.stopped);
    CHECK(step.record.next_poll == now + 15 * k_s);
  }
  SUBCASE("one millisecond after the grace window: expired, with the code") {
    const TimePoint now = k_t0 + poll.not_ready_grace + Millis{1};
    auto step = tracker::apply(rec, expire, ctx_at(poll, now));
    CHECK(step.record.stopped);
    CHECK(step.record.stop_reason == StopReason::expired);
    CHECK(step.record.stop_detail == "processQueryKey.expireTime");
    REQUIRE(step.events.size() == 1);
    const auto data = nlohmann::json::parse(step.events[0].body)["data"];
    CHECK(data["reason"] == "expired");
    CHECK(data["detail"] == "processQueryKey.expireTime");
  }
  SUBCASE("an expire_time result without a code still names it") {
    auto step =
        tracker::apply(rec, failure(PollResult::Kind::expire_time), ctx_at(poll, k_t0 + k_h));
    CHECK(step.record.stop_detail == "processQueryKey.expireTime");
  }
}

TEST_CASE("invalid stops with the DingTalk code as detail") {
  const config::Poll poll;
  auto s1 = tracker::apply(tracked(open_spec()), answer({"a"}), ctx_at(poll, k_t0 + k_s));
  auto s2 =
      tracker::apply(s1.record, failure(PollResult::Kind::invalid, "invalid.openConversationId"),
                     ctx_at(poll, k_t0 + 20 * k_s));
  CHECK(s2.record.stopped);
  CHECK(s2.record.stop_reason == StopReason::invalid);
  CHECK(s2.record.stop_detail == "invalid.openConversationId");
  CHECK(s2.record.read_user_ids == std::vector<std::string>{"a"});
  REQUIRE(s2.events.size() == 1);
  CHECK(s2.events[0].sequence == 2);
  CHECK(s2.events[0].body ==
        R"({"type":"message.tracking_stopped","timestamp":"2026-11-25T10:00:20.000Z","data":{)"
        R"("process_query_key":"Kna29pdJznx1ghavbumkQKwDzgfxZLapw55G7x0Q=","kind":"private_chat",)"
        R"("reason":"invalid","detail":"invalid.openConversationId","read_user_ids":["a"],)"
        R"("read_count":1,"sequence":2,"labels":{"campaign":"outage-42"}}})");
}

TEST_CASE("paused keeps tracking at the slowest schedule step, within max_age") {
  const config::Poll poll;
  auto rec = tracked(open_spec());
  rec.send_status = "SUCCESS";
  const TimePoint now = k_t0 + k_min;
  auto step =
      tracker::apply(rec, failure(PollResult::Kind::paused, "bot.stopped"), ctx_at(poll, now));
  CHECK_FALSE(step.record.stopped);
  CHECK(step.events.empty());
  CHECK(step.record.next_poll == now + k_h);
  CHECK(step.record.last_poll == now);
  CHECK(step.record.send_status == "SUCCESS"); // only answers change it

  const TimePoint late = k_t0 + poll.max_age - 10 * k_min;
  auto clamped =
      tracker::apply(rec, failure(PollResult::Kind::paused, "unauthorized"), ctx_at(poll, late));
  CHECK(clamped.record.next_poll == k_t0 + poll.max_age);
}

TEST_CASE("transient failures back off exponentially, capped at the normal interval") {
  const config::Poll poll;
  const auto transient = failure(PollResult::Kind::transient);
  const TimePoint young = k_t0 + k_min; // interval 15 s
  auto delay_for = [&](TimePoint now, int failures, double jitter) {
    auto step =
        tracker::apply(tracked(open_spec()), transient, ctx_at(poll, now, failures, jitter));
    CHECK_FALSE(step.record.stopped);
    CHECK(step.events.empty());
    CHECK(step.record.last_poll == now);
    return step.record.next_poll - now;
  };
  // Jitter 0.5 is the midpoint: exactly base * 2^n.
  CHECK(delay_for(young, 0, 0.5) == 1 * k_s);
  CHECK(delay_for(young, 1, 0.5) == 2 * k_s);
  CHECK(delay_for(young, 2, 0.5) == 4 * k_s);
  CHECK(delay_for(young, 3, 0.5) == 8 * k_s);
  CHECK(delay_for(young, 4, 0.5) == 15 * k_s); // 16 s capped at 15 s
  CHECK(delay_for(young, 1000, 0.5) == 15 * k_s);
  // The cap follows the age: at 3 h the normal interval is 10 m.
  CHECK(delay_for(k_t0 + 3 * k_h, 8, 0.5) == 256 * k_s);
  CHECK(delay_for(k_t0 + 3 * k_h, 12, 0.5) == 10 * k_min);

  // Jitter stays within ±20% and never exceeds the cap.
  CHECK(delay_for(young, 2, 0.0) == Millis{3'200});
  CHECK(delay_for(young, 2, 0.999999) <= Millis{4'800});
  CHECK(delay_for(young, 2, 0.999999) >= Millis{4'799});
  CHECK(delay_for(young, 4, 0.0) == Millis{12'800}); // 16 s * 0.8, under the cap
  CHECK(delay_for(young, 4, 0.999999) == 15 * k_s);  // 16 s * 1.2 = 19.2 s, capped
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (int i = 0; i < 200; ++i) {
    const int failures = static_cast<int>(rng() % 6);
    const double jitter = uniform(rng);
    const Millis d = delay_for(young, failures, jitter);
    const double nominal = 1000.0 * static_cast<double>(1 << failures);
    const double lo = std::min(nominal * 0.8, 15'000.0);
    const double hi = std::min(nominal * 1.2, 15'000.0);
    CHECK(static_cast<double>(d.count()) >= lo - 1);
    CHECK(static_cast<double>(d.count()) <= hi + 1);
  }
}

TEST_CASE("a transient failure near max_age retries no later than the deadline") {
  const config::Poll poll;
  const TimePoint now = k_t0 + poll.max_age - 500 * Millis{1};
  auto step = tracker::apply(tracked(open_spec()), failure(PollResult::Kind::transient),
                             ctx_at(poll, now, 5));
  CHECK_FALSE(step.record.stopped);
  CHECK(step.record.next_poll == k_t0 + poll.max_age);
}

TEST_CASE("stop(removed) emits one tracking_stopped event, stopping twice emits nothing") {
  const config::Poll poll;
  auto s1 = tracker::apply(tracked(open_spec()), answer({"a"}), ctx_at(poll, k_t0 + k_s));
  const TimePoint now = k_t0 + k_min;
  auto s2 = tracker::stop(s1.record, StopReason::removed, "", now);
  CHECK(s2.record.stopped);
  CHECK(s2.record.stop_reason == StopReason::removed);
  CHECK(s2.record.stopped_at == now);
  CHECK(s2.record.last_poll == s1.record.last_poll); // not a poll
  REQUIRE(s2.events.size() == 1);
  CHECK(s2.events[0].sequence == 2);
  CHECK(s2.events[0].type == EventType::tracking_stopped);
  CHECK(s2.events[0].created_at == now);
  CHECK(nlohmann::json::parse(s2.events[0].body)["data"]["reason"] == "removed");
  CHECK_FALSE(tracker::due(s2.record, now + k_h));

  auto s3 = tracker::stop(s2.record, StopReason::removed, "again", now + k_s);
  CHECK(s3.events.empty());
  CHECK(s3.record == s2.record);
}

TEST_CASE("sequences count every event of a message from 1 with no gaps") {
  const config::Poll poll;
  std::mt19937_64 rng(12345);
  for (int run = 0; run < 50; ++run) {
    MessageSpec spec = open_spec();
    spec.expected_reader_count = 30;
    auto rec = tracked(spec);
    std::vector<OutboxEvent> all;
    std::vector<std::string> universe;
    for (int i = 0; i < 40; ++i) {
      universe.push_back("u" + std::to_string(i));
    }
    TimePoint now = k_t0;
    int failures = 0;
    while (!rec.stopped) {
      now = rec.next_poll;
      PollResult r;
      const auto roll = rng() % 10;
      if (roll < 7) {
        // A random subset of users, possibly forgetting earlier readers.
        std::vector<std::string> ids;
        for (const auto& u : universe) {
          if (rng() % 4 == 0) {
            ids.push_back(u);
          }
        }
        r = answer(ids, rng() % 200 == 0 ? "RECALLED" : "SUCCESS");
      } else if (roll < 9) {
        r = failure(PollResult::Kind::transient);
      } else {
        r = failure(PollResult::Kind::paused, "bot.stopped");
      }
      auto step = tracker::apply(rec, r, ctx_at(poll, now, failures, 0.3));
      failures = r.kind == PollResult::Kind::transient ? failures + 1 : 0;
      REQUIRE((step.record.stopped || step.record.next_poll > now));
      all.insert(all.end(), step.events.begin(), step.events.end());
      rec = step.record;
    }
    REQUIRE_FALSE(all.empty());
    for (std::size_t i = 0; i < all.size(); ++i) {
      CHECK(all[i].sequence == static_cast<std::int64_t>(i + 1));
      CHECK(nlohmann::json::parse(all[i].body)["data"]["sequence"] == all[i].sequence);
    }
    CHECK(all.back().type == EventType::tracking_stopped);
    CHECK(rec.last_sequence == static_cast<std::int64_t>(all.size()));
    // Read events list disjoint newly-read sets whose union is the read set.
    std::vector<std::string> seen;
    for (const auto& e : all) {
      if (e.type == EventType::message_read) {
        const auto body = nlohmann::json::parse(e.body);
        for (const auto& id : body["data"]["newly_read_user_ids"]) {
          seen.push_back(id.get<std::string>());
        }
      }
    }
    CHECK(seen == rec.read_user_ids);
  }
}

TEST_CASE("interval_for_age picks the first step whose until lies beyond the age") {
  const config::Poll poll; // 10m/15s, 2h/1m, 24h/10m, then 1h
  const auto& sch = poll.schedule;
  using scheduler::interval_for_age;
  CHECK(interval_for_age(sch, Millis{0}) == 15 * k_s);
  CHECK(interval_for_age(sch, -k_h) == 15 * k_s); // sent_at in the future
  CHECK(interval_for_age(sch, 10 * k_min - Millis{1}) == 15 * k_s);
  CHECK(interval_for_age(sch, 10 * k_min) == k_min);
  CHECK(interval_for_age(sch, 2 * k_h - Millis{1}) == k_min);
  CHECK(interval_for_age(sch, 2 * k_h) == 10 * k_min);
  CHECK(interval_for_age(sch, 24 * k_h - Millis{1}) == 10 * k_min);
  CHECK(interval_for_age(sch, 24 * k_h) == k_h);
  CHECK(interval_for_age(sch, 1000 * k_h) == k_h);
  CHECK(scheduler::slowest_interval(sch) == k_h);

  // The tracker schedules the next poll by the age at the poll.
  auto step = tracker::apply(tracked(open_spec()), answer({}), ctx_at(poll, k_t0 + 10 * k_min));
  CHECK(step.record.next_poll == k_t0 + 11 * k_min);
}

TEST_CASE("apply_push: new readers with their read times, one event, and the fully_read stop") {
  const config::Poll poll;
  auto rec = tracked(outage_spec());
  rec.next_poll = k_t0 + 15 * k_s;
  const TimePoint now = at("2026-11-25T10:03:12.123Z");
  const TimePoint read1 = at("2026-11-25T10:03:11.000Z");
  const TimePoint read2 = at("2026-11-25T10:03:12.000Z");
  SUBCASE("two pushes of one turn make one event") {
    const auto step = tracker::apply_push(
        rec, {{"user1", read1}, {"stranger", std::nullopt}, {"user1", read2}}, now);
    REQUIRE(step.events.size() == 1);
    const auto body = nlohmann::json::parse(step.events[0].body);
    CHECK(body["data"]["newly_read_user_ids"] == nlohmann::json::parse(R"(["user1","stranger"])"));
    CHECK(body["data"]["newly_read"] ==
          nlohmann::json::parse(
              R"([{"user_id":"user1","read_at":"2026-11-25T10:03:11.000Z","via":"push"},)"
              R"({"user_id":"stranger","read_at":null,"via":"push"}])"));
    CHECK(body["data"]["unread_user_ids"] == nlohmann::json::parse(R"(["user2"])"));
    CHECK(step.record.read_user_ids == std::vector<std::string>{"user1", "stranger"});
    CHECK(step.record.read_info ==
          std::vector<ReadInfo>{{read1, ReadVia::push}, {std::nullopt, ReadVia::push}});
    CHECK(step.record.next_poll == rec.next_poll); // poll times untouched
    CHECK(step.record.last_poll == rec.last_poll);
    CHECK_FALSE(step.record.stopped);
  }
  SUBCASE("known readers change nothing") {
    auto first = tracker::apply_push(rec, {{"user1", read1}}, now);
    const auto again = tracker::apply_push(first.record, {{"user1", read2}}, now);
    CHECK(again.events.empty());
    CHECK(again.record == first.record);
  }
  SUBCASE("the last expected reader stops it fully_read") {
    auto first = tracker::apply_push(rec, {{"user1", read1}}, now);
    const auto last = tracker::apply_push(first.record, {{"user2", read2}}, now);
    REQUIRE(last.events.size() == 2);
    CHECK(last.events[1].type == EventType::tracking_stopped);
    CHECK(sequences(last.events) == std::vector<std::int64_t>{2, 3});
    CHECK(last.record.stop_reason == StopReason::fully_read);
  }
  SUBCASE("a poll after a push keeps the push's read time and via, and adds its own") {
    auto pushed = tracker::apply_push(rec, {{"user1", read1}}, now);
    const auto polled =
        tracker::apply(pushed.record, answer({"user2", "user1"}), ctx_at(poll, now + k_s));
    CHECK(polled.record.read_user_ids == std::vector<std::string>{"user1", "user2"});
    CHECK(polled.record.read_info ==
          std::vector<ReadInfo>{{read1, ReadVia::push}, {std::nullopt, ReadVia::poll}});
  }
}

TEST_CASE("a poll's read times (oto's readTimestamp) go into the read set and the event") {
  const config::Poll poll;
  const auto rec = tracked(open_spec());
  auto result = answer({"a", "b"});
  result.read_at = {at("2026-11-25T10:01:00Z"), std::nullopt};
  const auto step = tracker::apply(rec, result, ctx_at(poll, k_t0 + k_min));
  CHECK(step.record.read_info == std::vector<ReadInfo>{{at("2026-11-25T10:01:00Z"), ReadVia::poll},
                                                       {std::nullopt, ReadVia::poll}});
  const auto body = nlohmann::json::parse(step.events.at(0).body);
  CHECK(body["data"]["newly_read"][0]["read_at"] == "2026-11-25T10:01:00.000Z");
  CHECK_FALSE(body["data"].contains("unread_user_ids")); // no list of expected readers
}

TEST_CASE("the next poll follows the schedule it is given, stretched by the budget") {
  config::Poll poll;
  const std::vector<config::ScheduleStep> reconcile{{k_h, 20 * k_min}, {std::nullopt, 4 * k_h}};
  const auto rec = tracked(open_spec());
  const TimePoint now = k_t0 + k_min;
  auto ctx = ctx_at(poll, now);
  CHECK(tracker::apply(rec, answer({}), ctx).record.next_poll == now + 15 * k_s);
  ctx.schedule = &reconcile;
  CHECK(tracker::apply(rec, answer({}), ctx).record.next_poll == now + 20 * k_min);
  ctx.stretch = 2.5;
  CHECK(tracker::apply(rec, answer({}), ctx).record.next_poll == now + 50 * k_min);
  // Backoff is capped at the stretched interval; paused waits the stretched slowest step.
  CHECK(tracker::apply(rec, failure(PollResult::Kind::paused), ctx).record.next_poll ==
        now + 10 * k_h);
  ctx.stretch = 1e9; // never past the max_age deadline
  CHECK(tracker::apply(rec, answer({}), ctx).record.next_poll == k_t0 + poll.max_age);
}
