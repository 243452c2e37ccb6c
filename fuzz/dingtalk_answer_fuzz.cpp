// libFuzzer target: DingTalk's answers as the daemon sees them. The input's
// first two bytes choose the HTTP status (and a header), the rest is the
// body; it goes through classify() / classify_token(), the parsers behind
// them, and a PageWalk fed with the parsed pages. Nothing may crash, throw or
// hang, and the decisions must be consistent with the parsers. The page
// parser must also agree with a reference built on a document tree. The same
// answer is classified for each message kind: errors as one table (groups
// adding invalidParameter.invalid), 2xx answers by the kind's parser (the
// group page with readUsers, the oto recipients list), whose pages must hold
// no empty, repeated or control-character ids.
// Thread-safety: libFuzzer calls it from one thread.
#include "readreceiptd/dingtalk/errors.hpp"
#include "readreceiptd/dingtalk/pagination.hpp"
#include "readreceiptd/dingtalk/protocol.hpp"
#include "readreceiptd/http/http_engine.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>
#include <utility>

namespace {

using rrd::dingtalk::Action;
using rrd::dingtalk::Decision;
using rrd::dingtalk::FailureReason;

// The statuses an answer is likely to have; the selector byte picks one, or
// any value 0..999 when it is past the list.
constexpr int k_statuses[] = {200, 200, 200, 200, 400, 400, 400, 403,
                              429, 500, 502, 503, 204, 301, 404, 100};
constexpr std::size_t k_status_count = sizeof k_statuses / sizeof k_statuses[0];

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

int pick_status(std::uint8_t a, std::uint8_t b) {
  if (a < k_status_count * 8) {
    return k_statuses[a % k_status_count];
  }
  return (a * 256 + b) % 1000;
}

rrd::http::Response make_response(const std::uint8_t* data, std::size_t size) {
  rrd::http::Response r;
  if (size < 2) {
    r.status = 200;
    r.body.assign(reinterpret_cast<const char*>(data), size);
    return r;
  }
  r.status = pick_status(data[0], data[1]);
  // Low bits of the second byte: the content type, or a transport failure
  // (which must win over anything in the body).
  switch (data[1] & 0x07) {
  case 1:
    r.headers.emplace_back("content-type", "text/html; charset=utf-8");
    break;
  case 2:
    r.headers.emplace_back("Content-Type", "application/json");
    break;
  case 3:
    r.failure = rrd::http::Failure::timeout;
    r.status = 0;
    r.error = "Operation timed out";
    return r;
  case 4:
    r.failure = rrd::http::Failure::network;
    r.status = 0;
    r.error = std::string(reinterpret_cast<const char*>(data + 2), size - 2);
    return r;
  default:
    break;
  }
  r.body.assign(reinterpret_cast<const char*>(data + 2), size - 2);
  return r;
}

bool is_known_action(Action a) {
  return std::string_view(rrd::dingtalk::to_string(a)) != "unknown";
}

void check_decision(const Decision& d, const rrd::http::Response& r) {
  check(is_known_action(d.action), "action has a name");
  check(std::string_view(rrd::dingtalk::to_string(d.reason)) != "unknown", "reason has a name");
  // reason is none exactly when the call did not fail.
  check((d.reason == FailureReason::none) ==
            (d.action == Action::ok || d.action == Action::not_ready_or_expired),
        "reason none iff ok or not_ready_or_expired");
  check(d.failed() == (d.reason != FailureReason::none), "failed() follows reason");
  if (r.failure != rrd::http::Failure::none) {
    check(d.action == Action::transient || d.action == Action::bad_response,
          "a transport failure is transient or a bad response");
  }
  if (d.action == Action::ok) {
    check(r.failure == rrd::http::Failure::none, "ok only with an answer");
    check(r.status >= 200 && r.status < 300, "ok only for a 2xx");
  }
  // Text for logs is capped: DingTalk's message at k_max_message_chars plus
  // "...", our own wording a little longer.
  check(d.code.size() <= rrd::dingtalk::k_max_message_chars + 3, "code is capped");
  check(d.message.size() <= 2 * rrd::dingtalk::k_max_message_chars + 256, "message is capped");
  for (const std::string* s : {&d.code, &d.message}) {
    for (const char c : *s) {
      const auto u = static_cast<unsigned char>(c);
      check(u >= 0x20 && u != 0x7F, "log text holds no control characters");
    }
  }
}

void walk_pages(const rrd::dingtalk::Page& page) {
  // One page that ends the walk, and the same page as every page of a walk
  // that loops: the walk must end (done or fail) within its page limit.
  rrd::dingtalk::PageWalk walk(8);
  auto next = walk.start();
  check(next.kind == rrd::dingtalk::Next::Kind::fetch && next.token_ptr() == nullptr,
        "a walk starts at the first page");
  int steps = 0;
  while (next.kind == rrd::dingtalk::Next::Kind::fetch) {
    check(++steps <= 8 + 2, "a walk ends within its page limit");
    if (steps == 2 && !walk.restarted()) {
      next = walk.on_cursor_invalid();
      continue;
    }
    next = walk.on_page(page);
  }
  if (next.kind == rrd::dingtalk::Next::Kind::done) {
    check(!page.has_more, "done only after a last page");
    check(next.read_user_ids.size() <= page.read_user_ids.size(), "union of one page's ids");
  } else {
    check(page.has_more, "a walk over a repeated last page does not fail");
  }
  // After the end, every further answer fails.
  check(walk.on_page(page).kind == rrd::dingtalk::Next::Kind::fail, "no page after the end");
}

using json = nlohmann::json;
using rrd::err;
using rrd::Result;
using rrd::dingtalk::Page;

json reference_parse_json(std::string_view body) {
  if (body.find('\0') != std::string_view::npos) {
    return json(json::value_t::discarded);
  }
  try {
    return json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  } catch (...) {
    return json(json::value_t::discarded);
  }
}

const char* reference_type_name(const json& j) {
  return j.type_name();
}

bool read_optional_string(const json& obj, const char* name, std::string& out, std::string& why) {
  const auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) {
    out.clear();
    return true;
  }
  if (!it->is_string()) {
    why = std::string(name) + ": expected a string, got " + reference_type_name(*it);
    return false;
  }
  out = it->get_ref<const std::string&>();
  return true;
}

// A C0 control, DEL, or a C1 control (U+0080..U+009F), decoded from the
// UTF-8 that the JSON parser has already validated.
bool reference_has_control(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto lead = static_cast<unsigned char>(s[i]);
    std::uint32_t cp = lead;
    std::size_t length = 1;
    if (lead >= 0xF0) {
      length = 4;
    } else if (lead >= 0xE0) {
      length = 3;
    } else if (lead >= 0xC0) {
      length = 2;
      cp = (lead & 0x1Fu) << 6 | (static_cast<unsigned char>(s[i + 1]) & 0x3Fu);
    }
    if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F)) {
      return true;
    }
    i += length;
  }
  return false;
}

// What parse_query_page() decides, computed the straightforward way: the
// whole body parsed into a document tree, then the fields looked up. The
// daemon reads the body with a SAX handler instead (no tree); both must
// agree on every input, results and error texts alike.
Result<Page, std::string> reference_parse_query_page(std::string_view body) {
  try {
    const json j = reference_parse_json(body);
    if (j.is_discarded()) {
      return err(std::string("body is not valid JSON"));
    }
    if (!j.is_object()) {
      return err(std::string("body: expected a JSON object, got ") + reference_type_name(j));
    }
    if (!j.contains("sendStatus") && !j.contains("readUserIds") && !j.contains("hasMore") &&
        !j.contains("nextToken")) {
      return err(std::string("body: none of sendStatus, readUserIds, hasMore, nextToken"));
    }

    Page page;
    std::string why;
    if (!read_optional_string(j, "sendStatus", page.send_status, why) ||
        !read_optional_string(j, "nextToken", page.next_token, why)) {
      return err(std::move(why));
    }

    if (const auto it = j.find("readUserIds"); it != j.end() && !it->is_null()) {
      if (!it->is_array()) {
        return err(std::string("readUserIds: expected an array, got ") + reference_type_name(*it));
      }
      page.read_user_ids.reserve(it->size());
      for (std::size_t i = 0; i < it->size(); ++i) {
        const json& id = (*it)[i];
        if (!id.is_string()) {
          return err("readUserIds[" + std::to_string(i) + "]: expected a string, got " +
                     reference_type_name(id));
        }
        const auto& s = id.get_ref<const std::string&>();
        if (s.empty()) {
          return err("readUserIds[" + std::to_string(i) + "]: empty string");
        }
        if (reference_has_control(s)) {
          return err("readUserIds[" + std::to_string(i) + "]: control character in a user id");
        }
        page.read_user_ids.push_back(s);
      }
    }

    if (const auto it = j.find("hasMore"); it != j.end() && !it->is_null()) {
      if (!it->is_boolean()) {
        return err(std::string("hasMore: expected a boolean, got ") + reference_type_name(*it));
      }
      page.has_more = it->get<bool>();
    }
    if (page.has_more && page.next_token.empty()) {
      return err(std::string("nextToken: missing or empty while hasMore is true"));
    }
    return page;
  } catch (...) {
    return err(std::string("body could not be parsed"));
  }
}

void check_user_ids(const std::vector<std::string>& ids) {
  for (const auto& id : ids) {
    check(!id.empty(), "user ids are not empty");
    check(!rrd::dingtalk::has_control_character(id), "user ids hold no control characters");
  }
}

bool unique(const std::vector<std::string>& ids) {
  std::set<std::string> seen(ids.begin(), ids.end());
  return seen.size() == ids.size();
}

// What classify() must hand out for a message of `kind`, against the
// private-chat decision `base` and the kind's own parser.
void check_kind(const rrd::http::Response& r, rrd::MessageKind kind, const Decision& base) {
  rrd::dingtalk::Page page;
  page.send_status = "sentinel";
  const Decision d = rrd::dingtalk::classify(r, kind, &page);
  check_decision(d, r);
  const bool answered = r.failure == rrd::http::Failure::none && r.status >= 200 &&
                        r.status < 300 && base.action != Action::throttled;
  if (!answered) {
    // Errors are one table for every kind; groups add invalidParameter.invalid.
    const auto e = rrd::dingtalk::parse_error_body(r.body);
    const bool group_invalid = kind == rrd::MessageKind::group && e &&
                               e->code == "invalidParameter.invalid" &&
                               base.action == Action::client_bug;
    check(group_invalid ? d.action == Action::stop_invalid : d.action == base.action,
          "every kind classifies an error as private_chat does");
    if (!group_invalid) {
      check(d.reason == base.reason && d.code == base.code, "same reason and code");
    }
  }
  const auto parsed = kind == rrd::MessageKind::oto ? rrd::dingtalk::parse_oto_status(r.body)
                                                    : rrd::dingtalk::parse_group_page(r.body);
  if (d.action == Action::ok) {
    check(static_cast<bool>(parsed), "ok implies the kind's answer parsed");
    check(parsed.value() == page, "classify hands out the kind's parsed page");
  } else {
    check(page.send_status == "sentinel" && page.read_user_ids.empty(),
          "no page is handed out unless ok");
  }
  if (!parsed) {
    return;
  }
  const auto& p = parsed.value();
  check_user_ids(p.read_user_ids);
  if (kind == rrd::MessageKind::group) {
    // readUserIds may repeat an id, as privateChatMessages/query's may (the
    // tracker counts each once); readUsers add only ids not yet listed.
    check(!p.lists_recipients && p.read_at.empty(), "a group answer has no recipients or times");
    check(!p.has_more || !p.next_token.empty(), "hasMore implies a nextToken");
    const auto plain = rrd::dingtalk::parse_query_page(r.body);
    if (plain) {
      const auto& ids = plain.value().read_user_ids;
      check(p.read_user_ids.size() >= std::set<std::string>(ids.begin(), ids.end()).size(),
            "readUsers only add to readUserIds");
    }
    return;
  }
  check(p.lists_recipients && !p.has_more && p.next_token.empty(), "one oto page");
  check(unique(p.read_user_ids), "each oto reader once");
  check(p.read_at.size() == p.read_user_ids.size(), "a read time slot per reader");
  check(unique(p.recipients), "each recipient once");
  check(p.recipients.size() <= rrd::dingtalk::k_max_oto_entries, "recipients are capped");
  check_user_ids(p.recipients);
  const std::set<std::string> recipients(p.recipients.begin(), p.recipients.end());
  for (const auto& id : p.read_user_ids) {
    check(recipients.count(id) == 1, "every reader is a listed recipient");
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const rrd::http::Response r = make_response(data, size);
  try {
    rrd::dingtalk::Page page;
    page.send_status = "sentinel";
    const Decision d = rrd::dingtalk::classify(r, &page);
    check_decision(d, r);
    check(rrd::dingtalk::classify(r, rrd::MessageKind::private_chat, nullptr).action == d.action,
          "private_chat is the default kind");
    check_kind(r, rrd::MessageKind::group, d);
    check_kind(r, rrd::MessageKind::oto, d);

    const auto parsed = rrd::dingtalk::parse_query_page(r.body);
    const auto reference = reference_parse_query_page(r.body);
    check(static_cast<bool>(parsed) == static_cast<bool>(reference),
          "the page parser and the tree-based reference agree on success");
    check(parsed ? parsed.value() == reference.value() : parsed.error() == reference.error(),
          "the page parser and the tree-based reference agree on the page or the error");
    if (d.action == Action::ok) {
      check(static_cast<bool>(parsed), "ok implies the page parsed");
      check(parsed.value() == page, "classify hands out the parsed page");
    } else {
      check(page.send_status == "sentinel" && page.read_user_ids.empty(),
            "no page is handed out unless ok");
    }
    if (parsed) {
      const auto& p = parsed.value();
      check(!p.has_more || !p.next_token.empty(), "hasMore implies a nextToken");
      for (const auto& id : p.read_user_ids) {
        check(!id.empty(), "user ids are not empty");
        for (const char c : id) {
          const auto u = static_cast<unsigned char>(c);
          check(u >= 0x20 && u != 0x7F, "user ids hold no control characters");
        }
      }
      walk_pages(p);
    }

    rrd::dingtalk::Token token;
    const Decision t = rrd::dingtalk::classify_token(r, &token);
    check_decision(t, r);
    check(t.action != Action::not_ready_or_expired && t.action != Action::stop_invalid &&
              t.action != Action::pause && t.action != Action::refresh_token &&
              t.action != Action::restart_pagination,
          "token calls have token actions only");
    const auto tok = rrd::dingtalk::parse_token_answer(r.body);
    if (t.action == Action::ok) {
      check(static_cast<bool>(tok), "ok implies the token parsed");
      check(tok.value() == token, "classify_token hands out the parsed token");
    } else {
      check(token.access_token.empty(), "no token is handed out unless ok");
    }
    if (tok) {
      check(!tok.value().access_token.empty(), "a token is not empty");
      check(tok.value().expire_in_seconds >= 1 &&
                tok.value().expire_in_seconds <= rrd::dingtalk::k_max_token_lifetime_seconds,
            "expireIn is clamped");
    }

    if (const auto e = rrd::dingtalk::parse_error_body(r.body)) {
      check(!e->code.empty(), "an error body has a code");
      for (const std::string* s : {&e->code, &e->message, &e->request_id}) {
        check(s->size() <= rrd::dingtalk::k_max_message_chars + 3, "error fields are capped");
        for (const char c : *s) {
          const auto u = static_cast<unsigned char>(c);
          check(u >= 0x20 && u != 0x7F, "error fields hold no control characters");
        }
      }
    }
    const std::string capped = rrd::dingtalk::cap_text(r.body, size % 64);
    check(capped.size() <= size % 64 + 3, "cap_text caps");
  } catch (...) {
    check(false, "no exception escapes the DingTalk answer handling");
  }
  return 0;
}
