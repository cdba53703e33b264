"""nn.Module form of the pipeline, for use in a model or a transform list."""
from __future__ import annotations

import torch

from .config import GenesisConfig
from .functional import models_genesis


class ModelsGenesis(torch.nn.Module):
    """module(x) -> (input, target): one Models Genesis training pair per sample.

    Seeds come from `generator` (or torch's default generator), so torch.manual_seed makes a
    run reproducible; pass seed= to forward for an explicit seed."""

    def __init__(self, config: GenesisConfig | None = None, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config if config is not None else GenesisConfig()
        self.generator = generator

    def forward(self, x: torch.Tensor, seed: int | None = None):
        return models_genesis(x, self.config, seed=seed, generator=self.generator)

    def extra_repr(self) -> str:
        return repr(self.config)
