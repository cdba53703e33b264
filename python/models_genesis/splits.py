"""Training / validation splits: spatial boxes of one volume, held-out volumes that keep
foreground, and class-stratified case splits."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import SplitError  # noqa: F401  (raised here, importable from here)


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


# fine-tuning splits that keep foreground (labels) or every class in validation

AXIS_NAMES = "xyz"


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
