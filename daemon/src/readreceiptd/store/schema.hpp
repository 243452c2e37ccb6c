// The store's schema and its numbered migrations, the same numbers on both
// backends. SQLite: the schema version is `PRAGMA user_version`, 0 for a new
// file, N after migration N; migration N runs in one transaction that also
// sets user_version to N, so a crash leaves the database at N-1 or N, never
// in between. PostgreSQL: the version is the one row of `schema_version` (no
// table: 0); every pending migration runs in one transaction holding an
// advisory lock, so two daemons starting together do not both migrate.
//
// Thread-safety: none (works on one Connection).
#pragma once

#include "readreceiptd/store/db.hpp"
#include "readreceiptd/store/sqlite.hpp"

namespace rrd::store::detail {

// The newest schema version this build knows. A database whose version is
// higher was written by a newer readreceiptd and is refused.
int latest_schema_version();

// The database's current schema version.
int schema_version(Connection& conn);

// Throws StoreError when `version` is newer than this build knows.
void check_schema_version(const Connection& conn, int version);

// Applies every migration above the database's version. On SQLite each runs
// in its own transaction and REQUIRES schema_version(conn) <=
// latest_schema_version(); on PostgreSQL the version is checked (under the
// lock) and a newer one is refused before anything is written.
void migrate(Connection& conn);

} // namespace rrd::store::detail
