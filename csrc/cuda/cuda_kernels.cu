// CUDA kernels: thin __global__ wrappers that map the grids of bodies/launch_plan.h onto the
// shared bodies in bodies/launch_bodies.h (which the CPU emulation in csrc/emulate runs too).
// No torch headers.
#include "cuda/cuda_launch.h"
#include "bodies/launch_bodies.h"
#include "bodies/value_range.h"

namespace genesis::cuda {
namespace {

struct DeviceAtomicMax {
  __device__ void operator()(int32_t* address, int32_t value) const { atomicMax(address, value); }
};

__device__ int64_t global_thread() { return blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; }
__device__ int64_t grid_threads() { return gridDim.x * static_cast<int64_t>(blockDim.x); }

__global__ void params_kernel(PipelineConfig cfg, Shape shape, SampleParams* params) {
  for (int64_t b = global_thread(); b < shape.batch; b += grid_threads()) params_body(cfg, shape, params, b);
}

// One block per sample (grid-stride): all polyline points, then (after the barrier) the index grid.
__global__ void curve_kernel(const SampleParams* params, int64_t batch, float* xs, float* ys, int32_t* grid) {
  for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
    if (!params[b].nonlinear) continue;  // uniform per block, so no thread skips a barrier alone
    for (int i = threadIdx.x; i < kCurvePoints; i += blockDim.x) curve_point_body(params, xs, ys, b, i);
    __syncthreads();
    for (int g = threadIdx.x; g < kCurveGridPoints; g += blockDim.x) curve_grid_body(params, xs, grid, b, g);
  }
}

__global__ void owner_kernel(PipelineConfig cfg, Shape shape, const SampleParams* params, int32_t* owner) {
  const int64_t items = shape.batch * cfg.num_windows;
  for (int64_t i = global_thread(); i < items; i += grid_threads())
    owner_body(cfg, shape, params, owner, i / cfg.num_windows, i % cfg.num_windows, DeviceAtomicMax{});
}

// One warp per block, one (sample, window) per iteration; phases as in launch_bodies.h.
__global__ void window_kernel(PipelineConfig cfg, Shape shape, const SampleParams* params, int32_t* owner,
                              bool in_shared, int64_t capacity, uint32_t* global) {
  __shared__ WindowState st;
  extern __shared__ uint32_t shared[];
  uint32_t* perm = window_slice(in_shared, capacity, shared, global, blockIdx.x);
  uint32_t* draws = perm + capacity;
  const uint32_t lane = threadIdx.x;
  const int64_t items = shape.batch * cfg.num_windows;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    if (lane == 0) window_begin(cfg, shape, params, item, st);
    __syncthreads();
    window_claims(shape, owner, st, lane);
    __syncthreads();
    if (lane == 0) window_first(st);
    __syncthreads();
    window_draws(cfg, st, perm, draws, lane);
    __syncthreads();
    if (lane == 0) window_swaps(st, perm, draws);
    __syncthreads();
    window_writes(shape, owner, st, draws, lane);
    __syncthreads();  // st, perm and draws are reused by the next item
  }
}

// value_range="per_sample": one block per sample (grid-stride), each thread's strided partial
// min/max, a shared-memory tree reduction, and thread 0 writes the sample's range into params.
template <typename T>
__global__ void range_kernel(const T* x, Shape shape, SampleParams* params) {
  __shared__ RangeAcc part[kLaunchThreads];
  const int64_t n = sample_values(shape);
  for (int64_t b = blockIdx.x; b < shape.batch; b += gridDim.x) {
    part[threadIdx.x] = range_partial(x, shape, b, threadIdx.x, n, blockDim.x);
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
      if (threadIdx.x < half) range_merge(part[threadIdx.x], part[threadIdx.x + half]);
      __syncthreads();
    }
    if (threadIdx.x == 0) range_finish(params[b], part[0]);
    __syncthreads();  // part is reused by the block's next sample
  }
}

// x: voxel groups of one sample; y: samples (grid-stride past 65535). At least 3 blocks of 256
// per SM: ptxas then fits the 4 voxels' state in 72 registers without spilling (unbounded: 88).
template <bool kMask, typename T>
__global__ void __launch_bounds__(kLaunchThreads, 3)
    voxel_kernel(const T* x, T* input, T* target, uint8_t* mask, Shape shape, PipelineConfig cfg,
                 const SampleParams* params, const float* xs, const float* ys, const int32_t* grid,
                 const int32_t* owner, int64_t groups) {
  const int64_t g = global_thread();
  if (g >= groups) return;
  for (int64_t b = blockIdx.y; b < shape.batch; b += gridDim.y)
    voxel_group_body<kMask>(x, input, target, mask, shape, cfg, params, xs, ys, grid, owner, b, g);
}

// The mask-only ops, on the voxel kernel's grid.
__global__ void mask_kernel(Shape shape, PipelineConfig cfg, const SampleParams* params, const int32_t* owner,
                            uint8_t* mask, int64_t groups) {
  const int64_t g = global_thread();
  if (g >= groups) return;
  for (int64_t b = blockIdx.y; b < shape.batch; b += gridDim.y) mask_group_body(shape, cfg, params, owner, mask, b, g);
}

dim3 grid_of(const Grid& g) { return dim3(static_cast<unsigned>(g.x), static_cast<unsigned>(g.y)); }

// Launches 1 to 4 (parameters, curve tables, shuffle owners and windows), as planned.
cudaError_t launch_prepare(const Shape& shape, const PipelineConfig& cfg, const LaunchPlan& p, const Scratch& s,
                           cudaStream_t stream) {
  // Each launch's error is returned at once, so that it is reported by this op and not by a
  // later, unrelated check.
  params_kernel<<<grid_of(p.params), p.params.threads, 0, stream>>>(cfg, shape, s.params);
  if (const cudaError_t err = cudaGetLastError()) return err;
  if (p.curves) {
    curve_kernel<<<grid_of(p.curve), p.curve.threads, 0, stream>>>(s.params, shape.batch, s.xs, s.ys, s.grid);
    if (const cudaError_t err = cudaGetLastError()) return err;
  }
  if (p.shuffle) {
    if (const cudaError_t err = cudaMemsetAsync(s.owner, 0xff, p.owner_bytes, stream)) return err;  // all -1
    owner_kernel<<<grid_of(p.owner), p.owner.threads, 0, stream>>>(cfg, shape, s.params, s.owner);
    if (const cudaError_t err = cudaGetLastError()) return err;
  }
  if (p.window.x > 0) {  // not for shuffle_mask
    window_kernel<<<grid_of(p.window), p.window.threads, p.window.shared_bytes, stream>>>(
        cfg, shape, s.params, s.owner, p.window_in_shared, p.window_capacity, s.window);
    if (const cudaError_t err = cudaGetLastError()) return err;
  }
  return cudaSuccess;
}

template <typename T>
cudaError_t launch_typed(const void* x, void* input, void* target, uint8_t* mask, const Shape& shape,
                         const PipelineConfig& cfg, const LaunchPlan& p, const Scratch& s, cudaStream_t stream) {
  if (const cudaError_t err = launch_prepare(shape, cfg, p, s, stream)) return err;
  if (cfg.per_sample_range) {
    const unsigned blocks = static_cast<unsigned>(min_i64(shape.batch, kGridStrideBlocks));
    range_kernel<T><<<blocks, kLaunchThreads, 0, stream>>>(static_cast<const T*>(x), shape, s.params);
    if (const cudaError_t err = cudaGetLastError()) return err;
  }
  const auto kernel = mask != nullptr ? voxel_kernel<true, T> : voxel_kernel<false, T>;
  kernel<<<grid_of(p.voxel), p.voxel.threads, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(input),
                                                           static_cast<T*>(target), mask, shape, cfg, s.params, s.xs,
                                                           s.ys, s.grid, s.owner, p.voxel_groups);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_pipeline(Storage storage, const void* x, void* input, void* target, uint8_t* mask,
                            const Shape& shape, const PipelineConfig& cfg, const LaunchPlan& plan,
                            const Scratch& scratch, cudaStream_t stream) {
  // With no channel there is no image to write, but a mask still has its voxels.
  if (shape.batch * shape.spatial() == 0 || (shape.channels == 0 && mask == nullptr)) return cudaSuccess;
  // A launch error left pending by earlier, unrelated work would otherwise be reported as ours.
  (void)cudaGetLastError();
  switch (storage) {
    case Storage::kFloat:
      return launch_typed<float>(x, input, target, mask, shape, cfg, plan, scratch, stream);
    case Storage::kDouble:
      return launch_typed<double>(x, input, target, mask, shape, cfg, plan, scratch, stream);
    case Storage::kHalf:
      return launch_typed<Half16>(x, input, target, mask, shape, cfg, plan, scratch, stream);
    case Storage::kBFloat16:
      return launch_typed<BFloat16>(x, input, target, mask, shape, cfg, plan, scratch, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_mask(uint8_t* mask, const Shape& shape, const PipelineConfig& cfg, const LaunchPlan& plan,
                        const Scratch& scratch, cudaStream_t stream) {
  if (shape.batch * shape.spatial() == 0) return cudaSuccess;
  (void)cudaGetLastError();  // as in launch_pipeline
  if (const cudaError_t err = launch_prepare(shape, cfg, plan, scratch, stream)) return err;
  mask_kernel<<<grid_of(plan.voxel), plan.voxel.threads, 0, stream>>>(shape, cfg, scratch.params, scratch.owner, mask,
                                                                      plan.voxel_groups);
  return cudaGetLastError();
}

}  // namespace genesis::cuda
