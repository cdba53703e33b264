"""genesis_ops: the Models Genesis transforms as batched torch ops (C++ on CPU, CUDA on GPU).

    import genesis_ops as go
    inp, target = go.models_genesis(x, go.GenesisConfig(), seed=0)

Raw ops: torch.ops.genesis.{models_genesis, flip, local_shuffle, nonlinear, inpaint, outpaint,
bezier}; NumPy reference with the same random stream: genesis_ops.reference.
"""
import torch  # noqa: F401  (loads libtorch before the extension)

try:
    from . import _C  # noqa: F401  (runs the static operator registrations)
except ImportError as e:  # pragma: no cover - only when running from an unbuilt source tree
    raise ImportError(
        "genesis_ops: the compiled extension genesis_ops._C was not found. Install the package "
        "(`pip install .` in the repository) and do not run from the repository root, where the "
        f"unbuilt source directory shadows the installed package. ({e})"
    ) from e

from . import _meta  # noqa: F401  (fake kernels)
from . import reference
from .config import GenesisConfig
from .functional import bezier, flip, inpaint, local_shuffle, models_genesis, nonlinear, outpaint
from .module import ModelsGenesis

try:  # the version lives in pyproject.toml only; the installed distribution carries it
    from importlib.metadata import PackageNotFoundError, version as _dist_version

    __version__ = _dist_version("genesis-ops")
except PackageNotFoundError:  # pragma: no cover - a build used without installing it
    __version__ = "0+unknown"

__all__ = [
    "GenesisConfig",
    "ModelsGenesis",
    "bezier",
    "build_info",
    "flip",
    "has_cuda_kernels",
    "inpaint",
    "local_shuffle",
    "models_genesis",
    "nonlinear",
    "outpaint",
    "reference",
]


def has_cuda_kernels() -> bool:
    """True when the CUDA kernels were compiled into this build."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("genesis::models_genesis", "CUDA")


def build_info() -> dict:
    """How this build was made: torch it was compiled against, CUDA kernels and architectures."""
    from . import _build_info as b

    return {
        "version": __version__,
        "built_with_torch": b.TORCH_VERSION,
        "built_with_torch_cuda": b.TORCH_CUDA_VERSION or None,
        "stable_abi_min_torch": b.STABLE_ABI_TARGET,
        "runtime_torch": torch.__version__,
        "cuda_kernels": bool(b.WITH_CUDA) and has_cuda_kernels(),
        "cuda_archs": b.CUDA_ARCHS.split(";") if b.CUDA_ARCHS else [],
        "nvcc_version": b.CUDA_COMPILER_VERSION or None,
        "cuda_available": torch.cuda.is_available(),
        "num_threads": torch.get_num_threads(),
    }
