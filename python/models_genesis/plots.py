"""PNG figures (matplotlib, Agg backend; written atomically)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .atomic import replacing


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    plt = _plt()
    try:
        with replacing(path, ".png") as tmp:
            fig.savefig(tmp, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)


def loss_curve(history: list[dict], path: str, title: str = "Models Genesis pretraining", ylabel: str = "MSE") -> None:
    """Train and validation loss per epoch (epoch 0 = validation loss before training), the loss
    named ``ylabel``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    tr = [(h["epoch"], h["train_loss"]) for h in history if h.get("train_loss") is not None]
    va = [(h["epoch"], h["val_loss"]) for h in history if h.get("val_loss") is not None]
    if tr:
        ax.plot(*zip(*tr, strict=True), "o-", label="train (mean over epoch)")
    if va:
        ax.plot(*zip(*va, strict=True), "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save(fig, path)


def _mid(a: np.ndarray) -> np.ndarray:
    """Middle slice along the last (depth) axis of a (X, Y, Z) array (a 2D array as it is), shown with X vertical."""
    a = np.asarray(a, dtype=np.float32)
    return a if a.ndim == 2 else a[:, :, a.shape[2] // 2]  # a 2D patch is its own slice


# Corruption-mask overlay colours (RGBA) by mask value: genesis_ops's bit 1 = shuffle window, bit 2 =
# paint noise; a voxel can hold both (shuffled, then painted over).
MASK_COLOURS = {
    1: ((0.1, 0.6, 1.0, 0.45), "shuffled window"),
    2: ((1.0, 0.5, 0.0, 0.55), "paint noise"),
    3: ((1.0, 0.1, 0.6, 0.55), "both"),
}


def mask_overlay(mask: np.ndarray) -> np.ndarray:
    """The RGBA image (..., 4) of :data:`MASK_COLOURS` for an integer corruption mask; transparent
    where the mask is 0."""
    m = np.asarray(mask).astype(np.uint8) & 3
    rgba = np.zeros(m.shape + (4,), np.float32)
    for v, (colour, _) in MASK_COLOURS.items():
        rgba[m == v] = colour
    return rgba


def restoration_grid(
    inputs: np.ndarray,
    outputs: np.ndarray,
    targets: np.ndarray,
    path: str,
    title: str = "",
    masks: np.ndarray | None = None,
) -> None:
    """One row per cube: corrupted input / restoration / target (middle axial slice), and with
    ``masks`` a fourth column: the corruption mask over the target (:data:`MASK_COLOURS`, legend
    below the grid).

    Args:
        inputs, outputs, targets: ``(n, X, Y, Z)`` (or ``(n, X, Y)`` for 2D patches) in [0, 1].
        path: the PNG to write.
        title: the figure's title.
        masks: ``(n, *spatial)`` integer masks of ``genesis_ops.models_genesis(..., return_masks=True)``.
    """
    n = len(inputs)
    if not n or len(outputs) != n or len(targets) != n or (masks is not None and len(masks) != n):
        raise ValueError(
            f"restoration_grid: inputs, outputs, targets (and masks) need the same number (>= 1) "
            f"of cubes, got {n}, {len(outputs)}, {len(targets)}" + (f" and {len(masks)}" if masks is not None else "")
        )
    plt = _plt()
    cols = 3 if masks is None else 4
    fig, axes = plt.subplots(n, cols, figsize=(2.5 * cols, 2.5 * n), squeeze=False)
    for i in range(n):
        panels_i = [("input", inputs[i]), ("restoration", outputs[i]), ("target", targets[i])]
        if masks is not None:
            panels_i.append(("corruption mask", targets[i]))
        for j, (name, arr) in enumerate(panels_i):
            ax = axes[i][j]
            ax.imshow(np.rot90(_mid(arr)), cmap="gray", vmin=0, vmax=1)
            if j == 3:
                ax.imshow(np.rot90(mask_overlay(_mid(masks[i]))))  # the same slice as the target under it
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name)
    if masks is not None:
        from matplotlib.patches import Patch

        fig.legend(
            handles=[Patch(color=c, label=f"{v}: {what}") for v, (c, what) in MASK_COLOURS.items()],
            loc="lower center",
            ncol=3,
            fontsize=8,
            title="mask value",
            title_fontsize=8,
            bbox_to_anchor=(0.5, -0.02 - 0.08 / n),
        )
    if title:
        fig.suptitle(title)
    _save(fig, path)


def panels(images: Sequence[np.ndarray], names: Sequence[str], path: str, title: str = "", vrange=(0.0, 1.0)) -> None:
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


# segmentation overlays: the label in green, a prediction in red, where both agree yellow
LABEL_RGBA = (0.1, 0.9, 0.2, 0.5)
PRED_RGBA = (1.0, 0.15, 0.1, 0.5)
BOTH_RGBA = (1.0, 0.9, 0.1, 0.6)


def seg_overlay(pred: np.ndarray | None, label: np.ndarray | None) -> np.ndarray:
    """The RGBA image (..., 4) of a 2D prediction and/or label mask (either may be None):
    :data:`LABEL_RGBA` label only, :data:`PRED_RGBA` prediction only, :data:`BOTH_RGBA` both."""
    ref = pred if pred is not None else label
    if ref is None:
        raise ValueError("seg_overlay: give a prediction, a label or both")
    p = np.zeros(np.shape(ref), bool) if pred is None else np.asarray(pred) > 0.5
    lab = np.zeros(np.shape(ref), bool) if label is None else np.asarray(label) > 0.5
    rgba = np.zeros(p.shape + (4,), np.float32)
    rgba[lab & ~p] = LABEL_RGBA
    rgba[p & ~lab] = PRED_RGBA
    rgba[p & lab] = BOTH_RGBA
    return rgba


def pick_slices(mask: np.ndarray, n: int = 3) -> list[int]:
    """``n`` axial (last-axis) indices of a (X, Y, Z) mask spread over the slices that hold it
    (the fullest first when fewer hold it); middle slices when it is empty."""
    m = np.asarray(mask) > 0.5
    depth = m.shape[2]
    hold = [int(k) for k in np.flatnonzero(m.sum(axis=(0, 1)))]
    if not hold:
        return sorted({int(round(x)) for x in np.linspace(0, depth - 1, min(n, depth) + 2)[1:-1]})
    if len(hold) <= n:
        return hold
    return sorted({hold[int(round(x))] for x in np.linspace(0, len(hold) - 1, n + 2)[1:-1]})


def segmentation_grid(
    image: np.ndarray,
    columns: Sequence[tuple[str, np.ndarray | None, np.ndarray | None]],
    slices: Sequence[int],
    path: str,
    title: str = "",
    crop: tuple[int, int] | None = None,
) -> None:
    """One row per axial slice of ``image`` (X, Y, Z) in [0, 1]; one column per ``(name, pred,
    label)`` with the masks (X, Y, Z, either None) overlaid (:func:`seg_overlay`). With ``crop``
    (px, py) each row shows that window around the label's (else the prediction's) centre in the
    slice: the patches a 2D model sees."""
    if not columns or not slices:
        raise ValueError("segmentation_grid: need at least one column and one slice")
    image = np.asarray(image, dtype=np.float32)
    plt = _plt()
    rows, cols = len(slices), len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.4 * rows), squeeze=False)
    for i, k in enumerate(slices):
        win = (slice(None), slice(None))
        if crop is not None:
            ref = next((m for _, p, lab in columns for m in (lab, p) if m is not None and m[:, :, k].any()), None)
            cx, cy = np.argwhere(ref[:, :, k] > 0.5).mean(0) if ref is not None else np.array(image.shape[:2]) / 2
            x0 = int(np.clip(round(cx - crop[0] / 2), 0, max(0, image.shape[0] - crop[0])))
            y0 = int(np.clip(round(cy - crop[1] / 2), 0, max(0, image.shape[1] - crop[1])))
            win = (slice(x0, x0 + crop[0]), slice(y0, y0 + crop[1]))
        for j, (name, pred, label) in enumerate(columns):
            ax = axes[i][j]
            ax.imshow(np.rot90(image[win + (k,)]), cmap="gray", vmin=0, vmax=1)
            if pred is not None or label is not None:  # a column without masks shows the image alone
                over = seg_overlay(
                    None if pred is None else pred[win + (k,)], None if label is None else label[win + (k,)]
                )
                ax.imshow(np.rot90(over))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"z {k}", fontsize=8)
    from matplotlib.patches import Patch

    fig.legend(
        handles=[
            Patch(color=LABEL_RGBA, label="label only (missed)"),
            Patch(color=PRED_RGBA, label="prediction only"),
            Patch(color=BOTH_RGBA, label="both"),
        ],
        loc="lower center",
        ncol=3,
        fontsize=8,
        bbox_to_anchor=(0.5, -0.02 - 0.06 / rows),
    )
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)


def dice_curves(summary: dict, path: str, title: str = "fine-tuning: validation Dice") -> None:
    """Validation Dice per epoch of each arm of a demo summary (``{arm: {"seeds", "val_dice"}}``):
    each seed faint, the mean over seeds bold."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, colour in (("pretrained", "tab:blue"), ("scratch", "tab:orange")):
        runs = summary.get(arm, {}).get("val_dice") or []
        if not runs:
            continue
        for curve in runs:
            ax.plot(range(1, len(curve) + 1), curve, "-", color=colour, alpha=0.3, lw=1)
        mean = np.nanmean(np.asarray(runs, dtype=np.float64), axis=0)
        ax.plot(range(1, len(mean) + 1), mean, "o-", color=colour, lw=2.5, label=f"{arm} (mean of {len(runs)} seeds)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation Dice")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title, fontsize=10)
    _save(fig, path)
