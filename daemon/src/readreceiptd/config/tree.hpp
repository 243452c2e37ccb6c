// The configuration as a tree of values that remember where they came from,
// before any key means anything: built from YAML (the file) or from JSON (an
// API request's body), then read by config/reader.hpp. Building a tree
// touches nothing but its input. A Tree is a plain value; a Value is a view
// into one and lives no longer than it. Thread-compatible.
//
// Memory is proportional to the input: a node is a few words in one array,
// scalar text lives in one buffer, and an alias shares the node it names
// instead of copying it. How far aliases expand is checked as the tree is
// built (k_min_alias_nodes), so that a reader that walks every node of the
// expanded tree walks a bounded number.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace rrd::config::tree {

// Deeper than this is refused: no configuration nests 64 levels, and every
// reader recurses along the tree.
inline constexpr int k_max_depth = 64;
// Aliases may add, to the nodes the text spells out, one node per byte of the
// text, and at least this many: a billion-laughs text is refused, a file
// that uses aliases in any ordinary way (a team of 100 readers named in
// 10,000 messages) loads. What aliases add is not copied in the tree, but a
// reader walks it and the Config it builds holds it.
inline constexpr std::size_t k_min_alias_nodes = 1'000'000;
// Larger inputs are refused outright (offsets into the text are 32-bit).
inline constexpr std::size_t k_max_input_bytes = 1024 * 1024 * 1024;

struct Mark {
  int line = 0; // 1-based; 0: unknown (JSON, or no node at all)
  int column = 0;
  bool known() const { return line > 0; }
};

enum class Kind : std::uint8_t {
  null,
  plain, // a YAML scalar: its type is decided by the key that reads it
  string,
  number, // JSON keeps its types
  boolean,
  sequence,
  map,
};

class Tree;

// One node of a tree: cheap to copy, valid while its tree is.
class Value {
public:
  Kind kind() const;
  bool is_null() const { return kind() == Kind::null; }
  bool is_scalar() const;
  Mark mark() const;
  std::string_view text() const; // scalars; "" otherwise
  bool integer() const;          // Kind::number: written as an integer
  // Items of a sequence; entries of a map (then item(i) is the value of
  // key(i)). Keys are nodes too: a scalar, or anything else YAML allows.
  std::size_t size() const;
  Value item(std::size_t i) const;
  Value key(std::size_t i) const;

private:
  friend class Tree;
  Value(const Tree* tree, std::uint32_t id) : m_tree(tree), m_id(id) {}
  const Tree* m_tree;
  std::uint32_t m_id;
};

// What a builder refuses: a syntax error, or a tree beyond the limits.
// what() is the message; `mark` says where (unknown for JSON).
class SyntaxError : public std::runtime_error {
public:
  SyntaxError(Mark where, const std::string& message) : std::runtime_error(message), mark(where) {}
  Mark mark;
};

class Tree {
public:
  // An empty tree's root is a null node at an unknown mark.
  Tree();
  Value root() const { return Value(this, m_root); }
  std::size_t node_count() const { return m_nodes.size(); }

private:
  friend class Value;
  friend class TreeWriter; // the builders' access, in tree.cpp
  struct NodeData {
    Kind kind = Kind::null;
    bool integer = false;
    std::int32_t line = 0;
    std::int32_t column = 0;
    std::uint32_t begin = 0; // scalars: text offset; collections: first child in m_children
    std::uint32_t size = 0;  // scalars: text bytes; collections: items (map: entries)
  };
  std::vector<NodeData> m_nodes;
  std::vector<std::uint32_t> m_children; // maps: key, value, key, value...
  std::string m_text;
  std::uint32_t m_root = 0;
};

// The tree of a YAML text holding at most one document (none: the root is
// null). Throws SyntaxError: yaml-cpp's own errors ("invalid YAML: ..."), and
// more than one document, a string whose closing quote is missing, a tab in
// the indentation, nesting deeper than k_max_depth, aliases past their
// budget, each named as such.
Tree from_yaml(const std::string& text);

// The tree of a JSON text (one value; duplicate keys are kept, in order, so
// that the reader refuses them). Throws SyntaxError ("invalid JSON at byte
// N", nesting deeper than k_max_depth).
Tree from_json(const std::string& text);

} // namespace rrd::config::tree
