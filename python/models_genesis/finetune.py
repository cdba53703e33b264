"""Fine-tuning: segmentation (U-Net, Dice + BCE) and classification (encoder + MLP head).

Data, model building and evaluation are here; the step, loop, checkpoints and early stopping are
the shared engine's (:mod:`models_genesis.engine`), whole-volume inference is
:mod:`models_genesis.inferers`, metrics :mod:`models_genesis.metrics`, losses
:mod:`models_genesis.losses`.
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import replace
from typing import Any
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from . import data
from . import data2d
from .config import DEFAULT_PRETRAIN_OUT, FinetuneConfig, auto_sizes, default_out
from .budget import check_resampled_size, check_training_memory
from .checkpoint import (
    CheckpointInfo,
    CheckpointWriter,
    check_resume,
    checkpoint_payload,
    generator_states,
    initialised_note,
    inspect_checkpoint,
    load_pretrained,
    read_checkpoint,
    restore_training,
)
from .engine import Monitor, TrainStep, fit, prepare_model
from .inferers import sliding_window
from .losses import classification_loss, dice_bce_loss
from .metrics import DiceIoU, check_label_map, dice_iou, roc_auc
from .model import UNETS, GenesisClassifier, encoder_modules
from .quality import check_intensities
from .runfolder import RunFolder, check_start
from .utils import Progress, SeedStream, UsageError, derive_seed, log, resolve_device, rewrite_jsonl

__all__ = ["FinetuneConfig", "finetune", "finetune_demo", "weights_info", "build_model_for"]


# ----------------------------------------------------------------------------------------------
# data


def _foreground(lab: np.ndarray, values: Sequence[int] | None) -> np.ndarray:
    if values:
        return np.isin(np.rint(lab).astype(np.int64), list(values)).astype(np.float32)
    return (lab > 0).astype(np.float32)


def _read_csv(path: str, flag: str = "--csv") -> tuple[list[str], list[int]]:
    if not os.path.isfile(path):
        raise UsageError(f"{flag}: {path}: no such file")
    imgs, labs = [], []
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 2:
                raise UsageError(f"{flag}: {path}:{n}: expected 'path,label'")
            if n == 1 and not row[1].strip().lstrip("-").isdigit():
                continue  # header
            p = row[0].strip()
            imgs.append(p if os.path.isabs(p) else os.path.join(base, p))
            try:
                labs.append(int(row[1]))
            except ValueError:
                raise UsageError(f"{flag}: {path}:{n}: label {row[1]!r} is not an integer") from None
    if not imgs:
        raise UsageError(f"{flag}: {path}: no rows")
    return imgs, labs


# affines of an image and its label agree to float32 rounding (as `evaluate` asks of masks and labels)
AFFINE_TOLERANCE = 1e-3


def _load_pairs(img_paths: Sequence, lab_paths: Sequence[str], cfg: FinetuneConfig, pre: data.Preprocessing):
    """Channel-first image arrays ``(C, X, Y, Z)`` and foreground masks (``cfg.label_values``, else
    label > 0) of matching files (2D: single-channel images or stacks of slices)."""
    imgs, labs = [], []
    vols = []
    # 2D: images or volumes of slices (single-channel); 3D: files, 4D files or channel subjects
    load, load_label = (data2d.load_input, data2d.load_input) if cfg.dims == 2 else (data.load_image, data.load_volume)
    for ip, lp in zip(img_paths, lab_paths, strict=True):
        v = load(ip, pre)
        lv = load_label(lp, pre, label=True)
        check_label_map(lv.data, lp)  # an image given as --labels would train on "everything > 0"
        if v.spatial_shape != lv.data.shape:
            raise data.VolumeError(
                f"{lp}: label shape {lv.data.shape} differs from image {v.path} shape {v.spatial_shape}"
            )
        # the same shape is not the same grid: a mirrored or shifted label would train on garbage
        diff = float(np.abs(np.asarray(v.affine, np.float64) - np.asarray(lv.affine, np.float64)).max())
        if diff > AFFINE_TOLERANCE:
            raise data.VolumeError(
                f"{lp}: label affine differs from image {v.path}'s (largest difference {diff:.3g}); the label "
                "does not lie on the image grid: resample it onto the image"
            )
        vols.append(v)
        imgs.append(v.channel_first())  # (C, X, Y, Z)
        labs.append(_foreground(lv.data, cfg.label_values))
    data.channel_count(vols)
    check_intensities(
        [(str(getattr(v, "path", "image")), a) for v, a in zip(vols, imgs, strict=True)],
        (lambda m: log(m, not cfg.quiet)),
        cfg.modality if cfg.dims == 3 else "image",
    )
    return imgs, labs


def _label_paths(cfg: FinetuneConfig, images, labels, flag: str) -> tuple[list, list[str]]:
    """Image sources (files, or channel subjects with ``--channels``; 2D: images or volumes of
    slices) and their label files, one per image."""
    find = data2d.find_inputs if cfg.dims == 2 else data.find_volumes
    img_paths = data.image_sources(images, data.channel_names(cfg.channels), find=find)
    if not labels:
        raise UsageError(f"{flag}: segmentation needs one label volume per image")
    lab_paths = find(labels)
    if len(img_paths) != len(lab_paths):
        raise UsageError(f"{flag}: got {len(lab_paths)} label volume(s) for {len(img_paths)} image(s)")
    return img_paths, lab_paths


def _segmentation_data(cfg: FinetuneConfig, pre: data.Preprocessing):
    """Training pairs ``(image, mask)``, validation cases ``(name, image, mask)`` and a description of
    the validation, chosen so that validation holds foreground:

    * ``--val-images/--val-labels``: those volumes (all the others train);
    * several volumes: whole volumes (:func:`data.choose_validation_volumes`);
    * one volume: two boxes on either side of a one-cube gap (:func:`data.split_one_volume`);
    * ``--val-fraction 0``: no held-out data, validation on the training volumes.

    Raises:
        data.SplitError: no split gives validation (and training) foreground; one line saying what to pass.
    """
    if cfg.demo:
        img_paths, lab_paths = [data.DEMO_CT], [data.DEMO_LABELS]
    else:
        img_paths, lab_paths = _label_paths(cfg, cfg.images, cfg.labels, "--labels")
    imgs, labs = _load_pairs(img_paths, lab_paths, cfg, pre)
    names = [os.path.basename(getattr(p, "name", p)) for p in img_paths]
    if cfg.val_images:
        vi, vl = _label_paths(cfg, cfg.val_images, cfg.val_labels, "--val-labels")
        vimgs, vlabs = _load_pairs(vi, vl, cfg, pre)
        va = [(os.path.basename(getattr(p, "name", p)), a, b) for p, a, b in zip(vi, vimgs, vlabs, strict=True)]
        if not any(b.any() for _, _, b in va):
            raise data.SplitError(
                "--val-labels: the validation labels have no foreground voxels, so Dice would "
                "measure nothing; pass validation volumes that contain the structure"
            )
        return img_paths, list(zip(imgs, labs, strict=True)), va, f"{len(va)} volume(s) from --val-images"
    fg = [int(b.sum()) for b in labs]
    if cfg.val_fraction <= 0 and not any(fg):  # the splits below refuse this case themselves
        what = f"label values {cfg.label_values}" if cfg.label_values else "label > 0"
        raise data.SplitError(
            f"{', '.join(map(str, lab_paths))}: no foreground voxels ({what}), so there is nothing to "
            "segment and Dice would measure nothing; check --labels (and --label-values)"
        )
    if cfg.val_fraction <= 0:
        return (
            img_paths,
            list(zip(imgs, labs, strict=True)),
            list(zip(names, imgs, labs, strict=True)),
            "the training data (--val-fraction 0)",
        )
    if len(imgs) >= 2:
        tr_idx, va_idx = data.choose_validation_volumes(fg, cfg.val_fraction, lab_paths)
        tr = [(imgs[i], labs[i]) for i in tr_idx]
        va = [(names[i], imgs[i], labs[i]) for i in va_idx]
        return img_paths, tr, va, "whole volumes " + ", ".join(names[i] for i in va_idx)
    # 2D: the cube is a (px, py, 1) window of the slice stack, so a one-slice gap separates the sides
    sp = data.split_one_volume(
        labs[0], data2d.sampling_cube(cfg.cube), cfg.val_fraction, name=lab_paths[0], image=imgs[0]
    )
    tr = [(imgs[0][(slice(None),) + sp.train], labs[0][sp.train])]
    va = [(names[0], imgs[0][(slice(None),) + sp.val], labs[0][sp.val])]
    return img_paths, tr, va, f"{names[0]} {sp.describe()}"


def _classification_data(cfg: FinetuneConfig, csv_path: str | None, images, labels, flag: str):
    """Image paths (or channel subjects) and integer class labels from a CSV or from images plus
    ``labels`` (``flag`` names the labels' option in errors)."""
    names = data.channel_names(cfg.channels)
    if csv_path:
        csv_flag = "--val-csv" if flag.startswith("--val") else "--csv"
        paths, ys = _read_csv(csv_path, csv_flag)
        if names is not None:  # each row names one subject through a {channel} pattern
            subjects = [data.find_subjects([p], names) for p in paths]
            bad = [p for p, s in zip(paths, subjects, strict=True) if len(s) != 1]
            if bad:
                raise UsageError(f"{csv_flag}: {bad[0]}: expected one subject per row")
            paths = [s[0] for s in subjects]
    else:
        paths = data.image_sources(images, names)
        try:
            ys = [int(v) for v in (labels or [])]
        except ValueError:
            raise UsageError(f"{flag}: classification labels must be integers, one per image") from None
        if len(ys) != len(paths):
            raise UsageError(f"{flag}: got {len(ys)} class label(s) for {len(paths)} image(s)")
    if min(ys) < 0:
        raise UsageError(f"{flag}: class labels must be >= 0")
    return paths, ys


# ----------------------------------------------------------------------------------------------
# model


def weights_info(weights: str) -> CheckpointInfo:
    """What a weights file says about its model (:func:`checkpoint.inspect_checkpoint`)."""
    return inspect_checkpoint(weights)


def _check_dims(cfg: FinetuneConfig, winfo: CheckpointInfo) -> CheckpointInfo:
    if winfo.dims != cfg.dims:
        raise UsageError(f"--dims {cfg.dims}: {cfg.weights} holds {winfo.dims}D weights")
    return winfo


def build_model_for(
    cfg: FinetuneConfig, n_out: int, say: Callable[[str], None] = print, in_channels: int = 1
) -> nn.Module:
    """The task's model, initialised from ``cfg.weights`` when given (head re-initialised).

    Args:
        cfg: the run's settings (task, width, norm, weights, device).
        n_out: classification outputs (1 = one sigmoid output); ignored for segmentation.
        in_channels: channels of the data; single-channel weights are adapted to several
            (:func:`model.adapt_channels`), other mismatches are an error.

    Returns:
        A :class:`UNet3D` (:class:`UNet2D` with ``dims`` 2; C -> 1, sigmoid) for segmentation, a
        :class:`GenesisClassifier` otherwise.
    """
    width, norm, winfo = cfg.width, cfg.norm, None
    if cfg.weights:
        winfo = _check_dims(cfg, weights_info(cfg.weights))
        if width is not None and width != winfo.width:
            raise UsageError(f"--width {width} differs from the width {winfo.width} of {cfg.weights}")
        width = winfo.width
        norm = winfo.norm if cfg.norm == "batch" else cfg.norm
        if winfo.in_channels not in (1, in_channels):
            raise UsageError(
                f"--weights {cfg.weights}: trained on {winfo.in_channels} channel(s), the data has {in_channels}"
            )
    if width is None:
        width = auto_sizes(resolve_device(cfg.device), cfg.dims)["width"]
    build = UNETS[cfg.dims] if cfg.task == "segmentation" else GenesisClassifier
    check_training_memory(resolve_device(cfg.device), build, width, cfg.batch_size, cfg.cube)
    if cfg.task == "segmentation":
        model = UNETS[cfg.dims](in_channels=in_channels, n_classes=1, width=width, norm=norm, activation="sigmoid")
    else:
        model = GenesisClassifier(in_channels=in_channels, n_classes=n_out, width=width, norm=norm)
    if winfo is not None:
        load_pretrained(model, winfo.obj, strict=True, skip_head=True, source=cfg.weights, adapt_single_channel=True)
        say(
            f"initialised from {cfg.weights} (width {width}; head re-initialised"
            + initialised_note(winfo.obj, in_channels)
            + ")"
        )
    else:
        say(f"training from scratch (width {width})")
    return model


def _set_encoder_trainable(model: nn.Module, trainable: bool) -> None:
    for m in encoder_modules(model):
        for p in m.parameters():
            p.requires_grad_(trainable)


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # the U-Net's forward applies its sigmoid; the losses take logits
    return model.forward_logits(x) if isinstance(model, tuple(UNETS.values())) else model(x)


# ----------------------------------------------------------------------------------------------
# training


class _FinetuneTask:
    """The fine-tuning side of :func:`engine.fit`: batches from ``sample_fn``, metrics from
    ``eval_fn``, the encoder frozen for the first epochs. Checkpoints also hold what a resumed
    run needs to continue exactly: the history, the monitor's state and ``generators``' states."""

    def __init__(
        self, cfg: FinetuneConfig, model, opt, sample_fn, eval_fn, key: str, meta, say, monitor, history, generators
    ):
        self.cfg, self.model, self.opt = cfg, model, opt
        self.sample_fn, self.eval_fn, self.key, self.meta, self.say = sample_fn, eval_fn, key, meta, say
        self.monitor, self.history, self.generators = monitor, history, generators
        self.metrics: dict[str, Any] = {}

    def begin_epoch(self, epoch: int):
        self.frozen = epoch <= self.cfg.freeze_encoder_epochs
        if self.cfg.lr_decay:
            for g in self.opt.param_groups:
                g["lr"] = self.cfg.lr * (self.cfg.epochs - epoch + 1) / self.cfg.epochs
        _set_encoder_trainable(self.model, not self.frozen)
        return self.sample_fn, " (encoder frozen)" if self.frozen else ""

    def end_epoch(self, epoch: int, step: int, train_loss: float, prog: Progress, epoch_time: float):
        self.metrics = self.eval_fn(self.model)
        rec = {
            "epoch": epoch,
            "step": step,
            "train_loss": train_loss,
            **self.metrics,
            "samples_per_s": prog.rate(),
            "encoder_frozen": self.frozen,
        }
        return rec, self.metrics.get(self.key)

    def payload(self, epoch: int, step: int) -> dict[str, Any]:
        best = self.monitor.best if self.monitor.best is not None else float("-inf")
        return checkpoint_payload(
            f"finetune-{self.cfg.task}",
            self.model,
            self.opt,
            self.cfg,
            epoch,
            step,
            metrics=dict(self.metrics),
            best_val=float(best),
            bad_epochs=int(self.monitor.bad_epochs),
            history=self.history,
            generators=generator_states(self.generators),
            **self.meta,
        )

    def after_save(self, rec: dict[str, Any]) -> None:
        self.say(
            f"epoch {rec['epoch']}/{self.cfg.epochs}: train loss {rec['train_loss']:.4f}, "
            + ", ".join(f"{k} {v:.4f}" for k, v in self.metrics.items() if isinstance(v, float))
            + (" (best)" if rec["best"] else "")
        )


# the settings a resumed fine-tuning run must share with the checkpoint (the width is checked by
# loading the weights)
RESUME_KEYS = ("dims", "norm", "cube", "channels")


def _train(
    cfg: FinetuneConfig,
    model: nn.Module,
    device,
    say,
    sample_fn,
    loss_fn,
    eval_fn,
    key: str,
    meta: dict[str, Any],
    generators: dict[str, torch.Generator] | None = None,
) -> dict[str, Any]:
    """Train ``model`` with the shared engine; ``best.pt`` is the epoch with the highest ``key``.
    ``generators``: the task's own random generators (saved in checkpoints, restored on resume)."""
    out = os.path.abspath(cfg.out)
    with RunFolder(cfg.out, cfg.resume, cfg.overwrite):
        return _train_in(cfg, model, device, say, sample_fn, loss_fn, eval_fn, key, meta, generators or {}, out)


def _train_in(cfg, model, device, say, sample_fn, loss_fn, eval_fn, key, meta, generators, out) -> dict[str, Any]:
    metrics_path = os.path.join(out, "metrics.jsonl")
    writer = CheckpointWriter(out)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start_epoch, step_count, best_val, bad_epochs, history = 1, 0, None, 0, []
    if cfg.resume:
        if not os.path.exists(writer.last):
            raise UsageError(f"--resume: no checkpoint to resume at {writer.last}")
        ckpt = read_checkpoint(writer.last)
        check_resume(ckpt, cfg, writer.last, f"finetune-{cfg.task}", RESUME_KEYS, needs=("history", "generators"))
        rp = restore_training(ckpt, model, opt, source=writer.last, generators=generators)
        start_epoch, step_count, best_val, bad_epochs, history = (
            rp.start_epoch,
            rp.step,
            rp.best_val,
            rp.bad_epochs,
            rp.history,
        )
        rewrite_jsonl(metrics_path, history)
        say(f"resumed from {writer.last} at epoch {start_epoch - 1} (step {step_count})")
    elif os.path.exists(metrics_path):
        os.remove(metrics_path)
    step = TrainStep(prepare_model(model, device), opt, device, loss_fn, amp=cfg.amp, forward=_logits)
    step.steps = step_count
    monitor = Monitor("max", cfg.patience, best=best_val, bad_epochs=bad_epochs)
    t_start = time.perf_counter()
    fit(
        step,
        _FinetuneTask(cfg, model, opt, sample_fn, eval_fn, key, meta, say, monitor, history, generators),
        model=model,
        epochs=cfg.epochs,
        steps_per_epoch=cfg.steps_per_epoch,
        monitor=monitor,
        writer=writer,
        history=history,
        metrics_path=metrics_path,
        start_epoch=start_epoch,
        show_progress=not cfg.quiet,
        log_every=cfg.log_every,
        say=say,
    )
    writer.finish(had_best=monitor.best is not None)
    if monitor.best is None:
        say(f"warning: {key} was undefined in every epoch, so no epoch was chosen; best.pt is a copy of last.pt")
    best = [r for r in history if r["best"]]
    return {
        "out": out,
        "best": writer.best,
        "last": writer.last,
        "metrics": metrics_path,
        "best_metrics": best[-1] if best else history[-1],
        "history": history,
        "time_s": time.perf_counter() - t_start,
    }


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune one model.

    Args:
        cfg: the run's settings. Without ``cube``, the cube the weights were pretrained on (ours),
            else the device's default; None schedule: see :meth:`FinetuneConfig.resolved`.

    Returns:
        ``{"out", "best", "last", "metrics" (paths), "best_metrics" (the best epoch's record),
        "history", "time_s"}`` plus ``dice``/``iou`` (segmentation) or ``auc``/``accuracy``
        (classification) of the best epoch.
    """
    cfg.validate()
    device = resolve_device(cfg.device)
    if cfg.cube is None and cfg.weights:  # default to the cube the weights were pretrained on
        cube = _check_dims(cfg, weights_info(cfg.weights)).cube
        if cube:
            cfg = replace(cfg, cube=tuple(int(c) for c in cube))
    cfg = cfg.resolved(device)
    check_start(cfg.out, cfg.resume, cfg.overwrite)  # before any data is loaded

    def say(m):
        return log(m, not cfg.quiet)

    torch.manual_seed(derive_seed(cfg.seed, SeedStream.FINETUNE_INIT))
    if cfg.task == "segmentation":
        return _finetune_seg(cfg, device, say)
    return _finetune_cls(cfg, device, say)


def _finetune_seg(cfg: FinetuneConfig, device, say) -> dict[str, Any]:
    import genesis_ops as go

    pre = data.Preprocessing.from_config(cfg)
    check_resampled_size(cfg.images, cfg.spacing)
    img_paths, tr, va, val_desc = _segmentation_data(cfg, pre)
    val_fg, train_fg = sum(int(b.sum()) for _, _, b in va), sum(int(b.sum()) for _, b in tr)
    say(
        f"genesis-ops finetune segmentation{' (2D)' if cfg.dims == 2 else ''}: {len(img_paths)} input(s) "
        f"({'bundled demo' if cfg.demo else 'user data'}), "
        f"foreground {'labels ' + str(cfg.label_values) if cfg.label_values else 'label > 0'}, "
        f"{val_fg} validation foreground voxels (validation: {val_desc}; {train_fg} training foreground voxels), "
        f"device {device}"
    )
    model = build_model_for(cfg, 1, say, in_channels=tr[0][0].shape[0])
    cube = data2d.sampling_cube(cfg.cube)  # 2D: (px, py, 1) windows of the slice stacks
    sampler = data.PairSampler(
        [a for a, _ in tr],
        [b for _, b in tr],
        cube,
        torch.Generator().manual_seed(derive_seed(cfg.seed, SeedStream.SEG_CUBES)),
        cfg.fg_fraction,
    )
    flip_seeds = torch.Generator().manual_seed(derive_seed(cfg.seed, SeedStream.SEG_FLIPS))

    def sample_fn():
        x, y = sampler.sample(cfg.batch_size)
        both = data2d.drop_slice_axis(torch.cat([x, y], dim=1), cfg.dims).to(device)
        s = int(torch.randint(0, 2**62, (1,), generator=flip_seeds).item())
        both = go.flip(both, p=0.4, seed=s)  # same flips for image and label (shared per sample)
        return both[:, : x.shape[1]], both[:, x.shape[1] :]

    last_probs: list = []  # the latest validation probabilities, for the demo's pictures

    def eval_fn(m):
        overall, cases = DiceIoU(), []
        last_probs.clear()
        for name, a, b in va:
            prob = sliding_window(
                m, a, cube, cfg.overlap, cfg.batch_size, device, cfg.amp, fn=data2d.per_slice if cfg.dims == 2 else None
            )
            last_probs.append((name, a, b, prob))
            pred, truth = prob >= cfg.threshold, b > 0.5
            overall.update(pred, truth)
            d, i = dice_iou(pred, truth)
            cases.append({"name": name, "dice": d, "iou": i, "foreground": int(truth.sum())})
        dice, iou = overall.compute()
        # overall: counts pooled over the validation volumes; mean: the mean of their scores
        return {
            "val_dice": dice,
            "val_iou": iou,
            "val_dice_mean": float(np.mean([c["dice"] for c in cases])),
            "val_cases": cases,
        }

    meta = {"preprocessing": pre.to_dict(), "label_values": cfg.label_values, "validation": val_desc}
    gens = {"cubes": sampler.gen, "flips": flip_seeds}
    res = _train(cfg, model, device, say, sample_fn, dice_bce_loss, eval_fn, "val_dice", meta, gens)
    res["dice"] = res["best_metrics"]["val_dice"]
    res["iou"] = res["best_metrics"]["val_iou"]
    res["validation"] = val_desc
    res["val_predictions"] = list(last_probs)  # (name, image, label, probability) of the last epoch
    return res


class ClassificationCases:
    """Classification's batches and evaluation: random crops of the training cases, the centre
    crop of each validation case, AUC and accuracy.

    Args:
        vols: every case's ``(C, X, Y, Z)`` array, padded to at least the cube.
        ys: every case's class.
        tr_idx, va_idx: indices of the training and validation cases.
        n_classes: 1 (one sigmoid output for two classes) or the softmax classes.
        cfg: the run's settings (``cube``, ``batch_size``, ``threshold``).
        gen: the generator of the training draws (cases, then crop offsets).
        device: where validation runs.
    """

    def __init__(self, vols, ys, tr_idx, va_idx, n_classes: int, cfg: FinetuneConfig, gen, device):
        self.vols, self.ys, self.tr_idx, self.va_idx = vols, ys, tr_idx, va_idx
        self.n_classes, self.cfg, self.gen, self.device = n_classes, cfg, gen, device

    def crop(self, a: np.ndarray, random_crop: bool) -> np.ndarray:
        """A ``cfg.cube`` crop of ``a``: at a random offset (drawn from ``gen``) or the centre."""
        cube = self.cfg.cube
        if random_crop:
            o = [
                int(torch.randint(0, n - c + 1, (1,), generator=self.gen).item())
                for n, c in zip(a.shape[1:], cube, strict=True)
            ]
        else:
            o = [(n - c) // 2 for n, c in zip(a.shape[1:], cube, strict=True)]
        return np.asarray(a[:, o[0] : o[0] + cube[0], o[1] : o[1] + cube[1], o[2] : o[2] + cube[2]], dtype=np.float32)

    def sample(self):
        """One training batch: ``(crops (B, C, X, Y, Z), targets)`` (float ``(B, 1)`` for one output)."""
        pick = torch.randint(0, len(self.tr_idx), (self.cfg.batch_size,), generator=self.gen).tolist()
        x = torch.from_numpy(np.stack([self.crop(self.vols[self.tr_idx[k]], True) for k in pick]))
        y = torch.tensor([self.ys[self.tr_idx[k]] for k in pick])
        return x, (y.float()[:, None] if self.n_classes == 1 else y)

    def evaluate(self, m: nn.Module) -> dict[str, float]:
        """``{"val_auc", "val_accuracy"}`` over the validation cases' centre crops."""
        n_classes = self.n_classes
        m.eval()
        scores, preds = [], []
        with torch.no_grad():
            for k in self.va_idx:
                x = torch.from_numpy(self.crop(self.vols[k], False))[None].to(self.device)
                lg = m(x).float().cpu()[0]
                if n_classes == 1:
                    p = float(torch.sigmoid(lg[0]))
                    scores.append(p)
                    preds.append(int(p >= self.cfg.threshold))
                else:
                    pr = torch.softmax(lg, 0)
                    scores.append(pr.numpy())
                    preds.append(int(pr.argmax()))
        m.train()
        truth = [self.ys[k] for k in self.va_idx]
        acc = float(np.mean([p == t for p, t in zip(preds, truth, strict=True)]))
        if n_classes == 1:
            auc = roc_auc(scores, truth)
        else:  # one-vs-rest mean over the classes present
            aucs = [roc_auc([s[c] for s in scores], [int(t == c) for t in truth]) for c in range(n_classes)]
            aucs = [a for a in aucs if not math.isnan(a)]
            auc = float(np.mean(aucs)) if aucs else float("nan")
        return {"val_auc": auc, "val_accuracy": acc}


def _finetune_cls(cfg: FinetuneConfig, device, say) -> dict[str, Any]:
    pre = data.Preprocessing.from_config(cfg)
    paths, ys = _classification_data(cfg, cfg.csv, cfg.images, cfg.labels, "--labels")
    check_resampled_size([p for p in paths if isinstance(p, str)], cfg.spacing)
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, SeedStream.CLS_DRAWS))
    if cfg.val_csv or cfg.val_images:
        vpaths, vys = _classification_data(cfg, cfg.val_csv, cfg.val_images, cfg.val_labels, "--val-labels")
        missing = sorted(set(ys) - set(vys))
        if missing:
            raise data.SplitError(
                f"--val-labels: class(es) {', '.join(map(str, missing))} of the training data are "
                "missing from the validation data; pass validation cases of every class"
            )
        tr_idx, va_idx = list(range(len(paths))), list(range(len(paths), len(paths) + len(vpaths)))
        paths, ys, val_desc = paths + vpaths, ys + vys, "given by --val-" + ("csv" if cfg.val_csv else "images")
    elif cfg.val_fraction > 0 and len(paths) >= 2:
        tr_idx, va_idx = data.stratified_split(ys, cfg.val_fraction, gen)
        val_desc = "stratified by class"
    else:
        tr_idx = va_idx = list(range(len(paths)))
        val_desc = "the training data (--val-fraction 0)" if cfg.val_fraction <= 0 else "the training data (one case)"
    n_classes = cfg.n_classes or (1 if max(ys) <= 1 else max(ys) + 1)
    if n_classes > 1 and max(ys) >= n_classes:
        raise UsageError(f"--n-classes {n_classes}: label {max(ys)} out of range")
    loaded = [data.load_image(p, pre) for p in paths]
    n_ch = data.channel_count(loaded)
    check_intensities([(str(getattr(v, "path", "image")), v.data) for v in loaded], say, cfg.modality)
    vols = [data.pad_to(v.channel_first(), (n_ch,) + tuple(cfg.cube), 0.0)[0] for v in loaded]  # (C, X, Y, Z)
    counts = lambda idx: "/".join(str(sum(ys[k] == c for k in idx)) for c in sorted(set(ys)))  # noqa: E731
    say(
        f"genesis-ops finetune classification: {len(paths)} volume(s), {n_classes if n_classes > 1 else 2} classes, "
        f"{len(tr_idx)} train / {len(va_idx)} validation (validation: {val_desc}; cases per class "
        f"{counts(tr_idx)} train, {counts(va_idx)} validation), device {device}"
    )
    model = build_model_for(cfg, n_classes, say, in_channels=n_ch)
    cases = ClassificationCases(vols, ys, tr_idx, va_idx, n_classes, cfg, gen, device)
    meta = {"preprocessing": pre.to_dict(), "validation": val_desc}
    key = "val_auc" if len(set(ys[k] for k in va_idx)) > 1 else "val_accuracy"
    res = _train(cfg, model, device, say, cases.sample, classification_loss, cases.evaluate, key, meta, {"draws": gen})
    res["auc"] = res["best_metrics"]["val_auc"]
    res["accuracy"] = res["best_metrics"]["val_accuracy"]
    return res


def finetune_demo(cfg: FinetuneConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """The demo: vertebra segmentation on the bundled CT, from the pretrained weights and from
    scratch with the same seeds and schedule, over ``cfg.seeds`` seeds (:func:`demo.run_demo`).

    Args:
        cfg: settings; ``cfg.weights`` (required) are the pretrained weights; runs go to
            ``cfg.out/pretrained/seed<k>`` and ``cfg.out/scratch/seed<k>``.

    Returns:
        :func:`demo.run_demo`'s result.
    """
    from . import demo

    cfg.validate()
    if not cfg.weights:
        d2 = " --dims 2" if cfg.dims == 2 else ""
        raise UsageError(
            f"finetune --demo: no pretrained weights; run `genesis-ops pretrain{d2}` first "
            f"(it writes {os.path.join(default_out(DEFAULT_PRETRAIN_OUT, cfg.dims), 'best.pt')}) "
            "or pass --weights"
        )
    return demo.run_demo(cfg, finetune, lambda w: weights_info(w).width, say)
