// Two real daemons on one real PostgreSQL database (a fresh schema on the
// test server, or a server of the test's own where it restarts it), with one
// fake DingTalk: the leader is killed, paused past its lease, or loses its
// database, or either daemon is killed at random, while simulated people
// read. Nothing may be lost and no two daemons may work at once: every read
// DingTalk served reaches a webhook in exactly one event, repeats carry the
// same webhook-id, sequences have no gaps, and a daemon that is no longer
// the leader starts nothing.
#include "fakes/postgres.hpp"
#include "integration/harness.hpp"

#include <filesystem>
#include <random>
#include <thread>

using namespace rrd::testing;
using namespace std::chrono_literals;

namespace {

// lease_ttl: the shortest the configuration allows, so that takeovers are
// quick.
constexpr auto k_lease_ttl = 2s;
// The SPEC's bound on a takeover after the leader dies.
constexpr auto k_takeover_bound = k_lease_ttl + 2s;
constexpr auto k_completion_deadline = 60s;

std::string message_key(int i) {
  return "pair+" + std::to_string(i) + "/Kna29pdJznx1ghav=";
}

// Simulated people read `messages` messages of `readers` readers each, at
// random moments within `window` of now.
struct Workload {
  std::map<std::string, std::vector<std::string>> readers;
  SteadyTime end;
};

Workload watch_and_schedule(DaemonHarness& h, int messages, int readers,
                            std::chrono::milliseconds window, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Workload w;
  const SteadyTime t0 = SteadyClock::now();
  w.end = t0 + window;
  for (int i = 0; i < messages; ++i) {
    const std::string key = message_key(i);
    auto& users = w.readers[key];
    for (int r = 0; r < readers; ++r) {
      users.push_back("user" + std::to_string(i) + "-" + std::to_string(r));
    }
    h.watch(key, users);
    for (const auto& u : users) {
      const auto at = std::chrono::milliseconds(
          std::uniform_int_distribution<std::int64_t>(0, window.count())(rng));
      h.dingtalk.schedule_read(key, u, t0 + at);
    }
  }
  return w;
}

// The (key, user) pairs newly read in the message.read events `sink`
// accepted, with the webhook-ids that reported each.
void collect_reads(const WebhookSink& sink,
                   std::map<std::pair<std::string, std::string>, std::set<std::string>>& out) {
  for (const auto& d : sink.accepted()) {
    if (d.json["type"] != "message.read") {
      continue;
    }
    for (const auto& u : d.json["data"]["newly_read_user_ids"]) {
      out[{d.json["data"]["process_query_key"].get<std::string>(), u.get<std::string>()}].insert(
          d.webhook_id);
    }
  }
}

// Two daemons, 0 and 1, with the same configuration but for their API
// address (and, when set, their webhook's URL), on the harness's fake
// DingTalk and one PostgreSQL database.
class Pair {
public:
  Pair(DaemonHarness& h, const std::string& conninfo) : m_h(h) {
    h.state_yaml = "  postgres: \"" + conninfo +
                   "\"\n  lease_ttl: " + std::to_string(k_lease_ttl.count()) + "s\n";
    for (auto& a : m_api) {
      a = "127.0.0.1:" + std::to_string(free_port());
    }
  }
  ~Pair() {
    for (auto& d : m_daemons) {
      if (d && d->running()) {
        d->kill_hard();
      }
    }
  }
  Pair(const Pair&) = delete;
  Pair& operator=(const Pair&) = delete;

  // The webhook URL daemon `i` delivers to ("" : the harness's sink).
  void set_webhook_url(int i, std::string url) { m_webhook_url[i] = std::move(url); }

  void start(int i) {
    m_h.api_listen = m_api[i];
    m_h.webhook_url = m_webhook_url[i];
    write_file(m_h.dir.file("app_secret"), "fake-app-secret\n");
    const std::string config = m_h.dir.file("daemon" + std::to_string(i) + ".yaml");
    write_file(config, m_h.config_text());
    m_daemons[i] = std::make_unique<ChildProcess>(
        std::vector<std::string>{RRD_DAEMON_PATH, "--config", config, "--log-level", "debug"},
        log_path(i), m_h.env);
  }
  ChildProcess& daemon(int i) { return *m_daemons[i]; }
  bool running(int i) const { return m_daemons[i] && m_daemons[i]->running(); }
  void kill(int i) { m_daemons[i]->kill_hard(); }
  int stop(int i) { return m_daemons[i]->stop(std::chrono::seconds(10)); }

  ApiAnswer api(int i, const std::string& method, const std::string& target,
                const std::string& body = "") {
    m_h.api_listen = m_api[i];
    return m_h.api(method, target, body);
  }
  // "leader", "standby", or "" while it does not answer.
  std::string role(int i) {
    const auto a = api(i, "GET", "/v1/status");
    const auto j = a.json();
    return a.status == 200 && j.is_object() ? j.value("role", "") : "";
  }
  bool wait_for_role(int i, const std::string& role, std::chrono::milliseconds timeout = k_wait) {
    return wait_until([&] { return this->role(i) == role; }, timeout);
  }
  const std::string& api_address(int i) const { return m_api[i]; }
  std::string log_path(int i) const { return m_h.dir.file("daemon" + std::to_string(i) + ".log"); }
  std::string log(int i) const { return read_file(log_path(i)); }
  std::string logs() const { return "daemon 0:\n" + log(0) + "\ndaemon 1:\n" + log(1); }

private:
  DaemonHarness& m_h;
  std::array<std::string, 2> m_api;
  std::array<std::string, 2> m_webhook_url;
  std::array<std::unique_ptr<ChildProcess>, 2> m_daemons;
};

// Every read DingTalk served reached a webhook (one of `sinks`) in exactly
// one event (repeats of that event allowed), and nothing else did.
bool all_served_delivered(const DaemonHarness& h, const std::vector<const WebhookSink*>& sinks) {
  std::map<std::pair<std::string, std::string>, std::set<std::string>> reads;
  for (const auto* s : sinks) {
    collect_reads(*s, reads);
  }
  for (const auto& served : h.dingtalk.reads_served()) {
    if (reads.count(served) == 0) {
      return false;
    }
  }
  return true;
}

void check_exactly_once(const DaemonHarness& h, const Workload& w,
                        const std::vector<const WebhookSink*>& sinks) {
  std::map<std::pair<std::string, std::string>, std::set<std::string>> reads;
  for (const auto* s : sinks) {
    collect_reads(*s, reads);
  }
  for (const auto& served : h.dingtalk.reads_served()) {
    INFO("served " << served.first << " " << served.second);
    REQUIRE(reads.count(served) == 1);
    CHECK(reads.at(served).size() == 1); // one event reports it, whoever delivered it
  }
  std::size_t expected = 0;
  for (const auto& entry : w.readers) {
    expected += entry.second.size();
  }
  CHECK(reads.size() == expected); // every scheduled read, nothing else
}

std::optional<std::string> test_server() {
  auto server = test_postgres();
  if (!server) {
    if (postgres_required()) {
      FAIL("CI=true, but RRD_TEST_POSTGRES is not set (ctest starts a server for these tests)");
    }
    MESSAGE("skipped: RRD_TEST_POSTGRES is not set (a libpq connection string to a test server)");
  }
  return server;
}

} // namespace

TEST_CASE("postgres: a pair: one leads, the standby answers reads and refuses writes naming it, "
          "SIGKILL of the leader: the standby leads within lease_ttl + 2 s, nothing lost") {
  const auto server = test_server();
  if (!server) {
    return;
  }
  PgSchema schema(*server);
  DaemonHarness h;
  h.requests_per_second = 100;
  const Workload w = watch_and_schedule(h, 6, 6, 10s, 20261202);
  Pair pair(h, schema.conninfo());

  pair.start(0);
  REQUIRE_MESSAGE(pair.wait_for_role(0, "leader"), pair.logs());
  pair.start(1);
  REQUIRE_MESSAGE(pair.wait_for_role(1, "standby"), pair.logs());
  CHECK(pair.role(0) == "leader");

  // The standby: healthy, not ready, GETs from the database, writes refused
  // with the leader named.
  CHECK(pair.api(1, "GET", "/healthz").status == 200);
  const ApiAnswer ready = pair.api(1, "GET", "/readyz");
  CHECK(ready.status == 503);
  CHECK(ready.body.find("standby") != std::string::npos);
  CHECK(pair.api(0, "GET", "/readyz").status == 200);
  const auto status = pair.api(1, "GET", "/v1/status").json();
  CHECK(status["leader"].get<std::string>().find("(API " + pair.api_address(0) + ")") !=
        std::string::npos);
  CHECK(status["messages"]["tracking"].get<int>() + status["messages"]["stopped"].get<int>() == 6);
  const ApiAnswer listed = pair.api(1, "GET", "/v1/messages?limit=4");
  REQUIRE(listed.status == 200);
  CHECK(listed.json()["messages"].size() == 4);
  CHECK(pair.api(1, "GET", "/v1/messages/pair%2B2%2FKna29pdJznx1ghav%3D").status == 200);
  const ApiAnswer refused =
      pair.api(1, "POST", "/v1/messages", R"({"process_query_key": "api-added"})");
  CHECK(refused.status == 503);
  CHECK(refused.json()["leader"].get<std::string>().find(pair.api_address(0)) != std::string::npos);

  // Mid-run: some reads delivered, more to come.
  REQUIRE(wait_until([&] { return h.sink.accepted().size() >= 5; }, k_wait));
  pair.kill(0);
  const SteadyTime killed = SteadyClock::now();
  REQUIRE_MESSAGE(pair.wait_for_role(1, "leader", k_takeover_bound + 5s), pair.logs());
  const auto took =
      std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - killed);
  MESSAGE("the standby led " << took.count() << " ms after the leader was killed (lease_ttl "
                             << k_lease_ttl.count() << " s)");
  CHECK(took <= k_takeover_bound);

  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        return SteadyClock::now() > w.end && all_served_delivered(h, {&h.sink}) &&
                               h.dingtalk.reads_served().size() == 36;
                      },
                      k_completion_deadline),
                  pair.logs());
  CHECK(pair.stop(1) == 0);
  check_exactly_once(h, w, {&h.sink});
  check_sequences(h.sink);
  check_history(h.sink);
  CHECK(schema.text("SELECT count(*) FROM deliveries WHERE state <> 'delivered'") == "0");
}

TEST_CASE("postgres: a pair: the leader paused past its lease starts nothing after it wakes and "
          "becomes a standby") {
  const auto server = test_server();
  if (!server) {
    return;
  }
  PgSchema schema(*server);
  DaemonHarness h;
  h.requests_per_second = 100;
  const Workload w = watch_and_schedule(h, 6, 6, 12s, 20261203);
  // Each daemon delivers to a sink of its own: what the paused one sends
  // after it wakes would show there.
  WebhookSink sink0(k_test_secret);
  Pair pair(h, schema.conninfo());
  pair.set_webhook_url(0, sink0.url());

  pair.start(0);
  REQUIRE_MESSAGE(pair.wait_for_role(0, "leader"), pair.logs());
  pair.start(1);
  REQUIRE_MESSAGE(pair.wait_for_role(1, "standby"), pair.logs());
  REQUIRE(wait_until([&] { return sink0.accepted().size() >= 5; }, k_wait));

  pair.daemon(0).signal(SIGSTOP);
  REQUIRE_MESSAGE(pair.wait_for_role(1, "leader", k_takeover_bound + 5s), pair.logs());
  // Reads go on; the new leader reports them. Whatever the paused daemon
  // had on the wire has landed by now.
  REQUIRE(wait_until([&] { return h.sink.accepted().size() >= 3; }, k_wait));
  const std::size_t at_wake = sink0.delivery_count();
  const std::string events_at_wake = schema.text("SELECT count(*) FROM events");
  pair.daemon(0).signal(SIGCONT);
  REQUIRE_MESSAGE(pair.wait_for_role(0, "standby"), pair.logs());
  CHECK(pair.role(1) == "leader");
  CHECK(pair.api(0, "GET", "/readyz").status == 503);
  CHECK(pair.log(0).find("stepped down, now a standby") != std::string::npos);

  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        return SteadyClock::now() > w.end &&
                               all_served_delivered(h, {&h.sink, &sink0}) &&
                               h.dingtalk.reads_served().size() == 36;
                      },
                      k_completion_deadline),
                  pair.logs());
  // Nothing from the old leader after it woke.
  CHECK(sink0.delivery_count() == at_wake);
  CHECK(pair.stop(0) == 0);
  CHECK(pair.stop(1) == 0);
  // Every event in the database was made by one leader or the other, and
  // each read is in exactly one of them: the old leader committed nothing
  // of what it polled or was pushed after it woke.
  CHECK(std::stoi(schema.text("SELECT count(*) FROM events")) >= std::stoi(events_at_wake));
  check_exactly_once(h, w, {&h.sink, &sink0});
  std::set<std::string> ids;
  for (const auto* s : {&h.sink, &sink0}) {
    for (const auto& d : s->accepted()) {
      ids.insert(d.webhook_id);
    }
  }
  CHECK(schema.text("SELECT count(*) FROM events") == std::to_string(ids.size()));
  CHECK(schema.text("SELECT count(*) FROM deliveries WHERE state <> 'delivered'") == "0");
}

TEST_CASE("postgres: a pair survives its database going away and coming back, nothing lost") {
  const auto server = test_server();
  if (!server) {
    return;
  }
  OwnPostgres own(std::string(RRD_SOURCE_DIR) + "/tests/postgres/throwaway.sh");
  const auto run = [&own](const std::string& action) { return own.run(action); };
  const std::string conninfo = own.conninfo();

  DaemonHarness h;
  h.requests_per_second = 100;
  const Workload w = watch_and_schedule(h, 6, 6, 14s, 20261204);
  Pair pair(h, conninfo);
  pair.start(0);
  REQUIRE_MESSAGE(pair.wait_for_role(0, "leader"), pair.logs());
  pair.start(1);
  REQUIRE_MESSAGE(pair.wait_for_role(1, "standby"), pair.logs());
  REQUIRE(wait_until([&] { return h.sink.accepted().size() >= 5; }, k_wait));

  // Down for longer than the lease: the leader cannot renew and stops.
  REQUIRE(run("down") == 0);
  std::this_thread::sleep_for(k_lease_ttl + 2s);
  CHECK(pair.running(0));
  CHECK(pair.running(1));
  CHECK(pair.api(0, "GET", "/readyz").status == 503);
  CHECK(pair.api(1, "GET", "/readyz").status == 503);
  REQUIRE(run("up") == 0);
  REQUIRE_MESSAGE(
      wait_until([&] { return pair.role(0) == "leader" || pair.role(1) == "leader"; }, k_wait),
      pair.logs());

  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        return SteadyClock::now() > w.end && all_served_delivered(h, {&h.sink}) &&
                               h.dingtalk.reads_served().size() == 36;
                      },
                      k_completion_deadline),
                  pair.logs());
  CHECK(pair.running(0));
  CHECK(pair.running(1));
  CHECK(pair.stop(0) == 0);
  CHECK(pair.stop(1) == 0);
  check_exactly_once(h, w, {&h.sink});
  check_sequences(h.sink);
  check_history(h.sink);
}

TEST_CASE("postgres: crash: SIGKILL of either daemon at random loses no read and repeats events "
          "only as they were") {
  const auto server = test_server();
  if (!server) {
    return;
  }
  std::uint64_t seed = 20261205;
  if (const char* env = std::getenv("RRD_CRASH_SEED"); env != nullptr && *env != '\0') {
    seed = std::strtoull(env, nullptr, 10);
  }
  MESSAGE("crash test seed: " << seed << " (replay with RRD_CRASH_SEED=" << seed << ")");
  std::mt19937_64 rng(seed);
  PgSchema schema(*server);
  DaemonHarness h;
  h.requests_per_second = 100;
  // Kills land while deliveries are in flight.
  h.sink.set_delay(150ms);
  const Workload w = watch_and_schedule(h, 10, 6, 20s, seed);
  Pair pair(h, schema.conninfo());
  pair.start(0);
  pair.start(1);
  int kills = 0;
  while (SteadyClock::now() < w.end) {
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(300, 2'500)(rng)));
    const int victim = std::uniform_int_distribution<int>(0, 1)(rng);
    REQUIRE_MESSAGE(pair.running(victim), "a daemon died by itself:\n" << pair.logs());
    pair.kill(victim);
    ++kills;
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 1'000)(rng)));
    pair.start(victim);
  }
  MESSAGE("killed " << kills << " times; " << h.sink.delivery_count() << " deliveries so far");
  // The last one restarted may still be starting (a SIGTERM in its first
  // moments, before main, ends it as the signal's default does): both
  // answer before the run ends.
  REQUIRE_MESSAGE(
      wait_until([&] { return !pair.role(0).empty() && !pair.role(1).empty(); }, k_wait),
      pair.logs());
  REQUIRE_MESSAGE(wait_until(
                      [&] {
                        return all_served_delivered(h, {&h.sink}) &&
                               h.dingtalk.reads_served().size() == 60;
                      },
                      k_completion_deadline),
                  pair.logs());
  CHECK_MESSAGE(wait_until(
                    [&] {
                      return schema.text("SELECT count(*) FROM deliveries WHERE state <> "
                                         "'delivered'") == "0";
                    },
                    k_completion_deadline),
                "deliveries left undelivered");
  CHECK_MESSAGE(pair.stop(0) == 0, pair.logs());
  CHECK_MESSAGE(pair.stop(1) == 0, pair.logs());
  check_exactly_once(h, w, {&h.sink});
  check_sequences(h.sink);
  check_history(h.sink);
}
