// ferry's own AES-256-GCM for CPUs with VAES and VPCLMULQDQ, in two widths over one expanded key:
//   vaes-avx2    256-bit registers: sixteen blocks per loop turn, GHASH aggregated over sixteen;
//   vaes-avx512  512-bit registers (AVX-512F/BW/VL as well): thirty-two blocks per turn, GHASH
//                aggregated over thirty-two (the additional data's too); a message's last < 512 bytes
//                go through the 256-bit code.
#pragma once

#include <cstddef>
#include <cstdint>

#include "gcm.h"

namespace ferry::gcm {

// Powers of H kept in the expanded key: as many blocks as the widest loop turn hashes at once.
constexpr int kHPowers = 32;

// The expanded key: AES round keys (each twice, for 256-bit registers; the 512-bit code broadcasts
// them) and H^32..H^1.
struct alignas(64) VaesKey {
  uint8_t round_keys[15][32];
  uint8_t h_powers[kHPowers][16];  // h_powers[i] = H^(32-i), in the form gcm_vaes.cc multiplies with
};

bool vaes_supported();
void vaes_expand(VaesKey* key, const uint8_t raw[kKeyBytes]);
void vaes_seal(const VaesKey& key, const Job& job);
// False when the tag does not verify; `out` is then wiped.
bool vaes_open(const VaesKey& key, const Job& job);
// Context::ctr: the keystream from block `offset / 16` of a message on, XORed into `in`.
void vaes_ctr(const VaesKey& key, const uint8_t* iv, uint64_t offset, const uint8_t* in, uint8_t* out, size_t len);

// The 512-bit code: the same bytes as vaes_seal / vaes_open, on CPUs where vaes512_supported().
bool vaes512_supported();
void vaes512_seal(const VaesKey& key, const Job& job);
bool vaes512_open(const VaesKey& key, const Job& job);

}  // namespace ferry::gcm
