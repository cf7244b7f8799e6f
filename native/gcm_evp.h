// AES-256-GCM through OpenSSL's EVP. The addon does not link libcrypto: Node exports OpenSSL's
// symbols, so the addon uses the very OpenSSL Node runs on. Built only when Node's OpenSSL headers
// were found (FERRY_HAVE_EVP).
#pragma once

#include "gcm.h"

namespace ferry::gcm {

bool evp_supported();
// Null on failure (out of memory).
EvpContext* evp_context_new(const uint8_t raw[kKeyBytes]);
void evp_context_free(EvpContext* ctx);
Status evp_seal(EvpContext* ctx, const Job& job);
Status evp_open(EvpContext* ctx, const Job& job);
// Context::ctr through EVP's AES-256-CTR.
Status evp_ctr(const uint8_t raw[kKeyBytes], const uint8_t* iv, uint64_t offset, const uint8_t* in, uint8_t* out,
               size_t len);

}  // namespace ferry::gcm
