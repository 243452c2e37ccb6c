// Which schedule polls follow while push may carry the reads, as pure
// functions: `poll.reconcile_schedule` while the Stream connection is up (or
// down for less than `dingtalk.stream.fallback_after`), `poll.schedule` once
// it has been down that long, and when it is back after such a fallback, one
// catch-up poll soon for every message tracked while it was down, longest
// down first. A start counts as coming back from an outage: pushes made
// while the daemon was not running were never received.
//
// Thread-safety: pure functions of their arguments.
#pragma once

#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/common/model.hpp"
#include "readreceiptd/config/config.hpp"

#include <optional>
#include <vector>

namespace rrd::scheduler {

enum class PollMode {
  normal,    // poll.schedule: push is off, or has been down for fallback_after
  reconcile, // poll.reconcile_schedule: push carries the reads
};

struct PushState {
  bool enabled = false;   // dingtalk.stream.enabled
  bool connected = false; // a Stream connection is open
  TimePoint since;        // when it last connected or went down
  Millis fallback_after{30'000};
};

// What changes at `now`, given the mode the polls follow and whether a
// catch-up is owed (the Stream was down long enough, or the daemon just
// started, and has not been back since).
struct ModeDecision {
  PollMode mode = PollMode::normal;
  bool fell_back = false; // reconcile -> normal now: bring next polls forward
  bool catch_up = false;  // back: poll every message tracked while down, once
  bool catch_up_owed = false;
  bool operator==(const ModeDecision&) const = default;
};
ModeDecision decide_mode(PollMode current, bool catch_up_owed, const PushState& push,
                         TimePoint now);

// The next poll of a message once polls fall back on `schedule`: its own if
// sooner, else one interval after its last poll (or its addition), at the
// earliest now.
TimePoint fallback_next_poll(const MessageRecord& m,
                             const std::vector<config::ScheduleStep>& schedule, TimePoint now);

// The catch-up poll's time: a time already past, so that the message is due
// at once, and the ones down longest come first: when the outage (or, for a
// younger message, its tracking) began.
TimePoint catch_up_time(const MessageRecord& m, TimePoint down_since);

} // namespace rrd::scheduler
