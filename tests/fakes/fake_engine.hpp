// FakeEngine: an http::Engine for unit tests. It records each submitted
// request; the test answers them by hand (answer()), and the callbacks run in
// the next run_once(), as the real engine's contract says. Not thread-safe.
#pragma once

#include "readreceiptd/http/http_engine.hpp"

#include <deque>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace rrd::testing {

class FakeEngine final : public http::Engine {
public:
  FakeEngine() = default;
  // With a clock, the time of each submit is recorded (submit_times()).
  explicit FakeEngine(const Clock* clock) : m_clock(clock) {}

  struct Pending {
    std::uint64_t id;
    http::Request request;
    http::Callback done;
  };

  void submit(http::Request request, http::Callback done) override {
    m_submitted.push_back(request);
    if (m_clock != nullptr) {
      m_submit_times.push_back(m_clock->now());
    }
    m_pending.push_back(Pending{m_next_id++, std::move(request), std::move(done)});
  }
  void run_once(Millis) override {
    auto ready = std::move(m_ready);
    m_ready.clear();
    for (auto& [done, response] : ready) {
      done(std::move(response));
    }
  }
  void wakeup() override {}
  std::size_t in_flight() const override { return m_pending.size(); }

  // Requests not answered yet, oldest first.
  std::deque<Pending>& pending() { return m_pending; }
  // Every request ever submitted, in order.
  const std::vector<http::Request>& submitted() const { return m_submitted; }
  const std::vector<TimePoint>& submit_times() const { return m_submit_times; }

  // Answers the oldest pending request whose URL ends with `path_suffix`
  // (any request when empty); its callback runs at the next run_once().
  http::Request answer(http::Response response, const std::string& path_suffix = "") {
    for (auto it = m_pending.begin(); it != m_pending.end(); ++it) {
      const auto& url = it->request.url;
      if (path_suffix.empty() ||
          (url.size() >= path_suffix.size() &&
           url.compare(url.size() - path_suffix.size(), path_suffix.size(), path_suffix) == 0)) {
        auto request = it->request;
        m_ready.emplace_back(std::move(it->done), std::move(response));
        m_pending.erase(it);
        return request;
      }
    }
    throw std::runtime_error("FakeEngine: no pending request for " + path_suffix);
  }

  static http::Response reply(int status, std::string body) {
    http::Response r;
    r.status = status;
    r.body = std::move(body);
    return r;
  }
  static http::Response fail(http::Failure f) {
    http::Response r;
    r.failure = f;
    r.error = http::to_string(f);
    return r;
  }

private:
  const Clock* m_clock = nullptr;
  std::vector<TimePoint> m_submit_times;
  std::uint64_t m_next_id = 1;
  std::deque<Pending> m_pending;
  std::vector<std::pair<http::Callback, http::Response>> m_ready;
  std::vector<http::Request> m_submitted;
};

} // namespace rrd::testing
