// Built instead of cuda_engine.cpp when no CUDA compiler was found: every op's CUDA kernel
// raises an error that says why and how to get the kernels, instead of the dispatcher's generic
// "could not run ... with arguments from the 'CUDA' backend". It raises before any argument check.
#include <stdexcept>
#include <string>
#include <utility>

#include "op_entries.h"

namespace genesis {
namespace {

template <size_t I>
void built_without_cuda(StableIValue*, uint64_t, uint64_t) {
  throw std::runtime_error(
      std::string("genesis::") + kOpSchemaNames[I] +
      ": got a CUDA tensor, but this genesis-ops was built without CUDA kernels (no CUDA compiler was "
      "found when it was built, or GENESIS_WITH_CUDA=OFF was set). To get them, reinstall it in this environment with the CUDA toolkit's "
      "nvcc on PATH (or CUDACXX set): GENESIS_WITH_CUDA=ON pip install --no-cache-dir --force-reinstall "
      "--no-deps <genesis-ops or its source directory>. genesis_ops.build_info() shows what a build holds.");
}

template <size_t... I>
void register_placeholders(Library& m, std::index_sequence<I...>) {
  (m.impl(kOpSchemaNames[I], &built_without_cuda<I>), ...);
}

}  // namespace
}  // namespace genesis

STABLE_TORCH_LIBRARY_IMPL(genesis, CUDA, m) {
  genesis::register_placeholders(m, std::make_index_sequence<genesis::kNumOps>());
}
