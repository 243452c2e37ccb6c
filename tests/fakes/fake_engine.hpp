// FakeEngine: an http::Engine for unit tests. It records each submitted
// request; the test answers them by hand (answer()), and the callbacks run in
// the next run_once(), as the real engine's contract says. Raw streams
// (open_stream()) are FakeStreams the test drives: open them, feed them the
// server's bytes, read what the client wrote, close them. Not thread-safe.
#pragma once

#include "readreceiptd/http/http_engine.hpp"

#include <deque>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace rrd::testing {

// The test's side of a raw stream. Its handler hears of it only from
// FakeEngine::run_once(), as from the real engine.
class FakeRawStream {
public:
  http::StreamRequest request;
  bool dropped = false;     // the client destroyed its handle
  bool close_asked = false; // the client called close()
  std::string written;      // every byte the client sent, in order

  // What happens at the next run_once(): the connection opens, the server
  // sends bytes, the connection ends.
  void open() { m_events.push_back({Kind::open, {}, http::Failure::none}); }
  void deliver(std::string bytes) { m_events.push_back({Kind::data, std::move(bytes), {}}); }
  void end(http::Failure f = http::Failure::network,
           std::string why = "connection closed by the peer") {
    m_events.push_back({Kind::closed, std::move(why), f});
  }
  // Bytes written since the last call.
  std::string take_written() {
    std::string out = written.substr(m_read);
    m_read = written.size();
    return out;
  }
  bool ended() const { return m_ended; }

private:
  friend class FakeEngine;
  friend class FakeRawStreamHandle;
  enum class Kind { open, data, closed };
  struct Event {
    Kind kind;
    std::string bytes; // data: the bytes; closed: why
    http::Failure failure;
  };
  // Runs what was queued; false once nothing more can happen.
  void run() {
    auto events = std::move(m_events);
    m_events.clear();
    for (auto& e : events) {
      if (m_ended || dropped || m_handler == nullptr) {
        return;
      }
      switch (e.kind) {
      case Kind::open:
        m_handler->on_open();
        break;
      case Kind::data:
        m_handler->on_data(e.bytes);
        break;
      case Kind::closed:
        m_ended = true;
        m_handler->on_closed(e.failure, e.bytes);
        break;
      }
    }
    if (close_asked && !m_ended && !dropped && m_handler != nullptr) {
      m_ended = true;
      m_handler->on_closed(http::Failure::none, "");
    }
  }
  http::StreamHandler* m_handler = nullptr;
  std::vector<Event> m_events;
  std::size_t m_read = 0;
  bool m_ended = false;
};

class FakeRawStreamHandle final : public http::StreamConnection {
public:
  explicit FakeRawStreamHandle(std::shared_ptr<FakeRawStream> s) : m_stream(std::move(s)) {}
  FakeRawStreamHandle(const FakeRawStreamHandle&) = delete;
  FakeRawStreamHandle& operator=(const FakeRawStreamHandle&) = delete;
  ~FakeRawStreamHandle() override { m_stream->dropped = true; }
  void send(std::string_view bytes) override {
    if (!m_stream->close_asked && !m_stream->ended()) {
      m_stream->written.append(bytes);
    }
  }
  std::size_t unsent() const override { return 0; }
  void close() override { m_stream->close_asked = true; }

private:
  std::shared_ptr<FakeRawStream> m_stream;
};

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
    const auto streams = m_streams; // a handler may open another
    for (const auto& s : streams) {
      s->run();
    }
  }
  std::unique_ptr<http::StreamConnection> open_stream(const http::StreamRequest& request,
                                                      http::StreamHandler& handler) override {
    auto s = std::make_shared<FakeRawStream>();
    s->request = request;
    s->m_handler = &handler;
    m_streams.push_back(s);
    return std::make_unique<FakeRawStreamHandle>(s);
  }
  // Every stream ever opened, oldest first.
  const std::vector<std::shared_ptr<FakeRawStream>>& streams() const { return m_streams; }
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
  std::vector<std::shared_ptr<FakeRawStream>> m_streams;
};

} // namespace rrd::testing
