"""Models Genesis self-supervised pretraining.

Cubes are read from the preprocessed store (:mod:`models_genesis.store`; raw inputs are
preprocessed into one first) by DataLoader worker processes, moved to the training device, and
corrupted there by ``genesis_ops.models_genesis`` (never in DataLoader workers); the U-Net learns
to restore them under an MSE loss (or, with ``corrupted_weight``, one weighted by the corruption
mask the same call returns: :func:`losses.corruption_weighted_mse`). Single process, or DDP under
``torchrun``. The loop, step and early stopping are the shared engine's (:mod:`models_genesis.engine`),
the checkpoints :mod:`models_genesis.checkpoint`'s, the run folder's lock :mod:`models_genesis.runfolder`'s.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import data
from . import data2d
from . import samplers
from .config import PretrainConfig
from .budget import check_resampled_size, check_training_memory
from .checkpoint import (
    CheckpointWriter,
    check_resume,
    checkpoint_payload,
    initialised_note,
    load_pretrained,
    read_checkpoint,
    restore_training,
)
from .errors import DivergedError
from .engine import Monitor, TrainStep, amp_dtype, autocast, fit, prepare_model
from .losses import restoration_loss
from .model import UNETS
from .quality import check_intensities, check_store_intensities
from .runfolder import RunFolder, check_start
from .utils import (
    DistInfo,
    Progress,
    SeedStream,
    UsageError,
    append_jsonl,
    derive_seed,
    log,
    resolve_device,
    rewrite_jsonl,
)

__all__ = ["PretrainConfig", "pretrain", "genesis_config", "make_optimizer", "batch_stats_eval"]


def genesis_config(cfg: PretrainConfig):
    """The ``genesis_ops.GenesisConfig`` of the run's transform settings (values in [0, 1])."""
    import genesis_ops as go

    return go.GenesisConfig(
        flip_p=cfg.flip_p,
        shuffle_p=cfg.shuffle_p,
        num_windows=cfg.num_windows,
        nonlinear_p=cfg.nonlinear_p,
        paint_p=cfg.paint_p,
        inpaint_rate=cfg.inpaint_rate,
        value_range=(0.0, 1.0),
    )


def make_optimizer(cfg: PretrainConfig, params):
    """Adam or the paper's SGD over ``params``, with a StepLR schedule.

    Returns:
        ``(optimizer, scheduler)``.
    """
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)
    return opt, sched


def _split(cfg: PretrainConfig, volumes: Sequence):
    """Training and validation volumes and regions: hold out whole volumes when there are several,
    else the last ``val_fraction`` of the slices of the single volume."""
    if cfg.val_fraction <= 0:
        return volumes, None, None, None
    if len(volumes) >= 2:
        nv = max(1, int(round(len(volumes) * cfg.val_fraction)))
        nv = min(nv, len(volumes) - 1)
        return volumes[:-nv], None, volumes[-nv:], None
    shape = volumes[0].spatial_shape if hasattr(volumes[0], "spatial_shape") else volumes[0].shape
    tr, va = data.split_regions(
        shape, cfg.val_fraction, data2d.sampling_cube(cfg.cube), axis=data2d.split_axis(shape, cfg.dims)
    )
    if va is None:
        return volumes, None, None, None
    return volumes, [tr], volumes, [va]


class batch_stats_eval:
    """Context: run BatchNorm layers on the current batch's statistics without touching their
    running statistics (the published model's normalisation). Used for pretraining validation:
    during short runs the running statistics lag far behind the weights and make the validation
    curve erratic."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.saved = []

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        for m in self.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                self.saved.append(
                    (
                        m,
                        m.training,
                        m.momentum,
                        m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None,
                    )
                )
                m.train()
                m.momentum = 0.0  # running = 1 * running + 0 * batch: unchanged
        return self.model

    def __exit__(self, *a):
        for m, tr, mom, nbt in self.saved:
            m.train(tr)
            m.momentum = mom
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)
        self.model.train(self.was_training)
        return False


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Run (or resume) pretraining.

    Args:
        cfg: the run's settings; None sizes and schedule are filled per device
            (:meth:`PretrainConfig.resolved`).

    Returns:
        ``{"out", "last", "best", "metrics" (paths), "stopped_early", "epochs_done", "step",
        "best_val", "history" (the metrics records), "time_s", "config" (resolved, as a dict)}``.
    """
    cfg.validate()
    dist_info = DistInfo()
    device = resolve_device(cfg.device)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    dist_info.init(device.type)
    main = dist_info.is_main

    def say(m):
        return log(m, main and not cfg.quiet)

    try:
        return _pretrain(cfg.resolved(device), device, dist_info, say)
    finally:
        dist_info.close()


# the settings a resumed run must share with the checkpoint
RESUME_KEYS = ("dims", "width", "norm", "cube", "channels")


def _read_resume(cfg: PretrainConfig, last_path: str) -> dict[str, Any] | None:
    """The checkpoint to resume from (None without --resume); its width, norm and cube must match."""
    if not cfg.resume:
        return None
    if not os.path.exists(last_path):
        raise UsageError(f"--resume: no checkpoint to resume at {last_path}")
    ckpt = read_checkpoint(last_path)
    check_resume(ckpt, cfg, last_path, "pretrain", RESUME_KEYS, needs=("scheduler",))
    return ckpt


def loss_name(cfg: PretrainConfig) -> str:
    """What the run's training loss is called in logs and plots."""
    return "MSE" if cfg.corrupted_weight is None else f"corruption-weighted MSE (W={cfg.corrupted_weight:g})"


class ValidationSet(NamedTuple):
    """The fixed validation cubes: corrupted ``inputs``, ``targets`` and the corruption ``masks``
    (each None without validation data)."""

    inputs: torch.Tensor | None
    targets: torch.Tensor | None
    masks: torch.Tensor | None


@dataclass
class PretrainRun:
    """What one pretraining run trains with: the pieces :class:`_PretrainTask` reads, by name."""

    cfg: PretrainConfig
    model: nn.Module  # the unwrapped model
    opt: torch.optim.Optimizer
    sched: Any  # the StepLR schedule
    pre: data.Preprocessing
    device: torch.device
    rank: int
    cubes: Any  # the training batches: samplers.StreamedCubes (3D, from the store) or samplers.RamCubes (2D)
    validation: ValidationSet
    monitor: Monitor
    history: list[dict[str, Any]]
    out: str
    say: Callable[[str], None]


class _PretrainTask:
    """The pretraining side of :func:`engine.fit`: corrupted cubes in, validation of the training
    loss (and the plain MSE) on fixed cubes, pictures."""

    def __init__(self, run: PretrainRun):
        import genesis_ops as go

        cfg = run.cfg
        self.go, self.gcfg = go, genesis_config(cfg)
        self.cfg, self.model, self.opt, self.sched, self.pre = cfg, run.model, run.opt, run.sched, run.pre
        self.device, self.rank = run.device, run.rank
        self.cubes = run.cubes
        self.val_inp, self.val_tgt, self.val_mask = run.validation
        # the masks are asked for only when the loss weighs them: the default step stays the plain op
        self.weighted = cfg.corrupted_weight is not None
        self.loss_fn, self.loss_name = restoration_loss(cfg.corrupted_weight), loss_name(cfg)
        self.dtype = amp_dtype(run.device, cfg.amp)
        self.monitor, self.history, self.out, self.say = run.monitor, run.history, run.out, run.say
        self.lr_now = cfg.lr

    def begin_epoch(self, epoch: int) -> tuple[Callable, str]:
        # per-(seed, rank, epoch, batch) streams: a resumed run draws exactly the cubes it would have drawn
        cfg = self.cfg
        batches = self.cubes.epoch(epoch, self.device)

        def next_batch():
            cubes, seed = next(batches)
            cubes = data2d.drop_slice_axis(cubes, cfg.dims)
            # on the training device; (input, target) or, weighted, (input, target, mask) for the loss
            return self.go.models_genesis(cubes, config=self.gcfg, seed=seed, return_masks=self.weighted)

        return next_batch, ""

    def _val_predictions(self, count: int):
        """Yield ``(start, prediction)`` for the validation batches covering the first ``count``
        cubes. Always whole ``batch_size`` batches, as in training: with batch statistics a
        prediction depends on the batch it is made in, so previews and the validation loss see the
        same outputs."""
        bs = self.cfg.batch_size
        with torch.no_grad(), batch_stats_eval(self.model):
            for i in range(0, count, bs):
                with autocast(self.device, self.dtype):
                    yield i, self.model(self.val_inp[i : i + bs])

    def evaluate(self) -> dict[str, float | None]:
        """Validation over the fixed corrupted cubes (batch statistics).

        Returns:
            ``{"val_loss": MSE}`` (None without validation cubes); with ``corrupted_weight``,
            ``{"val_loss": the weighted loss (mean over the validation batches, as the training
            loss is over steps), "val_mse": the plain MSE}``: the monitored ``val_loss`` is always
            the quantity training minimises, ``val_mse`` compares with unweighted runs.
        """
        if self.val_inp is None:
            return {"val_loss": None}
        tot, weighted, bs = 0.0, [], self.cfg.batch_size
        for i, pred in self._val_predictions(len(self.val_inp)):
            tot += F.mse_loss(pred.float(), self.val_tgt[i : i + bs].float(), reduction="sum").item()
            if self.weighted:
                weighted.append(self.loss_fn(pred, self.val_tgt[i : i + bs], self.val_mask[i : i + bs]).item())
        mse = tot / self.val_tgt.numel()
        return {"val_loss": sum(weighted) / len(weighted), "val_mse": mse} if self.weighted else {"val_loss": mse}

    def end_epoch(self, epoch: int, step: int, train_loss: float, prog: Progress, epoch_time: float):
        self.lr_now = self.opt.param_groups[0]["lr"]
        self.sched.step()
        val = self.evaluate()
        rec = {
            "epoch": epoch,
            "step": step,
            "train_loss": train_loss,
            **val,
            "lr": self.lr_now,
            "samples_per_s": prog.rate(),
            "epoch_time_s": round(epoch_time, 3),
        }
        self.rate, self.epoch_time = prog.rate(), epoch_time
        v = val["val_loss"]
        if v is not None and not math.isfinite(v):
            # as a non-finite training loss: stop before this epoch's checkpoints, so last.pt and
            # best.pt stay those of finite epochs
            raise DivergedError(
                f"validation {self.loss_name} became {v} at epoch {epoch}; last.pt and best.pt keep the "
                f"last finite epochs; try a lower --lr (now {self.lr_now:g})"
            )
        return rec, (v if v is not None else train_loss)

    def payload(self, epoch: int, step: int) -> dict[str, Any]:
        best = self.monitor.best if self.monitor.best is not None else float("inf")
        return checkpoint_payload(
            "pretrain",
            self.model,
            self.opt,
            self.cfg,
            epoch,
            step,
            scheduler=self.sched.state_dict(),
            best_val=float(best),
            bad_epochs=int(self.monitor.bad_epochs),
            preprocessing=self.pre.to_dict(),
            history=self.history,
        )

    def after_save(self, rec: dict[str, Any]) -> None:
        cfg = self.cfg
        self.write_pngs()
        self.say(
            f"epoch {rec['epoch']}/{cfg.epochs}: train {self.loss_name} {rec['train_loss']:.5f}"
            + (f", validation {self.loss_name} {rec['val_loss']:.5f}" if rec["val_loss"] is not None else "")
            + (f" (MSE {rec['val_mse']:.5f})" if rec.get("val_mse") is not None else "")
            + f", {self.rate:.1f} samples/s, {self.epoch_time:.1f}s"
            + (" (best)" if rec["best"] else "")
        )

    def write_pngs(self) -> None:
        """loss_curve.png, and restorations.png of the first ``previews`` validation cubes with
        their corruption masks."""
        from . import plots

        cfg, out = self.cfg, self.out
        plots.loss_curve(self.history, os.path.join(out, "loss_curve.png"), ylabel=self.loss_name)
        if cfg.previews and self.val_inp is not None:
            # previews may span several batches (--batch-size below --previews): predict each
            n = min(cfg.previews, len(self.val_inp))
            pred = torch.cat([p.float() for _, p in self._val_predictions(n)])[:n]

            def rows(t, dtype=torch.float32):  # one row per cube and channel (cube 0 channel 0, cube 0 channel 1, ...)
                return t[:n].to(dtype).cpu().numpy().reshape(-1, *t.shape[2:])

            c = self.val_inp.shape[1]
            what = (
                "validation patches: corrupted input / restoration / target / mask"
                if cfg.dims == 2
                else "validation cubes: corrupted input / restoration / target / mask (middle slice)"
            )
            plots.restoration_grid(
                rows(self.val_inp),
                rows(pred),
                rows(self.val_tgt),
                os.path.join(out, "restorations.png"),
                masks=rows(self.val_mask.expand(-1, c, *self.val_mask.shape[2:]), torch.uint8),
                title=what + (f"; rows: cube x channel ({c} channels)" if c > 1 else ""),
            )


def _validation_set(cfg: PretrainConfig, va_cubes, device, gcfg):
    """Fixed validation ``(input, target, mask)``: the same cubes (cut once from the held-out
    volumes; only the cubes are kept) and the same corruption every epoch (None, None, None
    without validation volumes). The masks (made once, in the same pass) serve the weighted
    validation loss and the pictures; input and target are those of a call without them, bit
    for bit."""
    import genesis_ops as go

    if va_cubes is None:
        return ValidationSet(None, None, None)
    v = data2d.drop_slice_axis(va_cubes.fixed_cubes(cfg.val_batches * cfg.batch_size, cfg.seed), cfg.dims).to(device)
    return ValidationSet(
        *go.models_genesis(v, config=gcfg, seed=derive_seed(cfg.seed, SeedStream.VAL_CORRUPTION), return_masks=True)
    )


def _cube_sources(cfg: PretrainConfig, paths, pre, out: str, dist_info: DistInfo, demo: bool, warn):
    """Where the training and validation cubes come from: ``(training cubes, validation cubes or
    None, number of inputs, channel names)``.

    3D: the store (``--data STORE``, or raw inputs preprocessed into ``OUT/store`` first, which a
    rerun or ``--resume`` reuses), streamed by DataLoader workers. 2D (images and slices): the
    volumes in memory. Validation holds out whole volumes when there are several, else the last
    ``val_fraction`` of the slices of the single volume. ``warn``: the main process's warnings
    (skipped files, data the preprocessing made constant)."""
    cube, main = data2d.sampling_cube(cfg.cube), dist_info.is_main
    common = dict(air_value=cfg.air_value, min_foreground=cfg.min_foreground)
    if cfg.dims == 2:  # images, and the axial slices of volumes (single-channel: config.check_dims)
        volumes = data2d.load_inputs(paths, pre, skip_bad=cfg.skip_bad, log=warn)
        check_intensities([(str(getattr(v, "path", "image")), v.data) for v in volumes], warn, "image")
        tr, tr_reg, va, va_reg = _split(cfg, volumes)
        tr_cubes = samplers.RamCubes(tr, cube, cfg.batch_size, cfg.seed, dist_info.rank, tr_reg, **common)
        va_cubes = samplers.RamCubes(va, cube, cfg.batch_size, cfg.seed, 0, va_reg, **common) if va else None
        return tr_cubes, va_cubes, len(volumes), tuple(volumes[0].channel_names)
    from .preprocess import ensure_store

    store, idx = ensure_store(
        paths,
        os.path.join(out, "store"),
        pre,
        channels=None if demo else data.channel_names(cfg.channels),
        workers=max(1, cfg.workers or 1),
        skip_bad=cfg.skip_bad,
        main=main,
        barrier=dist_info.barrier if dist_info.enabled else None,
        log=warn if main and not cfg.quiet else None,
    )
    check_store_intensities([store.entries[i] for i in idx], pre, warn)
    vols = [store[i] for i in idx]
    tr, tr_reg, va, va_reg = _split(cfg, vols)
    pos = {id(v): i for v, i in zip(vols, idx, strict=True)}

    def cubes(vs, regions, rank):
        return samplers.StoreCubes(
            store,
            cube,
            cfg.batch_size,
            pre,
            cfg.seed,
            rank,
            [pos[id(v)] for v in vs],
            regions,
            skip_bad=cfg.skip_bad,
            **common,
        )

    workers = (
        cfg.workers
        if cfg.workers is not None
        else samplers.default_workers(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    )
    tr_cubes = samplers.StreamedCubes(cubes(tr, tr_reg, dist_info.rank), cfg.steps_per_epoch, workers)
    return tr_cubes, (cubes(va, va_reg, 0) if va else None), len(idx), store.channel_names


def _pretrain(cfg: PretrainConfig, device: torch.device, dist_info: DistInfo, say) -> dict[str, Any]:
    out = os.path.abspath(cfg.out)
    check_training_memory(device, UNETS[cfg.dims], cfg.width, cfg.batch_size, cfg.cube)
    check_resampled_size(cfg.data, cfg.spacing)
    check_start(cfg.out, cfg.resume, cfg.overwrite)  # every process, before the main one writes
    dist_info.barrier()
    # the main process holds the folder's lock for the whole run
    with RunFolder(cfg.out, cfg.resume, cfg.overwrite) if dist_info.is_main else contextlib.nullcontext():
        return _run(cfg, device, dist_info, say, out)


def _run(cfg: PretrainConfig, device: torch.device, dist_info: DistInfo, say, out: str) -> dict[str, Any]:
    t_start = time.perf_counter()
    main = dist_info.is_main
    writer = CheckpointWriter(out)
    metrics_path = os.path.join(out, "metrics.jsonl")
    ckpt = _read_resume(cfg, writer.last)
    pre = data.Preprocessing.from_config(cfg)
    demo = cfg.data is None
    paths = [data.DEMO_CT] if demo else list(cfg.data)

    def warn(m):  # --skip-bad's warnings: once, from the main process, silenced by --quiet
        if main and not cfg.quiet:
            print(m, flush=True)

    tr_cubes, va_cubes, n_inputs, names = _cube_sources(cfg, paths, pre, out, dist_info, demo, warn)
    n_ch = len(names) or 1
    say(
        f"genesis-ops pretrain{' (2D)' if cfg.dims == 2 else ''}: "
        f"{'demo CT (bundled)' if demo else f'{n_inputs} input(s)'}, "
        + (f"{n_ch} channels ({', '.join(names)}), " if n_ch > 1 else "")
        + f"device {device}, world size {dist_info.world_size}, width {cfg.width}, "
        f"cube {'x'.join(map(str, cfg.cube))}, "
        f"batch {cfg.batch_size}/process, {cfg.epochs} epochs x {cfg.steps_per_epoch} steps, "
        f"{cfg.optimizer} lr {cfg.lr:g}, out {out}"
    )

    torch.manual_seed(derive_seed(cfg.seed, dist_info.rank, SeedStream.MODEL_INIT))
    # every channel is restored: C in, C out
    model = UNETS[cfg.dims](in_channels=n_ch, n_classes=n_ch, width=cfg.width, norm=cfg.norm).to(device)
    if cfg.init_weights and ckpt is None:
        load_pretrained(model, cfg.init_weights, strict=True, adapt_single_channel=True)
        say(f"initialised from {cfg.init_weights}" + initialised_note(cfg.init_weights, n_ch))
    opt, sched = make_optimizer(cfg, model.parameters())
    start_epoch, step_count, best_val, bad_epochs, history = 1, 0, float("inf"), 0, []
    if ckpt is not None:
        rp = restore_training(ckpt, model, opt, sched, source=writer.last)
        start_epoch, step_count, bad_epochs, history = rp.start_epoch, rp.step, rp.bad_epochs, rp.history
        best_val = float(ckpt.get("best_val", float("inf")))
        if main:
            rewrite_jsonl(metrics_path, history)
        say(f"resumed from {writer.last} at epoch {start_epoch - 1} (step {step_count})")

    monitor = Monitor("min", cfg.patience, best=best_val, bad_epochs=bad_epochs)
    val_set = _validation_set(cfg, va_cubes, device, genesis_config(cfg))
    task = _PretrainTask(
        PretrainRun(
            cfg=cfg,
            model=model,
            opt=opt,
            sched=sched,
            pre=pre,
            device=device,
            rank=dist_info.rank,
            cubes=tr_cubes,
            validation=val_set,
            monitor=monitor,
            history=history,
            out=out,
            say=say,
        )
    )
    step = TrainStep(
        prepare_model(model, device, dist_info.enabled, cfg.compile), opt, device, loss_fn=task.loss_fn, amp=cfg.amp
    )
    step.steps = step_count

    if ckpt is None and main:
        if os.path.exists(metrics_path):
            os.remove(metrics_path)
        v0 = task.evaluate()
        rec = {"epoch": 0, "step": 0, "train_loss": None, **v0, "lr": cfg.lr}
        history.append(rec)
        append_jsonl(metrics_path, rec)
        if v0["val_loss"] is not None:
            say(f"epoch 0: validation {task.loss_name} before training {v0['val_loss']:.5f}")

    epoch, stopped = fit(
        step,
        task,
        model=model,
        epochs=cfg.epochs,
        steps_per_epoch=cfg.steps_per_epoch,
        monitor=monitor,
        writer=writer,
        history=history,
        metrics_path=metrics_path,
        start_epoch=start_epoch,
        dist=dist_info,
        show_progress=not cfg.quiet,
        log_every=cfg.log_every,
        say=say,
    )
    tr_cubes.close()
    if main:
        writer.finish(had_best=monitor.best is not None)
    best = monitor.best if monitor.best is not None else float("inf")
    result: dict[str, Any] = {
        "out": out,
        "last": writer.last,
        "best": writer.best,
        "metrics": metrics_path,
        "stopped_early": stopped,
        "epochs_done": epoch,
        "step": step.steps,
        "best_val": best,
        "history": history,
        "time_s": time.perf_counter() - t_start,
        "config": asdict(cfg),
    }
    if main:
        say(
            f"done in {result['time_s']:.1f}s: checkpoints {writer.last}, {writer.best}; metrics {metrics_path}; "
            f"pictures {os.path.join(out, 'loss_curve.png')}, {os.path.join(out, 'restorations.png')}"
        )
    return result
