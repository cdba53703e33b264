// Local pixel shuffling's source map on the CPU (see shuffle_map.h and the comment on
// ShuffleScratch for the algorithm).
#include "cpu/shuffle_map.h"

#include <algorithm>

#include "cpu/philox_simd.h"
#include "bodies/params.h"

namespace genesis {
namespace cpu {
namespace {

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
      uint32_t w[8] = {};  // 2D windows use w[0..3] only
      for (int q = 0; q < blocks; ++q)
        for (int j = 0; j < 4; ++j) w[4 * q + j] = out[j][i * blocks + q];
      windows[k0 + i] = window_from_words(w, shape);
    }
  }
}

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

// The rows of window w in src that its permutation writes (those holding positions >= first),
// fetched for writing ahead of it. Windows lie at random places in a source map far larger
// than L2 (16 MiB at 160^3), so each of a window's rows is a cache miss; written one window at
// a time, the misses came one after another. Fetched kPrefetchWindows windows ahead they
// overlap: the shuffle alone at 1x160^3, 1 thread, went from 110 to 86 ms per sample.
// (Always inlined, with its own loop, and called from no lambda: GCC's pure-const analysis
// counts a prefetch as no side effect, so an out-of-line function or a lambda made of
// prefetches is deleted as dead code.)
__attribute__((always_inline)) inline void prefetch_window(const Shape& shape, const Box& w, uint32_t first,
                                                           const int32_t* src) {
  const int64_t H = shape.dim[1], W = shape.dim[2];
  const int32_t sy = w.size[1], sx = w.size[2], rows = w.size[0] * sy;
  for (int32_t r = static_cast<int32_t>(first) / sx; r < rows; ++r) {
    const int32_t* row = src + ((w.start[0] + r / sy) * H + w.start[1] + r % sy) * W + w.start[2];
    __builtin_prefetch(row, 1);
    __builtin_prefetch(row + sx - 1, 1);
  }
}

// Window sc.batch[q] if there is one.
__attribute__((always_inline)) inline void prefetch_ahead(const Shape& shape, const ShuffleScratch& sc, size_t q,
                                                          const int32_t* src) {
  if (q < sc.batch.size()) prefetch_window(shape, sc.windows[sc.batch[q]], sc.first[sc.batch[q]], src);
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
  constexpr size_t kPrefetchWindows = 4;
  for (size_t q = 0; q < kPrefetchWindows; ++q) prefetch_ahead(shape, sc, q, src);
  for (size_t q = 0; q < sc.batch.size(); ++q) {
    prefetch_ahead(shape, sc, q + kPrefetchWindows, src);
    const uint32_t k = sc.batch[q];
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

// Whether painting replaces every voxel of window w: then its permutation is never seen (the
// input's painted voxels are noise, and the row pass does not read their source), so it is not
// run. Conservative for in-painting (w inside one box), exact for out-painting (w meets no kept
// box). Out-painting replaces most of a volume, so about half of its windows are skipped.
bool painted_over(const SampleParams& p, const Box& w) {
  const auto overlaps = [&](const Box& bx) {
    for (int a = 0; a < 3; ++a)
      if (w.start[a] >= bx.start[a] + bx.size[a] || bx.start[a] >= w.start[a] + w.size[a]) return false;
    return true;
  };
  const auto inside = [&](const Box& bx) {
    for (int a = 0; a < 3; ++a)
      if (w.start[a] < bx.start[a] || w.start[a] + w.size[a] > bx.start[a] + bx.size[a]) return false;
    return true;
  };
  if (p.paint == kPaintOut) {
    for (int k = 0; k < p.num_boxes; ++k)
      if (overlaps(p.boxes[k])) return false;
    return true;
  }
  if (p.paint == kPaintIn) {
    for (int k = 0; k < p.num_boxes; ++k)
      if (inside(p.boxes[k])) return true;
  }
  return false;
}

// The sample's windows (sc.windows) and pass 1, the claims, from the last window back, in
// `taken` (zeroed first; sc.taken where null): sc.first per window.
void claim_windows(const PipelineConfig& cfg, const Shape& shape, uint32_t sample, uint64_t* taken,
                   ShuffleScratch& sc) {
  const int64_t K = cfg.num_windows;
  shuffle_windows(cfg, shape, sample, sc.windows);
  const int32_t row_words = static_cast<int32_t>(claim_row_words(shape));
  const size_t words = static_cast<size_t>(shape.dim[0] * shape.dim[1] * row_words);
  if (taken == nullptr) {
    sc.taken.assign(words, 0);
    taken = sc.taken.data();
  } else {
    std::fill(taken, taken + words, uint64_t{0});
  }
  sc.first.resize(static_cast<size_t>(K));
  for (int64_t k = K - 1; k >= 0; --k) {
    const uint32_t pmin = claim_window(shape, sc.windows[k], taken, row_words);
    sc.first[k] = pmin == kNoClaim ? 0u : std::max(1u, pmin);
  }
}

}  // namespace

void shuffle_claims(const PipelineConfig& cfg, const Shape& shape, int64_t b, uint64_t* claims, ShuffleScratch& sc) {
  claim_windows(cfg, shape, sample_index(cfg, b), claims, sc);
}

void shuffle_source_map(const PipelineConfig& cfg, const Shape& shape, int64_t b, const SampleParams& params,
                        int32_t* src, ShuffleScratch& sc, uint64_t* claims) {
  const int64_t S = shape.spatial(), K = cfg.num_windows;
  const uint32_t sample = sample_index(cfg, b);
  // Voxels outside every window keep their place.
  for (int64_t v = 0; v < S; ++v) src[v] = static_cast<int32_t>(v);
  // 1. Claims, from the last window back.
  claim_windows(cfg, shape, sample, claims, sc);
  sc.offsets.clear();
  sc.shape_begin.assign(
      static_cast<size_t>(std::max<int64_t>(1, shape.dim[0] / 10) * std::max<int64_t>(1, shape.dim[1] / 10) *
                          std::max<int64_t>(1, shape.dim[2] / 10)),
      -1);
  // 2. Permutations of the owning windows that painting does not cover, from the first on, in
  // batches. (The claims above still cover every window: a skipped window's voxels are painted
  // whoever owns them, and the mask's shuffle bit stays the union of all windows.)
  const bool painting = params.paint != kPaintNone;
  sc.batch.clear();
  sc.lanes = 0;
  for (int64_t k = 0; k < K; ++k) {
    const uint32_t first = sc.first[k];
    if (first == 0 || (painting && painted_over(params, sc.windows[k]))) continue;
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

}  // namespace cpu
}  // namespace genesis
