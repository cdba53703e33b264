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

# the transforms' bound on shuffle windows per cube (genesis_ops rejects more)
MAX_NUM_WINDOWS = 10**7

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
FINETUNE_LR = 1e-3  # Adam
# The demo's Adam rate. Chosen among 5e-4, 1e-3 and 2e-3 on the demo's own validation block (3
# seeds, CPU schedule): only 2e-3 brought both arms to Dice >= 0.5 at the last epoch (final means,
# pretrained / scratch: 0.680 / 0.476, 0.639 / 0.440, 0.706 / 0.615). Chosen on validation, so the
# demo's absolute Dice is optimistic; both arms share it, so their paired comparison is not biased.
FINETUNE_DEMO_LR = 2e-3

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


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_number(cfg: Any, name: str, lo: float | None = None, hi: float | None = None, strict=(False, False)) -> None:
    """UsageError naming the flag unless ``cfg.name`` (when set) is a finite number in the range
    ``lo``..``hi`` (``strict``: (low bound excluded, high bound excluded))."""
    v = getattr(cfg, name)
    if v is None:
        return
    ok = (
        _finite(v)
        and (lo is None or (v > lo if strict[0] else v >= lo))
        and (hi is None or (v < hi if strict[1] else v <= hi))
    )
    if ok:
        return
    if lo is not None and hi is not None:
        want = f"a value in {'(' if strict[0] else '['}{lo:g}, {hi:g}{')' if strict[1] else ']'}"
    elif lo == 0 and strict[0]:
        want = "a positive number"
    elif lo is not None:
        want = f"a finite number {'>' if strict[0] else '>='} {lo:g}"
    else:
        want = "a finite number"
    raise UsageError(f"{_flag(name)}: expected {want}, got {v}")


def check_preprocessing(cfg: Any) -> None:
    """UsageError naming the flag unless the preprocessing settings (``modality``, ``hu_window``,
    ``mri_norm``, ``spacing``) are usable: a finite window with low < high, positive finite spacings."""
    if cfg.modality not in ("ct", "mri"):
        raise UsageError(f"--modality: expected ct or mri, got {cfg.modality!r}")
    if cfg.mri_norm not in ("percentile", "minmax"):
        raise UsageError(f"--mri-norm: expected percentile or minmax, got {cfg.mri_norm!r}")
    lo, hi = cfg.hu_window
    if not (_finite(lo) and _finite(hi) and lo < hi):
        raise UsageError(f"--hu-window: expected two finite numbers LO < HI, got {lo:g} {hi:g}")
    if cfg.spacing is not None and not all(_finite(v) and v > 0 for v in cfg.spacing):
        raise UsageError(f"--spacing: expected three positive numbers, got {' '.join(f'{v:g}' for v in cfg.spacing)}")


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
    overwrite: bool = False  # start over a folder that holds a run (its checkpoints and metrics go)
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
    # DataLoader worker processes reading cubes from the store, per process (None: from the CPU count)
    workers: int | None = None
    init_weights: str | None = None  # start from these weights (ours or published)
    previews: int = 4

    def validate(self) -> None:
        """Raise :class:`UsageError` (naming the flag) on a bad value."""
        check_positive_ints(
            self, ("epochs", "steps_per_epoch", "batch_size", "width", "val_batches", "num_windows", "log_every")
        )
        if self.num_windows > MAX_NUM_WINDOWS:
            raise UsageError(f"--num-windows: expected at most {MAX_NUM_WINDOWS}, got {self.num_windows}")
        if self.previews != 0:
            check_positive_ints(self, ("previews",))
        check_channels(self.channels)
        check_dims(self.dims, self.channels)
        check_cube(self.cube, self.dims)
        check_preprocessing(self)
        for n in ("flip_p", "shuffle_p", "nonlinear_p", "paint_p", "inpaint_rate", "min_foreground"):
            v = getattr(self, n)
            if not (_finite(v) and 0.0 <= v <= 1.0):
                raise UsageError(f"{_flag(n)}: expected a probability in [0, 1], got {v}")
        if not (_finite(self.val_fraction) and 0.0 <= self.val_fraction < 1.0):
            raise UsageError(f"--val-fraction: expected a fraction in [0, 1), got {self.val_fraction}")
        if self.optimizer not in ("adam", "sgd"):
            raise UsageError(f"--optimizer: expected adam or sgd, got {self.optimizer!r}")
        check_number(self, "lr", 0, strict=(True, False))
        check_number(self, "momentum", 0, 1)
        check_number(self, "weight_decay", 0)
        check_number(self, "lr_gamma", 0, strict=(True, False))
        check_number(self, "air_value", 0, 1, strict=(False, True))
        if self.patience < 0:
            raise UsageError(f"--patience: expected >= 0, got {self.patience}")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 0):
            raise UsageError(f"--workers: expected an integer >= 0, got {self.workers!r}")
        if self.corrupted_weight is not None:
            try:
                check_corrupted_weight(self.corrupted_weight, "--corrupted-weight")
            except ValueError as e:
                raise UsageError(str(e)) from None
        if self.lr_step_epochs < 1:
            raise UsageError(f"--lr-step-epochs: expected a positive integer, got {self.lr_step_epochs}")
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite: give one of them")

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
    lr: float | None = None  # Adam: FINETUNE_LR, the demo FINETUNE_DEMO_LR
    # linear decay per epoch: epoch e of E trains at lr * (E - e + 1) / E (the demo turns it on, so
    # that the last epochs move the weights, and BatchNorm's running statistics, less)
    lr_decay: bool = False
    freeze_encoder_epochs: int = 0
    fg_fraction: float = 0.5
    threshold: float = 0.5
    overlap: float = 0.5
    patience: int = 0
    demo: bool = False
    resume: bool = False  # continue from out/last.pt
    overwrite: bool = False  # start over a folder that holds a run
    seeds: int = 3  # --demo: seeds per arm (seed, seed + 1, ...)

    def validate(self) -> None:
        """Raise :class:`UsageError` (naming the flag) on a bad value."""
        if self.task not in ("segmentation", "classification"):
            raise UsageError(f"--task: expected segmentation or classification, got {self.task!r}")
        if self.demo and self.task != "segmentation":
            raise UsageError("--demo: the bundled demo is vertebra segmentation (--task segmentation)")
        check_positive_ints(
            self, ("epochs", "steps_per_epoch", "batch_size", "width", "n_classes", "log_every", "seeds")
        )
        check_channels(self.channels)
        check_dims(self.dims, self.channels)
        check_cube(self.cube, self.dims)
        check_preprocessing(self)
        if self.dims == 2 and self.task == "classification":
            raise UsageError("--dims 2: 2D fine-tuning is segmentation only (--task segmentation)")
        for n in ("val_fraction", "fg_fraction", "threshold"):
            v = getattr(self, n)
            if not (_finite(v) and 0.0 <= v <= 1.0) or (n == "val_fraction" and v >= 1.0):
                raise UsageError(f"{_flag(n)}: expected a value in [0, 1), got {v}")
        if not (_finite(self.overlap) and 0.0 <= self.overlap < 1.0):
            raise UsageError(f"--overlap: expected a fraction in [0, 1), got {self.overlap}")
        if self.lr is not None and not (_finite(self.lr) and self.lr > 0):
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
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite: give one of them")
        if self.demo and self.resume:
            raise UsageError("--demo: runs from scratch (pretrained and scratch folders); --resume does not apply")

    def resolved(self, device: torch.device) -> FinetuneConfig:
        """A copy with cube, batch size and schedule filled for ``device`` (the width stays None
        here: it comes from the weights, see :func:`finetune.finetune`)."""
        c = self._fill(device, "finetune", self.demo)
        if c.lr is None:
            c.lr = FINETUNE_DEMO_LR if c.demo else FINETUNE_LR
        return c
