"""Training losses: pretraining's restoration losses and the fine-tuning tasks'."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's restoration loss: mean squared error over every voxel and channel, in float32.

    Args:
        pred: ``(B, C, *spatial)`` restoration (any float dtype, e.g. from autocast).
        target: same shape.

    Returns:
        A scalar float32 tensor.
    """
    return F.mse_loss(pred.float(), target.float())


def check_corrupted_weight(weight, name: str = "weight") -> float:
    """``weight`` as a float, or a ValueError naming ``name`` unless it is a finite number >= 0."""
    try:
        w = float(weight)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a finite number >= 0, got {weight!r}") from None
    if isinstance(weight, bool) or not (math.isfinite(w) and w >= 0.0):
        raise ValueError(f"{name}: expected a finite number >= 0, got {weight!r}")
    return w


def corruption_weighted_mse(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weight: float
) -> torch.Tensor:
    """Squared error weighted by ``weight`` on corrupted voxels and 1 elsewhere, normalised by the
    sum of the weights::

        w = where(mask != 0, weight, 1)          # broadcast over the channels
        loss = sum(w * (pred - target)^2) / sum(w)

    over the whole batch (every voxel, channel and sample), in float32. Dividing by ``sum(w)``
    rather than by the voxel count keeps the loss a weighted *mean* of squared errors, on the scale
    of the plain MSE whatever ``weight`` is and however much of the batch is corrupted: a
    learning rate tuned for the paper's MSE stays right (dividing by the voxel count would scale
    the gradients by up to ``weight``), and losses of runs with different weights compare.
    ``weight = 1`` is :func:`mse_loss` (up to float rounding); ``weight = 0`` ignores the
    corrupted voxels (the MSE over the others; 0, with zero gradients, for a batch corrupted
    everywhere); ``weight > 1`` stresses them.

    Args:
        pred: ``(B, C, *spatial)`` restoration (any float dtype).
        target: same shape.
        mask: ``(B, 1, *spatial)`` (or ``(B, C, *spatial)``), any dtype; nonzero marks a corrupted
            voxel. ``genesis_ops.models_genesis(..., return_masks=True)``'s uint8 mask (bit 1:
            shuffled window, bit 2: paint noise) as it is: either bit counts.
        weight: a finite number >= 0.

    Returns:
        A scalar float32 tensor.

    Raises:
        ValueError: naming ``weight`` or ``mask`` when one is invalid.
    """
    w_corrupt = check_corrupted_weight(weight)
    if pred.shape != target.shape:
        raise ValueError(f"target: expected the shape of pred {tuple(pred.shape)}, got {tuple(target.shape)}")
    if (
        mask.dim() != pred.dim()
        or mask.shape[0] != pred.shape[0]
        or mask.shape[2:] != pred.shape[2:]
        or mask.shape[1] not in (1, pred.shape[1])
    ):
        raise ValueError(
            f"mask: expected shape (B, 1 or C, *spatial) matching pred {tuple(pred.shape)}, got {tuple(mask.shape)}"
        )
    sq = (pred.float() - target.float()) ** 2
    w = torch.where(mask != 0, w_corrupt, 1.0).to(torch.float32).expand_as(sq)
    # sum(w) is 0 only when weight is 0 and every voxel is corrupted; the numerator is 0 then too
    return (w * sq).sum() / w.sum().clamp_min(torch.finfo(torch.float32).tiny)


def restoration_loss(corrupted_weight: float | None = None) -> Callable[..., torch.Tensor]:
    """Pretraining's loss function.

    Args:
        corrupted_weight: None for the paper's plain MSE (:func:`mse_loss`, called as
            ``loss(pred, target)``); a number for :func:`corruption_weighted_mse` with that weight
            (called as ``loss(pred, target, mask)``).
    """
    if corrupted_weight is None:
        return mse_loss
    return functools.partial(
        corruption_weighted_mse, weight=check_corrupted_weight(corrupted_weight, "corrupted_weight")
    )


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """BCE (with logits) + soft Dice loss ``1 - (2 sum(yp) + s) / (sum(y) + sum(p) + s)`` over the batch.

    Args:
        logits: ``(B, 1, X, Y, Z)`` raw outputs (any float dtype; computed in float32).
        target: same shape, 0/1.
        smooth: ``s`` above.

    Returns:
        A scalar float32 tensor.
    """
    logits, target = logits.float(), target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum()
    dice = (2 * inter + smooth) / (p.sum() + target.sum() + smooth)
    return bce + (1 - dice)


def classification_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """BCE for one sigmoid output (two classes), cross-entropy for several.

    Args:
        logits: ``(B, 1)`` or ``(B, n_classes)``.
        y: ``(B, 1)`` float 0/1 targets, or ``(B,)`` class indices.

    Returns:
        A scalar float32 tensor.
    """
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits.float(), y.float())
    return F.cross_entropy(logits.float(), y.long())
