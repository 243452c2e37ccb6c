#include "readreceiptd/ha/lease.hpp"

#include <doctest/doctest.h>

using namespace rrd;
using namespace rrd::ha;
using namespace std::chrono_literals;

namespace {

constexpr Millis k_ttl = 10s;
const Instant k_t0{Millis{5'000'000}};

LeaseRow row_of(const std::string& holder, std::int64_t epoch, bool expired,
                Millis remaining = 0ms) {
  LeaseRow r;
  r.holder = holder;
  r.epoch = epoch;
  r.holder_info = holder.empty() ? "" : holder + "@host:9465";
  r.expired = expired;
  r.remaining = remaining;
  return r;
}

LeaseState leader(std::int64_t epoch, Instant sent) {
  return LeaseState{Role::leader, epoch, sent};
}

LeaseInput input(Instant now, std::optional<LeaseRow> row, LeaseState state) {
  LeaseInput in;
  in.now = now;
  in.row = std::move(row);
  in.my_id = "me";
  in.state = state;
  in.lease_ttl = k_ttl;
  return in;
}

} // namespace

TEST_CASE("lease: renewals every lease_ttl/3, a deadline lease_ttl/5 short of the lease") {
  CHECK(renew_interval(10s) == 3333ms);
  CHECK(deadline_margin(10s) == 2s);
  CHECK(deadline_margin(2s) == 400ms);
  CHECK(deadline(leader(1, k_t0), 10s) == k_t0 + 8s);
  // The deadline comes after the next renewal is due, so one late renewal
  // does not stop the work, and before the database's expiry.
  for (const Millis ttl : {2000ms, 10000ms, 60000ms}) {
    CAPTURE(ttl.count());
    CHECK(deadline(leader(1, k_t0), ttl) > k_t0 + renew_interval(ttl));
    CHECK(deadline(leader(1, k_t0), ttl) < k_t0 + ttl);
  }
}

TEST_CASE("lease: may start work only as a leader before its deadline") {
  CHECK_FALSE(may_start(LeaseState{}, k_t0, k_ttl));
  const LeaseState l = leader(3, k_t0);
  CHECK(may_start(l, k_t0, k_ttl));
  CHECK(may_start(l, k_t0 + 7999ms, k_ttl));
  CHECK_FALSE(may_start(l, k_t0 + 8s, k_ttl));
  CHECK_FALSE(may_start(l, k_t0 + 1h, k_ttl));
}

TEST_CASE("lease: a standby's transitions") {
  const LeaseState standby;
  struct Case {
    const char* name;
    std::optional<LeaseRow> row;
    Action action;
    std::int64_t epoch;
    Instant next;
  };
  const Case cases[] = {
      {"no row yet: take the first epoch", row_of("", 0, true), Action::take_over, 1,
       k_t0 + 3333ms},
      {"released: take the next epoch at once", row_of("", 7, false), Action::take_over, 8,
       k_t0 + 3333ms},
      {"expired: take the next epoch", row_of("other", 7, true), Action::take_over, 8,
       k_t0 + 3333ms},
      {"another holds it: stay, look again at the usual pace", row_of("other", 7, false, 9s),
       Action::stay_standby, 0, k_t0 + 3333ms},
      {"another's lease ends sooner: look again then", row_of("other", 7, false, 1s),
       Action::stay_standby, 0, k_t0 + 1s},
      {"its own old lease, still live: never renewed, wait", row_of("me", 7, false, 2s),
       Action::stay_standby, 0, k_t0 + 2s},
      {"its own old lease, expired: the next epoch", row_of("me", 7, true), Action::take_over, 8,
       k_t0 + 3333ms},
      {"the row could not be read: stay", std::nullopt, Action::stay_standby, 0, k_t0 + 3333ms},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const Decision d = decide(input(k_t0, c.row, standby));
    CHECK(d.action == c.action);
    CHECK(d.epoch == c.epoch);
    CHECK(d.next_check == c.next);
    CHECK_FALSE(d.reason.has_value());
  }
  LeaseInput stopping = input(k_t0, row_of("", 0, true), standby);
  stopping.stopping = true;
  CHECK(decide(stopping).action == Action::stay_standby); // a stopping standby takes nothing
}

TEST_CASE("lease: a leader's transitions") {
  const LeaseState me = leader(4, k_t0);
  const auto mine = row_of("me", 4, false, 10s);
  struct Case {
    const char* name;
    Millis after;
    std::optional<LeaseRow> row;
    bool renewal_failed;
    bool write_refused;
    Action action;
    std::optional<StepDownReason> reason;
    Instant next;
  };
  const Case cases[] = {
      {"just renewed: wait for the next renewal", 1s, mine, false, false, Action::stay_leader,
       std::nullopt, k_t0 + 3333ms},
      {"a third of the ttl later: renew", 3333ms, mine, false, false, Action::renew, std::nullopt,
       k_t0 + 6666ms},
      {"a renewal late but before the deadline: renew", 7s, std::nullopt, false, false,
       Action::renew, std::nullopt, k_t0 + 7s + 3333ms},
      {"the renewal failed: step down", 3400ms, mine, true, false, Action::step_down,
       StepDownReason::renewal_failed, k_t0 + 3400ms},
      {"a write was refused: step down", 1s, mine, false, true, Action::step_down,
       StepDownReason::write_refused, k_t0 + 1s},
      {"a newer epoch exists: step down", 1s, row_of("other", 5, false, 10s), false, false,
       Action::step_down, StepDownReason::newer_epoch, k_t0 + 1s},
      {"its epoch, another holder: not its lease, step down", 1s, row_of("other", 4, false, 10s),
       false, false, Action::step_down, StepDownReason::newer_epoch, k_t0 + 1s},
      {"its deadline passed: step down, never renew the old epoch", 8s, mine, false, false,
       Action::step_down, StepDownReason::deadline_passed, k_t0 + 8s},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    LeaseInput in = input(k_t0 + c.after, c.row, me);
    in.renewal_failed = c.renewal_failed;
    in.write_refused = c.write_refused;
    const Decision d = decide(in);
    CHECK(d.action == c.action);
    CHECK(d.reason == c.reason);
    CHECK(d.next_check == c.next);
  }
}

TEST_CASE("lease: a paused leader wakes past its deadline, starts nothing and steps down") {
  FakeMonotonicClock clock(k_t0);
  LeaseState me = leader(9, clock.now());
  CHECK(may_start(me, clock.now(), k_ttl));
  clock.advance(30s); // SIGSTOP, a VM migration, a long GC: the lease was taken over meanwhile
  CHECK_FALSE(may_start(me, clock.now(), k_ttl));
  // Whatever the row it last read says (its own, unexpired, from before).
  const Decision d = decide(input(clock.now(), row_of("me", 9, false, 10s), me));
  CHECK(d.action == Action::step_down);
  CHECK(d.reason == StepDownReason::deadline_passed);
  // As a standby it finds the new leader and stays.
  me = LeaseState{};
  CHECK(decide(input(clock.now(), row_of("other", 10, false, 9s), me)).action ==
        Action::stay_standby);
}

TEST_CASE("lease: on SIGTERM a leader releases its lease, even past its deadline") {
  for (const Millis after : {1000ms, 9000ms}) {
    CAPTURE(after.count());
    LeaseInput in = input(k_t0 + after, row_of("me", 2, false, 5s), leader(2, k_t0));
    in.stopping = true;
    const Decision d = decide(in);
    CHECK(d.action == Action::release);
    CHECK(d.reason == StepDownReason::stopping);
  }
}

TEST_CASE("lease: a renewal cycle on a fake clock keeps the lease and the work going") {
  FakeMonotonicClock clock(k_t0);
  LeaseState me = leader(1, clock.now());
  int renewals = 0;
  for (int step = 0; step < 100; ++step) {
    clock.advance(500ms);
    CHECK(may_start(me, clock.now(), k_ttl));
    const Decision d = decide(input(clock.now(), row_of("me", 1, false, 9s), me));
    REQUIRE(d.action != Action::step_down);
    if (d.action == Action::renew) {
      me.renewal_sent = clock.now(); // the renewal succeeded
      ++renewals;
    }
  }
  CHECK(renewals == 14); // 50 s at one renewal per 3.5 s (every 3333 ms, on 500 ms ticks)
}
