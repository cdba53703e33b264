// An emulated CUDA launch: runs the CUDA kernels' bodies (bodies/launch_bodies.h) over their
// whole grids on the CPU, sequentially, in the same launch order, with the same buffers. Tests
// compare it with the NumPy reference so the code the GPU runs is checked on every machine,
// including CI without a GPU. Registered for CPU tensors as genesis::_emulated_cuda_* (EmulatedEngine, op_entries.h).
#include <algorithm>

#include "bodies/launch_bodies.h"
#include "bodies/value_range.h"
#include "op_entries.h"

namespace genesis {
namespace {

struct SequentialAtomicMax {
  void operator()(int32_t* address, int32_t value) const { *address = std::max(*address, value); }
};

// Runs body(block, thread) for every thread of every block of grid g (x fastest, as blocks are numbered).
template <typename Body>
void for_grid(const Grid& g, Body&& body) {
  for (int64_t by = 0; by < g.y; ++by)
    for (int64_t bx = 0; bx < g.x; ++bx)
      for (int64_t t = 0; t < g.threads; ++t) body(bx, by, t);
}

// The launch sequence of csrc/cuda/cuda_kernels.cu over the grids of launch_plan, each kernel's
// loops written as there. Kernels without barriers run thread by thread; the curve and window
// kernels run phase by phase (every thread of a block finishes a phase before the next starts).
// emulate_prepare: launches 1 to 4 (launch_prepare in cuda_kernels.cu), into scratch carved from
// scratch_words; then emulate runs the voxel kernel, emulate_mask the mask-only kernel.
Scratch emulate_prepare(const Shape& shape, const PipelineConfig& cfg, const LaunchPlan& plan,
                        std::vector<uint64_t>& scratch_words) {
  const int64_t B = shape.batch;
  scratch_words.assign(static_cast<size_t>(plan.scratch_bytes / 8 + 1), 0);
  const Scratch s = carve_scratch(plan, B, scratch_words.data());
  const int64_t param_threads = plan.params.x * plan.params.threads;
  for_grid(plan.params, [&](int64_t bx, int64_t, int64_t t) {
    for (int64_t b = bx * plan.params.threads + t; b < B; b += param_threads) params_body(cfg, shape, s.params, b);
  });
  if (plan.curves) {
    const int64_t T = plan.curve.threads;
    for (int64_t blk = 0; blk < plan.curve.x; ++blk)
      for (int64_t b = blk; b < B; b += plan.curve.x) {
        if (!s.params[b].nonlinear) continue;
        for (int64_t t = 0; t < T; ++t)
          for (int64_t i = t; i < kCurvePoints; i += T) curve_point_body(s.params, s.xs, s.ys, b, static_cast<int>(i));
        for (int64_t t = 0; t < T; ++t)  // after __syncthreads
          for (int64_t g = t; g < kCurveGridPoints; g += T)
            curve_grid_body(s.params, s.xs, s.grid, b, static_cast<int>(g));
      }
  }
  if (plan.shuffle) {
    std::fill(s.owner, s.owner + plan.owner_bytes / 4, -1);  // cudaMemsetAsync(0xff)
    const int64_t K = cfg.num_windows, owner_threads = plan.owner.x * plan.owner.threads;
    for_grid(plan.owner, [&](int64_t bx, int64_t, int64_t t) {
      for (int64_t i = bx * plan.owner.threads + t; i < plan.window_items; i += owner_threads)
        owner_body(cfg, shape, s.params, s.owner, i / K, i % K, SequentialAtomicMax{});
    });
    // Shared memory of one block (blocks run one after another here, each with its own view).
    std::vector<uint32_t> shared(plan.window_in_shared ? static_cast<size_t>(2 * plan.window_capacity) : 0);
    const int64_t cap = plan.window_capacity;
    const uint32_t lanes = static_cast<uint32_t>(plan.window.threads);
    for (int64_t blk = 0; blk < plan.window.x; ++blk) {  // no blocks for shuffle_mask
      uint32_t* perm = window_slice(plan.window_in_shared, cap, shared.data(), s.window, blk);
      uint32_t* draws = perm + cap;
      WindowState st{};  // __shared__ on the GPU: one per block
      for (int64_t item = blk; item < plan.window_items; item += plan.window.x) {
        window_begin(cfg, shape, s.params, item, st);
        for (uint32_t lane = 0; lane < lanes; ++lane) window_claims(shape, s.owner, st, lane);
        window_first(st);
        for (uint32_t lane = 0; lane < lanes; ++lane) window_draws(cfg, st, perm, draws, lane);
        window_swaps(st, perm, draws);
        for (uint32_t lane = 0; lane < lanes; ++lane) window_writes(shape, s.owner, st, draws, lane);
      }
    }
  }
  return s;
}

std::tuple<Tensor, Tensor> emulate(const Tensor& x, const Shape& shape, const PipelineConfig& cfg, uint8_t* mask) {
  EngineIO io(x, cfg.op);
  // With no channel there is no image to write, but a mask still has its voxels.
  if (io.empty() && (mask == nullptr || shape.batch * shape.spatial() == 0)) return io.result();
  const int64_t B = shape.batch;
  const LaunchPlan plan = launch_plan(shape, cfg);
  std::vector<uint64_t> scratch_words;
  const Scratch s = emulate_prepare(shape, cfg, plan, scratch_words);
  dispatch_storage(io.x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = static_cast<const T*>(io.x.const_data_ptr());
    T* ip = static_cast<T*>(io.input.mutable_data_ptr());
    T* tp = static_cast<T*>(io.target_ptr());
    if (cfg.per_sample_range) {  // range_kernel (cuda_kernels.cu): a block per sample, then its reduction
      const int64_t threads = kLaunchThreads, n = sample_values(shape);
      for (int64_t b = 0; b < B; ++b) {
        RangeAcc a = range_empty();
        for (int64_t t = 0; t < threads; ++t) range_merge(a, range_partial(xp, shape, b, t, n, threads));
        range_finish(s.params[b], a);
      }
    }
    for_grid(plan.voxel, [&](int64_t bx, int64_t by, int64_t t) {
      const int64_t g = bx * plan.voxel.threads + t;
      if (g >= plan.voxel_groups) return;
      for (int64_t b = by; b < B; b += plan.voxel.y) {
        if (mask != nullptr) {
          voxel_group_body<true>(xp, ip, tp, mask, shape, cfg, s.params, s.xs, s.ys, s.grid, s.owner, b, g);
        } else {
          voxel_group_body<false>(xp, ip, tp, mask, shape, cfg, s.params, s.xs, s.ys, s.grid, s.owner, b, g);
        }
      }
    });
  });
  return io.result();
}

// launch_mask (cuda_kernels.cu): the mask-only ops.
void emulate_mask(const Shape& shape, const PipelineConfig& cfg, uint8_t* mask) {
  if (shape.batch * shape.spatial() == 0) return;
  const LaunchPlan plan = launch_plan(shape, cfg);
  std::vector<uint64_t> scratch_words;
  const Scratch s = emulate_prepare(shape, cfg, plan, scratch_words);
  for_grid(plan.voxel, [&](int64_t bx, int64_t by, int64_t t) {
    const int64_t g = bx * plan.voxel.threads + t;
    if (g >= plan.voxel_groups) return;
    for (int64_t b = by; b < shape.batch; b += plan.voxel.y) mask_group_body(shape, cfg, s.params, s.owner, mask, b, g);
  });
}

// The emulated launch as an engine (op_entries.h), registered for the ops that take every path
// of the CUDA kernels: the fused pipeline (drawn parameters, with a target; with and without the
// mask), bezier (given parameters, no target) and the mask-only ops.
struct EmulatedEngine {
  static constexpr const char* kSchemaPrefix = "_emulated_cuda_";
  static constexpr bool kStreamOnDevice = true;  // as on the GPU: the bodies read a tensor seed
  static std::tuple<Tensor, Tensor> run(const Tensor& x, const Shape& shape, const PipelineConfig& cfg, const char*,
                                        uint8_t* mask) {
    return emulate(x, shape, cfg, mask);
  }
  static void run_mask(const Tensor&, const Shape& shape, const PipelineConfig& cfg, const char*, uint8_t* mask) {
    emulate_mask(shape, cfg, mask);
  }
};

// Test hook: the launch plan of the CUDA pipeline for x of shape `sizes` (no tensor needed, so
// extreme batch x window counts are cheap to check). Returns, in this order:
//   params.x, curve.x, owner.x, window.x, window.threads, window.shared_bytes, voxel.x, voxel.y,
//   voxel.threads, voxel_groups, window_items, window_capacity, window_in_shared,
//   params_bytes, curve_bytes, owner_bytes, window_bytes, scratch_bytes
// (tests/test_emulated_cuda.py, PLAN_FIELDS, names them in the same order).
std::vector<int64_t> launch_plan_hook(std::vector<int64_t> sizes, double shuffle_p, int64_t num_windows,
                                      double nonlinear_p, bool params_given) {
  const char* op = "genesis::_launch_plan";
  const int64_t dims = static_cast<int64_t>(sizes.size());
  STD_TORCH_CHECK(dims == 4 || dims == 5, op, ": sizes must be (B, C, H, W) or (B, C, D, H, W)");
  for (const int64_t n : sizes) STD_TORCH_CHECK(n >= 0, op, ": sizes must be >= 0");
  const Shape s = shape_of(sizes, dims, op);
  OpArgs a;
  a.shuffle_p = shuffle_p;
  a.num_windows = num_windows;
  a.nonlinear_p = nonlinear_p;
  PipelineConfig cfg = make_config(OpKind::kModelsGenesis, a, s, op);
  if (params_given) {  // the bezier op's plan: curves given for every sample
    cfg.op = OpKind::kBezier;
    cfg.nonlinear_p = 1.0;
  }
  const LaunchPlan p = launch_plan(s, cfg);
  return {p.params.x,
          p.curve.x,
          p.owner.x,
          p.window.x,
          p.window.threads,
          p.window.shared_bytes,
          p.voxel.x,
          p.voxel.y,
          p.voxel.threads,
          p.voxel_groups,
          p.window_items,
          p.window_capacity,
          p.window_in_shared ? 1 : 0,
          p.params_bytes,
          p.curve_bytes,
          p.owner_bytes,
          p.window_bytes,
          p.scratch_bytes};
}

}  // namespace
}  // namespace genesis

STABLE_TORCH_LIBRARY_IMPL(genesis, CPU, m) {
  genesis::register_op<genesis::EmulatedEngine>(m, genesis::OpKind::kModelsGenesis);
  genesis::register_op<genesis::EmulatedEngine>(m, genesis::OpKind::kBezier);
  genesis::register_op<genesis::EmulatedEngine>(m, genesis::OpKind::kModelsGenesis, true);
  genesis::register_op<genesis::EmulatedEngine>(m, genesis::OpKind::kPaintMask);
  genesis::register_op<genesis::EmulatedEngine>(m, genesis::OpKind::kShuffleMask);
}

// No tensor argument: registered for every backend at once.
STABLE_TORCH_LIBRARY_IMPL(genesis, CompositeExplicitAutograd, m) {
  m.impl("_launch_plan", TORCH_BOX(&genesis::launch_plan_hook));
}
