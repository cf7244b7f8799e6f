#include "page_map.h"

#include <cstdio>
#include <cstring>

#include "zero_pages.h"

#if defined(__linux__)
#include <fcntl.h>
#include <unistd.h>

#include <cinttypes>
#endif

namespace ferry {

#if defined(__linux__)
namespace {

constexpr uint64_t kPresent = uint64_t{1} << 63;
constexpr uint64_t kSwapped = uint64_t{1} << 62;
// Entries read a system call: 4 KiB of pagemap, 2 MiB of memory.
constexpr size_t kEntriesPerRead = 512;

// One descriptor for the process's life: pread is safe from any thread.
int pagemap_fd() {
  static const int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  return fd;
}

uintptr_t system_page() {
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  return page;
}

}  // namespace

bool private_anonymous(const uint8_t* p, size_t n) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p);
  const uintptr_t end = begin + n;
  FILE* maps = std::fopen("/proc/self/maps", "re");
  if (maps == nullptr) return false;
  // Walks the mappings in address order; [begin, end) must be covered by consecutive qualifying ones.
  uintptr_t covered = begin;
  char line[512];
  bool ok = false;
  while (covered < end && std::fgets(line, sizeof line, maps) != nullptr) {
    uintmax_t lo = 0, hi = 0, offset = 0, inode = 0;
    char perms[5] = {}, dev[16] = {};
    int path_at = 0;
    if (std::sscanf(line, "%jx-%jx %4s %jx %15s %ju %n", &lo, &hi, perms, &offset, dev, &inode, &path_at) < 6) break;
    if (hi <= covered) continue;
    if (lo > covered) break;  // a hole in the range
    const char* path = line + path_at;
    const bool anonymous = inode == 0 && (path[0] == '\n' || path[0] == '\0' || std::strncmp(path, "[heap]", 6) == 0 ||
                                          std::strncmp(path, "[anon:", 6) == 0);
    if (perms[3] != 'p' || !anonymous) break;
    covered = static_cast<uintptr_t>(hi);
    ok = covered >= end;
  }
  std::fclose(maps);
  return ok;
}

long zero_pages_unread(const uint8_t* p, size_t n, size_t page_size, uint32_t* out) {
  const uintptr_t sys = system_page();
  const int fd = pagemap_fd();
  if (fd < 0 || sys == 0 || n == 0) return fd < 0 || sys == 0 ? -1 : 0;
  // A page of `page_size`, whatever its alignment, is unmapped when every system page it touches
  // is; `last` is the range's last system page.
  const uintptr_t last = (reinterpret_cast<uintptr_t>(p) + n - 1) / sys;
  uint64_t buf[kEntriesPerRead];
  uintptr_t base = 0;
  size_t have = 0;  // buf holds the entries of system pages [base, base + have)
  size_t found = 0, index = 0;
  for (size_t start = 0; start < n; start += page_size, index++) {
    const size_t len = n - start < page_size ? n - start : page_size;
    const uintptr_t from = (reinterpret_cast<uintptr_t>(p) + start) / sys;
    const uintptr_t to = (reinterpret_cast<uintptr_t>(p) + start + len - 1) / sys;
    bool mapped = false;
    for (uintptr_t e = from; e <= to && !mapped; e++) {
      if (e < base || e >= base + have) {
        base = e;
        const size_t want = last - e + 1 < kEntriesPerRead ? last - e + 1 : kEntriesPerRead;
        const ssize_t got = pread(fd, buf, want * sizeof(uint64_t), static_cast<off_t>(e * sizeof(uint64_t)));
        if (got <= 0 || static_cast<size_t>(got) % sizeof(uint64_t) != 0) return -1;
        have = static_cast<size_t>(got) / sizeof(uint64_t);
      }
      mapped = (buf[e - base] & (kPresent | kSwapped)) != 0;
    }
    if (!mapped || is_zero(p + start, len)) out[found++] = static_cast<uint32_t>(index);
  }
  return static_cast<long>(found);
}

#else

bool private_anonymous(const uint8_t*, size_t) { return false; }
long zero_pages_unread(const uint8_t*, size_t, size_t, uint32_t*) { return -1; }

#endif

}  // namespace ferry
