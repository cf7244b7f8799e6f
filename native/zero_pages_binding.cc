#include "binding.h"
#include "page_map.h"
#include "zero_pages.h"

namespace ferry {
namespace {

bool zero_pages_args(const Napi::CallbackInfo& info, Bytes* bytes, size_t* page_size, uint32_t** out);

// zeroPages(bytes, pageSize, out: Uint32Array with room for every page) -> how many were found.
// Synchronous: it runs at memory speed (a 1 GiB slot in about 50 ms).
Napi::Value zero_pages_js(const Napi::CallbackInfo& info) {
  Bytes bytes;
  size_t page_size;
  uint32_t* out;
  if (!zero_pages_args(info, &bytes, &page_size, &out)) return info.Env().Undefined();
  return Napi::Number::New(info.Env(), static_cast<double>(zero_pages(bytes.data, bytes.length, page_size, out)));
}

// zeroPagesAsync(bytes, pageSize, out) -> Promise<number>: the same on the libuv pool, for large
// memory the caller's event loop must not wait on. Both buffers are held until it settles.
class ZeroPagesWorker : public Napi::AsyncWorker {
 public:
  ZeroPagesWorker(Napi::Env env, Napi::Value bytes, Napi::Value out, Bytes b, size_t page_size, uint32_t* indexes)
      : Napi::AsyncWorker(env, "ferry:zero-pages"),
        deferred_(Napi::Promise::Deferred::New(env)),
        bytes_ref_(Napi::Persistent(bytes.As<Napi::Object>())),
        out_ref_(Napi::Persistent(out.As<Napi::Object>())),
        bytes_(b),
        page_size_(page_size),
        indexes_(indexes) {}

  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override { found_ = zero_pages(bytes_.data, bytes_.length, page_size_, indexes_); }
  void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), static_cast<double>(found_))); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference bytes_ref_, out_ref_;
  Bytes bytes_;
  size_t page_size_;
  uint32_t* indexes_;
  size_t found_ = 0;
};

// The checked arguments of both forms; false with a JS exception pending.
bool zero_pages_args(const Napi::CallbackInfo& info, Bytes* bytes, size_t* page_size, uint32_t** out) {
  Napi::Env env = info.Env();
  if (!get_bytes(info[0], bytes)) return false;
  const int64_t size = info[1].As<Napi::Number>().Int64Value();
  if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
    throw_internal(env, "zeroPages: out must be a Uint32Array");
    return false;
  }
  Napi::Uint32Array indexes = info[2].As<Napi::Uint32Array>();
  if (size < 1 || indexes.ElementLength() < (bytes->length + size - 1) / size) {
    throw_internal(env, "zeroPages: bad page size or output too short");
    return false;
  }
  *page_size = static_cast<size_t>(size);
  *out = indexes.Data();
  return true;
}

Napi::Value zero_pages_async_js(const Napi::CallbackInfo& info) {
  Bytes bytes;
  size_t page_size;
  uint32_t* out;
  if (!zero_pages_args(info, &bytes, &page_size, &out)) return info.Env().Undefined();
  auto* worker = new ZeroPagesWorker(info.Env(), info[0], info[2], bytes, page_size, out);
  Napi::Promise promise = worker->promise();
  worker->Queue();
  return promise;
}

// zeroPagesUnread(bytes, pageSize, out) -> how many, or -1: zeroPages with the pages the kernel never
// mapped counted without being read (page_map.h). The caller has checked privateAnonymous(bytes).
Napi::Value zero_pages_unread_js(const Napi::CallbackInfo& info) {
  Bytes bytes;
  size_t page_size;
  uint32_t* out;
  if (!zero_pages_args(info, &bytes, &page_size, &out)) return info.Env().Undefined();
  return Napi::Number::New(info.Env(),
                           static_cast<double>(zero_pages_unread(bytes.data, bytes.length, page_size, out)));
}

// privateAnonymous(bytes) -> whether the bytes lie in private anonymous mappings (page_map.h).
Napi::Value private_anonymous_js(const Napi::CallbackInfo& info) {
  Bytes bytes;
  if (!get_bytes(info[0], &bytes)) return info.Env().Undefined();
  return Napi::Boolean::New(info.Env(), private_anonymous(bytes.data, bytes.length));
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
  exports.Set("zeroPagesAsync", Napi::Function::New(env, zero_pages_async_js, "zeroPagesAsync"));
  exports.Set("zeroPagesUnread", Napi::Function::New(env, zero_pages_unread_js, "zeroPagesUnread"));
  exports.Set("privateAnonymous", Napi::Function::New(env, private_anonymous_js, "privateAnonymous"));
  exports.Set("readAll", Napi::Function::New(env, read_all_js, "readAll"));
}

}  // namespace ferry
