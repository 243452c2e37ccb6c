// Building trees: from YAML with yaml-cpp's event parser (never its Node
// graph, many times heavier than this tree), from JSON with nlohmann's SAX
// parser (never its DOM, which keeps only the last of duplicate keys).
#include "readreceiptd/config/tree.hpp"

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/parser.h>

namespace rrd::config::tree {

// ---------------------------------------------------------------------------
// Nodes

Kind Value::kind() const {
  return m_tree->m_nodes[m_id].kind;
}

bool Value::is_scalar() const {
  const Kind k = kind();
  return k == Kind::plain || k == Kind::string || k == Kind::number || k == Kind::boolean;
}

Mark Value::mark() const {
  const auto& n = m_tree->m_nodes[m_id];
  return Mark{n.line, n.column};
}

std::string_view Value::text() const {
  const auto& n = m_tree->m_nodes[m_id];
  if (n.kind == Kind::sequence || n.kind == Kind::map || n.kind == Kind::null) {
    return {};
  }
  return std::string_view(m_tree->m_text).substr(n.begin, n.size);
}

bool Value::integer() const {
  return m_tree->m_nodes[m_id].integer;
}

std::size_t Value::size() const {
  const auto& n = m_tree->m_nodes[m_id];
  return n.kind == Kind::sequence || n.kind == Kind::map ? n.size : 0;
}

Value Value::item(std::size_t i) const {
  const auto& n = m_tree->m_nodes[m_id];
  const std::size_t at = n.kind == Kind::map ? 2 * i + 1 : i;
  return Value(m_tree, m_tree->m_children[n.begin + at]);
}

Value Value::key(std::size_t i) const {
  const auto& n = m_tree->m_nodes[m_id];
  return Value(m_tree, m_tree->m_children[n.begin + 2 * i]);
}

Tree::Tree() {
  m_nodes.emplace_back(); // the root: null, nowhere
}

// The builders' access to a Tree.
class TreeWriter {
public:
  explicit TreeWriter(Tree& tree) : m_tree(tree) {
    m_tree.m_nodes.clear();
    m_tree.m_children.clear();
    m_tree.m_text.clear();
  }

  std::uint32_t add(Kind kind, Mark mark, std::string_view text = {}, bool integer = false) {
    Tree::NodeData n;
    n.kind = kind;
    n.integer = integer;
    n.line = mark.line;
    n.column = mark.column;
    if (!text.empty()) {
      n.begin = static_cast<std::uint32_t>(m_tree.m_text.size());
      n.size = static_cast<std::uint32_t>(text.size());
      m_tree.m_text.append(text);
    }
    m_tree.m_nodes.push_back(n);
    return static_cast<std::uint32_t>(m_tree.m_nodes.size() - 1);
  }

  // A collection's children, which arrive after its grandchildren, are
  // stored together when it closes.
  void close(std::uint32_t id, const std::vector<std::uint32_t>& children) {
    auto& n = m_tree.m_nodes[id];
    n.begin = static_cast<std::uint32_t>(m_tree.m_children.size());
    n.size =
        static_cast<std::uint32_t>(n.kind == Kind::map ? children.size() / 2 : children.size());
    m_tree.m_children.insert(m_tree.m_children.end(), children.begin(), children.end());
  }

  Mark mark(std::uint32_t id) const {
    const auto& n = m_tree.m_nodes[id];
    return Mark{n.line, n.column};
  }
  Kind kind(std::uint32_t id) const { return m_tree.m_nodes[id].kind; }
  void set_root(std::uint32_t id) { m_tree.m_root = id; }

private:
  Tree& m_tree;
};

namespace {

std::string depth_message() {
  return "nested too deeply (more than " + std::to_string(k_max_depth) + " levels)";
}

std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) {
  return a > std::numeric_limits<std::uint64_t>::max() - b
             ? std::numeric_limits<std::uint64_t>::max()
             : a + b;
}

// ---------------------------------------------------------------------------
// YAML

Mark mark_of(const YAML::Mark& m) {
  if (m.is_null() || m.line < 0) {
    return {};
  }
  return Mark{m.line + 1, m.column + 1};
}

constexpr std::string_view k_utf8_bom = "\xEF\xBB\xBF";

// Where a quoted scalar that opens at `quote` closes, or npos: yaml-cpp 0.7
// takes a quoted scalar that runs into the end of the text for a complete
// one when a line break ends the text.
std::size_t closing_quote(std::string_view text, std::size_t quote) {
  const char q = text[quote];
  for (std::size_t i = quote + 1; i < text.size(); ++i) {
    if (q == '"' && text[i] == '\\') {
      ++i; // an escape: the next character is not the end
    } else if (text[i] == q) {
      if (q == '\'' && i + 1 < text.size() && text[i + 1] == '\'') {
        ++i; // '' is a quote inside a single-quoted string
      } else {
        return i;
      }
    }
  }
  return std::string_view::npos;
}

// The opening quote of the scalar whose node starts at `pos` (after its
// anchor and tag, if any), or npos when it is not a quoted scalar.
std::size_t opening_quote(std::string_view text, std::size_t pos) {
  while (pos < text.size() && (text[pos] == '&' || text[pos] == '!')) {
    while (pos < text.size() && text[pos] != ' ' && text[pos] != '\t' && text[pos] != '\n' &&
           text[pos] != '\r') {
      ++pos;
    }
    while (pos < text.size() &&
           (text[pos] == ' ' || text[pos] == '\t' || text[pos] == '\n' || text[pos] == '\r')) {
      ++pos;
    }
  }
  return pos < text.size() && (text[pos] == '"' || text[pos] == '\'') ? pos
                                                                      : std::string_view::npos;
}

// Where a line and column (1-based) are in `text`.
std::size_t line_start(std::string_view text, int line) {
  std::size_t pos = 0;
  for (int l = 1; l < line && pos != std::string_view::npos; ++l) {
    pos = text.find('\n', pos);
    if (pos != std::string_view::npos) {
      ++pos;
    }
  }
  return pos == std::string_view::npos ? text.size() : pos;
}

Mark mark_at(std::string_view text, std::size_t offset) {
  Mark m{1, 1};
  for (std::size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++m.line;
      m.column = 1;
    } else {
      ++m.column;
    }
  }
  return m;
}

bool is_blank(char c) {
  return c == ' ' || c == '\t';
}

// A tab in the indentation of line `line`, where yaml-cpp reports an error:
// it names a tab there by whatever it trips over next ("illegal map value",
// "illegal block entry", ...). The indentation is the blanks that open the
// line and those after block indicators ("- ", "? ", ": ") among them.
std::optional<Mark> tab_in_indentation(std::string_view text, int line) {
  if (line <= 0) {
    return std::nullopt;
  }
  const std::size_t start = line_start(text, line);
  for (std::size_t i = start; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\t') {
      return Mark{line, static_cast<int>(i - start) + 1};
    }
    const bool indicator =
        (c == '-' || c == '?' || c == ':') && i + 1 < text.size() && is_blank(text[i + 1]);
    if (c != ' ' && !indicator) {
      break;
    }
  }
  return std::nullopt;
}

std::string unterminated_message(char quote) {
  return std::string("invalid YAML: unterminated string (the closing ") + quote + " is missing)";
}

// Builds the first document of a YAML stream, and notes where every later
// one starts (a file holds one).
class YamlBuilder final : public YAML::EventHandler {
public:
  YamlBuilder(Tree& tree, std::string_view text)
      : m_writer(tree), m_text(text),
        m_alias_budget(std::max<std::uint64_t>(k_min_alias_nodes, text.size())) {
    if (m_text.substr(0, k_utf8_bom.size()) == k_utf8_bom) {
      m_bom = k_utf8_bom.size();
    }
  }

  // yaml-cpp 0.7's parser hands out an empty document at a stray token
  // ("{}," or a lone ",") again and again without consuming it: the stream
  // is stuck when a document starts where the previous one did.
  bool stuck() const { return m_stuck; }
  Mark stuck_at() const { return m_stuck_at; }
  std::size_t documents() const { return m_documents; }
  Mark later_document() const { return m_later_document; }
  bool has_root() const { return m_has_root; }
  // A limit the first document went past (nesting, aliases): reported
  // unless yaml-cpp finds a syntax error further on.
  const std::optional<SyntaxError>& over_limit() const { return m_over_limit; }

  void OnDocumentStart(const YAML::Mark& mark) override {
    if (m_documents > 0 && mark.pos == m_last_start) {
      m_stuck = true;
      m_stuck_at = mark_of(mark);
    }
    m_last_start = mark.pos;
    ++m_documents;
    m_first_node_seen = false;
  }
  void OnDocumentEnd() override {}

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    if (!building(mark)) {
      return;
    }
    // yaml-cpp marks a null (`key:`, `-`) where the next token starts; the
    // key or the list is the better place to point at.
    const Mark at = null_mark(mark_of(mark));
    if (!check_depth(at, 0)) {
      return;
    }
    leaf(m_writer.add(Kind::null, at), anchor);
  }

  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                const std::string& value) override {
    if (!building(mark)) {
      return;
    }
    const Mark at = mark_of(mark);
    if (mark.pos >= 0) {
      const std::size_t quote = opening_quote(m_text, static_cast<std::size_t>(mark.pos) + m_bom);
      if (quote != std::string_view::npos &&
          closing_quote(m_text, quote) == std::string_view::npos) {
        throw SyntaxError(mark_at(m_text, quote), unterminated_message(m_text[quote]));
      }
    }
    if (!check_depth(at, 0)) {
      return;
    }
    leaf(m_writer.add(Kind::plain, at, value), anchor);
  }

  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    if (!building(mark)) {
      return;
    }
    const Mark at = mark_of(mark);
    if (anchor >= m_anchors.size() || !m_anchors[anchor].complete) {
      // `&a [*a]`: the alias is inside the node it names.
      stop(at, depth_message() + ": this alias names a node that contains it");
      return;
    }
    const Anchor a = m_anchors[anchor];
    if (!check_depth(at, a.height)) {
      return;
    }
    m_alias_nodes = saturating_add(m_alias_nodes, a.expanded);
    if (m_alias_nodes > m_alias_budget) {
      stop(at, "too many nodes: aliases expand to more than " + std::to_string(m_alias_budget) +
                   " nodes (the limit is one per byte of the file, and at least " +
                   std::to_string(k_min_alias_nodes) + ")");
      return;
    }
    if (m_writer.kind(a.id) == Kind::null) {
      attach(m_writer.add(Kind::null, null_mark(at)), 1, 0);
    } else {
      attach(a.id, a.expanded, a.height); // shared, not copied
    }
  }

  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    open(mark, Kind::sequence, anchor);
  }
  void OnSequenceEnd() override { close(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    open(mark, Kind::map, anchor);
  }
  void OnMapEnd() override { close(); }

private:
  struct Open {
    std::uint32_t id = 0;
    Kind kind = Kind::sequence;
    Mark mark;
    YAML::anchor_t anchor = 0;
    std::vector<std::uint32_t> children;
    std::uint64_t expanded = 1; // nodes, aliases expanded
    int height = 0;             // levels below it, aliases expanded
  };
  struct Anchor {
    std::uint32_t id = 0;
    std::uint64_t expanded = 1;
    int height = 0;
    bool complete = false;
  };

  // Whether this node belongs to the tree being built; for later documents,
  // notes where the first one starts.
  bool building(const YAML::Mark& mark) {
    if (m_documents > 1) {
      if (!m_first_node_seen) {
        m_first_node_seen = true;
        if (!m_later_document.known()) {
          m_later_document = mark_of(mark);
        }
      }
      return false;
    }
    return !m_over_limit.has_value();
  }

  Mark null_mark(Mark own) const {
    if (m_depth == 0) {
      return Mark{1, 1};
    }
    const Open& top = m_stack[m_depth - 1];
    if (top.kind == Kind::sequence) {
      return top.mark;
    }
    if (top.children.size() % 2 == 1) {
      return m_writer.mark(top.children.back()); // a value: where its key is
    }
    return own.known() ? own : top.mark;
  }

  void stop(Mark at, const std::string& message) {
    if (!m_over_limit) {
      m_over_limit.emplace(at, message);
    }
  }

  // A node at the current depth whose subtree is `height` levels deep.
  bool check_depth(Mark at, int height) {
    if (static_cast<int>(m_depth) + height > k_max_depth) {
      stop(at, depth_message());
      return false;
    }
    return true;
  }

  void leaf(std::uint32_t id, YAML::anchor_t anchor) {
    remember(anchor, Anchor{id, 1, 0, true});
    attach(id, 1, 0);
  }

  void remember(YAML::anchor_t anchor, Anchor a) {
    if (anchor == 0) {
      return;
    }
    if (anchor >= m_anchors.size()) {
      m_anchors.resize(anchor + 1);
    }
    m_anchors[anchor] = a;
  }

  void attach(std::uint32_t id, std::uint64_t expanded, int height) {
    if (m_depth == 0) {
      m_writer.set_root(id);
      m_has_root = true;
      return;
    }
    Open& top = m_stack[m_depth - 1];
    top.children.push_back(id);
    top.expanded = saturating_add(top.expanded, expanded);
    top.height = std::max(top.height, height + 1);
  }

  void open(const YAML::Mark& mark, Kind kind, YAML::anchor_t anchor) {
    if (!building(mark)) {
      return;
    }
    const Mark at = mark_of(mark);
    if (!check_depth(at, 0)) {
      return;
    }
    if (m_depth == m_stack.size()) {
      m_stack.emplace_back();
    }
    Open& o = m_stack[m_depth++];
    o.id = m_writer.add(kind, at);
    o.kind = kind;
    o.mark = at;
    o.anchor = anchor;
    o.children.clear(); // keeps its capacity for the next collection at this depth
    o.expanded = 1;
    o.height = 0;
    remember(anchor, Anchor{o.id, 0, 0, false});
  }

  void close() {
    if (m_documents > 1 || m_over_limit || m_depth == 0) {
      return;
    }
    Open& o = m_stack[m_depth - 1];
    if (o.kind == Kind::map && o.children.size() % 2 == 1) {
      o.children.push_back(m_writer.add(Kind::null, m_writer.mark(o.children.back())));
    }
    m_writer.close(o.id, o.children);
    const Anchor done{o.id, o.expanded, o.height, true};
    const YAML::anchor_t anchor = o.anchor;
    --m_depth;
    remember(anchor, done);
    attach(done.id, done.expanded, done.height);
  }

  TreeWriter m_writer;
  std::string_view m_text;
  std::size_t m_bom = 0;
  std::vector<Open> m_stack; // m_stack[0, m_depth) are open
  std::size_t m_depth = 0;
  std::vector<Anchor> m_anchors; // by yaml-cpp's anchor number
  std::uint64_t m_alias_nodes = 0;
  std::uint64_t m_alias_budget;
  std::optional<SyntaxError> m_over_limit;
  bool m_has_root = false;

  std::size_t m_documents = 0;
  int m_last_start = -1;
  bool m_stuck = false;
  Mark m_stuck_at;
  bool m_first_node_seen = false;
  Mark m_later_document;
};

// Records the last quoted scalar of a text, for the one that never closes.
class QuoteFinder final : public YAML::EventHandler {
public:
  explicit QuoteFinder(std::string_view text, std::size_t bom) : m_text(text), m_bom(bom) {}
  std::size_t last_quote = std::string_view::npos;

  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t,
                const std::string&) override {
    if (mark.pos >= 0) {
      const std::size_t q = opening_quote(m_text, static_cast<std::size_t>(mark.pos) + m_bom);
      if (q != std::string_view::npos) {
        last_quote = q;
      }
    }
  }
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

private:
  std::string_view m_text;
  std::size_t m_bom;
};

// yaml-cpp reports a quoted string that the end of the text cuts off at the
// end of the text; the string's opening quote is the place to show. It is
// the last quoted scalar once the text is closed with that quote.
std::optional<SyntaxError> unterminated_string(const std::string& text) {
  const std::size_t bom =
      text.compare(0, k_utf8_bom.size(), k_utf8_bom) == 0 ? k_utf8_bom.size() : 0;
  for (const char quote : {'"', '\''}) {
    const std::string closed = text + quote;
    std::istringstream in(closed);
    QuoteFinder finder(closed, bom);
    try {
      YAML::Parser parser(in);
      for (int i = 0; i < 2 && parser.HandleNextDocument(finder); ++i) {
      }
    } catch (const YAML::Exception&) {
      // whatever comes after the string: it still was found
    }
    const std::size_t q = finder.last_quote;
    if (q != std::string_view::npos && text[q] == quote &&
        closing_quote(text, q) == std::string_view::npos) {
      return SyntaxError(mark_at(text, q), unterminated_message(quote));
    }
  }
  return std::nullopt;
}

SyntaxError yaml_error(const std::string& text, const YAML::Exception& e) {
  const Mark at = mark_of(e.mark);
  if (const auto tab = tab_in_indentation(text, at.line)) {
    return SyntaxError(*tab, "invalid YAML: tab characters are not allowed in YAML indentation");
  }
  if (e.msg == YAML::ErrorMsg::EOF_IN_SCALAR) {
    if (auto unterminated = unterminated_string(text)) {
      return *unterminated;
    }
  }
  return SyntaxError(at, "invalid YAML: " + e.msg);
}

// ---------------------------------------------------------------------------
// JSON

class JsonBuilder {
public:
  using json = nlohmann::json;

  explicit JsonBuilder(Tree& tree) : m_writer(tree) {}
  const std::optional<std::string>& error() const { return m_error; }

  bool null() { return leaf(Kind::null, {}); }
  bool boolean(bool b) { return leaf(Kind::boolean, b ? "true" : "false"); }
  bool number_integer(json::number_integer_t n) {
    return leaf(Kind::number, std::to_string(n), true);
  }
  bool number_unsigned(json::number_unsigned_t n) {
    return leaf(Kind::number, std::to_string(n), true);
  }
  bool number_float(json::number_float_t, const json::string_t& raw) {
    return leaf(Kind::number, raw);
  }
  bool string(json::string_t& s) { return leaf(Kind::string, s); }
  bool binary(json::binary_t&) {
    m_error = "binary values are not supported";
    return false;
  }
  bool start_object(std::size_t) { return open(Kind::map); }
  bool key(json::string_t& k) { return leaf(Kind::string, k); }
  bool end_object() { return close(); }
  bool start_array(std::size_t) { return open(Kind::sequence); }
  bool end_array() { return close(); }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) {
    // 406: a number beyond a double's range ("1e400").
    m_error = e.id == 406 ? std::string("invalid JSON: a number is out of range")
                          : "invalid JSON at byte " + std::to_string(position);
    return false;
  }

private:
  struct Open {
    std::uint32_t id = 0;
    std::vector<std::uint32_t> children;
  };

  bool depth_ok() {
    if (m_depth > static_cast<std::size_t>(k_max_depth)) {
      m_error = depth_message();
      return false;
    }
    return true;
  }

  bool leaf(Kind kind, std::string_view text, bool integer = false) {
    if (!depth_ok()) {
      return false;
    }
    attach(m_writer.add(kind, Mark{}, text, integer));
    return true;
  }

  void attach(std::uint32_t id) {
    if (m_depth == 0) {
      m_writer.set_root(id);
    } else {
      m_stack[m_depth - 1].children.push_back(id);
    }
  }

  bool open(Kind kind) {
    if (!depth_ok()) {
      return false;
    }
    if (m_depth == m_stack.size()) {
      m_stack.emplace_back();
    }
    Open& o = m_stack[m_depth++];
    o.id = m_writer.add(kind, Mark{});
    o.children.clear();
    return true;
  }

  bool close() {
    Open& o = m_stack[m_depth - 1];
    m_writer.close(o.id, o.children);
    --m_depth;
    attach(o.id);
    return true;
  }

  TreeWriter m_writer;
  std::vector<Open> m_stack;
  std::size_t m_depth = 0;
  std::optional<std::string> m_error;
};

void check_size(const std::string& text) {
  if (text.size() > k_max_input_bytes) {
    throw SyntaxError(Mark{}, "larger than " + std::to_string(k_max_input_bytes) + " bytes");
  }
}

} // namespace

Tree from_yaml(const std::string& text) {
  check_size(text);
  Tree tree;
  YamlBuilder builder(tree, text);
  try {
    std::istringstream in(text);
    YAML::Parser parser(in);
    while (!builder.stuck() && parser.HandleNextDocument(builder)) {
    }
  } catch (const YAML::Exception& e) {
    throw yaml_error(text, e);
  }
  if (builder.stuck()) {
    throw SyntaxError(builder.stuck_at(), "invalid YAML: unexpected token");
  }
  if (builder.documents() > 1) {
    throw SyntaxError(builder.later_document(), "the file must hold one YAML document, not " +
                                                    std::to_string(builder.documents()));
  }
  if (builder.over_limit()) {
    throw *builder.over_limit();
  }
  if (!builder.has_root()) {
    return Tree();
  }
  return tree;
}

Tree from_json(const std::string& text) {
  check_size(text);
  Tree tree;
  JsonBuilder builder(tree);
  const bool ok = nlohmann::json::sax_parse(text, &builder);
  if (!ok || builder.error()) {
    throw SyntaxError(Mark{}, builder.error().value_or("invalid JSON"));
  }
  return tree;
}

} // namespace rrd::config::tree
