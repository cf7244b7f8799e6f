// AES-256-GCM with a 96-bit IV and a 128-bit tag, three implementations behind one interface:
//   vaes-avx512  ferry's own VAES + VPCLMULQDQ code on 512-bit registers (gcm_vaes.cc), for CPUs
//                with AVX-512 as well;
//   vaes-avx2    the same code on 256-bit registers, for CPUs with VAES and VPCLMULQDQ;
//   evp          OpenSSL's EVP, from the OpenSSL that Node itself exports (gcm_evp.cc).
// All produce the same bytes; the tests and the fuzzer cross-check them.
//
// This layer knows nothing of Node: the addon bindings and the fuzzer both build on it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace ferry::gcm {

constexpr size_t kKeyBytes = 32;
constexpr size_t kIvBytes = 12;
constexpr size_t kTagBytes = 16;

enum class Impl { kVaesAvx512, kVaesAvx2, kEvp };

// Every implementation, fastest first (docs/crypto.md has the measurements).
constexpr Impl kImpls[] = {Impl::kVaesAvx512, Impl::kVaesAvx2, Impl::kEvp};

const char* impl_name(Impl impl);
bool parse_impl(const char* name, Impl* impl);
// Built in and supported by this CPU.
bool impl_available(Impl impl);
// The fastest available implementation; false when there is none.
bool best_impl(Impl* impl);

// A piece of a gathered seal input.
struct Segment {
  const uint8_t* data;
  size_t len;
};

// A piece of a scattered open's output.
struct OutSegment {
  uint8_t* data;
  size_t len;
};

// One message. Seal: `out` receives in_len + 16 bytes (ciphertext, then tag). Open: `in` is
// ciphertext then tag (in_len >= 16) and `out` receives in_len - 16 bytes. `out` may be `in`
// itself (in place) but must not otherwise overlap it.
//
// A seal may instead gather its input from `segments` (in order, their lengths adding up to
// in_len; `in` is then ignored), so that a message made of a header and pages of guest memory is
// sealed where it lies, without first being copied together. `out` must not overlap any segment.
//
// An open may likewise scatter its plaintext over `out_segments` (in order, their lengths adding up
// to in_len - 16; `out` is then ignored), so that pages arriving in one message are opened straight
// into guest memory. The segments must not overlap `in` or each other.
struct Job {
  const uint8_t* iv;
  const uint8_t* aad;
  size_t aad_len;
  const uint8_t* in;
  size_t in_len;
  uint8_t* out;
  const Segment* segments = nullptr;
  size_t segment_count = 0;
  const OutSegment* out_segments = nullptr;
  size_t out_segment_count = 0;
};

// Zeroes what an open of `job` wrote (its `out`, or every one of its out_segments), `len` bytes in all.
void wipe_output(const Job& job, size_t len);

enum class Status { kOk, kAuthFailed, kInternal };

struct VaesKey;
struct EvpContext;

// An imported key: immutable once made, so any number of threads may use it at once, each through
// its own Context. The destructor wipes every copy of the key and its schedule.
class Key {
 public:
  // Null when `impl` is not available here.
  static std::unique_ptr<Key> create(const uint8_t raw[kKeyBytes], Impl impl);
  ~Key();
  Key(const Key&) = delete;
  Key& operator=(const Key&) = delete;

  Impl impl() const { return impl_; }

 private:
  friend class Context;
  explicit Key(Impl impl) : impl_(impl) {}

  Impl impl_;
  uint8_t raw_[kKeyBytes] = {};
  VaesKey* vaes_ = nullptr;
};

// One thread's use of a Key (the EVP implementation needs a context per thread).
class Context {
 public:
  explicit Context(const Key& key);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  Status seal(const Job& job);
  // kAuthFailed when the tag does not verify; `out` is then wiped.
  Status open(const Job& job);
  // The counter-mode half of an open without its tag check: decrypts `len` bytes of ciphertext
  // that stand at byte `offset` of a message under `iv` (in: those bytes) into `out`. What comes
  // out is NOT authenticated; a caller may only use it to decide where the message's authenticated
  // open will put its plaintext (docs/protocol.md, "Opening in place"). offset + len <= 2^36 - 32.
  Status ctr(const uint8_t* iv, uint64_t offset, const uint8_t* in, uint8_t* out, size_t len);

 private:
  const Key& key_;
  EvpContext* evp_ = nullptr;
};

}  // namespace ferry::gcm
