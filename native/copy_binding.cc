// copyBatch(flat: [destination, source, ...]) -> Promise<void>: plain memcpy of each pair, in
// order, on one worker of the libuv pool. The destination of a migration writes arriving pages into
// guest memory with it, so that the copies, and the first-touch page faults of fresh guest memory
// that come with them, run beside the event loop instead of on it (and at memcpy speed, where V8's
// copy into a SharedArrayBuffer is a slower relaxed-atomic one). The array, and with it every
// buffer, is held until the Promise settles; the caller must not touch them before.
#include <cstdint>
#include <cstring>
#include <vector>

#include "binding.h"
#include "populate.h"

namespace ferry {
namespace {

class CopyWorker : public Napi::AsyncWorker {
 public:
  CopyWorker(Napi::Env env, Napi::Array flat, std::vector<Bytes> pairs)
      : Napi::AsyncWorker(env, "ferry:copy"),
        deferred_(Napi::Promise::Deferred::New(env)),
        flat_ref_(Napi::Persistent(flat.As<Napi::Object>())),
        pairs_(std::move(pairs)) {}

  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    for (size_t i = 0; i + 1 < pairs_.size(); i += 2) {
      // An empty view may carry no pointer at all, and memmove's arguments must not be null.
      if (pairs_[i].length == 0) continue;
      populate_for_write(pairs_[i].data, pairs_[i].length);
      std::memmove(pairs_[i].data, pairs_[i + 1].data, pairs_[i].length);
    }
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference flat_ref_;
  std::vector<Bytes> pairs_;
};

Napi::Value copy_batch_js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray() || info[0].As<Napi::Array>().Length() % 2 != 0) {
    throw_internal(env, "copyBatch: expected an array of destination, source pairs");
    return env.Undefined();
  }
  Napi::Array flat = info[0].As<Napi::Array>();
  std::vector<Bytes> pairs(flat.Length());
  for (uint32_t i = 0; i < flat.Length(); i++) {
    if (!get_bytes(flat.Get(i), &pairs[i])) return env.Undefined();
  }
  for (size_t i = 0; i < pairs.size(); i += 2) {
    if (pairs[i].length != pairs[i + 1].length) {
      throw_internal(env, "copyBatch: a destination and its source differ in length");
      return env.Undefined();
    }
  }
  auto* worker = new CopyWorker(env, flat, std::move(pairs));
  Napi::Promise promise = worker->promise();
  worker->Queue();
  return promise;
}

}  // namespace

void init_copy(Napi::Env env, Napi::Object exports) {
  exports.Set("copyBatch", Napi::Function::New(env, copy_batch_js, "copyBatch"));
}

}  // namespace ferry
