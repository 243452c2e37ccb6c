// The daemon's configuration (SPEC section 3), parsed once from YAML into
// typed, validated values. A Config is a plain value: build it, copy it, share
// it read-only between threads. The loaders read the environment and files;
// call them from one thread at a time, and not while another thread calls
// setenv().
#pragma once

#include "readreceiptd/common/clock.hpp"
#include "readreceiptd/common/model.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace rrd::config {

// Thrown by the loaders, with every error they found (not only the first):
// each names the file, line and column where known, and the key path:
// "/etc/x.yaml:12:5: messages[3].process_query_key: required". At most
// k_max_reported_errors, in file order, then "... and N more errors". what()
// is the list joined with "\n". No error contains a secret's value.
class ConfigError : public std::runtime_error {
public:
  explicit ConfigError(std::vector<std::string> errors);
  explicit ConfigError(const std::string& error) : ConfigError(std::vector<std::string>{error}) {}
  const std::vector<std::string>& errors() const { return m_errors; }

private:
  std::vector<std::string> m_errors;
};

// How many errors one load reports at most.
inline constexpr std::size_t k_max_reported_errors = 50;
// A webhook secret's key and an API token must be at least this long.
inline constexpr std::size_t k_min_secret_bytes = 16;
// The largest configuration file load_file() reads.
inline constexpr std::size_t k_max_config_bytes = 16 * 1024 * 1024;

struct InternalAppAuth {
  std::string app_key;
  std::string app_secret; // secret
};
struct ThirdPartyAuth {
  std::string suite_key;
  std::string suite_secret; // secret
  std::string auth_corp_id;
  std::string suite_ticket; // secret
};
struct FixedTokenAuth {
  std::string access_token; // secret
};

// Push over DingTalk's Stream mode.
struct Stream {
  bool enabled = false;
  Millis fallback_after{30'000}; // down this long: poll.schedule again
  bool operator==(const Stream&) const = default;
};

struct DingTalk {
  std::string endpoint = "https://api.dingtalk.com"; // no trailing '/'
  enum class AuthKind { internal_app, third_party, fixed_token } auth_kind = AuthKind::internal_app;
  InternalAppAuth internal_app;
  ThirdPartyAuth third_party;
  FixedTokenAuth fixed_token;
  std::string robot_code;
  double requests_per_second = 20;
  Millis request_timeout{10'000};
  int page_size = 200; // 1..200
  std::string ca_file; // empty: the system's CAs
  // At most this many read-status calls (every page) per calendar month,
  // Beijing time; nullopt: no budget.
  std::optional<std::int64_t> monthly_call_budget;
  Stream stream;
};

struct ScheduleStep {
  std::optional<Millis> until; // nullopt only on the last step
  Millis every{0};
  bool operator==(const ScheduleStep&) const = default;
};

struct Poll {
  std::vector<ScheduleStep> schedule{
      {Millis{10 * 60'000}, Millis{15'000}},
      {Millis{2 * 3'600'000}, Millis{60'000}},
      {Millis{24 * 3'600'000}, Millis{10 * 60'000}},
      {std::nullopt, Millis{3'600'000}},
  };
  // The schedule while the Stream connection is up: polls only reconcile.
  std::vector<ScheduleStep> reconcile_schedule{
      {Millis{3'600'000}, Millis{20 * 60'000}},
      {Millis{24 * 3'600'000}, Millis{4 * 3'600'000}},
      {std::nullopt, Millis{24 * 3'600'000}},
  };
  Millis not_ready_grace{2 * 60'000};
  Millis max_age{72 * 3'600'000};
};

// The PostgreSQL leadership lease (SPEC section 12): renewed every
// lease_ttl/3; a shorter lease_ttl leaves a renewal too little time to reach
// the database.
inline constexpr Millis k_default_lease_ttl{10'000};
inline constexpr Millis k_min_lease_ttl{2'000};

struct State {
  // SQLite: the database file. "" with postgres.
  std::string path = "/var/lib/readreceiptd/state.db";
  // PostgreSQL: a libpq connection string ("" for SQLite). It may hold a
  // password (a warning says to use password_file): never log it.
  std::string postgres;
  std::string password; // secret, from password_file; "" when none
  Millis lease_ttl = k_default_lease_ttl;
  bool uses_postgres() const { return !postgres.empty(); }
  bool operator==(const State&) const = default;
};

struct Metrics {
  std::string listen = "127.0.0.1:9464"; // "" disables
};

struct Api {
  std::string listen = "127.0.0.1:9465"; // "" disables
  std::string token;                     // secret; "" when no token_file
};

struct Webhook {
  std::string name;
  std::string url;
  std::string secret; // secret, "whsec_..."
  std::vector<std::pair<std::string, std::string>> headers;
  Millis timeout{10'000};
  std::string ca_file;
  std::vector<EventType> events{EventType::message_read, EventType::tracking_stopped};
  bool operator==(const Webhook&) const = default;
};

struct Config {
  std::string path; // the file it was loaded from
  DingTalk dingtalk;
  Poll poll;
  State state;
  Metrics metrics;
  Api api;
  std::vector<Webhook> webhooks;
  std::vector<MessageSpec> messages; // robot_code already defaulted
  // What is odd but not wrong ("messages[0].sent_at: ... is in the future"),
  // formatted like errors. Shown by --check-config, logged at start-up and
  // on reload.
  std::vector<std::string> warnings;
};

// Loads and validates a configuration file (at most k_max_config_bytes). Relative *_file paths are
// looked up in $CREDENTIALS_DIRECTORY first, then next to the file; the secrets they name are read
// into the Config. `ca_file` paths are resolved the same way (and must be readable); a relative
// `state.path` is taken relative to the file's directory. `${NAME}` in values is replaced from the
// environment. Throws ConfigError.
Config load_file(const std::string& path);

// Parses configuration text; `path` names it in errors and anchors relative
// *_file paths.
Config load_string(const std::string& yaml, const std::string& path);

// Validates one `messages:` item given as a JSON object (the API's body),
// with the same rules and key names as YAML. `defaults` supplies
// dingtalk.robot_code and the webhook names. Throws ConfigError whose
// errors start with the key path ("expected_readers[1]: must be a string").
// JSON types are checked strictly (a number is not a string), duplicate
// keys are refused, and `${NAME}` is NOT expanded: a request must not read
// the daemon's environment.
struct ParsedMessage {
  MessageSpec spec;
  std::vector<std::string> warnings; // as Config::warnings, without a place
};
ParsedMessage parse_message_json(const std::string& json, const Config& defaults);

// The keys whose new value a reload cannot apply (the running daemon keeps
// the old one until the next start), in the order of the file:
// "state.path", "state.postgres", "state.password_file", "state.lease_ttl",
// "api.listen". Empty when none changed.
std::vector<std::string> restart_only_changes(const Config& running, const Config& loaded);

// Parses "500ms", "15s", "10m", "2h", "7d". Returns nullopt when malformed.
std::optional<Millis> parse_duration(const std::string& text);

// A listen address as `metrics.listen` and `api.listen` give it:
// "127.0.0.1:9464", "[::1]:9465", "localhost:8080". `host` has no brackets.
struct ListenAddress {
  std::string host;
  std::uint16_t port = 0; // 0: an ephemeral port
  bool operator==(const ListenAddress&) const = default;
};
// Returns nullopt unless `text` is an IPv4 address, a bracketed IPv6 address
// or "localhost", then ':' and a port 0..65535.
std::optional<ListenAddress> parse_listen_address(const std::string& text);
// True for "localhost", 127.0.0.0/8 and ::1 (also as ::ffff:127.x.y.z).
bool is_loopback_host(const std::string& host);

// The HMAC key of a webhook secret: the base64-decoded part after "whsec_"
// (standard alphabet, padding optional), 1..64 bytes. Returns nullopt when
// the secret is malformed. Every secret in a loaded Config decodes, to at
// least k_min_secret_bytes.
std::optional<std::string> webhook_signing_key(const std::string& secret);

} // namespace rrd::config
