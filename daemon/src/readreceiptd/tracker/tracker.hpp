// The tracker: the pure core of read tracking (SPEC sections 1, 4, 5, 6).
// It takes a message's state and the outcome of one poll and returns the new
// state, the events to write to the outbox, and when to poll next. No I/O, no
// clock reads, no globals, no randomness of its own: every function is pure
// and thread-safe.
//
// The caller (the scheduler loop) maps DingTalk's answers to a PollResult,
// calls apply(), assigns event ids, and commits the returned record and events
// in one transaction. A sketch:
//
//   auto step = tracker::apply(rec, result, {cfg.poll, clock.now(), failures, jitter});
//   for (auto& ev : step.events) ev.id = make_event_id(ev.created_at, r1, r2);
//   store.commit({step.record, step.events, routes}); // one transaction
//   if (step.record.stopped) due_queue.erase(key);
//   else due_queue.upsert(key, step.record.next_poll);
//
// Rules, in the order apply() checks them:
//  * answer: the ids in the answer not yet in the read set (deduplicated, in
//    answer order; empty ids ignored) are appended, with via poll and the
//    answer's read time if it gives one; ids missing from a later answer are
//    ignored (a user never un-reads). Any new ids produce one message.read
//    event. Then, at most one stop, in this precedence:
//      recalled  (sendStatus RECALLED; wins over fully_read: the message is
//                 gone, whoever read it; the read set is in the event anyway)
//      fully_read (every expected reader has read it, or the read count
//                 reaches expected_reader_count)
//      max_age   (age >= poll.max_age)
//  * expire_time: not ready yet while age <= poll.not_ready_grace (polled
//    again on schedule); after that stop `expired`, detail the code.
//  * invalid: stop `invalid`, detail the code.
//  * paused: poll again after the slowest schedule step's interval.
//  * transient: poll again after scheduler::backoff_delay(consecutive
//    failures, the normal interval for the age, jitter).
//  * Whatever the result, a message still tracked whose age has reached
//    poll.max_age stops with `max_age` (so a message that keeps failing, or
//    whose bot stays stopped, does not live for ever).
//  * oto: an answer's recipients become the expected readers when the
//    specification names none; its next poll is never later than the read
//    status window's last poll (k_oto_last_poll_before_close before it
//    closes), then the close itself; a poll at or after the close stops
//    `expired`, detail k_detail_window_closed, after its reads.
// A stop emits one message.tracking_stopped event; sequences continue from
// record.last_sequence with no gaps (read first, then stopped).
//
// Next poll: now + the interval, but never later than sent_at + max_age, so
// the max_age stop happens on time and after a last poll. A message that is
// already past max_age when first added (or when the daemon comes back after
// a long outage) is due right away: the caller polls it once more and that
// poll's result stops it with `max_age` after emitting any reads.
#pragma once

#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/common/model.hpp"
#include "readreceiptd/config/config.hpp"

#include <optional>
#include <string>
#include <vector>

namespace rrd::tracker {

// DingTalk answers an oto message's read status only this long after it
// was sent; its last poll is made this long before the window closes, and
// at the close it stops `expired` with k_detail_window_closed.
inline constexpr Millis k_oto_window{24 * 3'600'000};
inline constexpr Millis k_oto_last_poll_before_close{30'000};
inline constexpr const char* k_detail_window_closed = "read status window closed";

// The sendStatus that stops a message with reason `recalled`.
inline constexpr const char* k_send_status_recalled = "RECALLED";
// The DingTalk code behind PollResult::Kind::expire_time, used as the detail
// of an `expired` stop when the result carries no code.
inline constexpr const char* k_code_expire_time = "processQueryKey.expireTime";

// What one completed poll of a message produced (the caller maps DingTalk
// answers to this).
struct PollResult {
  enum class Kind {
    answer,      // 200 with the documented JSON, all pages read
    expire_time, // 400 processQueryKey.expireTime
    invalid,     // stop: invalid; the DingTalk code in `code`
    paused,      // bot.stopped, template.*, unauthorized, auth.error: slowest step
    transient,   // network, timeout, 5xx, throttled, bad response, client bug
  };
  Kind kind = Kind::answer;
  std::string send_status;                // answer: SUCCESS | PROCESSING | RECALLED | other
  std::vector<std::string> read_user_ids; // answer: union of all pages, first-seen order
  // answer: when each of read_user_ids read it, where the answer says (the
  // oto API's readTimestamp); empty when the answer gives no times.
  std::vector<std::optional<TimePoint>> read_at;
  // answer (oto): every recipient DingTalk lists, read or not, in its order.
  bool lists_recipients = false;
  std::vector<std::string> recipients;
  std::string code; // expire_time/invalid/paused: the DingTalk code
};

struct Context {
  const config::Poll& poll;
  TimePoint now;
  int consecutive_failures = 0; // transient failures of this message before this result
  double jitter = 0.0;          // uniform in [0, 1), for the backoff
  // The schedule the next poll follows (poll.reconcile_schedule while the
  // Stream is up); nullptr: poll.schedule.
  const std::vector<config::ScheduleStep>* schedule = nullptr;
  // Every interval is multiplied by this (the monthly budget's stretch, >= 1).
  double stretch = 1.0;
};

// One read pushed over the Stream (robot_msg_read).
struct PushedRead {
  std::string user_id;
  std::optional<TimePoint> read_at; // operatTime
};

// The new state and the events it produced, in sequence order. Event ids are
// left empty: the caller assigns them.
struct Step {
  MessageRecord record;
  std::vector<OutboxEvent> events;
};

// The record of a newly watched message: sent_at = spec.sent_at or now,
// added_at = now, next_poll = now (the first poll happens right away).
MessageRecord new_record(const MessageSpec& spec, MessageSource source, TimePoint now);

// Applies one poll's result. Sets last_poll = now, send_status (answers),
// next_poll (while still tracked), and the stop fields when it stops.
// next_poll is left unchanged when the message stops.
// REQUIRES: !record.stopped
Step apply(const MessageRecord& record, const PollResult& result, const Context& ctx);

// Applies the reads pushed for one message in one turn of the loop: the new
// readers (not yet read, deduplicated, in push order) are appended with via
// push and their read times, and make one message.read event; the message
// stops `fully_read` when they complete it. Poll times are left as they are.
// Nothing changes when no reader is new.
// REQUIRES: !record.stopped
Step apply_push(const MessageRecord& record, const std::vector<PushedRead>& reads, TimePoint now);

// An oto message whose read status window has closed (age >= k_oto_window):
// stopped `expired` with k_detail_window_closed, without a poll. nullopt for
// any other message, or one still inside its window.
std::optional<Step> close_window(const MessageRecord& record, TimePoint now);

// Stops tracking for a reason from outside a poll (e.g. `removed`), emitting
// one message.tracking_stopped event. A record that is already stopped is
// returned unchanged, with no event.
Step stop(const MessageRecord& record, StopReason reason, std::string detail, TimePoint now);

// True when the message is tracked and its next poll time has come.
bool due(const MessageRecord& record, TimePoint now);

// now - sent_at (negative when sent_at lies in the future).
Millis age(const MessageRecord& record, TimePoint now);

// True when the read set covers every expected reader (expected_readers), or
// else reaches expected_reader_count. False when neither is set.
bool fully_read(const MessageRecord& record);

} // namespace rrd::tracker
