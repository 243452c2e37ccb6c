#include "readreceiptd/ha/lease.hpp"

namespace rrd::ha {

Instant RealMonotonicClock::now() const {
  return std::chrono::time_point_cast<Millis>(std::chrono::steady_clock::now());
}

const char* to_string(StepDownReason r) {
  switch (r) {
  case StepDownReason::renewal_failed:
    return "renewal_failed";
  case StepDownReason::deadline_passed:
    return "deadline_passed";
  case StepDownReason::newer_epoch:
    return "newer_epoch";
  case StepDownReason::write_refused:
    return "write_refused";
  case StepDownReason::stopping:
    return "stopping";
  }
  return "unknown";
}

const char* to_string(Action a) {
  switch (a) {
  case Action::stay_standby:
    return "stay_standby";
  case Action::take_over:
    return "take_over";
  case Action::renew:
    return "renew";
  case Action::stay_leader:
    return "stay_leader";
  case Action::step_down:
    return "step_down";
  case Action::release:
    return "release";
  }
  return "unknown";
}

Millis renew_interval(Millis lease_ttl) {
  return lease_ttl / k_renewals_per_ttl;
}

Millis deadline_margin(Millis lease_ttl) {
  return lease_ttl / k_deadline_margin_divisor;
}

Instant deadline(const LeaseState& s, Millis lease_ttl) {
  return s.renewal_sent + lease_ttl - deadline_margin(lease_ttl);
}

bool may_start(const LeaseState& s, Instant now, Millis lease_ttl) {
  return s.role == Role::leader && now < deadline(s, lease_ttl);
}

namespace {

Decision make(Action a, Instant next, std::optional<StepDownReason> reason = std::nullopt,
              std::int64_t epoch = 0) {
  Decision d;
  d.action = a;
  d.next_check = next;
  d.reason = reason;
  d.epoch = epoch;
  return d;
}

Decision decide_leader(const LeaseInput& in) {
  const Instant check_now = in.now; // a stepped-down daemon looks again at once
  if (in.stopping) {
    return make(Action::release, check_now, StepDownReason::stopping);
  }
  if (in.write_refused) {
    return make(Action::step_down, check_now, StepDownReason::write_refused);
  }
  if (in.renewal_failed) {
    return make(Action::step_down, check_now, StepDownReason::renewal_failed);
  }
  // Past the deadline the old epoch is never renewed: the lease may have
  // been taken over already. It steps down and, as a standby, takes the next
  // epoch if nobody else did.
  if (!may_start(in.state, in.now, in.lease_ttl)) {
    return make(Action::step_down, check_now, StepDownReason::deadline_passed);
  }
  // A newer epoch, or ours held by another: the lease is no longer ours.
  if (in.row && (in.row->epoch > in.state.epoch ||
                 (in.row->epoch == in.state.epoch && in.row->holder != in.my_id))) {
    return make(Action::step_down, check_now, StepDownReason::newer_epoch);
  }
  const Instant renew_at = in.state.renewal_sent + renew_interval(in.lease_ttl);
  if (in.now >= renew_at) {
    return make(Action::renew, in.now + renew_interval(in.lease_ttl));
  }
  return make(Action::stay_leader, renew_at);
}

Decision decide_standby(const LeaseInput& in) {
  const Instant next = in.now + renew_interval(in.lease_ttl);
  if (in.stopping || !in.row) {
    return make(Action::stay_standby, next);
  }
  const LeaseRow& row = *in.row;
  if (row.holder.empty() || row.expired) {
    return make(Action::take_over, next, std::nullopt, row.epoch + 1);
  }
  // A live lease, someone else's or the one this daemon stepped down from
  // (never renewed again): look again when it should have expired, or at
  // the usual pace if that is sooner.
  return make(Action::stay_standby, std::min(next, in.now + row.remaining));
}

} // namespace

Decision decide(const LeaseInput& in) {
  return in.state.role == Role::leader ? decide_leader(in) : decide_standby(in);
}

} // namespace rrd::ha
