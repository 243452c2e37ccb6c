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

Connection::Connection(std::string path) : m_path(std::move(path)) {
  // Before SQLite initialises (the first open): no allocation statistics,
  // which take a global mutex on every malloc and free SQLite makes. Fails
  // harmlessly when SQLite is already initialised.
  static const int memstatus_off = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  (void)memstatus_off;
  sqlite3* db = nullptr;
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  const int rc = sqlite3_open_v2(m_path.c_str(), &db, flags, nullptr);
  // Even a failed open may allocate a handle, which must be closed.
  m_db.reset(db);
  if (rc != SQLITE_OK) {
    fail("cannot open", rc);
  }
  sqlite3_extended_result_codes(db, 1);
}

void Connection::fail(std::string_view what) const {
  fail(what, sqlite3_errcode(m_db.get()));
}

void Connection::fail(std::string_view what, int rc) const {
  std::string msg = "state database ";
  msg += m_path;
  msg += ": ";
  msg += what;
  msg += ": ";
  msg += message_for(m_db.get(), rc);
  throw StoreError(msg);
}

void Connection::exec(const char* sql, std::string_view what) {
  char* errmsg = nullptr;
  const int rc = sqlite3_exec(m_db.get(), sql, nullptr, nullptr, &errmsg);
  if (rc != SQLITE_OK) {
    std::string text = errmsg != nullptr ? errmsg : sqlite3_errstr(rc);
    sqlite3_free(errmsg);
    std::string full(what);
    full += ": ";
    full += text;
    throw StoreError("state database " + m_path + ": " + full);
  }
}

std::optional<std::string> Connection::query_text(const char* sql, std::string_view what) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(m_db.get(), sql, -1, &raw, nullptr) != SQLITE_OK) {
    fail(what);
  }
  StmtHandle stmt(raw);
  const int rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE) {
    return std::nullopt;
  }
  if (rc != SQLITE_ROW) {
    fail(what, rc);
  }
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt.get(), 0));
  const int n = sqlite3_column_bytes(stmt.get(), 0);
  return p == nullptr ? std::string() : std::string(p, static_cast<std::size_t>(n));
}

std::int64_t Connection::query_int(const char* sql, std::string_view what) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(m_db.get(), sql, -1, &raw, nullptr) != SQLITE_OK) {
    fail(what);
  }
  StmtHandle stmt(raw);
  const int rc = sqlite3_step(stmt.get());
  if (rc != SQLITE_ROW) {
    fail(what, rc);
  }
  return sqlite3_column_int64(stmt.get(), 0);
}

sqlite3_stmt* Connection::statement(const char* sql) {
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
    fail(std::string("cannot prepare \"") + sql + "\"", rc);
  }
  StmtHandle stmt(raw);
  return m_statements.emplace(sql, std::move(stmt)).first->second.get();
}

Statement::Statement(Connection& conn, const char* sql, std::string_view what)
    : m_conn(conn), m_stmt(conn.statement(sql)), m_what(what) {}

Statement::~Statement() {
  sqlite3_reset(m_stmt);
  sqlite3_clear_bindings(m_stmt);
}

Statement& Statement::bind(int index, std::string_view text) {
  // TRANSIENT: SQLite copies the text, so temporaries may be bound.
  const int rc =
      sqlite3_bind_text64(m_stmt, index, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  if (rc != SQLITE_OK) {
    m_conn.fail(m_what, rc);
  }
  return *this;
}

Statement& Statement::bind(int index, std::int64_t value) {
  const int rc = sqlite3_bind_int64(m_stmt, index, value);
  if (rc != SQLITE_OK) {
    m_conn.fail(m_what, rc);
  }
  return *this;
}

Statement& Statement::bind_null(int index) {
  const int rc = sqlite3_bind_null(m_stmt, index);
  if (rc != SQLITE_OK) {
    m_conn.fail(m_what, rc);
  }
  return *this;
}

Statement& Statement::bind(int index, const std::optional<std::int64_t>& value) {
  return value ? bind(index, *value) : bind_null(index);
}

bool Statement::step() {
  const int rc = sqlite3_step(m_stmt);
  if (rc == SQLITE_ROW) {
    return true;
  }
  if (rc == SQLITE_DONE) {
    return false;
  }
  m_conn.fail(m_what, rc);
}

int Statement::run() {
  while (step()) {
  }
  return sqlite3_changes(m_conn.raw());
}

bool Statement::is_null(int col) const {
  return sqlite3_column_type(m_stmt, col) == SQLITE_NULL;
}

std::string Statement::text(int col) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(m_stmt, col));
  const int n = sqlite3_column_bytes(m_stmt, col);
  return p == nullptr ? std::string() : std::string(p, static_cast<std::size_t>(n));
}

std::int64_t Statement::integer(int col) const {
  return sqlite3_column_int64(m_stmt, col);
}

std::optional<std::int64_t> Statement::optional_integer(int col) const {
  if (is_null(col)) {
    return std::nullopt;
  }
  return integer(col);
}

std::optional<std::string> Statement::optional_text(int col) const {
  if (is_null(col)) {
    return std::nullopt;
  }
  return text(col);
}

Transaction::Transaction(Connection& conn, std::string_view what) : m_conn(conn), m_what(what) {
  // IMMEDIATE takes the write lock now, so the transaction cannot fail
  // half-way for want of it.
  m_conn.exec("BEGIN IMMEDIATE", m_what);
}

Transaction::~Transaction() {
  if (!m_done) {
    // Nothing to report from here: the error that led to the rollback is
    // already on its way up. A failed ROLLBACK (the transaction was already
    // rolled back by SQLite) leaves autocommit mode, which is what we want.
    sqlite3_exec(m_conn.raw(), "ROLLBACK", nullptr, nullptr, nullptr);
  }
}

void Transaction::commit() {
  m_conn.exec("COMMIT", m_what);
  m_done = true;
}

} // namespace rrd::store::detail
