#include "readreceiptd/scheduler/push_mode.hpp"

#include "readreceiptd/scheduler/schedule.hpp"

#include <algorithm>

namespace rrd::scheduler {

ModeDecision decide_mode(PollMode current, bool catch_up_owed, const PushState& push,
                         TimePoint now) {
  ModeDecision d;
  d.catch_up_owed = catch_up_owed;
  if (!push.enabled) {
    d.mode = PollMode::normal;
    d.catch_up_owed = false;
    return d;
  }
  if (push.connected) {
    d.mode = PollMode::reconcile;
    d.catch_up = catch_up_owed;
    d.catch_up_owed = false;
    return d;
  }
  if (now - push.since >= push.fallback_after) {
    d.mode = PollMode::normal;
    d.fell_back = current == PollMode::reconcile;
    d.catch_up_owed = true;
    return d;
  }
  d.mode = current; // a short gap changes no schedule
  return d;
}

TimePoint fallback_next_poll(const MessageRecord& m,
                             const std::vector<config::ScheduleStep>& schedule, TimePoint now) {
  const TimePoint last = m.last_poll.value_or(m.added_at);
  const TimePoint normal = last + interval_for_age(schedule, last - m.sent_at);
  return std::min(m.next_poll, std::max(normal, now));
}

TimePoint catch_up_time(const MessageRecord& m, TimePoint down_since) {
  return std::max(m.added_at, down_since);
}

} // namespace rrd::scheduler
