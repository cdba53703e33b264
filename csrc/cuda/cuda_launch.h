#pragma once
// Launchers of the CUDA kernels: raw pointers and a stream, no torch types, so that the .cu
// file compiles in about a second. Called from cuda_engine.cpp (the torch-side glue), which
// allocates plan.scratch_bytes and carves it with carve_scratch (bodies/launch_plan.h).
#include <cuda_runtime_api.h>

#include "bodies/launch_plan.h"

namespace genesis::cuda {

enum class Storage { kFloat, kDouble, kHalf, kBFloat16 };

// The whole pipeline as planned: params (drawn, or given: cfg.given), curve tables, shuffle owners
// and windows, voxels. target may be null (single ops), mask too (no mask asked for: B x spatial
// bytes otherwise). Returns the first launch error, at once.
cudaError_t launch_pipeline(Storage storage, const void* x, void* input, void* target, uint8_t* mask,
                            const Shape& shape, const PipelineConfig& cfg, const LaunchPlan& plan,
                            const Scratch& scratch, cudaStream_t stream);

// The mask-only ops (cfg.op is kPaintMask or kShuffleMask): B x spatial bool bytes, no image.
cudaError_t launch_mask(uint8_t* mask, const Shape& shape, const PipelineConfig& cfg, const LaunchPlan& plan,
                        const Scratch& scratch, cudaStream_t stream);

}  // namespace genesis::cuda
