"""genesis_ops: the Models Genesis transforms as batched torch ops (C++ on CPU, CUDA on GPU).

    import genesis_ops as go
    inp, target = go.models_genesis(x, go.GenesisConfig(), seed=0)

Raw ops: torch.ops.genesis.{models_genesis, flip, local_shuffle, nonlinear, inpaint, outpaint,
bezier}, the masked variants {models_genesis, local_shuffle, inpaint, outpaint}_masked and the
mask-only paint_mask, shuffle_mask; NumPy reference with the same random stream:
genesis_ops.reference. MONAI transforms: genesis_ops.monai (imported on demand only; needs the
"monai" extra).
"""

import os

import torch  # loads libtorch before the extension

try:
    from . import _C  # noqa: F401  (runs the static operator registrations)
except ImportError as e:
    raise ImportError(
        f"genesis_ops: the compiled extension genesis_ops._C is missing from {os.path.dirname(__file__)}. "
        "A source checkout holds it only after the development install (`pip install "
        "--no-build-isolation -e .`, see CONTRIBUTING.md); or run from outside the repository to use "
        f"an installed genesis-ops. ({e})"
    ) from e

from . import _meta  # noqa: F401  (fake kernels)
from . import reference
from .config import GenesisConfig
from .functional import (
    bezier,
    flip,
    inpaint,
    local_shuffle,
    models_genesis,
    nonlinear,
    outpaint,
    paint_mask,
    shuffle_mask,
)
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
    "paint_mask",
    "reference",
    "shuffle_mask",
]


def has_cuda_kernels() -> bool:
    """Whether this build holds the CUDA kernels of torch.ops.genesis.

    A build without them registers CUDA kernels too, which only raise an error saying how to get
    the real ones, so this reads the build facts rather than the dispatcher.

    Returns:
        bool: True when the extension was compiled with CUDA (the ops then run on CUDA tensors);
        it says nothing about whether a GPU is present (see torch.cuda.is_available()).
    """
    from . import _build_info

    return bool(_build_info.WITH_CUDA)


def build_info() -> dict:
    """How this build was made and what it runs on.

    Returns:
        dict: ``version`` (str, genesis_ops); ``built_with_torch`` (str): the torch whose
        stable-ABI headers the extension was compiled against; ``stable_abi_min_torch`` (str):
        the oldest torch it supports; ``runtime_torch`` (str) and ``runtime_torch_cuda`` (str or
        None): the torch imported now; ``cuda_kernels`` (bool): CUDA kernels compiled in;
        ``cuda_archs`` (list[str]): their targets, ``sm_XY`` (machine code for compute capability
        X.Y and X.y, y > Y) or ``compute_XY`` (PTX, compiled by the driver for any GPU of
        capability >= X.Y); ``nvcc_version`` (str or None); ``cuda_available`` (bool): torch sees
        a GPU; ``num_threads`` (int): torch's intra-op threads (the CPU kernels' parallelism).
    """
    from . import _build_info as b

    return {
        "version": __version__,
        "built_with_torch": b.TORCH_VERSION,
        "stable_abi_min_torch": b.STABLE_ABI_TARGET,
        "runtime_torch": torch.__version__,
        "runtime_torch_cuda": torch.version.cuda,
        "cuda_kernels": has_cuda_kernels(),
        # sm_XY: machine code for compute capability X.Y (and X.y, y > Y); compute_XY: PTX, compiled
        # by the driver for any GPU of capability >= X.Y.
        "cuda_archs": b.CUDA_ARCHS.split(";") if b.CUDA_ARCHS else [],
        "nvcc_version": b.CUDA_COMPILER_VERSION or None,
        "cuda_available": torch.cuda.is_available(),
        "num_threads": torch.get_num_threads(),
    }
