"""Validation metrics: Dice and IoU of binary masks, ROC AUC of scores (NumPy, CPU)."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


class DiceIoU:
    """Dice and IoU pooled over any number of (prediction, truth) mask pairs.

    Counts (intersection, sizes, union) are summed over the pairs, so the result is the Dice of
    all voxels together, not a mean of per-volume scores. With both masks empty everywhere, Dice
    and IoU are 1.0 (nothing to find, nothing found).
    """

    def __init__(self):
        self.inter = self.pred_sum = self.truth_sum = self.union = 0.0

    def update(self, pred: np.ndarray, truth: np.ndarray) -> "DiceIoU":
        """Add one pair of masks of the same shape (anything convertible to bool arrays)."""
        pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
        if pred.shape != truth.shape:
            raise ValueError(f"pred: shape {pred.shape} differs from truth shape {truth.shape}")
        self.inter += float(np.logical_and(pred, truth).sum())
        self.union += float(np.logical_or(pred, truth).sum())
        self.pred_sum += float(pred.sum())
        self.truth_sum += float(truth.sum())
        return self

    def compute(self) -> Tuple[float, float]:
        """Returns ``(dice, iou)``: 2|P∩T| / (|P| + |T|) and |P∩T| / |P∪T|."""
        s = self.pred_sum + self.truth_sum
        dice = 2 * self.inter / s if s > 0 else 1.0
        iou = self.inter / self.union if self.union > 0 else 1.0
        return dice, iou


def dice_iou(pred: np.ndarray, truth: np.ndarray) -> Tuple[float, float]:
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
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))
