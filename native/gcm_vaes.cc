// AES-256-GCM on VAES + VPCLMULQDQ with 256-bit (AVX2) registers: two blocks per register, sixteen
// blocks per loop turn, and GHASH over sixteen blocks with one reduction, stitched into the AES
// rounds. Sixteen blocks are eight independent AES chains: enough to keep both of Zen 3's AES
// units busy through VAESENC's 4-cycle latency (eight blocks left them half idle: docs/crypto.md).
//
// GHASH representation (the one the Linux kernel's and BoringSSL's x86 code use): every block is
// byte-reflected, so the 128-bit integer holds the polynomial with its coefficients backwards. In
// that order a carry-less product of two 128-bit values is the field product times a constant, and
// the reduction is a Montgomery step: fold the low 64 bits into the middle and the middle into the
// high half, each with one multiply by (x^63 + x^62 + x^57), the 0xc2... constant. The step
// multiplies by x^-128 and the reflection costs one more factor of x, so H is stored pre-multiplied
// by x ("H'" below): then mul(a, H') = a*H in the same representation, and powers of H' stay H'-form.
// docs/crypto.md has the derivation.
//
// Everything here is compiled for the target attribute below only; the rest of the addon stays
// baseline x86-64, and these functions run only after cpu_features() said yes.
#include "gcm_vaes.h"

#include <immintrin.h>

#include <cstring>

#include "cpu_features.h"
#include "wipe.h"

namespace ferry::gcm {

#if defined(__x86_64__)

#define FERRY_VAES __attribute__((target("aes,pclmul,avx2,vaes,vpclmulqdq")))
#define FERRY_VAES_INLINE FERRY_VAES __attribute__((always_inline)) inline

namespace {

FERRY_VAES_INLINE __m128i load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
FERRY_VAES_INLINE __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
FERRY_VAES_INLINE void store128(void* p, __m128i v) { _mm_storeu_si128(static_cast<__m128i*>(p), v); }
FERRY_VAES_INLINE void store256(void* p, __m256i v) { _mm256_storeu_si256(static_cast<__m256i*>(p), v); }

FERRY_VAES_INLINE __m128i reflect_mask() { return _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
FERRY_VAES_INLINE __m128i reflect(__m128i x) { return _mm_shuffle_epi8(x, reflect_mask()); }
// Reflects each 128-bit lane on its own.
FERRY_VAES_INLINE __m256i reflect(__m256i x) {
  return _mm256_shuffle_epi8(x, _mm256_broadcastsi128_si256(reflect_mask()));
}

// ---- AES-256 ---------------------------------------------------------------------------------

// One step of the AES-256 key schedule: `assist` is aeskeygenassist of the previous round key,
// `lane` picks its word (0xff with the round constant, 0xaa without).
FERRY_VAES_INLINE __m128i schedule_step(__m128i k, __m128i assist, int lane_ff) {
  assist = lane_ff ? _mm_shuffle_epi32(assist, 0xff) : _mm_shuffle_epi32(assist, 0xaa);
  __m128i t = _mm_slli_si128(k, 4);
  k = _mm_xor_si128(k, t);
  t = _mm_slli_si128(t, 4);
  k = _mm_xor_si128(k, t);
  t = _mm_slli_si128(t, 4);
  k = _mm_xor_si128(k, t);
  return _mm_xor_si128(k, assist);
}

FERRY_VAES void expand_round_keys(__m128i rk[15], const uint8_t raw[kKeyBytes]) {
  rk[0] = load128(raw);
  rk[1] = load128(raw + 16);
#define FERRY_AES256_PAIR(i, rcon)                                                 \
  rk[i] = schedule_step(rk[i - 2], _mm_aeskeygenassist_si128(rk[i - 1], rcon), 1); \
  if ((i) + 1 < 15) rk[(i) + 1] = schedule_step(rk[i - 1], _mm_aeskeygenassist_si128(rk[i], 0), 0);
  FERRY_AES256_PAIR(2, 0x01)
  FERRY_AES256_PAIR(4, 0x02)
  FERRY_AES256_PAIR(6, 0x04)
  FERRY_AES256_PAIR(8, 0x08)
  FERRY_AES256_PAIR(10, 0x10)
  FERRY_AES256_PAIR(12, 0x20)
  rk[14] = schedule_step(rk[12], _mm_aeskeygenassist_si128(rk[13], 0x40), 1);
#undef FERRY_AES256_PAIR
}

FERRY_VAES_INLINE __m128i aes_block(const VaesKey& k, __m128i x) {
  x = _mm_xor_si128(x, load128(k.round_keys[0]));
#pragma GCC unroll 13
  for (int r = 1; r < 14; r++) x = _mm_aesenc_si128(x, load128(k.round_keys[r]));
  return _mm_aesenclast_si128(x, load128(k.round_keys[14]));
}

// Four registers, eight blocks, through all fourteen rounds.
FERRY_VAES_INLINE void aes_x4(const VaesKey& k, __m256i& a, __m256i& b, __m256i& c, __m256i& d) {
  __m256i rk = load256(k.round_keys[0]);
  a = _mm256_xor_si256(a, rk);
  b = _mm256_xor_si256(b, rk);
  c = _mm256_xor_si256(c, rk);
  d = _mm256_xor_si256(d, rk);
#pragma GCC unroll 13
  for (int r = 1; r < 14; r++) {
    rk = load256(k.round_keys[r]);
    a = _mm256_aesenc_epi128(a, rk);
    b = _mm256_aesenc_epi128(b, rk);
    c = _mm256_aesenc_epi128(c, rk);
    d = _mm256_aesenc_epi128(d, rk);
  }
  rk = load256(k.round_keys[14]);
  a = _mm256_aesenclast_epi128(a, rk);
  b = _mm256_aesenclast_epi128(b, rk);
  c = _mm256_aesenclast_epi128(c, rk);
  d = _mm256_aesenclast_epi128(d, rk);
}

// ---- GHASH -----------------------------------------------------------------------------------

// H^power (1 <= power <= kHPowers): the powers lie highest first, so H^n..H^1 are consecutive.
FERRY_VAES_INLINE const uint8_t* h_power(const VaesKey& k, int power) { return k.h_powers[kHPowers - power]; }

FERRY_VAES_INLINE __m128i poly() { return _mm_set_epi64x(static_cast<long long>(0xc200000000000000ULL), 0); }

// Montgomery reduction of the 256-bit product lo + mi*x^64 + hi*x^128 (reflected order).
FERRY_VAES_INLINE __m128i reduce(__m128i lo, __m128i mi, __m128i hi) {
  mi = _mm_xor_si128(mi, _mm_xor_si128(_mm_clmulepi64_si128(lo, poly(), 0x10), _mm_shuffle_epi32(lo, 0x4e)));
  return _mm_xor_si128(hi, _mm_xor_si128(_mm_clmulepi64_si128(mi, poly(), 0x10), _mm_shuffle_epi32(mi, 0x4e)));
}

FERRY_VAES_INLINE __m128i gf_mul(__m128i a, __m128i b) {
  const __m128i lo = _mm_clmulepi64_si128(a, b, 0x00);
  const __m128i hi = _mm_clmulepi64_si128(a, b, 0x11);
  const __m128i mi = _mm_xor_si128(_mm_clmulepi64_si128(a, b, 0x01), _mm_clmulepi64_si128(a, b, 0x10));
  return reduce(lo, mi, hi);
}

// Unreduced sums of products, two blocks per register; reduced once per group of blocks.
struct Products {
  __m256i lo, mi, hi;
};

FERRY_VAES_INLINE void multiply_add(Products& s, __m256i d, __m256i h) {
  s.lo = _mm256_xor_si256(s.lo, _mm256_clmulepi64_epi128(d, h, 0x00));
  s.hi = _mm256_xor_si256(s.hi, _mm256_clmulepi64_epi128(d, h, 0x11));
  s.mi = _mm256_xor_si256(s.mi,
                          _mm256_xor_si256(_mm256_clmulepi64_epi128(d, h, 0x01), _mm256_clmulepi64_epi128(d, h, 0x10)));
}

FERRY_VAES_INLINE __m128i fold_lanes(__m256i v) {
  return _mm_xor_si128(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}

FERRY_VAES_INLINE __m128i reduce(const Products& s) {
  return reduce(fold_lanes(s.lo), fold_lanes(s.mi), fold_lanes(s.hi));
}

FERRY_VAES_INLINE Products zero_products() {
  return Products{_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
}

// acc = (acc + b0)*H^8 + b1*H^7 + ... + b7*H^1, for eight blocks as loaded from memory.
FERRY_VAES_INLINE __m128i ghash8(const VaesKey& k, __m128i acc, __m256i d0, __m256i d1, __m256i d2, __m256i d3) {
  d0 = _mm256_xor_si256(reflect(d0), _mm256_zextsi128_si256(acc));
  Products s = zero_products();
  multiply_add(s, d0, load256(h_power(k, 8)));
  multiply_add(s, reflect(d1), load256(h_power(k, 6)));
  multiply_add(s, reflect(d2), load256(h_power(k, 4)));
  multiply_add(s, reflect(d3), load256(h_power(k, 2)));
  return reduce(s);
}

// The same for 1..16 blocks at p: block i is multiplied by H^(n-i), which is h[i].
FERRY_VAES_INLINE __m128i ghash_n(const VaesKey& k, __m128i acc, const uint8_t* p, size_t n) {
  const uint8_t(*h)[16] = &k.h_powers[kHPowers - n];
  Products s = zero_products();
  size_t i = 0;
  for (; i + 2 <= n; i += 2) {
    __m256i d = reflect(load256(p + 16 * i));
    if (i == 0) d = _mm256_xor_si256(d, _mm256_zextsi128_si256(acc));
    multiply_add(s, d, load256(h[i]));
  }
  if (i < n) {
    __m128i d = reflect(load128(p + 16 * i));
    if (i == 0) d = _mm_xor_si128(d, acc);
    multiply_add(s, _mm256_zextsi128_si256(d), _mm256_zextsi128_si256(load128(h[i])));
  }
  return reduce(s);
}

FERRY_VAES __m128i ghash_bytes(const VaesKey& k, __m128i acc, const uint8_t* p, size_t len) {
  for (; len >= 256; p += 256, len -= 256) acc = ghash_n(k, acc, p, 16);
  const size_t full = len / 16, rest = len % 16;
  if (full != 0) acc = ghash_n(k, acc, p, full);
  if (rest != 0) {
    uint8_t block[16] = {};
    std::memcpy(block, p + 16 * full, rest);
    acc = ghash_n(k, acc, block, 1);
  }
  return acc;
}

// ---- GCM -------------------------------------------------------------------------------------

FERRY_VAES_INLINE __m128i make_j0(const uint8_t* iv) {
  uint8_t block[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  std::memcpy(block, iv, kIvBytes);
  return load128(block);
}

// Counter blocks are kept reflected, so the 32-bit block counter is the low dword as a
// little-endian integer and a plain 32-bit add steps it. A message of at most 2^36 - 32 bytes (all
// GCM allows; Node's buffers are far smaller) never carries out of that dword.
struct Counter {
  __m256i next;  // lanes: the reflected counter blocks of the next two data blocks

  FERRY_VAES_INLINE explicit Counter(__m128i j0)
      : next(_mm256_add_epi32(_mm256_broadcastsi128_si256(reflect(j0)), _mm256_set_epi32(0, 0, 0, 2, 0, 0, 0, 1))) {}
  // Going on where a wider loop stopped: `next` holds the next two counter blocks.
  FERRY_VAES_INLINE explicit Counter(__m256i next_two) : next(next_two) {}

  // The keystream of the next eight blocks.
  FERRY_VAES_INLINE void keystream8(const VaesKey& k, __m256i& a, __m256i& b, __m256i& c, __m256i& d) {
    const __m256i two = _mm256_set_epi32(0, 0, 0, 2, 0, 0, 0, 2);
    a = next;
    b = _mm256_add_epi32(a, two);
    c = _mm256_add_epi32(b, two);
    d = _mm256_add_epi32(c, two);
    next = _mm256_add_epi32(d, two);
    a = reflect(a);
    b = reflect(b);
    c = reflect(c);
    d = reflect(d);
    aes_x4(k, a, b, c, d);
  }
};

// The keystream of the next sixteen blocks into s[0..7]; with kHash, GHASH of the sixteen blocks at
// `hashed` folded into acc, its multiplies stitched between the AES rounds.
template <bool kHash>
FERRY_VAES_INLINE void keystream16(const VaesKey& k, Counter& ctr, __m256i s[8], const uint8_t* hashed, __m128i& acc) {
  const __m256i two = _mm256_set_epi32(0, 0, 0, 2, 0, 0, 0, 2);
  __m256i c = ctr.next;
  __m256i rk = load256(k.round_keys[0]);
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) {
    s[i] = _mm256_xor_si256(reflect(c), rk);
    c = _mm256_add_epi32(c, two);
  }
  ctr.next = c;
  Products p = zero_products();
  if (kHash)
    multiply_add(p, _mm256_xor_si256(reflect(load256(hashed)), _mm256_zextsi128_si256(acc)), load256(h_power(k, 16)));
#pragma GCC unroll 13
  for (int r = 1; r < 14; r++) {
    rk = load256(k.round_keys[r]);
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) s[i] = _mm256_aesenc_epi128(s[i], rk);
    if (kHash && r < 8) multiply_add(p, reflect(load256(hashed + 32 * r)), load256(h_power(k, 16 - 2 * r)));
    if (kHash && r == 8) acc = reduce(p);
  }
  rk = load256(k.round_keys[14]);
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) s[i] = _mm256_aesenclast_epi128(s[i], rk);
}

FERRY_VAES_INLINE void xor_store16(__m256i s[8], const uint8_t* in, uint8_t* out) {
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) store256(out + 32 * i, _mm256_xor_si256(s[i], load256(in + 32 * i)));
}

FERRY_VAES_INLINE __m128i finish_tag(const VaesKey& k, __m128i acc, __m128i j0, size_t aad_len, size_t text_len) {
  const __m128i lengths = _mm_set_epi64x(static_cast<long long>(aad_len * 8), static_cast<long long>(text_len * 8));
  acc = gf_mul(_mm_xor_si128(acc, lengths), load128(h_power(k, 1)));
  return _mm_xor_si128(reflect(acc), aes_block(k, j0));
}

// Encrypts or decrypts the last 1..127 bytes through a zero-padded block buffer; returns the GHASH
// with the ciphertext blocks folded in.
FERRY_VAES_INLINE __m128i crypt_tail(const VaesKey& k, Counter& ctr, __m128i acc, const uint8_t* in, uint8_t* out,
                                     size_t len, bool sealing) {
  alignas(32) uint8_t block[128] = {};
  std::memcpy(block, in, len);
  const size_t blocks = (len + 15) / 16;
  if (!sealing) acc = ghash_n(k, acc, block, blocks);
  __m256i a, b, c, d;
  ctr.keystream8(k, a, b, c, d);
  store256(block, _mm256_xor_si256(a, load256(block)));
  store256(block + 32, _mm256_xor_si256(b, load256(block + 32)));
  store256(block + 64, _mm256_xor_si256(c, load256(block + 64)));
  store256(block + 96, _mm256_xor_si256(d, load256(block + 96)));
  std::memcpy(out, block, len);
  if (sealing) {
    std::memset(block + len, 0, sizeof block - len);
    acc = ghash_n(k, acc, block, blocks);
  }
  wipe(block, sizeof block);
  return acc;
}

// The plaintext of a seal, read front to back in pieces of at most 512 bytes: straight from its
// buffer, or gathered from segments, where a piece that spans two segments is put together in a
// small buffer (a few times per message; everything else is read where it lies).
class Input {
 public:
  explicit Input(const Job& job) {
    if (job.segments == nullptr) {
      one_ = Segment{job.in, job.in_len};
      seg_ = &one_;
      end_ = seg_ + 1;
    } else {
      seg_ = job.segments;
      end_ = seg_ + job.segment_count;
    }
  }
  Input(const Input&) = delete;
  Input& operator=(const Input&) = delete;
  ~Input() { wipe(piece_, sizeof piece_); }

  // The next n (<= 512) bytes; valid until the next call.
  FERRY_VAES_INLINE const uint8_t* next(size_t n) {
    skip_empty();
    if (seg_ != end_ && seg_->len - at_ >= n) {
      const uint8_t* p = seg_->data + at_;
      at_ += n;
      return p;
    }
    for (size_t got = 0; got < n;) {
      skip_empty();
      if (seg_ == end_) {  // the segments hold less than in_len: the binding refuses that; be safe
        std::memset(piece_ + got, 0, n - got);
        break;
      }
      const size_t take = seg_->len - at_ < n - got ? seg_->len - at_ : n - got;
      std::memcpy(piece_ + got, seg_->data + at_, take);
      at_ += take;
      got += take;
    }
    return piece_;
  }

 private:
  void skip_empty() {
    while (seg_ != end_ && at_ == seg_->len) {
      ++seg_;
      at_ = 0;
    }
  }

  Segment one_{};
  const Segment* seg_;
  const Segment* end_;
  size_t at_ = 0;
  alignas(64) uint8_t piece_[512];
};

// A seal from `out` on, GHASH so far in acc; returns the tag. The 512-bit code ends here too.
FERRY_VAES_INLINE __m128i seal_rest(const VaesKey& k, const Job& job, __m128i j0, Counter& ctr, Input& input,
                                    __m128i acc, uint8_t* out, size_t len) {
  // Software-pipelined: each turn hashes the previous turn's ciphertext (still in L1) while it
  // encrypts the next sixteen blocks, so GHASH never waits for AES.
  if (len >= 256) {
    __m256i s[8];
    keystream16<false>(k, ctr, s, nullptr, acc);
    xor_store16(s, input.next(256), out);
    for (out += 256, len -= 256; len >= 256; out += 256, len -= 256) {
      keystream16<true>(k, ctr, s, out - 256, acc);
      xor_store16(s, input.next(256), out);
    }
    acc = ghash_n(k, acc, out - 256, 16);
  }
  for (; len >= 128; out += 128, len -= 128) {
    const uint8_t* in = input.next(128);
    __m256i a, b, c, d;
    ctr.keystream8(k, a, b, c, d);
    a = _mm256_xor_si256(a, load256(in));
    b = _mm256_xor_si256(b, load256(in + 32));
    c = _mm256_xor_si256(c, load256(in + 64));
    d = _mm256_xor_si256(d, load256(in + 96));
    store256(out, a);
    store256(out + 32, b);
    store256(out + 64, c);
    store256(out + 96, d);
    acc = ghash8(k, acc, a, b, c, d);
  }
  if (len != 0) acc = crypt_tail(k, ctr, acc, input.next(len), out, len, true);
  return finish_tag(k, acc, j0, job.aad_len, job.in_len);
}

FERRY_VAES void seal_impl(const VaesKey& k, const Job& job) {
  const __m128i j0 = make_j0(job.iv);
  Counter ctr(j0);
  Input input(job);
  const __m128i acc = ghash_bytes(k, _mm_setzero_si128(), job.aad, job.aad_len);
  store128(job.out + job.in_len, seal_rest(k, job, j0, ctr, input, acc, job.out, job.in_len));
}

// The plaintext of an open, written front to back in pieces of at most 512 bytes: straight into
// its buffer, or scattered over segments (Job::out_segments), where a piece that spans two segments
// is put together in a small buffer and copied out (a few times per message; everything else is
// stored where it belongs). next() says where a piece goes; commit() lands it.
class Output {
 public:
  explicit Output(const Job& job) : job_(job) {
    if (job.out_segments == nullptr) {
      one_ = OutSegment{job.out, job.in_len - kTagBytes};
      seg_ = &one_;
      end_ = seg_ + 1;
    } else {
      seg_ = job.out_segments;
      end_ = seg_ + job.out_segment_count;
    }
  }
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;
  ~Output() { wipe(piece_, sizeof piece_); }

  FERRY_VAES_INLINE uint8_t* next(size_t n) {
    skip_empty();
    if (seg_ != end_ && seg_->len - at_ >= n) {
      uint8_t* p = seg_->data + at_;
      at_ += n;
      return p;
    }
    pending_ = n;
    return piece_;
  }

  FERRY_VAES_INLINE void commit() {
    if (pending_ != 0) scatter();
  }

  // After a failed tag check: nothing the open wrote is left.
  void wipe_all() { wipe_output(job_, job_.in_len - kTagBytes); }

 private:
  void skip_empty() {
    while (seg_ != end_ && at_ == seg_->len) {
      ++seg_;
      at_ = 0;
    }
  }

  void scatter() {
    for (size_t put = 0; put < pending_;) {
      skip_empty();
      if (seg_ == end_) break;  // the segments hold less than in_len - 16: the binding refuses that; be safe
      const size_t take = seg_->len - at_ < pending_ - put ? seg_->len - at_ : pending_ - put;
      std::memcpy(seg_->data + at_, piece_ + put, take);
      at_ += take;
      put += take;
    }
    pending_ = 0;
  }

  const Job& job_;
  OutSegment one_{};
  const OutSegment* seg_;
  const OutSegment* end_;
  size_t at_ = 0;
  size_t pending_ = 0;
  alignas(64) uint8_t piece_[512];
};

// An open from `in` on, GHASH so far in acc; true when the tag verifies (everything written is
// wiped when not).
FERRY_VAES_INLINE bool open_rest(const VaesKey& k, const Job& job, __m128i j0, Counter& ctr, __m128i acc,
                                 const uint8_t* in, Output& out, size_t len) {
  const size_t text_len = job.in_len - kTagBytes;
  const __m128i expected = load128(job.in + text_len);
  // Each turn hashes the sixteen ciphertext blocks it decrypts, before the plaintext overwrites
  // them when opening in place.
  for (; len >= 256; in += 256, len -= 256) {
    __m256i s[8];
    keystream16<true>(k, ctr, s, in, acc);
    xor_store16(s, in, out.next(256));
    out.commit();
  }
  for (; len >= 128; in += 128, len -= 128) {
    const __m256i x0 = load256(in), x1 = load256(in + 32), x2 = load256(in + 64), x3 = load256(in + 96);
    acc = ghash8(k, acc, x0, x1, x2, x3);
    __m256i a, b, c, d;
    ctr.keystream8(k, a, b, c, d);
    uint8_t* o = out.next(128);
    store256(o, _mm256_xor_si256(a, x0));
    store256(o + 32, _mm256_xor_si256(b, x1));
    store256(o + 64, _mm256_xor_si256(c, x2));
    store256(o + 96, _mm256_xor_si256(d, x3));
    out.commit();
  }
  if (len != 0) {
    acc = crypt_tail(k, ctr, acc, in, out.next(len), len, false);
    out.commit();
  }
  const __m128i diff = _mm_xor_si128(finish_tag(k, acc, j0, job.aad_len, text_len), expected);
  if (_mm_testz_si128(diff, diff)) return true;
  out.wipe_all();
  return false;
}

FERRY_VAES bool open_impl(const VaesKey& k, const Job& job) {
  const __m128i j0 = make_j0(job.iv);
  Counter ctr(j0);
  Output out(job);
  const __m128i acc = ghash_bytes(k, _mm_setzero_si128(), job.aad, job.aad_len);
  return open_rest(k, job, j0, ctr, acc, job.in, out, job.in_len - kTagBytes);
}

// Context::ctr: counter blocks one at a time (a few blocks per call: the run table of a message).
FERRY_VAES void ctr_impl(const VaesKey& k, const uint8_t* iv, uint64_t offset, const uint8_t* in, uint8_t* out,
                         size_t len) {
  alignas(16) uint8_t block[16];
  std::memcpy(block, iv, kIvBytes);
  // Data block i is counter 2 + i (counter 1 masks the tag); GCM steps only the low 32 bits.
  uint32_t counter = static_cast<uint32_t>(2 + offset / 16);
  size_t skip = offset % 16;
  while (len != 0) {
    for (int i = 0; i < 4; i++) block[12 + i] = static_cast<uint8_t>(counter >> (24 - 8 * i));
    alignas(16) uint8_t stream[16];
    store128(stream, aes_block(k, load128(block)));
    const size_t n = 16 - skip < len ? 16 - skip : len;
    for (size_t i = 0; i < n; i++) out[i] = in[i] ^ stream[skip + i];
    wipe(stream, sizeof stream);
    in += n;
    out += n;
    len -= n;
    skip = 0;
    counter++;
  }
}

FERRY_VAES void expand_impl(VaesKey* key, const uint8_t raw[kKeyBytes]) {
  __m128i rk[15];
  expand_round_keys(rk, raw);
  for (int r = 0; r < 15; r++) {
    store128(key->round_keys[r], rk[r]);
    store128(key->round_keys[r] + 16, rk[r]);
  }
  wipe(rk, sizeof rk);
  // H' = reflect(E(K, 0)) * x: a 1-bit left shift of the 128-bit value, reduced by the 0xc2...01
  // polynomial when a bit carries out.
  const __m128i h = reflect(aes_block(*key, _mm_setzero_si128()));
  uint64_t lo = static_cast<uint64_t>(_mm_cvtsi128_si64(h));
  uint64_t hi = static_cast<uint64_t>(_mm_extract_epi64(h, 1));
  const uint64_t carry = 0 - (hi >> 63);
  hi = ((hi << 1) | (lo >> 63)) ^ (carry & 0xc200000000000000ULL);
  lo = (lo << 1) ^ (carry & 1);
  const __m128i h1 = _mm_set_epi64x(static_cast<long long>(hi), static_cast<long long>(lo));
  __m128i power = h1;
  for (int i = 1; i <= kHPowers; i++) {
    store128(key->h_powers[kHPowers - i], power);  // H^i
    power = gf_mul(power, h1);
  }
}

// ---- 512-bit registers ------------------------------------------------------------------------
// The same algorithm, four blocks per register: a loop turn is thirty-two blocks, eight
// independent AES chains of four lanes each, and GHASH of thirty-two blocks (H^32..H^1) with one
// reduction. What is left of a message after its last whole 512-byte turn (< 512 bytes) goes on in
// the 256-bit code above, from the same counter and GHASH state.

#define FERRY_VAES512 __attribute__((target("aes,pclmul,avx2,vaes,vpclmulqdq,avx512f,avx512bw,avx512vl")))
#define FERRY_VAES512_INLINE FERRY_VAES512 __attribute__((always_inline)) inline

FERRY_VAES512_INLINE __m512i load512(const void* p) { return _mm512_loadu_si512(p); }
FERRY_VAES512_INLINE void store512(void* p, __m512i v) { _mm512_storeu_si512(p, v); }
// One 128-bit value in all four lanes. The all-ones zero-masking forms here and below are the plain
// instructions; GCC 12's headers for the unmasked ones trip -Wmaybe-uninitialized (GCC bug 105593).
FERRY_VAES512_INLINE __m512i broadcast(__m128i x) { return _mm512_maskz_broadcast_i32x4(0xffff, x); }
FERRY_VAES512_INLINE __m256i low256(__m512i x) { return _mm512_maskz_extracti64x4_epi64(0xff, x, 0); }
FERRY_VAES512_INLINE __m512i reflect(__m512i x) { return _mm512_shuffle_epi8(x, broadcast(reflect_mask())); }
FERRY_VAES512_INLINE __m512i round_key512(const VaesKey& k, int r) { return broadcast(load128(k.round_keys[r])); }

struct Products512 {
  __m512i lo, mi, hi;
};

FERRY_VAES512_INLINE void multiply_add(Products512& s, __m512i d, __m512i h) {
  s.lo = _mm512_xor_si512(s.lo, _mm512_clmulepi64_epi128(d, h, 0x00));
  s.hi = _mm512_xor_si512(s.hi, _mm512_clmulepi64_epi128(d, h, 0x11));
  // 0x96: the three-way XOR.
  s.mi =
      _mm512_ternarylogic_epi64(s.mi, _mm512_clmulepi64_epi128(d, h, 0x01), _mm512_clmulepi64_epi128(d, h, 0x10), 0x96);
}

FERRY_VAES512_INLINE __m128i fold_lanes(__m512i v) {
  // Lanes 2 and 3 onto 0 and 1 (the halves swapped), then those two.
  return fold_lanes(low256(_mm512_xor_si512(v, _mm512_maskz_shuffle_i64x2(0xff, v, v, 0x4e))));
}

FERRY_VAES512_INLINE __m128i reduce(const Products512& s) {
  return reduce(fold_lanes(s.lo), fold_lanes(s.mi), fold_lanes(s.hi));
}

// GHASH of `len` bytes at p folded into acc (ghash_bytes), thirty-two blocks to a reduction while
// they last: the additional data's hash, which for verify's unit tags (a whole page of it) is all
// the work.
FERRY_VAES512 __m128i ghash512_bytes(const VaesKey& k, __m128i acc, const uint8_t* p, size_t len) {
  for (; len >= 512; p += 512, len -= 512) {
    Products512 s{_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
    multiply_add(s, _mm512_xor_si512(reflect(load512(p)), _mm512_zextsi128_si512(acc)), load512(h_power(k, 32)));
#pragma GCC unroll 7
    for (int r = 1; r < 8; r++) multiply_add(s, reflect(load512(p + 64 * r)), load512(h_power(k, 32 - 4 * r)));
    acc = reduce(s);
  }
  return ghash_bytes(k, acc, p, len);
}

// The keystream of the next thirty-two blocks into s[0..7], `next` holding the next four counter
// blocks (reflected); with kHash, GHASH of the thirty-two blocks at `hashed` folded into acc, its
// multiplies stitched between the AES rounds.
template <bool kHash>
FERRY_VAES512_INLINE void keystream32(const VaesKey& k, __m512i& next, __m512i s[8], const uint8_t* hashed,
                                      __m128i& acc) {
  const __m512i four = _mm512_set_epi32(0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4);
  __m512i c = next;
  __m512i rk = round_key512(k, 0);
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) {
    s[i] = _mm512_xor_si512(reflect(c), rk);
    c = _mm512_add_epi32(c, four);
  }
  next = c;
  Products512 p{_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
  if (kHash)
    multiply_add(p, _mm512_xor_si512(reflect(load512(hashed)), _mm512_zextsi128_si512(acc)), load512(h_power(k, 32)));
#pragma GCC unroll 13
  for (int r = 1; r < 14; r++) {
    rk = round_key512(k, r);
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) s[i] = _mm512_aesenc_epi128(s[i], rk);
    if (kHash && r < 8) multiply_add(p, reflect(load512(hashed + 64 * r)), load512(h_power(k, 32 - 4 * r)));
    if (kHash && r == 8) acc = reduce(p);
  }
  rk = round_key512(k, 14);
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) s[i] = _mm512_aesenclast_epi128(s[i], rk);
}

FERRY_VAES512_INLINE void xor_store32(__m512i s[8], const uint8_t* in, uint8_t* out) {
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) store512(out + 64 * i, _mm512_xor_si512(s[i], load512(in + 64 * i)));
}

// The reflected counter blocks of the first four data blocks (J0 + 1 .. J0 + 4).
FERRY_VAES512_INLINE __m512i first_counters512(__m128i j0) {
  return _mm512_add_epi32(broadcast(reflect(j0)), _mm512_set_epi32(0, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 1));
}

FERRY_VAES512 void seal512_impl(const VaesKey& k, const Job& job) {
  const __m128i j0 = make_j0(job.iv);
  __m512i next = first_counters512(j0);
  __m128i acc = ghash512_bytes(k, _mm_setzero_si128(), job.aad, job.aad_len);
  Input input(job);
  uint8_t* out = job.out;
  size_t len = job.in_len;
  // Pipelined as the 256-bit loop is: each turn hashes the previous turn's ciphertext.
  if (len >= 512) {
    __m512i s[8];
    keystream32<false>(k, next, s, nullptr, acc);
    xor_store32(s, input.next(512), out);
    for (out += 512, len -= 512; len >= 512; out += 512, len -= 512) {
      keystream32<true>(k, next, s, out - 512, acc);
      xor_store32(s, input.next(512), out);
    }
    acc = ghash_n(k, acc, out - 512, 16);
    acc = ghash_n(k, acc, out - 256, 16);
  }
  Counter ctr(low256(next));
  store128(job.out + job.in_len, seal_rest(k, job, j0, ctr, input, acc, out, len));
}

FERRY_VAES512 bool open512_impl(const VaesKey& k, const Job& job) {
  const __m128i j0 = make_j0(job.iv);
  __m512i next = first_counters512(j0);
  __m128i acc = ghash512_bytes(k, _mm_setzero_si128(), job.aad, job.aad_len);
  const uint8_t* in = job.in;
  Output out(job);
  size_t len = job.in_len - kTagBytes;
  // Each turn hashes the thirty-two ciphertext blocks it decrypts before writing the plaintext.
  for (; len >= 512; in += 512, len -= 512) {
    __m512i s[8];
    keystream32<true>(k, next, s, in, acc);
    xor_store32(s, in, out.next(512));
    out.commit();
  }
  Counter ctr(low256(next));
  return open_rest(k, job, j0, ctr, acc, in, out, len);
}

}  // namespace

bool vaes_supported() {
  const CpuFeatures& f = cpu_features();
  return f.aes && f.pclmulqdq && f.avx2 && f.vaes && f.vpclmulqdq;
}

void vaes_expand(VaesKey* key, const uint8_t raw[kKeyBytes]) { expand_impl(key, raw); }
void vaes_seal(const VaesKey& key, const Job& job) { seal_impl(key, job); }
bool vaes_open(const VaesKey& key, const Job& job) { return open_impl(key, job); }
void vaes_ctr(const VaesKey& key, const uint8_t* iv, uint64_t offset, const uint8_t* in, uint8_t* out, size_t len) {
  ctr_impl(key, iv, offset, in, out, len);
}

bool vaes512_supported() {
  const CpuFeatures& f = cpu_features();
  return vaes_supported() && f.avx512f && f.avx512bw && f.avx512vl;
}

void vaes512_seal(const VaesKey& key, const Job& job) { seal512_impl(key, job); }
bool vaes512_open(const VaesKey& key, const Job& job) { return open512_impl(key, job); }

#else  // not x86-64: the EVP implementation serves

bool vaes_supported() { return false; }
void vaes_expand(VaesKey*, const uint8_t*) {}
void vaes_seal(const VaesKey&, const Job&) {}
bool vaes_open(const VaesKey&, const Job&) { return false; }
void vaes_ctr(const VaesKey&, const uint8_t*, uint64_t, const uint8_t*, uint8_t*, size_t) {}
bool vaes512_supported() { return false; }
void vaes512_seal(const VaesKey&, const Job&) {}
bool vaes512_open(const VaesKey&, const Job&) { return false; }

#endif

}  // namespace ferry::gcm
