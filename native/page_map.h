// What the kernel says of a process's own pages, for finding zero pages without reading them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ferry {

// True when [p, p+n) lies wholly in private anonymous mappings (/proc/self/maps: a private mapping
// of no file). Only there does a page the kernel never mapped read as zero; a file's or a shared
// mapping's unmapped page holds whatever the file or the other mapper holds. False when it cannot
// tell (not Linux, maps unreadable).
bool private_anonymous(const uint8_t* p, size_t n);

// zero_pages (zero_pages.h) for a range of a private anonymous mapping, with the pages the kernel
// never mapped (/proc/self/pagemap: neither present nor swapped out) counted as zero without
// being read, so a fresh page costs neither a fault nor a scan; the others are scanned. A page that
// shares a system page with mapped bytes is scanned. -1 when the kernel cannot tell (not Linux,
// pagemap unreadable). The caller has checked private_anonymous for the range.
long zero_pages_unread(const uint8_t* p, size_t n, size_t page_size, uint32_t* out);

}  // namespace ferry
