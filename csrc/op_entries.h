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
// for the mask-only ops (cfg.op kPaintMask, kShuffleMask), which read only x's shape and device; and
//   static constexpr bool kStreamOnDevice;
// true where a tensor seed is read by the kernels (PipelineConfig::seed_src), false where the
// entry reads it on the host (the CPU engine). Each seeded op's entry is a template over its
// stream type: int64_t (the SymInt schema) or Tensor (the tensor_seed overload).
#include <array>
#include <string>
#include <vector>

#include "op_common.h"

namespace genesis {

// The names an engine registers ("flip", "_emulated_cuda_bezier", "inpaint_masked") and, with
// "genesis::", the name its errors start with (both overloads of a schema share it). Built once
// per engine.
template <typename Engine>
const std::string& schema_name(OpKind kind, bool qualified, bool masked = false) {
  static const auto names = [] {
    std::array<std::array<std::array<std::string, kNumOps>, 2>, 2> n;
    for (int m = 0; m < 2; ++m)
      for (int i = 0; i < kNumOps; ++i) {
        n[m][0][i] = std::string(Engine::kSchemaPrefix) + kOpTable[i].name + (m ? kMaskedSuffix : "");
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

// The random stream of a call as its schema takes it: ints (seed, sample_offset), or 0-dim int64
// tensors on x's device (the tensor_seed overloads).
template <typename S>
struct StreamArg {
  S seed, sample_offset;
};

template <typename Engine>
struct OpEntries {
  template <typename S>
  static std::tuple<Tensor, Tensor> models_genesis(Tensor x, double flip_p, double shuffle_p, int64_t num_windows,
                                                   double nonlinear_p, double paint_p, double inpaint_rate, double lo,
                                                   double hi, S seed, S sample_offset) {
    const auto r = run(OpKind::kModelsGenesis, x,
                       fused_args(flip_p, shuffle_p, num_windows, nonlinear_p, paint_p, inpaint_rate, lo, hi),
                       StreamArg<S>{seed, sample_offset}, false);
    return {r.input, r.target};
  }

  template <typename S>
  static std::tuple<Tensor, Tensor, Tensor> models_genesis_masked(Tensor x, double flip_p, double shuffle_p,
                                                                  int64_t num_windows, double nonlinear_p,
                                                                  double paint_p, double inpaint_rate, double lo,
                                                                  double hi, S seed, S sample_offset) {
    const auto r = run(OpKind::kModelsGenesis, x,
                       fused_args(flip_p, shuffle_p, num_windows, nonlinear_p, paint_p, inpaint_rate, lo, hi),
                       StreamArg<S>{seed, sample_offset}, true);
    return {r.input, r.target, r.mask};
  }

  // Each single op is the pipeline with only its own stage switched on.
  template <typename S>
  static Tensor flip(Tensor x, double p, S seed, S sample_offset) {
    OpArgs a;
    a.flip_p = p;
    return run(OpKind::kFlip, x, a, StreamArg<S>{seed, sample_offset}, false).input;
  }

  template <typename S>
  static Tensor local_shuffle(Tensor x, double p, int64_t num_windows, S seed, S sample_offset) {
    return run(OpKind::kLocalShuffle, x, shuffle_args(p, num_windows), StreamArg<S>{seed, sample_offset}, false).input;
  }

  template <typename S>
  static std::tuple<Tensor, Tensor> local_shuffle_masked(Tensor x, double p, int64_t num_windows, S seed,
                                                         S sample_offset) {
    return run(OpKind::kLocalShuffle, x, shuffle_args(p, num_windows), StreamArg<S>{seed, sample_offset}, true).pair();
  }

  template <typename S>
  static Tensor nonlinear(Tensor x, double p, double lo, double hi, S seed, S sample_offset) {
    OpArgs a = value_range(lo, hi);
    a.nonlinear_p = p;
    return run(OpKind::kNonlinear, x, a, StreamArg<S>{seed, sample_offset}, false).input;
  }

  template <typename S>
  static Tensor inpaint(Tensor x, double p, double lo, double hi, S seed, S sample_offset) {
    return run(OpKind::kInpaint, x, paint_args(OpKind::kInpaint, p, lo, hi), StreamArg<S>{seed, sample_offset}, false)
        .input;
  }

  template <typename S>
  static std::tuple<Tensor, Tensor> inpaint_masked(Tensor x, double p, double lo, double hi, S seed, S sample_offset) {
    return run(OpKind::kInpaint, x, paint_args(OpKind::kInpaint, p, lo, hi), StreamArg<S>{seed, sample_offset}, true)
        .pair();
  }

  template <typename S>
  static Tensor outpaint(Tensor x, double p, double lo, double hi, S seed, S sample_offset) {
    return run(OpKind::kOutpaint, x, paint_args(OpKind::kOutpaint, p, lo, hi), StreamArg<S>{seed, sample_offset}, false)
        .input;
  }

  template <typename S>
  static std::tuple<Tensor, Tensor> outpaint_masked(Tensor x, double p, double lo, double hi, S seed, S sample_offset) {
    return run(OpKind::kOutpaint, x, paint_args(OpKind::kOutpaint, p, lo, hi), StreamArg<S>{seed, sample_offset}, true)
        .pair();
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
  template <typename S>
  static Tensor paint_mask(Tensor x, double paint_p, double inpaint_rate, double inpaint_p, double outpaint_p, S seed,
                           S sample_offset) {
    OpArgs a;
    a.paint_p = paint_p;
    a.inpaint_rate = inpaint_rate;
    a.inpaint_p = inpaint_p;
    a.outpaint_p = outpaint_p;
    return mask_only(OpKind::kPaintMask, x, a, StreamArg<S>{seed, sample_offset});
  }

  // The union of the shuffle windows of every sample whose shuffle gate passes, as bool.
  template <typename S>
  static Tensor shuffle_mask(Tensor x, double p, int64_t num_windows, S seed, S sample_offset) {
    return mask_only(OpKind::kShuffleMask, x, shuffle_args(p, num_windows), StreamArg<S>{seed, sample_offset});
  }

 private:
  // An op's outputs: input, target (input itself unless models_genesis) and the mask (uint8,
  // when asked for).
  struct [[gnu::visibility("hidden")]] Outputs {
    Tensor input, target, mask;
    std::tuple<Tensor, Tensor> pair() const { return {input, mask}; }  // a single op's (out, mask)
  };

  static OpArgs fused_args(double flip_p, double shuffle_p, int64_t num_windows, double nonlinear_p, double paint_p,
                           double inpaint_rate, double lo, double hi) {
    OpArgs a = value_range(lo, hi);
    a.flip_p = flip_p;
    a.shuffle_p = shuffle_p;
    a.num_windows = num_windows;
    a.nonlinear_p = nonlinear_p;
    a.paint_p = paint_p;
    a.inpaint_rate = inpaint_rate;
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
  static OpArgs paint_args(OpKind kind, double p, double lo, double hi) {
    const bool in = kind == OpKind::kInpaint;
    OpArgs a = value_range(lo, hi);
    a.paint_p = 1.0;
    a.inpaint_rate = in ? 1.0 : 0.0;
    (in ? a.inpaint_p : a.outpaint_p) = p;
    return a;
  }

  static void set_stream(OpArgs& a, const Tensor&, StreamArg<int64_t> st, const char*) {
    a.seed = st.seed;
    a.sample_offset = st.sample_offset;
  }

  // Tensors: their addresses where the kernels read them (no host synchronisation), else their
  // values, read here (the CPU engine, whose tensors are host memory).
  static void set_stream(OpArgs& a, const Tensor& x, const StreamArg<Tensor>& st, const char* op) {
    check_stream_tensor(st.seed, x, op, "seed");
    check_stream_tensor(st.sample_offset, x, op, "sample_offset");
    const auto* seed = static_cast<const int64_t*>(st.seed.const_data_ptr());
    const auto* offset = static_cast<const int64_t*>(st.sample_offset.const_data_ptr());
    if (Engine::kStreamOnDevice) {
      a.seed_src = seed;
      a.offset_src = offset;
    } else {
      a.seed = *seed;
      a.sample_offset = *offset;
    }
  }

  // Where the kernels read the stream from memory, the config's own values are left 0: every
  // body takes it from the parameters that draw_sample_params wrote, and the tests comparing
  // tensor with int seeds fail if one does not.
  static PipelineConfig config(OpKind kind, const OpArgs& a, const Shape& s, const char* op) {
    PipelineConfig cfg = make_config(kind, a, s, op);
    if (cfg.seed_src != nullptr) cfg.seed = 0;
    if (cfg.offset_src != nullptr) cfg.sample_offset = 0;
    return cfg;
  }

  template <typename S>
  static Outputs run(OpKind kind, const Tensor& x, OpArgs a, const StreamArg<S>& st, bool masked) {
    const char* op = schema_name<Engine>(kind, true, masked).c_str();
    const Shape s = check_input(x, op);
    set_stream(a, x, st, op);
    const PipelineConfig cfg = config(kind, a, s, op);
    Outputs out;
    if (masked) out.mask = new_mask(x, ScalarType::Byte);
    std::tie(out.input, out.target) = Engine::run(x, s, cfg, op, masked ? mask_data(out.mask) : nullptr);
    return out;
  }

  template <typename S>
  static Tensor mask_only(OpKind kind, const Tensor& x, OpArgs a, const StreamArg<S>& st) {
    const char* op = schema_name<Engine>(kind, true).c_str();
    const Shape s = check_shape(x, op);
    set_stream(a, x, st, op);
    const PipelineConfig cfg = config(kind, a, s, op);
    Tensor mask = new_mask(x, ScalarType::Bool);
    Engine::run_mask(x, s, cfg, op, mask_data(mask));
    return mask;
  }
};

using BoxedKernel = void (*)(StableIValue*, uint64_t, uint64_t);
using Library = torch::stable::detail::StableLibrary;

// The boxed entry points of an op on an engine: its schema with int and with tensor streams, and
// the same for its masked schema (null where kOpTable has none).
struct OpKernels {
  OpKind kind;
  BoxedKernel plain, plain_tensor_seed, masked, masked_tensor_seed;
};

#define GENESIS_SEEDED(f) TORCH_BOX(&E::template f<int64_t>), TORCH_BOX(&E::template f<Tensor>)
#define GENESIS_NONE nullptr, nullptr

// One row per op, in OpKind order (checked in register_ops against kOpTable).
template <typename Engine, typename E = OpEntries<Engine>>
constexpr OpKernels kOpKernels[] = {
    {OpKind::kModelsGenesis, GENESIS_SEEDED(models_genesis), GENESIS_SEEDED(models_genesis_masked)},
    {OpKind::kFlip, GENESIS_SEEDED(flip), GENESIS_NONE},
    {OpKind::kLocalShuffle, GENESIS_SEEDED(local_shuffle), GENESIS_SEEDED(local_shuffle_masked)},
    {OpKind::kNonlinear, GENESIS_SEEDED(nonlinear), GENESIS_NONE},
    {OpKind::kInpaint, GENESIS_SEEDED(inpaint), GENESIS_SEEDED(inpaint_masked)},
    {OpKind::kOutpaint, GENESIS_SEEDED(outpaint), GENESIS_SEEDED(outpaint_masked)},
    {OpKind::kBezier, TORCH_BOX(&E::bezier), nullptr, GENESIS_NONE},
    {OpKind::kPaintMask, GENESIS_SEEDED(paint_mask), GENESIS_NONE},
    {OpKind::kShuffleMask, GENESIS_SEEDED(shuffle_mask), GENESIS_NONE},
};

#undef GENESIS_SEEDED
#undef GENESIS_NONE

// Every row present, in order, with exactly the schemas kOpTable declares.
template <typename Engine>
constexpr bool kernels_match_table() {
  if (sizeof(kOpKernels<Engine>) / sizeof(OpKernels) != static_cast<size_t>(kNumOps)) return false;
  for (int i = 0; i < kNumOps; ++i) {
    const OpKernels& k = kOpKernels<Engine>[i];
    const OpRow& r = kOpTable[i];
    if (k.kind != r.kind || k.plain == nullptr || (k.plain_tensor_seed != nullptr) != r.seeded ||
        (k.masked != nullptr) != r.masked || (k.masked_tensor_seed != nullptr) != (r.masked && r.seeded))
      return false;
  }
  return true;
}

// The op's schemas (and their tensor_seed overloads) on the engine's dispatch key: the plain one,
// or with masked the "_masked" one.
template <typename Engine>
void register_op(Library& m, OpKind kind, bool masked = false) {
#if defined(GENESIS_SANITIZE)
  STD_TORCH_CHECK(kernels_match_table<Engine>(), "genesis: kOpKernels must have one row per kOpTable row, in order");
#else
  static_assert(kernels_match_table<Engine>(), "kOpKernels must have one row per kOpTable row, in order");
#endif
  const OpKernels& k = kOpKernels<Engine>[static_cast<int>(kind)];
  STD_TORCH_CHECK(!masked || op_row(kind).masked, "genesis: ", op_row(kind).name, " has no masked schema");
  const std::string& name = schema_name<Engine>(kind, false, masked);
  m.impl(name.c_str(), masked ? k.masked : k.plain);
  if (op_row(kind).seeded)
    m.impl((name + "." + kTensorSeedOverload).c_str(), masked ? k.masked_tensor_seed : k.plain_tensor_seed);
}

// All ops, and their masked schemas, on the engine's dispatch key.
template <typename Engine>
void register_ops(Library& m) {
  for (const OpRow& r : kOpTable) {
    register_op<Engine>(m, r.kind);
    if (r.masked) register_op<Engine>(m, r.kind, true);
  }
}

}  // namespace genesis
