#pragma once
// The op table: one row per op, in OpKind order, with everything that is written per op besides
// its entry function (op_entries.h): the schema name, the schema's arguments, what other schemas
// it has (masked, emulated test hook, tensor stream), and the schema's names of the stage
// arguments, so that an error names the argument as the caller wrote it ("p", not "flip_p").
// csrc/ops.cpp defines every schema from it; static_asserts below and in op_entries.h make a
// missing or misplaced row a compile error. Host code only, torch-free.
#include <cstddef>

#include "bodies/params.h"

namespace genesis {

// The schema's names of the stage arguments an op passes to make_config (op_common.h). An op's
// stages it does not take keep fixed, valid values, so their names are never printed.
struct ArgNames {
  const char* flip_p = "flip_p";
  const char* shuffle_p = "shuffle_p";
  const char* nonlinear_p = "nonlinear_p";
  const char* paint_p = "paint_p";
  const char* inpaint_rate = "inpaint_rate";
  const char* inpaint_p = "inpaint_p";
  const char* outpaint_p = "outpaint_p";
};

// The fused op's names with one stage argument renamed (a single op's "p").
constexpr ArgNames renamed(const char* ArgNames::* field, const char* name) {
  ArgNames n{};
  n.*field = name;
  return n;
}

struct OpRow {
  OpKind kind;
  const char* name;
  // The schema's arguments between x and the random stream (seed, sample_offset).
  const char* args;
  int outputs;    // tensors returned (the masked schema returns the mask too)
  bool seeded;    // ends with (seed, sample_offset); the bezier op draws nothing
  bool masked;    // also name + "_masked": the same outputs and the corruption mask
  bool emulated;  // also "_emulated_cuda_" + name, the CUDA bodies run on the CPU (test hook)
  ArgNames names;
};

// Corruption masks (docs/SPEC.md, section 4.7): a masked schema returns, after the plain op's
// outputs (bit for bit), the uint8 (B, 1, *spatial) mask written in the same pass (bit 1: in a
// shuffle window; bit 2: replaced by fill noise). The mask-only ops return bool (B, 1, *spatial)
// from the same words, no image: only x's shape and device are read (any dtype). paint_mask's
// gates: paint_p and inpaint_rate as in models_genesis, inpaint_p and outpaint_p the inpaint and
// outpaint ops' own p (1 in the fused pipeline).
constexpr OpRow kOpTable[] = {
    {OpKind::kModelsGenesis, "models_genesis",
     "float flip_p, float shuffle_p, int num_windows, float nonlinear_p, float paint_p, float inpaint_rate, float lo, "
     "float hi",
     2, true, true, true, ArgNames{}},
    {OpKind::kFlip, "flip", "float p", 1, true, false, false, renamed(&ArgNames::flip_p, "p")},
    {OpKind::kLocalShuffle, "local_shuffle", "float p, int num_windows", 1, true, true, false,
     renamed(&ArgNames::shuffle_p, "p")},
    {OpKind::kNonlinear, "nonlinear", "float p, float lo, float hi", 1, true, false, false,
     renamed(&ArgNames::nonlinear_p, "p")},
    {OpKind::kInpaint, "inpaint", "float p, float lo, float hi", 1, true, true, false,
     renamed(&ArgNames::inpaint_p, "p")},
    {OpKind::kOutpaint, "outpaint", "float p, float lo, float hi", 1, true, true, false,
     renamed(&ArgNames::outpaint_p, "p")},
    {OpKind::kBezier, "bezier", "Tensor control_points, Tensor increasing, float lo, float hi", 1, false, false, true,
     ArgNames{}},
    {OpKind::kPaintMask, "paint_mask", "float paint_p, float inpaint_rate, float inpaint_p, float outpaint_p", 1, true,
     false, true, ArgNames{}},
    {OpKind::kShuffleMask, "shuffle_mask", "float p, int num_windows", 1, true, false, true,
     renamed(&ArgNames::shuffle_p, "p")},
};

constexpr const char* kMaskedSuffix = "_masked";
constexpr const char* kEmulatedPrefix = "_emulated_cuda_";
// The overload of a seeded schema that takes the stream as 0-dim int64 tensors on x's device
// (genesis::flip.tensor_seed), read by the kernels when they run (PipelineConfig::seed_src).
constexpr const char* kTensorSeedOverload = "tensor_seed";

constexpr const OpRow& op_row(OpKind kind) { return kOpTable[static_cast<int>(kind)]; }

constexpr bool rows_in_kind_order() {
  for (int i = 0; i < kNumOps; ++i)
    if (static_cast<int>(kOpTable[i].kind) != i) return false;
  return true;
}
static_assert(sizeof(kOpTable) / sizeof(OpRow) == static_cast<size_t>(kNumOps), "one kOpTable row per OpKind");
static_assert(rows_in_kind_order(), "kOpTable rows must be in OpKind order");

}  // namespace genesis
