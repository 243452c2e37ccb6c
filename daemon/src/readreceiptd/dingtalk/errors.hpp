// The DingTalk error taxonomy: one pure function that
// maps an HTTP outcome (transport failure, status, body) of a query or token
// call to what the daemon does next, and to the `reason` label of
// readreceiptd_dingtalk_requests_failed_total.
// Thread-safety: pure functions; call from any thread.
//
// The table, in the order it is applied:
//   transport timeout                         transient     timeout
//   transport network error                   transient     network
//   body over 4 MiB (too_large)               bad_response  bad_response
//   an HTML page (text/html or body starting
//     with '<'), any status                   throttled     throttled
//   2xx that parses (page / token)            ok            none
//   2xx that does not parse                   bad_response  bad_response
//   429                                       throttled     throttled
//   code Forbidden.AccessDenied.ApiCountLimit*,
//     query calls (the monthly quota)         quota_exhausted throttled
//   code Forbidden.AccessDenied.Qps*, Qpm*,
//     ApiCountLimit* (token calls)            throttled     throttled
//   5xx, or code system.error                 transient     server
//   4xx without a JSON {"code"} body          bad_response  bad_response
//   4xx with a code, query calls:
//     processQueryKey.expireTime              not_ready_or_expired  none
//     invalid.processQueryKey, ...missing,
//       invalid.openConversationId,
//       openConversationId.notExisted,
//       conversation.org.dismatch,
//       invalidParameter.robotCode.*,
//       resource.not.found,
//       invalidParameter.invalid (group)      stop_invalid  client
//     bot.stopped, template.not.existed,
//       template.stopped                      pause         client
//     unauthorized, auth.error, any other
//       Forbidden.* code (a missing
//       permission, an IP allow-list ...)     pause         auth
//     InvalidAuthentication                   refresh_token auth
//     AuthenticationFailed.* (the token
//       header did not reach DingTalk: our
//       bug, a new token would not help)      client_bug    auth
//     invalidParameter.cursor.invalid         restart_pagination  client
//     invalidParameter.param.invalid,
//       invalidParameter.pageSize.invalid,
//       any code not listed here              client_bug    client
//   4xx with a code, token calls:
//     invalidClientIdOrSecret, invalidSuiteKey,
//       invalidSuiteTicket, invalidAuthInfo,
//       InvalidAuthentication, unauthorized,
//       auth.error, AuthenticationFailed.*,
//       other Forbidden.*                     auth_failed   auth
//     any other code                          client_bug    client
//   any other status (1xx, 3xx)               bad_response  bad_response
//
// What the caller does with each action:
//   not_ready_or_expired: not ready within poll.not_ready_grace of sent_at,
//     else stop with reason `expired` (the caller knows the times).
//   pause: keep tracking at the slowest schedule step; warn once per message.
//   refresh_token: TokenCache::invalidate() the token used, fetch a new one
//     once and repeat the call. With a fixed token there is nothing to
//     refresh: treat it as auth_failed.
//   auth_failed: the credentials were refused; log an error and retry the
//     token later with TokenCache's backoff.
//   client_bug: log redact_request() of the request as a bug; retry on the
//     message's schedule.
//   throttled: slow every DingTalk call down; retry the message.
//   quota_exhausted: DingTalk's monthly call quota is spent: no read-status
//     call until the month turns (Beijing time); the message is polled then.
//   transient, bad_response: retry with backoff, count it, log it; a partial
//     answer is never used.
// `reason` is FailureReason::none exactly when the call did not fail (ok, or
// the expected "not ready yet / expired" answer).
#pragma once

#include "readreceiptd/dingtalk/protocol.hpp"
#include "readreceiptd/http/http_engine.hpp"

#include <initializer_list>
#include <string>
#include <string_view>

namespace rrd::dingtalk {

enum class Action {
  ok,
  not_ready_or_expired,
  stop_invalid,
  pause,
  refresh_token,
  restart_pagination,
  client_bug,
  throttled,
  transient,
  bad_response,
  auth_failed,
  quota_exhausted,
};
const char* to_string(Action a);

// The `reason` label values of readreceiptd_dingtalk_requests_failed_total;
// `none` is not a label value (the call did not fail).
enum class FailureReason { none, throttled, auth, server, network, timeout, bad_response, client };
const char* to_string(FailureReason r);
inline constexpr FailureReason k_all_failure_reasons[] = {
    FailureReason::throttled, FailureReason::auth,    FailureReason::server,
    FailureReason::network,   FailureReason::timeout, FailureReason::bad_response,
    FailureReason::client};

struct Decision {
  Action action = Action::ok;
  FailureReason reason = FailureReason::none;
  std::string code;    // DingTalk's error code, "" when the answer had none
  std::string message; // for logs: DingTalk's message (capped) or what went wrong;
                       // never a token or secret

  bool failed() const { return reason != FailureReason::none; }
};

// Classifies the answer to a read-status call of a message of `kind`: the
// table above for all three, with groupMessages/query's
// invalidParameter.invalid (the token names no robot) a stop_invalid too, and
// a 2xx parsed as the kind's answer (parse_query_page, parse_oto_status).
Decision classify(const http::Response& r, MessageKind kind, Page* page);

// Classifies the answer to a privateChatMessages/query call. When the answer
// is a good page and `page` is not null, the parsed page is moved into *page
// (so the caller does not parse it again).
Decision classify(const http::Response& r, Page* page = nullptr);

// Classifies the answer to a token call (accessToken / corpAccessToken). When
// the answer is a good token and `token` is not null, it is stored in *token.
Decision classify_token(const http::Response& r, Token* token = nullptr);

// What replaces a decision's text that quotes a credential.
inline constexpr std::string_view k_withheld = "<withheld: DingTalk's answer quotes a credential>";

// DingTalk's error texts may quote the request they answer (its access token
// header, the appSecret of a token call). Call with the answer's body and
// the credentials the request carried, before logging d.code or d.message:
// when the body or the message holds one of `secrets`, the message becomes
// k_withheld; so does the code when it holds one or was cut at
// k_max_message_chars (the cut could end inside one). The action and reason
// are kept.
void withhold_quoted_secrets(Decision& d, std::string_view body,
                             std::initializer_list<std::string_view> secrets);

} // namespace rrd::dingtalk
