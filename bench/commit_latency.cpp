// bench-commit-latency: how long Store::commit_all() takes for a loop turn's
// worth of commits, on SQLite (a file: WAL, synchronous=FULL, as the daemon
// runs it) or on PostgreSQL (a libpq connection string).
//
//   bench-commit-latency sqlite PATH [--rounds N]
//   bench-commit-latency postgres CONNINFO [--rounds N]
//
// For 1, 10 and 100 commits per commit_all, each commit a message with a new
// read and one event routed to two webhooks (a poll that found a reader),
// runs N rounds (default 200) of each way the daemon can commit, and prints
// one line per way and batch size: the median, p90 and p99 wall time in
// milliseconds of
//   commit_all   a commit that waits for the database;
//   begin        begin_commit_all(), what the daemon's loop waits for (on
//                PostgreSQL the commit is in flight when it returns);
//   landed       begin_commit_all() and finish_commit(true): until it has
//                landed.
// The database is emptied first (SQLite: a new file; PostgreSQL: the
// tables).
#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/store/store.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace {

constexpr int k_default_rounds = 200;
constexpr int k_warmup_rounds = 5;
constexpr std::size_t k_batch_sizes[] = {1, 10, 100};

rrd::store::Commit make_commit(std::size_t serial, rrd::TimePoint now) {
  const std::string n = std::to_string(serial);
  rrd::store::Commit c;
  rrd::MessageRecord& m = c.message;
  m.spec.process_query_key = "bench-" + n;
  m.spec.robot_code = "dingfakerobot";
  m.spec.expected_readers = {"user1", "user2", "user3"};
  m.spec.labels = {{"campaign", "bench"}};
  m.sent_at = now;
  m.added_at = now;
  m.read_user_ids = {"user1"};
  m.read_info = {rrd::ReadInfo{now, rrd::ReadVia::poll}};
  m.last_sequence = 1;
  m.send_status = "SUCCESS";
  m.last_poll = now;
  m.next_poll = now + std::chrono::seconds(60);
  rrd::OutboxEvent e;
  e.id = "evt_" + n;
  e.process_query_key = m.spec.process_query_key;
  e.type = rrd::EventType::message_read;
  e.sequence = 1;
  e.created_at = now;
  e.body = R"({"type":"message.read","data":{"process_query_key":"bench-)" + n +
           R"(","read_user_ids":["user1"],"sequence":1}})";
  c.events.push_back(e);
  c.routes.push_back({"ops", "audit"});
  return c;
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: bench-commit-latency sqlite PATH | postgres CONNINFO [--rounds N]\n";
    return 2;
  }
  const std::string backend = argv[1];
  const std::string where = argv[2];
  int rounds = k_default_rounds;
  if (argc >= 5 && std::string(argv[3]) == "--rounds") {
    rounds = std::max(1, std::atoi(argv[4]));
  }
  std::unique_ptr<rrd::store::Store> store;
  try {
    if (backend == "sqlite") {
      for (const char* suffix : {"", "-wal", "-shm", ".lock"}) {
        std::filesystem::remove(where + suffix);
      }
      store = rrd::store::Store::open(where);
    } else if (backend == "postgres") {
      rrd::store::PostgresOptions options;
      options.conninfo = where;
      store = rrd::store::Store::open_postgres(options);
    } else {
      std::cerr << "bench-commit-latency: unknown backend " << backend << "\n";
      return 2;
    }
  } catch (const rrd::store::StoreError& e) {
    std::cerr << "bench-commit-latency: " << e.what() << "\n";
    return 1;
  }
  if (store->message_count() != 0) {
    std::cerr << "bench-commit-latency: the database is not empty\n";
    return 1;
  }
  const rrd::TimePoint now = rrd::RealClock().now();
  std::size_t serial = 0;
  std::printf("%-8s %-10s %8s %7s %10s %10s %10s\n", "store", "call", "commits", "rounds",
              "median_ms", "p90_ms", "p99_ms");
  enum class Way { commit_all, begin, landed };
  for (const auto& [way, name] :
       {std::pair{Way::commit_all, "commit_all"}, {Way::begin, "begin"}, {Way::landed, "landed"}}) {
    for (const std::size_t size : k_batch_sizes) {
      std::vector<double> ms;
      ms.reserve(static_cast<std::size_t>(rounds));
      for (int r = 0; r < k_warmup_rounds + rounds; ++r) {
        std::vector<rrd::store::Commit> batch;
        batch.reserve(size);
        for (std::size_t i = 0; i < size; ++i) {
          batch.push_back(make_commit(serial++, now));
        }
        const auto t0 = std::chrono::steady_clock::now();
        if (way == Way::commit_all) {
          store->commit_all(batch);
        } else {
          store->begin_commit_all(batch);
          if (way == Way::landed) {
            store->finish_commit(true);
          }
        }
        const auto t1 = std::chrono::steady_clock::now();
        store->finish_commit(true); // begin: lands before the next round
        if (r >= k_warmup_rounds) {
          ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        }
      }
      std::printf("%-8s %-10s %8zu %7d %10.3f %10.3f %10.3f\n", backend.c_str(), name, size, rounds,
                  percentile(ms, 0.5), percentile(ms, 0.9), percentile(ms, 0.99));
    }
  }
  return 0;
}
