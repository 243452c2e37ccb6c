// Test support for the PostgreSQL store: the test server from the
// environment, and a fresh schema on it per test case.
//
// RRD_TEST_POSTGRES is a libpq connection string to a server the tests may
// create schemas on (CTest starts one with tests/postgres/throwaway.sh and
// sets it). Not thread-safe.
#pragma once

#include "fakes/process.hpp"

#include <libpq-fe.h>
#include <memory>
#include <optional>
#include <string>

namespace rrd::testing {

// RRD_TEST_POSTGRES, when set and not empty.
std::optional<std::string> test_postgres();
// True when a missing test server is a failure rather than a skip (CI=true).
bool postgres_required();

// A schema of its own on the test server, dropped (with everything in it)
// when this goes. conninfo() connects with it as the search_path, so a Store
// opened on it creates its tables there. Throws std::runtime_error when the
// server cannot be reached.
class PgSchema {
public:
  explicit PgSchema(const std::string& server);
  ~PgSchema();
  PgSchema(const PgSchema&) = delete;
  PgSchema& operator=(const PgSchema&) = delete;

  const std::string& name() const { return m_name; }
  const std::string& conninfo() const { return m_conninfo; }

  // On a connection of its own, in the schema: runs `sql` (throws on an
  // error), or answers the first column of its first row ("" for none or
  // NULL).
  void exec(const std::string& sql);
  std::string text(const std::string& sql);
  // Terminates the server processes of the connections named
  // `application_name`; how many it terminated ("1").
  std::string terminate(const std::string& application_name);

private:
  struct Finisher {
    void operator()(PGconn* c) const noexcept { PQfinish(c); }
  };
  std::string m_server;
  std::string m_name;
  std::string m_conninfo;
  std::unique_ptr<PGconn, Finisher> m_conn;
};

// A PostgreSQL server of a test's own, started by `script`
// (tests/postgres/throwaway.sh) in a temporary directory, for a test that
// stops or restarts it: doing that to the shared server would cut off the
// tests running beside it. Stopped when this goes.
class OwnPostgres {
public:
  // Starts the server; throws std::runtime_error when it does not start.
  explicit OwnPostgres(const std::string& script);
  ~OwnPostgres();
  OwnPostgres(const OwnPostgres&) = delete;
  OwnPostgres& operator=(const OwnPostgres&) = delete;

  // The script's other actions: "restart", "stop", "down", "up". Its exit
  // status.
  int run(const std::string& action);
  const std::string& conninfo() const { return m_conninfo; }

private:
  std::string m_script;
  TempDir m_dir;
  std::string m_server_dir;
  std::string m_conninfo;
};

} // namespace rrd::testing
