#pragma once
// The CUDA launch sequence, written once: which kernels run, in which order, on which grids
// (bodies/launch_plan.h), and what each kernel's threads do. Two launchers run it:
//   - the CUDA launcher (csrc/cuda/cuda_kernels.cu) launches each kernel on a stream;
//   - the emulation launcher (csrc/emulate/emulate_cuda.cpp) runs every block of each kernel's grid
//     on the CPU, one after another, so tests check on every machine what the GPU runs.
// Neither spells the order of the stages nor a kernel's loops: both come from here, so the
// emulation cannot drift from the GPU path. Torch-free (the .cu includes it).
//
// A kernel is a struct with kMaxThreads, kMinBlocks (its launch bounds) and
//   template <class Ctx> static GENESIS_HD void run(const Ctx& ctx, arguments...)
// run is what one block does. The block context Ctx gives:
//   block_x(), block_y(), grid_x(), grid_y(), threads()   the launch's indices and sizes
//   threads(f)    f(t) for each thread t of the block (on the GPU: the calling thread's own t)
//   phase(f)      threads(f), then a barrier: every thread finishes f before any goes on
//   shared_words()               the block's dynamic shared memory (Grid::shared_bytes)
//   block_shared<T>()            a T in the block's static shared memory
//   atomic_max(address, value)   atomicMax on the GPU
// A phase must be reached by every thread of the block (loop bounds uniform per block), as
// __syncthreads requires. The emulation runs a phase for all threads before the next one, which
// is the order a barrier guarantees, and nothing stronger.
//
// A launcher has Status (its error type), kOk, and
//   template <class K, class... A> Status launch(const Grid& g, A... args)   kernel K on grid g
//   Status fill_minus_one(int32_t* p, int64_t bytes)                          every int32 = -1
#include "bodies/launch_bodies.h"
#include "bodies/value_range.h"

namespace genesis {

// ---- the kernels: what one block does -----------------------------------------------------

// One thread per sample (grid-stride).
struct ParamsKernel {
  static constexpr int kMaxThreads = kLaunchThreads, kMinBlocks = 1;
  template <class Ctx>
  static GENESIS_HD void run(const Ctx& ctx, PipelineConfig cfg, Shape shape, SampleParams* params) {
    ctx.threads([&](int64_t t) {
      const int64_t stride = ctx.grid_x() * ctx.threads();
      for (int64_t b = ctx.block_x() * ctx.threads() + t; b < shape.batch; b += stride)
        params_body(cfg, shape, params, b);
    });
  }
};

// One block per sample (grid-stride): all polyline points, then (after the barrier) the index grid.
struct CurveKernel {
  static constexpr int kMaxThreads = kLaunchThreads, kMinBlocks = 1;
  template <class Ctx>
  static GENESIS_HD void run(const Ctx& ctx, const SampleParams* params, int64_t batch, float* xs, float* ys,
                             int32_t* grid) {
    for (int64_t b = ctx.block_x(); b < batch; b += ctx.grid_x()) {
      if (!params[b].nonlinear) continue;  // uniform per block, so no thread skips a barrier alone
      ctx.phase([&](int64_t t) {
        for (int64_t i = t; i < kCurvePoints; i += ctx.threads())
          curve_point_body(params, xs, ys, b, static_cast<int>(i));
      });
      ctx.phase([&](int64_t t) {
        for (int64_t g = t; g < kCurveGridPoints; g += ctx.threads())
          curve_grid_body(params, xs, grid, b, static_cast<int>(g));
      });
    }
  }
};

// One thread per (sample, window) (grid-stride): the window's voxels get max(owner, k).
struct OwnerKernel {
  static constexpr int kMaxThreads = kLaunchThreads, kMinBlocks = 1;
  template <class Ctx>
  static GENESIS_HD void run(const Ctx& ctx, PipelineConfig cfg, Shape shape, const SampleParams* params,
                             int32_t* owner, int64_t items) {
    ctx.threads([&](int64_t t) {
      const int64_t stride = ctx.grid_x() * ctx.threads();
      for (int64_t i = ctx.block_x() * ctx.threads() + t; i < items; i += stride)
        owner_body(cfg, shape, params, owner, i / cfg.num_windows, i % cfg.num_windows,
                   [&](int32_t* address, int32_t value) { ctx.atomic_max(address, value); });
    });
  }
};

// Thread path (windows of at most kSmallWindowVoxels): one thread per (sample, window), grid-stride,
// each with its slice of the block's shared memory (stride bytes apart). No barrier.
struct WindowThreadKernel {
  static constexpr int kMaxThreads = kSmallWindowThreads, kMinBlocks = 1;
  template <class Ctx>
  static GENESIS_HD void run(const Ctx& ctx, PipelineConfig cfg, Shape shape, const SampleParams* params,
                             int32_t* owner, int64_t items, int64_t stride) {
    uint8_t* slices = reinterpret_cast<uint8_t*>(ctx.shared_words());
    ctx.threads([&](int64_t t) {
      uint8_t* perm = slices + t * stride;
      const int64_t step = ctx.grid_x() * ctx.threads();
      for (int64_t item = ctx.block_x() * ctx.threads() + t; item < items; item += step)
        window_thread_body(cfg, shape, params, owner, item, perm);
    });
  }
};

// Block path: one warp per block, one (sample, window) per iteration; phases as in
// launch_bodies.h. perm and draws in shared memory (kShared: the compiler then knows the address
// space and emits shared loads and stores) or in the block's slice of global scratch.
template <bool kShared>
struct WindowBlockKernel {
  static constexpr int kMaxThreads = kWarpSize, kMinBlocks = 1;
  template <class Ctx>
  static GENESIS_HD void run(const Ctx& ctx, PipelineConfig cfg, Shape shape, const SampleParams* params,
                             int32_t* owner, int64_t items, int64_t capacity, uint32_t* global) {
    WindowState& st = ctx.template block_shared<WindowState>();
    uint32_t* perm;
    if constexpr (kShared) {
      perm = ctx.shared_words();
    } else {
      perm = global + ctx.block_x() * 2 * capacity;
    }
    uint32_t* draws = perm + capacity;
    for (int64_t item = ctx.block_x(); item < items; item += ctx.grid_x()) {
      ctx.phase([&](int64_t t) {
        if (t == 0) window_begin(cfg, shape, params, item, st);
      });
      ctx.phase([&](int64_t t) { window_claims(shape, owner, st, static_cast<uint32_t>(t)); });
      ctx.phase([&](int64_t t) {
        if (t == 0) window_first(st);
      });
      ctx.phase([&](int64_t t) { window_draws(cfg, st, perm, draws, static_cast<uint32_t>(t)); });
      ctx.phase([&](int64_t t) {
        if (t == 0) window_swaps(st, perm, draws);
      });
      // The barrier after the writes: st, perm and draws are reused by the next item.
      ctx.phase([&](int64_t t) { window_writes(shape, owner, st, draws, static_cast<uint32_t>(t)); });
    }
  }
};

// value_range="per_sample" (bodies/value_range.h): one block per sample (grid-stride), each
// thread's strided partial min/max, a tree reduction in shared memory, and thread 0 writes the
// sample's range into its params. Min and max are exact in any order, so the emulation's
// thread-by-thread run finds the same range.
struct RangeParts {
  RangeAcc v[kLaunchThreads];
};

template <typename T>
struct RangeKernel {
  static constexpr int kMaxThreads = kLaunchThreads, kMinBlocks = 1;
  template <class Ctx>
  static GENESIS_HD void run(const Ctx& ctx, const T* x, Shape shape, SampleParams* params) {
    RangeParts& part = ctx.template block_shared<RangeParts>();
    const int64_t n = sample_values(shape);
    for (int64_t b = ctx.block_x(); b < shape.batch; b += ctx.grid_x()) {
      ctx.phase([&](int64_t t) { part.v[t] = range_partial(x, shape, b, t, n, ctx.threads()); });
      for (int64_t half = ctx.threads() / 2; half > 0; half /= 2) {
        ctx.phase([&](int64_t t) {
          if (t < half) range_merge(part.v[t], part.v[t + half]);
        });
      }
      // The barrier after it: part is reused by the block's next sample.
      ctx.phase([&](int64_t t) {
        if (t == 0) range_finish(params[b], part.v[0]);
      });
    }
  }
};

// x: voxel groups of one sample; y: samples (grid-stride past 65535). At least 3 blocks of 256
// per SM: ptxas then fits the 4 voxels' state in 72 registers without spilling (unbounded: 88).
template <bool kMask, typename T>
struct VoxelKernel {
  static constexpr int kMaxThreads = kLaunchThreads, kMinBlocks = 3;
  template <class Ctx>
  static GENESIS_HD void run(const Ctx& ctx, const T* x, T* input, T* target, uint8_t* mask, Shape shape,
                             PipelineConfig cfg, const SampleParams* params, const float* xs, const float* ys,
                             const int32_t* grid, const int32_t* owner, int64_t groups, bool vector) {
    ctx.threads([&](int64_t t) {
      const int64_t g = ctx.block_x() * ctx.threads() + t;
      if (g >= groups) return;
      for (int64_t b = ctx.block_y(); b < shape.batch; b += ctx.grid_y())
        voxel_group_body<kMask>(x, input, target, mask, shape, cfg, params, xs, ys, grid, owner, b, g, vector);
    });
  }
};

// The mask-only ops, on the voxel kernel's grid.
struct MaskKernel {
  static constexpr int kMaxThreads = kLaunchThreads, kMinBlocks = 1;
  template <class Ctx>
  static GENESIS_HD void run(const Ctx& ctx, Shape shape, PipelineConfig cfg, const SampleParams* params,
                             const int32_t* owner, uint8_t* mask, int64_t groups) {
    ctx.threads([&](int64_t t) {
      const int64_t g = ctx.block_x() * ctx.threads() + t;
      if (g >= groups) return;
      for (int64_t b = ctx.block_y(); b < shape.batch; b += ctx.grid_y())
        mask_group_body(shape, cfg, params, owner, mask, b, g);
    });
  }
};

// ---- the sequence -----------------------------------------------------------------------------

// Whether a call has nothing to write: no voxel, or no channel and no mask (a mask still has its
// voxels when there is no channel).
inline bool launch_is_empty(const Shape& shape, bool has_mask) {
  return shape.batch * shape.spatial() == 0 || (shape.channels == 0 && !has_mask);
}

// Whether p (null counts as aligned: nothing is stored there) is a multiple of `bytes`.
inline bool aligned_to(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Launches 1 to 4: parameters, curve tables, shuffle owners and windows, as planned. Each
// launch's error is returned at once, so that it is reported by this op and not by a later,
// unrelated check.
template <class L>
typename L::Status launch_prepare(L& l, const Shape& shape, const PipelineConfig& cfg, const LaunchPlan& p,
                                  const Scratch& s) {
  using Status = typename L::Status;
  if (const Status e = l.template launch<ParamsKernel>(p.params, cfg, shape, s.params); e != L::kOk) return e;
  if (p.curves) {
    const Status e = l.template launch<CurveKernel>(p.curve, static_cast<const SampleParams*>(s.params), shape.batch,
                                                    s.xs, s.ys, s.grid);
    if (e != L::kOk) return e;
  }
  if (p.shuffle) {
    if (const Status e = l.fill_minus_one(s.owner, p.owner_bytes); e != L::kOk) return e;
    const Status e = l.template launch<OwnerKernel>(p.owner, cfg, shape, static_cast<const SampleParams*>(s.params),
                                                    s.owner, p.window_items);
    if (e != L::kOk) return e;
  }
  if (p.window.x > 0) {  // not for shuffle_mask
    const SampleParams* params = s.params;
    Status e;
    if (p.window_per_thread) {
      e = l.template launch<WindowThreadKernel>(p.window, cfg, shape, params, s.owner, p.window_items,
                                                p.window_slice_stride);
    } else if (p.window_in_shared) {
      e = l.template launch<WindowBlockKernel<true>>(p.window, cfg, shape, params, s.owner, p.window_items,
                                                     p.window_capacity, s.window);
    } else {
      e = l.template launch<WindowBlockKernel<false>>(p.window, cfg, shape, params, s.owner, p.window_items,
                                                      p.window_capacity, s.window);
    }
    if (e != L::kOk) return e;
  }
  return L::kOk;
}

// The whole pipeline: launches 1 to 4, the range kernel (value_range="per_sample"), then the voxel kernel (input,
// target if not null, the mask if not null).
template <typename T, class L>
typename L::Status launch_image(L& l, const T* x, T* input, T* target, uint8_t* mask, const Shape& shape,
                                const PipelineConfig& cfg, const LaunchPlan& p, const Scratch& s) {
  if (launch_is_empty(shape, mask != nullptr)) return L::kOk;
  if (const typename L::Status e = launch_prepare(l, shape, cfg, p, s); e != L::kOk) return e;
  if (p.range.x > 0) {  // each sample's own value range, before the voxels that use it
    const typename L::Status e = l.template launch<RangeKernel<T>>(p.range, x, shape, s.params);
    if (e != L::kOk) return e;
  }
  const SampleParams* params = s.params;
  const float* xs = s.xs;
  const float* ys = s.ys;
  const int32_t* grid = s.grid;
  const int32_t* owner = s.owner;
  // Vector stores where every group starts a 4-element-aligned vector of each output.
  const bool vector = p.voxel_vector && aligned_to(input, 4 * sizeof(T)) && aligned_to(target, 4 * sizeof(T)) &&
                      aligned_to(mask, kVoxelsPerThread);
  if (mask != nullptr)
    return l.template launch<VoxelKernel<true, T>>(p.voxel, x, input, target, mask, shape, cfg, params, xs, ys, grid,
                                                   owner, p.voxel_groups, vector);
  return l.template launch<VoxelKernel<false, T>>(p.voxel, x, input, target, mask, shape, cfg, params, xs, ys, grid,
                                                  owner, p.voxel_groups, vector);
}

// The mask-only ops (cfg.op is kPaintMask or kShuffleMask): launches 1 and 3, then the mask kernel.
template <class L>
typename L::Status launch_masks(L& l, uint8_t* mask, const Shape& shape, const PipelineConfig& cfg, const LaunchPlan& p,
                                const Scratch& s) {
  if (shape.batch * shape.spatial() == 0) return L::kOk;
  if (const typename L::Status e = launch_prepare(l, shape, cfg, p, s); e != L::kOk) return e;
  return l.template launch<MaskKernel>(p.voxel, shape, cfg, static_cast<const SampleParams*>(s.params),
                                       static_cast<const int32_t*>(s.owner), mask, p.voxel_groups);
}

}  // namespace genesis
