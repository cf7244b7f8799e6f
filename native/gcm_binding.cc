// N-API surface of the GCM code: keys as opaque handles, one-shot seal/open on the JS thread, and
// batches spread over the libuv thread pool by up to `threads` workers, settling one Promise with
// the number of pool workers the batch ran on (0: it ran on the calling thread).
#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "binding.h"
#include "gcm.h"
#include "populate.h"
#include "wipe.h"

namespace ferry {
namespace {

using gcm::Context;
using gcm::Job;
using gcm::Key;
using gcm::OutSegment;
using gcm::Segment;
using gcm::Status;

// What JS holds for a key: the key (shared with batches in flight, which keep it alive until they
// finish) and a Context for calls on the JS thread. keyDestroy drops both at once; the Key wipes
// itself when the last batch using it is done.
struct KeyHandle {
  std::shared_ptr<const Key> key;
  std::unique_ptr<Context> context;
};

// Tags the handle's External so that no other External can be mistaken for a key.
const napi_type_tag kKeyTag = {0x6665727279676d63ULL, 0x6b65792d68616e64ULL};

KeyHandle* get_handle(Napi::Value value) {
  napi_env env = value.Env();
  bool ok = false;
  if (!value.IsExternal() || napi_check_object_type_tag(env, value, &kKeyTag, &ok) != napi_ok || !ok) {
    throw_internal(value.Env(), "native addon: expected a key handle");
    return nullptr;
  }
  KeyHandle* handle = value.As<Napi::External<KeyHandle>>().Data();
  if (!handle->key) {
    coded_error(value.Env(), "ERR_FERRY_CRYPTO", "key was destroyed").ThrowAsJavaScriptException();
    return nullptr;
  }
  return handle;
}

Napi::Value implementations_js(const Napi::CallbackInfo& info) {
  Napi::Array out = Napi::Array::New(info.Env());
  uint32_t n = 0;
  for (gcm::Impl impl : gcm::kImpls) {
    if (gcm::impl_available(impl)) out.Set(n++, gcm::impl_name(impl));
  }
  return out;
}

// keyCreate(key: 32 bytes, impl: name) -> handle
Napi::Value key_create_js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Bytes raw;
  if (!get_bytes(info[0], &raw)) return env.Undefined();
  gcm::Impl impl;
  const std::string name = info[1].As<Napi::String>().Utf8Value();
  if (raw.length != gcm::kKeyBytes || !gcm::parse_impl(name.c_str(), &impl) || !gcm::impl_available(impl)) {
    coded_error(env, "ERR_FERRY_CRYPTO", "cannot create a key with this implementation here")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto handle = std::make_unique<KeyHandle>();
  handle->key = Key::create(raw.data, impl);
  if (handle->key) handle->context = std::make_unique<Context>(*handle->key);
  if (!handle->key) {
    coded_error(env, "ERR_FERRY_CRYPTO", "cannot create a key with this implementation here")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto external = Napi::External<KeyHandle>::New(env, handle.release(), [](Napi::Env, KeyHandle* h) { delete h; });
  napi_type_tag_object(env, external, &kKeyTag);
  return external;
}

Napi::Value key_destroy_js(const Napi::CallbackInfo& info) {
  KeyHandle* handle = get_handle(info[0]);
  if (handle != nullptr) {
    handle->context.reset();
    handle->key.reset();
  }
  return info.Env().Undefined();
}

// The pieces of an array of Uint8Arrays (a seal's gathered input, an open's scattered output) into
// `pieces`; their total length into `total`.
template <typename Piece>
bool get_pieces(Napi::Value value, std::vector<Piece>* pieces, size_t* total) {
  Napi::Array parts = value.As<Napi::Array>();
  pieces->resize(parts.Length());
  *total = 0;
  for (uint32_t i = 0; i < parts.Length(); i++) {
    Bytes part;
    if (!get_bytes(parts.Get(i), &part)) return false;
    (*pieces)[i] = Piece{part.data, part.length};
    *total += part.length;
  }
  return true;
}

// A job from [iv, aad, input, output]. With `segments`, a seal's input may also be an array of
// Uint8Arrays, gathered in order; with `out_segments`, an open's output may be such an array, the
// plaintext scattered over it in order (the pieces are stored there; the caller keeps them alive).
bool get_job(const Napi::Value* args, Job* job, std::vector<Segment>* segments = nullptr,
             std::vector<OutSegment>* out_segments = nullptr) {
  Bytes iv, aad, in, out;
  size_t total = 0;
  if (!get_bytes(args[0], &iv) || !get_bytes(args[1], &aad)) return false;
  if (out_segments != nullptr && args[3].IsArray()) {
    if (!get_bytes(args[2], &in) || !get_pieces(args[3], out_segments, &total)) return false;
    if (in.length < gcm::kTagBytes || total != in.length - gcm::kTagBytes) {
      throw_internal(args[3].Env(), "batch: the output segments do not add up to the plaintext's length");
      return false;
    }
    *job = Job{iv.data, aad.data, aad.length, in.data, in.length, nullptr};
    job->out_segments = out_segments->data();
    job->out_segment_count = out_segments->size();
    return true;
  }
  if (!get_bytes(args[3], &out)) return false;
  if (segments != nullptr && args[2].IsArray()) {
    if (!get_pieces(args[2], segments, &total)) return false;
    *job = Job{iv.data, aad.data, aad.length, nullptr, total, out.data, segments->data(), segments->size()};
    return true;
  }
  if (!get_bytes(args[2], &in)) return false;
  *job = Job{iv.data, aad.data, aad.length, in.data, in.length, out.data};
  return true;
}

Napi::Value status_to_js(Napi::Env env, Status s, bool sealing) {
  if (s == Status::kInternal) {
    throw_internal(env, sealing ? "AES-GCM seal failed inside the crypto library"
                                : "AES-GCM open failed inside the crypto library");
    return env.Undefined();
  }
  return Napi::Boolean::New(env, s == Status::kOk);
}

// seal(handle, iv, aad, input, output) and open(...) -> true, or false when the tag fails.
template <bool kSealing>
Napi::Value one_shot_js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  KeyHandle* handle = get_handle(info[0]);
  if (handle == nullptr) return env.Undefined();
  const Napi::Value args[4] = {info[1], info[2], info[3], info[4]};
  Job job;
  if (!get_job(args, &job)) return env.Undefined();
  return status_to_js(env, kSealing ? handle->context->seal(job) : handle->context->open(job), kSealing);
}

// ctr(handle, iv, offset, input, output) -> true: Context::ctr, decrypting input (the ciphertext
// bytes that stand at `offset` of a message) into output without authenticating anything.
Napi::Value ctr_js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  KeyHandle* handle = get_handle(info[0]);
  if (handle == nullptr) return env.Undefined();
  Bytes iv, in, out;
  if (!get_bytes(info[1], &iv) || !get_bytes(info[3], &in) || !get_bytes(info[4], &out)) return env.Undefined();
  const int64_t offset = info[2].As<Napi::Number>().Int64Value();
  if (iv.length != gcm::kIvBytes || in.length != out.length || offset < 0 ||
      static_cast<uint64_t>(offset) + in.length > (uint64_t{1} << 36) - 32) {
    throw_internal(env, "ctr: bad arguments");
    return env.Undefined();
  }
  return status_to_js(env, handle->context->ctr(iv.data, static_cast<uint64_t>(offset), in.data, out.data, in.length),
                      false);
}

// ---- batches -----------------------------------------------------------------------------------

// One batch in flight. Lives until its last worker finishes; touched from the pool only through
// the jobs (each taken by one worker) and the atomics.
struct Batch {
  Batch(Napi::Env env, Napi::Array flat, std::shared_ptr<const Key> k, bool s)
      : deferred(Napi::Promise::Deferred::New(env)), buffers(Napi::Persistent(flat)), key(std::move(k)), sealing(s) {}

  Napi::Promise::Deferred deferred;
  Napi::Reference<Napi::Array> buffers;  // keeps every iv, aad, input and output alive
  std::shared_ptr<const Key> key;
  bool sealing;
  std::vector<Job> jobs;
  std::vector<std::vector<Segment>> segments;         // of the seal jobs whose input is gathered
  std::vector<std::vector<OutSegment>> out_segments;  // of the open jobs whose output is scattered
  std::atomic<size_t> next{0};                        // the next job nobody has taken
  std::atomic<size_t> first_failed{SIZE_MAX};
  std::atomic<bool> internal{false};
  int workers = 0;       // pool workers queued for this batch (0: ran inline); JS thread only
  int workers_left = 0;  // JS thread only

  // Each worker takes the next job until none is left, so a worker slowed down (a busy core)
  // takes fewer jobs instead of holding the batch up. Stops at the first failure anywhere.
  void run() {
    Context ctx(*key);
    for (size_t i = next++; i < jobs.size(); i = next++) {
      if (first_failed.load(std::memory_order_relaxed) != SIZE_MAX) return;
      // An open scattered into guest memory: map its fresh pages in one call, not one fault each.
      for (size_t j = 0; j < jobs[i].out_segment_count; j++)
        populate_for_write(jobs[i].out_segments[j].data, jobs[i].out_segments[j].len);
      const Status s = sealing ? ctx.seal(jobs[i]) : ctx.open(jobs[i]);
      if (s == Status::kOk) continue;
      if (s == Status::kInternal) internal = true;
      size_t seen = first_failed.load();
      while (i < seen && !first_failed.compare_exchange_weak(seen, i)) {
      }
      return;
    }
  }

  void settle(Napi::Env env) {
    const size_t failed = first_failed.load();
    if (failed == SIZE_MAX) {
      deferred.Resolve(Napi::Number::New(env, workers));
      return;
    }
    // No output of a failed batch is left for the caller to see.
    for (const Job& job : jobs) {
      if (sealing) {
        wipe(job.out, job.in_len + gcm::kTagBytes);
      } else {
        gcm::wipe_output(job, job.in_len - std::min(job.in_len, gcm::kTagBytes));
      }
    }
    Napi::Error error = internal ? coded_error(env, "ERR_FERRY_INTERNAL", "AES-GCM failed inside the crypto library")
                                 : coded_error(env, "ERR_FERRY_AUTH", "AES-GCM open failed: authentication failed");
    error.Set("index", Napi::Number::New(env, static_cast<double>(failed)));
    deferred.Reject(error.Value());
  }
};

class BatchWorker : public Napi::AsyncWorker {
 public:
  BatchWorker(Napi::Env env, std::shared_ptr<Batch> batch)
      : Napi::AsyncWorker(env, "ferry:gcm-batch"), batch_(std::move(batch)) {}

  void Execute() override { batch_->run(); }
  void OnOK() override {
    if (--batch_->workers_left == 0) batch_->settle(Env());
  }

 private:
  std::shared_ptr<Batch> batch_;
};

// Batches smaller than this run on the JS thread: a trip through the pool costs more than they do.
constexpr size_t kInlineBatchBytes = 64 * 1024;
// No more workers than there are 64 KiB in the batch, for the same reason.
constexpr size_t kMinWorkerBytes = 64 * 1024;

// sealBatch(handle, flat: [iv, aad, input, output, ...], threads) -> Promise<number of pool workers,
// at most `threads`; 0 when it ran on the calling thread>; openBatch the same, rejecting with code
// ERR_FERRY_AUTH and the `index` of the first job that failed.
template <bool kSealing>
Napi::Value batch_js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  KeyHandle* handle = get_handle(info[0]);
  if (handle == nullptr) return env.Undefined();
  if (!info[1].IsArray() || info[1].As<Napi::Array>().Length() % 4 != 0) {
    throw_internal(env, "batch: expected [iv, aad, input, output, ...]");
    return env.Undefined();
  }
  Napi::Array flat = info[1].As<Napi::Array>();
  const int64_t threads = std::max<int64_t>(1, info[2].As<Napi::Number>().Int64Value());
  auto batch = std::make_shared<Batch>(env, flat, handle->key, kSealing);
  const uint32_t n = flat.Length() / 4;
  batch->jobs.resize(n);
  if (kSealing) batch->segments.resize(n);
  if (!kSealing) batch->out_segments.resize(n);
  size_t total = 0;
  for (uint32_t i = 0; i < n; i++) {
    const Napi::Value args[4] = {flat.Get(4 * i), flat.Get(4 * i + 1), flat.Get(4 * i + 2), flat.Get(4 * i + 3)};
    if (!get_job(args, &batch->jobs[i], kSealing ? &batch->segments[i] : nullptr,
                 kSealing ? nullptr : &batch->out_segments[i])) {
      return env.Undefined();
    }
    total += batch->jobs[i].in_len;
  }
  size_t workers = std::min<size_t>({static_cast<size_t>(threads), n, std::max<size_t>(1, total / kMinWorkerBytes)});
  if (n == 0 || total < kInlineBatchBytes) {
    Context& ctx = *handle->context;
    for (uint32_t i = 0; i < n && batch->first_failed == SIZE_MAX; i++) {
      const Status s = kSealing ? ctx.seal(batch->jobs[i]) : ctx.open(batch->jobs[i]);
      if (s != Status::kOk) {
        batch->internal = s == Status::kInternal;
        batch->first_failed = i;
      }
    }
    batch->settle(env);
    return batch->deferred.Promise();
  }
  batch->workers = static_cast<int>(workers);
  batch->workers_left = batch->workers;
  Napi::Promise promise = batch->deferred.Promise();
  for (size_t w = 0; w < workers; w++) (new BatchWorker(env, batch))->Queue();
  return promise;
}

// Unit i of `data` (unitSize bytes, the last may be shorter) tagged into out[16 i, 16 i + 16): the
// tag of an empty message with the unit as its additional data. tagUnits and tagUnitsAt share it.
Status tag_unit(Context& ctx, const Bytes& iv, const Bytes& data, size_t size, size_t i, const Bytes& out) {
  const size_t at = i * size;
  const Job job{iv.data, data.data + at, std::min(size, data.length - at), out.data, 0, out.data + i * gcm::kTagBytes};
  return ctx.seal(job);
}

// tagUnits(handle, iv, data, unitSize, out) -> true. For each unitSize piece of `data` in turn (the
// last may be shorter), `out` receives 16 bytes: the tag of an empty message with that piece as its
// additional data. Verify's unit tags (src/crypto/unit-tags.ts) for a run of pages in one call,
// where a call a page cost more than the page's GHASH.
Napi::Value tag_units_js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  KeyHandle* handle = get_handle(info[0]);
  if (handle == nullptr) return env.Undefined();
  Bytes iv, data, out;
  if (!get_bytes(info[1], &iv) || !get_bytes(info[2], &data) || !get_bytes(info[4], &out)) return env.Undefined();
  const int64_t unit = info[3].IsNumber() ? info[3].As<Napi::Number>().Int64Value() : 0;
  if (iv.length != gcm::kIvBytes || unit <= 0) {
    throw_internal(env, "tagUnits: needs a 12-byte IV and a positive unit size");
    return env.Undefined();
  }
  const size_t size = static_cast<size_t>(unit);
  const size_t units = (data.length + size - 1) / size;
  if (out.length != units * gcm::kTagBytes) {
    throw_internal(env, "tagUnits: the output must hold 16 bytes for each unit");
    return env.Undefined();
  }
  for (size_t i = 0; i < units; i++) {
    const Status s = tag_unit(*handle->context, iv, data, size, i, out);
    if (s != Status::kOk) return status_to_js(env, s, true);
  }
  return Napi::Boolean::New(env, true);
}

// tagUnitsAt(handle, iv, base, unitSize, indexes: Uint32Array, out) -> true. tagUnits for units
// scattered over `base`: for each index i, the tag of unit i of `base` (the last may be shorter)
// goes to out[16 i, 16 i + 16), so `out` is laid out like the units themselves. One call for the
// scattered pages a pass sends, where a call a page cost more than the page's GHASH.
Napi::Value tag_units_at_js(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  KeyHandle* handle = get_handle(info[0]);
  if (handle == nullptr) return env.Undefined();
  Bytes iv, base, out;
  if (!get_bytes(info[1], &iv) || !get_bytes(info[2], &base) || !get_bytes(info[5], &out)) return env.Undefined();
  const int64_t unit = info[3].IsNumber() ? info[3].As<Napi::Number>().Int64Value() : 0;
  if (iv.length != gcm::kIvBytes || unit <= 0 || !info[4].IsTypedArray() ||
      info[4].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
    throw_internal(env, "tagUnitsAt: needs a 12-byte IV, a positive unit size and Uint32Array indexes");
    return env.Undefined();
  }
  Napi::Uint32Array indexes = info[4].As<Napi::Uint32Array>();
  const size_t size = static_cast<size_t>(unit);
  const size_t units = (base.length + size - 1) / size;
  for (size_t i = 0; i < indexes.ElementLength(); i++) {
    const size_t u = indexes[i];
    if (u >= units || out.length < (u + 1) * gcm::kTagBytes) {
      throw_internal(env, "tagUnitsAt: an index outside the units or the output");
      return env.Undefined();
    }
  }
  for (size_t i = 0; i < indexes.ElementLength(); i++) {
    const Status s = tag_unit(*handle->context, iv, base, size, indexes[i], out);
    if (s != Status::kOk) return status_to_js(env, s, true);
  }
  return Napi::Boolean::New(env, true);
}

}  // namespace

void init_gcm(Napi::Env env, Napi::Object exports) {
  exports.Set("gcmImplementations", Napi::Function::New(env, implementations_js, "gcmImplementations"));
  exports.Set("keyCreate", Napi::Function::New(env, key_create_js, "keyCreate"));
  exports.Set("keyDestroy", Napi::Function::New(env, key_destroy_js, "keyDestroy"));
  exports.Set("seal", Napi::Function::New(env, one_shot_js<true>, "seal"));
  exports.Set("open", Napi::Function::New(env, one_shot_js<false>, "open"));
  exports.Set("ctr", Napi::Function::New(env, ctr_js, "ctr"));
  exports.Set("tagUnits", Napi::Function::New(env, tag_units_js, "tagUnits"));
  exports.Set("tagUnitsAt", Napi::Function::New(env, tag_units_at_js, "tagUnitsAt"));
  exports.Set("sealBatch", Napi::Function::New(env, batch_js<true>, "sealBatch"));
  exports.Set("openBatch", Napi::Function::New(env, batch_js<false>, "openBatch"));
}

}  // namespace ferry
