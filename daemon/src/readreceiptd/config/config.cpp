// Configuration loading. YAML (and an API request's JSON) is first turned
// into a small tree of Values that remembers where each node came from; one
// set of validators then reads typed fields out of that tree, so that the
// file and the HTTP API share every rule and every error message.
#include "readreceiptd/config/config.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <memory>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

namespace rrd::config {

namespace {

namespace fs = std::filesystem;

// Limits on what a configuration may be, so that a hostile or broken file
// fails cleanly instead of exhausting the stack or memory.
constexpr std::size_t k_max_config_bytes = 16 * 1024 * 1024;
constexpr std::size_t k_max_secret_file_bytes = 64 * 1024;
constexpr int k_max_depth = 64;
constexpr std::size_t k_max_nodes = 1'000'000;
constexpr int k_max_page_size = 200;
constexpr std::size_t k_max_webhook_key_bytes = 64;
constexpr std::string_view k_webhook_secret_prefix = "whsec_";
constexpr std::string_view k_duration_hint = "(use e.g. 500ms, 15s, 10m, 2h, 7d)";
constexpr std::string_view k_auth_forms =
    "exactly one of app_key/app_secret, suite_key/suite_secret/auth_corp_id/suite_ticket, "
    "access_token";

// ---------------------------------------------------------------------------
// The tree

struct Mark {
  int line = 0; // 1-based; 0: unknown
  int column = 0;
  bool known() const { return line > 0; }
};

struct Key {
  std::string name;
  Mark mark;
};

struct Value {
  // `plain` is a YAML scalar, whose type is decided by the field that reads
  // it; JSON keeps its types (`string`, `number`, `boolean`).
  enum class Kind { null, plain, string, number, boolean, sequence, map };
  Kind kind = Kind::null;
  std::string text;     // scalars
  bool integer = false; // Kind::number: an integer literal
  Mark mark;
  std::vector<Key> keys;    // Kind::map: keys[i] names items[i]
  std::vector<Value> items; // Kind::sequence and Kind::map
  bool key_error = false;   // Kind::map: a key was not a scalar
  Mark key_error_mark;
};

Mark mark_of(const YAML::Mark& m) {
  if (m.is_null() || m.line < 0) {
    return {};
  }
  return Mark{m.line + 1, m.column + 1};
}

// The documents of a YAML stream, found without building any nodes: for each,
// where its first node is (a null mark when it has none).
//
// yaml-cpp 0.7's LoadAll() never returns, and allocates without bound, when a
// stray token follows a node ("{}," or a lone ","): its parser hands out an
// empty document at that token again and again without consuming it. The
// scan stops as soon as a document starts where the previous one did.
struct DocumentScan {
  std::vector<YAML::Mark> first_nodes;
  bool stuck = false;
  YAML::Mark stuck_at;
};

class DocumentScanner final : public YAML::EventHandler {
public:
  DocumentScan scan;
  bool stuck_now = false;

  void OnDocumentStart(const YAML::Mark& mark) override {
    if (m_has_start && mark.pos == m_last_start.pos) {
      stuck_now = true;
      scan.stuck = true;
      scan.stuck_at = mark;
    }
    m_has_start = true;
    m_last_start = mark;
    m_in_document = true;
    scan.first_nodes.push_back(YAML::Mark::null_mark());
  }
  void OnDocumentEnd() override { m_in_document = false; }
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { node(mark); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { node(mark); }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                const std::string&) override {
    node(mark);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    node(mark);
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    node(mark);
  }
  void OnMapEnd() override {}

private:
  void node(const YAML::Mark& mark) {
    if (m_in_document && !scan.first_nodes.empty() && scan.first_nodes.back().is_null()) {
      scan.first_nodes.back() = mark;
    }
  }

  bool m_has_start = false;
  bool m_in_document = false;
  YAML::Mark m_last_start;
};

// Throws YAML::Exception on a syntax error.
DocumentScan scan_documents(const std::string& yaml) {
  std::istringstream in(yaml);
  YAML::Parser parser(in);
  DocumentScanner scanner;
  while (!scanner.stuck_now && parser.HandleNextDocument(scanner)) {
  }
  return std::move(scanner.scan);
}

struct TreeBuilder {
  std::string file;
  std::size_t nodes = 0;

  [[noreturn]] void fail(Mark m, const std::string& msg) const {
    std::string text = file;
    if (m.known()) {
      text += ":" + std::to_string(m.line) + ":" + std::to_string(m.column);
    }
    throw ConfigError(text + ": " + msg);
  }

  void count(Mark m) {
    if (++nodes > k_max_nodes) {
      fail(m, "too many nodes (more than " + std::to_string(k_max_nodes) +
                  "; aliases expanding without bound?)");
    }
  }

  Value from_yaml(const YAML::Node& n, Mark fallback, int depth) {
    Value v;
    v.mark = mark_of(n.Mark());
    // yaml-cpp marks a null (`key:`, `-`) where the next token starts; the
    // key or the list is the better place to point at.
    if (!v.mark.known() || n.IsNull()) {
      v.mark = fallback;
    }
    count(v.mark);
    if (depth > k_max_depth) {
      fail(v.mark, "nested too deeply (more than " + std::to_string(k_max_depth) + " levels)");
    }
    switch (n.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      v.kind = Value::Kind::null;
      break;
    case YAML::NodeType::Scalar:
      v.kind = Value::Kind::plain;
      v.text = n.Scalar();
      break;
    case YAML::NodeType::Sequence:
      v.kind = Value::Kind::sequence;
      for (const auto& item : n) {
        v.items.push_back(from_yaml(item, v.mark, depth + 1));
      }
      break;
    case YAML::NodeType::Map:
      v.kind = Value::Kind::map;
      for (auto it = n.begin(); it != n.end(); ++it) {
        Key k;
        k.mark = mark_of(it->first.Mark());
        if (!k.mark.known()) {
          k.mark = v.mark;
        }
        if (!it->first.IsScalar()) {
          if (!v.key_error) {
            v.key_error = true;
            v.key_error_mark = k.mark;
          }
        } else {
          k.name = it->first.Scalar();
        }
        // A null value (`key:`) is marked where its key is.
        v.items.push_back(from_yaml(it->second, k.mark, depth + 1));
        v.keys.push_back(std::move(k));
      }
      break;
    }
    return v;
  }
};

Value from_json(const nlohmann::json& j, int depth) {
  if (depth > k_max_depth) {
    throw ConfigError("nested too deeply (more than " + std::to_string(k_max_depth) + " levels)");
  }
  Value v;
  switch (j.type()) {
  case nlohmann::json::value_t::null:
  case nlohmann::json::value_t::discarded:
    v.kind = Value::Kind::null;
    break;
  case nlohmann::json::value_t::string:
    v.kind = Value::Kind::string;
    v.text = j.get<std::string>();
    break;
  case nlohmann::json::value_t::boolean:
    v.kind = Value::Kind::boolean;
    v.text = j.get<bool>() ? "true" : "false";
    break;
  case nlohmann::json::value_t::number_integer:
  case nlohmann::json::value_t::number_unsigned:
    v.kind = Value::Kind::number;
    v.integer = true;
    v.text = j.dump();
    break;
  case nlohmann::json::value_t::number_float:
    v.kind = Value::Kind::number;
    v.text = j.dump();
    break;
  case nlohmann::json::value_t::array:
    v.kind = Value::Kind::sequence;
    for (const auto& item : j) {
      v.items.push_back(from_json(item, depth + 1));
    }
    break;
  case nlohmann::json::value_t::object:
    v.kind = Value::Kind::map;
    for (const auto& [key, item] : j.items()) {
      v.keys.push_back(Key{key, {}});
      v.items.push_back(from_json(item, depth + 1));
    }
    break;
  case nlohmann::json::value_t::binary:
    throw ConfigError("binary values are not supported");
  }
  return v;
}

// ---------------------------------------------------------------------------
// Context, paths and errors

struct Ctx {
  std::string file; // "" when validating an API request: no location prefix
  bool expand_env = false;
  bool read_files = false;
  fs::path base_dir; // where relative *_file paths are anchored
};

std::string join(const std::string& path, std::string_view key) {
  if (path.empty()) {
    return std::string(key);
  }
  return path + "." + std::string(key);
}

std::string index(const std::string& path, std::size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

[[noreturn]] void fail(const Ctx& ctx, Mark m, const std::string& path, const std::string& msg) {
  std::string text;
  if (!ctx.file.empty()) {
    text = ctx.file;
    if (m.known()) {
      text += ":" + std::to_string(m.line) + ":" + std::to_string(m.column);
    }
    text += ": ";
  }
  if (!path.empty()) {
    text += path + ": ";
  }
  throw ConfigError(text + msg);
}

std::string quote_text(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

const char* kind_name(const Value& v) {
  switch (v.kind) {
  case Value::Kind::null:
    return "null";
  case Value::Kind::plain:
  case Value::Kind::string:
    return "a string";
  case Value::Kind::number:
    return "a number";
  case Value::Kind::boolean:
    return "a boolean";
  case Value::Kind::sequence:
    return "a list";
  case Value::Kind::map:
    return "a map";
  }
  return "a value";
}

[[noreturn]] void fail_type(const Ctx& ctx, const Value& v, const std::string& path,
                            const char* wanted) {
  fail(ctx, v.mark, path, std::string("must be ") + wanted + ", not " + kind_name(v));
}

// Optimal string alignment distance: edits, with a transposition counting as
// one ("adn" -> "and").
std::size_t edit_distance(std::string_view a, std::string_view b) {
  const std::size_t n = a.size();
  const std::size_t m = b.size();
  std::vector<std::vector<std::size_t>> d(n + 1, std::vector<std::size_t>(m + 1));
  for (std::size_t i = 0; i <= n; ++i) {
    d[i][0] = i;
  }
  for (std::size_t j = 0; j <= m; ++j) {
    d[0][j] = j;
  }
  for (std::size_t i = 1; i <= n; ++i) {
    for (std::size_t j = 1; j <= m; ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[n][m];
}

std::string lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return out;
}

// "processQueryKey", "Process-Query-Key" -> "processquerykey"
std::string squashed(std::string_view s) {
  std::string out;
  for (char c : lowercase(s)) {
    if (c != '_' && c != '-') {
      out += c;
    }
  }
  return out;
}

// The candidate a near miss was probably meant to be, or "".
std::string suggestion(std::string_view typo, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_distance = std::numeric_limits<std::size_t>::max();
  for (const auto& c : candidates) {
    if (squashed(typo) == squashed(c)) {
      return c;
    }
    const std::size_t dist = edit_distance(lowercase(typo), c);
    const std::size_t allowed = c.size() >= 6 ? 2 : 1;
    if (dist <= allowed && dist < best_distance) {
      best = c;
      best_distance = dist;
    }
  }
  return best;
}

std::string did_you_mean(std::string_view typo, const std::vector<std::string>& candidates) {
  const std::string s = suggestion(typo, candidates);
  return s.empty() ? std::string() : " (did you mean " + quote_text(s) + "?)";
}

// ---------------------------------------------------------------------------
// Scalars

// Replaces every ${NAME} in `text` with the environment variable NAME.
std::string expand_env(const Ctx& ctx, const Value& v, const std::string& path,
                       const std::string& text) {
  std::string out;
  std::size_t pos = 0;
  while (true) {
    const std::size_t start = text.find("${", pos);
    if (start == std::string::npos) {
      out.append(text, pos, std::string::npos);
      return out;
    }
    out.append(text, pos, start - pos);
    const std::size_t end = text.find('}', start + 2);
    if (end == std::string::npos) {
      fail(ctx, v.mark, path, "unterminated \"${\" (write ${NAME} for an environment variable)");
    }
    const std::string name = text.substr(start + 2, end - start - 2);
    const bool valid = !name.empty() && !(name[0] >= '0' && name[0] <= '9') &&
                       std::all_of(name.begin(), name.end(), [](char c) {
                         return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                                (c >= '0' && c <= '9') || c == '_';
                       });
    if (!valid) {
      fail(ctx, v.mark, path,
           "invalid environment variable name " + quote_text(name) + " in ${...}");
    }
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) {
      fail(ctx, v.mark, path, "environment variable " + name + " is not set");
    }
    out += value;
    pos = end + 1;
  }
}

// The text of a scalar, ${NAME} expanded for YAML.
std::string scalar_text(const Ctx& ctx, const Value& v, const std::string& path) {
  if (v.kind == Value::Kind::plain && ctx.expand_env) {
    return expand_env(ctx, v, path, v.text);
  }
  return v.text;
}

std::string get_string(const Ctx& ctx, const Value& v, const std::string& path) {
  if (v.kind != Value::Kind::plain && v.kind != Value::Kind::string) {
    fail_type(ctx, v, path, "a string");
  }
  return scalar_text(ctx, v, path);
}

std::string get_nonempty_string(const Ctx& ctx, const Value& v, const std::string& path) {
  std::string s = get_string(ctx, v, path);
  if (s.empty()) {
    fail(ctx, v.mark, path, "must not be empty");
  }
  return s;
}

std::int64_t get_int(const Ctx& ctx, const Value& v, const std::string& path) {
  if (v.kind != Value::Kind::plain && !(v.kind == Value::Kind::number && v.integer)) {
    fail_type(ctx, v, path, "an integer");
  }
  const std::string text = scalar_text(ctx, v, path);
  std::int64_t out = 0;
  const char* first = text.data();
  const char* last = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(first, last, out);
  if (ec == std::errc::result_out_of_range) {
    fail(ctx, v.mark, path, "integer " + quote_text(text) + " is out of range");
  }
  if (ec != std::errc() || ptr != last || text.empty()) {
    fail(ctx, v.mark, path, "must be an integer, not " + quote_text(text));
  }
  return out;
}

double get_number(const Ctx& ctx, const Value& v, const std::string& path) {
  if (v.kind != Value::Kind::plain && v.kind != Value::Kind::number) {
    fail_type(ctx, v, path, "a number");
  }
  const std::string text = scalar_text(ctx, v, path);
  double out = 0;
  const char* first = text.data();
  const char* last = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(first, last, out);
  if (ec != std::errc() || ptr != last || text.empty() || !std::isfinite(out)) {
    fail(ctx, v.mark, path, "must be a number, not " + quote_text(text));
  }
  return out;
}

Millis get_duration(const Ctx& ctx, const Value& v, const std::string& path) {
  if (v.kind != Value::Kind::plain && v.kind != Value::Kind::string) {
    fail(ctx, v.mark, path,
         std::string("must be a duration string ") + std::string(k_duration_hint) + ", not " +
             kind_name(v));
  }
  const std::string text = scalar_text(ctx, v, path);
  const auto d = parse_duration(text);
  if (!d) {
    fail(ctx, v.mark, path,
         "invalid duration " + quote_text(text) + " " + std::string(k_duration_hint));
  }
  return *d;
}

Millis get_positive_duration(const Ctx& ctx, const Value& v, const std::string& path) {
  const Millis d = get_duration(ctx, v, path);
  if (d <= Millis{0}) {
    fail(ctx, v.mark, path, "must be greater than 0");
  }
  return d;
}

// ---------------------------------------------------------------------------
// Maps

// A map node checked for its keys: every key a string, none repeated, none
// outside `allowed` (with a suggestion for near misses). A null node (a
// section written as `name:` with nothing under it) reads as an empty map.
class MapReader {
public:
  MapReader(const Ctx& ctx, const Value& v, std::string path,
            std::initializer_list<const char*> allowed)
      : m_ctx(ctx), m_value(v), m_path(std::move(path)) {
    if (v.kind == Value::Kind::null) {
      return;
    }
    if (v.kind != Value::Kind::map) {
      fail_type(ctx, v, m_path, "a map");
    }
    if (v.key_error) {
      fail(ctx, v.key_error_mark, m_path, "keys must be strings");
    }
    std::vector<std::string> names(allowed.begin(), allowed.end());
    for (std::size_t i = 0; i < v.keys.size(); ++i) {
      const Key& k = v.keys[i];
      for (std::size_t j = 0; j < i; ++j) {
        if (v.keys[j].name == k.name) {
          fail(ctx, k.mark, join(m_path, k.name), "duplicate key" + first_at(v.keys[j].mark));
        }
      }
      if (std::find(names.begin(), names.end(), k.name) == names.end()) {
        std::string msg = "unknown key";
        const std::string s = suggestion(k.name, names);
        if (!s.empty()) {
          msg += " (did you mean " + quote_text(s) + "?)";
        } else {
          msg += " (expected one of: ";
          for (std::size_t n = 0; n < names.size(); ++n) {
            msg += (n ? ", " : "") + names[n];
          }
          msg += ")";
        }
        fail(ctx, k.mark, join(m_path, k.name), msg);
      }
    }
  }

  // The value of `key`, or nullptr when it is absent or null.
  const Value* find(std::string_view key) const {
    for (std::size_t i = 0; i < m_value.keys.size(); ++i) {
      if (m_value.keys[i].name == key) {
        const Value& v = m_value.items[i];
        return v.kind == Value::Kind::null ? nullptr : &v;
      }
    }
    return nullptr;
  }

  // The value of `key`; fails with "required" (where the key is, if it is
  // there with a null value) when it is absent or null.
  const Value& require(std::string_view key) const {
    for (std::size_t i = 0; i < m_value.keys.size(); ++i) {
      if (m_value.keys[i].name == key) {
        const Value& v = m_value.items[i];
        if (v.kind == Value::Kind::null) {
          fail(m_ctx, m_value.keys[i].mark, join(m_path, key), "required");
        }
        return v;
      }
    }
    fail_here(key, "required");
  }

  std::string path(std::string_view key) const { return join(m_path, key); }
  const std::string& path() const { return m_path; }
  Mark mark() const { return m_value.mark; }

  // Fails at this map (its key path + `key`).
  [[noreturn]] void fail_here(std::string_view key, const std::string& msg) const {
    fail(m_ctx, m_value.mark, join(m_path, key), msg);
  }

private:
  static std::string first_at(Mark m) {
    return m.known() ? " (first at line " + std::to_string(m.line) + ")" : std::string();
  }

  const Ctx& m_ctx;
  const Value& m_value;
  std::string m_path;
};

// Where `key` of a validated map is (the map itself if unknown).
Mark child_mark(const Value& map, std::string_view key) {
  for (std::size_t i = 0; i < map.keys.size(); ++i) {
    if (map.keys[i].name == key) {
      return map.items[i].mark;
    }
  }
  return map.mark;
}

const std::vector<Value>& get_list(const Ctx& ctx, const Value& v, const std::string& path) {
  if (v.kind != Value::Kind::sequence) {
    fail_type(ctx, v, path, "a list");
  }
  return v.items;
}

// A list of unique, non-empty strings.
std::vector<std::string> get_unique_strings(const Ctx& ctx, const Value& v,
                                            const std::string& path) {
  std::vector<std::string> out;
  const auto& items = get_list(ctx, v, path);
  for (std::size_t i = 0; i < items.size(); ++i) {
    std::string s = get_nonempty_string(ctx, items[i], index(path, i));
    const auto it = std::find(out.begin(), out.end(), s);
    if (it != out.end()) {
      fail(ctx, items[i].mark, index(path, i),
           "duplicate of " + index(path, static_cast<std::size_t>(it - out.begin())));
    }
    out.push_back(std::move(s));
  }
  return out;
}

// A map of strings to strings, in file order.
std::vector<std::pair<std::string, std::string>> get_string_map(const Ctx& ctx, const Value& v,
                                                                const std::string& path) {
  std::vector<std::pair<std::string, std::string>> out;
  if (v.kind != Value::Kind::map) {
    fail_type(ctx, v, path, "a map");
  }
  if (v.key_error) {
    fail(ctx, v.key_error_mark, path, "keys must be strings");
  }
  for (std::size_t i = 0; i < v.keys.size(); ++i) {
    const Key& k = v.keys[i];
    for (std::size_t j = 0; j < i; ++j) {
      if (v.keys[j].name == k.name) {
        fail(ctx, k.mark, join(path, k.name), "duplicate key");
      }
    }
    if (k.name.empty()) {
      fail(ctx, k.mark, path, "keys must not be empty");
    }
    const Value& item = v.items[i];
    if (item.kind == Value::Kind::null) {
      fail(ctx, item.mark, join(path, k.name), "must be a string, not null");
    }
    out.emplace_back(k.name, get_string(ctx, item, join(path, k.name)));
  }
  return out;
}

// ---------------------------------------------------------------------------
// Files and secrets

std::string trim_newlines(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) {
    s.pop_back();
  }
  return s;
}

// Where a *_file path points: absolute as written; relative in
// $CREDENTIALS_DIRECTORY if it exists there, else next to the config file.
fs::path resolve_file(const Ctx& ctx, const std::string& name) {
  fs::path p(name);
  if (p.is_absolute()) {
    return p;
  }
  if (const char* dir = std::getenv("CREDENTIALS_DIRECTORY"); dir != nullptr && *dir != '\0') {
    fs::path candidate = fs::path(dir) / p;
    std::error_code ec;
    if (fs::exists(candidate, ec)) {
      return candidate;
    }
  }
  return (ctx.base_dir / p).lexically_normal();
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

// Reads a whole file of at most `limit` bytes into `out`. On failure returns
// why ("No such file or directory"), which never quotes the contents.
std::optional<std::string> read_whole_file(const fs::path& p, std::size_t limit, std::string& out) {
  errno = 0;
  FilePtr f(std::fopen(p.c_str(), "rb"));
  if (!f) {
    return std::string(std::strerror(errno));
  }
  out.clear();
  char buf[8192];
  while (true) {
    errno = 0;
    const std::size_t n = std::fread(buf, 1, sizeof buf, f.get());
    out.append(buf, n);
    if (out.size() > limit) {
      out.clear();
      return "larger than " + std::to_string(limit) + " bytes";
    }
    if (n < sizeof buf) {
      if (std::ferror(f.get())) {
        out.clear();
        return std::string(std::strerror(errno));
      }
      return std::nullopt;
    }
  }
}

// A secret given as `key: value` or `key_file: path`; nullopt when neither.
// Neither the value nor the file's contents ever appear in an error.
std::optional<std::string> get_secret(const Ctx& ctx, const MapReader& map, const char* key) {
  const std::string file_key = std::string(key) + "_file";
  const Value* inline_value = map.find(key);
  const Value* file_value = map.find(file_key);
  if (inline_value != nullptr && file_value != nullptr) {
    fail(ctx, file_value->mark, map.path(file_key), std::string("cannot be combined with ") + key);
  }
  if (inline_value != nullptr) {
    std::string s = get_string(ctx, *inline_value, map.path(key));
    if (s.empty()) {
      fail(ctx, inline_value->mark, map.path(key), "must not be empty");
    }
    return s;
  }
  if (file_value != nullptr) {
    const std::string name = get_nonempty_string(ctx, *file_value, map.path(file_key));
    if (!ctx.read_files) {
      fail(ctx, file_value->mark, map.path(file_key), "files cannot be read here");
    }
    const fs::path p = resolve_file(ctx, name);
    std::string s;
    if (const auto error = read_whole_file(p, k_max_secret_file_bytes, s)) {
      fail(ctx, file_value->mark, map.path(file_key), "cannot read " + p.string() + ": " + *error);
    }
    s = trim_newlines(std::move(s));
    if (s.empty()) {
      fail(ctx, file_value->mark, map.path(file_key), p.string() + " is empty");
    }
    return s;
  }
  return std::nullopt;
}

// An optional path to a CA bundle: resolved like *_file paths, and readable.
std::string get_ca_file(const Ctx& ctx, const MapReader& map) {
  const Value* v = map.find("ca_file");
  if (v == nullptr) {
    return {};
  }
  const std::string name = get_nonempty_string(ctx, *v, map.path("ca_file"));
  const fs::path p = resolve_file(ctx, name);
  if (ctx.read_files) {
    errno = 0;
    FilePtr f(std::fopen(p.c_str(), "rb"));
    if (!f) {
      fail(ctx, v->mark, map.path("ca_file"),
           "cannot read " + p.string() + ": " + std::strerror(errno));
    }
  }
  return p.string();
}

// ---------------------------------------------------------------------------
// URLs and addresses

bool is_http_url(std::string_view s) {
  const std::string lower = lowercase(s);
  std::size_t rest = 0;
  if (lower.rfind("http://", 0) == 0) {
    rest = 7;
  } else if (lower.rfind("https://", 0) == 0) {
    rest = 8;
  } else {
    return false;
  }
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) {
      return false;
    }
  }
  const std::size_t host_end = s.find_first_of("/?#", rest);
  const std::string_view authority =
      s.substr(rest, host_end == std::string_view::npos ? std::string_view::npos : host_end - rest);
  const std::size_t at = authority.rfind('@');
  const std::string_view host = at == std::string_view::npos ? authority : authority.substr(at + 1);
  return !host.empty() && host[0] != ':';
}

bool is_webhook_name(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

// RFC 9110 token characters.
bool is_header_name(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  });
}

bool is_header_value(std::string_view s) {
  return std::none_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && c != '\t') || u == 0x7f;
  });
}

// Standard-alphabet base64 without padding.
std::optional<std::string> base64_decode(std::string_view s) {
  if (s.size() % 4 == 1) {
    return std::nullopt;
  }
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    int v = 0;
    if (c >= 'A' && c <= 'Z') {
      v = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      v = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      v = c - '0' + 52;
    } else if (c == '+') {
      v = 62;
    } else if (c == '/') {
      v = 63;
    } else {
      return std::nullopt;
    }
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

std::string get_listen(const Ctx& ctx, const MapReader& map, const std::string& fallback) {
  const Value* v = map.find("listen");
  if (v == nullptr) {
    return fallback;
  }
  std::string s = get_string(ctx, *v, map.path("listen"));
  if (!s.empty() && !parse_listen_address(s)) {
    fail(ctx, v->mark, map.path("listen"),
         "invalid address " + quote_text(s) +
             " (use host:port with an IPv4 address, [IPv6] or localhost, port 0..65535; "
             "\"\" disables)");
  }
  return s;
}

// ---------------------------------------------------------------------------
// Sections

DingTalk parse_dingtalk(const Ctx& ctx, const Value& v, const std::string& path) {
  DingTalk d;
  const MapReader map(ctx, v, path,
                      {"endpoint", "auth", "robot_code", "requests_per_second", "request_timeout",
                       "page_size", "ca_file"});
  if (const Value* e = map.find("endpoint")) {
    std::string s = get_string(ctx, *e, map.path("endpoint"));
    while (!s.empty() && s.back() == '/') {
      s.pop_back();
    }
    if (!is_http_url(s) || s.find_first_of("?#") != std::string::npos) {
      fail(ctx, e->mark, map.path("endpoint"),
           "must be an http:// or https:// base URL without query or fragment");
    }
    d.endpoint = std::move(s);
  }

  const MapReader auth(ctx, map.require("auth"), map.path("auth"),
                       {"app_key", "app_secret", "app_secret_file", "suite_key", "suite_secret",
                        "suite_secret_file", "auth_corp_id", "suite_ticket", "suite_ticket_file",
                        "access_token", "access_token_file"});
  const auto any = [&](std::initializer_list<const char*> keys) {
    return std::any_of(keys.begin(), keys.end(),
                       [&](const char* k) { return auth.find(k) != nullptr; });
  };
  const bool internal = any({"app_key", "app_secret", "app_secret_file"});
  const bool third_party = any({"suite_key", "suite_secret", "suite_secret_file", "auth_corp_id",
                                "suite_ticket", "suite_ticket_file"});
  const bool fixed = any({"access_token", "access_token_file"});
  if (int(internal) + int(third_party) + int(fixed) != 1) {
    fail(ctx, auth.mark(), auth.path(), std::string(k_auth_forms));
  }
  const auto required_secret = [&](const char* key) {
    auto s = get_secret(ctx, auth, key);
    if (!s) {
      auth.fail_here(key, std::string("required (or ") + key + "_file)");
    }
    return std::move(*s);
  };
  if (internal) {
    d.auth_kind = DingTalk::AuthKind::internal_app;
    d.internal_app.app_key =
        get_nonempty_string(ctx, auth.require("app_key"), auth.path("app_key"));
    d.internal_app.app_secret = required_secret("app_secret");
  } else if (third_party) {
    d.auth_kind = DingTalk::AuthKind::third_party;
    d.third_party.suite_key =
        get_nonempty_string(ctx, auth.require("suite_key"), auth.path("suite_key"));
    d.third_party.suite_secret = required_secret("suite_secret");
    d.third_party.auth_corp_id =
        get_nonempty_string(ctx, auth.require("auth_corp_id"), auth.path("auth_corp_id"));
    d.third_party.suite_ticket = required_secret("suite_ticket");
  } else {
    d.auth_kind = DingTalk::AuthKind::fixed_token;
    d.fixed_token.access_token = required_secret("access_token");
  }

  if (const Value* r = map.find("robot_code")) {
    d.robot_code = get_string(ctx, *r, map.path("robot_code"));
  }
  if (const Value* r = map.find("requests_per_second")) {
    d.requests_per_second = get_number(ctx, *r, map.path("requests_per_second"));
    if (!(d.requests_per_second > 0)) {
      fail(ctx, r->mark, map.path("requests_per_second"), "must be greater than 0");
    }
  }
  if (const Value* t = map.find("request_timeout")) {
    d.request_timeout = get_positive_duration(ctx, *t, map.path("request_timeout"));
  }
  if (const Value* p = map.find("page_size")) {
    const std::int64_t n = get_int(ctx, *p, map.path("page_size"));
    if (n < 1 || n > k_max_page_size) {
      fail(ctx, p->mark, map.path("page_size"),
           "must be between 1 and " + std::to_string(k_max_page_size));
    }
    d.page_size = static_cast<int>(n);
  }
  d.ca_file = get_ca_file(ctx, map);
  return d;
}

Poll parse_poll(const Ctx& ctx, const Value& v, const std::string& path) {
  Poll p;
  const MapReader map(ctx, v, path, {"schedule", "not_ready_grace", "max_age"});
  if (const Value* s = map.find("schedule")) {
    const auto& items = get_list(ctx, *s, map.path("schedule"));
    if (items.empty()) {
      fail(ctx, s->mark, map.path("schedule"), "must have at least one step");
    }
    p.schedule.clear();
    for (std::size_t i = 0; i < items.size(); ++i) {
      const std::string step_path = index(map.path("schedule"), i);
      const MapReader step(ctx, items[i], step_path, {"until", "every"});
      if (items[i].kind == Value::Kind::null) {
        fail(ctx, items[i].mark, step_path, "must be a map with until and every");
      }
      ScheduleStep out;
      out.every = get_positive_duration(ctx, step.require("every"), step.path("every"));
      const Value* until = step.find("until");
      const bool last = i + 1 == items.size();
      if (last && until != nullptr) {
        fail(ctx, until->mark, step.path("until"),
             "must not be set on the last step (it applies until max_age)");
      }
      if (!last && until == nullptr) {
        step.fail_here("until", "required on every step but the last");
      }
      if (until != nullptr) {
        out.until = get_positive_duration(ctx, *until, step.path("until"));
        if (i > 0 && *out.until <= *p.schedule.back().until) {
          fail(ctx, until->mark, step.path("until"),
               "must be greater than " + index(map.path("schedule"), i - 1) + ".until");
        }
      }
      p.schedule.push_back(out);
    }
  }
  if (const Value* g = map.find("not_ready_grace")) {
    p.not_ready_grace = get_duration(ctx, *g, map.path("not_ready_grace"));
  }
  if (const Value* m = map.find("max_age")) {
    p.max_age = get_positive_duration(ctx, *m, map.path("max_age"));
  }
  return p;
}

State parse_state(const Ctx& ctx, const Value& v, const std::string& path) {
  State s;
  const MapReader map(ctx, v, path, {"path"});
  const std::string p = get_nonempty_string(ctx, map.require("path"), map.path("path"));
  // SQLite's own names (":memory:", "file:" URIs) are kept as written.
  if (p == ":memory:" || p.rfind("file:", 0) == 0 || fs::path(p).is_absolute()) {
    s.path = p;
  } else {
    s.path = (ctx.base_dir / p).lexically_normal().string();
  }
  return s;
}

Metrics parse_metrics(const Ctx& ctx, const Value& v, const std::string& path) {
  Metrics m;
  const MapReader map(ctx, v, path, {"listen"});
  m.listen = get_listen(ctx, map, m.listen);
  return m;
}

Api parse_api(const Ctx& ctx, const Value& v, const std::string& path) {
  Api a;
  const MapReader map(ctx, v, path, {"listen", "token", "token_file"});
  a.listen = get_listen(ctx, map, a.listen);
  a.token = get_secret(ctx, map, "token").value_or("");
  if (!a.listen.empty() && a.token.empty() &&
      !is_loopback_host(parse_listen_address(a.listen)->host)) {
    const Value* l = map.find("listen");
    fail(ctx, l != nullptr ? l->mark : map.mark(), map.path("token_file"),
         "required when api.listen is not a loopback address");
  }
  return a;
}

Webhook parse_webhook(const Ctx& ctx, const Value& v, const std::string& path) {
  Webhook w;
  const MapReader map(
      ctx, v, path,
      {"name", "url", "secret", "secret_file", "headers", "timeout", "ca_file", "events"});
  if (v.kind == Value::Kind::null) {
    fail(ctx, v.mark, path, "must be a map with name, url and secret");
  }
  const Value& name = map.require("name");
  w.name = get_string(ctx, name, map.path("name"));
  if (!is_webhook_name(w.name)) {
    fail(ctx, name.mark, map.path("name"),
         "invalid name " + quote_text(w.name) + " (use a-z, 0-9, _ and -)");
  }
  const Value& url = map.require("url");
  w.url = get_string(ctx, url, map.path("url"));
  if (!is_http_url(w.url)) {
    // The URL is not printed: it may carry a token.
    fail(ctx, url.mark, map.path("url"), "must be an http:// or https:// URL");
  }
  auto secret = get_secret(ctx, map, "secret");
  if (!secret) {
    map.fail_here("secret", "required (or secret_file)");
  }
  if (!webhook_signing_key(*secret)) {
    const Value* s = map.find("secret");
    const bool inline_secret = s != nullptr;
    if (!inline_secret) {
      s = map.find("secret_file");
    }
    fail(ctx, s->mark, map.path(inline_secret ? "secret" : "secret_file"),
         "must be \"whsec_\" followed by base64 of 1 to " +
             std::to_string(k_max_webhook_key_bytes) + " bytes");
  }
  w.secret = std::move(*secret);
  if (const Value* h = map.find("headers")) {
    w.headers = get_string_map(ctx, *h, map.path("headers"));
    static const std::set<std::string> reserved = {"webhook-id",        "webhook-timestamp",
                                                   "webhook-signature", "content-type",
                                                   "content-length",    "host"};
    for (std::size_t i = 0; i < w.headers.size(); ++i) {
      const auto& [hname, hvalue] = w.headers[i];
      const Value& item = h->items[i];
      const std::string hpath = join(map.path("headers"), hname);
      if (!is_header_name(hname)) {
        fail(ctx, h->keys[i].mark, hpath, "invalid header name");
      }
      if (reserved.count(lowercase(hname)) != 0) {
        fail(ctx, h->keys[i].mark, hpath, "is set by readreceiptd and cannot be overridden");
      }
      // Header values are not printed: they often hold credentials.
      if (!is_header_value(hvalue)) {
        fail(ctx, item.mark, hpath, "header value must not contain control characters");
      }
    }
  }
  if (const Value* t = map.find("timeout")) {
    w.timeout = get_positive_duration(ctx, *t, map.path("timeout"));
  }
  w.ca_file = get_ca_file(ctx, map);
  if (const Value* e = map.find("events")) {
    const auto names = get_unique_strings(ctx, *e, map.path("events"));
    if (names.empty()) {
      fail(ctx, e->mark, map.path("events"), "must list at least one event (or be left out)");
    }
    w.events.clear();
    for (std::size_t i = 0; i < names.size(); ++i) {
      const auto type = event_type_from_string(names[i]);
      if (!type) {
        const std::vector<std::string> known = {to_string(EventType::message_read),
                                                to_string(EventType::tracking_stopped)};
        fail(ctx, e->items[i].mark, index(map.path("events"), i),
             "unknown event " + quote_text(names[i]) + did_you_mean(names[i], known) +
                 " (known: message.read, message.tracking_stopped)");
      }
      w.events.push_back(*type);
    }
  }
  return w;
}

MessageSpec parse_message(const Ctx& ctx, const Value& v, const std::string& path,
                          const std::string& default_robot_code,
                          const std::vector<std::string>& webhook_names) {
  MessageSpec m;
  const MapReader map(ctx, v, path,
                      {"process_query_key", "open_conversation_id", "robot_code",
                       "expected_readers", "expected_reader_count", "sent_at", "webhooks",
                       "labels"});
  if (v.kind == Value::Kind::null) {
    fail(ctx, v.mark, path, "must be a map with process_query_key");
  }
  m.process_query_key =
      get_nonempty_string(ctx, map.require("process_query_key"), map.path("process_query_key"));
  if (const Value* c = map.find("open_conversation_id")) {
    m.open_conversation_id = get_string(ctx, *c, map.path("open_conversation_id"));
  }
  if (const Value* r = map.find("robot_code")) {
    m.robot_code = get_string(ctx, *r, map.path("robot_code"));
  }
  if (m.robot_code.empty()) {
    m.robot_code = default_robot_code;
  }
  if (m.robot_code.empty()) {
    map.fail_here("robot_code", "required (no dingtalk.robot_code default)");
  }
  const Value* readers = map.find("expected_readers");
  const Value* count = map.find("expected_reader_count");
  if (readers != nullptr && count != nullptr) {
    fail(ctx, count->mark, map.path("expected_reader_count"),
         "cannot be combined with expected_readers");
  }
  if (readers != nullptr) {
    m.expected_readers = get_unique_strings(ctx, *readers, map.path("expected_readers"));
    if (m.expected_readers.empty()) {
      fail(ctx, readers->mark, map.path("expected_readers"),
           "must list at least one reader (or be left out)");
    }
  }
  if (count != nullptr) {
    m.expected_reader_count = get_int(ctx, *count, map.path("expected_reader_count"));
    if (*m.expected_reader_count < 1) {
      fail(ctx, count->mark, map.path("expected_reader_count"), "must be at least 1");
    }
  }
  if (const Value* s = map.find("sent_at")) {
    const std::string text = get_string(ctx, *s, map.path("sent_at"));
    TimePoint t;
    if (!parse_rfc3339(text, t)) {
      fail(ctx, s->mark, map.path("sent_at"),
           "invalid time " + quote_text(text) + " (use RFC 3339, e.g. 2026-11-25T10:00:00Z)");
    }
    m.sent_at = t;
  }
  if (const Value* w = map.find("webhooks")) {
    auto names = get_unique_strings(ctx, *w, map.path("webhooks"));
    for (std::size_t i = 0; i < names.size(); ++i) {
      if (std::find(webhook_names.begin(), webhook_names.end(), names[i]) == webhook_names.end()) {
        fail(ctx, w->items[i].mark, index(map.path("webhooks"), i),
             "unknown webhook " + quote_text(names[i]) + did_you_mean(names[i], webhook_names));
      }
    }
    m.webhooks = std::move(names);
  }
  if (const Value* l = map.find("labels")) {
    for (auto& [key, value] : get_string_map(ctx, *l, map.path("labels"))) {
      m.labels.emplace(std::move(key), std::move(value));
    }
  }
  return m;
}

Config parse_config(const Ctx& ctx, const Value& root, const std::string& file) {
  Config c;
  c.path = file;
  if (root.kind != Value::Kind::map && root.kind != Value::Kind::null) {
    fail(ctx, root.mark, "",
         std::string("the configuration must be a map of sections, not ") + kind_name(root));
  }
  const MapReader map(ctx, root, "",
                      {"dingtalk", "poll", "state", "metrics", "api", "webhooks", "messages"});
  c.dingtalk = parse_dingtalk(ctx, map.require("dingtalk"), "dingtalk");
  if (const Value* v = map.find("poll")) {
    c.poll = parse_poll(ctx, *v, "poll");
  }
  if (const Value* v = map.find("state")) {
    c.state = parse_state(ctx, *v, "state");
  }
  if (const Value* v = map.find("metrics")) {
    c.metrics = parse_metrics(ctx, *v, "metrics");
  }
  if (const Value* v = map.find("api")) {
    c.api = parse_api(ctx, *v, "api");
  }
  std::vector<std::string> webhook_names;
  if (const Value* v = map.find("webhooks")) {
    const auto& items = get_list(ctx, *v, "webhooks");
    for (std::size_t i = 0; i < items.size(); ++i) {
      Webhook w = parse_webhook(ctx, items[i], index("webhooks", i));
      const auto it = std::find(webhook_names.begin(), webhook_names.end(), w.name);
      if (it != webhook_names.end()) {
        const auto first = static_cast<std::size_t>(it - webhook_names.begin());
        fail(ctx, child_mark(items[i], "name"), index("webhooks", i) + ".name",
             "duplicate of " + index("webhooks", first) + ".name (" + quote_text(w.name) + ")");
      }
      webhook_names.push_back(w.name);
      c.webhooks.push_back(std::move(w));
    }
  }
  if (const Value* v = map.find("messages")) {
    const auto& items = get_list(ctx, *v, "messages");
    // Each key's first index: a hash lookup per item, so that a file with
    // 100,000 messages loads in a second, not minutes (bench/scale.sh).
    std::unordered_map<std::string, std::size_t> first_index;
    first_index.reserve(items.size());
    c.messages.reserve(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
      MessageSpec m =
          parse_message(ctx, items[i], index("messages", i), c.dingtalk.robot_code, webhook_names);
      const auto [it, inserted] = first_index.try_emplace(m.process_query_key, i);
      if (!inserted) {
        fail(ctx, child_mark(items[i], "process_query_key"),
             index("messages", i) + ".process_query_key",
             "duplicate of " + index("messages", it->second) + ".process_query_key");
      }
      c.messages.push_back(std::move(m));
    }
  }
  return c;
}

fs::path base_dir_of(const std::string& file) {
  fs::path dir = fs::path(file).parent_path();
  std::error_code ec;
  fs::path abs = fs::absolute(dir.empty() ? fs::path(".") : dir, ec);
  return ec ? dir : abs.lexically_normal();
}

} // namespace

// ---------------------------------------------------------------------------
// Public functions

std::optional<Millis> parse_duration(const std::string& text) {
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
    ++digits;
  }
  if (digits == 0) {
    return std::nullopt;
  }
  const std::string_view unit = std::string_view(text).substr(digits);
  std::int64_t factor = 0;
  if (unit == "ms") {
    factor = 1;
  } else if (unit == "s") {
    factor = 1'000;
  } else if (unit == "m") {
    factor = 60'000;
  } else if (unit == "h") {
    factor = 3'600'000;
  } else if (unit == "d") {
    factor = 86'400'000;
  } else {
    return std::nullopt;
  }
  std::int64_t n = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + digits, n);
  if (ec != std::errc() || ptr != text.data() + digits) {
    return std::nullopt;
  }
  if (n > std::numeric_limits<Millis::rep>::max() / factor) {
    return std::nullopt;
  }
  return Millis{n * factor};
}

std::optional<ListenAddress> parse_listen_address(const std::string& text) {
  std::string host;
  std::string port;
  if (!text.empty() && text[0] == '[') {
    const std::size_t close = text.find("]:");
    if (close == std::string::npos) {
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    in6_addr a6{};
    if (inet_pton(AF_INET6, host.c_str(), &a6) != 1) {
      return std::nullopt;
    }
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string::npos) {
      return std::nullopt;
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    in_addr a4{};
    if (host != "localhost" && inet_pton(AF_INET, host.c_str(), &a4) != 1) {
      return std::nullopt;
    }
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  const int n = std::stoi(port);
  if (n > 65535) {
    return std::nullopt;
  }
  return ListenAddress{host, static_cast<std::uint16_t>(n)};
}

bool is_loopback_host(const std::string& host) {
  if (host == "localhost") {
    return true;
  }
  in_addr a4{};
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) {
    return (ntohl(a4.s_addr) >> 24) == 127;
  }
  in6_addr a6{};
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&a6)) {
      return true;
    }
    return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
  }
  return false;
}

std::optional<std::string> webhook_signing_key(const std::string& secret) {
  if (secret.rfind(k_webhook_secret_prefix, 0) != 0) {
    return std::nullopt;
  }
  std::string_view b64 = std::string_view(secret).substr(k_webhook_secret_prefix.size());
  // Padding is optional, but when present it must be complete.
  const std::size_t size = b64.size();
  std::size_t pad = 0;
  while (!b64.empty() && b64.back() == '=') {
    b64.remove_suffix(1);
    ++pad;
  }
  if (pad > 0 && (pad > 2 || size % 4 != 0)) {
    return std::nullopt;
  }
  auto key = base64_decode(b64);
  if (!key || key->empty() || key->size() > k_max_webhook_key_bytes) {
    return std::nullopt;
  }
  return key;
}

Config load_string(const std::string& yaml, const std::string& path) {
  TreeBuilder builder{path};
  std::optional<YAML::Node> doc;
  try {
    const DocumentScan scan = scan_documents(yaml);
    if (scan.stuck) {
      builder.fail(mark_of(scan.stuck_at), "invalid YAML: unexpected token");
    }
    if (scan.first_nodes.size() > 1) {
      Mark m;
      for (std::size_t i = 1; i < scan.first_nodes.size() && !m.known(); ++i) {
        m = mark_of(scan.first_nodes[i]);
      }
      builder.fail(m, "the file must hold one YAML document, not " +
                          std::to_string(scan.first_nodes.size()));
    }
    if (scan.first_nodes.size() == 1) {
      doc = YAML::Load(yaml);
    }
  } catch (const YAML::Exception& e) {
    builder.fail(mark_of(e.mark), "invalid YAML: " + e.msg);
  }
  const Value root = doc ? builder.from_yaml(*doc, Mark{1, 1}, 0) : Value{};
  Ctx ctx;
  ctx.file = path;
  ctx.expand_env = true;
  ctx.read_files = true;
  ctx.base_dir = base_dir_of(path);
  return parse_config(ctx, root, path);
}

Config load_file(const std::string& path) {
  std::string text;
  if (const auto error = read_whole_file(fs::path(path), k_max_config_bytes, text)) {
    throw ConfigError(path + ": cannot read the configuration: " + *error);
  }
  return load_string(text, path);
}

MessageSpec parse_message_json(const std::string& json, const Config& defaults) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json);
  } catch (const nlohmann::json::parse_error& e) {
    throw ConfigError("invalid JSON at byte " + std::to_string(e.byte));
  } catch (const nlohmann::json::exception&) {
    // out_of_range.406: a number beyond a double's range ("1e400").
    throw ConfigError("invalid JSON: a number is out of range");
  }
  if (!j.is_object()) {
    throw ConfigError("the message must be a JSON object");
  }
  const Value root = from_json(j, 0);
  std::vector<std::string> webhook_names;
  for (const auto& w : defaults.webhooks) {
    webhook_names.push_back(w.name);
  }
  const Ctx ctx; // no file, no ${NAME}, no files
  return parse_message(ctx, root, "", defaults.dingtalk.robot_code, webhook_names);
}

} // namespace rrd::config
