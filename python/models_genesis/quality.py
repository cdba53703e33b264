"""Checks on the training data after preprocessing: a volume the settings destroyed (every voxel
clipped to one value, NaN throughout) would otherwise train without a word on a constant."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .errors import VolumeError

# a preprocessed volume spans [0, 1]; one whose values stay within this is (near-)constant
CONSTANT_RANGE = 1e-3
# fewer distinct values than this in a CT-windowed image looks like a label map passed as an image
FEW_VALUES = 16


def check_intensities(
    arrays: Sequence[tuple[str, np.ndarray]], warn: Callable[[str], None], modality: str = "ct"
) -> None:
    """Raise :class:`VolumeError` naming the file when a preprocessed array holds NaN or infinite
    voxels; ``warn`` once per file that is (near-)constant or, for CT, has only a handful of
    distinct values (a label map given as an image)."""
    for name, a in arrays:
        a = np.asarray(a)
        finite = np.isfinite(a)
        if not finite.all():
            n = int(a.size - finite.sum())
            raise VolumeError(
                f"{name}: {n} of {a.size} voxels are NaN or infinite after preprocessing; fix or mask the file"
            )
        lo, hi = float(a.min()), float(a.max())
        if hi - lo < CONSTANT_RANGE:
            warn(
                f"warning: {name}: constant after preprocessing (every voxel {lo:.4g}); check --modality, "
                "--hu-window and that this is an image"
            )
            continue
        if modality == "ct":
            sample = a.reshape(-1)[:: max(1, a.size // 200_000)]
            n = len(np.unique(sample))
            if n < FEW_VALUES:
                warn(
                    f"warning: {name}: only {n} distinct values after preprocessing; a label map rather "
                    "than a CT? (check --data / --images)"
                )


def check_store_intensities(entries: Sequence[dict], pre, warn: Callable[[str], None]) -> None:
    """``warn`` once per store volume that the run's normalisation makes (near-)constant, from
    the channel statistics the store keeps (no voxel is read): a CT whose values all lie outside
    ``--hu-window`` on one side, an MR volume with no spread; and a CT with fewer than
    :data:`FEW_VALUES` distinct values (a label map given as an image; stores written before this
    statistic existed are not checked for it). A volume with no finite voxel never reaches a store
    (the readers refuse it)."""
    for e in entries:
        name = e.get("source", e.get("key", "volume"))
        for stats in e.get("stats", []):
            lo, hi = float(stats["min"]), float(stats["max"])
            if pre.modality == "ct":
                w0, w1 = pre.hu_window
                spread = (min(max(hi, w0), w1) - min(max(lo, w0), w1)) / (w1 - w0)
            else:
                spread = 1.0 if hi > lo else 0.0
            if spread < CONSTANT_RANGE:
                warn(
                    f"warning: {name}: constant after preprocessing (values {lo:.4g} to {hi:.4g}); check "
                    "--modality, --hu-window and that this is an image"
                )
                break
            n = stats.get("distinct_sampled")
            if pre.modality == "ct" and n is not None and n < FEW_VALUES:
                warn(
                    f"warning: {name}: only {n} distinct values; a label map rather than a CT? "
                    "(check --data / --images)"
                )
                break
