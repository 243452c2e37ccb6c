// docs/openapi.yaml against the router: every route and method that route()
// serves (api::routes(), the table it dispatches through) is described, and
// every one described is served; with the same path and query parameters,
// the same need for the bearer token, and message, reader, dead-letter,
// event and status schemas that list exactly the fields the API renders.
// Every $ref resolves; every answer is JSON but the event stream of
// /v1/updates.
#include "readreceiptd/api/router.hpp"

#include <algorithm>
#include <cctype>
#include <doctest/doctest.h>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>
#include <yaml-cpp/yaml.h>

using namespace rrd;

namespace {

namespace fs = std::filesystem;

const std::set<std::string> k_http_methods{"get",     "put",  "post",  "delete",
                                           "options", "head", "patch", "trace"};

YAML::Node load_openapi() {
  return YAML::LoadFile(
      (fs::path(__FILE__).parent_path().parent_path() / "docs" / "openapi.yaml").string());
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

// Follows a local "$ref" ("#/components/parameters/Limit"); other nodes as
// they are.
YAML::Node resolve(const YAML::Node& doc, const YAML::Node& node) {
  if (!node.IsMap() || !node["$ref"]) {
    return node;
  }
  const auto ref = node["$ref"].as<std::string>();
  REQUIRE_MESSAGE(ref.rfind("#/", 0) == 0, ref);
  YAML::Node at = YAML::Clone(doc);
  std::size_t start = 2;
  while (start <= ref.size()) {
    const auto slash = ref.find('/', start);
    const std::string part =
        ref.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    REQUIRE_MESSAGE((at.IsMap() && at[part]), "unresolved $ref " << ref);
    at = at[part];
    if (slash == std::string::npos) {
      break;
    }
    start = slash + 1;
  }
  return at;
}

// Every "$ref" under `node`.
void collect_refs(const YAML::Node& node, std::vector<YAML::Node>& out) {
  if (node.IsMap()) {
    if (node["$ref"]) {
      out.push_back(node);
    }
    for (const auto& kv : node) {
      collect_refs(kv.second, out);
    }
  } else if (node.IsSequence()) {
    for (const auto& item : node) {
      collect_refs(item, out);
    }
  }
}

// The parameters of an operation in `where` ("query", "path"), the path
// item's own included.
std::set<std::string> parameters(const YAML::Node& doc, const YAML::Node& path_item,
                                 const YAML::Node& op, const std::string& where) {
  std::set<std::string> out;
  for (const auto& list : {path_item["parameters"], op["parameters"]}) {
    if (!list) {
      continue;
    }
    for (const auto& p : list) {
      const YAML::Node param = resolve(doc, p);
      if (param["in"].as<std::string>() == where) {
        out.insert(param["name"].as<std::string>());
      }
    }
  }
  return out;
}

// The {names} of a path template.
std::set<std::string> template_names(std::string_view path) {
  std::set<std::string> out;
  for (auto open = path.find('{'); open != std::string_view::npos; open = path.find('{', open)) {
    const auto close = path.find('}', open);
    out.emplace(path.substr(open + 1, close - open - 1));
    open = close;
  }
  return out;
}

std::set<std::string> schema_properties(const YAML::Node& doc, const std::string& name) {
  std::set<std::string> out;
  for (const auto& kv : doc["components"]["schemas"][name]["properties"]) {
    out.insert(kv.first.as<std::string>());
  }
  return out;
}

std::set<std::string> required_of(const YAML::Node& doc, const std::string& name) {
  std::set<std::string> out;
  for (const auto& r : doc["components"]["schemas"][name]["required"]) {
    out.insert(r.as<std::string>());
  }
  return out;
}

std::set<std::string> keys_of(const nlohmann::json& j) {
  std::set<std::string> out;
  for (const auto& [k, v] : j.items()) {
    out.insert(k);
  }
  return out;
}

} // namespace

TEST_CASE("openapi: every route the router serves is described, and only those") {
  const YAML::Node doc = load_openapi();
  REQUIRE(doc["openapi"].as<std::string>().rfind("3.0.", 0) == 0);
  const YAML::Node paths = doc["paths"];
  REQUIRE(paths.IsMap());
  REQUIRE_FALSE(api::routes().empty());

  // The router's table → the document.
  for (const auto& route : api::routes()) {
    const std::string path(route.path);
    INFO("route " << path);
    REQUIRE_MESSAGE(paths[path], "not described in docs/openapi.yaml");
    const YAML::Node item = paths[path];
    for (const auto& op : route.operations) {
      const std::string method = lower(op.method);
      INFO("method " << method);
      REQUIRE_MESSAGE(item[method], "not described in docs/openapi.yaml");
      const YAML::Node described = item[method];
      const std::set<std::string> query(op.query_parameters.begin(), op.query_parameters.end());
      CHECK(parameters(doc, item, described, "query") == query);
      CHECK(parameters(doc, item, described, "path") == template_names(route.path));
      // security: [] where no token is needed; the document's default
      // (bearer) everywhere else.
      const bool open = described["security"] && described["security"].size() == 0;
      CHECK(open == !route.needs_token);
      if (route.needs_token) {
        CHECK_FALSE(described["security"]); // the document's default applies
        CHECK(described["responses"]["401"]);
      }
      REQUIRE(described["responses"].IsMap());
      CHECK(described["responses"].size() > 0);
    }
  }

  // The document → the router's table.
  for (const auto& kv : paths) {
    const std::string path = kv.first.as<std::string>();
    INFO("described path " << path);
    const auto route = std::find_if(api::routes().begin(), api::routes().end(),
                                    [&](const api::Route& r) { return r.path == path; });
    REQUIRE_MESSAGE(route != api::routes().end(), "not served by api::routes()");
    for (const auto& m : kv.second) {
      const std::string method = m.first.as<std::string>();
      if (k_http_methods.count(method) == 0) {
        continue; // parameters, summary, ...
      }
      INFO("described method " << method);
      CHECK_MESSAGE(
          std::any_of(route->operations.begin(), route->operations.end(),
                      [&](const api::Operation& op) { return lower(op.method) == method; }),
          "not served by api::routes()");
    }
  }

  // The default is the bearer scheme.
  REQUIRE(doc["security"].IsSequence());
  CHECK(doc["security"][0]["bearer"]);
  CHECK(doc["components"]["securitySchemes"]["bearer"]["scheme"].as<std::string>() == "bearer");
}

TEST_CASE("openapi: every $ref resolves and every error answer is the Error schema") {
  const YAML::Node doc = load_openapi();
  std::vector<YAML::Node> refs;
  collect_refs(doc, refs);
  CHECK(refs.size() > 10);
  for (const auto& r : refs) {
    resolve(doc, r); // REQUIREs inside
  }
  for (const auto& kv : doc["paths"]) {
    for (const auto& m : kv.second) {
      if (k_http_methods.count(m.first.as<std::string>()) == 0) {
        continue;
      }
      for (const auto& resp : m.second["responses"]) {
        const int status = std::stoi(resp.first.as<std::string>());
        INFO(kv.first.as<std::string>() << " " << m.first.as<std::string>() << " " << status);
        const YAML::Node answer = resolve(doc, resp.second);
        CHECK(answer["description"]);
        if (status == 204) {
          CHECK_FALSE(answer["content"]);
          continue;
        }
        // The one answer that is not JSON: the event stream of /v1/updates.
        if (kv.first.as<std::string>() == "/v1/updates" && status == 200) {
          CHECK(answer["content"]["text/event-stream"]["schema"]);
          CHECK_FALSE(answer["content"]["application/json"]);
          continue;
        }
        REQUIRE(answer["content"]["application/json"]["schema"]);
        const YAML::Node schema = answer["content"]["application/json"]["schema"];
        // /healthz and /readyz answer their own shape also when not OK.
        if (status >= 400 && status != 503) {
          CHECK(schema["$ref"].as<std::string>() == "#/components/schemas/Error");
        }
      }
    }
  }
}

TEST_CASE("openapi: the Message, Reader and DeadLetter schemas list the fields the API renders") {
  const YAML::Node doc = load_openapi();
  MessageRecord m;
  m.spec.process_query_key = "k";
  m.spec.robot_code = "r";
  const auto message = nlohmann::json::parse(api::message_json(m));
  CHECK(schema_properties(doc, "Message") == keys_of(message));
  std::set<std::string> required;
  for (const auto& r : doc["components"]["schemas"]["Message"]["required"]) {
    required.insert(r.as<std::string>());
  }
  CHECK(required == keys_of(message));

  // Each of readers is the Reader schema, all its fields required.
  m.read_user_ids = {"u1"};
  m.read_info = {ReadInfo{}};
  const auto reader = nlohmann::json::parse(api::message_json(m))["readers"].at(0);
  const YAML::Node items =
      doc["components"]["schemas"]["Message"]["properties"]["readers"]["items"];
  REQUIRE(items["$ref"]);
  CHECK(items["$ref"].as<std::string>() == "#/components/schemas/Reader");
  CHECK(schema_properties(doc, "Reader") == keys_of(reader));
  std::set<std::string> reader_required;
  for (const auto& r : doc["components"]["schemas"]["Reader"]["required"]) {
    reader_required.insert(r.as<std::string>());
  }
  CHECK(reader_required == keys_of(reader));

  store::DeadLetter d;
  CHECK(schema_properties(doc, "DeadLetter") ==
        keys_of(nlohmann::json::parse(api::dead_letter_json(d))));
}

TEST_CASE("openapi: the event and status schemas list the fields the API renders, all required") {
  const YAML::Node doc = load_openapi();
  store::StoredEvent e;
  e.id = "evt_1";
  e.deliveries.push_back({"ops", DeliveryState::pending, 0, TimePoint{}, "", std::nullopt});
  const auto event = nlohmann::json::parse(api::event_json(e));
  CHECK(schema_properties(doc, "MessageEvent") == keys_of(event));
  CHECK(required_of(doc, "MessageEvent") == keys_of(event));
  CHECK(schema_properties(doc, "EventDelivery") == keys_of(event["deliveries"].at(0)));
  CHECK(required_of(doc, "EventDelivery") == keys_of(event["deliveries"].at(0)));

  api::DaemonStatus s;
  s.webhooks.push_back(api::WebhookStatus{});
  const auto status = nlohmann::json::parse(api::status_json(s));
  CHECK(schema_properties(doc, "Status") == keys_of(status));
  CHECK(required_of(doc, "Status") == keys_of(status));
  CHECK(schema_properties(doc, "WebhookStatus") == keys_of(status["webhooks"].at(0)));
  CHECK(required_of(doc, "WebhookStatus") == keys_of(status["webhooks"].at(0)));
  // The nested objects too.
  const YAML::Node props = doc["components"]["schemas"]["Status"]["properties"];
  for (const std::string part : {"messages", "stream", "dingtalk"}) {
    INFO(part);
    std::set<std::string> described;
    std::set<std::string> required;
    for (const auto& kv : props[part]["properties"]) {
      described.insert(kv.first.as<std::string>());
    }
    for (const auto& r : props[part]["required"]) {
      required.insert(r.as<std::string>());
    }
    CHECK(described == keys_of(status[part]));
    CHECK(required == keys_of(status[part]));
  }
  std::set<std::string> throttling;
  for (const auto& kv : props["dingtalk"]["properties"]["throttling"]["properties"]) {
    throttling.insert(kv.first.as<std::string>());
  }
  CHECK(throttling == keys_of(status["dingtalk"]["throttling"]));
}
