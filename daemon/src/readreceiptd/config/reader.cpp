// The typed reader: see reader.hpp.
#include "readreceiptd/config/reader.hpp"

#include "readreceiptd/config/config.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <system_error>

namespace rrd::config::reader {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view k_duration_hint = "(use e.g. 500ms, 15s, 10m, 2h, 7d)";

} // namespace

// ---------------------------------------------------------------------------
// Context

std::string Context::format(Mark where, std::string_view path, std::string_view message) const {
  std::string text;
  if (!m_options.file.empty()) {
    text = m_options.file;
    if (where.known()) {
      text += ":" + std::to_string(where.line) + ":" + std::to_string(where.column);
    }
    text += ": ";
  }
  if (!path.empty()) {
    text.append(path);
    text += ": ";
  }
  text.append(message);
  return text;
}

void Context::error(Mark where, std::string_view path, std::string_view message) {
  ++m_error_count;
  if (m_errors.size() < k_max_kept_errors) {
    m_errors.push_back(Entry{where, format(where, path, message)});
  }
}

void Context::warning(Mark where, std::string_view path, std::string_view message) {
  if (m_warnings.size() < k_max_kept_errors) {
    m_warnings.push_back(format(where, path, message));
  }
}

std::vector<std::string> Context::errors() const {
  std::vector<const Entry*> sorted;
  sorted.reserve(m_errors.size());
  for (const auto& e : m_errors) {
    sorted.push_back(&e);
  }
  std::stable_sort(sorted.begin(), sorted.end(), [](const Entry* a, const Entry* b) {
    return std::pair(a->mark.line, a->mark.column) < std::pair(b->mark.line, b->mark.column);
  });
  std::vector<std::string> out;
  for (std::size_t i = 0; i < sorted.size() && i < config::k_max_reported_errors; ++i) {
    out.push_back(sorted[i]->text);
  }
  if (m_error_count > out.size()) {
    const std::size_t more = m_error_count - out.size();
    out.push_back("... and " + std::to_string(more) + " more error" + (more == 1 ? "" : "s"));
  }
  return out;
}

std::vector<std::string> Context::warnings() const {
  return m_warnings;
}

// ---------------------------------------------------------------------------
// Text

std::string join(std::string_view path, std::string_view key) {
  std::string out(path);
  if (!out.empty()) {
    out += '.';
  }
  // A key with control characters (a NUL, an escape sequence) is quoted
  // and escaped: errors go to terminals and logs.
  const bool plain = std::none_of(key.begin(), key.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
  if (plain) {
    out.append(key);
  } else {
    out += quote_text(key);
  }
  return out;
}

std::string index(std::string_view path, std::size_t i) {
  std::string out(path);
  out += '[';
  out += std::to_string(i);
  out += ']';
  return out;
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

std::string lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return out;
}

namespace {

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

// Names longer than this are no near miss of any key (and would make the
// distance table large).
constexpr std::size_t k_max_suggestion_length = 64;

std::string suggestion(std::string_view typo, const std::vector<std::string>& candidates) {
  if (typo.size() > k_max_suggestion_length) {
    return {};
  }
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

} // namespace

std::string did_you_mean(std::string_view typo, const std::vector<std::string>& candidates) {
  const std::string s = suggestion(typo, candidates);
  return s.empty() ? std::string() : " (did you mean " + quote_text(s) + "?)";
}

const char* kind_name(Value v) {
  switch (v.kind()) {
  case Kind::null:
    return "null";
  case Kind::plain:
  case Kind::string:
    return "a string";
  case Kind::number:
    return "a number";
  case Kind::boolean:
    return "a boolean";
  case Kind::sequence:
    return "a list";
  case Kind::map:
    return "a map";
  }
  return "a value";
}

void type_error(Context& ctx, Value v, std::string_view path, std::string_view wanted) {
  ctx.error(v.mark(), path, "must be " + std::string(wanted) + ", not " + kind_name(v));
}

// ---------------------------------------------------------------------------
// Scalars

namespace {

// Replaces every ${NAME} in `text` with the environment variable NAME.
std::optional<std::string> expand_env(Context& ctx, Value v, const std::string& path,
                                      std::string_view text) {
  std::string out;
  std::size_t pos = 0;
  while (true) {
    const std::size_t start = text.find("${", pos);
    if (start == std::string_view::npos) {
      out.append(text.substr(pos));
      return out;
    }
    out.append(text.substr(pos, start - pos));
    const std::size_t end = text.find('}', start + 2);
    if (end == std::string_view::npos) {
      ctx.error(v.mark(), path, "unterminated \"${\" (write ${NAME} for an environment variable)");
      return std::nullopt;
    }
    const std::string name(text.substr(start + 2, end - start - 2));
    const bool valid = !name.empty() && !(name[0] >= '0' && name[0] <= '9') &&
                       std::all_of(name.begin(), name.end(), [](char c) {
                         return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                                (c >= '0' && c <= '9') || c == '_';
                       });
    if (!valid) {
      ctx.error(v.mark(), path,
                "invalid environment variable name " + quote_text(name) + " in ${...}");
      return std::nullopt;
    }
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) {
      ctx.error(v.mark(), path, "environment variable " + name + " is not set");
      return std::nullopt;
    }
    out += value;
    pos = end + 1;
  }
}

// The text of a scalar, ${NAME} expanded for YAML.
std::optional<std::string> scalar_text(Context& ctx, Value v, const std::string& path) {
  if (v.kind() == Kind::plain && ctx.options().expand_env) {
    return expand_env(ctx, v, path, v.text());
  }
  return std::string(v.text());
}

} // namespace

std::optional<std::string> read_string(Context& ctx, Value v, const std::string& path) {
  if (v.kind() != Kind::plain && v.kind() != Kind::string) {
    type_error(ctx, v, path, "a string");
    return std::nullopt;
  }
  return scalar_text(ctx, v, path);
}

std::optional<std::string> read_nonempty_string(Context& ctx, Value v, const std::string& path) {
  auto s = read_string(ctx, v, path);
  if (s && s->empty()) {
    ctx.error(v.mark(), path, "must not be empty");
    return std::nullopt;
  }
  return s;
}

std::optional<std::int64_t> read_integer(Context& ctx, Value v, const std::string& path) {
  if (v.kind() != Kind::plain && !(v.kind() == Kind::number && v.integer())) {
    type_error(ctx, v, path, "an integer");
    return std::nullopt;
  }
  const auto text = scalar_text(ctx, v, path);
  if (!text) {
    return std::nullopt;
  }
  std::int64_t out = 0;
  const char* first = text->data();
  const char* last = text->data() + text->size();
  const auto [ptr, ec] = std::from_chars(first, last, out);
  if (ec == std::errc::result_out_of_range) {
    ctx.error(v.mark(), path, "integer " + quote_text(*text) + " is out of range");
    return std::nullopt;
  }
  if (ec != std::errc() || ptr != last || text->empty()) {
    ctx.error(v.mark(), path, "must be an integer, not " + quote_text(*text));
    return std::nullopt;
  }
  return out;
}

std::optional<double> read_number(Context& ctx, Value v, const std::string& path) {
  if (v.kind() != Kind::plain && v.kind() != Kind::number) {
    type_error(ctx, v, path, "a number");
    return std::nullopt;
  }
  const auto text = scalar_text(ctx, v, path);
  if (!text) {
    return std::nullopt;
  }
  double out = 0;
  const char* first = text->data();
  const char* last = text->data() + text->size();
  const auto [ptr, ec] = std::from_chars(first, last, out);
  if (ec != std::errc() || ptr != last || text->empty() || !std::isfinite(out)) {
    ctx.error(v.mark(), path, "must be a number, not " + quote_text(*text));
    return std::nullopt;
  }
  return out;
}

std::optional<bool> read_bool(Context& ctx, Value v, const std::string& path) {
  if (v.kind() != Kind::plain && v.kind() != Kind::boolean) {
    type_error(ctx, v, path, "true or false");
    return std::nullopt;
  }
  const auto text = scalar_text(ctx, v, path);
  if (!text) {
    return std::nullopt;
  }
  const std::string lower = lowercase(*text);
  if (lower == "true") {
    return true;
  }
  if (lower == "false") {
    return false;
  }
  ctx.error(v.mark(), path, "must be true or false, not " + quote_text(*text));
  return std::nullopt;
}

std::optional<Millis> read_duration(Context& ctx, Value v, const std::string& path) {
  if (v.kind() != Kind::plain && v.kind() != Kind::string) {
    ctx.error(v.mark(), path,
              std::string("must be a duration string ") + std::string(k_duration_hint) + ", not " +
                  kind_name(v));
    return std::nullopt;
  }
  const auto text = scalar_text(ctx, v, path);
  if (!text) {
    return std::nullopt;
  }
  const auto d = parse_duration(*text);
  if (!d) {
    ctx.error(v.mark(), path,
              "invalid duration " + quote_text(*text) + " " + std::string(k_duration_hint));
  }
  return d;
}

std::optional<Millis> read_positive_duration(Context& ctx, Value v, const std::string& path) {
  const auto d = read_duration(ctx, v, path);
  if (d && *d <= Millis{0}) {
    ctx.error(v.mark(), path, "must be greater than 0");
    return std::nullopt;
  }
  return d;
}

std::string identifier_problem(std::string_view s) {
  const auto at = [](std::size_t i) { return " at byte " + std::to_string(i); };
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "%04X", c);
      return std::string("must not contain control characters (U+") + buf + at(i) + ")";
    }
    if (c < 0x80) {
      ++i;
      continue;
    }
    // UTF-8: the sequence's length from its lead byte, then its code point,
    // refused when it is overlong, a surrogate or beyond U+10FFFF.
    std::size_t n = 0;
    std::uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 2;
      cp = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 3;
      cp = c & 0x0Fu;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 4;
      cp = c & 0x07u;
    } else {
      return "is not valid UTF-8 (at byte " + std::to_string(i) + ")";
    }
    if (i + n > s.size()) {
      return "is not valid UTF-8 (at byte " + std::to_string(i) + ")";
    }
    for (std::size_t k = 1; k < n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0u) != 0x80u) {
        return "is not valid UTF-8 (at byte " + std::to_string(i) + ")";
      }
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    const bool overlong = (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000);
    if (overlong || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
      return "is not valid UTF-8 (at byte " + std::to_string(i) + ")";
    }
    if (cp >= 0x80 && cp <= 0x9F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "%04X", static_cast<unsigned>(cp));
      return std::string("must not contain control characters (U+") + buf + at(i) + ")";
    }
    i += n;
  }
  return {};
}

std::optional<std::string> read_identifier(Context& ctx, Value v, const std::string& path) {
  auto s = read_string(ctx, v, path);
  if (!s) {
    return std::nullopt;
  }
  if (const std::string problem = identifier_problem(*s); !problem.empty()) {
    ctx.error(v.mark(), path, problem);
    return std::nullopt;
  }
  return s;
}

std::optional<std::string> read_nonempty_identifier(Context& ctx, Value v,
                                                    const std::string& path) {
  auto s = read_identifier(ctx, v, path);
  if (s && s->empty()) {
    ctx.error(v.mark(), path, "must not be empty");
    return std::nullopt;
  }
  return s;
}

std::optional<Value> read_list(Context& ctx, Value v, const std::string& path) {
  if (v.kind() != Kind::sequence) {
    type_error(ctx, v, path, "a list");
    return std::nullopt;
  }
  return v;
}

// ---------------------------------------------------------------------------
// Maps

std::vector<std::ptrdiff_t> repeated_keys(Value v) {
  std::vector<std::ptrdiff_t> out(v.size(), -1);
  std::unordered_map<std::string_view, std::size_t> first;
  first.reserve(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    const Value k = v.key(i);
    if (!k.is_scalar()) {
      continue;
    }
    const auto [it, inserted] = first.try_emplace(k.text(), i);
    if (!inserted) {
      out[i] = static_cast<std::ptrdiff_t>(it->second);
    }
  }
  return out;
}

MapReader::MapReader(Context& ctx, Value v, std::string path)
    : m_ctx(ctx), m_node(v), m_path(std::move(path)) {
  if (v.is_null()) {
    return;
  }
  if (v.kind() != Kind::map) {
    type_error(ctx, v, m_path, "a map");
    m_valid = false;
    return;
  }
  m_repeats = repeated_keys(v);
  bool key_error = false;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const Value k = v.key(i);
    if (!k.is_scalar()) {
      if (!key_error) {
        ctx.error(k.mark(), m_path, "keys must be strings");
        key_error = true;
      }
    } else if (m_repeats[i] >= 0) {
      const Mark first = v.key(static_cast<std::size_t>(m_repeats[i])).mark();
      ctx.error(k.mark(), join(m_path, k.text()),
                "duplicate key" + (first.known()
                                       ? " (first at line " + std::to_string(first.line) + ")"
                                       : std::string()));
    }
  }
}

std::ptrdiff_t MapReader::entry(std::string_view key) const {
  if (!m_valid || m_node.kind() != Kind::map) {
    return -1;
  }
  for (std::size_t i = 0; i < m_node.size(); ++i) {
    const Value k = m_node.key(i);
    if (k.is_scalar() && k.text() == key) {
      return static_cast<std::ptrdiff_t>(i);
    }
  }
  return -1;
}

void MapReader::declare(std::string_view key) {
  if (std::find(m_declared.begin(), m_declared.end(), key) == m_declared.end()) {
    m_declared.emplace_back(key);
  }
}

std::optional<Value> MapReader::find(std::string_view key) {
  declare(key);
  const auto i = entry(key);
  if (i < 0) {
    return std::nullopt;
  }
  const Value v = m_node.item(static_cast<std::size_t>(i));
  return v.is_null() ? std::nullopt : std::optional<Value>(v);
}

bool MapReader::has(std::string_view key) {
  declare(key);
  return entry(key) >= 0;
}

std::optional<Value> MapReader::require(std::string_view key, std::string_view message) {
  declare(key);
  if (!m_valid) {
    return std::nullopt;
  }
  const auto i = entry(key);
  if (i >= 0) {
    const Value v = m_node.item(static_cast<std::size_t>(i));
    if (!v.is_null()) {
      return v;
    }
    m_ctx.error(m_node.key(static_cast<std::size_t>(i)).mark(), path(key), message);
    return std::nullopt;
  }
  error(key, message);
  return std::nullopt;
}

void MapReader::error(std::string_view key, std::string_view message) const {
  if (!m_valid) {
    return; // refused as a whole already
  }
  m_ctx.error(m_node.mark(), path(key), message);
}

Mark MapReader::mark_of(std::string_view key) const {
  const auto i = entry(key);
  return i < 0 ? m_node.mark() : m_node.item(static_cast<std::size_t>(i)).mark();
}

void MapReader::finish() {
  if (!m_valid || m_node.kind() != Kind::map) {
    return;
  }
  for (std::size_t i = 0; i < m_node.size(); ++i) {
    const Value k = m_node.key(i);
    if (!k.is_scalar() || m_repeats[i] >= 0 ||
        std::find(m_declared.begin(), m_declared.end(), k.text()) != m_declared.end()) {
      continue;
    }
    std::string msg = "unknown key";
    const std::string hint = did_you_mean(k.text(), m_declared);
    if (!hint.empty()) {
      msg += hint;
    } else {
      msg += " (expected one of: ";
      for (std::size_t n = 0; n < m_declared.size(); ++n) {
        msg += (n ? ", " : "") + m_declared[n];
      }
      msg += ")";
    }
    m_ctx.error(k.mark(), join(m_path, k.text()), msg);
  }
}

// ---------------------------------------------------------------------------
// Files and secrets

namespace {

std::string trim_newlines(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) {
    s.pop_back();
  }
  return s;
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

} // namespace

fs::path resolve_file(const Context& ctx, const std::string& name) {
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
  return (ctx.options().base_dir / p).lexically_normal();
}

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

Secret read_secret(MapReader& map, std::string_view key) {
  Context& ctx = map.ctx();
  const std::string file_key = std::string(key) + "_file";
  const auto inline_value = map.find(key);
  const auto file_value = map.find(file_key);
  Secret out;
  if (inline_value && file_value) {
    out.given = true;
    out.mark = file_value->mark();
    out.path = map.path(file_key);
    ctx.error(file_value->mark(), out.path, "cannot be combined with " + std::string(key));
    return out;
  }
  if (inline_value) {
    out.given = true;
    out.mark = inline_value->mark();
    out.path = map.path(key);
    out.value = read_nonempty_string(ctx, *inline_value, out.path);
    return out;
  }
  if (file_value) {
    out.given = true;
    out.mark = file_value->mark();
    out.path = map.path(file_key);
    const auto name = read_nonempty_string(ctx, *file_value, out.path);
    if (!name) {
      return out;
    }
    if (!ctx.options().read_files) {
      ctx.error(out.mark, out.path, "files cannot be read here");
      return out;
    }
    const fs::path p = resolve_file(ctx, *name);
    std::string s;
    if (const auto error = read_whole_file(p, k_max_secret_file_bytes, s)) {
      ctx.error(out.mark, out.path, "cannot read " + p.string() + ": " + *error);
      return out;
    }
    s = trim_newlines(std::move(s));
    if (s.empty()) {
      ctx.error(out.mark, out.path, p.string() + " is empty");
      return out;
    }
    out.value = std::move(s);
  }
  return out;
}

std::optional<std::string> read_ca_file(Context& ctx, Value v, const std::string& path) {
  const auto name = read_nonempty_string(ctx, v, path);
  if (!name) {
    return std::nullopt;
  }
  const fs::path p = resolve_file(ctx, *name);
  if (ctx.options().read_files) {
    errno = 0;
    FilePtr f(std::fopen(p.c_str(), "rb"));
    if (!f) {
      ctx.error(v.mark(), path, "cannot read " + p.string() + ": " + std::strerror(errno));
      return std::nullopt;
    }
  }
  return p.string();
}

} // namespace rrd::config::reader
