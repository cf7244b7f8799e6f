// Shared pieces of the N-API bindings. The bindings only convert and dispatch: TypeScript has
// validated every argument (src/crypto/native-addon.ts declares the surface), so a wrong type here
// is a bug and is reported as ERR_FERRY_INTERNAL.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>

namespace ferry {

struct Bytes {
  uint8_t* data = nullptr;
  size_t length = 0;
};

// The bytes of a Uint8Array (or Buffer); false (with a JS exception pending) for anything else.
bool get_bytes(Napi::Value value, Bytes* out);

// An Error with a stable `code`, the boundary's error vocabulary (src/errors.ts).
Napi::Error coded_error(Napi::Env env, const char* code, const char* message);
void throw_internal(Napi::Env env, const char* message);

void init_gcm(Napi::Env env, Napi::Object exports);
void init_zero_pages(Napi::Env env, Napi::Object exports);
void init_cpu_features(Napi::Env env, Napi::Object exports);
void init_copy(Napi::Env env, Napi::Object exports);

}  // namespace ferry
