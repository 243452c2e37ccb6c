#include "readreceiptd/tracker/tracker.hpp"

#include "readreceiptd/scheduler/schedule.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <unordered_set>
#include <utility>

namespace rrd::tracker {

namespace {

using Json = nlohmann::ordered_json;

Json labels_json(const std::map<std::string, std::string>& labels) {
  Json out = Json::object();
  for (const auto& [k, v] : labels) {
    out[k] = v;
  }
  return out;
}

// Compact JSON; invalid UTF-8 (which DingTalk answers never hold, but labels
// might) is replaced rather than thrown on.
std::string dump(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

OutboxEvent make_event(const MessageRecord& rec, EventType type, TimePoint now, Json data) {
  OutboxEvent ev;
  ev.process_query_key = rec.spec.process_query_key;
  ev.type = type;
  ev.sequence = rec.last_sequence;
  ev.created_at = now;
  Json body = Json::object();
  body["type"] = to_string(type);
  body["timestamp"] = format_rfc3339(now);
  body["data"] = std::move(data);
  ev.body = dump(body);
  return ev;
}

// Appends a message.read event for `newly`, consuming the next sequence.
void emit_read(Step& step, const std::vector<std::string>& newly, TimePoint now) {
  MessageRecord& rec = step.record;
  rec.last_sequence += 1;
  Json data = Json::object();
  data["process_query_key"] = rec.spec.process_query_key;
  data["open_conversation_id"] = rec.spec.open_conversation_id;
  data["robot_code"] = rec.spec.robot_code;
  data["newly_read_user_ids"] = newly;
  data["read_user_ids"] = rec.read_user_ids;
  data["read_count"] = rec.read_user_ids.size();
  if (const auto expected = expected_count(rec.spec)) {
    data["expected_reader_count"] = *expected;
  } else {
    data["expected_reader_count"] = nullptr;
  }
  data["send_status"] = rec.send_status;
  data["sequence"] = rec.last_sequence;
  data["labels"] = labels_json(rec.spec.labels);
  step.events.push_back(make_event(rec, EventType::message_read, now, std::move(data)));
}

// Marks the record stopped and appends its message.tracking_stopped event.
void emit_stop(Step& step, StopReason reason, std::string detail, TimePoint now) {
  MessageRecord& rec = step.record;
  rec.stopped = true;
  rec.stop_reason = reason;
  rec.stop_detail = std::move(detail);
  rec.stopped_at = now;
  rec.last_sequence += 1;
  Json data = Json::object();
  data["process_query_key"] = rec.spec.process_query_key;
  data["reason"] = to_string(reason);
  data["detail"] = rec.stop_detail;
  data["read_user_ids"] = rec.read_user_ids;
  data["read_count"] = rec.read_user_ids.size();
  data["sequence"] = rec.last_sequence;
  data["labels"] = labels_json(rec.spec.labels);
  step.events.push_back(make_event(rec, EventType::tracking_stopped, now, std::move(data)));
}

// The ids of `answer` not yet in `known`, deduplicated, in answer order.
std::vector<std::string> newly_read(const std::vector<std::string>& known,
                                    const std::vector<std::string>& answer) {
  std::unordered_set<std::string> seen(known.begin(), known.end());
  std::vector<std::string> out;
  for (const auto& id : answer) {
    if (!id.empty() && seen.insert(id).second) {
      out.push_back(id);
    }
  }
  return out;
}

} // namespace

MessageRecord new_record(const MessageSpec& spec, MessageSource source, TimePoint now) {
  MessageRecord rec;
  rec.spec = spec;
  rec.source = source;
  rec.sent_at = spec.sent_at.value_or(now);
  rec.added_at = now;
  rec.next_poll = now;
  return rec;
}

Millis age(const MessageRecord& record, TimePoint now) {
  return now - record.sent_at;
}

bool fully_read(const MessageRecord& record) {
  const MessageSpec& spec = record.spec;
  if (!spec.expected_readers.empty()) {
    const std::unordered_set<std::string> read(record.read_user_ids.begin(),
                                               record.read_user_ids.end());
    return std::all_of(spec.expected_readers.begin(), spec.expected_readers.end(),
                       [&](const std::string& id) { return read.count(id) != 0; });
  }
  if (spec.expected_reader_count) {
    return static_cast<std::int64_t>(record.read_user_ids.size()) >= *spec.expected_reader_count;
  }
  return false;
}

bool due(const MessageRecord& record, TimePoint now) {
  return !record.stopped && record.next_poll <= now;
}

Step apply(const MessageRecord& record, const PollResult& result, const Context& ctx) {
  Step step{record, {}};
  MessageRecord& rec = step.record;
  const TimePoint now = ctx.now;
  const Millis msg_age = age(rec, now);
  const auto& schedule = ctx.poll.schedule;
  const Millis normal = scheduler::interval_for_age(schedule, msg_age);
  rec.last_poll = now;

  Millis delay = normal;
  switch (result.kind) {
  case PollResult::Kind::answer: {
    rec.send_status = result.send_status;
    const auto newly = newly_read(rec.read_user_ids, result.read_user_ids);
    if (!newly.empty()) {
      rec.read_user_ids.insert(rec.read_user_ids.end(), newly.begin(), newly.end());
      emit_read(step, newly, now);
    }
    if (rec.send_status == k_send_status_recalled) {
      emit_stop(step, StopReason::recalled, "", now);
      return step;
    }
    if (fully_read(rec)) {
      emit_stop(step, StopReason::fully_read, "", now);
      return step;
    }
    break;
  }
  case PollResult::Kind::expire_time:
    if (msg_age > ctx.poll.not_ready_grace) {
      emit_stop(step, StopReason::expired,
                result.code.empty() ? std::string(k_code_expire_time) : result.code, now);
      return step;
    }
    break; // not ready yet: on schedule
  case PollResult::Kind::invalid:
    emit_stop(step, StopReason::invalid, result.code, now);
    return step;
  case PollResult::Kind::paused:
    delay = scheduler::slowest_interval(schedule);
    break;
  case PollResult::Kind::transient:
    delay = scheduler::backoff_delay(ctx.consecutive_failures, normal, ctx.jitter);
    break;
  }

  if (msg_age >= ctx.poll.max_age) {
    emit_stop(step, StopReason::max_age, "", now);
    return step;
  }
  // Here sent_at + max_age > now, so the next poll lies in (now, deadline]
  // for any positive delay.
  rec.next_poll = std::min(now + delay, rec.sent_at + ctx.poll.max_age);
  return step;
}

Step stop(const MessageRecord& record, StopReason reason, std::string detail, TimePoint now) {
  Step step{record, {}};
  if (!record.stopped) {
    emit_stop(step, reason, std::move(detail), now);
  }
  return step;
}

} // namespace rrd::tracker
