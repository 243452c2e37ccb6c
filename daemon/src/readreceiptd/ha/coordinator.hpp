// The coordinator: drives the lease decision (ha/lease.hpp) against the
// lease's store on the loop's timer, renewing every lease_ttl/3 as leader
// and checking at the same pace as standby, with a growing, jittered delay
// while the store is unavailable, and tells the app when this daemon
// becomes leader (epoch N) or standby (leader is X). It is also the work
// gate: every DingTalk call, Stream acknowledgement and webhook delivery
// asks may_start() before it starts.
//
// Thread-safety: none. Owned and driven by the loop's thread; may_start() is
// called from the same thread.
#pragma once

#include "readreceiptd/ha/gate.hpp"
#include "readreceiptd/ha/lease.hpp"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace rrd::ha {

// The lease operations of the state database (the PostgreSQL store). Each
// may throw store::StoreError (store/store.hpp), among them when the
// database cannot be reached; the next call reconnects.
class LeaseStore {
public:
  virtual ~LeaseStore() = default;
  virtual LeaseRow read_lease() = 0;
  // Takes an expired or released lease with a new epoch (returned); nullopt
  // when another daemon holds it (it won the race).
  virtual std::optional<std::int64_t> acquire_lease(const std::string& holder,
                                                    const std::string& holder_info, Millis ttl) = 0;
  // False when `epoch` is no longer the holder's live lease.
  virtual bool renew_lease(const std::string& holder, std::int64_t epoch, Millis ttl) = 0;
  virtual void release_lease(const std::string& holder, std::int64_t epoch) = 0;
  // From now on every write of the store checks that `epoch` is still the
  // newest, and throws a fencing error once it is not.
  virtual void set_fence(const std::string& holder, std::int64_t epoch) = 0;
};

// What the coordinator tells the app, on the loop's thread, from inside
// pump(), write_refused() or stop().
class CoordinatorObserver {
public:
  virtual ~CoordinatorObserver() = default;
  // The lease is ours with `epoch`; `previous_holder_info` is the last
  // holder's ("" when none).
  virtual void became_leader(std::int64_t epoch, const std::string& previous_holder_info) = 0;
  // Work must stop at once. `leader_info` is the current holder's ("" when
  // unknown or none); `why` is nullopt at start-up as a standby.
  virtual void became_standby(const std::string& leader_info,
                              std::optional<StepDownReason> why) = 0;
  // The store could not be reached; the next try is in `retry_in`.
  virtual void store_unavailable(const std::string& reason, Millis retry_in) = 0;
};

// Who this daemon is: `id` is drawn at each start; `info` shows the host
// name and API address.
struct Identity {
  std::string id;
  std::string info;
};

// While the store is unavailable: k_first_reconnect_delay, doubling up to
// k_max_reconnect_delay, each within ±k_reconnect_jitter.
inline constexpr Millis k_first_reconnect_delay{500};
inline constexpr Millis k_max_reconnect_delay{5'000};
inline constexpr double k_reconnect_jitter = 0.2;
// `failures` >= 1 in a row; `unit` in [0, 1) picks the jitter.
Millis reconnect_delay(int failures, double unit);

class Coordinator final : public WorkGate {
public:
  Coordinator(LeaseStore& store, const MonotonicClock& clock, Identity me, Millis lease_ttl,
              CoordinatorObserver& observer, std::function<double()> random_unit);

  // Runs the lease decision when it is due (at once on the first call).
  void pump();
  // When pump() has something to do next.
  Instant next_check() const { return m_next_check; }

  bool may_start() const override;
  // A write was fenced off: step down at once.
  void write_refused();
  // SIGTERM: a leader releases its lease (so that a standby takes over at
  // once) and stops; nothing is taken after this.
  void stop();

  Role role() const { return m_state.role; }
  std::int64_t epoch() const { return m_state.epoch; }
  // The leader's holder info as last read ("" when none or unknown; ours
  // while we lead).
  const std::string& leader_info() const { return m_leader_info; }
  const Identity& identity() const { return m_me; }

private:
  LeaseInput input(Instant now) const;
  void run_standby(Instant now, std::optional<StepDownReason> why);
  void step_down(Instant now, StepDownReason why, bool read_row);
  void unavailable(Instant now, const std::string& reason);
  void announce_standby(std::optional<StepDownReason> why);
  // Reads the lease row into `in`; when the store fails, stays a standby,
  // backs off and returns false.
  bool read_lease_row(Instant now, std::optional<StepDownReason> why, LeaseInput& in);

  LeaseStore& m_store;
  const MonotonicClock& m_clock;
  Identity m_me;
  Millis m_ttl;
  CoordinatorObserver& m_observer;
  std::function<double()> m_random_unit;
  LeaseState m_state;
  Instant m_next_check{};
  std::string m_leader_info;
  int m_failures = 0;       // store calls failed in a row
  bool m_announced = false; // the first role has been told
  bool m_stopped = false;
};

} // namespace rrd::ha
