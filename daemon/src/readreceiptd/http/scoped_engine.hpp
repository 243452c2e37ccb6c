// ScopedEngine: an Engine over another one, for a group of parts that may be
// destroyed while their requests are still in flight (a leader's poller,
// Stream client and dispatcher, torn down the moment it steps down). Its
// requests go to the inner engine; once the ScopedEngine is destroyed, the
// callbacks of those still in flight are never called (their answers are
// dropped), so the parts they point into may go with it. Raw streams are
// the inner engine's, owned by whoever opened them as always.
//
// Thread-safety: as Engine (the loop's thread; wakeup() from any thread).
#pragma once

#include "readreceiptd/http/http_engine.hpp"

#include <cstddef>
#include <memory>

namespace rrd::http {

class ScopedEngine final : public Engine {
public:
  // `inner` must outlive this engine.
  explicit ScopedEngine(Engine& inner);
  ~ScopedEngine() override;
  ScopedEngine(const ScopedEngine&) = delete;
  ScopedEngine& operator=(const ScopedEngine&) = delete;

  void submit(Request request, Callback done) override;
  void run_once(Millis max_wait) override { m_inner.run_once(max_wait); }
  void wakeup() override { m_inner.wakeup(); }
  // This engine's requests in flight (not the inner engine's others).
  std::size_t in_flight() const override { return m_state->in_flight; }
  std::unique_ptr<StreamConnection> open_stream(const StreamRequest& request,
                                                StreamHandler& handler) override {
    return m_inner.open_stream(request, handler);
  }

private:
  struct State {
    bool alive = true;
    std::size_t in_flight = 0;
  };
  Engine& m_inner;
  std::shared_ptr<State> m_state = std::make_shared<State>();
};

} // namespace rrd::http
