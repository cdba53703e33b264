#pragma once
// Philox4x32-10 blocks many at a time on the CPU: the same words as philox4x32_10
// (bodies/philox.h), with AVX-512 or AVX2 where the CPU has them and portable code otherwise. Torch-free.
#include <cstdint>

namespace genesis {
namespace cpu {

// Whether the hand-written AVX2 paths run: where the CPU has AVX2, unless the environment
// variable GENESIS_OPS_NO_AVX2 is set (tests use it to check the portable paths on AVX2 machines).
bool use_avx2();
// Whether the AVX-512 paths run (16 lanes): where use_avx2() and the CPU has AVX-512F, unless
// GENESIS_OPS_NO_AVX512 is set (tests use it to check the AVX2 paths on AVX-512 machines).
bool use_avx512();

// out[q][l] = word q of philox4x32_10(block[l], stream[l], sample, purpose) with key seed, for
// l < n <= kLanes.
constexpr int kLanes = 256;
void philox_lanes(int n, const uint32_t* block, const uint32_t* stream, uint32_t sample, uint32_t purpose,
                  uint64_t seed, uint32_t (*out)[kLanes]);

// Blocks block0 .. block0 + 7 of one stream, in voxel order: out[4 * l + q] = word q of block
// block0 + l (32 words).
void philox8(uint32_t block0, uint32_t stream, uint32_t sample, uint32_t purpose, uint64_t seed, uint32_t* out);
// The same for block0 .. block0 + 15 (64 words): one AVX-512 pass, or two of philox8.
void philox16(uint32_t block0, uint32_t stream, uint32_t sample, uint32_t purpose, uint64_t seed, uint32_t* out);

}  // namespace cpu
}  // namespace genesis
