// The data model shared by the modules: a watched message as the user
// describes it, its tracking state, and the events and deliveries of the
// outbox. Plain value types; not thread-safe.
#pragma once

#include "readreceiptd/common/clock.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rrd {

// Why a message stopped being tracked (the `reason` of tracking_stopped).
enum class StopReason { fully_read, recalled, expired, max_age, invalid, removed };
const char* to_string(StopReason r);
std::optional<StopReason> stop_reason_from_string(std::string_view s);
inline constexpr StopReason k_all_stop_reasons[] = {StopReason::fully_read, StopReason::recalled,
                                                    StopReason::expired,    StopReason::max_age,
                                                    StopReason::invalid,    StopReason::removed};

// Where a message came from: the YAML file (declarative, removed when it
// leaves the file) or the HTTP API (kept until deleted through the API).
enum class MessageSource { config, api };
const char* to_string(MessageSource s);
std::optional<MessageSource> message_source_from_string(std::string_view s);

// How a read became known: a poll's answer, or a pushed robot_msg_read.
enum class ReadVia { poll, push };
const char* to_string(ReadVia v);

// What is known of one reader's read, beside the user id.
struct ReadInfo {
  std::optional<TimePoint> read_at; // when the person read it, where DingTalk said
  ReadVia via = ReadVia::poll;
  bool operator==(const ReadInfo&) const = default;
};

// How the bot sent the message, and so which read-status API answers for it.
enum class MessageKind {
  private_chat, // into a person-to-person chat: privateChatMessages/query
  group,        // into a group chat (groupMessages/send): groupMessages/query
  oto,          // one-to-one to up to 20 users (oToMessages/batchSend): oToMessages/readStatus
};
const char* to_string(MessageKind k);
std::optional<MessageKind> message_kind_from_string(std::string_view s);
inline constexpr MessageKind k_all_message_kinds[] = {MessageKind::private_chat, MessageKind::group,
                                                      MessageKind::oto};

// A watched message as the user describes it: one `messages:` item.
struct MessageSpec {
  std::string process_query_key;
  MessageKind kind = MessageKind::private_chat;
  std::string token;                // group only: the template bot's token (a secret)
  std::string open_conversation_id; // empty: omitted from requests
  std::string robot_code;           // resolved: the item's, else dingtalk.robot_code
  std::vector<std::string> expected_readers;
  std::optional<std::int64_t> expected_reader_count;
  std::optional<TimePoint> sent_at;                 // nullopt: when first seen
  std::optional<std::vector<std::string>> webhooks; // nullopt: every webhook
  std::map<std::string, std::string> labels;

  bool operator==(const MessageSpec&) const = default;
};

// The number of readers after which a message is fully read, if the
// specification says.
std::optional<std::int64_t> expected_count(const MessageSpec& spec);

// A message's tracking state: everything that must survive a restart.
struct MessageRecord {
  MessageSpec spec;
  MessageSource source = MessageSource::config;
  TimePoint sent_at;                      // spec.sent_at, else when first seen
  TimePoint added_at;                     // when the daemon first saw it
  std::vector<std::string> read_user_ids; // in the order they were first seen
  std::vector<ReadInfo> read_info;        // read_info[i] is of read_user_ids[i]
  // oto: the recipients DingTalk's last answer listed, in its order; the
  // expected readers when the specification names none.
  std::vector<std::string> recipients;
  std::int64_t last_sequence = 0; // sequence of the last event emitted
  std::string send_status;        // last sendStatus seen, "" before any
  bool stopped = false;
  std::optional<StopReason> stop_reason;
  std::string stop_detail;
  std::optional<TimePoint> stopped_at;
  std::optional<TimePoint> last_poll; // last completed poll, successful or not
  TimePoint next_poll;

  bool operator==(const MessageRecord&) const = default;
};

// The readers a message waits for: spec.expected_readers, else (oto, with
// no expected_reader_count either) the recipients DingTalk lists. Empty when
// no list is known.
const std::vector<std::string>& expected_reader_ids(const MessageRecord& m);
// The number of readers after which the message is fully read, if known:
// the specification's, else the recipients' number (oto).
std::optional<std::int64_t> expected_count(const MessageRecord& m);
// The expected readers who have not read yet, in expected_reader_ids order
// (empty when no list of expected readers is known).
std::vector<std::string> unread_user_ids(const MessageRecord& m);

enum class EventType { message_read, tracking_stopped };
// "message.read" / "message.tracking_stopped"
const char* to_string(EventType t);
std::optional<EventType> event_type_from_string(std::string_view s);

// An event as written to the outbox. `body` is the exact JSON delivered.
struct OutboxEvent {
  std::string id; // "evt_" + 26 characters, the webhook-id of every attempt
  std::string process_query_key;
  EventType type = EventType::message_read;
  std::int64_t sequence = 0;
  TimePoint created_at;
  std::string body;

  bool operator==(const OutboxEvent&) const = default;
};

enum class DeliveryState { pending, delivered, dead };
const char* to_string(DeliveryState s);

// One event's delivery to one webhook.
struct Delivery {
  std::string event_id;
  std::string webhook;
  std::string process_query_key;
  EventType type = EventType::message_read;
  std::int64_t sequence = 0;
  std::string body;
  DeliveryState state = DeliveryState::pending;
  int attempts = 0; // attempts made so far
  TimePoint next_attempt;
  std::string last_error; // "" before any failure; never holds a secret

  bool operator==(const Delivery&) const = default;
};

// A new event id: "evt_" + a 26-character ULID (48 bits of milliseconds, 80
// random bits, Crockford base32), so ids sort by creation time.
std::string make_event_id(TimePoint now, std::uint64_t random_hi, std::uint64_t random_lo);
// When the event with id `id` was made (the ULID's milliseconds); nullopt
// when `id` is not such an id.
std::optional<TimePoint> event_id_time(std::string_view id);

} // namespace rrd
