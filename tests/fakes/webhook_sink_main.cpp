// webhook-sink: receives the daemon's webhooks for the demo, checks each
// signature and prints each event on one readable line. The first line on
// stdout is "listening on 127.0.0.1:PORT".
//
//   webhook-sink [--port N] [--secret whsec_...]   (or $WEBHOOK_SECRET); --help
#include "fakes/webhook_sink.hpp"

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

using nlohmann::json;
using rrd::testing::Delivery;
using rrd::testing::WebhookSink;

constexpr auto k_tick = std::chrono::milliseconds(100);

std::atomic<bool> g_stop{false};

extern "C" void on_signal(int) {
  g_stop = true;
}

constexpr const char* k_usage =
    "usage: webhook-sink [--port N] [--secret whsec_...]\n"
    "\n"
    "Receives readreceiptd's webhooks on 127.0.0.1, checks each signature and\n"
    "prints each event on one line. The first line on stdout is\n"
    "\"listening on 127.0.0.1:PORT\".\n"
    "\n"
    "  --port N          port to listen on (default 0: an ephemeral one)\n"
    "  --secret whsec_.. the webhook's signing secret (default: $WEBHOOK_SECRET;\n"
    "                    one of the two is required)\n"
    "  --help            print this help and exit\n";

// A bad command line: one line, a pointer to --help, exit 2.
[[noreturn]] void usage_error(const std::string& problem) {
  std::cerr << "webhook-sink: " << problem << " (see webhook-sink --help)\n";
  std::exit(2);
}

std::string short_key(const std::string& key) {
  return key.size() <= 14 ? key : key.substr(0, 12) + "..";
}

std::string clock_text(std::chrono::system_clock::time_point at) {
  const std::time_t t = std::chrono::system_clock::to_time_t(at);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

std::string join(const json& list) {
  std::string out;
  if (!list.is_array()) {
    return out;
  }
  for (const auto& v : list) {
    if (!out.empty()) {
      out += ", ";
    }
    out += v.is_string() ? v.get<std::string>() : v.dump();
  }
  return out;
}

template <typename T> T field(const json& j, const char* name, T fallback) {
  if (j.is_object() && j.contains(name)) {
    try {
      return j[name].get<T>();
    } catch (const json::exception&) {
    }
  }
  return fallback;
}

std::string describe(const Delivery& d) {
  std::ostringstream line;
  line << clock_text(d.arrived_wall) << " ";
  const json& body = d.json;
  const json data = body.is_object() && body.contains("data") ? body["data"] : json::object();
  const std::string type = field<std::string>(body, "type", "(not JSON)");
  line << type << " " << short_key(field<std::string>(data, "process_query_key", "?"));
  const std::string kind = field<std::string>(data, "kind", "");
  if (!kind.empty() && kind != "private_chat") {
    line << " [" << kind << "]";
  }
  if (type == "message.read") {
    // Each new reader with how the read became known (push, poll).
    json readers = json::array();
    const json newly = data.value("newly_read", json::array());
    if (newly.is_array() && !newly.empty()) {
      for (const auto& n : newly) {
        readers.push_back(field<std::string>(n, "user_id", "?") + " (" +
                          field<std::string>(n, "via", "?") + ")");
      }
    } else {
      readers = data.value("newly_read_user_ids", json::array());
    }
    line << " newly read: " << join(readers);
    const int read = field<int>(data, "read_count", -1);
    const int expected = field<int>(data, "expected_reader_count", -1);
    if (read >= 0) {
      line << " (" << read;
      if (expected >= 0) {
        line << "/" << expected;
      }
      line << " read)";
    }
  } else if (type == "message.tracking_stopped") {
    line << " reason: " << field<std::string>(data, "reason", "?");
    const std::string detail = field<std::string>(data, "detail", "");
    if (!detail.empty()) {
      line << " (" << detail << ")";
    }
    line << ", " << field<int>(data, "read_count", 0) << " read";
  }
  line << " seq " << field<long long>(data, "sequence", -1) << " "
       << (d.signature_ok   ? "signature ok"
           : d.timestamp_ok ? "BAD SIGNATURE"
                            : "BAD SIGNATURE (timestamp)");
  return line.str();
}

} // namespace

int main(int argc, char** argv) {
  int port = 0;
  std::string secret;
  if (const char* env = std::getenv("WEBHOOK_SECRET")) {
    secret = env;
  }
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << k_usage;
      return 0;
    }
    if (flag != "--port" && flag != "--secret") {
      usage_error("unknown argument \"" + flag + "\"");
    }
    if (i + 1 >= argc) {
      usage_error(flag + ": needs a value");
    }
    const std::string value = argv[++i];
    if (flag == "--port") {
      try {
        port = std::stoi(value);
      } catch (const std::exception&) {
        usage_error("--port: not a number: " + value);
      }
    } else {
      secret = value;
    }
  }
  if (secret.empty()) {
    usage_error("a secret is required (--secret or WEBHOOK_SECRET)");
  }

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  std::optional<WebhookSink> sink;
  try {
    sink.emplace(secret, port);
  } catch (const std::invalid_argument& e) { // a malformed secret
    std::cerr << "webhook-sink: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "webhook-sink: " << e.what() << "\n";
    return 1;
  }
  std::mutex out_mutex;
  sink->on_delivery([&](const Delivery& d) {
    const std::string line = describe(d);
    std::lock_guard lock(out_mutex);
    std::cout << line << std::endl;
  });
  std::cout << "listening on 127.0.0.1:" << sink->port() << std::endl;
  while (!g_stop) {
    std::this_thread::sleep_for(k_tick);
  }
  sink.reset();
  std::cout << "stopping" << std::endl;
  return 0;
}
