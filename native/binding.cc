#include "binding.h"

namespace ferry {

Napi::Error coded_error(Napi::Env env, const char* code, const char* message) {
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  return error;
}

void throw_internal(Napi::Env env, const char* message) {
  coded_error(env, "ERR_FERRY_INTERNAL", message).ThrowAsJavaScriptException();
}

bool get_bytes(Napi::Value value, Bytes* out) {
  napi_env env = value.Env();
  bool is_typed = false;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed) {
    throw_internal(value.Env(), "native addon: expected a Uint8Array");
    return false;
  }
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  if (napi_get_typedarray_info(env, value, &type, &length, &data, nullptr, nullptr) != napi_ok ||
      type != napi_uint8_array) {
    throw_internal(value.Env(), "native addon: expected a Uint8Array");
    return false;
  }
  out->data = static_cast<uint8_t*>(data);
  out->length = length;
  return true;
}

}  // namespace ferry
