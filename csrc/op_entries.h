#pragma once
// The entry points of the ops, written once over an engine (CpuEngine in cpu/cpu_engine.cpp,
// CudaEngine in cuda/cuda_engine.cpp, EmulatedEngine in emulate/emulate_cuda.cpp): check x,
// check the other arguments and build the config by name (op_common.h), then one call of the
// engine. An engine is a type with
//   static constexpr const char* kSchemaPrefix;  // "" or "_emulated_cuda_" (test hooks)
//   static std::tuple<Tensor, Tensor> run(const Tensor& x, const Shape& shape,
//                                         const PipelineConfig& cfg, const char* op, uint8_t* mask);
// which returns (input, target), target being input unless cfg.op is models_genesis, and writes
// the corruption mask (B x spatial bytes, docs/SPEC.md section 4.7) where mask is not null; and
//   static void run_mask(const Tensor& x, const Shape& shape, const PipelineConfig& cfg,
//                        const char* op, uint8_t* mask);
// for the mask-only ops (cfg.op kPaintMask, kShuffleMask), which read only x's shape and device.
#include <array>
#include <string>
#include <vector>

#include "op_common.h"

namespace genesis {

// The ops' schema names (csrc/ops.cpp), in OpKind order.
constexpr const char* kOpSchemaNames[kNumOps] = {"models_genesis", "flip",   "local_shuffle", "nonlinear",   "inpaint",
                                                 "outpaint",       "bezier", "paint_mask",    "shuffle_mask"};
// The ops that also return the corruption mask have a second schema, the name + "_masked".
constexpr OpKind kMaskedOps[] = {OpKind::kModelsGenesis, OpKind::kLocalShuffle, OpKind::kInpaint, OpKind::kOutpaint};
constexpr int kNumMaskedOps = 4;
constexpr const char* kMaskedSuffix = "_masked";

// The names an engine registers ("flip", "_emulated_cuda_bezier", "inpaint_masked") and, with
// "genesis::", the name its errors start with. Built once per engine.
template <typename Engine>
const std::string& schema_name(OpKind kind, bool qualified, bool masked = false) {
  static const auto names = [] {
    std::array<std::array<std::array<std::string, kNumOps>, 2>, 2> n;
    for (int m = 0; m < 2; ++m)
      for (int i = 0; i < kNumOps; ++i) {
        n[m][0][i] = std::string(Engine::kSchemaPrefix) + kOpSchemaNames[i] + (m ? kMaskedSuffix : "");
        n[m][1][i] = "genesis::" + n[m][0][i];
      }
    return n;
  }();
  return names[masked ? 1 : 0][qualified ? 1 : 0][static_cast<int>(kind)];
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

// A new mask of x's batch and spatial shape, (B, 1, *spatial), on x's device: uint8 bits
// (kMaskShuffled | kMaskPainted) for the *_masked ops, bool for the mask-only ops.
inline Tensor new_mask(const Tensor& x, ScalarType dtype) {
  std::vector<int64_t> sizes;
  for (int64_t d = 0; d < x.dim(); ++d) sizes.push_back(d == 1 ? 1 : x.sizes()[d]);
  return torch::stable::new_empty(x, sizes, dtype);
}

inline uint8_t* mask_data(Tensor& mask) { return static_cast<uint8_t*>(mask.mutable_data_ptr()); }

template <typename Engine>
struct OpEntries {
  static std::tuple<Tensor, Tensor> models_genesis(Tensor x, double flip_p, double shuffle_p, int64_t num_windows,
                                                   double nonlinear_p, double paint_p, double inpaint_rate, double lo,
                                                   double hi, int64_t seed, int64_t sample_offset) {
    const auto r =
        run(OpKind::kModelsGenesis, x,
            fused_args(flip_p, shuffle_p, num_windows, nonlinear_p, paint_p, inpaint_rate, lo, hi, seed, sample_offset),
            false);
    return {r.input, r.target};
  }

  static std::tuple<Tensor, Tensor, Tensor> models_genesis_masked(Tensor x, double flip_p, double shuffle_p,
                                                                  int64_t num_windows, double nonlinear_p,
                                                                  double paint_p, double inpaint_rate, double lo,
                                                                  double hi, int64_t seed, int64_t sample_offset) {
    const auto r =
        run(OpKind::kModelsGenesis, x,
            fused_args(flip_p, shuffle_p, num_windows, nonlinear_p, paint_p, inpaint_rate, lo, hi, seed, sample_offset),
            true);
    return {r.input, r.target, r.mask};
  }

  // Each single op is the pipeline with only its own stage switched on.
  static Tensor flip(Tensor x, double p, int64_t seed, int64_t sample_offset) {
    OpArgs a;
    a.flip_p = p;
    return single(OpKind::kFlip, x, a, seed, sample_offset, false).input;
  }

  static Tensor local_shuffle(Tensor x, double p, int64_t num_windows, int64_t seed, int64_t sample_offset) {
    return single(OpKind::kLocalShuffle, x, shuffle_args(p, num_windows), seed, sample_offset, false).input;
  }

  static std::tuple<Tensor, Tensor> local_shuffle_masked(Tensor x, double p, int64_t num_windows, int64_t seed,
                                                         int64_t sample_offset) {
    return single(OpKind::kLocalShuffle, x, shuffle_args(p, num_windows), seed, sample_offset, true).pair();
  }

  static Tensor nonlinear(Tensor x, double p, double lo, double hi, int64_t seed, int64_t sample_offset) {
    OpArgs a = value_range(lo, hi);
    a.nonlinear_p = p;
    return single(OpKind::kNonlinear, x, a, seed, sample_offset, false).input;
  }

  static Tensor inpaint(Tensor x, double p, double lo, double hi, int64_t seed, int64_t sample_offset) {
    return paint(OpKind::kInpaint, x, p, lo, hi, seed, sample_offset, false).input;
  }

  static std::tuple<Tensor, Tensor> inpaint_masked(Tensor x, double p, double lo, double hi, int64_t seed,
                                                   int64_t sample_offset) {
    return paint(OpKind::kInpaint, x, p, lo, hi, seed, sample_offset, true).pair();
  }

  static Tensor outpaint(Tensor x, double p, double lo, double hi, int64_t seed, int64_t sample_offset) {
    return paint(OpKind::kOutpaint, x, p, lo, hi, seed, sample_offset, false).input;
  }

  static std::tuple<Tensor, Tensor> outpaint_masked(Tensor x, double p, double lo, double hi, int64_t seed,
                                                    int64_t sample_offset) {
    return paint(OpKind::kOutpaint, x, p, lo, hi, seed, sample_offset, true).pair();
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
    return std::get<0>(Engine::run(x, s, cfg, op, nullptr));
  }

  // The region painting replaces under these gates, as bool (B, 1, *spatial), no image: the
  // painting stage's words of the pipeline (docs/SPEC.md, section 3.3) with paint_p and
  // inpaint_rate as in models_genesis, and the own gates inpaint_p and outpaint_p of the inpaint
  // and outpaint ops (1 in the fused pipeline).
  static Tensor paint_mask(Tensor x, double paint_p, double inpaint_rate, double inpaint_p, double outpaint_p,
                           int64_t seed, int64_t sample_offset) {
    OpArgs a;
    a.paint_p = paint_p;
    a.inpaint_rate = inpaint_rate;
    a.inpaint_p = inpaint_p;
    a.outpaint_p = outpaint_p;
    a.inpaint_p_name = "inpaint_p";
    a.outpaint_p_name = "outpaint_p";
    return mask_only(OpKind::kPaintMask, x, a, seed, sample_offset);
  }

  // The union of the shuffle windows of every sample whose shuffle gate passes, as bool.
  static Tensor shuffle_mask(Tensor x, double p, int64_t num_windows, int64_t seed, int64_t sample_offset) {
    return mask_only(OpKind::kShuffleMask, x, shuffle_args(p, num_windows), seed, sample_offset);
  }

 private:
  // An op's outputs: input, target (input itself unless models_genesis) and the mask (uint8,
  // when asked for).
  struct [[gnu::visibility("hidden")]] Outputs {
    Tensor input, target, mask;
    std::tuple<Tensor, Tensor> pair() const { return {input, mask}; }  // a single op's (out, mask)
  };

  static OpArgs fused_args(double flip_p, double shuffle_p, int64_t num_windows, double nonlinear_p, double paint_p,
                           double inpaint_rate, double lo, double hi, int64_t seed, int64_t sample_offset) {
    OpArgs a = value_range(lo, hi);
    a.flip_p = flip_p;
    a.shuffle_p = shuffle_p;
    a.num_windows = num_windows;
    a.nonlinear_p = nonlinear_p;
    a.paint_p = paint_p;
    a.inpaint_rate = inpaint_rate;
    a.seed = seed;
    a.sample_offset = sample_offset;
    return a;
  }

  static OpArgs shuffle_args(double p, int64_t num_windows) {
    OpArgs a;
    a.shuffle_p = p;
    a.num_windows = num_windows;
    return a;
  }

  static OpArgs value_range(double lo, double hi) {
    OpArgs a;
    a.lo = lo;
    a.hi = hi;
    return a;
  }

  // Painting always, in-painting (rate 1) or out-painting (rate 0), behind the op's own gate p.
  static Outputs paint(OpKind kind, const Tensor& x, double p, double lo, double hi, int64_t seed,
                       int64_t sample_offset, bool masked) {
    const bool in = kind == OpKind::kInpaint;
    OpArgs a = value_range(lo, hi);
    a.paint_p = 1.0;
    a.inpaint_rate = in ? 1.0 : 0.0;
    (in ? a.inpaint_p : a.outpaint_p) = p;
    return single(kind, x, a, seed, sample_offset, masked);
  }

  static Outputs run(OpKind kind, const Tensor& x, const OpArgs& a, bool masked) {
    const char* op = schema_name<Engine>(kind, true, masked).c_str();
    const Shape s = check_input(x, op);
    const PipelineConfig cfg = make_config(kind, a, s, op);
    Outputs out;
    if (masked) out.mask = new_mask(x, ScalarType::Byte);
    std::tie(out.input, out.target) = Engine::run(x, s, cfg, op, masked ? mask_data(out.mask) : nullptr);
    return out;
  }

  static Outputs single(OpKind kind, const Tensor& x, OpArgs a, int64_t seed, int64_t sample_offset, bool masked) {
    a.seed = seed;
    a.sample_offset = sample_offset;
    return run(kind, x, a, masked);
  }

  static Tensor mask_only(OpKind kind, const Tensor& x, OpArgs a, int64_t seed, int64_t sample_offset) {
    const char* op = schema_name<Engine>(kind, true).c_str();
    const Shape s = check_shape(x, op);
    a.seed = seed;
    a.sample_offset = sample_offset;
    const PipelineConfig cfg = make_config(kind, a, s, op);
    Tensor mask = new_mask(x, ScalarType::Bool);
    Engine::run_mask(x, s, cfg, op, mask_data(mask));
    return mask;
  }
};

using BoxedKernel = void (*)(StableIValue*, uint64_t, uint64_t);
using Library = torch::stable::detail::StableLibrary;

// The boxed entry points of an engine, in OpKind order, and of the masked schemas, in kMaskedOps order.
template <typename Engine>
constexpr BoxedKernel kEntryKernels[kNumOps] = {
    TORCH_BOX(&OpEntries<Engine>::models_genesis), TORCH_BOX(&OpEntries<Engine>::flip),
    TORCH_BOX(&OpEntries<Engine>::local_shuffle),  TORCH_BOX(&OpEntries<Engine>::nonlinear),
    TORCH_BOX(&OpEntries<Engine>::inpaint),        TORCH_BOX(&OpEntries<Engine>::outpaint),
    TORCH_BOX(&OpEntries<Engine>::bezier),         TORCH_BOX(&OpEntries<Engine>::paint_mask),
    TORCH_BOX(&OpEntries<Engine>::shuffle_mask)};

template <typename Engine>
constexpr BoxedKernel kMaskedEntryKernels[kNumMaskedOps] = {
    TORCH_BOX(&OpEntries<Engine>::models_genesis_masked), TORCH_BOX(&OpEntries<Engine>::local_shuffle_masked),
    TORCH_BOX(&OpEntries<Engine>::inpaint_masked), TORCH_BOX(&OpEntries<Engine>::outpaint_masked)};

template <typename Engine>
void register_op(Library& m, OpKind kind, bool masked = false) {
  if (!masked) {
    m.impl(schema_name<Engine>(kind, false).c_str(), kEntryKernels<Engine>[static_cast<int>(kind)]);
    return;
  }
  for (int i = 0; i < kNumMaskedOps; ++i)
    if (kMaskedOps[i] == kind) m.impl(schema_name<Engine>(kind, false, true).c_str(), kMaskedEntryKernels<Engine>[i]);
}

// All ops, and their masked schemas, on the engine's dispatch key.
template <typename Engine>
void register_ops(Library& m) {
  for (int i = 0; i < kNumOps; ++i) register_op<Engine>(m, static_cast<OpKind>(i));
  for (const OpKind kind : kMaskedOps) register_op<Engine>(m, kind, true);
}

}  // namespace genesis
