"""Random cubes. From a store (3D pretraining): :class:`StoreCubes` (each batch a pure function of
seed, rank, epoch and batch index), read by DataLoader workers through :func:`cube_loader` and
:class:`StreamedCubes`. From in-memory volumes: :class:`CubeSampler` (pretraining cubes that are
not mostly air; :class:`RamCubes` for 2D inputs) and :class:`PairSampler` (segmentation: image and
label cubes, a share centred on foreground)."""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from .preprocess import pad_to
from .readers import Volume, channels_first
from .store import StoreError
from .utils import SeedStream, derive_seed


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


# ----------------------------------------------------------------------------------------------
# Streaming cubes from a store (models_genesis.store), read in DataLoader worker processes


def default_workers(local_world_size: int = 1) -> int:
    """DataLoader workers per process: the CPUs this process may use, shared by the ranks of the
    node, less one for the training loop; at least 1, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus // max(1, local_world_size) - 1))


class StoreCubes(torch.utils.data.Dataset):
    """Random cubes from store volumes; item ``(epoch, batch)`` is a whole batch.

    Each batch's cubes and its transform seed are a pure function of ``(seed, rank, epoch,
    batch)``, so a batch is the same whichever DataLoader worker makes it, with any number of
    workers, and a resumed run draws exactly what it would have drawn. Volumes are chosen in
    proportion to their size through a cumulative table (a binary search: O(log N) whatever the
    number of volumes). A cube is rejected before any read when the store's coarse foreground map
    says it is mostly air, and after its read by the exact test (the share of voxels above the
    stored value that the window maps to ``air_value`` must reach ``min_foreground``); after
    ``max_tries`` the best cube read is used. A volume (or region) smaller than the cube yields a
    cube padded with air (0 once normalised): the cube is padded, never the volume. Items
    (``dataset[(epoch, batch)]``, what DataLoader workers hand over) are stored values with their
    windows (:meth:`raw_batch`); :meth:`batch` gives them normalised.

    Args:
        store: a :class:`store.Store`.
        indices: the volumes to draw from (default: all).
        regions: per drawn volume, a spatial box (tuple of slices) or None.
        pre: the :class:`preprocess.Preprocessing` whose window / MR normalisation is applied
            to each cube as it is read.
    """

    def __init__(
        self,
        store,
        cube: Sequence[int],
        batch_size: int,
        pre,
        seed: int = 0,
        rank: int = 0,
        indices: Sequence[int] | None = None,
        regions=None,
        air_value: float = 0.05,
        min_foreground: float = 0.5,
        max_tries: int = 20,
        skip_bad: bool = False,
    ):
        from .store import stored_window

        self.store = store if indices is None else store.subset(indices)
        n = len(self.store)
        if n == 0:
            raise ValueError("store: need at least one volume")
        self.cube = tuple(int(c) for c in cube)
        if len(self.cube) != 3 or min(self.cube) < 1:
            raise ValueError(f"cube: expected three positive sizes, got {tuple(cube)}")
        self.batch_size, self.seed, self.rank = int(batch_size), int(seed), int(rank)
        self.air_value, self.min_foreground, self.max_tries = air_value, min_foreground, max(1, int(max_tries))
        regions = list(regions) if regions is not None else [None] * n
        # box of each volume as (start, stop) per axis: compact arrays, so workers copy little
        shapes = np.array([e["shape"] for e in self.store.entries], dtype=np.int64)
        box = np.stack([np.zeros_like(shapes), shapes], axis=-1)  # (N, 3, 2)
        for i, reg in enumerate(regions):
            if reg is not None:
                for a, s in enumerate(reg):
                    lo, hi, _ = s.indices(int(shapes[i, a]))
                    box[i, a] = (lo, hi)
        self.box = box
        sizes = np.prod(np.maximum(box[..., 1] - box[..., 0], np.array(self.cube)), axis=1).astype(np.float64)
        self.cum = np.cumsum(sizes) / sizes.sum()
        self.channels = self.store[0].channels
        self.pre = pre
        # window (lo, hi) per volume and channel, from the manifest's statistics (MR percentiles
        # are the whole volume's, as when volumes were normalised in memory)
        self.norm = [[stored_window(pre, s, e["source"]) for s in e["stats"]] for e in self.store.entries]
        # Cubes travel from the workers as stored values (int16 for CT: half the bytes of float32;
        # the DataLoader's hand-over costs about a millisecond per MiB) with their windows, and are
        # normalised where they arrive (normalise_cubes). The air test runs on the stored values: a
        # voxel is body when it exceeds the value the window maps to air_value (never, for a
        # window that maps everything to 0); padding takes a value the window maps to 0.
        self.dtype = np.int16
        if any(e.get("dtype", "int16") != "int16" for e in self.store.entries) or any(
            lo < -32768 or lo > 32767 for w in self.norm for lo, _ in w
        ):
            self.dtype = np.float32
        self.thresholds = [[lo + air_value * (hi - lo) if hi > lo else np.inf for lo, hi in w] for w in self.norm]
        self.pads = [[np.floor(lo) if self.dtype == np.int16 else lo for lo, _ in w] for w in self.norm]
        self.rejected_unread = self.rejected = self.drawn = 0
        # skip_bad: volumes whose stored chunks fail to read are left out from then on (warned once)
        self.skip_bad, self.bad = skip_bad, set()
        self._fg: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:  # map-style over (epoch, batch) keys: a sampler says which
        return 2**62

    def _foreground(self, i: int) -> np.ndarray:
        fg = self._fg.get(i)
        if fg is None:
            fg = self.store[i].foreground()
            self._fg[i] = fg
            if len(self._fg) > 256:
                self._fg.popitem(last=False)
        else:
            self._fg.move_to_end(i)
        return fg

    def _read(self, i: int, off, out: np.ndarray) -> np.ndarray:
        """The stored values of the (C, *cube) cube at ``off`` of volume ``i``, written into ``out``
        (of :attr:`dtype`); where the volume (region) is smaller than the cube, the cube is padded
        (centred) with values its window maps to 0 (air)."""
        box = self.box[i]
        sl = tuple(slice(int(o), int(min(o + c, hi))) for o, c, (_, hi) in zip(off, self.cube, box, strict=True))
        vol = self.store[i]
        raw = vol[(slice(None),) + sl] if self.channels > 1 else vol[sl][None]
        if raw.shape[1:] == self.cube:
            out[...] = raw
        else:
            for k in range(out.shape[0]):
                out[k] = pad_to(raw[k], self.cube, self.pads[i][k])[0]
        return out

    def _body_share(self, i: int, cube: np.ndarray) -> float:
        """Share of the cube's voxels (all channels) above the air level of their window."""
        n = sum(np.count_nonzero(cube[k] > t) for k, t in enumerate(self.thresholds[i]) if t != np.inf)
        return n / cube.size

    def _estimate(self, i: int, off) -> float:
        from .store import FG_CELL

        fg = self._foreground(i)
        sl = tuple(
            slice(int(o) // FG_CELL, max(int(o) // FG_CELL + 1, -(-int(min(o + c, hi)) // FG_CELL)))
            for o, c, (_, hi) in zip(off, self.cube, self.box[i], strict=True)
        )
        return float(fg[sl].mean())

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count`` normalised cubes as float32 (count, C, *cube), drawn with ``rng``."""
        raw, windows = self.sample_raw(rng, count)
        return normalise_cubes(torch.from_numpy(raw), torch.from_numpy(windows)).numpy()

    def sample_raw(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` cubes of stored values, (count, C, *cube) of :attr:`dtype`, and the window of
        each cube's channels, float64 (count, C, 2): what :func:`normalise_cubes` takes. Each cube
        is read straight into its slot of the batch."""
        out = np.empty((count, self.channels, *self.cube), self.dtype)
        windows = np.empty((count, self.channels, 2), np.float64)
        for j in range(count):
            windows[j] = self.norm[self._one(rng, out[j])]
        return out, windows

    def _one(self, rng: np.random.Generator, out: np.ndarray) -> int:
        """One accepted cube (or the best of ``max_tries``) into ``out``; returns its volume."""
        best, best_fg, best_i, t = None, -1.0, -1, 0
        while t < self.max_tries or best is None:
            i = min(int(np.searchsorted(self.cum, rng.random(), side="right")), len(self.cum) - 1)
            off = [
                lo + (int(rng.integers(0, hi - lo - c + 1)) if hi - lo > c else 0)
                for (lo, hi), c in zip(self.box[i], self.cube, strict=True)
            ]
            if i in self.bad:
                continue
            t += 1
            self.drawn += 1
            try:
                # the map is coarse and made at a fixed air level: it only skips cubes far below the bar
                if t < self.max_tries and self._estimate(i, off) < 0.5 * self.min_foreground:
                    self.rejected_unread += 1
                    continue
                self._read(i, off, out)
            except StoreError as e:
                if not self.skip_bad:
                    raise
                warnings.warn(f"skipping {e}", stacklevel=2)
                self.bad.add(i)
                if len(self.bad) == len(self.cum):
                    raise StoreError(f"{self.store.root}: every volume is damaged (last: {e})") from None
                continue
            fg = self._body_share(i, out)
            if fg >= self.min_foreground:
                return i
            self.rejected += 1
            if fg > best_fg:
                best, best_fg, best_i = out.copy(), fg, i
        out[...] = best
        return best_i

    def raw_batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Batch ``index`` of ``epoch`` as it leaves a worker: ``(stored values (B, C, *cube),
        windows float64 (B, C, 2), transform seed)``; :func:`normalise_cubes` makes the cubes."""
        rng = np.random.default_rng([self.seed, self.rank, int(epoch), int(index), int(SeedStream.TRAIN_CUBES)])
        seed = int(rng.integers(0, 2**62))
        raw, windows = self.sample_raw(rng, self.batch_size)
        return torch.from_numpy(raw), torch.from_numpy(windows), seed

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, int]:
        """Batch ``index`` of ``epoch``: ``(cubes (B, C, *cube) float32, transform seed)``."""
        raw, windows, seed = self.raw_batch(epoch, index)
        return normalise_cubes(raw, windows), seed

    def __getitem__(self, key) -> tuple[torch.Tensor, torch.Tensor, int]:
        epoch, index = key
        return self.raw_batch(epoch, index)

    def fixed_cubes(self, count: int, seed: int) -> torch.Tensor:
        """``count`` cubes drawn once (validation): float32 (count, C, *cube)."""
        return torch.from_numpy(self.sample(np.random.default_rng([int(seed), int(SeedStream.VAL_CUBES)]), count))


def normalise_cubes(raw: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """Stored values (B, C, *cube) to [0, 1] float32 on their device: clip each cube's channel to
    its window (lo, hi) from ``windows`` (B, C, 2), subtract lo, scale by 1 / (hi - lo) (0 where
    hi <= lo); float32 arithmetic with scalar operands (as NumPy's with Python floats), the same on
    every device. One window for the whole batch (CT) takes three passes over it."""
    x = raw.to(torch.float32)
    w = windows.tolist()
    if all(cw == w[0][0] for bw in w for cw in bw):
        _window_(x, *w[0][0])
    else:
        for b, bw in enumerate(w):
            for c, (lo, hi) in enumerate(bw):
                _window_(x[b, c], lo, hi)
    return x


def _window_(x: torch.Tensor, lo: float, hi: float) -> None:
    if hi <= lo:
        x.zero_()
        return
    x.clamp_(float(np.float32(lo)), float(np.float32(hi)))
    x -= float(np.float32(lo))
    x *= float(np.float32(1.0 / (hi - lo)))


class EpochBatches(torch.utils.data.Sampler):
    """The keys ``(epoch, 0..steps-1)`` of the current epoch (set :attr:`epoch` before each
    ``iter(loader)``; the sampler lives in the main process, so persistent workers see it)."""

    def __init__(self, steps: int):
        self.steps, self.epoch = int(steps), 0

    def __iter__(self):
        return ((self.epoch, b) for b in range(self.steps))

    def __len__(self) -> int:
        return self.steps


def cube_loader(dataset: StoreCubes, steps: int, workers: int, pin_memory: bool, prefetch: int = 2):
    """A DataLoader over :class:`StoreCubes` batches: ``workers`` persistent processes, each
    holding ``prefetch`` batches ahead, so RAM is bounded by workers x prefetch batches (plus the
    workers' open files and foreground maps), not by the dataset. Returns ``(loader, sampler)``."""
    sampler = EpochBatches(steps)
    kw = dict(batch_size=None, sampler=sampler, num_workers=int(workers), pin_memory=pin_memory)
    if workers > 0:
        kw.update(persistent_workers=True, prefetch_factor=int(prefetch))
    return torch.utils.data.DataLoader(dataset, **kw), sampler


class RamCubes:
    """The in-memory path, for 2D inputs (images and slices): :class:`CubeSampler` per epoch with
    the per-(seed, rank, epoch) streams pretraining has always used."""

    def __init__(self, volumes, cube, batch_size, seed, rank, regions=None, air_value=0.05, min_foreground=0.5):
        self.volumes, self.cube, self.batch_size = volumes, cube, batch_size
        self.seed, self.rank, self.regions = seed, rank, regions
        self.air_value, self.min_foreground = air_value, min_foreground

    def _sampler(self, gen):
        return CubeSampler(
            self.volumes,
            self.cube,
            gen,
            air_value=self.air_value,
            min_foreground=self.min_foreground,
            regions=self.regions,
        )

    def epoch(self, epoch: int, device: torch.device):
        """Endless generator of ``(cubes on device, transform seed)`` batches for ``epoch``."""
        sampler = self._sampler(
            torch.Generator().manual_seed(derive_seed(self.seed, self.rank, epoch, SeedStream.TRAIN_CUBES))
        )
        seed_gen = torch.Generator().manual_seed(derive_seed(self.seed, self.rank, epoch, SeedStream.TRAIN_CORRUPTION))
        while True:
            cubes = sampler.sample(self.batch_size).to(device, non_blocking=True)
            yield cubes, int(torch.randint(0, 2**62, (1,), generator=seed_gen).item())

    def close(self) -> None:
        pass

    def fixed_cubes(self, count: int, seed: int) -> torch.Tensor:
        return self._sampler(torch.Generator().manual_seed(derive_seed(seed, SeedStream.VAL_CUBES))).sample(count)


def _one_line_errors(it):
    """``it``, with a store error raised in a worker re-raised as its own one-line message (the
    DataLoader wraps it in the worker's traceback)."""
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except StoreError as e:
            lines = [ln for ln in str(e).splitlines() if "StoreError: " in ln]
            if not lines:
                raise
            raise StoreError(lines[-1].split("StoreError: ", 1)[1]) from None
        yield item


class StreamedCubes:
    """Training batches from a :class:`StoreCubes`, read by DataLoader workers, per epoch.

    The workers hand over stored values (int16 for CT) and windows; the cubes are normalised on
    the training device. On CUDA the batches come through pinned memory, and the copy of the next
    batch to the GPU (and its normalisation) is issued on a side stream before the current one is
    handed out, so it overlaps the step."""

    def __init__(self, dataset: StoreCubes, steps: int, workers: int, prefetch: int = 2):
        self.dataset, self.steps, self.workers, self.prefetch = dataset, int(steps), int(workers), int(prefetch)
        self._loader = self._sampler = None

    def epoch(self, epoch: int, device: torch.device):
        """Generator of ``(cubes on device, transform seed)`` for the batches of ``epoch``."""
        if self._loader is None:
            self._loader, self._sampler = cube_loader(
                self.dataset, self.steps, self.workers, pin_memory=device.type == "cuda", prefetch=self.prefetch
            )
        self._sampler.epoch = int(epoch)
        it = _one_line_errors(iter(self._loader))
        if device.type != "cuda":
            for raw, windows, seed in it:
                yield normalise_cubes(raw.to(device), windows), int(seed)
            return
        side, main = torch.cuda.Stream(device), torch.cuda.current_stream(device)

        def issue(item):
            raw, windows, seed = item
            with torch.cuda.stream(side):
                x = normalise_cubes(raw.to(device, non_blocking=True), windows)
                return x, int(seed), raw  # raw: pinned source, alive until used

        ahead = None
        for item in it:
            cur, ahead = ahead, issue(item)
            if cur is not None:
                yield cur[0], cur[1]
            main.wait_stream(side)
            ahead[0].record_stream(main)
        if ahead is not None:
            yield ahead[0], ahead[1]

    def close(self) -> None:
        """Stop the worker processes."""
        self._loader = self._sampler = None
