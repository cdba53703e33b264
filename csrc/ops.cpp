// Operator schemas of torch.ops.genesis (the one place they are defined, from the op table in
// op_table.h) and the Python module entry point. Kernels are registered per device in cpu/,
// cuda/ and emulate/.
#include <Python.h>

#include <torch/csrc/stable/library.h>

#include <string>

#include "cuda/arch_fit.h"
#include "op_table.h"

namespace genesis {
namespace {

std::string returns(int tensors) {
  if (tensors == 1) return "Tensor";
  std::string r = "(Tensor";
  for (int i = 1; i < tensors; ++i) r += ", Tensor";
  return r + ")";
}

// name(Tensor x, <args>, <stream>) -> <outputs>. The stream is SymInt, so that torch.compile
// traces one graph for every seed (an int schema argument makes it specialise on each value);
// the tensor_seed overload takes 0-dim int64 tensors on x's device instead.
std::string schema(const std::string& name, const OpRow& r, bool masked, bool tensor_seed) {
  std::string s = name + (masked ? kMaskedSuffix : "");
  if (tensor_seed) s += std::string(".") + kTensorSeedOverload;
  s += std::string("(Tensor x, ") + r.args;
  if (r.seeded) s += tensor_seed ? ", Tensor seed, Tensor sample_offset" : ", SymInt seed, SymInt sample_offset";
  return s + ") -> " + returns(r.outputs + (masked ? 1 : 0));
}

void define(torch::stable::detail::StableLibrary& m, const std::string& name, const OpRow& r) {
  for (const bool masked : {false, true}) {
    if (masked && !r.masked) continue;
    // The tensor overload first: torch.ops.genesis.<op>(...) tries overloads in this order, and
    // would otherwise pass a 0-dim tensor to the SymInt schema (read on the host, a synchronisation).
    if (r.seeded) m.def(schema(name, r, masked, true).c_str());
    m.def(schema(name, r, masked, false).c_str());
  }
}

// Test hook: arch_fit (cuda/arch_fit.h), the rule the CUDA engine checks a GPU with, without one.
int64_t arch_fit_hook(std::string archs, int64_t major, int64_t minor, int64_t driver, int64_t runtime) {
  return static_cast<int64_t>(arch_fit(archs, static_cast<int>(major), static_cast<int>(minor),
                                       static_cast<int>(driver), static_cast<int>(runtime)));
}

}  // namespace
}  // namespace genesis

STABLE_TORCH_LIBRARY(genesis, m) {
  for (const genesis::OpRow& r : genesis::kOpTable) {
    genesis::define(m, r.name, r);
    // Test hook: the CUDA kernels' bodies run over the whole grid on the CPU (csrc/emulate).
    if (r.emulated) genesis::define(m, std::string(genesis::kEmulatedPrefix) + r.name, r);
  }
  // Test hook: the CUDA launch plan (bodies/launch_plan.h) for a shape, without a tensor or a GPU.
  m.def(
      "_launch_plan(int[] sizes, float shuffle_p, int num_windows, float nonlinear_p, bool params_given, "
      "int free_bytes=0) -> int[]");
  // Test hook: 0 runs, 1 no code for the GPU, 2 only PTX newer than the driver (cuda/arch_fit.h).
  m.def("_arch_fit(str archs, int major, int minor, int driver, int runtime) -> int");
}

// No tensor argument: registered for every backend at once.
STABLE_TORCH_LIBRARY_IMPL(genesis, CompositeExplicitAutograd, m) {
  m.impl("_arch_fit", TORCH_BOX(&genesis::arch_fit_hook));
}

// `import genesis_ops._C` dlopens this library, which runs the static registrations. No pybind11.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&def);
}
