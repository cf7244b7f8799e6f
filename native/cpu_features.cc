#include "cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <cstdint>
#endif

namespace ferry {
namespace {

#if defined(__x86_64__) || defined(__i386__)
// XCR0 says which register state the OS saves on a context switch; without it, AVX registers
// could be clobbered between time slices, so the CPUID bits alone are not enough.
uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFeatures probe() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  f.aes = (c >> 25) & 1;
  f.pclmulqdq = (c >> 1) & 1;
  const bool osxsave = (c >> 27) & 1;
  const bool avx = (c >> 28) & 1;
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool ymm_saved = (xcr0 & 0x6) == 0x6;
  const bool zmm_saved = (xcr0 & 0xe6) == 0xe6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  const bool ymm_ok = avx && ymm_saved;
  f.avx2 = ymm_ok && ((b >> 5) & 1);
  f.vaes = ymm_ok && ((c >> 9) & 1);
  f.vpclmulqdq = ymm_ok && ((c >> 10) & 1);
  f.avx512f = ymm_ok && zmm_saved && ((b >> 16) & 1);
  f.avx512bw = f.avx512f && ((b >> 30) & 1);
  f.avx512vl = f.avx512f && ((b >> 31) & 1);
  return f;
}
#else
CpuFeatures probe() { return CpuFeatures{}; }
#endif

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = probe();
  return features;
}

}  // namespace ferry
