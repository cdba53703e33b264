#pragma once
// Whether this build's CUDA code runs on a GPU: the rule, written once and torch-free, so that the
// engine's device check (cuda_engine.cpp) and the tests (genesis::_arch_fit, no GPU needed) use
// the same function.
#include <cstdio>
#include <string>

namespace genesis {

enum class ArchFit : int {
  kRuns = 0,                 // machine code for it, or PTX the driver can compile
  kNoCode = 1,               // nothing in the build runs on this compute capability
  kPtxNeedsNewerDriver = 2,  // only PTX fits, and it is newer than the driver's compiler
};

// archs: the build's list, e.g. "sm_80,sm_90,compute_90" (GENESIS_CUDA_ARCHS); major.minor: the
// GPU's compute capability; driver: cudaDriverGetVersion (e.g. 12040 for CUDA 12.4); runtime:
// the CUDA version the code was built with (CUDART_VERSION), which is the PTX's version.
//   sm_XY    machine code: runs on X.y with y >= Y
//   sm_XYf   family-specific (e.g. sm_100f): the same, within the family (same major)
//   sm_XYa   architecture-specific: exactly X.Y
//   compute_XY[f|a]: PTX, compiled by the driver: plain for any capability >= X.Y, f and a as
//            above. The driver's compiler only reads PTX of its own CUDA version or older
//            (otherwise cudaErrorUnsupportedPtxVersion at launch), so a PTX-only match also needs
//            driver >= runtime.
// CMake's special values (all, all-major, native) chose the list themselves: accepted.
inline ArchFit arch_fit(const std::string& archs, int major, int minor, int driver, int runtime) {
  const int cc = major * 10 + minor;
  bool ptx = false;
  size_t pos = 0;
  while (pos <= archs.size()) {
    size_t end = archs.find(',', pos);
    if (end == std::string::npos) end = archs.size();
    const std::string a = archs.substr(pos, end - pos);
    pos = end + 1;
    if (a.empty()) continue;
    int v = 0;
    char suffix = 0;
    const bool sm = std::sscanf(a.c_str(), "sm_%d%c", &v, &suffix) >= 1;
    const bool compute = !sm && std::sscanf(a.c_str(), "compute_%d%c", &v, &suffix) >= 1;
    if (!sm && !compute) return ArchFit::kRuns;
    bool fits;
    if (suffix == 'a') {
      fits = cc == v;
    } else if (suffix == 'f' || sm) {
      fits = major == v / 10 && minor >= v % 10;
    } else {
      fits = cc >= v;
    }
    if (!fits) continue;
    if (sm) return ArchFit::kRuns;
    ptx = true;
  }
  if (!ptx) return ArchFit::kNoCode;
  return driver >= runtime ? ArchFit::kRuns : ArchFit::kPtxNeedsNewerDriver;
}

}  // namespace genesis
