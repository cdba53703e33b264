#pragma once
// Launchers of the CUDA kernels: raw pointers and a stream, no torch types, so that the .cu
// file compiles in about a second. Called from pipeline_cuda.cpp (the torch-side glue).
#include <cuda_runtime_api.h>

#include "kernels/params.h"

namespace genesis::cuda {

enum class Storage { kFloat, kDouble, kHalf, kBFloat16 };

// Device scratch for one call (allocated by the caller through torch's caching allocator).
struct Scratch {
  SampleParams* params;  // B
  float* xs;             // B * kCurvePoints
  float* ys;             // B * kCurvePoints
  int32_t* grid;         // B * kCurveGridPoints
  int32_t* owner;        // B * spatial (only when cfg.shuffle_p > 0)
};

// Fills scratch.params from explicit Bezier parameters instead of drawing them.
cudaError_t launch_explicit_params(const double* ctrl, const uint8_t* increasing, SampleParams* params,
                                   int64_t batch, cudaStream_t stream);

// The whole pipeline: params (unless params_ready), curve tables, shuffle owners, voxels.
// target may be null (single ops).
cudaError_t launch_pipeline(Storage storage, const void* x, void* input, void* target, const Shape& shape,
                            const PipelineConfig& cfg, const Scratch& scratch, bool params_ready,
                            cudaStream_t stream);

}  // namespace genesis::cuda
