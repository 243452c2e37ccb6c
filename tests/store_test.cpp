#include "fakes/postgres.hpp"
#include "fakes/process.hpp"
#include "readreceiptd/store/store.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sqlite3.h>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

using namespace rrd;
using rrd::store::Commit;
using rrd::store::FencedError;
using rrd::store::LeaseRow;
using rrd::store::PostgresOptions;
using rrd::store::Store;
using rrd::store::StoreError;
using rrd::store::StoreUnavailable;
using rrd::testing::OwnPostgres;
using rrd::testing::PgSchema;
using rrd::testing::TempDir;

namespace {

constexpr std::int64_t k_t0 = 1'764'064'800'000; // 2025-11-25T10:00:00Z

TimePoint at(std::int64_t offset_ms) {
  return from_unix_ms(k_t0 + offset_ms);
}

MessageRecord full_record(const std::string& key) {
  MessageRecord r;
  r.spec.process_query_key = key;
  r.spec.open_conversation_id = "cid6KeBBLo7EeiodoA==";
  r.spec.robot_code = "dingrobotcode";
  r.spec.expected_readers = {"user2", "user1", "用户三"};
  r.spec.expected_reader_count = 3;
  r.spec.sent_at = at(-5'000);
  r.spec.webhooks = std::vector<std::string>{"ops", "audit"};
  r.spec.labels = {{"campaign", "outage-42"}, {"quote", "a \"b\" \\ c\n"}, {"empty", ""}};
  r.source = MessageSource::api;
  r.sent_at = at(-5'000);
  r.added_at = at(0);
  r.read_user_ids = {"user2", "user1"}; // first-seen order, not sorted
  r.read_info = {{at(7'000), ReadVia::push}, {std::nullopt, ReadVia::poll}};
  r.last_sequence = 7;
  r.send_status = "SUCCESS";
  r.stopped = true;
  r.stop_reason = StopReason::invalid;
  r.stop_detail = "invalid.processQueryKey";
  r.stopped_at = at(9'000);
  r.last_poll = at(8'000);
  r.next_poll = at(60'000);
  return r;
}

MessageRecord bare_record(const std::string& key) {
  MessageRecord r;
  r.spec.process_query_key = key;
  r.sent_at = at(0);
  r.added_at = at(0);
  r.next_poll = at(0);
  return r;
}

OutboxEvent event(const std::string& key, std::int64_t sequence, const std::string& id,
                  std::int64_t created = 0) {
  OutboxEvent e;
  e.id = id;
  e.process_query_key = key;
  e.type = EventType::message_read;
  e.sequence = sequence;
  e.created_at = at(created);
  e.body = R"({"type":"message.read","data":{"sequence":)" + std::to_string(sequence) + "}}";
  return e;
}

// A commit of `key` with one event per entry of `ids`, sequences from `first`,
// each routed to `webhooks`.
Commit commit_with(const std::string& key, const std::vector<std::string>& ids,
                   const std::vector<std::string>& webhooks, std::int64_t first = 1,
                   std::int64_t created = 0) {
  Commit c;
  c.message = bare_record(key);
  c.message.last_sequence = first + static_cast<std::int64_t>(ids.size()) - 1;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    c.events.push_back(event(key, first + static_cast<std::int64_t>(i), ids[i], created));
    c.routes.push_back(webhooks);
  }
  return c;
}

// Commits of messages "k0", "k1", ..., each with one event ("evt_0", ...).
std::vector<Commit> numbered_commits(int count, const std::vector<std::string>& webhooks) {
  std::vector<Commit> out;
  for (int i = 0; i < count; ++i) {
    const std::string n = std::to_string(i);
    out.push_back(commit_with("k" + n, {"evt_" + n}, webhooks));
  }
  return out;
}

// Direct access to a database file, to look at what the store wrote.
class RawDb {
public:
  explicit RawDb(const std::string& path) {
    sqlite3* db = nullptr;
    const int rc = sqlite3_open(path.c_str(), &db);
    m_db.reset(db);
    REQUIRE(rc == SQLITE_OK);
  }
  std::string text(const std::string& sql) {
    sqlite3_stmt* raw = nullptr;
    REQUIRE(sqlite3_prepare_v2(m_db.get(), sql.c_str(), -1, &raw, nullptr) == SQLITE_OK);
    std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> stmt(raw, &sqlite3_finalize);
    REQUIRE(sqlite3_step(stmt.get()) == SQLITE_ROW);
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt.get(), 0));
    return p == nullptr ? "" : p;
  }
  void exec(const std::string& sql) {
    REQUIRE(sqlite3_exec(m_db.get(), sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
  }

private:
  struct Closer {
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
  };
  std::unique_ptr<sqlite3, Closer> m_db;
};

std::string open_error(const std::string& path) {
  try {
    Store::open(path);
  } catch (const StoreError& e) {
    return e.what();
  }
  return "";
}

std::vector<std::string> pending_ids(Store& s) {
  std::vector<std::string> out;
  for (const auto& d : s.load_pending_deliveries()) {
    out.push_back(d.event_id + "@" + d.webhook);
  }
  return out;
}

// The two backends the store's tests run on (TEST_CASE_TEMPLATE over these):
// SQLite, a file in a temporary directory; PostgreSQL, a fresh schema on the
// server RRD_TEST_POSTGRES names.
struct Sqlite {};
struct Postgres {};

template <class Backend> class TestBackend;

template <> class TestBackend<Sqlite> {
public:
  bool available() const { return true; }
  // A new Store on the same database each time (the previous one closed).
  std::unique_ptr<Store> open() { return Store::open(m_dir.file("state.db")); }

private:
  TempDir m_dir;
};

template <> class TestBackend<Postgres> {
public:
  TestBackend() {
    if (auto server = rrd::testing::test_postgres()) {
      m_schema = std::make_unique<PgSchema>(*server);
    }
  }
  bool available() const { return m_schema != nullptr; }
  std::unique_ptr<Store> open() { return Store::open_postgres(options()); }
  // `application_name` tells this Store's server process apart from the
  // others' (pg_stat_activity), for the tests that cut it off.
  PostgresOptions options(const std::string& application_name = "") const {
    PostgresOptions o;
    o.conninfo = m_schema->conninfo();
    if (!application_name.empty()) {
      o.conninfo += " application_name=" + m_schema->name() + "_" + application_name;
    }
    o.connect_timeout = std::chrono::seconds(5);
    return o;
  }
  std::string application_name(const std::string& suffix) const {
    return m_schema->name() + "_" + suffix;
  }
  // Terminates the server process of the Store opened with options(suffix):
  // how many were terminated ("1").
  std::string cut_off(const std::string& suffix) {
    return m_schema->terminate(application_name(suffix));
  }
  PgSchema& schema() { return *m_schema; }

private:
  std::unique_ptr<PgSchema> m_schema;
};

// False when the test must end here: a PostgreSQL case without a server is
// skipped with a message, except under CI=true, where it fails.
template <class Backend> bool ready(const TestBackend<Backend>& b) {
  if (b.available()) {
    return true;
  }
  if (rrd::testing::postgres_required()) {
    FAIL("CI=true, but RRD_TEST_POSTGRES is not set: the PostgreSQL store tests need a server "
         "(ctest starts one with tests/postgres/throwaway.sh)");
  }
  MESSAGE("skipped: RRD_TEST_POSTGRES is not set (a libpq connection string to a test server)");
  return false;
}

} // namespace

TYPE_TO_STRING(Sqlite);
TYPE_TO_STRING(Postgres);

TEST_CASE("open creates the directory and a WAL-mode database file") {
  TempDir dir;
  const std::string path = dir.file("state/sub/state.db");
  {
    auto s = Store::open(path);
    CHECK(std::filesystem::exists(path));
    CHECK(std::filesystem::exists(path + "-wal"));
    CHECK(s->integrity_ok());
  }
  RawDb raw(path);
  CHECK(raw.text("PRAGMA journal_mode") == "wal");
  CHECK(raw.text("PRAGMA user_version") == "4");
}

TEST_CASE("an in-memory store opens and works") {
  auto s = Store::open(":memory:");
  CHECK(s->integrity_ok());
  CHECK(s->load_messages().empty());
  CHECK(s->load_pending_deliveries().empty());
  CHECK(s->load_dead_letters().empty());
}

TEST_CASE("an empty path is refused") {
  CHECK(open_error("").find("empty") != std::string::npos);
}

TEST_CASE("reopening applies no migration twice and keeps the data") {
  TempDir dir;
  const std::string path = dir.file("state.db");
  Store::open(path)->commit(commit_with("k1", {"evt_1"}, {"ops"}));
  {
    auto s = Store::open(path);
    CHECK(s->load_message("k1").has_value());
    CHECK(s->load_pending_deliveries().size() == 1);
  }
  auto s = Store::open(path);
  CHECK(s->load_messages().size() == 1);
  s.reset();
  RawDb raw(path);
  CHECK(raw.text("PRAGMA user_version") == "4");
}

TEST_CASE("a database with a newer schema version is refused and left untouched") {
  TempDir dir;
  const std::string path = dir.file("state.db");
  {
    RawDb raw(path);
    raw.exec("CREATE TABLE future (x INTEGER); PRAGMA user_version = 99;");
  }
  const std::string error = open_error(path);
  CHECK(error.find(path) != std::string::npos);
  CHECK(error.find("schema version 99") != std::string::npos);
  CHECK(error.find("newer") != std::string::npos);
  RawDb raw(path);
  CHECK(raw.text("PRAGMA user_version") == "99");
  CHECK(raw.text("PRAGMA journal_mode") == "delete");
}

TEST_CASE("a file that is not a database is refused with the path in the error") {
  TempDir dir;
  const std::string path = dir.file("state.db");
  std::ofstream(path) << "this is not an SQLite database, just some text that is long enough";
  const std::string error = open_error(path);
  CHECK(error.find(path) != std::string::npos);
  CHECK(error.find("not a database") != std::string::npos);
}

TEST_CASE("a second open of the same database is refused while the first is open") {
  TempDir dir;
  const std::string path = dir.file("state.db");
  {
    auto first = Store::open(path);
    const std::string error = open_error(path);
    CHECK(error.find(path) != std::string::npos);
    CHECK(error.find("in use") != std::string::npos);
    // The first one is unaffected.
    first->commit(commit_with("k1", {"evt_1"}, {"ops"}));
  }
  auto again = Store::open(path);
  CHECK(again->load_message("k1").has_value());
}

TEST_CASE_TEMPLATE("a message with every field set round-trips exactly", TestType, Sqlite,
                   Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  Commit c;
  c.message = full_record("Kna29pdJznx1ghavbumkQKwDzgfxZLapw55G7x0Q=");
  s->commit(c);
  const auto loaded = s->load_message(c.message.spec.process_query_key);
  REQUIRE(loaded.has_value());
  CHECK(*loaded == c.message);
  CHECK(loaded->read_user_ids == std::vector<std::string>{"user2", "user1"});
}

TEST_CASE_TEMPLATE("a poll-state-only commit writes send_status and the poll times, nothing else",
                   TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  Commit first;
  first.message = full_record("k");
  first.message.stopped = false;
  first.message.stop_reason.reset();
  first.message.stop_detail.clear();
  first.message.stopped_at.reset();
  s->commit(first);

  Commit poll;
  poll.message = first.message;
  poll.message.send_status = "READING";
  poll.message.last_poll = at(70'000);
  poll.message.next_poll = at(85'000);
  poll.poll_state_only = true;
  s->commit(poll);
  CHECK(s->load_message("k") == poll.message);

  // The writer's promise is what counts: other fields are not written.
  Commit lying = poll;
  lying.message.read_user_ids.push_back("user3");
  lying.message.next_poll = at(99'000);
  s->commit(lying);
  const auto loaded = s->load_message("k");
  REQUIRE(loaded.has_value());
  CHECK(loaded->next_poll == at(99'000));
  CHECK(loaded->read_user_ids == std::vector<std::string>{"user2", "user1"});

  // A message not stored yet is written whole.
  Commit fresh;
  fresh.message = full_record("new");
  fresh.poll_state_only = true;
  s->commit(fresh);
  CHECK(s->load_message("new") == fresh.message);
}

TEST_CASE_TEMPLATE("in one commit_all a message's rows are written in order: the last one stays",
                   TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  const auto whole = [](const std::string& key, const std::string& status, std::int64_t poll) {
    Commit c;
    c.message = full_record(key);
    c.message.send_status = status;
    c.message.next_poll = at(poll);
    return c;
  };
  const auto poll_state = [](Commit c, const std::string& status, std::int64_t poll) {
    c.message.send_status = status;
    c.message.next_poll = at(poll);
    c.message.read_user_ids.push_back("not written");
    c.poll_state_only = true;
    return c;
  };
  // a: twice whole; b: whole, its poll state, whole again; c: whole, then
  // its poll state; d: a poll state before it is stored (so written
  // whole), then whole again.
  const Commit a2 = whole("a", "a2", 2);
  const Commit b3 = whole("b", "b3", 3);
  const Commit c1 = whole("c", "c1", 1);
  std::vector<Commit> batch{whole("a", "a1", 1),
                            whole("b", "b1", 1),
                            c1,
                            a2,
                            poll_state(whole("b", "", 0), "b2", 2),
                            poll_state(whole("d", "", 0), "d1", 1),
                            b3,
                            poll_state(c1, "c2", 2),
                            whole("d", "d2", 2)};
  s->commit_all(batch);
  CHECK(s->load_message("a") == a2.message);
  CHECK(s->load_message("b") == b3.message);
  const auto c = s->load_message("c");
  REQUIRE(c.has_value());
  CHECK(c->send_status == "c2");
  CHECK(c->next_poll == at(2));
  CHECK(c->read_user_ids == c1.message.read_user_ids);
  CHECK(s->load_message("d") == batch.back().message);
  CHECK(s->load_messages().size() == 4);
}

TEST_CASE_TEMPLATE("a message with every optional empty round-trips exactly", TestType, Sqlite,
                   Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  Commit c;
  c.message = bare_record("k");
  s->commit(c);
  const auto loaded = s->load_message("k");
  REQUIRE(loaded.has_value());
  CHECK(*loaded == c.message);
  CHECK_FALSE(loaded->spec.webhooks.has_value());
  CHECK_FALSE(loaded->spec.sent_at.has_value());
  CHECK_FALSE(loaded->spec.expected_reader_count.has_value());
  CHECK_FALSE(loaded->stop_reason.has_value());
  CHECK_FALSE(loaded->last_poll.has_value());
}

TEST_CASE_TEMPLATE("an empty webhooks list is kept apart from 'every webhook'", TestType, Sqlite,
                   Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  Commit c;
  c.message = bare_record("k");
  c.message.spec.webhooks = std::vector<std::string>{};
  s->commit(c);
  const auto loaded = s->load_message("k");
  REQUIRE(loaded.has_value());
  REQUIRE(loaded->spec.webhooks.has_value());
  CHECK(loaded->spec.webhooks->empty());
}

TEST_CASE_TEMPLATE("committing a message again replaces its state", TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  Commit c;
  c.message = full_record("k");
  s->commit(c);
  c.message = bare_record("k");
  c.message.read_user_ids = {"u9"};
  c.message.read_info = {{std::nullopt, ReadVia::poll}};
  s->commit(c);
  CHECK(s->load_message("k") == c.message);
  CHECK(s->load_messages().size() == 1);
  CHECK_FALSE(s->load_message("other").has_value());
}

TEST_CASE_TEMPLATE("load_messages returns every message", TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  for (const char* key : {"b", "a", "c"}) {
    Commit c;
    c.message = bare_record(key);
    s->commit(c);
  }
  const auto all = s->load_messages();
  REQUIRE(all.size() == 3);
  CHECK(all[0].spec.process_query_key == "a");
  CHECK(all[1].spec.process_query_key == "b");
  CHECK(all[2].spec.process_query_key == "c");
}

TEST_CASE_TEMPLATE("visit_messages hands over every message once, as load_messages reads it",
                   TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  CHECK(s->message_count() == 0);
  int visits = 0;
  s->visit_messages([&visits](MessageRecord&) { ++visits; });
  CHECK(visits == 0);

  MessageRecord read = bare_record("c");
  read.read_user_ids = {"x", "y"};
  read.read_info = {{at(2'000), ReadVia::push}, {std::nullopt, ReadVia::poll}};
  for (const MessageRecord& r : {full_record("b"), bare_record("a"), read}) {
    Commit c;
    c.message = r;
    s->commit(c);
  }
  CHECK(s->message_count() == 3);
  std::map<std::string, MessageRecord> visited;
  s->visit_messages([&visited](MessageRecord& r) {
    const std::string key = r.spec.process_query_key;
    CHECK(visited.count(key) == 0);
    visited.emplace(key, std::move(r)); // the visitor may move from the record
  });
  const auto loaded = s->load_messages();
  REQUIRE(visited.size() == loaded.size());
  for (const auto& m : loaded) {
    CAPTURE(m.spec.process_query_key);
    REQUIRE(visited.count(m.spec.process_query_key) == 1);
    CHECK(visited.at(m.spec.process_query_key) == m);
  }
}

TEST_CASE("empty JSON columns read as empty, however they are spelled, and bad ones still fail") {
  TempDir dir;
  const std::string path = (std::filesystem::path(dir.path()) / "state.db").string();
  {
    auto s = Store::open(path);
    Commit c;
    c.message = bare_record("k");
    c.message.read_user_ids = {"a", "b"};
    s->commit(c);
  }
  const auto reads_back = [&path] {
    auto s = Store::open(path);
    auto m = s->load_message("k");
    REQUIRE(m);
    std::vector<MessageRecord> visited;
    s->visit_messages([&visited](MessageRecord& r) { visited.push_back(std::move(r)); });
    REQUIRE(visited.size() == 1);
    CHECK(visited[0] == *m);
    return *m;
  };
  // A row from before read times were kept: '[]', padded to a poll of unknown
  // time per reader.
  RawDb(path).exec("UPDATE messages SET read_info = '[]', labels = '{}', "
                   "expected_readers = '[]'");
  MessageRecord m = reads_back();
  CHECK(m.read_info == std::vector<ReadInfo>(2, ReadInfo{std::nullopt, ReadVia::poll}));
  CHECK(m.spec.labels.empty());
  CHECK(m.spec.expected_readers.empty());
  // The same, spelled with spaces: parsed, with the same result.
  RawDb(path).exec("UPDATE messages SET read_info = ' [ ] ', labels = ' { } ', "
                   "expected_readers = '[ ]'");
  CHECK(reads_back() == m);
  // Not a list of strings: an error naming the message and the field.
  RawDb(path).exec("UPDATE messages SET expected_readers = '[1]'");
  auto s = Store::open(path);
  CHECK_THROWS_WITH_AS(s->load_messages(), doctest::Contains("message k: stored expected_readers"),
                       StoreError);
  CHECK_THROWS_WITH_AS(s->visit_messages([](MessageRecord&) {}),
                       doctest::Contains("message k: stored expected_readers"), StoreError);
}

TEST_CASE_TEMPLATE("a commit creates one pending delivery per route, ordered by message, webhook, "
                   "sequence",
                   TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  Commit c = commit_with("k2", {"evt_c", "evt_a"}, {"ops", "audit"}, 1, 100);
  c.routes[0] = {"ops"}; // the first event goes to one webhook only
  c.events[1].type = EventType::tracking_stopped;
  s->commit(c);
  s->commit(commit_with("k1", {"evt_z"}, {"ops"}, 1, 50));
  // Webhook before sequence: evt_a (sequence 2) to audit comes before evt_c
  // (sequence 1) to ops; ids play no part.
  CHECK(pending_ids(*s) ==
        std::vector<std::string>{"evt_z@ops", "evt_a@audit", "evt_c@ops", "evt_a@ops"});

  const auto pending = s->load_pending_deliveries();
  const Delivery& d = pending.back();
  CHECK(d.event_id == "evt_a");
  CHECK(d.webhook == "ops");
  CHECK(d.process_query_key == "k2");
  CHECK(d.type == EventType::tracking_stopped);
  CHECK(d.sequence == 2);
  CHECK(d.body == c.events[1].body);
  CHECK(d.state == DeliveryState::pending);
  CHECK(d.attempts == 0);
  CHECK(d.next_attempt == at(100));
  CHECK(d.last_error.empty());
}

TEST_CASE_TEMPLATE("sequence order holds past nine events", TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  std::vector<std::string> ids;
  for (int i = 12; i >= 1; --i) {
    ids.push_back("evt_" + std::to_string(100 - i));
  }
  s->commit(commit_with("k", ids, {"ops"}));
  const auto pending = s->load_pending_deliveries();
  REQUIRE(pending.size() == 12);
  for (std::size_t i = 0; i < pending.size(); ++i) {
    CHECK(pending[i].sequence == static_cast<std::int64_t>(i + 1));
  }
}

TEST_CASE_TEMPLATE("a commit with a duplicate event id writes nothing", TestType, Sqlite,
                   Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  Commit c = commit_with("k", {"evt_1", "evt_1"}, {"ops"});
  CHECK_THROWS_AS(s->commit(c), StoreError);
  CHECK_FALSE(s->load_message("k").has_value());
  CHECK(s->load_pending_deliveries().empty());
  // The store is still usable after the rollback.
  s->commit(commit_with("k", {"evt_1"}, {"ops"}));
  CHECK(pending_ids(*s) == std::vector<std::string>{"evt_1@ops"});
}

TEST_CASE_TEMPLATE("an event id already stored is an error and leaves the message unchanged",
                   TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  s->commit(commit_with("k", {"evt_1"}, {"ops"}));
  const auto before = s->load_message("k");
  Commit again = commit_with("k", {"evt_1"}, {"ops"}, 2);
  again.message.read_user_ids = {"changed"};
  try {
    s->commit(again);
    FAIL("a duplicate event id was accepted");
  } catch (const StoreError& e) {
    // Each backend names the constraint its own way.
    CHECK(std::string(e.what()).find(s->is_postgres() ? "events_pkey" : "events.id") !=
          std::string::npos);
  }
  CHECK(s->load_message("k") == before);
  CHECK(s->load_pending_deliveries().size() == 1);
}

TEST_CASE_TEMPLATE("a sequence number used twice for one message is an error", TestType, Sqlite,
                   Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  s->commit(commit_with("k", {"evt_1"}, {"ops"}));
  CHECK_THROWS_AS(s->commit(commit_with("k", {"evt_2"}, {"ops"}, 1)), StoreError);
  // Another message may use the same sequence.
  s->commit(commit_with("other", {"evt_3"}, {"ops"}, 1));
}

TEST_CASE_TEMPLATE("a malformed commit is refused before anything is written", TestType, Sqlite,
                   Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  Commit missing_routes = commit_with("k", {"evt_1"}, {"ops"});
  missing_routes.routes.clear();
  CHECK_THROWS_AS(s->commit(missing_routes), StoreError);

  Commit foreign = commit_with("k", {"evt_1"}, {"ops"});
  foreign.events[0].process_query_key = "someone-else";
  CHECK_THROWS_AS(s->commit(foreign), StoreError);

  Commit twice_to_one = commit_with("k", {"evt_1"}, {"ops", "ops"});
  CHECK_THROWS_AS(s->commit(twice_to_one), StoreError);

  CHECK(s->load_messages().empty());
  CHECK(s->load_pending_deliveries().empty());
}

TEST_CASE_TEMPLATE("commit_all is all or nothing", TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  std::vector<Commit> batch{commit_with("a", {"evt_a"}, {"ops"}),
                            commit_with("b", {"evt_b"}, {"ops"}),
                            commit_with("c", {"evt_a"}, {"ops"})}; // duplicate id
  CHECK_THROWS_AS(s->commit_all(batch), StoreError);
  CHECK(s->load_messages().empty());
  CHECK(s->load_pending_deliveries().empty());

  batch[2] = commit_with("c", {"evt_c"}, {"ops"});
  s->commit_all(batch);
  CHECK(s->load_messages().size() == 3);
  CHECK(pending_ids(*s) == std::vector<std::string>{"evt_a@ops", "evt_b@ops", "evt_c@ops"});
}

TEST_CASE_TEMPLATE("a commit batch keeps every byte of its events' and deliveries' text", TestType,
                   Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  // What an array literal could misread: quotes, backslashes, braces,
  // commas, the word NULL, the empty text, spaces at either end, non-ASCII.
  const std::vector<std::string> texts{R"({"a":"say \"hi\"","b":[1,2]})",
                                       "\\",
                                       "\"",
                                       "NULL",
                                       "",
                                       " spaced ",
                                       "{}",
                                       "a,b",
                                       "日本語 ✓",
                                       "{\"unclosed",
                                       "line\nbreak\ttab"};
  std::vector<Commit> batch;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const std::string key = "k{" + std::to_string(i) + "},\"";
    Commit c = commit_with(key, {"evt_\"" + std::to_string(i) + "\\"},
                           {"ops", "name, with \\ and \"" + texts[i] + "\""},
                           static_cast<std::int64_t>(i) + 1, static_cast<std::int64_t>(i) * 1000);
    c.events[0].body = texts[i];
    batch.push_back(std::move(c));
  }
  s->commit_all(batch);
  const auto pending = s->load_pending_deliveries();
  REQUIRE(pending.size() == 2 * texts.size());
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const std::string id = "evt_\"" + std::to_string(i) + "\\";
    std::vector<std::string> webhooks;
    for (const Delivery& d : pending) {
      if (d.event_id != id) {
        continue;
      }
      CAPTURE(i);
      CHECK(d.body == texts[i]);
      CHECK(d.process_query_key == "k{" + std::to_string(i) + "},\"");
      CHECK(d.sequence == static_cast<std::int64_t>(i) + 1);
      CHECK(d.next_attempt == at(static_cast<std::int64_t>(i) * 1000));
      webhooks.push_back(d.webhook);
    }
    std::sort(webhooks.begin(), webhooks.end());
    CHECK(webhooks == std::vector<std::string>{"name, with \\ and \"" + texts[i] + "\"", "ops"});
  }
}

TEST_CASE_TEMPLATE("begin_commit_all commits once finish_commit says so, or a call after it waits",
                   TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  std::vector<double> observed;
  s->set_commit_observer([&observed](double seconds) { observed.push_back(seconds); });
  CHECK(s->finish_commit(false)); // none begun

  s->begin_commit_all({commit_with("a", {"evt_a"}, {"ops"}), commit_with("b", {"evt_b"}, {"ops"})});
  CHECK_THROWS_WITH_AS(s->begin_commit_all({commit_with("c", {"evt_c"}, {"ops"})}),
                       doctest::Contains("has not been finished"), StoreError);
  CHECK(s->finish_commit(true));
  CHECK(observed.size() == 1);
  CHECK(pending_ids(*s) == std::vector<std::string>{"evt_a@ops", "evt_b@ops"});

  // Another call before finish_commit: it comes after the commit.
  s->begin_commit_all({commit_with("c", {"evt_c"}, {"ops"})});
  CHECK(s->load_message("c").has_value());
  CHECK(s->finish_commit(false));
  CHECK(observed.size() == 2);
  CHECK(s->finish_commit(false));
}

TEST_CASE_TEMPLATE("a commit begun that fails writes nothing, says so once, and the store goes on",
                   TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  s->commit(commit_with("first", {"evt_first"}, {"ops"}));
  std::vector<Commit> batch = numbered_commits(200, {"ops"});
  batch[150].events[0].id = "evt_first";
  // SQLite commits at once, so its failure comes from begin_commit_all().
  const auto begin_and_finish = [&s](const std::vector<Commit>& commits, bool wait) {
    s->begin_commit_all(commits);
    return s->finish_commit(wait);
  };
  CHECK_THROWS_WITH_AS(begin_and_finish(batch, true), doctest::Contains("cannot write event"),
                       StoreError);
  CHECK(s->finish_commit(false));
  CHECK(s->load_messages().size() == 1);

  // The failure read by another call is still told by finish_commit().
  bool begun = false;
  try {
    s->begin_commit_all(batch);
    begun = true;
  } catch (const StoreError&) {
    CHECK_FALSE(s->is_postgres());
  }
  if (begun) {
    CHECK(s->load_messages().size() == 1);
    CHECK_THROWS_WITH_AS(s->finish_commit(false), doctest::Contains("cannot write event"),
                         StoreError);
  }
  CHECK(pending_ids(*s) == std::vector<std::string>{"evt_first@ops"});

  batch[150].events[0].id = "evt_150";
  CHECK(begin_and_finish(batch, true));
  CHECK(s->load_messages().size() == 201);
  CHECK(s->integrity_ok());
}

TEST_CASE_TEMPLATE("postgres: a commit in flight is not finished while the server has not answered",
                   TestType, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  s->commit(commit_with("first", {"evt_first"}, {"ops"}));
  // Another session holds the events table: the commit's insert waits.
  b.schema().exec("BEGIN; LOCK TABLE events IN EXCLUSIVE MODE");
  s->begin_commit_all({commit_with("k", {"evt_k"}, {"ops"})});
  for (int i = 0; i < 20; ++i) {
    CHECK_FALSE(s->finish_commit(false));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  b.schema().exec("COMMIT");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!s->finish_commit(false) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  CHECK(s->finish_commit(false));
  CHECK(pending_ids(*s) == std::vector<std::string>{"evt_first@ops", "evt_k@ops"});
}

TEST_CASE_TEMPLATE("postgres: a commit in flight cut off is StoreUnavailable, and nothing of it "
                   "is written",
                   TestType, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = Store::open_postgres(b.options("cut"));
  s->commit(commit_with("first", {"evt_first"}, {"ops"}));
  b.schema().exec("BEGIN; LOCK TABLE events IN EXCLUSIVE MODE");
  s->begin_commit_all({commit_with("k", {"evt_k"}, {"ops"})});
  CHECK_FALSE(s->finish_commit(false));
  REQUIRE(b.cut_off("cut") == "1");
  b.schema().exec("COMMIT");
  CHECK_THROWS_AS(s->finish_commit(true), StoreUnavailable);
  CHECK(s->take_trouble() == Store::Trouble::unavailable);
  CHECK(s->finish_commit(false));
  CHECK_FALSE(s->load_message("k"));
  CHECK(pending_ids(*s) == std::vector<std::string>{"evt_first@ops"});
  s->begin_commit_all({commit_with("k", {"evt_k"}, {"ops"})});
  CHECK(s->finish_commit(true));
  CHECK(pending_ids(*s) == std::vector<std::string>{"evt_first@ops", "evt_k@ops"});
}

TEST_CASE_TEMPLATE("commit_all writes a thousand commits", TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  std::vector<Commit> batch;
  for (int i = 0; i < 1000; ++i) {
    const std::string n = std::to_string(i);
    batch.push_back(commit_with("key" + n, {"evt_" + n}, {"ops", "audit"}));
  }
  s->commit_all(batch);
  CHECK(s->load_messages().size() == 1000);
  CHECK(s->load_pending_deliveries().size() == 2000);
  CHECK(s->integrity_ok());
}

TEST_CASE_TEMPLATE("mark_delivered, mark_retry and mark_dead move a delivery through its states",
                   TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  s->commit(commit_with("k", {"evt_1", "evt_2"}, {"ops", "audit"}));

  s->mark_retry("evt_1", "ops", 1, at(5'000), "HTTP 500");
  auto pending = s->load_pending_deliveries();
  REQUIRE(pending.size() == 4);
  const auto retried = std::find_if(pending.begin(), pending.end(), [](const Delivery& d) {
    return d.event_id == "evt_1" && d.webhook == "ops";
  });
  REQUIRE(retried != pending.end());
  CHECK(retried->state == DeliveryState::pending);
  CHECK(retried->attempts == 1);
  CHECK(retried->next_attempt == at(5'000));
  CHECK(retried->last_error == "HTTP 500");

  s->mark_delivered("evt_1", "audit");
  s->mark_dead("evt_1", "ops", 10, at(99'000), "timeout");
  CHECK(pending_ids(*s) == std::vector<std::string>{"evt_2@audit", "evt_2@ops"});

  const auto dead = s->load_dead_letters();
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].delivery.event_id == "evt_1");
  CHECK(dead[0].delivery.webhook == "ops");
  CHECK(dead[0].delivery.state == DeliveryState::dead);
  CHECK(dead[0].delivery.attempts == 10);
  CHECK(dead[0].delivery.last_error == "timeout");
  CHECK(dead[0].delivery.process_query_key == "k");
  CHECK(dead[0].delivery.sequence == 1);
  CHECK(dead[0].died_at == at(99'000));
}

TEST_CASE_TEMPLATE("mark_delivered_all marks several deliveries at once and skips unknown ones",
                   TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  s->commit(commit_with("k", {"evt_1", "evt_2"}, {"ops", "audit"}));
  s->mark_delivered_all({});
  CHECK(pending_ids(*s) ==
        std::vector<std::string>{"evt_1@audit", "evt_2@audit", "evt_1@ops", "evt_2@ops"});
  // evt_9 is not stored: skipped, no error, the others marked.
  s->mark_delivered_all({{"evt_1", "ops"}, {"evt_2", "audit"}, {"evt_9", "ops"}});
  CHECK(pending_ids(*s) == std::vector<std::string>{"evt_1@audit", "evt_2@ops"});
  s->mark_delivered_all({{"evt_1", "ops"}}); // already delivered: still no error
  CHECK(pending_ids(*s) == std::vector<std::string>{"evt_1@audit", "evt_2@ops"});
  // Many at once (pipelined on PostgreSQL), then a synced write after them.
  std::vector<Commit> more;
  std::vector<std::pair<std::string, std::string>> marks;
  for (int i = 0; i < 300; ++i) {
    const std::string id = "evt_m" + std::to_string(i);
    more.push_back(commit_with("m" + std::to_string(i), {id}, {"ops"}));
    marks.emplace_back(id, "ops");
  }
  s->commit_all(more);
  s->mark_delivered_all(marks);
  CHECK(pending_ids(*s) == std::vector<std::string>{"evt_1@audit", "evt_2@ops"});
  s->commit(commit_with("after", {"evt_after"}, {"ops"}));
  CHECK(pending_ids(*s) == std::vector<std::string>{"evt_after@ops", "evt_1@audit", "evt_2@ops"});
}

TEST_CASE_TEMPLATE("marking a delivery that does not exist is an error", TestType, Sqlite,
                   Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  s->commit(commit_with("k", {"evt_1"}, {"ops"}));
  CHECK_THROWS_AS(s->mark_delivered("evt_1", "nope"), StoreError);
  CHECK_THROWS_AS(s->mark_retry("evt_9", "ops", 1, at(0), "x"), StoreError);
  CHECK_THROWS_AS(s->mark_dead("evt_9", "ops", 1, at(0), "x"), StoreError);
  CHECK(s->load_pending_deliveries().size() == 1);
}

TEST_CASE_TEMPLATE("replay_dead requeues every dead delivery of an event with attempts reset",
                   TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  s->commit(commit_with("k", {"evt_1", "evt_2"}, {"ops", "audit"}));
  s->mark_dead("evt_1", "ops", 10, at(1'000), "HTTP 500");
  s->mark_dead("evt_1", "audit", 10, at(2'000), "timeout");
  s->mark_dead("evt_2", "ops", 10, at(3'000), "HTTP 502");
  s->mark_delivered("evt_2", "audit");
  CHECK(s->load_dead_letters().size() == 3);

  CHECK(s->replay_dead("evt_1", at(50'000)) == 2);
  const auto dead = s->load_dead_letters();
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].delivery.event_id == "evt_2");

  const auto pending = s->load_pending_deliveries();
  REQUIRE(pending.size() == 2);
  for (const auto& d : pending) {
    CHECK(d.event_id == "evt_1");
    CHECK(d.attempts == 0);
    CHECK(d.next_attempt == at(50'000));
    CHECK(d.last_error.empty());
  }
  CHECK(s->replay_dead("evt_1", at(60'000)) == 0); // nothing dead left
  CHECK(s->replay_dead("evt_unknown", at(60'000)) == 0);
}

TEST_CASE_TEMPLATE("count_dead_by_webhook counts dead deliveries per webhook, and replay lowers it",
                   TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  CHECK(s->count_dead_by_webhook().empty());
  s->commit(commit_with("k", {"evt_1", "evt_2", "evt_3"}, {"ops", "audit"}));
  s->mark_dead("evt_1", "ops", 10, at(1'000), "HTTP 500");
  s->mark_dead("evt_2", "ops", 10, at(2'000), "timeout");
  s->mark_dead("evt_2", "audit", 10, at(2'000), "timeout");
  s->mark_delivered("evt_3", "ops");
  const std::map<std::string, std::int64_t> expected{{"audit", 1}, {"ops", 2}};
  CHECK(s->count_dead_by_webhook() == expected);

  s->replay_dead("evt_2", at(3'000));
  const std::map<std::string, std::int64_t> after{{"ops", 1}};
  CHECK(s->count_dead_by_webhook() == after);
}

TEST_CASE_TEMPLATE("a standby's reads: messages counted, paged by key, pending counted per webhook",
                   TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  CHECK(s->count_messages() == store::MessageCounts{0, 0});
  CHECK(s->load_messages_after("", 10).empty());
  CHECK(s->count_pending_by_webhook().empty());
  // Keys that sort differently by byte and by a locale's rules.
  for (const char* key : {"b", "B", "a", "a-2", "a_1", "c"}) {
    s->commit(commit_with(key, {std::string("evt_") + key}, {"ops"}));
  }
  MessageRecord stopped = full_record("z");
  stopped.stopped = true;
  stopped.stop_reason = StopReason::fully_read;
  s->commit(Commit{stopped, {}, {}});
  CHECK(s->count_messages() == store::MessageCounts{6, 1});

  std::vector<std::string> keys;
  std::string cursor;
  for (;;) {
    const auto page = s->load_messages_after(cursor, 3);
    for (const auto& m : page) {
      keys.push_back(m.spec.process_query_key);
    }
    if (page.size() < 3) {
      break;
    }
    cursor = page.back().spec.process_query_key;
  }
  CHECK(keys == std::vector<std::string>{"B", "a", "a-2", "a_1", "b", "c", "z"});
  const auto one = s->load_messages_after("a_1", 1);
  REQUIRE(one.size() == 1);
  CHECK(one[0] == *s->load_message("b"));

  s->commit(commit_with("d", {"evt_d"}, {"ops", "audit"}));
  s->mark_delivered("evt_a", "ops");
  s->mark_dead("evt_b", "ops", 10, at(1'000), "HTTP 500");
  const std::map<std::string, std::int64_t> expected{{"audit", 1}, {"ops", 5}};
  CHECK(s->count_pending_by_webhook() == expected);
}

TEST_CASE_TEMPLATE("load_message_events lists one message's events in sequence order with each "
                   "delivery's state, a page at a time",
                   TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  // Sequences past nine, to catch an order by text.
  std::vector<std::string> ids;
  for (int i = 1; i <= 11; ++i) {
    ids.push_back("evt_" + std::to_string(100 + i));
  }
  s->commit(commit_with("k", ids, {"ops", "audit"}, 1, 500));
  s->commit(commit_with("other", {"evt_other"}, {"ops"}));
  Commit unrouted = commit_with("k", {"evt_unrouted"}, {}, 12, 900);
  unrouted.events[0].type = EventType::tracking_stopped;
  s->commit(unrouted);
  s->mark_delivered("evt_101", "ops");
  s->mark_retry("evt_101", "audit", 2, at(30'000), "HTTP 503");
  s->mark_dead("evt_102", "ops", 10, at(40'000), "timeout");

  const auto all = s->load_message_events("k", 0, 100);
  REQUIRE(all.size() == 12);
  for (std::size_t i = 0; i < all.size(); ++i) {
    CHECK(all[i].sequence == static_cast<std::int64_t>(i + 1));
  }
  CHECK(all[0].id == "evt_101");
  CHECK(all[0].type == EventType::message_read);
  CHECK(all[0].created_at == at(500));
  REQUIRE(all[0].deliveries.size() == 2);
  // In webhook order.
  CHECK(all[0].deliveries[0].webhook == "audit");
  CHECK(all[0].deliveries[0].state == DeliveryState::pending);
  CHECK(all[0].deliveries[0].attempts == 2);
  CHECK(all[0].deliveries[0].next_attempt == at(30'000));
  CHECK(all[0].deliveries[0].last_error == "HTTP 503");
  CHECK_FALSE(all[0].deliveries[0].died_at.has_value());
  CHECK(all[0].deliveries[1].webhook == "ops");
  CHECK(all[0].deliveries[1].state == DeliveryState::delivered);
  REQUIRE(all[1].deliveries.size() == 2);
  CHECK(all[1].deliveries[1].state == DeliveryState::dead);
  CHECK(all[1].deliveries[1].attempts == 10);
  CHECK(all[1].deliveries[1].died_at == at(40'000));
  CHECK(all[1].deliveries[1].last_error == "timeout");
  CHECK(all[11].id == "evt_unrouted");
  CHECK(all[11].type == EventType::tracking_stopped);
  CHECK(all[11].deliveries.empty());

  // A page: after sequence 9, at most 2.
  const auto page = s->load_message_events("k", 9, 2);
  REQUIRE(page.size() == 2);
  CHECK(page[0].sequence == 10);
  CHECK(page[1].sequence == 11);
  CHECK(page[0] == all[9]);
  CHECK(s->load_message_events("k", 12, 10).empty());
  CHECK(s->load_message_events("k", 0, 0).empty());
  CHECK(s->load_message_events("unknown", 0, 10).empty());
  REQUIRE(s->load_message_events("other", 0, 10).size() == 1);
}

TEST_CASE_TEMPLATE("dead letters are listed in the order they died", TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  s->commit(commit_with("k", {"evt_1", "evt_2"}, {"ops"}));
  s->mark_dead("evt_2", "ops", 10, at(1'000), "late");
  s->mark_dead("evt_1", "ops", 10, at(2'000), "later");
  const auto dead = s->load_dead_letters();
  REQUIRE(dead.size() == 2);
  CHECK(dead[0].delivery.event_id == "evt_2");
  CHECK(dead[1].delivery.event_id == "evt_1");
}

TEST_CASE_TEMPLATE("prune deletes old events whose deliveries are all done, and nothing else",
                   TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  // evt_old_done: old, delivered everywhere -> pruned
  // evt_old_pending: old, one delivery still pending -> kept
  // evt_old_dead: old, one delivery dead -> kept (can still be replayed)
  // evt_new_done: delivered but newer than the cut-off -> kept
  // evt_old_unrouted: old, routed nowhere -> pruned
  s->commit(commit_with("k", {"evt_old_done", "evt_old_pending", "evt_old_dead"}, {"ops", "audit"},
                        1, 0));
  Commit unrouted = commit_with("k", {"evt_old_unrouted"}, {}, 4, 0);
  s->commit(unrouted);
  s->commit(commit_with("k", {"evt_new_done"}, {"ops"}, 5, 10'000));
  for (const char* w : {"ops", "audit"}) {
    s->mark_delivered("evt_old_done", w);
  }
  s->mark_delivered("evt_old_pending", "ops");
  s->mark_delivered("evt_old_dead", "ops");
  s->mark_dead("evt_old_dead", "audit", 10, at(500), "HTTP 500");
  s->mark_delivered("evt_new_done", "ops");

  CHECK(s->prune_delivered(at(5'000)) == 2);
  CHECK(pending_ids(*s) == std::vector<std::string>{"evt_old_pending@audit"});
  REQUIRE(s->load_dead_letters().size() == 1);
  CHECK(s->prune_delivered(at(5'000)) == 0);

  // Once the rest is delivered, the remaining old events go too.
  s->mark_delivered("evt_old_pending", "audit");
  CHECK(s->replay_dead("evt_old_dead", at(6'000)) == 1);
  s->mark_delivered("evt_old_dead", "audit");
  CHECK(s->prune_delivered(at(5'000)) == 2);
  CHECK(s->prune_delivered(at(20'000)) == 1); // evt_new_done
  // The message itself is never pruned, and keeps its sequence.
  const auto m = s->load_message("k");
  REQUIRE(m.has_value());
  CHECK(m->last_sequence == 5);
  CHECK(s->integrity_ok());
}

TEST_CASE_TEMPLATE("a pruned event's id can be neither replayed nor marked", TestType, Sqlite,
                   Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  s->commit(commit_with("k", {"evt_1"}, {"ops"}));
  s->mark_delivered("evt_1", "ops");
  CHECK(s->prune_delivered(at(1)) == 1);
  CHECK(s->replay_dead("evt_1", at(2)) == 0);
  CHECK_THROWS_AS(s->mark_delivered("evt_1", "ops"), StoreError);
}

TEST_CASE_TEMPLATE("webhooks can be disabled under a fingerprint and enabled again", TestType,
                   Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  CHECK_FALSE(s->webhook_disabled_fingerprint("ops").has_value());
  s->set_webhook_disabled("ops", "fp1", at(0), "HTTP 410");
  CHECK(s->webhook_disabled_fingerprint("ops") == "fp1");
  CHECK_FALSE(s->webhook_disabled_fingerprint("audit").has_value());
  s->set_webhook_disabled("ops", "fp2", at(1'000), "HTTP 410 again");
  CHECK(s->webhook_disabled_fingerprint("ops") == "fp2");
  s->clear_webhook_disabled("ops");
  CHECK_FALSE(s->webhook_disabled_fingerprint("ops").has_value());
  s->clear_webhook_disabled("never-disabled"); // not an error
}

TEST_CASE_TEMPLATE("everything survives closing and reopening the database", TestType, Sqlite,
                   Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  Commit c = commit_with("k", {"evt_1", "evt_2", "evt_3"}, {"ops"});
  c.message = full_record("k");
  c.message.last_sequence = 3;
  {
    auto s = b.open();
    s->commit(c);
    s->mark_delivered("evt_1", "ops");
    s->mark_retry("evt_2", "ops", 2, at(7'000), "HTTP 503");
    s->mark_dead("evt_3", "ops", 10, at(8'000), "HTTP 400");
    s->set_webhook_disabled("audit", "fp", at(0), "HTTP 410");
  }
  auto s = b.open();
  CHECK(s->load_message("k") == c.message);
  const auto pending = s->load_pending_deliveries();
  REQUIRE(pending.size() == 1);
  CHECK(pending[0].event_id == "evt_2");
  CHECK(pending[0].attempts == 2);
  CHECK(pending[0].next_attempt == at(7'000));
  CHECK(pending[0].last_error == "HTTP 503");
  const auto dead = s->load_dead_letters();
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].delivery.event_id == "evt_3");
  CHECK(dead[0].died_at == at(8'000));
  CHECK(s->webhook_disabled_fingerprint("audit") == "fp");
  CHECK(s->integrity_ok());
}

TEST_CASE_TEMPLATE("a label that is not valid UTF-8 is refused and nothing is written", TestType,
                   Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  Commit c = commit_with("k", {"evt_1"}, {"ops"});
  c.message.spec.labels["bad"] = std::string("\xff\xfe", 2);
  try {
    s->commit(c);
    FAIL("invalid UTF-8 was accepted");
  } catch (const StoreError& e) {
    CHECK(std::string(e.what()).find("labels") != std::string::npos);
  }
  CHECK(s->load_messages().empty());
  CHECK(s->load_pending_deliveries().empty());
}

TEST_CASE("a refused open releases the lock") {
  TempDir dir;
  const std::string path = dir.file("state.db");
  {
    RawDb raw(path);
    raw.exec("PRAGMA user_version = 99;");
  }
  CHECK(open_error(path).find("newer") != std::string::npos);
  // Refused for its version again, not because the lock is still held.
  CHECK(open_error(path).find("newer") != std::string::npos);
}

TEST_CASE_TEMPLATE(
    "read times and via round-trip, and a row without them reads as polls of unknown time",
    TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  Commit c;
  c.message = bare_record("k");
  c.message.read_user_ids = {"a", "b", "c"};
  c.message.read_info = {{at(1'000), ReadVia::push}, {std::nullopt, ReadVia::push}};
  s->commit(c); // one short: written as polls of unknown time
  const auto loaded = s->load_message("k");
  REQUIRE(loaded);
  CHECK(loaded->read_info == std::vector<ReadInfo>{{at(1'000), ReadVia::push},
                                                   {std::nullopt, ReadVia::push},
                                                   {std::nullopt, ReadVia::poll}});
}

TEST_CASE_TEMPLATE("the month's call count is kept per month and survives reopening", TestType,
                   Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  {
    auto s = b.open();
    CHECK_FALSE(s->load_month("2026-12"));
    s->save_month({"2026-12", 40, 3, false});
    s->save_month({"2026-12", 50, 4, true});
    s->save_month({"2027-01", 1, 1, false});
  }
  auto s = b.open();
  CHECK(s->load_month("2026-12") ==
        std::optional<store::MonthCalls>(store::MonthCalls{"2026-12", 50, 4, true}));
  CHECK(s->load_month("2027-01") ==
        std::optional<store::MonthCalls>(store::MonthCalls{"2027-01", 1, 1, false}));
}

// The state databases of earlier releases, kept in tests/fixtures/: each
// written by the demo of that release, its messages read and stopped in
// every way, one added through the API, delivered, pending and dead
// deliveries, a disabled webhook. state-schema1.db is from before push and
// the budget; state-schema2.db from before message kinds (with pushed reads
// and a month's call count).
namespace {

struct Snapshot {
  std::string messages;
  std::string read_info;
  std::string events;
  std::string deliveries;
  std::string months;
};

Snapshot snapshot(RawDb& raw, bool with_push_columns) {
  Snapshot out;
  out.messages = raw.text("SELECT group_concat(process_query_key || '|' || read_user_ids || '|' || "
                          "stopped || '|' || coalesce(stop_reason, '') || '|' || last_sequence, "
                          "';') FROM (SELECT * FROM messages ORDER BY process_query_key)");
  out.events = raw.text("SELECT count(*) || '/' || group_concat(id, ',') FROM "
                        "(SELECT id FROM events ORDER BY id)");
  out.deliveries = raw.text("SELECT group_concat(event_id || webhook || state || attempts, ',') "
                            "FROM (SELECT * FROM deliveries ORDER BY event_id, webhook)");
  if (with_push_columns) {
    out.read_info = raw.text("SELECT group_concat(read_info, ';') FROM "
                             "(SELECT read_info FROM messages ORDER BY process_query_key)");
    out.months = raw.text("SELECT group_concat(month || '|' || calls || '|' || first_polls || '|' "
                          "|| quota_exhausted, ';') "
                          "FROM (SELECT * FROM call_months ORDER BY month)");
  }
  return out;
}

void check_migrates_losing_nothing(const char* fixture, int version, std::size_t messages) {
  CAPTURE(fixture);
  TempDir dir;
  const auto path = std::filesystem::path(dir.path()) / "state.db";
  std::filesystem::copy_file(std::filesystem::path(__FILE__).parent_path() / "fixtures" / fixture,
                             path);
  const bool had_push = version >= 2;
  Snapshot before;
  {
    RawDb raw(path.string());
    REQUIRE(raw.text("PRAGMA user_version") == std::to_string(version));
    before = snapshot(raw, had_push);
  }
  {
    auto s = Store::open(path.string());
    const auto loaded = s->load_messages();
    CHECK(loaded.size() == messages);
    for (const auto& m : loaded) {
      CAPTURE(m.spec.process_query_key);
      CHECK(m.spec.kind == MessageKind::private_chat);
      CHECK(m.spec.token.empty());
      CHECK(m.recipients.empty());
      CHECK(m.read_info.size() == m.read_user_ids.size());
      if (!had_push) {
        for (const auto& info : m.read_info) {
          CHECK(info == ReadInfo{std::nullopt, ReadVia::poll});
        }
      }
    }
    CHECK(s->load_pending_deliveries().size() == 1);
    CHECK(s->load_dead_letters().size() == 1);
    CHECK(s->webhook_disabled_fingerprint("old-hook") == std::optional<std::string>("fp-123"));
    CHECK(s->integrity_ok());
    if (!had_push) {
      CHECK_FALSE(s->load_month("2026-12"));
    }
  }
  RawDb raw(path.string());
  CHECK(raw.text("PRAGMA user_version") == "4");
  const Snapshot after = snapshot(raw, had_push);
  CHECK(after.messages == before.messages);
  CHECK(after.events == before.events);
  CHECK(after.deliveries == before.deliveries);
  CHECK(after.read_info == before.read_info);
  CHECK(after.months == before.months);
  CHECK(raw.text("SELECT group_concat(DISTINCT kind || token || recipients) FROM messages") ==
        "private_chat[]");
}

} // namespace

TEST_CASE("a state database from before push is migrated and loses nothing") {
  check_migrates_losing_nothing("state-schema1.db", 1, 6);
}

TEST_CASE("a state database from before message kinds is migrated and loses nothing") {
  check_migrates_losing_nothing("state-schema2.db", 2, 5);
}

// --- both backends: the commit observer and copy_state

TEST_CASE_TEMPLATE("the commit observer sees every commit and commit_all that returned", TestType,
                   Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  std::vector<double> seen;
  s->set_commit_observer([&seen](double seconds) { seen.push_back(seconds); });
  s->commit(commit_with("k1", {"evt_1"}, {"ops"}));
  s->commit_all({commit_with("k2", {"evt_2"}, {"ops"}), commit_with("k3", {"evt_3"}, {"ops"})});
  CHECK_THROWS_AS(s->commit(commit_with("k4", {"evt_1"}, {"ops"})), StoreError); // duplicate id
  REQUIRE(seen.size() == 2);
  for (const double d : seen) {
    CHECK(d > 0.0);
    CHECK(d < 60.0);
  }
  s->set_commit_observer({});
  s->commit(commit_with("k5", {"evt_5"}, {"ops"}));
  CHECK(seen.size() == 2);
}

namespace {

// Everything a store holds, as its API reads it (and, for what the API has
// no list of, the fixture's own rows).
struct StateView {
  std::vector<MessageRecord> messages;
  std::vector<Delivery> pending;
  std::vector<store::DeadLetter> dead;
  std::vector<std::vector<store::StoredEvent>> events; // per message, in messages' order
  std::vector<std::optional<std::string>> disabled;
  std::vector<std::optional<store::MonthCalls>> months;
};

StateView view(Store& s, const std::vector<std::string>& webhooks,
               const std::vector<std::string>& months) {
  StateView v;
  v.messages = s.load_messages();
  v.pending = s.load_pending_deliveries();
  v.dead = s.load_dead_letters();
  for (const auto& m : v.messages) {
    v.events.push_back(s.load_message_events(m.spec.process_query_key, 0, 1'000'000));
  }
  for (const auto& w : webhooks) {
    v.disabled.push_back(s.webhook_disabled_fingerprint(w));
  }
  for (const auto& m : months) {
    v.months.push_back(s.load_month(m));
  }
  return v;
}

bool same_dead(const std::vector<store::DeadLetter>& a, const std::vector<store::DeadLetter>& b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!(a[i].delivery == b[i].delivery) || a[i].died_at != b[i].died_at) {
      return false;
    }
  }
  return true;
}

std::vector<std::string> column(RawDb& raw, const std::string& sql) {
  std::vector<std::string> out;
  const std::string joined =
      raw.text("SELECT coalesce(group_concat(v, char(31)), '') FROM (" + sql + ")");
  std::string item;
  for (const char c : joined) {
    if (c == '\x1f') {
      out.push_back(item);
      item.clear();
    } else {
      item += c;
    }
  }
  if (!joined.empty()) {
    out.push_back(item);
  }
  return out;
}

} // namespace

TEST_CASE_TEMPLATE("copy_state copies a migrated schema-2 database row for row, and refuses a "
                   "target that holds state",
                   TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  TempDir dir;
  const auto path = std::filesystem::path(dir.path()) / "source.db";
  std::filesystem::copy_file(
      std::filesystem::path(__FILE__).parent_path() / "fixtures" / "state-schema2.db", path);
  auto source = Store::open(path.string()); // migrated to the latest schema
  std::vector<std::string> webhooks;
  std::vector<std::string> months;
  std::int64_t source_events = 0;
  {
    RawDb raw(path.string());
    webhooks = column(raw, "SELECT name AS v FROM disabled_webhooks ORDER BY name");
    months = column(raw, "SELECT month AS v FROM call_months ORDER BY month");
    source_events = std::stoll(raw.text("SELECT count(*) FROM events"));
  }
  REQUIRE_FALSE(webhooks.empty());
  REQUIRE_FALSE(months.empty());
  REQUIRE(source_events > 0);
  const StateView before = view(*source, webhooks, months);
  REQUIRE(before.messages.size() == 5);

  auto target = b.open();
  store::copy_state(*source, *target);
  const StateView after = view(*target, webhooks, months);
  CHECK(after.messages == before.messages);
  CHECK(after.pending == before.pending);
  CHECK(same_dead(after.dead, before.dead));
  CHECK(after.events == before.events);
  CHECK(after.disabled == before.disabled);
  CHECK(after.months == before.months);
  std::int64_t copied_events = 0;
  for (const auto& list : after.events) {
    copied_events += static_cast<std::int64_t>(list.size());
  }
  CHECK(copied_events == source_events);

  // Again: the target holds state now, and is left as it is.
  CHECK_THROWS_WITH_AS(store::copy_state(*source, *target),
                       doctest::Contains("already holds state"), StoreError);
  CHECK(view(*target, webhooks, months).messages == before.messages);
}

TEST_CASE("copy_state refuses to copy a store into itself") {
  auto s = Store::open(":memory:");
  CHECK_THROWS_AS(store::copy_state(*s, *s), StoreError);
}

// --- SQLite has no lease

TEST_CASE("the lease methods are refused on SQLite, naming PostgreSQL") {
  auto s = Store::open(":memory:");
  CHECK_FALSE(s->is_postgres());
  CHECK_THROWS_WITH_AS(s->acquire_lease("a", "host", std::chrono::seconds(10)),
                       doctest::Contains("needs PostgreSQL"), StoreError);
  CHECK_THROWS_WITH_AS(s->renew_lease("a", 1, std::chrono::seconds(10)),
                       doctest::Contains("needs PostgreSQL"), StoreError);
  CHECK_THROWS_WITH_AS(s->release_lease("a", 1), doctest::Contains("needs PostgreSQL"), StoreError);
  CHECK_THROWS_WITH_AS(s->read_lease(), doctest::Contains("needs PostgreSQL"), StoreError);
  CHECK_THROWS_WITH_AS(s->set_fence("a", 1), doctest::Contains("needs PostgreSQL"), StoreError);
}

// --- PostgreSQL only: schema, errors, the lease, fencing, a lost server

namespace {

using namespace std::chrono_literals;
using rrd::testing::wait_until;

std::string store_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const StoreError& e) {
    return e.what();
  }
  return "";
}

} // namespace

TEST_CASE_TEMPLATE("postgres: the schema is created once, at version 4, and a newer one is "
                   "refused and left untouched",
                   TestType, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  b.open()->commit(commit_with("k1", {"evt_1"}, {"ops"}));
  {
    auto s = b.open(); // no migration runs twice
    CHECK(s->is_postgres());
    CHECK(s->load_messages().size() == 1);
    CHECK(s->integrity_ok());
  }
  CHECK(b.schema().text("SELECT version FROM schema_version") == "4");
  CHECK(b.schema().text("SELECT count(*) FROM schema_version") == "1");
  b.schema().exec("UPDATE schema_version SET version = 99");
  const std::string error = store_error([&b] { b.open(); });
  CHECK(error.find("newer") != std::string::npos);
  CHECK(error.find("schema version 99") != std::string::npos);
  CHECK(error.find("dbname=") == std::string::npos); // names it, not its connection string
  CHECK(error.find("state database postgres on ") != std::string::npos);
  CHECK(error.find("(PostgreSQL)") != std::string::npos);
  CHECK(b.schema().text("SELECT version FROM schema_version") == "99");
  CHECK(b.schema().text("SELECT count(*) FROM messages") == "1");
}

TEST_CASE_TEMPLATE("postgres: daemons starting together migrate once", TestType, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  constexpr int k_starters = 4;
  std::vector<std::string> errors(k_starters);
  std::vector<std::thread> threads;
  for (int i = 0; i < k_starters; ++i) {
    threads.emplace_back([&b, &errors, i] {
      try {
        b.open();
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(i)] = e.what();
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  for (const auto& e : errors) {
    CHECK(e == "");
  }
  CHECK(b.schema().text("SELECT version FROM schema_version") == "4");
  CHECK(b.schema().text("SELECT count(*) FROM schema_version") == "1");
}

TEST_CASE("postgres: errors name the host and database, never the password or the connection "
          "string") {
  const std::string secret = "hunter2-Sup3rSecret";
  PostgresOptions o;
  o.conninfo = "host=/nonexistent/socket/dir dbname=statedb user=rrd password=" + secret;
  o.password = "file-" + secret;
  o.connect_timeout = std::chrono::seconds(1);
  std::string error;
  try {
    Store::open_postgres(o);
    FAIL("connected to a server that does not exist");
  } catch (const StoreUnavailable& e) {
    error = e.what();
  }
  CAPTURE(error);
  CHECK(
      error.find("state database statedb on /nonexistent/socket/dir (PostgreSQL) is unavailable") !=
      std::string::npos);
  CHECK(error.find("cannot connect") != std::string::npos);
  CHECK(error.find(secret) == std::string::npos);
  CHECK(error.find("password") == std::string::npos);

  // A malformed string: libpq quotes the piece it stumbled on, which is
  // dropped.
  o.conninfo = "host=/tmp dbname=x password " + secret;
  error = store_error([&o] { Store::open_postgres(o); });
  CAPTURE(error);
  CHECK(error.find("not a valid libpq connection string") != std::string::npos);
  CHECK(error.find(secret) == std::string::npos);
  o.conninfo = "";
  CHECK(store_error([&o] { Store::open_postgres(o); }).find("state.postgres is empty") !=
        std::string::npos);
}

TEST_CASE_TEMPLATE("postgres: the lease is acquired, renewed, refused while held, and taken over "
                   "with the next epoch once expired",
                   TestType, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto a = b.open();
  auto c = b.open();
  CHECK_FALSE(a->read_lease());
  REQUIRE(a->acquire_lease("A", "host-a 10.0.0.1:9465", 60s) == std::optional<std::int64_t>(1));
  CHECK_FALSE(c->acquire_lease("C", "host-c", 60s));
  auto row = c->read_lease();
  REQUIRE(row);
  CHECK(row->holder == "A");
  CHECK(row->epoch == 1);
  CHECK(row->holder_info == "host-a 10.0.0.1:9465");
  CHECK_FALSE(row->expired);
  CHECK(row->ms_left > 0);
  CHECK(row->ms_left <= 60'000);
  CHECK(a->renew_lease("A", 1, 60s));
  CHECK_FALSE(c->renew_lease("C", 1, 60s)); // not C's
  CHECK_FALSE(a->renew_lease("A", 2, 60s)); // not this epoch
  CHECK_THROWS_AS(a->renew_lease("A", 1, 0ms), StoreError);

  // A short lease, not renewed: C takes it over with the next epoch.
  REQUIRE(a->renew_lease("A", 1, 50ms));
  std::optional<std::int64_t> taken;
  CHECK(
      wait_until([&] { return (taken = c->acquire_lease("C", "host-c", 60s)).has_value(); }, 10s));
  CHECK(taken == std::optional<std::int64_t>(2));
  CHECK_FALSE(a->renew_lease("A", 1, 60s)); // A lost it for good
  row = a->read_lease();
  REQUIRE(row);
  CHECK(row->holder == "C");
  CHECK(row->epoch == 2);

  // A holder whose own lease lapsed gets a new epoch, never its old one.
  REQUIRE(c->renew_lease("C", 2, 50ms));
  CHECK(wait_until([&] { return c->read_lease()->expired; }, 10s));
  CHECK(c->read_lease()->ms_left == 0);
  CHECK_FALSE(c->renew_lease("C", 2, 60s));
  CHECK(c->acquire_lease("C", "host-c", 60s) == std::optional<std::int64_t>(3));
}

TEST_CASE_TEMPLATE("postgres: a released lease is taken at once by another", TestType, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto a = b.open();
  auto c = b.open();
  REQUIRE(a->acquire_lease("A", "a", 60s) == std::optional<std::int64_t>(1));
  CHECK_FALSE(c->acquire_lease("C", "c", 60s));
  a->release_lease("C", 1); // not C's to release: nothing
  CHECK_FALSE(c->acquire_lease("C", "c", 60s));
  a->release_lease("A", 1);
  CHECK(a->read_lease()->expired);
  CHECK(c->acquire_lease("C", "c", 60s) == std::optional<std::int64_t>(2));
}

TEST_CASE_TEMPLATE("postgres: after a takeover every fenced write is refused and writes nothing",
                   TestType, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto a = b.open();
  auto c = b.open();
  REQUIRE(a->acquire_lease("A", "a", 60s) == std::optional<std::int64_t>(1));
  a->set_fence("A", 1);
  a->commit(commit_with("k1", {"evt_1", "evt_2"}, {"ops"}));
  a->mark_retry("evt_1", "ops", 1, at(1'000), "HTTP 503");
  a->save_month({"2026-12", 1, 1, false});

  // C takes over (A's lease released behind its back, as if it had lapsed).
  c->release_lease("A", 1);
  REQUIRE(c->acquire_lease("C", "c", 60s) == std::optional<std::int64_t>(2));

  const auto fenced = [](const std::function<void()>& write) {
    try {
      write();
    } catch (const FencedError& e) {
      return std::string(e.what()).find("no longer held by A under epoch 1") != std::string::npos;
    }
    return false;
  };
  CHECK(fenced([&] { a->commit(commit_with("k2", {"evt_3"}, {"ops"})); }));
  CHECK(fenced([&] { a->commit_all({commit_with("k3", {"evt_4"}, {"ops"})}); }));
  CHECK(fenced([&] { a->mark_delivered("evt_1", "ops"); }));
  CHECK(fenced([&] { a->mark_delivered_all({{"evt_2", "ops"}}); }));
  CHECK(fenced([&] { a->mark_retry("evt_1", "ops", 2, at(2'000), "HTTP 500"); }));
  CHECK(fenced([&] { a->mark_dead("evt_1", "ops", 2, at(2'000), "HTTP 400"); }));
  CHECK(fenced([&] { a->replay_dead("evt_1", at(0)); }));
  CHECK(fenced([&] { a->prune_delivered(at(1'000'000)); }));
  CHECK(fenced([&] { a->set_webhook_disabled("ops", "fp", at(0), "HTTP 410"); }));
  CHECK(fenced([&] { a->clear_webhook_disabled("ops"); }));
  CHECK(fenced([&] { a->save_month({"2026-12", 9, 9, true}); }));

  // Nothing of it was written; reads still work for the fenced store.
  CHECK(c->load_messages().size() == 1);
  CHECK_FALSE(c->load_message("k2"));
  CHECK(pending_ids(*c) == std::vector<std::string>{"evt_1@ops", "evt_2@ops"});
  CHECK(c->load_pending_deliveries()[0].attempts == 1);
  CHECK_FALSE(c->webhook_disabled_fingerprint("ops"));
  CHECK(c->load_month("2026-12") ==
        std::optional<store::MonthCalls>(store::MonthCalls{"2026-12", 1, 1, false}));
  CHECK(a->load_messages().size() == 1);

  // The new leader writes under its own fence; clear_fence() stops the check.
  c->set_fence("C", 2);
  c->mark_delivered("evt_1", "ops");
  a->clear_fence();
  a->mark_delivered("evt_2", "ops");
  CHECK(pending_ids(*c).empty());
}

TEST_CASE_TEMPLATE("postgres: a write in flight when another takes over is refused, never "
                   "committed after",
                   TestType, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto a = Store::open_postgres(b.options("writer"));
  REQUIRE(a->acquire_lease("A", "a", 60s) == std::optional<std::int64_t>(1));
  a->set_fence("A", 1);
  // The takeover's UPDATE holds the lease row while A's write starts: A's
  // fence check waits for it, then sees the new epoch.
  b.schema().exec("BEGIN");
  b.schema().exec("UPDATE lease SET holder = 'C', epoch = epoch + 1");
  std::string outcome;
  std::thread writer([&a, &outcome] {
    try {
      a->commit(commit_with("k1", {"evt_1"}, {"ops"}));
      outcome = "committed";
    } catch (const FencedError&) {
      outcome = "fenced";
    } catch (const std::exception& e) {
      outcome = e.what();
    }
  });
  auto watcher = b.open();
  const std::string waiting = "SELECT count(*) FROM pg_stat_activity WHERE application_name = '" +
                              b.application_name("writer") + "' AND wait_event_type = 'Lock'";
  // The schema's own connection is in the takeover: look from another.
  PgSchema probe(*rrd::testing::test_postgres());
  const bool waited = wait_until([&] { return probe.text(waiting) == "1"; }, 10s);
  PgSchema& raw = b.schema();
  raw.exec("COMMIT");
  writer.join();
  CHECK(waited);
  CHECK(outcome == "fenced");
  CHECK(watcher->load_messages().empty());
}

namespace {

// A session of the test's own on the schema, to hold a lock with as the
// session of a daemon stopped in the middle of a write would.
class RawSession {
public:
  explicit RawSession(const std::string& conninfo) : m_conn(PQconnectdb(conninfo.c_str())) {
    REQUIRE(PQstatus(m_conn.get()) == CONNECTION_OK);
  }
  // False when the statement failed or the session is gone.
  bool exec(const std::string& sql) {
    PGresult* r = PQexec(m_conn.get(), sql.c_str());
    const ExecStatusType status = PQresultStatus(r);
    PQclear(r);
    return status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
  }
  // The lease names this session as its holder's, as the holder's own
  // store does when it takes or renews the lease from it.
  void record_as_holders() {
    REQUIRE(exec("UPDATE lease SET holder_pid = pg_backend_pid(), holder_backend_start = "
                 "(SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())"));
  }
  // In a transaction that holds the lease row, as a fenced write does from
  // its fence check to its COMMIT.
  void hold_lease_row() {
    REQUIRE(exec("BEGIN"));
    REQUIRE(exec("SELECT 1 FROM lease WHERE id = 1 FOR SHARE"));
  }

private:
  struct Finisher {
    void operator()(PGconn* c) const noexcept { PQfinish(c); }
  };
  std::unique_ptr<PGconn, Finisher> m_conn;
};

std::string session_pid(PgSchema& schema, const std::string& application_name) {
  return schema.text("SELECT pid FROM pg_stat_activity WHERE application_name = '" +
                     application_name + "'");
}

// A holds the lease for 300 ms from a store whose session is told apart
// ("holder"); C is to take it over.
struct HolderAndTaker {
  std::unique_ptr<Store> a;
  std::unique_ptr<Store> c;
  std::string a_pid; // the server process of A's session
};

HolderAndTaker holder_and_taker(TestBackend<Postgres>& b) {
  HolderAndTaker out{Store::open_postgres(b.options("holder")), b.open(), ""};
  REQUIRE(out.a->acquire_lease("A", "a", 300ms) == std::optional<std::int64_t>(1));
  out.a_pid = session_pid(b.schema(), b.application_name("holder"));
  return out;
}

} // namespace

TEST_CASE_TEMPLATE("postgres: a takeover ends the session its expired holder left in the middle "
                   "of a write, and no other",
                   TestType, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  const HolderAndTaker h = holder_and_taker(b);
  // The lease names the session it was taken from.
  CHECK(b.schema().text("SELECT holder_pid FROM lease") == h.a_pid);
  CHECK(b.schema().text("SELECT holder_backend_start = (SELECT backend_start FROM "
                        "pg_stat_activity WHERE pid = " +
                        h.a_pid + ") FROM lease") == "t");

  // A's daemon stopped between its fence check and its COMMIT: its session
  // holds the lease row for as long as it lasts.
  RawSession stalled(b.schema().conninfo());
  stalled.record_as_holders();
  stalled.hold_lease_row();
  REQUIRE(wait_until([&] { return h.c->read_lease()->expired; }, 10s));

  const auto started = std::chrono::steady_clock::now();
  CHECK(h.c->acquire_lease("C", "c", 60s) == std::optional<std::int64_t>(2));
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  MESSAGE("took over in " << took.count() << " ms, ending the stopped holder's session");
  CHECK(took < 5s);
  CHECK_FALSE(stalled.exec("SELECT 1")); // ended: its transaction rolled back
  // A's own session, idle and no longer the recorded one, was left alone.
  CHECK(session_pid(b.schema(), b.application_name("holder")) == h.a_pid);
  // The lease now names C's session.
  CHECK(b.schema().text("SELECT holder_pid FROM lease") != h.a_pid);
}

TEST_CASE_TEMPLATE("postgres: a takeover blocked by a session that is not a stopped expired "
                   "holder's waits a moment and ends nothing",
                   TestType, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  const HolderAndTaker h = holder_and_taker(b);
  const auto bounded = [](const std::function<void()>& f) {
    const auto started = std::chrono::steady_clock::now();
    f();
    return std::chrono::steady_clock::now() - started < 3s;
  };

  SUBCASE("another session (an operator's, say) holds the row of an expired lease") {
    RawSession other(b.schema().conninfo());
    other.hold_lease_row();
    REQUIRE(wait_until([&] { return h.c->read_lease()->expired; }, 10s));
    // A's recorded session is idle: it holds nothing, and is not ended.
    CHECK(bounded([&] { CHECK_FALSE(h.c->acquire_lease("C", "c", 60s)); }));
    CHECK(other.exec("SELECT 1"));
    CHECK(session_pid(b.schema(), b.application_name("holder")) == h.a_pid);
    REQUIRE(other.exec("COMMIT"));
    CHECK(h.c->acquire_lease("C", "c", 60s) == std::optional<std::int64_t>(2));
  }
  SUBCASE("the holder's session holds the row of a live lease") {
    REQUIRE(h.a->acquire_lease("A", "a", 60s) == std::optional<std::int64_t>(2));
    RawSession holder(b.schema().conninfo());
    holder.record_as_holders();
    holder.hold_lease_row();
    CHECK(bounded([&] { CHECK_FALSE(h.c->acquire_lease("C", "c", 60s)); }));
    CHECK(holder.exec("SELECT 1"));
    REQUIRE(holder.exec("COMMIT"));
    CHECK_FALSE(h.c->acquire_lease("C", "c", 60s)); // live: refused, not blocked
  }
}

TEST_CASE_TEMPLATE("postgres: a schema of version 3 gains the lease's session columns, keeping "
                   "the lease",
                   TestType, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  {
    auto a = b.open();
    REQUIRE(a->acquire_lease("A", "a", 60s) == std::optional<std::int64_t>(1));
  }
  b.schema().exec("ALTER TABLE lease DROP COLUMN holder_pid, DROP COLUMN holder_backend_start; "
                  "UPDATE schema_version SET version = 3");
  auto a = b.open();
  CHECK(b.schema().text("SELECT version FROM schema_version") == "4");
  const auto row = a->read_lease();
  REQUIRE(row);
  CHECK(row->holder == "A");
  CHECK(row->epoch == 1);
  CHECK_FALSE(row->expired);
  CHECK(b.schema().text("SELECT holder_pid IS NULL FROM lease") == "t");
  CHECK(a->renew_lease("A", 1, 60s)); // records its session
  CHECK(b.schema().text("SELECT holder_pid IS NULL FROM lease") == "f");
}

TEST_CASE_TEMPLATE("postgres: racing a takeover, a fenced writer's commits all land before it "
                   "or not at all",
                   TestType, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto a = b.open();
  auto c = b.open();
  REQUIRE(a->acquire_lease("A", "a", 300ms) == std::optional<std::int64_t>(1));
  a->set_fence("A", 1);
  int committed = 0;
  std::string stopped_by;
  std::thread writer([&a, &committed, &stopped_by] {
    for (int i = 0;; ++i) {
      const std::string n = std::to_string(i);
      try {
        a->commit_all({commit_with("k" + n, {"evt_" + n}, {"ops", "audit"})});
        ++committed;
      } catch (const FencedError&) {
        stopped_by = "fenced";
        return;
      } catch (const std::exception& e) {
        stopped_by = e.what();
        return;
      }
    }
  });
  std::optional<std::int64_t> epoch;
  const bool took =
      wait_until([&] { return (epoch = c->acquire_lease("C", "c", 60s)).has_value(); }, 20s);
  // Right after the takeover: what A managed to commit, all before it.
  const std::size_t at_takeover = took ? c->load_messages().size() : 0;
  if (!took) {
    c->release_lease("A", 1); // let the writer end
    c->acquire_lease("C", "c", 60s);
  }
  writer.join();
  REQUIRE(took);
  CHECK(epoch == std::optional<std::int64_t>(2));
  CHECK(stopped_by == "fenced");
  CHECK(c->load_messages().size() == at_takeover);
  CHECK(at_takeover == static_cast<std::size_t>(committed));
  CHECK(c->load_pending_deliveries().size() == 2 * at_takeover);
}

TEST_CASE_TEMPLATE("postgres: a lost connection is StoreUnavailable and the next call connects "
                   "again",
                   TestType, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = Store::open_postgres(b.options("cut"));
  s->commit(commit_with("k1", {"evt_1"}, {"ops"}));
  CHECK(s->load_message("k1")); // statements prepared on the first connection
  REQUIRE(b.cut_off("cut") == "1");
  CHECK_THROWS_AS(s->load_messages(), StoreUnavailable);
  // Connected again, its statements prepared again.
  CHECK(s->load_messages().size() == 1);
  CHECK(s->load_message("k1"));

  // Cut off inside a transaction: the commit fails whole, the next works.
  REQUIRE(b.cut_off("cut") == "1");
  CHECK_THROWS_AS(s->commit(commit_with("k2", {"evt_2"}, {"ops"})), StoreUnavailable);
  CHECK_FALSE(s->load_message("k2"));
  s->commit(commit_with("k2", {"evt_2"}, {"ops"}));
  CHECK(pending_ids(*s) == std::vector<std::string>{"evt_1@ops", "evt_2@ops"});
}

TEST_CASE_TEMPLATE("take_trouble reports a fenced write and a lost connection once, whoever "
                   "caught them",
                   TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  using Trouble = Store::Trouble;
  if constexpr (std::is_same_v<TestType, Sqlite>) {
    auto s = b.open();
    s->commit(commit_with("k1", {"evt_1"}, {"ops"}));
    CHECK_THROWS_AS(s->commit(commit_with("k1", {"evt_1"}, {"ops"})), StoreError);
    CHECK(s->take_trouble() == Trouble::none); // only the two PostgreSQL troubles
  } else {
    auto a = Store::open_postgres(b.options("trouble"));
    auto c = b.open();
    CHECK(a->take_trouble() == Trouble::none);
    REQUIRE(a->acquire_lease("A", "a", 60s) == std::optional<std::int64_t>(1));
    a->set_fence("A", 1);
    a->commit(commit_with("k1", {"evt_1"}, {"ops"}));
    CHECK(a->take_trouble() == Trouble::none);

    // The connection cut: the error is caught (as the dispatcher would),
    // the next call connects again, and the loss is still told once.
    REQUIRE(b.cut_off("trouble") == "1");
    CHECK_THROWS_AS(a->mark_delivered("evt_1", "ops"), StoreUnavailable);
    a->mark_delivered("evt_1", "ops");
    CHECK(a->take_trouble() == Trouble::unavailable);
    CHECK(a->take_trouble() == Trouble::none);

    // A takeover: a fenced write is told, and wins over a loss.
    c->release_lease("A", 1);
    REQUIRE(c->acquire_lease("C", "c", 60s) == std::optional<std::int64_t>(2));
    REQUIRE(b.cut_off("trouble") == "1");
    CHECK_THROWS_AS(a->load_messages(), StoreUnavailable);
    CHECK_THROWS_AS(a->commit(commit_with("k2", {"evt_2"}, {"ops"})), FencedError);
    CHECK(a->take_trouble() == Trouble::fenced);
    CHECK(a->take_trouble() == Trouble::none);
  }
}

TEST_CASE("postgres: a store survives its server restarting, and says so while it is down") {
  TestBackend<Postgres> shared; // only to skip, or fail, as the other cases do
  if (!ready(shared)) {
    return;
  }
  OwnPostgres server(
      (std::filesystem::path(__FILE__).parent_path() / "postgres" / "throwaway.sh").string());
  const auto run = [&server](const std::string& action) { return server.run(action); };
  const std::string conninfo = server.conninfo();
  PostgresOptions o;
  o.conninfo = conninfo;
  o.connect_timeout = std::chrono::seconds(2);
  auto s = Store::open_postgres(o);
  s->commit(commit_with("k1", {"evt_1"}, {"ops"}));

  REQUIRE(run("restart") == 0);
  CHECK_THROWS_AS(s->load_messages(), StoreUnavailable);
  CHECK(wait_until(
      [&s] {
        try {
          return s->load_messages().size() == 1;
        } catch (const StoreUnavailable&) {
          return false;
        }
      },
      20s));
  s->commit(commit_with("k2", {"evt_2"}, {"ops"}));

  REQUIRE(run("stop") == 0);
  std::string error;
  try {
    s->load_messages();
  } catch (const StoreUnavailable& e) {
    error = e.what();
  }
  CHECK(error.find("is unavailable") != std::string::npos);
  // And again: the reconnection fails the same way, cleanly.
  CHECK_THROWS_AS(s->commit(commit_with("k3", {"evt_3"}, {"ops"})), StoreUnavailable);
}

TEST_CASE_TEMPLATE("a visit abandoned by its visitor leaves the store working", TestType, Sqlite,
                   Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  std::vector<Commit> batch;
  for (int i = 0; i < 50; ++i) {
    batch.push_back(commit_with("k" + std::to_string(i), {"evt_" + std::to_string(i)}, {"ops"}));
  }
  s->commit_all(batch);
  int seen = 0;
  CHECK_THROWS_AS(s->visit_messages([&seen](MessageRecord&) {
    if (++seen == 3) {
      throw std::runtime_error("the visitor gives up");
    }
  }),
                  std::runtime_error);
  CHECK(seen == 3);
  CHECK(s->load_messages().size() == 50);
  s->commit(commit_with("k50", {"evt_50"}, {"ops"}));
  std::size_t visited = 0;
  s->visit_messages([&visited](MessageRecord&) { ++visited; });
  CHECK(visited == 51);
}

TEST_CASE_TEMPLATE("a failure deep in a large commit_all writes nothing and the store goes on",
                   TestType, Sqlite, Postgres) {
  TestBackend<TestType> b;
  if (!ready(b)) {
    return;
  }
  auto s = b.open();
  s->commit(commit_with("first", {"evt_first"}, {"ops"}));
  // Far more statements than PostgreSQL pipelines at once; the 301st commit
  // repeats an event id, and so does the last.
  std::vector<Commit> batch = numbered_commits(400, {"ops", "audit"});
  batch[300].events[0].id = "evt_first";
  batch[399].events[0].id = "evt_first";
  CHECK_THROWS_WITH_AS(s->commit_all(batch), doctest::Contains("cannot write event"), StoreError);
  CHECK(s->load_messages().size() == 1);
  CHECK(pending_ids(*s) == std::vector<std::string>{"evt_first@ops"});
  batch[300].events[0].id = "evt_300";
  batch[399].events[0].id = "evt_399";
  s->commit_all(batch);
  CHECK(s->load_messages().size() == 401);
  CHECK(s->load_pending_deliveries().size() == 801);
  CHECK(s->integrity_ok());
}
