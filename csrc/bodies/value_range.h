#pragma once
// The per-sample value range (value_range="per_sample"; docs/SPEC.md, section 4.8): the min and
// max of a sample's finite values over all its channels, which replace (lo, range) in its
// SampleParams before the voxel stage, so that the curve runs in that sample's min-max
// normalised space and the fill noise is drawn in its range. One range per sample, not per
// channel: the curve and the painting are shared by a sample's channels (docs/SPEC.md, section
// 3.3), and one range keeps channels that were on one scale on one scale.
//
// Min and max are exact whatever the order of the reduction, so every engine (one pass on the
// CPU, a block reduction on the GPU, the emulation's thread-by-thread run) gets the same range
// without a host synchronisation: the range never leaves the device.
#include "bodies/half.h"
#include "bodies/params.h"

namespace genesis {

// A partial min/max. Empty: mn = +inf, mx = -inf (mx >= mn fails).
struct RangeAcc {
  float mn, mx;
};

GENESIS_HD RangeAcc range_empty() { return RangeAcc{bits_float(0x7f800000u), bits_float(0xff800000u)}; }

// Adds v if it is finite (v - v is 0 only for finite v: inf - inf and NaN - NaN are NaN).
GENESIS_HD void range_add(RangeAcc& a, float v) {
  if (v - v == 0.0f) {
    a.mn = v < a.mn ? v : a.mn;
    a.mx = v > a.mx ? v : a.mx;
  }
}

GENESIS_HD void range_merge(RangeAcc& a, const RangeAcc& o) {
  a.mn = o.mn < a.mn ? o.mn : a.mn;
  a.mx = o.mx > a.mx ? o.mx : a.mx;
}

// The number of values of a sample: all its channels.
GENESIS_HD int64_t sample_values(const Shape& shape) { return shape.channels * shape.spatial(); }

// Values first, first + step, ... (below end) of sample b, in float32.
template <typename T>
GENESIS_HD RangeAcc range_partial(const T* x, const Shape& shape, int64_t b, int64_t first, int64_t end, int64_t step) {
  const T* xb = x + b * sample_values(shape);
  RangeAcc a = range_empty();
  for (int64_t i = first; i < end; i += step) range_add(a, to_float(xb[i]));
  return a;
}

// The sample's range from its reduced min/max: lo = mn, range = mx - mn (float32). Adding +0
// turns a -0 min or max into +0, since which zero a reduction keeps depends on its order. A
// sample with no spread (constant, no finite value, or a difference that overflows float32) has
// range 0: its curve is switched off (there is no normalised space to run it in) and its noise
// is lo (0 without a finite value).
GENESIS_HD void range_finish(SampleParams& p, RangeAcc a) {
  float lo = 0.0f, range = 0.0f;
  if (a.mx >= a.mn) {
    lo = a.mn + 0.0f;
    range = (a.mx + 0.0f) - lo;
    if (!(range > 0.0f && range - range == 0.0f)) range = 0.0f;
  }
  p.lo = lo;
  p.range = range;
  if (range == 0.0f) p.nonlinear = 0;
}

}  // namespace genesis
