// Built instead of cuda_engine.cpp when no CUDA compiler was found: every op's CUDA kernel
// raises an error that says why and how to get the kernels, instead of the dispatcher's generic
// "could not run ... with arguments from the 'CUDA' backend". It raises before any argument check.
#include <stdexcept>
#include <string>
#include <utility>

#include "op_entries.h"

namespace genesis {
namespace {

// One placeholder per op I (OpKind order) and schema: plain or masked; the name is the same for
// both stream overloads.
template <size_t I, bool kMasked>
std::string entry_name() {
  return std::string(kOpTable[I].name) + (kMasked ? kMaskedSuffix : "");
}

template <size_t I, bool kMasked>
void built_without_cuda(StableIValue*, uint64_t, uint64_t) {
  throw std::runtime_error(
      "genesis::" + entry_name<I, kMasked>() +
      ": got a CUDA tensor, but this genesis-ops was built without CUDA kernels (no CUDA compiler was "
      "found when it was built, or GENESIS_WITH_CUDA=OFF was set). To get them, reinstall it in this environment with "
      "the CUDA toolkit's "
      "nvcc on PATH (or CUDACXX set): GENESIS_WITH_CUDA=ON pip install --no-cache-dir --force-reinstall "
      "--no-deps <genesis-ops or its source directory>. genesis_ops.build_info() shows what a build holds.");
}

template <size_t I, bool kMasked>
void register_placeholder(Library& m) {
  if (kMasked && !kOpTable[I].masked) return;
  const std::string name = entry_name<I, kMasked>();
  m.impl(name.c_str(), &built_without_cuda<I, kMasked>);
  if (kOpTable[I].seeded) m.impl((name + "." + kTensorSeedOverload).c_str(), &built_without_cuda<I, kMasked>);
}

template <size_t... I>
void register_placeholders(Library& m, std::index_sequence<I...>) {
  (register_placeholder<I, false>(m), ...);
  (register_placeholder<I, true>(m), ...);
}

}  // namespace
}  // namespace genesis

STABLE_TORCH_LIBRARY_IMPL(genesis, CUDA, m) {
  genesis::register_placeholders(m, std::make_index_sequence<genesis::kNumOps>());
}
