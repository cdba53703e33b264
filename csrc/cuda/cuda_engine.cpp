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
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "cuda/arch_fit.h"
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

// GENESIS_CUDA_SEPARATE_SCRATCH=1 (bench/gpu_check.py's sanitizer steps): each scratch piece gets
// its own allocation, so that with PYTORCH_NO_CUDA_MEMORY_CACHING=1 (each its own cudaMalloc)
// compute-sanitizer's memcheck sees an overrun from one piece into the next. Read once.
bool separate_scratch() {
  static const bool on = [] {
    const char* v = std::getenv("GENESIS_CUDA_SEPARATE_SCRATCH");
    return v != nullptr && *v != '\0' && std::string(v) != "0";
  }();
  return on;
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
// code (sm_XY) and PTX (compute_XY) for the architectures in GENESIS_CUDA_ARCHS (set by CMake);
// which of them runs where is decided by arch_fit (cuda/arch_fit.h).
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
  const std::string archs = GENESIS_CUDA_ARCHS;  // e.g. "sm_80,sm_86,sm_89,sm_90,compute_90"
  const ArchFit fit = arch_fit(archs, prop.major, prop.minor, driver, CUDART_VERSION);
  if (fit == ArchFit::kRuns) return "";
  char buf[768];
  if (fit == ArchFit::kPtxNeedsNewerDriver) {
    std::snprintf(buf, sizeof buf,
                  "GPU %d (%s) has compute capability %d.%d, for which this build holds only PTX (%s), made by "
                  "CUDA %d.%d; the NVIDIA driver supports CUDA %d.%d and cannot compile newer PTX "
                  "(cudaErrorUnsupportedPtxVersion). Update the driver, or rebuild with machine code for it: "
                  "CUDAARCHS=\"%d%d\" pip install --no-cache-dir --force-reinstall --no-deps "
                  "<genesis-ops or its source directory>",
                  device, prop.name, prop.major, prop.minor, archs.c_str(), CUDART_VERSION / 1000,
                  CUDART_VERSION % 1000 / 10, driver / 1000, driver % 1000 / 10, prop.major, prop.minor);
    return buf;
  }
  std::snprintf(buf, sizeof buf,
                "GPU %d (%s) has compute capability %d.%d, but this build holds CUDA code only for %s. "
                "Rebuild for it: CUDAARCHS=\"%d%d\" pip install --no-cache-dir --force-reinstall --no-deps "
                "<genesis-ops or its source directory>",
                device, prop.name, prop.major, prop.minor, archs.c_str(), prop.major, prop.minor);
  return buf;
}

// device_problem, checked once per device. Only a success is cached: a failed check (a driver
// not yet ready, a query made during a CUDA graph capture, where it is illegal) is checked again
// on the next call. So make one warm-up call on each device before capturing a CUDA graph: the
// check then queries nothing inside the capture.
void check_device(int device, const char* op) {
  static std::mutex mu;
  static std::unordered_set<int> good;
  {
    const std::lock_guard<std::mutex> lock(mu);
    if (good.count(device) != 0) return;
  }
  const std::string problem = device_problem(device);
  STD_TORCH_CHECK(problem.empty(), op, ": ", problem);
  const std::lock_guard<std::mutex> lock(mu);
  good.insert(device);
}
// The CUDA engine of every op (op_entries.h).
struct CudaEngine {
  static constexpr const char* kSchemaPrefix = "";
  static constexpr bool kStreamOnDevice = true;  // the params kernel reads a tensor seed: no synchronisation

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
  // the shuffle's owner map only where windows shuffle. One allocation, carved as planned, or,
  // for the sanitizers, one per piece (separate_scratch).
  struct [[gnu::visibility("hidden")]] Launch {
    cudaStream_t stream;
    LaunchPlan plan;
    std::vector<Tensor> scratch;
    Scratch s;
    Launch(const Tensor& x, const Shape& shape, const PipelineConfig& cfg, const char* op)
        : stream((check_device(x.get_device_index(), op), current_stream(x.get_device_index(), op))),
          plan(device_plan(shape, cfg, stream)) {
      if (!separate_scratch()) {
        scratch.push_back(scratch_bytes(x, plan.scratch_bytes));
        s = carve_scratch(plan, shape.batch, scratch.back().mutable_data_ptr());
        return;
      }
      const auto piece = [&](int64_t bytes) -> char* {
        if (bytes == 0) return nullptr;
        scratch.push_back(scratch_bytes(x, bytes));
        return static_cast<char*>(scratch.back().mutable_data_ptr());
      };
      // As carve_scratch lays the pieces out, each in its own allocation.
      s.params = reinterpret_cast<SampleParams*>(piece(plan.params_bytes));
      s.xs = reinterpret_cast<float*>(piece(plan.curve_bytes));
      s.ys = s.xs != nullptr ? s.xs + shape.batch * kCurvePoints : nullptr;
      s.grid = s.ys != nullptr ? reinterpret_cast<int32_t*>(s.ys + shape.batch * kCurvePoints) : nullptr;
      s.owner = reinterpret_cast<int32_t*>(piece(plan.owner_bytes));
      s.window = reinterpret_cast<uint32_t*>(piece(plan.window_bytes));
    }
  };
};

}  // namespace
}  // namespace genesis

STABLE_TORCH_LIBRARY_IMPL(genesis, CUDA, m) { genesis::register_ops<genesis::CudaEngine>(m); }
