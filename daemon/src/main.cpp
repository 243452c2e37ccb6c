// readreceiptd: the daemon's entry point. It parses nothing itself; the app
// module does everything, after the allocator is set up for a long-running
// process.
#include "readreceiptd/app/app.hpp"

#include <malloc.h>

namespace {

// Blocks at least this large are mmapped, and so given back to the system as
// soon as they are freed. glibc raises this threshold on its own after the
// first large block is freed (up to 32 MiB); a DingTalk answer of up to
// 4 MiB (and the 1, 2, 4 MiB steps of its buffer growing) would then come
// from the heap and stay resident after it is gone, a step of about 12 MiB
// whenever two such answers overlap. A fixed threshold keeps the resident
// size to what the daemon holds.
constexpr int k_mmap_threshold_bytes = 256 * 1024;
// Free memory at the top of the heap is given back to the system only
// beyond this. glibc's default (128 KiB, fixed once the mmap threshold is
// set) gave memory back and took it again many times a second under a
// stream of webhook deliveries: each trim is a brk(2) with a TLB shootdown
// on every core of the daemon's threads and the pages fault in again
// (bench/webhook_delivery.sh: a tenth of the daemon's CPU).
constexpr int k_trim_threshold_bytes = 16 * 1024 * 1024;

} // namespace

int main(int argc, char** argv) {
  (void)mallopt(M_MMAP_THRESHOLD, k_mmap_threshold_bytes);
  (void)mallopt(M_TRIM_THRESHOLD, k_trim_threshold_bytes);
  return rrd::app::main(argc, argv);
}
