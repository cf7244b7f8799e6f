#include "zero_pages.h"

#include <immintrin.h>

#include <cstring>

#include "cpu_features.h"

namespace ferry {
namespace {

bool is_zero_portable(const uint8_t* p, size_t n) {
  uint64_t acc = 0;
  size_t i = 0;
  // Check every 256 bytes so a page of data exits after its first few words.
  while (i + 256 <= n) {
    for (size_t j = 0; j < 256; j += 8) {
      uint64_t w;
      std::memcpy(&w, p + i + j, 8);
      acc |= w;
    }
    if (acc != 0) return false;
    i += 256;
  }
  for (; i < n; i++) acc |= p[i];
  return acc == 0;
}

__attribute__((target("avx2"))) bool is_zero_avx2(const uint8_t* p, size_t n) {
  size_t i = 0;
  // 256 bytes (four cache lines) per test: long enough that the loop runs at memory speed, short
  // enough that a page of data costs only its start.
  while (i + 256 <= n) {
    const __m256i* v = reinterpret_cast<const __m256i*>(p + i);
    __m256i a = _mm256_or_si256(_mm256_loadu_si256(v + 0), _mm256_loadu_si256(v + 1));
    __m256i b = _mm256_or_si256(_mm256_loadu_si256(v + 2), _mm256_loadu_si256(v + 3));
    __m256i c = _mm256_or_si256(_mm256_loadu_si256(v + 4), _mm256_loadu_si256(v + 5));
    __m256i d = _mm256_or_si256(_mm256_loadu_si256(v + 6), _mm256_loadu_si256(v + 7));
    a = _mm256_or_si256(_mm256_or_si256(a, b), _mm256_or_si256(c, d));
    if (!_mm256_testz_si256(a, a)) return false;
    i += 256;
  }
  while (i + 32 <= n) {
    __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i));
    if (!_mm256_testz_si256(a, a)) return false;
    i += 32;
  }
  uint8_t acc = 0;
  for (; i < n; i++) acc |= p[i];
  return acc == 0;
}

__attribute__((target("avx2"))) uint64_t read_all_avx2(const uint8_t* p, size_t n) {
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  size_t i = 0;
  for (; i + 128 <= n; i += 128) {
    const __m256i* v = reinterpret_cast<const __m256i*>(p + i);
    a = _mm256_xor_si256(a, _mm256_loadu_si256(v + 0));
    b = _mm256_xor_si256(b, _mm256_loadu_si256(v + 1));
    c = _mm256_xor_si256(c, _mm256_loadu_si256(v + 2));
    d = _mm256_xor_si256(d, _mm256_loadu_si256(v + 3));
  }
  a = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
  uint64_t acc = static_cast<uint64_t>(_mm256_extract_epi64(a, 0)) ^ static_cast<uint64_t>(_mm256_extract_epi64(a, 1)) ^
                 static_cast<uint64_t>(_mm256_extract_epi64(a, 2)) ^ static_cast<uint64_t>(_mm256_extract_epi64(a, 3));
  for (; i < n; i++) acc ^= p[i];
  return acc;
}

uint64_t read_all_portable(const uint8_t* p, size_t n) {
  uint64_t acc = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    acc ^= w;
  }
  for (; i < n; i++) acc ^= p[i];
  return acc;
}

}  // namespace

bool is_zero(const uint8_t* p, size_t n) {
  static const bool avx2 = cpu_features().avx2;
  return avx2 ? is_zero_avx2(p, n) : is_zero_portable(p, n);
}

size_t zero_pages(const uint8_t* p, size_t n, size_t page_size, uint32_t* out) {
  size_t found = 0;
  size_t index = 0;
  for (size_t start = 0; start < n; start += page_size, index++) {
    const size_t len = n - start < page_size ? n - start : page_size;
    if (is_zero(p + start, len)) out[found++] = static_cast<uint32_t>(index);
  }
  return found;
}

uint64_t read_all(const uint8_t* p, size_t n) {
  static const bool avx2 = cpu_features().avx2;
  return avx2 ? read_all_avx2(p, n) : read_all_portable(p, n);
}

}  // namespace ferry
