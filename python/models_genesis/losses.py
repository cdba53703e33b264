"""Training losses of the fine-tuning tasks."""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
