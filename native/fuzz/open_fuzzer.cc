// libFuzzer harness for the open path, differential: every implementation built here must agree on
// every input, byte for byte, about whether it opens and what comes out; and what one seals, every
// other opens, unless one bit of it is flipped.
//
// Input layout: key (32) | iv (12) | aad length (1) | aad | sealed message (ciphertext | tag).
// Build and run: .ci/fuzz (clang -fsanitize=fuzzer,address,undefined, linked with libcrypto for EVP).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <vector>

#include "../gcm.h"

using ferry::gcm::Context;
using ferry::gcm::Impl;
using ferry::gcm::Job;
using ferry::gcm::Key;
using ferry::gcm::kIvBytes;
using ferry::gcm::kKeyBytes;
using ferry::gcm::kTagBytes;
using ferry::gcm::Status;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

std::vector<Impl> impls() {
  std::vector<Impl> out;
  for (Impl i : ferry::gcm::kImpls) {
    if (ferry::gcm::impl_available(i)) out.push_back(i);
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<Impl> available = impls();
  if (size < kKeyBytes + kIvBytes + 1) return 0;
  const uint8_t* key = data;
  const uint8_t* iv = data + kKeyBytes;
  size_t aad_len = data[kKeyBytes + kIvBytes];
  const uint8_t* rest = data + kKeyBytes + kIvBytes + 1;
  size_t rest_len = size - (kKeyBytes + kIvBytes + 1);
  if (aad_len > rest_len) aad_len = rest_len;
  // Exact-size heap copies, so AddressSanitizer sees any read past an end.
  std::vector<uint8_t> aad(rest, rest + aad_len);
  std::vector<uint8_t> message(rest + aad_len, rest + rest_len);

  int first_status = -1;
  std::vector<uint8_t> first_plain;
  std::vector<uint8_t> first_sealed;
  for (Impl impl : available) {
    std::unique_ptr<Key> k = Key::create(key, impl);
    check(k != nullptr);
    Context ctx(*k);

    // Open the message as given, into a separate buffer and in place.
    if (message.size() >= kTagBytes) {
      std::unique_ptr<uint8_t[]> in(new uint8_t[message.size()]);
      std::memcpy(in.get(), message.data(), message.size());
      std::unique_ptr<uint8_t[]> out(new uint8_t[message.size() - kTagBytes + 1]);
      const Job job{iv, aad.data(), aad.size(), in.get(), message.size(), out.get()};
      const Status s = ctx.open(job);
      check(s != Status::kInternal);
      std::vector<uint8_t> plain(out.get(), out.get() + message.size() - kTagBytes);
      if (s != Status::kOk) {
        for (uint8_t b : plain) check(b == 0);  // nothing of the plaintext is left
      }
      const Job in_place{iv, aad.data(), aad.size(), in.get(), message.size(), in.get()};
      check(ctx.open(in_place) == s);
      if (s == Status::kOk) check(std::equal(plain.begin(), plain.end(), in.get()));
      if (first_status < 0) {
        first_status = static_cast<int>(s);
        first_plain = plain;
      } else {
        check(first_status == static_cast<int>(s));
        if (s == Status::kOk) check(first_plain == plain);
      }
    }

    // Seal the message as plaintext: every implementation gives the same bytes, and they open.
    std::vector<uint8_t> sealed(message.size() + kTagBytes);
    check(ctx.seal(Job{iv, aad.data(), aad.size(), message.data(), message.size(), sealed.data()}) == Status::kOk);
    if (first_sealed.empty()) {
      first_sealed = sealed;
    } else {
      check(first_sealed == sealed);
    }
    // Sealed from segments cut where the input says (empty ones included): the same bytes.
    {
      size_t cut1 = 0, cut2 = 0;
      for (size_t i = 0; i < size; i++) cut1 = cut1 * 131 + data[i], cut2 = cut2 * 257 + data[i];
      cut1 %= message.size() + 1;
      cut2 %= message.size() + 1;
      if (cut2 < cut1) std::swap(cut1, cut2);
      const ferry::gcm::Segment parts[4] = {{message.data(), cut1},
                                            {message.data() + cut1, 0},
                                            {message.data() + cut1, cut2 - cut1},
                                            {message.data() + cut2, message.size() - cut2}};
      std::vector<uint8_t> gathered(message.size() + kTagBytes);
      Job job{iv, aad.data(), aad.size(), nullptr, message.size(), gathered.data()};
      job.segments = parts;
      job.segment_count = 4;
      check(ctx.seal(job) == Status::kOk);
      check(gathered == sealed);
    }
    std::vector<uint8_t> reopened(message.size() + 1);
    check(ctx.open(Job{iv, aad.data(), aad.size(), sealed.data(), sealed.size(), reopened.data()}) == Status::kOk);
    check(std::equal(message.begin(), message.end(), reopened.begin()));
    // Opened scattered over segments cut where the input says, each its own exact-size heap block
    // (empty ones included): the same plaintext; and ctr() of any range gives that range of it.
    {
      size_t cut1 = 0, cut2 = 0;
      for (size_t i = 0; i < size; i++) cut1 = cut1 * 137 + data[i], cut2 = cut2 * 263 + data[i];
      cut1 %= message.size() + 1;
      cut2 %= message.size() + 1;
      if (cut2 < cut1) std::swap(cut1, cut2);
      const size_t lens[4] = {cut1, 0, cut2 - cut1, message.size() - cut2};
      std::unique_ptr<uint8_t[]> pieces[4];
      ferry::gcm::OutSegment parts[4];
      for (int i = 0; i < 4; i++) {
        pieces[i].reset(new uint8_t[lens[i] + 1]);
        parts[i] = {pieces[i].get(), lens[i]};
      }
      Job job{iv, aad.data(), aad.size(), sealed.data(), sealed.size(), nullptr};
      job.out_segments = parts;
      job.out_segment_count = 4;
      check(ctx.open(job) == Status::kOk);
      size_t at = 0;
      for (int i = 0; i < 4; i++) {
        check(
            std::equal(pieces[i].get(), pieces[i].get() + lens[i], message.begin() + static_cast<std::ptrdiff_t>(at)));
        at += lens[i];
      }
      std::vector<uint8_t> peeked(cut2 - cut1);
      check(ctx.ctr(iv, cut1, sealed.data() + cut1, peeked.data(), peeked.size()) == Status::kOk);
      check(std::equal(peeked.begin(), peeked.end(), message.begin() + static_cast<std::ptrdiff_t>(cut1)));
      // A flipped tag bit: kAuthFailed, and every segment wiped.
      sealed[sealed.size() - 1] ^= 0x80;
      check(ctx.open(job) == Status::kAuthFailed);
      sealed[sealed.size() - 1] ^= 0x80;
      for (int i = 0; i < 4; i++) {
        for (size_t j = 0; j < lens[i]; j++) check(pieces[i][j] == 0);
      }
    }
    // One flipped bit anywhere in the sealed message fails, whichever bit the input picks.
    size_t bit = 0;
    for (size_t i = 0; i < size; i++) bit = bit * 31 + data[i];
    bit %= sealed.size() * 8;
    sealed[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    check(ctx.open(Job{iv, aad.data(), aad.size(), sealed.data(), sealed.size(), reopened.data()}) ==
          Status::kAuthFailed);
  }
  return 0;
}
