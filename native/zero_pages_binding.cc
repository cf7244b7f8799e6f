#include "binding.h"
#include "zero_pages.h"

namespace ferry {
namespace {

// zeroPages(bytes, pageSize, out: Uint32Array with room for every page) -> how many were found.
// Synchronous: it runs at memory speed (a 1 GiB slot in about 50 ms).
Napi::Value zero_pages_js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Bytes bytes;
  if (!get_bytes(info[0], &bytes)) return env.Undefined();
  const int64_t page_size = info[1].As<Napi::Number>().Int64Value();
  if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
    throw_internal(env, "zeroPages: out must be a Uint32Array");
    return env.Undefined();
  }
  Napi::Uint32Array out = info[2].As<Napi::Uint32Array>();
  if (page_size < 1 || out.ElementLength() < (bytes.length + page_size - 1) / page_size) {
    throw_internal(env, "zeroPages: bad page size or output too short");
    return env.Undefined();
  }
  const size_t found = zero_pages(bytes.data, bytes.length, static_cast<size_t>(page_size), out.Data());
  return Napi::Number::New(env, static_cast<double>(found));
}

// readAll(bytes) -> a fold of every byte: the read-bandwidth reference for `ferry bench crypto`.
Napi::Value read_all_js(const Napi::CallbackInfo& info) {
  Bytes bytes;
  if (!get_bytes(info[0], &bytes)) return info.Env().Undefined();
  return Napi::Number::New(info.Env(), static_cast<double>(read_all(bytes.data, bytes.length) & 0xffff));
}

}  // namespace

void init_zero_pages(Napi::Env env, Napi::Object exports) {
  exports.Set("zeroPages", Napi::Function::New(env, zero_pages_js, "zeroPages"));
  exports.Set("readAll", Napi::Function::New(env, read_all_js, "readAll"));
}

}  // namespace ferry
