// TLS is verified: a DingTalk endpoint and a webhook that present a
// self-signed certificate are refused, until the configuration names a CA
// file that trusts it (`dingtalk.ca_file`, `webhooks[].ca_file`).
#include "fakes/test_certificate.hpp"
#include "integration/harness.hpp"

using namespace rrd::testing;
using namespace std::chrono_literals;

namespace {

TlsFiles tls_files(const TestCertificate& c) {
  return TlsFiles{c.pem_path.string(), c.key_pem_path.string()};
}

} // namespace

TEST_CASE("tls: self-signed DingTalk and webhook endpoints are refused unless a CA file trusts "
          "them") {
  const TestCertificate dingtalk_cert("IP:127.0.0.1");
  const TestCertificate sink_cert("IP:127.0.0.1");
  FakeDingTalkOptions options;
  options.tls = tls_files(dingtalk_cert);
  DaemonHarness h(options, tls_files(sink_cert));
  REQUIRE(h.dingtalk.endpoint().rfind("https://", 0) == 0);
  REQUIRE(h.sink.url().rfind("https://", 0) == 0);
  h.watch("tls-key", {"alice"});
  h.dingtalk.read("tls-key", "alice");

  // DingTalk's certificate is not trusted: not even the token request gets
  // through (the server's handler never runs).
  h.start();
  REQUIRE_MESSAGE(
      wait_until([&] { return h.log_count("cannot get a DingTalk access token") >= 1; }), h.log());
  CHECK(h.dingtalk.token_calls() == 0);
  CHECK(h.dingtalk.query_calls() == 0);
  CHECK(h.daemon->running());

  // Trusted through dingtalk.ca_file (a reload is enough): the read is
  // detected. The webhook's certificate is still not trusted: the delivery
  // fails and nothing reaches the sink.
  h.dingtalk_extra_yaml = "  ca_file: " + dingtalk_cert.pem_path.string() + "\n";
  h.reload();
  REQUIRE_MESSAGE(wait_until([&] { return h.dingtalk.reads_served().size() == 1; }), h.log());
  REQUIRE_MESSAGE(
      wait_until([&] { return h.log_count("webhook delivery failed webhook=ops") >= 1; }), h.log());
  CHECK(h.log().find("reason=\"TLS error\"") != std::string::npos);
  CHECK(h.sink.delivery_count() == 0);

  // Trusted through webhooks[].ca_file: the events arrive, retried (the
  // first retry comes 5 s after the failed attempt).
  h.webhook_extra_yaml = "    ca_file: " + sink_cert.pem_path.string() + "\n";
  h.reload();
  REQUIRE_MESSAGE(h.wait_for_stop("tls-key", 30s), h.log());
  const auto events = h.events_of("tls-key");
  REQUIRE(events.size() == 2);
  CHECK(events[0]["data"]["newly_read_user_ids"] == nlohmann::json({"alice"}));
  CHECK(events[1]["data"]["reason"] == "fully_read");
  check_sequences(h.sink);

  // The other certificate does not do: a CA file must trust the very
  // certificate the endpoint presents.
  h.dingtalk_extra_yaml = "  ca_file: " + sink_cert.pem_path.string() + "\n";
  h.watch("tls-key-2", {"bob"});
  h.dingtalk.read("tls-key-2", "bob");
  const int queries = h.dingtalk.query_calls();
  // A changed ca_file also drops the cached token, so the refusal may hit the
  // token request or the poll, whichever comes first.
  auto refusals = [&] {
    return h.log_count("poll failed key=tls-key-2") +
           h.log_count("cannot get a DingTalk access token");
  };
  const auto refused = refusals();
  h.reload();
  REQUIRE_MESSAGE(wait_until([&] { return refusals() > refused; }), h.log());
  CHECK(h.dingtalk.query_calls() == queries);
  CHECK_FALSE(h.stopped_event("tls-key-2"));
  h.stop();
}
