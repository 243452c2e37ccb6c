// The PostgreSQL backend of the store's database layer (db.hpp), through
// libpq, private to the store module. Statements are prepared once per
// connection (PQprepare) and run with text parameters (PQexecPrepared);
// results are read as text.
//
// A lost connection (the server restarted, failed over, or the network went
// away) is a StoreUnavailable; the next operation outside a transaction
// connects again and prepares its statements again. Nothing here waits or
// retries: the caller chooses the backoff. Errors name the database by host
// and name only, never the password or the connection string, and carry only
// the server's primary message (its DETAIL may quote a row's values, among
// them a group message's token).
//
// Thread-safety: none; a connection and its statements belong to one thread.
#pragma once

#include "readreceiptd/store/db.hpp"

#include <cstdint>
#include <exception>
#include <libpq-fe.h>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace rrd::store::detail {

struct PgFinisher {
  void operator()(PGconn* conn) const noexcept { PQfinish(conn); }
};
struct PgClearer {
  void operator()(PGresult* result) const noexcept { PQclear(result); }
};
using PgConnHandle = std::unique_ptr<PGconn, PgFinisher>;
using PgResult = std::unique_ptr<PGresult, PgClearer>;

// One cached statement: its text in PostgreSQL's form, its parameters for
// the current use, and the result of its last execution.
struct PgStatement {
  std::string name; // the prepared statement's name on the server
  std::string text; // with $N parameters
  int param_count = 0;
  // The connection generation it was prepared on (0: never).
  std::uint64_t prepared_on = 0;
  std::vector<std::string> values; // by parameter index - 1
  std::vector<bool> nulls;         // by parameter index - 1
  PgResult result;                 // set once executed
  int rows = 0;
  int row = -1; // the current row while stepping
};

// "?1" -> "$1": SQLite's numbered parameters in PostgreSQL's spelling, and
// the highest parameter number. The store's SQL has no '?' elsewhere.
std::string postgres_parameters(std::string_view sql, int& param_count);

// The text of a libpq connection-string error without the parts it quotes
// from the string (which may be a password).
std::string redact_conninfo_error(std::string_view message);

// A PostgreSQL array literal in text form ('{"a","b c",NULL}', '{1,2}'),
// built element by element: the parameter of a statement that writes many
// rows at once (INSERT ... SELECT FROM unnest(?1::text[], ...)). Every text
// element is quoted, '"' and '\' escaped, so that any text is itself (the
// empty text, "NULL", braces, commas, quotes, spaces at either end).
class PgArrayLiteral {
public:
  void add(std::string_view text);
  void add(std::int64_t value);
  void add_null();
  std::size_t size() const { return m_size; }
  // The literal ("{}" when nothing was added); the builder is empty again.
  std::string take();

private:
  void separate();
  std::string m_text = "{";
  std::size_t m_size = 0;
};

class PgConnection final : public Connection {
public:
  // Connects; throws StoreUnavailable when the server cannot be reached or
  // refuses the connection, StoreError for a malformed connection string.
  explicit PgConnection(const PostgresOptions& options);

  void exec(const char* sql, std::string_view what) override;
  std::optional<std::string> query_text(const char* sql, std::string_view what) override;
  void begin(std::string_view what) override;
  void commit(std::string_view what) override;
  void commit_async(std::string_view what) override;
  bool finish_commit(bool wait) override;
  void rollback() noexcept override;

  // The cached statement for `sql` (see Statement).
  PgStatement& statement(const char* sql);
  // Prepares `s` if this connection has not, then runs it with its bound
  // parameters, keeping the result in `s`.
  void execute(PgStatement& s, std::string_view what);
  // The same in single-row mode: next_streamed_row() makes each row in turn
  // the result (false after the last); finish_streaming() reads and drops
  // what is left, so that the connection is free again (never throws).
  void start_streaming(PgStatement& s, std::string_view what);
  bool next_streamed_row(PgStatement& s, std::string_view what);
  void finish_streaming(PgStatement& s) noexcept;
  // Inside a transaction: sends `s` in pipeline mode without reading its
  // answer (see Statement::send); outside one, execute().
  void send(PgStatement& s, std::string_view what);

private:
  // Connects again when the connection is gone and no transaction is open
  // (a transaction cut off by a lost connection has failed as a whole).
  void ensure_connected();
  void connect();
  // Checks a result: a StoreUnavailable when the connection is gone, a
  // StoreError with the server's primary message otherwise.
  void check(const PGresult* result, std::string_view what);
  void prepare(PgStatement& s, std::string_view what);
  // Reads the answers of every pipelined statement and leaves pipeline
  // mode; throws the first failure among them.
  void sync_pipeline();
  // Reads the pipeline's answers (its sync sent) as far as they have
  // arrived, all of them when `wait`; true once the sync's answer is read
  // and pipeline mode left. The first failure is kept in m_failure.
  bool read_pipeline(bool wait);
  void send_sync(std::string_view what);
  // Throws the failure read_pipeline() kept, if any.
  void throw_failure();
  // The pipeline's state, once the connection is lost.
  void forget_pipeline() noexcept;
  // The end of an asynchronous commit: false while its answers are still
  // to come (never when `wait`); throws its failure.
  bool complete_commit(bool wait);
  // Waits for an asynchronous commit in flight and keeps its failure for
  // finish_commit(): every other use of the connection comes after it.
  void settle();
  // The same, dropping every answer but the preparations' (for a
  // rollback; never throws).
  void drain_pipeline() noexcept;
  std::vector<const char*> parameters(const PgStatement& s) const;
  [[noreturn]] void unavailable(std::string_view what, std::string_view detail);

  std::string m_conninfo;
  std::optional<std::string> m_password;
  std::string m_connect_timeout;
  PgConnHandle m_conn;
  std::uint64_t m_generation = 0; // bumped on every new connection
  bool m_broken = false;
  bool m_in_transaction = false;
  bool m_streaming = false; // a streamed statement's rows are still arriving
  // Each statement sent in pipeline mode and not yet answered (empty: not
  // in pipeline mode): what it does, for its error, and for a statement's
  // preparation, the statement. A preparation the server skipped (after an
  // earlier statement of the pipeline failed) or refused makes its
  // statement unprepared again, so that its next use prepares it.
  struct Pipelined {
    std::string what;
    PgStatement* prepared = nullptr;
  };
  std::vector<Pipelined> m_pipelined;
  std::size_t m_answered = 0; // entries of m_pipelined whose answers were read
  bool m_in_answer = false;   // a statement's answer read, not yet the null ending it
  bool m_synced = false;      // the pipeline's sync was sent
  PgResult m_failure;         // the first failure read, and its statement's what
  std::string m_failed_what;
  bool m_committing = false;         // an asynchronous commit is in flight
  std::exception_ptr m_commit_error; // its failure, when settle() read it
  std::unordered_map<const char*, std::unique_ptr<PgStatement>> m_statements;
};

} // namespace rrd::store::detail
