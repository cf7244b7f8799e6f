#include "gcm.h"

#include <cstring>
#include <initializer_list>
#include <new>

#include "gcm_evp.h"
#include "gcm_vaes.h"
#include "wipe.h"

namespace ferry::gcm {

const char* impl_name(Impl impl) {
  switch (impl) {
    case Impl::kVaesAvx512:
      return "vaes-avx512";
    case Impl::kVaesAvx2:
      return "vaes-avx2";
    case Impl::kEvp:
      break;
  }
  return "evp";
}

bool parse_impl(const char* name, Impl* impl) {
  for (Impl candidate : kImpls) {
    if (std::strcmp(name, impl_name(candidate)) == 0) {
      *impl = candidate;
      return true;
    }
  }
  return false;
}

bool impl_available(Impl impl) {
  switch (impl) {
    case Impl::kVaesAvx512:
      return vaes512_supported();
    case Impl::kVaesAvx2:
      return vaes_supported();
    case Impl::kEvp:
      break;
  }
  return evp_supported();
}

bool best_impl(Impl* impl) {
  // Measured (docs/crypto.md): VAES on 256-bit registers is about 1.7x EVP on Zen 3, which has
  // no AVX-512; on 512-bit registers it is faster again where the CPU has them.
  for (Impl candidate : kImpls) {
    if (impl_available(candidate)) {
      *impl = candidate;
      return true;
    }
  }
  return false;
}

std::unique_ptr<Key> Key::create(const uint8_t raw[kKeyBytes], Impl impl) {
  if (!impl_available(impl)) return nullptr;
  std::unique_ptr<Key> key(new Key(impl));
  if (impl != Impl::kEvp) {
    key->vaes_ = new (std::align_val_t{alignof(VaesKey)}) VaesKey;
    vaes_expand(key->vaes_, raw);
  } else {
    std::memcpy(key->raw_, raw, kKeyBytes);
  }
  return key;
}

Key::~Key() {
  wipe(raw_, sizeof raw_);
  if (vaes_ != nullptr) {
    wipe(vaes_, sizeof *vaes_);
    ::operator delete (vaes_, std::align_val_t{alignof(VaesKey)});
  }
}

Context::Context(const Key& key) : key_(key) {
  if (key.impl_ == Impl::kEvp) evp_ = evp_context_new(key.raw_);
}

Context::~Context() { evp_context_free(evp_); }

Status Context::seal(const Job& job) {
  if (key_.impl_ == Impl::kVaesAvx512) {
    vaes512_seal(*key_.vaes_, job);
    return Status::kOk;
  }
  if (key_.impl_ == Impl::kVaesAvx2) {
    vaes_seal(*key_.vaes_, job);
    return Status::kOk;
  }
  if (evp_ == nullptr) return Status::kInternal;
  return evp_seal(evp_, job);
}

void wipe_output(const Job& job, size_t len) {
  if (job.out_segments == nullptr) {
    wipe(job.out, len);
    return;
  }
  for (size_t i = 0; i < job.out_segment_count && len != 0; i++) {
    const size_t n = job.out_segments[i].len < len ? job.out_segments[i].len : len;
    wipe(job.out_segments[i].data, n);
    len -= n;
  }
}

Status Context::ctr(const uint8_t* iv, uint64_t offset, const uint8_t* in, uint8_t* out, size_t len) {
  if (key_.impl_ == Impl::kEvp) return evp_ctr(key_.raw_, iv, offset, in, out, len);
  vaes_ctr(*key_.vaes_, iv, offset, in, out, len);
  return Status::kOk;
}

Status Context::open(const Job& job) {
  if (job.in_len < kTagBytes) return Status::kAuthFailed;
  if (key_.impl_ == Impl::kVaesAvx512) return vaes512_open(*key_.vaes_, job) ? Status::kOk : Status::kAuthFailed;
  if (key_.impl_ == Impl::kVaesAvx2) return vaes_open(*key_.vaes_, job) ? Status::kOk : Status::kAuthFailed;
  if (evp_ == nullptr) return Status::kInternal;
  return evp_open(evp_, job);
}

}  // namespace ferry::gcm
