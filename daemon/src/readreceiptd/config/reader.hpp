// The typed reader of a configuration tree (config/tree.hpp): strings,
// numbers, durations, lists and maps read out of nodes, each under its key
// path ("messages[3].process_query_key"), with `${NAME}` expanded (YAML
// only), `*_file` secrets read, and duplicate and unknown keys refused (with
// a suggestion for near misses). Nothing here stops at the first error: each
// is recorded with its place in a Context, and a reader that fails gives
// nothing, so that its neighbours are still read and checked. What the keys
// of readreceiptd mean is config/schema.cpp's business, not this file's.
// A Context belongs to one load on one thread.
#pragma once

#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/config/config.hpp"
#include "readreceiptd/config/tree.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace rrd::config::reader {

using tree::Kind;
using tree::Mark;
using tree::Value;

// Errors kept to be sorted; past this they are only counted (a broken file
// of 16 MiB can have millions).
inline constexpr std::size_t k_max_kept_errors = 1'000;
inline constexpr std::size_t k_max_secret_file_bytes = 64 * 1024;

struct Options {
  std::string file;               // names the input in every message; "" (the API): no place at all
  bool expand_env = false;        // ${NAME} in YAML scalars
  bool read_files = false;        // *_file keys may be read
  std::filesystem::path base_dir; // where relative *_file paths are anchored
  TimePoint now;                  // for checks against the present (sent_at)
};

// One load's options and findings.
class Context {
public:
  explicit Context(Options options) : m_options(std::move(options)) {}

  const Options& options() const { return m_options; }

  // Records "file:line:col: path: message".
  void error(Mark where, std::string_view path, std::string_view message);
  void warning(Mark where, std::string_view path, std::string_view message);

  std::size_t error_count() const { return m_error_count; }
  // The errors in file order (those without a place first), at most
  // config::k_max_reported_errors, then "... and N more errors" when there
  // were more.
  std::vector<std::string> errors() const;
  std::vector<std::string> warnings() const;

private:
  struct Entry {
    Mark mark;
    std::string text;
  };
  std::string format(Mark where, std::string_view path, std::string_view message) const;

  Options m_options;
  std::vector<Entry> m_errors;
  std::size_t m_error_count = 0;
  std::vector<std::string> m_warnings;
};

// ---------------------------------------------------------------------------
// Text

// "a.b"; "b" when path is ""; a key with control characters quoted.
std::string join(std::string_view path, std::string_view key);
std::string index(std::string_view path, std::size_t i); // "a[3]"
// "\"text\"" with quotes, backslashes and control bytes escaped.
std::string quote_text(std::string_view s);
std::string lowercase(std::string_view s);
// " (did you mean \"x\"?)" for the candidate a near miss was probably meant
// to be, or "".
std::string did_you_mean(std::string_view typo, const std::vector<std::string>& candidates);
// "a string", "a list", ... for "must be X, not Y".
const char* kind_name(Value v);
void type_error(Context& ctx, Value v, std::string_view path, std::string_view wanted);

// ---------------------------------------------------------------------------
// Scalars. Each returns nothing after recording why.
//
// A YAML scalar (Kind::plain) is read as whatever the key wants; JSON's
// types are strict (a number is not a string).

std::optional<std::string> read_string(Context& ctx, Value v, const std::string& path);
std::optional<std::string> read_nonempty_string(Context& ctx, Value v, const std::string& path);
std::optional<std::int64_t> read_integer(Context& ctx, Value v, const std::string& path);
std::optional<double> read_number(Context& ctx, Value v, const std::string& path);
// true/false (YAML's plain true/false, any case; JSON booleans).
std::optional<bool> read_bool(Context& ctx, Value v, const std::string& path);
std::optional<Millis> read_duration(Context& ctx, Value v, const std::string& path);
std::optional<Millis> read_positive_duration(Context& ctx, Value v, const std::string& path);

// Why `s` cannot be an identifier that goes into JSON bodies and logs: a
// C0 or C1 control character or DEL, or bytes that are not UTF-8; "" when
// it can. Names the character and its byte offset, never the text.
std::string identifier_problem(std::string_view s);
// A string without control characters, valid UTF-8 (ids, labels).
std::optional<std::string> read_identifier(Context& ctx, Value v, const std::string& path);
std::optional<std::string> read_nonempty_identifier(Context& ctx, Value v, const std::string& path);

// The items of a list (nothing, and an error, when `v` is not one).
std::optional<Value> read_list(Context& ctx, Value v, const std::string& path);

// ---------------------------------------------------------------------------
// Maps

// A map node read key by key. Every key a reader asks for is declared;
// finish() refuses the keys that nobody asked for. The constructor refuses
// a node that is not a map (a null one reads as an empty map), keys that are
// not strings, and repeated keys. Use read_map(), which calls finish().
class MapReader {
public:
  MapReader(Context& ctx, Value v, std::string path);
  MapReader(const MapReader&) = delete;
  MapReader& operator=(const MapReader&) = delete;

  Context& ctx() const { return m_ctx; }
  // False when the node was not a map: then every key reads as absent and
  // nothing more is reported about it.
  bool valid() const { return m_valid; }
  Value node() const { return m_node; }
  Mark mark() const { return m_node.mark(); }
  const std::string& path() const { return m_path; }
  std::string path(std::string_view key) const { return join(m_path, key); }

  // Declares `key`; its value, or nothing when it is absent or null.
  std::optional<Value> find(std::string_view key);
  // Declares `key`; whether it is written at all, null or not.
  bool has(std::string_view key);
  // Declares `key`; its value, or "required" (where the key is, when it is
  // written with a null value; else at the map).
  std::optional<Value> require(std::string_view key, std::string_view message = "required");

  // Reads an optional `key` with `rule` (a callable (Context&, Value,
  // path) -> std::optional<T>) into `out`, left as it is when the key is
  // absent or the value is refused. True when `out` was set.
  template <class T, class Rule> bool read(std::string_view key, T& out, Rule&& rule) {
    const auto v = find(key);
    return v && assign(*v, key, out, rule);
  }
  // The same for a key that must be there.
  template <class T, class Rule> bool read_required(std::string_view key, T& out, Rule&& rule) {
    const auto v = require(key);
    return v && assign(*v, key, out, rule);
  }

  // Records an error about `key` at this map ("required" and the like);
  // nothing when the node was not a map.
  void error(std::string_view key, std::string_view message) const;
  // Where `key`'s value is (the map itself when the key is absent).
  Mark mark_of(std::string_view key) const;

  // Refuses every key that was not declared.
  void finish();

private:
  template <class T, class Rule> bool assign(Value v, std::string_view key, T& out, Rule& rule) {
    auto r = rule(m_ctx, v, path(key));
    if (!r) {
      return false;
    }
    out = T(std::move(*r));
    return true;
  }
  // The entry of `key` (its first occurrence), or -1.
  std::ptrdiff_t entry(std::string_view key) const;
  void declare(std::string_view key);

  Context& m_ctx;
  Value m_node;
  std::string m_path;
  bool m_valid = true;
  std::vector<std::string> m_declared;
  std::vector<std::ptrdiff_t> m_repeats; // by entry: see repeated_keys()
};

// Reads map `v` at `path` with `body(MapReader&)`, then refuses the keys
// that `body` did not declare.
template <class Body> void read_map(Context& ctx, Value v, const std::string& path, Body&& body) {
  MapReader map(ctx, v, path);
  body(map);
  map.finish();
}

// A section: the optional map under `key`, read with `body(MapReader&)`.
template <class Body> void read_section(MapReader& parent, std::string_view key, Body&& body) {
  if (const auto v = parent.find(key)) {
    read_map(parent.ctx(), *v, parent.path(key), body);
  }
}

// For each entry of map `v`: the entry whose key it repeats, or -1 (also
// for keys that are not scalars). Linear in the entries.
std::vector<std::ptrdiff_t> repeated_keys(Value v);

// A list of unique strings, each read with `element` (a rule); the ones
// that pass, in order, and nothing when `v` is not a list.
template <class Rule>
std::optional<std::vector<std::string>>
read_unique_strings(Context& ctx, Value v, const std::string& path, Rule&& element);

// One entry of a map of strings to strings.
struct StringEntry {
  std::string key;
  std::string value;
  Mark key_mark;
  Mark value_mark;
};
// A map of strings to strings, in file order: keys non-empty and unique,
// values read with `value_rule`; the entries that pass, and nothing when
// `v` is not a map.
template <class Rule>
std::optional<std::vector<StringEntry>> read_string_map(Context& ctx, Value v,
                                                        const std::string& path, Rule&& value_rule);

// ---------------------------------------------------------------------------
// Files and secrets

// Where a *_file path points: absolute as written; relative in
// $CREDENTIALS_DIRECTORY if it exists there, else next to the config file.
std::filesystem::path resolve_file(const Context& ctx, const std::string& name);
// Reads a whole file of at most `limit` bytes into `out`. On failure returns
// why ("No such file or directory"), which never quotes the contents.
std::optional<std::string> read_whole_file(const std::filesystem::path& p, std::size_t limit,
                                           std::string& out);

// A secret given as `key: value` or `key_file: path` (both keys declared).
struct Secret {
  bool given = false;               // either key is written
  std::optional<std::string> value; // when it is also valid
  Mark mark;                        // where the one written is
  std::string path;                 // its key path
};
// Neither the value nor the file's contents ever appear in an error.
Secret read_secret(MapReader& map, std::string_view key);

// A path to a CA bundle (a rule): resolved like *_file paths, and readable.
std::optional<std::string> read_ca_file(Context& ctx, Value v, const std::string& path);

// ---------------------------------------------------------------------------
// Templates

template <class Rule>
std::optional<std::vector<std::string>>
read_unique_strings(Context& ctx, Value v, const std::string& path, Rule&& element) {
  const auto list = read_list(ctx, v, path);
  if (!list) {
    return std::nullopt;
  }
  std::vector<std::string> out;
  std::unordered_map<std::string, std::size_t> first; // each kept string's index in the list
  for (std::size_t i = 0; i < list->size(); ++i) {
    const std::string item_path = index(path, i);
    auto s = element(ctx, list->item(i), item_path);
    if (!s) {
      continue;
    }
    const auto [it, inserted] = first.try_emplace(*s, i);
    if (!inserted) {
      ctx.error(list->item(i).mark(), item_path, "duplicate of " + index(path, it->second));
      continue;
    }
    out.push_back(std::move(*s));
  }
  return out;
}

template <class Rule>
std::optional<std::vector<StringEntry>>
read_string_map(Context& ctx, Value v, const std::string& path, Rule&& value_rule) {
  if (v.kind() != Kind::map) {
    type_error(ctx, v, path, "a map");
    return std::nullopt;
  }
  std::vector<StringEntry> out;
  const auto repeats = repeated_keys(v);
  bool key_error = false;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const Value k = v.key(i);
    if (!k.is_scalar()) {
      if (!key_error) {
        ctx.error(k.mark(), path, "keys must be strings");
        key_error = true;
      }
      continue;
    }
    std::string name(k.text());
    if (name.empty()) {
      ctx.error(k.mark(), path, "keys must not be empty");
      continue;
    }
    const std::string entry_path = join(path, name);
    if (repeats[i] >= 0) {
      ctx.error(k.mark(), entry_path, "duplicate key");
      continue;
    }
    const Value item = v.item(i);
    if (item.is_null()) {
      ctx.error(item.mark(), entry_path, "must be a string, not null");
      continue;
    }
    if (auto value = value_rule(ctx, item, entry_path)) {
      out.push_back(StringEntry{std::move(name), std::move(*value), k.mark(), item.mark()});
    }
  }
  return out;
}

} // namespace rrd::config::reader
