"""Random cubes from in-memory volumes: :class:`CubeSampler` (pretraining: cubes that are not
mostly air) and :class:`PairSampler` (segmentation: image and label cubes, a share centred on
foreground)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .preprocess import pad_to
from .readers import Volume, channels_first


class CubeSampler:
    """Random cubes from in-memory volumes, skipping cubes that are mostly air.

    A cube is accepted when at least ``min_foreground`` of its voxels exceed ``air_value``
    (normalised units; 0.05 is about -900 HU with the default window). After ``max_tries``
    rejections the best candidate seen is used, so sampling always terminates. Volumes smaller
    than the cube are padded with 0 (air). ``regions`` optionally limits each volume to a
    sub-box (used for spatial train/validation splits of a single volume).

    All randomness comes from ``generator`` (a CPU ``torch.Generator``) so runs resume exactly.
    """

    def __init__(
        self,
        volumes: Sequence[Volume],
        cube: Sequence[int],
        generator: torch.Generator | None = None,
        air_value: float = 0.05,
        min_foreground: float = 0.5,
        max_tries: int = 20,
        regions: Sequence[tuple[slice, slice, slice] | None] | None = None,
    ):
        if not volumes:
            raise ValueError("volumes: need at least one volume")
        self.cube = tuple(int(c) for c in cube)
        if len(self.cube) != 3 or min(self.cube) < 1:
            raise ValueError(f"cube: expected three positive sizes, got {tuple(cube)}")
        if not 0.0 <= min_foreground <= 1.0:
            raise ValueError(f"min_foreground: expected a fraction in [0, 1], got {min_foreground}")
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.air_value, self.min_foreground, self.max_tries = air_value, min_foreground, max(1, int(max_tries))
        self.arrays = []
        regions = list(regions) if regions is not None else [None] * len(volumes)
        for v, reg in zip(volumes, regions, strict=True):  # held as (C, X, Y, Z); a region selects spatial axes
            a = v.channel_first()
            a = a if reg is None else a[(slice(None),) + tuple(reg)]
            a, _ = pad_to(a, (a.shape[0],) + self.cube, 0.0)
            self.arrays.append(a)
        sizes = np.array([a.size for a in self.arrays], dtype=np.float64)
        self.weights = torch.from_numpy(sizes / sizes.sum())
        self.rejected = 0
        self.drawn = 0

    def _randint(self, hi: int) -> int:
        return int(torch.randint(0, hi, (1,), generator=self.generator).item()) if hi > 1 else 0

    def sample_one(self) -> np.ndarray:
        best, best_fg = None, -1.0
        for _ in range(self.max_tries):
            i = int(torch.multinomial(self.weights, 1, generator=self.generator).item()) if len(self.arrays) > 1 else 0
            a = self.arrays[i]
            o = [self._randint(n - c + 1) for n, c in zip(a.shape[1:], self.cube, strict=True)]
            cube = a[(slice(None),) + tuple(slice(s, s + c) for s, c in zip(o, self.cube, strict=True))]
            fg = float((cube > self.air_value).mean())
            self.drawn += 1
            if fg >= self.min_foreground:
                return cube
            self.rejected += 1
            if fg > best_fg:
                best, best_fg = cube, fg
        return best

    def sample(self, batch_size: int) -> torch.Tensor:
        """A float32 batch ``(B, C, *cube)`` on the CPU (C = the volumes' channels)."""
        cubes = [np.asarray(self.sample_one(), dtype=np.float32) for _ in range(batch_size)]
        return torch.from_numpy(np.stack(cubes))

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class PairSampler:
    """Random (image, label) cubes for segmentation; a share of them centred on foreground voxels.

    Args:
        images: ``(X, Y, Z)`` or channel-first ``(C, X, Y, Z)`` arrays (padded with 0 to at least ``cube``).
        labels: foreground masks of the same shapes (0/1).
        cube: cube size ``(x, y, z)``.
        generator: CPU ``torch.Generator``, the only source of randomness.
        fg_fraction: probability that a cube is centred on a random foreground voxel (when the
            volume has any); otherwise its position is uniform.
    """

    def __init__(
        self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], cube, generator, fg_fraction: float = 0.5
    ):
        self.cube = tuple(cube)
        self.images = [channels_first(a, len(self.cube)) for a in images]
        self.images = [pad_to(a, (a.shape[0],) + self.cube, 0.0)[0] for a in self.images]
        self.labels = [pad_to(a, self.cube, 0.0)[0] for a in labels]
        self.fg = [np.argwhere(lab > 0) for lab in self.labels]
        self.gen = generator
        self.fg_fraction = fg_fraction
        sizes = np.array([a.size for a in self.images], dtype=np.float64)
        self.weights = torch.from_numpy(sizes / sizes.sum())

    def _rand(self, hi: int) -> int:
        return int(torch.randint(0, hi, (1,), generator=self.gen).item()) if hi > 1 else 0

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(images, labels)``, float32 ``(B, C, *cube)`` and ``(B, 1, *cube)`` CPU tensors."""
        xs, ys = [], []
        for _ in range(batch_size):
            i = int(torch.multinomial(self.weights, 1, generator=self.gen).item()) if len(self.images) > 1 else 0
            img, lab, fg = self.images[i], self.labels[i], self.fg[i]
            use_fg = len(fg) > 0 and float(torch.rand((), generator=self.gen)) < self.fg_fraction
            if use_fg:
                centre = fg[self._rand(len(fg))]
                o = [int(min(max(0, c - s // 2), n - s)) for c, s, n in zip(centre, self.cube, lab.shape, strict=True)]
            else:
                o = [self._rand(n - s + 1) for n, s in zip(lab.shape, self.cube, strict=True)]
            sl = tuple(slice(a, a + s) for a, s in zip(o, self.cube, strict=True))
            xs.append(np.asarray(img[(slice(None),) + sl], dtype=np.float32))
            ys.append(np.asarray(lab[sl], dtype=np.float32))
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)[:, None])
