#pragma once
// Per-sample random parameters of every transform, drawn from Philox words exactly as
// genesis_ops/reference.py draws them. One SampleParams per sample; the voxel bodies only
// read it. See docs/SPEC.md (section 3) and the reference for the word layout.
#include "bodies/geometry.h"
#include "bodies/philox.h"

namespace genesis {

constexpr int kMaxPaintBoxes = 5;  // in-painting: up to 5 boxes; out-painting: 1 + up to 4
constexpr double kPaintContinue = 0.95;
constexpr int kPaintMargin = 3;
constexpr int kMaxFlips = 3;

// The op a call runs (one row each in csrc/op_table.h, in this order). Besides the stage
// probabilities below, it decides what only the op knows: models_genesis alone returns a target
// too, the bezier op's per-sample parameters are given instead of drawn, and the flip op's result
// is flip(x) (the CPU engine then runs only its flip pass). The mask-only ops (paint_mask,
// shuffle_mask) write no image: only the region that painting, or the shuffle's windows, would
// cover (docs/SPEC.md, section 4.7), from the same words.
enum class OpKind : int32_t {
  kModelsGenesis,
  kFlip,
  kLocalShuffle,
  kNonlinear,
  kInpaint,
  kOutpaint,
  kBezier,
  kPaintMask,
  kShuffleMask,
  kCount  // not an op: the number of ops, so that every table sized by it follows this list
};
constexpr int kNumOps = static_cast<int>(OpKind::kCount);

// Bits of a corruption mask byte (docs/SPEC.md, section 4.7), in the target's frame.
constexpr uint8_t kMaskShuffled = 1;  // the voxel lies in a shuffle window (the sample's shuffle ran)
constexpr uint8_t kMaskPainted = 2;   // the voxel was replaced by fill noise

// The bezier op's per-sample parameters: control points (B, 4) float64 (P1x, P1y, P2x, P2y) and
// directions (B,) bool, contiguous, on the engine's device (null for every other op).
struct GivenCurves {
  const double* ctrl;
  const uint8_t* increasing;
};

// Everything an engine needs to know about a call besides x: the op, its stage probabilities and
// sizes, and the random stream. A single op is the pipeline with the other stages' probabilities
// set to 0 (a stage with probability 0 draws nothing that matters). Built, with every field
// checked, by make_config (csrc/op_common.h).
struct PipelineConfig {
  OpKind op;
  double flip_p;        // continue probability of each of up to 3 flips
  double shuffle_p;     // local pixel shuffling gate
  int64_t num_windows;  // shuffle windows per sample
  double nonlinear_p;   // Bezier intensity gate
  double paint_p;       // painting gate
  double inpaint_rate;  // P(in-painting | painting); otherwise out-painting
  double inpaint_p;     // in-painting's own gate (1 inside the pipeline)
  double outpaint_p;    // out-painting's own gate (1 inside the pipeline)
  float lo, hi;         // value range
  // 1: each sample's own min and max instead of lo, hi (bodies/value_range.h)
  int32_t per_sample_range;
  uint64_t seed;
  int64_t sample_offset;  // sample index of x[0] in the random streams
  // Where seed and sample_offset are read from instead, when not null: the caller's 0-dim int64
  // tensors on the device (a tensor seed on the CUDA engine and its emulation). The kernels read
  // them when they run, so no host synchronisation is needed and a replayed CUDA graph sees the
  // values the caller last wrote. Only draw_sample_params reads the stream; every later body takes
  // it from SampleParams.
  const int64_t* seed_src;
  const int64_t* offset_src;
  GivenCurves given;  // the bezier op
};

enum PaintMode : int32_t { kPaintNone = 0, kPaintIn = 1, kPaintOut = 2 };

struct SampleParams {
  int32_t flip_mask;   // bit a set: flip spatial axis a (0 = D, 1 = H, 2 = W)
  int32_t shuffle;     // 1: local pixel shuffling applies
  int32_t nonlinear;   // 1: Bezier map applies
  int32_t increasing;  // 1: f(Bx(s)) = By(s); 0: f(Bx(s)) = By(1 - s)
  double ctrl[4];      // P1x, P1y, P2x, P2y
  int32_t paint;       // PaintMode
  int32_t num_boxes;   // boxes (in-painting) or windows (out-painting)
  Box boxes[kMaxPaintBoxes];
  float lo, range;  // the sample's value range: cfg's, or its own (bodies/value_range.h)
  uint64_t seed;    // the call's seed and
  uint32_t sample;  // this sample's index in the random streams (sample_offset + b)
};

GENESIS_HD uint32_t sample_index(const PipelineConfig& cfg, int64_t b) {
  return static_cast<uint32_t>(cfg.sample_offset + b);
}

// Uniform integer in {lo, ..., hi} (hi >= lo).
GENESIS_HD int64_t uniform_between(uint32_t w, int64_t lo, int64_t hi) {
  return lo + static_cast<int64_t>(uniform_below(w, static_cast<uint64_t>(hi - lo + 1)));
}

// Position of a box of side `size` along an axis of length `dim`, keeping `kPaintMargin`
// voxels from both borders, or as much margin as fits.
GENESIS_HD int64_t margin_position(uint32_t w, int64_t dim, int64_t size) {
  const int64_t m = min64(kPaintMargin, (dim - size) / 2);
  return uniform_between(w, m, dim - size - m);
}

// In-painting box side: uniform in {dim/6 .. dim/3}, at least 1.
GENESIS_HD void inpaint_side_range(int64_t dim, int64_t& lo, int64_t& hi) {
  lo = max64(1, dim / 6);
  hi = max64(lo, dim / 3);
}

// Out-painting window side: dim - uniform{3*dim/7 .. 4*dim/7}, at least 1.
GENESIS_HD void outpaint_cut_range(int64_t dim, int64_t& lo, int64_t& hi) {
  lo = (3 * dim) / 7;
  hi = (4 * dim) / 7;
}

// Geometry of box number `box` drawn from words [base, base + 2 nd) of stream `s`.
template <bool kOutpaint>
GENESIS_HD Box draw_paint_box(const Stream& s, uint32_t base, const Shape& shape) {
  Box box;
  for (int a = 0; a < 3; ++a) {
    box.start[a] = 0;
    box.size[a] = 1;
  }
  const int first = shape.first_axis();
  for (int a = first; a < 3; ++a) {
    const uint32_t k = static_cast<uint32_t>(a - first);
    const int64_t dim = shape.dim[a];
    int64_t lo, hi, size;
    if (kOutpaint) {
      outpaint_cut_range(dim, lo, hi);
      size = max64(1, dim - uniform_between(s.word(base + k), lo, hi));
    } else {
      inpaint_side_range(dim, lo, hi);
      size = min64(dim, uniform_between(s.word(base + k), lo, hi));
    }
    box.size[a] = static_cast<int32_t>(size);
    box.start[a] = static_cast<int32_t>(margin_position(s.word(base + static_cast<uint32_t>(shape.nd) + k), dim, size));
  }
  return box;
}

// Shuffle window from its 2 nd words: side uniform in {1 .. max(1, dim/10)} (words 0..nd-1),
// position uniform so that it fits (words nd..2nd-1). ND is a template parameter so that every
// array index is a constant after unrolling: the GPU keeps w and the box in registers (a
// run-time index puts them on the thread's stack).
template <int ND>
GENESIS_HD Box window_from_words_nd(const uint32_t* w, const Shape& shape) {
  Box box;
  GENESIS_UNROLL
  for (int a = 0; a < 3; ++a) {
    box.start[a] = 0;
    box.size[a] = 1;
  }
  GENESIS_UNROLL
  for (int k_axis = 0; k_axis < ND; ++k_axis) {
    const int a = 3 - ND + k_axis;
    const int64_t dim = shape.dim[a];
    const int64_t size = 1 + uniform_below(w[k_axis], static_cast<uint64_t>(max64(1, dim / 10)));
    box.size[a] = static_cast<int32_t>(size);
    box.start[a] = static_cast<int32_t>(uniform_below(w[ND + k_axis], static_cast<uint64_t>(dim - size + 1)));
  }
  return box;
}

GENESIS_HD Box window_from_words(const uint32_t* w, const Shape& shape) {
  return shape.nd == 3 ? window_from_words_nd<3>(w, shape) : window_from_words_nd<2>(w, shape);
}

// Shuffle window k of a sample (stream k of kShuffleWindow).
GENESIS_HD Box shuffle_window(uint64_t seed, uint32_t sample, uint32_t k, const Shape& shape) {
  const Stream s(seed, sample, kShuffleWindow, k);
  const Words4 w0 = s.block(0), w1 = s.block(1);
  const uint32_t w[8] = {w0.w[0], w0.w[1], w0.w[2], w0.w[3], w1.w[0], w1.w[1], w1.w[2], w1.w[3]};
  return window_from_words(w, shape);
}

GENESIS_HD SampleParams draw_sample_params(const PipelineConfig& cfg, const Shape& shape, int64_t b) {
  SampleParams p;
  const uint64_t seed = cfg.seed_src != nullptr ? static_cast<uint64_t>(*cfg.seed_src) : cfg.seed;
  const uint32_t sample = static_cast<uint32_t>((cfg.offset_src != nullptr ? *cfg.offset_src : cfg.sample_offset) + b);
  p.seed = seed;
  p.sample = sample;
  // Flip: up to 3 times, continue with probability flip_p, flip one uniformly chosen axis.
  p.flip_mask = 0;
  {
    const Stream s(seed, sample, kFlip, 0);
    const Words4 w0 = s.block(0), w1 = s.block(1);
    const uint32_t w[6] = {w0.w[0], w0.w[1], w0.w[2], w0.w[3], w1.w[0], w1.w[1]};
    for (int t = 0; t < kMaxFlips; ++t) {
      if (!(uniform01(w[2 * t]) < cfg.flip_p)) break;
      const int axis = shape.first_axis() + static_cast<int>(uniform_below(w[2 * t + 1], shape.nd));
      p.flip_mask ^= 1 << axis;
    }
  }
  // Local pixel shuffling gate (windows are drawn per window, see shuffle_window).
  p.shuffle = uniform01(Stream(seed, sample, kShuffleGate, 0).word(0)) < cfg.shuffle_p && cfg.num_windows > 0;
  // Non-linear intensity: gate, P1x, P1y, P2x, P2y, direction.
  {
    const Stream s(seed, sample, kNonlinear, 0);
    const Words4 w0 = s.block(0), w1 = s.block(1);
    p.nonlinear = uniform01(w0.w[0]) < cfg.nonlinear_p;
    p.ctrl[0] = uniform01(w0.w[1]);
    p.ctrl[1] = uniform01(w0.w[2]);
    p.ctrl[2] = uniform01(w0.w[3]);
    p.ctrl[3] = uniform01(w1.w[0]);
    p.increasing = uniform01(w1.w[1]) < 0.5;
  }
  // Painting: gate, then in- vs out-painting, then that transform's own gate and boxes.
  p.paint = kPaintNone;
  p.num_boxes = 0;
  const Stream paint(seed, sample, kPaint, 0);
  const Words4 pw = paint.block(0);
  if (uniform01(pw.w[0]) < cfg.paint_p) {
    const uint32_t per_box = 1u + 2u * static_cast<uint32_t>(shape.nd);
    if (uniform01(pw.w[1]) < cfg.inpaint_rate) {
      const Stream s(seed, sample, kInpaint, 0);
      if (uniform01(s.word(0)) < cfg.inpaint_p) {
        p.paint = kPaintIn;
        for (int k = 0; k < kMaxPaintBoxes; ++k) {
          const uint32_t base = 1u + static_cast<uint32_t>(k) * per_box;
          if (!(uniform01(s.word(base)) < kPaintContinue)) break;
          p.boxes[p.num_boxes++] = draw_paint_box<false>(s, base + 1u, shape);
        }
      }
    } else {
      const Stream s(seed, sample, kOutpaint, 0);
      if (uniform01(s.word(0)) < cfg.outpaint_p) {
        p.paint = kPaintOut;
        p.boxes[p.num_boxes++] = draw_paint_box<true>(s, 1u, shape);
        for (int k = 0; k < kMaxPaintBoxes - 1; ++k) {
          const uint32_t base = 1u + 2u * static_cast<uint32_t>(shape.nd) + static_cast<uint32_t>(k) * per_box;
          if (!(uniform01(s.word(base)) < kPaintContinue)) break;
          p.boxes[p.num_boxes++] = draw_paint_box<true>(s, base + 1u, shape);
        }
      }
    }
  }
  return p;
}

}  // namespace genesis
