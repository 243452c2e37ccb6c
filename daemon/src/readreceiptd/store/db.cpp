#include "readreceiptd/store/db.hpp"

#include "readreceiptd/store/postgres.hpp"
#include "readreceiptd/store/sqlite.hpp"

#include <charconv>

namespace rrd::store::detail {

void Connection::fail(std::string_view what, std::string_view detail) const {
  std::string msg = "state database ";
  msg += m_name;
  msg += ": ";
  msg += what;
  msg += ": ";
  msg += detail;
  throw StoreError(msg);
}

namespace {

[[noreturn]] void sqlite_fail(Connection& conn, std::string_view what, int rc) {
  static_cast<SqliteConnection&>(conn).fail_rc(what, rc);
}

} // namespace

// Each backend's code is a branch on which pointer is set: no virtual call
// per parameter or column.

Statement::Statement(Connection& conn, const char* sql, std::string_view what, Rows rows)
    : m_conn(conn), m_what(what), m_rows(rows) {
  if (conn.backend() == Backend::sqlite) {
    m_sqlite = static_cast<SqliteConnection&>(conn).statement(sql);
  } else {
    m_pg_conn = &static_cast<PgConnection&>(conn);
    m_pg = &m_pg_conn->statement(sql);
  }
}

Statement::~Statement() {
  if (m_sqlite != nullptr) {
    sqlite3_reset(m_sqlite);
    sqlite3_clear_bindings(m_sqlite);
    return;
  }
  if (m_started && m_rows == Rows::streamed) {
    m_pg_conn->finish_streaming(*m_pg);
  }
  m_pg->result.reset();
  m_pg->rows = 0;
  m_pg->row = -1;
  m_pg->nulls.assign(m_pg->nulls.size(), true);
}

namespace {

std::size_t pg_slot(const PgStatement& s, int index, Connection& conn, std::string_view what) {
  if (index < 1 || index > s.param_count) {
    conn.fail(what, "parameter " + std::to_string(index) + " is out of range");
  }
  return static_cast<std::size_t>(index - 1);
}

} // namespace

Statement& Statement::bind(int index, std::string_view text) {
  if (m_sqlite != nullptr) {
    // TRANSIENT: SQLite copies the text, so temporaries may be bound.
    const int rc = sqlite3_bind_text64(m_sqlite, index, text.data(), text.size(), SQLITE_TRANSIENT,
                                       SQLITE_UTF8);
    if (rc != SQLITE_OK) {
      sqlite_fail(m_conn, m_what, rc);
    }
    return *this;
  }
  const std::size_t i = pg_slot(*m_pg, index, m_conn, m_what);
  m_pg->values[i].assign(text.data(), text.size());
  m_pg->nulls[i] = false;
  return *this;
}

Statement& Statement::bind(int index, std::int64_t value) {
  if (m_sqlite != nullptr) {
    const int rc = sqlite3_bind_int64(m_sqlite, index, value);
    if (rc != SQLITE_OK) {
      sqlite_fail(m_conn, m_what, rc);
    }
    return *this;
  }
  const std::size_t i = pg_slot(*m_pg, index, m_conn, m_what);
  m_pg->values[i] = std::to_string(value);
  m_pg->nulls[i] = false;
  return *this;
}

Statement& Statement::bind_null(int index) {
  if (m_sqlite != nullptr) {
    const int rc = sqlite3_bind_null(m_sqlite, index);
    if (rc != SQLITE_OK) {
      sqlite_fail(m_conn, m_what, rc);
    }
    return *this;
  }
  m_pg->nulls[pg_slot(*m_pg, index, m_conn, m_what)] = true;
  return *this;
}

Statement& Statement::bind(int index, const std::optional<std::int64_t>& value) {
  return value ? bind(index, *value) : bind_null(index);
}

bool Statement::step() {
  if (m_sqlite != nullptr) {
    const int rc = sqlite3_step(m_sqlite);
    if (rc == SQLITE_ROW) {
      return true;
    }
    if (rc == SQLITE_DONE) {
      return false;
    }
    sqlite_fail(m_conn, m_what, rc);
  }
  if (m_rows == Rows::streamed) {
    if (!m_started) {
      m_started = true;
      m_pg_conn->start_streaming(*m_pg, m_what);
    }
    return m_pg_conn->next_streamed_row(*m_pg, m_what);
  }
  if (!m_started) {
    m_started = true;
    m_pg_conn->execute(*m_pg, m_what);
  }
  ++m_pg->row;
  return m_pg->row < m_pg->rows;
}

int Statement::run() {
  if (m_sqlite != nullptr) {
    while (step()) {
    }
    return sqlite3_changes(sqlite3_db_handle(m_sqlite));
  }
  if (!m_started) {
    m_started = true;
    m_pg_conn->execute(*m_pg, m_what);
  }
  const char* changed = PQcmdTuples(m_pg->result.get());
  int n = 0;
  std::from_chars(changed, changed + std::char_traits<char>::length(changed), n);
  return n;
}

void Statement::send() {
  if (m_sqlite != nullptr) {
    run();
    return;
  }
  m_started = true;
  m_pg_conn->send(*m_pg, m_what);
}

bool Statement::is_null(int col) const {
  if (m_sqlite != nullptr) {
    return sqlite3_column_type(m_sqlite, col) == SQLITE_NULL;
  }
  return PQgetisnull(m_pg->result.get(), m_pg->row, col) != 0;
}

std::string Statement::text(int col) const {
  if (m_sqlite != nullptr) {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(m_sqlite, col));
    const int n = sqlite3_column_bytes(m_sqlite, col);
    return p == nullptr ? std::string() : std::string(p, static_cast<std::size_t>(n));
  }
  const PGresult* r = m_pg->result.get();
  return {PQgetvalue(r, m_pg->row, col), static_cast<std::size_t>(PQgetlength(r, m_pg->row, col))};
}

std::int64_t Statement::integer(int col) const {
  if (m_sqlite != nullptr) {
    return sqlite3_column_int64(m_sqlite, col);
  }
  const PGresult* r = m_pg->result.get();
  const char* p = PQgetvalue(r, m_pg->row, col);
  const char* end = p + PQgetlength(r, m_pg->row, col);
  std::int64_t value = 0;
  const auto [rest, ec] = std::from_chars(p, end, value);
  if (ec != std::errc() || rest != end) {
    // A NULL reads as 0, as sqlite3_column_int64 reads it.
    if (p == end) {
      return 0;
    }
    m_conn.fail(m_what, "column " + std::to_string(col) + " holds \"" + std::string(p, end) +
                            "\", not an integer");
  }
  return value;
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
  m_conn.begin(m_what);
}

Transaction::~Transaction() {
  if (!m_done) {
    m_conn.rollback();
  }
}

void Transaction::commit() {
  // A COMMIT that failed may leave the transaction open (SQLite's BUSY):
  // the destructor rolls it back.
  m_conn.commit(m_what);
  m_done = true;
}

void Transaction::commit_async() {
  m_conn.commit_async(m_what);
  m_done = true;
}

} // namespace rrd::store::detail
