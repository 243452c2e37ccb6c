#include "readreceiptd/common/model.hpp"

#include <algorithm>
#include <array>
#include <unordered_set>

namespace rrd {

namespace {
constexpr std::array<std::pair<StopReason, const char*>, 6> k_stop_names{{
    {StopReason::fully_read, "fully_read"},
    {StopReason::recalled, "recalled"},
    {StopReason::expired, "expired"},
    {StopReason::max_age, "max_age"},
    {StopReason::invalid, "invalid"},
    {StopReason::removed, "removed"},
}};
} // namespace

const char* to_string(StopReason r) {
  for (const auto& [reason, name] : k_stop_names) {
    if (reason == r) {
      return name;
    }
  }
  return "unknown";
}

std::optional<StopReason> stop_reason_from_string(std::string_view s) {
  for (const auto& [reason, name] : k_stop_names) {
    if (s == name) {
      return reason;
    }
  }
  return std::nullopt;
}

const char* to_string(MessageSource s) {
  return s == MessageSource::config ? "config" : "api";
}

std::optional<MessageSource> message_source_from_string(std::string_view s) {
  if (s == "config") {
    return MessageSource::config;
  }
  if (s == "api") {
    return MessageSource::api;
  }
  return std::nullopt;
}

std::optional<std::int64_t> expected_count(const MessageSpec& spec) {
  if (!spec.expected_readers.empty()) {
    return static_cast<std::int64_t>(spec.expected_readers.size());
  }
  return spec.expected_reader_count;
}

const char* to_string(MessageKind k) {
  switch (k) {
  case MessageKind::private_chat:
    return "private_chat";
  case MessageKind::group:
    return "group";
  case MessageKind::oto:
    return "oto";
  }
  return "private_chat";
}

std::optional<MessageKind> message_kind_from_string(std::string_view s) {
  for (const MessageKind k : k_all_message_kinds) {
    if (s == to_string(k)) {
      return k;
    }
  }
  return std::nullopt;
}

const std::vector<std::string>& expected_reader_ids(const MessageRecord& m) {
  if (m.spec.expected_readers.empty() && !m.spec.expected_reader_count &&
      m.spec.kind == MessageKind::oto) {
    return m.recipients;
  }
  return m.spec.expected_readers;
}

std::optional<std::int64_t> expected_count(const MessageRecord& m) {
  if (const auto n = expected_count(m.spec)) {
    return n;
  }
  if (m.spec.kind == MessageKind::oto && !m.recipients.empty()) {
    return static_cast<std::int64_t>(m.recipients.size());
  }
  return std::nullopt;
}

std::vector<std::string> unread_user_ids(const MessageRecord& m) {
  std::vector<std::string> out;
  const std::unordered_set<std::string_view> read(m.read_user_ids.begin(), m.read_user_ids.end());
  for (const auto& id : expected_reader_ids(m)) {
    if (read.count(id) == 0) {
      out.push_back(id);
    }
  }
  return out;
}

const char* to_string(ReadVia v) {
  return v == ReadVia::push ? "push" : "poll";
}

const char* to_string(EventType t) {
  return t == EventType::message_read ? "message.read" : "message.tracking_stopped";
}

std::optional<EventType> event_type_from_string(std::string_view s) {
  if (s == "message.read") {
    return EventType::message_read;
  }
  if (s == "message.tracking_stopped") {
    return EventType::tracking_stopped;
  }
  return std::nullopt;
}

const char* to_string(DeliveryState s) {
  switch (s) {
  case DeliveryState::pending:
    return "pending";
  case DeliveryState::delivered:
    return "delivered";
  case DeliveryState::dead:
    return "dead";
  }
  return "unknown";
}

std::string make_event_id(TimePoint now, std::uint64_t random_hi, std::uint64_t random_lo) {
  static constexpr char k_alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  // 128 bits: 48 bits of time, 80 bits of randomness (16 from hi, 64 from lo).
  const auto ms = static_cast<std::uint64_t>(std::max<std::int64_t>(0, to_unix_ms(now)));
  const std::uint64_t high = (ms << 16) | (random_hi & 0xFFFF);
  const std::uint64_t low = random_lo;
  std::string out(26, '0');
  // 26 characters of 5 bits = 130 bits; the top two bits are zero.
  for (int i = 25; i >= 0; --i) {
    const int bit = (25 - i) * 5; // bit offset from the least significant end
    std::uint64_t v;
    if (bit + 5 <= 64) {
      v = (low >> bit) & 0x1F;
    } else if (bit >= 64) {
      v = (bit - 64 < 64) ? (high >> (bit - 64)) & 0x1F : 0;
    } else {
      v = ((low >> bit) | (high << (64 - bit))) & 0x1F;
    }
    out[static_cast<std::size_t>(i)] = k_alphabet[v];
  }
  return "evt_" + out;
}

std::optional<TimePoint> event_id_time(std::string_view id) {
  static constexpr std::string_view k_alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  static constexpr std::string_view k_prefix = "evt_";
  static constexpr std::size_t k_ulid_chars = 26;
  static constexpr std::size_t k_time_chars = 10; // 50 bits, the top two zero
  if (id.size() != k_prefix.size() + k_ulid_chars || id.substr(0, k_prefix.size()) != k_prefix) {
    return std::nullopt;
  }
  std::uint64_t ms = 0;
  for (std::size_t i = 0; i < k_ulid_chars; ++i) {
    const auto v = k_alphabet.find(id[k_prefix.size() + i]);
    if (v == std::string_view::npos) {
      return std::nullopt;
    }
    if (i < k_time_chars) {
      ms = (ms << 5) | v;
    }
  }
  if (ms >> 48 != 0) {
    return std::nullopt;
  }
  return from_unix_ms(static_cast<std::int64_t>(ms));
}

} // namespace rrd
