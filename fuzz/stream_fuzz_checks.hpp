// What the Stream fuzz targets (stream_frame_fuzz, stream_event_fuzz) check
// in common: the invariant helper, control characters and UTF-8 as the
// daemon defines them, and the robot_msg_read data's contract
// (parse_read_event() against a reference read off a document tree, values
// and errors alike).
// Thread-safety: plain functions, called from libFuzzer's one thread.
#pragma once

#include "readreceiptd/stream/frames.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace rrd::fuzz {

inline void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

// A C0 control, DEL, or a C1 control (U+0080..U+009F as UTF-8): what the
// daemon never lets into a stored id, an event or a log line.
inline bool has_control(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto u = static_cast<unsigned char>(s[i]);
    if (u < 0x20 || u == 0x7F) {
      return true;
    }
    if (u == 0xC2 && i + 1 < s.size()) {
      const auto next = static_cast<unsigned char>(s[i + 1]);
      if (next >= 0x80 && next <= 0x9F) {
        return true;
      }
    }
  }
  return false;
}

// Text for a log line: no C0 control or DEL (cap_text's promise).
inline bool is_log_safe(std::string_view s) {
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      return false;
    }
  }
  return true;
}

// RFC 3629 UTF-8: no overlong form, no surrogate, nothing past U+10FFFF.
inline bool is_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto lead = static_cast<unsigned char>(s[i]);
    std::size_t length = 0;
    std::uint32_t cp = 0;
    if (lead < 0x80) {
      ++i;
      continue;
    }
    if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
      cp = lead & 0x1Fu;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      cp = lead & 0x0Fu;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      cp = lead & 0x07u;
    } else {
      return false;
    }
    if (i + length > s.size()) {
      return false;
    }
    for (std::size_t k = 1; k < length; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) {
        return false;
      }
      cp = cp << 6 | (c & 0x3Fu);
    }
    if ((length == 3 && cp < 0x800) || (length == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += length;
  }
  return true;
}

// The input read as JSON the way frames.cpp reads it: a raw NUL is refused
// (it would end the text for the parser), discarded means "not JSON".
inline nlohmann::json parse_json(std::string_view text) {
  using nlohmann::json;
  if (text.find('\0') != std::string_view::npos) {
    return json(json::value_t::discarded);
  }
  try {
    return json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  } catch (...) {
    return json(json::value_t::discarded);
  }
}

// frames.cpp's range for operatTime: 2015-01-01 .. 2200-01-01 in epoch
// milliseconds; anything else is not a read time.
inline constexpr std::int64_t k_min_read_time_ms = 1'420'070'400'000;
inline constexpr std::int64_t k_max_read_time_ms = 7'258'118'400'000;

// parse_read_event()'s contract (frames.hpp) computed on a document tree:
// nullopt where the data must be refused.
inline std::optional<stream::ReadEvent> reference_read_event(std::string_view data) {
  using nlohmann::json;
  const json j = parse_json(data);
  if (!j.is_object()) {
    return std::nullopt;
  }
  // A string field: absent or null is nullopt in `out` and fine; another
  // type, more than k_max_field_bytes or a control character is refused.
  bool ok = true;
  auto text = [&j, &ok](const char* name) -> std::optional<std::string> {
    const auto it = j.find(name);
    if (it == j.end() || it->is_null()) {
      return std::nullopt;
    }
    if (!it->is_string()) {
      ok = false;
      return std::nullopt;
    }
    const auto& s = it->get_ref<const std::string&>();
    if (s.size() > stream::k_max_field_bytes || has_control(s)) {
      ok = false;
    }
    return s;
  };
  stream::ReadEvent e;
  const auto key = text("processQueryKey");
  const auto user = text("userId");
  const auto union_id = text("unionId");
  const auto robot = text("robotCode");
  const auto conversation = text("openConversationId");
  if (!ok || !key || key->empty() || (user && user->empty())) {
    return std::nullopt;
  }
  e.process_query_key = *key;
  e.user_id = user;
  e.union_id = union_id.value_or("");
  e.robot_code = robot.value_or("");
  e.open_conversation_id = conversation.value_or("");
  if (const auto t = j.find("operatTime"); t != j.end() && !t->is_null()) {
    std::int64_t ms = -1;
    if (t->is_number_unsigned()) {
      const auto u = t->get<std::uint64_t>();
      ms = u > static_cast<std::uint64_t>(k_max_read_time_ms) ? -1 : static_cast<std::int64_t>(u);
    } else if (t->is_number_integer()) {
      ms = t->get<std::int64_t>();
    } else if (t->is_string()) {
      const auto& s = t->get_ref<const std::string&>();
      // Digits only; more than 13 of them is past the range whatever they say.
      std::int64_t v = 0;
      for (const char c : s) {
        if (c < '0' || c > '9' || v > k_max_read_time_ms) {
          v = -1;
          break;
        }
        v = v * 10 + (c - '0');
      }
      ms = s.empty() ? -1 : v;
    }
    if (ms < k_min_read_time_ms || ms > k_max_read_time_ms) {
      return std::nullopt;
    }
    e.read_at = from_unix_ms(ms);
  }
  return e;
}

// Every error parse_read_event() may give: fixed texts naming a field,
// never a value.
inline bool is_read_event_error(const std::string& error) {
  if (error == "the event's data is not JSON" || error == "the event's data is not a JSON object" ||
      error == "no `processQueryKey`" || error == "`userId` is empty" ||
      error == "`operatTime` is not a time in epoch milliseconds") {
    return true;
  }
  for (const char* field :
       {"processQueryKey", "userId", "unionId", "robotCode", "openConversationId"}) {
    const std::string f = std::string("`") + field + "` ";
    if (error == f + "is not a string" || error == f + "holds a control character" ||
        error == f + "is longer than " + std::to_string(stream::k_max_field_bytes) + " bytes") {
      return true;
    }
  }
  return false;
}

// parse_read_event() on `data`: it agrees with the reference, an accepted
// event keeps the promises of frames.hpp, a refusal names what is wrong.
inline void check_read_event(std::string_view data) {
  const auto parsed = stream::parse_read_event(data);
  const auto reference = reference_read_event(data);
  check(static_cast<bool>(parsed) == reference.has_value(),
        "parse_read_event and the tree-based reference agree on accepting the data");
  if (!parsed) {
    check(is_read_event_error(parsed.error()),
          "a refused event's error is one of the fixed texts (it never quotes the data)");
    return;
  }
  const stream::ReadEvent& e = parsed.value();
  check(e == *reference, "parse_read_event and the reference agree on every field");
  check(!e.process_query_key.empty(), "an accepted event has a processQueryKey");
  check(!e.user_id || !e.user_id->empty(), "a userId, when present, is not empty");
  for (const std::string* s : {&e.process_query_key, &e.union_id, &e.robot_code,
                               &e.open_conversation_id, e.user_id ? &*e.user_id : &e.union_id}) {
    check(s->size() <= stream::k_max_field_bytes, "event fields are capped");
    check(!has_control(*s), "event fields hold no control characters");
  }
  if (e.read_at) {
    const auto ms = to_unix_ms(*e.read_at);
    check(ms >= k_min_read_time_ms && ms <= k_max_read_time_ms, "read_at is within 2015..2200");
  }
}

} // namespace rrd::fuzz
