#pragma once
// Every launch configuration of the CUDA pipeline and the layout of its device scratch, in one
// torch-free function (launch_plan). The CUDA launcher (csrc/cuda/cuda_kernels.cu), the
// torch-side allocation (csrc/cuda/cuda_engine.cpp) and the CPU emulation of the launch
// (csrc/emulate/emulate_cuda.cpp) all use it, so the emulation runs the grids the GPU runs, and
// tests check the limits at extreme sizes through genesis::_launch_plan without a GPU.
//
// Grid limits: gridDim.x <= 2^31 - 1, gridDim.y <= 65535. Kernels whose item count grows with
// B x num_windows or B loop grid-stride over 64-bit item indices, with grids capped at
// kGridStrideBlocks; the voxel kernel uses per-sample grids (x: voxel groups of one sample,
// y: samples, grid-stride), so no 64-bit division by the sample size happens per voxel.
#include <cstdint>

#include "bodies/bezier.h"
#include "bodies/params.h"

namespace genesis {

constexpr int64_t kLaunchThreads = 256;       // threads per block (all kernels but the window kernel)
constexpr int64_t kWarpSize = 32;             // the window kernel: one warp per block
constexpr int64_t kMaxGridY = 65535;          // CUDA's limit (gridDim.x: 2^31 - 1, never reached)
constexpr int64_t kGridStrideBlocks = 65536;  // enough blocks to fill any current GPU many times
constexpr int64_t kVoxelsPerThread = 4;       // one Philox block = the fill noise of 4 voxels
// A window's permutation and draws (2 x 4 bytes per position) go to dynamic shared memory while
// it and the kernel's static state (WindowState, under 1 KB) stay within the 48 KB a block gets
// without an opt-in attribute: windows up to 6016 voxels, i.e. volumes up to about 180^3. Larger
// windows use global scratch, one slice per block of the window kernel, whose grid is then capped
// so that the slices total at most kWindowGlobalBytes.
constexpr int64_t kWindowSharedBytes = 47 * 1024;
// The global slices' cap: the emulation's (and, without a device query, the GPU's) fixed value,
// and the most a GPU call takes when its free memory allows (window_global_cap). At 512^3 the
// fixed 256 MB holds 253 slices of 1 MB, about 2 warps per SM of an H200; 4 GB holds 4048.
constexpr int64_t kWindowGlobalBytes = int64_t{256} << 20;
constexpr int64_t kWindowGlobalMaxBytes = int64_t{4} << 30;
// Windows of at most kSmallWindowVoxels voxels (every window of 64x64x32, most of 160^3) take the
// thread-per-window path: one thread per (sample, window), whose permutation lives in its own
// shared-memory slice of one byte per position. One thread per window instead of a warp keeps
// every lane busy (a warp's lane 0 otherwise runs the scan and the swaps alone) and needs no
// barrier; its serial loop is short because the window is.
constexpr int64_t kSmallWindowVoxels = 128;
constexpr int64_t kSmallWindowThreads = 128;  // threads per block of the thread-per-window path
static_assert(kSmallWindowVoxels <= 256, "the thread path's positions are bytes");

struct Grid {
  int64_t x = 0, y = 1;  // blocks (0: not launched)
  int64_t threads = kLaunchThreads;
  int64_t shared_bytes = 0;  // dynamic shared memory
};

struct LaunchPlan {
  bool curves = false;                              // curve tables (nonlinear, bezier, fused with nonlinear_p > 0)
  bool shuffle = false;                             // owner kernel, and window kernel unless the op is shuffle_mask
  Grid params, curve, owner, window, range, voxel;  // range: value_range="per_sample" only
  int64_t voxel_groups = 0;                         // kVoxelsPerThread-voxel groups per sample
  int64_t window_items = 0;                         // B x num_windows
  int64_t window_capacity = 0;                      // largest window volume
  bool window_per_thread = false;                   // the thread-per-window path (windows of <= kSmallWindowVoxels)
  int64_t window_slice_stride = 0;  // its bytes per thread: capacity rounded up to an odd number of words
  bool window_in_shared = false;    // the block path: perm and draws in shared memory, else global scratch
  bool voxel_vector = false;        // spatial size % kVoxelsPerThread == 0: a group's voxels are one aligned vector
  // Scratch layout: byte offsets of each piece (256-byte aligned) and sizes; 0 bytes = absent.
  int64_t params_offset = 0, params_bytes = 0;
  int64_t curve_offset = 0, curve_bytes = 0;  // xs, ys (B x kCurvePoints floats each), grid
  int64_t owner_offset = 0, owner_bytes = 0;  // B x spatial int32
  int64_t window_offset = 0, window_bytes = 0;
  int64_t scratch_bytes = 0;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t min_i64(int64_t a, int64_t b) { return a < b ? a : b; }

// Largest shuffle window volume: sides up to max(1, dim / 10) per axis (window_from_words).
inline int64_t max_window_volume(const Shape& shape) {
  int64_t n = 1;
  for (int a = 0; a < 3; ++a) n *= shape.dim[a] / 10 > 1 ? shape.dim[a] / 10 : 1;
  return n;
}

// The cap on the block path's global slices for a device with free_bytes of free memory: an
// eighth of it, within [kWindowGlobalBytes, kWindowGlobalMaxBytes] (the lower bound keeps what
// every call could take before: torch's cache may hold memory the driver does not count as free).
// free_bytes <= 0: not queried (the emulation), the fixed kWindowGlobalBytes.
inline int64_t window_global_cap(int64_t free_bytes) {
  if (free_bytes <= 0) return kWindowGlobalBytes;
  const int64_t eighth = free_bytes / 8;
  return eighth < kWindowGlobalBytes      ? kWindowGlobalBytes
         : eighth > kWindowGlobalMaxBytes ? kWindowGlobalMaxBytes
                                          : eighth;
}

// A pure function of its inputs (no device query), so that tests can check every path and limit.
inline LaunchPlan launch_plan(const Shape& shape, const PipelineConfig& cfg,
                              int64_t window_global_bytes = kWindowGlobalBytes) {
  LaunchPlan p;
  const int64_t B = shape.batch, S = shape.spatial();
  p.curves = cfg.nonlinear_p > 0.0;  // the bezier op's config has nonlinear_p = 1
  p.shuffle = cfg.shuffle_p > 0.0 && cfg.num_windows > 0;
  p.params.x = min_i64(ceil_div(B, kLaunchThreads), kGridStrideBlocks);  // drawn or given (bezier)
  if (p.curves) p.curve.x = min_i64(B, kGridStrideBlocks);               // one block per sample, grid-stride
  if (cfg.per_sample_range) p.range.x = min_i64(B, kGridStrideBlocks);   // one block per sample, grid-stride
  if (p.shuffle) {
    p.window_items = B * cfg.num_windows;
    p.owner.x = min_i64(ceil_div(p.window_items, kLaunchThreads), kGridStrideBlocks);
  }
  // shuffle_mask needs only which voxels a window owns (the owner map), not the permutations.
  if (p.shuffle && cfg.op != OpKind::kShuffleMask) {
    p.window_capacity = max_window_volume(shape);
    p.window_per_thread = p.window_capacity <= kSmallWindowVoxels;
    if (p.window_per_thread) {
      // An odd number of 4-byte words per slice: threads of a warp at the same position hit
      // different shared-memory banks.
      p.window_slice_stride = (ceil_div(p.window_capacity, 4) | 1) * 4;
      p.window.threads = kSmallWindowThreads;
      p.window.x = min_i64(ceil_div(p.window_items, kSmallWindowThreads), kGridStrideBlocks);
      p.window.shared_bytes = kSmallWindowThreads * p.window_slice_stride;
    } else {
      const int64_t per_window = 2 * 4 * p.window_capacity;
      p.window_in_shared = per_window <= kWindowSharedBytes;
      p.window.threads = kWarpSize;
      if (p.window_in_shared) {
        p.window.x = min_i64(p.window_items, kGridStrideBlocks);
        p.window.shared_bytes = per_window;
      } else {
        const int64_t fit = window_global_bytes / per_window;
        p.window.x = min_i64(p.window_items, min_i64(kGridStrideBlocks, fit > 1 ? fit : 1));
        p.window_bytes = p.window.x * per_window;
      }
    }
  }
  p.voxel_vector = S % kVoxelsPerThread == 0;
  p.voxel_groups = ceil_div(S, kVoxelsPerThread);
  p.voxel.x = ceil_div(p.voxel_groups, kLaunchThreads);  // S < 2^31: at most 2^21 blocks
  p.voxel.y = min_i64(B, kMaxGridY);
  const auto align = [](int64_t n) { return (n + 255) / 256 * 256; };
  p.params_bytes = B * static_cast<int64_t>(sizeof(SampleParams));
  if (p.curves) p.curve_bytes = B * (2 * kCurvePoints + kCurveGridPoints) * 4;
  if (p.shuffle) p.owner_bytes = B * S * 4;
  p.curve_offset = align(p.params_bytes);
  p.owner_offset = p.curve_offset + align(p.curve_bytes);
  p.window_offset = p.owner_offset + align(p.owner_bytes);
  p.scratch_bytes = p.window_offset + p.window_bytes;
  return p;
}

// Device (or emulated) scratch of one call, carved out of one allocation of plan.scratch_bytes.
struct Scratch {
  SampleParams* params;  // B
  float* xs;             // B x kCurvePoints   (null without curves)
  float* ys;             // B x kCurvePoints
  int32_t* grid;         // B x kCurveGridPoints
  int32_t* owner;        // B x spatial        (null without shuffle)
  uint32_t* window;      // window kernel's global slices (null when in shared memory)
};

inline Scratch carve_scratch(const LaunchPlan& p, int64_t batch, void* base) {
  char* c = static_cast<char*>(base);
  Scratch s;
  s.params = reinterpret_cast<SampleParams*>(c + p.params_offset);
  s.xs = p.curves ? reinterpret_cast<float*>(c + p.curve_offset) : nullptr;
  s.ys = p.curves ? s.xs + batch * kCurvePoints : nullptr;
  s.grid = p.curves ? reinterpret_cast<int32_t*>(s.ys + batch * kCurvePoints) : nullptr;
  s.owner = p.shuffle ? reinterpret_cast<int32_t*>(c + p.owner_offset) : nullptr;
  s.window = p.window_bytes > 0 ? reinterpret_cast<uint32_t*>(c + p.window_offset) : nullptr;
  return s;
}

}  // namespace genesis
