"""The fine-tuning demo: pretrained vs scratch over several seeds, what the numbers support, pictures.

Both arms (the pretrained weights and a from-scratch model of the same width) fine-tune vertebra
segmentation on the bundled CT with the same seeds and schedule. Per arm the validation Dice of
every epoch and seed goes to ``summary.json``; :func:`compare` turns the paired differences into
one line that says no more than they show; ``finetune_curves.png`` draws the curves and
``segmentation.png`` the first seed's final predictions on validation slices.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import replace
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import plots
from .atomic import replacing
from .config import FinetuneConfig, run_out
from .utils import UsageError

ARMS = ("pretrained", "scratch")
# 2D demo pictures: patches of this size around the label, as the 2D model sees them
PATCH_2D = (64, 64)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, min, max and sample standard deviation (0 for one value) of ``values``; NaN values
    (an epoch without a defined Dice) make every field NaN."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0 or np.isnan(v).any():
        nan = float("nan")
        return {"mean": nan, "min": nan, "max": nan, "std": nan}
    return {
        "mean": float(v.mean()),
        "min": float(v.min()),
        "max": float(v.max()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
    }


def summarise(runs: dict[str, list[tuple[int, list[float]]]]) -> dict[str, Any]:
    """The demo's summary from ``{arm: [(seed, per-epoch validation Dice), ...]}``.

    Returns:
        ``{arm: {"seeds", "val_dice" (one list per seed), "final" (last epoch per seed),
        "per_epoch" (:func:`spread` over seeds per epoch), "final_spread"}, "comparison": the
        :func:`compare` line}``.

    Raises:
        ValueError: the arms differ in seeds, or a seed's curve in length.
    """
    out: dict[str, Any] = {}
    seeds = None
    for arm in ARMS:
        rs = runs[arm]
        s = [int(k) for k, _ in rs]
        if seeds is None:
            seeds = s
        elif s != seeds:
            raise ValueError(f"summarise: the arms ran different seeds ({seeds} and {s})")
        curves = [[float(d) for d in c] for _, c in rs]
        if len({len(c) for c in curves}) > 1 or not curves or not curves[0]:
            raise ValueError("summarise: every seed needs the same, non-zero number of epochs")
        out[arm] = {
            "seeds": s,
            "val_dice": curves,
            "final": [c[-1] for c in curves],
            "per_epoch": [spread(col) for col in zip(*curves, strict=True)],
            "final_spread": spread([c[-1] for c in curves]),
        }
    if len(out["pretrained"]["val_dice"][0]) != len(out["scratch"]["val_dice"][0]):
        raise ValueError("summarise: the arms ran different numbers of epochs")
    out["comparison"] = compare(out["pretrained"]["val_dice"], out["scratch"]["val_dice"])
    return out


# fewer paired seeds than this never support "ahead": with 2 seeds the same sign happens by chance
# half the time under no difference at all
MIN_SEEDS = 3


def verdict(diffs: Sequence[float]) -> str:
    """What paired differences (pretrained - scratch, one per seed) support, in words.

    "pretrained ahead" / "scratch ahead" only when there are at least :data:`MIN_SEEDS` of them
    and every one has that sign; otherwise "within seed noise" with the range. Neither says the
    difference is significant: 3 seeds of one sign happen by chance a quarter of the time."""
    d = [float(x) for x in diffs]
    if not d or any(math.isnan(x) for x in d):
        return "undefined (a Dice was undefined)"
    rng = f"{min(d):+.3f}..{max(d):+.3f}"
    mean = sum(d) / len(d)
    if len(d) >= MIN_SEEDS and min(d) > 0:
        return f"pretrained ahead in all {len(d)} seeds by {mean:.3f} (range {rng})"
    if len(d) >= MIN_SEEDS and max(d) < 0:
        return f"scratch ahead in all {len(d)} seeds by {-mean:.3f} (range {rng})"
    why = f"only {len(d)} seed(s)" if len(d) < MIN_SEEDS else "the seeds disagree in sign"
    return f"within seed noise ({why}; pretrained - scratch {rng})"


def compare(pretrained: Sequence[Sequence[float]], scratch: Sequence[Sequence[float]]) -> str:
    """The one comparison line: :func:`verdict` after epoch 1 and at the last epoch, the arms'
    curves paired by seed (``pretrained[i]`` and ``scratch[i]`` ran seed i)."""
    if len(pretrained) != len(scratch) or not pretrained:
        raise ValueError("compare: need the same (non-zero) number of seeds in both arms")
    n = len(pretrained[0])
    at = lambda e: [p[e] - s[e] for p, s in zip(pretrained, scratch, strict=True)]  # noqa: E731
    first = f"after epoch 1: {verdict(at(0))}"
    head = f"pretrained vs scratch over {len(pretrained)} seeds, validation Dice {first}"
    return head if n == 1 else f"{head}; at the end (epoch {n}): {verdict(at(n - 1))}"


def epoch_table(summary: dict[str, Any]) -> list[str]:
    """Lines ``epoch e: pretrained mean (min..max), scratch mean (min..max)``."""
    lines = []
    for e, (p, s) in enumerate(zip(summary["pretrained"]["per_epoch"], summary["scratch"]["per_epoch"], strict=True)):
        lines.append(
            f"epoch {e + 1}: pretrained {p['mean']:.3f} ({p['min']:.3f}..{p['max']:.3f}), "
            f"scratch {s['mean']:.3f} ({s['min']:.3f}..{s['max']:.3f})"
        )
    return lines


def write_summary(summary: dict[str, Any], path: str) -> None:
    """``summary`` as JSON (NaN as null), written atomically."""

    def clean(o):
        if isinstance(o, float) and math.isnan(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, list):
            return [clean(v) for v in o]
        return o

    with replacing(path) as tmp, open(tmp, "w") as f:
        json.dump(clean(summary), f, indent=1)
        f.write("\n")


def segmentation_picture(preds: dict[str, list], path: str, dims: int, title: str = "") -> None:
    """``segmentation.png`` of the demo: for the first validation case, a few axial slices with
    the label and each arm's final prediction (``preds[arm]``: ``[(name, image, label, prob)]``,
    image ``(C, X, Y, Z)``). 2D: patches around the label, as the 2D model sees them."""
    name, image, label, _ = preds[ARMS[0]][0]
    img = np.asarray(image)[0] if np.ndim(image) == 4 else np.asarray(image)
    cols = [("label", None, label)] + [
        (f"{arm} (Dice {_dice(p[0][3] >= 0.5, label):.2f})", p[0][3] >= 0.5, label) for arm, p in preds.items()
    ]
    plots.segmentation_grid(
        img,
        cols,
        plots.pick_slices(label, 3),
        path,
        title=title or f"{name}: validation slices",
        crop=PATCH_2D if dims == 2 else None,
    )


def _dice(pred: np.ndarray, label: np.ndarray) -> float:
    p, t = np.asarray(pred) > 0.5, np.asarray(label) > 0.5
    s = int(p.sum()) + int(t.sum())
    return 2.0 * int((p & t).sum()) / s if s else float("nan")


def run_demo(cfg: FinetuneConfig, finetune_fn: Callable, width_of: Callable, say: Callable[[str], None] = print):
    """Both arms over ``cfg.seeds`` seeds (``cfg.seed``, ``cfg.seed + 1``, ...), same schedule.

    Args:
        cfg: settings; ``cfg.weights`` are the pretrained weights. Runs go to
            ``<out>/<arm>/seed<k>``; ``summary.json``, ``finetune_curves.png`` and
            ``segmentation.png`` to ``<out>``.
        finetune_fn: :func:`finetune.finetune` (passed in, so this module imports no training code).
        width_of: ``width_of(weights) -> int`` (the scratch arm gets the pretrained width).

    Returns:
        ``{"summary", "summary_path", "curves_png", "segmentation_png", "runs" ({arm: [results]}),
        "time_s"}``.
    """
    if cfg.seeds < 1:
        raise UsageError(f"--seeds: expected a positive integer, got {cfg.seeds}")
    base = run_out(cfg)
    os.makedirs(base, exist_ok=True)
    seeds = [cfg.seed + k for k in range(cfg.seeds)]
    width = cfg.width if cfg.width is not None else width_of(cfg.weights)
    results: dict[str, list] = {arm: [] for arm in ARMS}
    t0 = time.perf_counter()
    for k, seed in enumerate(seeds):
        for arm in ARMS:
            say(f"--- seed {seed} ({k + 1}/{len(seeds)}): fine-tuning {arm} ---")
            c = replace(
                cfg,
                weights=cfg.weights if arm == "pretrained" else None,
                width=None if arm == "pretrained" else width,
                out=os.path.join(base, arm, f"seed{seed}"),
                seed=seed,
                lr_decay=True,
                demo=True,
                task="segmentation",
            )
            results[arm].append(finetune_fn(c))
    summary = summarise(
        {
            arm: [(s, [h["val_dice"] for h in r["history"]]) for s, r in zip(seeds, results[arm], strict=True)]
            for arm in ARMS
        }
    )
    summary["dims"] = cfg.dims
    summary["weights"] = cfg.weights
    summary["validation"] = results["pretrained"][0]["validation"]
    paths = {
        "summary_path": os.path.join(base, "summary.json"),
        "curves_png": os.path.join(base, "finetune_curves.png"),
        "segmentation_png": os.path.join(base, "segmentation.png"),
    }
    write_summary(summary, paths["summary_path"])
    d2 = "2D " if cfg.dims == 2 else ""
    plots.dice_curves(
        summary,
        paths["curves_png"],
        title=f"{d2}vertebra segmentation, validation Dice ({len(seeds)} seeds; faint: each seed)",
    )
    segmentation_picture(
        {arm: results[arm][0]["val_predictions"] for arm in ARMS},
        paths["segmentation_png"],
        cfg.dims,
        title=f"{d2}validation ({summary['validation']}), seed {seeds[0]}, last epoch",
    )
    return {"summary": summary, "runs": results, "time_s": time.perf_counter() - t0, **paths}
