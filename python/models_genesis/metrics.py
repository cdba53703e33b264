"""Validation metrics: Dice and IoU of binary masks, ROC AUC of scores (NumPy, CPU); the surface
distance of masks in mm (torch, any device); and :func:`evaluate_files`, the ``evaluate`` command."""

from __future__ import annotations

import math
import os
from typing import Any
from collections.abc import Sequence

import numpy as np
import torch

from .errors import UsageError


class DiceIoU:
    """Dice and IoU pooled over any number of (prediction, truth) mask pairs.

    Counts (intersection, sizes, union) are summed over the pairs, so the result is the Dice of
    all voxels together, not a mean of per-volume scores. With both masks empty everywhere, Dice
    and IoU are 1.0 (nothing to find, nothing found).
    """

    def __init__(self):
        self.inter = self.pred_sum = self.truth_sum = self.union = 0.0

    def update(self, pred: np.ndarray, truth: np.ndarray) -> DiceIoU:
        """Add one pair of masks of the same shape (anything convertible to bool arrays)."""
        pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
        if pred.shape != truth.shape:
            raise ValueError(f"pred: shape {pred.shape} differs from truth shape {truth.shape}")
        self.inter += float(np.logical_and(pred, truth).sum())
        self.union += float(np.logical_or(pred, truth).sum())
        self.pred_sum += float(pred.sum())
        self.truth_sum += float(truth.sum())
        return self

    def compute(self) -> tuple[float, float]:
        """Returns ``(dice, iou)``: 2|P∩T| / (|P| + |T|) and |P∩T| / |P∪T|."""
        s = self.pred_sum + self.truth_sum
        dice = 2 * self.inter / s if s > 0 else 1.0
        iou = self.inter / self.union if self.union > 0 else 1.0
        return dice, iou


def dice_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two binary masks of the same shape (1.0 when both are empty).

    Args:
        pred, truth: masks (any shape, converted to bool).

    Returns:
        ``(dice, iou)``.
    """
    return DiceIoU().update(pred, truth).compute()


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged.

    Args:
        scores: one score per case (higher = more likely positive).
        labels: one 0/1 label per case.

    Returns:
        The AUC in [0, 1]; NaN when only one class is present.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


# ----------------------------------------------------------------------------------------------
# surface distances


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Indices ``(N, 3)`` of the voxels of ``mask`` with at least one of their 6 face neighbours
    outside the mask (beyond the array's border counts as outside)."""
    m = np.pad(np.asarray(mask, bool), 1, constant_values=False)
    inner = m[1:-1, 1:-1, 1:-1]
    interior = inner.copy()
    for axis in range(3):
        for shift in (0, 2):
            sl = [slice(1, -1)] * 3
            sl[axis] = slice(shift, shift + inner.shape[axis])
            interior &= m[tuple(sl)]
    return np.argwhere(inner & ~interior)


def directed_distances(a: torch.Tensor, b: torch.Tensor, chunk: int = 1 << 24) -> torch.Tensor:
    """For each point of ``a`` (N, 3) the distance to the nearest point of ``b`` (M, 3), computed by
    brute force over blocks of rows so that at most ``chunk`` distances are in memory at once.

    The nearest point is found with ``cdist``'s fast matrix-product form, then its distance is
    recomputed directly, so the result carries no cancellation error (0 for coincident points)."""
    out = torch.empty(len(a), dtype=a.dtype, device=a.device)
    rows = max(1, chunk // max(1, len(b)))
    for i in range(0, len(a), rows):
        blk = a[i : i + rows]
        nearest = torch.cdist(blk, b).argmin(dim=1)
        out[i : i + rows] = (blk - b[nearest]).norm(dim=1)
    return out


def hd95(pred: np.ndarray, truth: np.ndarray, affine: np.ndarray | None = None, device: Any = "cpu") -> float:
    """Symmetric 95th-percentile Hausdorff distance between the surfaces of two masks, in mm.

    Surfaces are the voxels with a face neighbour outside their mask (:func:`surface_voxels`);
    voxel centres are placed in space by ``affine[:3, :3]`` (anisotropic and oblique grids are
    exact), and the result is ``max(P95(d(pred -> truth)), P95(d(truth -> pred)))`` with linearly
    interpolated percentiles.

    Args:
        pred, truth: masks of the same shape (converted to bool).
        affine: 4x4 voxel-to-mm affine (None: 1 mm isotropic).
        device: where the distances are computed (a GPU is much faster for large surfaces).

    Returns:
        The distance in mm; 0.0 when both masks are empty, NaN when exactly one is.
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"pred: shape {pred.shape} differs from truth shape {truth.shape}")
    sp, st = surface_voxels(pred), surface_voxels(truth)
    if len(sp) == 0 and len(st) == 0:
        return 0.0
    if len(sp) == 0 or len(st) == 0:
        return float("nan")
    lin = torch.as_tensor(np.eye(3) if affine is None else np.asarray(affine, np.float64)[:3, :3], dtype=torch.float64)
    # centring keeps the squared norms small: cdist's matrix-product form then loses no precision
    centre = torch.as_tensor(np.concatenate([sp, st]).mean(0), dtype=torch.float64)
    pts = [((torch.as_tensor(s, dtype=torch.float64) - centre) @ lin.T).to(device) for s in (sp, st)]
    d1, d2 = directed_distances(pts[0], pts[1]), directed_distances(pts[1], pts[0])
    return float(max(np.percentile(d.cpu().numpy(), 95) for d in (d1, d2)))


def mask_scores(
    pred: np.ndarray, truth: np.ndarray, affine: np.ndarray | None = None, device: Any = "cpu"
) -> dict[str, Any]:
    """Dice, IoU, HD95 (mm) and the voxel counts of one pair of masks (see :func:`hd95`)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    d, i = dice_iou(pred, truth)
    h = hd95(pred, truth, affine, device)
    return {
        "dice": d,
        "iou": i,
        "hd95_mm": None if math.isnan(h) else h,
        "pred_voxels": int(pred.sum()),
        "label_voxels": int(truth.sum()),
    }


# more distinct values than this is an image, not a label mask
MAX_LABELS = 1000


def check_label_map(arr: np.ndarray, path: Any) -> None:
    """VolumeError naming ``path`` unless ``arr`` looks like a label map: finite integer values,
    at most :data:`MAX_LABELS` of them (a CT or a probability map given as labels is refused)."""
    from .errors import VolumeError

    sample = arr.reshape(-1)[:: max(1, arr.size // 1_000_000)]
    if not np.all(np.isfinite(sample)) or np.any(sample != np.rint(sample)):
        raise VolumeError(
            f"{path}: not a label mask (non-integer values); pass a mask, e.g. from `genesis-ops predict`"
        )
    n = len(np.unique(sample))
    if n > MAX_LABELS:
        raise VolumeError(f"{path}: not a label mask ({n} distinct values, more than {MAX_LABELS} labels)")


def evaluate_files(
    pred_paths: Sequence[str],
    label_paths: Sequence[str],
    per_label: bool = False,
    label_values: Sequence[int] | None = None,
    device: Any = "cpu",
    log: Any = None,
) -> dict[str, Any]:
    """Score saved masks against label volumes (the ``genesis-ops evaluate`` command).

    A prediction that is not a label mask (non-integer values, or more than :data:`MAX_LABELS`
    labels: e.g. a CT given by mistake) is refused before any surface distance is computed;
    ``log(message)`` (when given) reports each case as it is scored.

    Both files of a pair are read on their closest canonical (RAS) grid, so a mask stored in another
    orientation of the same grid still lines up; shapes and affines must then agree.

    Args:
        pred_paths, label_paths: volumes in any format :func:`readers.read_image` opens (NIfTI,
            MetaImage, NRRD, DICOM series), paired in order.
        per_label: score each non-zero value found in either file of a pair separately (multi-label
            masks with the same values); otherwise binary: prediction > 0 against label > 0.
        label_values: label values that count (binary: foreground = label in these; per label: only
            these values are scored).
        device: where surface distances are computed.

    Returns:
        ``{"cases": [{"pred", "label_file", "label", "dice", "iou", "hd95_mm", "pred_voxels",
        "label_voxels"}], "summary": [{"label", "cases", "dice" (pooled over the cases), "iou"
        (pooled), "dice_mean", "hd95_mm_mean" (over the cases where it is defined), "hd95_undefined"}]}``.
        ``label`` is the value scored, or ``"fg"`` in binary mode.
    """
    from . import data

    if len(pred_paths) != len(label_paths):
        raise UsageError(f"--labels: got {len(label_paths)} label volume(s) for {len(pred_paths)} prediction(s)")
    cases: list[dict[str, Any]] = []
    pooled: dict[Any, DiceIoU] = {}
    for pp, lp in zip(pred_paths, label_paths, strict=True):
        _, pc, parr = data.read_image(os.fspath(pp))
        _, lc, larr = data.read_image(os.fspath(lp))
        if parr.shape != larr.shape:
            raise data.VolumeError(f"{pp}: shape {parr.shape} differs from the labels' {larr.shape} ({lp})")
        if not np.allclose(pc.affine, lc.affine, atol=1e-3):
            raise data.VolumeError(
                f"{pp}: affine differs from the labels' ({lp}); resample the mask onto the label grid"
            )
        check_label_map(parr, pp)
        pi, li = np.rint(parr).astype(np.int64), np.rint(larr).astype(np.int64)
        if log:
            log(f"evaluate: case {len({c['pred'] for c in cases}) + 1}/{len(pred_paths)}: {pp}")
        if per_label:
            values = sorted((set(np.unique(pi).tolist()) | set(np.unique(li).tolist())) - {0})
            if label_values:
                values = [v for v in values if v in set(label_values)]
            pairs = [(v, pi == v, li == v) for v in values]
        else:
            truth = np.isin(li, list(label_values)) if label_values else li > 0
            pairs = [("fg", pi > 0, truth)]
        for name, p, t in pairs:
            cases.append(
                {
                    "pred": os.fspath(pp),
                    "label_file": os.fspath(lp),
                    "label": name,
                    **mask_scores(p, t, pc.affine, device),
                }
            )
            pooled.setdefault(name, DiceIoU()).update(p, t)
    summary = []
    for name, acc in pooled.items():
        mine = [c for c in cases if c["label"] == name]
        hs = [c["hd95_mm"] for c in mine if c["hd95_mm"] is not None]
        d, i = acc.compute()
        summary.append(
            {
                "label": name,
                "cases": len(mine),
                "dice": d,
                "iou": i,
                "dice_mean": float(np.mean([c["dice"] for c in mine])),
                "hd95_mm_mean": float(np.mean(hs)) if hs else None,
                "hd95_undefined": len(mine) - len(hs),
            }
        )
    return {"cases": cases, "summary": summary}


def format_table(result: dict[str, Any]) -> str:
    """The result of :func:`evaluate_files` as a plain-text table (one row per case and label, then
    one summary row per label)."""

    def f(v, nd=4):
        return "n/a" if v is None else f"{v:.{nd}f}"

    lines = [f"{'case':<32} {'label':>6} {'dice':>7} {'iou':>7} {'hd95_mm':>9} {'pred_vox':>9} {'label_vox':>9}"]
    for c in result["cases"]:
        lines.append(
            f"{os.path.basename(c['pred'])[:32]:<32} {str(c['label']):>6} {f(c['dice']):>7} {f(c['iou']):>7} "
            f"{f(c['hd95_mm'], 2):>9} {c['pred_voxels']:>9} {c['label_voxels']:>9}"
        )
    for s in result["summary"]:
        lines.append(
            f"{'ALL (' + str(s['cases']) + ' cases, pooled)':<32} {str(s['label']):>6} {f(s['dice']):>7} "
            f"{f(s['iou']):>7} {f(s['hd95_mm_mean'], 2):>9}"
        )
    return "\n".join(lines)
