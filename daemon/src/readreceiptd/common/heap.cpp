#include "readreceiptd/common/heap.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                         \
    __has_feature(memory_sanitizer)
#define RRD_SANITIZED_ALLOCATOR 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define RRD_SANITIZED_ALLOCATOR 1
#endif

#if defined(__GLIBC__) && defined(__linux__) && !defined(RRD_SANITIZED_ALLOCATOR)
#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>
#define RRD_PREPARE_HEAP 1
#endif

namespace rrd::heap {

#if defined(RRD_PREPARE_HEAP)

namespace {

// glibc's default for M_MMAP_MAX (mallopt(3)), restored after the block.
constexpr int k_default_mmap_max = 65'536;
// MADV_POPULATE_WRITE is Linux 5.14's; older headers lack the name.
#ifndef MADV_POPULATE_WRITE
constexpr int k_madv_populate_write = 23;
#else
constexpr int k_madv_populate_write = MADV_POPULATE_WRITE;
#endif

} // namespace

std::size_t prepare_heap(std::size_t bytes) {
  if (bytes < k_min_prepare_bytes) {
    return 0;
  }
  bytes = std::min(bytes, k_max_prepare_bytes);
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  // One block from the main heap, not an mmap of its own: no mmap for this
  // allocation (the mmap threshold cannot be raised above 32 MiB). Freed, it joins the heap's top
  // chunk, which is kept (not trimmed) as long as it is no larger than the
  // trim threshold, so the small allocations that follow take their memory
  // from it (twice the block: the top chunk also holds what was free there
  // before). Setting the trim threshold turns off glibc's adjustment of it.
  ::mallopt(M_TRIM_THRESHOLD,
            static_cast<int>(std::min<std::size_t>(2 * bytes, std::numeric_limits<int>::max())));
  ::mallopt(M_MMAP_MAX, 0);
  void* block = std::malloc(bytes); // NOLINT(cppcoreguidelines-no-malloc): the heap itself
  ::mallopt(M_MMAP_MAX, k_default_mmap_max);
  if (block == nullptr) {
    return 0;
  }
  // The whole pages inside the block.
  const auto address = reinterpret_cast<std::uintptr_t>(block);
  const std::uintptr_t skip = (page - address % page) % page;
  const std::size_t length = bytes > skip ? (bytes - skip) / page * page : 0;
  std::size_t prepared = 0;
  if (length > 0) {
    void* region = static_cast<char*>(block) + skip;
    // Huge pages where the system grants them on request; refused is fine.
    ::madvise(region, length, MADV_HUGEPAGE);
    if (::madvise(region, length, k_madv_populate_write) == 0) {
      prepared = length;
    }
  }
  std::free(block); // NOLINT(cppcoreguidelines-no-malloc)
  return prepared;
}

#else

std::size_t prepare_heap(std::size_t /*bytes*/) {
  return 0;
}

#endif

} // namespace rrd::heap
