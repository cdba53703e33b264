// Built instead of pipeline_cuda.cpp when no CUDA compiler was found: every op's CUDA kernel
// raises an error that says why and how to get the kernels, instead of the dispatcher's generic
// "could not run ... with arguments from the 'CUDA' backend".
#include <torch/csrc/stable/library.h>

#include <stdexcept>
#include <string>

namespace genesis {
namespace {

constexpr const char* kOps[] = {"models_genesis", "flip", "local_shuffle", "nonlinear", "inpaint", "outpaint",
                                "bezier"};

template <int I>
void built_without_cuda(StableIValue*, uint64_t, uint64_t) {
  throw std::runtime_error(
      std::string("genesis::") + kOps[I] +
      ": got a CUDA tensor, but this genesis-ops was built without CUDA kernels (no CUDA compiler was "
      "found when it was built, or GENESIS_WITH_CUDA=OFF was set). To get them, reinstall it in this environment with the CUDA toolkit's "
      "nvcc on PATH (or CUDACXX set): GENESIS_WITH_CUDA=ON pip install --no-cache-dir --force-reinstall "
      "--no-deps <genesis-ops or its source directory>. genesis_ops.build_info() shows what a build holds.");
}

}  // namespace
}  // namespace genesis

STABLE_TORCH_LIBRARY_IMPL(genesis, CUDA, m) {
  m.impl(genesis::kOps[0], &genesis::built_without_cuda<0>);
  m.impl(genesis::kOps[1], &genesis::built_without_cuda<1>);
  m.impl(genesis::kOps[2], &genesis::built_without_cuda<2>);
  m.impl(genesis::kOps[3], &genesis::built_without_cuda<3>);
  m.impl(genesis::kOps[4], &genesis::built_without_cuda<4>);
  m.impl(genesis::kOps[5], &genesis::built_without_cuda<5>);
  m.impl(genesis::kOps[6], &genesis::built_without_cuda<6>);
}
