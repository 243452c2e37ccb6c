// The daemon's HTTP API, lifecycle (sd_notify, --healthcheck, listen
// failures) and configuration reload, driven against the real binary with
// the fake DingTalk and webhook sinks, as an operator would.
#include "integration/harness.hpp"
#include "readreceiptd/common/model.hpp"
#include "readreceiptd/store/store.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <netinet/in.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

using namespace rrd::testing;
using nlohmann::json;

namespace {

// Percent-encodes every byte but the unreserved ones.
std::string encode(const std::string& s) {
  static const char* k_hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += '%';
      out += k_hex[c >> 4];
      out += k_hex[c & 15];
    }
  }
  return out;
}

std::string api_listen() {
  return "127.0.0.1:" + std::to_string(free_port());
}

// Sends `head` (a request line and headers, without the blank line that ends
// them) and `body` byte for byte: e.g. as curl -X POST does without -d, no
// Content-Length, keep-alive. Reads one answer: its headers, then
// Content-Length bytes.
ApiAnswer raw_api(const std::string& listen, const std::string& head,
                  const std::string& body = "") {
  ApiAnswer a;
  const auto colon = listen.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(std::stoi(listen.substr(colon + 1))));
  REQUIRE(::inet_pton(AF_INET, listen.substr(0, colon).c_str(), &addr.sin_addr) == 1);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  timeval timeout{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return a;
  }
  const std::string request = head + "\r\n\r\n" + body;
  REQUIRE(::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size()));
  std::string in;
  char buf[4096];
  std::size_t header_end = std::string::npos;
  std::size_t length = 0;
  for (;;) {
    if (header_end == std::string::npos) {
      header_end = in.find("\r\n\r\n");
      if (header_end != std::string::npos) {
        std::string lower = in.substr(0, header_end);
        for (auto& c : lower) {
          c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        }
        const auto cl = lower.find("\r\ncontent-length:");
        length = cl == std::string::npos ? 0 : std::stoul(lower.substr(cl + 17));
      }
    }
    if (header_end != std::string::npos && in.size() >= header_end + 4 + length) {
      break;
    }
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      break;
    }
    in.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  if (in.rfind("HTTP/1.1 ", 0) == 0 && header_end != std::string::npos) {
    a.status = std::stoi(in.substr(9, 3));
    a.body = in.substr(header_end + 4, length);
  }
  return a;
}

// A request with any Content-Type (the harness always says application/json).
ApiAnswer post_as(const std::string& listen, const std::string& target, const std::string& body,
                  const std::string& content_type) {
  httplib::Client client("http://" + listen);
  client.set_read_timeout(10);
  ApiAnswer a;
  if (auto r = client.Post(target.c_str(), body, content_type.c_str())) {
    a.status = r->status;
    a.body = r->body;
  }
  return a;
}

// `readreceiptd ARGS...`, run to its end; returns the exit code.
int run_daemon_command(const TempDir& dir, std::vector<std::string> args, std::string* output) {
  static int counter = 0;
  const std::string log = dir.file("command-" + std::to_string(++counter) + ".log");
  args.insert(args.begin(), RRD_DAEMON_PATH);
  ChildProcess p(args, log);
  const int code = p.wait(std::chrono::seconds(20));
  if (output != nullptr) {
    *output = p.log();
  }
  return code;
}

std::vector<json> events_at(const WebhookSink& sink, const std::string& key) {
  std::vector<json> out;
  for (const auto& d : sink.accepted()) {
    if (d.json["data"]["process_query_key"] == key) {
      out.push_back(d.json);
    }
  }
  return out;
}

bool stopped_at(const WebhookSink& sink, const std::string& key, const std::string& reason) {
  for (const auto& e : events_at(sink, key)) {
    if (e["type"] == "message.tracking_stopped" && e["data"]["reason"] == reason) {
      return true;
    }
  }
  return false;
}

std::size_t count_of(const std::string& text, const std::string& part) {
  std::size_t n = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) {
    ++n;
  }
  return n;
}

std::vector<std::string> keys_of(const json& list) {
  std::vector<std::string> out;
  for (const auto& m : list["messages"]) {
    out.push_back(m["process_query_key"]);
  }
  return out;
}

// A unix datagram socket standing in for systemd's NOTIFY_SOCKET.
class NotifySocket {
public:
  explicit NotifySocket(std::string path) : m_path(std::move(path)) {
    m_fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    REQUIRE(m_fd >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(m_path.size() < sizeof(addr.sun_path));
    std::strcpy(addr.sun_path, m_path.c_str());
    REQUIRE(::bind(m_fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  }
  ~NotifySocket() {
    ::close(m_fd);
    ::unlink(m_path.c_str());
  }
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;

  const std::string& path() const { return m_path; }

  // Every datagram received so far, in order.
  const std::vector<std::string>& messages() {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::recv(m_fd, buf, sizeof(buf), 0);
      if (n < 0) {
        break;
      }
      m_messages.emplace_back(buf, static_cast<std::size_t>(n));
    }
    return m_messages;
  }
  // The index of the first message at or after `from` that starts with
  // `prefix`, or -1.
  int find(const std::string& prefix, std::size_t from = 0) {
    const auto& all = messages();
    for (std::size_t i = from; i < all.size(); ++i) {
      if (all[i].rfind(prefix, 0) == 0) {
        return static_cast<int>(i);
      }
    }
    return -1;
  }

private:
  std::string m_path;
  int m_fd = -1;
  std::vector<std::string> m_messages;
};

} // namespace

TEST_CASE("api: messages are listed, fetched, added, tracked, deleted and survive restarts") {
  DaemonHarness h;
  h.api_listen = api_listen();
  const std::string cfg_key = "Kna29pdJ+ghav/bumk=";
  h.watch(cfg_key, {"a", "b"});
  h.start();
  REQUIRE_MESSAGE(h.wait_for_api(), h.log());

  // Listing and one message by its URL-encoded key.
  auto list = h.api("GET", "/v1/messages");
  REQUIRE(list.status == 200);
  CHECK(list.header("Content-Type").rfind("application/json", 0) == 0);
  CHECK(keys_of(list.json()) == std::vector<std::string>{cfg_key});
  CHECK(list.json()["messages"][0]["source"] == "config");
  CHECK(list.json()["messages"][0]["expected_readers"] == json({"a", "b"}));
  auto one = h.api("GET", "/v1/messages/" + encode(cfg_key));
  REQUIRE(one.status == 200);
  CHECK(encode(cfg_key) == "Kna29pdJ%2Bghav%2Fbumk%3D");
  CHECK(one.json()["process_query_key"] == cfg_key);
  CHECK(one.json()["state"] == "tracking");
  CHECK(one.json()["next_poll"].is_string());
  auto missing = h.api("GET", "/v1/messages/" + encode("no such key"));
  CHECK(missing.status == 404);
  CHECK(missing.json().contains("error"));

  // Adding through the API.
  const std::string api_key = "api+Key/2==";
  rrd::testing::FakeMessage fm;
  h.dingtalk.add_message(api_key, fm);
  h.dingtalk.add_message("api-live", fm);
  const std::string body =
      R"({"process_query_key": "api+Key/2==", "expected_readers": ["u1", "u2"],)"
      R"( "labels": {"campaign": "api-1"}})";
  auto created = h.api("POST", "/v1/messages", body);
  REQUIRE_MESSAGE(created.status == 201, created.body);
  CHECK(created.json()["process_query_key"] == api_key);
  CHECK(created.json()["source"] == "api");
  CHECK(created.json()["robot_code"] == "dingfakerobot");
  CHECK(h.api("POST", "/v1/messages", body).status == 200);
  auto conflict = h.api("POST", "/v1/messages",
                        R"({"process_query_key": "api+Key/2==", "expected_readers": ["u9"]})");
  CHECK(conflict.status == 409);
  CHECK(conflict.json().contains("error"));
  auto invalid =
      h.api("POST", "/v1/messages", R"({"process_query_key": "x", "expected_readers": [42]})");
  CHECK(invalid.status == 400);
  CHECK_MESSAGE(invalid.json()["error"].get<std::string>().rfind("expected_readers[0]", 0) == 0,
                invalid.body);
  CHECK(h.api("POST", "/v1/messages", "{").status == 400);
  REQUIRE(h.api("POST", "/v1/messages", R"({"process_query_key": "api-live"})").status == 201);

  // The API's message is polled, read and stopped like the others.
  h.dingtalk.read(api_key, "u1");
  h.dingtalk.read(api_key, "u2");
  REQUIRE_MESSAGE(h.wait_for_stop(api_key), h.log());
  const auto api_events = h.events_of(api_key);
  REQUIRE(api_events.size() == 2);
  CHECK(api_events[0]["data"]["newly_read_user_ids"] == json({"u1", "u2"}));
  CHECK(api_events[0]["data"]["labels"] == json({{"campaign", "api-1"}}));
  CHECK(api_events[1]["data"]["reason"] == "fully_read");
  REQUIRE(wait_until([&] {
    return h.api("GET", "/v1/messages/" + encode(api_key)).json()["state"] == "stopped";
  }));
  auto stopped = h.api("GET", "/v1/messages/" + encode(api_key)).json();
  CHECK(stopped["stop_reason"] == "fully_read");
  CHECK(stopped["read_count"] == 2);
  CHECK(stopped["read_user_ids"] == json({"u1", "u2"}));
  CHECK(stopped["last_poll"].is_string());

  // Filters.
  auto tracking = h.api("GET", "/v1/messages?state=tracking").json();
  CHECK(keys_of(tracking) == std::vector<std::string>{cfg_key, "api-live"});
  auto stopped_list = h.api("GET", "/v1/messages?state=stopped").json();
  CHECK(keys_of(stopped_list) == std::vector<std::string>{api_key});
  CHECK(h.api("GET", "/v1/messages?state=finished").status == 400);

  // Tracked at most once: the same request again is answered with the
  // message as it is now, stopped; other fields are a conflict naming them.
  auto again = h.api("POST", "/v1/messages", body);
  CHECK_MESSAGE(again.status == 200, again.body);
  CHECK(again.json()["state"] == "stopped");
  CHECK(again.json()["stop_reason"] == "fully_read");
  auto changed = h.api("POST", "/v1/messages",
                       R"({"process_query_key": "api+Key/2==", "expected_readers": ["u1"],)"
                       R"( "labels": {"campaign": "api-1"}})");
  CHECK(changed.status == 409);
  CHECK_MESSAGE(changed.json()["error"].get<std::string>().find("expected_readers") !=
                    std::string::npos,
                changed.body);

  // DELETE stops an API message with reason removed; once stopped, a
  // second DELETE is a 409 naming the reason, and changes nothing.
  h.dingtalk.add_message("api-gone", fm);
  REQUIRE(h.api("POST", "/v1/messages", R"({"process_query_key": "api-gone"})").status == 201);
  CHECK(h.api("DELETE", "/v1/messages/api-gone").status == 204);
  REQUIRE_MESSAGE(h.wait_for_stop("api-gone"), h.log());
  CHECK((*h.stopped_event("api-gone"))["data"]["reason"] == "removed");
  auto twice = h.api("DELETE", "/v1/messages/api-gone");
  CHECK(twice.status == 409);
  CHECK_MESSAGE(twice.json()["error"].get<std::string>().find("removed") != std::string::npos,
                twice.body);
  REQUIRE(
      wait_until([&] { return count_of(h.log(), "removed through the API key=api-gone") > 0; }));
  CHECK(count_of(h.log(), "removed through the API key=api-gone") == 1);
  auto stopped_twice = h.api("DELETE", "/v1/messages/" + encode(api_key));
  CHECK(stopped_twice.status == 409);
  CHECK(stopped_twice.json()["error"].get<std::string>().find("fully_read") != std::string::npos);
  CHECK(h.api("DELETE", "/v1/messages/unknown").status == 404);
  // A message of the configuration file is the file's to remove.
  auto listed = h.api("DELETE", "/v1/messages/" + encode(cfg_key));
  CHECK(listed.status == 409);
  CHECK_MESSAGE(listed.json()["error"].get<std::string>().find(
                    "configuration file (" + h.config_path() + ")") != std::string::npos,
                listed.body);
  CHECK(h.api("GET", "/v1/messages/" + encode(cfg_key)).json()["state"] == "tracking");

  // Wrong methods and unknown paths.
  auto put = h.api("PUT", "/v1/messages", "{}");
  CHECK(put.status == 405);
  CHECK(put.header("Allow") == "GET, POST");
  CHECK(put.json().contains("error"));
  CHECK(h.api("GET", "/v1/nothing").status == 404);
  check_sequences(h.sink);

  // A reload with the same file keeps the API's message.
  h.daemon->signal(SIGHUP);
  REQUIRE(wait_until([&] { return h.log().find("configuration reloaded") != std::string::npos; }));
  CHECK(h.api("GET", "/v1/messages/api-live").json()["state"] == "tracking");
  h.stop();

  // After a restart: still listed, still tracked, still polled.
  h.start();
  REQUIRE_MESSAGE(h.wait_for_api(), h.log());
  auto live = h.api("GET", "/v1/messages/api-live");
  REQUIRE(live.status == 200);
  CHECK(live.json()["state"] == "tracking");
  CHECK(live.json()["source"] == "api");
  CHECK(h.api("GET", "/v1/messages/" + encode(api_key)).json()["state"] == "stopped");
  CHECK(h.api("GET", "/v1/messages/api-gone").json()["stop_reason"] == "removed");
  CHECK(h.api("GET", "/v1/messages/" + encode(cfg_key)).json()["state"] == "tracking");
  h.dingtalk.read("api-live", "late-reader");
  REQUIRE_MESSAGE(wait_until([&] { return h.events_of("api-live").size() == 1; }), h.log());
  CHECK(h.events_of("api-live")[0]["data"]["newly_read_user_ids"] == json({"late-reader"}));
  h.stop();
}

TEST_CASE("api: with a token every call but /healthz and /readyz needs it - bodies are capped") {
  DaemonHarness h;
  h.api_listen = api_listen();
  h.api_token = "api-token-Zq8vX1";
  h.start();
  REQUIRE_MESSAGE(h.wait_for_api(), h.log());

  auto none = h.api("GET", "/v1/messages");
  CHECK(none.status == 401);
  CHECK(none.header("WWW-Authenticate") == "Bearer");
  CHECK(none.json().contains("error"));
  auto wrong = h.api("GET", "/v1/messages", "", "not-the-token");
  CHECK(wrong.status == 401);
  CHECK(wrong.body.find("not-the-token") == std::string::npos);
  // A probe needs no secret: /readyz reveals only whether, and a reason word.
  auto probe = h.api("GET", "/readyz");
  CHECK((probe.status == 200 || probe.status == 503));
  CHECK(probe.json().contains("ready"));
  CHECK(h.api("POST", "/v1/messages", R"({"process_query_key": "k"})").status == 401);
  CHECK(h.api("GET", "/v1/dead-letters").status == 401);
  CHECK(h.api("GET", "/healthz").status == 200);

  CHECK(h.api("GET", "/v1/messages", "", h.api_token).status == 200);
  // Ready once the first token is in (it may still be on its way).
  CHECK(wait_until([&] { return h.api("GET", "/readyz").status == 200; }));
  CHECK(h.api("GET", "/readyz", "", h.api_token).status == 200);
  CHECK(h.api("GET", "/v1/dead-letters", "", h.api_token).status == 200);

  auto big = h.api("POST", "/v1/messages", std::string(100 * 1024, ' '), h.api_token);
  CHECK(big.status == 413);
  CHECK(big.json().contains("error"));
  h.stop();
}

TEST_CASE("api: no Content-Length is an empty body - a body must say application/json") {
  DaemonHarness h;
  h.api_listen = api_listen();
  h.start();
  REQUIRE_MESSAGE(h.wait_for_api(), h.log());
  const std::string host = " HTTP/1.1\r\nHost: localhost\r\nAccept: */*";

  // curl -X POST / -X DELETE without -d: every route answers for itself.
  auto replay = raw_api(h.api_listen, "POST /v1/dead-letters/evt_nope/replay" + host);
  CHECK_MESSAGE(replay.status == 404, replay.body);
  auto empty = raw_api(h.api_listen, "POST /v1/messages" + host);
  CHECK(empty.status == 400);
  CHECK_MESSAGE(empty.body.find("request body") != std::string::npos, empty.body);
  CHECK(raw_api(h.api_listen, "DELETE /v1/messages/nope" + host).status == 404);
  CHECK(raw_api(h.api_listen, "GET /v1/messages/nope" + host).status == 404);

  // A body in another type, or in none, is a 415 naming the header.
  const std::string body = R"({"process_query_key": "typed"})";
  h.dingtalk.add_message("typed", rrd::testing::FakeMessage{});
  auto form = post_as(h.api_listen, "/v1/messages", body, "application/x-www-form-urlencoded");
  CHECK(form.status == 415);
  CHECK_MESSAGE(form.body.find("Content-Type") != std::string::npos, form.body);
  CHECK(form.body.find("application/x-www-form-urlencoded") != std::string::npos);
  auto untyped = raw_api(
      h.api_listen,
      "POST /v1/messages" + host + "\r\nContent-Length: " + std::to_string(body.size()), body);
  CHECK(untyped.status == 415);
  CHECK_MESSAGE(untyped.body.find("Content-Type") != std::string::npos, untyped.body);
  CHECK(h.api("GET", "/v1/messages/typed").status == 404); // nothing was added
  auto typed = post_as(h.api_listen, "/v1/messages", body, "Application/JSON; charset=utf-8");
  CHECK_MESSAGE(typed.status == 201, typed.body);
  // The connection stays usable after an empty-bodied request.
  CHECK(h.api("GET", "/healthz").status == 200);
  h.stop();
}

TEST_CASE("api: the message list comes a page at a time, by cursor, with filters") {
  DaemonHarness h;
  h.api_listen = api_listen();
  h.more_webhooks_yaml = {DaemonHarness::webhook_item("audit", h.sink.url())};
  h.start();
  REQUIRE_MESSAGE(h.wait_for_api(), h.log());
  auto add = [&](const std::string& key, const std::string& extra) {
    h.dingtalk.add_message(key, rrd::testing::FakeMessage{});
    const auto r =
        h.api("POST", "/v1/messages", R"({"process_query_key": ")" + key + "\"" + extra + "}");
    REQUIRE_MESSAGE(r.status == 201, r.body);
  };
  std::vector<std::string> all;
  for (int i = 0; i < 25; ++i) {
    const std::string key = (i < 10 ? "m0" : "m") + std::to_string(i);
    std::string extra = R"(, "labels": {"team": ")" + std::string(i % 2 == 0 ? "a" : "b") +
                        R"(", "tier": ")" + std::to_string(i % 5) + "\"}";
    if (i % 3 == 0) {
      extra += R"(, "webhooks": ["audit"])";
    } else if (i % 3 == 1) {
      extra += R"(, "webhooks": ["ops"])";
    }
    add(key, extra);
    all.push_back(key);
  }

  // Pages of 10 by cursor; messages added meanwhile before the cursor are
  // not seen, those after it are; none is seen twice.
  auto first = h.api("GET", "/v1/messages?limit=10");
  REQUIRE(first.status == 200);
  CHECK(keys_of(first.json()) == std::vector<std::string>(all.begin(), all.begin() + 10));
  const std::string cursor = first.json()["next_cursor"].get<std::string>();
  add("m00a", "");
  add("m99", "");
  auto second = h.api("GET", "/v1/messages?limit=10&cursor=" + encode(cursor));
  REQUIRE(second.status == 200);
  CHECK(keys_of(second.json()) == std::vector<std::string>(all.begin() + 10, all.begin() + 20));
  auto third = h.api("GET", "/v1/messages?limit=10&cursor=" +
                                encode(second.json()["next_cursor"].get<std::string>()));
  REQUIRE(third.status == 200);
  std::vector<std::string> rest(all.begin() + 20, all.end());
  rest.push_back("m99");
  CHECK(keys_of(third.json()) == rest);
  CHECK_FALSE(third.json().contains("next_cursor"));
  // Without limit: the default page holds them all.
  auto whole = h.api("GET", "/v1/messages").json();
  CHECK(whole["messages"].size() == 27);
  CHECK_FALSE(whole.contains("next_cursor"));

  // Filters: every label must match; a webhook's messages include those
  // that go to every webhook.
  std::vector<std::string> team_a;
  std::vector<std::string> team_a_tier_0;
  std::vector<std::string> to_audit;
  for (int i = 0; i < 25; ++i) {
    if (i % 2 == 0) {
      team_a.push_back(all[static_cast<std::size_t>(i)]);
      if (i % 5 == 0) {
        team_a_tier_0.push_back(all[static_cast<std::size_t>(i)]);
      }
    }
    if (i % 3 != 1) {
      to_audit.push_back(all[static_cast<std::size_t>(i)]);
    }
  }
  CHECK(keys_of(h.api("GET", "/v1/messages?label=team%3Da").json()) == team_a);
  CHECK(keys_of(h.api("GET", "/v1/messages?label=team=a&label=tier=0").json()) == team_a_tier_0);
  auto audit = h.api("GET", "/v1/messages?webhook=audit");
  std::vector<std::string> audit_all = to_audit;
  audit_all.insert(audit_all.begin() + 1, "m00a"); // no webhooks: every one
  audit_all.push_back("m99");
  CHECK(keys_of(audit.json()) == audit_all);
  // A filtered page ends where the limit is reached, and goes on from there.
  auto audit_page = h.api("GET", "/v1/messages?webhook=audit&label=team=a&limit=2").json();
  REQUIRE(audit_page["messages"].size() == 2);
  auto audit_next = h.api("GET", "/v1/messages?webhook=audit&label=team=a&limit=2&cursor=" +
                                     encode(audit_page["next_cursor"].get<std::string>()))
                        .json();
  CHECK(audit_next["messages"][0]["process_query_key"] == "m06");
  REQUIRE(h.api("DELETE", "/v1/messages/m03").status == 204);
  REQUIRE(wait_until([&] {
    return keys_of(h.api("GET", "/v1/messages?state=stopped&webhook=audit").json()) ==
           std::vector<std::string>{"m03"};
  }));

  // Bad parameters: 400 naming the parameter.
  for (const auto& bad_case :
       std::vector<std::pair<std::string, std::string>>{{"limit=0", "limit"},
                                                        {"limit=10001", "limit"},
                                                        {"limit=ten", "limit"},
                                                        {"limit=1&limit=2", "limit"},
                                                        {"cursor=%21%21", "cursor"},
                                                        {"label=team", "label"},
                                                        {"webhook=nope", "webhook"},
                                                        {"state=done", "state"},
                                                        {"colour=red", "colour"}}) {
    const std::string& query = bad_case.first;
    auto bad = h.api("GET", "/v1/messages?" + query);
    CHECK_MESSAGE(bad.status == 400, query);
    CHECK_MESSAGE(bad.json()["error"].get<std::string>().find(bad_case.second) != std::string::npos,
                  query << ": " << bad.body);
  }
  h.stop();
}

TEST_CASE("api: dead letters are listed with their last error and replayed to the webhook") {
  DaemonHarness h;
  h.api_listen = api_listen();
  // A delivery that died before this start: seeded in the state database, as
  // the dispatcher leaves one after its last retry.
  const rrd::TimePoint now = rrd::RealClock().now();
  const std::string event_id = rrd::make_event_id(now, 7, 9);
  {
    auto store = rrd::store::Store::open(h.state_path());
    rrd::MessageRecord m;
    m.spec.process_query_key = "dead+key=";
    m.spec.robot_code = "dingfakerobot";
    m.source = rrd::MessageSource::api;
    m.sent_at = now;
    m.added_at = now;
    m.next_poll = now;
    m.read_user_ids = {"u1"};
    m.last_sequence = 1;
    m.stopped = true;
    m.stop_reason = rrd::StopReason::fully_read;
    m.stopped_at = now;
    rrd::OutboxEvent e;
    e.id = event_id;
    e.process_query_key = m.spec.process_query_key;
    e.type = rrd::EventType::tracking_stopped;
    e.sequence = 1;
    e.created_at = now;
    e.body = json{{"type", "message.tracking_stopped"},
                  {"timestamp", rrd::format_rfc3339(now)},
                  {"data",
                   {{"process_query_key", "dead+key="},
                    {"reason", "fully_read"},
                    {"detail", ""},
                    {"read_user_ids", {"u1"}},
                    {"read_count", 1},
                    {"sequence", 1},
                    {"labels", json::object()}}}}
                 .dump();
    rrd::store::Commit commit;
    commit.message = m;
    commit.events.push_back(e);
    commit.routes.push_back(std::vector<std::string>{"ops"});
    store->commit(commit);
    store->mark_dead(event_id, "ops", 10, now, "HTTP 500");
  }
  h.start();
  REQUIRE_MESSAGE(h.wait_for_api(), h.log());

  auto list = h.api("GET", "/v1/dead-letters");
  REQUIRE(list.status == 200);
  const auto dead = list.json()["dead_letters"];
  REQUIRE(dead.size() == 1);
  CHECK(dead[0]["event_id"] == event_id);
  CHECK(dead[0]["webhook"] == "ops");
  CHECK(dead[0]["process_query_key"] == "dead+key=");
  CHECK(dead[0]["type"] == "message.tracking_stopped");
  CHECK(dead[0]["sequence"] == 1);
  CHECK(dead[0]["attempts"] == 10);
  CHECK(dead[0]["last_error"] == "HTTP 500");
  CHECK(dead[0]["died_at"].is_string());
  CHECK(h.sink.delivery_count() == 0);

  CHECK(h.api("GET", "/v1/dead-letters/" + event_id + "/replay").status == 405);
  CHECK(h.api("POST", "/v1/dead-letters/evt_00000000000000000000000000/replay").status == 404);
  // As `curl -X POST` sends it: no body, no Content-Length.
  auto replay = raw_api(h.api_listen, "POST /v1/dead-letters/" + event_id +
                                          "/replay HTTP/1.1\r\nHost: localhost\r\nAccept: */*");
  CHECK_MESSAGE(replay.status == 202, replay.body);
  CHECK(json::parse(replay.body, nullptr, false)["requeued"] == 1);
  REQUIRE_MESSAGE(wait_until([&] { return h.sink.accepted().size() == 1; }), h.log());
  CHECK(h.sink.accepted()[0].webhook_id == event_id);
  CHECK(h.sink.accepted()[0].json["data"]["process_query_key"] == "dead+key=");
  REQUIRE(
      wait_until([&] { return h.api("GET", "/v1/dead-letters").json()["dead_letters"].empty(); }));
  CHECK(h.api("POST", "/v1/dead-letters/" + event_id + "/replay").status == 404);
  h.stop();
}

TEST_CASE("api: /readyz is 503 until the first token arrives, /healthz 200 all along") {
  DaemonHarness h;
  h.api_listen = api_listen();
  h.watch("ready-key", {"a"});
  h.dingtalk.inject(Fault::error(400, "invalidClientIdOrSecret"), 1000, Endpoint::token);
  h.start();
  REQUIRE_MESSAGE(h.wait_for_api(), h.log());
  REQUIRE(wait_until([&] { return h.dingtalk.token_calls() >= 2; }));
  auto not_ready = h.api("GET", "/readyz");
  CHECK(not_ready.status == 503);
  CHECK(not_ready.json()["ready"] == false);
  CHECK(not_ready.json()["reason"].get<std::string>().find("token") != std::string::npos);
  CHECK(h.api("GET", "/healthz").status == 200);
  CHECK(h.api("GET", "/v1/messages").status == 200); // the API works meanwhile

  h.dingtalk.clear_faults();
  REQUIRE_MESSAGE(wait_until([&] { return h.api("GET", "/readyz").status == 200; }), h.log());
  CHECK(h.api("GET", "/readyz").json()["ready"] == true);
  h.stop();
}

TEST_CASE("api: a taken listen address is a clear error and exit 1") {
  DaemonHarness first;
  first.api_listen = api_listen();
  first.start();
  REQUIRE_MESSAGE(first.wait_for_api(), first.log());

  DaemonHarness second;
  second.api_listen = first.api_listen;
  second.start();
  CHECK(second.daemon->wait(std::chrono::seconds(10)) == 1);
  CHECK_MESSAGE(second.log().find("cannot listen on api.listen " + first.api_listen) !=
                    std::string::npos,
                second.log());
  CHECK(first.api("GET", "/healthz").status == 200);
  first.stop();
}

TEST_CASE("lifecycle: --healthcheck is 0 against a running daemon, 1 otherwise") {
  DaemonHarness h;
  h.api_listen = api_listen();
  h.api_token = "hc-token-Lm4Qz8Wt";
  h.start();
  REQUIRE_MESSAGE(h.wait_for_api(), h.log());
  std::string out;
  CHECK(run_daemon_command(h.dir, {"--healthcheck", "--config", h.config_path()}, &out) == 0);
  CHECK(out.find("hc-token-Lm4Qz8Wt") == std::string::npos);
  h.stop();
  CHECK(run_daemon_command(h.dir, {"--healthcheck", "--config", h.config_path()}, &out) == 1);
  CHECK(out.find("/healthz") != std::string::npos);

  // The API disabled: nothing to ask.
  h.api_listen.clear();
  h.api_token.clear();
  h.write_config();
  CHECK(run_daemon_command(h.dir, {"--healthcheck", "--config", h.config_path()}, &out) == 1);
  CHECK_MESSAGE(out.find("disabled") != std::string::npos, out);
}

TEST_CASE("lifecycle: --healthcheck works with an IPv6 listen address") {
  // Skipped where the machine has no IPv6 loopback.
  const int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_addr = in6addr_loopback;
  const bool has_ipv6 =
      fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  if (fd >= 0) {
    ::close(fd);
  }
  if (!has_ipv6) {
    MESSAGE("no IPv6 loopback here; skipped");
    return;
  }
  DaemonHarness h;
  h.api_listen = "[::1]:" + std::to_string(free_port());
  h.start();
  std::string out;
  REQUIRE_MESSAGE(
      wait_until([&] {
        return run_daemon_command(h.dir, {"--healthcheck", "--config", h.config_path()}, &out) == 0;
      }),
      h.log() << out);
  CHECK(out.find("[::1]") != std::string::npos);
  h.stop();
}

TEST_CASE("reload: messages and webhooks change under a running daemon - a bad file is refused") {
  DaemonHarness h;
  h.api_listen = api_listen();
  h.watch("keep", {"a", "b", "c"});
  h.watch("drop", {"a", "b"});
  h.dingtalk.read("keep", "a");
  h.start();
  REQUIRE_MESSAGE(wait_until([&] { return h.events_of("keep").size() == 1; }), h.log());

  // New file: "keep" expects fewer readers, "drop" is gone, "added" is new,
  // and the webhook moved to another receiver.
  WebhookSink moved(k_test_secret);
  h.webhook_url = moved.url();
  h.messages.clear();
  h.messages.push_back({"keep", {"a", "b"}, ""});
  h.watch("added", {"x", "y"});
  h.dingtalk.read("added", "x");
  h.write_config();
  h.daemon->signal(SIGHUP);

  REQUIRE_MESSAGE(wait_until([&] { return stopped_at(moved, "drop", "removed"); }), h.log());
  REQUIRE_MESSAGE(wait_until([&] { return events_at(moved, "added").size() == 1; }), h.log());
  CHECK(events_at(moved, "added")[0]["data"]["newly_read_user_ids"] == json({"x"}));
  CHECK(h.api("GET", "/v1/messages/keep").json()["expected_readers"] == json({"a", "b"}));
  CHECK(h.api("GET", "/v1/messages/drop").json()["stop_reason"] == "removed");
  h.dingtalk.read("keep", "b");
  REQUIRE_MESSAGE(wait_until([&] { return stopped_at(moved, "keep", "fully_read"); }), h.log());
  std::vector<std::int64_t> sequences;
  for (const auto& e : events_at(moved, "keep")) {
    sequences.push_back(e["data"]["sequence"]);
  }
  CHECK(sequences == std::vector<std::int64_t>{2, 3}); // sequence 1 reached the old receiver
  const std::size_t old_sink_count = h.sink.delivery_count();

  // An invalid file: logged, and the daemon goes on with the old one.
  write_file(h.config_path(), "dingtalk: [\n");
  h.daemon->signal(SIGHUP);
  REQUIRE(wait_until([&] { return h.log().find("configuration rejected") != std::string::npos; }));
  h.dingtalk.read("added", "y");
  REQUIRE_MESSAGE(wait_until([&] { return stopped_at(moved, "added", "fully_read"); }), h.log());
  CHECK(events_at(moved, "added")[1]["data"]["newly_read_user_ids"] == json({"y"}));
  CHECK(h.sink.delivery_count() == old_sink_count);
  CHECK(h.api("GET", "/healthz").status == 200);
  h.stop();
}

TEST_CASE("lifecycle: no secret reaches the logs (text and JSON, trace level) or the API") {
  // Nothing rewrites log lines: this holds because no secret is ever put in
  // one. Every path a secret could take is exercised: token refreshes after
  // a revocation, a request DingTalk calls malformed (its shape is logged as
  // a bug), API calls with good and bad tokens, a reload, and a webhook
  // whose URL holds credentials in its path and query (user:password@ is
  // refused by the configuration) and whose deliveries fail.
  DaemonHarness h;
  h.api_listen = api_listen();
  h.api_token = "api-token-QW3rTy9";
  h.log_level = "trace";
  const std::string hook_password = "hook-url-password-5J8q";
  const std::string hook_path = "hook-url-path-Z3k9";
  const std::string hook_query = "hook-url-query-7Hw2";
  h.more_webhooks_yaml.push_back(DaemonHarness::webhook_item(
      "creds", "http://127.0.0.1:" + std::to_string(free_port()) + "/" + hook_path + "/" +
                   hook_password + "?sig=" + hook_query));
  h.watch("secret-key", {"a", "b"});
  h.dingtalk.read("secret-key", "a");
  std::vector<ApiAnswer> answers;
  auto exercise = [&] {
    REQUIRE_MESSAGE(h.wait_for_api(), h.log());
    REQUIRE_MESSAGE(wait_until([&] { return !h.events_of("secret-key").empty(); }), h.log());
    REQUIRE_MESSAGE(
        wait_until([&] { return h.log_count("webhook delivery failed webhook=creds") > 0; }),
        h.log());
    const std::size_t malformed = h.log_count("DingTalk rejected a request as malformed");
    h.dingtalk.inject(Fault::error(400, "invalidParameter.param.invalid"));
    REQUIRE_MESSAGE(wait_until([&] {
                      return h.log_count("DingTalk rejected a request as malformed") > malformed;
                    }),
                    h.log());
    // Once this run holds a token, revoke it: a refresh after InvalidAuthentication.
    REQUIRE(wait_until([&] { return h.api("GET", "/readyz", "", h.api_token).status == 200; }));
    // Counted before the revocation: the refresh may come before the API
    // calls below are done.
    const int tokens = h.dingtalk.token_calls();
    h.dingtalk.revoke_tokens();
    for (const auto& target : {"/v1/messages", "/v1/messages/secret-key", "/readyz", "/healthz",
                               "/v1/dead-letters", "/v1/messages?state=bogus"}) {
      answers.push_back(h.api("GET", target, "", h.api_token));
    }
    answers.push_back(h.api("GET", "/v1/messages", "", "wrong"));
    answers.push_back(h.api("POST", "/v1/messages", R"({"process_query_key": 1})", h.api_token));
    REQUIRE_MESSAGE(wait_until([&] { return h.dingtalk.token_calls() > tokens; }), h.log());
    h.daemon->signal(SIGHUP);
    REQUIRE(
        wait_until([&] { return h.log().find("configuration reloaded") != std::string::npos; }));
    h.stop();
  };
  h.start();
  exercise();
  h.start({"--log-format", "json"});
  exercise();

  std::set<std::string> secrets{"fake-app-secret", k_test_secret, h.api_token,
                                hook_password,     hook_path,     hook_query};
  for (const auto& q : h.dingtalk.queries()) {
    if (!q.access_token.empty()) {
      secrets.insert(q.access_token);
    }
  }
  REQUIRE(secrets.size() >= 8); // the access tokens the fake issued, too
  const std::string log = h.log();
  CHECK(log.find("\"level\"") != std::string::npos); // the JSON run logged
  // "<redacted>" appears only where a field is redacted: the request shape.
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("<redacted>") != std::string::npos) {
      CHECK_MESSAGE(line.find("DingTalk rejected a request as malformed") != std::string::npos,
                    line);
    }
  }
  for (const auto& secret : secrets) {
    INFO("secret " << secret);
    CHECK(log.find(secret) == std::string::npos);
    for (const auto& a : answers) {
      CHECK(a.status != 0);
      CHECK(a.body.find(secret) == std::string::npos);
    }
  }
}

TEST_CASE("lifecycle: log lines are written as they are, whatever text a secret holds") {
  // A secret that is also ordinary text used to be cut out of every line:
  // "readreceiptd started" became "<redacted>", and a short one garbled
  // the whole log while showing where it occurs.
  DaemonHarness h;
  h.api_listen = api_listen();
  h.api_token = "readreceiptd started";
  h.watch("text-key", {"a"});
  h.start();
  REQUIRE_MESSAGE(h.wait_for_api(), h.log());
  REQUIRE_MESSAGE(wait_until([&] { return h.log_count("readreceiptd started: 1 message") == 1; }),
                  h.log());
  CHECK(h.api("GET", "/v1/messages", "", h.api_token).status == 200);
  h.stop();
  CHECK(h.log().find("<redacted>") == std::string::npos);
}

TEST_CASE("lifecycle: sd_notify: READY after the first token, STATUS, WATCHDOG, RELOADING, "
          "STOPPING") {
  DaemonHarness h;
  NotifySocket notify(h.dir.file("notify.sock"));
  h.env = {{"NOTIFY_SOCKET", notify.path()}, {"WATCHDOG_USEC", "400000"}};
  h.watch("notify-key", {"a", "b"});
  h.dingtalk.inject(Fault::error(400, "invalidClientIdOrSecret"), 1000, Endpoint::token);
  h.start();

  REQUIRE_MESSAGE(wait_until([&] { return h.dingtalk.token_calls() >= 2; }), h.log());
  CHECK(notify.find("READY=1") == -1); // no token yet
  REQUIRE(wait_until([&] { return notify.find("STATUS=waiting for the first") >= 0; }));
  REQUIRE(wait_until([&] { return notify.find("WATCHDOG=1") >= 0; }));

  h.dingtalk.clear_faults();
  REQUIRE_MESSAGE(wait_until([&] { return notify.find("READY=1") >= 0; }), h.log());
  const std::size_t ready = static_cast<std::size_t>(notify.find("READY=1"));
  REQUIRE(wait_until(
      [&] { return notify.find("STATUS=tracking 1 message, 0 pending deliveries") >= 0; }));
  h.dingtalk.read("notify-key", "a");
  h.dingtalk.read("notify-key", "b");
  REQUIRE_MESSAGE(h.wait_for_stop("notify-key"), h.log());
  REQUIRE(wait_until(
      [&] { return notify.find("STATUS=tracking 0 messages, 0 pending deliveries") >= 0; }));
  // Watchdog pings keep coming after READY.
  REQUIRE(wait_until([&] { return notify.find("WATCHDOG=1", ready + 1) >= 0; }));

  const std::size_t before_reload = notify.messages().size();
  h.daemon->signal(SIGHUP);
  REQUIRE(wait_until([&] { return notify.find("RELOADING=1", before_reload) >= 0; }));
  const int reloading = notify.find("RELOADING=1", before_reload);
  CHECK(notify.messages()[static_cast<std::size_t>(reloading)].find("\nMONOTONIC_USEC=") !=
        std::string::npos);
  REQUIRE(wait_until(
      [&] { return notify.find("READY=1", static_cast<std::size_t>(reloading) + 1) >= 0; }));

  h.stop();
  CHECK(notify.find("STOPPING=1") >= 0);
}
