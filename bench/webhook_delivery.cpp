// bench-webhook-delivery: how fast readreceiptd turns reads into delivered,
// signed webhook events through its durable outbox (SQLite, WAL,
// synchronous=FULL), and how long a read waits between DingTalk serving it and
// its event arriving. The real readreceiptd binary runs as a child process
// against the tests' fake DingTalk and webhook sink (in this process, on
// 127.0.0.1), as in the integration tests.
//
//   bench-webhook-delivery DAEMON [--burst N] [--steady N] [--steady-seconds S]
//                                 [--state-dir DIR] [--postgres CONNINFO]
//                                 [--sink epoll|httplib]
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
// nothing). With --postgres the state is on that PostgreSQL server instead,
// in a fresh schema for each run, and the daemon leads it alone (it takes
// the lease at start).
#include "fakes/fake_dingtalk.hpp"
#include "fakes/postgres.hpp"
#include "fakes/process.hpp"
#include "fakes/webhook_sink.hpp"
#include "fixed_server.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <malloc.h>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using rrd::testing::ChildProcess;
using rrd::testing::Delivery;
using rrd::testing::FakeDingTalk;
using rrd::testing::FakeMessage;
using rrd::testing::PgSchema;
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
  std::string postgres;      // a server's conninfo; empty: SQLite
  bool httplib_sink = false; // --sink httplib: the tests' WebhookSink
};

// Where one run keeps its state: a SQLite file, or a fresh schema on the
// PostgreSQL server (dropped when this goes).
class RunState {
public:
  RunState(const Options& o, const std::string& path) {
    if (o.postgres.empty()) {
      std::filesystem::remove(path);
      m_yaml = "state: { path: " + path + " }\n";
    } else {
      m_schema = std::make_unique<PgSchema>(o.postgres);
      m_yaml = "state: { postgres: \"" + m_schema->conninfo() + "\" }\n";
    }
  }
  const std::string& yaml() const { return m_yaml; }

private:
  std::unique_ptr<PgSchema> m_schema;
  std::string m_yaml;
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

// The receiving end by default (--sink epoll): bench/fixed_server.hpp's one
// epoll thread, which answers 200 at once and keeps each request as it came
// with its arrival time; every signature is checked once the run is over,
// by WebhookSink::verify. The tests' WebhookSink (--sink httplib: a thread
// per connection, every request parsed and checked as it arrives) cost this
// process more CPU than the daemon it measured, on the same 2 cores.
class EpollSink {
public:
  explicit EpollSink(std::string secret)
      : m_secret(std::move(secret)), m_server(0, "application/json", "{}") {
    m_server.set_recorder(&EpollSink::record, this);
    m_thread = std::thread([this] { m_server.run(1000, nullptr, nullptr); });
  }
  ~EpollSink() { stop(); }
  EpollSink(const EpollSink&) = delete;
  EpollSink& operator=(const EpollSink&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(m_server.port()) + "/"; }
  std::size_t accepted_count() const { return m_count.load(std::memory_order_acquire); }

  // Stops the server (the first time), then the requests that carry a good
  // signature, parsed; the others are counted in bad().
  const std::vector<Delivery>& accepted() {
    if (m_thread.joinable()) {
      stop();
      for (const auto& [at, raw] : m_raw) {
        Delivery d = parse(raw);
        d.arrived = at;
        d.signature_ok =
            WebhookSink::verify(m_secret, d.webhook_id, d.timestamp, d.body, d.signature);
        if (d.signature_ok) {
          d.answered = 200;
          m_accepted.push_back(std::move(d));
        } else {
          ++m_bad;
        }
      }
      m_raw.clear();
    }
    return m_accepted;
  }
  std::size_t bad() const { return m_bad; }

private:
  static void record(std::string_view request, void* user) {
    auto* self = static_cast<EpollSink*>(user);
    self->m_raw.emplace_back(SteadyClock::now(), std::string(request));
    self->m_count.fetch_add(1, std::memory_order_release);
  }

  static Delivery parse(const std::string& raw) {
    Delivery d;
    const std::size_t head_end = raw.find("\r\n\r\n");
    std::size_t line = raw.find("\r\n") + 2;
    while (line < head_end) {
      const std::size_t eol = raw.find("\r\n", line);
      const std::size_t colon = raw.find(':', line);
      if (colon < eol) {
        std::string name = raw.substr(line, colon - line);
        std::transform(name.begin(), name.end(), name.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        std::size_t v = colon + 1;
        while (v < eol && raw[v] == ' ') {
          ++v;
        }
        d.headers[name] = raw.substr(v, eol - v);
      }
      line = eol + 2;
    }
    d.webhook_id = d.headers["webhook-id"];
    d.timestamp = d.headers["webhook-timestamp"];
    d.signature = d.headers["webhook-signature"];
    d.body = raw.substr(head_end + 4);
    d.json = nlohmann::json::parse(d.body, nullptr, false);
    return d;
  }

  void stop() {
    if (m_thread.joinable()) {
      m_server.stop();
      m_thread.join();
    }
  }

  std::string m_secret;
  rrd::bench::FixedServer m_server;
  // Written by the serving thread only, read after it is joined.
  std::vector<std::pair<SteadyTime, std::string>> m_raw;
  std::atomic<std::size_t> m_count{0};
  std::vector<Delivery> m_accepted;
  std::size_t m_bad = 0;
  std::thread m_thread;
};

// A configuration for the daemon: the fake, the sink, the messages.
template <class Sink>
void write_config(const std::string& path, const RunState& state, const FakeDingTalk& fake,
                  const Sink& sink, const std::vector<std::string>& keys) {
  std::ofstream y(path);
  y << "dingtalk:\n  endpoint: " << fake.endpoint() << "\n  auth: { access_token: " << k_token
    << " }\n  robot_code: dingfakerobot\n  requests_per_second: 100000\n  request_timeout: 5s\n"
    << "poll:\n  schedule: [ { every: 200ms } ]\n  max_age: 1h\n"
    << state.yaml() << "metrics: { listen: \"\" }\napi: { listen: \"\" }\n"
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

template <class Sink> int burst(const Options& o, const std::string& dir) {
  FakeDingTalk fake;
  fake.add_token(k_token);
  Sink sink(k_secret);
  std::vector<std::string> keys;
  for (int i = 0; i < o.burst; ++i) {
    keys.push_back(key_of("burst-", i));
    fake.add_message(keys.back(), FakeMessage{});
    fake.read(keys.back(), "reader");
  }
  const RunState state(o, dir + "/burst.db");
  write_config(dir + "/burst.yaml", state, fake, sink, keys);
  ChildProcess daemon({o.daemon, "--config", dir + "/burst.yaml", "--log-level", "warn"},
                      dir + "/burst.log");
  const std::size_t expected = 2 * static_cast<std::size_t>(o.burst);
  const bool all = rrd::testing::wait_until([&] { return sink.accepted_count() >= expected; },
                                            std::chrono::seconds(300));
  const double cpu = cpu_seconds_of(daemon.pid());
  daemon.stop();
  const auto got = sink.accepted();
  if (!all || got.size() < expected) {
    std::cerr << "burst: only " << got.size() << " of " << expected
              << " events arrived with a good signature\n"
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
  // Where the polls ended: until then events can only come as fast as the
  // reads are polled and committed.
  SteadyTime last_poll = first;
  for (const auto& q : fake.queries()) {
    last_poll = std::max(last_poll, q.at);
  }
  std::size_t after_polls = 0;
  for (const auto& d : got) {
    after_polls += d.arrived > last_poll ? 1 : 0;
  }
  const double drain = ms_between(last_poll, last) / 1000.0;
  std::printf("burst: the last poll answered %.3f s after the first event arrived; after it, "
              "%zu events in %.3f s: %.0f events/s (the outbox draining alone)\n",
              ms_between(first, last_poll) / 1000.0, after_polls, drain,
              drain > 0 ? static_cast<double>(after_polls) / drain : 0.0);
  std::printf("burst: %zu events (%d messages) in %.3f s: %.0f events/s; daemon CPU %.2f s in "
              "all, %.3f s per 1,000 events (start-up and polls included)\n",
              got.size(), o.burst, seconds, static_cast<double>(got.size()) / seconds, cpu,
              cpu * 1000.0 / static_cast<double>(got.size()));
  return 0;
}

template <class Sink> int steady(const Options& o, const std::string& dir) {
  FakeDingTalk fake;
  fake.add_token(k_token);
  Sink sink(k_secret);
  std::vector<std::string> keys;
  for (int i = 0; i < o.steady; ++i) {
    keys.push_back(key_of("steady-", i));
    fake.add_message(keys.back(), FakeMessage{});
  }
  const RunState state(o, dir + "/steady.db");
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
      rrd::testing::wait_until([&] { return sink.accepted_count() >= 2 * keys.size(); },
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
  // The sink's and the fake's server threads allocate and free per request;
  // with glibc's default trim threshold their heaps shrank and grew again
  // all the time (page faults and TLB shootdowns in this process, which
  // shares the 2 cores with the daemon it measures).
  (void)mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
  if (argc < 2) {
    std::cerr
        << "usage: bench-webhook-delivery DAEMON [--burst N] [--steady N] "
           "[--steady-seconds S] [--state-dir DIR] [--postgres CONNINFO] [--sink epoll|httplib]\n";
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
    } else if (flag == "--postgres") {
      o.postgres = value;
    } else if (flag == "--sink" && (value == "epoll" || value == "httplib")) {
      o.httplib_sink = value == "httplib";
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
    rc |= o.httplib_sink ? burst<WebhookSink>(o, dir) : burst<EpollSink>(o, dir);
  }
  if (o.steady > 0) {
    rc |= o.httplib_sink ? steady<WebhookSink>(o, dir) : steady<EpollSink>(o, dir);
  }
  if (o.state_dir.empty()) {
    std::filesystem::remove_all(dir);
  }
  return rc;
}
