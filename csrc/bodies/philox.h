#pragma once
// Philox4x32-10 (Salmon et al., SC'11), the counter-based generator used by cuRAND and by
// torch's CUDA generator. Every random number of genesis-ops is one 32-bit word of
//   philox(counter = (index / 4, stream, sample, purpose), key = (seed_lo, seed_hi))[index % 4]
// so any word can be computed independently on any device, in any order.
#include "bodies/host_device.h"

namespace genesis {

struct Words4 {
  uint32_t w[4];
};

GENESIS_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

GENESIS_HD Words4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(M0, c0, hi0, lo0);
    mulhilo32(M1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += W0;
    k1 += W1;
  }
  return Words4{{c0, c1, c2, c3}};
}

// What each group of random words is for (the last counter word). Changing these values
// changes every result: they are part of the reproducibility contract (docs/SPEC.md, section 3.3).
enum Purpose : uint32_t {
  kFlip = 1,           // stream 0: flip continue/axis draws
  kShuffleGate = 2,    // stream 0: word 0 = gate
  kShuffleWindow = 3,  // stream k: geometry of window k
  kShufflePerm = 4,    // stream k: Fisher-Yates draws of window k
  kNonlinear = 5,      // stream 0: gate, P1x, P1y, P2x, P2y, direction
  kPaint = 6,          // stream 0: paint gate, in-vs-out choice
  kInpaint = 7,        // stream 0: gate, then boxes
  kOutpaint = 8,       // stream 0: gate, then windows
  kNoise = 9,          // stream c (channel), index = spatial voxel index
};

// One random stream: (seed, sample, purpose, stream) fixed, words addressed by index.
struct Stream {
  uint32_t k0, k1, sample, purpose, stream;

  GENESIS_HD Stream(uint64_t seed, uint32_t sample_, uint32_t purpose_, uint32_t stream_)
      : k0(static_cast<uint32_t>(seed)),
        k1(static_cast<uint32_t>(seed >> 32)),
        sample(sample_),
        purpose(purpose_),
        stream(stream_) {}

  GENESIS_HD Words4 block(uint32_t block_index) const {
    return philox4x32_10(block_index, stream, sample, purpose, k0, k1);
  }
  GENESIS_HD uint32_t word(uint32_t index) const { return block(index >> 2).w[index & 3u]; }
};

// Uniform in [0, 1) as a double: w / 2^32 (exact).
GENESIS_HD double uniform01(uint32_t w) { return static_cast<double>(w) * (1.0 / 4294967296.0); }

// Uniform float in [0, 1) with 24 random bits: (w >> 8) / 2^24 (exact).
GENESIS_HD float uniform01f(uint32_t w) { return static_cast<float>(w >> 8) * (1.0f / 16777216.0f); }

// Uniform integer in {0, ..., n-1} for 1 <= n <= 2^32: floor(w * n / 2^32) (Lemire's
// multiply-shift without rejection; the bias is below n / 2^32).
GENESIS_HD uint32_t uniform_below(uint32_t w, uint64_t n) {
  return static_cast<uint32_t>((static_cast<uint64_t>(w) * n) >> 32);
}

}  // namespace genesis
