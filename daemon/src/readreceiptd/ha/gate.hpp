// The work gate: what every DingTalk call, Stream acknowledgement and
// webhook delivery asks before it starts. On PostgreSQL the coordinator
// (ha/coordinator.hpp) answers: yes while this daemon leads and its own
// deadline has not passed. On SQLite there is no gate (a null pointer):
// the daemon is always the leader. Called on the loop's thread only.
#pragma once

namespace rrd::ha {

class WorkGate {
public:
  virtual ~WorkGate() = default;
  virtual bool may_start() const = 0;
};

} // namespace rrd::ha
