// CPU features ferry's hot loops choose between, probed once with CPUID (and XGETBV, so that AVX
// state the OS does not save counts as absent).
#pragma once

namespace ferry {

struct CpuFeatures {
  bool aes = false;
  bool pclmulqdq = false;
  bool avx2 = false;
  bool vaes = false;
  bool vpclmulqdq = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
};

// Probed on first use; the same answer for the life of the process.
const CpuFeatures& cpu_features();

}  // namespace ferry
