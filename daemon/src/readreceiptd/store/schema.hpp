// The store's schema and its numbered migrations. The database's schema
// version is `PRAGMA user_version`: 0 for a new file, N after migration N.
// Migration N runs in one transaction that also sets user_version to N, so a
// crash leaves the database at N-1 or N, never in between.
//
// Thread-safety: none (works on one Connection).
#pragma once

#include "readreceiptd/store/sqlite.hpp"

namespace rrd::store::detail {

// The newest schema version this build knows. A database whose version is
// higher was written by a newer readreceiptd and is refused.
int latest_schema_version();

// The database's current schema version.
int schema_version(Connection& conn);

// Applies every migration above the database's version, each in its own
// transaction. REQUIRES: schema_version(conn) <= latest_schema_version().
void migrate(Connection& conn);

} // namespace rrd::store::detail
