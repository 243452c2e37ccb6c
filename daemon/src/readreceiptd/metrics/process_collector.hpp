// ProcessCollector: the standard process metrics, with the names and types of
// the Prometheus Go client's process collector, read from /proc at scrape
// time:
//   process_cpu_seconds_total      counter  user + system CPU time
//   process_resident_memory_bytes  gauge    resident set size
//   process_virtual_memory_bytes   gauge    virtual memory size
//   process_open_fds               gauge    open file descriptors
//   process_max_fds                gauge    the soft limit on open files
//   process_start_time_seconds     gauge    Unix time the process started
// A value whose source cannot be read is left out of that scrape.
//
// Thread-safe: Collect() only reads files and immutable members; it runs on
// the metrics exposer's thread and touches nothing of the daemon's loop.
#pragma once

#include <cstdint>
#include <optional>
#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>
#include <string>
#include <string_view>
#include <vector>

namespace rrd::metrics {

// The fields of /proc/<pid>/stat the collector uses (proc(5) numbering).
struct ProcStat {
  std::uint64_t utime_ticks = 0;     // field 14
  std::uint64_t stime_ticks = 0;     // field 15
  std::uint64_t starttime_ticks = 0; // field 22, clock ticks after boot
  std::uint64_t vsize_bytes = 0;     // field 23
  std::int64_t rss_pages = 0;        // field 24
};

// Parses the text of /proc/<pid>/stat. The command name (field 2) may hold
// spaces and parentheses: fields are counted from the last ')'.
std::optional<ProcStat> parse_proc_stat(std::string_view text);
// The "btime" line of /proc/stat: boot time in Unix seconds.
std::optional<std::int64_t> parse_boot_time(std::string_view text);
// The soft limit of "Max open files" in /proc/<pid>/limits; "unlimited" is
// UINT64_MAX, as the Go client reports it.
std::optional<std::uint64_t> parse_max_open_files(std::string_view text);

class ProcessCollector final : public prometheus::Collectable {
public:
  // `proc_root`: where procfs is mounted; tests point it at a directory that
  // holds `self/stat`, `self/limits`, `self/fd/` and `stat`.
  explicit ProcessCollector(std::string proc_root = "/proc");

  std::vector<prometheus::MetricFamily> Collect() const override;

private:
  std::string m_root;
  long m_ticks_per_second;
  long m_page_size;
  // Computed once: the start time never changes.
  std::optional<double> m_start_time_seconds;
};

} // namespace rrd::metrics
