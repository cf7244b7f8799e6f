// Zero-page detection: which pages of a buffer are entirely zero. Reads each page only until its
// first non-zero byte, so memory full of data costs a few cache lines a page.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ferry {

// True when all `n` bytes at `p` are zero.
bool is_zero(const uint8_t* p, size_t n);

// Writes the index of every all-zero page of [p, p+n) to `out` in ascending order and returns
// how many it wrote. A partial last page is a page. `out` has room for ceil(n / page_size).
size_t zero_pages(const uint8_t* p, size_t n, size_t page_size, uint32_t* out);

// XOR of all 32-byte words of the buffer, folded to 64 bits, with no early exit: the memory read
// bandwidth reference the benchmark compares the zero scan with.
uint64_t read_all(const uint8_t* p, size_t n);

}  // namespace ferry
