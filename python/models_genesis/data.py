"""NIfTI volumes in, normalised cubes out.

Volumes are read with nibabel, reoriented to the closest canonical (RAS) orientation, optionally
resampled to a voxel spacing, and mapped to [0, 1]: CT through an HU window (default -1000..1000,
as the paper), MRI by per-volume percentiles or min-max. Arrays keep the canonical axis order
``(X, Y, Z)`` = the paper's rows x cols x depth, so a cube is ``(1, 64, 64, 32)`` by default.

Loaded volumes are cached in memory (float16 by default: half the RAM, well below the 1/2000 HU
quantisation of the window) so epochs never re-read or re-decode files.
"""

from __future__ import annotations

import glob
import os
import re
import warnings
from dataclasses import dataclass, field
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

NIFTI_SUFFIXES = (".nii", ".nii.gz")
DEMO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo")
DEMO_CT = os.path.join(DEMO_DIR, "ct_abdomen.nii.gz")
DEMO_LABELS = os.path.join(DEMO_DIR, "ct_abdomen_vertebrae.nii.gz")


class VolumeError(RuntimeError):
    """A volume file is missing, unreadable or unusable (message names the file, one line)."""


def _one_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def is_nifti(path: str) -> bool:
    return path.lower().endswith(NIFTI_SUFFIXES)


def find_volumes(paths: Sequence[str], accept=is_nifti, kinds: str = ".nii/.nii.gz") -> list[str]:
    """Expand files, folders (searched recursively for .nii/.nii.gz) and glob patterns.

    ``accept(path)`` decides which files folders and patterns yield (named ``kinds`` in errors;
    the 2D loader also accepts images). Raises :class:`VolumeError` naming the first path that
    matches nothing."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[str] = []
    for p in paths:
        p = os.fspath(p)
        if any(c in p for c in "*?["):
            hits = sorted(h for h in glob.glob(p, recursive=True) if os.path.isfile(h) and accept(h))
            if not hits:
                raise VolumeError(f"{p}: pattern matches no {kinds} file")
            out.extend(hits)
        elif os.path.isdir(p):
            hits = sorted(
                h for h in glob.glob(os.path.join(p, "**", "*"), recursive=True) if os.path.isfile(h) and accept(h)
            )
            if not hits:
                raise VolumeError(f"{p}: folder contains no {kinds} file")
            out.extend(hits)
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise VolumeError(f"{p}: no such file or folder")
    seen, uniq = set(), []
    for p in out:
        a = os.path.abspath(p)
        if a not in seen:
            seen.add(a)
            uniq.append(p)
    return uniq


@dataclass
class Preprocessing:
    """How raw voxel values become [0, 1] (stored in checkpoints so predict matches training).

    modality: ``"ct"`` (clip to ``hu_window`` then scale) or ``"mri"``.
    mri_norm: ``"percentile"`` (clip to the ``percentiles`` of the non-zero voxels, scale) or
        ``"minmax"`` (per-volume min-max, as the paper's authors did for BraTS).
    spacing: target voxel spacing in mm (x, y, z) for resampling; None keeps the native grid.
    """

    modality: str = "ct"
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    mri_norm: str = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)
    spacing: tuple[float, float, float] | None = None

    def __post_init__(self):
        if self.modality not in ("ct", "mri"):
            raise ValueError(f"modality: expected 'ct' or 'mri', got {self.modality!r}")
        if self.mri_norm not in ("percentile", "minmax"):
            raise ValueError(f"mri_norm: expected 'percentile' or 'minmax', got {self.mri_norm!r}")
        lo, hi = self.hu_window
        if not hi > lo:
            raise ValueError(f"hu_window: expected low < high, got {self.hu_window}")
        plo, phi = self.percentiles
        if not 0 <= plo < phi <= 100:
            raise ValueError(f"percentiles: expected 0 <= low < high <= 100, got {self.percentiles}")
        if self.spacing is not None:
            sp = tuple(float(s) for s in self.spacing)
            if len(sp) != 3 or min(sp) <= 0:
                raise ValueError(f"spacing: expected three positive numbers, got {self.spacing}")
            self.spacing = sp
        self.hu_window = (float(lo), float(hi))
        self.percentiles = (float(plo), float(phi))

    def to_dict(self) -> dict:
        return {
            "modality": self.modality,
            "hu_window": list(self.hu_window),
            "mri_norm": self.mri_norm,
            "percentiles": list(self.percentiles),
            "spacing": list(self.spacing) if self.spacing is not None else None,
        }

    @classmethod
    def from_config(cls, cfg) -> Preprocessing:
        """The preprocessing a run config asks for.

        Args:
            cfg: anything with ``modality``, ``hu_window``, ``mri_norm`` and ``spacing`` attributes
                (a :class:`config.RunConfig`, or the command line's parsed arguments); sequences may
                be lists.

        Returns:
            A validated :class:`Preprocessing` (default percentiles).
        """
        return cls(
            modality=cfg.modality,
            hu_window=tuple(cfg.hu_window),
            mri_norm=cfg.mri_norm,
            spacing=tuple(cfg.spacing) if cfg.spacing else None,
        )

    @classmethod
    def from_dict(cls, d: dict | None) -> Preprocessing:
        if not d:
            return cls()
        d = dict(d)
        for k in ("hu_window", "percentiles", "spacing"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


@dataclass
class Volume:
    """A canonical-orientation volume: ``data`` (X, Y, Z) plus the geometry needed to go back."""

    path: str
    data: np.ndarray
    affine: np.ndarray  # affine of ``data`` (canonical, possibly resampled)
    original_affine: np.ndarray
    original_shape: tuple[int, int, int]
    canonical_shape: tuple[int, int, int]
    header: object = field(default=None, repr=False)
    # () : ``data`` is (X, Y, Z); else ``data`` is (C, X, Y, Z), one named channel per entry
    channel_names: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        return len(self.channel_names) or 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:] if self.channel_names else self.data.shape)

    def channel_first(self) -> np.ndarray:
        """``data`` as (C, X, Y, Z) (a view; C = 1 for a single-channel volume)."""
        return self.data if self.channel_names else self.data[None]


def channels_first(a: np.ndarray, spatial_dims: int) -> np.ndarray:
    """``a`` with a leading channel axis: unchanged when it has ``spatial_dims + 1`` axes, else a
    one-channel view (samplers and the sliding window take single- or multi-channel arrays)."""
    return a if a.ndim == spatial_dims + 1 else a[None]


def read_nifti(path: str, channels: bool = False):
    """Open a NIfTI file and return the closest-canonical image; one-line errors naming the file.

    ``channels``: also accept a 4D file whose last axis holds several channels (the array is then
    (X, Y, Z, C)); otherwise a 4D file must hold a single volume."""
    import nibabel as nib

    if not os.path.exists(path):
        raise VolumeError(f"{path}: no such file")
    if os.path.isdir(path):
        raise VolumeError(f"{path}: is a folder, expected a NIfTI file")
    if not is_nifti(path):
        raise VolumeError(f"{path}: not a NIfTI file (expected .nii or .nii.gz)")
    try:
        img = nib.load(path)
        if len(img.shape) == 4 and img.shape[3] == 1:
            img = img.slicer[..., 0]
        if len(img.shape) != 3 and not (channels and len(img.shape) == 4):
            raise VolumeError(f"{path}: expected a 3D volume, got shape {tuple(img.shape)}")
        can = nib.as_closest_canonical(img)
        arr = np.asarray(can.dataobj, dtype=np.float32)
    except VolumeError:
        raise
    except Exception as e:  # noqa: BLE001 - nibabel, gzip, zlib, EOF... all mean "corrupt"
        raise VolumeError(f"{path}: cannot read NIfTI ({_one_line(e)})") from None
    if arr.size == 0 or min(arr.shape) < 1:
        raise VolumeError(f"{path}: empty volume {arr.shape}")
    if not np.isfinite(arr).all():
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    return img, can, arr


def resample(arr: np.ndarray, zooms: Sequence[float], spacing: Sequence[float], mode: str = "trilinear"):
    """Resample an (X, Y, Z) array from voxel size ``zooms`` to ``spacing`` (torch interpolation)."""
    shape = tuple(max(1, int(round(n * z / s))) for n, z, s in zip(arr.shape, zooms, spacing, strict=True))
    if shape == tuple(arr.shape):
        return arr
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
    if mode == "nearest":
        out = F.interpolate(t, size=shape, mode="nearest")
    else:
        out = F.interpolate(t, size=shape, mode="trilinear", align_corners=False)
    return out[0, 0].numpy()


def _resampled_affine(affine: np.ndarray, old_shape, new_shape) -> np.ndarray:
    scale = np.array([o / n for o, n in zip(old_shape, new_shape, strict=True)], dtype=np.float64)
    a = affine.copy()
    a[:3, :3] = affine[:3, :3] * scale[None, :]
    # keep the field of view: voxel centres shift by half the change of voxel size
    a[:3, 3] = affine[:3, 3] + affine[:3, :3] @ ((scale - 1.0) / 2.0)
    return a


def normalise(arr: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Map raw values to [0, 1] (float32)."""
    if pre.modality == "ct":
        lo, hi = pre.hu_window
        return ((np.clip(arr, lo, hi) - lo) / (hi - lo)).astype(np.float32)
    if pre.mri_norm == "minmax":
        lo, hi = float(arr.min()), float(arr.max())
    else:
        nz = arr[arr != 0]
        if nz.size == 0:
            nz = arr.ravel()
        lo, hi = (float(v) for v in np.percentile(nz, pre.percentiles))
    if hi <= lo:
        return np.zeros_like(arr, dtype=np.float32)
    return ((np.clip(arr, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def load_volume(path: str, pre: Preprocessing | None = None, label: bool = False) -> Volume:
    """Read, reorient, resample and normalise one NIfTI volume (labels: no normalisation,
    nearest-neighbour resampling). An image file with 4 axes is a multi-channel volume (last axis =
    channels, as MONAI reads NIfTI): see :func:`load_channels_file`."""
    pre = pre or Preprocessing()
    if not label:
        vol = load_channels_file(path, pre)
        if vol is not None:
            return vol
    img, can, arr = read_nifti(os.fspath(path))
    canonical_shape = tuple(int(s) for s in arr.shape)
    affine = np.asarray(can.affine, dtype=np.float64)
    if pre.spacing is not None:
        zooms = [float(z) for z in can.header.get_zooms()[:3]]
        new = resample(arr, zooms, pre.spacing, mode="nearest" if label else "trilinear")
        affine = _resampled_affine(affine, arr.shape, new.shape)
        arr = new
    if label:
        arr = np.rint(arr).astype(np.float32)
    else:
        arr = normalise(arr, pre)
    return Volume(
        path=os.fspath(path),
        data=arr,
        affine=affine,
        original_affine=np.asarray(img.affine, dtype=np.float64),
        original_shape=tuple(int(s) for s in img.shape[:3]),
        canonical_shape=canonical_shape,
        header=img.header,
    )


def to_original_grid(arr: np.ndarray, vol: Volume, label: bool = False) -> np.ndarray:
    """Undo resampling and canonical reorientation: map an array on ``vol.data``'s grid back onto
    the grid of the original file (so it can be saved with the original affine)."""
    import nibabel as nib

    if tuple(arr.shape) != tuple(vol.canonical_shape):
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
        mode = {"mode": "nearest"} if label else {"mode": "trilinear", "align_corners": False}
        arr = F.interpolate(t, size=tuple(vol.canonical_shape), **mode)[0, 0].numpy()
    orig = nib.io_orientation(vol.original_affine)
    canon = nib.orientations.axcodes2ornt(("R", "A", "S"))
    xform = nib.orientations.ornt_transform(canon, orig)
    return np.ascontiguousarray(nib.orientations.apply_orientation(arr, xform))


def save_like(arr: np.ndarray, vol: Volume, path: str, label: bool = False) -> None:
    """Save ``arr`` (on the canonical grid of ``vol``) as NIfTI with the input file's affine; a
    channel-first ``(C, X, Y, Z)`` array becomes a 4D file (last axis = channels)."""
    import nibabel as nib

    if arr.ndim == len(vol.canonical_shape) + 1:
        out = np.stack([to_original_grid(a, vol, label=label) for a in arr], axis=-1)
    else:
        out = to_original_grid(arr, vol, label=label)
    dtype = np.uint8 if label else np.float32
    img = nib.Nifti1Image(out.astype(dtype), vol.original_affine)
    img.header.set_xyzt_units("mm", "sec")
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp" + (".nii.gz" if path.endswith(".gz") else ".nii")
    nib.save(img, tmp)
    os.replace(tmp, path)


def pad_to(arr: np.ndarray, shape: Sequence[int], value: float = 0.0) -> tuple[np.ndarray, tuple]:
    """Pad (centred) to at least ``shape``; returns the array and the (before, after) pads."""
    pads = []
    for n, c in zip(arr.shape, shape, strict=True):
        extra = max(0, int(c) - n)
        pads.append((extra // 2, extra - extra // 2))
    if any(a or b for a, b in pads):
        arr = np.pad(arr, pads, mode="constant", constant_values=value)
    return arr, tuple(pads)


class VolumeCache:
    """In-memory cache of preprocessed volumes keyed by (path, preprocessing, label); ``loader`` reads
    one (``load_volume``; the 2D pipeline's also reads images)."""

    def __init__(self, dtype=np.float16, loader=None):
        self.dtype = dtype
        self.loader = loader or load_volume
        self._store: dict[tuple, Volume] = {}
        self.reads = 0

    def get(self, path, pre: Preprocessing, label: bool = False) -> Volume:
        """``path``: a NIfTI file or a :class:`Subject` (separate channel files)."""
        src = (path.paths, path.channels) if isinstance(path, Subject) else os.path.abspath(path)
        key = (src, repr(pre.to_dict()), label)
        v = self._store.get(key)
        if v is None:
            v = load_subject(path, pre) if isinstance(path, Subject) else self.loader(path, pre, label=label)
            self.reads += 1
            if not label and self.dtype is not None:
                v.data = v.data.astype(self.dtype)
            self._store[key] = v
        return v

    def __len__(self) -> int:
        return len(self._store)


def load_volumes(
    paths: Sequence[str],
    pre: Preprocessing | None = None,
    skip_bad: bool = False,
    cache: VolumeCache | None = None,
    log=print,
    channels: Sequence[str] | None = None,
    find=find_volumes,
) -> list[Volume]:
    """Load many volumes; a bad file raises :class:`VolumeError` unless ``skip_bad`` (then warns).

    ``channels``: names substituted for ``{channel}`` in ``paths`` (see :func:`image_sources`).
    ``find`` expands ``paths`` without channels (:func:`find_volumes`; the 2D pipeline's also finds
    images). All volumes must have the same number of channels (:func:`channel_count`)."""
    pre = pre or Preprocessing()
    cache = cache if cache is not None else VolumeCache()
    vols = []
    for p in image_sources(paths, channels, find=find):
        try:
            vols.append(cache.get(p, pre))
        except VolumeError as e:
            if not skip_bad:
                raise
            warnings.warn(f"skipping {e}", stacklevel=2)
            if log:
                log(f"warning: skipping {e}")
    if not vols:
        raise VolumeError("no usable volume among the given paths")
    channel_count(vols)
    return vols


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


def split_regions(shape: Sequence[int], val_fraction: float, cube: Sequence[int], axis: int = 2):
    """Split one volume along ``axis`` into a training and a validation box (validation = the last
    ``val_fraction``, at least one cube deep when possible)."""
    n = int(shape[axis])
    nv = int(round(n * val_fraction))
    nv = min(max(nv, min(int(cube[axis]), n // 2)), n - 1) if val_fraction > 0 else 0
    cut = n - nv
    train = [slice(None)] * 3
    val = [slice(None)] * 3
    train[axis] = slice(0, cut)
    val[axis] = slice(cut, n)
    return tuple(train), (tuple(val) if nv > 0 else None)


# ------------------------------------------------------------------------------------------------
# Multi-channel volumes: co-registered modalities (T1, T1ce, T2, FLAIR...) of one subject, either
# as separate files named by a ``{channel}`` pattern, or as one 4D file (last axis = channels).
# Each channel is resampled and normalised on its own (per-image min-max / percentiles work per
# modality), then they are stacked channel-first: (C, X, Y, Z).

CHANNEL_KEY = "{channel}"
# affines of co-registered files agree to float32 rounding; anything larger is another grid
AFFINE_ATOL = 1e-3


def channel_names(channels) -> tuple[str, ...] | None:
    """Validated channel names (None stays None); ``["t1,t2", "flair"]`` -> ``("t1", "t2", "flair")``."""
    if channels is None:
        return None
    if isinstance(channels, str):
        channels = [channels]
    names = tuple(n.strip() for c in channels for n in str(c).split(","))
    if not names or any(not n or "/" in n or os.sep in n for n in names):
        raise ValueError(f"channels: expected names such as t1 t1ce t2 flair, got {list(channels)}")
    if len(set(names)) != len(names):
        raise ValueError(f"channels: names must be distinct, got {list(names)}")
    return names


@dataclass(frozen=True)
class Subject:
    """One subject's channel files: ``paths[i]`` holds channel ``channels[i]``.

    ``name`` is the pattern with its wildcards filled and ``{channel}`` left in place (for example
    ``brats/BraTS_001/BraTS_001_{channel}.nii.gz``); errors name the subject by it."""

    name: str
    paths: tuple[str, ...]
    channels: tuple[str, ...]


def _pattern_regex(pattern: str, channel: str) -> re.Pattern:
    """A regex matching what ``glob`` matches for ``pattern`` with ``{channel}`` = ``channel``, one
    group per wildcard (``**``, ``*``, ``?``, ``[...]``): the groups identify the subject."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith(CHANNEL_KEY, i):
            out.append(re.escape(channel))
            i += len(CHANNEL_KEY)
        elif pattern.startswith("**/", i):  # zero or more folders, as glob(recursive=True)
            out.append("((?:[^/]*/)*)")
            i += 3
        elif pattern.startswith("**", i):
            out.append("(.*)")
            i += 2
        elif pattern[i] == "*":
            out.append("([^/]*)")
            i += 1
        elif pattern[i] == "?":
            out.append("([^/])")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            j = pattern.index("]", i + 2)
            body = pattern[i + 1 : j]
            out.append("([" + ("^" + body[1:] if body.startswith("!") else body) + "])")
            i = j + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _fill(pattern: str, groups: Sequence[str]) -> str:
    """``pattern`` with its wildcards replaced by ``groups`` (``{channel}`` kept)."""
    it = iter(groups)
    parts = re.split(r"(\{channel\}|\*\*/|\*\*|\*|\?|\[!?.[^\]]*\])", pattern)
    return "".join(p if (i % 2 == 0 or p == CHANNEL_KEY) else next(it, p) for i, p in enumerate(parts))


def find_subjects(patterns: Sequence[str], channels: Sequence[str]) -> list[Subject]:
    """Group channel files into subjects.

    Each pattern holds ``{channel}`` and may hold glob wildcards, e.g.
    ``'brats/*/*_{channel}.nii.gz'`` with channels ``t1 t1ce t2 flair``. The files of a subject
    are the ones whose wildcards match the same text for every channel.

    Raises:
        VolumeError: a pattern matches nothing, or a subject lacks a channel (one line naming
            the subject and the missing file).
        ValueError: a pattern without ``{channel}``.
    """
    names = channel_names(channels)
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    subjects: list[Subject] = []
    for pat in map(os.fspath, patterns):
        if CHANNEL_KEY not in pat:
            raise ValueError(
                f"{pat}: with channels, each path is a pattern holding {CHANNEL_KEY} "
                f"(for example sub*/{{channel}}.nii.gz); or give one 4D file per subject without channels"
            )
        found: dict[tuple[str, ...], dict[str, str]] = {}
        for c in names:
            rx = _pattern_regex(pat, c)
            for hit in glob.glob(pat.replace(CHANNEL_KEY, c), recursive=True):
                m = rx.match(hit)
                if m and os.path.isfile(hit):
                    found.setdefault(m.groups(), {})[c] = hit
        if not found:
            raise VolumeError(f"{pat}: no file for any channel ({', '.join(names)})")
        for key in sorted(found, key=lambda k: _fill(pat, k)):
            name, files = _fill(pat, key), found[key]
            missing = [c for c in names if c not in files]
            if missing:
                raise VolumeError(
                    f"subject {name}: missing channel {missing[0]} (no file {name.replace(CHANNEL_KEY, missing[0])})"
                )
            subjects.append(Subject(name, tuple(files[c] for c in names), names))
    return subjects


def image_sources(paths: Sequence[str], channels: Sequence[str] | None = None, find=find_volumes) -> list:
    """What to load: paths expanded by ``find`` (NIfTI: :func:`find_volumes`) without ``channels``,
    else :class:`Subject` s (:func:`find_subjects`). A ``{channel}`` pattern without channel names
    is an error."""
    if channels is None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        bad = [p for p in paths if CHANNEL_KEY in os.fspath(p)]
        if bad:
            raise ValueError(f"{bad[0]}: a {CHANNEL_KEY} pattern needs channel names (--channels t1 t2 ...)")
        return find(paths)
    return find_subjects(paths, channels)


def _stack_channels(
    arrays: Sequence[np.ndarray], names: Sequence[str], can, img, path: str, pre: Preprocessing
) -> Volume:
    """Resample and normalise each canonical (X, Y, Z) channel on its own, stack to (C, X, Y, Z)."""
    affine = np.asarray(can.affine, dtype=np.float64)
    canonical_shape = tuple(int(s) for s in arrays[0].shape)
    out = []
    for a in arrays:
        if pre.spacing is not None:
            zooms = [float(z) for z in can.header.get_zooms()[:3]]
            a = resample(a, zooms, pre.spacing)
        out.append(normalise(a, pre))
    if pre.spacing is not None:
        affine = _resampled_affine(affine, canonical_shape, out[0].shape)
    return Volume(
        path=path,
        data=np.stack(out),
        affine=affine,
        original_affine=np.asarray(img.affine, dtype=np.float64),
        original_shape=tuple(int(s) for s in img.shape[:3]),
        canonical_shape=canonical_shape,
        header=img.header,
        channel_names=tuple(names),
    )


def load_channels_file(path: str, pre: Preprocessing | None = None) -> Volume | None:
    """A 4D NIfTI file with several volumes as a (C, X, Y, Z) volume (channels named "0", "1", ...);
    None when the file holds a single volume (then it is read as usual)."""
    import nibabel as nib

    pre = pre or Preprocessing()
    path = os.fspath(path)
    try:
        hdr_shape = nib.load(path).shape if is_nifti(path) and os.path.isfile(path) else ()
    except Exception:  # noqa: BLE001 - unreadable: read_nifti gives the one-line error
        return None
    if len(hdr_shape) != 4 or hdr_shape[3] == 1:
        return None
    img, can, arr = read_nifti(path, channels=True)
    c = arr.shape[3]
    return _stack_channels([arr[..., k] for k in range(c)], [str(k) for k in range(c)], can, img, path, pre)


def load_subject(subject: Subject, pre: Preprocessing | None = None) -> Volume:
    """Read a subject's channel files into one (C, X, Y, Z) volume.

    Raises :class:`VolumeError` naming the subject when a channel file is missing or unreadable,
    or when the channels disagree in (canonical) shape or affine (they must be co-registered)."""
    pre = pre or Preprocessing()
    arrays, first = [], None
    for c, p in zip(subject.channels, subject.paths, strict=True):
        try:
            img, can, arr = read_nifti(p)
        except VolumeError as e:
            raise VolumeError(f"subject {subject.name}: channel {c}: {e}") from None
        if first is None:
            first = (c, img, can, arr.shape)
        else:
            c0, _, can0, shape0 = first
            if arr.shape != shape0:
                raise VolumeError(
                    f"subject {subject.name}: channel {c} has shape {arr.shape}, channel {c0} "
                    f"{shape0} (channels must be co-registered)"
                )
            diff = float(np.abs(np.asarray(can.affine) - np.asarray(can0.affine)).max())
            if diff > AFFINE_ATOL:
                raise VolumeError(
                    f"subject {subject.name}: channel {c} affine differs from channel {c0}'s "
                    f"(by up to {diff:.3g}; channels must be co-registered)"
                )
        arrays.append(arr)
    _, img, can, _ = first
    return _stack_channels(arrays, subject.channels, can, img, subject.name, pre)


def load_image(source, pre: Preprocessing | None = None) -> Volume:
    """Load a NIfTI path (3D, or 4D = channels) or a :class:`Subject`."""
    return load_subject(source, pre) if isinstance(source, Subject) else load_volume(source, pre)


def channel_count(volumes: Sequence[Volume]) -> int:
    """The common number of channels of ``volumes``; :class:`VolumeError` naming the first volume
    that differs."""
    c = volumes[0].channels
    for v in volumes[1:]:
        if v.channels != c:
            raise VolumeError(f"{v.path}: {v.channels} channel(s), but {volumes[0].path} has {c}")
    return c


# ----------------------------------------------------------------------------------------------
# fine-tuning splits that keep foreground (labels) or every class in validation

AXIS_NAMES = "xyz"


class SplitError(ValueError):
    """No train/validation split holds what is being learned (one line: why, and what to pass)."""


@dataclass
class VolumeSplit:
    """A spatial split of one volume: ``train`` and ``val`` boxes (tuples of slices) along ``axis``,
    ``gap`` voxels between them that neither uses, and the foreground voxels each side holds."""

    axis: int
    train: tuple[slice, slice, slice]
    val: tuple[slice, slice, slice]
    gap: int
    train_fg: int
    val_fg: int

    def describe(self) -> str:
        a = AXIS_NAMES[self.axis]
        t, v = self.train[self.axis], self.val[self.axis]
        return f"{a} {v.start}..{v.stop - 1} (training {a} {t.start}..{t.stop - 1}, gap {self.gap})"


def _box(axis: int, lo: int, hi: int) -> tuple[slice, slice, slice]:
    s = [slice(None)] * 3
    s[axis] = slice(int(lo), int(hi))
    return tuple(s)


def lookalike_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Voxels that look like the structure: intensity (channel 0) within the 10th..90th percentile
    of the labelled voxels' intensities. A split compares the label's share of these on each side."""
    img = np.asarray(image, dtype=np.float32)
    img = img[0] if img.ndim == 4 else img
    m = np.asarray(mask) > 0
    if not m.any():
        return m
    lo, hi = np.percentile(img[m], [10, 90])
    return (img >= lo) & (img <= hi)


# a cut is "comparable" when the label's share of the lookalike voxels differs by at most this
# factor between the two sides (validation neither mostly unlabelled lookalikes nor mostly label)
LOOKALIKE_RATIO = 2.0


def split_one_volume(
    mask: np.ndarray,
    cube: Sequence[int],
    val_fraction: float,
    name: str = "the label",
    image: np.ndarray | None = None,
) -> VolumeSplit:
    """Cut one labelled volume into a training and a validation box that both hold foreground.

    Axes are tried longest first; on an axis of length ``n`` with cube side ``c`` the validation box
    is either end of the volume, separated from the training box by a gap of ``c`` voxels (adjacent
    slices are nearly copies of each other, so the gap keeps validation from scoring memorised
    anatomy) and the training box is at least ``c`` deep (whole training cubes). A cut is workable
    when each side keeps at least half its share of the foreground (validation ``val_fraction / 2``
    of it, training ``(1 - val_fraction) / 2``): a cut that leaves a few voxels on one side would
    validate, or train, on noise. Among the workable cuts the one whose validation share of the kept
    foreground is closest to ``val_fraction`` wins (ties: validation at the high end, as before).

    With ``image``, cuts whose two sides are comparable come first: on each side the label's share
    of the voxels that look like it (:func:`lookalike_mask`) is within :data:`LOOKALIKE_RATIO` of
    the other side's. Without it a side can hold the structure's lookalikes but little of the
    structure (the bundled CT's pelvis: 8% of the bone-like voxels there are vertebra, 62% in the
    lumbar spine), so validation scores a task training never showed.

    Args:
        mask: ``(X, Y, Z)`` foreground mask (0/1).
        cube: training cube ``(x, y, z)``.
        val_fraction: wanted share of the foreground in validation, in (0, 1).
        name: the label file, for the error message.
        image: the image ``(X, Y, Z)`` or ``(C, X, Y, Z)`` on the mask's grid (None: foreground only).

    Raises:
        SplitError: no foreground, or no cut on any axis leaves foreground on both sides.
    """
    m = np.asarray(mask) > 0
    total = int(m.sum())
    if total == 0:
        raise SplitError(f"{name}: no foreground voxels, nothing to learn or validate (check --labels/--label-values)")
    min_va, min_tr = max(1.0, total * val_fraction / 2), max(1.0, total * (1 - val_fraction) / 2)
    look = lookalike_mask(image, m) if image is not None else None

    def incomparable(fg_tr: int, lk_tr: int, fg_va: int, lk_va: int) -> bool:
        if look is None:
            return False
        ratio = (fg_va / max(lk_va, 1)) / max(fg_tr / max(lk_tr, 1), 1e-12)
        return not 1.0 / LOOKALIKE_RATIO <= ratio <= LOOKALIKE_RATIO

    best, best_key = None, None
    for pref, axis in enumerate(sorted(range(3), key=lambda a: -m.shape[a])):
        n, c = m.shape[axis], int(cube[axis])
        others = tuple(a for a in range(3) if a != axis)
        cum = np.concatenate([[0], np.cumsum(m.sum(axis=others).astype(np.int64))])  # cum[k]: foreground in [0, k)
        lk = np.concatenate([[0], np.cumsum(look.sum(axis=others).astype(np.int64))]) if look is not None else cum
        g = c
        # validation at the high end: train [0, t), val [t + g, n)
        for t in range(c, n - g):
            tr, va = int(cum[t]), int(cum[n] - cum[t + g])
            if tr >= min_tr and va >= min_va:
                bad = incomparable(tr, int(lk[t]), va, int(lk[n] - lk[t + g]))
                key = (bad, pref, abs(va / (tr + va) - val_fraction), 0)
                if best_key is None or key < best_key:
                    best, best_key = VolumeSplit(axis, _box(axis, 0, t), _box(axis, t + g, n), g, tr, va), key
        # validation at the low end: val [0, v), train [v + g, n)
        for v in range(1, n - g - c + 1):
            va, tr = int(cum[v]), int(cum[n] - cum[v + g])
            if tr >= min_tr and va >= min_va:
                bad = incomparable(tr, int(lk[n] - lk[v + g]), va, int(lk[v]))
                key = (bad, pref, abs(va / (tr + va) - val_fraction), 1)
                if best_key is None or key < best_key:
                    best, best_key = VolumeSplit(axis, _box(axis, v + g, n), _box(axis, 0, v), g, tr, va), key
        if best is not None and not best_key[0]:  # the longest axis with a comparable cut
            return best
    if best is not None:  # no comparable cut anywhere: the best of the others
        return best
    nz = np.argwhere(m)
    span = ", ".join(f"{AXIS_NAMES[a]} {nz[:, a].min()}..{nz[:, a].max()}" for a in range(3))
    raise SplitError(
        f"{name}: no split of this single volume keeps enough foreground on both sides of a one-cube gap "
        f"(foreground spans {span} in a {'x'.join(map(str, m.shape))} volume, cube {' '.join(map(str, cube))}); "
        "pass a labelled validation volume with --val-images/--val-labels, or a smaller --cube"
    )


def choose_validation_volumes(
    fg_voxels: Sequence[int], val_fraction: float, names: Sequence[str]
) -> tuple[list[int], list[int]]:
    """Hold out whole volumes so that validation and training both have foreground.

    ``round(n * val_fraction)`` volumes (at least 1, at most n - 1) are held out, taken from the end
    of the list (the previous behaviour when every volume has foreground) but starting with the last
    volume that has foreground and never taking the last one left for training.

    Args:
        fg_voxels: foreground voxels of each label volume.
        val_fraction: share of volumes held out, in (0, 1).
        names: the label files, for the error message.

    Returns:
        ``(train indices, validation indices)``, each ascending.

    Raises:
        SplitError: fewer than two volumes have foreground.
    """
    n = len(fg_voxels)
    with_fg = [i for i in range(n) if fg_voxels[i] > 0]
    if len(with_fg) < 2:
        which = f"only {os.path.basename(names[with_fg[0]])}" if with_fg else "none"
        raise SplitError(
            f"{which} of the {n} label volumes has foreground, and training and validation both need "
            "some: pass a labelled validation volume with --val-images/--val-labels"
        )
    nv = min(max(1, int(round(n * val_fraction))), n - 1)
    val = [with_fg[-1]]
    fg_left = len(with_fg) - 1
    for i in reversed(range(n)):
        if len(val) == nv:
            break
        if i in val or (fg_voxels[i] > 0 and fg_left == 1):
            continue
        val.append(i)
        fg_left -= fg_voxels[i] > 0
    val = sorted(val)
    return [i for i in range(n) if i not in val], val


def stratified_split(
    classes: Sequence[int], val_fraction: float, generator: torch.Generator
) -> tuple[list[int], list[int]]:
    """Hold out ``round(n_c * val_fraction)`` random cases of every class ``c`` (at least 1, at most
    ``n_c - 1``), so that validation and training both see every class.

    Returns:
        ``(train indices, validation indices)``, each ascending.

    Raises:
        SplitError: a class has a single case (it cannot be on both sides).
    """
    train, val = [], []
    for c in sorted(set(classes)):
        idx = [i for i, y in enumerate(classes) if y == c]
        if len(idx) < 2:
            raise SplitError(
                f"class {c} has {len(idx)} case, so validation would miss it (or training would): "
                "add cases of it, or pass --val-images/--val-labels or --val-csv with every class"
            )
        perm = torch.randperm(len(idx), generator=generator).tolist()
        nv = min(max(1, int(round(len(idx) * val_fraction))), len(idx) - 1)
        val += [idx[k] for k in perm[:nv]]
        train += [idx[k] for k in perm[nv:]]
    return sorted(train), sorted(val)
