"""Reading volume files: finding them, reading one into the canonical (RAS) orientation, and
writing results back onto the original grid.

Arrays keep the canonical axis order ``(X, Y, Z)`` = the paper's rows x cols x depth.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

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
