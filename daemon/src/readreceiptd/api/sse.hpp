// Server-Sent Events encoding (the WHATWG HTML standard's
// `text/event-stream`), as GET /v1/updates writes it: an event is an
// `event:` line, one `data:` line per line of its data, and a blank line; a
// comment is a line that starts with ':'. Pure functions.
//
// Thread-safety: pure; any thread.
#pragma once

#include "readreceiptd/common/clock.hpp"

#include <string>
#include <string_view>

namespace rrd::api {

// "event: TYPE\ndata: LINE\n...\n\n". Every line of `data` (split at "\r\n",
// "\n" or "\r") becomes one `data:` line, so that a reader joins them back
// with "\n"; empty data is one empty `data:` line (an event without data
// would be ignored by readers).
// REQUIRES: `type` holds no '\r' or '\n'.
std::string sse_event(std::string_view type, std::string_view data);

// ": TEXT\n\n", one comment line per line of `text`: readers ignore it; it
// keeps a quiet connection (and the proxies on its way) open.
std::string sse_comment(std::string_view text);

// "retry: MS\n\n": how long a reader waits before it connects again.
std::string sse_retry(Millis delay);

} // namespace rrd::api
