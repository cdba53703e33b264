"""nn.Module form of the pipeline, for use in a model or a transform list."""

from __future__ import annotations

import torch

from .config import GenesisConfig
from .functional import models_genesis


class ModelsGenesis(torch.nn.Module):
    """nn.Module form of models_genesis: module(x) -> (input, target), one training pair per
    sample, on x's device. Has no parameters or buffers.

    Each call draws a new seed from generator (or torch's default CPU generator), so
    torch.manual_seed makes a run reproducible; pass seed= to forward for an explicit seed.

    Args:
        config (GenesisConfig, optional): probabilities and sizes; None means GenesisConfig().
        generator (torch.Generator, optional): where the seeds are drawn from.
    """

    def __init__(self, config: GenesisConfig | None = None, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config if config is not None else GenesisConfig()
        self.generator = generator

    def forward(self, x: torch.Tensor, seed: int | torch.Tensor | None = None, return_masks: bool = False):
        """One (input, target) pair per sample of x.

        Args:
            x (Tensor[B, C, H, W] or Tensor[B, C, D, H, W]): float16, bfloat16, float32 or
                float64, on the CPU or a CUDA device; not modified.
            seed (int or Tensor, optional): an explicit seed in [0, 2**64), or a 0-dim int64
                tensor on x's device (see models_genesis); None draws one from the module's
                generator.
            return_masks (bool): also return the corruption mask (see models_genesis).

        Returns:
            tuple[Tensor, Tensor]: (input, target), new tensors of x's shape, dtype and device;
            with return_masks, (input, target, mask), mask torch.uint8 (B, 1, *spatial).
        """
        return models_genesis(x, self.config, seed=seed, generator=self.generator, return_masks=return_masks)

    def extra_repr(self) -> str:
        return repr(self.config)
