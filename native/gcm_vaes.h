// ferry's own AES-256-GCM for CPUs with VAES and VPCLMULQDQ (256-bit, AVX2 registers): sixteen
// blocks per loop turn, GHASH aggregated over sixteen blocks with precomputed powers of H.
#pragma once

#include <cstddef>
#include <cstdint>

#include "gcm.h"

namespace ferry::gcm {

// The expanded key: AES round keys (each twice, for 256-bit registers) and H^16..H^1.
struct alignas(32) VaesKey {
  uint8_t round_keys[15][32];
  uint8_t h_powers[16][16];  // h_powers[i] = H^(16-i), in the form gcm_vaes.cc multiplies with
};

bool vaes_supported();
void vaes_expand(VaesKey* key, const uint8_t raw[kKeyBytes]);
void vaes_seal(const VaesKey& key, const Job& job);
// False when the tag does not verify; `out` is then wiped.
bool vaes_open(const VaesKey& key, const Job& job);

}  // namespace ferry::gcm
