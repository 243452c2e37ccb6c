// The application: command line, start-up sequence (config, store, listeners,
// first token, READY), the loop, and teardown. Not thread-safe; call once.
#pragma once

namespace rrd::app {

// Runs readreceiptd with its command line. Returns the process exit code:
// 0 clean stop, 2 usage or configuration error, 1 any other failure.
int main(int argc, char** argv);

} // namespace rrd::app
