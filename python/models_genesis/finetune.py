"""Fine-tuning (segmentation, classification) and sliding-window whole-volume inference."""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import data as D
from .model import (CheckpointError, GenesisClassifier, UNet3D, encoder_modules, extract_state_dict,
                    load_model, load_pretrained, read_checkpoint)
from .pretrain import CPU_AUTO, GPU_AUTO, _amp_context, _plain
from .utils import (Progress, UsageError, append_jsonl, atomic_save, derive_seed, log, resolve_device,
                    rng_state)

DEMO_CPU = {"epochs": 6, "steps_per_epoch": 15}
DEMO_GPU = {"epochs": 20, "steps_per_epoch": 50}
DEFAULTS = {"epochs": 50, "steps_per_epoch": 50}


@dataclass
class FinetuneConfig:
    task: str = "segmentation"                # or "classification"
    images: Optional[List[str]] = None
    labels: Optional[List[str]] = None        # segmentation: label volumes; classification: class ids
    csv: Optional[str] = None                 # classification: rows "path,label"
    label_values: Optional[List[int]] = None  # segmentation foreground values (default: any > 0)
    weights: Optional[str] = None             # ours or published; None = from scratch
    out: str = "runs/finetune"
    epochs: Optional[int] = None
    steps_per_epoch: Optional[int] = None
    batch_size: Optional[int] = None
    cube: Optional[Tuple[int, int, int]] = None
    width: Optional[int] = None               # scratch only (with weights: taken from them)
    norm: str = "batch"
    n_classes: Optional[int] = None           # classification (default: from the labels)
    lr: float = 1e-3
    freeze_encoder_epochs: int = 0
    val_fraction: float = 0.2
    fg_fraction: float = 0.5
    threshold: float = 0.5
    overlap: float = 0.5
    patience: int = 0
    device: str = "auto"
    seed: int = 0
    amp: bool = True
    modality: str = "ct"
    hu_window: Tuple[float, float] = (-1000.0, 1000.0)
    mri_norm: str = "percentile"
    spacing: Optional[Tuple[float, float, float]] = None
    demo: bool = False
    log_every: Optional[int] = None
    quiet: bool = False

    def validate(self) -> None:
        if self.task not in ("segmentation", "classification"):
            raise UsageError(f"--task: expected segmentation or classification, got {self.task!r}")
        for n in ("epochs", "steps_per_epoch", "batch_size", "width", "n_classes"):
            v = getattr(self, n)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise UsageError(f"--{n.replace('_', '-')}: expected a positive integer, got {v!r}")
        if self.cube is not None:
            c = tuple(self.cube)
            if len(c) != 3 or any((not isinstance(s, int)) or s < 8 or s % 8 for s in c):
                raise UsageError(f"--cube: expected three positive multiples of 8, got {' '.join(map(str, c))}")
        for n in ("val_fraction", "fg_fraction", "threshold"):
            v = getattr(self, n)
            if not 0.0 <= v <= 1.0 or (n == "val_fraction" and v >= 1.0):
                raise UsageError(f"--{n.replace('_', '-')}: expected a value in [0, 1), got {v}")
        if not 0.0 <= self.overlap < 1.0:
            raise UsageError(f"--overlap: expected a fraction in [0, 1), got {self.overlap}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"--lr: expected a positive number, got {self.lr}")
        if self.freeze_encoder_epochs < 0 or self.patience < 0:
            raise UsageError("--freeze-encoder-epochs/--patience: expected >= 0")
        if not self.demo:
            if not self.images and not self.csv:
                raise UsageError("finetune: give --images (and --labels) or --csv, or use --demo")


# ----------------------------------------------------------------------------------------------
# losses and metrics


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """BCE (with logits) + soft Dice loss 1 - (2 sum(yp) + s) / (sum(y) + sum(p) + s), per batch."""
    logits, target = logits.float(), target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum()
    dice = (2 * inter + smooth) / (p.sum() + target.sum() + smooth)
    return bce + (1 - dice)


def dice_iou(pred: np.ndarray, truth: np.ndarray) -> Tuple[float, float]:
    """Dice and IoU of two binary masks (1.0 when both are empty)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    inter = float(np.logical_and(pred, truth).sum())
    s = float(pred.sum() + truth.sum())
    union = float(np.logical_or(pred, truth).sum())
    if s == 0:
        return 1.0, 1.0
    return 2 * inter / s, inter / union


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged; NaN with one class only."""
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


# ----------------------------------------------------------------------------------------------
# sliding-window inference


def _starts(n: int, c: int, stride: int) -> List[int]:
    if n <= c:
        return [0]
    s = list(range(0, n - c + 1, stride))
    if s[-1] != n - c:
        s.append(n - c)
    return s


@torch.no_grad()
def sliding_window(model: nn.Module, volume: np.ndarray, cube: Sequence[int], overlap: float = 0.5,
                   batch_size: int = 4, device: Any = "cpu", amp: bool = True,
                   fn=None) -> np.ndarray:
    """Apply ``model`` to a whole (X, Y, Z) volume in overlapping cubes and average the outputs.

    ``fn(model, batch)`` maps a batch to per-voxel outputs (default: ``model(batch)``; channel 0 of
    the output is returned). Small volumes are padded (with 0) and cropped back."""
    device = torch.device(device)
    cube = tuple(int(c) for c in cube)
    vol, pads = D.pad_to(np.asarray(volume, dtype=np.float32), cube, 0.0)
    stride = [max(1, int(round(c * (1 - overlap)))) for c in cube]
    starts = [_starts(n, c, s) for n, c, s in zip(vol.shape, cube, stride)]
    acc = np.zeros(vol.shape, dtype=np.float32)
    cnt = np.zeros(vol.shape, dtype=np.float32)
    coords = [(a, b, c) for a in starts[0] for b in starts[1] for c in starts[2]]
    was_training = model.training
    model.eval()
    fn = fn or (lambda m, x: m(x))
    t = torch.from_numpy(vol)
    for i in range(0, len(coords), batch_size):
        chunk = coords[i:i + batch_size]
        batch = torch.stack([t[a:a + cube[0], b:b + cube[1], c:c + cube[2]] for a, b, c in chunk])[:, None]
        ctx, _ = _amp_context(device, amp)
        with ctx:
            out = fn(model, batch.to(device))
        out = out[:, 0].float().cpu().numpy()
        for (a, b, c), o in zip(chunk, out):
            acc[a:a + cube[0], b:b + cube[1], c:c + cube[2]] += o
            cnt[a:a + cube[0], b:b + cube[1], c:c + cube[2]] += 1
    model.train(was_training)
    res = acc / np.maximum(cnt, 1)
    sl = tuple(slice(p0, n - p1) for (p0, p1), n in zip(pads, res.shape))
    return res[sl]


# ----------------------------------------------------------------------------------------------
# data


class PairSampler:
    """Random (image, label) cubes; a fraction centred on random foreground voxels."""

    def __init__(self, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], cube, generator,
                 fg_fraction: float = 0.5):
        self.cube = tuple(cube)
        self.images = [D.pad_to(a, self.cube, 0.0)[0] for a in images]
        self.labels = [D.pad_to(a, self.cube, 0.0)[0] for a in labels]
        self.fg = [np.argwhere(lab > 0) for lab in self.labels]
        self.gen = generator
        self.fg_fraction = fg_fraction
        sizes = np.array([a.size for a in self.images], dtype=np.float64)
        self.weights = torch.from_numpy(sizes / sizes.sum())

    def _rand(self, hi: int) -> int:
        return int(torch.randint(0, hi, (1,), generator=self.gen).item()) if hi > 1 else 0

    def sample(self, batch_size: int):
        xs, ys = [], []
        for _ in range(batch_size):
            i = int(torch.multinomial(self.weights, 1, generator=self.gen).item()) if len(self.images) > 1 else 0
            img, lab, fg = self.images[i], self.labels[i], self.fg[i]
            use_fg = len(fg) > 0 and float(torch.rand((), generator=self.gen)) < self.fg_fraction
            if use_fg:
                centre = fg[self._rand(len(fg))]
                o = [int(min(max(0, c - s // 2), n - s)) for c, s, n in zip(centre, self.cube, img.shape)]
            else:
                o = [self._rand(n - s + 1) for n, s in zip(img.shape, self.cube)]
            sl = tuple(slice(a, a + s) for a, s in zip(o, self.cube))
            xs.append(np.asarray(img[sl], dtype=np.float32))
            ys.append(np.asarray(lab[sl], dtype=np.float32))
        return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys)[:, None])


def _foreground(lab: np.ndarray, values: Optional[Sequence[int]]) -> np.ndarray:
    if values:
        return np.isin(np.rint(lab).astype(np.int64), list(values)).astype(np.float32)
    return (lab > 0).astype(np.float32)


def _read_csv(path: str) -> Tuple[List[str], List[int]]:
    if not os.path.isfile(path):
        raise UsageError(f"--csv: {path}: no such file")
    imgs, labs = [], []
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 2:
                raise UsageError(f"--csv: {path}:{n}: expected 'path,label'")
            if n == 1 and not row[1].strip().lstrip("-").isdigit():
                continue  # header
            p = row[0].strip()
            imgs.append(p if os.path.isabs(p) else os.path.join(base, p))
            try:
                labs.append(int(row[1]))
            except ValueError:
                raise UsageError(f"--csv: {path}:{n}: label {row[1]!r} is not an integer") from None
    if not imgs:
        raise UsageError(f"--csv: {path}: no rows")
    return imgs, labs


# ----------------------------------------------------------------------------------------------
# training


def _resolve(cfg: FinetuneConfig, device: torch.device) -> FinetuneConfig:
    c = FinetuneConfig(**asdict(cfg))
    auto = CPU_AUTO if device.type == "cpu" else GPU_AUTO
    sched = (DEMO_CPU if device.type == "cpu" else DEMO_GPU) if c.demo else DEFAULTS
    if c.cube is None:
        c.cube = auto["cube"]
    if c.batch_size is None:
        c.batch_size = auto["batch_size"]
    for k in ("epochs", "steps_per_epoch"):
        if getattr(c, k) is None:
            setattr(c, k, sched[k])
    c.cube = tuple(int(s) for s in c.cube)
    return c


def _weights_info(weights: str) -> Dict[str, Any]:
    """Width, norm and (for our checkpoints) preprocessing/cube of a weights file."""
    obj = read_checkpoint(weights)
    sd = extract_state_dict(obj, weights)
    w = sd.get("down_tr64.ops.0.conv1.weight")
    if w is None:
        raise CheckpointError(f"{weights}: no U-Net encoder weights (down_tr64.ops.0.conv1.weight) found")
    info = {"obj": obj, "width": int(w.shape[0]), "in_channels": int(w.shape[1])}
    mc = obj.get("model_config") or {}
    info["norm"] = mc.get("norm", "batch")
    info["preprocessing"] = obj.get("preprocessing")
    cube = (obj.get("config") or {}).get("cube")
    info["cube"] = tuple(cube) if cube else None
    return info


def _build(cfg: FinetuneConfig, n_out: int, say):
    """Model for the task, initialised from cfg.weights when given."""
    width, norm, winfo = cfg.width, cfg.norm, None
    if cfg.weights:
        winfo = _weights_info(cfg.weights)
        if width is not None and width != winfo["width"]:
            raise UsageError(f"--width {width} differs from the width {winfo['width']} of {cfg.weights}")
        width = winfo["width"]
        norm = winfo["norm"] if cfg.norm == "batch" else cfg.norm
    if width is None:
        width = CPU_AUTO["width"] if resolve_device(cfg.device).type == "cpu" else GPU_AUTO["width"]
    if cfg.task == "segmentation":
        model = UNet3D(in_channels=1, n_classes=1, width=width, norm=norm, activation="sigmoid")
    else:
        model = GenesisClassifier(in_channels=1, n_classes=n_out, width=width, norm=norm)
    if winfo is not None:
        load_pretrained(model, winfo["obj"], strict=True, skip_head=True, source=cfg.weights)
        say(f"initialised from {cfg.weights} (width {width}; head re-initialised)")
    else:
        say(f"training from scratch (width {width})")
    return model


def _set_encoder_trainable(model: nn.Module, trainable: bool) -> None:
    for m in encoder_modules(model):
        for p in m.parameters():
            p.requires_grad_(trainable)


def finetune(cfg: FinetuneConfig) -> Dict[str, Any]:
    """Fine-tune one model; returns a summary with the best validation metrics."""
    cfg.validate()
    device = resolve_device(cfg.device)
    if cfg.cube is None and cfg.weights:  # default to the cube the weights were pretrained on
        cube = _weights_info(cfg.weights)["cube"]
        if cube:
            cfg = FinetuneConfig(**{**asdict(cfg), "cube": tuple(int(c) for c in cube)})
    cfg = _resolve(cfg, device)
    say = (lambda m: log(m, not cfg.quiet))
    torch.manual_seed(derive_seed(cfg.seed, 11))
    if cfg.task == "segmentation":
        return _finetune_seg(cfg, device, say)
    return _finetune_cls(cfg, device, say)


def _train_loop(cfg, model, device, say, sample_fn, loss_fn, eval_fn, higher_better_key, meta):
    out = os.path.abspath(cfg.out)
    os.makedirs(out, exist_ok=True)
    metrics_path = os.path.join(out, "metrics.jsonl")
    if os.path.exists(metrics_path):
        os.remove(metrics_path)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    best, best_rec, bad, history = -float("inf"), None, 0, []
    t_start = time.perf_counter()
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        frozen = epoch <= cfg.freeze_encoder_epochs
        _set_encoder_trainable(model, not frozen)
        model.train()
        prog = Progress(cfg.steps_per_epoch, f"epoch {epoch}/{cfg.epochs}" + (" (encoder frozen)" if frozen else ""),
                        enabled=not cfg.quiet, every=cfg.log_every)
        tot = 0.0
        for i in range(1, cfg.steps_per_epoch + 1):
            x, y = sample_fn()
            x, y = x.to(device), y.to(device)
            ctx, _ = _amp_context(device, cfg.amp)
            with ctx:
                pred = model.forward_logits(x) if isinstance(model, UNet3D) else model(x)
            loss = loss_fn(pred, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            lv = float(loss.item())
            if not math.isfinite(lv):
                raise FloatingPointError(f"loss became {lv} at epoch {epoch}; try a lower --lr")
            tot += lv
            prog.update(i, lv, x.shape[0])
        metrics = eval_fn(model)
        rec = {"epoch": epoch, "step": step, "train_loss": tot / cfg.steps_per_epoch, **metrics,
               "samples_per_s": prog.rate(), "encoder_frozen": frozen}
        score = metrics.get(higher_better_key)
        improved = score is not None and not (isinstance(score, float) and math.isnan(score)) and score > best
        if improved:
            best, best_rec, bad = score, rec, 0
        else:
            bad += 1
        rec["best"] = improved
        history.append(rec)
        append_jsonl(metrics_path, rec)
        payload = {"format": "models_genesis", "kind": f"finetune-{cfg.task}", "version": 1,
                   "model": model.state_dict(), "model_config": model.config(), "optimizer": opt.state_dict(),
                   "epoch": epoch, "step": step, "metrics": {k: v for k, v in metrics.items()},
                   "config": _plain(asdict(cfg)), "rng": rng_state(), **meta}
        atomic_save(payload, os.path.join(out, "last.pt"))
        if improved:
            atomic_save(payload, os.path.join(out, "best.pt"))
        say(f"epoch {epoch}/{cfg.epochs}: train loss {rec['train_loss']:.4f}, "
            + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            + (" (best)" if improved else ""))
        if cfg.patience and bad >= cfg.patience:
            say(f"early stopping: no improvement for {cfg.patience} epoch(s)")
            break
    if best_rec is None:  # e.g. metric undefined every epoch
        import shutil
        shutil.copyfile(os.path.join(out, "last.pt"), os.path.join(out, "best.pt"))
        best_rec = history[-1]
    return {"out": out, "best": os.path.join(out, "best.pt"), "last": os.path.join(out, "last.pt"),
            "metrics": metrics_path, "best_metrics": best_rec, "history": history,
            "time_s": time.perf_counter() - t_start}


def _finetune_seg(cfg, device, say):
    import genesis_ops as go

    pre = D.Preprocessing(modality=cfg.modality, hu_window=tuple(cfg.hu_window), mri_norm=cfg.mri_norm,
                          spacing=tuple(cfg.spacing) if cfg.spacing else None)
    if cfg.demo:
        img_paths, lab_paths = [D.DEMO_CT], [D.DEMO_LABELS]
    else:
        img_paths = D.find_volumes(cfg.images)
        if not cfg.labels:
            raise UsageError("--labels: segmentation needs one label volume per image")
        lab_paths = D.find_volumes(cfg.labels)
        if len(img_paths) != len(lab_paths):
            raise UsageError(f"--labels: got {len(lab_paths)} label volume(s) for {len(img_paths)} image(s)")
    imgs, labs, vols = [], [], []
    for ip, lp in zip(img_paths, lab_paths):
        v = D.load_volume(ip, pre)
        lv = D.load_volume(lp, pre, label=True)
        if v.data.shape != lv.data.shape:
            raise D.VolumeError(f"{lp}: label shape {lv.data.shape} differs from image {ip} shape {v.data.shape}")
        vols.append(v)
        imgs.append(v.data)
        labs.append(_foreground(lv.data, cfg.label_values))
    # split: whole volumes when several, else the last slices of the single volume
    if len(imgs) >= 2 and cfg.val_fraction > 0:
        nv = min(max(1, int(round(len(imgs) * cfg.val_fraction))), len(imgs) - 1)
        tr = [(a, b) for a, b in zip(imgs[:-nv], labs[:-nv])]
        va = [(a, b) for a, b in zip(imgs[-nv:], labs[-nv:])]
    elif cfg.val_fraction > 0:
        trs, vas = D.split_regions(imgs[0].shape, cfg.val_fraction, cfg.cube, axis=2)
        tr = [(imgs[0][trs], labs[0][trs])]
        va = [(imgs[0][vas], labs[0][vas])] if vas is not None else []
    else:
        tr, va = list(zip(imgs, labs)), []
    if not va:
        va = tr
    say(f"genesis-ops finetune segmentation: {len(img_paths)} volume(s) ({'bundled demo' if cfg.demo else 'user data'}), "
        f"foreground {'labels ' + str(cfg.label_values) if cfg.label_values else 'label > 0'}, "
        f"{sum(float(b.sum()) for _, b in va):.0f} validation foreground voxels, device {device}")
    model = _build(cfg, 1, say)
    sampler = PairSampler([a for a, _ in tr], [b for _, b in tr], cfg.cube,
                          torch.Generator().manual_seed(derive_seed(cfg.seed, 12)), cfg.fg_fraction)
    flip_seeds = torch.Generator().manual_seed(derive_seed(cfg.seed, 13))

    def sample_fn():
        x, y = sampler.sample(cfg.batch_size)
        both = torch.cat([x, y], dim=1).to(device)
        s = int(torch.randint(0, 2 ** 62, (1,), generator=flip_seeds).item())
        both = go.flip(both, p=0.4, seed=s)  # same flips for image and label (shared per sample)
        return both[:, :1], both[:, 1:]

    def eval_fn(m):
        inter = psum = tsum = union = 0.0
        for a, b in va:
            prob = sliding_window(m, a, cfg.cube, cfg.overlap, cfg.batch_size, device, cfg.amp)
            pred = prob >= cfg.threshold
            t = b > 0.5
            inter += float(np.logical_and(pred, t).sum())
            union += float(np.logical_or(pred, t).sum())
            psum += float(pred.sum())
            tsum += float(t.sum())
        dice = 2 * inter / (psum + tsum) if psum + tsum > 0 else 1.0
        iou = inter / union if union > 0 else 1.0
        return {"val_dice": dice, "val_iou": iou}

    meta = {"preprocessing": pre.to_dict(), "label_values": cfg.label_values}
    res = _train_loop(cfg, model, device, say, sample_fn, dice_bce_loss, eval_fn, "val_dice", meta)
    res["dice"] = res["best_metrics"]["val_dice"]
    res["iou"] = res["best_metrics"]["val_iou"]
    return res


def _finetune_cls(cfg, device, say):
    pre = D.Preprocessing(modality=cfg.modality, hu_window=tuple(cfg.hu_window), mri_norm=cfg.mri_norm,
                          spacing=tuple(cfg.spacing) if cfg.spacing else None)
    if cfg.demo:
        raise UsageError("--demo: the bundled demo is a segmentation task (use --task segmentation)")
    if cfg.csv:
        paths, ys = _read_csv(cfg.csv)
    else:
        paths = D.find_volumes(cfg.images)
        try:
            ys = [int(v) for v in (cfg.labels or [])]
        except ValueError:
            raise UsageError("--labels: classification labels must be integers, one per image") from None
        if len(ys) != len(paths):
            raise UsageError(f"--labels: got {len(ys)} class label(s) for {len(paths)} image(s)")
    if min(ys) < 0:
        raise UsageError("--labels: class labels must be >= 0")
    n_classes = cfg.n_classes or (1 if max(ys) <= 1 else max(ys) + 1)
    if n_classes > 1 and max(ys) >= n_classes:
        raise UsageError(f"--n-classes {n_classes}: label {max(ys)} out of range")
    vols = [D.pad_to(D.load_volume(p, pre).data, cfg.cube, 0.0)[0] for p in paths]
    idx = list(range(len(vols)))
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, 14))
    perm = torch.randperm(len(idx), generator=gen).tolist()
    nv = int(round(len(idx) * cfg.val_fraction)) if len(idx) >= 2 else 0
    va_idx, tr_idx = perm[:nv], perm[nv:] or perm
    if not va_idx:
        va_idx = tr_idx
    say(f"genesis-ops finetune classification: {len(paths)} volume(s), {n_classes if n_classes > 1 else 2} classes, "
        f"{len(tr_idx)} train / {len(va_idx)} validation, device {device}")
    model = _build(cfg, n_classes, say)
    cube = cfg.cube

    def crop(a, random_crop):
        if random_crop:
            o = [int(torch.randint(0, n - c + 1, (1,), generator=gen).item()) for n, c in zip(a.shape, cube)]
        else:
            o = [(n - c) // 2 for n, c in zip(a.shape, cube)]
        return np.asarray(a[o[0]:o[0] + cube[0], o[1]:o[1] + cube[1], o[2]:o[2] + cube[2]], dtype=np.float32)

    def sample_fn():
        pick = torch.randint(0, len(tr_idx), (cfg.batch_size,), generator=gen).tolist()
        x = torch.from_numpy(np.stack([crop(vols[tr_idx[k]], True) for k in pick])[:, None])
        y = torch.tensor([ys[tr_idx[k]] for k in pick])
        return x, (y.float()[:, None] if n_classes == 1 else y)

    def loss_fn(logits, y):
        if n_classes == 1:
            return F.binary_cross_entropy_with_logits(logits.float(), y.float())
        return F.cross_entropy(logits.float(), y.long())

    def eval_fn(m):
        m.eval()
        scores, preds = [], []
        with torch.no_grad():
            for k in va_idx:
                x = torch.from_numpy(crop(vols[k], False))[None, None].to(device)
                lg = m(x).float().cpu()[0]
                if n_classes == 1:
                    p = float(torch.sigmoid(lg[0]))
                    scores.append(p)
                    preds.append(int(p >= cfg.threshold))
                else:
                    pr = torch.softmax(lg, 0)
                    scores.append(pr.numpy())
                    preds.append(int(pr.argmax()))
        m.train()
        truth = [ys[k] for k in va_idx]
        acc = float(np.mean([p == t for p, t in zip(preds, truth)]))
        if n_classes == 1:
            auc = roc_auc(scores, truth)
        else:  # one-vs-rest mean over the classes present
            aucs = [roc_auc([s[c] for s in scores], [int(t == c) for t in truth]) for c in range(n_classes)]
            aucs = [a for a in aucs if not math.isnan(a)]
            auc = float(np.mean(aucs)) if aucs else float("nan")
        return {"val_auc": auc, "val_accuracy": acc}

    meta = {"preprocessing": pre.to_dict()}
    key = "val_auc" if len(set(ys[k] for k in va_idx)) > 1 else "val_accuracy"
    res = _train_loop(cfg, model, device, say, sample_fn, loss_fn, eval_fn, key, meta)
    res["auc"] = res["best_metrics"]["val_auc"]
    res["accuracy"] = res["best_metrics"]["val_accuracy"]
    return res


def finetune_demo(cfg: FinetuneConfig, say=print) -> Dict[str, Any]:
    """The demo: vertebra segmentation on the bundled CT, from the pretrained weights and from
    scratch with the same seed and schedule; returns both results."""
    if not cfg.weights:
        raise UsageError("finetune --demo: no pretrained weights; run `genesis-ops pretrain` first "
                         "(it writes runs/pretrain/best.pt) or pass --weights")
    base = cfg.out
    res = {}
    t0 = time.perf_counter()
    for name, w in (("pretrained", cfg.weights), ("scratch", None)):
        say(f"--- fine-tuning {name} ---")
        c = FinetuneConfig(**{**asdict(cfg), "weights": w, "out": os.path.join(base, name), "demo": True,
                              "task": "segmentation"})
        if w is None and c.width is None:
            c.width = _weights_info(cfg.weights)["width"]
        res[name] = finetune(c)
    res["time_s"] = time.perf_counter() - t0
    return res


# ----------------------------------------------------------------------------------------------
# predict


def predict_volume(weights: str, input_path: str, output_path: str, device: str = "auto",
                   threshold: Optional[float] = 0.5, overlap: float = 0.5, batch_size: int = 4,
                   cube: Optional[Sequence[int]] = None, amp: bool = True) -> Dict[str, Any]:
    """Whole-volume sliding-window inference; writes a NIfTI with the input's affine.

    Segmentation checkpoints give a uint8 mask (``threshold``) or, with ``threshold=None``, float
    probabilities; a pretraining checkpoint (or published weights) gives the restored [0, 1] volume."""
    dev = resolve_device(device)
    obj = read_checkpoint(weights)
    model = load_model(obj, map_location="cpu", source=weights)
    if isinstance(model, GenesisClassifier):
        raise UsageError(f"{weights}: a classification checkpoint; predict needs a U-Net (segmentation or pretraining)")
    kind = obj.get("kind", "published")
    pre = D.Preprocessing.from_dict(obj.get("preprocessing"))
    if cube is None:
        c = (obj.get("config") or {}).get("cube")
        cube = tuple(c) if c else (64, 64, 32)
    if not 0 <= overlap < 1:
        raise UsageError(f"--overlap: expected a fraction in [0, 1), got {overlap}")
    if threshold is not None and not 0 <= threshold <= 1:
        raise UsageError(f"--threshold: expected a value in [0, 1], got {threshold}")
    vol = D.load_volume(input_path, pre)
    model.to(dev)
    t0 = time.perf_counter()
    prob = sliding_window(model, vol.data, cube, overlap, batch_size, dev, amp)
    seg = kind.startswith("finetune-segmentation")
    if seg and threshold is not None:
        D.save_like((prob >= threshold).astype(np.uint8), vol, output_path, label=True)
    else:
        D.save_like(prob.astype(np.float32), vol, output_path, label=False)
    return {"output": output_path, "kind": kind, "shape": vol.original_shape, "time_s": time.perf_counter() - t0,
            "mask": bool(seg and threshold is not None)}
