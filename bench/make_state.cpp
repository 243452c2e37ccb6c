// bench-make-state: writes a state database holding N watched messages, as if
// they had been added through the HTTP API (source api: no YAML file to
// reconcile them against), for the scale benchmark's start-up figures.
//
//   bench-make-state PATH COUNT [--readers R] [--prefix P]
//
// Keys are <prefix>0000000, <prefix>0000001, ... (bench-dingtalk's keys);
// each message already has R read user ids, each with its read time and how
// it became known (by poll and by push in turn), and is due now. The
// database is written by the daemon's own store, so it has the current
// schema (read_info and call_months of migration 2 included); the month's
// call count is set to COUNT calls (one first poll each), as a daemon that
// polled every message once this month would have left it.
#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/scheduler/budget.hpp"
#include "readreceiptd/store/store.hpp"
#include "readreceiptd/tracker/tracker.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

namespace {
constexpr long k_batch = 10'000;
// How long ago the readers of each message read it.
constexpr rrd::Millis k_read_ago{60'000};
} // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: bench-make-state PATH COUNT [--readers R] [--prefix P]\n";
    return 2;
  }
  const std::string path = argv[1];
  const long count = std::atol(argv[2]);
  int readers = 0;
  std::string prefix = "bench-";
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--readers") {
      readers = std::atoi(argv[i + 1]);
    } else if (flag == "--prefix") {
      prefix = argv[i + 1];
    } else {
      std::cerr << "bench-make-state: unknown option " << flag << "\n";
      return 2;
    }
  }
  for (const char* suffix : {"", "-wal", "-shm", ".lock"}) {
    std::filesystem::remove(path + suffix);
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto store = rrd::store::Store::open(path);
  const rrd::TimePoint now = rrd::RealClock().now();
  std::vector<rrd::store::Commit> batch;
  batch.reserve(k_batch);
  for (long i = 0; i < count; ++i) {
    rrd::MessageSpec spec;
    char digits[24];
    std::snprintf(digits, sizeof digits, "%07ld", i);
    spec.process_query_key = prefix + digits;
    spec.robot_code = "dingfakerobot";
    rrd::store::Commit c;
    c.message = rrd::tracker::new_record(spec, rrd::MessageSource::api, now);
    for (int r = 0; r < readers; ++r) {
      c.message.read_user_ids.push_back("user" + std::to_string(r + 1));
      c.message.read_info.push_back(
          rrd::ReadInfo{now - k_read_ago, r % 2 == 0 ? rrd::ReadVia::poll : rrd::ReadVia::push});
    }
    batch.push_back(std::move(c));
    if (static_cast<long>(batch.size()) == k_batch || i + 1 == count) {
      store->commit_all(batch);
      batch.clear();
    }
  }
  store->save_month(
      rrd::store::MonthCalls{rrd::scheduler::month_of(now).name, count, count, false});
  store.reset();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("wrote %ld messages to %s in %.1f s (%.0f MiB)\n", count, path.c_str(), seconds,
              static_cast<double>(std::filesystem::file_size(path)) / (1024.0 * 1024.0));
  return 0;
}
