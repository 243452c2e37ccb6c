// ScopedEngine: requests pass through to the inner engine; once it is
// destroyed, the answers of its requests still in flight are dropped.
#include "fakes/fake_engine.hpp"
#include "readreceiptd/http/scoped_engine.hpp"

#include <doctest/doctest.h>
#include <memory>

using rrd::http::Response;
using rrd::http::ScopedEngine;
using rrd::testing::FakeEngine;

namespace {

rrd::http::Request get(const char* url) {
  rrd::http::Request r;
  r.url = url;
  return r;
}

Response ok() {
  Response r;
  r.status = 200;
  r.body = "{}";
  return r;
}

} // namespace

TEST_CASE("a scoped engine passes requests and answers through and counts its own") {
  FakeEngine inner;
  inner.submit(get("http://other/"), [](Response) {});
  ScopedEngine scoped(inner);
  int answered = 0;
  scoped.submit(get("http://a/x"), [&](Response r) {
    CHECK(r.status == 200);
    ++answered;
  });
  CHECK(inner.in_flight() == 2);
  CHECK(scoped.in_flight() == 1);
  inner.answer(ok(), "/x");
  scoped.run_once(rrd::Millis{0});
  CHECK(answered == 1);
  CHECK(scoped.in_flight() == 0);
}

TEST_CASE("answers that come after a scoped engine is destroyed are dropped") {
  FakeEngine inner;
  int answered = 0;
  {
    auto scoped = std::make_unique<ScopedEngine>(inner);
    scoped->submit(get("http://a/x"), [&](Response) { ++answered; });
    scoped->submit(get("http://a/y"), [&](Response) { ++answered; });
    inner.answer(ok(), "/x");
    inner.run_once(rrd::Millis{0});
    CHECK(answered == 1);
  } // the parts the callbacks point into go with it
  inner.answer(ok(), "/y");
  inner.run_once(rrd::Millis{0});
  CHECK(answered == 1);
  CHECK(inner.in_flight() == 0);
}
