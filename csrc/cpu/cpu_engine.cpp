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
#include <cstdint>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "cpu/curve_map.h"
#include "cpu/philox_simd.h"
#include "cpu/shuffle_map.h"
#include "bodies/launch_bodies.h"
#include "bodies/value_range.h"
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

// Asks the kernel to back an output's fresh memory with 2 MiB transparent huge pages. Outputs of
// many MB come from fresh mmap'd memory (glibc serves allocations above its mmap threshold, at
// most 32 MiB, with mmap, and unmaps them on free), which the kernel zero-fills on first touch,
// 4 KiB per page fault: at 1x128x128x64 batch 8 the two outputs took 16,384 faults per call,
// about a third of the call's time. With the advice the first touch faults 2 MiB at a time
// (PyTorch's THP_MEM_ALLOC_ENABLE does the same for all its allocations). Only the 2 MiB-aligned
// interior of the tensor's own memory is advised. It is a hint: where transparent huge pages are
// off (or not Linux) nothing changes, and the values written do not depend on it.
void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (bytes < kHuge) return;  // no whole huge page inside
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

struct RowScratch {
  std::vector<uint8_t> replace;  // painting replaces voxel x of the row
  std::vector<float> values;     // the row in float32 (intensity map, fill noise)
  std::vector<uint32_t> words;   // Philox words of the row's fill noise, in voxel order
};

// A thread's buffers, kept across calls: allocated per call or per sample (as they were) they
// cost page faults, the kernel zero-filling fresh memory on first touch (a 4 MiB source map at
// 1x128x128x64 is 1,024 faults, once per sample). Buffers over kKeptBytes are released after use,
// so a thread keeps at most that much of each between calls.
struct ThreadScratch {
  // Used by the thread's tasks.
  ShuffleScratch shuffle;
  RowScratch row;
  std::vector<int32_t> map;      // one sample's source map (whole samples per task)
  std::vector<uint64_t> claims;  // and its claim bitmap (with the mask)
  // Used by the calling thread, for the whole batch of a call.
  std::vector<float> xs, ys;
  std::vector<int32_t> grid;
  std::vector<CurveCell> cells;
  std::vector<CurveSegment> segs;
  std::vector<int32_t> batch_map;      // the batch's source maps (few samples)
  std::vector<uint64_t> batch_claims;  // and claim bitmaps (with the mask)
};
constexpr size_t kKeptBytes = size_t{64} << 20;

ThreadScratch& thread_scratch() {
  thread_local ThreadScratch scratch;
  return scratch;
}

// buf's data, with room for n values (grown if needed, never shrunk here).
template <typename V>
auto* room_for(V& buf, size_t n) {
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}
template <typename V>
void release_if_large(V& buf) {
  if (buf.size() * sizeof(buf[0]) > kKeptBytes) V().swap(buf);
}

// Which voxels of row (z, y) painting replaces (paint_replaces, per row from the boxes):
// replace[0 .. W) = 0 or 1 (p.paint != kPaintNone). Returns how many. (A raw pointer: byte
// stores through a vector's operator[] may alias the vector's own pointer, which the compiler
// then reloads at every voxel.)
int64_t paint_row(const SampleParams& p, int64_t z, int64_t y, int64_t W, uint8_t* replace) {
  std::memset(replace, p.paint == kPaintOut ? 1 : 0, static_cast<size_t>(W));
  for (int k = 0; k < p.num_boxes; ++k) {
    const Box& bx = p.boxes[k];
    if (z < bx.start[0] || z >= bx.start[0] + bx.size[0] || y < bx.start[1] || y >= bx.start[1] + bx.size[1]) continue;
    std::memset(replace + bx.start[2], p.paint == kPaintIn ? 1 : 0, static_cast<size_t>(bx.size[2]));
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
// one Philox block serves 4 noise voxels. Voxels that paint replaces are neither gathered nor
// mapped: out-painting replaces most of a volume, and in a row outside every kept box all of it.
template <typename T>
void input_row(const T* x, T* input, const T* target, const Shape& shape, const PipelineConfig& cfg,
               const SampleView& sv, const CurveCell* cells, const CurveSegment* segs, const int32_t* map, int64_t b,
               int64_t z, int64_t y, RowScratch& scratch, uint8_t* mask_row, const uint64_t* claim_row) {
  const SampleParams& p = sv.params;
  const int64_t S = shape.spatial(), W = shape.dim[2];
  const int64_t row = (z * shape.dim[1] + y) * W;
  // Raw pointers, not the vectors: byte stores may alias a vector's own pointer, which the
  // compiler then reloads (through the thread-local scratch) at every voxel.
  scratch.values.resize(W);
  float* const values = scratch.values.data();
  uint8_t* replace = nullptr;
  int64_t replaced = 0;
  if (p.paint != kPaintNone) {
    scratch.replace.resize(W + 1);
    scratch.words.resize(W + 72);  // groups of 16 whole blocks from the block holding the row start
    replace = scratch.replace.data();
    replaced = paint_row(p, z, y, W, replace);
    replace[W] = 1;  // sentinel: ends the last kept run
  }
  if (mask_row != nullptr)  // once per row, not per channel
    mask_row_bytes(mask_row, W, claim_row, replaced != 0 ? replace : nullptr);
  const float lo = p.lo, range = p.range, inv_range = 1.0f / range;
  for (int64_t c = 0; c < shape.channels; ++c) {
    const int64_t plane = (b * shape.channels + c) * S;
    const T* base = (p.flip_mask ? target : x) + plane;  // what the shuffle reads
    T* out = input + plane + row;
    // Kept voxels [a, e): gathered through the shuffle's map, then mapped in a tight loop.
    // (Separate loops with and without the map: the plain ones vectorise.)
    const int32_t* const row_map = map ? map + row : nullptr;
    const T* const in_row = base + row;
    const auto keep = [&](int64_t a, int64_t e) {
      if (p.nonlinear) {
        if (row_map) {
          for (int64_t xx = a; xx < e; ++xx) values[xx] = to_float(base[row_map[xx]]);
        } else {
          for (int64_t xx = a; xx < e; ++xx) values[xx] = to_float(in_row[xx]);
        }
        map_values(values + a, e - a, cells, segs, sv.curve, lo, range, inv_range);
        for (int64_t xx = a; xx < e; ++xx) out[xx] = FromFloat<T>::apply(values[xx]);
      } else if (row_map) {
        for (int64_t xx = a; xx < e; ++xx) out[xx] = base[row_map[xx]];
      } else {
        std::copy(in_row + a, in_row + e, out + a);
      }
    };
    if (replaced == 0) {
      keep(0, W);
      continue;
    }
    // Fill noise: word v of stream c (noise_from_word). The row's Philox blocks are computed 16
    // at a time (vectorised), in voxel order.
    const int64_t first_block = row >> 2, last_block = (row + W - 1) >> 2;
    uint32_t* words = scratch.words.data();
    for (int64_t b0 = first_block; b0 <= last_block; b0 += 16)
      philox16(static_cast<uint32_t>(b0), static_cast<uint32_t>(c), sv.sample, kNoise, cfg.seed,
               words + 4 * (b0 - first_block));
    const uint32_t* row_words = words + (row - 4 * first_block);
    const auto fill = [&](int64_t a, int64_t e) {
      for (int64_t xx = a; xx < e; ++xx) out[xx] = FromFloat<T>::apply(noise_from_word(row_words[xx], lo, range));
    };
    // Alternating runs of replaced and kept voxels, found on the replace flags (sentinel at W).
    for (int64_t a = 0; a < W;) {
      int64_t e = a;
      while (e < W && replace[e]) ++e;
      fill(a, e);
      a = e;
      while (!replace[e]) ++e;
      keep(a, e);
      a = e;
    }
  }
}

template <typename T>
void run_cpu(const T* x, T* input, T* target, uint8_t* mask, const Shape& shape, const PipelineConfig& cfg,
             std::vector<SampleParams>& params) {
  const int64_t B = shape.batch, S = shape.spatial();
  ThreadScratch& caller = thread_scratch();
  float* const xs = room_for(caller.xs, B * kCurvePoints);
  float* const ys = room_for(caller.ys, B * kCurvePoints);
  int32_t* const grid = room_for(caller.grid, B * kCurveGridPoints);
  bool any_nonlinear = false, any_shuffle = false;
  for (const auto& p : params) {
    any_nonlinear = any_nonlinear || p.nonlinear;
    any_shuffle = any_shuffle || p.shuffle;
  }
  CurveCell* const cells = any_nonlinear ? room_for(caller.cells, B * kCurveCellsPerSample) : nullptr;
  CurveSegment* const segs = any_nonlinear ? room_for(caller.segs, B * kCurveSegmentsPerSample) : nullptr;
  // The calling thread's batch buffers are released when over kKeptBytes, on every return.
  struct Trim {
    ThreadScratch& s;
    ~Trim() {
      release_if_large(s.cells);
      release_if_large(s.segs);
      release_if_large(s.batch_map);
      release_if_large(s.batch_claims);
    }
  } trim{caller};
  // The flip op's result is flip(x): pass 1 writes it, and pass 2 has nothing to do.
  const bool flip_only = cfg.op == OpKind::kFlip;
  T* flipped = flip_only ? input : target;  // where pass 1 writes flip(x)
  const int64_t H = shape.dim[1], W = shape.dim[2], rows_per_sample = shape.dim[0] * H;
  // With the mask: per sample, its shuffle's claim bitmap (the union of its windows).
  const int64_t claim_words = mask != nullptr && any_shuffle ? rows_per_sample * claim_row_words(shape) : 0;

  // Per sample: curve tables and the shuffle's source map (and claim bitmap, claims_b not null).
  const auto prepare = [&](int64_t b, int32_t* src_b, uint64_t* claims_b, ShuffleScratch& scratch) {
    if (params[b].nonlinear) {
      for (int i = 0; i < kCurvePoints; ++i) curve_point_body(params.data(), xs, ys, b, i);
      const CurveTableView curve = curve_view(xs, ys, grid, b);
      curve_grid_merge(curve.xs, curve.grid);
      curve_fast_tables(curve.xs, curve.ys, curve.grid, cells + b * kCurveCellsPerSample,
                        segs + b * kCurveSegmentsPerSample);
    }
    if (params[b].shuffle) shuffle_source_map(cfg, shape, b, params[b], src_b, scratch, claims_b);
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
    const SampleView sv{params[b], curve_view(xs, ys, grid, b), sample_index(cfg, b)};
    const bool nl = params[b].nonlinear, sh = params[b].shuffle;
    const int64_t row = z * H + y;
    input_row(x, input, target, shape, cfg, sv, nl ? cells + b * kCurveCellsPerSample : nullptr,
              nl ? segs + b * kCurveSegmentsPerSample : nullptr, sh ? src_b : nullptr, b, z, y, scratch,
              mask != nullptr ? mask + b * S + row * W : nullptr,
              mask != nullptr && sh ? claims_b + row * claim_row_words(shape) : nullptr);
  };

  const int64_t threads = torch::stable::get_num_threads();
  if (B >= 4 * threads || threads == 1) {
    // Many samples (or one thread): whole samples per task. A sample's source map, target and input stay in this
    // core's cache between the passes, and the source map takes one sample's memory per thread.
    parallel_dynamic(B, 1, [&](int64_t b0, int64_t b1) {
      ThreadScratch& ts = thread_scratch();
      int32_t* const src = any_shuffle ? room_for(ts.map, S) : nullptr;
      uint64_t* const claims_b = claim_words > 0 ? room_for(ts.claims, claim_words) : nullptr;
      for (int64_t b = b0; b < b1; ++b) {
        prepare(b, src, claims_b, ts.shuffle);
        for (int64_t r = 0; r < rows_per_sample && flipped != nullptr; ++r) flip_row(b, r / H, r % H);
        for (int64_t r = 0; r < rows_per_sample && !flip_only; ++r) value_row(b, r / H, r % H, src, claims_b, ts.row);
      }
      release_if_large(ts.map);
      release_if_large(ts.claims);
    });
    return;
  }
  // Few samples: samples in parallel, then rows in parallel (a single sample uses every thread).
  int32_t* const src = any_shuffle ? room_for(caller.batch_map, B * S) : nullptr;
  uint64_t* const claims = claim_words > 0 ? room_for(caller.batch_claims, B * claim_words) : nullptr;
  const auto claims_of = [&](int64_t b) { return claim_words > 0 ? claims + b * claim_words : nullptr; };
  parallel_dynamic(B, 1, [&](int64_t b0, int64_t b1) {
    ShuffleScratch& scratch = thread_scratch().shuffle;
    for (int64_t b = b0; b < b1; ++b) prepare(b, src + (any_shuffle ? b * S : 0), claims_of(b), scratch);
  });
  const int64_t chunk = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, W * shape.channels));
  const auto for_rows = [&](auto&& fn) {
    parallel_dynamic(B * rows_per_sample, chunk, [&](int64_t r0, int64_t r1) {
      RowScratch& scratch = thread_scratch().row;
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / rows_per_sample, zy = r % rows_per_sample;
        fn(b, zy / H, zy % H, scratch);
      }
    });
  };
  if (flipped != nullptr) for_rows([&](int64_t b, int64_t z, int64_t y, RowScratch&) { flip_row(b, z, y); });
  if (flip_only) return;
  for_rows([&](int64_t b, int64_t z, int64_t y, RowScratch& scratch) {
    value_row(b, z, y, src + (any_shuffle ? b * S : 0), claims_of(b), scratch);
  });
}

// The range stage of value_range="per_sample" (bodies/value_range.h): each sample's min and max,
// before its curve tables and voxels. Samples are cut into segments of kRangeSegment values so
// that a small batch still uses every thread; min and max do not depend on the split.
template <typename T>
void sample_ranges(const T* x, const Shape& shape, std::vector<SampleParams>& params) {
  constexpr int64_t kRangeSegment = int64_t{1} << 18;
  const int64_t n = sample_values(shape), per = std::max<int64_t>(1, (n + kRangeSegment - 1) / kRangeSegment);
  std::vector<RangeAcc> part(static_cast<size_t>(shape.batch * per));
  parallel_dynamic(shape.batch * per, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / per, first = (i % per) * kRangeSegment;
      part[i] = range_partial(x, shape, b, first, std::min(n, first + kRangeSegment), 1);
    }
  });
  for (int64_t b = 0; b < shape.batch; ++b) {
    RangeAcc a = range_empty();
    for (int64_t k = 0; k < per; ++k) range_merge(a, part[b * per + k]);
    range_finish(params[b], a);
  }
}

// The mask-only ops: per sample, paint_mask from each row's boxes (paint_row), shuffle_mask from
// the shuffle's claim bitmap (pass 1 of shuffle_map.h only); bool bytes.
void run_mask_cpu(uint8_t* mask, const Shape& shape, const PipelineConfig& cfg,
                  const std::vector<SampleParams>& params) {
  const int64_t H = shape.dim[1], W = shape.dim[2], S = shape.spatial(), rows_per_sample = shape.dim[0] * H;
  const bool shuffle = cfg.op == OpKind::kShuffleMask;
  const int64_t claim_words = shuffle ? rows_per_sample * claim_row_words(shape) : 0;
  parallel_dynamic(shape.batch, 1, [&](int64_t b0, int64_t b1) {
    ThreadScratch& ts = thread_scratch();  // as in run_cpu: no fresh bitmap per sample
    uint64_t* const claims = shuffle ? room_for(ts.claims, claim_words) : nullptr;
    for (int64_t b = b0; b < b1; ++b) {
      const SampleParams& p = params[b];
      uint8_t* m = mask + b * S;
      if (shuffle ? !p.shuffle : p.paint == kPaintNone) {
        std::fill(m, m + S, uint8_t{0});
        continue;
      }
      if (shuffle) shuffle_claims(cfg, shape, b, claims, ts.shuffle);
      for (int64_t r = 0; r < rows_per_sample; ++r) {
        uint8_t* out = m + r * W;
        if (shuffle) {
          mask_row_bytes(out, W, claims + r * claim_row_words(shape), nullptr);
        } else {
          paint_row(p, r / H, r % H, W, out);
        }
      }
    }
    release_if_large(ts.claims);
  });
}

// The CPU engine of every op (op_entries.h).
struct CpuEngine {
  static constexpr const char* kSchemaPrefix = "";
  static constexpr bool kStreamOnDevice = false;  // a tensor seed is host memory: read by the entry

  static std::tuple<Tensor, Tensor> run(const Tensor& x, const Shape& shape, const PipelineConfig& cfg, const char*,
                                        uint8_t* mask) {
    EngineIO io(x, cfg.op);
    // With no channel there is no image to write, but a mask still has its voxels.
    if (io.empty() && (mask == nullptr || shape.batch * shape.spatial() == 0)) return io.result();
    const size_t bytes = static_cast<size_t>(io.x.numel()) * io.x.element_size();
    advise_huge_pages(io.input.mutable_data_ptr(), bytes);
    if (io.has_target) advise_huge_pages(io.target.mutable_data_ptr(), bytes);
    if (mask != nullptr) advise_huge_pages(mask, static_cast<size_t>(shape.batch * shape.spatial()));
    std::vector<SampleParams> params = draw_params(shape, cfg);
    dispatch_storage(io.x.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      if (cfg.per_sample_range) sample_ranges(static_cast<const T*>(io.x.const_data_ptr()), shape, params);
      run_cpu<T>(static_cast<const T*>(io.x.const_data_ptr()), static_cast<T*>(io.input.mutable_data_ptr()),
                 static_cast<T*>(io.target_ptr()), mask, shape, cfg, params);
    });
    return io.result();
  }

  static void run_mask(const Tensor&, const Shape& shape, const PipelineConfig& cfg, const char*, uint8_t* mask) {
    if (shape.batch * shape.spatial() == 0) return;
    advise_huge_pages(mask, static_cast<size_t>(shape.batch * shape.spatial()));  // as run's outputs
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
