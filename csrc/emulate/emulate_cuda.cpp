// An emulated CUDA launch: runs the launch sequence of the CUDA kernels (bodies/launch_sequence.h)
// over their whole grids on the CPU, block after block, with the same buffers. Tests compare it
// with the NumPy reference so the code the GPU runs is checked on every machine, including CI
// without a GPU. Registered for CPU tensors as genesis::_emulated_cuda_* (EmulatedEngine, op_entries.h).
#include <algorithm>
#include <vector>

#include "bodies/launch_sequence.h"
#include "op_entries.h"

namespace genesis {
namespace {

// The block context of bodies/launch_sequence.h on the CPU: one block at a time; threads(f) and
// phase(f) run f for every thread of the block in turn, so each phase ends, for all threads,
// before the next begins (what the GPU's barrier guarantees).
struct SequentialCtx {
  int64_t bx, by;
  const Grid* grid;
  uint32_t* shared;  // the block's dynamic shared memory (grid->shared_bytes)
  void* state;       // its static shared memory (block_shared)

  int64_t block_x() const { return bx; }
  int64_t block_y() const { return by; }
  int64_t grid_x() const { return grid->x; }
  int64_t grid_y() const { return grid->y; }
  int64_t threads() const { return grid->threads; }
  template <class F>
  void threads(F&& f) const {
    for (int64_t t = 0; t < grid->threads; ++t) f(t);
  }
  template <class F>
  void phase(F&& f) const {
    threads(f);
  }
  uint32_t* shared_words() const { return shared; }
  template <class T>
  T& block_shared() const {
    static_assert(sizeof(T) <= kStaticSharedBytes && alignof(T) <= 16, "static shared state too large");
    return *static_cast<T*>(state);
  }
  void atomic_max(int32_t* address, int32_t value) const { *address = std::max(*address, value); }
  static constexpr size_t kStaticSharedBytes = 4096;
};

struct EmulationLauncher {
  using Status = int;
  static constexpr int kOk = 0;

  // Blocks in the order they are numbered (x fastest). The shared memory is one buffer that each
  // block reuses, filled with a pattern once per launch: like the GPU's, it is not zeroed per block.
  template <class K, class... A>
  int launch(const Grid& g, A... args) {
    std::vector<uint32_t> shared(static_cast<size_t>((g.shared_bytes + 3) / 4), 0xA5A5A5A5u);
    alignas(16) unsigned char state[SequentialCtx::kStaticSharedBytes];
    for (int64_t by = 0; by < g.y; ++by)
      for (int64_t bx = 0; bx < g.x; ++bx) K::run(SequentialCtx{bx, by, &g, shared.data(), state}, args...);
    return kOk;
  }
  int fill_minus_one(int32_t* p, int64_t bytes) {  // cudaMemsetAsync(0xff)
    std::fill(p, p + bytes / 4, -1);
    return kOk;
  }
};

// Scratch of plan.scratch_bytes, carved as on the GPU.
struct EmulatedScratch {
  std::vector<uint64_t> words;
  Scratch s;
  EmulatedScratch(const LaunchPlan& plan, int64_t batch)
      : words(static_cast<size_t>(plan.scratch_bytes / 8 + 1), 0), s(carve_scratch(plan, batch, words.data())) {}
};

std::tuple<Tensor, Tensor> emulate(const Tensor& x, const Shape& shape, const PipelineConfig& cfg, uint8_t* mask) {
  EngineIO io(x, cfg.op);
  if (launch_is_empty(shape, mask != nullptr)) return io.result();
  const LaunchPlan plan = launch_plan(shape, cfg);
  const EmulatedScratch scratch(plan, shape.batch);
  EmulationLauncher l;
  dispatch_storage(io.x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    launch_image(l, static_cast<const T*>(io.x.const_data_ptr()), static_cast<T*>(io.input.mutable_data_ptr()),
                 static_cast<T*>(io.target_ptr()), mask, shape, cfg, plan, scratch.s);
  });
  return io.result();
}

// launch_mask (cuda_kernels.cu): the mask-only ops.
void emulate_mask(const Shape& shape, const PipelineConfig& cfg, uint8_t* mask) {
  const LaunchPlan plan = launch_plan(shape, cfg);
  const EmulatedScratch scratch(plan, shape.batch);
  EmulationLauncher l;
  launch_masks(l, mask, shape, cfg, plan, scratch.s);
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
//   params_bytes, curve_bytes, owner_bytes, window_bytes, scratch_bytes, window_per_thread,
//   window_slice_stride, voxel_vector
// (tests/test_emulated_cuda.py, PLAN_FIELDS, names them in the same order). free_bytes: the GPU's
// free memory the CUDA engine would see (0: not queried, the emulation's fixed window scratch cap).
std::vector<int64_t> launch_plan_hook(std::vector<int64_t> sizes, double shuffle_p, int64_t num_windows,
                                      double nonlinear_p, bool params_given, int64_t free_bytes) {
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
  const LaunchPlan p = launch_plan(s, cfg, window_global_cap(free_bytes));
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
          p.scratch_bytes,
          p.window_per_thread ? 1 : 0,
          p.window_slice_stride,
          p.voxel_vector ? 1 : 0};
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
