// An emulated CUDA launch: runs the CUDA kernels' bodies (kernels/launch_bodies.h) over their
// whole grids on the CPU, sequentially, in the same launch order, with the same buffers. Tests
// compare it with the NumPy reference so the code the GPU runs is checked on every machine,
// including CI without a GPU. Registered for CPU tensors as genesis::_emulated_cuda_*.
#include <algorithm>

#include "kernels/launch_bodies.h"
#include "op_common.h"

namespace genesis {
namespace {

struct SequentialAtomicMax {
  void operator()(int32_t* address, int32_t value) const { *address = std::max(*address, value); }
};

template <typename ParamsFn>
std::tuple<Tensor, Tensor> emulate(const Tensor& x, const Shape& shape, const PipelineConfig& cfg,
                                   ParamsFn&& params_kernel) {
  const Tensor xc = torch::stable::contiguous(x);
  Tensor input = torch::stable::empty_like(xc);
  Tensor target = torch::stable::empty_like(xc);
  if (xc.numel() == 0) return {input, target};
  const int64_t B = shape.batch, S = shape.spatial();
  std::vector<SampleParams> params(B);
  std::vector<float> xs(B * kCurvePoints), ys(B * kCurvePoints);
  std::vector<int32_t> grid(B * kCurveGridPoints);
  std::vector<int32_t> owner(B * S, -1);  // cudaMemsetAsync(0xff)
  for (int64_t b = 0; b < B; ++b) params_kernel(params.data(), b);
  for (int64_t b = 0; b < B; ++b)
    for (int i = 0; i < kCurvePoints; ++i) curve_point_body(params.data(), xs.data(), ys.data(), b, i);
  for (int64_t b = 0; b < B; ++b)
    for (int g = 0; g < kCurveGridPoints; ++g) curve_grid_body(params.data(), xs.data(), grid.data(), b, g);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < cfg.num_windows; ++k)
      owner_body(cfg, shape, params.data(), owner.data(), b, k, SequentialAtomicMax{});
  dispatch_storage(xc.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const T* xp = static_cast<const T*>(xc.const_data_ptr());
    T* ip = static_cast<T*>(input.mutable_data_ptr());
    T* tp = static_cast<T*>(target.mutable_data_ptr());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t v = 0; v < S; ++v)
        voxel_body(xp, ip, tp, shape, cfg, params.data(), xs.data(), ys.data(), grid.data(), owner.data(), b, v);
  });
  return {input, target};
}

std::tuple<Tensor, Tensor> emulated_models_genesis(Tensor x, double flip_p, double shuffle_p, int64_t num_windows,
                                                   double nonlinear_p, double paint_p, double inpaint_rate,
                                                   double lo, double hi, int64_t seed, int64_t sample_offset) {
  const char* op = "genesis::_emulated_cuda_models_genesis";
  const Shape s = check_input(x, op);
  const PipelineConfig cfg = pipeline_config(s, flip_p, shuffle_p, num_windows, nonlinear_p, paint_p,
                                             inpaint_rate, lo, hi, seed, sample_offset, op);
  return emulate(x, s, cfg, [&](SampleParams* params, int64_t b) { params_body(cfg, s, params, b); });
}

Tensor emulated_bezier(Tensor x, Tensor control_points, Tensor increasing, double lo, double hi) {
  const char* op = "genesis::_emulated_cuda_bezier";
  const Shape s = check_input(x, op);
  check_bezier_args(x, control_points, increasing, s, op);
  const PipelineConfig cfg = nonlinear_config(s, 1.0, lo, hi, 0, 0, op);
  const Tensor cp = torch::stable::contiguous(control_points);
  const Tensor inc = torch::stable::contiguous(increasing);
  const double* ctrl = static_cast<const double*>(cp.const_data_ptr());
  const uint8_t* up = static_cast<const uint8_t*>(inc.const_data_ptr());
  return std::get<0>(
      emulate(x, s, cfg, [&](SampleParams* params, int64_t b) { explicit_params_body(ctrl, up, params, b); }));
}

}  // namespace
}  // namespace genesis

STABLE_TORCH_LIBRARY_IMPL(genesis, CPU, m) {
  m.impl("_emulated_cuda_models_genesis", TORCH_BOX(&genesis::emulated_models_genesis));
  m.impl("_emulated_cuda_bezier", TORCH_BOX(&genesis::emulated_bezier));
}
