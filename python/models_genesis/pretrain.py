"""Models Genesis self-supervised pretraining.

Cubes are cut on the CPU from cached volumes (cheap slicing), moved to the training device, and
corrupted there by ``genesis_ops.models_genesis`` (never in DataLoader workers); the U-Net learns
to restore them under an MSE loss. Single process, or DDP under ``torchrun``.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import data as D
from .model import UNet3D, load_pretrained, read_checkpoint
from .utils import (DistInfo, Progress, UsageError, append_jsonl, atomic_save, derive_seed, log,
                    resolve_device, rng_state, set_rng_state)

# settings chosen automatically when left as None
CPU_AUTO = {"width": 8, "cube": (32, 32, 16), "batch_size": 8}
GPU_AUTO = {"width": 32, "cube": (64, 64, 32), "batch_size": 16}
DEMO_CPU = {"epochs": 8, "steps_per_epoch": 20}
DEMO_GPU = {"epochs": 20, "steps_per_epoch": 50}
DEFAULTS = {"epochs": 100, "steps_per_epoch": 100}


@dataclass
class PretrainConfig:
    data: Optional[List[str]] = None          # None: the bundled demo CT
    out: str = "runs/pretrain"
    epochs: Optional[int] = None
    steps_per_epoch: Optional[int] = None
    batch_size: Optional[int] = None          # per process
    cube: Optional[Tuple[int, int, int]] = None
    width: Optional[int] = None
    norm: str = "batch"
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    optimizer: str = "adam"                   # "adam" (default) or "sgd" (the paper's)
    lr: Optional[float] = None                # adam 1e-3, sgd 1.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_step_epochs: int = 40                  # StepLR: multiply by lr_gamma every N epochs
    lr_gamma: float = 0.5
    val_fraction: float = 0.2
    val_batches: int = 4
    patience: int = 20                        # early stopping; 0 disables
    amp: bool = True                          # CUDA only
    compile: bool = False
    # transforms (paper defaults)
    flip_p: float = 0.4
    shuffle_p: float = 0.5
    num_windows: int = 10000
    nonlinear_p: float = 0.9
    paint_p: float = 0.9
    inpaint_rate: float = 0.2
    # data
    modality: str = "ct"
    hu_window: Tuple[float, float] = (-1000.0, 1000.0)
    mri_norm: str = "percentile"
    spacing: Optional[Tuple[float, float, float]] = None
    min_foreground: float = 0.5
    air_value: float = 0.05
    skip_bad: bool = False
    init_weights: Optional[str] = None       # start from these weights (ours or published)
    previews: int = 4
    log_every: Optional[int] = None
    quiet: bool = False

    def validate(self) -> None:
        def pos(name, v):
            if v is not None and (not isinstance(v, int) or v < 1):
                raise UsageError(f"--{name.replace('_', '-')}: expected a positive integer, got {v!r}")
        for n in ("epochs", "steps_per_epoch", "batch_size", "width", "val_batches", "num_windows", "previews"):
            if n == "previews" and self.previews == 0:
                continue
            pos(n, getattr(self, n))
        if self.cube is not None:
            c = tuple(self.cube)
            if len(c) != 3 or any((not isinstance(s, int)) or s < 8 or s % 8 for s in c):
                raise UsageError(f"--cube: expected three positive multiples of 8, got {' '.join(map(str, c))}")
        for n in ("flip_p", "shuffle_p", "nonlinear_p", "paint_p", "inpaint_rate", "min_foreground"):
            v = getattr(self, n)
            if not 0.0 <= v <= 1.0:
                raise UsageError(f"--{n.replace('_', '-')}: expected a probability in [0, 1], got {v}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UsageError(f"--val-fraction: expected a fraction in [0, 1), got {self.val_fraction}")
        if self.optimizer not in ("adam", "sgd"):
            raise UsageError(f"--optimizer: expected adam or sgd, got {self.optimizer!r}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"--lr: expected a positive number, got {self.lr}")
        if self.patience < 0:
            raise UsageError(f"--patience: expected >= 0, got {self.patience}")
        if self.lr_step_epochs < 1:
            raise UsageError(f"--lr-step-epochs: expected a positive integer, got {self.lr_step_epochs}")


def genesis_config(cfg: PretrainConfig):
    import genesis_ops as go

    return go.GenesisConfig(flip_p=cfg.flip_p, shuffle_p=cfg.shuffle_p, num_windows=cfg.num_windows,
                            nonlinear_p=cfg.nonlinear_p, paint_p=cfg.paint_p,
                            inpaint_rate=cfg.inpaint_rate, value_range=(0.0, 1.0))


def resolve_auto(cfg: PretrainConfig, device: torch.device) -> PretrainConfig:
    """Fill the settings left as None: narrow width and small cubes on CPU, the paper's on CUDA;
    a short schedule for the demo."""
    auto = CPU_AUTO if device.type == "cpu" else GPU_AUTO
    demo = cfg.data is None
    sched = (DEMO_CPU if device.type == "cpu" else DEMO_GPU) if demo else DEFAULTS
    c = PretrainConfig(**asdict(cfg))
    for k in ("width", "cube", "batch_size"):
        if getattr(c, k) is None:
            setattr(c, k, auto[k])
    for k in ("epochs", "steps_per_epoch"):
        if getattr(c, k) is None:
            setattr(c, k, sched[k])
    if c.lr is None:
        c.lr = 1e-3 if c.optimizer == "adam" else 1.0
    c.cube = tuple(int(s) for s in c.cube)
    return c


def make_optimizer(cfg: PretrainConfig, params):
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)
    return opt, sched


def _samplers(cfg: PretrainConfig, volumes: Sequence[D.Volume]):
    """Training and validation cube samplers: hold out whole volumes when there are several,
    else the last ``val_fraction`` of the slices of the single volume."""
    if cfg.val_fraction <= 0:
        return volumes, None, None, None
    if len(volumes) >= 2:
        nv = max(1, int(round(len(volumes) * cfg.val_fraction)))
        nv = min(nv, len(volumes) - 1)
        return volumes[:-nv], None, volumes[-nv:], None
    tr, va = D.split_regions(volumes[0].data.shape, cfg.val_fraction, cfg.cube, axis=2)
    if va is None:
        return volumes, None, None, None
    return volumes, [tr], volumes, [va]


def _amp_context(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype), dtype
    return torch.autocast(device_type=device.type, enabled=False), None


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
                self.saved.append((m, m.training, m.momentum,
                                   m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None))
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


def checkpoint_payload(cfg, model, opt, sched, epoch, step, best_val, bad_epochs, history, pre):
    m = getattr(model, "module", model)
    m = getattr(m, "_orig_mod", m)
    return {
        "format": "models_genesis", "kind": "pretrain", "version": 1,
        "model": m.state_dict(), "model_config": m.config(),
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
        "epoch": int(epoch), "step": int(step), "best_val": float(best_val), "bad_epochs": int(bad_epochs),
        "rng": rng_state(), "config": _plain(asdict(cfg)), "preprocessing": pre.to_dict(),
        "history": history,
    }


def _plain(d):
    """Checkpoint-safe (weights_only) copy of a config dict: tuples become lists."""
    if isinstance(d, dict):
        return {k: _plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_plain(v) for v in d]
    return d


def pretrain(cfg: PretrainConfig) -> Dict[str, Any]:
    """Run (or resume) pretraining. Returns a summary dict (paths, losses, timings)."""
    cfg.validate()
    dist_info = DistInfo()
    device = resolve_device(cfg.device)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    dist_info.init(device.type)
    main = dist_info.is_main
    say = (lambda m: log(m, main and not cfg.quiet))
    try:
        return _pretrain(cfg, device, dist_info, main, say)
    finally:
        dist_info.close()


def _pretrain(cfg, device, dist_info, main, say):
    import genesis_ops as go

    t_start = time.perf_counter()
    cfg = resolve_auto(cfg, device)
    out = os.path.abspath(cfg.out)
    last_path, best_path = os.path.join(out, "last.pt"), os.path.join(out, "best.pt")
    metrics_path = os.path.join(out, "metrics.jsonl")
    ckpt = None
    if cfg.resume:
        if not os.path.exists(last_path):
            raise UsageError(f"--resume: no checkpoint to resume at {last_path}")
        ckpt = read_checkpoint(last_path)
        saved = ckpt.get("config", {})
        for k in ("width", "norm", "cube"):
            sv = saved.get(k)
            if k == "cube" and sv is not None:
                sv = tuple(sv)
            if sv is not None and sv != getattr(cfg, k):
                raise UsageError(f"--resume: {k} {getattr(cfg, k)} differs from the checkpoint's {sv}")
    if main:
        os.makedirs(out, exist_ok=True)
    pre = D.Preprocessing(modality=cfg.modality, hu_window=tuple(cfg.hu_window), mri_norm=cfg.mri_norm,
                          spacing=tuple(cfg.spacing) if cfg.spacing else None)
    demo = cfg.data is None
    paths = [D.DEMO_CT] if demo else list(cfg.data)
    cache = D.VolumeCache()
    volumes = D.load_volumes(paths, pre, skip_bad=cfg.skip_bad, cache=cache,
                             log=(print if main else None))
    say(f"genesis-ops pretrain: {'demo CT (bundled)' if demo else f'{len(volumes)} volume(s)'}, "
        f"device {device}, world size {dist_info.world_size}, width {cfg.width}, cube {'x'.join(map(str, cfg.cube))}, "
        f"batch {cfg.batch_size}/process, {cfg.epochs} epochs x {cfg.steps_per_epoch} steps, "
        f"{cfg.optimizer} lr {cfg.lr:g}, out {out}")

    tr_vols, tr_regions, va_vols, va_regions = _samplers(cfg, volumes)
    torch.manual_seed(derive_seed(cfg.seed, dist_info.rank, 1))
    model = UNet3D(in_channels=1, n_classes=1, width=cfg.width, norm=cfg.norm).to(device)
    if cfg.init_weights and ckpt is None:
        load_pretrained(model, cfg.init_weights, strict=True)
        say(f"initialised from {cfg.init_weights}")
    opt, sched = make_optimizer(cfg, model.parameters())
    start_epoch, step, best_val, bad_epochs, history = 1, 0, float("inf"), 0, []
    if ckpt is not None:
        load_pretrained(model, ckpt, strict=True, source=last_path)
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start_epoch = int(ckpt["epoch"]) + 1
        step = int(ckpt["step"])
        best_val = float(ckpt.get("best_val", float("inf")))
        bad_epochs = int(ckpt.get("bad_epochs", 0))
        history = list(ckpt.get("history", []))
        if "rng" in ckpt:
            set_rng_state(ckpt["rng"])
        if main:  # the checkpoint's history is authoritative (a kill may fall between the two writes)
            tmp = metrics_path + ".tmp"
            with open(tmp, "w") as f:
                for rec in history:
                    f.write(json.dumps(rec) + "\n")
            os.replace(tmp, metrics_path)
        say(f"resumed from {last_path} at epoch {start_epoch - 1} (step {step})")

    train_model: nn.Module = model
    if dist_info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)
    gcfg = genesis_config(cfg)
    amp_ctx_dtype = _amp_context(device, cfg.amp)[1]
    scaler = torch.amp.GradScaler("cuda") if amp_ctx_dtype == torch.float16 else None

    # fixed validation set: same cubes and same corruption every epoch
    val_inp = val_tgt = None
    if va_vols is not None:
        vs = D.CubeSampler(va_vols, cfg.cube, torch.Generator().manual_seed(derive_seed(cfg.seed, 7)),
                           air_value=cfg.air_value, min_foreground=cfg.min_foreground, regions=va_regions)
        v = vs.sample(cfg.val_batches * cfg.batch_size).to(device)
        val_inp, val_tgt = go.models_genesis(v, config=gcfg, seed=derive_seed(cfg.seed, 8))

    def evaluate() -> Optional[float]:
        if val_inp is None:
            return None
        tot = 0.0
        with torch.no_grad(), batch_stats_eval(model):
            for i in range(0, len(val_inp), cfg.batch_size):
                ctx, _ = _amp_context(device, cfg.amp)
                with ctx:
                    pred = model(val_inp[i:i + cfg.batch_size])
                tot += F.mse_loss(pred.float(), val_tgt[i:i + cfg.batch_size].float(), reduction="sum").item()
        return tot / val_tgt.numel()

    if ckpt is None and main:
        if os.path.exists(metrics_path):
            os.remove(metrics_path)
        v0 = evaluate()
        rec = {"epoch": 0, "step": 0, "train_loss": None, "val_loss": v0, "lr": cfg.lr}
        history.append(rec)
        append_jsonl(metrics_path, rec)
        if v0 is not None:
            say(f"epoch 0: validation MSE before training {v0:.5f}")

    result: Dict[str, Any] = {"out": out, "last": last_path, "best": best_path, "metrics": metrics_path,
                              "stopped_early": False}
    epoch = start_epoch - 1
    for epoch in range(start_epoch, cfg.epochs + 1):
        # per-(seed, rank, epoch) streams: a resumed run draws exactly the cubes it would have drawn
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, dist_info.rank, epoch, 2))
        sampler = D.CubeSampler(tr_vols, cfg.cube, gen, air_value=cfg.air_value,
                                min_foreground=cfg.min_foreground, regions=tr_regions)
        seed_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, dist_info.rank, epoch, 3))
        model.train()
        prog = Progress(cfg.steps_per_epoch, f"epoch {epoch}/{cfg.epochs}", enabled=main and not cfg.quiet,
                        every=cfg.log_every)
        t0 = time.perf_counter()
        loss_sum = 0.0
        for i in range(1, cfg.steps_per_epoch + 1):
            cubes = sampler.sample(cfg.batch_size).to(device, non_blocking=True)
            seed = int(torch.randint(0, 2 ** 62, (1,), generator=seed_gen).item())
            inp, target = go.models_genesis(cubes, config=gcfg, seed=seed)  # on the training device
            ctx, _ = _amp_context(device, cfg.amp)
            with ctx:
                pred = train_model(inp)
            loss = F.mse_loss(pred.float(), target.float())
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            step += 1
            lv = float(loss.item())
            if not math.isfinite(lv):
                raise FloatingPointError(f"loss became {lv} at epoch {epoch} step {i}; "
                                         f"try a lower --lr (now {opt.param_groups[0]['lr']:g})")
            loss_sum += lv
            prog.update(i, lv, cfg.batch_size * dist_info.world_size)
        epoch_time = time.perf_counter() - t0
        lr_now = opt.param_groups[0]["lr"]
        sched.step()
        train_loss = dist_info.mean(loss_sum / cfg.steps_per_epoch, device)
        val_loss = evaluate()
        monitored = val_loss if val_loss is not None else train_loss
        improved = monitored < best_val
        if improved:
            best_val, bad_epochs = monitored, 0
        else:
            bad_epochs += 1
        rec = {"epoch": epoch, "step": step, "train_loss": train_loss, "val_loss": val_loss, "lr": lr_now,
               "samples_per_s": prog.rate(), "epoch_time_s": round(epoch_time, 3), "best": improved}
        history.append(rec)
        if main:
            payload = checkpoint_payload(cfg, model, opt, sched, epoch, step, best_val, bad_epochs, history, pre)
            if improved:
                atomic_save(payload, best_path)
            atomic_save(payload, last_path)
            append_jsonl(metrics_path, rec)
            _write_pngs(cfg, model, history, val_inp, val_tgt, out, device)
            say(f"epoch {epoch}/{cfg.epochs}: train MSE {train_loss:.5f}"
                + (f", validation MSE {val_loss:.5f}" if val_loss is not None else "")
                + f", {prog.rate():.1f} samples/s, {epoch_time:.1f}s" + (" (best)" if improved else ""))
        dist_info.barrier()
        stop = cfg.patience > 0 and bad_epochs >= cfg.patience
        stop = dist_info.broadcast_flag(stop, device)
        if stop:
            say(f"early stopping: no improvement for {cfg.patience} epoch(s)")
            result["stopped_early"] = True
            break
    if main and not os.path.exists(best_path) and os.path.exists(last_path):
        import shutil
        shutil.copyfile(last_path, best_path)
    result.update({"epochs_done": epoch, "step": step, "best_val": best_val, "history": history,
                   "time_s": time.perf_counter() - t_start, "config": asdict(cfg)})
    if main:
        say(f"done in {result['time_s']:.1f}s: checkpoints {last_path}, {best_path}; metrics {metrics_path}; "
            f"pictures {os.path.join(out, 'loss_curve.png')}, {os.path.join(out, 'restorations.png')}")
    return result


def _write_pngs(cfg, model, history, val_inp, val_tgt, out, device):
    from . import plots

    plots.loss_curve(history, os.path.join(out, "loss_curve.png"))
    if cfg.previews and val_inp is not None:
        n = min(cfg.previews, len(val_inp))
        with torch.no_grad(), batch_stats_eval(model):
            pred = model(val_inp[:cfg.batch_size].float())[:n]
        plots.restoration_grid(val_inp[:n, 0].float().cpu().numpy(), pred[:, 0].float().cpu().numpy(),
                               val_tgt[:n, 0].float().cpu().numpy(), os.path.join(out, "restorations.png"),
                               title="validation cubes: corrupted input / restoration / target (middle slice)")
