// The CPU engine of every genesis op (CpuEngine; the entry points are op_entries.h's) and the
// CPU registrations. All ops run the one pipeline with their own stage probabilities, so the
// fused pipeline equals the composition of the single ops by construction. Per sample:
// parameters, curve tables (curve_map.h) and the shuffle's source map (shuffle_map.h); then rows
// of voxels: targets (flip), then inputs (shuffle gather, intensity map, painting). Every voxel
// is a pure function of its coordinates, so results do not depend on the thread count or on the
// schedule (whole samples or rows per task).
#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>

#include "cpu/curve_map.h"
#include "cpu/philox_simd.h"
#include "cpu/shuffle_map.h"
#include "bodies/launch_bodies.h"
#include "op_entries.h"

namespace genesis {
namespace {

using namespace cpu;

// Runs fn(begin, end) over [0, n) in chunks handed out dynamically to torch's threads: the
// work per sample varies (each stage has its own gate), so a static split would leave threads
// idle. Results do not depend on which thread does what.
template <typename Fn>
void parallel_dynamic(int64_t n, int64_t chunk, const Fn& fn) {
  if (n <= 0) return;
  const int64_t threads = std::min<int64_t>(torch::stable::get_num_threads(), (n + chunk - 1) / chunk);
  if (threads <= 1) {
    fn(0, n);
    return;
  }
  std::atomic<int64_t> next{0};
  torch::stable::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t begin = next.fetch_add(chunk); begin < n; begin = next.fetch_add(chunk))
      fn(begin, std::min(n, begin + chunk));
  });
}

struct RowScratch {
  std::vector<uint8_t> replace;  // painting replaces voxel x of the row
  std::vector<float> values;     // the row in float32 (intensity map, fill noise)
  std::vector<uint32_t> words;   // Philox words of the row's fill noise, in voxel order
};

// Which voxels of row (z, y) painting replaces (paint_replaces, per row from the boxes):
// replace[0 .. W) = 0 or 1 (p.paint != kPaintNone). Returns how many.
int64_t paint_row(const SampleParams& p, int64_t z, int64_t y, int64_t W, std::vector<uint8_t>& replace) {
  replace.assign(W, p.paint == kPaintOut ? 1 : 0);
  for (int k = 0; k < p.num_boxes; ++k) {
    const Box& bx = p.boxes[k];
    if (z < bx.start[0] || z >= bx.start[0] + bx.size[0] || y < bx.start[1] || y >= bx.start[1] + bx.size[1]) continue;
    for (int64_t xx = bx.start[2]; xx < bx.start[2] + bx.size[2]; ++xx) replace[xx] = p.paint == kPaintIn ? 1 : 0;
  }
  int64_t replaced = 0;
  for (int64_t xx = 0; xx < W; ++xx) replaced += replace[xx];
  return replaced;
}

// Bit x of row (z, y) of a claim bitmap (rows of claim_row_words words): 0 or 1.
inline uint8_t claim_bit(const uint64_t* claim_row, int64_t x) {
  return static_cast<uint8_t>((claim_row[x >> 6] >> (x & 63)) & 1);
}

// kSpreadBits[b]: byte i is bit i of b (0 or 1), in memory order on a little-endian CPU: 8 claim
// bits become 8 mask bytes with one load.
constexpr std::array<uint64_t, 256> spread_bits_table() {
  std::array<uint64_t, 256> t{};
  for (int b = 0; b < 256; ++b)
    for (int i = 0; i < 8; ++i) t[b] |= static_cast<uint64_t>((b >> i) & 1) << (8 * i);
  return t;
}
constexpr std::array<uint64_t, 256> kSpreadBits = spread_bits_table();
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "kSpreadBits is laid out for little-endian CPUs");

// The mask bytes of a row of W voxels: kMaskShuffled from the row of the claim bitmap (null: the
// sample's shuffle did not run), kMaskPainted from replace (0/1 per voxel; null: none replaced).
// 8 voxels at a time: one table load for the claims, one 8-byte load for replace (0/1 bytes, so
// << 1 stays within each byte).
void mask_row_bytes(uint8_t* out, int64_t W, const uint64_t* claim_row, const uint8_t* replace) {
  int64_t x0 = 0;
  for (; x0 + 8 <= W; x0 += 8) {
    uint64_t v = claim_row != nullptr ? kSpreadBits[(claim_row[x0 >> 6] >> (x0 & 63)) & 0xff] : 0;
    if (replace != nullptr) {
      uint64_t r;
      std::memcpy(&r, replace + x0, 8);
      v |= r << 1;
    }
    std::memcpy(out + x0, &v, 8);
  }
  for (; x0 < W; ++x0)
    out[x0] = static_cast<uint8_t>((claim_row != nullptr ? claim_bit(claim_row, x0) : 0) |
                                   (replace != nullptr ? replace[x0] << 1 : 0));
}

// Input row (z, y) of sample b, all channels, and its mask bytes where mask_row is not null
// (claim_row: the row of the sample's claim bitmap, null where its shuffle did not run). Same
// values as voxel_group_body (the GPU body), organised for the CPU: targets are already written,
// so the shuffle reads the flipped volume directly; painting is decided per row from the boxes;
// one Philox block serves 4 noise voxels.
template <typename T>
void input_row(const T* x, T* input, const T* target, const Shape& shape, const PipelineConfig& cfg,
               const SampleView& sv, const CurveCell* cells, const CurveSegment* segs, const int32_t* map, int64_t b,
               int64_t z, int64_t y, RowScratch& scratch, uint8_t* mask_row, const uint64_t* claim_row) {
  std::vector<uint8_t>& replace = scratch.replace;
  std::vector<float>& values = scratch.values;
  const SampleParams& p = sv.params;
  const int64_t S = shape.spatial(), W = shape.dim[2];
  const int64_t row = (z * shape.dim[1] + y) * W;
  values.resize(W);
  int64_t replaced = 0;
  if (p.paint != kPaintNone) {
    scratch.words.resize(W + 40);  // groups of 8 whole blocks from the block holding the row start
    replaced = paint_row(p, z, y, W, replace);
  }
  if (mask_row != nullptr)  // once per row, not per channel
    mask_row_bytes(mask_row, W, claim_row, replaced != 0 ? replace.data() : nullptr);
  const float lo = cfg.lo, range = cfg.hi - cfg.lo, inv_range = 1.0f / range;
  for (int64_t c = 0; c < shape.channels; ++c) {
    const int64_t plane = (b * shape.channels + c) * S;
    const T* base = (p.flip_mask ? target : x) + plane;  // what the shuffle reads
    T* out = input + plane + row;
    if (p.nonlinear) {  // gather the row in float32, then map it in a tight loop
      for (int64_t xx = 0; xx < W; ++xx) values[xx] = to_float(base[map ? map[row + xx] : row + xx]);
      float* vals = values.data();
      map_values(vals, W, cells, segs, sv.curve, lo, range, inv_range);
      for (int64_t xx = 0; xx < W; ++xx) out[xx] = FromFloat<T>::apply(values[xx]);
    } else {
      for (int64_t xx = 0; xx < W; ++xx) out[xx] = base[map ? map[row + xx] : row + xx];
    }
    if (replaced == 0) continue;
    // Fill noise: word v of stream c (noise_from_word). The row's Philox blocks are computed 8 at
    // a time (vectorised), in voxel order, then converted and blended in branch-free loops.
    const int64_t first_block = row >> 2, last_block = (row + W - 1) >> 2;
    uint32_t* words = scratch.words.data();
    for (int64_t b0 = first_block; b0 <= last_block; b0 += 8)
      philox8(static_cast<uint32_t>(b0), static_cast<uint32_t>(c), sv.sample, kNoise, cfg.seed,
              words + 4 * (b0 - first_block));
    const uint32_t* row_words = words + (row - 4 * first_block);
    float* noise = scratch.values.data();
    for (int64_t xx = 0; xx < W; ++xx) noise[xx] = noise_from_word(row_words[xx], lo, range);
    const uint8_t* rep = replace.data();
    for (int64_t xx = 0; xx < W; ++xx) out[xx] = rep[xx] ? FromFloat<T>::apply(noise[xx]) : out[xx];
  }
}

template <typename T>
void run_cpu(const T* x, T* input, T* target, uint8_t* mask, const Shape& shape, const PipelineConfig& cfg,
             std::vector<SampleParams>& params) {
  const int64_t B = shape.batch, S = shape.spatial();
  std::vector<float> xs(B * kCurvePoints), ys(B * kCurvePoints);
  std::vector<int32_t> grid(B * kCurveGridPoints);
  bool any_nonlinear = false, any_shuffle = false;
  for (const auto& p : params) {
    any_nonlinear = any_nonlinear || p.nonlinear;
    any_shuffle = any_shuffle || p.shuffle;
  }
  std::vector<CurveCell> cells(any_nonlinear ? B * kCurveCellsPerSample : 0);
  std::vector<CurveSegment> segs(any_nonlinear ? B * kCurveSegmentsPerSample : 0);
  // The flip op's result is flip(x): pass 1 writes it, and pass 2 has nothing to do.
  const bool flip_only = cfg.op == OpKind::kFlip;
  T* flipped = flip_only ? input : target;  // where pass 1 writes flip(x)
  const int64_t H = shape.dim[1], W = shape.dim[2], rows_per_sample = shape.dim[0] * H;
  // With the mask: per sample, its shuffle's claim bitmap (the union of its windows).
  const int64_t claim_words = mask != nullptr && any_shuffle ? rows_per_sample * claim_row_words(shape) : 0;

  // Per sample: curve tables and the shuffle's source map (and claim bitmap, claims_b not null).
  const auto prepare = [&](int64_t b, int32_t* src_b, uint64_t* claims_b, ShuffleScratch& scratch) {
    if (params[b].nonlinear) {
      for (int i = 0; i < kCurvePoints; ++i) curve_point_body(params.data(), xs.data(), ys.data(), b, i);
      const CurveTableView curve = curve_view(xs.data(), ys.data(), grid.data(), b);
      curve_grid_merge(curve.xs, curve.grid);
      curve_fast_tables(curve.xs, curve.ys, curve.grid, cells.data() + b * kCurveCellsPerSample,
                        segs.data() + b * kCurveSegmentsPerSample);
    }
    if (params[b].shuffle) shuffle_source_map(cfg, shape, b, src_b, scratch, claims_b);
  };
  // Pass 1, one row: targets, flip(x) (the shuffle of pass 2 reads them); for the flip op, its result.
  const auto flip_row = [&](int64_t b, int64_t z, int64_t y) {
    const int32_t mask = params[b].flip_mask;
    const int64_t row = (z * H + y) * W;
    const int64_t src_row = flip_source(shape, mask & 3, z, y, 0);
    for (int64_t c = 0; c < shape.channels; ++c) {
      const int64_t plane = (b * shape.channels + c) * S;
      const T* in = x + plane + src_row;
      T* out = flipped + plane + row;
      if (mask & 4) {
        for (int64_t xx = 0; xx < W; ++xx) out[xx] = in[W - 1 - xx];
      } else {
        std::copy(in, in + W, out);
      }
    }
  };
  // Pass 2, one row: inputs (and mask).
  const auto value_row = [&](int64_t b, int64_t z, int64_t y, const int32_t* src_b, const uint64_t* claims_b,
                             RowScratch& scratch) {
    const SampleView sv{params[b], curve_view(xs.data(), ys.data(), grid.data(), b), sample_index(cfg, b)};
    const bool nl = params[b].nonlinear, sh = params[b].shuffle;
    const int64_t row = z * H + y;
    input_row(x, input, target, shape, cfg, sv, nl ? cells.data() + b * kCurveCellsPerSample : nullptr,
              nl ? segs.data() + b * kCurveSegmentsPerSample : nullptr, sh ? src_b : nullptr, b, z, y, scratch,
              mask != nullptr ? mask + b * S + row * W : nullptr,
              mask != nullptr && sh ? claims_b + row * claim_row_words(shape) : nullptr);
  };

  if (B >= 4 * torch::stable::get_num_threads()) {
    // Many samples: whole samples per task. A sample's source map, target and input stay in this
    // core's cache between the passes, and the source map takes one sample's memory per thread.
    parallel_dynamic(B, 1, [&](int64_t b0, int64_t b1) {
      ShuffleScratch shuffle_scratch;
      RowScratch row_scratch;
      std::vector<int32_t> src(any_shuffle ? S : 0);
      std::vector<uint64_t> claims(claim_words);
      uint64_t* claims_b = claim_words > 0 ? claims.data() : nullptr;
      for (int64_t b = b0; b < b1; ++b) {
        prepare(b, src.data(), claims_b, shuffle_scratch);
        for (int64_t r = 0; r < rows_per_sample && flipped != nullptr; ++r) flip_row(b, r / H, r % H);
        for (int64_t r = 0; r < rows_per_sample && !flip_only; ++r)
          value_row(b, r / H, r % H, src.data(), claims_b, row_scratch);
      }
    });
    return;
  }
  // Few samples: samples in parallel, then rows in parallel (a single sample uses every thread).
  std::vector<int32_t> src(any_shuffle ? B * S : 0);
  std::vector<uint64_t> claims(B * claim_words);
  const auto claims_of = [&](int64_t b) { return claim_words > 0 ? claims.data() + b * claim_words : nullptr; };
  parallel_dynamic(B, 1, [&](int64_t b0, int64_t b1) {
    ShuffleScratch scratch;
    for (int64_t b = b0; b < b1; ++b) prepare(b, src.data() + (any_shuffle ? b * S : 0), claims_of(b), scratch);
  });
  const int64_t chunk = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, W * shape.channels));
  const auto for_rows = [&](auto&& fn) {
    parallel_dynamic(B * rows_per_sample, chunk, [&](int64_t r0, int64_t r1) {
      RowScratch scratch;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / rows_per_sample, zy = r % rows_per_sample;
        fn(b, zy / H, zy % H, scratch);
      }
    });
  };
  if (flipped != nullptr) for_rows([&](int64_t b, int64_t z, int64_t y, RowScratch&) { flip_row(b, z, y); });
  if (flip_only) return;
  for_rows([&](int64_t b, int64_t z, int64_t y, RowScratch& scratch) {
    value_row(b, z, y, src.data() + (any_shuffle ? b * S : 0), claims_of(b), scratch);
  });
}

// The mask-only ops: per sample, paint_mask from each row's boxes (paint_row), shuffle_mask from
// the shuffle's claim bitmap (pass 1 of shuffle_map.h only); bool bytes.
void run_mask_cpu(uint8_t* mask, const Shape& shape, const PipelineConfig& cfg, const std::vector<SampleParams>& params) {
  const int64_t H = shape.dim[1], W = shape.dim[2], S = shape.spatial(), rows_per_sample = shape.dim[0] * H;
  const bool shuffle = cfg.op == OpKind::kShuffleMask;
  parallel_dynamic(shape.batch, 1, [&](int64_t b0, int64_t b1) {
    ShuffleScratch scratch;
    std::vector<uint64_t> claims(shuffle ? rows_per_sample * claim_row_words(shape) : 0);
    std::vector<uint8_t> replace;
    for (int64_t b = b0; b < b1; ++b) {
      const SampleParams& p = params[b];
      uint8_t* m = mask + b * S;
      if (shuffle ? !p.shuffle : p.paint == kPaintNone) {
        std::fill(m, m + S, uint8_t{0});
        continue;
      }
      if (shuffle) shuffle_claims(cfg, shape, b, claims.data(), scratch);
      for (int64_t r = 0; r < rows_per_sample; ++r) {
        uint8_t* out = m + r * W;
        if (shuffle) {
          mask_row_bytes(out, W, claims.data() + r * claim_row_words(shape), nullptr);
        } else {
          paint_row(p, r / H, r % H, W, replace);
          std::copy(replace.begin(), replace.end(), out);
        }
      }
    }
  });
}

// The CPU engine of every op (op_entries.h).
struct CpuEngine {
  static constexpr const char* kSchemaPrefix = "";

  static std::tuple<Tensor, Tensor> run(const Tensor& x, const Shape& shape, const PipelineConfig& cfg, const char*,
                                        uint8_t* mask) {
    EngineIO io(x, cfg.op);
    // With no channel there is no image to write, but a mask still has its voxels.
    if (io.empty() && (mask == nullptr || shape.batch * shape.spatial() == 0)) return io.result();
    std::vector<SampleParams> params = draw_params(shape, cfg);
    dispatch_storage(io.x.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      run_cpu<T>(static_cast<const T*>(io.x.const_data_ptr()), static_cast<T*>(io.input.mutable_data_ptr()),
                 static_cast<T*>(io.target_ptr()), mask, shape, cfg, params);
    });
    return io.result();
  }

  static void run_mask(const Tensor&, const Shape& shape, const PipelineConfig& cfg, const char*, uint8_t* mask) {
    if (shape.batch * shape.spatial() == 0) return;
    run_mask_cpu(mask, shape, cfg, draw_params(shape, cfg));
  }

 private:
  static std::vector<SampleParams> draw_params(const Shape& shape, const PipelineConfig& cfg) {
    std::vector<SampleParams> params(shape.batch);
    torch::stable::parallel_for(0, shape.batch, 64, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) params_body(cfg, shape, params.data(), b);
    });
    return params;
  }
};

}  // namespace
}  // namespace genesis

STABLE_TORCH_LIBRARY_IMPL(genesis, CPU, m) { genesis::register_ops<genesis::CpuEngine>(m); }
