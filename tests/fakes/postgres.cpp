#include "fakes/postgres.hpp"

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <unistd.h>

namespace rrd::testing {

namespace {

struct ResultClearer {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultClearer>;

Result run(PGconn* conn, const std::string& sql) {
  Result r(PQexec(conn, sql.c_str()));
  const auto status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    throw std::runtime_error("test PostgreSQL: " + sql + ": " + PQerrorMessage(conn));
  }
  return r;
}

} // namespace

std::optional<std::string> test_postgres() {
  const char* v = std::getenv("RRD_TEST_POSTGRES");
  if (v == nullptr || *v == '\0') {
    return std::nullopt;
  }
  return std::string(v);
}

bool postgres_required() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

PgSchema::PgSchema(const std::string& server) : m_server(server) {
  static std::atomic<int> counter{0};
  std::random_device rd;
  m_name = "rrd_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" +
           std::to_string(rd() % 100000);
  m_conninfo = server + " options='-c search_path=" + m_name + "'";
  m_conn.reset(PQconnectdb(server.c_str()));
  if (PQstatus(m_conn.get()) != CONNECTION_OK) {
    throw std::runtime_error("test PostgreSQL: cannot connect: " +
                             std::string(PQerrorMessage(m_conn.get())));
  }
  PQsetNoticeProcessor(
      m_conn.get(), [](void*, const char*) {}, nullptr);
  run(m_conn.get(), "CREATE SCHEMA " + m_name);
  run(m_conn.get(), "SET search_path = " + m_name);
}

PgSchema::~PgSchema() {
  if (m_conn && PQstatus(m_conn.get()) != CONNECTION_OK) {
    PQreset(m_conn.get());
  }
  try {
    run(m_conn.get(), "DROP SCHEMA " + m_name + " CASCADE");
  } catch (const std::exception&) {
    // A server that went away leaves a schema behind in a cluster that is
    // thrown away anyway.
  }
}

void PgSchema::exec(const std::string& sql) {
  run(m_conn.get(), sql);
}

std::string PgSchema::text(const std::string& sql) {
  const Result r = run(m_conn.get(), sql);
  if (PQntuples(r.get()) == 0 || PQgetisnull(r.get(), 0, 0) != 0) {
    return "";
  }
  return PQgetvalue(r.get(), 0, 0);
}

std::string PgSchema::terminate(const std::string& application_name) {
  return text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
              "WHERE application_name = '" +
              application_name + "'");
}

OwnPostgres::OwnPostgres(const std::string& script)
    : m_script(script), m_server_dir(m_dir.file("pg")) {
  // As root the server runs as the postgres user, who must reach its
  // directory.
  namespace fs = std::filesystem;
  fs::permissions(m_dir.path(),
                  fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
  if (run("start") != 0) {
    throw std::runtime_error("test PostgreSQL: " + script + " start " + m_server_dir + " failed");
  }
  const std::string text = read_file(m_server_dir + "/conninfo");
  m_conninfo = text.substr(0, text.find('\n'));
}

OwnPostgres::~OwnPostgres() {
  run("stop");
}

int OwnPostgres::run(const std::string& action) {
  const std::string cmd = m_script + " " + action + " " + m_server_dir;
  return std::system(cmd.c_str());
}

} // namespace rrd::testing
