// An engine that can run inside another engine's loop: the outer engine
// waits on event_fd() along with its own descriptors and calls run_once()
// with no wait when it is readable or next_due() has come. Private to the
// http module.
//
// Thread-safety: as Engine; event_fd() and next_due() from the loop thread.
#pragma once

#include "readreceiptd/http/http_engine.hpp"

#include <chrono>
#include <memory>
#include <optional>

namespace rrd::http {

class NestableEngine : public Engine {
public:
  // Readable (level-triggered) while run_once() has I/O to do.
  virtual int event_fd() const = 0;
  // When run_once() must run even if event_fd() stays quiet: a timer of the
  // engine's, or now when answers wait for their callbacks. nullopt: never.
  virtual std::optional<std::chrono::steady_clock::time_point> next_due() const = 0;
};

// The libcurl multi engine (curl_engine.cpp).
std::unique_ptr<NestableEngine> make_nestable_curl_engine();

} // namespace rrd::http
