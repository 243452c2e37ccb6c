// The SQLite backend of the store's database layer (db.hpp), private to the
// store module: an owning connection handle and its cache of prepared
// statements. Every failure becomes a StoreError that names the database
// file and SQLite's own message.
//
// Thread-safety: none; a connection and its statements belong to one thread.
#pragma once

#include "readreceiptd/store/db.hpp"

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

// An open database file plus the statements prepared on it.
class SqliteConnection final : public Connection {
public:
  // Opens (creating if missing) the database file at `path`.
  explicit SqliteConnection(const std::string& path);

  const std::string& path() const { return name(); }
  sqlite3* raw() const { return m_db.get(); }

  void exec(const char* sql, std::string_view what) override;
  std::optional<std::string> query_text(const char* sql, std::string_view what) override;
  void begin(std::string_view what) override;
  void commit(std::string_view what) override;
  void rollback() noexcept override;

  std::int64_t query_int(const char* sql, std::string_view what);

  // The cached statement for `sql`, prepared on first use (see Statement).
  sqlite3_stmt* statement(const char* sql);

  // A StoreError: "state database <path>: <what>: <sqlite message>".
  [[noreturn]] void fail_rc(std::string_view what) const;
  [[noreturn]] void fail_rc(std::string_view what, int rc) const;

private:
  // Declared before the statements so that they are finalized first.
  DbHandle m_db;
  std::unordered_map<const char*, StmtHandle> m_statements;
};

} // namespace rrd::store::detail
