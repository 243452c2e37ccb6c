// fake-dingtalk: the fake DingTalk as a stand-alone simulator, for the demo
// and the official SDK's compatibility test. It serves the token APIs and
// the read-status API of each message kind (privateChatMessages/query,
// groupMessages/query, oToMessages/readStatus). Simulated people read the
// scenario's messages at random (seeded) times after start; a message can be
// recalled. The first line on stdout is "listening on 127.0.0.1:PORT".
//
//   fake-dingtalk [--port N] [--app-key K] [--app-secret S] [--robot-code R]
//                 [--page-size N] [--token-lifetime SECONDS] [--seed N]
//                 [--scenario FILE] [--commands]
//
// The scenario (YAML or JSON; fakes/scenario.hpp loads it):
//   messages:
//     - process_query_key: "demo-1"
//       kind: private_chat                   # optional: private_chat (default), group, oto
//       open_conversation_id: "cid-demo-1"   # private_chat: optional; group: this or
//                                            #   token; oto: none
//       token: template-bot-token            # group only, optional: the template bot's
//       robot_code: dingxxx                  # optional; default --robot-code
//       recipients: [alice, bob]             # or a count: 5 (ids user1..5); oto: 1..20,
//                                            #   and only they can read it
//       names: { alice: Alice Wang }         # oto, optional: the names readStatus lists
//       read_delay_mean: 20s                 # exponential; 0s: read at once
//       read_delay_max: 45s                  # optional cap
//       never_read_fraction: 0.1             # round(n * f) recipients never read
//       ready_after: 5s                      # optional: processQueryKey.expireTime before
//       recall_after: 40s                    # optional
//       send_status: SUCCESS                 # optional
//   stream:                                  # optional: Stream mode (push) on
//     port: 0                                # the WebSocket port; 0: ephemeral
//     ack_timeout: 20s                       # unacknowledged events come again after it
//     max_redeliveries: 3
//     offline_retention: 60s                 # how long events wait for a connection
//     ping_interval: 30s                     # SYSTEM pings; default none
//     disconnect_after: 10m                  # SYSTEM disconnect at this age; default never
//     disconnect_grace: 10s                  # ...and the close this long after it
//     distribution: random                   # or round_robin, over open connections
//     redelivery_keeps_message_id: false
//     faults:                                # all optional, default off
//       drop_after: 2m                       # connections dropped at this age
//       drop_style: reset                    # or fin, close_frame
//       push_loss: 0.1                       # share of pushes never sent
//       gateway_errors: 0.1                  # share of gateway calls answered 500 system.error
//       refuse_tickets: 0.1                  # share of handshakes answered 401 (invalid ticket)
//       refuse_handshakes: 0.1               # share of handshakes answered 400
//       garbage: 0.05                        # share of frames preceded by a garbage frame
//       oversized: false                     # garbage may be a frame over 1 MiB
//       duplicate_acked: 0.05                # share of acknowledged events sent once more
//
// With a stream block, the second line on stdout is "stream gateway
// http://127.0.0.1:PORT/v1.0/gateway/connections/open websocket
// ws://127.0.0.1:WSPORT/connect", and pushes, acknowledgements, pings and
// connections are logged as they happen ("stream: ..."). SIGUSR1 drops every
// Stream connection (TCP reset); SIGUSR2 sends each a SYSTEM disconnect.
//
// With --commands, tests drive people by lines on stdin: "read KEY USER"
// (USER reads the scenario message KEY now, pushed as any read) and
// "recall KEY". Each is answered on stdout with "ok read KEY USER" or
// "ok recall KEY" once it has happened, or "error: ..." .
#include "fakes/fake_dingtalk.hpp"
#include "fakes/scenario.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using rrd::testing::Endpoint;
using rrd::testing::FakeDingTalk;
using rrd::testing::FakeDingTalkOptions;
using rrd::testing::FakeMessage;
using rrd::testing::Fault;
using rrd::testing::load_scenario;
using rrd::testing::Scenario;
using rrd::testing::ScenarioMessage;
using rrd::testing::SteadyClock;
using rrd::testing::SteadyTime;
using rrd::testing::StreamDrop;
using rrd::testing::StreamScenario;
using Millis = std::chrono::milliseconds;

constexpr auto k_tick = Millis(100);
constexpr auto k_stats_interval = std::chrono::seconds(10);

std::atomic<bool> g_stop{false};
std::atomic<bool> g_drop{false};
std::atomic<bool> g_disconnect{false};

extern "C" void on_signal(int) {
  g_stop = true;
}

extern "C" void on_stream_signal(int sig) {
  (sig == SIGUSR1 ? g_drop : g_disconnect) = true;
}

struct Options {
  FakeDingTalkOptions fake;
  std::string scenario;
  bool commands = false;
};

// Lines read from stdin (--commands), handed from the reading thread to the
// main loop. m_mutex guards m_lines.
class CommandLines {
public:
  void push(std::string line) {
    std::lock_guard lock(m_mutex);
    m_lines.push_back(std::move(line));
  }
  std::vector<std::string> take() {
    std::lock_guard lock(m_mutex);
    return std::exchange(m_lines, {});
  }

private:
  std::mutex m_mutex;
  std::vector<std::string> m_lines;
};

struct Happening {
  SteadyTime at;
  std::string key;
  std::string user; // "" for a recall
};

constexpr const char* k_usage =
    "usage: fake-dingtalk [--port N] [--app-key K] [--app-secret S] [--robot-code R]\n"
    "                     [--page-size N] [--token-lifetime SECONDS] [--seed N]\n"
    "                     [--scenario FILE] [--commands]\n"
    "\n"
    "A DingTalk simulator on 127.0.0.1: the token APIs and the read-status API\n"
    "of each message kind (POST /v1.0/robot/privateChatMessages/query,\n"
    "POST /v1.0/robot/groupMessages/query, GET /v1.0/robot/oToMessages/readStatus),\n"
    "with simulated people reading the scenario's messages; Stream mode when the\n"
    "scenario has a stream block. The first line on stdout is\n"
    "\"listening on 127.0.0.1:PORT\".\n"
    "\n"
    "  --port N                 port to listen on (default 0: an ephemeral one)\n"
    "  --app-key K              the internal app's key (default dingfakeappkey)\n"
    "  --app-secret S           the internal app's secret (default fake-app-secret)\n"
    "  --robot-code R           the default robotCode (default dingfakerobot)\n"
    "  --page-size N            the largest page served, 1..200 (default 200)\n"
    "  --token-lifetime SECONDS expireIn of the tokens issued (default 7200)\n"
    "  --seed N                 seed of the simulated reading times (default 1)\n"
    "  --scenario FILE          the messages and their readers (YAML or JSON); each\n"
    "                           message has a kind: private_chat, group or oto\n"
    "  --commands               read commands on stdin: \"read KEY USER\", \"recall KEY\"\n"
    "  --help                   print this help and exit\n";

// A bad command line: one line, a pointer to --help, exit 2.
[[noreturn]] void usage_error(const std::string& problem) {
  std::cerr << "fake-dingtalk: " << problem << " (see fake-dingtalk --help)\n";
  std::exit(2);
}

int parse_int(const std::string& flag, const std::string& text) {
  try {
    std::size_t used = 0;
    const int v = std::stoi(text, &used);
    if (used == text.size()) {
      return v;
    }
  } catch (const std::exception&) {
  }
  usage_error(flag + ": not a number: " + text);
}

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << k_usage;
      std::exit(0);
    }
    if (flag == "--commands") {
      o.commands = true;
      continue;
    }
    const bool known = flag == "--port" || flag == "--app-key" || flag == "--app-secret" ||
                       flag == "--robot-code" || flag == "--page-size" ||
                       flag == "--token-lifetime" || flag == "--seed" || flag == "--scenario";
    if (!known) {
      usage_error("unknown argument \"" + flag + "\"");
    }
    if (i + 1 >= argc) {
      usage_error(flag + ": needs a value");
    }
    const std::string value = argv[++i];
    if (flag == "--port") {
      o.fake.port = parse_int(flag, value);
    } else if (flag == "--app-key") {
      o.fake.app_key = value;
    } else if (flag == "--app-secret") {
      o.fake.app_secret = value;
    } else if (flag == "--robot-code") {
      o.fake.robot_code = value;
    } else if (flag == "--page-size") {
      o.fake.page_size = parse_int(flag, value);
      if (o.fake.page_size < 1 || o.fake.page_size > FakeDingTalk::k_max_page_size) {
        usage_error("--page-size: must be 1..200");
      }
    } else if (flag == "--token-lifetime") {
      o.fake.token_lifetime = std::chrono::seconds(parse_int(flag, value));
    } else if (flag == "--seed") {
      o.fake.seed = static_cast<std::uint64_t>(parse_int(flag, value));
    } else if (flag == "--scenario") {
      o.scenario = value;
    }
  }
  return o;
}

std::string short_key(const std::string& key) {
  return key.size() <= 14 ? key : key.substr(0, 12) + "..";
}

std::string clock_text() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

void say(const std::string& line) {
  std::cout << clock_text() << " " << line << std::endl;
}

} // namespace

int main(int argc, char** argv) {
  const Options options = parse_args(argc, argv);
  std::vector<ScenarioMessage> messages;
  std::optional<StreamScenario> stream;
  try {
    if (!options.scenario.empty()) {
      Scenario scenario = load_scenario(options.scenario, options.fake.robot_code);
      messages = std::move(scenario.messages);
      stream = std::move(scenario.stream);
    }
  } catch (const std::exception& e) {
    std::cerr << "fake-dingtalk: " << e.what() << "\n";
    return 2;
  }

  // Signals only set a flag; the main loop notices within one tick.
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  struct sigaction stream_sa {};
  stream_sa.sa_handler = on_stream_signal;
  sigemptyset(&stream_sa.sa_mask);
  sigaction(SIGUSR1, &stream_sa, nullptr);
  sigaction(SIGUSR2, &stream_sa, nullptr);

  std::optional<FakeDingTalk> fake;
  try {
    FakeDingTalkOptions fake_options = options.fake;
    if (stream) {
      fake_options.stream = stream->options;
    }
    fake.emplace(fake_options);
  } catch (const std::exception& e) {
    std::cerr << "fake-dingtalk: " << e.what() << "\n";
    return 1;
  }
  std::cout << "listening on 127.0.0.1:" << fake->port() << std::endl;
  if (stream) {
    if (stream->gateway_errors > 0) {
      fake->set_fault_rate(Fault::server_error(), stream->gateway_errors, Endpoint::gateway);
    }
    std::cout << "stream gateway " << fake->endpoint() << "/v1.0/gateway/connections/open"
              << " websocket " << fake->stream().endpoint() << std::endl;
  }

  std::mt19937_64 rng(options.fake.seed);
  const SteadyTime start = SteadyClock::now();
  std::vector<Happening> happenings;
  std::map<std::string, std::size_t> reader_counts;
  for (auto& m : messages) {
    FakeMessage spec = m.spec;
    if (m.ready_after) {
      spec.ready_at = start + *m.ready_after;
    }
    fake->add_message(m.key, spec);
    std::vector<std::string> order = spec.recipients;
    std::shuffle(order.begin(), order.end(), rng);
    const auto never = static_cast<std::size_t>(
        std::lround(m.never_read_fraction * static_cast<double>(order.size())));
    const std::size_t readers = order.size() - std::min(never, order.size());
    std::exponential_distribution<double> delay(
        m.read_delay_mean.count() > 0 ? 1.0 / static_cast<double>(m.read_delay_mean.count()) : 1.0);
    for (std::size_t i = 0; i < readers; ++i) {
      auto ms =
          m.read_delay_mean.count() > 0 ? Millis(static_cast<long long>(delay(rng))) : Millis(0);
      if (m.read_delay_max) {
        ms = std::min(ms, *m.read_delay_max);
      }
      if (m.ready_after) {
        ms = std::max(ms, *m.ready_after); // nobody reads before the data exists
      }
      fake->schedule_read(m.key, order[i], start + ms);
      happenings.push_back({start + ms, m.key, order[i]});
    }
    if (m.recall_after) {
      happenings.push_back({start + *m.recall_after, m.key, ""});
    }
    reader_counts[m.key] = 0;
    std::string line = "message " + short_key(m.key) + " (" + to_string(spec.kind) +
                       "): " + std::to_string(order.size()) + " recipients, " +
                       std::to_string(readers) + " will read";
    if (m.recall_after) {
      line += ", recalled after " + std::to_string(m.recall_after->count() / 1000) + "s";
    }
    say(line);
  }
  std::sort(happenings.begin(), happenings.end(),
            [](const Happening& a, const Happening& b) { return a.at < b.at; });

  // The reading thread blocks in getline until stdin closes; it is left to
  // end with the process.
  CommandLines commands;
  if (options.commands) {
    std::thread([&commands] {
      std::string line;
      while (std::getline(std::cin, line)) {
        commands.push(line);
      }
    }).detach();
  }
  const auto run_command = [&](const std::string& line) {
    std::istringstream in(line);
    std::string verb;
    std::string key;
    std::string user;
    in >> verb >> key >> user;
    const auto known = std::find_if(messages.begin(), messages.end(),
                                    [&](const ScenarioMessage& m) { return m.key == key; });
    if (verb.empty()) {
      return;
    }
    if ((verb != "read" && verb != "recall") || key.empty() || (verb == "read") == user.empty()) {
      std::cout << "error: not a command: \"" << line << "\" (read KEY USER, recall KEY)"
                << std::endl;
      return;
    }
    if (known == messages.end()) {
      std::cout << "error: no scenario message has the key " << key << std::endl;
      return;
    }
    if (verb == "read") {
      fake->read(key, user);
      say(user + " read " + short_key(key) + " (command)");
      std::cout << "ok read " << key << " " << user << std::endl;
    } else {
      fake->set_send_status(key, "RECALLED");
      say("recalled " + short_key(key) + " (command)");
      std::cout << "ok recall " << key << std::endl;
    }
  };

  std::size_t next = 0;
  int reported_queries = 0;
  int reported_tokens = 0;
  SteadyTime next_stats = start + k_stats_interval;
  while (!g_stop) {
    std::this_thread::sleep_for(k_tick);
    const SteadyTime now = SteadyClock::now();
    for (const auto& line : commands.take()) {
      run_command(line);
    }
    if (stream) {
      if (g_drop.exchange(false)) {
        fake->stream().drop_connections(StreamDrop::reset);
      }
      if (g_disconnect.exchange(false)) {
        fake->stream().disconnect_now();
      }
      for (const auto& line : fake->stream().take_log()) {
        say("stream: " + line);
      }
    }
    for (; next < happenings.size() && happenings[next].at <= now; ++next) {
      const auto& h = happenings[next];
      const auto it = std::find_if(messages.begin(), messages.end(),
                                   [&](const ScenarioMessage& m) { return m.key == h.key; });
      if (h.user.empty()) {
        fake->set_send_status(h.key, "RECALLED");
        say("recalled " + short_key(h.key));
      } else {
        const std::size_t n = ++reader_counts[h.key];
        say(h.user + " read " + short_key(h.key) + " (" + std::to_string(n) + "/" +
            std::to_string(it->spec.recipients.size()) + ")");
      }
    }
    if (now >= next_stats) {
      next_stats = now + k_stats_interval;
      const int queries = fake->query_calls();
      const int tokens = fake->token_calls();
      if (queries != reported_queries || tokens != reported_tokens) {
        say("served " + std::to_string(queries - reported_queries) + " queries and " +
            std::to_string(tokens - reported_tokens) + " token calls in the last " +
            std::to_string(k_stats_interval.count()) + "s");
        reported_queries = queries;
        reported_tokens = tokens;
      }
    }
  }
  say("stopping");
  fake.reset();
  return 0;
}
