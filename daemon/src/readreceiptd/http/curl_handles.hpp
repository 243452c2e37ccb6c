// RAII owners for libcurl handles (CURLM*, CURL*, curl_slist*) and the
// process-wide libcurl initialisation. Private to the http module.
//
// Thread-safety: ensure_curl_global_init() may be called from any thread; the
// handle owners are plain values, each used by one thread at a time.
#pragma once

#include <curl/curl.h>
#include <memory>

namespace rrd::http::detail {

struct CurlMultiDeleter {
  void operator()(CURLM* multi) const noexcept { curl_multi_cleanup(multi); }
};
struct CurlEasyDeleter {
  void operator()(CURL* easy) const noexcept { curl_easy_cleanup(easy); }
};
struct CurlSlistDeleter {
  void operator()(curl_slist* list) const noexcept { curl_slist_free_all(list); }
};

using CurlMulti = std::unique_ptr<CURLM, CurlMultiDeleter>;
using CurlEasy = std::unique_ptr<CURL, CurlEasyDeleter>;
using CurlSlist = std::unique_ptr<curl_slist, CurlSlistDeleter>;

// Appends a copy of `line` to `list`. Returns false (and leaves `list` as it
// was) when libcurl cannot allocate.
inline bool slist_append(CurlSlist& list, const char* line) {
  curl_slist* head = curl_slist_append(list.get(), line);
  if (head == nullptr) {
    return false;
  }
  if (head != list.get()) {
    // Only happens when the list was empty: curl_slist_append returns the
    // existing head otherwise.
    (void)list.release();
    list.reset(head);
  }
  return true;
}

// Calls curl_global_init() once per process; throws std::runtime_error when it
// fails. libcurl is never de-initialised: it lives as long as the process.
void ensure_curl_global_init();

} // namespace rrd::http::detail
