// Built instead of cuda_engine.cpp when no CUDA compiler was found: every op's CUDA kernel
// raises an error that says why and how to get the kernels, instead of the dispatcher's generic
// "could not run ... with arguments from the 'CUDA' backend". It raises before any argument check.
#include <stdexcept>
#include <string>
#include <utility>

#include "op_entries.h"

namespace genesis {
namespace {

// The schema name of entry I: op I (OpKind order), or the masked schema of kMaskedOps[I].
template <size_t I, bool kMasked>
std::string entry_name() {
  return kMasked ? std::string(kOpSchemaNames[static_cast<int>(kMaskedOps[I % kNumMaskedOps])]) + kMaskedSuffix
                 : std::string(kOpSchemaNames[I]);
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

template <bool kMasked, size_t... I>
void register_placeholders(Library& m, std::index_sequence<I...>) {
  (m.impl(entry_name<I, kMasked>().c_str(), &built_without_cuda<I, kMasked>), ...);
}

}  // namespace
}  // namespace genesis

STABLE_TORCH_LIBRARY_IMPL(genesis, CUDA, m) {
  genesis::register_placeholders<false>(m, std::make_index_sequence<genesis::kNumOps>());
  genesis::register_placeholders<true>(m, std::make_index_sequence<genesis::kNumMaskedOps>());
}
