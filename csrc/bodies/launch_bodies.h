#pragma once
// The bodies of the CUDA kernels, one call per grid point (or per thread and phase). The kernels
// that call them, and the order of the launches, are written once in bodies/launch_sequence.h,
// which the GPU (csrc/cuda/cuda_kernels.cu) and the CPU emulation (csrc/emulate) both run.
//
// Launch sequence (one launch per stage, grids from launch_plan):
//   1. params_body        per sample                      per-sample parameters (drawn or given)
//   2. curve_point_body   per (sample, point)             polyline of the intensity curve
//      curve_grid_body    per (sample, grid point)        index grid (needs all points; barrier)
//   3. owner_body         per (sample, window)            owner[b, v] = max k of windows covering v
//   4. window_thread_body per (sample, window), a thread  the owner's permutation, built once:
//      or window_*        or a warp (large windows)       owner[b, v] = encoded source voxel
//   5. voxel_group_body   per 4 voxels of a sample        input and target, all channels (and the mask)
// The mask-only ops (paint_mask, shuffle_mask) run 1, 3 (shuffle_mask) and mask_group_body instead of 5.
#include "bodies/launch_plan.h"
#include "bodies/pipeline.h"

namespace genesis {

// Explicit Bezier control points are clamped to [0, 1], NaN to 0 (README, "bezier"): inside the
// unit square the curve is a monotone function, and the rule needs no check on the host, so
// every device maps the same way without a synchronisation.
GENESIS_HD double clamp_control_point(double c) { return c >= 0.0 ? (c <= 1.0 ? c : 1.0) : 0.0; }

// The bezier op's parameters of sample b: its given curve, no other stage.
GENESIS_HD SampleParams given_sample_params(const GivenCurves& given, int64_t b) {
  SampleParams p;
  p.flip_mask = 0;
  p.shuffle = 0;
  p.nonlinear = 1;
  p.increasing = given.increasing[b] != 0;
  for (int i = 0; i < 4; ++i) p.ctrl[i] = clamp_control_point(given.ctrl[4 * b + i]);
  p.paint = kPaintNone;
  p.num_boxes = 0;
  p.seed = 0;  // nothing is drawn
  p.sample = 0;
  return p;
}

// Parameters of sample b, the one path on every engine: given (the bezier op) or drawn.
GENESIS_HD void params_body(const PipelineConfig& cfg, const Shape& shape, SampleParams* params, int64_t b) {
  params[b] = cfg.op == OpKind::kBezier ? given_sample_params(cfg.given, b) : draw_sample_params(cfg, shape, b);
  params[b].lo = cfg.lo;  // with per_sample_range, the range stage replaces both
  params[b].range = cfg.hi - cfg.lo;
}

GENESIS_HD CurveTableView curve_view(float* xs, float* ys, int32_t* grid, int64_t b) {
  return CurveTableView{xs + b * kCurvePoints, ys + b * kCurvePoints, grid + b * kCurveGridPoints};
}

GENESIS_HD void curve_point_body(const SampleParams* params, float* xs, float* ys, int64_t b, int i) {
  const SampleParams& p = params[b];
  if (!p.nonlinear) return;
  curve_point(i, p.ctrl, p.increasing, xs[b * kCurvePoints + i], ys[b * kCurvePoints + i]);
}

GENESIS_HD void curve_grid_body(const SampleParams* params, const float* xs, int32_t* grid, int64_t b, int g) {
  if (!params[b].nonlinear) return;
  grid[b * kCurveGridPoints + g] = curve_grid_entry(xs + b * kCurvePoints, g);
}

// Mark window k as the owner of its voxels where it is the latest window (atomic max).
template <typename AtomicMax>
GENESIS_HD void owner_body(const PipelineConfig& cfg, const Shape& shape, const SampleParams* params, int32_t* owner,
                           int64_t b, int64_t k, AtomicMax atomic_max) {
  if (!params[b].shuffle) return;
  const Box w = shuffle_window(params[b].seed, params[b].sample, static_cast<uint32_t>(k), shape);
  int32_t* own = owner + b * shape.spatial();
  for (int64_t z = w.start[0]; z < w.start[0] + w.size[0]; ++z)
    for (int64_t y = w.start[1]; y < w.start[1] + w.size[1]; ++y)
      for (int64_t x = w.start[2]; x < w.start[2] + w.size[2]; ++x)
        atomic_max(own + (z * shape.dim[1] + y) * shape.dim[2] + x, static_cast<int32_t>(k));
}

// ---- window geometry without run-time divisions ------------------------------------------------
// p / d for a divisor d fixed per window, as one 64-bit multiply and shift: with
// s = 32 + ceil(log2 d) and m = floor(2^s / d) + 1, floor(p * m / 2^s) = floor(p / d) for every
// p < 2^32 (the error p * (m - 2^s / d) / 2^s stays below 1 / d because p * d < 2^s), and
// p * m < 2^64 because positions stay below 2^31 (a volume's voxel count) and m <= 2^33.
struct FastDiv {
  uint64_t m;
  uint32_t s;
  GENESIS_HD uint32_t operator()(uint32_t p) const { return static_cast<uint32_t>((p * m) >> s); }
};

GENESIS_HD FastDiv make_fast_div(uint32_t d) {
  uint32_t log2_ceil = 0;
  while ((uint64_t{1} << log2_ceil) < d) ++log2_ceil;
  const uint32_t s = 32 + log2_ceil;
  return FastDiv{(uint64_t{1} << s) / d + 1, s};
}

// Window w of a volume: local (row-major) position p -> spatial index, with the two divisions by
// the window's row and plane sizes precomputed.
struct WindowGeometry {
  int64_t base;        // spatial index of the window's first voxel
  int64_t row, plane;  // the volume's strides (W, H x W)
  uint32_t n, sx, sy;  // window volume, row and column sizes
  FastDiv div_x, div_y;
  GENESIS_HD int64_t voxel(uint32_t p) const {
    const uint32_t lzy = div_x(p), lx = p - lzy * sx, lz = div_y(lzy), ly = lzy - lz * sy;
    return base + static_cast<int64_t>(lz) * plane + static_cast<int64_t>(ly) * row + lx;
  }
};

GENESIS_HD WindowGeometry window_geometry(const Shape& shape, const Box& w) {
  WindowGeometry g;
  g.row = shape.dim[2];
  g.plane = shape.dim[1] * shape.dim[2];
  g.base = w.start[0] * g.plane + w.start[1] * g.row + w.start[2];
  g.n = static_cast<uint32_t>(w.volume());
  g.sx = static_cast<uint32_t>(w.size[2]);
  g.sy = static_cast<uint32_t>(w.size[1]);
  g.div_x = make_fast_div(g.sx);
  g.div_y = make_fast_div(g.sy);
  return g;
}

// ---- the window kernel, block path: one warp per (sample, window) ------------------------------
// Window k builds its Fisher-Yates permutation once (as the CPU does, cpu/shuffle_map.h) and
// replaces owner[v] = k of each voxel v it owns by encode_source(the voxel v reads). Phases, each
// ended by a barrier (the GPU kernel) or run for all lanes before the next (the emulation):
//   begin   lane 0: sample, window, volume n
//   claims  all lanes: smallest owned local position of their strided positions
//   first   lane 0: pmin (smallest owned position), first = max(1, pmin); no owned voxel: skip
//   draws   all lanes: perm[p] = p, and the draws j_i for i in [first, n) (one Philox block per
//           lane and 4 draws: no block is computed twice)
//   swaps   lane 0: steps i = n-1 .. first; a[i] is final after step i (later steps touch only
//           positions below i), so it is stored in draws[i]; a[0] (final after step 1) in draws[0]
//   writes  all lanes: owned positions p >= pmin get encode_source(voxel of a[p])
// Work per window is O(n): linear in the voxels the windows cover. perm and draws (capacity
// positions each) are in shared memory, or in a global slice per block for large windows
// (launch_plan). Windows of at most kSmallWindowVoxels voxels take the thread path instead
// (window_thread_body below). Ownership tests stay valid while other windows write: a voxel's entry changes
// from k to an encoded source only by its owner k, and encoded sources are negative.
constexpr uint32_t kNoPosition = ~0u;

// owner-map encoding of "reads voxel src": -2 - src (-1 = no window covers the voxel).
GENESIS_HD int32_t encode_source(int64_t src) { return static_cast<int32_t>(-2 - src); }

struct WindowState {
  int64_t b;
  uint64_t seed;
  uint32_t sample, k, n, pmin, first;
  int32_t active;
  WindowGeometry g;
  uint32_t lane_min[kWarpSize];
};
static_assert(sizeof(WindowState) + kWindowSharedBytes <= 48 * 1024,
              "the window kernel's static and dynamic shared memory must fit the default 48 KB");

GENESIS_HD void window_begin(const PipelineConfig& cfg, const Shape& shape, const SampleParams* params, int64_t item,
                             WindowState& st) {
  st.b = item / cfg.num_windows;
  st.k = static_cast<uint32_t>(item % cfg.num_windows);
  st.seed = params[st.b].seed;
  st.sample = params[st.b].sample;
  st.active = params[st.b].shuffle;
  if (!st.active) return;
  st.g = window_geometry(shape, shuffle_window(st.seed, st.sample, st.k, shape));
  st.n = st.g.n;
}

GENESIS_HD void window_claims(const Shape& shape, const int32_t* owner, WindowState& st, uint32_t lane) {
  if (!st.active) return;
  const int32_t* own = owner + st.b * shape.spatial();
  uint32_t m = kNoPosition;
  for (uint32_t p = lane; p < st.n; p += kWarpSize) {
    if (own[st.g.voxel(p)] == static_cast<int32_t>(st.k)) {
      m = p;  // a lane's positions increase: its first owned one is its smallest
      break;
    }
  }
  st.lane_min[lane] = m;
}

GENESIS_HD void window_first(WindowState& st) {
  if (!st.active) return;
  uint32_t m = kNoPosition;
  for (int l = 0; l < kWarpSize; ++l) m = st.lane_min[l] < m ? st.lane_min[l] : m;
  st.pmin = m;
  st.active = m != kNoPosition;
  st.first = m > 1u ? m : 1u;
}

GENESIS_HD void window_draws(const PipelineConfig& cfg, WindowState& st, uint32_t* perm, uint32_t* draws,
                             uint32_t lane) {
  if (!st.active) return;
  const uint32_t n = st.n, first = st.first;
  for (uint32_t p = lane; p < n; p += kWarpSize) perm[p] = p;
  const Stream s(st.seed, st.sample, kShufflePerm, st.k);
  for (uint32_t q = first / 4 + lane; 4 * q < n; q += kWarpSize) {
    const Words4 w = s.block(q);
    for (uint32_t r = 0; r < 4; ++r) {
      const uint32_t i = 4 * q + r;
      if (i >= first && i < n) draws[i] = uniform_below(w.w[r], i + 1u);
    }
  }
}

GENESIS_HD void window_swaps(const WindowState& st, uint32_t* perm, uint32_t* draws) {
  if (!st.active) return;
  for (uint32_t i = st.n - 1; i >= st.first; --i) {
    const uint32_t j = draws[i];
    draws[i] = perm[j];
    perm[j] = perm[i];
  }
  draws[0] = perm[0];
}

GENESIS_HD void window_writes(const Shape& shape, int32_t* owner, const WindowState& st, const uint32_t* draws,
                              uint32_t lane) {
  if (!st.active) return;
  int32_t* own = owner + st.b * shape.spatial();
  for (uint32_t p = st.pmin + lane; p < st.n; p += kWarpSize) {
    int32_t& o = own[st.g.voxel(p)];
    if (o == static_cast<int32_t>(st.k)) o = encode_source(st.g.voxel(draws[p]));
  }
}

// ---- the window kernel, thread path: one thread per (sample, window) ---------------------------
// The same permutation and writes as the block path, by one thread: scan for pmin (the smallest
// owned position), then the Fisher-Yates steps i = n-1 .. max(1, pmin) with the words of
// kShufflePerm/k (one Philox block per 4 steps), each step writing position i's source at once
// (a[i] is final after step i), then position 0 if it is owned. perm: the thread's slice of at
// least capacity bytes (positions < kSmallWindowVoxels <= 256).
GENESIS_HD void window_thread_body(const PipelineConfig& cfg, const Shape& shape, const SampleParams* params,
                                   int32_t* owner, int64_t item, uint8_t* perm) {
  const int64_t b = item / cfg.num_windows;
  if (!params[b].shuffle) return;
  const uint64_t seed = params[b].seed;
  const uint32_t k = static_cast<uint32_t>(item % cfg.num_windows), sample = params[b].sample;
  const WindowGeometry g = window_geometry(shape, shuffle_window(seed, sample, k, shape));
  int32_t* own = owner + b * shape.spatial();
  const int32_t key = static_cast<int32_t>(k);
  uint32_t pmin = 0;
  while (pmin < g.n && own[g.voxel(pmin)] != key) ++pmin;
  if (pmin == g.n) return;  // no voxel owned: nothing to write
  for (uint32_t p = 0; p < g.n; ++p) perm[p] = static_cast<uint8_t>(p);
  const Stream s(seed, sample, kShufflePerm, k);
  const uint32_t first = pmin > 1u ? pmin : 1u;
  Words4 words{{0u, 0u, 0u, 0u}};
  uint32_t block = kNoPosition;
  for (uint32_t i = g.n - 1; i >= first; --i) {
    if (i / 4 != block) {
      block = i / 4;
      words = s.block(block);
    }
    const uint32_t r = i & 3u;  // selects, not a run-time index (which would put words on the GPU's stack)
    const uint32_t w = r == 0 ? words.w[0] : r == 1 ? words.w[1] : r == 2 ? words.w[2] : words.w[3];
    const uint32_t j = uniform_below(w, i + 1u);
    const uint8_t src = perm[j];
    perm[j] = perm[i];
    int32_t& o = own[g.voxel(i)];
    if (o == key) o = encode_source(g.voxel(src));
  }
  if (pmin == 0) own[g.voxel(0)] = encode_source(g.voxel(perm[0]));  // owned: it is pmin
}

// ---- the voxel kernel: kVoxelsPerThread consecutive voxels of one sample per thread --------------
// Voxel (z, y, x) -> the next one in row-major order.
GENESIS_HD void next_voxel(const Shape& shape, int64_t& z, int64_t& y, int64_t& x) {
  if (++x == shape.dim[2]) {
    x = 0;
    if (++y == shape.dim[1]) {
      y = 0;
      ++z;
    }
  }
}

// Whether a shuffle window covers a voxel, from its owner-map entry: -1 = no window; a window
// index k >= 0 (the owner kernel's result) or an encoded source < -1 (the window kernel's).
GENESIS_HD bool owner_covers(int32_t o) { return o != -1; }

// Four values to consecutive elements: on the GPU one aligned vector store when `vector` (dst then
// starts on a multiple of 4 elements of an aligned buffer), which fills whole 32-byte sectors
// where 4 scalar stores 16 bytes apart used a quarter of one each; the host stores them one by
// one. The values written are the same either way.
template <typename T>
struct alignas(4 * sizeof(T)) Pack4 {
  T v[4];
};

template <typename T>
GENESIS_HD void store_group(T* dst, const T (&v)[kVoxelsPerThread], int count, bool vector) {
#if defined(__CUDA_ARCH__)
  if (vector && count == kVoxelsPerThread) {
    *reinterpret_cast<Pack4<T>*>(dst) = Pack4<T>{{v[0], v[1], v[2], v[3]}};
    return;
  }
#endif
  GENESIS_UNROLL
  for (int q = 0; q < kVoxelsPerThread; ++q)
    if (q < count) dst[q] = v[q];
}

// The mask bytes of a group (byte q of word: voxel q), as one 4-byte store on the GPU when `vector`.
GENESIS_HD void store_mask_group(uint8_t* dst, uint32_t word, int count, bool vector) {
#if defined(__CUDA_ARCH__)
  if (vector && count == kVoxelsPerThread) {
    *reinterpret_cast<uint32_t*>(dst) = word;
    return;
  }
#endif
  GENESIS_UNROLL
  for (int q = 0; q < kVoxelsPerThread; ++q)
    if (q < count) dst[q] = static_cast<uint8_t>(word >> (8 * q));
}

// Input (and target, if not null) of voxels 4g .. 4g+3 of sample b, all channels, and, with kMask,
// their mask bytes (kMaskShuffled | kMaskPainted; one per voxel, not per channel). kMask is a
// template parameter so that the plain ops' code is what it was without masks (registers
// included). The fill noise of voxel v is word v of stream c, so one Philox block serves the group.
template <bool kMask, typename T>
GENESIS_HD void voxel_group_body(const T* __restrict__ x, T* __restrict__ input, T* __restrict__ target,
                                 uint8_t* __restrict__ mask, const Shape& shape, const PipelineConfig& cfg,
                                 const SampleParams* params, const float* xs, const float* ys, const int32_t* grid,
                                 const int32_t* owner, int64_t b, int64_t g, bool vector) {
  const SampleParams& p = params[b];  // a reference: a copy would put 200 bytes on every thread's stack
  const int64_t S = shape.spatial(), v0 = g * kVoxelsPerThread;
  const int count = static_cast<int>(min64(kVoxelsPerThread, S - v0));
  const uint32_t sample = p.sample;
  // Spatial indices fit 32 bits (a volume has < 2^31 voxels): half the registers of int64, which
  // keeps the 4 voxels' state and a group's 4 values within the launch bounds without spilling.
  int32_t tgt_src[kVoxelsPerThread], in_src[kVoxelsPerThread];
  bool noise[kVoxelsPerThread];
  uint32_t mask_word = 0;  // voxel q's mask byte in byte q (little-endian: the order of the bytes in memory)
  bool any_noise = false;
  int64_t z, y, xx;
  unravel(shape, v0, z, y, xx);
  GENESIS_UNROLL
  for (int q = 0; q < kVoxelsPerThread; ++q) {
    if (q < count) {
      const int64_t v = v0 + q;
      tgt_src[q] = static_cast<int32_t>(flip_source(shape, p.flip_mask, z, y, xx));
      in_src[q] = tgt_src[q];
      bool covered = false;
      if (p.shuffle) {
        const int32_t o = owner[b * S + v];
        if (kMask) covered = owner_covers(o);
        if (o < -1) {  // encode_source: the window kernel's result
          int64_t sz, sy, sx;
          unravel(shape, -2 - static_cast<int64_t>(o), sz, sy, sx);
          in_src[q] = static_cast<int32_t>(flip_source(shape, p.flip_mask, sz, sy, sx));
        }
      }
      noise[q] = paint_replaces(p, z, y, xx);
      any_noise = any_noise || noise[q];
      if (kMask)
        mask_word |= static_cast<uint32_t>((covered ? kMaskShuffled : 0) | (noise[q] ? kMaskPainted : 0)) << (8 * q);
      next_voxel(shape, z, y, xx);
    }
  }
  if (kMask) store_mask_group(mask + b * S + v0, mask_word, count, vector);
  const float lo = p.lo, range = p.range;
  for (int64_t c = 0; c < shape.channels; ++c) {
    const int64_t plane = (b * shape.channels + c) * S;
    Words4 nw{{0u, 0u, 0u, 0u}};
    if (any_noise) nw = Stream(p.seed, sample, kNoise, static_cast<uint32_t>(c)).block(static_cast<uint32_t>(g));
    // The target's 4 values, then the input's: 4 values live at a time, not 8 (which spilled).
    if (target != nullptr) {
      T tgt[kVoxelsPerThread];
      GENESIS_UNROLL
      for (int q = 0; q < kVoxelsPerThread; ++q)
        if (q < count) tgt[q] = x[plane + tgt_src[q]];
      store_group(target + plane + v0, tgt, count, vector);
    }
    T in[kVoxelsPerThread];
    GENESIS_UNROLL
    for (int q = 0; q < kVoxelsPerThread; ++q) {
      if (q < count) {
        T out;
        if (noise[q]) {
          out = FromFloat<T>::apply(noise_from_word(nw.w[q], lo, range));
        } else if (p.nonlinear) {
          out = FromFloat<T>::apply(intensity_map(xs + b * kCurvePoints, ys + b * kCurvePoints,
                                                  grid + b * kCurveGridPoints, to_float(x[plane + in_src[q]]), lo,
                                                  range, 1.0f / range));
        } else {
          out = x[plane + in_src[q]];
        }
        in[q] = out;
      }
    }
    store_group(input + plane + v0, in, count, vector);
  }
}

// ---- the mask-only ops: kVoxelsPerThread voxels of one sample per thread -------------------------
// paint_mask: whether painting replaces voxels 4g .. 4g+3 of sample b; shuffle_mask: whether a
// shuffle window covers them (after the owner kernel). Bool bytes (0 or 1).
GENESIS_HD void mask_group_body(const Shape& shape, const PipelineConfig& cfg, const SampleParams* params,
                                const int32_t* owner, uint8_t* mask, int64_t b, int64_t g) {
  const SampleParams& p = params[b];
  const int64_t S = shape.spatial(), v0 = g * kVoxelsPerThread;
  const int count = static_cast<int>(min64(kVoxelsPerThread, S - v0));
  int64_t z, y, xx;
  unravel(shape, v0, z, y, xx);
  for (int q = 0; q < count; ++q) {
    const int64_t v = v0 + q;
    mask[b * S + v] =
        cfg.op == OpKind::kShuffleMask ? p.shuffle && owner_covers(owner[b * S + v]) : paint_replaces(p, z, y, xx);
    next_voxel(shape, z, y, xx);
  }
}

}  // namespace genesis
