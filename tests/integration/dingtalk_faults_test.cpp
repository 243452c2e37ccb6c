// DingTalk misbehaving in every way it can: the daemon keeps running, its
// memory stays bounded, and the events it emits are exactly the scenario's
// truth, as a clean run gives them: the same reads, the same stop reasons,
// sequences 1..n, nothing invented from an error page or a partial answer.
#include "integration/harness.hpp"

#include <algorithm>
#include <cstdlib>
#include <thread>

using namespace rrd::testing;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

// The scenario: messages read over a few seconds, each with its known end.
struct Scenario {
  struct Message {
    std::string key;
    std::vector<std::string> expected; // expected readers
    std::vector<std::string> readers;  // who reads (in order)
    std::string stop_reason;           // "" while it keeps being tracked
  };
  std::vector<Message> messages;
  std::string recalled_key;
  std::string expired_key;
  std::string unknown_key;
};

Scenario make_scenario(DaemonHarness& h, SteadyTime t0) {
  Scenario s;
  for (int i = 0; i < 12; ++i) {
    Scenario::Message m;
    m.key = "fault+" + std::to_string(i) + "/Kna29pdJ=";
    const int n = 4 + i % 6; // 4..9 readers: up to 3 pages of 3
    for (int r = 0; r < n; ++r) {
      m.expected.push_back("u" + std::to_string(i) + "-" + std::to_string(r));
    }
    m.readers = m.expected;
    m.stop_reason = "fully_read";
    if (i == 4 || i >= 6) {
      m.readers.pop_back(); // someone never reads: tracked to the end
      m.stop_reason = "";
    }
    if (i == 5) {
      m.readers.pop_back(); // recalled once its readers have been reported
      m.stop_reason = "recalled";
      s.recalled_key = m.key;
    }
    h.watch(m.key, m.expected);
    for (std::size_t r = 0; r < m.readers.size(); ++r) {
      h.dingtalk.schedule_read(m.key, m.readers[r],
                               t0 + std::chrono::milliseconds(400 * (r + 1) + 150 * i));
    }
    s.messages.push_back(std::move(m));
  }
  s.expired_key = "fault-expired";
  h.watch(s.expired_key);
  h.dingtalk.set_ready_at(s.expired_key, t0 + 1h);
  s.unknown_key = "fault-unknown"; // DingTalk does not know it: invalid
  h.messages.push_back({s.unknown_key, {}, ""});
  return s;
}

std::set<std::pair<std::string, std::string>> truth_reads(const Scenario& s) {
  std::set<std::pair<std::string, std::string>> out;
  for (const auto& m : s.messages) {
    for (const auto& r : m.readers) {
      out.emplace(m.key, r);
    }
  }
  return out;
}

// Every kind of fault the fake knows, each on a share of the query calls.
// Throttling answers pause all calls for a second each, so they come rarer.
void set_fault_rates(FakeDingTalk& d, double p) {
  d.set_fault_rate(Fault::error(500, "system.error"), p);
  d.set_fault_rate(Fault::error(503, "ServiceUnavailable"), p);
  d.set_fault_rate(Fault::error(400, "system.error"), p);
  d.set_fault_rate(Fault::throttled(), p / 8);
  // (DingTalk's monthly quota pauses every poll until the month turns: its
  // own test, with a month that turns, is in integration/budget_test.cpp.)
  d.set_fault_rate(Fault::error(403, "Forbidden.AccessDenied.QpmLimitForAppkeyAndApi"), p / 8);
  d.set_fault_rate(Fault::error(429, "Throttling"), p / 8);
  d.set_fault_rate(Fault::html(403), p / 8);
  d.set_fault_rate(Fault::html(200), p / 8);
  d.set_fault_rate(Fault::of(FaultKind::malformed_json), p);
  d.set_fault_rate(Fault::of(FaultKind::truncated_json), p);
  d.set_fault_rate(Fault::of(FaultKind::wrong_shape), p);
  d.set_fault_rate(Fault::of(FaultKind::oversized_body), p);
  Fault chunked = Fault::of(FaultKind::oversized_body);
  chunked.chunked = true;
  chunked.status = 1; // a distinct rate entry
  d.set_fault_rate(chunked, p);
  d.set_fault_rate(Fault::of(FaultKind::endless_body), p / 2);
  d.set_fault_rate(Fault::of(FaultKind::no_answer), p / 2);
  d.set_fault_rate(Fault::of(FaultKind::connection_reset), p);
  d.set_fault_rate(Fault::of(FaultKind::next_token_loop), 2 * p);
  d.set_fault_rate(Fault::of(FaultKind::cursor_invalid), 2 * p);
  d.set_fault_rate(Fault::of(FaultKind::revoke_tokens), p);
  d.set_fault_rate(Fault::slow(1500ms), p / 2); // past request_timeout
}

// The faulty run lasts at least this many query calls, so that memory has
// time to settle, or grow. RRD_FAULT_CALLS=<n> makes it a longer soak.
constexpr int k_default_faulty_calls = 300;

// Built with a sanitizer (as this test and the daemon are, in the sanitizer
// builds), the daemon's resident size includes the sanitizer's own memory:
// AddressSanitizer's quarantine of freed memory (256 MiB by default), shadow
// memory and redzones; ThreadSanitizer's shadow memory, several times what
// the program uses. There the absolute bound only catches gross growth; the
// growth check and LeakSanitizer do the rest.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool k_sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool k_sanitized = true;
#else
constexpr bool k_sanitized = false;
#endif
#else
constexpr bool k_sanitized = false;
#endif

int faulty_calls() {
  if (const char* env = std::getenv("RRD_FAULT_CALLS"); env != nullptr && *env != '\0') {
    return std::max(k_default_faulty_calls, std::atoi(env));
  }
  return k_default_faulty_calls;
}

// One of each kind of fault.
std::vector<Fault> every_fault() {
  Fault chunked = Fault::of(FaultKind::oversized_body);
  chunked.chunked = true;
  return {Fault::error(500, "system.error"),
          Fault::error(503, "ServiceUnavailable"),
          Fault::error(400, "system.error"),
          Fault::throttled(),
          Fault::error(403, "Forbidden.AccessDenied.QpmLimitForAppkeyAndApi"),
          Fault::error(429, "Throttling"),
          Fault::html(403),
          Fault::html(200),
          Fault::of(FaultKind::malformed_json),
          Fault::of(FaultKind::truncated_json),
          Fault::of(FaultKind::wrong_shape),
          Fault::of(FaultKind::oversized_body),
          chunked,
          Fault::of(FaultKind::endless_body),
          Fault::of(FaultKind::no_answer),
          Fault::of(FaultKind::connection_reset),
          Fault::of(FaultKind::next_token_loop),
          Fault::of(FaultKind::cursor_invalid),
          Fault::of(FaultKind::revoke_tokens),
          Fault::slow(1500ms)};
}

struct Run {
  std::vector<std::pair<SteadyTime, long>> rss; // (when, KiB)
  std::vector<QueryRecord> queries;
};

// Runs the scenario to its end; with `faulty`, DingTalk misbehaves all along.
Run run_scenario(bool faulty, DaemonHarness& h, const Scenario& s) {
  h.request_timeout = "1s";
  h.schedule_yaml = "[ { every: 300ms } ]";
  h.requests_per_second = 40;
  if (faulty) {
    set_fault_rates(h.dingtalk, 0.02);
    // And some per request, the first calls included.
    h.dingtalk.inject(Fault::server_error(), 1, Endpoint::token);
    h.dingtalk.inject(Fault::of(FaultKind::connection_reset), 1, Endpoint::token);
    h.dingtalk.inject(Fault::of(FaultKind::no_answer), 2);
    h.dingtalk.inject(Fault::of(FaultKind::endless_body), 2);
    h.dingtalk.inject(Fault::slow(1500ms), 1);
  }
  h.start();
  const auto started = SteadyClock::now();
  Run run;
  const auto truth = truth_reads(s);
  bool recalled = false;
  bool injected = false;
  const auto done = [&] {
    if (faulty && !injected && h.dingtalk.query_calls() >= faulty_calls() / 2) {
      // Every kind once for sure, in the middle of the run, whatever the
      // dice said so far.
      for (const auto& fault : every_fault()) {
        h.dingtalk.inject(fault, 1);
      }
      injected = true;
    }
    if (const auto kib = resident_kib(h.daemon->pid())) {
      run.rss.emplace_back(SteadyClock::now(), *kib);
    }
    const auto delivered = h.reads_delivered();
    if (!recalled) {
      // Recall once every reader of the message has been reported, so that
      // the truth does not depend on timing.
      const auto& m = *std::find_if(s.messages.begin(), s.messages.end(),
                                    [&](const auto& x) { return x.key == s.recalled_key; });
      if (std::all_of(m.readers.begin(), m.readers.end(), [&](const auto& r) {
            return delivered.count({m.key, r}) == 1;
          })) {
        h.dingtalk.set_send_status(m.key, "RECALLED");
        recalled = true;
      }
      return false;
    }
    for (const auto& m : s.messages) {
      if (!m.stop_reason.empty() && !h.stopped_event(m.key)) {
        return false;
      }
    }
    // Enough calls under fire for the memory to settle, if it ever does.
    const bool long_enough = !faulty || h.dingtalk.query_calls() >= faulty_calls();
    return long_enough && h.stopped_event(s.expired_key) && h.stopped_event(s.unknown_key) &&
           std::includes(delivered.begin(), delivered.end(), truth.begin(), truth.end());
  };
  const auto deadline = 120s + std::chrono::milliseconds(200) * faulty_calls();
  REQUIRE_MESSAGE(wait_until(done, deadline), h.log());
  MESSAGE(
      std::string(faulty ? "faulty" : "clean")
      << " run: "
      << std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - started).count()
      << " ms, " << h.dingtalk.query_calls() << " query calls");
  REQUIRE_MESSAGE(h.daemon->running(), h.log());
  h.dingtalk.clear_faults();
  h.stop();
  run.queries = h.dingtalk.queries();
  return run;
}

// What a consumer sees, in a form two runs can be compared by.
struct Outcome {
  std::set<std::pair<std::string, std::string>> reads;
  std::map<std::string, std::string> stops; // key -> reason (detail for invalid/expired)
  bool operator==(const Outcome&) const = default;
};

Outcome outcome_of(const DaemonHarness& h) {
  check_sequences(h.sink);
  const auto stops = check_history(h.sink);
  Outcome o;
  o.reads = h.reads_delivered();
  for (const auto& [key, e] : stops) {
    o.stops[key] =
        e["data"]["reason"].get<std::string>() + " " + e["data"]["detail"].get<std::string>();
  }
  return o;
}

} // namespace

TEST_CASE("dingtalk faults: every kind of bad answer, and the events are those of a clean run") {
  Outcome clean;
  {
    FakeDingTalkOptions options;
    options.page_size = 3;
    DaemonHarness h(options);
    const auto t0 = SteadyClock::now();
    const auto s = make_scenario(h, t0);
    const auto run = run_scenario(false, h, s);
    clean = outcome_of(h);
    CHECK(clean.reads == truth_reads(s));
  }

  FakeDingTalkOptions options;
  options.page_size = 3;
  options.seed = 7;
  DaemonHarness h(options);
  if (k_sanitized) {
    // AddressSanitizer holds freed memory in a quarantine (256 MiB by
    // default) that fills over the whole run, so the resident size grows
    // whatever the daemon does (by 10 MiB between the quarters, once in
    // several runs). A small quarantine is full within seconds, and the
    // growth check measures the daemon again.
    const char* inherited = std::getenv("ASAN_OPTIONS");
    const std::string base = inherited == nullptr ? "" : inherited;
    h.env["ASAN_OPTIONS"] = base + (base.empty() ? "" : ":") + "quarantine_size_mb=16";
  }
  const auto t0 = SteadyClock::now();
  const auto s = make_scenario(h, t0);
  const auto run = run_scenario(true, h, s);
  const Outcome faulty = outcome_of(h);

  // Exactly the clean run's events: the same reads (none invented from an
  // error page or a partial answer), the same stops.
  CHECK(faulty.reads == clean.reads);
  CHECK(faulty.stops == clean.stops);
  CHECK(faulty.stops.at(s.recalled_key) == "recalled ");
  CHECK(faulty.stops.at(s.expired_key) == "expired processQueryKey.expireTime");
  CHECK(faulty.stops.at(s.unknown_key) == "invalid invalid.processQueryKey");
  for (const auto& m : s.messages) {
    CHECK(faulty.stops.count(m.key) == (m.stop_reason.empty() ? 0 : 1));
  }

  // Every kind of fault was met.
  std::map<std::string, int> seen;
  for (const auto& q : run.queries) {
    ++seen[q.code];
  }
  for (const char* code :
       {"system.error", "ServiceUnavailable", "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
        "Forbidden.AccessDenied.QpmLimitForAppkeyAndApi", "Throttling", "html_page",
        "malformed_json", "truncated_json", "wrong_shape", "oversized_body", "endless_body",
        "no_answer", "connection_reset", "next_token_loop", "invalidParameter.cursor.invalid",
        "InvalidAuthentication", "delay"}) {
    INFO("fault " << std::string(code));
    CHECK(seen[code] > 0);
  }
  MESSAGE(run.queries.size() << " query calls, " << h.dingtalk.token_calls() << " token calls");

  // The log tells an operator what happened, without secrets.
  // (Failure counters by reason are the metrics' job.)
  const std::string log = h.log();
  CHECK(log.find("DingTalk is throttling") != std::string::npos);
  CHECK(log.find("page loop") != std::string::npos);
  CHECK(log.find("answer is not the documented JSON") != std::string::npos);
  CHECK(log.find("answer body larger than") != std::string::npos);
  CHECK(log.find("fake-app-secret") == std::string::npos);

  // Memory stays bounded: below an absolute bound all along, and not growing
  // over the second half of the run. Answers of 4 MiB come and go, so the
  // growth is judged by the typical (median) size, not the peaks.
  REQUIRE(run.rss.size() > 20);
  long max_all = 0;
  for (const auto& [at, kib] : run.rss) {
    max_all = std::max(max_all, kib);
  }
  const auto median = [&](std::size_t from, std::size_t to) {
    std::vector<long> v;
    for (std::size_t i = from; i < to; ++i) {
      v.push_back(run.rss[i].second);
    }
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
    return v[v.size() / 2];
  };
  const std::size_t n = run.rss.size();
  const long second_quarter = median(n / 4, n / 2);
  const long last_quarter = median(3 * n / 4, n);
  MESSAGE("VmRSS (KiB): max " << max_all << "; median of the second quarter " << second_quarter
                              << ", of the last quarter " << last_quarter);
  constexpr long k_rss_bound_kib = k_sanitized ? 768 * 1024 : 64 * 1024;
  constexpr long k_rss_growth_kib = 4 * 1024;
  CHECK(max_all < k_rss_bound_kib);
  CHECK(last_quarter <= second_quarter + k_rss_growth_kib);
}
