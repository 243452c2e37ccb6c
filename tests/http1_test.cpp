// Tests of the direct client's HTTP/1.1 wire format: URLs taken apart,
// requests written, and answers parsed whole and in every split.
#include "readreceiptd/http/http1.hpp"

#include <doctest/doctest.h>
#include <string>
#include <string_view>

namespace http = rrd::http;
using http::http1::ResponseParser;
using State = ResponseParser::State;

namespace {

constexpr std::size_t k_cap = 1024;

http::http1::Target target_of(std::string_view url) {
  std::string why;
  const auto t = http::http1::parse_url(url, why);
  REQUIRE_MESSAGE(t.has_value(), why);
  return *t;
}

std::string refusal(const std::string& url) {
  std::string why;
  CHECK_FALSE(http::http1::parse_url(url, why).has_value());
  return why;
}

// Feeds `bytes` in pieces of `step` bytes (0: all at once); returns the
// state and, through `used_total`, how many bytes the response took.
State parse(ResponseParser& p, std::string_view bytes, std::size_t step = 0,
            std::size_t* used_total = nullptr, bool no_body = false, std::size_t cap = k_cap) {
  p.reset(no_body, cap);
  std::size_t total = 0;
  State s = State::more;
  while (s == State::more && total < bytes.size()) {
    const std::size_t n = step == 0 ? bytes.size() - total : std::min(step, bytes.size() - total);
    std::size_t used = 0;
    s = p.feed(bytes.substr(total, n), used);
    total += used;
    if (used < n) {
      break;
    }
  }
  if (used_total != nullptr) {
    *used_total = total;
  }
  return s;
}

} // namespace

TEST_CASE("URLs are taken apart into what the connection and the request line need") {
  auto t = target_of("https://api.dingtalk.com/v1.0/robot/privateChatMessages/query");
  CHECK(t.tls);
  CHECK(t.host == "api.dingtalk.com");
  CHECK(t.port == "443");
  CHECK(t.authority == "api.dingtalk.com");
  CHECK(t.path == "/v1.0/robot/privateChatMessages/query");

  t = target_of("http://127.0.0.1:8080");
  CHECK_FALSE(t.tls);
  CHECK(t.host == "127.0.0.1");
  CHECK(t.port == "8080");
  CHECK(t.authority == "127.0.0.1:8080");
  CHECK(t.path == "/");

  t = target_of("HTTP://[::1]:9/a?b=c#fragment");
  CHECK(t.host == "::1");
  CHECK(t.port == "9");
  CHECK(t.authority == "[::1]:9");
  CHECK(t.path == "/a?b=c");

  t = target_of("http://h?q=1");
  CHECK(t.path == "?q=1");
}

TEST_CASE("URLs the client cannot use are refused with a reason") {
  CHECK(refusal("ftp://example.com/") == "unsupported URL scheme (only http and https)");
  CHECK(refusal("example.com/") == "unsupported URL scheme (only http and https)");
  CHECK(refusal("http://user:secret@example.com/") ==
        "URLs with user information are not supported");
  CHECK(refusal("http:///path") == "URL without a host");
  CHECK(refusal("http://h:0/") == "invalid port in URL");
  CHECK(refusal("http://h:65536/") == "invalid port in URL");
  CHECK(refusal("http://h:8x/") == "invalid port in URL");
  CHECK(refusal("http://[::1/") == "invalid IPv6 address in URL");
  CHECK(refusal("http://h/a b") == "URL with white space");
  CHECK(refusal("http://h/a\r\nX: y") == "URL with white space");
}

TEST_CASE("a request is written with Host and Content-Length, and the caller's own are dropped") {
  http::Request r;
  r.method = "POST";
  r.url = "http://127.0.0.1:8080/v1.0/q?x=1";
  r.headers = {{"x-acs-dingtalk-access-token", "t"},
               {"Content-Type", "application/json"},
               {"X-Empty", ""},
               {"host", "evil"},
               {"Content-Length", "99"},
               {"Connection", "close"}};
  r.body = R"({"a":1})";
  std::string out = "left alone|";
  http::http1::write_request(out, r, target_of(r.url));
  CHECK(out == "left alone|POST /v1.0/q?x=1 HTTP/1.1\r\n"
               "Host: 127.0.0.1:8080\r\n"
               "x-acs-dingtalk-access-token: t\r\n"
               "Content-Type: application/json\r\n"
               "X-Empty:\r\n"
               "Content-Length: 7\r\n"
               "\r\n"
               R"({"a":1})");

  http::Request get;
  get.method = "GET";
  get.url = "http://h?q=1";
  out.clear();
  http::http1::write_request(out, get, target_of(get.url));
  CHECK(out == "GET /?q=1 HTTP/1.1\r\nHost: h\r\n\r\n");

  http::Request empty_post;
  empty_post.url = "http://h/";
  out.clear();
  http::http1::write_request(out, empty_post, target_of(empty_post.url));
  CHECK(out == "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
}

TEST_CASE("request headers that would break the request apart are refused") {
  using Headers = std::vector<std::pair<std::string, std::string>>;
  CHECK(http::http1::check_headers(Headers{{"A", "b"}, {"C", ""}}).empty());
  CHECK_FALSE(http::http1::check_headers(Headers{{"A", "b\r\nX: y"}}).empty());
  CHECK_FALSE(http::http1::check_headers(Headers{{"A:B", "c"}}).empty());
  CHECK_FALSE(http::http1::check_headers(Headers{{"", "c"}}).empty());
  CHECK_FALSE(http::http1::check_headers(Headers{{"A B", "c"}}).empty());
}

TEST_CASE("answers parse the same whole and split at every byte") {
  struct Case {
    const char* name;
    std::string bytes;
    int status;
    std::string body;
    bool keep_alive;
  };
  const Case cases[] = {
      {"Content-Length",
       "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", 200,
       "hello", true},
      {"chunked, with extensions and trailers",
       "HTTP/1.1 201 Created\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
       "5;name=value\r\nhello\r\n1A\r\n abcdefghijklmnopqrstuvwxy\r\n0\r\nX-Trailer: 1\r\n\r\n",
       201, "hello abcdefghijklmnopqrstuvwxy", true},
      {"interim answers first",
       "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
       "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
       404, "", true},
      {"bare LF line ends", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 200, "ok", true},
      {"Connection: close",
       "HTTP/1.1 500 Oops\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\nx", 500, "x",
       false},
      {"HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", 200, "x", false},
      {"HTTP/1.0 keep-alive",
       "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx", 200, "x", true},
      {"204 has no body", "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", 204, "", true},
      {"no reason phrase", "HTTP/1.1 429\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n", 429, "",
       true},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    for (std::size_t step = 0; step <= c.bytes.size(); ++step) {
      INFO("step " << step);
      ResponseParser p;
      std::size_t used = 0;
      REQUIRE(parse(p, c.bytes, step, &used) == State::done);
      CHECK(used == c.bytes.size());
      CHECK(p.status() == c.status);
      CHECK(p.body() == c.body);
      CHECK(p.keep_alive() == c.keep_alive);
      CHECK(p.received() == c.bytes.size());
    }
  }
}

TEST_CASE("header names are lower-cased, values trimmed and folded, interim headers dropped") {
  ResponseParser p;
  REQUIRE(parse(p, "HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
                   "HTTP/1.1 200 OK\r\nRetry-After:  3 \r\nX-Folded: a\r\n  b\r\nnocolon\r\n"
                   "Content-Length: 0\r\n\r\n") == State::done);
  using Headers = std::vector<std::pair<std::string, std::string>>;
  CHECK(p.headers() == Headers{{"retry-after", "3"}, {"x-folded", "a b"}, {"content-length", "0"}});
}

TEST_CASE("a body that runs until the close ends only at the close") {
  ResponseParser p;
  CHECK(parse(p, "HTTP/1.1 200 OK\r\n\r\npart one ") == State::more);
  std::size_t used = 0;
  CHECK(p.feed("part two", used) == State::more);
  CHECK(p.end_of_input() == State::done);
  CHECK(p.body() == "part one part two");
  CHECK_FALSE(p.keep_alive());
}

TEST_CASE("an answer to HEAD has no body whatever its headers say") {
  ResponseParser p;
  std::size_t used = 0;
  const std::string bytes = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
  CHECK(parse(p, bytes + "next", 0, &used, /*no_body=*/true) == State::done);
  CHECK(used == bytes.size());
  CHECK(p.body().empty());
  CHECK(p.keep_alive());
}

TEST_CASE("bytes after the answer are left for the caller") {
  ResponseParser p;
  std::size_t used = 0;
  CHECK(parse(p, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1", 0, &used) ==
        State::done);
  CHECK(used == 40);
  CHECK(p.body() == "ok");
}

TEST_CASE("the body cap is inclusive, announced or streamed") {
  ResponseParser p;
  const std::string at_cap(k_cap, 'x');
  CHECK(parse(p, "HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + at_cap) == State::done);
  CHECK(p.body().size() == k_cap);
  CHECK(parse(p, "HTTP/1.1 200 OK\r\nContent-Length: 1025\r\n\r\n") == State::too_large);
  CHECK(p.error() == "response larger than 1024 bytes");
  CHECK(parse(p, "HTTP/1.1 200 OK\r\n\r\n" + at_cap + "x", 100) == State::too_large);
  CHECK(parse(p, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n" + at_cap + "x\r\n",
              7) == State::too_large);
  CHECK_FALSE(p.keep_alive());
}

TEST_CASE("headers beyond 64 KiB are too large, split or not") {
  const std::string big = "HTTP/1.1 200 OK\r\nX-Big: " + std::string(70 * 1024, 'a') + "\r\n\r\n";
  for (const std::size_t step : {std::size_t{0}, std::size_t{1000}}) {
    ResponseParser p;
    CHECK(parse(p, big, step) == State::too_large);
  }
  std::string many = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n";
  for (int i = 0; i < 7000; ++i) {
    many += "X-Trailer: 123\r\n";
  }
  ResponseParser p;
  CHECK(parse(p, many + "\r\n") == State::too_large);
}

TEST_CASE("broken answers are invalid, with a reason") {
  const std::pair<std::string, std::string> cases[] = {
      {"HTTP/2 200\r\n\r\n", "invalid HTTP status line in response"},
      {"<html>hello</html>\r\n\r\n", "invalid HTTP status line in response"},
      {"HTTP/1.1 2000 OK\r\n\r\n", "invalid HTTP status line in response"},
      {"HTTP/1.1 099 Huh\r\n\r\n", "invalid HTTP status in response"},
      {"HTTP/1.1 101 Switching Protocols\r\n\r\n", "unexpected 101 Switching Protocols"},
      {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
       "invalid Content-Length in response"},
      {"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length in response"},
      {"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
       "invalid Content-Length in response"},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
       "invalid chunk size in response"},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
       "chunk not followed by CRLF in response"},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + std::string(5000, '1'),
       "overlong line in a chunked response"},
  };
  for (const auto& c : cases) {
    INFO(c.first.substr(0, 60));
    ResponseParser p;
    CHECK(parse(p, c.first) == State::invalid);
    CHECK(p.error() == c.second);
    CHECK_FALSE(p.keep_alive());
  }
}

TEST_CASE("a close before the answer is whole is invalid, and says whether anything came") {
  ResponseParser p;
  p.reset(false, k_cap);
  CHECK(p.end_of_input() == State::invalid);
  CHECK(p.error() == "empty reply from server");
  CHECK(p.received() == 0);

  CHECK(parse(p, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc") == State::more);
  CHECK(p.end_of_input() == State::invalid);
  CHECK(p.error() == "connection closed before the answer was complete");
}
