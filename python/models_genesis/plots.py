"""PNG figures (matplotlib, Agg backend; written atomically)."""
from __future__ import annotations

import os
from typing import Dict, List, Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    plt = _plt()
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def loss_curve(history: List[Dict], path: str, title: str = "Models Genesis pretraining") -> None:
    """Train and validation loss per epoch (epoch 0 = validation loss before training)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    tr = [(h["epoch"], h["train_loss"]) for h in history if h.get("train_loss") is not None]
    va = [(h["epoch"], h["val_loss"]) for h in history if h.get("val_loss") is not None]
    if tr:
        ax.plot(*zip(*tr), "o-", label="train (mean over epoch)")
    if va:
        ax.plot(*zip(*va), "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save(fig, path)


def _mid(a: np.ndarray) -> np.ndarray:
    """Middle slice along the last (depth) axis of a (X, Y, Z) array (a 2D array as it is), shown with X vertical."""
    a = np.asarray(a, dtype=np.float32)
    return a if a.ndim == 2 else a[:, :, a.shape[2] // 2]  # a 2D patch is its own slice


def restoration_grid(inputs: np.ndarray, outputs: np.ndarray, targets: np.ndarray, path: str,
                     title: str = "") -> None:
    """One row per cube: corrupted input / restoration / target (middle axial slice)."""
    n = len(inputs)
    if not n or len(outputs) != n or len(targets) != n:
        raise ValueError(f"restoration_grid: inputs, outputs and targets need the same number (>= 1) of cubes, "
                         f"got {n}, {len(outputs)} and {len(targets)}")
    plt = _plt()
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for i in range(n):
        for j, (name, arr) in enumerate((("input", inputs[i]), ("restoration", outputs[i]), ("target", targets[i]))):
            ax = axes[i][j]
            ax.imshow(np.rot90(_mid(arr)), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def panels(images: Sequence[np.ndarray], names: Sequence[str], path: str, title: str = "",
           vrange=(0.0, 1.0)) -> None:
    """A row of 2D images with titles."""
    plt = _plt()
    n = len(images)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for k in range(rows * cols):
        ax = axes[k // cols][k % cols]
        ax.set_xticks([])
        ax.set_yticks([])
        if k < n:
            ax.imshow(np.rot90(np.asarray(images[k], dtype=np.float32)), cmap="gray", vmin=vrange[0], vmax=vrange[1])
            ax.set_title(names[k], fontsize=9)
        else:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    _save(fig, path)
