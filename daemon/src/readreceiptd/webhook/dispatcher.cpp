#include "readreceiptd/webhook/dispatcher.hpp"

#include "readreceiptd/app/logging.hpp"
#include "readreceiptd/common/plural.hpp"
#include "readreceiptd/common/version.hpp"
#include "readreceiptd/webhook/retry.hpp"
#include "readreceiptd/webhook/signing.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <string_view>

namespace rrd::webhook {

const char* to_string(FailureReason r) {
  switch (r) {
  case FailureReason::timeout:
    return "timeout";
  case FailureReason::network:
    return "network";
  case FailureReason::status:
    return "status";
  }
  return "status";
}

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// Appends `name` and `value` so that no two different field lists give the
// same text.
void add_field(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out += ':';
  out += std::to_string(value.size());
  out += ':';
  out.append(value);
  out += '\n';
}

// When a delivery's event was made, as its id says (the daemon's ids all
// do; one of another form is left out of oldest_pending()).
std::optional<TimePoint> made_at(const Delivery& d) {
  return event_id_time(d.event_id);
}

// The HTTP status, when an answer came.
std::optional<int> answer_status(const http::Response& r) {
  return r.failure == http::Failure::none ? std::optional<int>(r.status) : std::nullopt;
}

bool is_success(const http::Response& r) {
  return r.failure == http::Failure::none && r.status >= 200 && r.status < 300;
}

FailureReason failure_reason(const http::Response& r) {
  switch (r.failure) {
  case http::Failure::none:
    return FailureReason::status;
  case http::Failure::timeout:
    return FailureReason::timeout;
  case http::Failure::network:
  case http::Failure::too_large:
    return FailureReason::network;
  }
  return FailureReason::network;
}

// Headers the dispatcher sets itself; a webhook's own headers cannot replace
// them (User-Agent can be replaced).
constexpr std::string_view k_reserved_headers[] = {
    "content-type", "content-length",    "host",
    "webhook-id",   "webhook-timestamp", "webhook-signature"};

bool is_reserved(std::string_view name) {
  const std::string l = lower(name);
  return std::find(std::begin(k_reserved_headers), std::end(k_reserved_headers), l) !=
         std::end(k_reserved_headers);
}

std::int64_t unix_seconds(TimePoint t) {
  const std::int64_t ms = to_unix_ms(t);
  return ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
}

double seconds(Millis d) {
  return static_cast<double>(d.count()) / 1000.0;
}

} // namespace

std::string fingerprint(const config::Webhook& w) {
  std::string text;
  add_field(text, "url", w.url);
  add_field(text, "secret", w.secret);
  for (const auto& [name, value] : w.headers) {
    add_field(text, "header", name);
    add_field(text, "value", value);
  }
  add_field(text, "ca_file", w.ca_file);
  add_field(text, "timeout_ms", std::to_string(w.timeout.count()));
  for (EventType e : w.events) {
    add_field(text, "event", to_string(e));
  }
  return sha256_hex(text);
}

std::string describe_failure(const http::Response& r) {
  return http::describe(r);
}

Dispatcher::Dispatcher(store::Store& store, http::Engine& engine, const Clock& clock,
                       std::function<double()> random01, Observer observer)
    : m_store(store), m_engine(engine), m_clock(clock), m_random01(std::move(random01)),
      m_observer(std::move(observer)) {}

Dispatcher::~Dispatcher() = default;

void Dispatcher::configure(const std::vector<config::Webhook>& webhooks) {
  std::map<std::string, Target> next;
  for (const auto& w : webhooks) {
    Target t;
    t.config = w;
    t.fingerprint = fingerprint(w);
    auto key = decode_secret(w.secret);
    if (key.ok()) {
      t.key = std::move(key).value();
      t.usable = true;
    } else {
      logging::error("webhook secret unusable: its events are kept pending and not sent",
                     {{"webhook", w.name}, {"reason", key.error()}});
    }
    std::string user_agent = std::string("readreceiptd/") + k_version;
    t.headers = {{"Content-Type", "application/json"}};
    for (const auto& [name, value] : w.headers) {
      if (is_reserved(name)) {
        logging::warn("webhook header is set by readreceiptd; the configured value is ignored",
                      {{"webhook", w.name}, {"header", name}});
        continue;
      }
      if (lower(name) == "user-agent") {
        user_agent = value;
        continue;
      }
      t.headers.emplace_back(name, value);
    }
    t.headers.emplace_back("User-Agent", std::move(user_agent));
    try {
      const auto disabled_under = m_store.webhook_disabled_fingerprint(w.name);
      if (disabled_under && *disabled_under == t.fingerprint) {
        t.disabled = true;
        const auto old = m_targets.find(w.name);
        if (old == m_targets.end() || !old->second.disabled) {
          logging::warn("webhook disabled after an HTTP 410 answer, until its configuration "
                        "changes; its events are kept pending",
                        {{"webhook", w.name}});
        }
      } else if (disabled_under) {
        m_store.clear_webhook_disabled(w.name);
        logging::info("webhook configuration changed: enabled again after an HTTP 410",
                      {{"webhook", w.name}});
      }
    } catch (const store::StoreError& e) {
      // Keep the state it had, if any; else assume enabled.
      const auto old = m_targets.find(w.name);
      t.disabled = old != m_targets.end() && old->second.disabled &&
                   old->second.fingerprint == t.fingerprint;
      logging::error("cannot read whether the webhook is disabled",
                     {{"webhook", w.name}, {"reason", e.what()}});
    }
    next.insert_or_assign(w.name, std::move(t));
  }
  for (const auto& [name, counts] : m_counts) {
    if (counts.pending > 0 && next.find(name) == next.end()) {
      logging::warn("webhook not configured: its " +
                        count_of(counts.pending, "pending delivery", "pending deliveries") +
                        " are kept and not sent",
                    {{"webhook", name}, {"pending", counts.pending}});
    }
  }
  m_targets = std::move(next);
  rebuild_ready();
}

void Dispatcher::load(const std::vector<Delivery>& pending) {
  enqueue(pending);
}

void Dispatcher::enqueue(const std::vector<Delivery>& deliveries) {
  for (const auto& d : deliveries) {
    if (d.state != DeliveryState::pending || m_delivered.count({d.event_id, d.webhook}) != 0) {
      continue; // delivered already, written at the next flush()
    }
    QueueKey key{d.process_query_key, d.webhook};
    Queue& q = m_queues[key];
    const bool known = std::any_of(q.items.begin(), q.items.end(),
                                   [&](const Delivery& x) { return x.event_id == d.event_id; });
    if (known) {
      continue;
    }
    // Keep the queue in sequence order; never in front of a head in flight.
    auto first = q.items.begin() + (q.head_in_flight ? 1 : 0);
    auto pos =
        std::upper_bound(first, q.items.end(), d.sequence,
                         [](std::int64_t seq, const Delivery& x) { return seq < x.sequence; });
    const bool new_head = pos == q.items.begin();
    if (new_head && !q.items.empty()) {
      unready(key, q);
    }
    q.items.insert(pos, d);
    Counts& counts = m_counts[d.webhook];
    ++counts.pending;
    if (const auto made = made_at(d)) {
      counts.made.insert(*made);
    }
    if (new_head) {
      make_ready(key, q);
    }
  }
}

bool Dispatcher::active(const std::string& webhook) const {
  const auto it = m_targets.find(webhook);
  return it != m_targets.end() && it->second.usable && !it->second.disabled;
}

void Dispatcher::make_ready(const QueueKey& key, const Queue& queue) {
  if (queue.items.empty() || queue.head_in_flight || !active(key.webhook)) {
    return;
  }
  m_ready[key.webhook].emplace(queue.items.front().next_attempt, key);
}

void Dispatcher::unready(const QueueKey& key, const Queue& queue) {
  if (queue.items.empty()) {
    return;
  }
  const auto it = m_ready.find(key.webhook);
  if (it != m_ready.end()) {
    it->second.erase(ReadyEntry{queue.items.front().next_attempt, key});
  }
}

void Dispatcher::rebuild_ready() {
  m_ready.clear();
  for (const auto& [key, queue] : m_queues) {
    make_ready(key, queue);
  }
}

void Dispatcher::pump() {
  if (m_ready.empty() || (m_gate != nullptr && !m_gate->may_start())) {
    return; // nothing due, or not the leader (past its deadline): no delivery starts
  }
  const TimePoint now = m_clock.now();
  // Start with a different webhook each round, so that when the total limit
  // binds no webhook is always served last.
  std::vector<std::string> names;
  names.reserve(m_ready.size());
  for (const auto& [name, entries] : m_ready) {
    names.push_back(name);
  }
  const std::size_t start = m_pump_round++ % names.size();
  std::rotate(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(start), names.end());

  for (const auto& name : names) {
    auto& entries = m_ready[name];
    Counts& counts = m_counts[name];
    while (!entries.empty() && entries.begin()->first <= now &&
           counts.in_flight < k_max_in_flight_per_webhook && m_in_flight < k_max_in_flight_total) {
      const QueueKey key = entries.begin()->second;
      entries.erase(entries.begin());
      submit(key);
    }
  }
}

std::optional<TimePoint> Dispatcher::next_due() const {
  if (m_in_flight >= k_max_in_flight_total) {
    return std::nullopt;
  }
  std::optional<TimePoint> due;
  for (const auto& [name, entries] : m_ready) {
    if (entries.empty()) {
      continue;
    }
    const auto c = m_counts.find(name);
    if (c != m_counts.end() && c->second.in_flight >= k_max_in_flight_per_webhook) {
      continue;
    }
    if (!due || entries.begin()->first < *due) {
      due = entries.begin()->first;
    }
  }
  return due;
}

void Dispatcher::flush() {
  // While a commit is in flight (PostgreSQL) the marks wait for a turn
  // after it: writing them now would wait for the commit, holding the loop.
  if (m_delivered.empty() || m_store.commit_in_flight()) {
    return;
  }
  try {
    m_store.mark_delivered_all({m_delivered.begin(), m_delivered.end()});
  } catch (const store::StoreError& e) {
    const TimePoint now = m_clock.now();
    if (!m_last_flush_error_log || now - *m_last_flush_error_log >= k_flush_error_log_interval) {
      m_last_flush_error_log = now;
      logging::error("cannot record " + count_of(m_delivered.size(), "delivered event") +
                         ", will try again",
                     {{"deliveries", m_delivered.size()}, {"reason", e.what()}});
    }
    return;
  }
  m_delivered.clear();
}

std::size_t Dispatcher::pending(const std::string& webhook) const {
  const auto it = m_counts.find(webhook);
  return it == m_counts.end() ? 0 : it->second.pending;
}

std::optional<TimePoint> Dispatcher::oldest_pending(const std::string& webhook) const {
  const auto it = m_counts.find(webhook);
  if (it == m_counts.end() || it->second.made.empty()) {
    return std::nullopt;
  }
  return *it->second.made.begin();
}

bool Dispatcher::disabled(const std::string& webhook) const {
  const auto it = m_targets.find(webhook);
  return it != m_targets.end() && it->second.disabled;
}

void Dispatcher::submit(const QueueKey& key) {
  Queue& q = m_queues.at(key);
  const Target& t = m_targets.at(key.webhook);
  const Delivery& d = q.items.front();
  q.head_in_flight = true;
  ++m_counts[key.webhook].in_flight;
  ++m_in_flight;

  const std::int64_t ts = unix_seconds(m_clock.now());
  http::Request r;
  r.method = "POST";
  r.url = t.config.url;
  r.body = d.body;
  r.headers = t.headers;
  r.headers.emplace_back("webhook-id", d.event_id);
  r.headers.emplace_back("webhook-timestamp", std::to_string(ts));
  r.headers.emplace_back("webhook-signature", sign(t.key, d.event_id, ts, d.body));
  r.total_timeout = t.config.timeout;
  r.connect_timeout = std::min(http::k_default_connect_timeout, t.config.timeout);
  r.max_response_bytes = k_max_response_bytes;
  r.ca_file = t.config.ca_file;
  // Many POSTs to one origin: the engine's own HTTP/1.1 client, over
  // keep-alive connections (libcurl only when a proxy must carry it).
  r.hot = true;

  logging::debug("webhook delivery sent", {{"webhook", key.webhook},
                                           {"event_id", d.event_id},
                                           {"key", d.process_query_key},
                                           {"attempt", d.attempts + 1}});
  m_engine.submit(std::move(r),
                  [alive = std::weak_ptr<int>(m_alive), this, key, event_id = d.event_id,
                   fp = t.fingerprint](http::Response response) {
                    if (alive.expired()) {
                      return;
                    }
                    on_complete(key, event_id, fp, std::move(response));
                  });
}

void Dispatcher::pop_head(const QueueKey& key) {
  auto it = m_queues.find(key);
  Queue& q = it->second;
  if (const auto made = made_at(q.items.front())) {
    auto& all = m_counts[key.webhook].made;
    if (const auto at = all.find(*made); at != all.end()) {
      all.erase(at);
    }
  }
  q.items.pop_front();
  q.head_in_flight = false;
  auto& counts = m_counts[key.webhook];
  if (counts.pending > 0) {
    --counts.pending;
  }
  if (q.items.empty()) {
    m_queues.erase(it);
  } else {
    make_ready(key, q);
  }
}

void Dispatcher::hold_after_store_failure(const QueueKey& key, Queue& queue, TimePoint now) {
  queue.items.front().next_attempt = now + k_store_failure_retry;
  make_ready(key, queue);
}

void Dispatcher::on_complete(const QueueKey& key, const std::string& event_id,
                             const std::string& fp, http::Response response) {
  auto& counts = m_counts[key.webhook];
  if (counts.in_flight > 0) {
    --counts.in_flight;
  }
  if (m_in_flight > 0) {
    --m_in_flight;
  }
  const auto qit = m_queues.find(key);
  if (qit == m_queues.end() || qit->second.items.empty() || !qit->second.head_in_flight ||
      qit->second.items.front().event_id != event_id) {
    logging::error("webhook completion for an event that is not in flight",
                   {{"webhook", key.webhook}, {"event_id", event_id}});
    return;
  }
  Queue& q = qit->second;
  q.head_in_flight = false;
  Delivery& d = q.items.front();
  const TimePoint now = m_clock.now();
  if (m_observer.on_attempt) {
    m_observer.on_attempt(key.webhook, response.duration);
  }

  if (is_success(response)) {
    m_delivered.emplace(d.event_id, d.webhook);
    logging::debug("webhook delivered", {{"webhook", key.webhook},
                                         {"event_id", d.event_id},
                                         {"key", d.process_query_key},
                                         {"attempt", d.attempts + 1},
                                         {"status", response.status},
                                         {"duration_seconds", seconds(response.duration)}});
    if (m_observer.on_delivered) {
      m_observer.on_delivered(key.webhook, response.duration);
    }
    pop_head(key);
    return;
  }

  const std::string error = describe_failure(response);
  if (m_observer.on_failed) {
    m_observer.on_failed(key.webhook, failure_reason(response));
  }

  if (response.failure == http::Failure::none && response.status == 410) {
    const auto t = m_targets.find(key.webhook);
    if (t != m_targets.end() && t->second.fingerprint == fp) {
      // Gone: hold this webhook's queues, without counting the attempt.
      if (!t->second.disabled) {
        t->second.disabled = true;
        m_ready.erase(key.webhook);
        logging::warn("webhook disabled by HTTP 410 Gone until its configuration changes; its "
                      "events are kept pending",
                      {{"webhook", key.webhook}, {"event_id", d.event_id}, {"status", 410}});
        try {
          m_store.set_webhook_disabled(key.webhook, fp, now, error);
        } catch (const store::StoreError& e) {
          logging::error("cannot record the webhook as disabled",
                         {{"webhook", key.webhook}, {"reason", e.what()}});
        }
        if (m_observer.on_disabled) {
          m_observer.on_disabled(key.webhook);
        }
      }
      d.next_attempt = now;
      d.last_error = error;
      try {
        m_store.mark_retry(d.event_id, d.webhook, d.attempts, now, error);
      } catch (const store::StoreError& e) {
        logging::error("cannot record the webhook's answer",
                       {{"webhook", key.webhook}, {"event_id", d.event_id}, {"reason", e.what()}});
      }
      return;
    }
    // The configuration changed while the request was in flight: the 410 was
    // for the old one. Count it as an ordinary failure.
  }

  const int attempts = d.attempts + 1;
  std::optional<Millis> retry_after;
  if (response.failure == http::Failure::none && honours_retry_after(response.status)) {
    if (const auto value = response.header("retry-after")) {
      retry_after = http::parse_retry_after(*value, now);
    }
  }
  const auto delay = retry_delay(attempts, m_random01(), retry_after);
  if (!delay) {
    try {
      m_store.mark_dead(d.event_id, d.webhook, attempts, now, error);
    } catch (const store::StoreError& e) {
      logging::error("cannot record the event as a dead letter",
                     {{"webhook", key.webhook}, {"event_id", d.event_id}, {"reason", e.what()}});
      hold_after_store_failure(key, q, now);
      return;
    }
    logging::warn("webhook delivery failed for the last time: the event is now a dead letter",
                  {{"webhook", key.webhook},
                   {"event_id", d.event_id},
                   {"key", d.process_query_key},
                   {"attempt", attempts},
                   {"reason", error},
                   {"status", answer_status(response)}});
    if (m_observer.on_dead) {
      m_observer.on_dead(key.webhook);
    }
    pop_head(key);
    return;
  }
  const TimePoint next = now + *delay;
  try {
    m_store.mark_retry(d.event_id, d.webhook, attempts, next, error);
  } catch (const store::StoreError& e) {
    logging::error("cannot record a failed delivery attempt",
                   {{"webhook", key.webhook}, {"event_id", d.event_id}, {"reason", e.what()}});
    hold_after_store_failure(key, q, now);
    return;
  }
  d.attempts = attempts;
  d.next_attempt = next;
  d.last_error = error;
  // A failure worth acting on: warn, so that it shows under --log-level warn.
  logging::warn("webhook delivery failed", {{"webhook", key.webhook},
                                            {"event_id", d.event_id},
                                            {"key", d.process_query_key},
                                            {"attempt", attempts},
                                            {"reason", error},
                                            {"status", answer_status(response)},
                                            {"retry_in_seconds", std::round(seconds(*delay))}});
  make_ready(key, q);
}

} // namespace rrd::webhook
