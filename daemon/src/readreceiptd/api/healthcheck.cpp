#include "readreceiptd/api/healthcheck.hpp"

#include <curl/curl.h>
#include <memory>

namespace rrd::api {

namespace {

struct CurlEasyDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct CurlListDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

constexpr std::size_t k_max_answer_bytes = 4096;

std::size_t collect(char* data, std::size_t size, std::size_t n, void* user) {
  auto* out = static_cast<std::string*>(user);
  const std::size_t bytes = size * n;
  if (out->size() + bytes > k_max_answer_bytes) {
    return 0; // abort: /healthz answers are tiny
  }
  out->append(data, bytes);
  return bytes;
}

} // namespace

Result<std::string, std::string> healthz_url(const std::string& listen) {
  if (listen.empty()) {
    return err(std::string("the HTTP API is disabled (api.listen is empty); --healthcheck "
                           "needs it"));
  }
  const auto address = config::parse_listen_address(listen);
  if (!address) {
    return err("api.listen: \"" + listen + "\" is not a listen address");
  }
  if (address->port == 0) {
    return err(std::string("api.listen has port 0 (ephemeral): the port to ask is unknown"));
  }
  std::string host = address->host;
  if (host == "0.0.0.0") {
    host = "127.0.0.1";
  } else if (host == "::") {
    host = "::1";
  }
  if (host.find(':') != std::string::npos) {
    host = "[" + host + "]";
  }
  return "http://" + host + ":" + std::to_string(address->port) + "/healthz";
}

Result<std::string, std::string> check_health(const config::Api& api) {
  auto url = healthz_url(api.listen);
  if (!url) {
    return err(url.error());
  }
  std::unique_ptr<CURL, CurlEasyDeleter> curl(curl_easy_init());
  if (!curl) {
    return err(std::string("cannot initialise libcurl"));
  }
  std::unique_ptr<curl_slist, CurlListDeleter> headers;
  if (!api.token.empty()) {
    // /healthz does not ask for it; sent so that a proxy in front may.
    const std::string auth = "Authorization: Bearer " + api.token;
    headers.reset(curl_slist_append(nullptr, auth.c_str()));
  }
  std::string body;
  char error[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(curl.get(), CURLOPT_URL, url->c_str());
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS,
                   static_cast<long>(k_healthcheck_timeout.count()));
  curl_easy_setopt(curl.get(), CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(k_healthcheck_timeout.count()));
  curl_easy_setopt(curl.get(), CURLOPT_NOPROXY, "*");
  curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, error);
  const CURLcode rc = curl_easy_perform(curl.get());
  if (rc != CURLE_OK) {
    return err(*url + ": " + (error[0] != '\0' ? std::string(error) : curl_easy_strerror(rc)));
  }
  long status = 0;
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) {
    return err(*url + ": HTTP " + std::to_string(status) + (body.empty() ? "" : " " + body));
  }
  return *url + ": healthy";
}

} // namespace rrd::api
