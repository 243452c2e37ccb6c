// GET /v1/updates without sockets: the Server-Sent Events encoding, a
// subscriber's bounded queue, the status coalescing, and the hub's policy
// (the cap, dropping a subscriber that falls behind, the end of every stream
// at close) and the loop's feed.
#include "readreceiptd/api/sse.hpp"
#include "readreceiptd/api/updates.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <thread>

using namespace rrd;
using namespace rrd::api;
using nlohmann::json;

namespace {

Frame frame_of(std::size_t bytes, char fill = 'x') {
  return make_frame(std::string(bytes, fill));
}

MessageRecord record(const std::string& key, std::size_t readers = 0) {
  MessageRecord r;
  r.spec.process_query_key = key;
  r.spec.robot_code = "dingrobot";
  for (std::size_t i = 0; i < readers; ++i) {
    r.read_user_ids.push_back("u" + std::to_string(i));
    r.read_info.emplace_back();
  }
  r.sent_at = from_unix_ms(1'764'064'800'000);
  r.added_at = r.sent_at;
  r.next_poll = r.sent_at;
  return r;
}

DaemonStatus status_with(std::size_t tracking) {
  DaemonStatus s;
  s.version = "1.2.3";
  s.started_at = from_unix_ms(1'764'064'800'000);
  s.messages_tracking = tracking;
  s.month = "2025-11";
  s.poll_mode = "normal";
  s.configured_rate = 20;
  s.current_rate = 20;
  return s;
}

// The events in `text`: (type, data) pairs, data lines joined by '\n'.
std::vector<std::pair<std::string, std::string>> parse_events(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  std::string type;
  std::string data;
  bool has_data = false;
  std::size_t start = 0;
  while (start < text.size()) {
    const auto end = text.find('\n', start);
    const std::string line = text.substr(start, end - start);
    start = end == std::string::npos ? text.size() : end + 1;
    if (line.empty()) {
      if (has_data) {
        out.emplace_back(type, data);
      }
      type.clear();
      data.clear();
      has_data = false;
    } else if (line.rfind("event: ", 0) == 0) {
      type = line.substr(7);
    } else if (line.rfind("data: ", 0) == 0) {
      data += (has_data ? "\n" : "") + line.substr(6);
      has_data = true;
    }
  }
  return out;
}

} // namespace

TEST_CASE("sse: an event is its type, one data line per line of its data, and a blank line") {
  CHECK(sse_event("message", R"({"a":1})") == "event: message\ndata: {\"a\":1}\n\n");
  CHECK(sse_event("x", "one\ntwo\r\nthree\rfour") ==
        "event: x\ndata: one\ndata: two\ndata: three\ndata: four\n\n");
  CHECK(sse_event("x", "") == "event: x\ndata: \n\n");
  CHECK(sse_event("x", "trailing\n") == "event: x\ndata: trailing\ndata: \n\n");
  CHECK(sse_comment("keep-alive") == ": keep-alive\n\n");
  CHECK(sse_comment("a\nb") == ": a\n: b\n\n");
  CHECK(sse_retry(Millis{2'000}) == "retry: 2000\n\n");
  // A reader gets the data back whole.
  const auto events = parse_events(sse_event("x", "one\ntwo"));
  REQUIRE(events.size() == 1);
  CHECK(events[0].second == "one\ntwo");
}

TEST_CASE("sse: the frames of /v1/updates carry the API's own JSON") {
  const MessageRecord m = record("Kna+/=", 2);
  const auto message = parse_events(*message_frame(m));
  REQUIRE(message.size() == 1);
  CHECK(message[0].first == "message");
  CHECK(message[0].second == message_json(m)); // exactly as GET /v1/messages/{key}

  const DaemonStatus s = status_with(3);
  const auto status = parse_events(*status_frame(s));
  REQUIRE(status.size() == 1);
  CHECK(status[0].first == "status");
  CHECK(status[0].second == status_json(s)); // exactly as GET /v1/status

  CHECK(end_frame(k_end_too_slow) == "event: end\ndata: {\"reason\":\"too slow\"}\n\n");
  CHECK(end_frame(k_end_shutting_down) == "event: end\ndata: {\"reason\":\"shutting down\"}\n\n");
}

TEST_CASE("updates: a queue takes whole batches within its frames and bytes, in order") {
  UpdateQueue q(3, 100);
  CHECK(q.empty());
  CHECK(q.offer({frame_of(10, 'a'), frame_of(20, 'b')}));
  CHECK(q.frames() == 2);
  CHECK(q.bytes() == 30);
  // Two more frames would make four: refused whole.
  CHECK_FALSE(q.offer({frame_of(1), frame_of(1)}));
  CHECK(q.frames() == 2);
  // Within the frames but over the bytes: refused whole.
  CHECK_FALSE(q.offer({frame_of(71)}));
  CHECK(q.offer({frame_of(70, 'c')}));
  CHECK(q.bytes() == 100);
  const auto taken = q.take();
  REQUIRE(taken.size() == 3);
  CHECK(taken[0]->front() == 'a');
  CHECK(taken[1]->front() == 'b');
  CHECK(taken[2]->front() == 'c');
  CHECK(q.empty());
  CHECK(q.bytes() == 0);
  CHECK(q.offer({}));
}

TEST_CASE("updates: the status is published at most once per interval, and only when it "
          "differs") {
  StatusCoalescer c(Millis{1'000});
  const TimePoint t0 = from_unix_ms(1'764'064'800'000);
  CHECK(c.due(t0));
  CHECK_FALSE(c.next_due().has_value());
  CHECK(c.offer(t0, "a")); // the first is published
  CHECK_FALSE(c.due(t0 + Millis{999}));
  CHECK(c.next_due() == t0 + Millis{1'000});
  CHECK(c.due(t0 + Millis{1'000}));
  CHECK_FALSE(c.offer(t0 + Millis{1'000}, "a")); // unchanged: not again
  CHECK_FALSE(c.due(t0 + Millis{1'500}));        // the look counts: not before t0 + 2 s
  CHECK(c.due(t0 + Millis{2'000}));
  CHECK(c.offer(t0 + Millis{2'000}, "b"));
  CHECK_FALSE(c.offer(t0 + Millis{3'000}, "b"));
  CHECK(c.offer(t0 + Millis{4'000}, "a")); // back to an earlier one is a change
  // A clock that went back does not stall it.
  CHECK(c.due(t0));
}

TEST_CASE("updates: a new stream starts with retry and the last status, then gets what is "
          "published") {
  UpdateHub hub;
  auto first = hub.subscribe();
  REQUIRE(first);
  auto opening = (*first)->next(Millis{0});
  CHECK(opening.bytes == sse_retry(k_update_retry));
  CHECK_FALSE(opening.end);

  hub.publish_status(status_frame(status_with(1)));
  auto second = hub.subscribe();
  REQUIRE(second);
  auto opened = (*second)->next(Millis{0});
  CHECK(opened.bytes == sse_retry(k_update_retry) + *status_frame(status_with(1)));
  CHECK((*first)->next(Millis{0}).bytes == *status_frame(status_with(1)));

  hub.publish({message_frame(record("a")), message_frame(record("b"))});
  for (auto* s : {&*first, &*second}) {
    const auto got = parse_events((*s)->next(Millis{0}).bytes);
    REQUIRE(got.size() == 2);
    CHECK(json::parse(got[0].second)["process_query_key"] == "a");
    CHECK(json::parse(got[1].second)["process_query_key"] == "b");
  }
  CHECK(hub.subscribers() == 2);
}

TEST_CASE("updates: next() waits for a frame, and comes back empty when none comes") {
  UpdateHub hub;
  auto sub = hub.subscribe();
  REQUIRE(sub);
  (*sub)->next(Millis{0}); // the opening retry
  const auto nothing = (*sub)->next(Millis{5});
  CHECK(nothing.bytes.empty());
  CHECK_FALSE(nothing.end);

  // A thread that waits (a long time at most) is woken by publish().
  std::string got;
  std::thread reader([&] { got = (*sub)->next(Millis{60'000}).bytes; });
  hub.publish({make_frame("event: message\ndata: {}\n\n")});
  reader.join();
  CHECK(got == "event: message\ndata: {}\n\n");
}

TEST_CASE("updates: the subscriber after the cap is refused, and a free place is taken again") {
  UpdateLimits limits;
  limits.max_subscribers = 2;
  UpdateHub hub(limits);
  auto a = hub.subscribe();
  auto b = hub.subscribe();
  REQUIRE(a);
  REQUIRE(b);
  auto c = hub.subscribe();
  REQUIRE_FALSE(c);
  CHECK(c.error() == UpdateHub::Refusal::full);
  CHECK(hub.subscribers() == 2);
  (*b).reset(); // that stream closed
  CHECK(hub.subscribers() == 1);
  auto d = hub.subscribe();
  REQUIRE(d);
  CHECK(hub.subscribers() == 2);
  CHECK(hub.stats().dropped_for(DropReason::queue_full) == 0); // a refusal is no drop
}

TEST_CASE("updates: a subscriber that falls behind is dropped with a final event - the others "
          "carry on") {
  UpdateLimits limits;
  limits.queue_frames = 4;
  UpdateHub hub(limits);
  auto slow = hub.subscribe();
  auto fast = hub.subscribe();
  REQUIRE(slow);
  REQUIRE(fast);
  for (int i = 0; i < 10; ++i) {
    hub.publish({message_frame(record("k" + std::to_string(i)))});
    const auto got = parse_events((*fast)->next(Millis{0}).bytes);
    CHECK_FALSE(got.empty()); // the fast one reads every time
  }
  CHECK(hub.subscribers() == 1);
  const UpdateStats stats = hub.stats();
  CHECK(stats.subscribers == 1);
  CHECK(stats.dropped_for(DropReason::queue_full) == 1);
  CHECK(stats.dropped_for(DropReason::write_timeout) == 0);

  // The slow one's queue was replaced by the end: it writes that, once.
  const auto last = (*slow)->next(Millis{0});
  CHECK(last.end);
  CHECK(last.bytes == end_frame(k_end_too_slow));
  const auto after = (*slow)->next(Millis{0});
  CHECK(after.end);
  CHECK(after.bytes.empty());
  // Its place is free again.
  CHECK(hub.subscribe());
}

TEST_CASE("updates: a queue is bounded in bytes too") {
  UpdateLimits limits;
  limits.queue_bytes = 1'000;
  UpdateHub hub(limits);
  auto sub = hub.subscribe();
  REQUIRE(sub);
  hub.publish({frame_of(600)});
  CHECK(hub.subscribers() == 1);
  hub.publish({frame_of(600)}); // 1,200 bytes and the retry line: too many
  CHECK(hub.subscribers() == 0);
  CHECK((*sub)->next(Millis{0}).end);
}

TEST_CASE("updates: a write that timed out drops the subscriber, counted apart") {
  UpdateHub hub;
  auto sub = hub.subscribe();
  REQUIRE(sub);
  (*sub)->write_timed_out();
  (*sub)->write_timed_out(); // counted once
  CHECK(hub.subscribers() == 0);
  CHECK(hub.stats().dropped_for(DropReason::write_timeout) == 1);
  CHECK(hub.stats().dropped_for(DropReason::queue_full) == 0);
  CHECK((*sub)->next(Millis{0}).end);
}

TEST_CASE("updates: close() ends every stream and refuses new ones") {
  UpdateHub hub;
  auto a = hub.subscribe();
  auto b = hub.subscribe();
  REQUIRE(a);
  REQUIRE(b);
  (*a)->next(Millis{0});
  hub.publish({frame_of(5, 'm')});
  (*b)->next(Millis{0}); // the opening and the frame
  std::optional<UpdateSubscriber::Next> waited;
  // Waiting (a long time at most), or not yet: either way it gets the end.
  std::thread waiter([&] { waited = (*b)->next(Millis{60'000}); });
  hub.close();
  waiter.join();
  REQUIRE(waited);
  CHECK(waited->end);
  CHECK(waited->bytes == end_frame(k_end_shutting_down));
  const auto last = (*a)->next(Millis{0});
  CHECK(last.end);
  CHECK(last.bytes == end_frame(k_end_shutting_down)); // what was queued is not written
  CHECK(hub.subscribers() == 0);
  auto late = hub.subscribe();
  REQUIRE_FALSE(late);
  CHECK(late.error() == UpdateHub::Refusal::closed);
  CHECK(hub.stats().dropped_for(DropReason::queue_full) == 0); // a stop is no drop
}

TEST_CASE("updates: end_all() ends the open streams with its reason and takes new ones") {
  UpdateHub hub;
  auto a = hub.subscribe();
  auto b = hub.subscribe();
  REQUIRE(a);
  REQUIRE(b);
  (*a)->next(Millis{0});
  hub.end_all(k_end_token_changed);
  CHECK(hub.subscribers() == 0);
  const auto last = (*a)->next(Millis{0});
  CHECK(last.end);
  CHECK(last.bytes == end_frame(k_end_token_changed));
  const auto other = (*b)->next(Millis{0});
  CHECK(other.end);
  CHECK(other.bytes == end_frame(k_end_token_changed)); // what was queued is not written
  auto c = hub.subscribe();
  REQUIRE(c);
  CHECK(hub.subscribers() == 1);
  CHECK(hub.stats().dropped_for(DropReason::queue_full) == 0);
  CHECK(hub.stats().dropped_for(DropReason::write_timeout) == 0);
}

TEST_CASE("updates: the feed renders messages only while someone listens, once per turn, and "
          "the status when it changed") {
  UpdateHub hub;
  UpdateFeed feed(hub);
  const TimePoint t0 = from_unix_ms(1'764'064'800'000);
  int looks = 0;
  std::size_t tracking = 1;
  const auto status = [&] {
    ++looks;
    return status_with(tracking);
  };
  feed.message_changed(record("nobody"));
  feed.end_turn(t0, status);
  CHECK(looks == 1); // the first status, kept for the first subscriber

  auto sub = hub.subscribe();
  REQUIRE(sub);
  CHECK((*sub)->next(Millis{0}).bytes == sse_retry(k_update_retry) + *status_frame(status_with(1)));

  feed.message_changed(record("a", 1));
  feed.message_changed(record("b"));
  feed.message_changed(record("a", 2)); // the same message again in the turn
  feed.end_turn(t0 + Millis{10}, status);
  CHECK(looks == 1); // not due yet
  const auto got = parse_events((*sub)->next(Millis{0}).bytes);
  REQUIRE(got.size() == 2);
  CHECK(got[0].second == message_json(record("a", 2))); // its last state, in its first place
  CHECK(got[1].second == message_json(record("b")));

  feed.end_turn(t0 + Millis{1'000}, status); // due, unchanged: nothing
  CHECK(looks == 2);
  CHECK((*sub)->next(Millis{0}).bytes.empty());
  tracking = 2;
  feed.end_turn(t0 + Millis{1'500}, status); // changed, but not due
  CHECK(looks == 2);
  CHECK(feed.next_wakeup() == t0 + Millis{2'000});
  feed.end_turn(t0 + Millis{2'000}, status);
  CHECK((*sub)->next(Millis{0}).bytes == *status_frame(status_with(2)));
  CHECK(hub.subscribers() == 1);
}
