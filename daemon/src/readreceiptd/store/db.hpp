// The database layer of the store module, private to it: one interface over
// the two backends (SQLite, sqlite.hpp; PostgreSQL through libpq,
// postgres.hpp), so that the store's logic (store.cpp) is written once.
//
// - Connection: an open connection. Its few whole-statement operations
//   (exec, query_text, begin/commit/rollback) are virtual: one virtual call
//   per statement.
// - Statement: borrows a statement prepared once per connection and cached,
//   binds its parameters, steps through its rows and reads columns. It is a
//   concrete class: binding and reading a column is a direct call and one
//   predictable branch on the backend, never a virtual call (the commit path
//   binds ~30 values per message).
// - Transaction: a scoped transaction, rolled back unless committed.
//
// SQL texts are written with SQLite's numbered parameters (?1, ?2, ...); the
// PostgreSQL backend turns them into $1, $2, ... when it prepares them.
// Every failure is a StoreError naming the database (a file's path, or a
// PostgreSQL database by host and name, never its password) and the
// backend's own message; a lost PostgreSQL connection is a StoreUnavailable.
//
// Thread-safety: none; a Connection and its statements belong to one thread.
#pragma once

#include "readreceiptd/store/store.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

struct sqlite3_stmt;

namespace rrd::store::detail {

enum class Backend { sqlite, postgres };

class SqliteConnection;
class PgConnection;
struct PgStatement;

// PostgreSQL: a lock was not granted within the session's lock_timeout
// (SQLSTATE 55P03). The statement's transaction is aborted.
class LockNotAvailable : public StoreError {
public:
  using StoreError::StoreError;
};

class Connection {
public:
  virtual ~Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  Backend backend() const { return m_backend; }
  // How errors name the database: the SQLite file's path, or
  // "<dbname> on <host> (PostgreSQL)".
  const std::string& name() const { return m_name; }

  // Runs one or more statements that take no parameters and return nothing
  // of interest.
  virtual void exec(const char* sql, std::string_view what) = 0;
  // Runs a statement that answers one row of one column and returns that
  // value as text; nullopt when it answers no row.
  virtual std::optional<std::string> query_text(const char* sql, std::string_view what) = 0;
  // A transaction that can write (SQLite: BEGIN IMMEDIATE, which takes the
  // write lock at once; PostgreSQL: BEGIN).
  virtual void begin(std::string_view what) = 0;
  virtual void commit(std::string_view what) = 0;
  // A commit that does not wait where the backend can: PostgreSQL sends
  // COMMIT after the pipelined statements, and finish_commit() reads the
  // answers; every other use of the connection waits for them first.
  // SQLite: commit().
  virtual void commit_async(std::string_view what) { commit(what); }
  // Whether commit_async()'s commit has ended: false while its answers are
  // still to come (never when `wait`), true once it has committed; throws
  // its failure (once; nothing of the transaction was written then).
  virtual bool finish_commit(bool /*wait*/) { return true; }
  // Never throws: the error that led to the rollback is already on its way.
  virtual void rollback() noexcept = 0;

  // A StoreError: "state database <name>: <what>: <detail>".
  [[noreturn]] void fail(std::string_view what, std::string_view detail) const;
  // How many times the connection was found lost or could not be made
  // (a StoreUnavailable was thrown); PostgreSQL only, 0 on SQLite.
  std::uint64_t losses() const { return m_losses; }

protected:
  Connection(Backend backend, std::string name) : m_backend(backend), m_name(std::move(name)) {}
  void set_name(std::string name) { m_name = std::move(name); }
  void count_loss() { ++m_losses; }

private:
  Backend m_backend;
  std::string m_name;
  std::uint64_t m_losses = 0;
};

// One use of a cached statement: binds with the typed helpers, steps, and
// resets (SQLite) or clears its result (PostgreSQL) when it goes out of
// scope. The cache is keyed by the SQL's pointer, not its text (no hashing
// per use): `sql` must have static storage, one of the store's constants.
class Statement {
public:
  // How a PostgreSQL statement's rows arrive: all at once (buffered: the
  // connection is free again at once), or one at a time (streamed, for a
  // scan of a large table: only the current row is in memory, and the
  // connection runs nothing else until the last row is read or the
  // Statement goes). SQLite always steps row by row.
  enum class Rows { buffered, streamed };

  Statement(Connection& conn, const char* sql, std::string_view what, Rows rows = Rows::buffered);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  // Parameters are numbered from 1, as in the SQL (?1).
  Statement& bind(int index, std::string_view text);
  Statement& bind(int index, const char* text) { return bind(index, std::string_view(text)); }
  Statement& bind(int index, std::int64_t value);
  Statement& bind(int index, int value) { return bind(index, static_cast<std::int64_t>(value)); }
  Statement& bind(int index, bool value) = delete; // say 0/1 explicitly
  Statement& bind_null(int index);
  Statement& bind(int index, const std::optional<std::int64_t>& value);

  // Advances to the next row: true when there is one, false when done.
  bool step();
  // Runs a statement that returns no rows; returns the number of rows it
  // changed.
  int run();
  // Runs a statement whose answer is not needed, other than whether it
  // failed. On PostgreSQL, inside a transaction, it is pipelined: sent
  // without waiting, its answer read (and a failure thrown) at the next
  // statement that needs an answer, at the latest at COMMIT. SQLite: run().
  void send();

  // Columns are numbered from 0.
  bool is_null(int col) const;
  std::string text(int col) const;
  std::int64_t integer(int col) const;
  std::optional<std::int64_t> optional_integer(int col) const;
  std::optional<std::string> optional_text(int col) const;

private:
  Connection& m_conn;
  std::string_view m_what;
  // Exactly one is set, by the connection's backend.
  sqlite3_stmt* m_sqlite = nullptr;
  PgStatement* m_pg = nullptr;
  PgConnection* m_pg_conn = nullptr;
  Rows m_rows = Rows::buffered;
  bool m_started = false;
};

// Begins on construction; rolls back on destruction unless commit() was
// called.
class Transaction {
public:
  Transaction(Connection& conn, std::string_view what);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  void commit();
  // Connection::commit_async(): the transaction is the connection's then.
  void commit_async();

private:
  Connection& m_conn;
  std::string_view m_what;
  bool m_done = false;
};

} // namespace rrd::store::detail
