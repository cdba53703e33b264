"""Whole-volume inference: overlapping windows (:func:`sliding_window`) and the ``predict`` command's
:func:`predict_volume` (checkpoint in, NIfTI out)."""

from __future__ import annotations

import os
import time
from typing import Any
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from . import data
from . import data2d
from .engine import amp_dtype, autocast
from .config import check_cube
from .checkpoint import inspect_checkpoint, load_model, read_checkpoint
from .model import GenesisClassifier
from .utils import UsageError, resolve_device

# window size for weights that do not record their training cube (the published ones: the paper's)
PUBLISHED_CUBE = (64, 64, 32)
# 2D checkpoints always record their patch; this is only the fallback of a bare 2D state dict
DEFAULT_PATCH_2D = (64, 64)


def window_starts(n: int, c: int, stride: int) -> list[int]:
    """Start offsets of windows of size ``c`` with ``stride`` along an axis of length ``n``; the last
    window ends at ``n`` exactly (so every voxel is covered). ``[0]`` when ``n <= c``."""
    if n <= c:
        return [0]
    s = list(range(0, n - c + 1, stride))
    if s[-1] != n - c:
        s.append(n - c)
    return s


@torch.no_grad()
def sliding_window(
    model: nn.Module,
    volume: np.ndarray,
    cube: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 4,
    device: Any = "cpu",
    amp: bool = True,
    fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    all_channels: bool = False,
) -> np.ndarray:
    """Apply ``model`` to a whole volume in overlapping cubes and average the overlaps.

    Args:
        model: maps ``(B, C_in, *cube)`` to ``(B, C, *cube)``; run in eval mode (its mode is restored).
        volume: ``(X, Y, Z)`` array, or ``(C_in, X, Y, Z)`` for a multi-channel model. Volumes
            smaller than ``cube`` are padded with 0 and cropped back.
        cube: window size ``(x, y, z)``.
        overlap: fraction in [0, 1) by which neighbouring windows overlap.
        batch_size: windows per forward pass.
        device: where the model runs; amp: mixed precision there (CUDA only).
        fn: ``fn(model, batch)`` giving per-voxel outputs (default ``model(batch)``).
        all_channels: return every output channel instead of channel 0.

    Returns:
        ``(X, Y, Z)`` float32 array: channel 0 of the output (``(C, X, Y, Z)`` with
        ``all_channels``), averaged over the windows covering each voxel.
    """
    device = torch.device(device)
    dtype = amp_dtype(device, amp)
    cube = tuple(int(c) for c in cube)
    vol = data.channels_first(np.asarray(volume, dtype=np.float32), len(cube))
    vol, pads = data.pad_to(vol, (vol.shape[0],) + cube, 0.0)
    spatial = vol.shape[1:]
    stride = [max(1, int(round(c * (1 - overlap)))) for c in cube]
    starts = [window_starts(n, c, s) for n, c, s in zip(spatial, cube, stride, strict=True)]
    acc = None  # (output channels kept, *spatial), sized by the first output
    cnt = np.zeros(spatial, dtype=np.float32)
    coords = [(a, b, c) for a in starts[0] for b in starts[1] for c in starts[2]]
    was_training = model.training
    model.eval()
    fn = fn or (lambda m, x: m(x))
    t = torch.from_numpy(vol)
    for i in range(0, len(coords), batch_size):
        chunk = coords[i : i + batch_size]
        batch = torch.stack([t[:, a : a + cube[0], b : b + cube[1], c : c + cube[2]] for a, b, c in chunk])
        with autocast(device, dtype):
            out = fn(model, batch.to(device))
        out = (out if all_channels else out[:, :1]).float().cpu().numpy()
        if acc is None:
            acc = np.zeros((out.shape[1],) + spatial, dtype=np.float32)
        for (a, b, c), o in zip(chunk, out, strict=True):
            acc[:, a : a + cube[0], b : b + cube[1], c : c + cube[2]] += o
            cnt[a : a + cube[0], b : b + cube[1], c : c + cube[2]] += 1
    model.train(was_training)
    res = acc / np.maximum(cnt, 1)
    sl = (slice(None),) + tuple(slice(p0, n - p1) for (p0, p1), n in zip(pads[1:], spatial, strict=True))
    return res[sl] if all_channels else res[sl][0]


def predict_volume(
    weights: str,
    input_path: str,
    output_path: str,
    device: str = "auto",
    threshold: float | None = 0.5,
    overlap: float = 0.5,
    batch_size: int = 4,
    cube: Sequence[int] | None = None,
    amp: bool = True,
    channels: Sequence[str] | None = None,
    png: str | None = None,
) -> dict[str, Any]:
    """Whole-volume sliding-window inference; writes a NIfTI on the input's grid and affine.

    A 2D checkpoint (:class:`UNet2D`) runs slice by slice over a NIfTI volume (axial slices), or
    over a PNG/JPEG image, and then writes an 8-bit PNG (mask 0/255, or the [0, 1] result x 255).

    Args:
        weights: a checkpoint: ours (segmentation or pretraining) or the published format.
        input_path: NIfTI volume (a 4D file for a multi-channel model), or a pattern holding
            ``{channel}`` naming one subject's channel files; the checkpoint's preprocessing is
            applied to it (to each channel on its own). A 2D checkpoint also takes an image.
        output_path: ``.nii`` or ``.nii.gz`` to write (``.png`` for an image input).
        device: ``auto``, ``cpu`` or ``cuda``.
        threshold: segmentation checkpoints give a uint8 mask ``prob >= threshold``; None writes
            float probabilities. Pretraining and published weights give the restored [0, 1] volume.
        overlap, batch_size: see :func:`sliding_window`.
        cube: window size (default: the training cube stored in the checkpoint, else
            :data:`PUBLISHED_CUBE`).
        amp: mixed precision on CUDA.
        channels: names substituted for ``{channel}`` in ``input_path`` (default: the channels the
            checkpoint was trained on).
        png: also write this picture: a few axial slices of the input (channel 0) with the mask
            overlaid (segmentation), or input beside output (restoration).

    Returns:
        ``{"output", "kind", "shape" (of the input file), "time_s", "mask" (bool)}``.
    """
    dev = resolve_device(device)
    obj = read_checkpoint(weights)
    model = load_model(obj, map_location="cpu", source=weights)
    if isinstance(model, GenesisClassifier):
        raise UsageError(f"{weights}: a classification checkpoint; predict needs a U-Net (segmentation or pretraining)")
    info = inspect_checkpoint(obj, source=weights)
    kind = info.kind
    pre = data.Preprocessing.from_dict(info.preprocessing)
    if cube is None:
        cube = info.cube or (DEFAULT_PATCH_2D if model.dims == 2 else PUBLISHED_CUBE)
    if len(cube) != model.dims:
        raise UsageError(f"--cube: a {model.dims}D checkpoint needs {model.dims} sizes, got {' '.join(map(str, cube))}")
    if not 0 <= overlap < 1:
        raise UsageError(f"--overlap: expected a fraction in [0, 1), got {overlap}")
    if threshold is not None and not 0 <= threshold <= 1:
        raise UsageError(f"--threshold: expected a value in [0, 1], got {threshold}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"--batch-size: expected a positive integer, got {batch_size!r}")
    check_cube(tuple(cube), model.dims)
    image = model.dims == 2 and data2d.is_image(input_path)
    if image and not data2d.is_image(output_path):
        raise UsageError(f"--output: a 2D image input gives a PNG, got {output_path}")
    if os.path.isdir(output_path):
        raise UsageError(f"--output {output_path}: is a folder; give the file to write (.nii or .nii.gz)")
    if not image and not data.is_nifti(output_path):
        raise UsageError(f"--output {output_path}: expected a .nii or .nii.gz file name")
    if model.dims == 2 and data.channel_names(channels) is not None:
        raise UsageError(data2d.SINGLE_CHANNEL_2D)
    vol = _load_input(
        input_path,
        pre,
        channels,
        info,
        model.in_channels,
        weights,
        load=data2d.load_input if model.dims == 2 else data.load_volume,
    )
    model.to(dev)
    t0 = time.perf_counter()
    seg = kind.startswith("finetune-segmentation")
    # a multi-channel restoration model restores every channel: written as a 4D file
    prob = sliding_window(
        model,
        vol.data,
        data2d.sampling_cube(cube),
        overlap,
        batch_size,
        dev,
        amp,
        fn=data2d.per_slice if model.dims == 2 else None,
        all_channels=not seg,
    )
    if prob.shape[0] == 1 and not seg:
        prob = prob[0]
    if image:
        data2d.save_image(
            prob[:, :, 0] >= threshold if seg and threshold is not None else prob[:, :, 0],
            output_path,
            mask=bool(seg and threshold is not None),
        )
    elif seg and threshold is not None:
        data.save_like((prob >= threshold).astype(np.uint8), vol, output_path, label=True)
    else:
        data.save_like(prob.astype(np.float32), vol, output_path, label=False)
    if png:
        _picture(
            vol, prob, seg, threshold, png, title=f"{os.path.basename(input_path)} -> {os.path.basename(output_path)}"
        )
    return {
        "output": output_path,
        "kind": kind,
        "shape": vol.original_shape,
        "time_s": time.perf_counter() - t0,
        "mask": bool(seg and threshold is not None),
    }


def _load_input(input_path: str, pre, channels, info, in_channels: int, weights: str, load=data.load_volume):
    """The input volume of :func:`predict_volume`: a file read by ``load`` (2D: also an image), or
    one subject's ``{channel}`` files (channel names from ``channels``, else those the checkpoint was
    trained on); its channel count must be the model's."""
    names = data.channel_names(channels)
    if names is None and data.CHANNEL_KEY in input_path:
        names = data.channel_names(info.channels)
        if names is None:
            raise UsageError(
                f"--input {input_path}: a {data.CHANNEL_KEY} pattern needs --channels (the checkpoint records none)"
            )
    if names is not None:
        subjects = data.find_subjects([input_path], names)
        if len(subjects) != 1:
            raise UsageError(f"--input {input_path}: expected one subject, the pattern matches {len(subjects)}")
        vol = data.load_subject(subjects[0], pre)
    else:
        vol = load(input_path, pre)
    if vol.channels != in_channels:
        raise UsageError(
            f"--input {input_path}: {vol.channels} channel(s), but the model of {weights} takes {in_channels}"
        )
    return vol


def _picture(vol, prob: np.ndarray, seg: bool, threshold: float | None, path: str, title: str) -> None:
    """``predict --png``: slices of the input with the mask overlaid (segmentation; probabilities
    are shown as the 0.5 mask), else the input beside the restored output (channel 0)."""
    from . import plots

    img = vol.data[0] if vol.data.ndim == 4 else vol.data
    out = prob[0] if prob.ndim == 4 else prob
    if seg:
        mask = out >= (0.5 if threshold is None else threshold)
        cols = [("input", None, None), ("prediction", mask, None)]
        plots.segmentation_grid(img, cols, plots.pick_slices(mask, 3), path, title=title)
    else:
        ks = plots.pick_slices(np.zeros(img.shape, bool), 2)
        ims = [a[:, :, k] for k in ks for a in (img, out)]
        names = [f"{n} z {k}" for k in ks for n in ("input", "output")]
        plots.panels(ims, names, path, title=title)
