// bench-call-economy: how well a poll schedule spends DingTalk's call quota.
// The REAL scheduler (scheduler::Scheduler, with its due queue, rate limiter,
// tracker and an in-memory store) runs on a fake clock against a simulated
// DingTalk that answers every query at once with the readers who have read by
// then. 1,000 messages are sent over the first hour, each to 5 readers; a
// reader reads after a log-normal delay (median 3 minutes, sigma 2: most
// within minutes, some after hours, a few after a day) or, with probability
// 0.1, never. Each message is tracked until fully read or poll.max_age (72 h).
//
// For a schedule it reports the calls spent and the delay from each read to
// the event that reports it (median, p95, p99). It compares the default
// schedule (config::Poll{}) with fixed-interval polling that spends the same
// number of calls or fewer (the shortest such interval, found by bisection).
//
//   bench-call-economy [--messages N] [--readers R] [--seed S]
//                      [--median-read S] [--sigma X] [--never P]
//                      [--schedule "10m:15s,2h:1m,24h:10m,1h"]
//
// --schedule replaces the default schedule ("until:every,...,every").
#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/config/config.hpp"
#include "readreceiptd/http/http_engine.hpp"
#include "readreceiptd/scheduler/scheduler.hpp"
#include "readreceiptd/store/store.hpp"

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

struct Options {
  int messages = 1000;
  int readers = 5;
  std::uint64_t seed = 42;
  double median_read_s = 180;
  double sigma = 2.0;
  double never = 0.1;
  Millis send_window = 1h;
  std::optional<std::vector<rrd::config::ScheduleStep>> schedule;
};

struct SimMessage {
  std::string key;
  TimePoint sent_at;
  std::vector<std::string> readers;
  std::vector<std::optional<TimePoint>> read_at; // nullopt: never reads
};

struct Population {
  std::vector<SimMessage> messages; // by send time
  std::unordered_map<std::string, std::size_t> index;
};

Population make_population(const Options& o, TimePoint start) {
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<long long> send(0, o.send_window.count());
  std::lognormal_distribution<double> delay(std::log(o.median_read_s * 1000.0), o.sigma);
  std::bernoulli_distribution never(o.never);
  Population p;
  for (int i = 0; i < o.messages; ++i) {
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
    }
    p.messages.push_back(std::move(m));
  }
  std::sort(p.messages.begin(), p.messages.end(),
            [](const SimMessage& a, const SimMessage& b) { return a.sent_at < b.sent_at; });
  for (std::size_t i = 0; i < p.messages.size(); ++i) {
    p.index[p.messages[i].key] = i;
  }
  return p;
}

// DingTalk, simulated: answers each query, when the loop runs the engine, with
// the readers who have read by the clock's time. Counts the calls.
class SimEngine final : public rrd::http::Engine {
public:
  SimEngine(const rrd::Clock& clock, const Population& population)
      : m_clock(clock), m_population(population) {}

  void submit(rrd::http::Request request, rrd::http::Callback done) override {
    ++m_calls;
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
  std::deque<std::pair<rrd::http::Request, rrd::http::Callback>> m_pending;
  long long m_calls = 0;
};

struct Outcome {
  long long calls = 0;
  std::vector<double> delays_s; // per detected read
  long long reads = 0;          // reads that happened (ever)
  long long missed = 0;         // reads that happened but no event reported them
  int fully_read = 0;           // messages
};

Outcome simulate(const Options& o, const Population& population,
                 const std::vector<rrd::config::ScheduleStep>& schedule, TimePoint start) {
  rrd::FakeClock clock(start);
  SimEngine engine(clock, population);
  auto store = rrd::store::Store::open(":memory:");

  rrd::config::Config cfg;
  cfg.dingtalk.auth_kind = rrd::config::DingTalk::AuthKind::fixed_token;
  cfg.dingtalk.fixed_token.access_token = "sim-token";
  cfg.dingtalk.robot_code = "dingsimrobot";
  cfg.poll.schedule = schedule;
  rrd::config::Webhook hook;
  hook.name = "sim";
  hook.url = "http://127.0.0.1:9/";
  hook.secret = k_secret;
  cfg.webhooks.push_back(hook);

  Outcome out;
  std::map<std::pair<std::string, std::string>, TimePoint> detected;
  int fully = 0;
  auto on_deliveries = [&](std::vector<rrd::Delivery> deliveries) {
    for (const auto& d : deliveries) {
      const auto body = nlohmann::json::parse(d.body);
      const std::string key = body["data"]["process_query_key"];
      if (d.type == rrd::EventType::message_read) {
        for (const auto& u : body["data"]["newly_read_user_ids"]) {
          detected.emplace(std::make_pair(key, u.get<std::string>()), d.next_attempt);
        }
      } else if (body["data"]["reason"] == "fully_read") {
        ++fully;
      }
    }
  };
  rrd::scheduler::Observer observer;
  rrd::scheduler::Scheduler sched(cfg, *store, engine, clock, on_deliveries, observer, o.seed);
  sched.start();

  const TimePoint end = population.messages.back().sent_at + cfg.poll.max_age + 1h;
  std::size_t next_send = 0;
  while (clock.now() <= end) {
    for (; next_send < population.messages.size() &&
           population.messages[next_send].sent_at <= clock.now();
         ++next_send) {
      const auto& m = population.messages[next_send];
      rrd::MessageSpec spec;
      spec.process_query_key = m.key;
      spec.robot_code = cfg.dingtalk.robot_code;
      spec.expected_readers = m.readers;
      spec.sent_at = m.sent_at;
      sched.add(spec);
    }
    sched.pump();
    engine.run_once(0ms);
    sched.flush();
    std::optional<TimePoint> next = sched.next_wakeup();
    if (next_send < population.messages.size()) {
      const TimePoint send = population.messages[next_send].sent_at;
      next = next ? std::min(*next, send) : send;
    }
    if (!next) {
      break; // nothing tracked and nothing left to send
    }
    clock.set(std::max(*next, clock.now() + 1ms));
  }

  out.calls = engine.calls();
  out.fully_read = fully;
  for (const auto& m : population.messages) {
    for (std::size_t i = 0; i < m.readers.size(); ++i) {
      if (!m.read_at[i]) {
        continue;
      }
      ++out.reads;
      const auto it = detected.find({m.key, m.readers[i]});
      if (it == detected.end()) {
        ++out.missed;
        continue;
      }
      out.delays_s.push_back(std::chrono::duration<double>(it->second - *m.read_at[i]).count());
    }
  }
  std::sort(out.delays_s.begin(), out.delays_s.end());
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

void report(const char* name, const std::vector<rrd::config::ScheduleStep>& schedule,
            const Outcome& r, int messages) {
  std::printf("%-8s %-26s %9lld %9.1f %7.1f%% %11s %11s %11s %6lld\n", name,
              describe(schedule).c_str(), r.calls, static_cast<double>(r.calls) / messages,
              100.0 * static_cast<double>(r.delays_s.size()) / static_cast<double>(r.reads),
              human(quantile(r.delays_s, 0.5)).c_str(), human(quantile(r.delays_s, 0.95)).c_str(),
              human(quantile(r.delays_s, 0.99)).c_str(), r.missed);
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
        throw std::invalid_argument("bad duration in --schedule");
      }
    }
    const auto every = rrd::config::parse_duration(item);
    if (!every) {
      throw std::invalid_argument("bad duration in --schedule: " + item);
    }
    step.every = *every;
    out.push_back(step);
  }
  return out;
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--messages") {
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
    } else {
      std::cerr << "bench-call-economy: unknown option " << flag << "\n";
      std::exit(2);
    }
  }
  return o;
}

} // namespace

int main(int argc, char** argv) {
  const Options o = parse_args(argc, argv);
  spdlog::set_level(spdlog::level::warn); // the scheduler logs every stop at info
  const TimePoint start = rrd::FakeClock().now();
  const Population population = make_population(o, start);
  const auto schedule = o.schedule.value_or(rrd::config::Poll{}.schedule);

  std::printf("# %d messages sent over %lld min, %d readers each; read delay log-normal "
              "(median %.0f s, sigma %.1f), %.0f%% of readers never read; max_age 72h; "
              "seed %llu\n",
              o.messages, static_cast<long long>(o.send_window.count() / 60'000), o.readers,
              o.median_read_s, o.sigma, o.never * 100, static_cast<unsigned long long>(o.seed));
  std::printf("%-8s %-26s %9s %9s %8s %11s %11s %11s %6s\n", "policy", "schedule", "calls",
              "calls/msg", "seen", "median", "p95", "p99", "missed");
  const Outcome base = simulate(o, population, schedule, start);
  report("schedule", schedule, base, o.messages);

  // The shortest fixed interval (whole seconds) that spends no more calls.
  auto fixed = [&](long long seconds) {
    return std::vector<rrd::config::ScheduleStep>{{std::nullopt, Millis{seconds * 1000}}};
  };
  long long lo = 15;   // spends more than the schedule (its fastest step)
  long long hi = 7200; // spends fewer
  std::optional<Outcome> best;
  while (hi - lo > 1) {
    const long long mid = (lo + hi) / 2;
    Outcome r = simulate(o, population, fixed(mid), start);
    if (r.calls <= base.calls) {
      hi = mid;
      best = std::move(r);
    } else {
      lo = mid;
    }
  }
  if (!best) {
    best = simulate(o, population, fixed(hi), start);
  }
  report("fixed", fixed(hi), *best, o.messages);
  std::printf("# fully read: %d of %d messages (schedule), %d (fixed); 'seen': reads "
              "reported by an event; 'missed': reads after max_age\n",
              base.fully_read, o.messages, best->fully_read);
  const bool wins = quantile(base.delays_s, 0.5) < quantile(best->delays_s, 0.5) &&
                    quantile(base.delays_s, 0.95) < quantile(best->delays_s, 0.95);
  std::printf("# the schedule %s fixed-interval polling on both median and p95 delay\n",
              wins ? "beats" : "does NOT beat");
  return 0;
}
