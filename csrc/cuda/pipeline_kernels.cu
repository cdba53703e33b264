// CUDA kernels: thin __global__ wrappers that map the grid onto the shared bodies in
// kernels/launch_bodies.h (which the CPU emulation in csrc/emulate runs too). No torch headers.
#include "cuda/pipeline_launch.h"
#include "kernels/launch_bodies.h"

namespace genesis::cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

struct DeviceAtomicMax {
  __device__ void operator()(int32_t* address, int32_t value) const { atomicMax(address, value); }
};

__global__ void params_kernel(PipelineConfig cfg, Shape shape, SampleParams* params) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b < shape.batch) params_body(cfg, shape, params, b);
}

__global__ void explicit_params_kernel(const double* ctrl, const uint8_t* increasing, SampleParams* params,
                                       int64_t batch) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b < batch) explicit_params_body(ctrl, increasing, params, b);
}

// One block per sample: all polyline points, then (after the barrier) the index grid.
__global__ void curve_kernel(const SampleParams* params, float* xs, float* ys, int32_t* grid) {
  const int64_t b = blockIdx.x;
  if (!params[b].nonlinear) return;  // uniform per block, so no thread skips the barrier alone
  for (int i = threadIdx.x; i < kCurvePoints; i += blockDim.x) curve_point_body(params, xs, ys, b, i);
  __syncthreads();
  for (int g = threadIdx.x; g < kCurveGridPoints; g += blockDim.x) curve_grid_body(params, xs, grid, b, g);
}

__global__ void owner_kernel(PipelineConfig cfg, Shape shape, const SampleParams* params, int32_t* owner) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= shape.batch * cfg.num_windows) return;
  owner_body(cfg, shape, params, owner, i / cfg.num_windows, i % cfg.num_windows, DeviceAtomicMax{});
}

template <typename T>
__global__ void voxel_kernel(const T* x, T* input, T* target, Shape shape, PipelineConfig cfg,
                             const SampleParams* params, float* xs, float* ys, int32_t* grid, const int32_t* owner) {
  const int64_t S = shape.spatial();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= shape.batch * S) return;
  voxel_body(x, input, target, shape, cfg, params, xs, ys, grid, owner, i / S, i % S);
}

template <typename T>
cudaError_t launch_typed(const void* x, void* input, void* target, const Shape& shape, const PipelineConfig& cfg,
                         const Scratch& s, bool params_ready, cudaStream_t stream) {
  const int64_t B = shape.batch, S = shape.spatial();
  if (!params_ready) params_kernel<<<blocks_for(B), kThreads, 0, stream>>>(cfg, shape, s.params);
  if (params_ready || cfg.nonlinear_p > 0.0) curve_kernel<<<static_cast<unsigned>(B), kThreads, 0, stream>>>(
      s.params, s.xs, s.ys, s.grid);
  const bool shuffle = cfg.shuffle_p > 0.0 && cfg.num_windows > 0;
  if (shuffle) {
    cudaError_t err = cudaMemsetAsync(s.owner, 0xff, sizeof(int32_t) * B * S, stream);  // all -1
    if (err != cudaSuccess) return err;
    owner_kernel<<<blocks_for(B * cfg.num_windows), kThreads, 0, stream>>>(cfg, shape, s.params, s.owner);
  }
  voxel_kernel<T><<<blocks_for(B * S), kThreads, 0, stream>>>(
      static_cast<const T*>(x), static_cast<T*>(input), static_cast<T*>(target), shape, cfg, s.params, s.xs, s.ys,
      s.grid, s.owner);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_explicit_params(const double* ctrl, const uint8_t* increasing, SampleParams* params,
                                   int64_t batch, cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  explicit_params_kernel<<<blocks_for(batch), kThreads, 0, stream>>>(ctrl, increasing, params, batch);
  return cudaGetLastError();
}

cudaError_t launch_pipeline(Storage storage, const void* x, void* input, void* target, const Shape& shape,
                            const PipelineConfig& cfg, const Scratch& scratch, bool params_ready,
                            cudaStream_t stream) {
  if (shape.batch * shape.channels * shape.spatial() == 0) return cudaSuccess;
  switch (storage) {
    case Storage::kFloat: return launch_typed<float>(x, input, target, shape, cfg, scratch, params_ready, stream);
    case Storage::kDouble: return launch_typed<double>(x, input, target, shape, cfg, scratch, params_ready, stream);
    case Storage::kHalf: return launch_typed<Half16>(x, input, target, shape, cfg, scratch, params_ready, stream);
    case Storage::kBFloat16:
      return launch_typed<BFloat16>(x, input, target, shape, cfg, scratch, params_ready, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace genesis::cuda
