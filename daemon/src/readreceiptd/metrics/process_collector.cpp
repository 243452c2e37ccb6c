#include "readreceiptd/metrics/process_collector.hpp"

#include <charconv>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <limits>
#include <memory>
#include <unistd.h>

namespace rrd::metrics {

namespace {

// procfs files are small; a file larger than this is not one of them.
constexpr std::size_t k_max_proc_file_bytes = 64 * 1024;

std::optional<std::string> read_small_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return std::nullopt;
  }
  std::string text(k_max_proc_file_bytes, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (in.bad()) {
    return std::nullopt;
  }
  return text;
}

template <typename T> std::optional<T> to_number(std::string_view s) {
  T value{};
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) {
    return std::nullopt;
  }
  return value;
}

std::vector<std::string_view> split_spaces(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n')) {
      ++i;
    }
    const std::size_t start = i;
    while (i < s.size() && s[i] != ' ' && s[i] != '\t' && s[i] != '\n') {
      ++i;
    }
    if (i > start) {
      out.push_back(s.substr(start, i - start));
    }
  }
  return out;
}

std::optional<std::size_t> count_open_fds(const std::string& dir) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(opendir(dir.c_str()), &closedir);
  if (!d) {
    return std::nullopt;
  }
  std::size_t n = 0;
  while (const dirent* e = readdir(d.get())) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
      ++n;
    }
  }
  return n;
}

prometheus::MetricFamily family(std::string name, std::string help, prometheus::MetricType type,
                                double value) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(std::move(m));
  return f;
}

} // namespace

std::optional<ProcStat> parse_proc_stat(std::string_view text) {
  const auto close = text.rfind(')');
  if (close == std::string_view::npos) {
    return std::nullopt;
  }
  // After the ')' come fields 3 ("state") onwards.
  const auto fields = split_spaces(text.substr(close + 1));
  constexpr std::size_t k_first = 3;
  auto field = [&](std::size_t number) -> std::string_view {
    const std::size_t i = number - k_first;
    return i < fields.size() ? fields[i] : std::string_view{};
  };
  const auto utime = to_number<std::uint64_t>(field(14));
  const auto stime = to_number<std::uint64_t>(field(15));
  const auto start = to_number<std::uint64_t>(field(22));
  const auto vsize = to_number<std::uint64_t>(field(23));
  const auto rss = to_number<std::int64_t>(field(24));
  if (!utime || !stime || !start || !vsize || !rss) {
    return std::nullopt;
  }
  return ProcStat{*utime, *stime, *start, *vsize, *rss};
}

std::optional<std::int64_t> parse_boot_time(std::string_view text) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) {
      end = text.size();
    }
    const auto words = split_spaces(text.substr(pos, end - pos));
    if (words.size() == 2 && words[0] == "btime") {
      return to_number<std::int64_t>(words[1]);
    }
    pos = end + 1;
  }
  return std::nullopt;
}

std::optional<std::uint64_t> parse_max_open_files(std::string_view text) {
  constexpr std::string_view k_label = "Max open files";
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) {
      end = text.size();
    }
    const std::string_view line = text.substr(pos, end - pos);
    if (line.substr(0, k_label.size()) == k_label) {
      const auto words = split_spaces(line.substr(k_label.size()));
      if (words.empty()) {
        return std::nullopt;
      }
      if (words[0] == "unlimited") {
        return std::numeric_limits<std::uint64_t>::max();
      }
      return to_number<std::uint64_t>(words[0]);
    }
    pos = end + 1;
  }
  return std::nullopt;
}

ProcessCollector::ProcessCollector(std::string proc_root)
    : m_root(std::move(proc_root)), m_ticks_per_second(sysconf(_SC_CLK_TCK)),
      m_page_size(sysconf(_SC_PAGESIZE)) {
  const auto stat = read_small_file(m_root + "/self/stat");
  const auto system_stat = read_small_file(m_root + "/stat");
  if (stat && system_stat && m_ticks_per_second > 0) {
    const auto parsed = parse_proc_stat(*stat);
    const auto boot = parse_boot_time(*system_stat);
    if (parsed && boot) {
      m_start_time_seconds =
          static_cast<double>(*boot) +
          static_cast<double>(parsed->starttime_ticks) / static_cast<double>(m_ticks_per_second);
    }
  }
}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  if (const auto text = read_small_file(m_root + "/self/stat")) {
    if (const auto stat = parse_proc_stat(*text)) {
      if (m_ticks_per_second > 0) {
        out.push_back(family("process_cpu_seconds_total",
                             "Total user and system CPU time spent in seconds.",
                             MetricType::Counter,
                             static_cast<double>(stat->utime_ticks + stat->stime_ticks) /
                                 static_cast<double>(m_ticks_per_second)));
      }
      out.push_back(family("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                           MetricType::Gauge, static_cast<double>(stat->vsize_bytes)));
      if (m_page_size > 0) {
        out.push_back(family(
            "process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge,
            static_cast<double>(stat->rss_pages) * static_cast<double>(m_page_size)));
      }
    }
  }
  if (const auto fds = count_open_fds(m_root + "/self/fd")) {
    out.push_back(family("process_open_fds", "Number of open file descriptors.", MetricType::Gauge,
                         static_cast<double>(*fds)));
  }
  if (const auto text = read_small_file(m_root + "/self/limits")) {
    if (const auto max = parse_max_open_files(*text)) {
      out.push_back(family("process_max_fds", "Maximum number of open file descriptors.",
                           MetricType::Gauge, static_cast<double>(*max)));
    }
  }
  if (m_start_time_seconds) {
    out.push_back(family("process_start_time_seconds",
                         "Start time of the process since unix epoch in seconds.",
                         MetricType::Gauge, *m_start_time_seconds));
  }
  return out;
}

} // namespace rrd::metrics
