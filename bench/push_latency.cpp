// bench-push-latency: how long a read takes to reach the webhook receiver
// when DingTalk pushes it (Stream mode). The real readreceiptd binary runs as
// a child process against the tests' fake DingTalk with its fake Stream
// (tests/fakes/fake_stream.hpp) and the signature-checking webhook sink, all
// in this process on 127.0.0.1, as in the integration tests; the state
// database is on disk, so every commit is a real sync.
//
//   bench-push-latency DAEMON [--reads N] [--messages M] [--gap-ms G] [--state-dir DIR]
//
// M messages (default 50) are watched, each expecting N / M readers; once the
// Stream connection is up and every message has had its first poll, N reads
// (default 500) happen one at a time, a random 0..2G ms apart (G default 20:
// about 50 reads a second), round-robin over the messages. Each read is
// made with FakeDingTalk::read(), which pushes its robot_msg_read event at
// once. The figure is from that call to the sink receiving the message.read
// event that reports the read: median, p90, p99, max; then the parts: from
// the read to the fake sending the EVENT frame, and from the frame to the
// sink. Polls reconcile once an hour, so only a push can report a read
// within the run; a read that came another way is counted and reported.
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
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

namespace {

using rrd::testing::ChildProcess;
using rrd::testing::FakeDingTalk;
using rrd::testing::FakeDingTalkOptions;
using rrd::testing::FakeMessage;
using rrd::testing::FakeStreamOptions;
using rrd::testing::SteadyClock;
using rrd::testing::SteadyTime;
using rrd::testing::WebhookSink;
using namespace std::chrono_literals;

constexpr const char* k_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
// How long the daemon has to connect and make its first polls.
constexpr auto k_start_timeout = 60s;
// How long the last events may take after the last read.
constexpr auto k_drain_timeout = 60s;

struct Options {
  std::string daemon;
  int reads = 500;
  int messages = 50;
  int gap_ms = 20;
  std::string state_dir;
};

using ReadKey = std::pair<std::string, std::string>; // (processQueryKey, userId)

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

std::string key_of(int i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "push-%04d", i);
  return buf;
}

std::string user_of(int i) {
  return "user" + std::to_string(i);
}

// A configuration for the daemon: the fake (an internal app, Stream mode on),
// the sink, the messages.
void write_config(const std::string& dir, const std::string& state, const FakeDingTalk& fake,
                  const WebhookSink& sink, int messages, int readers) {
  rrd::testing::write_file(dir + "/app_secret", FakeDingTalkOptions{}.app_secret + "\n");
  std::ofstream y(dir + "/push.yaml");
  y << "dingtalk:\n  endpoint: " << fake.endpoint()
    << "\n  auth: { app_key: " << FakeDingTalkOptions{}.app_key << ", app_secret_file: " << dir
    << "/app_secret }\n"
    << "  robot_code: dingfakerobot\n  request_timeout: 5s\n"
    << "  stream: { enabled: true, fallback_after: 30s }\n"
    << "poll:\n  schedule: [ { every: 1h } ]\n  reconcile_schedule: [ { every: 1h } ]\n"
    << "  max_age: 24h\n"
    << "state: { path: " << state << " }\n"
    << "metrics: { listen: \"\" }\napi: { listen: \"\" }\n"
    << "webhooks:\n  - name: bench\n    url: " << sink.url() << "\n    secret: " << k_secret
    << "\n    timeout: 5s\n"
    << "messages:\n";
  for (int m = 0; m < messages; ++m) {
    y << "  - process_query_key: \"" << key_of(m) << "\"\n    expected_readers: [";
    for (int u = 0; u < readers; ++u) {
      y << (u ? ", " : "") << user_of(u);
    }
    y << "]\n";
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

std::string summary(const std::vector<double>& v) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms",
                quantile(v, 0.5), quantile(v, 0.9), quantile(v, 0.99), quantile(v, 1.0));
  return buf;
}

int run(const Options& o, const std::string& dir) {
  FakeDingTalkOptions fake_options;
  fake_options.stream = FakeStreamOptions{};
  FakeDingTalk fake(fake_options);
  WebhookSink sink(k_secret);
  const int readers = (o.reads + o.messages - 1) / o.messages;
  for (int m = 0; m < o.messages; ++m) {
    fake.add_message(key_of(m), FakeMessage{});
  }
  const std::string state = dir + "/push.db";
  for (const char* suffix : {"", "-wal", "-shm", ".lock"}) {
    std::filesystem::remove(state + suffix);
  }
  write_config(dir, state, fake, sink, o.messages, readers);
  ChildProcess daemon({o.daemon, "--config", dir + "/push.yaml", "--log-level", "warn"},
                      dir + "/push.log");
  if (!rrd::testing::wait_until(
          [&] {
            return fake.stream().stats().connections_open > 0 && fake.query_calls() >= o.messages;
          },
          k_start_timeout)) {
    std::cerr << "push: the daemon did not connect and poll every message\n" << daemon.log();
    return 1;
  }
  const double cpu_before = cpu_seconds_of(daemon.pid());

  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int> gap(0, 2 * o.gap_ms);
  std::map<ReadKey, SteadyTime> read_at;
  const SteadyTime first_read = SteadyClock::now();
  for (int i = 0; i < o.reads; ++i) {
    const ReadKey k{key_of(i % o.messages), user_of(i / o.messages)};
    read_at[k] = SteadyClock::now();
    fake.read(k.first, k.second);
    std::this_thread::sleep_for(std::chrono::milliseconds(gap(rng)));
  }
  const double read_seconds = ms_between(first_read, SteadyClock::now()) / 1000.0;

  // The first event that reports each read, and how.
  std::map<ReadKey, std::pair<SteadyTime, std::string>> reported;
  const auto collect = [&] {
    for (const auto& d : sink.accepted()) {
      if (d.json["type"] != "message.read") {
        continue;
      }
      const std::string key = d.json["data"]["process_query_key"];
      for (const auto& n : d.json["data"]["newly_read"]) {
        const ReadKey k{key, n["user_id"].get<std::string>()};
        const auto it = reported.find(k);
        if (it == reported.end() || d.arrived < it->second.first) {
          reported[k] = {d.arrived, n["via"].get<std::string>()};
        }
      }
    }
  };
  const bool all = rrd::testing::wait_until(
      [&] {
        collect();
        return reported.size() >= read_at.size();
      },
      k_drain_timeout);
  const double cpu = cpu_seconds_of(daemon.pid()) - cpu_before;
  daemon.stop();
  collect();

  // When the fake sent each read's EVENT frame (its first delivery).
  std::map<ReadKey, SteadyTime> sent_at;
  int redelivered = 0;
  for (const auto& e : fake.stream().events()) {
    if (e.event_type != "robot_msg_read" || e.deliveries.empty()) {
      continue;
    }
    redelivered += e.redeliveries;
    sent_at[{e.data.value("processQueryKey", ""), e.data.value("userId", "")}] =
        e.deliveries.front().sent_at;
  }

  std::vector<double> total;
  std::vector<double> to_frame;
  std::vector<double> frame_to_sink;
  int by_push = 0;
  for (const auto& [k, at] : read_at) {
    const auto r = reported.find(k);
    if (r == reported.end()) {
      continue;
    }
    by_push += r->second.second == "push" ? 1 : 0;
    total.push_back(ms_between(at, r->second.first));
    const auto s = sent_at.find(k);
    if (s != sent_at.end()) {
      to_frame.push_back(ms_between(at, s->second));
      frame_to_sink.push_back(ms_between(s->second, r->second.first));
    }
  }
  std::printf("push: %zu reads in %.1f s (%d messages, %d readers each), %zu reported (%d by "
              "push), %d redelivered; daemon CPU %.3f s, %.2f ms per read\n",
              read_at.size(), read_seconds, o.messages, readers, total.size(), by_push, redelivered,
              cpu, cpu * 1000.0 / static_cast<double>(std::max<std::size_t>(1, total.size())));
  std::printf("push: read -> event at the sink: %s\n", summary(total).c_str());
  std::printf("push:   read -> EVENT frame sent: %s\n", summary(to_frame).c_str());
  std::printf("push:   EVENT frame -> event at the sink: %s\n", summary(frame_to_sink).c_str());
  if (!all) {
    std::cerr << "push: only " << reported.size() << " of " << read_at.size()
              << " reads were reported\n"
              << daemon.log();
    return 1;
  }
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: bench-push-latency DAEMON [--reads N] [--messages M] [--gap-ms G] "
                 "[--state-dir DIR]\n";
    return 2;
  }
  Options o;
  o.daemon = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--reads") {
      o.reads = std::atoi(value.c_str());
    } else if (flag == "--messages") {
      o.messages = std::atoi(value.c_str());
    } else if (flag == "--gap-ms") {
      o.gap_ms = std::atoi(value.c_str());
    } else if (flag == "--state-dir") {
      o.state_dir = value;
    } else {
      std::cerr << "bench-push-latency: unknown option " << flag << "\n";
      return 2;
    }
  }
  if (o.reads < 1 || o.messages < 1 || o.messages > o.reads || o.gap_ms < 0) {
    std::cerr << "bench-push-latency: need 1 <= --messages <= --reads and --gap-ms >= 0\n";
    return 2;
  }
  std::string dir = o.state_dir;
  if (dir.empty()) {
    dir = "/var/tmp/rrd-bench-push-" + std::to_string(getpid());
  }
  std::filesystem::create_directories(dir);
  const int rc = run(o, dir);
  if (o.state_dir.empty()) {
    std::filesystem::remove_all(dir);
  }
  return rc;
}
