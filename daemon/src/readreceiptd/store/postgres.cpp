#include "readreceiptd/store/postgres.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <utility>

namespace rrd::store::detail {

namespace {

constexpr const char* k_application_name = "readreceiptd";
// At most this many statements are pipelined before their answers are
// read: the server's answers must never fill the socket while libpq is
// still writing statements (both would wait for the other).
constexpr std::size_t k_pipeline_depth = 128;
// SQLSTATE classes and codes that mean the connection is gone or the server
// is going away: class 08 (connection exception), admin_shutdown,
// crash_shutdown, cannot_connect_now.
constexpr std::string_view k_connection_exception_class = "08";
constexpr std::array<std::string_view, 3> k_server_going_away{"57P01", "57P02", "57P03"};
constexpr std::string_view k_lock_not_available = "55P03";

// libpq's messages end with a newline and may span several lines.
std::string one_line(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    if (c == '\n') {
      out += "; ";
    } else {
      out += c;
    }
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == ';')) {
    out.pop_back();
  }
  return out;
}

void ignore_notice(void* /*arg*/, const char* /*message*/) {}

// The host and database a connection string names, for error messages;
// empty when the string does not say (libpq's defaults apply).
struct Target {
  std::string host;
  std::string dbname;
};

Target parse_target(const std::string& conninfo) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &error);
  if (options == nullptr) {
    std::string message = error != nullptr ? redact_conninfo_error(error) : "out of memory";
    PQfreemem(error);
    throw StoreError("state.postgres is not a valid libpq connection string: " + message);
  }
  Target out;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val == nullptr) {
      continue;
    }
    const std::string_view keyword = o->keyword;
    if (keyword == "host" || (keyword == "hostaddr" && out.host.empty())) {
      out.host = o->val;
    } else if (keyword == "dbname") {
      out.dbname = o->val;
    }
  }
  PQconninfoFree(options);
  return out;
}

// "readreceiptd on db.internal (PostgreSQL)".
std::string display_name(const Target& t) {
  std::string out = t.dbname.empty() ? "(default database)" : t.dbname;
  out += " on ";
  out += t.host.empty() ? "(default host)" : t.host;
  out += " (PostgreSQL)";
  return out;
}

} // namespace

std::string postgres_parameters(std::string_view sql, int& param_count) {
  std::string out;
  out.reserve(sql.size());
  param_count = 0;
  for (std::size_t i = 0; i < sql.size(); ++i) {
    if (sql[i] != '?') {
      out += sql[i];
      continue;
    }
    out += '$';
    int number = 0;
    while (i + 1 < sql.size() && std::isdigit(static_cast<unsigned char>(sql[i + 1])) != 0) {
      ++i;
      out += sql[i];
      number = number * 10 + (sql[i] - '0');
    }
    param_count = std::max(param_count, number);
  }
  return out;
}

std::string redact_conninfo_error(std::string_view message) {
  // libpq quotes pieces of the string ("missing "=" after "..."",
  // "invalid connection option "...""): drop every quoted piece.
  std::string out;
  bool quoted = false;
  for (const char c : message) {
    if (c == '"') {
      out += quoted ? "…\"" : "\"";
      quoted = !quoted;
    } else if (!quoted) {
      out += c;
    }
  }
  return one_line(out);
}

void PgArrayLiteral::separate() {
  if (m_size++ > 0) {
    m_text += ',';
  }
}

void PgArrayLiteral::add(std::string_view text) {
  separate();
  m_text.reserve(m_text.size() + text.size() + 2);
  m_text += '"';
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      m_text += '\\';
    }
    m_text += c;
  }
  m_text += '"';
}

void PgArrayLiteral::add(std::int64_t value) {
  separate();
  m_text += std::to_string(value);
}

void PgArrayLiteral::add_null() {
  separate();
  m_text += "NULL";
}

std::string PgArrayLiteral::take() {
  std::string out = std::move(m_text);
  out += '}';
  m_text = "{";
  m_size = 0;
  return out;
}

PgConnection::PgConnection(const PostgresOptions& options)
    : Connection(Backend::postgres, display_name(parse_target(options.conninfo))),
      m_conninfo(options.conninfo), m_password(options.password),
      m_connect_timeout(
          std::to_string(std::max<std::int64_t>(1, options.connect_timeout.count()))) {
  connect();
}

void PgConnection::connect() {
  m_conn.reset();
  // expand_dbname: the first "dbname" is the whole connection string; the
  // keywords after it override what it says.
  std::vector<const char*> keywords{"dbname", "connect_timeout", "fallback_application_name"};
  std::vector<const char*> values{m_conninfo.c_str(), m_connect_timeout.c_str(),
                                  k_application_name};
  if (m_password) {
    keywords.push_back("password");
    values.push_back(m_password->c_str());
  }
  keywords.push_back(nullptr);
  values.push_back(nullptr);
  m_conn.reset(PQconnectdbParams(keywords.data(), values.data(), 1));
  if (m_conn == nullptr) {
    unavailable("cannot connect", "out of memory");
  }
  PQsetNoticeProcessor(m_conn.get(), ignore_notice, nullptr);
  if (PQstatus(m_conn.get()) != CONNECTION_OK) {
    const std::string detail = one_line(PQerrorMessage(m_conn.get()));
    m_conn.reset();
    m_broken = true;
    unavailable("cannot connect", detail);
  }
  // What libpq connected to, defaults resolved.
  set_name(display_name(Target{PQhost(m_conn.get()), PQdb(m_conn.get())}));
  ++m_generation;
  m_broken = false;
}

void PgConnection::ensure_connected() {
  if (m_conn != nullptr && !m_broken && PQstatus(m_conn.get()) == CONNECTION_OK) {
    return;
  }
  if (m_in_transaction) {
    unavailable("connection lost", "the transaction was cut off");
  }
  connect();
}

void PgConnection::unavailable(std::string_view what, std::string_view detail) {
  // `what` may be an entry of the pipeline forgotten below.
  std::string message = "state database ";
  message += name();
  message += " is unavailable: ";
  message += what;
  message += ": ";
  message += detail;
  m_broken = true;
  forget_pipeline();
  count_loss();
  throw StoreUnavailable(message);
}

void PgConnection::check(const PGresult* result, std::string_view what) {
  const ExecStatusType status = result == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(result);
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
    return;
  }
  const char* sqlstate = result == nullptr ? nullptr : PQresultErrorField(result, PG_DIAG_SQLSTATE);
  const std::string_view code = sqlstate != nullptr ? sqlstate : "";
  const bool gone = result == nullptr || PQstatus(m_conn.get()) != CONNECTION_OK ||
                    code.substr(0, 2) == k_connection_exception_class ||
                    std::find(k_server_going_away.begin(), k_server_going_away.end(), code) !=
                        k_server_going_away.end();
  if (gone) {
    const char* primary =
        result == nullptr ? nullptr : PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY);
    unavailable(what, one_line(primary != nullptr ? primary : PQerrorMessage(m_conn.get())));
  }
  const char* primary = PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY);
  std::string detail = primary != nullptr ? primary : PQresStatus(status);
  if (!code.empty()) {
    detail += " (SQLSTATE ";
    detail += code;
    detail += ")";
  }
  if (code == k_lock_not_available) {
    throw LockNotAvailable("state database " + name() + ": " + std::string(what) + ": " +
                           one_line(detail));
  }
  fail(what, one_line(detail));
}

namespace {

bool succeeded(const PGresult* r) {
  const ExecStatusType status = PQresultStatus(r);
  return status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
}

} // namespace

bool PgConnection::read_pipeline(bool wait) {
  for (;;) {
    const std::string_view what =
        m_answered < m_pipelined.size() ? m_pipelined[m_answered].what : m_pipelined.back().what;
    // PQisBusy() parses what has been read; only when that is not enough is
    // the socket read, without blocking (libpq's socket never blocks).
    if (!wait && PQisBusy(m_conn.get()) != 0) {
      if (PQconsumeInput(m_conn.get()) == 0) {
        unavailable(what, one_line(PQerrorMessage(m_conn.get())));
      }
      if (PQisBusy(m_conn.get()) != 0) {
        return false;
      }
    }
    if (m_answered == m_pipelined.size()) {
      const PgResult sync(PQgetResult(m_conn.get()));
      if (sync == nullptr || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC) {
        unavailable(what, one_line(PQerrorMessage(m_conn.get())));
      }
      PQexitPipelineMode(m_conn.get());
      m_pipelined.clear();
      m_answered = 0;
      m_synced = false;
      return true;
    }
    PgResult r(PQgetResult(m_conn.get()));
    if (m_in_answer) {
      // The rest of a statement's answer, up to the null that ends it.
      if (r == nullptr) {
        m_in_answer = false;
        ++m_answered;
      }
      continue;
    }
    if (r == nullptr) {
      unavailable(what, one_line(PQerrorMessage(m_conn.get())));
    }
    m_in_answer = true;
    if (succeeded(r.get())) {
      continue;
    }
    Pipelined& p = m_pipelined[m_answered];
    if (p.prepared != nullptr) {
      p.prepared->prepared_on = 0;
    }
    if (m_failure == nullptr && PQresultStatus(r.get()) != PGRES_PIPELINE_ABORTED) {
      m_failure = std::move(r);
      m_failed_what = p.what;
    }
  }
}

void PgConnection::send_sync(std::string_view what) {
  if (PQpipelineSync(m_conn.get()) == 0) {
    unavailable(what, one_line(PQerrorMessage(m_conn.get())));
  }
  m_synced = true;
}

void PgConnection::throw_failure() {
  if (m_failure == nullptr) {
    return;
  }
  const PgResult failure = std::move(m_failure);
  const std::string what = std::move(m_failed_what);
  m_failed_what.clear();
  check(failure.get(), what);
}

void PgConnection::forget_pipeline() noexcept {
  m_pipelined.clear();
  m_answered = 0;
  m_in_answer = false;
  m_synced = false;
  m_failure.reset();
  m_failed_what.clear();
}

void PgConnection::sync_pipeline() {
  settle();
  if (m_pipelined.empty()) {
    return;
  }
  if (!m_synced) {
    send_sync(m_pipelined.front().what);
  }
  read_pipeline(true);
  throw_failure();
}

void PgConnection::drain_pipeline() noexcept {
  if (m_pipelined.empty()) {
    return;
  }
  // As sync_pipeline(), every failure dropped; a lost connection ends it
  // (the next use connects again, and prepares every statement again).
  if (m_conn == nullptr || m_broken || PQstatus(m_conn.get()) != CONNECTION_OK) {
    m_broken = true;
  } else {
    try {
      if (!m_synced) {
        send_sync(m_pipelined.front().what);
      }
      read_pipeline(true);
    } catch (const StoreError&) {
      m_broken = true;
    }
  }
  forget_pipeline();
}

void PgConnection::commit_async(std::string_view what) {
  if (m_pipelined.empty() && PQenterPipelineMode(m_conn.get()) == 0) {
    unavailable(what, one_line(PQerrorMessage(m_conn.get())));
  }
  if (PQsendQueryParams(m_conn.get(), "COMMIT", 0, nullptr, nullptr, nullptr, nullptr, 0) == 0) {
    unavailable(what, one_line(PQerrorMessage(m_conn.get())));
  }
  m_pipelined.push_back({std::string(what), nullptr});
  send_sync(what);
  m_committing = true;
}

bool PgConnection::complete_commit(bool wait) {
  try {
    if (!read_pipeline(wait)) {
      return false;
    }
  } catch (const StoreError&) {
    m_committing = false;
    m_in_transaction = false;
    throw;
  }
  m_committing = false;
  m_in_transaction = false;
  if (m_failure != nullptr) {
    // A statement failed: the server skipped the rest, COMMIT too, and the
    // transaction is still open, failed.
    const PgResult result(PQexec(m_conn.get(), "ROLLBACK"));
    (void)result;
    throw_failure();
  }
  return true;
}

bool PgConnection::finish_commit(bool wait) {
  if (m_commit_error) {
    std::rethrow_exception(std::exchange(m_commit_error, nullptr));
  }
  if (!m_committing) {
    return true;
  }
  return complete_commit(wait);
}

void PgConnection::settle() {
  if (!m_committing) {
    return;
  }
  try {
    complete_commit(true);
  } catch (const StoreError&) {
    m_commit_error = std::current_exception();
  }
}

void PgConnection::send(PgStatement& s, std::string_view what) {
  settle();
  if (!m_in_transaction) {
    execute(s, what);
    return;
  }
  if (m_pipelined.size() >= k_pipeline_depth) {
    sync_pipeline();
  }
  if (m_pipelined.empty()) {
    // Prepared before the pipeline starts (PQprepare waits for its answer).
    prepare(s, what);
    if (PQenterPipelineMode(m_conn.get()) == 0) {
      unavailable(what, one_line(PQerrorMessage(m_conn.get())));
    }
  } else if (s.prepared_on != m_generation) {
    if (PQsendPrepare(m_conn.get(), s.name.c_str(), s.text.c_str(), 0, nullptr) == 0) {
      unavailable(what, one_line(PQerrorMessage(m_conn.get())));
    }
    m_pipelined.push_back({std::string(what), &s});
    s.prepared_on = m_generation;
  }
  const auto values = parameters(s);
  if (PQsendQueryPrepared(m_conn.get(), s.name.c_str(), s.param_count, values.data(), nullptr,
                          nullptr, 0) == 0) {
    unavailable(what, one_line(PQerrorMessage(m_conn.get())));
  }
  m_pipelined.push_back({std::string(what), nullptr});
}

void PgConnection::exec(const char* sql, std::string_view what) {
  sync_pipeline();
  ensure_connected();
  const PgResult result(PQexec(m_conn.get(), sql));
  check(result.get(), what);
}

std::optional<std::string> PgConnection::query_text(const char* sql, std::string_view what) {
  sync_pipeline();
  ensure_connected();
  const PgResult result(PQexec(m_conn.get(), sql));
  check(result.get(), what);
  if (PQntuples(result.get()) == 0 || PQnfields(result.get()) == 0) {
    return std::nullopt;
  }
  return std::string(PQgetvalue(result.get(), 0, 0),
                     static_cast<std::size_t>(PQgetlength(result.get(), 0, 0)));
}

void PgConnection::begin(std::string_view what) {
  exec("BEGIN", what);
  m_in_transaction = true;
}

void PgConnection::commit(std::string_view what) {
  // A COMMIT of a failed transaction answers ROLLBACK without an error: the
  // store never commits after a failed statement (the exception skips it),
  // and the pipelined statements' failures are thrown here, before it (the
  // Transaction then rolls back).
  sync_pipeline();
  const PgResult result(PQexec(m_conn.get(), "COMMIT"));
  m_in_transaction = false;
  check(result.get(), what);
}

void PgConnection::rollback() noexcept {
  drain_pipeline();
  m_in_transaction = false;
  if (m_conn != nullptr && !m_broken && PQstatus(m_conn.get()) == CONNECTION_OK) {
    const PgResult result(PQexec(m_conn.get(), "ROLLBACK"));
    (void)result;
  }
}

PgStatement& PgConnection::statement(const char* sql) {
  auto it = m_statements.find(sql);
  if (it != m_statements.end()) {
    return *it->second;
  }
  auto s = std::make_unique<PgStatement>();
  s->name = "rrd_" + std::to_string(m_statements.size() + 1);
  s->text = postgres_parameters(sql, s->param_count);
  s->values.resize(static_cast<std::size_t>(s->param_count));
  s->nulls.assign(static_cast<std::size_t>(s->param_count), true);
  return *m_statements.emplace(sql, std::move(s)).first->second;
}

void PgConnection::prepare(PgStatement& s, std::string_view what) {
  if (m_streaming) {
    fail(what, "another statement's rows are still being read");
  }
  sync_pipeline();
  ensure_connected();
  if (s.prepared_on != m_generation) {
    const PgResult prepared(PQprepare(m_conn.get(), s.name.c_str(), s.text.c_str(), 0, nullptr));
    check(prepared.get(), what);
    s.prepared_on = m_generation;
  }
}

std::vector<const char*> PgConnection::parameters(const PgStatement& s) const {
  std::vector<const char*> values(s.values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    values[i] = s.nulls[i] ? nullptr : s.values[i].c_str();
  }
  return values;
}

void PgConnection::execute(PgStatement& s, std::string_view what) {
  prepare(s, what);
  const auto values = parameters(s);
  s.result.reset(PQexecPrepared(m_conn.get(), s.name.c_str(), s.param_count, values.data(), nullptr,
                                nullptr, 0));
  check(s.result.get(), what);
  s.rows = PQntuples(s.result.get());
  s.row = -1;
}

void PgConnection::start_streaming(PgStatement& s, std::string_view what) {
  prepare(s, what);
  const auto values = parameters(s);
  if (PQsendQueryPrepared(m_conn.get(), s.name.c_str(), s.param_count, values.data(), nullptr,
                          nullptr, 0) == 0) {
    check(nullptr, what);
  }
  m_streaming = true;
  PQsetSingleRowMode(m_conn.get());
}

bool PgConnection::next_streamed_row(PgStatement& s, std::string_view what) {
  if (!m_streaming) {
    return false;
  }
  s.result.reset(PQgetResult(m_conn.get()));
  if (s.result != nullptr && PQresultStatus(s.result.get()) == PGRES_SINGLE_TUPLE) {
    s.rows = 1;
    s.row = 0;
    return true;
  }
  // The end (PGRES_TUPLES_OK without rows) or an error: then the null
  // result that ends every query.
  PgResult last = std::move(s.result);
  finish_streaming(s);
  check(last.get(), what);
  return false;
}

void PgConnection::finish_streaming(PgStatement& s) noexcept {
  if (!m_streaming) {
    return;
  }
  m_streaming = false;
  s.result.reset();
  // What is left of an abandoned scan is read and dropped (a cancel request
  // could arrive late and cancel the next statement instead).
  if (m_conn != nullptr) {
    while (PgResult r{PQgetResult(m_conn.get())}) {
    }
  }
}

} // namespace rrd::store::detail
