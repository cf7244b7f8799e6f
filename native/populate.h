// Populating guest memory before it is written, for the copies and opens that write arriving pages.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace ferry {

#if defined(__linux__)
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; older kernels answer EINVAL and the write faults as usual
#endif
#endif

// Maps the pages under [p, p+n) writable in one system call before they are written, instead of
// taking one page fault per 4 KiB inside memcpy or an open: on a virtual host the fault's exception
// entry and exit are most of its cost (a 4 GiB copy into fresh memory: 1.8-1.9 s with faults, 1.2 s
// with this, tools in docs/performance.md). It never changes memory: pages already there are left
// as they are, and the range is widened to whole pages only to be populated, never written. Best
// effort: a refusal (old kernel, range at the edge of a mapping) leaves the faults to the writer.
// Ranges under 64 KiB are left alone: the call would cost more than it saves.
inline void populate_for_write(uint8_t* p, size_t n) {
#if defined(__linux__)
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  if (n < (size_t{64} << 10)) return;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n + page - 1) & ~(page - 1);
  (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE);
#else
  (void)p;
  (void)n;
#endif
}

}  // namespace ferry
