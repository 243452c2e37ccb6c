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

Json time_or_null(const std::optional<TimePoint>& t) {
  return t ? Json(format_rfc3339(*t)) : Json(nullptr);
}

// The fields both event types carry about who is still expected.
void add_unread(Json& data, const MessageRecord& rec) {
  if (!expected_reader_ids(rec).empty()) {
    data["unread_user_ids"] = unread_user_ids(rec);
  }
}

// Appends the readers of `newly` (ids not in the record) to the record, with
// what is known of each read.
void add_readers(MessageRecord& rec, const std::vector<std::string>& newly,
                 const std::vector<ReadInfo>& info) {
  rec.read_info.resize(rec.read_user_ids.size()); // a record from before read_info
  rec.read_user_ids.insert(rec.read_user_ids.end(), newly.begin(), newly.end());
  rec.read_info.insert(rec.read_info.end(), info.begin(), info.end());
}

// Appends a message.read event for the last `count` readers of the record,
// consuming the next sequence.
void emit_read(Step& step, std::size_t count, TimePoint now) {
  MessageRecord& rec = step.record;
  rec.last_sequence += 1;
  const std::size_t first = rec.read_user_ids.size() - count;
  Json newly_ids = Json::array();
  Json newly = Json::array();
  for (std::size_t i = first; i < rec.read_user_ids.size(); ++i) {
    newly_ids.push_back(rec.read_user_ids[i]);
    Json reader = Json::object();
    reader["user_id"] = rec.read_user_ids[i];
    reader["read_at"] = time_or_null(rec.read_info[i].read_at);
    reader["via"] = to_string(rec.read_info[i].via);
    newly.push_back(std::move(reader));
  }
  Json data = Json::object();
  data["process_query_key"] = rec.spec.process_query_key;
  data["kind"] = to_string(rec.spec.kind);
  data["open_conversation_id"] = rec.spec.open_conversation_id;
  data["robot_code"] = rec.spec.robot_code;
  data["newly_read_user_ids"] = std::move(newly_ids);
  data["newly_read"] = std::move(newly);
  data["read_user_ids"] = rec.read_user_ids;
  data["read_count"] = rec.read_user_ids.size();
  if (const auto expected = expected_count(rec)) {
    data["expected_reader_count"] = *expected;
  } else {
    data["expected_reader_count"] = nullptr;
  }
  data["send_status"] = rec.send_status;
  add_unread(data, rec);
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
  data["kind"] = to_string(rec.spec.kind);
  data["reason"] = to_string(reason);
  data["detail"] = rec.stop_detail;
  data["read_user_ids"] = rec.read_user_ids;
  data["read_count"] = rec.read_user_ids.size();
  add_unread(data, rec);
  data["sequence"] = rec.last_sequence;
  data["labels"] = labels_json(rec.spec.labels);
  step.events.push_back(make_event(rec, EventType::tracking_stopped, now, std::move(data)));
}

// The positions in `answer` of ids not yet in `known`, deduplicated, in
// answer order.
std::vector<std::size_t> newly_read(const std::vector<std::string>& known,
                                    const std::vector<std::string>& answer) {
  std::unordered_set<std::string_view> seen(known.begin(), known.end());
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < answer.size(); ++i) {
    if (!answer[i].empty() && seen.insert(answer[i]).second) {
      out.push_back(i);
    }
  }
  return out;
}

Millis stretched(Millis interval, double stretch) {
  if (!(stretch > 1.0)) {
    return interval;
  }
  const double ms = static_cast<double>(interval.count()) * stretch;
  constexpr double k_cap = 365.0 * 24 * 3'600'000; // a year: the max_age cap comes first
  return Millis{static_cast<Millis::rep>(std::min(ms, k_cap))};
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
  const auto& expected = expected_reader_ids(record);
  if (!expected.empty()) {
    const std::unordered_set<std::string> read(record.read_user_ids.begin(),
                                               record.read_user_ids.end());
    return std::all_of(expected.begin(), expected.end(),
                       [&](const std::string& id) { return read.count(id) != 0; });
  }
  if (const auto count = expected_count(record)) {
    return static_cast<std::int64_t>(record.read_user_ids.size()) >= *count;
  }
  return false;
}

std::optional<Step> close_window(const MessageRecord& record, TimePoint now) {
  if (record.stopped || record.spec.kind != MessageKind::oto || age(record, now) < k_oto_window) {
    return std::nullopt;
  }
  Step step{record, {}};
  emit_stop(step, StopReason::expired, k_detail_window_closed, now);
  return step;
}

bool due(const MessageRecord& record, TimePoint now) {
  return !record.stopped && record.next_poll <= now;
}

Step apply(const MessageRecord& record, const PollResult& result, const Context& ctx) {
  Step step{record, {}};
  MessageRecord& rec = step.record;
  const TimePoint now = ctx.now;
  const Millis msg_age = age(rec, now);
  const auto& schedule = ctx.schedule != nullptr ? *ctx.schedule : ctx.poll.schedule;
  const Millis normal = stretched(scheduler::interval_for_age(schedule, msg_age), ctx.stretch);
  rec.last_poll = now;

  Millis delay = normal;
  switch (result.kind) {
  case PollResult::Kind::answer: {
    rec.send_status = result.send_status;
    if (result.lists_recipients) {
      rec.recipients = result.recipients;
    }
    const auto newly = newly_read(rec.read_user_ids, result.read_user_ids);
    if (!newly.empty()) {
      std::vector<std::string> ids;
      std::vector<ReadInfo> info;
      for (const std::size_t i : newly) {
        ids.push_back(result.read_user_ids[i]);
        info.push_back(
            {i < result.read_at.size() ? result.read_at[i] : std::nullopt, ReadVia::poll});
      }
      add_readers(rec, ids, info);
      emit_read(step, ids.size(), now);
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
    delay = stretched(scheduler::slowest_interval(schedule), ctx.stretch);
    break;
  case PollResult::Kind::transient:
    delay = scheduler::backoff_delay(ctx.consecutive_failures, normal, ctx.jitter);
    break;
  }

  if (msg_age >= ctx.poll.max_age) {
    emit_stop(step, StopReason::max_age, "", now);
    return step;
  }
  if (rec.spec.kind == MessageKind::oto && msg_age >= k_oto_window) {
    emit_stop(step, StopReason::expired, k_detail_window_closed, now);
    return step;
  }
  // Here sent_at + max_age > now, so the next poll lies in (now, deadline]
  // for any positive delay.
  rec.next_poll = std::min(now + delay, rec.sent_at + ctx.poll.max_age);
  if (rec.spec.kind == MessageKind::oto) {
    // The window's last poll, then its close (close_window(), no call).
    const TimePoint close = rec.sent_at + k_oto_window;
    const TimePoint last = close - k_oto_last_poll_before_close;
    rec.next_poll = std::min(rec.next_poll, now < last ? last : close);
  }
  return step;
}

Step apply_push(const MessageRecord& record, const std::vector<PushedRead>& reads, TimePoint now) {
  Step step{record, {}};
  MessageRecord& rec = step.record;
  std::vector<std::string> ids;
  std::vector<ReadInfo> info;
  std::unordered_set<std::string_view> seen(rec.read_user_ids.begin(), rec.read_user_ids.end());
  for (const auto& r : reads) {
    if (!r.user_id.empty() && seen.insert(r.user_id).second) {
      ids.push_back(r.user_id);
      info.push_back({r.read_at, ReadVia::push});
    }
  }
  if (ids.empty()) {
    return step;
  }
  add_readers(rec, ids, info);
  emit_read(step, ids.size(), now);
  if (fully_read(rec)) {
    emit_stop(step, StopReason::fully_read, "", now);
  }
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
