#include "readreceiptd/store/schema.hpp"

#include <array>
#include <string>

namespace rrd::store::detail {

namespace {

// Times are Unix milliseconds (INTEGER). Lists and maps are JSON text.
// Tables are STRICT (SQLite 3.37+), so a value of the wrong type is an error
// rather than silently stored.
constexpr const char* k_migration_1 = R"sql(
CREATE TABLE messages (
  process_query_key     TEXT PRIMARY KEY NOT NULL,
  source                TEXT NOT NULL CHECK (source IN ('config', 'api')),
  open_conversation_id  TEXT NOT NULL,
  robot_code            TEXT NOT NULL,
  expected_readers      TEXT NOT NULL,   -- JSON array of user ids
  expected_reader_count INTEGER,         -- NULL: not given
  spec_sent_at          INTEGER,         -- NULL: not given (sent_at is when first seen)
  webhooks              TEXT,            -- JSON array of names; NULL: every webhook
  labels                TEXT NOT NULL,   -- JSON object of strings
  sent_at               INTEGER NOT NULL,
  added_at              INTEGER NOT NULL,
  read_user_ids         TEXT NOT NULL,   -- JSON array, in the order first seen
  last_sequence         INTEGER NOT NULL,
  send_status           TEXT NOT NULL,
  stopped               INTEGER NOT NULL CHECK (stopped IN (0, 1)),
  stop_reason           TEXT,            -- NULL while tracking
  stop_detail           TEXT NOT NULL,
  stopped_at            INTEGER,
  last_poll             INTEGER,
  next_poll             INTEGER NOT NULL
) STRICT;

CREATE TABLE events (
  id                TEXT PRIMARY KEY NOT NULL,
  process_query_key TEXT NOT NULL REFERENCES messages (process_query_key),
  type              TEXT NOT NULL
                    CHECK (type IN ('message.read', 'message.tracking_stopped')),
  sequence          INTEGER NOT NULL,
  created_at        INTEGER NOT NULL,
  body              TEXT NOT NULL,
  UNIQUE (process_query_key, sequence)
) STRICT;
CREATE INDEX events_created_at ON events (created_at);

CREATE TABLE deliveries (
  event_id     TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
  webhook      TEXT NOT NULL,
  state        TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
  attempts     INTEGER NOT NULL,
  next_attempt INTEGER NOT NULL,
  last_error   TEXT NOT NULL,
  died_at      INTEGER,                  -- set while dead
  PRIMARY KEY (event_id, webhook)
) STRICT, WITHOUT ROWID;
CREATE INDEX deliveries_state ON deliveries (state);

CREATE TABLE disabled_webhooks (
  name        TEXT PRIMARY KEY NOT NULL,
  fingerprint TEXT NOT NULL,
  at          INTEGER NOT NULL,
  reason      TEXT NOT NULL
) STRICT;
)sql";

// Push and the monthly budget: what is known of each read (its time and how
// it became known), and the read-status calls made per calendar month.
constexpr const char* k_migration_2 = R"sql(
-- JSON array, one [read_at (Unix ms) or null, "poll" | "push"] per entry of
-- read_user_ids, in the same order; '[]' for rows from before (read by polls).
ALTER TABLE messages ADD COLUMN read_info TEXT NOT NULL DEFAULT '[]';

CREATE TABLE call_months (
  month           TEXT PRIMARY KEY NOT NULL,  -- "2026-12", Beijing time (UTC+8)
  calls           INTEGER NOT NULL,           -- read-status calls (every page), counted before they go
  first_polls     INTEGER NOT NULL,           -- first polls of new messages among them
  quota_exhausted INTEGER NOT NULL CHECK (quota_exhausted IN (0, 1))  -- DingTalk said so
) STRICT;
)sql";

// Every kind of bot message: which read-status API answers for it, the
// template bot's token of a group message, and the recipients an oto
// answer lists. Existing messages are private-chat ones.
constexpr const char* k_migration_3 = R"sql(
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'private_chat'
  CHECK (kind IN ('private_chat', 'group', 'oto'));
ALTER TABLE messages ADD COLUMN token TEXT NOT NULL DEFAULT '';        -- group: a secret
ALTER TABLE messages ADD COLUMN recipients TEXT NOT NULL DEFAULT '[]';  -- oto: JSON array
)sql";

// Append new migrations here; never edit one that has shipped.
constexpr std::array<const char*, 3> k_migrations{k_migration_1, k_migration_2, k_migration_3};

} // namespace

int latest_schema_version() {
  return static_cast<int>(k_migrations.size());
}

int schema_version(Connection& conn) {
  return static_cast<int>(conn.query_int("PRAGMA user_version", "cannot read schema version"));
}

void migrate(Connection& conn) {
  for (int version = schema_version(conn); version < latest_schema_version(); ++version) {
    const int next = version + 1;
    const std::string what = "migration " + std::to_string(next) + " failed";
    Transaction tx(conn, what);
    conn.exec(k_migrations[static_cast<std::size_t>(version)], what);
    // PRAGMA takes no bound parameters; `next` is our own integer.
    conn.exec(("PRAGMA user_version = " + std::to_string(next)).c_str(), what);
    tx.commit();
  }
}

} // namespace rrd::store::detail
