#include "gcm_evp.h"

#include "wipe.h"

#if FERRY_HAVE_EVP
#include <openssl/evp.h>

#include <climits>
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
    const int ok = enc ? EVP_EncryptUpdate(c, out + off, &outl, in + off, n)
                       : EVP_DecryptUpdate(c, out + off, &outl, in + off, n);
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
  if (EVP_DecryptInit_ex(c, nullptr, nullptr, nullptr, job.iv) != 1 || !aad(c, job, false) ||
      !body(c, job.in, job.out, len, false) || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, kTagBytes, tag) != 1) {
    wipe(job.out, len);
    return Status::kInternal;
  }
  if (EVP_DecryptFinal_ex(c, job.out + len, &outl) != 1) {
    wipe(job.out, len);
    return Status::kAuthFailed;
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

#endif

}  // namespace ferry::gcm
