// The CUDA engine of every genesis op and their CUDA registrations: the torch-side glue of the
// CUDA kernels (host compiler, stable ABI). Device check, device guard, current stream, scratch
// from torch's caching allocator, then one call into the torch-free launchers (cuda_kernels.cu).
// No host synchronisation. Nothing CUDA-specific comes from torch at build time: the current
// stream is looked up in the loaded torch (see current_stream), and cudart is linked statically,
// so this module also loads in a CPU-only torch.
#include <dlfcn.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <string>
#include <unordered_map>

#include "cuda/cuda_launch.h"
#include "op_entries.h"

namespace genesis {
namespace {

cuda::Storage storage_of(ScalarType st) {
  switch (st) {
    case ScalarType::Double:
      return cuda::Storage::kDouble;
    case ScalarType::Half:
      return cuda::Storage::kHalf;
    case ScalarType::BFloat16:
      return cuda::Storage::kBFloat16;
    default:
      return cuda::Storage::kFloat;
  }
}

Tensor scratch_bytes(const Tensor& like, int64_t bytes) {
  const int64_t n = bytes > 0 ? bytes : 1;
  return torch::stable::new_empty(like, {n}, ScalarType::Byte);
}

void check_cuda(cudaError_t err, const char* op) {
  STD_TORCH_CHECK(err == cudaSuccess, op, ": CUDA error: ", cudaGetErrorString(err));
}

// The current CUDA stream of torch, through the stable C shim function of libtorch_cuda (which a
// CUDA torch has already loaded). Resolved at run time, so the build needs no CUDA torch; the
// declaration in shim.h is only compiled for CUDA builds of torch, hence our own pointer type.
using GetCurrentCudaStreamFn = AOTITorchError (*)(int32_t device_index, void** ret_stream);
constexpr const char* kStreamFn = "aoti_torch_get_current_cuda_stream";

cudaStream_t current_stream(int32_t device, const char* op) {
  static const GetCurrentCudaStreamFn fn = [] {
    void* lib = dlopen("libtorch_cuda.so", RTLD_NOLOAD | RTLD_LAZY);  // never unloaded, like torch
    void* sym = lib != nullptr ? dlsym(lib, kStreamFn) : nullptr;
    if (sym == nullptr) sym = dlsym(RTLD_DEFAULT, kStreamFn);
    return reinterpret_cast<GetCurrentCudaStreamFn>(sym);
  }();
  STD_TORCH_CHECK(fn != nullptr, op, ": the loaded torch has no ", kStreamFn,
                  " (libtorch_cuda.so not loaded): a CUDA build of torch >= 2.10 is needed for CUDA tensors");
  void* stream = nullptr;
  TORCH_ERROR_CODE_CHECK(fn(device, &stream));
  return static_cast<cudaStream_t>(stream);
}

// Empty when this build's kernels run on the device, else why not. The module carries machine
// code (sm_XY: runs on compute capability X.y with y >= Y) and PTX (compute_XY: compiled by the
// driver for any capability >= X.Y) for the architectures in GENESIS_CUDA_ARCHS (set by CMake).
std::string device_problem(int device) {
  int driver = 0;
  cudaDriverGetVersion(&driver);
  if (driver / 1000 < CUDART_VERSION / 1000) {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "the NVIDIA driver supports CUDA %d.%d, but these kernels were built with CUDA %d.%d "
                  "(its runtime is linked in) and need a driver for CUDA %d.x: update the driver, or "
                  "rebuild genesis-ops with an older CUDA toolkit's nvcc on PATH",
                  driver / 1000, driver % 1000 / 10, CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10,
                  CUDART_VERSION / 1000);
    return buf;
  }
  cudaDeviceProp prop;
  const cudaError_t err = cudaGetDeviceProperties(&prop, device);
  if (err != cudaSuccess) return std::string("cannot query the GPU: ") + cudaGetErrorString(err);
  const int cc = prop.major * 10 + prop.minor;
  const std::string archs = GENESIS_CUDA_ARCHS;  // e.g. "sm_80,sm_86,sm_89,sm_90,compute_90"
  size_t pos = 0;
  while (pos <= archs.size()) {
    const size_t end = std::min(archs.find(',', pos), archs.size());
    const std::string a = archs.substr(pos, end - pos);
    pos = end + 1;
    int v = 0;
    char suffix = 0;  // "90a": architecture-specific code, runs on exactly 9.0 and is not forward compatible
    if (std::sscanf(a.c_str(), "sm_%d%c", &v, &suffix) >= 1) {
      if (suffix != 0 ? cc == v : (prop.major == v / 10 && prop.minor >= v % 10)) return "";
    } else if (std::sscanf(a.c_str(), "compute_%d%c", &v, &suffix) >= 1) {
      if (suffix != 0 ? cc == v : cc >= v) return "";
    } else {
      return "";  // all / all-major / native: CMake chose the list; a mismatch fails at launch
    }
  }
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "GPU %d (%s) has compute capability %d.%d, but this build holds CUDA code only for %s. "
                "Rebuild for it: CUDAARCHS=\"%d%d\" pip install --no-cache-dir --force-reinstall --no-deps "
                "<genesis-ops or its source directory>",
                device, prop.name, prop.major, prop.minor, archs.c_str(), prop.major, prop.minor);
  return buf;
}

// device_problem, checked once per device (it queries the driver).
void check_device(int device, const char* op) {
  static std::mutex mu;
  static std::unordered_map<int, std::string> problems;
  std::string problem;
  {
    const std::lock_guard<std::mutex> lock(mu);
    auto it = problems.find(device);
    if (it == problems.end()) it = problems.emplace(device, device_problem(device)).first;
    problem = it->second;
  }
  STD_TORCH_CHECK(problem.empty(), op, ": ", problem);
}

// The CUDA engine of every op (op_entries.h).
struct CudaEngine {
  static constexpr const char* kSchemaPrefix = "";

  static std::tuple<Tensor, Tensor> run(const Tensor& x, const Shape& shape, const PipelineConfig& cfg, const char* op,
                                        uint8_t* mask) {
    STD_TORCH_CHECK(x.is_cuda(), op, ": x must be a CUDA tensor");
    const torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
    EngineIO io(x, cfg.op);
    // With no channel there is no image to write, but a mask still has its voxels.
    if (io.empty() && (mask == nullptr || shape.batch * shape.spatial() == 0)) return io.result();
    const Launch l(io.x, shape, cfg, op);
    check_cuda(cuda::launch_pipeline(storage_of(io.x.scalar_type()), io.x.const_data_ptr(), io.input.mutable_data_ptr(),
                                     io.target_ptr(), mask, shape, cfg, l.plan, l.s, l.stream),
               op);
    return io.result();
  }

  static void run_mask(const Tensor& x, const Shape& shape, const PipelineConfig& cfg, const char* op, uint8_t* mask) {
    STD_TORCH_CHECK(x.is_cuda(), op, ": x must be a CUDA tensor");
    const torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
    if (shape.batch * shape.spatial() == 0) return;
    const Launch l(x, shape, cfg, op);
    check_cuda(cuda::launch_mask(mask, shape, cfg, l.plan, l.s, l.stream), op);
  }

 private:
  // The launch plan on the current device: where large windows need global scratch, its cap
  // comes from the device's free memory (one driver query, only then). Not while the stream is
  // being captured into a CUDA graph, where a query outside the stream could invalidate the
  // capture: the fixed cap then, which a replay can always use.
  static LaunchPlan device_plan(const Shape& shape, const PipelineConfig& cfg, cudaStream_t stream) {
    const LaunchPlan plan = launch_plan(shape, cfg);
    if (plan.window_bytes == 0) return plan;
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess || capture != cudaStreamCaptureStatusNone) {
      (void)cudaGetLastError();
      return plan;
    }
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
      (void)cudaGetLastError();  // not fatal: keep the fixed cap
      return plan;
    }
    return launch_plan(shape, cfg, window_global_cap(static_cast<int64_t>(free_bytes)));
  }

  // What a launch needs on x's device (under its guard): the device checked, the current stream,
  // and scratch for only what this op runs (launch_plan): curve tables only where curves are built,
  // the shuffle's owner map only where windows shuffle. One allocation, carved as planned.
  struct [[gnu::visibility("hidden")]] Launch {
    cudaStream_t stream;
    LaunchPlan plan;
    Tensor scratch;
    Scratch s;
    Launch(const Tensor& x, const Shape& shape, const PipelineConfig& cfg, const char* op)
        : stream((check_device(x.get_device_index(), op), current_stream(x.get_device_index(), op))),
          plan(device_plan(shape, cfg, stream)),
          scratch(scratch_bytes(x, plan.scratch_bytes)),
          s(carve_scratch(plan, shape.batch, scratch.mutable_data_ptr())) {}
  };
};

}  // namespace
}  // namespace genesis

STABLE_TORCH_LIBRARY_IMPL(genesis, CUDA, m) { genesis::register_ops<genesis::CudaEngine>(m); }
