// Live updates for GET /v1/updates (SPEC section 8): the loop publishes
// Server-Sent Events, and each open stream (one API thread each) takes them
// from a bounded queue of its own.
//
// - UpdateQueue: a subscriber's queue of frames, bounded in frames and in
//   bytes. A batch that does not fit is refused whole.
// - StatusCoalescer: when the loop looks at the status again, and whether
//   what it renders is to be published (at most once per
//   k_status_min_interval, and only when it differs from the last one).
// - UpdateHub: the subscribers. subscribe() refuses one more than
//   k_max_update_subscribers. publish() never waits for a subscriber: a
//   subscriber whose queue cannot take the loop's frames is dropped at once
//   (its queue is replaced by a final `event: end`, reason "too slow", which
//   its thread writes if the client still reads), and counted. close() ends
//   every stream with `event: end`, reason "shutting down"; end_all() ends
//   them with another reason ("token changed").
// - UpdateSubscriber: one open stream, held by the API thread that writes it.
//   next() waits for what to write; destroying it unsubscribes.
// - UpdateFeed: the loop's side. The message table reports each committed
//   message; the feed renders it (only while someone subscribes) as
//   GET /v1/messages/{key} would, once per message per turn, and publishes
//   the turn's messages together at its end, then the status when it is due
//   and differs.
//
// Thread-safety: UpdateQueue, StatusCoalescer and UpdateFeed are not
// thread-safe (UpdateFeed is the loop's). UpdateHub and UpdateSubscriber are:
// UpdateHub::m_mutex guards the subscriber list and the last status frame,
// each subscription's own mutex its queue and whether it ended; the hub's is
// always taken first.
#pragma once

#include "readreceiptd/api/router.hpp"
#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/common/model.hpp"
#include "readreceiptd/common/result.hpp"

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace rrd::api {

// Open /v1/updates streams at most; the next one gets 503.
inline constexpr std::size_t k_max_update_subscribers = 128;
// A subscriber's queue: frames and bytes not yet written. A client that
// falls this far behind is dropped.
inline constexpr std::size_t k_update_queue_frames = 1'024;
inline constexpr std::size_t k_update_queue_bytes = 8 * 1024 * 1024;
// A comment line after this long without a write keeps a stream open.
inline constexpr Millis k_update_keep_alive{15'000};
// Status events: at most one per this long.
inline constexpr Millis k_status_min_interval{1'000};
// The `retry:` a stream opens with: how soon a reader connects again.
inline constexpr Millis k_update_retry{2'000};

// The `reason` label of readreceiptd_api_update_subscribers_dropped_total:
// the loop found its queue full, or a write to it did not go out within the
// API's write timeout. Both mean the client does not read fast enough.
enum class DropReason { queue_full, write_timeout };
const char* to_string(DropReason r);
inline constexpr DropReason k_all_drop_reasons[] = {DropReason::queue_full,
                                                    DropReason::write_timeout};

// One complete SSE frame (an event or a comment), shared by every queue.
using Frame = std::shared_ptr<const std::string>;
Frame make_frame(std::string text);

// The frames of GET /v1/updates.
Frame message_frame(const MessageRecord& m);    // event: message, message_json(m)
Frame status_frame(const DaemonStatus& s);      // event: status, status_json(s)
std::string end_frame(std::string_view reason); // event: end, {"reason": reason}
inline constexpr std::string_view k_end_too_slow = "too slow";
inline constexpr std::string_view k_end_shutting_down = "shutting down";
inline constexpr std::string_view k_end_token_changed = "token changed";

class UpdateQueue {
public:
  UpdateQueue(std::size_t max_frames, std::size_t max_bytes)
      : m_max_frames(max_frames), m_max_bytes(max_bytes) {}

  // Queues every frame, in order, or none when they would not fit.
  bool offer(const std::vector<Frame>& frames);
  // Takes everything queued, in order.
  std::vector<Frame> take();
  void clear();
  std::size_t frames() const { return m_frames.size(); }
  std::size_t bytes() const { return m_bytes; }
  bool empty() const { return m_frames.empty(); }

private:
  std::size_t m_max_frames;
  std::size_t m_max_bytes;
  std::deque<Frame> m_frames;
  std::size_t m_bytes = 0;
};

class StatusCoalescer {
public:
  explicit StatusCoalescer(Millis min_interval = k_status_min_interval)
      : m_min_interval(min_interval) {}

  // Whether the status is to be looked at again: never yet, at least
  // min_interval since the last look, or the clock went back.
  bool due(TimePoint now) const;
  // The status as it is at `now` (a look): true when it is to be published,
  // being different from the last one published, which it then becomes.
  bool offer(TimePoint now, const std::string& status);
  // When due() is next true; nullopt when it already is.
  std::optional<TimePoint> next_due() const;

private:
  Millis m_min_interval;
  std::optional<TimePoint> m_last_look;
  std::optional<std::string> m_last_published;
};

struct UpdateLimits {
  std::size_t max_subscribers = k_max_update_subscribers;
  std::size_t queue_frames = k_update_queue_frames;
  std::size_t queue_bytes = k_update_queue_bytes;
};

struct UpdateStats {
  std::size_t subscribers = 0;
  std::array<std::uint64_t, std::size(k_all_drop_reasons)> dropped{}; // by k_all_drop_reasons
  std::uint64_t dropped_for(DropReason r) const;
};

class UpdateHub;

class UpdateSubscriber {
public:
  ~UpdateSubscriber(); // unsubscribes
  UpdateSubscriber(const UpdateSubscriber&) = delete;
  UpdateSubscriber& operator=(const UpdateSubscriber&) = delete;

  struct Next {
    std::string bytes; // the frames to write, in order; "" when nothing came
    bool end = false;  // the stream ends after `bytes` (its final event)
  };
  // Waits until frames are queued or the stream ends, at most `max_wait`,
  // and takes what there is.
  Next next(Millis max_wait);
  // A write to this stream did not go out within the write timeout: the
  // subscriber is dropped (reason write_timeout) and its stream ends.
  void write_timed_out();

  struct State; // shared with the hub (updates.cpp)

private:
  friend class UpdateHub;
  UpdateSubscriber(UpdateHub& hub, std::shared_ptr<State> state);

  UpdateHub& m_hub;
  std::shared_ptr<State> m_state;
};

class UpdateHub {
public:
  explicit UpdateHub(UpdateLimits limits = {});
  // REQUIRES: every UpdateSubscriber is gone.
  ~UpdateHub();
  UpdateHub(const UpdateHub&) = delete;
  UpdateHub& operator=(const UpdateHub&) = delete;

  enum class Refusal { full, closed };
  // Any thread: a new stream, which starts with `retry:` and the last status
  // published. Refused when k_max_update_subscribers are open, or after
  // close().
  Result<std::unique_ptr<UpdateSubscriber>, Refusal> subscribe();

  // Loop thread: hands the frames to every subscriber, without waiting.
  void publish(const std::vector<Frame>& frames);
  // Loop thread: publishes a status frame and keeps it for new subscribers.
  void publish_status(const Frame& status);
  // Ends every stream (final event "shutting down"); later subscribe()s are
  // refused.
  void close();
  // Ends every open stream with `reason` as its final event; new ones are
  // taken as before (after a change of the API token: a page must show the
  // new one to go on listening).
  void end_all(std::string_view reason);

  // Any thread.
  std::size_t subscribers() const { return m_count.load(std::memory_order_relaxed); }
  UpdateStats stats() const;
  const UpdateLimits& limits() const { return m_limits; }

private:
  friend class UpdateSubscriber;
  using StatePtr = std::shared_ptr<UpdateSubscriber::State>;

  // REQUIRES: m_mutex held.
  void end_locked(const StatePtr& s, std::string_view reason);
  void publish_locked(const std::vector<Frame>& frames);
  void end_all_locked(std::string_view reason);
  void count_drop(DropReason reason);
  void drop(const StatePtr& s, DropReason reason);
  void unsubscribe(const StatePtr& s);

  const UpdateLimits m_limits;
  mutable std::mutex m_mutex;
  std::vector<StatePtr> m_subscribers; // guarded by m_mutex
  Frame m_status;                      // guarded by m_mutex
  bool m_closed = false;               // guarded by m_mutex
  std::atomic<std::size_t> m_count{0};
  std::array<std::atomic<std::uint64_t>, std::size(k_all_drop_reasons)> m_dropped{};
};

class UpdateFeed {
public:
  explicit UpdateFeed(UpdateHub& hub) : m_hub(hub) {}

  // A message's new state is committed.
  void message_changed(const MessageRecord& m);
  // The end of a loop turn: publishes this turn's messages, then, when the
  // coalescer says so, the status `status()` renders.
  void end_turn(TimePoint now, const std::function<DaemonStatus()>& status);
  // When end_turn() has the status to look at next.
  std::optional<TimePoint> next_wakeup() const { return m_status.next_due(); }

private:
  UpdateHub& m_hub;
  StatusCoalescer m_status;
  std::vector<Frame> m_frames;                          // this turn's messages
  std::unordered_map<std::string, std::size_t> m_index; // key -> its entry in m_frames
};

} // namespace rrd::api
