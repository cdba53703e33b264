#pragma once
// Philox4x32-10 blocks many at a time on the CPU: the same words as philox4x32_10
// (bodies/philox.h), with AVX2 where the CPU has it and portable code otherwise. Torch-free.
#include <cstdint>

namespace genesis {
namespace cpu {

// Whether the hand-written AVX2 paths run: where the CPU has AVX2, unless the environment
// variable GENESIS_OPS_NO_AVX2 is set (tests use it to check the portable paths on AVX2 machines).
bool use_avx2();

// out[q][l] = word q of philox4x32_10(block[l], stream[l], sample, purpose) with key seed, for
// l < n <= kLanes.
constexpr int kLanes = 256;
void philox_lanes(int n, const uint32_t* block, const uint32_t* stream, uint32_t sample, uint32_t purpose,
                  uint64_t seed, uint32_t (*out)[kLanes]);

// Blocks block0 .. block0 + 7 of one stream, in voxel order: out[4 * l + q] = word q of block
// block0 + l (32 words).
void philox8(uint32_t block0, uint32_t stream, uint32_t sample, uint32_t purpose, uint64_t seed, uint32_t* out);

}  // namespace cpu
}  // namespace genesis
