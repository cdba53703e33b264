#pragma once
// Per-voxel bodies of the Models Genesis pipeline, shared by the CPU engine, the CUDA kernels
// and the CPU emulation of the CUDA launch. Pipeline (docs/SPEC.md, section 2):
//   target = flip(x);  input = paint(nonlinear(shuffle(target)))
// Every output voxel is a pure function of (x, seed, sample index, parameters), which is what
// makes results independent of threads, launch order, batch split and device.
#include "bodies/bezier.h"
#include "bodies/half.h"
#include "bodies/params.h"

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

// Fill noise: uniform in [lo, lo + range), one Philox word per (sample, channel, voxel): word v
// of stream c (purpose kNoise), so one block holds the noise of 4 consecutive voxels.
GENESIS_HD float noise_from_word(uint32_t w, float lo, float range) { return lo + range * uniform01f(w); }

// ---- local pixel shuffling ------------------------------------------------------------------
// Window k of a sample writes a Fisher-Yates (Durstenfeld) permutation of its voxels, read from
// the unshuffled volume: for i = n-1 .. 1: j_i = uniform{0..i} (word i of stream kShufflePerm/k);
// swap(a[i], a[j_i]); window position p then receives source position a[p]. The last window
// covering a voxel wins. Each engine builds a window's permutation once: the CPU in
// cpu/shuffle_map.cpp, the GPU with one warp per window (launch_bodies.h, window_*).

// ---- the value of one output voxel ------------------------------------------------------------

// Everything the CPU's row bodies need about a sample.
struct SampleView {
  const SampleParams& params;  // a reference, not a 200-byte copy
  CurveTableView curve;        // valid when params.nonlinear
  uint32_t sample;
};

}  // namespace genesis
