// readreceiptd: the daemon's entry point. It parses nothing itself; the app
// module does everything.
#include "readreceiptd/app/app.hpp"

int main(int argc, char** argv) {
  return rrd::app::main(argc, argv);
}
