#include "readreceiptd/store/sqlite.hpp"

#include <utility>

namespace rrd::store::detail {

namespace {

std::string message_for(sqlite3* db, int rc) {
  // sqlite3_errmsg() describes the most recent failure on the connection,
  // which is more specific than the generic text of the result code.
  if (db != nullptr && sqlite3_errcode(db) != SQLITE_OK) {
    return sqlite3_errmsg(db);
  }
  return sqlite3_errstr(rc);
}

} // namespace

SqliteConnection::SqliteConnection(const std::string& path) : Connection(Backend::sqlite, path) {
  // Before SQLite initialises (the first open): no allocation statistics,
  // which take a global mutex on every malloc and free SQLite makes. Fails
  // harmlessly when SQLite is already initialised.
  static const int memstatus_off = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  (void)memstatus_off;
  sqlite3* db = nullptr;
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  const int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
  // Even a failed open may allocate a handle, which must be closed.
  m_db.reset(db);
  if (rc != SQLITE_OK) {
    fail_rc("cannot open", rc);
  }
  sqlite3_extended_result_codes(db, 1);
}

void SqliteConnection::fail_rc(std::string_view what) const {
  fail_rc(what, sqlite3_errcode(m_db.get()));
}

void SqliteConnection::fail_rc(std::string_view what, int rc) const {
  fail(what, message_for(m_db.get(), rc));
}

void SqliteConnection::exec(const char* sql, std::string_view what) {
  char* errmsg = nullptr;
  const int rc = sqlite3_exec(m_db.get(), sql, nullptr, nullptr, &errmsg);
  if (rc != SQLITE_OK) {
    std::string text = errmsg != nullptr ? errmsg : sqlite3_errstr(rc);
    sqlite3_free(errmsg);
    fail(what, text);
  }
}

std::optional<std::string> SqliteConnection::query_text(const char* sql, std::string_view what) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(m_db.get(), sql, -1, &raw, nullptr) != SQLITE_OK) {
    fail_rc(what);
  }
  StmtHandle stmt(raw);
  const int rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE) {
    return std::nullopt;
  }
  if (rc != SQLITE_ROW) {
    fail_rc(what, rc);
  }
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt.get(), 0));
  const int n = sqlite3_column_bytes(stmt.get(), 0);
  return p == nullptr ? std::string() : std::string(p, static_cast<std::size_t>(n));
}

std::int64_t SqliteConnection::query_int(const char* sql, std::string_view what) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(m_db.get(), sql, -1, &raw, nullptr) != SQLITE_OK) {
    fail_rc(what);
  }
  StmtHandle stmt(raw);
  const int rc = sqlite3_step(stmt.get());
  if (rc != SQLITE_ROW) {
    fail_rc(what, rc);
  }
  return sqlite3_column_int64(stmt.get(), 0);
}

sqlite3_stmt* SqliteConnection::statement(const char* sql) {
  auto it = m_statements.find(sql);
  if (it != m_statements.end()) {
    return it->second.get();
  }
  sqlite3_stmt* raw = nullptr;
  // PERSISTENT: the statement lives as long as the Store, and SQLite may
  // allocate it accordingly.
  const int rc = sqlite3_prepare_v3(m_db.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(raw);
    fail_rc(std::string("cannot prepare \"") + sql + "\"", rc);
  }
  StmtHandle stmt(raw);
  return m_statements.emplace(sql, std::move(stmt)).first->second.get();
}

void SqliteConnection::begin(std::string_view what) {
  // IMMEDIATE takes the write lock now, so the transaction cannot fail
  // half-way for want of it.
  exec("BEGIN IMMEDIATE", what);
}

void SqliteConnection::commit(std::string_view what) {
  exec("COMMIT", what);
}

void SqliteConnection::rollback() noexcept {
  // A failed ROLLBACK (the transaction was already rolled back by SQLite)
  // leaves autocommit mode, which is what we want.
  sqlite3_exec(m_db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
}

} // namespace rrd::store::detail
