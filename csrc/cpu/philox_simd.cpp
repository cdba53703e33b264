// Philox4x32-10 many blocks at a time on the CPU (see philox_simd.h).
#include "cpu/philox_simd.h"

#include <algorithm>
#include <cstdlib>

#if defined(__x86_64__)
#include <immintrin.h>
// GCC 12's AVX-512 intrinsics trip -W(maybe-)uninitialized on their own _mm512_undefined_*
// values where they are inlined, so for the rest of this file.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "bodies/philox.h"

namespace genesis {
namespace cpu {
namespace {

// The AVX2 versions hold 8 lanes per vector. They are written with intrinsics because the
// compiler's own vectorisation of the 32x32->64-bit products reorders halves between vectors
// with shuffles (half the speed).
#if defined(__x86_64__)
// hi and lo halves of the products a[i] * m of 8 32-bit lanes: vpmuludq multiplies the even
// lanes (64-bit products), so the odd lanes are shifted down first, and blends put each half
// back into its lane.
__attribute__((target("avx2"))) inline void mulhilo_avx2(__m256i a, __m256i m, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(a, m), odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

__attribute__((target("avx2"))) void philox_lanes_avx2(int n, const uint32_t* block, const uint32_t* stream,
                                                       uint32_t sample, uint32_t purpose, uint64_t seed,
                                                       uint32_t (*out)[kLanes]) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u)),
                m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  constexpr int G = 4;  // independent vectors per iteration, to hide the multiplies' latency
  for (int l0 = 0; l0 < n; l0 += 8 * G) {
    // A partial group (the tail) is padded with zero counters, computed but not stored.
    const bool full = l0 + 8 * G <= n;
    uint32_t b[8 * G], s[8 * G], w[4][8 * G];
    if (!full) {
      std::fill(std::copy(block + l0, block + n, b), b + 8 * G, 0u);
      std::fill(std::copy(stream + l0, stream + n, s), s + 8 * G, 0u);
    }
    const uint32_t* bp = full ? block + l0 : b;
    const uint32_t* sp = full ? stream + l0 : s;
    __m256i c0[G], c1[G], c2[G], c3[G];
    for (int g = 0; g < G; ++g) {
      c0[g] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + 8 * g));
      c1[g] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sp + 8 * g));
      c2[g] = _mm256_set1_epi32(static_cast<int>(sample));
      c3[g] = _mm256_set1_epi32(static_cast<int>(purpose));
    }
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < 10; ++round) {
      const __m256i vk0 = _mm256_set1_epi32(static_cast<int>(k0)), vk1 = _mm256_set1_epi32(static_cast<int>(k1));
      for (int g = 0; g < G; ++g) {
        __m256i hi0, lo0, hi1, lo1;
        mulhilo_avx2(c0[g], m0, hi0, lo0);
        mulhilo_avx2(c2[g], m1, hi1, lo1);
        c0[g] = _mm256_xor_si256(_mm256_xor_si256(hi1, c1[g]), vk0);
        c2[g] = _mm256_xor_si256(_mm256_xor_si256(hi0, c3[g]), vk1);
        c1[g] = lo1;
        c3[g] = lo0;
      }
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    for (int g = 0; g < G; ++g) {
      const __m256i c[4] = {c0[g], c1[g], c2[g], c3[g]};
      for (int q = 0; q < 4; ++q)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(full ? out[q] + l0 + 8 * g : w[q] + 8 * g), c[q]);
    }
    if (!full)
      for (int q = 0; q < 4; ++q) std::copy(w[q], w[q] + (n - l0), out[q] + l0);
  }
}
#endif

// Philox blocks block0 .. block0 + 7 of one stream (same values as philox4x32_10): the fill
// noise of a row needs runs of consecutive blocks, too few for philox_lanes' groups of 32.
// out[4 * l + q] = word q of block block0 + l, i.e. the words in the order of their voxels.
#if defined(__x86_64__)
__attribute__((target("avx2"))) void philox8_avx2(uint32_t block0, uint32_t stream, uint32_t sample, uint32_t purpose,
                                                  uint64_t seed, uint32_t* out) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(block0)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256i c1 = _mm256_set1_epi32(static_cast<int>(stream));
  __m256i c2 = _mm256_set1_epi32(static_cast<int>(sample));
  __m256i c3 = _mm256_set1_epi32(static_cast<int>(purpose));
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    __m256i hi0, lo0, hi1, lo1;
    mulhilo_avx2(c0, m0, hi0, lo0);
    mulhilo_avx2(c2, m1, hi1, lo1);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
    c1 = lo1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  // Transpose (word q of lane l) to voxel order: blocks (0,4), (1,5), ... per 128-bit half first.
  const __m256i t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpackhi_epi32(c0, c1);
  const __m256i t2 = _mm256_unpacklo_epi32(c2, c3), t3 = _mm256_unpackhi_epi32(c2, c3);
  const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
  const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
  __m256i* o = reinterpret_cast<__m256i*>(out);
  _mm256_storeu_si256(o + 0, _mm256_permute2x128_si256(u0, u1, 0x20));
  _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(u2, u3, 0x20));
  _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(u0, u1, 0x31));
  _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(u2, u3, 0x31));
}
#endif

#if defined(__x86_64__)
// The AVX-512 versions: the same rounds on 16 lanes per vector (twice the AVX2 throughput where
// the CPU has AVX-512F).
__attribute__((target("avx512f"))) inline void mulhilo_avx512(__m512i a, __m512i m, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(a, m), odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

// Ten rounds on G groups of 16 counters (c0..c3), keyed by seed.
template <int G>
__attribute__((target("avx512f"))) inline void rounds_avx512(__m512i* c0, __m512i* c1, __m512i* c2, __m512i* c3,
                                                             uint64_t seed) {
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(0xD2511F53u)),
                m1 = _mm512_set1_epi32(static_cast<int>(0xCD9E8D57u));
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const __m512i vk0 = _mm512_set1_epi32(static_cast<int>(k0)), vk1 = _mm512_set1_epi32(static_cast<int>(k1));
    for (int g = 0; g < G; ++g) {
      __m512i hi0, lo0, hi1, lo1;
      mulhilo_avx512(c0[g], m0, hi0, lo0);
      mulhilo_avx512(c2[g], m1, hi1, lo1);
      c0[g] = _mm512_xor_si512(_mm512_xor_si512(hi1, c1[g]), vk0);
      c2[g] = _mm512_xor_si512(_mm512_xor_si512(hi0, c3[g]), vk1);
      c1[g] = lo1;
      c3[g] = lo0;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

__attribute__((target("avx512f"))) void philox_lanes_avx512(int n, const uint32_t* block, const uint32_t* stream,
                                                            uint32_t sample, uint32_t purpose, uint64_t seed,
                                                            uint32_t (*out)[kLanes]) {
  constexpr int G = 4;  // independent vectors per iteration, to hide the multiplies' latency
  for (int l0 = 0; l0 < n; l0 += 16 * G) {
    __m512i c0[G], c1[G], c2[G], c3[G];
    __mmask16 live[G];  // lanes below n: lanes past it (the tail) are zero counters, computed but not stored
    for (int g = 0; g < G; ++g) {
      const int left = n - l0 - 16 * g;
      live[g] = left >= 16 ? __mmask16(0xFFFF) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1);
      c0[g] = _mm512_maskz_loadu_epi32(live[g], block + l0 + 16 * g);
      c1[g] = _mm512_maskz_loadu_epi32(live[g], stream + l0 + 16 * g);
      c2[g] = _mm512_set1_epi32(static_cast<int>(sample));
      c3[g] = _mm512_set1_epi32(static_cast<int>(purpose));
    }
    rounds_avx512<G>(c0, c1, c2, c3, seed);
    for (int g = 0; g < G; ++g) {
      const __m512i c[4] = {c0[g], c1[g], c2[g], c3[g]};
      for (int q = 0; q < 4; ++q) _mm512_mask_storeu_epi32(out[q] + l0 + 16 * g, live[g], c[q]);
    }
  }
}

// Blocks block0 .. block0 + 15 of one stream, in voxel order (as philox8_avx2, 16 blocks).
__attribute__((target("avx512f"))) void philox16_avx512(uint32_t block0, uint32_t stream, uint32_t sample,
                                                        uint32_t purpose, uint64_t seed, uint32_t* out) {
  __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(block0)),
                                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  __m512i c1 = _mm512_set1_epi32(static_cast<int>(stream));
  __m512i c2 = _mm512_set1_epi32(static_cast<int>(sample));
  __m512i c3 = _mm512_set1_epi32(static_cast<int>(purpose));
  rounds_avx512<1>(&c0, &c1, &c2, &c3, seed);
  // Transpose (word q of lane l) to voxel order. Within each 128-bit quarter first: u0 holds
  // blocks 0, 4, 8, 12 (one per quarter), u1 blocks 1, 5, 9, 13, u2 2, 6, 10, 14, u3 3, 7, 11, 15;
  // then the quarters, by two shuffles of 128-bit lanes.
  const __m512i t0 = _mm512_unpacklo_epi32(c0, c1), t1 = _mm512_unpackhi_epi32(c0, c1);
  const __m512i t2 = _mm512_unpacklo_epi32(c2, c3), t3 = _mm512_unpackhi_epi32(c2, c3);
  const __m512i u0 = _mm512_unpacklo_epi64(t0, t2), u1 = _mm512_unpackhi_epi64(t0, t2);
  const __m512i u2 = _mm512_unpacklo_epi64(t1, t3), u3 = _mm512_unpackhi_epi64(t1, t3);
  const __m512i a = _mm512_shuffle_i32x4(u0, u1, 0x88), b = _mm512_shuffle_i32x4(u2, u3, 0x88);  // 0 8 1 9, 2 10 3 11
  const __m512i c = _mm512_shuffle_i32x4(u0, u1, 0xDD), d = _mm512_shuffle_i32x4(u2, u3, 0xDD);  // 4 12 5 13, 6 14 7 15
  _mm512_storeu_si512(out + 0, _mm512_shuffle_i32x4(a, b, 0x88));                                // blocks 0..3
  _mm512_storeu_si512(out + 16, _mm512_shuffle_i32x4(c, d, 0x88));                               // 4..7
  _mm512_storeu_si512(out + 32, _mm512_shuffle_i32x4(a, b, 0xDD));                               // 8..11
  _mm512_storeu_si512(out + 48, _mm512_shuffle_i32x4(c, d, 0xDD));                               // 12..15
}
#endif

}  // namespace

bool use_avx2() {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2") && std::getenv("GENESIS_OPS_NO_AVX2") == nullptr;
  return avx2;
#else
  return false;
#endif
}

bool use_avx512() {
#if defined(__x86_64__)
  static const bool avx512 =
      use_avx2() && __builtin_cpu_supports("avx512f") && std::getenv("GENESIS_OPS_NO_AVX512") == nullptr;
  return avx512;
#else
  return false;
#endif
}

void philox_lanes(int n, const uint32_t* block, const uint32_t* stream, uint32_t sample, uint32_t purpose,
                  uint64_t seed, uint32_t (*out)[kLanes]) {
#if defined(__x86_64__)
  if (use_avx512()) return philox_lanes_avx512(n, block, stream, sample, purpose, seed, out);
  if (use_avx2()) return philox_lanes_avx2(n, block, stream, sample, purpose, seed, out);
#endif
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int l = 0; l < n; ++l) {
    const Words4 w = philox4x32_10(block[l], stream[l], sample, purpose, k0, k1);
    for (int q = 0; q < 4; ++q) out[q][l] = w.w[q];
  }
}

void philox8(uint32_t block0, uint32_t stream, uint32_t sample, uint32_t purpose, uint64_t seed, uint32_t* out) {
#if defined(__x86_64__)
  if (use_avx2()) return philox8_avx2(block0, stream, sample, purpose, seed, out);
#endif
  const Stream s(seed, sample, purpose, stream);
  for (int l = 0; l < 8; ++l) {
    const Words4 w = s.block(block0 + static_cast<uint32_t>(l));
    for (int q = 0; q < 4; ++q) out[4 * l + q] = w.w[q];
  }
}

void philox16(uint32_t block0, uint32_t stream, uint32_t sample, uint32_t purpose, uint64_t seed, uint32_t* out) {
#if defined(__x86_64__)
  if (use_avx512()) return philox16_avx512(block0, stream, sample, purpose, seed, out);
#endif
  philox8(block0, stream, sample, purpose, seed, out);
  philox8(block0 + 8, stream, sample, purpose, seed, out + 32);
}

}  // namespace cpu
}  // namespace genesis
