"""Memory estimates made before any work, so that an absurd ``--width`` or ``--spacing`` stops with
one line naming the flag and the estimate instead of an allocation error after minutes of loading.

The estimates are lower bounds (they leave out allocator slack, workspace and the data cache): a
run refused here could not have run; one accepted may still be too large.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from .errors import UsageError

# float32 copies of every parameter a training step holds: weights, gradients, Adam's two moments
_PARAM_COPIES = 4
# float32 activations kept for backward per voxel and first-layer channel: a lower bound, since the
# U-Net's full-resolution layers alone (two convolutions and normalisations of the first encoder
# block, the up-convolution, concatenation and two convolutions of the last decoder block) keep
# about 24 of them
_ACTIVATIONS_PER_VOXEL_AND_WIDTH = 16
# a resampled volume is built from a float copy of the original and interpolated into a new one
_RESAMPLE_COPIES = 2


def memory_bytes(device: torch.device) -> int | None:
    """Total memory of ``device`` (physical RAM for the CPU), None when unknown."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError, RuntimeError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def parameter_count(build, **kwargs) -> int:
    """Parameters of the model ``build(**kwargs)`` would make, counted on the meta device (no memory)."""
    with torch.device("meta"):
        m = build(**kwargs)
    return sum(p.numel() for p in m.parameters())


def check_training_memory(
    device: torch.device, build, width: int, batch_size: int, cube: Sequence[int], flag: str = "--width", **kwargs
) -> None:
    """UsageError naming ``flag`` when training ``build(width=width, **kwargs)`` on ``batch_size``
    cubes of ``cube`` needs more than ``device``'s memory."""
    total = memory_bytes(device)
    if total is None:
        return
    voxels = 1
    for s in cube:
        voxels *= int(s)
    acts = 4.0 * _ACTIVATIONS_PER_VOXEL_AND_WIDTH * batch_size * voxels * width
    if acts > total:  # already too large: no need to count the parameters
        need = acts
    else:
        need = acts + 4.0 * _PARAM_COPIES * parameter_count(build, width=width, **kwargs)
    if need > total:
        raise UsageError(
            f"{flag} {width}: training needs at least {_gib(need)} (weights, gradients, optimiser state and "
            f"activations of {batch_size} cube(s) of {'x'.join(map(str, cube))}), more than the {_gib(total)} "
            f"of memory on {device}"
        )


def check_resampled_size(sources: Sequence[str] | None, spacing: Sequence[float] | None) -> None:
    """UsageError naming ``--spacing`` when resampling a NIfTI file of ``sources`` (files, folders,
    patterns) to ``spacing`` needs more than the machine's memory (estimated from the headers; other
    files are skipped, and sources the loader will reject are left for it to name)."""
    device_cpu_total = memory_bytes(torch.device("cpu"))
    if spacing is None or device_cpu_total is None or not sources:
        return
    from . import data

    try:
        paths = data.find_volumes(list(sources))
    except Exception:  # noqa: BLE001 - the loader reports bad sources by name
        return
    try:
        import nibabel as nib
    except ImportError:  # pragma: no cover
        return
    for p in paths:
        p = os.fspath(p)
        if not p.endswith((".nii", ".nii.gz")):
            continue
        try:
            img = nib.load(p)
            shape, zooms = img.shape[:3], img.header.get_zooms()[:3]
            extra = int(img.shape[3]) if len(img.shape) > 3 else 1
        except Exception:  # noqa: BLE001 - an unreadable file is reported by the loader, by name
            continue
        voxels = float(extra)
        for n, z, s in zip(shape, zooms, spacing, strict=True):
            voxels *= max(1.0, n * float(z) / float(s))
        need = 4.0 * _RESAMPLE_COPIES * voxels
        if need > device_cpu_total:
            raise UsageError(
                f"--spacing {' '.join(f'{s:g}' for s in spacing)}: {p} would be resampled to about "
                f"{voxels:,.0f} voxels, at least {_gib(need)}, more than the {_gib(device_cpu_total)} of memory"
            )
