#pragma once
// The entry points of the seven ops, written once over an engine (CpuEngine in
// cpu/cpu_engine.cpp, CudaEngine in cuda/cuda_engine.cpp, EmulatedEngine in
// emulate/emulate_cuda.cpp): check x, check the other arguments and build the config by name
// (op_common.h), then one call of the engine. An engine is a type with
//   static constexpr const char* kSchemaPrefix;  // "" or "_emulated_cuda_" (test hooks)
//   static std::tuple<Tensor, Tensor> run(const Tensor& x, const Shape& shape,
//                                         const PipelineConfig& cfg, const char* op);
// which returns (input, target), target being input unless cfg.op is models_genesis.
#include <array>
#include <string>

#include "op_common.h"

namespace genesis {

// The ops' schema names (csrc/ops.cpp), in OpKind order.
constexpr const char* kOpSchemaNames[kNumOps] = {"models_genesis", "flip",     "local_shuffle", "nonlinear",
                                                 "inpaint",        "outpaint", "bezier"};

// The names an engine registers ("flip", "_emulated_cuda_bezier") and, with "genesis::", the name
// its errors start with. Built once per engine.
template <typename Engine>
const std::string& schema_name(OpKind kind, bool qualified) {
  static const auto names = [] {
    std::array<std::array<std::string, kNumOps>, 2> n;
    for (int i = 0; i < kNumOps; ++i) {
      n[0][i] = std::string(Engine::kSchemaPrefix) + kOpSchemaNames[i];
      n[1][i] = "genesis::" + n[0][i];
    }
    return n;
  }();
  return names[qualified ? 1 : 0][static_cast<int>(kind)];
}

// x made contiguous and the outputs of an engine call: the op's result `input` and, for
// models_genesis only, `target` (otherwise the same tensor as input). Hidden like the stable
// Tensor it holds (torch declares that in a hidden namespace).
struct [[gnu::visibility("hidden")]] EngineIO {
  Tensor x, input, target;
  bool has_target;
  EngineIO(const Tensor& x_in, OpKind op)
      : x(torch::stable::contiguous(x_in)),
        input(torch::stable::empty_like(x)),
        target(op == OpKind::kModelsGenesis ? torch::stable::empty_like(x) : input),
        has_target(op == OpKind::kModelsGenesis) {}
  bool empty() const { return x.numel() == 0; }
  void* target_ptr() { return has_target ? target.mutable_data_ptr() : nullptr; }  // null: no target
  std::tuple<Tensor, Tensor> result() const { return {input, target}; }
};

template <typename Engine>
struct OpEntries {
  static std::tuple<Tensor, Tensor> models_genesis(Tensor x, double flip_p, double shuffle_p, int64_t num_windows,
                                                   double nonlinear_p, double paint_p, double inpaint_rate, double lo,
                                                   double hi, int64_t seed, int64_t sample_offset) {
    OpArgs a;
    a.flip_p = flip_p;
    a.shuffle_p = shuffle_p;
    a.num_windows = num_windows;
    a.nonlinear_p = nonlinear_p;
    a.paint_p = paint_p;
    a.inpaint_rate = inpaint_rate;
    a.lo = lo;
    a.hi = hi;
    a.seed = seed;
    a.sample_offset = sample_offset;
    return run(OpKind::kModelsGenesis, x, a);
  }

  // Each single op is the pipeline with only its own stage switched on.
  static Tensor flip(Tensor x, double p, int64_t seed, int64_t sample_offset) {
    OpArgs a;
    a.flip_p = p;
    return single(OpKind::kFlip, x, a, seed, sample_offset);
  }

  static Tensor local_shuffle(Tensor x, double p, int64_t num_windows, int64_t seed, int64_t sample_offset) {
    OpArgs a;
    a.shuffle_p = p;
    a.num_windows = num_windows;
    return single(OpKind::kLocalShuffle, x, a, seed, sample_offset);
  }

  static Tensor nonlinear(Tensor x, double p, double lo, double hi, int64_t seed, int64_t sample_offset) {
    OpArgs a = value_range(lo, hi);
    a.nonlinear_p = p;
    return single(OpKind::kNonlinear, x, a, seed, sample_offset);
  }

  static Tensor inpaint(Tensor x, double p, double lo, double hi, int64_t seed, int64_t sample_offset) {
    return paint(OpKind::kInpaint, x, p, lo, hi, seed, sample_offset);
  }

  static Tensor outpaint(Tensor x, double p, double lo, double hi, int64_t seed, int64_t sample_offset) {
    return paint(OpKind::kOutpaint, x, p, lo, hi, seed, sample_offset);
  }

  // The intensity map of nonlinear with p = 1 and the per-sample curves given.
  static Tensor bezier(Tensor x, Tensor control_points, Tensor increasing, double lo, double hi) {
    const char* op = schema_name<Engine>(OpKind::kBezier, true).c_str();
    const Shape s = check_input(x, op);
    check_bezier_args(x, control_points, increasing, s, op);
    OpArgs a = value_range(lo, hi);
    a.nonlinear_p = 1.0;
    PipelineConfig cfg = make_config(OpKind::kBezier, a, s, op);
    // Alive until the engine returns. On CUDA that is before the kernels run, which is safe: the
    // caching allocator hands their memory only to later work on the same stream.
    const Tensor ctrl = torch::stable::contiguous(control_points);
    const Tensor inc = torch::stable::contiguous(increasing);
    cfg.given.ctrl = static_cast<const double*>(ctrl.const_data_ptr());
    cfg.given.increasing = static_cast<const uint8_t*>(inc.const_data_ptr());
    return std::get<0>(Engine::run(x, s, cfg, op));
  }

 private:
  static OpArgs value_range(double lo, double hi) {
    OpArgs a;
    a.lo = lo;
    a.hi = hi;
    return a;
  }

  // Painting always, in-painting (rate 1) or out-painting (rate 0), behind the op's own gate p.
  static Tensor paint(OpKind kind, const Tensor& x, double p, double lo, double hi, int64_t seed,
                      int64_t sample_offset) {
    const bool in = kind == OpKind::kInpaint;
    OpArgs a = value_range(lo, hi);
    a.paint_p = 1.0;
    a.inpaint_rate = in ? 1.0 : 0.0;
    (in ? a.inpaint_p : a.outpaint_p) = p;
    return single(kind, x, a, seed, sample_offset);
  }

  static std::tuple<Tensor, Tensor> run(OpKind kind, const Tensor& x, const OpArgs& a) {
    const char* op = schema_name<Engine>(kind, true).c_str();
    const Shape s = check_input(x, op);
    return Engine::run(x, s, make_config(kind, a, s, op), op);
  }

  static Tensor single(OpKind kind, const Tensor& x, OpArgs a, int64_t seed, int64_t sample_offset) {
    a.seed = seed;
    a.sample_offset = sample_offset;
    return std::get<0>(run(kind, x, a));
  }
};

using BoxedKernel = void (*)(StableIValue*, uint64_t, uint64_t);
using Library = torch::stable::detail::StableLibrary;

// The boxed entry points of an engine, in OpKind order.
template <typename Engine>
constexpr BoxedKernel kEntryKernels[kNumOps] = {
    TORCH_BOX(&OpEntries<Engine>::models_genesis), TORCH_BOX(&OpEntries<Engine>::flip),
    TORCH_BOX(&OpEntries<Engine>::local_shuffle),  TORCH_BOX(&OpEntries<Engine>::nonlinear),
    TORCH_BOX(&OpEntries<Engine>::inpaint),        TORCH_BOX(&OpEntries<Engine>::outpaint),
    TORCH_BOX(&OpEntries<Engine>::bezier)};

template <typename Engine>
void register_op(Library& m, OpKind kind) {
  m.impl(schema_name<Engine>(kind, false).c_str(), kEntryKernels<Engine>[static_cast<int>(kind)]);
}

// All seven ops on the engine's dispatch key.
template <typename Engine>
void register_ops(Library& m) {
  for (int i = 0; i < kNumOps; ++i) register_op<Engine>(m, static_cast<OpKind>(i));
}

}  // namespace genesis
