// The intensity map on the CPU (see curve_map.h).
#include "cpu/curve_map.h"

#include <algorithm>
#include <limits>

#if defined(__x86_64__)
// An AVX2 copy of a function, picked at load time where the CPU has AVX2.
#define GENESIS_AVX2_CLONE __attribute__((target_clones("avx2", "default")))
#else
#define GENESIS_AVX2_CLONE
#endif

namespace genesis {
namespace cpu {

void curve_grid_merge(const float* xs, int32_t* grid) {
  int i = 0;
  for (int g = 0; g < kCurveGridPoints; ++g) {
    const float t = curve_grid_t(g);
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
GENESIS_AVX2_CLONE void map_values(float* vals, int64_t n, const CurveCell* cells, const CurveSegment* segs,
                                   const CurveTableView& curve, float lo, float range, float inv_range) {
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

}  // namespace cpu
}  // namespace genesis
