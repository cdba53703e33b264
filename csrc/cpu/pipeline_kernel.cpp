// CPU kernels of every genesis op. All ops run the one pipeline engine with their own stage
// probabilities (see op_common.h), so the fused pipeline equals the composition of the single
// ops by construction. Work is parallel over samples (parameters, curve tables, shuffle maps)
// and over rows of voxels (values), and every voxel is a pure function of its coordinates, so
// results do not depend on the thread count.
#include <algorithm>
#include <atomic>
#include <limits>
#include <numeric>

#include <cstdlib>

#if defined(__x86_64__)
#include <immintrin.h>
// An AVX2 copy of a function, picked at load time where the CPU has AVX2.
#define GENESIS_AVX2_CLONE __attribute__((target_clones("avx2", "default")))
#else
#define GENESIS_AVX2_CLONE
#endif

#include "kernels/launch_bodies.h"
#include "op_common.h"

namespace genesis {
namespace {

// Whether the hand-written AVX2 paths run: where the CPU has AVX2, unless the environment
// variable GENESIS_OPS_NO_AVX2 is set (tests use it to check the portable paths on AVX2 machines).
bool use_avx2() {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2") && std::getenv("GENESIS_OPS_NO_AVX2") == nullptr;
  return avx2;
#else
  return false;
#endif
}

// Philox blocks of many counters at once: out[q][l] = word q of philox4x32_10(block[l],
// stream[l], sample, purpose) with key seed. On x86-64 CPUs with AVX2, 8 lanes per vector.
// Written with intrinsics because the compiler's own vectorisation of the 32x32->64-bit
// products reorders halves between vectors with shuffles (half the speed).
constexpr int kLanes = 256;

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
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u)), m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
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

void philox_lanes(int n, const uint32_t* block, const uint32_t* stream, uint32_t sample, uint32_t purpose,
                  uint64_t seed, uint32_t (*out)[kLanes]) {
#if defined(__x86_64__)
  if (use_avx2()) return philox_lanes_avx2(n, block, stream, sample, purpose, seed, out);
#endif
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int l = 0; l < n; ++l) {
    const Words4 w = philox4x32_10(block[l], stream[l], sample, purpose, k0, k1);
    for (int q = 0; q < 4; ++q) out[q][l] = w.w[q];
  }
}

// Philox blocks block0 .. block0 + 7 of one stream (same values as philox4x32_10): the fill
// noise of a row needs runs of consecutive blocks, too few for philox_lanes' groups of 32.
// out[4 * l + q] = word q of block block0 + l, i.e. the words in the order of their voxels.
#if defined(__x86_64__)
__attribute__((target("avx2"))) void philox8_avx2(uint32_t block0, uint32_t stream, uint32_t sample,
                                                  uint32_t purpose, uint64_t seed, uint32_t* out) {
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

// All shuffle windows of a sample (same as shuffle_window, batched).
void shuffle_windows(const PipelineConfig& cfg, const Shape& shape, uint32_t sample, std::vector<Box>& windows) {
  const int64_t K = cfg.num_windows;
  windows.resize(static_cast<size_t>(K));
  const int blocks = shape.nd == 3 ? 2 : 1;  // 2 nd words
  uint32_t block[kLanes], stream[kLanes], out[4][kLanes];
  const int per_chunk = kLanes / blocks;
  for (int64_t k0 = 0; k0 < K; k0 += per_chunk) {
    const int n = static_cast<int>(std::min<int64_t>(per_chunk, K - k0));
    for (int i = 0; i < n; ++i)
      for (int q = 0; q < blocks; ++q) {
        block[i * blocks + q] = static_cast<uint32_t>(q);
        stream[i * blocks + q] = static_cast<uint32_t>(k0 + i);
      }
    philox_lanes(n * blocks, block, stream, sample, kShuffleWindow, cfg.seed, out);
    for (int i = 0; i < n; ++i) {
      uint32_t w[8];
      for (int q = 0; q < blocks; ++q)
        for (int j = 0; j < 4; ++j) w[4 * q + j] = out[j][i * blocks + q];
      windows[k0 + i] = window_from_words(w, shape);
    }
  }
}

// Local pixel shuffling on the CPU: src[v] = the voxel (in target coordinates) that voxel v
// receives; the last window covering a voxel owns it. The GPU evaluates one entry of the
// owner's Fisher-Yates permutation per voxel (fisher_yates_entry); here each window that owns
// voxels runs its permutation once. Tests check that both agree. Two passes:
//  1. Claims, from the last window back, in a bitmap (one bit per voxel, rows (z, y) of 64-bit
//     words): a window's row segment costs a few word operations, with no branch per voxel,
//     and the bitmap of a 64x64x32 volume (32 KB) stays in L1. They tell, per window, whether
//     it owns voxels and pmin, its smallest owned local position.
//  2. Permutations, from the first window on, each writing src for its positions >= pmin:
//     later windows overwrite earlier ones, so the last write to a voxel is its owner's, and
//     no write needs a per-voxel ownership test.
// a[p] is final after step p (later steps only touch positions below p), and only owned
// positions matter, so a window runs steps n-1 down to max(1, pmin) only and draws Philox
// blocks only for those. The positions it writes but does not own belong to later windows,
// which overwrite them.
// Windows are tiny (sides 1..dim/10) and of random shapes, so every loop whose length depends
// on the window, and every branch on the data, tends to be mispredicted: the code below keeps
// to few loops per window and to conditional moves (measured: that, not the arithmetic, was
// most of the time).
struct ShuffleScratch {
  std::vector<Box> windows;
  std::vector<uint64_t> taken;  // claim bitmap: bit x % 64 of word x / 64 of row (z, y)
  std::vector<uint32_t> first;  // per window: max(1, pmin), or 0 if it owns no voxel
  std::vector<uint32_t> batch;  // windows of the current Philox batch
  std::vector<uint32_t> lane_block, lane_stream, words;  // Philox lanes of the batch (block, stream)
  uint32_t lanes = 0;                                    // and how many are used
  std::vector<int32_t> perm;
  // Spatial offsets of the voxels of window shapes (sz, sy, sx) from their first voxel, in
  // row-major order, built when a shape first occurs: offsets[shape_begin[id] + p], -1 if not
  // built yet.
  std::vector<int32_t> offsets;
  std::vector<int32_t> shape_begin;
};

// Windows are permuted in batches that need about this many Philox blocks: enough for full
// vector passes of philox_lanes, few enough that words and permutations stay in L1/L2.
constexpr uint32_t kShuffleBatchLanes = 1024;
constexpr uint32_t kNoClaim = ~0u;  // larger than any local position

// Calls fn(r, row) for the rows of window w in row-major order: r = 0, 1, ... and row = z * H
// + y. One loop, with y wrapping to the next plane by a conditional move: windows are tiny
// (1..dim/10 per side) and of random shapes, so every loop exit is likely mispredicted, and
// nested loops over z and y would pay that once per plane.
template <typename Fn>
inline void for_window_rows(const Shape& shape, const Box& w, Fn&& fn) {
  const int32_t H = static_cast<int32_t>(shape.dim[1]), sy = w.size[1], rows = w.size[0] * sy;
  int32_t row = w.start[0] * H + w.start[1], y = 0;
  for (int32_t r = 0; r < rows; ++r) {
    fn(r, row);
    // With masks, not `wrap ? .. : ..`, which the compiler turns into a branch.
    const int32_t wrap = -static_cast<int32_t>(++y == sy);  // all ones at the plane's last row
    y &= ~wrap;
    row += 1 + (wrap & (H - sy));
  }
}

// Offsets of window w's voxels from its first voxel, in row-major order (local position p ->
// offsets[p]), shared by all windows of its shape: one flat loop over a window's voxels then
// replaces loops over its rows and columns, whose exits (random per window) mispredict.
const int32_t* window_offsets(const Shape& shape, const Box& w, ShuffleScratch& sc) {
  const int64_t max_y = std::max<int64_t>(1, shape.dim[1] / 10), max_x = std::max<int64_t>(1, shape.dim[2] / 10);
  const int64_t id = ((w.size[0] - 1) * max_y + (w.size[1] - 1)) * max_x + (w.size[2] - 1);
  int32_t& begin = sc.shape_begin[id];
  if (begin < 0) {
    begin = static_cast<int32_t>(sc.offsets.size());
    sc.offsets.resize(sc.offsets.size() + w.volume());
    const int32_t H = static_cast<int32_t>(shape.dim[1]), W = static_cast<int32_t>(shape.dim[2]);
    int32_t* off = sc.offsets.data() + begin;
    for (int32_t z = 0; z < w.size[0]; ++z)
      for (int32_t y = 0; y < w.size[1]; ++y)
        for (int32_t x = 0; x < w.size[2]; ++x) *off++ = (z * H + y) * W + x;
  }
  return sc.offsets.data() + begin;
}

// Bits [lo, hi) of a 64-bit word, 0 <= lo <= hi <= 64.
inline uint64_t bit_range(int32_t lo, int32_t hi) {
  const uint64_t below_hi = hi >= 64 ? ~uint64_t{0} : (uint64_t{1} << hi) - 1;
  return lo >= 64 ? 0 : below_hi & (~uint64_t{0} << lo);
}

// Claims the voxels of window w that no later window took: sets their bits in `taken` (rows
// of row_words words). Returns pmin, the smallest local position it claimed, or kNoClaim.
uint32_t claim_window(const Shape& shape, const Box& w, uint64_t* taken, int32_t row_words) {
  const int32_t x0 = w.start[2], sx = w.size[2], j0 = x0 / 64, b0 = x0 % 64;
  uint32_t pmin = kNoClaim;
  // Row r's smallest fresh position, given its fresh bits from bit 0 = voxel x0.
  // Branch-free: whether a row has fresh voxels is random, so a branch would often be mispredicted.
  const auto row_min = [&](int32_t r, uint64_t fresh) {
    const uint32_t none = -static_cast<uint32_t>(fresh == 0);  // all ones (kNoClaim) if no fresh voxel
    pmin = std::min(pmin, (static_cast<uint32_t>(r * sx) + static_cast<uint32_t>(__builtin_ctzll(fresh | 1))) | none);
  };
  if (b0 + sx <= 64) {  // the row segment lies in one word (always where W <= 64)
    const uint64_t m = bit_range(b0, b0 + sx);
    for_window_rows(shape, w, [&](int32_t r, int32_t row) {
      uint64_t& t = taken[static_cast<int64_t>(row) * row_words + j0];
      row_min(r, (m & ~t) >> b0);
      t |= m;
    });
  } else if (sx <= 64) {  // in words j0 and j0 + 1
    const uint64_t m0 = bit_range(b0, 64), m1 = bit_range(0, b0 + sx - 64);
    for_window_rows(shape, w, [&](int32_t r, int32_t row) {
      uint64_t* t = taken + static_cast<int64_t>(row) * row_words + j0;
      row_min(r, (m0 & ~t[0]) >> b0 | (m1 & ~t[1]) << (64 - b0));  // b0 > 0 here
      t[0] |= m0;
      t[1] |= m1;
    });
  } else {  // wide windows (W >= 650): word by word
    const int32_t j1 = (x0 + sx - 1) / 64;
    for_window_rows(shape, w, [&](int32_t r, int32_t row) {
      uint64_t* t = taken + static_cast<int64_t>(row) * row_words;
      for (int32_t j = j1; j >= j0; --j) {  // downwards: the last pmin update is the row's smallest
        const uint64_t m = bit_range(std::max(x0 - 64 * j, 0), std::min(x0 + sx - 64 * j, 64));
        const uint64_t fresh = m & ~t[j];
        t[j] |= m;
        if (fresh != 0) pmin = std::min(pmin, static_cast<uint32_t>(r * sx + 64 * j + __builtin_ctzll(fresh) - x0));
      }
    });
  }
  return pmin;
}

// Permutes the windows in sc.batch, in order: Philox words of all their steps (one vectorised
// pass), then per window steps n-1 .. first on the spatial indices of its voxels (a[p] is a
// voxel, not a position), each final entry written to src as it is decided.
void permute_batch(const PipelineConfig& cfg, const Shape& shape, uint32_t sample, int32_t* src, ShuffleScratch& sc) {
  const uint32_t lanes = sc.lanes;
  sc.words.resize(4 * static_cast<size_t>(lanes));
  uint32_t* words = sc.words.data();
  uint32_t out[4][kLanes];
  for (uint32_t l0 = 0; l0 < lanes; l0 += kLanes) {
    const int n = static_cast<int>(std::min<uint32_t>(kLanes, lanes - l0));
    philox_lanes(n, sc.lane_block.data() + l0, sc.lane_stream.data() + l0, sample, kShufflePerm, cfg.seed, out);
    for (int l = 0; l < n; ++l)
      for (int q = 0; q < 4; ++q) words[4 * (l0 + l) + q] = out[q][l];
  }
  const uint32_t* wd = words;  // word i of the current window: wd[i - (first & ~3)]
  const int32_t H = static_cast<int32_t>(shape.dim[1]), W = static_cast<int32_t>(shape.dim[2]);
  for (const uint32_t k : sc.batch) {
    const Box& w = sc.windows[k];
    const uint32_t n = static_cast<uint32_t>(w.volume()), first = sc.first[k], base = first & ~3u;
    const int32_t* off = window_offsets(shape, w, sc);
    const int32_t v0 = (w.start[0] * H + w.start[1]) * W + w.start[2];
    if (sc.perm.size() < n) sc.perm.resize(n);
    int32_t* perm = sc.perm.data();
    for (uint32_t p = 0; p < n; ++p) perm[p] = v0 + off[p];
    // Step i makes a[i] final (later steps touch positions below i only), so it goes straight
    // to src and perm[i] is not stored. first >= 1: no wrap-around.
    for (uint32_t i = n - 1; i >= first; --i) {
      int32_t& pj = perm[uniform_below(wd[i - base], i + 1u)];
      src[v0 + off[i]] = pj;
      pj = perm[i];
    }
    // a[0] is final after step 1: needed where pmin = 0. Otherwise position 0 is a later
    // window's, which overwrites it, so it is written without a test.
    src[v0] = perm[0];
    if (first < n) wd += 4 * ((n - 1) / 4 + 1 - first / 4);
  }
  sc.batch.clear();
  sc.lanes = 0;
}

void shuffle_source_map(const PipelineConfig& cfg, const Shape& shape, int64_t b, int32_t* src, ShuffleScratch& sc) {
  const int64_t S = shape.spatial(), K = cfg.num_windows;
  const uint32_t sample = sample_index(cfg, b);
  shuffle_windows(cfg, shape, sample, sc.windows);
  // Voxels outside every window keep their place.
  for (int64_t v = 0; v < S; ++v) src[v] = static_cast<int32_t>(v);
  // 1. Claims, from the last window back.
  const int32_t row_words = static_cast<int32_t>((shape.dim[2] + 63) / 64);
  sc.taken.assign(static_cast<size_t>(shape.dim[0] * shape.dim[1] * row_words), 0);
  sc.first.resize(static_cast<size_t>(K));
  sc.offsets.clear();
  sc.shape_begin.assign(static_cast<size_t>(std::max<int64_t>(1, shape.dim[0] / 10) *
                                            std::max<int64_t>(1, shape.dim[1] / 10) *
                                            std::max<int64_t>(1, shape.dim[2] / 10)),
                        -1);
  for (int64_t k = K - 1; k >= 0; --k) {
    const uint32_t pmin = claim_window(shape, sc.windows[k], sc.taken.data(), row_words);
    sc.first[k] = pmin == kNoClaim ? 0u : std::max(1u, pmin);
  }
  // 2. Permutations of the owning windows, from the first on, in batches.
  sc.batch.clear();
  sc.lanes = 0;
  for (int64_t k = 0; k < K; ++k) {
    const uint32_t first = sc.first[k];
    if (first == 0) continue;
    sc.batch.push_back(static_cast<uint32_t>(k));
    // Philox lanes of blocks first/4 .. (n-1)/4 (none where n == 1), written 8 at a time: a
    // loop of one or a few turns, where one per block mispredicted its exit. Entries past the
    // last block are overwritten by the next window's or never read.
    const uint32_t n = static_cast<uint32_t>(sc.windows[k].volume());
    const uint32_t b0 = first / 4, count = first < n ? (n - 1) / 4 + 1 - b0 : 0;
    if (sc.lane_block.size() < sc.lanes + count + 8) {
      sc.lane_block.resize(2 * (sc.lanes + count + 8));
      sc.lane_stream.resize(2 * (sc.lanes + count + 8));
    }
    uint32_t* lane_block = sc.lane_block.data() + sc.lanes;
    uint32_t* lane_stream = sc.lane_stream.data() + sc.lanes;
    for (uint32_t c = 0; c < count; c += 8)
      for (uint32_t q = 0; q < 8; ++q) {
        lane_block[c + q] = b0 + c + q;
        lane_stream[c + q] = static_cast<uint32_t>(k);
      }
    sc.lanes += count;
    if (sc.lanes >= kShuffleBatchLanes) permute_batch(cfg, shape, sample, src, sc);
  }
  permute_batch(cfg, shape, sample, src, sc);
}

// Runs fn(begin, end) over [0, n) in chunks handed out dynamically to torch's threads: the
// work per sample varies (each stage has its own gate), so a static split would leave threads
// idle. Results do not depend on which thread does what.
template <typename Fn>
void parallel_dynamic(int64_t n, int64_t chunk, const Fn& fn) {
  if (n <= 0) return;
  const int64_t threads = std::min<int64_t>(torch::stable::get_num_threads(), (n + chunk - 1) / chunk);
  if (threads <= 1) {
    fn(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  torch::stable::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t begin = next.fetch_add(chunk); begin < n; begin = next.fetch_add(chunk))
      fn(begin, std::min(n, begin + chunk));
  });
}

// CPU lookup tables of a sample's intensity curve: the same values as curve_eval (the GPU's
// body) with fewer dependent loads and no division per voxel. Cell g of the index grid records
// its first segment and the breakpoint inside it, if any, so one comparison picks the segment;
// the few cells that hold several breakpoints (where f is steep) fall back to curve_eval.
struct CurveCell {
  int32_t segment;  // grid[g]
  float split;      // xs[segment + 1] if the cell holds one breakpoint; 2 (never reached) if
                    // none; NaN if several
};
struct CurveSegment {
  float x0, y0, slope, pad;  // f(t) = y0 + slope * (t - x0) on this segment
};
constexpr int kCurveCellsPerSample = kCurveGrid;
constexpr int kCurveSegmentsPerSample = kCurveSegments;

// Index grid of one sample by one merge walk (the GPU and the reference search per entry; xs is
// non-decreasing, so both give the largest i < kCurveSegments with xs[i] <= g / kCurveGrid).
void curve_grid_merge(const float* xs, int32_t* grid) {
  int i = 0;
  for (int g = 0; g < kCurveGridPoints; ++g) {
    const float t = static_cast<float>(g) / static_cast<float>(kCurveGrid);
    while (i + 1 < kCurveSegments && xs[i + 1] <= t) ++i;
    grid[g] = i;
  }
}

void curve_fast_tables(const float* xs, const float* ys, const int32_t* grid, CurveCell* cells, CurveSegment* segs) {
  for (int i = 0; i < kCurveSegments; ++i) {
    if (xs[i + 1] - xs[i] > 0.0f) {
      segs[i] = CurveSegment{xs[i], ys[i], segment_slope(xs, ys, i), 0.0f};
    } else {  // no width: curve_eval returns ys[i + 1]; y0 + 0 * t is exactly that
      segs[i] = CurveSegment{0.0f, ys[i + 1], 0.0f, 0.0f};
    }
  }
  for (int g = 0; g < kCurveGrid; ++g) {
    const int lo = grid[g], hi = grid[g + 1];
    cells[g].segment = lo;
    cells[g].split = hi == lo ? 2.0f : hi == lo + 1 ? xs[hi] : std::numeric_limits<float>::quiet_NaN();
  }
}

// The intensity map of n float32 values in place (intensity_map, organised for the CPU): the
// normalisation and the final scaling run in loops the compiler vectorises; only the table
// lookup is scalar. Blocks of 64 keep the intermediate arrays on the stack.
GENESIS_AVX2_CLONE void map_values(float* vals, int64_t n, const CurveCell* cells, const CurveSegment* segs, const CurveTableView& curve,
                float lo, float range, float inv_range) {
  constexpr int kBlock = 64;
  const float end = curve.ys[kCurveSegments];
  float ts[kBlock], fs[kBlock];
  int32_t gs[kBlock];
  for (int64_t k0 = 0; k0 < n; k0 += kBlock) {
    const int m = static_cast<int>(std::min<int64_t>(kBlock, n - k0));
    float* v = vals + k0;
    for (int k = 0; k < m; ++k) {
      float t = (v[k] - lo) * inv_range;
      t = t >= 0.0f ? t : 0.0f;  // also NaN -> 0, so that the index below stays in bounds
      t = t > 1.0f ? 1.0f : t;
      const int32_t g = static_cast<int32_t>(t * static_cast<float>(kCurveGrid));
      ts[k] = t;
      gs[k] = g > kCurveGrid - 1 ? kCurveGrid - 1 : g;
    }
    for (int k = 0; k < m; ++k) {
      const float t = ts[k];
      const CurveCell cell = cells[gs[k]];
      if (__builtin_expect(cell.split != cell.split, 0)) {
        fs[k] = curve_eval(curve.xs, curve.ys, curve.grid, t);
      } else {
        const CurveSegment& seg = segs[cell.segment + static_cast<int>(t >= cell.split)];
        fs[k] = seg.y0 + seg.slope * (t - seg.x0);
      }
    }
    for (int k = 0; k < m; ++k) {
      const float f = ts[k] >= 1.0f ? end : fs[k];
      v[k] = v[k] != v[k] ? v[k] : lo + f * range;
    }
  }
}

struct RowScratch {
  std::vector<uint8_t> replace;  // painting replaces voxel x of the row
  std::vector<float> values;     // the row in float32 (intensity map, fill noise)
  std::vector<uint32_t> words;   // Philox words of the row's fill noise, in voxel order
};

// Input row (z, y) of sample b, all channels. Same values as pipeline_voxel (the GPU body),
// organised for the CPU: targets are already written, so the shuffle reads the flipped volume
// directly; painting is decided per row from the boxes; one Philox block serves 4 noise voxels.
template <typename T>
void input_row(const T* x, T* input, const T* target, const Shape& shape, const PipelineConfig& cfg,
               const SampleView& sv, const CurveCell* cells, const CurveSegment* segs, const int32_t* map, int64_t b,
               int64_t z, int64_t y, RowScratch& scratch) {
  std::vector<uint8_t>& replace = scratch.replace;
  std::vector<float>& values = scratch.values;
  const SampleParams& p = sv.params;
  const int64_t S = shape.spatial(), W = shape.dim[2];
  const int64_t row = (z * shape.dim[1] + y) * W;
  values.resize(W);
  int64_t replaced = 0;
  if (p.paint != kPaintNone) {
    replace.assign(W, p.paint == kPaintOut ? 1 : 0);
    scratch.words.resize(W + 40);  // groups of 8 whole blocks from the block holding the row start
    for (int k = 0; k < p.num_boxes; ++k) {
      const Box& bx = p.boxes[k];
      if (z < bx.start[0] || z >= bx.start[0] + bx.size[0] || y < bx.start[1] || y >= bx.start[1] + bx.size[1]) continue;
      for (int64_t xx = bx.start[2]; xx < bx.start[2] + bx.size[2]; ++xx) replace[xx] = p.paint == kPaintIn ? 1 : 0;
    }
    for (int64_t xx = 0; xx < W; ++xx) replaced += replace[xx];
  }
  const float lo = cfg.lo, range = cfg.hi - cfg.lo, inv_range = 1.0f / range;
  for (int64_t c = 0; c < shape.channels; ++c) {
    const int64_t plane = (b * shape.channels + c) * S;
    const T* base = (p.flip_mask ? target : x) + plane;  // what the shuffle reads
    T* out = input + plane + row;
    if (p.nonlinear) {  // gather the row in float32, then map it in a tight loop
      for (int64_t xx = 0; xx < W; ++xx) values[xx] = to_float(base[map ? map[row + xx] : row + xx]);
      float* vals = values.data();
      map_values(vals, W, cells, segs, sv.curve, lo, range, inv_range);
      for (int64_t xx = 0; xx < W; ++xx) out[xx] = FromFloat<T>::apply(values[xx]);
    } else {
      for (int64_t xx = 0; xx < W; ++xx) out[xx] = base[map ? map[row + xx] : row + xx];
    }
    if (replaced == 0) continue;
    // Fill noise: word v of stream c (noise_value). The row's Philox blocks are computed 8 at
    // a time (vectorised), in voxel order, then converted and blended in branch-free loops.
    const int64_t first_block = row >> 2, last_block = (row + W - 1) >> 2;
    uint32_t* words = scratch.words.data();
    for (int64_t b0 = first_block; b0 <= last_block; b0 += 8)
      philox8(static_cast<uint32_t>(b0), static_cast<uint32_t>(c), sv.sample, kNoise, cfg.seed,
              words + 4 * (b0 - first_block));
    const uint32_t* row_words = words + (row - 4 * first_block);
    float* noise = scratch.values.data();
    for (int64_t xx = 0; xx < W; ++xx) noise[xx] = noise_from_word(row_words[xx], lo, range);
    const uint8_t* rep = replace.data();
    for (int64_t xx = 0; xx < W; ++xx) out[xx] = rep[xx] ? FromFloat<T>::apply(noise[xx]) : out[xx];
  }
}

template <typename T>
void run_cpu(const T* x, T* input, T* target, const Shape& shape, const PipelineConfig& cfg,
             std::vector<SampleParams>& params) {
  const int64_t B = shape.batch, S = shape.spatial();
  std::vector<float> xs(B * kCurvePoints), ys(B * kCurvePoints);
  std::vector<int32_t> grid(B * kCurveGridPoints);
  std::vector<CurveCell> cells;
  std::vector<CurveSegment> segs;
  bool any_nonlinear = false;
  for (const auto& p : params) any_nonlinear = any_nonlinear || p.nonlinear;
  if (any_nonlinear) {
    cells.resize(B * kCurveCellsPerSample);
    segs.resize(B * kCurveSegmentsPerSample);
  }
  bool any_shuffle = false, any_flip = false;
  for (const auto& p : params) {
    any_shuffle = any_shuffle || p.shuffle;
    any_flip = any_flip || p.flip_mask;
  }
  // Single ops have no target buffer, and only the flip op flips: its result is flip(x).
  const bool flip_only = target == nullptr && any_flip;
  T* flipped = flip_only ? input : target;  // where pass 1 writes flip(x)
  const int64_t H = shape.dim[1], W = shape.dim[2], rows_per_sample = shape.dim[0] * H;

  // Per sample: curve tables and the shuffle's source map.
  const auto prepare = [&](int64_t b, int32_t* src_b, ShuffleScratch& scratch) {
    if (params[b].nonlinear) {
      for (int i = 0; i < kCurvePoints; ++i) curve_point_body(params.data(), xs.data(), ys.data(), b, i);
      const CurveTableView curve = curve_view(xs.data(), ys.data(), grid.data(), b);
      curve_grid_merge(curve.xs, curve.grid);
      curve_fast_tables(curve.xs, curve.ys, curve.grid, cells.data() + b * kCurveCellsPerSample,
                        segs.data() + b * kCurveSegmentsPerSample);
    }
    if (params[b].shuffle) shuffle_source_map(cfg, shape, b, src_b, scratch);
  };
  // Pass 1, one row: targets, flip(x) (the shuffle of pass 2 reads them); for the flip op, its result.
  const auto flip_row = [&](int64_t b, int64_t z, int64_t y) {
    const int32_t mask = params[b].flip_mask;
    const int64_t row = (z * H + y) * W;
    const int64_t src_row = flip_source(shape, mask & 3, z, y, 0);
    for (int64_t c = 0; c < shape.channels; ++c) {
      const int64_t plane = (b * shape.channels + c) * S;
      const T* in = x + plane + src_row;
      T* out = flipped + plane + row;
      if (mask & 4) {
        for (int64_t xx = 0; xx < W; ++xx) out[xx] = in[W - 1 - xx];
      } else {
        std::copy(in, in + W, out);
      }
    }
  };
  // Pass 2, one row: inputs.
  const auto value_row = [&](int64_t b, int64_t z, int64_t y, const int32_t* src_b, RowScratch& scratch) {
    SampleView sv;
    sv.params = params[b];
    sv.sample = sample_index(cfg, b);
    sv.curve = curve_view(xs.data(), ys.data(), grid.data(), b);
    const bool nl = params[b].nonlinear;
    input_row(x, input, target, shape, cfg, sv, nl ? cells.data() + b * kCurveCellsPerSample : nullptr,
              nl ? segs.data() + b * kCurveSegmentsPerSample : nullptr, params[b].shuffle ? src_b : nullptr, b, z, y,
              scratch);
  };

  if (B >= 4 * torch::stable::get_num_threads()) {
    // Many samples: whole samples per task. A sample's source map, target and input stay in this
    // core's cache between the passes, and the source map takes one sample's memory per thread.
    parallel_dynamic(B, 1, [&](int64_t b0, int64_t b1) {
      ShuffleScratch shuffle_scratch;
      RowScratch row_scratch;
      std::vector<int32_t> src(any_shuffle ? S : 0);
      for (int64_t b = b0; b < b1; ++b) {
        prepare(b, src.data(), shuffle_scratch);
        for (int64_t r = 0; r < rows_per_sample && flipped != nullptr; ++r) flip_row(b, r / H, r % H);
        for (int64_t r = 0; r < rows_per_sample && !flip_only; ++r)
          value_row(b, r / H, r % H, src.data(), row_scratch);
      }
    });
    return;
  }
  // Few samples: samples in parallel, then rows in parallel (a single sample uses every thread).
  std::vector<int32_t> src(any_shuffle ? B * S : 0);
  parallel_dynamic(B, 1, [&](int64_t b0, int64_t b1) {
    ShuffleScratch scratch;
    for (int64_t b = b0; b < b1; ++b) prepare(b, src.data() + (any_shuffle ? b * S : 0), scratch);
  });
  const int64_t chunk = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, W * shape.channels));
  const auto for_rows = [&](auto&& fn) {
    parallel_dynamic(B * rows_per_sample, chunk, [&](int64_t r0, int64_t r1) {
      RowScratch scratch;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / rows_per_sample, zy = r % rows_per_sample;
        fn(b, zy / H, zy % H, scratch);
      }
    });
  };
  if (flipped != nullptr) for_rows([&](int64_t b, int64_t z, int64_t y, RowScratch&) { flip_row(b, z, y); });
  if (flip_only) return;
  for_rows([&](int64_t b, int64_t z, int64_t y, RowScratch& scratch) {
    value_row(b, z, y, src.data() + (any_shuffle ? b * S : 0), scratch);
  });
}

// Runs the engine; `params` fills the per-sample parameters (random or explicit).
template <typename ParamsFn>
std::tuple<Tensor, Tensor> pipeline_cpu(const Tensor& x, const Shape& shape, const PipelineConfig& cfg,
                                        bool want_target, ParamsFn&& fill_params) {
  const Tensor xc = torch::stable::contiguous(x);
  Tensor input = torch::stable::empty_like(xc);
  Tensor target = want_target ? torch::stable::empty_like(xc) : input;
  if (xc.numel() == 0) return {input, target};
  std::vector<SampleParams> params(shape.batch);
  fill_params(params);
  dispatch_storage(xc.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    run_cpu<T>(static_cast<const T*>(xc.const_data_ptr()), static_cast<T*>(input.mutable_data_ptr()),
               want_target ? static_cast<T*>(target.mutable_data_ptr()) : nullptr, shape, cfg, params);
  });
  return {input, target};
}

std::tuple<Tensor, Tensor> run_random(const Tensor& x, const Shape& s, const PipelineConfig& cfg, bool want_target) {
  return pipeline_cpu(x, s, cfg, want_target, [&](std::vector<SampleParams>& params) {
    torch::stable::parallel_for(0, s.batch, 64, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) params_body(cfg, s, params.data(), b);
    });
  });
}

std::tuple<Tensor, Tensor> models_genesis_cpu(Tensor x, double flip_p, double shuffle_p, int64_t num_windows,
                                              double nonlinear_p, double paint_p, double inpaint_rate, double lo,
                                              double hi, int64_t seed, int64_t sample_offset) {
  const char* op = "genesis::models_genesis";
  const Shape s = check_input(x, op);
  const PipelineConfig cfg = pipeline_config(s, flip_p, shuffle_p, num_windows, nonlinear_p, paint_p,
                                             inpaint_rate, lo, hi, seed, sample_offset, op);
  return run_random(x, s, cfg, true);
}

Tensor flip_cpu(Tensor x, double p, int64_t seed, int64_t off) {
  const Shape s = check_input(x, "genesis::flip");
  return std::get<0>(run_random(x, s, flip_config(s, p, seed, off, "genesis::flip"), false));
}

Tensor local_shuffle_cpu(Tensor x, double p, int64_t num_windows, int64_t seed, int64_t off) {
  const Shape s = check_input(x, "genesis::local_shuffle");
  return std::get<0>(run_random(x, s, shuffle_config(s, p, num_windows, seed, off, "genesis::local_shuffle"), false));
}

Tensor nonlinear_cpu(Tensor x, double p, double lo, double hi, int64_t seed, int64_t off) {
  const Shape s = check_input(x, "genesis::nonlinear");
  return std::get<0>(run_random(x, s, nonlinear_config(s, p, lo, hi, seed, off, "genesis::nonlinear"), false));
}

Tensor inpaint_cpu(Tensor x, double p, double lo, double hi, int64_t seed, int64_t off) {
  const Shape s = check_input(x, "genesis::inpaint");
  return std::get<0>(run_random(x, s, paint_config(s, true, p, lo, hi, seed, off, "genesis::inpaint"), false));
}

Tensor outpaint_cpu(Tensor x, double p, double lo, double hi, int64_t seed, int64_t off) {
  const Shape s = check_input(x, "genesis::outpaint");
  return std::get<0>(run_random(x, s, paint_config(s, false, p, lo, hi, seed, off, "genesis::outpaint"), false));
}

Tensor bezier_cpu(Tensor x, Tensor control_points, Tensor increasing, double lo, double hi) {
  const char* op = "genesis::bezier";
  const Shape s = check_input(x, op);
  check_bezier_args(x, control_points, increasing, s, op);
  const PipelineConfig cfg = nonlinear_config(s, 1.0, lo, hi, 0, 0, op);
  const Tensor cp = torch::stable::contiguous(control_points);
  const Tensor inc = torch::stable::contiguous(increasing);
  return std::get<0>(pipeline_cpu(x, s, cfg, false, [&](std::vector<SampleParams>& params) {
    const double* ctrl = static_cast<const double*>(cp.const_data_ptr());
    const uint8_t* up = static_cast<const uint8_t*>(inc.const_data_ptr());
    for (int64_t b = 0; b < s.batch; ++b) explicit_params_body(ctrl, up, params.data(), b);
  }));
}

}  // namespace
}  // namespace genesis

STABLE_TORCH_LIBRARY_IMPL(genesis, CPU, m) {
  m.impl("models_genesis", TORCH_BOX(&genesis::models_genesis_cpu));
  m.impl("flip", TORCH_BOX(&genesis::flip_cpu));
  m.impl("local_shuffle", TORCH_BOX(&genesis::local_shuffle_cpu));
  m.impl("nonlinear", TORCH_BOX(&genesis::nonlinear_cpu));
  m.impl("inpaint", TORCH_BOX(&genesis::inpaint_cpu));
  m.impl("outpaint", TORCH_BOX(&genesis::outpaint_cpu));
  m.impl("bezier", TORCH_BOX(&genesis::bezier_cpu));
}
