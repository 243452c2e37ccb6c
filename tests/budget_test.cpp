// The monthly call budget's arithmetic: months in UTC+8, projected calls, the
// stretch factor, and a month simulated on a fake clock.
#include "readreceiptd/scheduler/budget.hpp"

#include <doctest/doctest.h>
#include <map>
#include <string>

using namespace rrd;
using namespace rrd::scheduler;

namespace {

TimePoint at(const std::string& rfc3339) {
  TimePoint t;
  REQUIRE(parse_rfc3339(rfc3339, t));
  return t;
}

constexpr Millis k_minute{60'000};
constexpr Millis k_hour{3'600'000};

const std::vector<config::ScheduleStep> k_default = config::Poll{}.schedule;

} // namespace

TEST_CASE("budget: months run in Beijing time") {
  const Month dec = month_of(at("2026-11-30T16:00:00Z")); // 00:00 on 1 December, UTC+8
  CHECK(dec.name == "2026-12");
  CHECK(dec.start == at("2026-11-30T16:00:00Z"));
  CHECK(dec.end == at("2026-12-31T16:00:00Z"));
  const Month nov = month_of(at("2026-11-30T15:59:59.999Z"));
  CHECK(nov.name == "2026-11");
  CHECK(nov.end == dec.start);
  CHECK(month_of(at("2026-12-31T16:00:00Z")).name == "2027-01"); // the year turns
  CHECK(month_of(at("2026-12-31T15:59:59Z")).name == "2026-12");
  CHECK(month_of(at("2028-02-10T00:00:00Z")).end == at("2028-02-29T16:00:00Z")); // a leap year
  CHECK(month_of(at("2027-02-10T00:00:00Z")).end == at("2027-02-28T16:00:00Z"));
}

TEST_CASE("budget: the calls a schedule makes over a span of a message's life") {
  // The default schedule over a whole life of 72 h: 40 + 110 + 132 + 48.
  CHECK(projected_calls(k_default, Millis{0}, 72 * k_hour) == doctest::Approx(330));
  // A span inside one step, and across steps.
  CHECK(projected_calls(k_default, Millis{0}, 5 * k_minute) == doctest::Approx(20));
  CHECK(projected_calls(k_default, 5 * k_minute, 15 * k_minute) == doctest::Approx(20 + 5));
  // Pages and the stretch.
  CHECK(projected_calls(k_default, Millis{0}, 10 * k_minute, 2.0) == doctest::Approx(80));
  CHECK(projected_calls(k_default, Millis{0}, 10 * k_minute, 1.0, 4.0) == doctest::Approx(10));
  // Nothing for an empty span; a negative age counts in the first step.
  CHECK(projected_calls(k_default, k_hour, k_hour) == 0.0);
  CHECK(projected_calls(k_default, 2 * k_hour, k_hour) == 0.0);
  CHECK(projected_calls(k_default, -k_minute, Millis{0}) == doctest::Approx(4));
  CHECK(projected_calls({}, Millis{0}, k_hour) == 0.0);
}

TEST_CASE("budget: the stretch factor") {
  CHECK(decide({5000, 1000, 2000, 100}) == BudgetDecision{4000, false, 1.0, 125});
  CHECK(decide({5000, 1000, 3900, 100}) == BudgetDecision{4000, false, 1.0, 125});
  CHECK(decide({5000, 1000, 7800, 100}).stretch == doctest::Approx(2.0));
  CHECK(decide({5000, 4990, 1e9, 1}).stretch == k_max_stretch);
  // At most half of what is left is held back for first polls.
  CHECK(decide({5000, 4000, 1000, 1000}).stretch == doctest::Approx(2.0));
  CHECK(decide({5000, 4000, 1000, 5000}).stretch == doctest::Approx(2.0));
  CHECK(decide({5000, 4000, 1000, 5000}).first_polls_only_below == 1000);
  CHECK(decide({5000, 5000, 10, 0}) == BudgetDecision{0, true, k_max_stretch, 0});
  // A budget lowered below what was already used (a reload).
  CHECK(decide({100, 250, 10, 0}) == BudgetDecision{0, true, k_max_stretch, 0});
}

TEST_CASE("budget: messages expected to arrive") {
  // 10 first polls in 5 days: 2 a day; 10 days left: 20.
  CHECK(expected_arrivals(10, 5 * 24 * k_hour, 10 * 24 * k_hour) == doctest::Approx(20));
  // The month's first hour does not extrapolate a burst: counted over a day.
  CHECK(expected_arrivals(10, k_hour, 24 * k_hour) == doctest::Approx(10));
  CHECK(expected_arrivals(0, 5 * 24 * k_hour, 10 * 24 * k_hour) == 0.0);
  CHECK(expected_arrivals(5, 24 * k_hour, Millis{-1}) == 0.0);
}

// A month on a fake clock: messages arrive all month, as they did the month
// before, each polled on the default schedule for 72 h, stretched by
// decide() every 10 minutes; the count carries over a restart in the middle
// of the month (the daemon persists it). The budget is never exceeded, it
// lasts to the month's end, evenly, and every message gets its first poll.
TEST_CASE("budget: a month under a budget of 5,000 calls for 1,000 messages") {
  const Month month = month_of(at("2026-12-10T00:00:00Z"));
  const std::int64_t budget = 5000;
  constexpr int k_messages = 1000;
  const Millis span = month.end - month.start;
  struct Msg {
    TimePoint sent;
    TimePoint next;
    bool first_done = false;
  };
  std::vector<Msg> msgs;
  for (int i = 0; i < k_messages; ++i) {
    const TimePoint sent = month.start + span * i / k_messages;
    msgs.push_back({sent, sent});
  }
  const Millis max_age = 72 * k_hour;
  std::int64_t used = 0;
  std::int64_t first_polls = 0;
  std::map<int, std::int64_t> per_week;
  double stretch = 1.0;
  bool exhausted = false;
  std::int64_t floor = 0;
  for (TimePoint now = month.start; now < month.end; now += k_minute) {
    if ((now - month.start) % (10 * k_minute) == Millis{0}) {
      double projected = 0;
      for (const auto& m : msgs) {
        if (m.sent <= now && now - m.sent < max_age && m.first_done) {
          projected +=
              projected_calls(k_default, now - m.sent, std::min(max_age, month.end - m.sent));
        }
      }
      // Messages still to come: their first polls are reserved, the rest of
      // their lives (cut at the month's end, on average half-way) projected.
      // The last month's first polls (1,000 over 30 days: the same traffic)
      // count too, as the daemon keeps them.
      const double arrivals = expected_arrivals(
          first_polls + 1000, now - month.start + 30 * 24 * k_hour, month.end - now);
      const Millis life = std::min(max_age, (month.end - now) / 2);
      projected += arrivals * std::max(projected_calls(k_default, Millis{0}, life) - 1.0, 0.0);
      const double reserve = arrivals;
      const auto d = decide({budget, used, projected, reserve});
      stretch = d.stretch;
      exhausted = d.exhausted;
      floor = d.first_polls_only_below;
    }
    if (now == month.start + span / 2) {
      // A restart: only `used` and `first_polls` survive (from the store),
      // the decision is taken again at once.
      const auto d = decide({budget, used, 0, 0});
      exhausted = d.exhausted;
    }
    for (auto& m : msgs) {
      if (m.sent > now || now - m.sent >= max_age || m.next > now || exhausted ||
          (m.first_done && budget - used <= floor)) {
        continue;
      }
      REQUIRE(used < budget); // the daemon's hard limit; the stretch must keep it away
      ++used;
      ++per_week[static_cast<int>((now - month.start) / (7 * 24 * k_hour))];
      Millis every = k_default.back().every;
      for (const auto& step : k_default) {
        if (!step.until || *step.until > now - m.sent) {
          every = step.every;
          break;
        }
      }
      if (!m.first_done) {
        m.first_done = true;
        ++first_polls;
      }
      m.next = now + Millis{static_cast<Millis::rep>(static_cast<double>(every.count()) * stretch)};
    }
  }
  CHECK(used <= budget);
  CHECK(used >= budget * 9 / 10); // spent, not hoarded
  for (const auto& m : msgs) {
    CHECK_MESSAGE(m.first_done, format_rfc3339(m.sent));
  }
  // Evenly: every full week gets between 3/4 and 5/4 of its share.
  for (int week = 0; week < 4; ++week) {
    CAPTURE(week);
    CHECK(per_week[week] >= budget * 7 / 31 * 3 / 4);
    CHECK(per_week[week] <= budget * 7 / 31 * 5 / 4);
  }
}
