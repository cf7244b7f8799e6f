#include "gcm_evp.h"

#include "wipe.h"

#if FERRY_HAVE_EVP
#include <openssl/evp.h>

#include <climits>
#include <cstring>
#endif

namespace ferry::gcm {

#if FERRY_HAVE_EVP

// Two EVP contexts with the key schedule done once; each message only sets its IV.
struct EvpContext {
  EVP_CIPHER_CTX* enc = nullptr;
  EVP_CIPHER_CTX* dec = nullptr;
};

bool evp_supported() { return true; }

EvpContext* evp_context_new(const uint8_t raw[kKeyBytes]) {
  auto* ctx = new EvpContext;
  ctx->enc = EVP_CIPHER_CTX_new();
  ctx->dec = EVP_CIPHER_CTX_new();
  if (ctx->enc == nullptr || ctx->dec == nullptr ||
      EVP_EncryptInit_ex(ctx->enc, EVP_aes_256_gcm(), nullptr, raw, nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx->dec, EVP_aes_256_gcm(), nullptr, raw, nullptr) != 1) {
    evp_context_free(ctx);
    return nullptr;
  }
  return ctx;
}

void evp_context_free(EvpContext* ctx) {
  if (ctx == nullptr) return;
  EVP_CIPHER_CTX_free(ctx->enc);  // frees and cleanses the key schedule
  EVP_CIPHER_CTX_free(ctx->dec);
  delete ctx;
}

namespace {

// EVP takes int lengths: feed long inputs in pieces.
constexpr size_t kPiece = size_t{1} << 30;

bool aad(EVP_CIPHER_CTX* c, const Job& job, bool enc) {
  for (size_t off = 0; off < job.aad_len; off += kPiece) {
    const int n = static_cast<int>(job.aad_len - off < kPiece ? job.aad_len - off : kPiece);
    int outl = 0;
    const int ok = enc ? EVP_EncryptUpdate(c, nullptr, &outl, job.aad + off, n)
                       : EVP_DecryptUpdate(c, nullptr, &outl, job.aad + off, n);
    if (ok != 1) return false;
  }
  return true;
}

bool body(EVP_CIPHER_CTX* c, const uint8_t* in, uint8_t* out, size_t len, bool enc) {
  for (size_t off = 0; off < len; off += kPiece) {
    const int n = static_cast<int>(len - off < kPiece ? len - off : kPiece);
    int outl = 0;
    const int ok =
        enc ? EVP_EncryptUpdate(c, out + off, &outl, in + off, n) : EVP_DecryptUpdate(c, out + off, &outl, in + off, n);
    if (ok != 1 || outl != n) return false;
  }
  return true;
}

}  // namespace

Status evp_seal(EvpContext* ctx, const Job& job) {
  EVP_CIPHER_CTX* c = ctx->enc;
  int outl = 0;
  bool ok = EVP_EncryptInit_ex(c, nullptr, nullptr, nullptr, job.iv) == 1 && aad(c, job, true);
  if (job.segments == nullptr) {
    ok = ok && body(c, job.in, job.out, job.in_len, true);
  } else {
    // EVP streams: each segment goes in as it lies, partial blocks carried over inside EVP.
    size_t at = 0;
    for (size_t i = 0; ok && i < job.segment_count; at += job.segments[i++].len) {
      ok = body(c, job.segments[i].data, job.out + at, job.segments[i].len, true);
    }
    ok = ok && at == job.in_len;
  }
  if (!ok || EVP_EncryptFinal_ex(c, job.out + job.in_len, &outl) != 1 ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, kTagBytes, job.out + job.in_len) != 1) {
    wipe(job.out, job.in_len + kTagBytes);
    return Status::kInternal;
  }
  return Status::kOk;
}

Status evp_open(EvpContext* ctx, const Job& job) {
  EVP_CIPHER_CTX* c = ctx->dec;
  const size_t len = job.in_len - kTagBytes;
  // The tag is copied out first: with `out` == `in`, the plaintext may overwrite what precedes it.
  uint8_t tag[kTagBytes];
  for (size_t i = 0; i < kTagBytes; i++) tag[i] = job.in[len + i];
  int outl = 0;
  bool ok = EVP_DecryptInit_ex(c, nullptr, nullptr, nullptr, job.iv) == 1 && aad(c, job, false);
  if (job.out_segments == nullptr) {
    ok = ok && body(c, job.in, job.out, len, false);
  } else {
    // Each segment receives its share of the ciphertext as it streams through.
    size_t at = 0;
    for (size_t i = 0; ok && i < job.out_segment_count; at += job.out_segments[i++].len) {
      ok = at + job.out_segments[i].len <= len &&
           body(c, job.in + at, job.out_segments[i].data, job.out_segments[i].len, false);
    }
    ok = ok && at == len;
  }
  // A final that writes nothing (GCM has no padding) still wants somewhere to point.
  uint8_t none[1];
  if (!ok || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, kTagBytes, tag) != 1) {
    wipe_output(job, len);
    return Status::kInternal;
  }
  if (EVP_DecryptFinal_ex(c, none, &outl) != 1) {
    wipe_output(job, len);
    return Status::kAuthFailed;
  }
  return Status::kOk;
}

Status evp_ctr(const uint8_t raw[kKeyBytes], const uint8_t* iv, uint64_t offset, const uint8_t* in, uint8_t* out,
               size_t len) {
  // The counter block of the data block at `offset`: IV, then 2 + offset / 16 big-endian (block
  // 0 of the data is counter 2; counter 1 masks the tag). EVP's CTR steps all 128 bits, GCM only
  // the low 32: the same for any message GCM allows (< 2^32 - 2 blocks).
  uint8_t counter[16];
  std::memcpy(counter, iv, kIvBytes);
  const uint32_t first = static_cast<uint32_t>(2 + offset / 16);
  for (int i = 0; i < 4; i++) counter[12 + i] = static_cast<uint8_t>(first >> (24 - 8 * i));
  EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
  uint8_t skip[16] = {};
  int outl = 0;
  const size_t skipped = offset % 16;
  bool ok = c != nullptr && EVP_EncryptInit_ex(c, EVP_aes_256_ctr(), nullptr, raw, counter) == 1 &&
            (skipped == 0 || EVP_EncryptUpdate(c, skip, &outl, skip, static_cast<int>(skipped)) == 1) &&
            body(c, in, out, len, true);
  EVP_CIPHER_CTX_free(c);  // frees and cleanses the key schedule
  wipe(skip, sizeof skip);
  wipe(counter, sizeof counter);
  if (!ok) {
    wipe(out, len);
    return Status::kInternal;
  }
  return Status::kOk;
}

#else  // !FERRY_HAVE_EVP

struct EvpContext {};
bool evp_supported() { return false; }
EvpContext* evp_context_new(const uint8_t*) { return nullptr; }
void evp_context_free(EvpContext*) {}
Status evp_seal(EvpContext*, const Job&) { return Status::kInternal; }
Status evp_open(EvpContext*, const Job&) { return Status::kInternal; }
Status evp_ctr(const uint8_t*, const uint8_t*, uint64_t, const uint8_t*, uint8_t*, size_t) { return Status::kInternal; }

#endif

}  // namespace ferry::gcm
