// Local pixel shuffling's source map on the CPU (see shuffle_map.h and the comment on
// ShuffleScratch for the algorithm).
#include "cpu/shuffle_map.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#if defined(__x86_64__)
#include <immintrin.h>
// GCC 12's AVX-512 intrinsics trip -W(maybe-)uninitialized on their own _mm512_undefined_*
// values where they are inlined, so for the rest of this file.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

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

// Bits [pos, pos + len) of a claim-bitmap row (len <= 16), from bit 0.
inline uint32_t row_bits(const uint64_t* t, int32_t pos, int32_t len) {
  const int32_t j = pos / 64, b = pos % 64;
  uint64_t v = t[j] >> b;
  if (b + len > 64) v |= t[j + 1] << (64 - b);
  return static_cast<uint32_t>(v) & ((1u << len) - 1);
}

// Claims the voxels of window w that no later window took: sets their bits in `taken` (rows
// of row_words words) and, with kOwn, writes them to own: row r's chunk c (columns 16c ..
// 16c + 15 of the window) at own[r * chunks + c], bit i = column 16c + i. Returns pmin, the
// smallest local position it claimed, or kNoClaim.
template <bool kOwn>
uint32_t claim_window(const Shape& shape, const Box& w, uint64_t* taken, int32_t row_words, uint16_t* own) {
  const int32_t x0 = w.start[2], sx = w.size[2], j0 = x0 / 64, b0 = x0 % 64, chunks = (sx + 15) / 16;
  uint32_t pmin = kNoClaim;
  // Row r's smallest fresh position, given its fresh bits from bit 0 = voxel x0.
  // Branch-free: whether a row has fresh voxels is random, so a branch would often be mispredicted.
  const auto row_min = [&](int32_t r, uint64_t fresh) {
    const uint32_t none = -static_cast<uint32_t>(fresh == 0);  // all ones (kNoClaim) if no fresh voxel
    pmin = std::min(pmin, (static_cast<uint32_t>(r * sx) + static_cast<uint32_t>(__builtin_ctzll(fresh | 1))) | none);
  };
  const auto record = [&](int32_t r, uint64_t fresh) {  // sx <= 64
    if (kOwn)
      for (int32_t c = 0; c < chunks; ++c) own[r * chunks + c] = static_cast<uint16_t>(fresh >> (16 * c));
  };
  if (b0 + sx <= 64) {  // the row segment lies in one word (always where W <= 64)
    const uint64_t m = bit_range(b0, b0 + sx);
    for_window_rows(shape, w, [&](int32_t r, int32_t row) {
      uint64_t& t = taken[static_cast<int64_t>(row) * row_words + j0];
      const uint64_t fresh = (m & ~t) >> b0;
      row_min(r, fresh);
      record(r, fresh);
      t |= m;
    });
  } else if (sx <= 64) {  // in words j0 and j0 + 1
    const uint64_t m0 = bit_range(b0, 64), m1 = bit_range(0, b0 + sx - 64);
    for_window_rows(shape, w, [&](int32_t r, int32_t row) {
      uint64_t* t = taken + static_cast<int64_t>(row) * row_words + j0;
      const uint64_t fresh = (m0 & ~t[0]) >> b0 | (m1 & ~t[1]) << (64 - b0);  // b0 > 0 here
      row_min(r, fresh);
      record(r, fresh);
      t[0] |= m0;
      t[1] |= m1;
    });
  } else {  // wide windows (W >= 650): chunk by chunk, then the row's words
    const int32_t j1 = (x0 + sx - 1) / 64;
    for_window_rows(shape, w, [&](int32_t r, int32_t row) {
      uint64_t* t = taken + static_cast<int64_t>(row) * row_words;
      for (int32_t c = chunks - 1; c >= 0; --c) {  // downwards: the last pmin update is the row's smallest
        const int32_t len = std::min(16, sx - 16 * c);
        const uint32_t fresh = ~row_bits(t, x0 + 16 * c, len) & ((1u << len) - 1);
        if (kOwn) own[r * chunks + c] = static_cast<uint16_t>(fresh);
        if (fresh != 0) pmin = std::min(pmin, static_cast<uint32_t>(r * sx + 16 * c + __builtin_ctz(fresh)));
      }
      for (int32_t j = j0; j <= j1; ++j) t[j] |= bit_range(std::max(x0 - 64 * j, 0), std::min(x0 + sx - 64 * j, 64));
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

// Whether a sample's windows are permuted in plane order, writing only the entries they own
// (see shuffle_map.h): where the source map is larger than kPlaneOrderBytes. The environment
// variable GENESIS_OPS_SHUFFLE_ORDER=planes or =windows forces one order (tests use it to run
// both on small volumes; the results are the same bits).
constexpr int64_t kPlaneOrderBytes = int64_t{8} << 20;
bool plane_order(const Shape& shape) {
  if (const char* e = std::getenv("GENESIS_OPS_SHUFFLE_ORDER")) {  // read per sample: cheap, and tests switch it
    if (std::string(e) == "planes") return true;
    if (std::string(e) == "windows") return false;
  }
  return shape.spatial() * static_cast<int64_t>(sizeof(int32_t)) > kPlaneOrderBytes;
}

// The voxel index of window w's rows in turn, from row r_begin (row r = z * sy + y of the
// window): the address arithmetic of init_perm and store_owned, written once.
struct WindowRowCursor {
  int64_t at;
  const int64_t W, skip;  // to the next row; past the rows of other windows' to the next plane
  const int32_t sy;
  int32_t y;
  WindowRowCursor(const Shape& shape, const Box& w, int32_t r_begin)
      : at(0), W(shape.dim[2]), skip((shape.dim[1] - w.size[1]) * shape.dim[2]), sy(w.size[1]), y(r_begin % sy) {
    at = ((w.start[0] + r_begin / sy) * shape.dim[1] + w.start[1] + y) * W + w.start[2];
  }
  void next() {
    at += W;
    if (++y == sy) {
      y = 0;
      at += skip;
    }
  }
};

// Window w's owned entries of src: for rows r_begin .. of w, the columns whose bits are set in
// own (claim_window's chunks), from perm (the window's final arrangement, row-major positions).
// Only owned entries are written, so windows can be permuted in any order.
using StoreOwned = void (*)(const Shape&, const Box&, int32_t, const int32_t*, const uint16_t*, int32_t*);

void store_owned_portable(const Shape& shape, const Box& w, int32_t r_begin, const int32_t* perm, const uint16_t* own,
                          int32_t* src) {
  const int32_t sx = w.size[2], rows = w.size[0] * w.size[1], chunks = (sx + 15) / 16;
  WindowRowCursor row(shape, w, r_begin);
  for (int32_t r = r_begin; r < rows; ++r, row.next()) {
    int32_t* d = src + row.at;
    const int32_t* p = perm + r * sx;
    for (int32_t c = 0; c < chunks; ++c)
      for (uint32_t m = own[r * chunks + c]; m != 0; m &= m - 1) {
        const int32_t i = 16 * c + __builtin_ctz(m);
        d[i] = p[i];
      }
  }
}

#if defined(__x86_64__)
// The same with masked stores: 8 columns per AVX2 store.
__attribute__((target("avx2"))) void store_owned_avx2(const Shape& shape, const Box& w, int32_t r_begin,
                                                      const int32_t* perm, const uint16_t* own, int32_t* src) {
  const int32_t sx = w.size[2], rows = w.size[0] * w.size[1], chunks = (sx + 15) / 16;
  const __m256i lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  WindowRowCursor row(shape, w, r_begin);
  for (int32_t r = r_begin; r < rows; ++r, row.next()) {
    int32_t* d = src + row.at;
    const int32_t* p = perm + r * sx;
    for (int32_t c = 0; c < chunks; ++c) {
      const int32_t bits = own[r * chunks + c];
      for (int32_t h = 0; h < 2 && 16 * c + 8 * h < sx; ++h) {
        const __m256i m = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(bits >> (8 * h)), lane), lane);
        const int32_t at = 16 * c + 8 * h;
        _mm256_maskstore_epi32(d + at, m, _mm256_maskload_epi32(p + at, m));
      }
    }
  }
}

// And 16 columns per AVX-512 store (one per row where windows are at most 16 wide, W < 170).
__attribute__((target("avx512f"))) void store_owned_avx512(const Shape& shape, const Box& w, int32_t r_begin,
                                                           const int32_t* perm, const uint16_t* own, int32_t* src) {
  const int32_t sx = w.size[2], rows = w.size[0] * w.size[1], chunks = (sx + 15) / 16;
  WindowRowCursor row(shape, w, r_begin);
  for (int32_t r = r_begin; r < rows; ++r, row.next()) {
    int32_t* d = src + row.at;
    const int32_t* p = perm + r * sx;
    for (int32_t c = 0; c < chunks; ++c) {
      const __mmask16 m = own[r * chunks + c];
      _mm512_mask_storeu_epi32(d + 16 * c, m, _mm512_maskz_loadu_epi32(m, p + 16 * c));
    }
  }
}
#endif

// perm[r * sx + x] = the voxel at column x of window row r, for all rows: what a window's
// permutation starts from, built per row (where window_offsets would read a table of all window
// shapes, 10 MB at 160^3). Each row is written 16 (8) wide, in increasing order, so the part past
// a row's end is overwritten by the next row; perm has room for 16 more entries.
using InitPerm = void (*)(const Shape&, const Box&, int32_t*);

void init_perm_portable(const Shape& shape, const Box& w, int32_t* perm) {
  const int32_t sx = w.size[2], rows = w.size[0] * w.size[1];
  WindowRowCursor row(shape, w, 0);
  for (int32_t r = 0; r < rows; ++r, row.next(), perm += sx)
    for (int32_t x = 0; x < sx; ++x) perm[x] = static_cast<int32_t>(row.at) + x;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) void init_perm_avx2(const Shape& shape, const Box& w, int32_t* perm) {
  const int32_t sx = w.size[2], rows = w.size[0] * w.size[1];
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  WindowRowCursor row(shape, w, 0);
  for (int32_t r = 0; r < rows; ++r, row.next(), perm += sx) {
    const int32_t base = static_cast<int32_t>(row.at);
    for (int32_t x = 0; x < sx; x += 8)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(perm + x), _mm256_add_epi32(_mm256_set1_epi32(base + x), iota));
  }
}

__attribute__((target("avx512f"))) void init_perm_avx512(const Shape& shape, const Box& w, int32_t* perm) {
  const int32_t sx = w.size[2], rows = w.size[0] * w.size[1];
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  WindowRowCursor row(shape, w, 0);
  for (int32_t r = 0; r < rows; ++r, row.next(), perm += sx) {
    const int32_t base = static_cast<int32_t>(row.at);
    for (int32_t x = 0; x < sx; x += 16)
      _mm512_storeu_si512(perm + x, _mm512_add_epi32(_mm512_set1_epi32(base + x), iota));
  }
}
#endif

InitPerm init_perm() {
#if defined(__x86_64__)
  if (use_avx512()) return init_perm_avx512;
  if (use_avx2()) return init_perm_avx2;
#endif
  return init_perm_portable;
}

StoreOwned store_owned() {
#if defined(__x86_64__)
  if (use_avx512()) return store_owned_avx512;
  if (use_avx2()) return store_owned_avx2;
#endif
  return store_owned_portable;
}

// Permutes the windows in sc.batch, in order: Philox words of all their steps (one vectorised
// pass), then per window steps n-1 .. first on the spatial indices of its voxels (a[p] is a
// voxel, not a position).
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
  const InitPerm init = sc.plane_order ? init_perm() : nullptr;
  const StoreOwned store = sc.plane_order ? store_owned() : nullptr;
  constexpr size_t kPrefetchWindows = 4;
  for (size_t q = 0; q < kPrefetchWindows; ++q) prefetch_ahead(shape, sc, q, src);
  for (size_t q = 0; q < sc.batch.size(); ++q) {
    prefetch_ahead(shape, sc, q + kPrefetchWindows, src);
    const uint32_t k = sc.batch[q];
    const Box& w = sc.windows[k];
    const uint32_t n = static_cast<uint32_t>(w.volume()), first = sc.first[k], base = first & ~3u;
    if (sc.perm.size() < n + 16) sc.perm.resize(n + 16);  // init_perm writes up to 16 past the end
    int32_t* perm = sc.perm.data();
    if (sc.plane_order) {
      // In place, then the owned entries (rows from pmin's; pmin = 0 where first = 1 may mean
      // 0 or 1, and row 0 has no owned bit where it is 1).
      init(shape, w, perm);
      for (uint32_t i = n - 1; i >= first; --i) {  // first >= 1: no wrap-around
        int32_t& pj = perm[uniform_below(wd[i - base], i + 1u)];
        const int32_t t = pj;
        pj = perm[i];
        perm[i] = t;
      }
      const int32_t r_begin = static_cast<int32_t>(first == 1 ? 0 : first) / w.size[2];
      store(shape, w, r_begin, perm, sc.own.data() + sc.own_begin[k], src);
    } else {
      const int32_t* off = window_offsets(shape, w, sc);
      const int32_t v0 = (w.start[0] * H + w.start[1]) * W + w.start[2];
      for (uint32_t p = 0; p < n; ++p) perm[p] = v0 + off[p];
      // Step i makes a[i] final (later steps touch positions below i only), so it goes straight
      // to src and perm[i] is not stored.
      for (uint32_t i = n - 1; i >= first; --i) {
        int32_t& pj = perm[uniform_below(wd[i - base], i + 1u)];
        src[v0 + off[i]] = pj;
        pj = perm[i];
      }
      // a[0] is final after step 1: needed where pmin = 0. Otherwise position 0 is a later
      // window's, which overwrites it, so it is written without a test.
      src[v0] = perm[0];
    }
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
void claim_windows(const PipelineConfig& cfg, const Shape& shape, uint32_t sample, uint64_t* taken, ShuffleScratch& sc,
                   bool own) {
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
  if (own) {
    sc.own_begin.resize(static_cast<size_t>(K));
    size_t total = 0;
    for (int64_t k = 0; k < K; ++k) {
      const Box& w = sc.windows[k];
      sc.own_begin[k] = static_cast<uint32_t>(total);
      total += static_cast<size_t>(w.size[0] * w.size[1] * ((w.size[2] + 15) / 16));
    }
    if (sc.own.size() < total) sc.own.resize(total);
  }
  for (int64_t k = K - 1; k >= 0; --k) {
    const uint32_t pmin =
        own ? claim_window<true>(shape, sc.windows[k], taken, row_words, sc.own.data() + sc.own_begin[k])
            : claim_window<false>(shape, sc.windows[k], taken, row_words, nullptr);
    sc.first[k] = pmin == kNoClaim ? 0u : std::max(1u, pmin);
  }
}

}  // namespace

void shuffle_claims(const PipelineConfig& cfg, const Shape& shape, int64_t b, uint64_t* claims, ShuffleScratch& sc) {
  claim_windows(cfg, shape, sample_index(cfg, b), claims, sc, false);
}

void shuffle_source_map(const PipelineConfig& cfg, const Shape& shape, int64_t b, const SampleParams& params,
                        int32_t* src, ShuffleScratch& sc, uint64_t* claims) {
  const int64_t K = cfg.num_windows, D = shape.dim[0], plane = shape.dim[1] * shape.dim[2];
  const uint32_t sample = sample_index(cfg, b);
  sc.plane_order = plane_order(shape);
  // Voxels outside every window keep their place: planes [filled, end) set to the identity. In
  // plane order each plane is set just before the first batch that writes it, so that it is
  // still in cache then.
  int64_t filled = 0;
  const auto fill_planes = [&](int64_t end) {
    for (int64_t v = filled * plane; v < end * plane; ++v) src[v] = static_cast<int32_t>(v);
    filled = std::max(filled, end);
  };
  if (!sc.plane_order) fill_planes(D);
  // 1. Claims, from the last window back (and, in plane order, what each window owns).
  claim_windows(cfg, shape, sample, claims, sc, sc.plane_order);
  sc.order.resize(static_cast<size_t>(K));
  if (sc.plane_order) {  // windows by first plane: a stable counting sort
    sc.plane_count.assign(static_cast<size_t>(D + 1), 0);
    for (int64_t k = 0; k < K; ++k) ++sc.plane_count[sc.windows[k].start[0] + 1];
    for (int64_t z = 0; z < D; ++z) sc.plane_count[z + 1] += sc.plane_count[z];
    for (int64_t k = 0; k < K; ++k) sc.order[sc.plane_count[sc.windows[k].start[0]]++] = static_cast<uint32_t>(k);
  } else {
    for (int64_t k = 0; k < K; ++k) sc.order[k] = static_cast<uint32_t>(k);
    sc.offsets.clear();
    sc.shape_begin.assign(
        static_cast<size_t>(std::max<int64_t>(1, shape.dim[0] / 10) * std::max<int64_t>(1, shape.dim[1] / 10) *
                            std::max<int64_t>(1, shape.dim[2] / 10)),
        -1);
  }
  // 2. Permutations of the owning windows that painting does not cover, in that order, in
  // batches. (The claims above still cover every window: a skipped window's voxels are painted
  // whoever owns them, and the mask's shuffle bit stays the union of all windows.)
  const bool painting = params.paint != kPaintNone;
  sc.batch.clear();
  sc.lanes = 0;
  int64_t batch_end = 0;  // planes the batch so far writes: [.., batch_end)
  for (int64_t i = 0; i < K; ++i) {
    const uint32_t k = sc.order[i];
    const uint32_t first = sc.first[k];
    const Box& w = sc.windows[k];
    if (first == 0 || (painting && painted_over(params, w))) continue;
    sc.batch.push_back(k);
    batch_end = std::max<int64_t>(batch_end, w.start[0] + w.size[0]);
    // Philox lanes of blocks first/4 .. (n-1)/4 (none where n == 1), written 8 at a time: a
    // loop of one or a few turns, where one per block mispredicted its exit. Entries past the
    // last block are overwritten by the next window's or never read.
    const uint32_t n = static_cast<uint32_t>(w.volume());
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
        lane_stream[c + q] = k;
      }
    sc.lanes += count;
    if (sc.lanes >= kShuffleBatchLanes) {
      fill_planes(batch_end);
      permute_batch(cfg, shape, sample, src, sc);
    }
  }
  fill_planes(batch_end);
  permute_batch(cfg, shape, sample, src, sc);
  fill_planes(D);
}

}  // namespace cpu
}  // namespace genesis
