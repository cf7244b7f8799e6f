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

}  // namespace ferry::gcm
