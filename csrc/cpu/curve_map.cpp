// The intensity map on the CPU (see curve_map.h).
#include "cpu/curve_map.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>
#include <limits>

#if defined(__x86_64__)
#include <immintrin.h>
// GCC 12's AVX-512 intrinsics trip -W(maybe-)uninitialized on their own _mm512_undefined_*
// values where they are inlined, so for the rest of this file.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "cpu/philox_simd.h"

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

#if defined(__x86_64__)
// map_values on 16 values per vector, the table lookups as gathers: the same operations in the
// same order as the scalar code below (each product and sum rounded on its own, as there: the
// build has -ffp-contract=off), so the same bits. Cells with several breakpoints (NaN split)
// take curve_eval per value, as there.
__attribute__((target("avx512f"))) void map_values_avx512(float* vals, int64_t n, const CurveCell* cells,
                                                          const CurveSegment* segs, const CurveTableView& curve,
                                                          float lo, float range, float inv_range) {
  static_assert(sizeof(CurveCell) == 8 && sizeof(CurveSegment) == 16, "gather scales below");
  const __m512 vlo = _mm512_set1_ps(lo), vrange = _mm512_set1_ps(range), vinv = _mm512_set1_ps(inv_range);
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f), grid = _mm512_set1_ps(float(kCurveGrid));
  const __m512 end = _mm512_set1_ps(curve.ys[kCurveSegments]);
  const __m512i last_cell = _mm512_set1_epi32(kCurveGrid - 1), ione = _mm512_set1_epi32(1);
  const int* cell_seg = &cells[0].segment;
  const float* cell_split = &cells[0].split;
  for (int64_t k0 = 0; k0 < n; k0 += 16) {
    const int64_t left = n - k0;
    const __mmask16 live = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(live, vals + k0);
    __m512 t = _mm512_mul_ps(_mm512_sub_ps(v, vlo), vinv);
    t = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(t, zero, _CMP_GE_OQ), t);  // t >= 0 ? t : 0 (NaN -> 0)
    t = _mm512_mask_mov_ps(t, _mm512_cmp_ps_mask(t, one, _CMP_GT_OQ), one);
    const __m512i g = _mm512_min_epi32(_mm512_cvttps_epi32(_mm512_mul_ps(t, grid)), last_cell);
    const __m512i seg0 = _mm512_i32gather_epi32(g, cell_seg, 8);
    const __m512 split = _mm512_i32gather_ps(g, cell_split, 8);
    const __m512i seg = _mm512_mask_add_epi32(seg0, _mm512_cmp_ps_mask(t, split, _CMP_GE_OQ), seg0, ione);
    const __m512i word = _mm512_slli_epi32(seg, 2);  // a segment is 4 floats (gathers scale by at most 8)
    const __m512 x0 = _mm512_i32gather_ps(word, &segs[0].x0, 4);
    const __m512 y0 = _mm512_i32gather_ps(word, &segs[0].y0, 4);
    const __m512 slope = _mm512_i32gather_ps(word, &segs[0].slope, 4);
    __m512 f = _mm512_add_ps(y0, _mm512_mul_ps(slope, _mm512_sub_ps(t, x0)));
    const __mmask16 several = _mm512_cmp_ps_mask(split, split, _CMP_UNORD_Q) & live;
    if (__builtin_expect(several != 0, 0)) {
      alignas(64) float tf[16], ff[16];
      _mm512_store_ps(tf, t);
      _mm512_store_ps(ff, f);
      for (int k = 0; k < 16; ++k)
        if (several >> k & 1) ff[k] = curve_eval(curve.xs, curve.ys, curve.grid, tf[k]);
      f = _mm512_load_ps(ff);
    }
    f = _mm512_mask_mov_ps(f, _mm512_cmp_ps_mask(t, one, _CMP_GE_OQ), end);
    const __m512 mapped = _mm512_add_ps(vlo, _mm512_mul_ps(f, vrange));
    const __m512 out = _mm512_mask_mov_ps(mapped, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), v);  // NaN stays
    _mm512_mask_storeu_ps(vals + k0, live, out);
  }
}
#endif

namespace {

// The intensity map of n float32 values in place (intensity_map, organised for the CPU): the
// normalisation and the final scaling run in loops the compiler vectorises; only the table
// lookup is scalar. Blocks of 64 keep the intermediate arrays on the stack.
GENESIS_AVX2_CLONE void map_values_scalar(float* vals, int64_t n, const CurveCell* cells, const CurveSegment* segs,
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

#if defined(__x86_64__)
// Seconds of the faster of 5 runs of fn over a copy of `values`.
template <typename Fn>
double best_of_5(const std::vector<float>& values, Fn&& fn) {
  double best = 1e30;
  std::vector<float> v(values.size());
  for (int rep = 0; rep < 5; ++rep) {
    std::copy(values.begin(), values.end(), v.begin());
    const auto t0 = std::chrono::steady_clock::now();
    fn(v.data(), static_cast<int64_t>(v.size()));
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

// Whether the gathers beat the scalar lookups on this CPU, timed once on a fixed curve and
// 16384 uniform values (about a millisecond; either choice gives the same bits). Gathers are
// fast on some cores and slow on others (AMD Zen 4 runs them as many loads; Intel's are
// microcode-mitigated on some generations), so no rule by vendor would do. They were written on
// an Intel Xeon VM; on an AMD EPYC VM (2026-12-03, 1 thread, alternated in one process) the
// intensity map alone took 1.2x as long with them and the GenesisConfig() pipeline 1.05x
// (32x64x64x32) to 1.10x (2x160^3), and this timing picks the scalar lookups there.
bool gathers_faster() {
  const double ctrl[4] = {0.3, 0.7, 0.6, 0.2};
  std::vector<float> xs(kCurvePoints), ys(kCurvePoints), values(16384);
  std::vector<int32_t> grid(kCurveGridPoints);
  for (int i = 0; i < kCurvePoints; ++i) curve_point(i, ctrl, 1, xs[i], ys[i]);
  curve_grid_merge(xs.data(), grid.data());
  std::vector<CurveCell> cells(kCurveCellsPerSample);
  std::vector<CurveSegment> segs(kCurveSegmentsPerSample);
  curve_fast_tables(xs.data(), ys.data(), grid.data(), cells.data(), segs.data());
  const CurveTableView curve{xs.data(), ys.data(), grid.data()};
  uint32_t state = 12345;
  for (float& v : values) v = static_cast<float>((state = state * 1664525u + 1013904223u) >> 8) * 0x1p-24f;
  const auto scalar = [&](float* v, int64_t n) { map_values_scalar(v, n, cells.data(), segs.data(), curve, 0, 1, 1); };
  const auto gather = [&](float* v, int64_t n) { map_values_avx512(v, n, cells.data(), segs.data(), curve, 0, 1, 1); };
  double t_scalar = 1e30, t_gather = 1e30;
  for (int round = 0; round < 2; ++round) {  // alternated, so that a change of load hits both
    t_scalar = std::min(t_scalar, best_of_5(values, scalar));
    t_gather = std::min(t_gather, best_of_5(values, gather));
  }
  return t_gather < 0.95 * t_scalar;
}
#endif

}  // namespace

bool use_gather_map() {
#if defined(__x86_64__)
  static const bool gathers = [] {
    if (!use_avx512()) return false;
    if (const char* e = std::getenv("GENESIS_OPS_MAP_GATHERS")) return std::string(e) == "1";
    return gathers_faster();
  }();
  return gathers;
#else
  return false;
#endif
}

void map_values(float* vals, int64_t n, const CurveCell* cells, const CurveSegment* segs, const CurveTableView& curve,
                float lo, float range, float inv_range) {
#if defined(__x86_64__)
  if (use_gather_map()) return map_values_avx512(vals, n, cells, segs, curve, lo, range, inv_range);
#endif
  map_values_scalar(vals, n, cells, segs, curve, lo, range, inv_range);
}

}  // namespace cpu
}  // namespace genesis
