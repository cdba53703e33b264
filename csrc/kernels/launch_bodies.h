#pragma once
// The bodies of the CUDA kernels, one call per grid point. csrc/cuda/pipeline_kernels.cu wraps
// each in a thin __global__ function; csrc/emulate/emulate_cuda.cpp runs the same bodies over
// the whole grid on the CPU so that tests exercise what the GPU runs on machines without one.
//
// Launch sequence (one launch per stage):
//   1. params_body       grid (B)                  per-sample random parameters
//   2. curve_point_body  grid (B, kCurvePoints)    polyline of the intensity curve
//      curve_grid_body   grid (B, kCurveGridPoints) index grid (needs all points of its sample)
//   3. owner_body        grid (B, num_windows)     owner[b, v] = max k of windows covering v
//   4. voxel_body        grid (B, spatial)         input and target of one voxel, all channels
#include "kernels/pipeline.h"

namespace genesis {

GENESIS_HD void params_body(const PipelineConfig& cfg, const Shape& shape, SampleParams* params, int64_t b) {
  params[b] = draw_sample_params(cfg, shape, b);
}

// Parameters given explicitly (the bezier op): control points (B, 4) and directions (B).
GENESIS_HD void explicit_params_body(const double* ctrl, const uint8_t* increasing, SampleParams* params,
                                     int64_t b) {
  SampleParams p;
  p.flip_mask = 0;
  p.shuffle = 0;
  p.nonlinear = 1;
  p.increasing = increasing[b] != 0;
  for (int i = 0; i < 4; ++i) p.ctrl[i] = ctrl[4 * b + i];
  p.paint = kPaintNone;
  p.num_boxes = 0;
  params[b] = p;
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
GENESIS_HD void owner_body(const PipelineConfig& cfg, const Shape& shape, const SampleParams* params,
                           int32_t* owner, int64_t b, int64_t k, AtomicMax atomic_max) {
  if (!params[b].shuffle) return;
  const Box w = shuffle_window(cfg.seed, sample_index(cfg, b), static_cast<uint32_t>(k), shape);
  int32_t* own = owner + b * shape.spatial();
  for (int64_t z = w.start[0]; z < w.start[0] + w.size[0]; ++z)
    for (int64_t y = w.start[1]; y < w.start[1] + w.size[1]; ++y)
      for (int64_t x = w.start[2]; x < w.start[2] + w.size[2]; ++x)
        atomic_max(own + (z * shape.dim[1] + y) * shape.dim[2] + x, static_cast<int32_t>(k));
}

template <typename T>
GENESIS_HD void voxel_body(const T* x, T* input, T* target, const Shape& shape, const PipelineConfig& cfg,
                           const SampleParams* params, float* xs, float* ys, int32_t* grid, const int32_t* owner,
                           int64_t b, int64_t v) {
  SampleView sv;
  sv.params = params[b];
  sv.sample = sample_index(cfg, b);
  sv.curve = curve_view(xs, ys, grid, b);
  int64_t z, y, xx;
  unravel(shape, v, z, y, xx);
  int64_t shuffled = v;
  if (sv.params.shuffle) {
    const int32_t k = owner[b * shape.spatial() + v];
    if (k >= 0) shuffled = shuffle_source(cfg, shape, sv.sample, static_cast<uint32_t>(k), z, y, xx);
  }
  pipeline_voxel(x, input, target, shape, cfg, sv, b, z, y, xx, shuffled);
}

}  // namespace genesis
