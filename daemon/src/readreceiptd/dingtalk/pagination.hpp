// PageWalk: the pure state machine of one poll of one message through the
// query's pages (hasMore / nextToken). It says which page to fetch next, and
// at the end gives the union of every page's readUserIds; it never hands out
// the union of a walk that did not finish. It guards against a server that
// loops (a nextToken seen twice in one poll) or never ends (more than
// max_pages pages), and restarts from the first page once per poll when
// DingTalk rejects a nextToken (invalidParameter.cursor.invalid).
// Thread-safety: a plain value; not thread-safe.
#pragma once

#include "readreceiptd/dingtalk/protocol.hpp"

#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

namespace rrd::dingtalk {

inline constexpr int k_max_pages_per_poll = 1000;

// What to do after a step of the walk.
struct Next {
  enum class Kind { fetch, done, fail };
  Kind kind = Kind::fetch;
  // fetch: the page to ask for; nullopt is the first page (no nextToken).
  std::optional<std::string> next_token;
  // done: the union of readUserIds in first-seen order and the last
  // non-empty sendStatus.
  std::vector<std::string> read_user_ids;
  std::string send_status;
  // fail: why the walk was abandoned, for logs (no token values).
  std::string why;

  // The argument build_query_request() wants: null for the first page.
  // REQUIRES: kind == Kind::fetch
  const std::string* token_ptr() const { return next_token ? &*next_token : nullptr; }
};

class PageWalk {
public:
  explicit PageWalk(int max_pages = k_max_pages_per_poll);

  // Begins (or begins again) a poll: forgets everything; fetch the first page.
  Next start();
  // The answer to the last fetch. After done or fail, further calls fail.
  Next on_page(const Page& page);
  // The last fetch was answered with invalidParameter.cursor.invalid: walk
  // again from the first page, once per poll; the second time, fail.
  Next on_cursor_invalid();

  // Pages received in the current walk (since start or the restart).
  int pages() const { return m_pages; }
  bool restarted() const { return m_restarted; }

private:
  enum class State { idle, waiting, finished };

  void reset_walk();
  Next fail(std::string why);

  int m_max_pages;
  State m_state = State::idle;
  int m_pages = 0;
  bool m_restarted = false;
  std::vector<std::string> m_union;
  std::unordered_set<std::string> m_union_set;
  std::unordered_set<std::string> m_seen_tokens;
  std::string m_send_status;
};

} // namespace rrd::dingtalk
