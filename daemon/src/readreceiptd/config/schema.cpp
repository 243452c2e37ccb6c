// readreceiptd's keys and their rules. First the rules for values (URLs,
// addresses, names, times), then each section as the list of its keys, then
// the checks that span sections (webhook names, the default robot_code,
// duplicate messages).
#include "readreceiptd/config/schema.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <filesystem>
#include <limits>
#include <map>
#include <netinet/in.h>
#include <set>
#include <string_view>
#include <unordered_map>

namespace rrd::config::schema {

namespace {

namespace fs = std::filesystem;
using reader::Context;
using reader::index;
using reader::join;
using reader::MapReader;
using reader::quote_text;
using tree::Kind;
using tree::Mark;
using tree::Value;

constexpr int k_max_page_size = 200;
constexpr std::size_t k_max_port = 65535;
// sent_at may be this far ahead of the clock (skew) before it is called odd.
constexpr Millis k_sent_at_tolerance{60'000};
constexpr std::string_view k_auth_forms =
    "exactly one of app_key/app_secret, suite_key/suite_secret/auth_corp_id/suite_ticket, "
    "access_token";

// ---------------------------------------------------------------------------
// Rules: (Context&, Value, key path) -> the value, or nothing after an error.

std::optional<double> positive_number(Context& ctx, Value v, const std::string& path) {
  const auto n = reader::read_number(ctx, v, path);
  if (n && !(*n > 0)) {
    ctx.error(v.mark(), path, "must be greater than 0");
    return std::nullopt;
  }
  return n;
}

auto integer_between(std::int64_t lo, std::int64_t hi) {
  return [lo, hi](Context& ctx, Value v, const std::string& path) -> std::optional<std::int64_t> {
    const auto n = reader::read_integer(ctx, v, path);
    if (n && (*n < lo || *n > hi)) {
      ctx.error(v.mark(), path,
                "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
      return std::nullopt;
    }
    return n;
  };
}

std::optional<std::int64_t> positive_integer(Context& ctx, Value v, const std::string& path) {
  const auto n = reader::read_integer(ctx, v, path);
  if (n && *n < 1) {
    ctx.error(v.mark(), path, "must be at least 1");
    return std::nullopt;
  }
  return n;
}

bool is_host_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || u >= 0x80 ||
         std::string_view("-._~%!$&'()*+,;=").find(c) != std::string_view::npos;
}

// What is wrong with `url` as an http:// or https:// URL to call; "" when
// nothing is. Never quotes the URL, which may carry a token.
std::string url_problem(std::string_view url) {
  for (std::size_t i = 0; i < url.size(); ++i) {
    const auto u = static_cast<unsigned char>(url[i]);
    if (u == ' ') {
      return "must not contain spaces (one is at byte " + std::to_string(i) + ")";
    }
    if (u < 0x20 || u == 0x7f) {
      return "must not contain control characters (one is at byte " + std::to_string(i) + ")";
    }
  }
  const std::string lower = reader::lowercase(url.substr(0, 8));
  std::size_t rest = 0;
  if (lower.rfind("http://", 0) == 0) {
    rest = 7;
  } else if (lower.rfind("https://", 0) == 0) {
    rest = 8;
  } else {
    return "must start with http:// or https://";
  }
  const std::size_t end = url.find_first_of("/?#", rest);
  const std::string_view authority =
      url.substr(rest, end == std::string_view::npos ? std::string_view::npos : end - rest);
  if (authority.find('@') != std::string_view::npos) {
    return "must not contain a user name or password (user:password@host); send credentials "
           "in headers";
  }
  std::string_view host = authority;
  std::optional<std::string_view> port;
  if (!host.empty() && host.front() == '[') {
    const std::size_t close = host.find(']');
    if (close == std::string_view::npos) {
      return "has a '[' without ']' in its host";
    }
    const std::string ip6(host.substr(1, close - 1));
    in6_addr a6{};
    if (inet_pton(AF_INET6, ip6.c_str(), &a6) != 1) {
      return "has an invalid IPv6 address between [ and ]";
    }
    const std::string_view after = host.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        return "has something other than :port after its IPv6 address";
      }
      port = after.substr(1);
    }
  } else {
    const std::size_t colon = host.find(':');
    if (colon != std::string_view::npos) {
      port = host.substr(colon + 1);
      host = host.substr(0, colon);
    }
    if (host.empty()) {
      return "has no host (http://HOST/...)";
    }
    for (std::size_t i = 0; i < host.size(); ++i) {
      if (!is_host_char(host[i])) {
        return "has a character that is not allowed in a host name (at byte " +
               std::to_string(rest + i) + ")";
      }
    }
  }
  if (port) {
    if (port->empty()) {
      return "has an empty port after ':'";
    }
    if (!std::all_of(port->begin(), port->end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return "has a port that is not a number";
    }
    const std::size_t digits = port->find_first_not_of('0');
    const std::string_view significant =
        digits == std::string_view::npos ? std::string_view("0") : port->substr(digits);
    if (significant.size() > 5 || std::stoul(std::string(significant)) > k_max_port ||
        significant == "0") {
      return "port " + std::string(significant.size() > 5 ? *port : significant) +
             " is out of range (1..65535)";
    }
  }
  return {};
}

// dingtalk.endpoint: a base URL, without its trailing '/'.
std::optional<std::string> base_url(Context& ctx, Value v, const std::string& path) {
  auto s = reader::read_string(ctx, v, path);
  if (!s) {
    return std::nullopt;
  }
  std::string problem = url_problem(*s);
  while (!s->empty() && s->back() == '/') {
    s->pop_back();
  }
  if (problem.empty() && s->find_first_of("?#") != std::string::npos) {
    problem = "must not have a query (?...) or a fragment (#...): it is the base of every "
              "request's path";
  }
  if (!problem.empty()) {
    ctx.error(v.mark(), path, problem);
    return std::nullopt;
  }
  return s;
}

std::optional<std::string> webhook_url(Context& ctx, Value v, const std::string& path) {
  auto s = reader::read_string(ctx, v, path);
  if (!s) {
    return std::nullopt;
  }
  if (const std::string problem = url_problem(*s); !problem.empty()) {
    ctx.error(v.mark(), path, problem);
    return std::nullopt;
  }
  return s;
}

// metrics.listen, api.listen: host:port, or "" (off).
std::optional<std::string> listen_address(Context& ctx, Value v, const std::string& path) {
  auto s = reader::read_string(ctx, v, path);
  if (s && !s->empty() && !parse_listen_address(*s)) {
    ctx.error(v.mark(), path,
              "invalid address " + quote_text(*s) +
                  " (use host:port with an IPv4 address, [IPv6] or localhost, port 0..65535; "
                  "\"\" disables)");
    return std::nullopt;
  }
  return s;
}

// state.path: SQLite's own names (":memory:", "file:" URIs) as written; a
// relative path next to the configuration file.
std::optional<std::string> state_path(Context& ctx, Value v, const std::string& path) {
  auto p = reader::read_nonempty_string(ctx, v, path);
  if (!p) {
    return std::nullopt;
  }
  if (*p == ":memory:" || p->rfind("file:", 0) == 0 || fs::path(*p).is_absolute()) {
    return p;
  }
  return (ctx.options().base_dir / *p).lexically_normal().string();
}

std::optional<std::string> webhook_name(Context& ctx, Value v, const std::string& path) {
  auto s = reader::read_string(ctx, v, path);
  if (!s) {
    return std::nullopt;
  }
  const bool valid = !s->empty() && std::all_of(s->begin(), s->end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
  if (!valid) {
    ctx.error(v.mark(), path, "invalid name " + quote_text(*s) + " (use a-z, 0-9, _ and -)");
    return std::nullopt;
  }
  return s;
}

// RFC 9110 token characters.
bool is_header_name(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  });
}

// Header values are not printed: they often hold credentials.
std::optional<std::string> header_value(Context& ctx, Value v, const std::string& path) {
  auto s = reader::read_string(ctx, v, path);
  if (s && std::any_of(s->begin(), s->end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return (u < 0x20 && c != '\t') || u == 0x7f;
      })) {
    ctx.error(v.mark(), path, "header value must not contain control characters");
    return std::nullopt;
  }
  return s;
}

std::optional<std::vector<std::pair<std::string, std::string>>> headers(Context& ctx, Value v,
                                                                        const std::string& path) {
  static const std::set<std::string> reserved = {"webhook-id",        "webhook-timestamp",
                                                 "webhook-signature", "content-type",
                                                 "content-length",    "host"};
  const auto entries = reader::read_string_map(ctx, v, path, header_value);
  if (!entries) {
    return std::nullopt;
  }
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& e : *entries) {
    const std::string header_path = join(path, e.key);
    if (!is_header_name(e.key)) {
      ctx.error(e.key_mark, header_path, "invalid header name");
    } else if (reserved.count(reader::lowercase(e.key)) != 0) {
      ctx.error(e.key_mark, header_path, "is set by readreceiptd and cannot be overridden");
    } else {
      out.emplace_back(e.key, e.value);
    }
  }
  return out;
}

std::optional<std::vector<EventType>> events(Context& ctx, Value v, const std::string& path) {
  const std::vector<std::string> known = {to_string(EventType::message_read),
                                          to_string(EventType::tracking_stopped)};
  const auto event = [&](Context& c, Value item,
                         const std::string& item_path) -> std::optional<std::string> {
    auto name = reader::read_nonempty_string(c, item, item_path);
    if (name && !event_type_from_string(*name)) {
      c.error(item.mark(), item_path,
              "unknown event " + quote_text(*name) + reader::did_you_mean(*name, known) +
                  " (known: message.read, message.tracking_stopped)");
      return std::nullopt;
    }
    return name;
  };
  const auto names = reader::read_unique_strings(ctx, v, path, event);
  if (!names) {
    return std::nullopt;
  }
  if (v.size() == 0) {
    ctx.error(v.mark(), path, "must list at least one event (or be left out)");
    return std::nullopt;
  }
  std::vector<EventType> out;
  for (const auto& name : *names) {
    out.push_back(*event_type_from_string(name));
  }
  return out;
}

std::string approximately(Millis d) {
  const auto ms = d.count();
  if (ms >= 86'400'000) {
    return std::to_string(ms / 86'400'000) + "d";
  }
  if (ms >= 3'600'000) {
    return std::to_string(ms / 3'600'000) + "h";
  }
  if (ms >= 60'000) {
    return std::to_string(ms / 60'000) + "m";
  }
  return std::to_string(ms / 1'000) + "s";
}

// messages[].sent_at: RFC 3339. One in the future is odd (a wrong time
// zone?) but not wrong: a warning.
std::optional<TimePoint> sent_at(Context& ctx, Value v, const std::string& path) {
  const auto text = reader::read_string(ctx, v, path);
  if (!text) {
    return std::nullopt;
  }
  TimePoint t;
  if (!parse_rfc3339(*text, t)) {
    ctx.error(v.mark(), path,
              "invalid time " + quote_text(*text) + " (use RFC 3339, e.g. 2026-11-25T10:00:00Z)");
    return std::nullopt;
  }
  const TimePoint now = ctx.options().now;
  if (t > now + k_sent_at_tolerance) {
    ctx.warning(v.mark(), path,
                *text + " is in the future (" + approximately(t - now) +
                    " ahead of this machine's clock; is its time zone right?): until then the "
                    "message is polled as if it had just been sent");
  }
  return t;
}

// messages[].labels: keys and values are copied into events.
std::optional<std::map<std::string, std::string>> labels(Context& ctx, Value v,
                                                         const std::string& path) {
  const auto entries = reader::read_string_map(ctx, v, path, reader::read_identifier);
  if (!entries) {
    return std::nullopt;
  }
  std::map<std::string, std::string> out;
  for (const auto& e : *entries) {
    if (const std::string problem = reader::identifier_problem(e.key); !problem.empty()) {
      ctx.error(e.key_mark, path, "a key " + problem);
      continue;
    }
    out.emplace(e.key, e.value);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Secrets

// A secret that must be given (as `key` or `key_file`).
void required_secret(MapReader& map, std::string_view key, std::string& out) {
  const reader::Secret s = reader::read_secret(map, key);
  if (!s.given) {
    map.error(key, "required (or " + std::string(key) + "_file)");
  } else if (s.value) {
    out = *s.value;
  }
}

// webhooks[].secret: "whsec_" and base64 of a key of 16 to 64 bytes.
void webhook_secret(MapReader& map, std::string& out) {
  const reader::Secret s = reader::read_secret(map, "secret");
  if (!s.given) {
    map.error("secret", "required (or secret_file)");
    return;
  }
  if (!s.value) {
    return;
  }
  const auto key = webhook_signing_key(*s.value);
  if (!key) {
    map.ctx().error(s.mark, s.path,
                    "must be \"whsec_\" followed by base64 of " +
                        std::to_string(k_min_secret_bytes) + " to 64 bytes");
  } else if (key->size() < k_min_secret_bytes) {
    map.ctx().error(s.mark, s.path,
                    "is too short to be a secret: its key (the base64 after \"whsec_\") must "
                    "decode to at least " +
                        std::to_string(k_min_secret_bytes) + " bytes");
  } else {
    out = *s.value;
  }
}

// ---------------------------------------------------------------------------
// Sections

void read_auth(MapReader& auth, DingTalk& d) {
  // Which of the three forms is written (every key is declared here).
  const auto written = [&](std::initializer_list<const char*> keys) {
    bool any = false;
    for (const char* k : keys) {
      any = auth.find(k).has_value() || any;
    }
    return any;
  };
  const bool internal = written({"app_key", "app_secret", "app_secret_file"});
  const bool third_party = written({"suite_key", "suite_secret", "suite_secret_file",
                                    "auth_corp_id", "suite_ticket", "suite_ticket_file"});
  const bool fixed = written({"access_token", "access_token_file"});
  if (!auth.valid()) {
    return;
  }
  if (int(internal) + int(third_party) + int(fixed) != 1) {
    auth.ctx().error(auth.mark(), auth.path(), k_auth_forms);
    return;
  }
  if (internal) {
    d.auth_kind = DingTalk::AuthKind::internal_app;
    auth.read_required("app_key", d.internal_app.app_key, reader::read_nonempty_string);
    required_secret(auth, "app_secret", d.internal_app.app_secret);
  } else if (third_party) {
    d.auth_kind = DingTalk::AuthKind::third_party;
    auth.read_required("suite_key", d.third_party.suite_key, reader::read_nonempty_string);
    required_secret(auth, "suite_secret", d.third_party.suite_secret);
    auth.read_required("auth_corp_id", d.third_party.auth_corp_id, reader::read_nonempty_string);
    required_secret(auth, "suite_ticket", d.third_party.suite_ticket);
  } else {
    d.auth_kind = DingTalk::AuthKind::fixed_token;
    required_secret(auth, "access_token", d.fixed_token.access_token);
  }
}

// Returns whether robot_code is written but refused.
bool read_dingtalk(MapReader& map, DingTalk& d) {
  map.read("endpoint", d.endpoint, base_url);
  if (const auto auth = map.require("auth")) {
    reader::read_map(map.ctx(), *auth, map.path("auth"), [&](MapReader& a) { read_auth(a, d); });
  }
  const bool robot_code_refused =
      map.find("robot_code") && !map.read("robot_code", d.robot_code, reader::read_identifier);
  map.read("requests_per_second", d.requests_per_second, positive_number);
  map.read("request_timeout", d.request_timeout, reader::read_positive_duration);
  map.read("page_size", d.page_size, integer_between(1, k_max_page_size));
  map.read("ca_file", d.ca_file, reader::read_ca_file);
  map.read("monthly_call_budget", d.monthly_call_budget,
           integer_between(1, std::numeric_limits<std::int32_t>::max()));
  if (const auto stream = map.find("stream")) {
    reader::read_map(map.ctx(), *stream, map.path("stream"), [&](MapReader& s) {
      s.read("enabled", d.stream.enabled, reader::read_bool);
      s.read("fallback_after", d.stream.fallback_after, reader::read_positive_duration);
      if (d.stream.enabled && d.auth_kind == DingTalk::AuthKind::fixed_token) {
        s.error("enabled", "needs the internal-app (app_key) or the third-party (suite_key) auth: "
                           "a fixed access_token cannot open a Stream connection");
      }
    });
  }
  return robot_code_refused || !map.valid();
}

std::optional<std::vector<ScheduleStep>> schedule(Context& ctx, Value v, const std::string& path) {
  const auto list = reader::read_list(ctx, v, path);
  if (!list) {
    return std::nullopt;
  }
  if (list->size() == 0) {
    ctx.error(v.mark(), path, "must have at least one step");
    return std::nullopt;
  }
  std::vector<ScheduleStep> out;
  const std::size_t errors_before = ctx.error_count();
  std::optional<std::pair<Millis, std::size_t>> previous_until; // and its step
  for (std::size_t i = 0; i < list->size(); ++i) {
    const Value item = list->item(i);
    const std::string step_path = index(path, i);
    if (item.is_null()) {
      ctx.error(item.mark(), step_path, "must be a map with until and every");
      continue;
    }
    ScheduleStep step;
    reader::read_map(ctx, item, step_path, [&](MapReader& s) {
      if (!s.valid()) {
        return;
      }
      const bool last = i + 1 == list->size();
      const auto until = s.find("until");
      if (last && until) {
        ctx.error(until->mark(), s.path("until"),
                  "must not be set on the last step (it applies until max_age)");
      } else if (!last && !until) {
        s.error("until", "required on every step but the last");
      } else if (until) {
        step.until = reader::read_positive_duration(ctx, *until, s.path("until"));
        if (step.until && previous_until && *step.until <= previous_until->first) {
          ctx.error(until->mark(), s.path("until"),
                    "must be greater than " + index(path, previous_until->second) + ".until");
        }
        if (step.until) {
          previous_until.emplace(*step.until, i);
        }
      }
      s.read_required("every", step.every, reader::read_positive_duration);
    });
    out.push_back(step);
  }
  if (ctx.error_count() != errors_before) {
    return std::nullopt;
  }
  return out;
}

void read_poll(MapReader& map, Poll& p) {
  map.read("schedule", p.schedule, schedule);
  map.read("reconcile_schedule", p.reconcile_schedule, schedule);
  map.read("not_ready_grace", p.not_ready_grace, reader::read_duration);
  map.read("max_age", p.max_age, reader::read_positive_duration);
}

// state.lease_ttl: a duration of at least k_min_lease_ttl.
std::optional<Millis> lease_ttl(Context& ctx, Value v, const std::string& path) {
  const auto d = reader::read_duration(ctx, v, path);
  if (d && *d < k_min_lease_ttl) {
    ctx.error(v.mark(), path,
              "must be at least " + std::to_string(k_min_lease_ttl.count() / 1000) +
                  "s (a renewal every lease_ttl/3 must have time to reach the database)");
    return std::nullopt;
  }
  return d;
}

// Whether a libpq connection string carries a password: `password=` in the
// keyword/value form, or user:password@ or ?password= in the URI form.
bool conninfo_has_password(std::string_view c) {
  const std::string lower = reader::lowercase(c);
  const std::string_view s = lower;
  for (const std::string_view scheme : {"postgresql://", "postgres://"}) {
    if (s.rfind(scheme, 0) != 0) {
      continue;
    }
    const std::string_view rest = s.substr(scheme.size());
    const std::string_view authority = rest.substr(0, rest.find_first_of("/?"));
    const std::size_t at = authority.rfind('@');
    if (at != std::string_view::npos &&
        authority.substr(0, at).find(':') != std::string_view::npos) {
      return true;
    }
    const std::size_t q = rest.find('?');
    if (q == std::string_view::npos) {
      return false;
    }
    std::string_view query = rest.substr(q + 1);
    while (!query.empty()) {
      const std::string_view param = query.substr(0, query.find('&'));
      if (param.rfind("password=", 0) == 0) {
        return true;
      }
      query.remove_prefix(std::min(query.size(), param.size() + 1));
    }
    return false;
  }
  // keyword = value ...; a value is a word or 'quoted' (\' and \\ escaped).
  std::size_t i = 0;
  const auto skip_space = [&] {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) {
      ++i;
    }
  };
  while (true) {
    skip_space();
    const std::size_t key_start = i;
    while (i < s.size() && s[i] != '=' && s[i] != ' ' && s[i] != '\t') {
      ++i;
    }
    const std::string_view key = s.substr(key_start, i - key_start);
    skip_space();
    if (i >= s.size() || s[i] != '=') {
      return false; // malformed: libpq says so when it connects
    }
    ++i;
    if (key == "password") {
      return true;
    }
    skip_space();
    if (i < s.size() && s[i] == '\'') {
      for (++i; i < s.size() && s[i] != '\''; ++i) {
        if (s[i] == '\\') {
          ++i;
        }
      }
      ++i;
    } else {
      while (i < s.size() && s[i] != ' ' && s[i] != '\t') {
        ++i;
      }
    }
  }
}

void read_state(MapReader& map, State& s) {
  const bool path_written = map.has("path");
  const auto postgres = map.find("postgres");
  if (postgres) {
    if (path_written) {
      map.ctx().error(postgres->mark(), map.path("postgres"),
                      "cannot be combined with state.path (one state database: SQLite at path, "
                      "or PostgreSQL)");
    } else if (map.read("postgres", s.postgres, reader::read_nonempty_identifier)) {
      s.path.clear();
      if (conninfo_has_password(s.postgres)) {
        map.ctx().warning(postgres->mark(), map.path("postgres"),
                          "holds a password; put it in state.password_file (a secret file) "
                          "instead, so that it stays out of the configuration");
      }
    }
  } else {
    map.read_required("path", s.path, state_path);
  }
  const auto only_with_postgres = [&](std::string_view key, std::string_view what) {
    if (!postgres && map.has(key)) {
      map.ctx().error(map.mark_of(key), map.path(key),
                      "only with state.postgres (" + std::string(what) + ")");
      return false;
    }
    return true;
  };
  const bool password_allowed = only_with_postgres("password", "the PostgreSQL password") &&
                                only_with_postgres("password_file", "the PostgreSQL password");
  if (password_allowed) {
    const reader::Secret password = reader::read_secret(map, "password");
    if (password.value) {
      s.password = *password.value;
    }
  }
  if (only_with_postgres("lease_ttl", "the leadership lease of a pair of daemons on PostgreSQL")) {
    map.read("lease_ttl", s.lease_ttl, lease_ttl);
  }
}

void read_metrics(MapReader& map, Metrics& m) {
  map.read("listen", m.listen, listen_address);
}

void read_api(MapReader& map, Api& a) {
  map.read("listen", a.listen, listen_address);
  const reader::Secret token = reader::read_secret(map, "token");
  if (token.value) {
    if (token.value->size() < k_min_secret_bytes) {
      map.ctx().error(token.mark, token.path,
                      "is too short to be a secret: an API token must be at least " +
                          std::to_string(k_min_secret_bytes) + " bytes");
    } else {
      a.token = *token.value;
    }
  }
  const auto address = parse_listen_address(a.listen);
  if (!token.given && address && !is_loopback_host(address->host)) {
    map.ctx().error(map.mark_of("listen"), map.path("token_file"),
                    "required when api.listen is not a loopback address");
  }
}

void read_webhook(MapReader& map, Webhook& w) {
  map.read_required("name", w.name, webhook_name);
  map.read_required("url", w.url, webhook_url); // never printed: it may carry a token
  webhook_secret(map, w.secret);
  map.read("headers", w.headers, headers);
  map.read("timeout", w.timeout, reader::read_positive_duration);
  map.read("ca_file", w.ca_file, reader::read_ca_file);
  map.read("events", w.events, events);
}

// What a message takes from the rest of the configuration.
struct MessageDefaults {
  std::string robot_code;
  // No robot_code default because dingtalk (or its robot_code) was refused:
  // that error is enough, messages without their own are not reported.
  bool robot_code_refused = false;
  std::vector<std::string> webhook_names;
};

// messages[].kind
std::optional<MessageKind> message_kind(Context& ctx, Value v, const std::string& path) {
  const auto text = reader::read_string(ctx, v, path);
  if (!text) {
    return std::nullopt;
  }
  if (const auto k = message_kind_from_string(*text)) {
    return k;
  }
  std::vector<std::string> known;
  for (const MessageKind k : k_all_message_kinds) {
    known.emplace_back(to_string(k));
  }
  ctx.error(v.mark(), path,
            "unknown kind " + quote_text(*text) + reader::did_you_mean(*text, known) +
                " (private_chat: a bot's person-to-person chat; group: groupMessages/send; "
                "oto: oToMessages/batchSend)");
  return std::nullopt;
}

void read_message_fields(MapReader& map, MessageSpec& m, const MessageDefaults& defaults) {
  Context& ctx = map.ctx();
  map.read_required("process_query_key", m.process_query_key, reader::read_nonempty_identifier);
  const bool kind_refused = map.has("kind") && !map.read("kind", m.kind, message_kind);
  const bool conversation_refused =
      map.has("open_conversation_id") &&
      !map.read("open_conversation_id", m.open_conversation_id, reader::read_identifier);
  // A group message sent by a template bot is queried with its token.
  const reader::Secret token = reader::read_secret(map, "token");
  if (token.given && !kind_refused && m.kind != MessageKind::group) {
    ctx.error(token.mark, token.path,
              "only for kind group (a template bot's token), not " +
                  std::string(to_string(m.kind)));
  } else if (token.value) {
    m.token = *token.value;
  }
  if (m.kind == MessageKind::oto && !m.open_conversation_id.empty()) {
    ctx.error(map.find("open_conversation_id")->mark(), map.path("open_conversation_id"),
              "not for kind oto (oToMessages/readStatus asks by robot_code and key alone)");
  }
  if (m.kind == MessageKind::group && !token.given && m.open_conversation_id.empty() &&
      map.valid() && !conversation_refused) {
    map.error("open_conversation_id", "required for kind group (or token, for a template bot)");
  }
  const bool own_robot_code = map.read("robot_code", m.robot_code, reader::read_identifier);
  const auto readers = map.find("expected_readers");
  const auto count = map.find("expected_reader_count");
  if (readers) {
    const auto ids = reader::read_unique_strings(ctx, *readers, map.path("expected_readers"),
                                                 reader::read_nonempty_identifier);
    if (ids && readers->size() == 0) {
      ctx.error(readers->mark(), map.path("expected_readers"),
                "must list at least one reader (or be left out)");
    } else if (ids) {
      m.expected_readers = *ids;
    }
  }
  if (readers && count) {
    ctx.error(count->mark(), map.path("expected_reader_count"),
              "cannot be combined with expected_readers");
  } else {
    map.read("expected_reader_count", m.expected_reader_count, positive_integer);
  }
  map.read("sent_at", m.sent_at, sent_at);
  const auto webhook = [&](Context& c, Value item,
                           const std::string& path) -> std::optional<std::string> {
    auto name = reader::read_nonempty_string(c, item, path);
    const auto& known = defaults.webhook_names;
    if (name && std::find(known.begin(), known.end(), *name) == known.end()) {
      c.error(item.mark(), path,
              "unknown webhook " + quote_text(*name) + reader::did_you_mean(*name, known));
      return std::nullopt;
    }
    return name;
  };
  if (const auto w = map.find("webhooks")) {
    if (auto names = reader::read_unique_strings(ctx, *w, map.path("webhooks"), webhook)) {
      m.webhooks = std::move(*names);
    }
  }
  map.read("labels", m.labels, labels);

  if (m.robot_code.empty()) {
    m.robot_code = defaults.robot_code;
  }
  const bool refused = map.has("robot_code") && !own_robot_code;
  if (m.robot_code.empty() && !refused && !defaults.robot_code_refused && map.valid()) {
    map.error("robot_code", "required (no dingtalk.robot_code default)");
  }
}

// A list under `key` whose items are maps read by `item(MapReader&, i)`; a
// null item gets `null_message`.
template <class Item>
void read_list_of_maps(MapReader& parent, std::string_view key, const char* null_message,
                       Item&& item) {
  const auto v = parent.find(key);
  if (!v) {
    return;
  }
  Context& ctx = parent.ctx();
  const std::string path = parent.path(key);
  const auto list = reader::read_list(ctx, *v, path);
  if (!list) {
    return;
  }
  for (std::size_t i = 0; i < list->size(); ++i) {
    const Value n = list->item(i);
    if (n.is_null()) {
      ctx.error(n.mark(), index(path, i), null_message);
      continue;
    }
    reader::read_map(ctx, n, index(path, i), [&](MapReader& map) { item(map, i); });
  }
}

} // namespace

Config read_config(Context& ctx, Value root, const std::string& file) {
  Config c;
  c.path = file;
  if (root.kind() != Kind::map && !root.is_null()) {
    ctx.error(root.mark(), "",
              std::string("the configuration must be a map of sections, not ") +
                  reader::kind_name(root));
    return c;
  }
  reader::read_map(ctx, root, "", [&](MapReader& map) {
    MessageDefaults defaults;
    if (const auto d = map.require("dingtalk")) {
      reader::read_map(ctx, *d, "dingtalk", [&](MapReader& m) {
        defaults.robot_code_refused = read_dingtalk(m, c.dingtalk);
      });
    } else {
      defaults.robot_code_refused = true;
    }
    defaults.robot_code = c.dingtalk.robot_code;
    reader::read_section(map, "poll", [&](MapReader& m) { read_poll(m, c.poll); });
    reader::read_section(map, "state", [&](MapReader& m) { read_state(m, c.state); });
    reader::read_section(map, "metrics", [&](MapReader& m) { read_metrics(m, c.metrics); });
    reader::read_section(map, "api", [&](MapReader& m) { read_api(m, c.api); });

    // A webhook's name as written counts for the messages that name it,
    // even when something else about the webhook was refused.
    std::unordered_map<std::string, std::size_t> first_name;
    read_list_of_maps(map, "webhooks", "must be a map with name, url and secret",
                      [&](MapReader& m, std::size_t i) {
                        Webhook w;
                        read_webhook(m, w);
                        if (w.name.empty()) {
                          const auto name = m.find("name");
                          if (name && name->is_scalar()) {
                            defaults.webhook_names.emplace_back(name->text());
                          }
                          return;
                        }
                        const auto [it, inserted] = first_name.try_emplace(w.name, i);
                        if (!inserted) {
                          ctx.error(m.mark_of("name"), m.path("name"),
                                    "duplicate of " + index("webhooks", it->second) + ".name (" +
                                        quote_text(w.name) + ")");
                          return;
                        }
                        defaults.webhook_names.push_back(w.name);
                        c.webhooks.push_back(std::move(w));
                      });

    // Each key's first index: a hash lookup per item, so that a file with
    // 100,000 messages loads in a second, not minutes (bench/scale.sh).
    std::unordered_map<std::string, std::size_t> first_key;
    read_list_of_maps(
        map, "messages", "must be a map with process_query_key", [&](MapReader& m, std::size_t i) {
          MessageSpec spec;
          read_message_fields(m, spec, defaults);
          if (spec.process_query_key.empty()) {
            return;
          }
          const auto [it, inserted] = first_key.try_emplace(spec.process_query_key, i);
          if (!inserted) {
            ctx.error(m.mark_of("process_query_key"), m.path("process_query_key"),
                      "duplicate of " + index("messages", it->second) + ".process_query_key");
            return;
          }
          c.messages.push_back(std::move(spec));
        });
  });
  return c;
}

MessageSpec read_message(Context& ctx, Value item, const Config& defaults) {
  MessageDefaults d;
  d.robot_code = defaults.dingtalk.robot_code;
  for (const auto& w : defaults.webhooks) {
    d.webhook_names.push_back(w.name);
  }
  MessageSpec m;
  reader::read_map(ctx, item, "", [&](MapReader& map) { read_message_fields(map, m, d); });
  return m;
}

} // namespace rrd::config::schema
