// Heap preparation for a large load: at start-up the message table makes
// millions of small allocations that fill fresh memory one 4 KiB page at a
// time, and on a virtual machine each of those page faults costs more than
// the allocation itself (perf: about half of the start-up at a million
// messages). prepare_heap() grows glibc's main heap once by the expected
// size, asks for transparent huge pages there (where the system allows them
// on request, "madvise" mode) and populates it in one system call, so that
// the allocations that follow are carved from memory that is already there.
//
// Only on glibc's allocator and the main arena (the thread that calls it
// must be the one that allocates: the daemon's loop runs on the main
// thread); a no-op elsewhere, under the sanitizers' allocators, and for
// sizes too small to matter. Never fails: a step the kernel refuses is
// skipped and allocation proceeds as it would have.
//
// Thread-safety: call from the main thread before other threads allocate
// much (it changes the allocator's settings for the process).
#pragma once

#include <cstddef>

namespace rrd::heap {

// Below this, preparing costs more than it saves.
inline constexpr std::size_t k_min_prepare_bytes = 64U << 20;
// At most this much is prepared (glibc's settings are ints).
inline constexpr std::size_t k_max_prepare_bytes = 1U << 30;

// Makes `bytes` of heap ready for the allocations about to be made. Returns
// the bytes prepared (0 when it did nothing).
std::size_t prepare_heap(std::size_t bytes);

} // namespace rrd::heap
