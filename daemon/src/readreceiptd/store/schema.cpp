#include "readreceiptd/store/schema.hpp"

#include <array>
#include <cstdint>
#include <string>

namespace rrd::store::detail {

namespace {

// Each migration has a text per dialect where they differ, side by side.
// SQLite: times are Unix milliseconds (INTEGER); tables are STRICT (SQLite
// 3.37+), so a value of the wrong type is an error rather than silently
// stored. PostgreSQL: the same tables and columns, times BIGINT (INTEGER is
// 32 bits there), no STRICT (its types are strict already) nor WITHOUT ROWID
// (it has no rowid); the text columns that are keys or sorted on are COLLATE
// "C", so that they sort by bytes as SQLite's BINARY does whatever the
// database's locale. Lists and maps are JSON text in both.
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

// PostgreSQL's migration 1 also creates the leadership lease (SPEC section
// 12), which SQLite does not have (one process per file: its flock).
constexpr const char* k_migration_1_postgres = R"sql(
CREATE TABLE messages (
  process_query_key     TEXT COLLATE "C" PRIMARY KEY NOT NULL,
  source                TEXT NOT NULL CHECK (source IN ('config', 'api')),
  open_conversation_id  TEXT NOT NULL,
  robot_code            TEXT NOT NULL,
  expected_readers      TEXT NOT NULL,   -- JSON array of user ids
  expected_reader_count BIGINT,          -- NULL: not given
  spec_sent_at          BIGINT,          -- NULL: not given (sent_at is when first seen)
  webhooks              TEXT,            -- JSON array of names; NULL: every webhook
  labels                TEXT NOT NULL,   -- JSON object of strings
  sent_at               BIGINT NOT NULL,
  added_at              BIGINT NOT NULL,
  read_user_ids         TEXT NOT NULL,   -- JSON array, in the order first seen
  last_sequence         BIGINT NOT NULL,
  send_status           TEXT NOT NULL,
  stopped               INTEGER NOT NULL CHECK (stopped IN (0, 1)),
  stop_reason           TEXT,            -- NULL while tracking
  stop_detail           TEXT NOT NULL,
  stopped_at            BIGINT,
  last_poll             BIGINT,
  next_poll             BIGINT NOT NULL
);

CREATE TABLE events (
  id                TEXT COLLATE "C" PRIMARY KEY NOT NULL,
  process_query_key TEXT COLLATE "C" NOT NULL REFERENCES messages (process_query_key),
  type              TEXT NOT NULL
                    CHECK (type IN ('message.read', 'message.tracking_stopped')),
  sequence          BIGINT NOT NULL,
  created_at        BIGINT NOT NULL,
  body              TEXT NOT NULL,
  UNIQUE (process_query_key, sequence)
);
CREATE INDEX events_created_at ON events (created_at);

CREATE TABLE deliveries (
  event_id     TEXT COLLATE "C" NOT NULL REFERENCES events (id) ON DELETE CASCADE,
  webhook      TEXT COLLATE "C" NOT NULL,
  state        TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
  attempts     INTEGER NOT NULL,
  next_attempt BIGINT NOT NULL,
  last_error   TEXT NOT NULL,
  died_at      BIGINT,                   -- set while dead
  PRIMARY KEY (event_id, webhook)
);
CREATE INDEX deliveries_state ON deliveries (state);

CREATE TABLE disabled_webhooks (
  name        TEXT COLLATE "C" PRIMARY KEY NOT NULL,
  fingerprint TEXT NOT NULL,
  at          BIGINT NOT NULL,
  reason      TEXT NOT NULL
);

-- At most one row: who leads, under which epoch, until when by the
-- database's clock, and where (host name, API address) for the standbys.
CREATE TABLE lease (
  id          INTEGER PRIMARY KEY CHECK (id = 1),
  holder      TEXT NOT NULL,
  epoch       BIGINT NOT NULL,
  expires_at  TIMESTAMPTZ NOT NULL,
  holder_info TEXT NOT NULL
);
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

constexpr const char* k_migration_2_postgres = R"sql(
ALTER TABLE messages ADD COLUMN read_info TEXT NOT NULL DEFAULT '[]';

CREATE TABLE call_months (
  month           TEXT COLLATE "C" PRIMARY KEY NOT NULL,
  calls           BIGINT NOT NULL,
  first_polls     BIGINT NOT NULL,
  quota_exhausted INTEGER NOT NULL CHECK (quota_exhausted IN (0, 1))
);
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

// The lease records its holder's session (the server process and when it
// started), so that a daemon taking over an expired lease can end a session
// its old holder left in the middle of a write (a paused or frozen process):
// that session's lock on the lease row would otherwise hold the takeover
// back for as long as the session lasts. SQLite has no lease: nothing to do
// there but count the version.
constexpr const char* k_migration_4 = R"sql(
-- SQLite: no lease (one process per file: its flock).
)sql";

constexpr const char* k_migration_4_postgres = R"sql(
ALTER TABLE lease ADD COLUMN holder_pid INTEGER;
ALTER TABLE lease ADD COLUMN holder_backend_start TIMESTAMPTZ;
)sql";

struct Migration {
  const char* sqlite;
  const char* postgres;
};

// Append new migrations here; never edit one that has shipped. Migration 3
// is the same text in both dialects.
constexpr std::array<Migration, 4> k_migrations{{
    {k_migration_1, k_migration_1_postgres},
    {k_migration_2, k_migration_2_postgres},
    {k_migration_3, k_migration_3},
    {k_migration_4, k_migration_4_postgres},
}};

// PostgreSQL: the key of the transaction-scoped advisory lock that
// serialises migrations of daemons starting together ("rrd_sch").
constexpr std::int64_t k_migration_lock_key = 0x7272645f736368;

int postgres_schema_version(Connection& conn) {
  const auto exists = conn.query_text("SELECT to_regclass('schema_version') IS NOT NULL",
                                      "cannot read schema version");
  if (exists != "t") {
    return 0;
  }
  const auto version =
      conn.query_text("SELECT version FROM schema_version", "cannot read schema version");
  return version ? std::stoi(*version) : 0;
}

void migrate_postgres(Connection& conn) {
  // One transaction: PostgreSQL's DDL is transactional, so a crash leaves
  // the schema as it was or fully migrated. The advisory lock makes a second
  // daemon starting at the same time wait here, then find nothing to do.
  const char* what = "migration failed";
  Transaction tx(conn, what);
  conn.exec(("SELECT pg_advisory_xact_lock(" + std::to_string(k_migration_lock_key) + ")").c_str(),
            "cannot lock the schema for migration");
  const int version = postgres_schema_version(conn);
  check_schema_version(conn, version);
  if (version == latest_schema_version()) {
    return; // rolls back: nothing was written
  }
  if (version == 0) {
    conn.exec("CREATE TABLE schema_version (version INTEGER NOT NULL);"
              "INSERT INTO schema_version (version) VALUES (0)",
              what);
  }
  for (int v = version; v < latest_schema_version(); ++v) {
    const int next = v + 1;
    const std::string step = "migration " + std::to_string(next) + " failed";
    conn.exec(k_migrations[static_cast<std::size_t>(v)].postgres, step);
    conn.exec(("UPDATE schema_version SET version = " + std::to_string(next)).c_str(), step);
  }
  tx.commit();
}

} // namespace

int latest_schema_version() {
  return static_cast<int>(k_migrations.size());
}

int schema_version(Connection& conn) {
  if (conn.backend() == Backend::postgres) {
    return postgres_schema_version(conn);
  }
  return static_cast<int>(static_cast<SqliteConnection&>(conn).query_int(
      "PRAGMA user_version", "cannot read schema version"));
}

void check_schema_version(const Connection& conn, int version) {
  if (version > latest_schema_version()) {
    throw StoreError("state database " + conn.name() + " has schema version " +
                     std::to_string(version) + ", newer than this build of readreceiptd knows (" +
                     std::to_string(latest_schema_version()) +
                     "); it was written by a newer version: upgrade readreceiptd");
  }
}

void migrate(Connection& conn) {
  if (conn.backend() == Backend::postgres) {
    migrate_postgres(conn);
    return;
  }
  for (int version = schema_version(conn); version < latest_schema_version(); ++version) {
    const int next = version + 1;
    const std::string what = "migration " + std::to_string(next) + " failed";
    Transaction tx(conn, what);
    conn.exec(k_migrations[static_cast<std::size_t>(version)].sqlite, what);
    // PRAGMA takes no bound parameters; `next` is our own integer.
    conn.exec(("PRAGMA user_version = " + std::to_string(next)).c_str(), what);
    tx.commit();
  }
}

} // namespace rrd::store::detail
