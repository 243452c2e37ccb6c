#include "readreceiptd/ha/coordinator.hpp"

#include "readreceiptd/store/store.hpp"

#include <algorithm>
#include <cmath>

namespace rrd::ha {

Millis reconnect_delay(int failures, double unit) {
  double base = static_cast<double>(k_first_reconnect_delay.count());
  for (int i = 1; i < failures && base < static_cast<double>(k_max_reconnect_delay.count()); ++i) {
    base *= 2;
  }
  base = std::min(base, static_cast<double>(k_max_reconnect_delay.count()));
  const double factor = 1.0 - k_reconnect_jitter + 2 * k_reconnect_jitter * unit;
  return Millis{static_cast<std::int64_t>(std::llround(base * factor))};
}

Coordinator::Coordinator(LeaseStore& store, const MonotonicClock& clock, Identity me,
                         Millis lease_ttl, CoordinatorObserver& observer,
                         std::function<double()> random_unit)
    : m_store(store), m_clock(clock), m_me(std::move(me)), m_ttl(lease_ttl), m_observer(observer),
      m_random_unit(std::move(random_unit)), m_next_check(clock.now()) {}

bool Coordinator::may_start() const {
  return ha::may_start(m_state, m_clock.now(), m_ttl);
}

LeaseInput Coordinator::input(Instant now) const {
  LeaseInput in;
  in.now = now;
  in.my_id = m_me.id;
  in.state = m_state;
  in.lease_ttl = m_ttl;
  return in;
}

void Coordinator::pump() {
  const Instant now = m_clock.now();
  if (m_stopped || now < m_next_check) {
    return;
  }
  if (m_state.role == Role::standby) {
    run_standby(now, std::nullopt);
    return;
  }
  Decision d = decide(input(now));
  if (d.action == Action::renew) {
    LeaseInput after = input(now);
    try {
      if (m_store.renew_lease(m_me.id, m_state.epoch, m_ttl)) {
        m_state.renewal_sent = now; // when it was sent: the deadline counts from here
        m_failures = 0;
        m_next_check = d.next_check;
        return;
      }
    } catch (const store::StoreError& e) {
      // Stop work first, then find out when the store is back.
      after.renewal_failed = true;
      step_down(now, *decide(after).reason, false);
      unavailable(now, e.what());
      return;
    }
    after.renewal_failed = true;
    d = decide(after);
  }
  if (d.action == Action::step_down) {
    step_down(now, *d.reason, true);
    return;
  }
  m_next_check = d.next_check;
}

void Coordinator::run_standby(Instant now, std::optional<StepDownReason> why) {
  LeaseInput in = input(now);
  if (!read_lease_row(now, why, in)) {
    return;
  }
  m_failures = 0;
  const Decision d = decide(in);
  if (d.action == Action::take_over) {
    const std::string previous = in.row->holder_info;
    try {
      if (const auto epoch = m_store.acquire_lease(m_me.id, m_me.info, m_ttl)) {
        m_store.set_fence(m_me.id, *epoch);
        m_state = LeaseState{Role::leader, *epoch, now};
        m_leader_info = m_me.info;
        m_announced = true;
        m_next_check = now + renew_interval(m_ttl);
        m_observer.became_leader(*epoch, previous);
        return;
      }
    } catch (const store::StoreError& e) {
      announce_standby(why);
      unavailable(now, e.what());
      return;
    }
    // Another daemon won the race: read again to learn who.
    in.row = std::nullopt;
    if (!read_lease_row(now, why, in)) {
      return;
    }
  }
  const std::string info =
      in.row && !in.row->holder.empty() && in.row->holder != m_me.id ? in.row->holder_info : "";
  const bool changed = info != m_leader_info;
  m_leader_info = info;
  if (!m_announced || why || changed) {
    m_announced = true;
    m_observer.became_standby(m_leader_info, why);
  }
  m_next_check = d.action == Action::take_over ? now + renew_interval(m_ttl) : d.next_check;
}

bool Coordinator::read_lease_row(Instant now, std::optional<StepDownReason> why, LeaseInput& in) {
  try {
    in.row = m_store.read_lease();
    return true;
  } catch (const store::StoreError& e) {
    announce_standby(why);
    unavailable(now, e.what());
    return false;
  }
}

void Coordinator::announce_standby(std::optional<StepDownReason> why) {
  if (!m_announced) {
    m_announced = true;
    m_leader_info.clear();
    m_observer.became_standby(m_leader_info, why);
  }
}

void Coordinator::step_down(Instant now, StepDownReason why, bool read_row) {
  m_state = LeaseState{};
  m_leader_info.clear();
  m_announced = false; // the step down is told, with or without the new leader
  if (read_row) {
    run_standby(now, why); // tells who leads now, if anyone
  } else {
    announce_standby(why);
  }
}

void Coordinator::unavailable(Instant now, const std::string& reason) {
  ++m_failures;
  const Millis delay = reconnect_delay(m_failures, m_random_unit());
  m_next_check = now + delay;
  m_observer.store_unavailable(reason, delay);
}

void Coordinator::write_refused() {
  if (m_stopped || m_state.role != Role::leader) {
    return;
  }
  LeaseInput in = input(m_clock.now());
  in.write_refused = true;
  step_down(in.now, *decide(in).reason, true);
}

void Coordinator::stop() {
  if (m_stopped) {
    return;
  }
  m_stopped = true;
  if (m_state.role != Role::leader) {
    return;
  }
  LeaseInput in = input(m_clock.now());
  in.stopping = true;
  const Decision d = decide(in);
  const std::int64_t epoch = m_state.epoch;
  m_state = LeaseState{};
  if (d.action == Action::release) {
    try {
      m_store.release_lease(m_me.id, epoch);
    } catch (const store::StoreError& e) {
      // The lease expires by itself, lease_ttl after the last renewal.
      m_observer.store_unavailable(e.what(), Millis{0});
    }
  }
  m_observer.became_standby("", StepDownReason::stopping);
}

} // namespace rrd::ha
