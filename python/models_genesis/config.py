"""Run settings: the configs of pretraining and fine-tuning, their defaults and schedules.

Every default lives here, or where it belongs to a lower layer: the transforms' on
``genesis_ops.GenesisConfig``, the preprocessing's on :class:`data.Preprocessing`. The command line
builds its flags and their defaults from these dataclasses' fields.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any

import torch
from genesis_ops import GenesisConfig

from .data import Preprocessing, channel_names
from .data2d import SINGLE_CHANNEL_2D
from .losses import check_corrupted_weight
from .utils import UsageError

DEFAULT_PRETRAIN_OUT = os.path.join("runs", "pretrain")
DEFAULT_FINETUNE_OUT = os.path.join("runs", "finetune")

# Sizes chosen when left as None: a narrow net and small cubes on the CPU, the paper's on CUDA.
CPU_AUTO: dict[str, Any] = {"width": 8, "cube": (32, 32, 16), "batch_size": 8}
GPU_AUTO: dict[str, Any] = {"width": 32, "cube": (64, 64, 32), "batch_size": 16}
# 2D (--dims 2): the same widths; patches and batches sized for a 2D network (a 64x64 patch costs
# about a twelfth of a 32x32x16 cube).
CPU_AUTO_2D: dict[str, Any] = {**CPU_AUTO, "cube": (64, 64), "batch_size": 16}
GPU_AUTO_2D: dict[str, Any] = {**GPU_AUTO, "cube": (128, 128), "batch_size": 64}

# Schedules chosen when --epochs / --steps-per-epoch are left as None: a short demo on the bundled
# data (shorter on the CPU), a full run on the user's own data.
PRETRAIN_DEMO_CPU = {"epochs": 8, "steps_per_epoch": 20}
PRETRAIN_DEMO_GPU = {"epochs": 20, "steps_per_epoch": 50}
PRETRAIN_FULL = {"epochs": 100, "steps_per_epoch": 100}
FINETUNE_DEMO_CPU = {"epochs": 6, "steps_per_epoch": 15}
FINETUNE_DEMO_GPU = {"epochs": 20, "steps_per_epoch": 50}
FINETUNE_FULL = {"epochs": 50, "steps_per_epoch": 50}

SCHEDULES = {
    ("pretrain", True, "cpu"): PRETRAIN_DEMO_CPU,
    ("pretrain", True, "cuda"): PRETRAIN_DEMO_GPU,
    ("pretrain", False, "cpu"): PRETRAIN_FULL,
    ("pretrain", False, "cuda"): PRETRAIN_FULL,
    ("finetune", True, "cpu"): FINETUNE_DEMO_CPU,
    ("finetune", True, "cuda"): FINETUNE_DEMO_GPU,
    ("finetune", False, "cpu"): FINETUNE_FULL,
    ("finetune", False, "cuda"): FINETUNE_FULL,
}


def auto_sizes(device: torch.device, dims: int = 3) -> dict[str, Any]:
    """Width, cube and batch size used when left unset (:data:`CPU_AUTO` or :data:`GPU_AUTO`; the
    ``_2D`` ones for ``dims`` 2)."""
    if dims == 2:
        return CPU_AUTO_2D if device.type == "cpu" else GPU_AUTO_2D
    return CPU_AUTO if device.type == "cpu" else GPU_AUTO


def default_out(base: str, dims: int) -> str:
    """The default run folder of ``dims``: 2D runs go to ``runs/pretrain2d`` / ``runs/finetune2d``
    so that they never overwrite (or get mistaken for) the 3D demo's."""
    return base + "2d" if dims == 2 else base


def run_out(cfg: Any) -> str:
    """``cfg.out``, or the 2D default folder when a 2D run leaves --out at its default."""
    base = getattr(type(cfg), "out", None)
    return default_out(cfg.out, cfg.dims) if cfg.out == base else cfg.out


def schedule(task: str, demo: bool, device: torch.device) -> dict[str, int]:
    """Default ``epochs`` and ``steps_per_epoch`` of ``task`` ("pretrain" or "finetune")."""
    return SCHEDULES[(task, bool(demo), "cpu" if device.type == "cpu" else "cuda")]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_positive_ints(cfg: Any, names) -> None:
    """UsageError naming the flag when one of ``names`` is set but not a positive integer."""
    for n in names:
        v = getattr(cfg, n)
        if v is not None and (not isinstance(v, int) or v < 1):
            raise UsageError(f"{_flag(n)}: expected a positive integer, got {v!r}")


def check_channels(channels) -> None:
    """UsageError naming --channels unless it is None or distinct names."""
    try:
        channel_names(channels)
    except ValueError as e:
        raise UsageError(f"--{e}") from None


def check_dims(dims, channels=None) -> None:
    """UsageError unless ``dims`` is 2 or 3; 2D is single-channel, so not with ``channels``."""
    if dims not in (2, 3):
        raise UsageError(f"--dims: expected 2 or 3, got {dims!r}")
    if dims == 2 and channel_names(channels) is not None:
        raise UsageError(SINGLE_CHANNEL_2D)


def check_cube(cube, dims: int = 3) -> None:
    """UsageError unless ``cube`` is None or ``dims`` positive multiples of 8."""
    if cube is not None:
        c = tuple(cube)
        if len(c) != dims or any((not isinstance(s, int)) or s < 8 or s % 8 for s in c):
            n = {2: "two", 3: "three"}[dims]
            raise UsageError(
                f"--cube: expected {n} positive multiples of 8 with --dims {dims}, got {' '.join(map(str, c))}"
            )


@dataclass
class RunConfig:
    """Settings shared by pretraining and fine-tuning (sizes, device, precision, preprocessing, logging).

    ``None`` sizes and schedules are filled per device (:func:`auto_sizes`, :func:`schedule`).
    The preprocessing fields (``modality``, ``hu_window``, ``mri_norm``, ``spacing``) take their
    defaults from :class:`data.Preprocessing`; :meth:`data.Preprocessing.from_config` reads them.
    """

    epochs: int | None = None
    steps_per_epoch: int | None = None
    batch_size: int | None = None  # per process
    cube: tuple[int, ...] | None = None  # (x, y, z); (x, y) with dims 2
    dims: int = 3  # 2: UNet2D on 2D patches (images, NIfTI axial slices)
    width: int | None = None
    norm: str = "batch"
    device: str = "auto"
    seed: int = 0
    amp: bool = True  # CUDA only: bfloat16, or float16 with loss scaling
    val_fraction: float = 0.2
    # preprocessing
    modality: str = Preprocessing.modality
    hu_window: tuple[float, float] = Preprocessing.hu_window
    mri_norm: str = Preprocessing.mri_norm
    spacing: tuple[float, float, float] | None = Preprocessing.spacing
    # co-registered modalities: names substituted for {channel} in the data paths (None: one file
    # per volume, 3D or 4D with the channels on the last axis)
    channels: list[str] | None = None
    log_every: int | None = None
    quiet: bool = False

    def _fill(self, device: torch.device, task: str, demo: bool, sizes=("cube", "batch_size")) -> RunConfig:
        """A copy with the None sizes and schedule filled for ``device``."""
        auto, sched = auto_sizes(device, self.dims), schedule(task, demo, device)
        c = replace(self)
        for k in sizes:
            if getattr(c, k) is None:
                setattr(c, k, auto[k])
        for k in ("epochs", "steps_per_epoch"):
            if getattr(c, k) is None:
                setattr(c, k, sched[k])
        c.cube = tuple(int(s) for s in c.cube)
        c.out = run_out(self)
        return c


@dataclass
class PretrainConfig(RunConfig):
    """Settings of :func:`pretrain.pretrain` (one field per ``genesis-ops pretrain`` flag)."""

    data: list[str] | None = None  # None: the bundled demo CT
    out: str = DEFAULT_PRETRAIN_OUT
    resume: bool = False
    optimizer: str = "adam"  # "adam" (default) or "sgd" (the paper's)
    lr: float | None = None  # adam 1e-3, sgd 1.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_step_epochs: int = 40  # StepLR: multiply by lr_gamma every N epochs
    lr_gamma: float = 0.5
    val_batches: int = 4
    patience: int = 20  # early stopping; 0 disables
    compile: bool = False
    # transforms (the paper's settings, as genesis_ops.GenesisConfig's defaults)
    flip_p: float = GenesisConfig.flip_p
    shuffle_p: float = GenesisConfig.shuffle_p
    num_windows: int = GenesisConfig.num_windows
    nonlinear_p: float = GenesisConfig.nonlinear_p
    paint_p: float = GenesisConfig.paint_p
    inpaint_rate: float = GenesisConfig.inpaint_rate
    # restoration loss: None = the paper's plain MSE; W = squared errors on the voxels the corruption
    # mask marks (shuffled or painted) weigh W, the others 1 (losses.corruption_weighted_mse)
    corrupted_weight: float | None = None
    # cube sampling
    min_foreground: float = 0.5
    air_value: float = 0.05
    skip_bad: bool = False
    init_weights: str | None = None  # start from these weights (ours or published)
    previews: int = 4

    def validate(self) -> None:
        """Raise :class:`UsageError` (naming the flag) on a bad value."""
        check_positive_ints(self, ("epochs", "steps_per_epoch", "batch_size", "width", "val_batches", "num_windows"))
        if self.previews != 0:
            check_positive_ints(self, ("previews",))
        check_channels(self.channels)
        check_dims(self.dims, self.channels)
        check_cube(self.cube, self.dims)
        for n in ("flip_p", "shuffle_p", "nonlinear_p", "paint_p", "inpaint_rate", "min_foreground"):
            v = getattr(self, n)
            if not 0.0 <= v <= 1.0:
                raise UsageError(f"{_flag(n)}: expected a probability in [0, 1], got {v}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UsageError(f"--val-fraction: expected a fraction in [0, 1), got {self.val_fraction}")
        if self.optimizer not in ("adam", "sgd"):
            raise UsageError(f"--optimizer: expected adam or sgd, got {self.optimizer!r}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"--lr: expected a positive number, got {self.lr}")
        if self.patience < 0:
            raise UsageError(f"--patience: expected >= 0, got {self.patience}")
        if self.corrupted_weight is not None:
            try:
                check_corrupted_weight(self.corrupted_weight, "--corrupted-weight")
            except ValueError as e:
                raise UsageError(str(e)) from None
        if self.lr_step_epochs < 1:
            raise UsageError(f"--lr-step-epochs: expected a positive integer, got {self.lr_step_epochs}")

    def resolved(self, device: torch.device) -> PretrainConfig:
        """A copy with the settings left as None filled: width, cube and batch for ``device``, the
        demo schedule without ``data`` (else the full one), the optimiser's default lr."""
        c = self._fill(device, "pretrain", self.data is None, sizes=("width", "cube", "batch_size"))
        if c.lr is None:
            c.lr = 1e-3 if c.optimizer == "adam" else 1.0
        return c


@dataclass
class FinetuneConfig(RunConfig):
    """Settings of :func:`finetune.finetune` (one field per ``genesis-ops finetune`` flag)."""

    task: str = "segmentation"  # or "classification"
    images: list[str] | None = None
    labels: list[str] | None = None  # segmentation: label volumes; classification: class ids
    csv: str | None = None  # classification: rows "path,label"
    # validation given explicitly (overrides the split of the training data by val_fraction)
    val_images: list[str] | None = None
    val_labels: list[str] | None = None  # segmentation: label volumes; classification: class ids
    val_csv: str | None = None  # classification: rows "path,label"
    label_values: list[int] | None = None  # segmentation foreground values (default: any > 0)
    weights: str | None = None  # ours or published; None = from scratch
    out: str = DEFAULT_FINETUNE_OUT
    n_classes: int | None = None  # classification (default: from the labels)
    lr: float = 1e-3
    # linear decay per epoch: epoch e of E trains at lr * (E - e + 1) / E (the demo turns it on, so
    # that the last epochs move the weights, and BatchNorm's running statistics, less)
    lr_decay: bool = False
    freeze_encoder_epochs: int = 0
    fg_fraction: float = 0.5
    threshold: float = 0.5
    overlap: float = 0.5
    patience: int = 0
    demo: bool = False
    seeds: int = 3  # --demo: seeds per arm (seed, seed + 1, ...)

    def validate(self) -> None:
        """Raise :class:`UsageError` (naming the flag) on a bad value."""
        if self.task not in ("segmentation", "classification"):
            raise UsageError(f"--task: expected segmentation or classification, got {self.task!r}")
        check_positive_ints(self, ("epochs", "steps_per_epoch", "batch_size", "width", "n_classes"))
        check_channels(self.channels)
        check_dims(self.dims, self.channels)
        check_cube(self.cube, self.dims)
        if self.dims == 2 and self.task == "classification":
            raise UsageError("--dims 2: 2D fine-tuning is segmentation only (--task segmentation)")
        for n in ("val_fraction", "fg_fraction", "threshold"):
            v = getattr(self, n)
            if not 0.0 <= v <= 1.0 or (n == "val_fraction" and v >= 1.0):
                raise UsageError(f"{_flag(n)}: expected a value in [0, 1), got {v}")
        if not 0.0 <= self.overlap < 1.0:
            raise UsageError(f"--overlap: expected a fraction in [0, 1), got {self.overlap}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"--lr: expected a positive number, got {self.lr}")
        if self.freeze_encoder_epochs < 0 or self.patience < 0:
            raise UsageError("--freeze-encoder-epochs/--patience: expected >= 0")
        if not self.demo:
            if not self.images and not self.csv:
                raise UsageError("finetune: give --images (and --labels) or --csv, or use --demo")
        if self.val_csv and self.task != "classification":
            raise UsageError("--val-csv: only for --task classification (segmentation: --val-images/--val-labels)")
        if self.val_csv and self.val_images:
            raise UsageError("--val-csv and --val-images: give one of them")
        if bool(self.val_images) != bool(self.val_labels):
            raise UsageError("--val-images and --val-labels: give both (one label per validation image)")

    def resolved(self, device: torch.device) -> FinetuneConfig:
        """A copy with cube, batch size and schedule filled for ``device`` (the width stays None
        here: it comes from the weights, see :func:`finetune.finetune`)."""
        return self._fill(device, "finetune", self.demo)
