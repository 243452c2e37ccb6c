#include "readreceiptd/scheduler/due_queue.hpp"
#include "readreceiptd/scheduler/rate_limiter.hpp"
#include "readreceiptd/scheduler/schedule.hpp"
#include "readreceiptd/scheduler/scheduler.hpp"

#include <algorithm>
#include <cmath>
#include <doctest/doctest.h>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

using namespace rrd;
using scheduler::DueQueue;
using scheduler::RateLimiter;

namespace {

constexpr Millis k_s{1'000};
const TimePoint k_t0 = from_unix_ms(1'795'600'800'000);

// The largest number of grants in any window [t, t + 1 s), by two pointers.
std::size_t max_in_any_window(const std::vector<TimePoint>& grants) {
  std::size_t best = 0;
  std::size_t j = 0;
  for (std::size_t i = 0; i < grants.size(); ++i) {
    if (j < i) {
      j = i;
    }
    while (j < grants.size() && grants[j] < grants[i] + RateLimiter::k_window) {
      ++j;
    }
    best = std::max(best, j - i);
  }
  return best;
}

std::size_t cap_for(double rps) {
  return std::max<std::size_t>(1, static_cast<std::size_t>(std::floor(rps)));
}

} // namespace

// ---------------------------------------------------------------- schedule

TEST_CASE("call reservations double while used up within a second, to a second's worth") {
  using scheduler::k_call_reservation;
  using scheduler::next_call_reservation;
  const Millis fast{200};
  // The first, and any after one that lasted a second or more: the least.
  CHECK(next_call_reservation(10, std::nullopt, 20) == k_call_reservation);
  CHECK(next_call_reservation(640, Millis{1'000}, 20'000) == k_call_reservation);
  CHECK(next_call_reservation(640, Millis{5'000}, 20'000) == k_call_reservation);
  // Used up quickly: twice as many, up to a second at the configured rate.
  CHECK(next_call_reservation(10, Millis{999}, 20) == 20);
  CHECK(next_call_reservation(20, fast, 20) == 20);
  CHECK(next_call_reservation(20, fast, 25.5) == 26);
  std::int64_t r = k_call_reservation;
  std::vector<std::int64_t> sizes;
  for (int i = 0; i < 12; ++i) {
    r = next_call_reservation(r, fast, 1'000);
    sizes.push_back(r);
  }
  CHECK(sizes == std::vector<std::int64_t>{20, 40, 80, 160, 320, 640, 1'000, 1'000, 1'000, 1'000,
                                           1'000, 1'000});
  // A rate below the least never makes it smaller than the least.
  CHECK(next_call_reservation(10, fast, 0.5) == k_call_reservation);
  CHECK(next_call_reservation(10, fast, 0) == k_call_reservation);
}

TEST_CASE("backoff_delay doubles from the base and respects the cap") {
  using scheduler::backoff_delay;
  const Millis cap{60'000};
  CHECK(backoff_delay(0, cap, 0.5) == scheduler::k_backoff_base);
  CHECK(backoff_delay(1, cap, 0.5) == 2 * scheduler::k_backoff_base);
  CHECK(backoff_delay(5, cap, 0.5) == 32 * scheduler::k_backoff_base);
  CHECK(backoff_delay(6, cap, 0.5) == cap); // 64 s
  CHECK(backoff_delay(std::numeric_limits<int>::max(), cap, 0.5) == cap);
  CHECK(backoff_delay(-3, cap, 0.5) == scheduler::k_backoff_base);
  CHECK(backoff_delay(0, Millis{0}, 0.5) == Millis{0});
  CHECK(backoff_delay(0, Millis{-5}, 0.5) == Millis{0});
  CHECK(backoff_delay(3, cap, 0.5, Millis{100}) == Millis{800});
}

TEST_CASE("backoff_delay jitter spreads ±20% and clamps bad jitter values") {
  using scheduler::backoff_delay;
  const Millis cap{600'000};
  CHECK(backoff_delay(2, cap, 0.0) == Millis{3'200});
  CHECK(backoff_delay(2, cap, 0.25) == Millis{3'600});
  CHECK(backoff_delay(2, cap, 0.75) == Millis{4'400});
  CHECK(backoff_delay(2, cap, 1.0) == Millis{4'800});
  CHECK(backoff_delay(2, cap, 7.0) == Millis{4'800});
  CHECK(backoff_delay(2, cap, -1.0) == Millis{3'200});
  CHECK(backoff_delay(2, cap, std::nan("")) == Millis{3'200});
}

TEST_CASE("interval_for_age with open-ended and empty schedules") {
  using scheduler::interval_for_age;
  const std::vector<config::ScheduleStep> single{{std::nullopt, Millis{5'000}}};
  CHECK(interval_for_age(single, Millis{0}) == Millis{5'000});
  CHECK(interval_for_age(single, Millis{1'000'000'000}) == Millis{5'000});
  const std::vector<config::ScheduleStep> two{{Millis{1'000}, Millis{100}},
                                              {std::nullopt, Millis{200}}};
  CHECK(interval_for_age(two, Millis{999}) == Millis{100});
  CHECK(interval_for_age(two, Millis{1'000}) == Millis{200});
  CHECK(interval_for_age({}, Millis{0}) == scheduler::k_fallback_interval);
  CHECK(scheduler::slowest_interval({}) == scheduler::k_fallback_interval);
  CHECK(scheduler::slowest_interval(two) == Millis{200});
}

// ------------------------------------------------------------ rate limiter

TEST_CASE("rate limiter: never more than the cap in ANY 1 s window, near the cap under load") {
  const std::vector<double> rates{0.2, 0.3,  0.5,  0.99, 1.0,  1.5,   2.0,  3.7,
                                  5.0, 10.0, 19.9, 20.0, 33.3, 100.0, 250.0};
  std::mt19937_64 rng(2024);
  for (const double rps : rates) {
    CAPTURE(rps);
    for (const double demand : {0.9, 0.05, 0.002}) { // chance of an attempt each ms
      CAPTURE(demand);
      RateLimiter limiter(rps);
      std::bernoulli_distribution attempt(demand);
      std::vector<TimePoint> grants;
      for (Millis t{0}; t < Millis{60'000}; t += Millis{1}) {
        // Sometimes several calls are tried in the same millisecond.
        const int tries = attempt(rng) ? 1 + static_cast<int>(rng() % 3) : 0;
        for (int k = 0; k < tries; ++k) {
          if (limiter.try_acquire(k_t0 + t)) {
            grants.push_back(k_t0 + t);
          }
        }
      }
      CHECK(max_in_any_window(grants) <= cap_for(rps));
      if (rps < 1.0) {
        for (std::size_t i = 1; i < grants.size(); ++i) {
          CHECK((grants[i] - grants[i - 1]).count() >= std::ceil(1000.0 / rps));
        }
      }
      if (demand >= 0.9) { // high demand: the achieved rate is close to the cap
        // (less the share the arrival margin keeps in reserve, above 1/s)
        const double per_second =
            std::min(rps, static_cast<double>(cap_for(rps)) *
                              static_cast<double>(RateLimiter::k_window.count()) /
                              static_cast<double>(RateLimiter::k_counted_window.count()));
        CHECK(static_cast<double>(grants.size()) >= 0.95 * 60.0 * per_second - 1.0);
      }
    }
  }
}

TEST_CASE("rate limiter: next_allowed is exactly when try_acquire succeeds again") {
  std::mt19937_64 rng(99);
  for (const double rps : {0.5, 1.0, 3.0, 20.0}) {
    CAPTURE(rps);
    RateLimiter limiter(rps);
    TimePoint now = k_t0;
    for (int i = 0; i < 500; ++i) {
      now += Millis{static_cast<Millis::rep>(rng() % 300)};
      if (rng() % 50 == 0) {
        limiter.on_throttled(now);
      }
      const TimePoint next = limiter.next_allowed(now);
      REQUIRE(next >= now);
      if (next > now) {
        CHECK_FALSE(limiter.try_acquire(next - Millis{1}));
      }
      CHECK(limiter.try_acquire(next));
      now = next;
    }
  }
}

TEST_CASE("rate limiter: a throttling answer halves the rate and pauses every call for 1 s") {
  RateLimiter limiter(20);
  CHECK(limiter.effective_rate() == 20.0);
  CHECK(limiter.capacity() == 20);
  limiter.on_throttled(k_t0);
  CHECK(limiter.effective_rate() == 10.0);
  CHECK(limiter.capacity() == 10);
  CHECK(limiter.paused(k_t0));
  CHECK_FALSE(limiter.try_acquire(k_t0));
  CHECK(limiter.next_allowed(k_t0) == k_t0 + RateLimiter::k_throttle_pause);
  CHECK_FALSE(limiter.try_acquire(k_t0 + RateLimiter::k_throttle_pause - Millis{1}));
  CHECK_FALSE(limiter.paused(k_t0 + RateLimiter::k_throttle_pause));
  const TimePoint after = k_t0 + RateLimiter::k_throttle_pause;
  int granted = 0;
  for (Millis t{0}; t < RateLimiter::k_counted_window; t += Millis{1}) {
    granted += limiter.try_acquire(after + t) ? 1 : 0;
  }
  CHECK(granted == 10); // the halved capacity
}

TEST_CASE("rate limiter: throttles from one episode halve once, later ones halve again") {
  RateLimiter limiter(20);
  limiter.on_throttled(k_t0);
  limiter.on_throttled(k_t0 + Millis{10}); // calls that were already in flight
  limiter.on_throttled(k_t0 + Millis{500});
  CHECK(limiter.effective_rate() == 10.0);
  CHECK(limiter.next_allowed(k_t0 + Millis{500}) == k_t0 + Millis{1'500}); // pause extended
  limiter.on_throttled(k_t0 + RateLimiter::k_decrease_hold);
  CHECK(limiter.effective_rate() == 5.0);
}

TEST_CASE("rate limiter: the last throttling answer is remembered, extensions of an episode "
          "too") {
  RateLimiter limiter(20);
  CHECK_FALSE(limiter.last_throttled().has_value());
  limiter.on_throttled(k_t0);
  CHECK(limiter.last_throttled() == k_t0);
  limiter.on_throttled(k_t0 + Millis{10}); // same episode: no second halving, but the latest
  CHECK(limiter.last_throttled() == k_t0 + Millis{10});
  limiter.on_success(k_t0 + Millis{5'000});
  CHECK(limiter.last_throttled() == k_t0 + Millis{10});
}

TEST_CASE("rate limiter: the rate never falls below 1/s, or the configured rate if lower") {
  RateLimiter limiter(20);
  TimePoint t = k_t0;
  for (int i = 0; i < 20; ++i) {
    limiter.on_throttled(t);
    t += 2 * k_s;
  }
  CHECK(limiter.effective_rate() == RateLimiter::k_min_rate);
  CHECK(limiter.capacity() == 1);

  RateLimiter slow(0.5);
  slow.on_throttled(k_t0);
  CHECK(slow.effective_rate() == 0.5);
}

TEST_CASE("rate limiter: successes recover the rate gradually up to the configured rate") {
  RateLimiter limiter(20);
  limiter.on_throttled(k_t0);
  REQUIRE(limiter.effective_rate() == 10.0);
  limiter.on_success(k_t0 + k_s); // +10% of 20 per second
  CHECK(limiter.effective_rate() == doctest::Approx(12.0));
  limiter.on_success(k_t0 + 2 * k_s);
  CHECK(limiter.effective_rate() == doctest::Approx(14.0));
  limiter.on_success(k_t0 + 2 * k_s + Millis{500});
  CHECK(limiter.effective_rate() == doctest::Approx(15.0));
  limiter.on_success(k_t0 + 60 * k_s);
  CHECK(limiter.effective_rate() == 20.0); // never above the configured rate
  limiter.on_success(k_t0 + 120 * k_s);
  CHECK(limiter.effective_rate() == 20.0);
}

TEST_CASE("rate limiter: with random throttles the configured cap and the pauses hold") {
  std::mt19937_64 rng(5);
  for (const double rps : {2.0, 20.0, 50.0}) {
    CAPTURE(rps);
    RateLimiter limiter(rps);
    std::vector<TimePoint> grants;
    std::vector<TimePoint> throttles;
    for (Millis t{0}; t < Millis{120'000}; t += Millis{1}) {
      const TimePoint now = k_t0 + t;
      if (rng() % 3 == 0 && limiter.try_acquire(now)) {
        grants.push_back(now);
        if (rng() % 40 == 0) {
          limiter.on_throttled(now);
          throttles.push_back(now);
        } else {
          limiter.on_success(now);
        }
      }
    }
    CHECK(max_in_any_window(grants) <= cap_for(rps));
    REQUIRE_FALSE(throttles.empty());
    for (const auto th : throttles) {
      // No grant in the pause after a throttle.
      const auto it = std::upper_bound(grants.begin(), grants.end(), th);
      if (it != grants.end()) {
        CHECK(*it >= th + RateLimiter::k_throttle_pause);
      }
    }
    CHECK(limiter.effective_rate() <= rps);
    CHECK(limiter.effective_rate() >= std::min(rps, RateLimiter::k_min_rate));
  }
}

TEST_CASE("rate limiter: time going backwards neither stalls nor lets a burst through") {
  RateLimiter limiter(5); // one grant every 200 ms, five per window
  for (int i = 0; i < 5; ++i) {
    REQUIRE(limiter.try_acquire(k_t0 + i * Millis{200}));
  }
  const TimePoint last = k_t0 + Millis{800};
  CHECK(limiter.next_allowed(last) > last);
  const TimePoint back = last - std::chrono::hours{1};
  // The window is still full just after the step back: the first of the
  // five grants (800 ms before `back`, shifted) leaves it first...
  CHECK(limiter.next_allowed(back) == back - Millis{800} + RateLimiter::k_counted_window);
  CHECK_FALSE(limiter.try_acquire(back));
  CHECK_FALSE(limiter.try_acquire(back + Millis{299}));
  // ...and the window frees up grant by grant, not an hour later.
  int granted = 0;
  for (Millis t{0}; t <= Millis{1'100}; t += Millis{1}) {
    granted += limiter.try_acquire(back + t) ? 1 : 0;
  }
  CHECK(granted == 5);

  // A pause in progress is shifted too: it ends one pause after the first
  // time seen after the step back.
  RateLimiter paused(5);
  paused.on_throttled(k_t0);
  const TimePoint back2 = k_t0 - std::chrono::hours{2};
  CHECK(paused.paused(back2));
  CHECK_FALSE(paused.try_acquire(back2));
  CHECK(paused.next_allowed(back2) == back2 + RateLimiter::k_throttle_pause);
  CHECK_FALSE(paused.try_acquire(back2 + RateLimiter::k_throttle_pause - Millis{1}));
  CHECK(paused.try_acquire(back2 + RateLimiter::k_throttle_pause));
}

TEST_CASE("rate limiter: a non-positive configured rate is raised to the minimum") {
  RateLimiter limiter(0);
  CHECK(limiter.configured_rate() == RateLimiter::k_min_configured_rate);
  CHECK(limiter.try_acquire(k_t0));
  CHECK_FALSE(limiter.try_acquire(k_t0 + 99 * k_s));
  CHECK(limiter.try_acquire(k_t0 + 100 * k_s));
}

// --------------------------------------------------------------- due queue

TEST_CASE("due queue pops the longest-overdue first, ties by key") {
  DueQueue q;
  CHECK(q.empty());
  CHECK_FALSE(q.next_due().has_value());
  CHECK_FALSE(q.pop_due(k_t0).has_value());
  q.upsert("c", k_t0 + Millis{20});
  q.upsert("b", k_t0 + Millis{10});
  q.upsert("a", k_t0 + Millis{20});
  q.upsert("z", k_t0 + Millis{5});
  CHECK(q.size() == 4);
  CHECK(q.next_due() == k_t0 + Millis{5});
  CHECK_FALSE(q.pop_due(k_t0 + Millis{4}).has_value());

  const TimePoint now = k_t0 + Millis{100};
  std::vector<std::string> order;
  while (auto e = q.pop_due(now)) {
    order.push_back(e->first);
  }
  CHECK(order == std::vector<std::string>{"z", "b", "a", "c"});
  CHECK(q.empty());
}

TEST_CASE("due queue: pop_due returns the due time and only what is due") {
  DueQueue q;
  q.upsert("later", k_t0 + k_s);
  q.upsert("now", k_t0);
  const auto e = q.pop_due(k_t0);
  REQUIRE(e.has_value());
  CHECK(e->first == "now");
  CHECK(e->second == k_t0);
  CHECK_FALSE(q.pop_due(k_t0).has_value());
  CHECK(q.size() == 1);
  CHECK(q.contains("later"));
  CHECK_FALSE(q.contains("now"));
}

TEST_CASE("due queue: upsert moves a key, erase removes it") {
  DueQueue q;
  q.upsert("a", k_t0 + Millis{10});
  q.upsert("b", k_t0 + Millis{20});
  q.upsert("a", k_t0 + Millis{30}); // moved behind b
  CHECK(q.size() == 2);
  CHECK(q.due_time("a") == k_t0 + Millis{30});
  CHECK(q.next_due() == k_t0 + Millis{20});
  q.upsert("a", k_t0 + Millis{30}); // same time: no change
  CHECK(q.size() == 2);
  CHECK(q.erase("b"));
  CHECK_FALSE(q.erase("b"));
  CHECK_FALSE(q.due_time("b").has_value());
  CHECK(q.next_due() == k_t0 + Millis{30});
  auto e = q.pop_due(k_t0 + Millis{30});
  REQUIRE(e.has_value());
  CHECK(e->first == "a");
  q.upsert("c", k_t0);
  q.clear();
  CHECK(q.empty());
  CHECK_FALSE(q.next_due().has_value());
}

TEST_CASE("due queue: reserve keeps what is queued, and its order") {
  DueQueue q;
  q.upsert("b", k_t0 + Millis{10});
  q.upsert("a", k_t0 + Millis{10});
  q.reserve(1'000);
  CHECK(q.size() == 2);
  for (int i = 0; i < 1'000; ++i) {
    q.upsert("m-" + std::to_string(i), k_t0 + Millis{20});
  }
  q.reserve(0); // never drops anything
  CHECK(q.size() == 1'002);
  CHECK(q.pop_due(k_t0 + Millis{10})->first == "a");
  CHECK(q.pop_due(k_t0 + Millis{10})->first == "b");
  CHECK_FALSE(q.pop_due(k_t0 + Millis{10}).has_value());
  CHECK(q.due_time("m-999") == k_t0 + Millis{20});
}

TEST_CASE("due queue: no starvation while new messages keep arriving") {
  DueQueue q;
  // One message has waited since t0; every millisecond three new ones become
  // due, and the loop can poll only one per millisecond.
  q.upsert("old-message", k_t0);
  TimePoint now = k_t0 + k_s;
  int n = 0;
  for (int i = 0; i < 5; ++i) {
    q.upsert("new-" + std::to_string(n++), now);
  }
  auto first = q.pop_due(now);
  REQUIRE(first.has_value());
  CHECK(first->first == "old-message");

  // Under sustained overload every message is popped in due order, so the
  // wait of each is bounded by the backlog ahead of it when it became due.
  TimePoint last_popped_due{};
  for (int step = 0; step < 2'000; ++step) {
    now += Millis{1};
    for (int k = 0; k < 3; ++k) {
      const std::string key = "m-" + std::to_string(n++);
      q.upsert(key, now);
    }
    auto e = q.pop_due(now);
    REQUIRE(e.has_value());
    CHECK(e->second >= last_popped_due); // FIFO by due time
    last_popped_due = e->second;
  }
}

TEST_CASE("due queue agrees with a simple model under random operations") {
  std::mt19937_64 rng(77);
  DueQueue q;
  std::map<std::string, TimePoint> model;
  for (int i = 0; i < 20'000; ++i) {
    // Long keys, like real processQueryKeys, and many rehashes.
    const std::string key =
        "Kna29pdJznx1ghavbumkQKwDzgfxZLapw55G7x0Q=" + std::to_string(rng() % 3'000);
    const TimePoint t = k_t0 + Millis{static_cast<Millis::rep>(rng() % 1'000)};
    switch (rng() % 4) {
    case 0:
    case 1:
      q.upsert(key, t);
      model[key] = t;
      break;
    case 2:
      CHECK(q.erase(key) == (model.erase(key) == 1));
      break;
    default: {
      const auto got = q.pop_due(t);
      std::optional<std::pair<std::string, TimePoint>> want;
      for (const auto& [k, due] : model) {
        if (due <= t && (!want || due < want->second)) { // map order: ties by key
          want = std::make_pair(k, due);
        }
      }
      CHECK(got == want);
      if (want) {
        model.erase(want->first);
      }
    }
    }
    REQUIRE(q.size() == model.size());
  }
  std::optional<TimePoint> min_due;
  for (const auto& [k, due] : model) {
    if (!min_due || due < *min_due) {
      min_due = due;
    }
  }
  CHECK(q.next_due() == min_due);
}
