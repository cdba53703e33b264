// The CUDA launcher of the launch sequence (bodies/launch_sequence.h): one __global__ template
// that runs a kernel struct's block function with the GPU's block context, and the launch of each
// kernel on the caller's stream. The order of the stages and every kernel's loops are written in
// the sequence header, which the CPU emulation (csrc/emulate) runs too. No torch headers.
#include "bodies/launch_sequence.h"
#include "cuda/cuda_launch.h"

namespace genesis::cuda {
namespace {

// The block context of bodies/launch_sequence.h on the GPU: this thread's indices, a barrier per phase.
struct DeviceCtx {
  __device__ int64_t block_x() const { return blockIdx.x; }
  __device__ int64_t block_y() const { return blockIdx.y; }
  __device__ int64_t grid_x() const { return gridDim.x; }
  __device__ int64_t grid_y() const { return gridDim.y; }
  __device__ int64_t threads() const { return blockDim.x; }
  template <class F>
  __device__ void threads(F&& f) const {
    f(static_cast<int64_t>(threadIdx.x));
  }
  template <class F>
  __device__ void phase(F&& f) const {
    f(static_cast<int64_t>(threadIdx.x));
    __syncthreads();
  }
  __device__ uint32_t* shared_words() const {
    extern __shared__ uint32_t dynamic_shared[];
    return dynamic_shared;
  }
  template <class T>
  __device__ T& block_shared() const {
    __shared__ T value;
    return value;
  }
  __device__ void atomic_max(int32_t* address, int32_t value) const { atomicMax(address, value); }
};

template <class K, class... A>
__global__ void __launch_bounds__(K::kMaxThreads, K::kMinBlocks) kernel(A... args) {
  K::run(DeviceCtx{}, args...);
}

struct CudaLauncher {
  using Status = cudaError_t;
  static constexpr cudaError_t kOk = cudaSuccess;
  cudaStream_t stream;

  template <class K, class... A>
  cudaError_t launch(const Grid& g, A... args) {
    const dim3 grid(static_cast<unsigned>(g.x), static_cast<unsigned>(g.y));
    kernel<K, A...><<<grid, static_cast<unsigned>(g.threads), static_cast<size_t>(g.shared_bytes), stream>>>(args...);
    return cudaGetLastError();
  }
  cudaError_t fill_minus_one(int32_t* p, int64_t bytes) {
    return cudaMemsetAsync(p, 0xff, static_cast<size_t>(bytes), stream);
  }
};

}  // namespace

cudaError_t launch_pipeline(Storage storage, const void* x, void* input, void* target, uint8_t* mask,
                            const Shape& shape, const PipelineConfig& cfg, const LaunchPlan& plan,
                            const Scratch& scratch, cudaStream_t stream) {
  if (launch_is_empty(shape, mask != nullptr)) return cudaSuccess;
  // A launch error left pending by earlier, unrelated work would otherwise be reported as ours.
  (void)cudaGetLastError();
  CudaLauncher l{stream};
  const auto run = [&](auto tag) {
    using T = decltype(tag);
    return launch_image(l, static_cast<const T*>(x), static_cast<T*>(input), static_cast<T*>(target), mask, shape, cfg,
                        plan, scratch);
  };
  switch (storage) {
    case Storage::kFloat:
      return run(float{});
    case Storage::kDouble:
      return run(double{});
    case Storage::kHalf:
      return run(Half16{});
    case Storage::kBFloat16:
      return run(BFloat16{});
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_mask(uint8_t* mask, const Shape& shape, const PipelineConfig& cfg, const LaunchPlan& plan,
                        const Scratch& scratch, cudaStream_t stream) {
  if (shape.batch * shape.spatial() == 0) return cudaSuccess;
  (void)cudaGetLastError();  // as in launch_pipeline
  CudaLauncher l{stream};
  return launch_masks(l, mask, shape, cfg, plan, scratch);
}

}  // namespace genesis::cuda
