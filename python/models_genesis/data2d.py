"""2D inputs: PNG/JPEG images (through Pillow) and axial slices of NIfTI volumes.

A 2D input is held as a :class:`data.Volume` whose ``data`` is ``(X, Y, Z)``: a NIfTI volume as
:func:`data.load_volume` reads it (its Z axial slices are the 2D images), an image as
``(rows, cols, 1)``. A 2D patch ``(px, py)`` is then the 3D cube ``(px, py, 1)`` with its last axis
dropped, so the 3D samplers (:class:`data.CubeSampler`, :class:`data.PairSampler`), the region
split and the sliding window serve 2D unchanged; this module holds only what differs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from . import data
from .atomic import replacing
from .utils import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# multi-channel 2D (a (C, X, Y) patch through the (px, py, 1) trick) is not wired through the 2D
# loaders and previews; refused in one line rather than silently using channel 0
SINGLE_CHANNEL_2D = (
    "--dims 2 takes single-channel inputs only (no --channels, no multi-channel 4D NIfTI); "
    "use --dims 3 for multi-channel inputs"
)


def is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_SUFFIXES)


def is_input_2d(path: str) -> bool:
    """A file the 2D pipeline reads: an image or a NIfTI volume (whose axial slices are used)."""
    return is_image(path) or data.is_nifti(path)


def find_inputs(paths: Sequence[str]) -> list[str]:
    """:func:`data.find_volumes` for 2D: files, folders and patterns of images and NIfTI volumes."""
    return data.find_volumes(paths, accept=is_input_2d, kinds=".png/.jpg/.jpeg/.nii/.nii.gz")


def _pillow():
    try:
        from PIL import Image
    except ImportError:  # matplotlib depends on Pillow, so this is rare
        raise data.VolumeError("reading PNG/JPEG images needs Pillow: pip install pillow") from None
    return Image


def read_image(path: str, label: bool = False) -> np.ndarray:
    """A 2D image as float32 ``(rows, cols)``.

    Images are scaled to [0, 1] by their bit depth (8-bit / 255, 16-bit / 65535; colour is
    converted to luminance); labels keep their integer values (palette indices for palette PNGs).
    One-line :class:`data.VolumeError` naming the file on any failure.
    """
    Image = _pillow()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise data.VolumeError(f"{path}: no such file")
    if not is_image(path):
        raise data.VolumeError(f"{path}: not a PNG/JPEG image")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if label:
                arr = np.asarray(img if mode in ("1", "L", "P", "I;16", "I") else img.convert("L"))
            elif mode in ("I;16", "I;16B", "I;16L"):
                arr = np.asarray(img, dtype=np.float32) / 65535.0
            elif mode == "I":  # 32-bit integer: no fixed range, scale by the image's own max
                arr = np.asarray(img, dtype=np.float32)
                arr = arr / max(float(arr.max()), 1.0)
            elif mode == "F":
                arr = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
            else:
                arr = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except data.VolumeError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises many types for corrupt files
        raise data.VolumeError(f"{path}: cannot read image ({data._one_line(e)})") from None
    if arr.ndim != 2 or arr.size == 0:
        raise data.VolumeError(f"{path}: expected a 2D image, got shape {arr.shape}")
    return np.asarray(arr, dtype=np.float32)


def load_input(path: str, pre: data.Preprocessing | None = None, label: bool = False) -> data.Volume:
    """One 2D input as a :class:`data.Volume`: an image as ``(rows, cols, 1)`` (the preprocessing
    options are for NIfTI and do not apply), a NIfTI volume as :func:`data.load_volume` reads it."""
    path = os.fspath(path)
    if not is_image(path):
        vol = data.load_volume(path, pre, label=label)
        if vol.channels > 1:  # a UsageError, not a VolumeError: --skip-bad must not skip it silently
            raise UsageError(f"{path}: {vol.channels} channels; {SINGLE_CHANNEL_2D}")
        return vol
    arr = read_image(path, label=label)
    if label:
        arr = np.rint(arr)
    shape = (int(arr.shape[0]), int(arr.shape[1]), 1)
    eye = np.eye(4)
    return data.Volume(
        path=path, data=arr[:, :, None], affine=eye, original_affine=eye, original_shape=shape, canonical_shape=shape
    )


def load_inputs(
    paths: Sequence[str], pre: data.Preprocessing | None = None, skip_bad: bool = False, log=print
) -> list[data.Volume]:
    """:func:`data.load_volumes` for 2D inputs (images and NIfTI volumes), float16 in memory."""
    return data.load_volumes(
        paths, pre, skip_bad=skip_bad, cache=data.VolumeCache(loader=load_input), log=log, find=find_inputs
    )


def sampling_cube(cube: Sequence[int]) -> tuple[int, ...]:
    """The 3D cube the samplers cut: ``(px, py, 1)`` for a 2D patch, the cube itself in 3D."""
    c = tuple(int(s) for s in cube)
    return c + (1,) if len(c) == 2 else c


def drop_slice_axis(batch: torch.Tensor, dims: int) -> torch.Tensor:
    """``(B, C, px, py, 1)`` -> ``(B, C, px, py)`` for 2D; 3D batches unchanged."""
    return batch[..., 0] if dims == 2 else batch


def per_slice(model, x: torch.Tensor) -> torch.Tensor:
    """``fn`` for :func:`inferers.sliding_window` with a 2D model over ``(px, py, 1)`` windows."""
    return model(x[..., 0])[..., None]


def split_axis(shape: Sequence[int], dims: int) -> int:
    """Axis along which a single input is split into training and validation: the slices (Z) of a
    volume, the columns of a single 2D image."""
    return 2 if dims == 3 or shape[2] > 1 else 1


def save_image(arr: np.ndarray, path: str, mask: bool) -> None:
    """Write a ``(rows, cols)`` result as an 8-bit grayscale PNG (atomically): a mask as 0/255, a
    [0, 1] image scaled to 0..255."""
    Image = _pillow()
    a = np.asarray(arr, dtype=np.float32)
    out = np.where(a > 0, 255, 0) if mask else np.rint(np.clip(a, 0.0, 1.0) * 255.0)
    with replacing(path, os.path.splitext(path)[1] or ".png") as tmp:
        Image.fromarray(out.astype(np.uint8)).save(tmp)
