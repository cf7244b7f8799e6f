// Wiping secrets: a memset the compiler may not remove as a dead store.
#pragma once

#include <cstddef>
#include <cstring>

namespace ferry {

inline void wipe(void* p, size_t n) {
  if (n == 0) return;
  std::memset(p, 0, n);
  // The empty asm takes the pointer and clobbers memory, so the stores above must happen.
  __asm__ __volatile__("" : : "r"(p) : "memory");
}

}  // namespace ferry
