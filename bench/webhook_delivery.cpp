// bench-webhook-delivery: how fast readreceiptd turns reads into delivered,
// signed webhook events through its durable outbox (SQLite, WAL,
// synchronous=FULL), and how long a read waits between DingTalk serving it and
// its event arriving. The real readreceiptd binary runs as a child process
// against the tests' fake DingTalk and webhook sink (in this process, on
// 127.0.0.1), as in the integration tests.
//
//   bench-webhook-delivery DAEMON [--burst N] [--steady N] [--steady-seconds S]
//                                 [--state-dir DIR]
//
// burst:  N messages, each already read by its one expected reader when the
//         daemon starts: 2N events (message.read, then tracking_stopped).
//         Reports events per second at the sink (first to last arrival) and
//         the daemon's CPU seconds per 1,000 events.
// steady: N messages whose reader reads at a random moment within S seconds
//         (polled every 200 ms). Reports the latency from the fake serving the
//         read (the first 200 answer to a query of that message after the read)
//         to the sink receiving its message.read event: median, p90, p99, max.
//
// The state database lives in --state-dir (default: a directory under
// /var/tmp, on disk: /tmp may be a RAM file system, where fsync costs
// nothing).
#include "fakes/fake_dingtalk.hpp"
#include "fakes/process.hpp"
#include "fakes/webhook_sink.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

using rrd::testing::ChildProcess;
using rrd::testing::FakeDingTalk;
using rrd::testing::FakeMessage;
using rrd::testing::SteadyClock;
using rrd::testing::SteadyTime;
using rrd::testing::WebhookSink;
using namespace std::chrono_literals;

constexpr const char* k_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
constexpr const char* k_token = "bench-token";

struct Options {
  std::string daemon;
  int burst = 2000;
  int steady = 500;
  int steady_seconds = 20;
  std::string state_dir;
};

double cpu_seconds_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  std::istringstream fields(text.substr(close + 2));
  std::string f;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14 || i == 15) {
      ticks += std::stod(f);
    }
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::string key_of(const char* prefix, int i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s%06d", prefix, i);
  return buf;
}

// A configuration for the daemon: the fake, the sink, the messages.
void write_config(const std::string& path, const std::string& state, const FakeDingTalk& fake,
                  const WebhookSink& sink, const std::vector<std::string>& keys) {
  std::ofstream y(path);
  y << "dingtalk:\n  endpoint: " << fake.endpoint() << "\n  auth: { access_token: " << k_token
    << " }\n  robot_code: dingfakerobot\n  requests_per_second: 100000\n  request_timeout: 5s\n"
    << "poll:\n  schedule: [ { every: 200ms } ]\n  max_age: 1h\n"
    << "state: { path: " << state << " }\n"
    << "metrics: { listen: \"\" }\napi: { listen: \"\" }\n"
    << "webhooks:\n  - name: bench\n    url: " << sink.url() << "\n    secret: " << k_secret
    << "\n    timeout: 5s\n"
    << "messages:\n";
  for (const auto& k : keys) {
    y << "  - { process_query_key: \"" << k << "\", expected_readers: [reader] }\n";
  }
}

double ms_between(SteadyTime a, SteadyTime b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

double quantile(std::vector<double> v, double q) {
  if (v.empty()) {
    return 0;
  }
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

int burst(const Options& o, const std::string& dir) {
  FakeDingTalk fake;
  fake.add_token(k_token);
  WebhookSink sink(k_secret);
  std::vector<std::string> keys;
  for (int i = 0; i < o.burst; ++i) {
    keys.push_back(key_of("burst-", i));
    fake.add_message(keys.back(), FakeMessage{});
    fake.read(keys.back(), "reader");
  }
  const std::string state = dir + "/burst.db";
  std::filesystem::remove(state);
  write_config(dir + "/burst.yaml", state, fake, sink, keys);
  ChildProcess daemon({o.daemon, "--config", dir + "/burst.yaml", "--log-level", "warn"},
                      dir + "/burst.log");
  const std::size_t expected = 2 * static_cast<std::size_t>(o.burst);
  const bool all = rrd::testing::wait_until([&] { return sink.accepted().size() >= expected; },
                                            std::chrono::seconds(300));
  const double cpu = cpu_seconds_of(daemon.pid());
  daemon.stop();
  const auto got = sink.accepted();
  if (!all) {
    std::cerr << "burst: only " << got.size() << " of " << expected << " events arrived\n"
              << daemon.log();
    return 1;
  }
  SteadyTime first = got.front().arrived;
  SteadyTime last = got.front().arrived;
  for (const auto& d : got) {
    first = std::min(first, d.arrived);
    last = std::max(last, d.arrived);
  }
  const double seconds = ms_between(first, last) / 1000.0;
  std::printf("burst: %zu events (%d messages) in %.3f s: %.0f events/s; daemon CPU %.2f s in "
              "all, %.3f s per 1,000 events (start-up and polls included)\n",
              got.size(), o.burst, seconds, static_cast<double>(got.size()) / seconds, cpu,
              cpu * 1000.0 / static_cast<double>(got.size()));
  return 0;
}

int steady(const Options& o, const std::string& dir) {
  FakeDingTalk fake;
  fake.add_token(k_token);
  WebhookSink sink(k_secret);
  std::vector<std::string> keys;
  for (int i = 0; i < o.steady; ++i) {
    keys.push_back(key_of("steady-", i));
    fake.add_message(keys.back(), FakeMessage{});
  }
  const std::string state = dir + "/steady.db";
  std::filesystem::remove(state);
  write_config(dir + "/steady.yaml", state, fake, sink, keys);
  ChildProcess daemon({o.daemon, "--config", dir + "/steady.yaml", "--log-level", "warn"},
                      dir + "/steady.log");
  // Reads start once every message has been polled once.
  if (!rrd::testing::wait_until([&] { return fake.query_calls() >= o.steady; }, 60s)) {
    std::cerr << "steady: the daemon did not poll every message\n" << daemon.log();
    return 1;
  }
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<long long> when(0, o.steady_seconds * 1000LL);
  const SteadyTime start = SteadyClock::now() + 500ms;
  std::map<std::string, SteadyTime> read_at;
  for (const auto& k : keys) {
    read_at[k] = start + std::chrono::milliseconds(when(rng));
    fake.schedule_read(k, "reader", read_at[k]);
  }
  const bool all =
      rrd::testing::wait_until([&] { return sink.accepted().size() >= 2 * keys.size(); },
                               std::chrono::seconds(o.steady_seconds + 120));
  daemon.stop();
  if (!all) {
    std::cerr << "steady: not every event arrived\n" << daemon.log();
    return 1;
  }
  // When the fake first served each read: its first 200 answer to the
  // message at or after the read.
  std::map<std::string, SteadyTime> served;
  for (const auto& q : fake.queries()) {
    if (q.status != 200 || !q.body.is_object()) {
      continue;
    }
    const std::string key = q.body.value("processQueryKey", "");
    const auto r = read_at.find(key);
    if (r == read_at.end() || q.at < r->second || served.count(key) != 0) {
      continue;
    }
    served[key] = q.at;
  }
  std::vector<double> latency;
  std::vector<double> from_read;
  for (const auto& d : sink.accepted()) {
    if (d.json["type"] != "message.read") {
      continue;
    }
    const std::string key = d.json["data"]["process_query_key"];
    if (served.count(key) != 0) {
      latency.push_back(ms_between(served[key], d.arrived));
      from_read.push_back(ms_between(read_at[key], d.arrived));
    }
  }
  std::printf("steady: %zu reads over %d s; served -> event arrived: median %.1f ms, p90 %.1f "
              "ms, p99 %.1f ms, max %.1f ms (read -> event, poll interval 200 ms included: "
              "median %.0f ms, p99 %.0f ms)\n",
              latency.size(), o.steady_seconds, quantile(latency, 0.5), quantile(latency, 0.9),
              quantile(latency, 0.99), quantile(latency, 1.0), quantile(from_read, 0.5),
              quantile(from_read, 0.99));
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: bench-webhook-delivery DAEMON [--burst N] [--steady N] "
                 "[--steady-seconds S] [--state-dir DIR]\n";
    return 2;
  }
  Options o;
  o.daemon = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--burst") {
      o.burst = std::atoi(value.c_str());
    } else if (flag == "--steady") {
      o.steady = std::atoi(value.c_str());
    } else if (flag == "--steady-seconds") {
      o.steady_seconds = std::atoi(value.c_str());
    } else if (flag == "--state-dir") {
      o.state_dir = value;
    } else {
      std::cerr << "bench-webhook-delivery: unknown option " << flag << "\n";
      return 2;
    }
  }
  std::string dir = o.state_dir;
  if (dir.empty()) {
    dir = "/var/tmp/rrd-bench-webhook-" + std::to_string(getpid());
  }
  std::filesystem::create_directories(dir);
  int rc = 0;
  if (o.burst > 0) {
    rc |= burst(o, dir);
  }
  if (o.steady > 0) {
    rc |= steady(o, dir);
  }
  if (o.state_dir.empty()) {
    std::filesystem::remove_all(dir);
  }
  return rc;
}
