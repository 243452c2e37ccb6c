#include "readreceiptd/http/scoped_engine.hpp"

#include <utility>

namespace rrd::http {

ScopedEngine::ScopedEngine(Engine& inner) : m_inner(inner) {}

ScopedEngine::~ScopedEngine() {
  m_state->alive = false;
}

void ScopedEngine::submit(Request request, Callback done) {
  ++m_state->in_flight;
  // The state, not this engine, is what the inner engine's callback holds:
  // it outlives a ScopedEngine destroyed before the answer comes.
  m_inner.submit(std::move(request), [state = m_state, done = std::move(done)](Response r) {
    --state->in_flight;
    if (state->alive) {
      done(std::move(r));
    }
  });
}

} // namespace rrd::http
