#include "readreceiptd/ha/coordinator.hpp"
#include "readreceiptd/store/store.hpp"

#include <doctest/doctest.h>
#include <string>
#include <utility>
#include <vector>

using namespace rrd;
using namespace rrd::ha;
using namespace std::chrono_literals;

namespace {

constexpr Millis k_ttl = 10s;

// A lease row in memory with the database's clock being the test's fake
// clock, and switches for the faults.
class FakeLeaseStore final : public LeaseStore {
public:
  explicit FakeLeaseStore(const FakeMonotonicClock& clock) : m_clock(clock) {}

  LeaseRow read_lease() override {
    fail_if_down("read");
    LeaseRow r;
    r.holder = m_holder;
    r.epoch = m_epoch;
    r.holder_info = m_info;
    r.expired = m_holder.empty() || m_clock.now() >= m_expires;
    r.remaining = r.expired ? 0ms : m_expires - m_clock.now();
    return r;
  }
  std::optional<std::int64_t> acquire_lease(const std::string& holder, const std::string& info,
                                            Millis ttl) override {
    fail_if_down("acquire");
    if (!read_lease().expired) {
      return std::nullopt;
    }
    m_holder = holder;
    m_info = info;
    m_expires = m_clock.now() + ttl;
    return ++m_epoch;
  }
  bool renew_lease(const std::string& holder, std::int64_t epoch, Millis ttl) override {
    fail_if_down("renew");
    ++renewals;
    if (refuse_renewals || holder != m_holder || epoch != m_epoch || read_lease().expired) {
      return false;
    }
    m_expires = m_clock.now() + ttl;
    return true;
  }
  void release_lease(const std::string& holder, std::int64_t epoch) override {
    fail_if_down("release");
    if (holder == m_holder && epoch == m_epoch) {
      m_holder.clear();
      ++releases;
    }
  }
  void set_fence(const std::string& holder, std::int64_t epoch) override {
    fence_holder = holder;
    fence_epoch = epoch;
  }

  // Another daemon takes the lease (as if ours had lapsed).
  void taken_by(const std::string& holder, const std::string& info) {
    m_holder = holder;
    m_info = info;
    m_expires = m_clock.now() + k_ttl;
    ++m_epoch;
  }
  std::int64_t epoch() const { return m_epoch; }
  const std::string& holder() const { return m_holder; }

  bool down = false;
  bool refuse_renewals = false;
  int renewals = 0;
  int releases = 0;
  int calls_while_down = 0;
  std::string fence_holder;
  std::int64_t fence_epoch = 0;

private:
  void fail_if_down(const char* what) {
    if (down) {
      ++calls_while_down;
      throw store::StoreError(std::string("cannot ") + what + " the lease: connection refused");
    }
  }
  const FakeMonotonicClock& m_clock;
  std::string m_holder;
  std::string m_info;
  std::int64_t m_epoch = 0;
  Instant m_expires{};
};

class RecordingObserver final : public CoordinatorObserver {
public:
  void became_leader(std::int64_t epoch, const std::string& previous) override {
    events.push_back("leader " + std::to_string(epoch) + " after '" + previous + "'");
  }
  void became_standby(const std::string& leader, std::optional<StepDownReason> why) override {
    events.push_back("standby, leader '" + leader + "'" +
                     (why ? std::string(" (") + to_string(*why) + ")" : ""));
  }
  void store_unavailable(const std::string& reason, Millis retry_in) override {
    unavailable.push_back(reason);
    retries.push_back(retry_in);
  }
  std::vector<std::string> take() { return std::exchange(events, {}); }

  std::vector<std::string> events;
  std::vector<std::string> unavailable;
  std::vector<Millis> retries;
};

struct Rig {
  FakeMonotonicClock clock;
  FakeLeaseStore store{clock};
  RecordingObserver observer;
  Coordinator coordinator{store, clock,    Identity{"me", "me.host 127.0.0.1:9465"},
                          k_ttl, observer, [] { return 0.5; }};

  // Advances the clock to the coordinator's next check and runs it.
  void step() {
    if (coordinator.next_check() > clock.now()) {
      clock.advance(coordinator.next_check() - clock.now());
    }
    coordinator.pump();
  }
};

} // namespace

TEST_CASE("coordinator: reconnect delays double from 500 ms to 5 s, with jitter") {
  CHECK(reconnect_delay(1, 0.5) == 500ms);
  CHECK(reconnect_delay(2, 0.5) == 1000ms);
  CHECK(reconnect_delay(4, 0.5) == 4000ms);
  CHECK(reconnect_delay(5, 0.5) == 5000ms);
  CHECK(reconnect_delay(50, 0.5) == 5000ms);
  CHECK(reconnect_delay(1, 0.0) == 400ms);
  CHECK(reconnect_delay(50, 0.999) == 5998ms);
}

TEST_CASE("coordinator: takes a free lease at once, fences the store and renews every ttl/3") {
  Rig r;
  CHECK_FALSE(r.coordinator.may_start());
  r.coordinator.pump();
  CHECK(r.observer.take() == std::vector<std::string>{"leader 1 after ''"});
  CHECK(r.coordinator.role() == Role::leader);
  CHECK(r.coordinator.epoch() == 1);
  CHECK(r.store.fence_holder == "me");
  CHECK(r.store.fence_epoch == 1);
  CHECK(r.coordinator.may_start());
  CHECK(r.coordinator.next_check() == r.clock.now() + 3333ms);
  for (int i = 0; i < 30; ++i) {
    r.step();
    CHECK(r.coordinator.may_start());
  }
  CHECK(r.store.renewals == 30);
  CHECK(r.observer.take().empty());
  CHECK(r.store.epoch() == 1);
}

TEST_CASE("coordinator: a standby waits for the other's lease, then takes the next epoch") {
  Rig r;
  r.store.taken_by("other", "other.host 10.0.0.2:9465");
  r.coordinator.pump();
  CHECK(r.observer.take() ==
        std::vector<std::string>{"standby, leader 'other.host 10.0.0.2:9465'"});
  CHECK(r.coordinator.leader_info() == "other.host 10.0.0.2:9465");
  CHECK_FALSE(r.coordinator.may_start());
  // The other keeps nothing alive: its lease lapses after 10 s; the standby
  // notices within one check interval.
  const Instant start = r.clock.now();
  while (r.coordinator.role() == Role::standby) {
    r.step();
    REQUIRE(r.clock.now() - start <= k_ttl + 3333ms);
  }
  CHECK(r.observer.take() == std::vector<std::string>{"leader 2 after 'other.host 10.0.0.2:9465'"});
  CHECK(r.coordinator.epoch() == 2);
  CHECK(r.store.fence_epoch == 2);
}

TEST_CASE("coordinator: a refused renewal steps down at once and names the new leader") {
  Rig r;
  r.coordinator.pump();
  r.observer.take();
  r.store.taken_by("other", "other.host");
  r.step();
  CHECK(r.observer.take() ==
        std::vector<std::string>{"standby, leader 'other.host' (renewal_failed)"});
  CHECK(r.coordinator.role() == Role::standby);
  CHECK_FALSE(r.coordinator.may_start());
}

TEST_CASE("coordinator: a store that goes away stops the work, backs off, and the lease "
          "comes back with the next epoch") {
  Rig r;
  r.coordinator.pump();
  r.observer.take();
  r.store.down = true;
  r.step();
  CHECK(r.observer.take() == std::vector<std::string>{"standby, leader '' (renewal_failed)"});
  CHECK_FALSE(r.coordinator.may_start());
  for (int i = 0; i < 5; ++i) {
    r.step();
  }
  CHECK(r.observer.retries == std::vector<Millis>{500ms, 1000ms, 2000ms, 4000ms, 5000ms, 5000ms});
  CHECK(r.observer.unavailable.back() == "cannot read the lease: connection refused");
  CHECK(r.observer.take().empty()); // told once, not at every retry
  r.store.down = false;
  // Its old lease expired meanwhile (10 s): it takes the next epoch, never
  // renews the old one.
  r.step();
  CHECK(r.observer.take() == std::vector<std::string>{"leader 2 after 'me.host 127.0.0.1:9465'"});
  CHECK(r.coordinator.epoch() == 2);
}

TEST_CASE("coordinator: a standby whose store is down stays standby and retries") {
  Rig r;
  r.store.down = true;
  r.coordinator.pump();
  CHECK(r.observer.take() == std::vector<std::string>{"standby, leader ''"});
  r.step();
  r.step();
  CHECK(r.store.calls_while_down == 3);
  r.store.down = false;
  r.step();
  CHECK(r.observer.take() == std::vector<std::string>{"leader 1 after ''"});
}

TEST_CASE("coordinator: a paused leader starts nothing after its deadline and steps down") {
  Rig r;
  r.coordinator.pump();
  r.observer.take();
  r.clock.advance(8s); // paused past its deadline (8 s), before the lease's expiry (10 s)
  CHECK_FALSE(r.coordinator.may_start());
  const int renewals = r.store.renewals;
  r.coordinator.pump();
  CHECK(r.store.renewals == renewals); // never renews the old epoch
  CHECK(r.coordinator.role() == Role::standby);
  // Its own lease is still live in the row: it waits for it to expire.
  CHECK(r.observer.take() == std::vector<std::string>{"standby, leader '' (deadline_passed)"});
  r.step();
  CHECK(r.observer.take() == std::vector<std::string>{"leader 2 after 'me.host 127.0.0.1:9465'"});

  // Paused long enough for another to take over: it finds the new leader.
  r.store.taken_by("other", "other.host");
  r.clock.advance(1min);
  r.store.taken_by("other", "other.host");
  CHECK_FALSE(r.coordinator.may_start());
  r.coordinator.pump();
  CHECK(r.observer.take() ==
        std::vector<std::string>{"standby, leader 'other.host' (deadline_passed)"});
}

TEST_CASE("coordinator: a refused write steps down at once") {
  Rig r;
  r.coordinator.pump();
  r.observer.take();
  r.store.taken_by("other", "other.host");
  r.coordinator.write_refused();
  CHECK_FALSE(r.coordinator.may_start());
  CHECK(r.observer.take() ==
        std::vector<std::string>{"standby, leader 'other.host' (write_refused)"});
}

TEST_CASE("coordinator: on stop a leader releases its lease so that a standby takes over") {
  Rig r;
  r.coordinator.pump();
  r.observer.take();
  r.coordinator.stop();
  CHECK(r.store.releases == 1);
  CHECK(r.store.holder().empty());
  CHECK_FALSE(r.coordinator.may_start());
  CHECK(r.observer.take() == std::vector<std::string>{"standby, leader '' (stopping)"});
  r.clock.advance(1min);
  r.coordinator.pump(); // nothing is taken after stop
  CHECK(r.coordinator.role() == Role::standby);

  // The other daemon sees the released row and takes the next epoch at once.
  RecordingObserver observer2;
  Coordinator other(r.store, r.clock, Identity{"other", "other.host"}, k_ttl, observer2,
                    [] { return 0.5; });
  other.pump();
  CHECK(observer2.take() == std::vector<std::string>{"leader 2 after 'me.host 127.0.0.1:9465'"});

  // A stopping standby releases nothing.
  Rig s;
  s.store.taken_by("x", "x.host");
  s.coordinator.pump();
  s.coordinator.stop();
  CHECK(s.store.releases == 0);
}

TEST_CASE("coordinator: two daemons on one store, exactly one leads at any time") {
  FakeMonotonicClock clock;
  FakeLeaseStore store(clock);
  RecordingObserver oa;
  RecordingObserver ob;
  Coordinator a(store, clock, Identity{"a", "a.host"}, k_ttl, oa, [] { return 0.5; });
  Coordinator b(store, clock, Identity{"b", "b.host"}, k_ttl, ob, [] { return 0.5; });
  for (int i = 0; i < 200; ++i) {
    clock.advance(250ms);
    a.pump();
    b.pump();
    CHECK(int(a.may_start()) + int(b.may_start()) <= 1);
    if (i == 100) {
      a.stop(); // the leader stops; b takes over within a check
    }
  }
  CHECK(oa.events.front() == "leader 1 after ''");
  CHECK(ob.events ==
        std::vector<std::string>{"standby, leader 'a.host'", "leader 2 after 'a.host'"});
  CHECK(b.may_start());
}
