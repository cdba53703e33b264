#pragma once
// Torch-side helpers shared by the CPU, CUDA and emulated engines: argument checks (every bad
// argument becomes a RuntimeError naming it, never a crash), the engines' config built from named
// arguments, and dtype dispatch. Uses only the LibTorch stable ABI.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "bodies/half.h"
#include "bodies/params.h"
#include "op_table.h"

namespace genesis {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

constexpr int64_t kMaxWindows = 10000000;
constexpr int64_t kMaxSpatial = (int64_t{1} << 31) - 1;  // int32 voxel indices and maps

// Shape of sizes (B, C, H, W) or (B, C, D, H, W) (dims = 4 or 5).
template <typename Sizes>
Shape shape_of(const Sizes& sizes, int64_t dims, const char* op) {
  Shape s;
  s.batch = sizes[0];
  s.channels = sizes[1];
  s.nd = static_cast<int>(dims) - 2;
  s.dim[0] = s.nd == 3 ? sizes[2] : 1;
  s.dim[1] = sizes[dims - 2];
  s.dim[2] = sizes[dims - 1];
  STD_TORCH_CHECK(s.spatial() <= kMaxSpatial, op, ": x has ", s.spatial(),
                  " voxels per channel; at most 2^31 - 1 are supported");
  return s;
}

// The shape of x, any dtype: the mask-only ops read only x's shape and device.
inline Shape check_shape(const Tensor& x, const char* op) {
  STD_TORCH_CHECK(x.dim() == 4 || x.dim() == 5, op, ": x must have shape (B, C, H, W) or (B, C, D, H, W), got ",
                  x.dim(), " dims");
  return shape_of(x.sizes(), x.dim(), op);
}

inline Shape check_input(const Tensor& x, const char* op) {
  const Shape s = check_shape(x, op);
  const ScalarType st = x.scalar_type();
  STD_TORCH_CHECK(
      st == ScalarType::Float || st == ScalarType::Double || st == ScalarType::Half || st == ScalarType::BFloat16, op,
      ": x must be float16, bfloat16, float32 or float64");
  return s;
}

inline void check_probability(double p, const char* op, const char* name) {
  STD_TORCH_CHECK(p >= 0.0 && p <= 1.0, op, ": ", name, " must be a probability in [0, 1], got ", p);
}

inline void check_range(double lo, double hi, const char* op) {
  STD_TORCH_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo < hi, op,
                  ": value range must be finite with lo < hi, got (", lo, ", ", hi, ")");
  STD_TORCH_CHECK(
      static_cast<float>(lo) < static_cast<float>(hi) && std::isfinite(static_cast<float>(hi) - static_cast<float>(lo)),
      op, ": value range (", lo, ", ", hi, ") is not representable in float32");
}

inline void check_offset(int64_t sample_offset, const Shape& s, const char* op) {
  STD_TORCH_CHECK(sample_offset >= 0 && sample_offset + s.batch <= (int64_t{1} << 32), op,
                  ": sample_offset must be >= 0 and sample_offset + batch <= 2^32, got ", sample_offset);
}

// The numeric arguments of an op, by name. An op sets its own (see op_entries.h); every stage it
// does not set stays off. make_config checks them and builds the engines' config.
struct OpArgs {
  double flip_p = 0.0, shuffle_p = 0.0, nonlinear_p = 0.0, paint_p = 0.0, inpaint_rate = 0.0;
  double inpaint_p = 1.0, outpaint_p = 1.0;  // the inpaint and outpaint ops' argument p
  int64_t num_windows = 0;
  double lo = 0.0, hi = 1.0;
  int64_t seed = 0;
  int64_t sample_offset = 0;
  // The stream in device memory (PipelineConfig::seed_src): sample_offset is then not checked,
  // since reading it would synchronise with the device.
  const int64_t* seed_src = nullptr;
  const int64_t* offset_src = nullptr;
};

// Checks a's fields, naming them as the op's schema does (kOpTable), and builds the config.
inline PipelineConfig make_config(OpKind kind, const OpArgs& a, const Shape& s, const char* op) {
  const ArgNames& n = op_row(kind).names;
  check_probability(a.flip_p, op, n.flip_p);
  check_probability(a.shuffle_p, op, n.shuffle_p);
  check_probability(a.nonlinear_p, op, n.nonlinear_p);
  check_probability(a.paint_p, op, n.paint_p);
  check_probability(a.inpaint_rate, op, n.inpaint_rate);
  check_probability(a.inpaint_p, op, n.inpaint_p);
  check_probability(a.outpaint_p, op, n.outpaint_p);
  STD_TORCH_CHECK(a.num_windows >= 0 && a.num_windows <= kMaxWindows, op, ": num_windows must be in [0, ", kMaxWindows,
                  "], got ", a.num_windows);
  // lo = hi = NaN: each sample's own range (docs/SPEC.md, section 4.8), no schema change.
  const bool per_sample_range = std::isnan(a.lo) && std::isnan(a.hi);
  if (!per_sample_range) check_range(a.lo, a.hi, op);
  if (a.offset_src == nullptr) check_offset(a.sample_offset, s, op);
  PipelineConfig c{};
  c.op = kind;
  c.flip_p = a.flip_p;
  c.shuffle_p = a.shuffle_p;
  c.num_windows = a.num_windows;
  c.nonlinear_p = a.nonlinear_p;
  c.paint_p = a.paint_p;
  c.inpaint_rate = a.inpaint_rate;
  c.inpaint_p = a.inpaint_p;
  c.outpaint_p = a.outpaint_p;
  c.lo = static_cast<float>(a.lo);
  c.hi = static_cast<float>(a.hi);
  c.per_sample_range = per_sample_range ? 1 : 0;
  if (per_sample_range) c.lo = c.hi = 0.0f;  // replaced per sample by the range stage
  c.seed = static_cast<uint64_t>(a.seed);    // the Python layer maps [0, 2^64) onto int64
  c.sample_offset = a.sample_offset;
  c.seed_src = a.seed_src;
  c.offset_src = a.offset_src;
  c.given = GivenCurves{nullptr, nullptr};
  return c;
}

// A stream argument given as a tensor (the tensor_seed overloads): 0-dim int64 on x's device.
inline void check_stream_tensor(const Tensor& t, const Tensor& x, const char* op, const char* name) {
  STD_TORCH_CHECK(t.dim() == 0 && t.scalar_type() == ScalarType::Long && t.is_cuda() == x.is_cuda() &&
                      t.get_device_index() == x.get_device_index(),
                  op, ": ", name, " must be a 0-dim int64 tensor on x's device");
}

// Explicit Bezier parameters: control_points (B, 4) in [0, 1], increasing (B,) bool.
inline void check_bezier_args(const Tensor& x, const Tensor& cp, const Tensor& inc, const Shape& s, const char* op) {
  STD_TORCH_CHECK(cp.dim() == 2 && cp.sizes()[0] == s.batch && cp.sizes()[1] == 4, op,
                  ": control_points must have shape (B, 4) = (", s.batch, ", 4)");
  STD_TORCH_CHECK(cp.scalar_type() == ScalarType::Double, op, ": control_points must be float64");
  STD_TORCH_CHECK(inc.dim() == 1 && inc.sizes()[0] == s.batch, op, ": increasing must have shape (B,)");
  STD_TORCH_CHECK(inc.scalar_type() == ScalarType::Bool, op, ": increasing must be a bool tensor");
  STD_TORCH_CHECK(cp.get_device_index() == x.get_device_index() && cp.is_cuda() == x.is_cuda() &&
                      inc.get_device_index() == x.get_device_index() && inc.is_cuda() == x.is_cuda(),
                  op, ": control_points and increasing must be on x's device");
}

template <typename F>
void dispatch_storage(ScalarType st, F&& f) {
  switch (st) {
    case ScalarType::Float:
      f(float{});
      break;
    case ScalarType::Double:
      f(double{});
      break;
    case ScalarType::Half:
      f(Half16{});
      break;
    case ScalarType::BFloat16:
      f(BFloat16{});
      break;
    default:
      STD_TORCH_CHECK(false, "genesis: unsupported dtype");
  }
}

}  // namespace genesis
