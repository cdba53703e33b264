"""models_genesis: the Models Genesis 3D U-Net, pretraining on NIfTI volumes, fine-tuning and a
command line (``genesis-ops``), built on the ``genesis_ops`` transforms."""

from .checkpoint import CheckpointError, build_model, load_model, load_pretrained
from .model import BatchStatsNorm2d, BatchStatsNorm3d, GenesisClassifier, UNet2D, UNet3D, count_parameters


def __getattr__(name):
    # one version for the whole distribution, read once (by genesis_ops, from the installed
    # metadata); imported lazily so that importing models_genesis does not load the extension
    if name == "__version__":
        from genesis_ops import __version__

        return __version__
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "UNet3D",
    "UNet2D",
    "GenesisClassifier",
    "BatchStatsNorm3d",
    "BatchStatsNorm2d",
    "CheckpointError",
    "build_model",
    "count_parameters",
    "load_model",
    "load_pretrained",
    "__version__",
]
