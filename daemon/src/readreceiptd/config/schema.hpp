// readreceiptd's configuration schema (SPEC section 3): every key, the rule
// its value follows, and the checks between keys, read out of a tree with
// config/reader.hpp. A key is added here and in its struct in config.hpp,
// nowhere else. Errors and warnings go to the Context; what was read is
// returned even when some of it was refused (the caller throws then).
// Thread-compatible.
#pragma once

#include "readreceiptd/config/config.hpp"
#include "readreceiptd/config/reader.hpp"

#include <string>
#include <vector>

namespace rrd::config::schema {

// A configuration file's root.
Config read_config(reader::Context& ctx, tree::Value root, const std::string& file);

// One `messages:` item on its own (the API's body), its key paths relative
// to it.
MessageSpec read_message(reader::Context& ctx, tree::Value item, const Config& defaults);

} // namespace rrd::config::schema
