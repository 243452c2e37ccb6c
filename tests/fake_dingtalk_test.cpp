// Tests of the test fakes themselves: the fake DingTalk must speak the real
// contract and misbehave exactly as asked, and the webhook sink must accept
// only correctly signed deliveries; otherwise the daemon's tests prove
// nothing.
#include "fakes/codec.hpp"
#include "fakes/fake_dingtalk.hpp"
#include "fakes/process.hpp"
#include "fakes/webhook_sink.hpp"

#include <atomic>
#include <doctest/doctest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <thread>

using namespace rrd::testing;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

constexpr char k_query_path[] = "/v1.0/robot/privateChatMessages/query";
constexpr char k_key[] = "Kna29pdJznx1ghavbumkQKwDzgfxZLapw55G7x0Q=";
constexpr char k_cid[] = "cid6KeBBLo7EeiodoA==";

struct Answer {
  int status = 0; // 0: no HTTP answer
  httplib::Error error = httplib::Error::Success;
  std::string body;
  std::string content_type;
  json parsed; // null when not JSON
  std::string code() const {
    return parsed.is_object() && parsed.contains("code") ? parsed["code"].get<std::string>() : "";
  }
};

class TestClient {
public:
  explicit TestClient(int port) : m_client("127.0.0.1", port) {
    m_client.set_connection_timeout(2, 0);
    m_client.set_read_timeout(5, 0);
    m_client.set_url_encode(false); // targets are sent exactly as written
  }
  httplib::Client& raw() { return m_client; }

  Answer post(const std::string& path, const json& body, const std::string& token = "") {
    httplib::Headers headers;
    if (!token.empty()) {
      headers.emplace("x-acs-dingtalk-access-token", token);
    }
    return convert(m_client.Post(path.c_str(), headers, body.dump(), "application/json"));
  }

  Answer get(const std::string& target, const std::string& token = "") {
    httplib::Headers headers;
    if (!token.empty()) {
      headers.emplace("x-acs-dingtalk-access-token", token);
    }
    return convert(m_client.Get(target, headers));
  }

  // The official SDK's way: Transfer-Encoding: chunked, no Content-Length.
  Answer post_chunked(const std::string& path, const json& body, const std::string& token) {
    httplib::Headers headers{{"x-acs-dingtalk-access-token", token}};
    const std::string text = body.dump();
    return convert(m_client.Post(
        path.c_str(), headers,
        [text](std::size_t offset, httplib::DataSink& sink) {
          if (offset < text.size()) {
            // Two chunks, to be sure the server reassembles them.
            const std::size_t n = offset == 0 ? text.size() / 2 : text.size() - offset;
            sink.write(text.data() + offset, n);
          }
          if (offset >= text.size() / 2 && offset != 0) {
            sink.done();
          }
          return true;
        },
        "application/json"));
  }

  static Answer convert(const httplib::Result& r) {
    Answer a;
    a.error = r.error();
    if (r) {
      a.status = r->status;
      a.body = r->body;
      a.content_type = r->get_header_value("Content-Type");
      try {
        a.parsed = json::parse(r->body);
      } catch (const json::exception&) {
        a.parsed = nullptr;
      }
    }
    return a;
  }

private:
  httplib::Client m_client;
};

std::string get_token(TestClient& client, const FakeDingTalkOptions& options = {}) {
  const auto a = client.post("/v1.0/oauth2/accessToken",
                             {{"appKey", options.app_key}, {"appSecret", options.app_secret}});
  REQUIRE(a.status == 200);
  return a.parsed["accessToken"].get<std::string>();
}

json query_body(const std::string& key = k_key) {
  return {{"processQueryKey", key}, {"robotCode", "dingfakerobot"}, {"openConversationId", k_cid}};
}

std::vector<std::string> user_ids(int n, const std::string& prefix = "user") {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) {
    ids.push_back(prefix + std::to_string(i));
  }
  return ids;
}

void add_read_message(FakeDingTalk& fake, int readers, const std::string& key = k_key) {
  FakeMessage m;
  m.open_conversation_id = k_cid;
  m.recipients = user_ids(readers);
  fake.add_message(key, m);
  for (const auto& u : m.recipients) {
    fake.read(key, u);
  }
}

// Follows nextToken to the end; returns the union of the pages' readUserIds.
// `path`: the API, privateChatMessages/query or groupMessages/query.
std::vector<std::string> read_all_pages(TestClient& client, const std::string& token, json body,
                                        int* pages = nullptr, const char* path = k_query_path) {
  std::vector<std::string> users;
  int count = 0;
  while (true) {
    const auto a = client.post(path, body, token);
    REQUIRE(a.status == 200);
    ++count;
    for (const auto& u : a.parsed["readUserIds"]) {
      users.push_back(u.get<std::string>());
    }
    if (!a.parsed["hasMore"].get<bool>()) {
      break;
    }
    REQUIRE(count < 100);
    body["nextToken"] = a.parsed["nextToken"];
  }
  if (pages != nullptr) {
    *pages = count;
  }
  return users;
}

// A clock for the fake that the test moves by hand.
struct ManualTime {
  std::shared_ptr<std::atomic<SteadyClock::rep>> ticks =
      std::make_shared<std::atomic<SteadyClock::rep>>(
          SteadyClock::now().time_since_epoch().count());
  std::function<SteadyTime()> source() const {
    auto t = ticks;
    return [t] { return SteadyTime(SteadyClock::duration(t->load())); };
  }
  SteadyTime now() const { return SteadyTime(SteadyClock::duration(ticks->load())); }
  void advance(SteadyClock::duration d) { *ticks += d.count(); }
};

} // namespace

TEST_CASE(
    "fake dingtalk: internal app token is stable while valid and refused with bad credentials") {
  FakeDingTalk fake;
  TestClient client(fake.port());
  const auto a = client.post("/v1.0/oauth2/accessToken",
                             {{"appKey", "dingfakeappkey"}, {"appSecret", "fake-app-secret"}});
  REQUIRE(a.status == 200);
  CHECK(a.parsed["expireIn"] == 7200);
  const auto b = client.post("/v1.0/oauth2/accessToken",
                             {{"appKey", "dingfakeappkey"}, {"appSecret", "fake-app-secret"}});
  CHECK(b.parsed["accessToken"] == a.parsed["accessToken"]);

  const auto bad = client.post("/v1.0/oauth2/accessToken",
                               {{"appKey", "dingfakeappkey"}, {"appSecret", "wrong"}});
  CHECK(bad.status == 400);
  CHECK(bad.code() == "invalidClientIdOrSecret");
  CHECK(bad.parsed.contains("message"));
  CHECK(bad.parsed.contains("requestid"));
  CHECK(fake.token_calls() == 3);
}

TEST_CASE("fake dingtalk: third-party token is new on every call and checks each field") {
  FakeDingTalk fake;
  TestClient client(fake.port());
  json body = {{"suiteKey", "suitefakesuitekey"},
               {"suiteSecret", "fake-suite-secret"},
               {"authCorpId", "dingfakecorp"},
               {"suiteTicket", "fake-suite-ticket"}};
  const auto a = client.post("/v1.0/oauth2/corpAccessToken", body);
  const auto b = client.post("/v1.0/oauth2/corpAccessToken", body);
  REQUIRE(a.status == 200);
  REQUIRE(b.status == 200);
  CHECK(a.parsed["accessToken"] != b.parsed["accessToken"]);

  auto wrong = [&](const char* field, const char* code) {
    json w = body;
    w[field] = "wrong";
    const auto r = client.post("/v1.0/oauth2/corpAccessToken", w);
    CHECK(r.status == 400);
    CHECK(r.code() == code);
  };
  wrong("suiteKey", "invalidSuiteKey");
  wrong("suiteSecret", "invalidSuiteKey");
  wrong("suiteTicket", "invalidSuiteTicket");
  wrong("authCorpId", "invalidAuthInfo");
}

TEST_CASE("fake dingtalk: tokens expire, can be revoked, and registered tokens work") {
  ManualTime time;
  FakeDingTalkOptions options;
  options.token_lifetime = 2s;
  FakeDingTalk fake(options);
  fake.set_time_source(time.source());
  add_read_message(fake, 1);
  TestClient client(fake.port());

  const std::string token = get_token(client);
  CHECK(client.post(k_query_path, query_body(), token).status == 200);
  time.advance(2s);
  const auto expired = client.post(k_query_path, query_body(), token);
  CHECK(expired.status == 400);
  CHECK(expired.code() == "InvalidAuthentication");

  const std::string renewed = get_token(client);
  CHECK(renewed != token);
  CHECK(client.post(k_query_path, query_body(), renewed).status == 200);
  fake.revoke_tokens();
  CHECK(client.post(k_query_path, query_body(), renewed).code() == "InvalidAuthentication");
  CHECK(get_token(client) != renewed);

  fake.add_token("fixed-token");
  CHECK(client.post(k_query_path, query_body(), "fixed-token").status == 200);
  CHECK(client.post(k_query_path, query_body(), "unknown").code() == "InvalidAuthentication");
  const auto missing = client.post(k_query_path, query_body());
  CHECK(missing.status == 400);
  CHECK(missing.code() == "AuthenticationFailed.MissingParameter");
}

TEST_CASE("fake dingtalk: query validates the request as DingTalk does") {
  ManualTime time;
  FakeDingTalk fake;
  fake.set_time_source(time.source());
  add_read_message(fake, 1);
  fake.add_token("t");
  TestClient client(fake.port());
  auto code_for = [&](const json& body) {
    const auto a = client.post(k_query_path, body, "t");
    CHECK(a.status == 400);
    return a.code();
  };
  json b = query_body();
  b.erase("processQueryKey");
  CHECK(code_for(b) == "invalidParameter.processQueryKey.missing");
  CHECK(code_for(query_body("no-such-key")) == "invalid.processQueryKey");
  b = query_body();
  b.erase("robotCode");
  CHECK(code_for(b) == "invalidParameter.robotCode.missing");
  b = query_body();
  b["robotCode"] = "dingother";
  CHECK(code_for(b) == "invalidParameter.robotCode.notExsit");
  b = query_body();
  b["openConversationId"] = "cidother";
  CHECK(code_for(b) == "invalid.openConversationId");
  b = query_body();
  b["maxResults"] = 201;
  CHECK(code_for(b) == "invalidParameter.pageSize.invalid");
  b["maxResults"] = 0;
  CHECK(code_for(b) == "invalidParameter.pageSize.invalid");
  b = query_body();
  b["nextToken"] = "50";
  CHECK(code_for(b) == "invalidParameter.cursor.invalid");
  CHECK(code_for("not an object") == "invalidParameter.param.invalid");

  b = query_body();
  b.erase("openConversationId"); // optional
  b["maxResults"] = 200;
  CHECK(client.post(k_query_path, b, "t").status == 200);

  fake.set_ready_at(k_key, time.now() + 5s);
  CHECK(code_for(query_body()) == "processQueryKey.expireTime");
  time.advance(5s);
  CHECK(client.post(k_query_path, query_body(), "t").status == 200);
  fake.set_expires_at(k_key, time.now() + 1s);
  time.advance(1s);
  CHECK(code_for(query_body()) == "processQueryKey.expireTime");
}

TEST_CASE("fake dingtalk: read lists page by the smaller of maxResults and the server page size") {
  FakeDingTalkOptions options;
  options.page_size = 7;
  FakeDingTalk fake(options);
  add_read_message(fake, 23);
  TestClient client(fake.port());
  const std::string token = get_token(client);

  int pages = 0;
  CHECK(read_all_pages(client, token, query_body(), &pages) == user_ids(23));
  CHECK(pages == 4); // 7 + 7 + 7 + 2
  json b = query_body();
  b["maxResults"] = 5;
  CHECK(read_all_pages(client, token, b, &pages) == user_ids(23));
  CHECK(pages == 5);
  fake.set_page_size(50);
  CHECK(read_all_pages(client, token, query_body(), &pages) == user_ids(23));
  CHECK(pages == 1);

  std::set<std::pair<std::string, std::string>> expected;
  for (const auto& u : user_ids(23)) {
    expected.emplace(k_key, u);
  }
  CHECK(fake.reads_served() == expected);
  CHECK(fake.query_calls(k_key) == 10);
  CHECK(fake.query_calls() == 10);
}

TEST_CASE("fake dingtalk: nextTokens are opaque, bound to their message and tamper-proof") {
  FakeDingTalkOptions options;
  options.page_size = 2;
  FakeDingTalk fake(options);
  add_read_message(fake, 6);
  add_read_message(fake, 6, "other-key");
  TestClient client(fake.port());
  const std::string token = get_token(client);
  const auto first = client.post(k_query_path, query_body(), token);
  REQUIRE(first.status == 200);
  CHECK(first.parsed["hasMore"] == true);
  const std::string next = first.parsed["nextToken"];
  CHECK(next != "2");
  CHECK(next.find(k_key) == std::string::npos);

  json b = query_body("other-key");
  b["nextToken"] = next;
  CHECK(client.post(k_query_path, b, token).code() == "invalidParameter.cursor.invalid");
  std::string tampered = *base64_decode(next);
  tampered[tampered.find('\n') + 1] = '4';
  b = query_body();
  b["nextToken"] = base64_encode(tampered);
  CHECK(client.post(k_query_path, b, token).code() == "invalidParameter.cursor.invalid");
  b["nextToken"] = next;
  const auto second = client.post(k_query_path, b, token);
  REQUIRE(second.status == 200);
  CHECK(second.parsed["readUserIds"] == json{"user2", "user3"});
  // Two tokens for the same position still differ.
  const auto again = client.post(k_query_path, query_body(), token);
  CHECK(again.parsed["nextToken"] != first.parsed["nextToken"]);
}

TEST_CASE("fake dingtalk: accepts chunked request bodies as the official SDK sends them") {
  FakeDingTalk fake;
  add_read_message(fake, 3);
  fake.add_token("t");
  TestClient client(fake.port());
  const auto a = client.post_chunked(k_query_path, query_body(), "t");
  REQUIRE(a.status == 200);
  CHECK(a.parsed["readUserIds"] == json{"user0", "user1", "user2"});
  const auto records = fake.queries();
  REQUIRE(records.size() == 1);
  CHECK(records[0].chunked);
  CHECK(records[0].body == query_body());
  CHECK(records[0].access_token == "t");
  CHECK(records[0].status == 200);
}

TEST_CASE(
    "fake dingtalk: scheduled reads appear when their time passes, in order, and recalls show") {
  ManualTime time;
  FakeDingTalk fake;
  fake.set_time_source(time.source());
  FakeMessage m;
  m.open_conversation_id = k_cid;
  fake.add_message(k_key, m);
  fake.add_token("t");
  fake.read(k_key, "early");
  fake.schedule_read(k_key, "late", time.now() + 10s);
  fake.schedule_read(k_key, "middle", time.now() + 5s);
  TestClient client(fake.port());
  auto reads = [&] { return client.post(k_query_path, query_body(), "t").parsed["readUserIds"]; };
  CHECK(reads() == json{"early"});
  time.advance(5s);
  CHECK(reads() == json{"early", "middle"});
  time.advance(5s);
  CHECK(reads() == json{"early", "middle", "late"});
  fake.read(k_key, "early"); // reading twice changes nothing
  CHECK(fake.read_list(k_key) == std::vector<std::string>{"early", "middle", "late"});
  fake.set_send_status(k_key, "RECALLED");
  CHECK(client.post(k_query_path, query_body(), "t").parsed["sendStatus"] == "RECALLED");
  CHECK_THROWS_AS(fake.read("missing", "u"), std::invalid_argument);
}

TEST_CASE(
    "fake dingtalk: injected error answers carry status and code, then normal answers resume") {
  FakeDingTalk fake;
  add_read_message(fake, 1);
  fake.add_token("t");
  TestClient client(fake.port());
  const std::vector<Fault> faults = {
      Fault::server_error(),
      Fault::error(503, "ServiceUnavailable"),
      Fault::throttled(),
      Fault::quota_exceeded(),
      Fault::error(429, "Throttling"),
      Fault::error(400, "bot.stopped"),
  };
  for (const auto& f : faults) {
    fake.inject(f);
  }
  for (const auto& f : faults) {
    const auto a = client.post(k_query_path, query_body(), "t");
    CHECK(a.status == f.status);
    CHECK(a.code() == f.code);
    CHECK(a.parsed.contains("requestid"));
  }
  CHECK(client.post(k_query_path, query_body(), "t").status == 200);
  CHECK(fake.reads_served().size() == 1);

  Fault retry = Fault::error(429, "Throttling");
  retry.headers = {{"Retry-After", "1"}};
  fake.inject(retry);
  const auto r = client.raw().Post(k_query_path, {{"x-acs-dingtalk-access-token", "t"}},
                                   query_body().dump(), "application/json");
  REQUIRE(r);
  CHECK(r->get_header_value("Retry-After") == "1");
}

TEST_CASE("fake dingtalk: bad bodies - html, malformed, truncated, wrong shape, oversized") {
  FakeDingTalk fake;
  add_read_message(fake, 1);
  fake.add_token("t");
  TestClient client(fake.port());

  fake.inject(Fault::html(200));
  auto a = client.post(k_query_path, query_body(), "t");
  CHECK(a.status == 200);
  CHECK(a.content_type.find("text/html") == 0);
  CHECK(a.parsed.is_null());
  fake.inject(Fault::html(403));
  a = client.post(k_query_path, query_body(), "t");
  CHECK(a.status == 403);
  CHECK(a.body.find("<html>") != std::string::npos);

  for (auto kind : {FaultKind::malformed_json, FaultKind::truncated_json}) {
    fake.inject(Fault::of(kind));
    a = client.post(k_query_path, query_body(), "t");
    CHECK(a.status == 200);
    CHECK(a.parsed.is_null());
  }
  fake.inject(Fault::of(FaultKind::wrong_shape));
  a = client.post(k_query_path, query_body(), "t");
  CHECK(a.status == 200);
  REQUIRE(a.parsed.is_object());
  CHECK_FALSE(a.parsed["readUserIds"].is_array());

  fake.inject(Fault::of(FaultKind::oversized_body));
  a = client.post(k_query_path, query_body(), "t");
  CHECK(a.status == 200);
  CHECK(a.body.size() > 4u * 1024 * 1024);
  CHECK(a.parsed.is_object()); // valid JSON, just too big
  Fault chunked = Fault::of(FaultKind::oversized_body);
  chunked.chunked = true;
  fake.inject(chunked);
  const auto r = client.raw().Post(k_query_path, {{"x-acs-dingtalk-access-token", "t"}},
                                   query_body().dump(), "application/json");
  REQUIRE(r);
  CHECK_FALSE(r->has_header("Content-Length"));
  CHECK(r->body == a.body);
  CHECK(fake.reads_served().empty());
  const auto records = fake.queries();
  REQUIRE(records.size() == 7);
  CHECK(records[0].code == "html_page");
  CHECK(records[5].code == "oversized_body");
}

TEST_CASE("fake dingtalk: an endless body streams until the client gives up") {
  FakeDingTalk fake;
  add_read_message(fake, 1);
  fake.add_token("t");
  fake.inject(Fault::of(FaultKind::endless_body));
  httplib::Client client("127.0.0.1", fake.port());
  httplib::Request req;
  req.method = "POST";
  req.path = k_query_path;
  req.headers = {{"x-acs-dingtalk-access-token", "t"}, {"Content-Type", "application/json"}};
  req.body = query_body().dump();
  std::size_t received = 0;
  req.content_receiver = [&](const char*, std::size_t n, std::uint64_t, std::uint64_t) {
    received += n;
    return received < 64 * 1024;
  };
  const auto r = client.send(req);
  CHECK(r.error() == httplib::Error::Canceled);
  CHECK(received >= 64 * 1024);
  // The server is fine afterwards.
  TestClient again(fake.port());
  CHECK(again.post(k_query_path, query_body(), "t").status == 200);
}

TEST_CASE("fake dingtalk: no answer holds the request, reset cuts the connection without one") {
  FakeDingTalk fake;
  add_read_message(fake, 1);
  fake.add_token("t");
  TestClient client(fake.port());

  fake.inject(Fault::of(FaultKind::no_answer));
  client.raw().set_read_timeout(0, 300'000);
  auto a = client.post(k_query_path, query_body(), "t");
  CHECK(a.status == 0);
  CHECK(a.error == httplib::Error::Read);
  // The held request ends once the client has gone.
  CHECK(wait_until([&] { return fake.in_flight_requests() == 0; }, 5s));
  CHECK(fake.queries().at(0).code == "no_answer");
  CHECK(fake.queries().at(0).status == 0);

  fake.inject(Fault::of(FaultKind::connection_reset));
  client.raw().set_read_timeout(5, 0);
  const auto started = std::chrono::steady_clock::now();
  a = client.post(k_query_path, query_body(), "t");
  CHECK(a.status == 0);
  CHECK(a.error != httplib::Error::Success);
  CHECK(std::chrono::steady_clock::now() - started < 4s); // cut, not timed out
  CHECK(client.post(k_query_path, query_body(), "t").status == 200);
}

TEST_CASE("fake dingtalk: stops promptly while a request hangs") {
  auto fake = std::make_unique<FakeDingTalk>();
  add_read_message(*fake, 1);
  fake->add_token("t");
  fake->inject(Fault::of(FaultKind::no_answer));
  const int port = fake->port();
  std::atomic<bool> done{false};
  std::thread hung([&] {
    TestClient client(port);
    client.raw().set_read_timeout(30, 0);
    client.post(k_query_path, query_body(), "t");
    done = true;
  });
  REQUIRE(wait_until([&] { return fake->query_calls() == 1; }, 5s));
  const auto started = std::chrono::steady_clock::now();
  fake.reset();
  CHECK(std::chrono::steady_clock::now() - started < 5s);
  CHECK(wait_until([&] { return done.load(); }, 5s));
  hung.join();
}

TEST_CASE("fake dingtalk: later-page faults - nextToken loop and invalid cursor") {
  FakeDingTalkOptions options;
  options.page_size = 2;
  FakeDingTalk fake(options);
  add_read_message(fake, 6);
  fake.add_token("t");
  TestClient client(fake.port());
  fake.inject(Fault::of(FaultKind::next_token_loop));
  fake.inject(Fault::of(FaultKind::cursor_invalid));

  const auto first = client.post(k_query_path, query_body(), "t"); // not a later page: no fault
  REQUIRE(first.status == 200);
  json b = query_body();
  b["nextToken"] = first.parsed["nextToken"];
  const auto looped = client.post(k_query_path, b, "t");
  REQUIRE(looped.status == 200);
  CHECK(looped.parsed["hasMore"] == true);
  CHECK(looped.parsed["nextToken"] == first.parsed["nextToken"]);
  const auto cursor = client.post(k_query_path, b, "t");
  CHECK(cursor.status == 400);
  CHECK(cursor.code() == "invalidParameter.cursor.invalid");
  CHECK(client.post(k_query_path, b, "t").status == 200);
}

TEST_CASE("fake dingtalk: a fault that shapes the answer waits for a call DingTalk would answer") {
  // A call with a revoked token, or for a key that is not ready, gets its
  // error whatever the fault: a nextToken loop, an invalid cursor or a delay
  // taken by it would never be met as such, and the record would not show it.
  FakeDingTalkOptions options;
  options.page_size = 2;
  FakeDingTalk fake(options);
  add_read_message(fake, 6);
  add_read_message(fake, 1, "not-ready");
  fake.set_ready_at("not-ready", SteadyClock::now() + 1h);
  TestClient client(fake.port());
  const std::string old_token = get_token(client);
  const auto first = client.post(k_query_path, query_body(), old_token);
  REQUIRE(first.status == 200);
  json later = query_body();
  later["nextToken"] = first.parsed["nextToken"];

  fake.revoke_tokens();
  fake.inject(Fault::of(FaultKind::next_token_loop));
  fake.inject(Fault::of(FaultKind::cursor_invalid));
  fake.inject(Fault::slow(200ms));
  CHECK(client.post(k_query_path, later, old_token).code() == "InvalidAuthentication");
  CHECK(client.post(k_query_path, query_body(), old_token).code() == "InvalidAuthentication");
  const std::string token = get_token(client);
  CHECK(client.post(k_query_path, query_body("not-ready"), token).code() ==
        "processQueryKey.expireTime");

  const auto looped = client.post(k_query_path, later, token);
  REQUIRE(looped.status == 200);
  CHECK(looped.parsed["nextToken"] == later["nextToken"]);
  CHECK(client.post(k_query_path, later, token).code() == "invalidParameter.cursor.invalid");
  const auto started = SteadyClock::now();
  CHECK(client.post(k_query_path, query_body(), token).status == 200);
  CHECK(SteadyClock::now() - started >= 200ms);

  std::vector<std::string> codes;
  for (const auto& q : fake.queries()) {
    codes.push_back(q.code);
  }
  CHECK(codes == std::vector<std::string>{"", "InvalidAuthentication", "InvalidAuthentication",
                                          "processQueryKey.expireTime", "next_token_loop",
                                          "invalidParameter.cursor.invalid", "delay"});
}

TEST_CASE("fake dingtalk: a delayed answer is the one due when the call came") {
  // Tokens revoked while the answer is held back do not turn it into an
  // InvalidAuthentication: the delay is met as a slow answer, and recorded so.
  FakeDingTalk fake;
  add_read_message(fake, 1);
  TestClient client(fake.port());
  const std::string token = get_token(client);
  fake.inject(Fault::slow(300ms));
  std::thread revoker([&] {
    wait_until([&] { return fake.query_calls() == 1; }, 5s);
    fake.revoke_tokens();
  });
  const auto slow = client.post(k_query_path, query_body(), token);
  revoker.join();
  CHECK(slow.status == 200);
  const auto queries = fake.queries();
  REQUIRE(queries.size() == 1);
  CHECK(queries[0].code == "delay");
  CHECK(queries[0].status == 200);
  CHECK(client.post(k_query_path, query_body(), token).code() == "InvalidAuthentication");
}

TEST_CASE("fake dingtalk: early token revocation, token-endpoint faults and delays") {
  FakeDingTalk fake;
  add_read_message(fake, 1);
  TestClient client(fake.port());
  const std::string token = get_token(client);
  fake.inject(Fault::of(FaultKind::revoke_tokens));
  CHECK(client.post(k_query_path, query_body(), token).code() == "InvalidAuthentication");
  CHECK(client.post(k_query_path, query_body(), token).code() == "InvalidAuthentication");
  const std::string fresh = get_token(client);
  CHECK(fresh != token);
  CHECK(client.post(k_query_path, query_body(), fresh).status == 200);

  fake.inject(Fault::server_error(), 1, Endpoint::token);
  const auto failed = client.post("/v1.0/oauth2/accessToken",
                                  {{"appKey", "dingfakeappkey"}, {"appSecret", "fake-app-secret"}});
  CHECK(failed.status == 500);
  CHECK(failed.code() == "system.error");

  fake.inject(Fault::slow(200ms));
  const auto started = std::chrono::steady_clock::now();
  CHECK(client.post(k_query_path, query_body(), fresh).status == 200);
  CHECK(std::chrono::steady_clock::now() - started >= 200ms);
}

TEST_CASE("fake dingtalk: fault rates follow the seeded RNG and can be switched off") {
  FakeDingTalk fake;
  add_read_message(fake, 1);
  fake.add_token("t");
  TestClient client(fake.port());
  fake.set_fault_rate(Fault::throttled(), 1.0);
  for (int i = 0; i < 3; ++i) {
    CHECK(client.post(k_query_path, query_body(), "t").status == 403);
  }
  fake.set_fault_rate(Fault::throttled(), 0.5);
  int throttled = 0;
  for (int i = 0; i < 40; ++i) {
    throttled += client.post(k_query_path, query_body(), "t").status == 403 ? 1 : 0;
  }
  CHECK(throttled > 5);
  CHECK(throttled < 35);
  fake.set_fault_rate(Fault::throttled(), 0);
  CHECK(client.post(k_query_path, query_body(), "t").status == 200);
  fake.set_fault_rate(Fault::server_error(), 1.0);
  fake.clear_faults();
  CHECK(client.post(k_query_path, query_body(), "t").status == 200);
}

TEST_CASE("fake dingtalk: observes concurrency and call times") {
  FakeDingTalk fake;
  add_read_message(fake, 1);
  fake.add_token("t");
  fake.inject(Fault::slow(300ms), 3);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&] {
      TestClient client(fake.port());
      client.post(k_query_path, query_body(), "t");
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  CHECK(fake.max_concurrent_requests() == 3);
  CHECK(fake.query_times().size() == 3);
  CHECK(fake.request_times().size() == 3);

  const auto t0 = SteadyTime{};
  CHECK(FakeDingTalk::max_in_window({}, 1s) == 0);
  CHECK(FakeDingTalk::max_in_window({t0, t0 + 999ms, t0 + 1000ms, t0 + 1500ms}, 1s) == 3);
  CHECK(FakeDingTalk::max_in_window({t0 + 3s, t0, t0 + 2s, t0 + 1s}, 1s) == 1);
}

// --- message kinds: the group and one-to-one read-status APIs ---

namespace {

constexpr char k_group_path[] = "/v1.0/robot/groupMessages/query";
constexpr char k_oto_path[] = "/v1.0/robot/oToMessages/readStatus";
// Keys as DingTalk makes them: base64, with '+', '/' and '='.
constexpr char k_group_key[] = "Gr0up+Key/Zt8mQw3Lr+e5KpDs0vYh2NcXaBu7TgJ1iWo9f=";
constexpr char k_oto_key[] = "0to+Key/Wd1eHs6Kb9Nq3Tv7Yc2Lm5Rx8Pf0Ga4Jz+Uo1E==";
constexpr char k_group_cid[] = "cidGr0up7EeiodoA==";
constexpr char k_template_token[] = "template-bot-token";

// Every byte but RFC 3986's unreserved ones as %XX, as the official SDK
// (Node's querystring) encodes a query parameter.
std::string url_encode(const std::string& s) {
  static constexpr char k_hex[] = "0123456789ABCDEF";
  std::string out;
  for (const unsigned char c : s) {
    if (std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += k_hex[c >> 4];
      out += k_hex[c & 0xf];
    }
  }
  return out;
}

std::string oto_target(const std::string& key = k_oto_key,
                       const std::string& robot = "dingfakerobot") {
  return std::string(k_oto_path) + "?robotCode=" + url_encode(robot) +
         "&processQueryKey=" + url_encode(key);
}

json group_body(const std::string& key = k_group_key) {
  return {{"processQueryKey", key},
          {"robotCode", "dingfakerobot"},
          {"openConversationId", k_group_cid}};
}

// A group message in k_group_cid, sent with `token` ("" none), read by
// user0..user<readers-1>.
void add_group(FakeDingTalk& fake, int readers, const std::string& key = k_group_key,
               const std::string& token = "") {
  FakeMessage m;
  m.kind = MessageKind::group;
  m.open_conversation_id = k_group_cid;
  m.token = token;
  fake.add_message(key, m);
  for (const auto& u : user_ids(readers)) {
    fake.read(key, u);
  }
}

void add_oto(FakeDingTalk& fake, std::vector<std::string> recipients,
             const std::string& key = k_oto_key) {
  FakeMessage m;
  m.kind = MessageKind::oto;
  m.recipients = std::move(recipients);
  fake.add_message(key, m);
}

// The userIds of an oto answer's messageReadInfoList entries that are READ.
std::vector<std::string> oto_readers(const json& answer) {
  std::vector<std::string> out;
  for (const auto& e : answer["messageReadInfoList"]) {
    if (e["readStatus"] == "READ") {
      out.push_back(e["userId"].get<std::string>());
    }
  }
  return out;
}

// add_message()'s refusal of `m`, or "" when it accepted it.
std::string refusal_of(FakeDingTalk& fake, const std::string& key, FakeMessage m) {
  try {
    fake.add_message(key, std::move(m));
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

} // namespace

TEST_CASE("fake dingtalk: a message of each kind holds only what a send can produce") {
  FakeDingTalk fake;
  auto refused = [&](FakeMessage m, const std::string& why) {
    CAPTURE(why);
    const std::string error = refusal_of(fake, "bad-key", std::move(m));
    CHECK(error.find("message bad-key: " + why) != std::string::npos);
  };
  FakeMessage group;
  group.kind = MessageKind::group;
  refused(group, "a group message needs open_conversation_id or token");
  FakeMessage private_chat;
  private_chat.token = "t";
  refused(private_chat, "token: only group messages have one");
  FakeMessage oto;
  oto.kind = MessageKind::oto;
  refused(oto, "recipients: an oto message has 1..20 (batchSend's limit), not 0");
  oto.recipients = user_ids(21);
  refused(oto, "recipients: an oto message has 1..20 (batchSend's limit), not 21");
  oto.recipients = {"a", "b", "a"};
  refused(oto, "recipients[2]: a is listed twice");
  oto.recipients = {""};
  refused(oto, "recipients[0]: an empty user id");
  oto.recipients = {"a"};
  oto.open_conversation_id = "cid";
  refused(oto, "open_conversation_id: oto messages (oToMessages/batchSend) have none");
  oto.open_conversation_id.clear();
  oto.token = "t";
  refused(oto, "token: only group messages have one");
  oto.token.clear();
  oto.names = {{"zed", "Zed"}};
  refused(oto, "names: zed is not a recipient");
  CHECK_THROWS_AS(fake.read("bad-key", "a"), std::invalid_argument); // none was added

  group.token = k_template_token; // a template bot's message: a token, no conversation
  CHECK(refusal_of(fake, "group-by-token", group).empty());
  oto.names = {{"a", "Ann"}};
  oto.recipients = user_ids(20);
  oto.recipients[0] = "a";
  CHECK(refusal_of(fake, "oto-20", oto).empty());

  // Anyone may read a group message; only its recipients an oto message.
  fake.read("group-by-token", "anyone");
  CHECK(fake.read_list("group-by-token") == std::vector<std::string>{"anyone"});
  for (const auto& attempt : std::vector<std::function<void()>>{
           [&] { fake.read("oto-20", "stranger"); },
           [&] { fake.read("oto-20", "stranger", SteadyClock::now()); },
           [&] { fake.schedule_read("oto-20", "stranger", SteadyClock::now()); },
           [&] { fake.read_by_outsider("oto-20", "stranger"); }}) {
    try {
      attempt();
      FAIL("a non-recipient read an oto message");
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()) ==
            "FakeDingTalk: stranger did not receive the oto message oto-20");
    }
  }
  CHECK(fake.read_list("oto-20").empty());
  fake.read("oto-20", "a");
  CHECK(fake.read_list("oto-20") == std::vector<std::string>{"a"});
}

TEST_CASE("fake dingtalk: group query validates the request as DingTalk does") {
  ManualTime time;
  FakeDingTalk fake;
  fake.set_time_source(time.source());
  add_group(fake, 1, k_group_key, k_template_token);
  add_group(fake, 1, "other-group", "other-token");
  add_read_message(fake, 1); // a private-chat message
  FakeMessage elsewhere;     // a group message of another robot
  elsewhere.kind = MessageKind::group;
  elsewhere.open_conversation_id = "cidelsewhere";
  elsewhere.robot_code = "dingotherrobot";
  fake.add_message("other-robot", elsewhere);
  fake.add_token("t");
  TestClient client(fake.port());
  auto code_for = [&](const json& body) {
    const auto a = client.post(k_group_path, body, "t");
    CHECK(a.status == 400);
    CHECK(a.parsed.contains("requestid"));
    return a.code();
  };

  CHECK(client.post(k_group_path, group_body()).code() == "AuthenticationFailed.MissingParameter");
  CHECK(client.post(k_group_path, group_body(), "wrong").code() == "InvalidAuthentication");
  CHECK(code_for("not an object") == "invalidParameter.param.invalid");
  json b = group_body();
  b["robotCode"] = 5;
  CHECK(code_for(b) == "invalidParameter.param.invalid");
  b = group_body();
  b["token"] = json::array();
  CHECK(code_for(b) == "invalidParameter.param.invalid");
  b = group_body();
  b.erase("processQueryKey");
  CHECK(code_for(b) == "invalidParameter.processQueryKey.missing");
  b = group_body();
  b.erase("openConversationId");
  CHECK(code_for(b) == "openConversationId.notExisted"); // neither it nor token
  b["token"] = "no-such-token";
  CHECK(code_for(b) == "invalidParameter.invalid"); // the token's robot does not exist
  b = group_body();
  b.erase("robotCode");
  CHECK(code_for(b) == "invalidParameter.robotCode.missing");
  b = group_body();
  b["robotCode"] = "dingnosuchrobot";
  CHECK(code_for(b) == "invalidParameter.robotCode.notExsit");
  b = group_body();
  b["robotCode"] = "dingotherrobot"; // known, but not this message's robot
  CHECK(code_for(b) == "invalidParameter.robotCode.notExsit");
  CHECK(code_for(group_body("no-such-key")) == "invalid.processQueryKey");
  b = group_body();
  b["openConversationId"] = "cidother"; // as the private-chat API answers it
  CHECK(code_for(b) == "invalid.openConversationId");
  // Each kind's key is unknown to the other kinds' APIs.
  CHECK(code_for(group_body(k_key)) == "invalid.processQueryKey");
  CHECK(client.post(k_query_path, query_body(k_group_key), "t").code() ==
        "invalid.processQueryKey");
  CHECK(client.get(oto_target(k_group_key), "t").code() == "invalid.processQueryKey");
  b = group_body();
  b.erase("openConversationId");
  b["token"] = "other-token"; // a known token, another message's
  CHECK(code_for(b) == "invalid.processQueryKey");
  b = group_body();
  b["maxResults"] = 201;
  CHECK(code_for(b) == "invalidParameter.pageSize.invalid");
  b["maxResults"] = 0;
  CHECK(code_for(b) == "invalidParameter.pageSize.invalid");
  b["maxResults"] = "5";
  CHECK(code_for(b) == "invalidParameter.param.invalid");
  b = group_body();
  b["nextToken"] = "50";
  CHECK(code_for(b) == "invalidParameter.cursor.invalid");

  // Either the conversation or the template bot's token names the message.
  CHECK(client.post(k_group_path, group_body(), "t").status == 200);
  b = group_body();
  b.erase("openConversationId");
  b.erase("robotCode"); // the token names the robot
  b["token"] = k_template_token;
  CHECK(client.post(k_group_path, b, "t").status == 200);
  b = group_body();
  b["token"] = k_template_token;
  b["maxResults"] = 200;
  CHECK(client.post(k_group_path, b, "t").status == 200);

  fake.set_ready_at(k_group_key, time.now() + 5s);
  CHECK(code_for(group_body()) == "processQueryKey.expireTime");
  time.advance(5s);
  CHECK(client.post(k_group_path, group_body(), "t").status == 200);
  time.advance(30 * 24h); // no window is documented for a group's key
  CHECK(client.post(k_group_path, group_body(), "t").status == 200);
  fake.set_expires_at(k_group_key, time.now() + 1s);
  time.advance(1s);
  CHECK(code_for(group_body()) == "processQueryKey.expireTime");
}

TEST_CASE("fake dingtalk: group read lists page like private chats', with readUsers too") {
  FakeDingTalkOptions options;
  options.page_size = 7;
  FakeDingTalk fake(options);
  add_group(fake, 23);
  add_group(fake, 3, "other-group");
  TestClient client(fake.port());
  const std::string token = get_token(client);

  int pages = 0;
  CHECK(read_all_pages(client, token, group_body(), &pages, k_group_path) == user_ids(23));
  CHECK(pages == 4); // 7 + 7 + 7 + 2
  json b = group_body();
  b["maxResults"] = 5;
  CHECK(read_all_pages(client, token, b, &pages, k_group_path) == user_ids(23));
  CHECK(pages == 5);

  const auto first = client.post(k_group_path, group_body(), token);
  REQUIRE(first.status == 200);
  CHECK(first.parsed["sendStatus"] == "SUCCESS");
  CHECK(first.parsed["hasMore"] == true);
  // readUsers, which newer SDKs read: the same ids with their unionIds.
  json readers = json::array();
  for (const auto& u : user_ids(7)) {
    readers.push_back({{"unionId", FakeDingTalk::union_id_of(u)}, {"userId", u}});
  }
  CHECK(first.parsed["readUsers"] == readers);
  // A nextToken is bound to its message, and a private chat's API does not
  // take a group message's.
  b = group_body("other-group");
  b["nextToken"] = first.parsed["nextToken"];
  CHECK(client.post(k_group_path, b, token).code() == "invalidParameter.cursor.invalid");
  CHECK(client.post(k_query_path, query_body(), token).code() == "invalid.processQueryKey");

  std::set<std::pair<std::string, std::string>> expected;
  for (const auto& u : user_ids(23)) {
    expected.emplace(k_group_key, u);
  }
  CHECK(fake.reads_served() == expected);
  CHECK(fake.query_calls(k_group_key) == 10); // 4 + 5 pages, and the first again
  const auto records = fake.queries();
  REQUIRE(records.size() == 12);
  CHECK(records[0].kind == MessageKind::group);
  CHECK(records[0].target == k_group_path);
  CHECK(records[0].body == group_body());
  CHECK(records[0].params.is_null());
  CHECK(records[11].kind == MessageKind::private_chat);

  fake.set_send_status(k_group_key, "RECALLED");
  CHECK(client.post(k_group_path, group_body(), token).parsed["sendStatus"] == "RECALLED");
}

TEST_CASE("fake dingtalk: oto readStatus lists every recipient in send order, READ with its time") {
  ManualTime time;
  FakeDingTalk fake;
  fake.set_time_source(time.source());
  FakeMessage m;
  m.kind = MessageKind::oto;
  m.recipients = {"u3", "u1", "u2"};
  m.names = {{"u1", "Ann"}};
  fake.add_message(k_oto_key, m);
  fake.add_token("t");
  TestClient client(fake.port());

  const SteadyTime read_at = time.now() - 5s; // read before the fake heard of it
  fake.read(k_oto_key, "u1", read_at);
  fake.schedule_read(k_oto_key, "u2", time.now() + 10s);
  auto a = client.get(oto_target(), "t");
  REQUIRE(a.status == 200);
  CHECK(a.content_type.find("application/json") == 0);
  CHECK(
      a.parsed ==
      json{{"sendStatus", "SUCCESS"},
           {"messageReadInfoList",
            {{{"name", "u3"}, {"userId", "u3"}, {"readStatus", "UNREAD"}, {"readTimestamp", 0}},
             {{"name", "Ann"},
              {"userId", "u1"},
              {"readStatus", "READ"},
              {"readTimestamp", fake.epoch_ms(read_at)}},
             {{"name", "u2"}, {"userId", "u2"}, {"readStatus", "UNREAD"}, {"readTimestamp", 0}}}}});
  // The epoch is today's, in ms.
  const auto wall = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
  CHECK(std::abs(fake.epoch_ms(read_at) + 5000 - wall) < 60'000);
  CHECK(fake.read_time(k_oto_key, "u1") == read_at);
  CHECK_FALSE(fake.read_time(k_oto_key, "u2"));

  time.advance(10s); // the scheduled read shows, with its own time
  a = client.get(oto_target(), "t");
  CHECK(oto_readers(a.parsed) == std::vector<std::string>{"u1", "u2"});
  CHECK(a.parsed["messageReadInfoList"][2]["readTimestamp"] == fake.epoch_ms(time.now()));
  CHECK(fake.read_time(k_oto_key, "u2") == time.now());
  fake.read(k_oto_key, "u1"); // reading twice changes nothing, its time included
  CHECK(fake.read_time(k_oto_key, "u1") == read_at);
  fake.set_send_status(k_oto_key, "RECALLED");
  CHECK(client.get(oto_target(), "t").parsed["sendStatus"] == "RECALLED");

  CHECK(fake.reads_served() ==
        std::set<std::pair<std::string, std::string>>{{k_oto_key, "u1"}, {k_oto_key, "u2"}});
  const auto records = fake.queries();
  REQUIRE(records.size() == 3);
  CHECK(records[0].kind == MessageKind::oto);
  CHECK(records[0].target == oto_target());
  CHECK(records[0].body.is_null());
  CHECK(records[0].params == json{{"robotCode", "dingfakerobot"}, {"processQueryKey", k_oto_key}});
  CHECK(records[0].access_token == "t");
  CHECK(records[0].status == 200);
  CHECK(fake.query_calls(k_oto_key) == 3);
}

TEST_CASE("fake dingtalk: oto parameters are URL-decoded once, so keys with + / = round-trip") {
  FakeDingTalk fake;
  add_oto(fake, {"alice"});
  fake.read(k_oto_key, "alice");
  add_read_message(fake, 1); // a private-chat message
  FakeMessage elsewhere;     // an oto message of another robot
  elsewhere.kind = MessageKind::oto;
  elsewhere.recipients = {"bob"};
  elsewhere.robot_code = "dingotherrobot";
  fake.add_message("other-robot", elsewhere);
  fake.add_token("t");
  TestClient client(fake.port());
  const std::string path = k_oto_path;
  auto code_for = [&](const std::string& target) {
    CAPTURE(target);
    const auto a = client.get(target, "t");
    CHECK(a.status == 400);
    CHECK(a.parsed.contains("requestid"));
    return a.code();
  };
  auto reads = [&](const std::string& target) {
    CAPTURE(target);
    const auto a = client.get(target, "t");
    CHECK(a.status == 200);
    return oto_readers(a.parsed);
  };
  const std::vector<std::string> alice{"alice"};

  CHECK(reads(oto_target()) == alice);
  // The parameters in either order, with escapes in lower case.
  CHECK(reads(path + "?processQueryKey=" + url_encode(k_oto_key) + "&robotCode=dingfakerobot") ==
        alice);
  std::string lower = url_encode(k_oto_key); // the key's own letters kept: only the escapes
  for (const char* escape : {"%2B", "%2F", "%3D"}) {
    for (auto pos = lower.find(escape); pos != std::string::npos; pos = lower.find(escape)) {
      lower[pos + 2] = static_cast<char>(std::tolower(lower[pos + 2]));
    }
  }
  CHECK(reads(path + "?robotCode=dingfakerobot&processQueryKey=" + lower) == alice);
  // '/' and '=' need no escape in a query; '+' does: unescaped it is a space.
  std::string slash_equals = k_oto_key;
  for (auto pos = slash_equals.find('+'); pos != std::string::npos; pos = slash_equals.find('+')) {
    slash_equals.replace(pos, 1, "%2B");
  }
  CHECK(reads(path + "?robotCode=dingfakerobot&processQueryKey=" + slash_equals) == alice);
  CHECK(code_for(path + "?robotCode=dingfakerobot&processQueryKey=" + k_oto_key) ==
        "invalid.processQueryKey");
  CHECK(code_for(path + "?robotCode=dingfakerobot&processQueryKey=" +
                 url_encode(url_encode(k_oto_key))) == "invalid.processQueryKey"); // twice
  CHECK(fake.query_calls(k_oto_key) == 4);

  CHECK(code_for(oto_target() + "&robotCode=dingfakerobot") == "invalidParameter.param.invalid");
  CHECK(code_for(path + "?robotCode=dingfakerobot&processQueryKey=%zz") ==
        "invalidParameter.param.invalid");
  CHECK(code_for(path + "?robotCode=dingfakerobot&processQueryKey=%2") ==
        "invalidParameter.param.invalid");
  CHECK(code_for(path + "?robotCode=dingfakerobot&processQueryKey=%FF") ==
        "invalidParameter.param.invalid"); // not UTF-8
  CHECK(code_for(path + "?robotCode=dingfakerobot") == "invalidParameter.processQueryKey.missing");
  CHECK(code_for(path + "?robotCode=dingfakerobot&processQueryKey=") ==
        "invalidParameter.processQueryKey.missing");
  CHECK(code_for(path + "?processQueryKey=" + url_encode(k_oto_key)) ==
        "invalidParameter.robotCode.missing");
  CHECK(code_for(path) == "invalidParameter.processQueryKey.missing");
  CHECK(code_for(oto_target(k_oto_key, "dingnosuchrobot")) ==
        "invalidParameter.robotCode.notExsit");
  CHECK(code_for(oto_target(k_oto_key, "dingotherrobot")) == "invalidParameter.robotCode.notExsit");
  CHECK(code_for(oto_target("no-such-key")) == "invalid.processQueryKey");
  CHECK(code_for(oto_target(k_key)) == "invalid.processQueryKey"); // a private chat's key
  CHECK(client.post(k_query_path, query_body(k_oto_key), "t").code() == "invalid.processQueryKey");
  CHECK(client.get(oto_target()).code() == "AuthenticationFailed.MissingParameter");
  CHECK(client.get(oto_target(), "wrong").code() == "InvalidAuthentication");
  CHECK(fake.queries().back().params ==
        json{{"robotCode", "dingfakerobot"}, {"processQueryKey", k_oto_key}});
}

TEST_CASE("fake dingtalk: an oto key answers for 24 h after sending, then expires") {
  ManualTime time;
  FakeDingTalk fake;
  fake.set_time_source(time.source());
  add_oto(fake, {"alice"}); // sent now
  FakeMessage earlier;
  earlier.kind = MessageKind::oto;
  earlier.recipients = {"bob"};
  earlier.sent_at = time.now() - 23h;
  fake.add_message("sent-earlier", earlier);
  FakeMessage not_ready = earlier;
  not_ready.sent_at.reset();
  not_ready.ready_at = time.now() + 3s;
  fake.add_message("not-ready", not_ready);
  fake.add_token("t");
  TestClient client(fake.port());
  auto status = [&](const std::string& key) {
    const auto a = client.get(oto_target(key), "t");
    if (a.status == 400) {
      CHECK(a.code() == "processQueryKey.expireTime");
    }
    return a.status;
  };

  CHECK(status(k_oto_key) == 200);
  CHECK(status("sent-earlier") == 200);
  CHECK(status("not-ready") == 400); // not generated yet: the same code
  time.advance(3s);
  CHECK(status("not-ready") == 200);
  time.advance(1h - 3s - 1ms);
  CHECK(status("sent-earlier") == 200);
  time.advance(1ms);
  CHECK(status("sent-earlier") == 400);
  time.advance(23h - 1ms);
  CHECK(status(k_oto_key) == 200);
  time.advance(1ms);
  CHECK(status(k_oto_key) == 400);
  fake.set_expires_at(k_oto_key, time.now() + 1h); // a test may move the end
  CHECK(status(k_oto_key) == 200);
}

TEST_CASE("fake dingtalk: every fault switch works on each read-status API, or on one") {
  FakeDingTalkOptions options;
  options.page_size = 1;
  FakeDingTalk fake(options);
  add_read_message(fake, 2);
  add_group(fake, 2);
  add_oto(fake, {"alice", "bob"});
  fake.read(k_oto_key, "alice");
  fake.add_token("t");
  TestClient client(fake.port());
  const std::vector<MessageKind> kinds{MessageKind::private_chat, MessageKind::group,
                                       MessageKind::oto};
  auto call = [&](MessageKind kind) {
    switch (kind) {
    case MessageKind::private_chat:
      return client.post(k_query_path, query_body(), "t");
    case MessageKind::group:
      return client.post(k_group_path, group_body(), "t");
    case MessageKind::oto:
      break;
    }
    return client.get(oto_target(), "t");
  };
  // The list each API answers with, as it should be.
  auto list_of = [](MessageKind kind) {
    return kind == MessageKind::oto ? "messageReadInfoList" : "readUserIds";
  };

  SUBCASE("errors, throttling and HTML pages") {
    for (const auto& fault : {Fault::throttled(), Fault::quota_exceeded(), Fault::server_error(),
                              Fault::error(429, "Throttling"), Fault::html(403)}) {
      for (const auto kind : kinds) {
        CAPTURE(to_string(kind));
        CAPTURE(fault.code);
        fake.inject(fault); // Endpoint::query: whatever read-status call comes next
        const auto a = call(kind);
        CHECK(a.status == fault.status);
        CHECK(a.code() == fault.code);
        CHECK(call(kind).status == 200);
      }
    }
  }
  SUBCASE("bodies that are not the answer take the API's shape") {
    for (const auto kind : kinds) {
      CAPTURE(to_string(kind));
      for (auto bad : {FaultKind::malformed_json, FaultKind::truncated_json}) {
        fake.inject(Fault::of(bad));
        const auto a = call(kind);
        CHECK(a.status == 200);
        CHECK(a.parsed.is_null());
        CHECK(a.body.find(list_of(kind)) != std::string::npos);
      }
      fake.inject(Fault::of(FaultKind::wrong_shape)); // the list is not a list
      auto a = call(kind);
      CHECK(a.status == 200);
      REQUIRE(a.parsed.is_object());
      CHECK(a.parsed.contains(list_of(kind)));
      CHECK_FALSE(a.parsed[list_of(kind)].is_array());
      for (const bool chunked : {false, true}) {
        Fault oversized = Fault::of(FaultKind::oversized_body);
        oversized.chunked = chunked;
        fake.inject(oversized);
        a = call(kind);
        CHECK(a.status == 200);
        CHECK(a.body.size() > 4u * 1024 * 1024);
        REQUIRE(a.parsed.is_object()); // valid JSON of the API's shape, just too big
        REQUIRE(a.parsed[list_of(kind)].is_array());
        CHECK(a.parsed[list_of(kind)].size() > 10'000);
        if (kind == MessageKind::oto) {
          const auto& entry = a.parsed["messageReadInfoList"][0];
          CHECK(entry["readStatus"] == "READ");
          CHECK(entry["readTimestamp"].is_number_integer());
        }
      }
    }
    CHECK(fake.reads_served().empty());
  }
  SUBCASE("an endless body and a reset connection") {
    for (const auto kind : kinds) {
      CAPTURE(to_string(kind));
      fake.inject(Fault::of(FaultKind::endless_body));
      httplib::Client raw("127.0.0.1", fake.port());
      raw.set_url_encode(false);
      httplib::Request req;
      req.headers = {{"x-acs-dingtalk-access-token", "t"}};
      if (kind == MessageKind::oto) {
        req.method = "GET";
        req.path = oto_target();
      } else {
        req.method = "POST";
        req.path = kind == MessageKind::group ? k_group_path : k_query_path;
        req.headers.emplace("Content-Type", "application/json");
        req.body = (kind == MessageKind::group ? group_body() : query_body()).dump();
      }
      std::string head;
      req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
        head.append(data, n);
        return head.size() < 64 * 1024;
      };
      CHECK(raw.send(req).error() == httplib::Error::Canceled);
      CHECK(head.find(list_of(kind)) != std::string::npos);
      fake.inject(Fault::of(FaultKind::connection_reset));
      CHECK(call(kind).status == 0);
      CHECK(call(kind).status == 200);
    }
  }
  SUBCASE("aimed at one API, a fault waits for that API's call") {
    for (const auto kind : kinds) {
      CAPTURE(to_string(kind));
      fake.inject(Fault::throttled(), 1, query_endpoint(kind));
      for (const auto other : kinds) {
        if (other != kind) {
          CHECK(call(other).status == 200);
        }
      }
      CHECK(call(kind).status == 403);
      CHECK(call(kind).status == 200);
    }
    fake.set_fault_rate(Fault::server_error(), 1.0, Endpoint::oto_query);
    CHECK(call(MessageKind::oto).status == 500);
    CHECK(call(MessageKind::group).status == 200);
    CHECK(call(MessageKind::private_chat).status == 200);
    fake.set_fault_rate(Fault::server_error(), 0, Endpoint::oto_query);
    CHECK(call(MessageKind::oto).status == 200);
  }
  SUBCASE("later-page faults never go to oto, which has no cursor") {
    fake.inject(Fault::of(FaultKind::next_token_loop));
    fake.inject(Fault::of(FaultKind::cursor_invalid));
    CHECK(call(MessageKind::oto).status == 200);
    const auto first = call(MessageKind::group);
    REQUIRE(first.parsed["hasMore"] == true);
    json later = group_body();
    later["nextToken"] = first.parsed["nextToken"];
    const auto looped = client.post(k_group_path, later, "t");
    CHECK(looped.parsed["nextToken"] == later["nextToken"]);
    CHECK(client.post(k_group_path, later, "t").code() == "invalidParameter.cursor.invalid");
    CHECK(client.post(k_group_path, later, "t").status == 200);
  }
  SUBCASE("delays and revoked tokens") {
    for (const auto kind : kinds) {
      CAPTURE(to_string(kind));
      fake.inject(Fault::slow(100ms));
      const auto started = SteadyClock::now();
      CHECK(call(kind).status == 200);
      CHECK(SteadyClock::now() - started >= 100ms);
      fake.inject(Fault::of(FaultKind::revoke_tokens));
      CHECK(call(kind).code() == "InvalidAuthentication");
      fake.add_token("t");
      CHECK(call(kind).status == 200);
    }
  }
}

TEST_CASE("fake dingtalk: hostile answers of the group and oto shapes") {
  FakeDingTalk fake;
  add_read_message(fake, 2);
  add_group(fake, 2);
  add_oto(fake, {"alice", "bob", "carol"});
  const SteadyTime bob_read = SteadyClock::now() - 1min;
  fake.read(k_oto_key, "bob", bob_read);
  fake.add_token("t");
  TestClient client(fake.port());
  auto oto = [&] { return client.get(oto_target(), "t"); };
  auto group = [&] { return client.post(k_group_path, group_body(), "t"); };
  auto private_chat = [&] { return client.post(k_query_path, query_body(), "t"); };

  SUBCASE("a READ entry without userId, a readUsers entry without userId") {
    fake.inject(Fault::of(FaultKind::read_without_user_id), 2);
    // Not a private chat's: its answer has no list of objects.
    CHECK(private_chat().parsed ==
          json{{"sendStatus", "SUCCESS"}, {"readUserIds", {"user0", "user1"}}, {"hasMore", false}});
    auto a = oto();
    REQUIRE(a.status == 200);
    const auto& list = a.parsed["messageReadInfoList"];
    REQUIRE(list.size() == 4);
    CHECK_FALSE(list[3].contains("userId"));
    CHECK(list[3]["readStatus"] == "READ");
    CHECK(list[3]["readTimestamp"].is_number_integer());
    CHECK(oto_readers(json{{"messageReadInfoList", {list[0], list[1], list[2]}}}) ==
          std::vector<std::string>{"bob"});
    a = group();
    REQUIRE(a.status == 200);
    CHECK(a.parsed["readUserIds"] == json{"user0", "user1"}); // unchanged
    REQUIRE(a.parsed["readUsers"].size() == 3);
    CHECK_FALSE(a.parsed["readUsers"][2].contains("userId"));
    CHECK(a.parsed["readUsers"][2]["unionId"].is_string());
    CHECK(oto().parsed["messageReadInfoList"].size() == 3); // used up
  }
  SUBCASE("readTimestamp not a number") {
    fake.inject(Fault::of(FaultKind::timestamp_not_number));
    CHECK(group().parsed.contains("readUsers")); // only oto has timestamps: left for it
    CHECK(private_chat().status == 200);
    const auto a = oto();
    REQUIRE(a.status == 200);
    const auto& list = a.parsed["messageReadInfoList"];
    REQUIRE(list.size() == 3);
    CHECK(list[1]["readTimestamp"] == std::to_string(fake.epoch_ms(bob_read)));
    CHECK(list[0]["readTimestamp"] == "0");
    CHECK(oto().parsed["messageReadInfoList"][1]["readTimestamp"].is_number_integer());
  }
  SUBCASE("a reader named twice") {
    fake.inject(Fault::of(FaultKind::duplicate_users), 3);
    CHECK(private_chat().parsed["readUserIds"] == json{"user0", "user1", "user0"});
    const auto g = group();
    CHECK(g.parsed["readUserIds"] == json{"user0", "user1", "user0"});
    REQUIRE(g.parsed["readUsers"].size() == 3);
    CHECK(g.parsed["readUsers"][2] == g.parsed["readUsers"][0]);
    const auto a = oto();
    const auto& list = a.parsed["messageReadInfoList"];
    REQUIRE(list.size() == 4);
    CHECK(list[3] == list[1]); // bob, the first reader: alice has not read it
    CHECK(oto_readers(a.parsed) == std::vector<std::string>{"bob", "bob"});
  }
  const auto records = fake.queries();
  REQUIRE_FALSE(records.empty());
  for (const auto& r : records) {
    CHECK(r.status == 200);
  }
}

// --- webhook sink ---

namespace {

constexpr char k_secret[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

std::string now_seconds() {
  return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count());
}

httplib::Result deliver(int port, const std::string& id, const std::string& ts,
                        const std::string& body, const std::string& signature) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(1, 0);
  client.set_read_timeout(5, 0);
  return client.Post(
      "/", {{"webhook-id", id}, {"webhook-timestamp", ts}, {"webhook-signature", signature}}, body,
      "application/json");
}

} // namespace

TEST_CASE("webhook sink: the Standard Webhooks test vector verifies") {
  const std::string sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
  CHECK(WebhookSink::sign(k_secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
                          R"({"test": 2432232314})") == sig);
  CHECK(WebhookSink::verify(k_secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
                            R"({"test": 2432232314})", sig));
  CHECK(WebhookSink::verify(k_secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
                            R"({"test": 2432232314})", "v1,bm9wZQ== " + sig));
  CHECK_FALSE(WebhookSink::verify(k_secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265331",
                                  R"({"test": 2432232314})", sig));
  CHECK_FALSE(WebhookSink::verify(k_secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
                                  R"({"test": 2432232315})", sig));
  CHECK_FALSE(WebhookSink::verify(k_secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
                                  R"({"test": 2432232314})", "v2," + sig.substr(3)));
  CHECK_FALSE(WebhookSink::verify("whsec_b3RoZXI=", "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
                                  R"({"test": 2432232314})", sig));
}

TEST_CASE("webhook sink: records good deliveries and rejects bad signatures with 401") {
  WebhookSink sink(k_secret);
  const std::string body = R"({"type":"message.read","data":{"sequence":1}})";
  const std::string ts = now_seconds();
  auto r = deliver(sink.port(), "evt_1", ts, body, WebhookSink::sign(k_secret, "evt_1", ts, body));
  REQUIRE(r);
  CHECK(r->status == 200);
  r = deliver(sink.port(), "evt_2", ts, body, WebhookSink::sign(k_secret, "evt_1", ts, body));
  REQUIRE(r);
  CHECK(r->status == 401);
  const std::string old_ts = std::to_string(std::stoll(ts) - 3600);
  r = deliver(sink.port(), "evt_3", old_ts, body,
              WebhookSink::sign(k_secret, "evt_3", old_ts, body));
  REQUIRE(r);
  CHECK(r->status == 401); // replay protection: the timestamp is too old

  const auto all = sink.deliveries();
  REQUIRE(all.size() == 3);
  CHECK(all[0].signature_ok);
  CHECK(all[0].webhook_id == "evt_1");
  CHECK(all[0].json["type"] == "message.read");
  CHECK(all[0].headers.at("content-type") == "application/json");
  CHECK_FALSE(all[1].signature_ok);
  CHECK(all[1].answered == 401);
  CHECK_FALSE(all[2].timestamp_ok);
  CHECK(sink.accepted().size() == 1);
}

TEST_CASE("webhook sink: scripted answers, slowness, and going down on the same port") {
  WebhookSink sink(k_secret);
  const std::string body = "{}";
  auto send = [&](const std::string& id) {
    const std::string ts = now_seconds();
    return deliver(sink.port(), id, ts, body, WebhookSink::sign(k_secret, id, ts, body));
  };
  sink.script({500, 0ms, {}}, 2);
  sink.script({429, 0ms, {{"Retry-After", "7"}}});
  sink.script({410, 0ms, {}});
  CHECK(send("a")->status == 500);
  CHECK(send("a")->status == 500);
  auto r = send("a");
  CHECK(r->status == 429);
  CHECK(r->get_header_value("Retry-After") == "7");
  CHECK(send("a")->status == 410);
  CHECK(send("a")->status == 200);

  sink.set_delay(200ms);
  const auto started = std::chrono::steady_clock::now();
  CHECK(send("b")->status == 200);
  CHECK(std::chrono::steady_clock::now() - started >= 200ms);
  sink.set_delay(0ms);

  const int port = sink.port();
  sink.stop();
  CHECK_FALSE(sink.running());
  CHECK(send("c").error() == httplib::Error::Connection);
  sink.start();
  CHECK(sink.port() == port);
  CHECK(send("c")->status == 200);
  CHECK(sink.delivery_count() == 7);

  std::atomic<int> seen{0};
  sink.on_delivery([&](const Delivery& d) { seen += d.signature_ok ? 1 : 0; });
  send("d");
  CHECK(seen == 1);
}
