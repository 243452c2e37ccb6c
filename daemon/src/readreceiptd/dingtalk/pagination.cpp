#include "readreceiptd/dingtalk/pagination.hpp"

#include <algorithm>
#include <utility>

namespace rrd::dingtalk {

PageWalk::PageWalk(int max_pages) : m_max_pages(std::max(1, max_pages)) {}

void PageWalk::reset_walk() {
  m_pages = 0;
  m_union.clear();
  m_union_set.clear();
  m_seen_tokens.clear();
  m_send_status.clear();
}

Next PageWalk::fail(std::string why) {
  m_state = State::finished;
  reset_walk();
  Next n;
  n.kind = Next::Kind::fail;
  n.why = std::move(why);
  return n;
}

Next PageWalk::start() {
  reset_walk();
  m_restarted = false;
  m_state = State::waiting;
  return Next{}; // fetch the first page
}

Next PageWalk::on_page(const Page& page) {
  if (m_state != State::waiting) {
    return fail("page received while no page was asked for");
  }
  ++m_pages;
  for (const auto& id : page.read_user_ids) {
    if (m_union_set.insert(id).second) {
      m_union.push_back(id);
    }
  }
  if (!page.send_status.empty()) {
    m_send_status = page.send_status;
  }
  if (!page.has_more) {
    m_state = State::finished;
    Next n;
    n.kind = Next::Kind::done;
    n.read_user_ids = std::move(m_union);
    n.send_status = std::move(m_send_status);
    reset_walk();
    return n;
  }
  if (page.next_token.empty()) {
    return fail("hasMore without a nextToken");
  }
  if (m_pages >= m_max_pages) {
    return fail("more than " + std::to_string(m_max_pages) + " pages");
  }
  if (!m_seen_tokens.insert(page.next_token).second) {
    return fail("page loop: a nextToken was seen twice in one poll (page " +
                std::to_string(m_pages) + ")");
  }
  Next n;
  n.next_token = page.next_token;
  return n;
}

Next PageWalk::on_cursor_invalid() {
  if (m_state != State::waiting) {
    return fail("cursor error received while no page was asked for");
  }
  if (m_restarted) {
    return fail("nextToken rejected again after restarting from the first page");
  }
  m_restarted = true;
  reset_walk();
  return Next{}; // the first page again
}

} // namespace rrd::dingtalk
