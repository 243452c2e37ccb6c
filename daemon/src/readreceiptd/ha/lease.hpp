// The leadership lease's decisions (SPEC section 12), a pure function of the
// monotonic clock, the lease row as last read and this daemon's own state:
// renew, take over, step down, stay standby; and the leader's own deadline,
// after which it may start no work. No I/O, no clock reads: the coordinator
// (ha/coordinator.hpp) reads the clock and the store and acts on the
// decision. Plain values; thread-compatible.
#pragma once

#include "readreceiptd/common/clock.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace rrd::ha {

// A point on the monotonic clock (never the wall clock: a leader's deadline
// must not move when NTP steps the time).
using Instant = std::chrono::time_point<std::chrono::steady_clock, Millis>;

// Where the coordinator reads the monotonic clock. Abstract so that tests
// advance a fake one by hand. RealMonotonicClock is thread-safe; the fake is
// not.
class MonotonicClock {
public:
  virtual ~MonotonicClock() = default;
  virtual Instant now() const = 0;
};

class RealMonotonicClock final : public MonotonicClock {
public:
  Instant now() const override;
};

class FakeMonotonicClock final : public MonotonicClock {
public:
  explicit FakeMonotonicClock(Instant start = Instant{Millis{1'000'000}}) : m_now(start) {}
  Instant now() const override { return m_now; }
  void advance(Millis d) { m_now += d; }

private:
  Instant m_now;
};

// The lease row as the store reads it. Expiry is judged by the database's
// clock, so that no daemon's clock decides for another.
struct LeaseRow {
  std::string holder;      // "" when nobody has held it, or it was released
  std::int64_t epoch = 0;  // the last epoch granted (0: never)
  std::string holder_info; // the holder's host name and API address
  bool expired = true;     // by the database's clock
  Millis remaining{0};     // until it expires, by the database's clock
  bool operator==(const LeaseRow&) const = default;
};

enum class Role { standby, leader };

// Why a leader stopped leading.
enum class StepDownReason {
  renewal_failed,  // the renewal was refused or did not reach the database
  deadline_passed, // its own deadline passed (it was paused, or renewals hung)
  newer_epoch,     // the row shows an epoch newer than its own (or its own, held by another)
  write_refused,   // a write was fenced off
  stopping,        // SIGTERM: it released the lease
};
const char* to_string(StepDownReason r);

// This daemon's side of the lease.
struct LeaseState {
  Role role = Role::standby;
  std::int64_t epoch = 0; // leader: its epoch
  // Leader: when it SENT the last renewal (or acquisition) that succeeded.
  Instant renewal_sent{};
  bool operator==(const LeaseState&) const = default;
};

// The leader's own deadline ends this far short of lease_ttl after it sent
// its last successful renewal: lease_ttl / k_deadline_margin_divisor (2 s
// of the default 10 s, 400 ms of the shortest, 2 s). The database's expiry
// counts from when it ran the renewal, which is after it was sent, so the
// deadline already comes before the expiry by the renewal's travel time;
// the margin is for what happens after "may I start": a DingTalk call, a
// Stream acknowledgement or a delivery started just before the deadline
// still has that long to leave the machine before a standby can take over,
// and the two machines' clocks may run at slightly different rates. With a
// renewal every lease_ttl/3, the deadline (at 4/5 of lease_ttl) lies after
// the next renewal is due, so one slow renewal does not stop the work.
inline constexpr int k_deadline_margin_divisor = 5;
// Renewals (and a standby's checks) every lease_ttl / k_renewals_per_ttl.
inline constexpr int k_renewals_per_ttl = 3;

Millis renew_interval(Millis lease_ttl);
Millis deadline_margin(Millis lease_ttl);
// REQUIRES: s.role == Role::leader
Instant deadline(const LeaseState& s, Millis lease_ttl);
// Whether work (a DingTalk call, a Stream acknowledgement, a webhook
// delivery) may start now: a leader before its deadline.
bool may_start(const LeaseState& s, Instant now, Millis lease_ttl);

enum class Action {
  stay_standby, // another holds a live lease (or we cannot know): check again later
  take_over,    // acquire the lease with the next epoch
  renew,        // renew our lease (same epoch)
  stay_leader,  // nothing to do until next_check
  step_down,    // stop all work at once, become a standby
  release,      // stopping: give the lease up so that a standby takes over at once
};
const char* to_string(Action a);

struct LeaseInput {
  Instant now;
  // The row as last read; nullopt when it could not be read.
  std::optional<LeaseRow> row;
  std::string my_id;
  LeaseState state;
  Millis lease_ttl{10'000};
  bool renewal_failed = false; // the last renewal was refused or failed
  bool write_refused = false;  // a write was fenced off since the last decision
  bool stopping = false;       // SIGTERM / SIGINT
};

struct Decision {
  Action action = Action::stay_standby;
  std::optional<StepDownReason> reason; // step_down, release
  std::int64_t epoch = 0;               // take_over: the epoch expected (the row's + 1)
  Instant next_check{};                 // when to decide again (absent new facts)
  bool operator==(const Decision&) const = default;
};

Decision decide(const LeaseInput& in);

} // namespace rrd::ha
