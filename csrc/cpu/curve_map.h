#pragma once
// The intensity map on the CPU: lookup tables built from a sample's curve polyline
// (bodies/bezier.h) and a map over float32 values with the same results as intensity_map.
// Torch-free.
#include <cstdint>

#include "bodies/bezier.h"

namespace genesis {
namespace cpu {

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
void curve_grid_merge(const float* xs, int32_t* grid);

// cells[kCurveCellsPerSample] and segs[kCurveSegmentsPerSample] of a sample from its polyline
// and index grid.
void curve_fast_tables(const float* xs, const float* ys, const int32_t* grid, CurveCell* cells, CurveSegment* segs);

// Whether map_values uses AVX-512 gathers for its table lookups (else scalar loads): where
// use_avx512() and, timed once per process, they are the faster on this CPU;
// GENESIS_OPS_MAP_GATHERS=1 or =0 forces the choice (tests run both). The same bits either way.
bool use_gather_map();

// vals[k] = intensity_map(curve, vals[k], lo, range, inv_range) for k < n, in place.
void map_values(float* vals, int64_t n, const CurveCell* cells, const CurveSegment* segs, const CurveTableView& curve,
                float lo, float range, float inv_range);

}  // namespace cpu
}  // namespace genesis
