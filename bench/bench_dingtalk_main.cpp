// bench-dingtalk: the DingTalk stand-in of the throughput and scale
// benchmarks, on 127.0.0.1.
//
//   bench-dingtalk [--mode fixed|fake] [--port N] [--messages N] [--prefix P]
//                  [--token T] [--stats-file PATH] [--delay-ms MS]
//
// --mode fake   the fake DingTalk of the tests (tests/fakes/fake_dingtalk.hpp):
//               validates every request, knows the messages <prefix>0000000..
//               and the fixed access token T. httplib, a thread per
//               connection, and it records every call (memory grows with the
//               calls: keep runs short).
// --mode fixed  one epoll thread that answers every request with the same
//               read list page (no reads, sendStatus SUCCESS, hasMore false):
//               the loopback ceiling, so that the client is what is measured.
//               --delay-ms: each answer leaves MS after its request arrived
//               (a slow DingTalk; fixed mode only).
//
// The first line on stdout is "listening on 127.0.0.1:PORT". With
// --stats-file, "requests N" is written to PATH about every 100 ms (replaced
// atomically). SIGTERM or SIGINT stop it; it then prints its totals.
#include "fakes/fake_dingtalk.hpp"
#include "fixed_server.hpp"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <sys/resource.h>
#include <thread>

namespace {

constexpr int k_stats_period_ms = 100;
constexpr const char* k_fixed_answer =
    R"({"hasMore":false,"readUserIds":[],"sendStatus":"SUCCESS"})";

std::atomic<bool> g_stop{false};
rrd::bench::FixedServer* g_fixed = nullptr;

extern "C" void on_signal(int) {
  g_stop = true;
  if (g_fixed != nullptr) {
    g_fixed->stop();
  }
}

struct Options {
  std::string mode = "fixed";
  int port = 0;
  long messages = 0;
  std::string prefix = "bench-";
  std::string token = "bench-token";
  std::string stats_file;
  int delay_ms = 0;
};

[[noreturn]] void usage(const std::string& problem) {
  std::cerr << "bench-dingtalk: " << problem << "\n"
            << "usage: bench-dingtalk [--mode fixed|fake] [--port N] [--messages N] [--prefix P]\n"
            << "                      [--token T] [--stats-file PATH] [--delay-ms MS]\n";
  std::exit(2);
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) {
      usage(flag + " needs a value");
    }
    const std::string value = argv[++i];
    if (flag == "--mode") {
      if (value != "fixed" && value != "fake") {
        usage("--mode must be fixed or fake");
      }
      o.mode = value;
    } else if (flag == "--port") {
      o.port = std::atoi(value.c_str());
    } else if (flag == "--messages") {
      o.messages = std::atol(value.c_str());
    } else if (flag == "--prefix") {
      o.prefix = value;
    } else if (flag == "--token") {
      o.token = value;
    } else if (flag == "--delay-ms") {
      o.delay_ms = std::atoi(value.c_str());
    } else if (flag == "--stats-file") {
      o.stats_file = value;
    } else {
      usage("unknown option " + flag);
    }
  }
  return o;
}

// The key of message i, as the benchmark scripts generate them.
std::string key_of(const std::string& prefix, long i) {
  char digits[24];
  std::snprintf(digits, sizeof digits, "%07ld", i);
  return prefix + digits;
}

void write_stats(const std::string& path, std::uint64_t requests) {
  if (path.empty()) {
    return;
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "requests " << requests << "\n";
  }
  std::rename(tmp.c_str(), path.c_str());
}

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

struct TickState {
  std::string stats_file;
  int delay_ms = 0;
};

void on_tick(const rrd::bench::FixedServer& server, void* user) {
  write_stats(static_cast<TickState*>(user)->stats_file, server.requests());
}

} // namespace

int main(int argc, char** argv) {
  const Options o = parse_args(argc, argv);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  std::uint64_t served = 0;
  if (o.mode == "fixed") {
    std::optional<rrd::bench::FixedServer> server;
    try {
      server.emplace(o.port, "application/json;charset=utf-8", k_fixed_answer, o.delay_ms);
    } catch (const std::exception& e) {
      std::cerr << "bench-dingtalk: " << e.what() << "\n";
      return 1;
    }
    g_fixed = &*server;
    std::cout << "listening on 127.0.0.1:" << server->port() << std::endl;
    TickState state{o.stats_file};
    server->run(k_stats_period_ms, &on_tick, &state);
    served = server->requests();
    std::cout << "served " << served << " requests, at most " << server->max_connections()
              << " connections at once, " << cpu_seconds() << " CPU seconds" << std::endl;
    g_fixed = nullptr;
    return 0;
  }

  rrd::testing::FakeDingTalkOptions options;
  options.port = o.port;
  std::optional<rrd::testing::FakeDingTalk> fake;
  try {
    fake.emplace(options);
  } catch (const std::exception& e) {
    std::cerr << "bench-dingtalk: " << e.what() << "\n";
    return 1;
  }
  for (long i = 0; i < o.messages; ++i) {
    fake->add_message(key_of(o.prefix, i), rrd::testing::FakeMessage{});
  }
  fake->add_token(o.token);
  std::cout << "listening on 127.0.0.1:" << fake->port() << std::endl;
  while (!g_stop) {
    std::this_thread::sleep_for(std::chrono::milliseconds(k_stats_period_ms));
    write_stats(o.stats_file, static_cast<std::uint64_t>(fake->query_calls()));
  }
  served = static_cast<std::uint64_t>(fake->query_calls());
  const int max_concurrent = fake->max_concurrent_requests();
  fake.reset();
  std::cout << "served " << served << " queries, at most " << max_concurrent << " at once, "
            << cpu_seconds() << " CPU seconds" << std::endl;
  return 0;
}
