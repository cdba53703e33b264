#pragma once
// Per-voxel bodies of the Models Genesis pipeline, shared by the CPU kernels, the CUDA kernels
// and the CPU emulation of the CUDA launch. Pipeline (docs/SPEC.md, section 2):
//   target = flip(x);  input = paint(nonlinear(shuffle(target)))
// Every output voxel is a pure function of (x, seed, sample index, parameters), which is what
// makes results independent of threads, launch order, batch split and device.
#include "kernels/bezier.h"
#include "kernels/half.h"
#include "kernels/params.h"

namespace genesis {

// Spatial index (into x) that target voxel (z, y, x) reads after the sample's flips.
GENESIS_HD int64_t flip_source(const Shape& shape, int32_t mask, int64_t z, int64_t y, int64_t x) {
  if (mask & 1) z = shape.dim[0] - 1 - z;
  if (mask & 2) y = shape.dim[1] - 1 - y;
  if (mask & 4) x = shape.dim[2] - 1 - x;
  return (z * shape.dim[1] + y) * shape.dim[2] + x;
}

GENESIS_HD void unravel(const Shape& shape, int64_t v, int64_t& z, int64_t& y, int64_t& x) {
  x = v % shape.dim[2];
  const int64_t zy = v / shape.dim[2];
  y = zy % shape.dim[1];
  z = zy / shape.dim[1];
}

// Does painting replace voxel (z, y, x) by noise? In-painting replaces the inside of its
// boxes, out-painting everything outside its windows.
GENESIS_HD bool paint_replaces(const SampleParams& p, int64_t z, int64_t y, int64_t x) {
  if (p.paint == kPaintNone) return false;
  bool inside = false;
  for (int k = 0; k < p.num_boxes; ++k) inside = inside || p.boxes[k].contains(z, y, x);
  return p.paint == kPaintIn ? inside : !inside;
}

// Fill noise: uniform in [lo, lo + range), one Philox word per (sample, channel, voxel).
GENESIS_HD float noise_from_word(uint32_t w, float lo, float range) { return lo + range * uniform01f(w); }

GENESIS_HD float noise_value(uint64_t seed, uint32_t sample, int64_t c, int64_t v, float lo, float range) {
  return noise_from_word(Stream(seed, sample, kNoise, static_cast<uint32_t>(c)).word(static_cast<uint32_t>(v)),
                         lo, range);
}

// ---- local pixel shuffling ------------------------------------------------------------------
// Window k of a sample writes a Fisher-Yates (Durstenfeld) permutation of its voxels, read from
// the unshuffled volume: for i = n-1 .. 1: j_i = uniform{0..i}; swap(a[i], a[j_i]); window
// position p then receives source position a[p]. The last window covering a voxel wins.

// Draw j_i of window k (stream kShufflePerm/k, word i).
GENESIS_HD uint32_t fisher_yates_draw(const Stream& s, uint32_t i) { return uniform_below(s.word(i), i + 1u); }

// a[p] of the permutation above without building it: position p is final after step p, when it
// receives what position j_p held; what a position q holds before step t is found by following
// the later steps (t+1, t+2, ...) that moved a value into it. O(n - p) draws, no memory.
GENESIS_HD uint32_t fisher_yates_entry(const Stream& s, uint32_t n, uint32_t p) {
  uint32_t cur = p == 0 ? 0u : fisher_yates_draw(s, p);
  uint32_t i = p + 1u;
  // Walk 4 words (one Philox block) at a time where possible.
  while (i < n && (i & 3u) != 0u) {
    if (fisher_yates_draw(s, i) == cur) cur = i;
    ++i;
  }
  while (i < n) {
    const Words4 w = s.block(i >> 2);
    for (uint32_t q = 0; q < 4u && i < n; ++q, ++i) {
      if (uniform_below(w.w[q], i + 1u) == cur) cur = i;
    }
  }
  return cur;
}

// Spatial index of voxel `local` (row-major inside window `w`).
GENESIS_HD int64_t window_voxel(const Shape& shape, const Box& w, int64_t local) {
  const int64_t lx = local % w.size[2];
  const int64_t lzy = local / w.size[2];
  const int64_t ly = lzy % w.size[1];
  const int64_t lz = lzy / w.size[1];
  return ((w.start[0] + lz) * shape.dim[1] + (w.start[1] + ly)) * shape.dim[2] + (w.start[2] + lx);
}

// Source of voxel (z, y, x), owned by window k (the last window covering it), in the
// unshuffled volume.
GENESIS_HD int64_t shuffle_source(const PipelineConfig& cfg, const Shape& shape, uint32_t sample, uint32_t k,
                                  int64_t z, int64_t y, int64_t x) {
  const Box w = shuffle_window(cfg.seed, sample, k, shape);
  const int64_t p = ((z - w.start[0]) * w.size[1] + (y - w.start[1])) * w.size[2] + (x - w.start[2]);
  const Stream s(cfg.seed, sample, kShufflePerm, k);
  const uint32_t src = fisher_yates_entry(s, static_cast<uint32_t>(w.volume()), static_cast<uint32_t>(p));
  return window_voxel(shape, w, src);
}

// ---- the value of one output voxel ------------------------------------------------------------

// Everything a voxel body needs about its sample.
struct SampleView {
  SampleParams params;
  CurveTableView curve;  // valid when params.nonlinear
  uint32_t sample;
};

// Write input (and target, if not null) of voxel (z, y, x) for all channels of sample b.
// `shuffled` is the spatial index (in target coordinates) the shuffle reads for this voxel, or
// the voxel itself when the sample is not shuffled.
template <typename T>
GENESIS_HD void pipeline_voxel(const T* __restrict__ x, T* __restrict__ input, T* __restrict__ target,
                               const Shape& shape, const PipelineConfig& cfg, const SampleView& sv, int64_t b,
                               int64_t z, int64_t y, int64_t xx, int64_t shuffled) {
  const int64_t S = shape.spatial();
  const int64_t v = (z * shape.dim[1] + y) * shape.dim[2] + xx;
  const SampleParams& p = sv.params;
  const int64_t tgt_src = flip_source(shape, p.flip_mask, z, y, xx);
  int64_t in_src = tgt_src;
  if (shuffled != v) {
    int64_t sz, sy, sx;
    unravel(shape, shuffled, sz, sy, sx);
    in_src = flip_source(shape, p.flip_mask, sz, sy, sx);
  }
  const bool noise = paint_replaces(p, z, y, xx);
  const float range = cfg.hi - cfg.lo;
  for (int64_t c = 0; c < shape.channels; ++c) {
    const int64_t plane = (b * shape.channels + c) * S;
    if (target != nullptr) target[plane + v] = x[plane + tgt_src];
    T out;
    if (noise) {
      out = FromFloat<T>::apply(noise_value(cfg.seed, sv.sample, c, v, cfg.lo, range));
    } else if (p.nonlinear) {
      out = FromFloat<T>::apply(
          intensity_map(sv.curve.xs, sv.curve.ys, sv.curve.grid, to_float(x[plane + in_src]), cfg.lo, range,
                        1.0f / range));
    } else {
      out = x[plane + in_src];
    }
    input[plane + v] = out;
  }
}

}  // namespace genesis
