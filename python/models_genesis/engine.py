"""The training engine shared by pretraining and fine-tuning.

One optimiser step (:class:`TrainStep`: mixed precision, loss scaling for float16, the finite-loss
check), one model wrapper (:func:`prepare_model`: DDP, ``torch.compile``), one epoch loop
(:func:`fit`), one best-epoch tracker with early stopping (:class:`Monitor`); checkpoints are written by
:class:`checkpoint.CheckpointWriter`. A task (pretraining, segmentation, classification) supplies only
what differs: how a batch is made, how it is evaluated, and what its records and checkpoints hold
(the :class:`Task` protocol).
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol
from collections.abc import Callable

import torch
import torch.nn as nn

# the checkpoint format's writer and payload, used by fit and importable from here
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointWriter, checkpoint_payload, plain  # noqa: F401
from .model import unwrap  # noqa: F401
from .errors import DivergedError
from .utils import DistInfo, Progress, append_jsonl

# (inputs, targets, *extras): the extras (e.g. pretraining's corruption mask) go to the loss
Batch = tuple[torch.Tensor, ...]

# ----------------------------------------------------------------------------------------------
# mixed precision


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype training uses on ``device``.

    Args:
        device: the training device.
        enabled: mixed precision wanted (``--no-amp`` turns it off).

    Returns:
        bfloat16 on CUDA where supported, else float16 (which then needs loss scaling); None
        (float32) on the CPU or when ``enabled`` is False. CPU bfloat16 autocast, about twice as
        fast per U-Net step on CPUs with AVX512-BF16/AMX (measured: bench/train_step.py --cpu-variants),
        is not the default: on the tiny CPU schedules of the tests it moved losses by 3e-4 relative
        and pictures by 2e-3, enough to break exact comparisons, and a default must be safe.
    """
    if device.type == "cuda" and enabled:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (oneDNN's check for AVX512-BF16/AMX);
    emulated bfloat16 would be slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(device: torch.device, dtype: torch.dtype | None):
    """An autocast context for ``device`` in ``dtype``; a disabled one when ``dtype`` is None.

    Args:
        device: where the forward pass runs.
        dtype: from :func:`amp_dtype` (or explicit, e.g. float16 on the CPU in tests).
    """
    if dtype is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(device: torch.device, dtype: torch.dtype | None, **kwargs: Any) -> torch.amp.GradScaler | None:
    """A GradScaler when ``dtype`` is float16 (its gradients underflow without loss scaling), else None.

    Args:
        device: the training device; the scaler works on its device type.
        dtype: the autocast dtype (see :func:`amp_dtype`).
        **kwargs: passed to ``torch.amp.GradScaler`` (e.g. ``init_scale``).
    """
    if dtype == torch.float16:
        return torch.amp.GradScaler(device.type, **kwargs)
    return None


# ----------------------------------------------------------------------------------------------
# model wrapping


def prepare_model(
    model: nn.Module, device: torch.device, distributed: bool = False, compile: bool = False
) -> nn.Module:
    """The module the training step calls.

    Args:
        model: the model, already on ``device``.
        device: the training device (DDP pins CUDA models to ``device.index``).
        distributed: wrap in ``DistributedDataParallel`` (the process group must be initialised).
        compile: then wrap in ``torch.compile``.

    Returns:
        ``model`` itself when neither applies. Checkpoints are always written from the plain model
        (see :func:`unwrap`), so their keys carry neither ``module.`` nor ``_orig_mod.`` prefixes.
    """
    if device.type == "cpu" and any(isinstance(m, nn.Conv3d) for m in model.modules()):
        # oneDNN's 3D convolutions are faster on channels-last weights (the activations follow):
        # about 1.3x per U-Net step on the CPU (bench/train_step.py); values are those of the
        # contiguous layout up to float rounding, and the same on every run
        model.to(memory_format=torch.channels_last_3d)
    out = model
    if distributed:
        out = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile:
        out = torch.compile(out)
    return out


# ----------------------------------------------------------------------------------------------
# one step


def _call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x)


class TrainStep:
    """One optimiser step: forward under autocast, loss in float32, backward, optimiser step.

    With a float16 autocast dtype the loss is scaled by a GradScaler: steps whose scaled gradients
    overflow are skipped and the scale is lowered, so small gradients do not flush to zero in
    float16. A non-finite *loss* stops training with a FloatingPointError (a skipped step would
    hide a diverged run).

    Args:
        model: the module to call (possibly wrapped by :func:`prepare_model`).
        optimizer: optimiser over the model's parameters.
        device: the training device; batches are moved there.
        loss_fn: ``loss_fn(prediction, target, *extras) -> scalar tensor`` (``extras``: what the
            batch holds after the targets, e.g. a loss weight mask); called outside autocast.
        amp: mixed precision on CUDA (the dtype follows :func:`amp_dtype`).
        dtype: explicit autocast dtype, overriding ``amp`` (e.g. float16 on the CPU in tests).
        forward: ``forward(model, inputs) -> prediction`` (default ``model(inputs)``).
        scaler_kwargs: passed to the GradScaler (only used with float16).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        amp: bool = True,
        dtype: torch.dtype | None = None,
        forward: Callable = _call,
        scaler_kwargs: dict[str, Any] | None = None,
    ):
        self.model, self.optimizer, self.device = model, optimizer, torch.device(device)
        self.loss_fn, self.forward = loss_fn, forward
        self.dtype = dtype if dtype is not None else amp_dtype(self.device, amp)
        self.scaler = make_scaler(self.device, self.dtype, **(scaler_kwargs or {}))
        self.steps = 0

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor, *extras: torch.Tensor) -> torch.Tensor:
        """Train on one batch.

        Args:
            inputs: ``(B, C, X, Y, Z)`` batch (any device; moved to the training device).
            targets: what ``loss_fn`` compares the prediction with (moved likewise).
            *extras: further tensors ``loss_fn`` takes after the targets (moved likewise).

        Returns:
            The loss (a detached scalar tensor, before scaling).
        """
        inputs, targets, *extras = (t.to(self.device, non_blocking=True) for t in (inputs, targets, *extras))
        with autocast(self.device, self.dtype):
            pred = self.forward(self.model, inputs)
        loss = self.loss_fn(pred, targets, *extras)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)  # skipped when the scaled gradients hold inf/NaN
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.steps += 1
        return loss.detach()


# ----------------------------------------------------------------------------------------------
# best epoch and early stopping


class Monitor:
    """Tracks the best value of the monitored metric and the epochs since it improved.

    Args:
        mode: ``"min"`` (a loss) or ``"max"`` (Dice, AUC).
        patience: stop after this many epochs without improvement; 0 never stops.
        best: best value so far (when resuming); None: nothing seen yet.
        bad_epochs: epochs without improvement so far (when resuming).
    """

    def __init__(self, mode: str = "min", patience: int = 0, best: float | None = None, bad_epochs: int = 0):
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', got {mode!r}")
        self.mode, self.patience = mode, int(patience)
        self.best = best if best is not None and math.isfinite(best) else None
        self.bad_epochs = int(bad_epochs)

    def update(self, value: float | None) -> bool:
        """Record one epoch's value; returns True when it is the best so far. An undefined value
        (None, NaN, inf) never improves."""
        defined = value is not None and math.isfinite(value)
        improved = defined and (self.best is None or (value < self.best if self.mode == "min" else value > self.best))
        if improved:
            self.best, self.bad_epochs = float(value), 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience


# ----------------------------------------------------------------------------------------------
# the epoch loop


class Task(Protocol):
    """What a training task supplies to :func:`fit`."""

    def begin_epoch(self, epoch: int) -> tuple[Callable[[], Batch], str]:
        """Set the model up for ``epoch``; return a batch maker and a suffix for the progress label."""

    def end_epoch(
        self, epoch: int, step: int, train_loss: float, progress: Progress, epoch_time: float
    ) -> tuple[dict[str, Any], float | None]:
        """Evaluate after ``epoch`` (``step`` optimiser steps so far; ``train_loss`` its mean loss);
        return the epoch's metrics record (without ``best``) and the monitored value."""

    def payload(self, epoch: int, step: int) -> dict[str, Any]:
        """The checkpoint payload after ``epoch`` (see :func:`checkpoint_payload`)."""

    def after_save(self, record: dict[str, Any]) -> None:
        """Main process, after the checkpoints: pictures, the epoch's log line."""


def run_epoch(
    step: TrainStep, next_batch: Callable[[], Batch], n_steps: int, progress: Progress, epoch: int, world_size: int = 1
) -> float:
    """``n_steps`` training steps on batches from ``next_batch()``.

    Args:
        step: the training step.
        next_batch: returns ``(inputs (B, C, X, Y, Z), targets, *extras)`` (:data:`Batch`).
        n_steps: steps to run; progress: the epoch's progress line; epoch: for messages.
        world_size: processes (progress counts samples over all of them).

    Returns:
        The mean loss over the steps.

    Raises:
        FloatingPointError: when the loss becomes NaN or infinite (names the epoch, step and lr).
    """
    total = 0.0
    for i in range(1, n_steps + 1):
        x, *rest = next_batch()
        lv = float(step(x, *rest).item())
        if not math.isfinite(lv):
            raise DivergedError(
                f"loss became {lv} at epoch {epoch} step {i}; "
                f"try a lower --lr (now {step.optimizer.param_groups[0]['lr']:g})"
            )
        total += lv
        progress.update(i, lv, x.shape[0] * world_size)
    return total / n_steps


def fit(
    step: TrainStep,
    task: Task,
    *,
    model: nn.Module,
    epochs: int,
    steps_per_epoch: int,
    monitor: Monitor,
    writer: CheckpointWriter,
    history: list[dict[str, Any]],
    metrics_path: str,
    start_epoch: int = 1,
    dist: DistInfo | None = None,
    show_progress: bool = True,
    log_every: int | None = None,
    say: Callable[[str], None] = print,
) -> tuple[int, bool]:
    """The epoch loop of every task: train, evaluate, track the best epoch, write checkpoints and
    metrics (main process only), stop early on ``monitor``'s patience (agreed across processes).

    Args:
        step: the training step (its ``steps`` counter continues a resumed run).
        task: batches, evaluation, records and checkpoint payloads (see :class:`Task`).
        model: the unwrapped model (put in training mode at each epoch's start).
        epochs: last epoch to run; steps_per_epoch: steps per epoch.
        monitor: best value and patience; writer: checkpoint writer.
        history: the run's records so far; each epoch's record is appended.
        metrics_path: ``metrics.jsonl``, one line appended per epoch.
        start_epoch: first epoch to run (after a resume: the checkpoint's epoch + 1).
        dist: the process group (None: a single process).

    Returns:
        ``(last epoch run, stopped early)``.
    """
    dist = dist or DistInfo.single()
    main = dist.is_main
    epoch = start_epoch - 1
    for epoch in range(start_epoch, epochs + 1):
        next_batch, suffix = task.begin_epoch(epoch)
        model.train()
        prog = Progress(
            steps_per_epoch, f"epoch {epoch}/{epochs}{suffix}", enabled=main and show_progress, every=log_every
        )
        t0 = time.perf_counter()
        train_loss = run_epoch(step, next_batch, steps_per_epoch, prog, epoch, dist.world_size)
        epoch_time = time.perf_counter() - t0
        train_loss = dist.mean(train_loss, step.device)
        rec, value = task.end_epoch(epoch, step.steps, train_loss, prog, epoch_time)
        improved = monitor.update(value)
        rec["best"] = improved
        history.append(rec)
        if main:
            writer.save(task.payload(epoch, step.steps), improved)
            append_jsonl(metrics_path, rec)
            task.after_save(rec)
        dist.barrier()
        if dist.broadcast_flag(monitor.should_stop, step.device):
            say(f"early stopping: no improvement for {monitor.patience} epoch(s)")
            return epoch, True
    return epoch, False
