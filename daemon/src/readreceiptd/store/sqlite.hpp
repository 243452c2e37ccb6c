// Thin RAII layer over the SQLite3 C API, private to the store module: owning
// handles for connections and statements, a cache of prepared statements,
// typed binding and reading, and a scoped transaction. Every failure becomes a
// StoreError that names the database and SQLite's own message.
//
// Thread-safety: none; a Connection and its statements belong to one thread.
#pragma once

#include "readreceiptd/store/store.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <sqlite3.h>
#include <string>
#include <string_view>
#include <unordered_map>

namespace rrd::store::detail {

struct DbCloser {
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const noexcept { sqlite3_finalize(stmt); }
};
using DbHandle = std::unique_ptr<sqlite3, DbCloser>;
using StmtHandle = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// An open database connection plus the statements prepared on it.
class Connection {
public:
  // Opens (creating if missing) the database file at `path`.
  explicit Connection(std::string path);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  const std::string& path() const { return m_path; }
  sqlite3* raw() const { return m_db.get(); }

  // Runs one or more statements that return nothing of interest.
  void exec(const char* sql, std::string_view what);
  // Runs a statement that answers one row of one column (e.g. a PRAGMA) and
  // returns that value as text; nullopt when it answers no row.
  std::optional<std::string> query_text(const char* sql, std::string_view what);
  std::int64_t query_int(const char* sql, std::string_view what);

  // The cached statement for `sql`, prepared on first use. The cache is
  // keyed by the pointer, not the text (no hashing of the SQL per use):
  // `sql` must be a string with static storage, one of the store's
  // constants.
  sqlite3_stmt* statement(const char* sql);

  // A StoreError: "state database <path>: <what>: <sqlite message>".
  [[noreturn]] void fail(std::string_view what) const;
  [[noreturn]] void fail(std::string_view what, int rc) const;

private:
  std::string m_path;
  // Declared before the statements so that they are finalized first.
  DbHandle m_db;
  std::unordered_map<const char*, StmtHandle> m_statements;
};

// Borrows a cached statement for one use: binds with the typed helpers, steps,
// and resets and clears the bindings when it goes out of scope.
class Statement {
public:
  Statement(Connection& conn, const char* sql, std::string_view what);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  // Parameters are numbered from 1, as in SQLite.
  Statement& bind(int index, std::string_view text);
  Statement& bind(int index, const char* text) { return bind(index, std::string_view(text)); }
  Statement& bind(int index, std::int64_t value);
  Statement& bind(int index, int value) { return bind(index, static_cast<std::int64_t>(value)); }
  Statement& bind(int index, bool value) = delete; // say 0/1 explicitly
  Statement& bind_null(int index);
  Statement& bind(int index, const std::optional<std::int64_t>& value);

  // Advances to the next row: true when there is one, false when done.
  bool step();
  // Runs a statement that returns no rows; returns sqlite3_changes().
  int run();

  // Columns are numbered from 0, as in SQLite.
  bool is_null(int col) const;
  std::string text(int col) const;
  std::int64_t integer(int col) const;
  std::optional<std::int64_t> optional_integer(int col) const;
  std::optional<std::string> optional_text(int col) const;

private:
  Connection& m_conn;
  sqlite3_stmt* m_stmt;
  std::string_view m_what;
};

// BEGIN IMMEDIATE on construction; ROLLBACK on destruction unless commit()
// was called. Rolling back never throws.
class Transaction {
public:
  Transaction(Connection& conn, std::string_view what);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  void commit();

private:
  Connection& m_conn;
  std::string_view m_what;
  bool m_done = false;
};

} // namespace rrd::store::detail
