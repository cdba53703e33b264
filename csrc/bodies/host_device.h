#pragma once
// GENESIS_HD marks functions compiled for both host (g++) and device (nvcc). The same bodies
// run in the CPU engine, in the CUDA kernels and in the CPU "emulated launch" used by tests.
#include <cstdint>

#if defined(__CUDACC__)
#define GENESIS_HD __host__ __device__ __forceinline__
#else
#define GENESIS_HD inline
#endif

// Unrolled on the GPU, where it turns run-time array indices into constants (registers, not
// stack); the host compilers unroll on their own.
#if defined(__CUDACC__)
#define GENESIS_UNROLL _Pragma("unroll")
#else
#define GENESIS_UNROLL
#endif
