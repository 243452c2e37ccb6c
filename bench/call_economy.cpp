// bench-call-economy: how well the poll schedules spend DingTalk's call quota,
// with and without push. The REAL message table (tracking::MessageTable, with
// the tracker and an in-memory store) and the REAL poller
// (scheduler::Scheduler: due queues, rate limiter, push modes, the monthly
// budget) run on a fake clock against a simulated DingTalk. Simulated people
// read; a poll is answered at once with the readers who have read by then,
// and when push works a read is also handed to the table at the moment it
// happens through MessageTable::push_read, as the Stream client would
// (acknowledgements ignored), while Scheduler::set_push_state tells the
// poller whether the Stream connection is up, as the daemon's loop does.
//
// Population: by default 1,000 messages sent over the first hour, each to 5
// readers; a reader reads after a log-normal delay (median 3 minutes,
// sigma 2: most within minutes, some after hours, a few after a day) or, with
// probability 0.1, never. Each message is tracked until fully read or
// poll.max_age (72 h). Scenarios:
//
//   poll     no push: poll.schedule (today's figure), and, for comparison,
//            fixed-interval polling that spends the same calls or fewer (the
//            shortest such interval, found by bisection; --no-fixed skips it)
//   push     push healthy: every read pushed; polls follow reconcile_schedule
//   lossy    push loses --loss (10%) of the events: those reads only a poll
//            can find
//   outage   push down --outage-length (1 h) a day, starting --outage-at
//            (30 min) after the first message of each day; reads while it is
//            down are never pushed; polls fall back on poll.schedule after
//            fallback_after (30 s) and catch up when it is back
//   budget   --budget-messages (1,000) messages sent evenly over a calendar
//            month (Beijing time), monthly_call_budget --budget (5,000), push
//            healthy; calls are counted in the month and after it (the last
//            messages live on into the next month, which has a budget of its
//            own)
//   budget-lossy, budget-outage  the same, push losing --loss of the events,
//            or down an hour a day as in `outage` (from the month's start: over
//            a month of sends, the outage meets messages at every age)
//   month, month-outage  the month's messages without a budget, for comparison
//
// For each: the read-status calls (every page counts) per message, the
// reads reported and by which source, the delay from each read to the commit
// of the event that reports it (median, p95, p99, max), and the reads never
// reported (they happened after the message stopped, at max_age); with push,
// the reads found late (by a poll, not a push) and how late.
//
//   bench-call-economy [--scenarios poll,push,lossy,outage,month,...]
//                      [--messages N] [--readers R] [--seed S]
//                      [--median-read S] [--sigma X] [--never P]
//                      [--schedule "10m:15s,2h:1m,24h:10m,1h"]
//                      [--reconcile-schedule "1h:20m,24h:4h,24h"]
//                      [--loss P] [--outage-at D] [--outage-length D]
//                      [--budget N] [--budget-messages N] [--no-fixed]
//
// --schedule and --reconcile-schedule replace poll.schedule and
// poll.reconcile_schedule ("until:every,...,every").
#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/config/config.hpp"
#include "readreceiptd/http/http_engine.hpp"
#include "readreceiptd/scheduler/budget.hpp"
#include "readreceiptd/scheduler/scheduler.hpp"
#include "readreceiptd/store/store.hpp"
#include "readreceiptd/stream/frames.hpp"
#include "readreceiptd/tracking/table.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <spdlog/spdlog.h>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using rrd::Millis;
using rrd::TimePoint;
using namespace std::chrono_literals;

constexpr const char* k_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
// The simulation goes on this long after the last message's max_age.
constexpr Millis k_tail = 1h;
// Calls this soon after push is back are counted as the catch-up's.
constexpr Millis k_catch_up_window = 5min;

struct Options {
  std::vector<std::string> scenarios{"poll",   "push",         "lossy",
                                     "outage", "month",        "month-outage",
                                     "budget", "budget-lossy", "budget-outage"};
  int messages = 1000;
  int readers = 5;
  std::uint64_t seed = 42;
  double median_read_s = 180;
  double sigma = 2.0;
  double never = 0.1;
  Millis send_window = 1h;
  std::optional<std::vector<rrd::config::ScheduleStep>> schedule;
  std::optional<std::vector<rrd::config::ScheduleStep>> reconcile_schedule;
  double loss = 0.1;
  Millis outage_at = 30min;
  Millis outage_length = 1h;
  std::int64_t budget = 5000;
  int budget_messages = 1000;
  bool fixed = true;
};

enum class Push { off, healthy, lossy, daily_outage };

struct Scenario {
  std::string name;
  Push push = Push::off;
  std::optional<std::int64_t> budget;
  bool month = false; // messages sent over a calendar month instead of an hour
};

struct SimRead {
  TimePoint at;
  std::size_t message = 0;
  std::size_t reader = 0;
};

struct SimMessage {
  std::string key;
  TimePoint sent_at;
  std::vector<std::string> readers;
  std::vector<std::optional<TimePoint>> read_at; // nullopt: never reads
  std::vector<bool> pushed;                      // the read's event reaches the daemon
};

struct Population {
  std::vector<SimMessage> messages; // by send time
  std::unordered_map<std::string, std::size_t> index;
  std::vector<SimRead> pushes; // the reads that are pushed, by time
};

// The daily outage of the `outage` scenario: [day start + at, + length),
// days counted from `origin`.
struct Outages {
  TimePoint origin;
  Millis at{0};
  Millis length{0};
  bool active = false;

  bool down(TimePoint t) const {
    if (!active || t < origin) {
      return false;
    }
    const Millis into_day = (t - origin) % Millis{24h};
    return into_day >= at && into_day < at + length;
  }
  // The last change of state at or before t (origin if none).
  TimePoint since(TimePoint t) const {
    if (!active || t < origin + at) {
      return origin;
    }
    const Millis day = Millis{24h} * ((t - origin) / Millis{24h});
    const TimePoint start = origin + day + at;
    const TimePoint end = start + length;
    if (t >= end) {
      return end;
    }
    if (t >= start) {
      return start;
    }
    return origin + day - Millis{24h} + at + length; // yesterday's end
  }
  std::optional<TimePoint> next_change(TimePoint t) const {
    if (!active) {
      return std::nullopt;
    }
    const TimePoint day = origin + Millis{24h} * (std::max(Millis{0}, t - origin) / Millis{24h});
    for (const TimePoint c : {day + at, day + at + length, day + Millis{24h} + at}) {
      if (c > t) {
        return c;
      }
    }
    return std::nullopt;
  }
};

Population make_population(const Options& o, int count, TimePoint start, Millis window, Push push,
                           const Outages& outages) {
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<long long> send(0, window.count() - 1);
  std::lognormal_distribution<double> delay(std::log(o.median_read_s * 1000.0), o.sigma);
  std::bernoulli_distribution never(o.never);
  // Losses drawn from a generator of their own: the readers are the same in
  // every scenario.
  std::mt19937_64 loss_rng(o.seed ^ 0x5eed10551ULL);
  std::bernoulli_distribution lost(o.loss);
  Population p;
  for (int i = 0; i < count; ++i) {
    SimMessage m;
    char key[40];
    std::snprintf(key, sizeof key, "sim-%05d", i);
    m.key = key;
    m.sent_at = start + Millis{send(rng)};
    for (int r = 0; r < o.readers; ++r) {
      m.readers.push_back("user" + std::to_string(r + 1));
      const double d = delay(rng);
      if (never(rng)) {
        m.read_at.push_back(std::nullopt);
      } else {
        m.read_at.push_back(m.sent_at + Millis{static_cast<long long>(d)});
      }
      const bool is_lost = lost(loss_rng);
      bool pushed = false;
      switch (push) {
      case Push::off:
        break;
      case Push::healthy:
        pushed = true;
        break;
      case Push::lossy:
        pushed = !is_lost;
        break;
      case Push::daily_outage:
        pushed = m.read_at.back() && !outages.down(*m.read_at.back());
        break;
      }
      m.pushed.push_back(pushed && m.read_at.back().has_value());
    }
    p.messages.push_back(std::move(m));
  }
  std::sort(p.messages.begin(), p.messages.end(),
            [](const SimMessage& a, const SimMessage& b) { return a.sent_at < b.sent_at; });
  for (std::size_t i = 0; i < p.messages.size(); ++i) {
    const auto& m = p.messages[i];
    p.index[m.key] = i;
    for (std::size_t r = 0; r < m.readers.size(); ++r) {
      if (m.pushed[r]) {
        p.pushes.push_back({*m.read_at[r], i, r});
      }
    }
  }
  std::sort(p.pushes.begin(), p.pushes.end(), [](const SimRead& a, const SimRead& b) {
    return a.at != b.at ? a.at < b.at : a.message < b.message;
  });
  return p;
}

// DingTalk, simulated: answers each query, when the loop runs the engine, with
// the readers who have read by the clock's time. Counts the calls, and those
// made before `boundary` (the budget's month end).
class SimEngine final : public rrd::http::Engine {
public:
  SimEngine(const rrd::Clock& clock, const Population& population, TimePoint boundary)
      : m_clock(clock), m_population(population), m_boundary(boundary) {}

  void submit(rrd::http::Request request, rrd::http::Callback done) override {
    ++m_calls;
    m_calls_before += m_clock.now() < m_boundary ? 1 : 0;
    m_times.push_back(m_clock.now());
    m_pending.emplace_back(std::move(request), std::move(done));
  }
  void run_once(Millis) override {
    auto pending = std::move(m_pending);
    m_pending.clear();
    for (auto& [request, done] : pending) {
      done(answer(request));
    }
  }
  void wakeup() override {}
  std::size_t in_flight() const override { return m_pending.size(); }
  long long calls() const { return m_calls; }
  long long calls_before_boundary() const { return m_calls_before; }
  const std::vector<TimePoint>& call_times() const { return m_times; }

private:
  rrd::http::Response answer(const rrd::http::Request& request) const {
    const auto body = nlohmann::json::parse(request.body);
    const auto& m = m_population.messages.at(
        m_population.index.at(body.at("processQueryKey").get<std::string>()));
    nlohmann::json read = nlohmann::json::array();
    const TimePoint now = m_clock.now();
    for (std::size_t i = 0; i < m.readers.size(); ++i) {
      if (m.read_at[i] && *m.read_at[i] <= now) {
        read.push_back(m.readers[i]);
      }
    }
    rrd::http::Response r;
    r.status = 200;
    r.body =
        nlohmann::json{{"readUserIds", read}, {"sendStatus", "SUCCESS"}, {"hasMore", false}}.dump();
    return r;
  }

  const rrd::Clock& m_clock;
  const Population& m_population;
  TimePoint m_boundary;
  std::deque<std::pair<rrd::http::Request, rrd::http::Callback>> m_pending;
  long long m_calls = 0;
  long long m_calls_before = 0;
  std::vector<TimePoint> m_times;
};

struct Outcome {
  long long calls = 0;
  long long calls_in_month = 0;      // budget scenarios: before the month's end
  std::int64_t month_count = 0;      // the poller's own count for the month, at its end
  double max_stretch = 1.0;          // the budget's largest stretch
  long long calls_while_down = 0;    // outages: calls while push was down
  long long calls_after_up = 0;      // and within k_catch_up_window of its coming back
  std::vector<double> delays_s;      // per reported read
  std::vector<double> poll_delays_s; // of those, the reads a poll reported
  long long reads = 0;               // reads that happened (ever)
  long long missed = 0;              // reads that happened but no event reported them
  long long via_push = 0;
  long long via_poll = 0;
  long long reads_in_month = 0;    // budget: reads before the month's end
  long long reported_in_month = 0; // of those, reported before it
  long long within_max_age = 0;    // reads before their message's max_age
  long long reported_in_life = 0;  // of those, reported
  int fully_read = 0;              // messages
  int messages = 0;
};

struct Run {
  Population population;
  TimePoint start;
  TimePoint month_end; // budget: the month's end; otherwise the end of time
  Outages outages;
};

Run prepare(const Options& o, const Scenario& s) {
  Run run;
  run.start = rrd::FakeClock().now();
  run.month_end = TimePoint::max();
  int count = o.messages;
  Millis window = o.send_window;
  if (s.month) {
    // The next whole calendar month, Beijing time.
    const auto month = rrd::scheduler::month_of(rrd::scheduler::month_of(run.start).end);
    run.start = month.start;
    run.month_end = month.end;
    count = o.budget_messages;
    window = month.end - month.start;
  }
  run.outages.active = s.push == Push::daily_outage;
  run.outages.origin = run.start;
  run.outages.at = o.outage_at;
  run.outages.length = o.outage_length;
  run.population = make_population(o, count, run.start, window, s.push, run.outages);
  return run;
}

Outcome simulate(const Options& o, const Run& run, const Scenario& s,
                 const std::vector<rrd::config::ScheduleStep>& schedule,
                 const std::vector<rrd::config::ScheduleStep>& reconcile) {
  const Population& population = run.population;
  rrd::FakeClock clock(run.start);
  SimEngine engine(clock, population, run.month_end);
  auto store = rrd::store::Store::open(":memory:");

  rrd::config::Config cfg;
  cfg.dingtalk.auth_kind = rrd::config::DingTalk::AuthKind::fixed_token;
  cfg.dingtalk.fixed_token.access_token = "sim-token";
  cfg.dingtalk.robot_code = "dingsimrobot";
  cfg.dingtalk.stream.enabled = s.push != Push::off;
  cfg.dingtalk.monthly_call_budget = s.budget;
  cfg.poll.schedule = schedule;
  cfg.poll.reconcile_schedule = reconcile;
  rrd::config::Webhook hook;
  hook.name = "sim";
  hook.url = "http://127.0.0.1:9/";
  hook.secret = k_secret;
  cfg.webhooks.push_back(hook);

  Outcome out;
  out.messages = static_cast<int>(population.messages.size());
  // (key, reader) -> when the event reporting the read was committed.
  std::map<std::pair<std::string, std::string>, TimePoint> detected;
  std::set<std::pair<std::string, std::string>> polled; // of those, reported by a poll
  int fully = 0;
  auto on_deliveries = [&](std::vector<rrd::Delivery> deliveries) {
    for (const auto& d : deliveries) {
      const auto body = nlohmann::json::parse(d.body);
      const std::string key = body["data"]["process_query_key"];
      if (d.type == rrd::EventType::message_read) {
        for (const auto& r : body["data"]["newly_read"]) {
          if (detected.emplace(std::make_pair(key, r["user_id"].get<std::string>()), clock.now())
                  .second) {
            (r["via"] == "push" ? out.via_push : out.via_poll) += 1;
            if (r["via"] != "push") {
              polled.insert({key, r["user_id"].get<std::string>()});
            }
          }
        }
      } else if (body["data"]["reason"] == "fully_read") {
        ++fully;
      }
    }
  };
  rrd::tracking::Observer table_observer;
  rrd::tracking::MessageTable table(cfg, *store, clock, on_deliveries, table_observer, o.seed);
  rrd::scheduler::Observer observer;
  rrd::scheduler::Scheduler sched(cfg, table, *store, engine, clock, observer, o.seed);
  sched.start();
  table.start();

  const TimePoint end = population.messages.back().sent_at + cfg.poll.max_age + k_tail;
  std::size_t next_send = 0;
  std::size_t next_push = 0;
  const auto ignore_ack = [](bool) {};
  while (clock.now() <= end) {
    const TimePoint now = clock.now();
    for (; next_send < population.messages.size() && population.messages[next_send].sent_at <= now;
         ++next_send) {
      const auto& m = population.messages[next_send];
      rrd::MessageSpec spec;
      spec.process_query_key = m.key;
      spec.robot_code = cfg.dingtalk.robot_code;
      spec.expected_readers = m.readers;
      spec.sent_at = m.sent_at;
      table.add(spec);
    }
    for (; next_push < population.pushes.size() && population.pushes[next_push].at <= now;
         ++next_push) {
      const SimRead& read = population.pushes[next_push];
      const auto& m = population.messages[read.message];
      rrd::stream::ReadEvent event;
      event.process_query_key = m.key;
      event.user_id = m.readers[read.reader];
      event.read_at = read.at;
      event.robot_code = cfg.dingtalk.robot_code;
      (void)table.push_read(event, ignore_ack);
    }
    if (s.push != Push::off) {
      sched.set_push_state(!run.outages.down(now), run.outages.since(now));
    }
    sched.pump();
    engine.run_once(0ms);
    table.flush();
    if (now < run.month_end) {
      const auto budget = sched.call_budget();
      out.month_count = budget.calls;
      out.max_stretch = std::max(out.max_stretch, budget.stretch);
    }

    std::optional<TimePoint> next;
    const auto consider = [&](std::optional<TimePoint> t) {
      if (t && (!next || *t < *next)) {
        next = t;
      }
    };
    consider(sched.next_wakeup());
    consider(table.next_flush());
    if (next_send < population.messages.size()) {
      consider(population.messages[next_send].sent_at);
    }
    if (next_push < population.pushes.size()) {
      consider(population.pushes[next_push].at);
    }
    if (s.push != Push::off) {
      consider(run.outages.next_change(now));
    }
    if (!next) {
      break; // nothing tracked and nothing left to send
    }
    clock.set(std::max(*next, now + 1ms));
  }
  table.flush(true);

  out.calls = engine.calls();
  out.calls_in_month = engine.calls_before_boundary();
  for (const TimePoint t : engine.call_times()) {
    if (run.outages.down(t)) {
      ++out.calls_while_down;
    } else if (run.outages.active && t - run.outages.since(t) < k_catch_up_window &&
               run.outages.down(run.outages.since(t) - 1ms)) {
      ++out.calls_after_up;
    }
  }
  out.fully_read = fully;
  for (const auto& m : population.messages) {
    for (std::size_t i = 0; i < m.readers.size(); ++i) {
      if (!m.read_at[i]) {
        continue;
      }
      const TimePoint read_at = *m.read_at[i];
      ++out.reads;
      const auto it = detected.find({m.key, m.readers[i]});
      const bool in_life = read_at < m.sent_at + cfg.poll.max_age;
      out.within_max_age += in_life ? 1 : 0;
      if (read_at < run.month_end) {
        ++out.reads_in_month;
        out.reported_in_month += it != detected.end() && it->second < run.month_end ? 1 : 0;
      }
      if (it == detected.end()) {
        ++out.missed;
        continue;
      }
      out.reported_in_life += in_life ? 1 : 0;
      const double delay = std::chrono::duration<double>(it->second - read_at).count();
      out.delays_s.push_back(delay);
      if (polled.count(it->first) != 0) {
        out.poll_delays_s.push_back(delay);
      }
    }
  }
  std::sort(out.delays_s.begin(), out.delays_s.end());
  std::sort(out.poll_delays_s.begin(), out.poll_delays_s.end());
  return out;
}

double quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) {
    return NAN;
  }
  const auto i = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size()))) - 1;
  return sorted[std::min(i, sorted.size() - 1)];
}

std::string human(double seconds) {
  char buf[32];
  if (std::isnan(seconds)) {
    return "-";
  }
  if (seconds < 120) {
    std::snprintf(buf, sizeof buf, "%.1f s", seconds);
  } else if (seconds < 7200) {
    std::snprintf(buf, sizeof buf, "%.1f min", seconds / 60);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f h", seconds / 3600);
  }
  return buf;
}

std::string describe(const std::vector<rrd::config::ScheduleStep>& schedule) {
  std::string s;
  auto d = [](Millis m) {
    const long long ms = m.count();
    if (ms % 3'600'000 == 0) {
      return std::to_string(ms / 3'600'000) + "h";
    }
    if (ms % 60'000 == 0) {
      return std::to_string(ms / 60'000) + "m";
    }
    if (ms % 1000 == 0) {
      return std::to_string(ms / 1000) + "s";
    }
    return std::to_string(ms) + "ms";
  };
  for (const auto& step : schedule) {
    if (!s.empty()) {
      s += ",";
    }
    s += step.until ? d(*step.until) + ":" + d(step.every) : d(step.every);
  }
  return s;
}

void header() {
  std::printf("%-13s %-24s %9s %9s %7s %7s %7s %10s %10s %10s %10s %6s\n", "scenario", "schedule",
              "calls", "calls/msg", "seen", "push", "poll", "median", "p95", "p99", "max",
              "missed");
}

void report(const std::string& name, const std::vector<rrd::config::ScheduleStep>& schedule,
            const Outcome& r) {
  const auto share = [&](long long n) {
    return 100.0 * static_cast<double>(n) / static_cast<double>(std::max(r.reads, 1LL));
  };
  std::printf("%-13s %-24s %9lld %9.1f %6.1f%% %6.1f%% %6.1f%% %10s %10s %10s %10s %6lld\n",
              name.c_str(), describe(schedule).c_str(), r.calls,
              static_cast<double>(r.calls) / r.messages,
              share(static_cast<long long>(r.delays_s.size())), share(r.via_push),
              share(r.via_poll), human(quantile(r.delays_s, 0.5)).c_str(),
              human(quantile(r.delays_s, 0.95)).c_str(), human(quantile(r.delays_s, 0.99)).c_str(),
              human(quantile(r.delays_s, 1.0)).c_str(), r.missed);
}

std::vector<rrd::config::ScheduleStep> parse_schedule(const std::string& text) {
  std::vector<rrd::config::ScheduleStep> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    rrd::config::ScheduleStep step;
    const auto colon = item.find(':');
    if (colon != std::string::npos) {
      step.until = rrd::config::parse_duration(item.substr(0, colon));
      item = item.substr(colon + 1);
      if (!step.until) {
        throw std::invalid_argument("bad duration in a schedule");
      }
    }
    const auto every = rrd::config::parse_duration(item);
    if (!every) {
      throw std::invalid_argument("bad duration in a schedule: " + item);
    }
    step.every = *every;
    out.push_back(step);
  }
  return out;
}

Millis duration_arg(const std::string& flag, const std::string& value) {
  const auto d = rrd::config::parse_duration(value);
  if (!d) {
    std::cerr << "bench-call-economy: " << flag << ": not a duration: " << value << "\n";
    std::exit(2);
  }
  return *d;
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--no-fixed") {
      o.fixed = false;
      continue;
    }
    if (i + 1 >= argc) {
      std::cerr << "bench-call-economy: " << flag << " needs a value\n";
      std::exit(2);
    }
    const std::string value = argv[++i];
    if (flag == "--scenarios") {
      o.scenarios.clear();
      std::stringstream in(value);
      std::string item;
      while (std::getline(in, item, ',')) {
        o.scenarios.push_back(item);
      }
    } else if (flag == "--messages") {
      o.messages = std::atoi(value.c_str());
    } else if (flag == "--readers") {
      o.readers = std::atoi(value.c_str());
    } else if (flag == "--seed") {
      o.seed = std::strtoull(value.c_str(), nullptr, 10);
    } else if (flag == "--median-read") {
      o.median_read_s = std::atof(value.c_str());
    } else if (flag == "--sigma") {
      o.sigma = std::atof(value.c_str());
    } else if (flag == "--never") {
      o.never = std::atof(value.c_str());
    } else if (flag == "--schedule") {
      o.schedule = parse_schedule(value);
    } else if (flag == "--reconcile-schedule") {
      o.reconcile_schedule = parse_schedule(value);
    } else if (flag == "--loss") {
      o.loss = std::atof(value.c_str());
    } else if (flag == "--outage-at") {
      o.outage_at = duration_arg(flag, value);
    } else if (flag == "--outage-length") {
      o.outage_length = duration_arg(flag, value);
    } else if (flag == "--budget") {
      o.budget = std::atoll(value.c_str());
    } else if (flag == "--budget-messages") {
      o.budget_messages = std::atoi(value.c_str());
    } else {
      std::cerr << "bench-call-economy: unknown option " << flag << "\n";
      std::exit(2);
    }
  }
  if (o.messages < 1 || o.budget_messages < 1 || o.readers < 1) {
    std::cerr << "bench-call-economy: --messages, --budget-messages and --readers must be >= 1\n";
    std::exit(2);
  }
  return o;
}

std::optional<Scenario> scenario_named(const Options& o, const std::string& name) {
  if (name == "poll") {
    return Scenario{name, Push::off, std::nullopt, false};
  }
  if (name == "push") {
    return Scenario{name, Push::healthy, std::nullopt, false};
  }
  if (name == "lossy") {
    return Scenario{name, Push::lossy, std::nullopt, false};
  }
  if (name == "outage") {
    return Scenario{name, Push::daily_outage, std::nullopt, false};
  }
  if (name == "budget") {
    return Scenario{name, Push::healthy, o.budget, true};
  }
  if (name == "month") {
    return Scenario{name, Push::healthy, std::nullopt, true};
  }
  if (name == "month-outage") {
    return Scenario{name, Push::daily_outage, std::nullopt, true};
  }
  if (name == "budget-lossy") {
    return Scenario{name, Push::lossy, o.budget, true};
  }
  if (name == "budget-outage") {
    return Scenario{name, Push::daily_outage, o.budget, true};
  }
  return std::nullopt;
}

// The budget scenarios' own lines: the month's calls and which reads were
// reported by when.
void report_budget(const std::string& name, const Outcome& r, std::optional<std::int64_t> budget) {
  std::string limit = "no budget";
  if (budget) {
    limit = "budget " + std::to_string(*budget) + ", the poller counted " +
            std::to_string(r.month_count) + ": " +
            (r.calls_in_month <= *budget ? "none over" : "OVER");
  }
  std::printf("#   %s: %lld calls in the month (%s), %lld after it; largest stretch %.2f; of "
              "%lld reads, %lld in the month, reported by its end: %lld; %lld within max_age, "
              "reported: %lld\n",
              name.c_str(), r.calls_in_month, limit.c_str(), r.calls - r.calls_in_month,
              r.max_stretch, r.reads, r.reads_in_month, r.reported_in_month, r.within_max_age,
              r.reported_in_life);
}

} // namespace

int main(int argc, char** argv) {
  const Options o = parse_args(argc, argv);
  // The table logs every stop at info, the poller every fallback at warn.
  spdlog::set_level(spdlog::level::err);
  const auto schedule = o.schedule.value_or(rrd::config::Poll{}.schedule);
  const auto reconcile = o.reconcile_schedule.value_or(rrd::config::Poll{}.reconcile_schedule);

  std::printf("# %d messages sent over %lld min (budget scenarios: %d over a month), %d readers "
              "each; read delay log-normal (median %.0f s, sigma %.1f), %.0f%% of readers never "
              "read; max_age 72h; seed %llu\n",
              o.messages, static_cast<long long>(o.send_window.count() / 60'000), o.budget_messages,
              o.readers, o.median_read_s, o.sigma, o.never * 100,
              static_cast<unsigned long long>(o.seed));
  std::printf("# push scenarios poll on reconcile_schedule %s; lossy loses %.0f%% of events; "
              "outage: down %lld min a day from %lld min after the first send; budget %lld a "
              "month\n",
              describe(reconcile).c_str(), o.loss * 100,
              static_cast<long long>(o.outage_length.count() / 60'000),
              static_cast<long long>(o.outage_at.count() / 60'000),
              static_cast<long long>(o.budget));
  header();
  std::vector<std::pair<Scenario, Outcome>> months;
  for (const auto& name : o.scenarios) {
    const auto s = scenario_named(o, name);
    if (!s) {
      std::cerr << "bench-call-economy: unknown scenario " << name << "\n";
      return 2;
    }
    const Run run = prepare(o, *s);
    const Outcome r = simulate(o, run, *s, schedule, reconcile);
    report(name, s->push == Push::off ? schedule : reconcile, r);
    if (s->push != Push::off && !r.poll_delays_s.empty()) {
      std::printf("#   %s: %zu reads found late, by a poll and not a push: median %s, p95 %s, "
                  "p99 %s, max %s after the read\n",
                  name.c_str(), r.poll_delays_s.size(),
                  human(quantile(r.poll_delays_s, 0.5)).c_str(),
                  human(quantile(r.poll_delays_s, 0.95)).c_str(),
                  human(quantile(r.poll_delays_s, 0.99)).c_str(),
                  human(quantile(r.poll_delays_s, 1.0)).c_str());
    }
    if (s->push == Push::daily_outage) {
      std::printf("#   %s: %lld calls while push was down, %lld in the %lld min after it came "
                  "back (the catch-up polls)\n",
                  name.c_str(), r.calls_while_down, r.calls_after_up,
                  static_cast<long long>(k_catch_up_window.count() / 60'000));
    }
    if (s->month) {
      months.emplace_back(*s, r);
    }
    if (name != "poll" || !o.fixed) {
      continue;
    }
    // The shortest fixed interval (whole seconds) that spends no more calls.
    auto fixed = [&](long long seconds) {
      return std::vector<rrd::config::ScheduleStep>{{std::nullopt, Millis{seconds * 1000}}};
    };
    long long lo = 15;   // spends more than the schedule (its fastest step)
    long long hi = 7200; // spends fewer
    std::optional<Outcome> best;
    while (hi - lo > 1) {
      const long long mid = (lo + hi) / 2;
      Outcome f = simulate(o, run, *s, fixed(mid), reconcile);
      if (f.calls <= r.calls) {
        hi = mid;
        best = std::move(f);
      } else {
        lo = mid;
      }
    }
    if (!best) {
      best = simulate(o, run, *s, fixed(hi), reconcile);
    }
    report("poll-fixed", fixed(hi), *best);
    const bool wins = quantile(r.delays_s, 0.5) < quantile(best->delays_s, 0.5) &&
                      quantile(r.delays_s, 0.95) < quantile(best->delays_s, 0.95);
    std::printf("#   poll: fully read %d of %d messages (schedule), %d (fixed); the schedule %s "
                "fixed-interval polling on both median and p95 delay\n",
                r.fully_read, r.messages, best->fully_read, wins ? "beats" : "does NOT beat");
  }
  for (const auto& [s, r] : months) {
    report_budget(s.name, r, s.budget);
  }
  std::printf("# 'seen': reads reported by an event, of all that happened ('push', 'poll': by "
              "which source); delays from the read to the commit of its event; 'missed': "
              "reads after their message stopped (max_age)\n");
  return 0;
}
