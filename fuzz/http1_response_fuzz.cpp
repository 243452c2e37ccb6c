// libFuzzer target: the direct client's HTTP/1.1 response parser. The
// input's first byte chooses how the rest is split into reads (and whether
// the request was HEAD); the rest is what the server sent. The parser must
// reach the same outcome fed whole and fed in pieces, never hold a body over
// its cap, and never crash or hang.
// Thread-safety: libFuzzer calls it from one thread.
#include "readreceiptd/http/http1.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace {

using rrd::http::http1::ResponseParser;
using State = ResponseParser::State;

constexpr std::size_t k_cap = 4096;

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "http1_response_fuzz: %s\n", what);
    std::abort();
  }
}

struct Outcome {
  State state;
  std::size_t used;
};

Outcome run(ResponseParser& p, std::string_view bytes, std::size_t step, bool no_body) {
  p.reset(no_body, k_cap);
  std::size_t total = 0;
  State s = State::more;
  while (s == State::more && total < bytes.size()) {
    const std::size_t n = std::min(step, bytes.size() - total);
    std::size_t used = 0;
    s = p.feed(bytes.substr(total, n), used);
    require(used <= n, "used more than given");
    require(s != State::more || used == n, "stopped early without an outcome");
    total += used;
  }
  if (s == State::more) {
    s = p.end_of_input();
  }
  return {s, total};
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) {
    return 0;
  }
  const std::size_t step = (data[0] & 0x7F) + 1U;
  const bool no_body = (data[0] & 0x80) != 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);

  ResponseParser whole;
  ResponseParser split;
  const Outcome a = run(whole, bytes, bytes.size() + 1, no_body);
  const Outcome b = run(split, bytes, step, no_body);
  require(a.state == b.state, "whole and split disagree on the outcome");
  require(whole.error() == split.error(), "whole and split disagree on the error");
  require(whole.body().size() <= k_cap && split.body().size() <= k_cap, "body over the cap");
  if (a.state == State::done) {
    require(a.used == b.used, "whole and split took different lengths");
    require(whole.status() == split.status(), "whole and split disagree on the status");
    require(whole.status() >= 200 && whole.status() <= 999, "final status out of range");
    require(whole.body() == split.body(), "whole and split disagree on the body");
    require(whole.headers() == split.headers(), "whole and split disagree on the headers");
    require(whole.keep_alive() == split.keep_alive(), "whole and split disagree on keep-alive");
  } else {
    require(!whole.keep_alive(), "a failed answer left the connection reusable");
  }
  return 0;
}
