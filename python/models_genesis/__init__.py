"""models_genesis: the Models Genesis 3D U-Net, pretraining on NIfTI volumes, fine-tuning and a
command line (``genesis-ops``), built on the ``genesis_ops`` transforms."""
from .model import (BatchStatsNorm3d, CheckpointError, GenesisClassifier, UNet3D, build_model,
                    count_parameters, load_model, load_pretrained)

__version__ = "0.1.0"

__all__ = ["UNet3D", "GenesisClassifier", "BatchStatsNorm3d", "CheckpointError", "build_model",
           "count_parameters", "load_model", "load_pretrained", "__version__"]
