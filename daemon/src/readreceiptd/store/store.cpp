// The state database. Choices worth knowing (see also schema.cpp, db.hpp):
//
// - One body of logic for both backends: every statement below is written
//   once, in the SQL that SQLite 3.40 and PostgreSQL 15 agree on (?N
//   parameters are spelled $N for PostgreSQL by db.cpp); where they differ,
//   both texts stand side by side with the reason.
// - PostgreSQL fencing: with a fence set, every write opens a transaction
//   whose first statement reads the lease row FOR SHARE. A takeover's UPDATE
//   of that row waits until the write commits (the write was first), or the
//   write's read waits for the takeover and sees the new epoch (the write is
//   refused, FencedError, nothing written): never a write after a takeover.
//
// - Durability: WAL with `synchronous=FULL`. With NORMAL, WAL commits are not
//   synced until a checkpoint, so a power loss can undo the last committed
//   transactions, and with them events whose read sets were already reported
//   as committed (the transactional outbox would lose events). FULL syncs the
//   WAL on every commit; commit_all() batches many commits into one sync.
//   One write is the exception: mark_delivered_all() is not synced on its
//   own (SQLite: synchronous=NORMAL for that transaction; PostgreSQL:
//   synchronous_commit off). Losing it in a crash only delivers those events
//   again with the same webhook-id, which the outbox allows anyway; the next
//   synced commit (or checkpoint) makes it durable, as a log is written in
//   order. It never loses an event, and it spares a sync per loop turn
//   while a backlog drains.
// - One daemon per database: open() takes an exclusive flock() on
//   `<path>.lock` (non-blocking) and holds it until the Store is destroyed, so
//   a second readreceiptd on the same file is refused at once with a clear
//   error. The database itself stays in normal locking mode, so an operator
//   can still read it with the sqlite3 shell while the daemon runs. flock()
//   is advisory and per open file, so it also refuses a second open() in the
//   same process; it is not reliable on network file systems.
// - Schema versions are `PRAGMA user_version` (PostgreSQL: the
//   schema_version table); a database from a newer build is refused before
//   anything is written to it.
#include "readreceiptd/store/store.hpp"

#include "readreceiptd/store/db.hpp"
#include "readreceiptd/store/postgres.hpp"
#include "readreceiptd/store/schema.hpp"
#include "readreceiptd/store/sqlite.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <span>
#include <string_view>
#include <sys/file.h>
#include <system_error>
#include <unistd.h>
#include <utility>

namespace rrd::store {

namespace {

using detail::Backend;
using detail::Connection;
using detail::PgConnection;
using detail::SqliteConnection;
using detail::Statement;
using detail::Transaction;

constexpr const char* k_memory_path = ":memory:";
// How long a statement waits for a lock held by another connection (an
// operator's sqlite3 shell, a checkpoint) before failing with SQLITE_BUSY.
constexpr std::chrono::milliseconds k_busy_timeout{5'000};
// STRICT tables need SQLite 3.37.
constexpr int k_min_sqlite_version = 3'037'000;
constexpr const char* k_lock_suffix = ".lock";

// --- the exclusive lock on <path>.lock

class LockFile {
public:
  LockFile() = default;
  explicit LockFile(const std::string& db_path) {
    const std::string lock_path = db_path + k_lock_suffix;
    m_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (m_fd < 0) {
      throw StoreError("state database " + db_path + ": cannot open lock file " + lock_path + ": " +
                       std::strerror(errno));
    }
    if (::flock(m_fd, LOCK_EX | LOCK_NB) != 0) {
      const int e = errno;
      ::close(m_fd);
      m_fd = -1;
      if (e == EWOULDBLOCK) {
        throw StoreError("state database " + db_path + " is in use: " + lock_path +
                         " is locked by another process (is another readreceiptd running "
                         "with this state.path?)");
      }
      throw StoreError("state database " + db_path + ": cannot lock " + lock_path + ": " +
                       std::strerror(e));
    }
  }
  ~LockFile() {
    if (m_fd >= 0) {
      ::close(m_fd); // releases the flock
    }
  }
  LockFile(const LockFile&) = delete;
  LockFile& operator=(const LockFile&) = delete;

private:
  int m_fd = -1;
};

// --- a setting of the session for a while

// Runs `set` on the connection now and `restore` when this goes, whatever
// happens in between; nothing at all without a connection. A failed
// restore is left: only a broken connection refuses it, its next use fails
// and says so, and a new PostgreSQL session starts with the defaults.
class ScopedSetting {
public:
  ScopedSetting(Connection* conn, const std::string& set, const char* restore,
                std::string_view what)
      : m_conn(conn), m_restore(restore) {
    if (m_conn != nullptr) {
      m_conn->exec(set.c_str(), what);
    }
  }
  ~ScopedSetting() {
    if (m_conn != nullptr) {
      try {
        m_conn->exec(m_restore, "cannot restore a setting");
      } catch (const StoreError&) {
        // left, as said above
      }
    }
  }
  ScopedSetting(const ScopedSetting&) = delete;
  ScopedSetting& operator=(const ScopedSetting&) = delete;

private:
  Connection* m_conn;
  const char* m_restore;
};

// --- value conversions

std::int64_t ms(TimePoint t) {
  return to_unix_ms(t);
}

std::optional<std::int64_t> ms(const std::optional<TimePoint>& t) {
  if (!t) {
    return std::nullopt;
  }
  return to_unix_ms(*t);
}

std::optional<TimePoint> time_or_null(const std::optional<std::int64_t>& v) {
  if (!v) {
    return std::nullopt;
  }
  return from_unix_ms(*v);
}

std::string dump_json(const nlohmann::json& j, const std::string& key, const char* field) {
  try {
    return j.dump();
  } catch (const nlohmann::json::exception& e) {
    // Only invalid UTF-8 makes dump() throw.
    throw StoreError("message " + key + ": cannot store " + field + ": " + e.what());
  }
}

nlohmann::json parse_json(const std::string& text, const std::string& key, const char* field) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw StoreError("message " + key + ": stored " + field + " is not valid JSON: " + e.what());
  }
}

std::vector<std::string> string_list(const nlohmann::json& j, const std::string& key,
                                     const char* field) {
  if (!j.is_array()) {
    throw StoreError("message " + key + ": stored " + field + " is not a JSON array");
  }
  std::vector<std::string> out;
  out.reserve(j.size());
  for (const auto& item : j) {
    if (!item.is_string()) {
      throw StoreError("message " + key + ": stored " + field + " holds a non-string");
    }
    out.push_back(item.get<std::string>());
  }
  return out;
}

std::map<std::string, std::string> string_map(const nlohmann::json& j, const std::string& key,
                                              const char* field) {
  if (!j.is_object()) {
    throw StoreError("message " + key + ": stored " + field + " is not a JSON object");
  }
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : j.items()) {
    if (!v.is_string()) {
      throw StoreError("message " + key + ": stored " + field + " holds a non-string");
    }
    out.emplace(k, v.get<std::string>());
  }
  return out;
}

// [[read_at ms or null, "poll" | "push"], ...]: one per read user id. A
// shorter list (rows written before it was kept) is padded with reads by
// poll whose time is unknown.
std::vector<ReadInfo> read_info_list(const nlohmann::json& j, const std::string& key,
                                     std::size_t readers) {
  if (!j.is_array() || j.size() > readers) {
    throw StoreError("message " + key + ": stored read_info is not a list of one entry per reader");
  }
  std::vector<ReadInfo> out;
  out.reserve(readers);
  for (const auto& item : j) {
    if (!item.is_array() || item.size() != 2 ||
        !(item[0].is_null() || item[0].is_number_integer()) || !item[1].is_string()) {
      throw StoreError("message " + key + ": stored read_info holds a malformed entry");
    }
    ReadInfo info;
    if (item[0].is_number_integer()) {
      info.read_at = from_unix_ms(item[0].get<std::int64_t>());
    }
    const auto& via = item[1].get_ref<const std::string&>();
    if (via != "poll" && via != "push") {
      std::string what = "message " + key;
      what += ": stored read_info names an unknown source \"";
      what += via;
      what += "\"";
      throw StoreError(what);
    }
    info.via = via == "push" ? ReadVia::push : ReadVia::poll;
    out.push_back(info);
  }
  out.resize(readers);
  return out;
}

// The JSON columns as they are read back. Most rows hold an empty list or
// map ("[]", "{}": no labels, no readers yet); those are read without the
// parser, which a start-up with a million rows would run four times each.
constexpr std::string_view k_empty_json_array = "[]";
constexpr std::string_view k_empty_json_object = "{}";

std::vector<std::string> string_list_column(const std::string& text, const std::string& key,
                                            const char* field) {
  if (text == k_empty_json_array) {
    return {};
  }
  return string_list(parse_json(text, key, field), key, field);
}

std::map<std::string, std::string> string_map_column(const std::string& text,
                                                     const std::string& key, const char* field) {
  if (text == k_empty_json_object) {
    return {};
  }
  return string_map(parse_json(text, key, field), key, field);
}

std::vector<ReadInfo> read_info_column(const std::string& text, const std::string& key,
                                       std::size_t readers) {
  if (text == k_empty_json_array) {
    return std::vector<ReadInfo>(readers); // padded, as read_info_list pads a short list
  }
  return read_info_list(parse_json(text, key, "read_info"), key, readers);
}

nlohmann::json read_info_json(const MessageRecord& m) {
  nlohmann::json out = nlohmann::json::array();
  for (std::size_t i = 0; i < m.read_user_ids.size(); ++i) {
    const ReadInfo info = i < m.read_info.size() ? m.read_info[i] : ReadInfo{};
    out.push_back(nlohmann::json::array(
        {info.read_at ? nlohmann::json(to_unix_ms(*info.read_at)) : nlohmann::json(nullptr),
         to_string(info.via)}));
  }
  return out;
}

EventType event_type_column(const std::string& text) {
  auto t = event_type_from_string(text);
  if (!t) {
    throw StoreError("stored event type \"" + text + "\" is unknown");
  }
  return *t;
}

DeliveryState delivery_state_column(const std::string& text) {
  if (text == "pending") {
    return DeliveryState::pending;
  }
  if (text == "delivered") {
    return DeliveryState::delivered;
  }
  if (text == "dead") {
    return DeliveryState::dead;
  }
  throw StoreError("stored delivery state \"" + text + "\" is unknown");
}

// --- SQL. Each statement is prepared once per Store and reused.

constexpr const char* k_select_all_messages = R"sql(
SELECT process_query_key, source, open_conversation_id, robot_code, expected_readers,
       expected_reader_count, spec_sent_at, webhooks, labels, sent_at, added_at,
       read_user_ids, last_sequence, send_status, stopped, stop_reason, stop_detail,
       stopped_at, last_poll, next_poll, read_info, kind, token, recipients
FROM messages ORDER BY added_at, process_query_key)sql";

// The same columns, unsorted: a scan in storage order.
constexpr const char* k_scan_messages = R"sql(
SELECT process_query_key, source, open_conversation_id, robot_code, expected_readers,
       expected_reader_count, spec_sent_at, webhooks, labels, sent_at, added_at,
       read_user_ids, last_sequence, send_status, stopped, stop_reason, stop_detail,
       stopped_at, last_poll, next_poll, read_info, kind, token, recipients
FROM messages)sql";

constexpr const char* k_count_messages = "SELECT COUNT(*) FROM messages";
// Tracking and stopped messages. (SUM of no rows is NULL in both dialects:
// read as 0.)
constexpr const char* k_count_stopped = "SELECT COUNT(*), SUM(stopped) FROM messages";

// A page of messages by key, after a key (the primary key's index: no sort).
constexpr const char* k_select_messages_after = R"sql(
SELECT process_query_key, source, open_conversation_id, robot_code, expected_readers,
       expected_reader_count, spec_sent_at, webhooks, labels, sent_at, added_at,
       read_user_ids, last_sequence, send_status, stopped, stop_reason, stop_detail,
       stopped_at, last_poll, next_poll, read_info, kind, token, recipients
FROM messages WHERE process_query_key > ?1 ORDER BY process_query_key LIMIT ?2)sql";

constexpr const char* k_select_message = R"sql(
SELECT process_query_key, source, open_conversation_id, robot_code, expected_readers,
       expected_reader_count, spec_sent_at, webhooks, labels, sent_at, added_at,
       read_user_ids, last_sequence, send_status, stopped, stop_reason, stop_detail,
       stopped_at, last_poll, next_poll, read_info, kind, token, recipients
FROM messages WHERE process_query_key = ?1)sql";

// Column positions in the message SELECTs above.
enum MessageColumn : int {
  c_key,
  c_source,
  c_open_conversation_id,
  c_robot_code,
  c_expected_readers,
  c_expected_reader_count,
  c_spec_sent_at,
  c_webhooks,
  c_labels,
  c_sent_at,
  c_added_at,
  c_read_user_ids,
  c_last_sequence,
  c_send_status,
  c_stopped,
  c_stop_reason,
  c_stop_detail,
  c_stopped_at,
  c_last_poll,
  c_next_poll,
  c_read_info,
  c_kind,
  c_token,
  c_recipients,
};

// Parameters ?1..?24 in the order of MessageColumn (plus one).
constexpr const char* k_upsert_message = R"sql(
INSERT INTO messages (process_query_key, source, open_conversation_id, robot_code,
                      expected_readers, expected_reader_count, spec_sent_at, webhooks, labels,
                      sent_at, added_at, read_user_ids, last_sequence, send_status, stopped,
                      stop_reason, stop_detail, stopped_at, last_poll, next_poll, read_info, kind,
                      token, recipients)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
        ?21, ?22, ?23, ?24)
ON CONFLICT (process_query_key) DO UPDATE SET
  source = excluded.source,
  open_conversation_id = excluded.open_conversation_id,
  robot_code = excluded.robot_code,
  expected_readers = excluded.expected_readers,
  expected_reader_count = excluded.expected_reader_count,
  spec_sent_at = excluded.spec_sent_at,
  webhooks = excluded.webhooks,
  labels = excluded.labels,
  sent_at = excluded.sent_at,
  added_at = excluded.added_at,
  read_user_ids = excluded.read_user_ids,
  last_sequence = excluded.last_sequence,
  send_status = excluded.send_status,
  stopped = excluded.stopped,
  stop_reason = excluded.stop_reason,
  stop_detail = excluded.stop_detail,
  stopped_at = excluded.stopped_at,
  last_poll = excluded.last_poll,
  next_poll = excluded.next_poll,
  read_info = excluded.read_info,
  kind = excluded.kind,
  token = excluded.token,
  recipients = excluded.recipients)sql";

constexpr const char* k_select_month = R"sql(
SELECT calls, first_polls, quota_exhausted FROM call_months WHERE month = ?1)sql";

constexpr const char* k_upsert_month = R"sql(
INSERT INTO call_months (month, calls, first_polls, quota_exhausted) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (month) DO UPDATE SET
  calls = excluded.calls,
  first_polls = excluded.first_polls,
  quota_exhausted = excluded.quota_exhausted)sql";

// What a poll that found nothing new changes.
constexpr const char* k_update_poll_state = R"sql(
UPDATE messages SET send_status = ?2, last_poll = ?3, next_poll = ?4
WHERE process_query_key = ?1)sql";

// A plain INSERT: an event id seen twice is an error, never silently dropped.
constexpr const char* k_insert_event = R"sql(
INSERT INTO events (id, process_query_key, type, sequence, created_at, body)
VALUES (?1, ?2, ?3, ?4, ?5, ?6))sql";

constexpr const char* k_insert_delivery = R"sql(
INSERT INTO deliveries (event_id, webhook, state, attempts, next_attempt, last_error, died_at)
VALUES (?1, ?2, 'pending', 0, ?3, '', NULL))sql";

// The dialects differ: PostgreSQL writes a commit batch's events and
// deliveries with these two statements, an array per column unnested into
// rows. A statement per row (the two above) costs PostgreSQL a bind, an
// executor start and an answer each, and a loop turn's commit can write
// hundreds (each read: one or two events, a delivery per webhook); an
// SQLite statement is a call within the process, and SQLite has no arrays.
// (The message rows stay one statement each: an upsert from arrays made a
// commit of one to ten messages slower, bench/commit_latency.sh.)
constexpr const char* k_insert_events_unnest = R"sql(
INSERT INTO events (id, process_query_key, type, sequence, created_at, body)
SELECT * FROM unnest(?1::text[], ?2::text[], ?3::text[], ?4::bigint[], ?5::bigint[], ?6::text[]))sql";

constexpr const char* k_insert_deliveries_unnest = R"sql(
INSERT INTO deliveries (event_id, webhook, state, attempts, next_attempt, last_error, died_at)
SELECT event_id, webhook, 'pending', 0, next_attempt, '', NULL
FROM unnest(?1::text[], ?2::text[], ?3::bigint[]) AS d (event_id, webhook, next_attempt))sql";

constexpr const char* k_select_pending = R"sql(
SELECT d.event_id, d.webhook, e.process_query_key, e.type, e.sequence, e.body, d.state,
       d.attempts, d.next_attempt, d.last_error, d.died_at
FROM deliveries d JOIN events e ON e.id = d.event_id
WHERE d.state = 'pending'
ORDER BY e.process_query_key, d.webhook, e.sequence)sql";

constexpr const char* k_select_dead = R"sql(
SELECT d.event_id, d.webhook, e.process_query_key, e.type, e.sequence, e.body, d.state,
       d.attempts, d.next_attempt, d.last_error, d.died_at
FROM deliveries d JOIN events e ON e.id = d.event_id
WHERE d.state = 'dead'
ORDER BY d.died_at, e.process_query_key, d.webhook, e.sequence)sql";

// One message's events, a page of them, each with its deliveries (NULL
// columns for an event without any).
constexpr const char* k_select_message_events = R"sql(
SELECT e.id, e.type, e.sequence, e.created_at, d.webhook, d.state, d.attempts, d.next_attempt,
       d.last_error, d.died_at
FROM (SELECT id, type, sequence, created_at FROM events
      WHERE process_query_key = ?1 AND sequence > ?2
      ORDER BY sequence LIMIT ?3) e
LEFT JOIN deliveries d ON d.event_id = e.id
ORDER BY e.sequence, d.webhook)sql";

enum MessageEventColumn : int {
  me_id,
  me_type,
  me_sequence,
  me_created_at,
  me_webhook,
  me_state,
  me_attempts,
  me_next_attempt,
  me_last_error,
  me_died_at,
};

constexpr const char* k_count_dead = R"sql(
SELECT webhook, COUNT(*) FROM deliveries WHERE state = 'dead' GROUP BY webhook)sql";
constexpr const char* k_count_pending = R"sql(
SELECT webhook, COUNT(*) FROM deliveries WHERE state = 'pending' GROUP BY webhook)sql";

enum DeliveryColumn : int {
  d_event_id,
  d_webhook,
  d_key,
  d_type,
  d_sequence,
  d_body,
  d_state,
  d_attempts,
  d_next_attempt,
  d_last_error,
  d_died_at,
};

constexpr const char* k_mark_delivered = R"sql(
UPDATE deliveries SET state = 'delivered', died_at = NULL
WHERE event_id = ?1 AND webhook = ?2)sql";

constexpr const char* k_mark_retry = R"sql(
UPDATE deliveries SET attempts = ?3, next_attempt = ?4, last_error = ?5
WHERE event_id = ?1 AND webhook = ?2)sql";

constexpr const char* k_mark_dead = R"sql(
UPDATE deliveries SET state = 'dead', attempts = ?3, died_at = ?4, last_error = ?5
WHERE event_id = ?1 AND webhook = ?2)sql";

constexpr const char* k_replay_dead = R"sql(
UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt = ?2, last_error = '',
                      died_at = NULL
WHERE event_id = ?1 AND state = 'dead')sql";

constexpr const char* k_prune_deliveries = R"sql(
DELETE FROM deliveries
WHERE state = 'delivered'
  AND event_id IN (SELECT id FROM events WHERE created_at < ?1))sql";

constexpr const char* k_prune_events = R"sql(
DELETE FROM events
WHERE created_at < ?1
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id))sql";

constexpr const char* k_set_disabled = R"sql(
INSERT INTO disabled_webhooks (name, fingerprint, at, reason) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (name) DO UPDATE SET
  fingerprint = excluded.fingerprint, at = excluded.at, reason = excluded.reason)sql";

constexpr const char* k_clear_disabled = "DELETE FROM disabled_webhooks WHERE name = ?1";

constexpr const char* k_select_disabled =
    "SELECT fingerprint FROM disabled_webhooks WHERE name = ?1";

// --- the lease (PostgreSQL only; the table is in PostgreSQL's migration 1).
// Times by the database's clock (now(): the statement's transaction start).

// Taken when absent, expired, or the holder's own; RETURNING answers no row
// when the ON CONFLICT's WHERE refuses (another holder's live lease). The
// row lock makes concurrent acquirers and fenced writes wait for each other.
// The holder's session (server process id and start, which together never
// name another session) is recorded at each acquisition and renewal.
constexpr const char* k_acquire_lease = R"sql(
INSERT INTO lease AS l (id, holder, epoch, expires_at, holder_info, holder_pid,
                        holder_backend_start)
VALUES (1, ?1, 1, now() + ?3::double precision * interval '1 millisecond', ?2, pg_backend_pid(),
        (SELECT backend_start FROM pg_stat_get_activity(pg_backend_pid())))
ON CONFLICT (id) DO UPDATE SET
  holder = excluded.holder, epoch = l.epoch + 1, expires_at = excluded.expires_at,
  holder_info = excluded.holder_info, holder_pid = excluded.holder_pid,
  holder_backend_start = excluded.holder_backend_start
WHERE l.expires_at <= now() OR l.holder = excluded.holder
RETURNING epoch)sql";

constexpr const char* k_renew_lease = R"sql(
UPDATE lease SET expires_at = now() + ?3::double precision * interval '1 millisecond',
  holder_pid = pg_backend_pid(),
  holder_backend_start = (SELECT backend_start FROM pg_stat_get_activity(pg_backend_pid()))
WHERE id = 1 AND holder = ?1 AND epoch = ?2 AND expires_at > now())sql";

// How long a takeover waits for the lease row's lock. A fenced write holds
// that lock (its fence check reads the row FOR SHARE) for the few
// milliseconds to its COMMIT, unless its daemon stops in between: paused,
// frozen, its machine suspended. The server does not end such a session by
// itself (it is in the middle of a pipeline, or of a transaction, and its
// socket is alive), so after this wait the taker ends it (below).
constexpr std::chrono::milliseconds k_takeover_lock_wait{250};
// How long pg_terminate_backend waits for the ended session to be gone.
constexpr std::chrono::milliseconds k_end_session_wait{1'000};

// Ends the recorded session of an expired lease's holder, if that session
// is still there (same process id and start) and in the middle of
// something (an idle session holds no lock): its transaction rolls back
// and its locks go. Never a live lease's holder's, never the taker's own.
// Answers how many sessions it ended (0 or 1). pg_terminate_backend needs
// the daemons to share a role (or pg_signal_backend), and seeing the
// session's start too.
constexpr const char* k_end_expired_holder_session = R"sql(
SELECT count(*) FILTER (WHERE pg_terminate_backend(a.pid, ?2))
FROM lease l JOIN pg_stat_activity a
  ON a.pid = l.holder_pid AND a.backend_start = l.holder_backend_start
WHERE l.id = 1 AND l.expires_at <= now() AND l.holder <> ?1 AND a.pid <> pg_backend_pid()
  AND a.state <> 'idle')sql";

constexpr const char* k_release_lease = R"sql(
UPDATE lease SET expires_at = now() WHERE id = 1 AND holder = ?1 AND epoch = ?2)sql";

constexpr const char* k_read_lease = R"sql(
SELECT holder, epoch, holder_info, CASE WHEN expires_at <= now() THEN 1 ELSE 0 END,
       GREATEST(0, CEIL(EXTRACT(EPOCH FROM (expires_at - now())) * 1000))::bigint
FROM lease WHERE id = 1)sql";

// FOR SHARE, not FOR KEY SHARE: a takeover updates non-key columns, which
// FOR KEY SHARE would let through.
constexpr const char* k_check_fence = R"sql(
SELECT 1 FROM lease WHERE id = 1 AND holder = ?1 AND epoch = ?2 FOR SHARE)sql";

// --- copy_state: every table, column for column, in the order that keeps
// the foreign keys satisfied. The message columns are those of
// k_scan_messages, which k_upsert_message takes in the same order.
constexpr const char* k_copy_select_events = R"sql(
SELECT id, process_query_key, type, sequence, created_at, body FROM events)sql";
constexpr const char* k_copy_select_deliveries = R"sql(
SELECT event_id, webhook, state, attempts, next_attempt, last_error, died_at FROM deliveries)sql";
constexpr const char* k_copy_insert_delivery = R"sql(
INSERT INTO deliveries (event_id, webhook, state, attempts, next_attempt, last_error, died_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7))sql";
constexpr const char* k_copy_select_disabled = R"sql(
SELECT name, fingerprint, at, reason FROM disabled_webhooks)sql";
constexpr const char* k_copy_select_months = R"sql(
SELECT month, calls, first_polls, quota_exhausted FROM call_months)sql";
constexpr const char* k_count_state = R"sql(
SELECT (SELECT COUNT(*) FROM messages) + (SELECT COUNT(*) FROM events) +
       (SELECT COUNT(*) FROM deliveries) + (SELECT COUNT(*) FROM disabled_webhooks) +
       (SELECT COUNT(*) FROM call_months))sql";

constexpr int k_message_columns = c_recipients + 1;

// The integrity check differs: PostgreSQL has no PRAGMA, and checks its own
// pages (data checksums); that it answers is what is left to check.
constexpr const char* k_integrity_check_sqlite = "PRAGMA integrity_check";
constexpr const char* k_integrity_check_postgres = "SELECT 'ok'";

MessageRecord read_message(const Statement& row) {
  MessageRecord r;
  const std::string key = row.text(c_key);
  r.spec.process_query_key = key;
  const auto source = message_source_from_string(row.text(c_source));
  if (!source) {
    throw StoreError("message " + key + ": stored source is unknown");
  }
  r.source = *source;
  r.spec.open_conversation_id = row.text(c_open_conversation_id);
  r.spec.robot_code = row.text(c_robot_code);
  r.spec.expected_readers =
      string_list_column(row.text(c_expected_readers), key, "expected_readers");
  r.spec.expected_reader_count = row.optional_integer(c_expected_reader_count);
  r.spec.sent_at = time_or_null(row.optional_integer(c_spec_sent_at));
  if (auto webhooks = row.optional_text(c_webhooks)) {
    r.spec.webhooks = string_list(parse_json(*webhooks, key, "webhooks"), key, "webhooks");
  }
  r.spec.labels = string_map_column(row.text(c_labels), key, "labels");
  r.sent_at = from_unix_ms(row.integer(c_sent_at));
  r.added_at = from_unix_ms(row.integer(c_added_at));
  r.read_user_ids = string_list_column(row.text(c_read_user_ids), key, "read_user_ids");
  r.read_info = read_info_column(row.text(c_read_info), key, r.read_user_ids.size());
  const auto kind = message_kind_from_string(row.text(c_kind));
  if (!kind) {
    throw StoreError("message " + key + ": stored kind is unknown");
  }
  r.spec.kind = *kind;
  r.spec.token = row.text(c_token);
  r.recipients = string_list_column(row.text(c_recipients), key, "recipients");
  r.last_sequence = row.integer(c_last_sequence);
  r.send_status = row.text(c_send_status);
  r.stopped = row.integer(c_stopped) != 0;
  if (auto reason = row.optional_text(c_stop_reason)) {
    r.stop_reason = stop_reason_from_string(*reason);
    if (!r.stop_reason) {
      throw StoreError("message " + key + ": stored stop reason \"" + *reason + "\" is unknown");
    }
  }
  r.stop_detail = row.text(c_stop_detail);
  r.stopped_at = time_or_null(row.optional_integer(c_stopped_at));
  r.last_poll = time_or_null(row.optional_integer(c_last_poll));
  r.next_poll = from_unix_ms(row.integer(c_next_poll));
  return r;
}

Delivery read_delivery(const Statement& row) {
  Delivery d;
  d.event_id = row.text(d_event_id);
  d.webhook = row.text(d_webhook);
  d.process_query_key = row.text(d_key);
  d.type = event_type_column(row.text(d_type));
  d.sequence = row.integer(d_sequence);
  d.body = row.text(d_body);
  d.state = delivery_state_column(row.text(d_state));
  d.attempts = static_cast<int>(row.integer(d_attempts));
  d.next_attempt = from_unix_ms(row.integer(d_next_attempt));
  d.last_error = row.text(d_last_error);
  return d;
}

std::string delivery_name(const std::string& event_id, const std::string& webhook) {
  return "delivery of " + event_id + " to " + webhook;
}

} // namespace

struct Store::Impl {
  // Declared first so that it is released last, after the database is closed.
  LockFile lock;
  std::unique_ptr<Connection> db;
  Connection& conn;

  struct Fence {
    std::string holder;
    std::int64_t epoch = 0;
  };
  std::optional<Fence> fence;
  std::function<void(double)> commit_observer;
  // For take_trouble(): a write fenced off since the last call, and the
  // connection's losses as the last call saw them.
  bool fenced = false;
  std::uint64_t losses_seen = 0;
  // When the commit begun by begin_commit_all() and not yet finished began.
  std::optional<std::chrono::steady_clock::time_point> commit_in_flight;

  // SQLite: the lock is taken before SQLite touches the file. (Both operands
  // are prvalues, so the non-movable LockFile is built in place.)
  Impl(const std::string& path, bool take_lock)
      : lock(take_lock ? LockFile(path) : LockFile()), db(std::make_unique<SqliteConnection>(path)),
        conn(*db) {}
  explicit Impl(const PostgresOptions& options)
      : db(std::make_unique<PgConnection>(options)), conn(*db) {}

  // The transaction of a write. `always`: several statements that must be
  // atomic; otherwise (one statement, atomic by itself) a transaction only
  // when a fence is set, for the fence's check to share it.
  class WriteScope {
  public:
    WriteScope(Impl& impl, std::string_view what, bool always) {
      if (always || impl.fence) {
        m_tx.emplace(impl.conn, what);
        impl.check_fence();
      }
    }
    void commit() {
      if (m_tx) {
        m_tx->commit();
      }
    }
    void commit_async() {
      if (m_tx) {
        m_tx->commit_async();
      }
    }

  private:
    std::optional<Transaction> m_tx;
  };

  // A write transaction that is not synced when it commits (see the top of
  // this file: only for writes whose loss costs a repeat, never an event).
  // SQLite cannot change `synchronous` inside a transaction: it is set
  // around it, and FULL again whatever happens. PostgreSQL: SET LOCAL, which
  // ends with the transaction.
  class UnsyncedWriteScope {
  public:
    UnsyncedWriteScope(Impl& impl, std::string_view what)
        : m_sqlite(impl.conn.backend() == Backend::sqlite ? &impl.conn : nullptr,
                   "PRAGMA synchronous = NORMAL", "PRAGMA synchronous = FULL", what) {
      m_tx.emplace(impl, what, true);
      if (impl.conn.backend() == Backend::postgres) {
        impl.conn.exec("SET LOCAL synchronous_commit = off", what);
      }
    }
    void commit() { m_tx->commit(); }

  private:
    // SQLite: synchronous=NORMAL while this lives, FULL again afterwards
    // (a member, so that it is undone even when the transaction cannot
    // begin).
    ScopedSetting m_sqlite;         // first: undone last, after the transaction
    std::optional<WriteScope> m_tx; // rolls back when not committed
  };

  // In a write transaction: throws FencedError unless the lease still is
  // the fence's (holder, epoch).
  void check_fence() {
    if (!fence) {
      return;
    }
    Statement q(conn, k_check_fence, "cannot check the lease");
    q.bind(1, fence->holder).bind(2, fence->epoch);
    if (!q.step()) {
      fenced = true;
      throw FencedError("state database " + conn.name() +
                        ": write refused: the lease is no longer held by " + fence->holder +
                        " under epoch " + std::to_string(fence->epoch) +
                        " (another daemon has taken over)");
    }
  }

  void require_postgres(const char* what) const {
    if (conn.backend() != Backend::postgres) {
      throw StoreError("state database " + conn.name() + ": " + what +
                       ": the leadership lease needs PostgreSQL (state.postgres); a SQLite "
                       "database has one daemon, by its lock file");
    }
  }

  void observe_commit(std::chrono::steady_clock::time_point start) const {
    if (commit_observer) {
      commit_observer(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
  }

  // A commit batch's rows: each message's, then the events and their
  // deliveries (write_outbox_rows per commit on SQLite, write_outbox_unnest
  // once for the batch on PostgreSQL).
  void write_commits(std::span<const Commit> commits);
  // Checks the batch, then writes and commits it in one transaction
  // (`async`: Transaction::commit_async).
  void commit_batch(std::span<const Commit> commits, bool async);
  void write_message(const Commit& c);
  void write_outbox_rows(const Commit& c);
  void write_outbox_unnest(std::span<const Commit> commits);
  void update_delivery(const char* sql, const std::string& event_id, const std::string& webhook,
                       const char* what, int attempts, TimePoint when,
                       const std::string& last_error);
};

namespace {

// Sets `PRAGMA name = value` and checks that SQLite answers `expected`:
// a PRAGMA that SQLite does not support or cannot apply fails silently.
void set_pragma(SqliteConnection& conn, const char* set_sql, const char* get_sql,
                const std::string& expected, const char* what) {
  conn.exec(set_sql, what);
  const auto answer = conn.query_text(get_sql, what);
  if (answer != expected) {
    throw StoreError("state database " + conn.path() + ": " + what + ": SQLite answered \"" +
                     answer.value_or("") + "\" instead of \"" + expected + "\"");
  }
}

} // namespace

Store::Store(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}
Store::~Store() = default;

std::unique_ptr<Store> Store::open(const std::string& path) {
  if (path.empty()) {
    throw StoreError("state database path is empty");
  }
  if (sqlite3_libversion_number() < k_min_sqlite_version) {
    throw StoreError(std::string("state database ") + path + ": SQLite " + sqlite3_libversion() +
                     " is too old; readreceiptd needs 3.37 or newer");
  }
  const bool in_memory = path == k_memory_path;
  if (!in_memory) {
    const auto parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(parent, ec);
      if (ec) {
        throw StoreError("state database " + path + ": cannot create directory " + parent.string() +
                         ": " + ec.message());
      }
    }
  }

  auto impl = std::make_unique<Impl>(path, !in_memory);
  auto& conn = static_cast<SqliteConnection&>(impl->conn);

  const int rc = sqlite3_busy_timeout(conn.raw(), static_cast<int>(k_busy_timeout.count()));
  if (rc != SQLITE_OK) {
    conn.fail_rc("cannot set busy timeout", rc);
  }

  // Reading the version is also the first read of the file: a file that is
  // not a database fails here, before anything is written to it.
  detail::check_schema_version(conn, detail::schema_version(conn));

  set_pragma(conn, "PRAGMA journal_mode = WAL", "PRAGMA journal_mode", in_memory ? "memory" : "wal",
             "cannot switch to WAL mode");
  // 2 = FULL: see the top of this file.
  set_pragma(conn, "PRAGMA synchronous = FULL", "PRAGMA synchronous", "2",
             "cannot set synchronous=FULL");
  set_pragma(conn, "PRAGMA foreign_keys = ON", "PRAGMA foreign_keys", "1",
             "cannot enable foreign keys");

  detail::migrate(conn);
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

std::unique_ptr<Store> Store::open_postgres(const PostgresOptions& options) {
  if (options.conninfo.empty()) {
    throw StoreError("state.postgres is empty: it must be a libpq connection string");
  }
  auto impl = std::make_unique<Impl>(options);
  // Checks the version and migrates under the advisory lock.
  detail::migrate(impl->conn);
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

bool Store::is_postgres() const {
  return m_impl->conn.backend() == Backend::postgres;
}

void Store::set_commit_observer(std::function<void(double seconds)> observer) {
  m_impl->commit_observer = std::move(observer);
}

// --- messages

std::vector<MessageRecord> Store::load_messages() {
  Statement q(m_impl->conn, k_select_all_messages, "cannot load messages");
  std::vector<MessageRecord> out;
  while (q.step()) {
    out.push_back(read_message(q));
  }
  return out;
}

void Store::visit_messages(const std::function<void(MessageRecord&)>& visit) {
  // Streamed: a PostgreSQL result of every row at once would hold the whole
  // table in memory beside the visitor's copy.
  Statement q(m_impl->conn, k_scan_messages, "cannot load messages", Statement::Rows::streamed);
  while (q.step()) {
    MessageRecord record = read_message(q);
    visit(record);
  }
}

std::size_t Store::message_count() {
  Statement q(m_impl->conn, k_count_messages, "cannot count messages");
  return q.step() ? static_cast<std::size_t>(q.integer(0)) : 0;
}

MessageCounts Store::count_messages() {
  Statement q(m_impl->conn, k_count_stopped, "cannot count messages");
  MessageCounts out;
  if (q.step()) {
    const auto all = q.integer(0);
    const auto stopped = q.is_null(1) ? 0 : q.integer(1);
    out.stopped = static_cast<std::size_t>(stopped);
    out.tracking = static_cast<std::size_t>(all - stopped);
  }
  return out;
}

std::vector<MessageRecord> Store::load_messages_after(const std::string& after, std::size_t limit) {
  Statement q(m_impl->conn, k_select_messages_after, "cannot load messages");
  q.bind(1, after).bind(2, static_cast<std::int64_t>(limit));
  std::vector<MessageRecord> out;
  while (q.step()) {
    out.push_back(read_message(q));
  }
  return out;
}

std::optional<MessageRecord> Store::load_message(const std::string& process_query_key) {
  Statement q(m_impl->conn, k_select_message, "cannot load message");
  q.bind(1, process_query_key);
  if (!q.step()) {
    return std::nullopt;
  }
  return read_message(q);
}

namespace {

// Checks what SQL cannot: the shape of a Commit. Runs before the transaction
// starts, so a malformed batch writes nothing.
void check_commit(const Commit& c) {
  const std::string& key = c.message.spec.process_query_key;
  if (key.empty()) {
    throw StoreError("commit of a message without a process_query_key");
  }
  if (c.routes.size() != c.events.size()) {
    throw StoreError("commit of message " + key + ": " + std::to_string(c.events.size()) +
                     " events but " + std::to_string(c.routes.size()) + " route lists");
  }
  for (const auto& e : c.events) {
    if (e.process_query_key != key) {
      throw StoreError("commit of message " + key + ": event " + e.id + " belongs to message " +
                       e.process_query_key);
    }
  }
}

} // namespace

void Store::Impl::write_message(const Commit& c) {
  const MessageRecord& m = c.message;
  const std::string& key = m.spec.process_query_key;

  if (c.poll_state_only && c.events.empty()) {
    Statement q(conn, k_update_poll_state, "cannot write message");
    q.bind(1, key).bind(2, m.send_status).bind(3, ms(m.last_poll)).bind(4, ms(m.next_poll));
    if (q.run() > 0) {
      return;
    }
    // Not stored yet: the whole row below.
  }

  nlohmann::json expected_readers = m.spec.expected_readers;
  nlohmann::json labels = m.spec.labels;
  nlohmann::json read_user_ids = m.read_user_ids;
  nlohmann::json read_info = read_info_json(m);
  nlohmann::json recipients = m.recipients;
  std::optional<std::string> webhooks;
  if (m.spec.webhooks) {
    webhooks = dump_json(nlohmann::json(*m.spec.webhooks), key, "webhooks");
  }

  {
    Statement q(conn, k_upsert_message, "cannot write message");
    q.bind(c_key + 1, key)
        .bind(c_source + 1, to_string(m.source))
        .bind(c_open_conversation_id + 1, m.spec.open_conversation_id)
        .bind(c_robot_code + 1, m.spec.robot_code)
        .bind(c_expected_readers + 1, dump_json(expected_readers, key, "expected_readers"))
        .bind(c_expected_reader_count + 1, m.spec.expected_reader_count)
        .bind(c_spec_sent_at + 1, ms(m.spec.sent_at))
        .bind(c_labels + 1, dump_json(labels, key, "labels"))
        .bind(c_sent_at + 1, ms(m.sent_at))
        .bind(c_added_at + 1, ms(m.added_at))
        .bind(c_read_user_ids + 1, dump_json(read_user_ids, key, "read_user_ids"))
        .bind(c_last_sequence + 1, m.last_sequence)
        .bind(c_send_status + 1, m.send_status)
        .bind(c_stopped + 1, m.stopped ? 1 : 0)
        .bind(c_stop_detail + 1, m.stop_detail)
        .bind(c_stopped_at + 1, ms(m.stopped_at))
        .bind(c_last_poll + 1, ms(m.last_poll))
        .bind(c_next_poll + 1, ms(m.next_poll))
        .bind(c_read_info + 1, dump_json(read_info, key, "read_info"))
        .bind(c_kind + 1, to_string(m.spec.kind))
        .bind(c_token + 1, m.spec.token)
        .bind(c_recipients + 1, dump_json(recipients, key, "recipients"));
    if (webhooks) {
      q.bind(c_webhooks + 1, *webhooks);
    } else {
      q.bind_null(c_webhooks + 1);
    }
    if (m.stop_reason) {
      q.bind(c_stop_reason + 1, to_string(*m.stop_reason));
    } else {
      q.bind_null(c_stop_reason + 1);
    }
    q.send();
  }
}

void Store::Impl::write_outbox_rows(const Commit& c) {
  for (std::size_t i = 0; i < c.events.size(); ++i) {
    const OutboxEvent& e = c.events[i];
    {
      Statement q(conn, k_insert_event, "cannot write event");
      q.bind(1, e.id)
          .bind(2, e.process_query_key)
          .bind(3, to_string(e.type))
          .bind(4, e.sequence)
          .bind(5, ms(e.created_at))
          .bind(6, e.body);
      q.send();
    }
    for (const std::string& webhook : c.routes[i]) {
      Statement q(conn, k_insert_delivery, "cannot write delivery");
      q.bind(1, e.id).bind(2, webhook).bind(3, ms(e.created_at));
      q.send();
    }
  }
}

void Store::Impl::write_outbox_unnest(std::span<const Commit> commits) {
  detail::PgArrayLiteral ids;
  detail::PgArrayLiteral keys;
  detail::PgArrayLiteral types;
  detail::PgArrayLiteral sequences;
  detail::PgArrayLiteral created;
  detail::PgArrayLiteral bodies;
  detail::PgArrayLiteral delivery_ids;
  detail::PgArrayLiteral webhooks;
  detail::PgArrayLiteral next_attempts;
  for (const Commit& c : commits) {
    for (std::size_t i = 0; i < c.events.size(); ++i) {
      const OutboxEvent& e = c.events[i];
      ids.add(e.id);
      keys.add(e.process_query_key);
      types.add(to_string(e.type));
      sequences.add(e.sequence);
      created.add(ms(e.created_at));
      bodies.add(e.body);
      for (const std::string& webhook : c.routes[i]) {
        delivery_ids.add(e.id);
        webhooks.add(webhook);
        next_attempts.add(ms(e.created_at));
      }
    }
  }
  if (ids.size() == 0) {
    return;
  }
  {
    Statement q(conn, k_insert_events_unnest, "cannot write events");
    q.bind(1, ids.take())
        .bind(2, keys.take())
        .bind(3, types.take())
        .bind(4, sequences.take())
        .bind(5, created.take())
        .bind(6, bodies.take());
    q.send();
  }
  if (delivery_ids.size() > 0) {
    Statement q(conn, k_insert_deliveries_unnest, "cannot write deliveries");
    q.bind(1, delivery_ids.take()).bind(2, webhooks.take()).bind(3, next_attempts.take());
    q.send();
  }
}

void Store::Impl::write_commits(std::span<const Commit> commits) {
  // Every message row first: an event's row refers to its message's.
  for (const Commit& c : commits) {
    write_message(c);
  }
  if (conn.backend() == Backend::postgres) {
    write_outbox_unnest(commits);
    return;
  }
  for (const Commit& c : commits) {
    write_outbox_rows(c);
  }
}

void Store::Impl::commit_batch(std::span<const Commit> commits, bool async) {
  for (const auto& c : commits) {
    check_commit(c);
  }
  WriteScope tx(*this, "cannot commit", true);
  write_commits(commits);
  if (async) {
    tx.commit_async();
  } else {
    tx.commit();
  }
}

void Store::commit(const Commit& c) {
  const auto start = std::chrono::steady_clock::now();
  m_impl->commit_batch(std::span(&c, 1), false);
  m_impl->observe_commit(start);
}

void Store::commit_all(const std::vector<Commit>& commits) {
  const auto start = std::chrono::steady_clock::now();
  m_impl->commit_batch(commits, false);
  m_impl->observe_commit(start);
}

void Store::begin_commit_all(const std::vector<Commit>& commits) {
  const auto start = std::chrono::steady_clock::now();
  if (m_impl->commit_in_flight) {
    throw StoreError("state database " + m_impl->conn.name() +
                     ": cannot commit: the commit begun before has not been finished");
  }
  m_impl->commit_batch(commits, true);
  m_impl->commit_in_flight = start;
}

bool Store::commit_in_flight() const {
  return m_impl->commit_in_flight.has_value();
}

bool Store::finish_commit(bool wait) {
  if (!m_impl->commit_in_flight) {
    return true;
  }
  const auto start = *m_impl->commit_in_flight;
  try {
    if (!m_impl->conn.finish_commit(wait)) {
      return false;
    }
  } catch (const StoreError&) {
    m_impl->commit_in_flight.reset();
    throw;
  }
  m_impl->commit_in_flight.reset();
  m_impl->observe_commit(start);
  return true;
}

// --- outbox

std::vector<Delivery> Store::load_pending_deliveries() {
  Statement q(m_impl->conn, k_select_pending, "cannot load pending deliveries");
  std::vector<Delivery> out;
  while (q.step()) {
    out.push_back(read_delivery(q));
  }
  return out;
}

void Store::mark_delivered(const std::string& event_id, const std::string& webhook) {
  Impl::WriteScope tx(*m_impl, "cannot mark delivered", false);
  {
    Statement q(m_impl->conn, k_mark_delivered, "cannot mark delivered");
    q.bind(1, event_id).bind(2, webhook);
    if (q.run() == 0) {
      throw StoreError("cannot mark delivered: no " + delivery_name(event_id, webhook));
    }
  }
  tx.commit();
}

void Store::mark_delivered_all(const std::vector<std::pair<std::string, std::string>>& deliveries) {
  if (deliveries.empty()) {
    return;
  }
  Impl::UnsyncedWriteScope tx(*m_impl, "cannot mark delivered");
  // Pipelined on PostgreSQL: a round trip per mark held the loop up for as
  // long as a backlog drained. (Not one UPDATE ... FROM unnest() as for the
  // commit's inserts: that drained a backlog at about half the rate, its
  // plan a join that PostgreSQL may run as a scan of the whole table.)
  for (const auto& [event_id, webhook] : deliveries) {
    Statement q(m_impl->conn, k_mark_delivered, "cannot mark delivered");
    q.bind(1, event_id).bind(2, webhook);
    q.send();
  }
  tx.commit();
}

void Store::Impl::update_delivery(const char* sql, const std::string& event_id,
                                  const std::string& webhook, const char* what, int attempts,
                                  TimePoint when, const std::string& last_error) {
  WriteScope tx(*this, what, false);
  {
    Statement q(conn, sql, what);
    q.bind(1, event_id).bind(2, webhook).bind(3, attempts).bind(4, ms(when)).bind(5, last_error);
    if (q.run() == 0) {
      throw StoreError(std::string(what) + ": no " + delivery_name(event_id, webhook));
    }
  }
  tx.commit();
}

void Store::mark_retry(const std::string& event_id, const std::string& webhook, int attempts,
                       TimePoint next_attempt, const std::string& last_error) {
  m_impl->update_delivery(k_mark_retry, event_id, webhook, "cannot record retry", attempts,
                          next_attempt, last_error);
}

void Store::mark_dead(const std::string& event_id, const std::string& webhook, int attempts,
                      TimePoint died_at, const std::string& last_error) {
  m_impl->update_delivery(k_mark_dead, event_id, webhook, "cannot mark dead", attempts, died_at,
                          last_error);
}

std::vector<DeadLetter> Store::load_dead_letters() {
  Statement q(m_impl->conn, k_select_dead, "cannot load dead letters");
  std::vector<DeadLetter> out;
  while (q.step()) {
    out.push_back(DeadLetter{read_delivery(q), time_or_null(q.optional_integer(d_died_at))});
  }
  return out;
}

std::vector<StoredEvent> Store::load_message_events(const std::string& process_query_key,
                                                    std::int64_t after_sequence,
                                                    std::size_t limit) {
  std::vector<StoredEvent> out;
  if (limit == 0) {
    return out;
  }
  Statement q(m_impl->conn, k_select_message_events, "cannot load the message's events");
  q.bind(1, process_query_key)
      .bind(2, after_sequence)
      .bind(3, static_cast<std::int64_t>(std::min<std::size_t>(
                   limit, static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max()))));
  while (q.step()) {
    const std::string id = q.text(me_id);
    if (out.empty() || out.back().id != id) {
      StoredEvent e;
      e.id = id;
      e.type = event_type_column(q.text(me_type));
      e.sequence = q.integer(me_sequence);
      e.created_at = from_unix_ms(q.integer(me_created_at));
      out.push_back(std::move(e));
    }
    if (auto webhook = q.optional_text(me_webhook)) {
      EventDelivery d;
      d.webhook = std::move(*webhook);
      d.state = delivery_state_column(q.text(me_state));
      d.attempts = static_cast<int>(q.integer(me_attempts));
      d.next_attempt = from_unix_ms(q.integer(me_next_attempt));
      d.last_error = q.text(me_last_error);
      d.died_at = time_or_null(q.optional_integer(me_died_at));
      out.back().deliveries.push_back(std::move(d));
    }
  }
  return out;
}

namespace {

// The (webhook, count) rows of `sql` as a map.
std::map<std::string, std::int64_t> counts_by_webhook(Connection& conn, const char* sql,
                                                      std::string_view what) {
  Statement q(conn, sql, what);
  std::map<std::string, std::int64_t> out;
  while (q.step()) {
    out[q.text(0)] = q.integer(1);
  }
  return out;
}

} // namespace

std::map<std::string, std::int64_t> Store::count_dead_by_webhook() {
  return counts_by_webhook(m_impl->conn, k_count_dead, "cannot count dead letters");
}

std::map<std::string, std::int64_t> Store::count_pending_by_webhook() {
  return counts_by_webhook(m_impl->conn, k_count_pending, "cannot count pending deliveries");
}

int Store::replay_dead(const std::string& event_id, TimePoint when) {
  Impl::WriteScope tx(*m_impl, "cannot replay dead letter", false);
  int replayed = 0;
  {
    Statement q(m_impl->conn, k_replay_dead, "cannot replay dead letter");
    q.bind(1, event_id).bind(2, ms(when));
    replayed = q.run();
  }
  tx.commit();
  return replayed;
}

int Store::prune_delivered(TimePoint before) {
  Impl::WriteScope tx(*m_impl, "cannot prune", true);
  {
    Statement q(m_impl->conn, k_prune_deliveries, "cannot prune deliveries");
    q.bind(1, ms(before));
    q.run();
  }
  int events = 0;
  {
    Statement q(m_impl->conn, k_prune_events, "cannot prune events");
    q.bind(1, ms(before));
    events = q.run();
  }
  tx.commit();
  return events;
}

// --- disabled webhooks

void Store::set_webhook_disabled(const std::string& name, const std::string& fingerprint,
                                 TimePoint at, const std::string& reason) {
  Impl::WriteScope tx(*m_impl, "cannot disable webhook", false);
  {
    Statement q(m_impl->conn, k_set_disabled, "cannot disable webhook");
    q.bind(1, name).bind(2, fingerprint).bind(3, ms(at)).bind(4, reason);
    q.run();
  }
  tx.commit();
}

void Store::clear_webhook_disabled(const std::string& name) {
  Impl::WriteScope tx(*m_impl, "cannot enable webhook", false);
  {
    Statement q(m_impl->conn, k_clear_disabled, "cannot enable webhook");
    q.bind(1, name);
    q.run();
  }
  tx.commit();
}

std::optional<std::string> Store::webhook_disabled_fingerprint(const std::string& name) {
  Statement q(m_impl->conn, k_select_disabled, "cannot read disabled webhook");
  q.bind(1, name);
  if (!q.step()) {
    return std::nullopt;
  }
  return q.text(0);
}

std::optional<MonthCalls> Store::load_month(const std::string& month) {
  Statement q(m_impl->conn, k_select_month, "cannot read the month's calls");
  q.bind(1, month);
  if (!q.step()) {
    return std::nullopt;
  }
  MonthCalls m;
  m.month = month;
  m.calls = q.integer(0);
  m.first_polls = q.integer(1);
  m.quota_exhausted = q.integer(2) != 0;
  return m;
}

void Store::save_month(const MonthCalls& m) {
  Impl::WriteScope tx(*m_impl, "cannot write the month's calls", true);
  {
    Statement q(m_impl->conn, k_upsert_month, "cannot write the month's calls");
    q.bind(1, m.month).bind(2, m.calls).bind(3, m.first_polls).bind(4, m.quota_exhausted ? 1 : 0);
    q.run();
  }
  tx.commit();
}

bool Store::integrity_ok() {
  // A database too damaged to run the check is not ok either.
  try {
    const char* sql = m_impl->conn.backend() == Backend::postgres ? k_integrity_check_postgres
                                                                  : k_integrity_check_sqlite;
    return m_impl->conn.query_text(sql, "integrity check failed") == "ok";
  } catch (const StoreError&) {
    return false;
  }
}

// --- the lease

namespace {

std::int64_t ttl_ms(const Connection& conn, std::chrono::milliseconds ttl, const char* what) {
  if (ttl.count() <= 0) {
    conn.fail(what, "the lease's ttl must be positive, not " + std::to_string(ttl.count()) + " ms");
  }
  return ttl.count();
}

} // namespace

std::optional<std::int64_t> Store::acquire_lease(const std::string& holder, const std::string& info,
                                                 std::chrono::milliseconds ttl) {
  const char* what = "cannot acquire the lease";
  m_impl->require_postgres(what);
  Connection& conn = m_impl->conn;
  const std::int64_t ttl_count = ttl_ms(conn, ttl, what);
  // nullopt: another holder's live lease, or (`busy`) the row was locked
  // past the wait. lock_timeout is set for the session, not a transaction,
  // so that the statement stays one round trip in autocommit: a daemon
  // stopped between a BEGIN and a COMMIT would hold the row's lock. RESET
  // puts back the session's own (the role's or database's, or none).
  bool busy = false;
  const auto attempt = [&]() -> std::optional<std::int64_t> {
    const ScopedSetting wait(&conn,
                             "SET lock_timeout = " + std::to_string(k_takeover_lock_wait.count()),
                             "RESET lock_timeout", what);
    Statement q(conn, k_acquire_lease, what);
    q.bind(1, holder).bind(2, info).bind(3, ttl_count);
    try {
      if (q.step()) {
        return q.integer(0);
      }
    } catch (const detail::LockNotAvailable&) {
      busy = true;
    }
    return std::nullopt;
  };
  if (auto epoch = attempt(); epoch || !busy) {
    return epoch;
  }
  // A session holds the row: the expired holder's, stopped in the middle of
  // a write, most likely. End it and try once more; when it is not that (a
  // live lease, another session), wait for the next try.
  Statement end(conn, k_end_expired_holder_session, "cannot end the expired holder's session");
  end.bind(1, holder).bind(2, k_end_session_wait.count());
  if (!end.step() || end.integer(0) == 0) {
    return std::nullopt;
  }
  return attempt();
}

bool Store::renew_lease(const std::string& holder, std::int64_t epoch,
                        std::chrono::milliseconds ttl) {
  const char* what = "cannot renew the lease";
  m_impl->require_postgres(what);
  Statement q(m_impl->conn, k_renew_lease, what);
  q.bind(1, holder).bind(2, epoch).bind(3, ttl_ms(m_impl->conn, ttl, what));
  return q.run() > 0;
}

void Store::release_lease(const std::string& holder, std::int64_t epoch) {
  const char* what = "cannot release the lease";
  m_impl->require_postgres(what);
  Statement q(m_impl->conn, k_release_lease, what);
  q.bind(1, holder).bind(2, epoch);
  q.run();
}

std::optional<LeaseRow> Store::read_lease() {
  const char* what = "cannot read the lease";
  m_impl->require_postgres(what);
  Statement q(m_impl->conn, k_read_lease, what);
  if (!q.step()) {
    return std::nullopt;
  }
  LeaseRow row;
  row.holder = q.text(0);
  row.epoch = q.integer(1);
  row.holder_info = q.text(2);
  row.expired = q.integer(3) != 0;
  row.ms_left = row.expired ? 0 : q.integer(4);
  return row;
}

Store::Trouble Store::take_trouble() {
  Impl& impl = *m_impl;
  const std::uint64_t losses = impl.conn.losses();
  const bool fenced = std::exchange(impl.fenced, false);
  const bool lost = std::exchange(impl.losses_seen, losses) != losses;
  return fenced ? Trouble::fenced : lost ? Trouble::unavailable : Trouble::none;
}

void Store::set_fence(const std::string& holder, std::int64_t epoch) {
  m_impl->require_postgres("cannot set the fence");
  m_impl->fence = Impl::Fence{holder, epoch};
}

void Store::clear_fence() {
  m_impl->fence.reset();
}

// --- copy_state

namespace {

// Copies every row `select` answers into `insert`, which takes the same
// columns as parameters in the same order. Values go as text (an integer
// column's text converts back exactly on both backends) or NULL.
std::size_t copy_rows(Connection& from, const char* select, Connection& to, const char* insert,
                      int columns, const char* table) {
  const std::string what = std::string("cannot copy ") + table;
  Statement source(from, select, what);
  std::size_t copied = 0;
  while (source.step()) {
    Statement target(to, insert, what);
    for (int col = 0; col < columns; ++col) {
      if (source.is_null(col)) {
        target.bind_null(col + 1);
      } else {
        target.bind(col + 1, source.text(col));
      }
    }
    target.send();
    ++copied;
  }
  return copied;
}

} // namespace

void copy_state(Store& from, Store& to) {
  if (&from == &to) {
    throw StoreError("cannot copy state: the source and the target are the same store");
  }
  Connection& source = from.m_impl->conn;
  Connection& target = to.m_impl->conn;
  Store::Impl::WriteScope tx(*to.m_impl, "cannot copy state", true);
  {
    Statement q(target, k_count_state, "cannot copy state");
    if (q.step() && q.integer(0) != 0) {
      throw StoreError("cannot copy state into state database " + target.name() +
                       ": it already holds state (" + std::to_string(q.integer(0)) +
                       " rows); copy only into an empty database");
    }
  }
  copy_rows(source, k_scan_messages, target, k_upsert_message, k_message_columns, "messages");
  copy_rows(source, k_copy_select_events, target, k_insert_event, 6, "events");
  copy_rows(source, k_copy_select_deliveries, target, k_copy_insert_delivery, 7, "deliveries");
  copy_rows(source, k_copy_select_disabled, target, k_set_disabled, 4, "disabled webhooks");
  copy_rows(source, k_copy_select_months, target, k_upsert_month, 4, "months");
  tx.commit();
}

} // namespace rrd::store
