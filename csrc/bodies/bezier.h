#pragma once
// The non-linear intensity map. The Bezier curve B(s) = (1-s)^3 P0 + 3(1-s)^2 s P1
// + 3(1-s) s^2 P2 + s^3 P3 with P0 = (0,0), P3 = (1,1) is sampled at kCurveSegments + 1
// uniformly spaced s (in double, rounded to float), giving a monotone polyline (Bx and By are
// monotone in s for control points in the unit square). A voxel's value t in [0, 1] is mapped
// by finding its polyline segment (a uniform index grid narrows the search to a few entries)
// and interpolating linearly along it. Following the curve parametrically keeps the error
// small even where f is steep (Bx'(s) near 0), unlike a table uniform in x.
#include "bodies/host_device.h"

namespace genesis {

constexpr int kCurveSegments = 2048;  // polyline segments (uniform in s)
constexpr int kCurveGrid = 4096;      // index grid cells (uniform in t); finer than the
                                      // polyline so most cells hold at most one breakpoint
constexpr int kCurvePoints = kCurveSegments + 1;
constexpr int kCurveGridPoints = kCurveGrid + 1;

// Per-sample table: xs/ys of the polyline, grid[g] = largest i < kCurveSegments with
// xs[i] <= g / kCurveGrid.
struct CurveTableView {
  float* xs;
  float* ys;
  int32_t* grid;
};

GENESIS_HD double bezier_coord(double s, double c1, double c2) {
  const double r = 1.0 - s;
  return 3.0 * r * r * s * c1 + 3.0 * r * s * s * c2 + s * s * s;
}

// Polyline point i for control points ctrl = (P1x, P1y, P2x, P2y).
GENESIS_HD void curve_point(int i, const double* ctrl, int increasing, float& x, float& y) {
  const double s = static_cast<double>(i) / kCurveSegments;
  const double sy = increasing ? s : static_cast<double>(kCurveSegments - i) / kCurveSegments;
  x = static_cast<float>(bezier_coord(s, ctrl[0], ctrl[2]));
  y = static_cast<float>(bezier_coord(sy, ctrl[1], ctrl[3]));
}

// Largest i in [lo, hi] with xs[i] <= t, given xs[lo] <= t (binary search).
GENESIS_HD int curve_segment(const float* xs, int lo, int hi, float t) {
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (xs[mid] <= t) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// The value t of grid point g: g / kCurveGrid in float32.
GENESIS_HD float curve_grid_t(int g) { return static_cast<float>(g) / static_cast<float>(kCurveGrid); }

// Grid entry g (needs the complete xs of this sample).
GENESIS_HD int32_t curve_grid_entry(const float* xs, int g) {
  return curve_segment(xs, 0, kCurveSegments - 1, curve_grid_t(g));
}

// Slope of polyline segment i (its width dx > 0). f on segment i is ys[i] + slope * (t - xs[i]):
// the slope is a per-segment constant, so the CPU can tabulate it (no division per voxel).
GENESIS_HD float segment_slope(const float* xs, const float* ys, int i) {
  return (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i]);
}

// f(t) for t in [0, 1].
GENESIS_HD float curve_eval(const float* xs, const float* ys, const int32_t* grid, float t) {
  if (t >= 1.0f) return ys[kCurveSegments];  // exact end point (slope * dx need not round to dy)
  int g = static_cast<int>(t * static_cast<float>(kCurveGrid));
  if (g > kCurveGrid - 1) g = kCurveGrid - 1;
  const int lo = grid[g], hi = grid[g + 1];
  // Cells holding at most one breakpoint (the common case) need one branch-free comparison.
  const int i =
      hi - lo <= 1 ? lo + (static_cast<int>(lo < hi) & static_cast<int>(xs[hi] <= t)) : curve_segment(xs, lo, hi, t);
  const float dx = xs[i + 1] - xs[i];
  if (!(dx > 0.0f)) return ys[i + 1];
  return ys[i] + segment_slope(xs, ys, i) * (t - xs[i]);
}

// The intensity map of one value: clamp to [lo, hi], normalise, map, scale back. NaN stays NaN.
// inv_range = 1 / (hi - lo) in float32 (a multiplication per voxel instead of a division).
GENESIS_HD float intensity_map(const float* xs, const float* ys, const int32_t* grid, float v, float lo, float range,
                               float inv_range) {
  if (v != v) return v;
  float t = (v - lo) * inv_range;
  if (t < 0.0f) t = 0.0f;
  if (t > 1.0f) t = 1.0f;
  return lo + curve_eval(xs, ys, grid, t) * range;
}

}  // namespace genesis
