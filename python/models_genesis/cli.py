"""The ``genesis-ops`` command line: pretrain, finetune, predict, evaluate, preview, info."""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import sys
import typing
from dataclasses import MISSING, fields
from typing import Any
from collections.abc import Mapping

# The settings modules (config, data) are imported inside the functions: config takes the
# transform defaults from genesis_ops, whose compiled extension may be missing, and main() turns
# that into a one-line error instead of a traceback at import time.
IMPORT_HINT = "is genesis_ops installed? `pip install .` at the repository root"


def _cube_help() -> str:
    from .config import CPU_AUTO, CPU_AUTO_2D, GPU_AUTO, GPU_AUTO_2D

    def j(c):
        return " ".join(map(str, c["cube"]))

    return (
        "cube size in voxels along the three array axes of the canonical (RAS) volume, i.e. "
        "rows cols depth (slices); each a multiple of 8. Paper: 64 64 32. Default: "
        f"{j(CPU_AUTO)} on CPU, {j(GPU_AUTO)} on CUDA. With --dims 2: two sizes, rows cols of the "
        f"2D patch ({j(CPU_AUTO_2D)} on CPU, {j(GPU_AUTO_2D)} on CUDA)"
    )


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (plus a pointer to --help) and exit status 2."""

    def error(self, message):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# The flags' types only convert text to numbers (with argparse's one-line error on text that is
# not one); the rules (ranges, finiteness, multiples of 8) are the configs' validate() (pretrain,
# finetune) and the commands' own functions (predict), so that a flag and the same field set from
# Python are checked by one rule.


def _int(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None


def _float(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None


def field_defaults(cls) -> dict[str, Any]:
    """``{field name: default}`` of a config dataclass (the single source of the flags' defaults)."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def signature_defaults(fn) -> dict[str, Any]:
    """``{parameter: default}`` of a function (the flags of commands that call it directly)."""
    return {
        k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty
    }


class _Flags:
    """Adds ``--field-name`` flags whose destination is the field and whose default is the field's.

    Args:
        parser: the (sub)parser; defaults: ``{name: default}`` (:func:`field_defaults`).
    """

    def __init__(self, parser: argparse.ArgumentParser, defaults: Mapping[str, Any]):
        self.parser, self.defaults, self.group_ = parser, defaults, None

    def group(self, title: str) -> _Flags:
        """Flags added next go to a new argument group ``title``."""
        self.group_ = self.parser.add_argument_group(title)
        return self

    def __call__(self, name: str, flag: str | None = None, **kw: Any) -> None:
        if "default" not in kw and not kw.get("required"):
            kw["default"] = self.defaults[name]
        (self.group_ or self.parser).add_argument(flag or "--" + name.replace("_", "-"), dest=name, **kw)


def _schedule_help(what: str, demo_cpu, demo_gpu, full, key: str) -> str:
    return f"{what} (default: demo {demo_cpu[key]} on CPU / {demo_gpu[key]} on CUDA; else {full[key]})"


CHANNELS_HELP = (
    "co-registered modalities of each subject, stored as separate files: NAMEs substituted for "
    "{channel} in %s, e.g. %s 'brats/*/*_{channel}.nii.gz' --channels t1 t1ce t2 flair; each "
    "channel is normalised on its own. Without it, a 4D NIfTI file is one subject with its "
    "channels on the last axis%s"
)


OVERWRITE_HELP = (
    "start over in a run folder that already holds a run (its checkpoints and metrics are replaced); "
    "without it (or --resume) such a folder is refused"
)


def _add_channels(flag: _Flags, where: str, extra: str = "") -> None:
    flag("channels", nargs="+", action="extend", metavar="NAME", help=CHANNELS_HELP % (where, where, extra))


def _add_common(flag: _Flags) -> None:
    flag.group_ = None
    flag(
        "device",
        choices=["auto", "cpu", "cuda"],
        help="training device: auto (CUDA when available), cpu or cuda (default: %(default)s)",
    )
    flag("seed", type=int, help="random seed; a run is reproducible from it (default: %(default)s)")
    flag(
        "amp",
        "--no-amp",
        action="store_false",
        help="disable mixed precision on CUDA (bfloat16, or float16 with loss scaling); CPU runs in float32",
    )
    flag(
        "log_every",
        type=_int,
        metavar="N",
        help="print a progress line every N steps when not on a terminal (default: 5 lines per epoch)",
    )
    flag("quiet", action="store_true", help="print only errors and the final summary")


def _add_data(flag: _Flags) -> None:
    from .data import Preprocessing

    flag.group("data preprocessing")
    flag(
        "modality",
        choices=["ct", "mri"],
        help="ct: clip to --hu-window and scale to [0, 1]; mri: per-volume normalisation (--mri-norm)",
    )
    flag(
        "hu_window",
        nargs=2,
        type=float,
        metavar=("LO", "HI"),
        help="CT window in HU mapped to [0, 1] (default: {} {}, as the paper)".format(
            *(f"{v:g}" for v in Preprocessing.hu_window)
        ),
    )
    flag(
        "mri_norm",
        choices=["percentile", "minmax"],
        help="MRI: clip to the 0.5/99.5 percentiles of non-zero voxels then scale, or per-volume min-max",
    )
    flag(
        "spacing",
        nargs=3,
        type=_float,
        metavar=("SX", "SY", "SZ"),
        help="resample to this voxel spacing in mm as each volume is read (default: keep the native grid)",
    )


def _add_sizes(flag: _Flags, task: str) -> None:
    """--epochs, --steps-per-epoch, --batch-size, --cube (help built from the schedules)."""
    from .config import (
        CPU_AUTO,
        FINETUNE_DEMO_CPU,
        FINETUNE_DEMO_GPU,
        FINETUNE_FULL,
        GPU_AUTO,
        PRETRAIN_DEMO_CPU,
        PRETRAIN_DEMO_GPU,
        PRETRAIN_FULL,
    )

    sched = (
        (PRETRAIN_DEMO_CPU, PRETRAIN_DEMO_GPU, PRETRAIN_FULL)
        if task == "pretrain"
        else (FINETUNE_DEMO_CPU, FINETUNE_DEMO_GPU, FINETUNE_FULL)
    )
    flag("epochs", type=_int, metavar="N", help=_schedule_help("epochs", *sched, "epochs"))
    flag(
        "steps_per_epoch",
        type=_int,
        metavar="N",
        help=_schedule_help(
            "optimiser steps per epoch" if task == "pretrain" else "steps per epoch", *sched, "steps_per_epoch"
        ),
    )
    flag(
        "batch_size",
        type=_int,
        metavar="N",
        help=("cubes per step per process" if task == "pretrain" else "cubes per step")
        + f" (default: {CPU_AUTO['batch_size']} on CPU, {GPU_AUTO['batch_size']} on CUDA)",
    )
    flag("cube", nargs="+", type=_int, metavar="N", help=_cube_help())
    flag(
        "dims",
        type=int,
        choices=[2, 3],
        help="3: the 3D U-Net on cubes of volumes (default); 2: the same U-Net in 2D on patches of PNG/JPEG "
        "images or of the axial slices of NIfTI volumes",
    )


def _add_pretrain(sub) -> None:
    from .config import CPU_AUTO, GPU_AUTO, PretrainConfig

    p = sub.add_parser(
        "pretrain",
        help="self-supervised pretraining (no --data: short demo on the bundled CT)",
        description="Pretrain the 3D U-Net to restore Models-Genesis-corrupted cubes (MSE). "
        "Without --data, runs a short demo on the bundled abdominal CT. Writes "
        "last.pt, best.pt, metrics.jsonl, loss_curve.png and restorations.png to --out. "
        "For several GPUs/nodes launch with torchrun (DDP).",
    )
    flag = _Flags(p, field_defaults(PretrainConfig))
    flag(
        "data",
        nargs="+",
        action="extend",
        metavar="PATH",
        help="a store made by genesis-ops preprocess, or raw volumes (NIfTI, MetaImage .mhd/.mha, NRRD, DICOM "
        "series) as files, folders (searched recursively; every format in them), glob patterns or .txt files "
        "listing paths, which are preprocessed into OUT/store first; repeatable. With --dims 2 NIfTI and "
        "PNG/JPEG images (NIfTI volumes give their axial slices), read into memory",
    )
    _add_channels(flag, "--data")
    flag("out", metavar="DIR", help="run folder (default: %(default)s)")
    _add_sizes(flag, "pretrain")
    flag(
        "width",
        type=_int,
        metavar="N",
        help="channels of the first convolution: 32 is the paper's 19.07M-parameter model "
        f"(default: {CPU_AUTO['width']} on CPU, {GPU_AUTO['width']} on CUDA)",
    )
    flag(
        "norm",
        choices=["batch", "batch_stats"],
        help="batch: standard BatchNorm; batch_stats: always batch statistics, as the published model",
    )
    flag("resume", action="store_true", help="continue from DIR/last.pt (model, optimiser, scheduler, epoch, RNG)")
    flag("overwrite", action="store_true", help=OVERWRITE_HELP)
    flag(
        "init_weights",
        metavar="CKPT",
        help="start from these weights (ours or the published Genesis_Chest_CT.pt format)",
    )
    flag.group("optimisation")
    flag(
        "optimizer", choices=["adam", "sgd"], help="adam (default, lr 1e-3) or sgd (the paper's: lr 1.0, momentum 0.9)"
    )
    flag("lr", type=_float, help="learning rate (default: 1e-3 for adam, 1.0 for sgd)")
    flag("momentum", type=float, help="SGD momentum (default: %(default)s)")
    flag("weight_decay", type=float, help="weight decay (default: 0)")
    flag(
        "lr_step_epochs",
        type=_int,
        metavar="N",
        help="multiply the learning rate by --lr-gamma every N epochs (default: %(default)s, as the paper)",
    )
    flag("lr_gamma", type=_float, help="learning-rate decay factor (default: %(default)s)")
    flag(
        "val_fraction",
        type=float,
        help="validation share: whole volumes when there are several, else the last slices "
        "(default: %(default)s; 0 = none)",
    )
    flag(
        "val_batches",
        type=_int,
        metavar="N",
        help="fixed validation batches, evaluated with batch statistics after every epoch (default: %(default)s)",
    )
    flag(
        "patience",
        type=_int,
        metavar="N",
        help="early stopping after N epochs without improvement (default: %(default)s; 0 = off)",
    )
    flag("compile", action="store_true", help="torch.compile the model")
    flag.group("transforms (paper defaults)")
    flag("flip_p", type=_float, help="flip loop probability (default: %(default)s)")
    flag("shuffle_p", type=_float, help="local pixel shuffling probability (default: %(default)s)")
    flag("num_windows", type=_int, help="shuffling windows per cube (default: %(default)s)")
    flag("nonlinear_p", type=_float, help="non-linear intensity probability (default: %(default)s)")
    flag("paint_p", type=_float, help="in/out-painting probability (default: %(default)s)")
    flag("inpaint_rate", type=_float, help="share of painting that is in-painting (default: %(default)s)")
    flag(
        "corrupted_weight",
        type=_float,
        metavar="W",
        help="weight the restoration loss by W on the voxels the corruption mask marks (shuffled windows, "
        "painted noise) and by 1 elsewhere, normalised by the sum of the weights so it stays on the MSE "
        "scale (W = 1: plain MSE; W = 0: the corrupted voxels are ignored; W > 1: they count more). "
        "Default: plain MSE, as the paper",
    )
    _add_data(flag)
    flag.group("cube sampling")
    flag(
        "min_foreground",
        type=_float,
        help="reject cubes with less than this share of non-air voxels (default: %(default)s)",
    )
    flag(
        "air_value",
        type=float,
        help="normalised value below which a voxel counts as air (default: %(default)s, about -900 HU)",
    )
    flag("skip_bad", action="store_true", help="skip unreadable volumes with a warning instead of stopping")
    flag(
        "workers",
        type=_int,
        metavar="N",
        help="DataLoader worker processes reading cubes from the store, per process (default: the CPUs "
        "less one, shared by the ranks of a node, at most 8; 0: read in the training process); with raw "
        "--data also the processes that preprocess it into OUT/store (default there: 1)",
    )
    flag("previews", type=_int, metavar="N", help="cubes shown in restorations.png (default: %(default)s)")
    _add_common(flag)


def _add_finetune(sub) -> None:
    from .config import CPU_AUTO, DEFAULT_PRETRAIN_OUT, GPU_AUTO, FinetuneConfig

    f = sub.add_parser(
        "finetune",
        help="fine-tune for segmentation or classification (--demo: bundled vertebrae)",
        description="Fine-tune from pretrained weights (ours or the published format) or from scratch. "
        "Segmentation trains the full U-Net with Dice + BCE and reports Dice/IoU; "
        "classification trains the encoder + an MLP head with BCE/CE and reports AUC/accuracy. "
        "--demo segments the vertebrae of the bundled CT twice, from --weights "
        f"(default {DEFAULT_PRETRAIN_OUT}/best.pt) and from scratch, and prints both Dice scores.",
    )
    flag = _Flags(f, field_defaults(FinetuneConfig))
    flag("task", choices=["segmentation", "classification"], help="segmentation (default) or classification")
    flag("images", nargs="+", action="extend", metavar="PATH", help="image volumes (files, folders, globs)")
    flag(
        "labels",
        nargs="+",
        action="extend",
        metavar="L",
        help="segmentation: label volumes in the same order as --images; classification: one integer class per image",
    )
    flag("csv", metavar="FILE", help="classification: CSV rows 'path,label' (instead of --images/--labels)")
    _add_channels(flag, "--images", " (the --csv paths take {channel} too)")
    flag.group("validation (default: split from the training data so that it holds foreground / every class)")
    flag(
        "val_images",
        nargs="+",
        action="extend",
        metavar="PATH",
        help="validation image volumes (overrides the split; every --images volume then trains)",
    )
    flag(
        "val_labels",
        nargs="+",
        action="extend",
        metavar="L",
        help="segmentation: their label volumes, same order; classification: one integer class per validation image",
    )
    flag("val_csv", metavar="FILE", help="classification: validation CSV rows 'path,label' (instead of --val-images)")
    flag(
        "val_fraction",
        type=float,
        help="without --val-*: share held out for validation (default: %(default)s; 0 = validate on the training "
        "data). Several volumes: whole volumes with foreground; one volume: a box at one end of its longest "
        "workable axis, a one-cube gap from the training box, both holding foreground; classification: "
        "stratified by class",
    )
    flag.group_ = None
    flag(
        "label_values",
        nargs="+",
        type=int,
        metavar="V",
        help="segmentation: label values that count as foreground (default: every value > 0)",
    )
    flag(
        "weights",
        metavar="CKPT",
        help="initial weights: our checkpoint or the published Genesis_Chest_CT.pt format (default: scratch; "
        f"with --demo: {DEFAULT_PRETRAIN_OUT}/best.pt)",
    )
    flag("demo", action="store_true", help="vertebra segmentation on the bundled CT, pretrained vs scratch")
    flag("seeds", type=_int, metavar="N", help="--demo: seeds per arm (default: %(default)s)")
    flag("out", metavar="DIR", help="run folder (default: %(default)s)")
    flag(
        "resume",
        action="store_true",
        help="continue from DIR/last.pt (model, optimiser, epoch, best epoch, RNG): the same result as an "
        "uninterrupted run",
    )
    flag("overwrite", action="store_true", help=OVERWRITE_HELP)
    _add_sizes(flag, "finetune")
    flag(
        "width",
        type=_int,
        metavar="N",
        help="model width when training from scratch (default: as the weights; "
        f"{CPU_AUTO['width']} on CPU, {GPU_AUTO['width']} on CUDA)",
    )
    flag("norm", choices=["batch", "batch_stats"], help="normalisation (see pretrain --help)")
    flag(
        "n_classes",
        type=_int,
        metavar="N",
        help="classification: classes (default: from the labels; 2 classes use one sigmoid output)",
    )
    flag("lr", type=_float, help="Adam learning rate (default: 1e-3; with --demo: 2e-3)")
    flag(
        "lr_decay",
        action="store_true",
        help="decay the learning rate linearly per epoch, to lr / epochs in the last (always on with --demo)",
    )
    flag(
        "freeze_encoder_epochs",
        type=_int,
        metavar="N",
        help="keep the encoder frozen for the first N epochs (default: %(default)s)",
    )
    flag("fg_fraction", type=_float, help="segmentation: share of cubes centred on foreground (default: %(default)s)")
    flag("threshold", type=_float, help="probability threshold for masks/classes (default: %(default)s)")
    flag("overlap", type=float, help="sliding-window overlap for validation (default: %(default)s)")
    flag("patience", type=_int, metavar="N", help="early stopping patience in epochs (default: %(default)s = off)")
    _add_data(flag)
    _add_common(flag)


def _add_predict(sub) -> None:
    from .inferers import predict_volume

    r = sub.add_parser(
        "predict",
        help="sliding-window inference on a whole volume, written as NIfTI",
        description="Run a checkpoint over a whole volume (any format the readers take) in overlapping cubes "
        "and write the result as NIfTI "
        "with the input's affine: a uint8 mask for segmentation checkpoints (probabilities with "
        "--probabilities), the restored [0, 1] volume for pretraining or published weights.",
    )
    flag = _Flags(r, signature_defaults(predict_volume))
    flag("weights", required=True, metavar="CKPT", help="checkpoint (ours or the published format)")
    flag(
        "input_path",
        "--input",
        required=True,
        metavar="VOLUME",
        help="input volume: NIfTI, MetaImage, NRRD or a DICOM series folder (a 2D checkpoint also takes a "
        "PNG/JPEG image)",
    )
    flag(
        "output_path",
        "--output",
        required=True,
        metavar="NII",
        help="output NIfTI path (.nii or .nii.gz); .png for an image input",
    )
    _add_channels(flag, "--input", " (default: the channels the checkpoint was trained on)")
    flag("threshold", type=_float, help="mask threshold (default: %(default)s)")
    flag("probabilities", action="store_true", default=False, help="write float probabilities instead of a mask")
    flag("png", metavar="PNG", help="also write a picture: a few axial slices with the prediction overlaid")
    flag("overlap", type=float, help="window overlap fraction in [0, 1) (default: %(default)s)")
    flag("batch_size", type=_int, metavar="N", help="windows per forward pass (default: %(default)s)")
    flag(
        "cube",
        nargs="+",
        type=_int,
        metavar="N",
        help="window size, two sizes for a 2D checkpoint (default: the training cube stored in the checkpoint; "
        "64 64 32 for published weights)",
    )
    flag("device", choices=["auto", "cpu", "cuda"], help="device (default: %(default)s)")
    flag("amp", "--no-amp", action="store_false", help="disable mixed precision on CUDA")


def _add_evaluate(sub) -> None:
    from .metrics import evaluate_files

    e = sub.add_parser(
        "evaluate",
        help="score saved masks against labels: Dice, IoU, HD95 in mm",
        description="Compare predicted masks (e.g. from `genesis-ops predict`) with label volumes: Dice, "
        "IoU and the symmetric 95th-percentile surface distance (HD95, mm, from the "
        "affine) per case and pooled over the cases. Binary by default (prediction > 0 "
        "against label > 0, or label in --label-values); --per-label scores each label "
        "value separately in multi-label masks.",
    )
    flag = _Flags(e, {**signature_defaults(evaluate_files), "json": None, "device": "auto"})
    flag(
        "pred_paths",
        "--pred",
        required=True,
        nargs="+",
        action="extend",
        metavar="VOLUME",
        help="predicted masks (files, folders, globs; sorted within a folder or glob; NIfTI, MetaImage, NRRD or "
        "DICOM series)",
    )
    flag(
        "label_paths",
        "--labels",
        required=True,
        nargs="+",
        action="extend",
        metavar="VOLUME",
        help="label volumes, paired with --pred in order (any format --pred takes)",
    )
    flag("per_label", action="store_true", help="score every non-zero value separately (same values in both files)")
    flag(
        "label_values",
        nargs="+",
        type=int,
        metavar="V",
        help="label values that count as foreground (binary) or that are scored (--per-label) (default: all > 0)",
    )
    flag("json", metavar="FILE", help="also write the cases and the summary as JSON to FILE")
    flag("device", choices=["auto", "cpu", "cuda"], help="where surface distances are computed (default: %(default)s)")


def _add_preprocess(sub) -> None:
    p = sub.add_parser(
        "preprocess",
        help="read volumes once into a chunked store that pretrain --data STORE streams from",
        description="Read each volume (NIfTI, MetaImage .mhd/.mha, NRRD, DICOM series) once, reorient it to "
        "RAS, optionally resample it (--spacing), and write it to STORE as a compressed chunked array (CT as "
        "int16 HU, MR as its own values: the window / normalisation is applied when cubes are read) with a "
        "manifest. Reruns keep the volumes already written and verified; --part I --parts N splits the work "
        "between cluster jobs writing one store. Unreadable sources are reported, skipped and named.",
    )
    flag = _Flags(p, {"out": None, "workers": 1, "part": 0, "parts": 1, "spacing": None, "modality": "ct"})
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="volume files, folders (searched recursively; DICOM series split by Series Instance UID), "
        "glob patterns, or .txt files listing paths",
    )
    flag("out", required=True, metavar="STORE", help="store folder (created; an existing store is added to)")
    flag("modality", choices=["ct", "mri"], help="ct (default): stored as int16 HU; mri: the file's values")
    flag(
        "spacing",
        nargs=3,
        type=_float,
        metavar=("SX", "SY", "SZ"),
        help="resample to this voxel spacing in mm (default: keep the native grid)",
    )
    flag(
        "workers",
        type=_int,
        metavar="N",
        help="processes reading and writing volumes in parallel; each holds a few copies of the volume it "
        "works on (about 2 GiB at 512x512x250) (default: %(default)s)",
    )
    flag("part", type=_int, metavar="I", help="this job's part, 0..N-1 (default: %(default)s)")
    flag(
        "parts",
        type=_int,
        metavar="N",
        help="split the sources (sorted by name) into N parts, every N-th from the I-th, for N jobs writing "
        "one store together (default: 1)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines (the report is still printed)")


def _add_preview(sub) -> None:
    from .data import Preprocessing

    v = sub.add_parser(
        "preview",
        help="PNG of one slice through the original and each transform",
        description="Apply each Models Genesis transform (flip, local shuffle, non-linear, in-painting, "
        "out-painting, and the full pipeline) to a volume and save one axial slice of each.",
    )
    flag = _Flags(v, {**field_defaults(Preprocessing), "seed": 0, "device": "auto", "slice": None})
    flag(
        "input",
        required=True,
        metavar="VOLUME",
        help="input volume: NIfTI, MetaImage, NRRD or a DICOM series folder",
    )
    flag("output", required=True, metavar="PNG", help="output PNG path")
    flag("slice", type=int, metavar="K", help="axial slice index (default: middle)")
    flag("seed", type=int, help="random seed (default: %(default)s)")
    flag("device", choices=["auto", "cpu", "cuda"], help="device (default: %(default)s)")
    _add_data(flag)


def build_parser() -> argparse.ArgumentParser:
    """The ``genesis-ops`` parser: one subcommand per command, flags named after config fields."""
    ap = _Parser(
        prog="genesis-ops",
        description="Models Genesis: self-supervised pretraining of a 3D U-Net on CT/MRI volumes "
        "(NIfTI, MetaImage, NRRD, DICOM series), fine-tuning and inference. Transforms run on the training device "
        "through the genesis_ops kernels.",
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_pretrain(sub)
    _add_finetune(sub)
    _add_predict(sub)
    _add_evaluate(sub)
    _add_preprocess(sub)
    _add_preview(sub)
    i = sub.add_parser(
        "info",
        help="versions, build information and devices",
        description="Print versions (models_genesis, genesis_ops, torch, numpy, nibabel), the genesis_ops "
        "build information and the available devices.",
    )
    i.add_argument("--json", action="store_true", help="print one JSON object")
    return ap


def _is_tuple_hint(hint: Any) -> bool:
    """True for ``tuple[...]`` and ``tuple[...] | None``."""
    if typing.get_origin(hint) is tuple:
        return True
    return any(typing.get_origin(h) is tuple for h in typing.get_args(hint))


def config_from_args(cls, a: argparse.Namespace, **override: Any):
    """A config dataclass from parsed arguments: one field per flag of the same name; lists given
    for tuple fields (``--cube``, ``--hu-window``, ``--spacing``) become tuples.

    Args:
        cls: :class:`PretrainConfig` or :class:`FinetuneConfig`.
        a: ``build_parser().parse_args(...)`` of the matching subcommand.
        **override: fields to set instead of the parsed values.
    """
    hints = typing.get_type_hints(cls)
    kw = {}
    for f in fields(cls):
        v = getattr(a, f.name)
        if isinstance(v, list) and _is_tuple_hint(hints[f.name]):
            v = tuple(v)
        kw[f.name] = v
    kw.update(override)
    return cls(**kw)


# ------------------------------------------------------------------------------------------------


def _cmd_pretrain(a) -> int:
    from .config import PretrainConfig
    from .pretrain import loss_name, pretrain

    cfg = config_from_args(PretrainConfig, a)
    res = pretrain(cfg)
    h = [r for r in res["history"] if r.get("val_loss") is not None]
    if h and int(os.environ.get("RANK", "0")) == 0:
        print(
            f"validation {loss_name(cfg)}: {h[0]['val_loss']:.5f} (epoch {h[0]['epoch']}) -> {h[-1]['val_loss']:.5f} "
            f"(epoch {h[-1]['epoch']}), best {res['best_val']:.5f}; {res['time_s']:.1f}s"
        )
    return 0


def _cmd_finetune(a) -> int:
    from .config import DEFAULT_PRETRAIN_OUT, FinetuneConfig, default_out
    from .finetune import finetune, finetune_demo

    weights = a.weights
    if a.demo and not weights:
        cand = os.path.join(default_out(DEFAULT_PRETRAIN_OUT, a.dims), "best.pt")
        weights = cand if os.path.exists(cand) else None
    cfg = config_from_args(FinetuneConfig, a, weights=weights)
    if a.demo:
        from .demo import epoch_table

        res = finetune_demo(cfg)
        sm = res["summary"]
        seeds = sm["pretrained"]["seeds"]
        print(f"vertebra segmentation, validation Dice ({sm['validation']}), mean (min..max) over seeds {seeds}:")
        print("\n".join("  " + line for line in epoch_table(sm)))
        print(sm["comparison"])
        print(
            f"wrote {res['summary_path']}, {res['curves_png']}, {res['segmentation_png']}; "
            f"pretrained weights {weights}; {res['time_s']:.1f}s"
        )
        return 0
    res = finetune(cfg)
    if a.task == "segmentation":
        cases = res["best_metrics"].get("val_cases") or []
        per = "; ".join(f"{c['name']} {c['dice']:.4f}" for c in cases) if len(cases) > 1 else ""
        print(
            f"best validation Dice {res['dice']:.4f}, IoU {res['iou']:.4f} (pooled over {len(cases)} validation "
            f"volume(s){': ' + per if per else ''}); checkpoint {res['best']}"
        )
    else:
        print(f"best validation AUC {res['auc']:.4f}, accuracy {res['accuracy']:.4f}; checkpoint {res['best']}")
    return 0


def _cmd_predict(a) -> int:
    from .inferers import predict_volume

    res = predict_volume(
        a.weights,
        a.input_path,
        a.output_path,
        device=a.device,
        threshold=None if a.probabilities else a.threshold,
        overlap=a.overlap,
        batch_size=a.batch_size,
        cube=tuple(a.cube) if a.cube else None,
        amp=a.amp,
        channels=a.channels,
        png=a.png,
    )
    what = "mask" if res["mask"] else "float volume"
    print(
        f"wrote {what} {res['output']} (shape {'x'.join(map(str, res['shape']))}, {res['kind']} checkpoint, "
        f"{res['time_s']:.1f}s)"
    )
    return 0


def _cmd_evaluate(a) -> int:
    from .data import find_volumes
    from .metrics import evaluate_files, format_table
    from .utils import resolve_device

    res = evaluate_files(
        find_volumes(a.pred_paths),
        find_volumes(a.label_paths),
        per_label=a.per_label,
        label_values=a.label_values,
        device=resolve_device(a.device),
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print(format_table(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    return 0


def _cmd_preprocess(a) -> int:
    from .preprocess import build_store, format_report
    from .readers import find_volumes
    from .utils import UsageError

    if a.workers < 1:
        raise UsageError(f"--workers: expected a positive integer, got {a.workers}")
    if a.parts < 1:
        raise UsageError(f"--parts: expected a positive integer, got {a.parts}")
    if not 0 <= a.part < a.parts:
        raise UsageError(f"--part: expected 0..{a.parts - 1} with --parts {a.parts}, got {a.part}")
    if a.spacing is not None and not all(math.isfinite(v) and v > 0 for v in a.spacing):
        raise UsageError(f"--spacing: expected three positive numbers, got {' '.join(f'{v:g}' for v in a.spacing)}")
    report = build_store(
        find_volumes(a.sources),
        a.out,
        modality=a.modality,
        spacing=a.spacing,
        workers=a.workers,
        part=a.part,
        parts=a.parts,
        skip_bad=True,
        progress=not a.quiet,
    )
    print(format_report(report, os.path.abspath(a.out)))
    return 0 if report["written"] + report["kept"] or not report["failed"] else 1


def _cmd_preview(a) -> int:
    import numpy as np
    import torch

    import genesis_ops as go

    from . import data
    from . import plots
    from .config import check_preprocessing
    from .utils import UsageError, resolve_device

    check_preprocessing(a)
    dev = resolve_device(a.device)
    vol = data.load_volume(a.input, data.Preprocessing.from_config(a))
    x = torch.from_numpy(vol.channel_first().astype(np.float32))[None].to(dev)  # a 4D file: all channels
    depth = vol.spatial_shape[2]
    k = depth // 2 if a.slice is None else a.slice
    if not 0 <= k < depth:
        raise UsageError(f"--slice: {k} is outside 0..{depth - 1}")
    s = a.seed
    outs = [
        ("original", x),
        ("flip (3 flips at most)", go.flip(x, p=1.0, seed=s)),
        ("local pixel shuffling", go.local_shuffle(x, p=1.0, seed=s + 1)),
        ("non-linear intensity", go.nonlinear(x, p=1.0, seed=s + 2)),
        ("in-painting", go.inpaint(x, p=1.0, seed=s + 3)),
        ("out-painting", go.outpaint(x, p=1.0, seed=s + 4)),
    ]
    inp, tgt = go.models_genesis(x, seed=s + 5)
    outs += [("pipeline input", inp), ("pipeline target", tgt)]
    imgs = [t[0, 0, :, :, k].float().cpu().numpy() for _, t in outs]
    plots.panels(
        imgs,
        [n for n, _ in outs],
        a.output,
        title=f"{os.path.basename(a.input)}: axial slice {k} of {depth}"
        + (f", channel 0 of {vol.channels}" if vol.channels > 1 else ""),
    )
    print(f"wrote {a.output} (slice {k}, seed {s})")
    return 0


def info_dict() -> dict:
    import numpy as np
    import torch

    from . import __version__
    from .data import DEMO_CT, DEMO_LABELS

    d = {
        "models_genesis": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
        "demo_data": all(os.path.exists(p) for p in (DEMO_CT, DEMO_LABELS)),
    }
    try:
        import nibabel

        d["nibabel"] = nibabel.__version__
    except ImportError as e:  # pragma: no cover
        d["nibabel"] = f"missing ({e})"
    try:
        import genesis_ops as go

        d["genesis_ops"] = getattr(go, "__version__", "unknown")
        d["genesis_ops_path"] = os.path.dirname(go.__file__)
        try:
            d["build_info"] = go.build_info()
        except Exception as e:  # noqa: BLE001
            d["build_info"] = f"unavailable ({e})"
    except ImportError as e:
        d["genesis_ops"] = f"not importable ({e})"
    if torch.cuda.is_available():
        d["cuda_devices"] = [
            {
                "index": k,
                "name": torch.cuda.get_device_name(k),
                "memory_gib": round(torch.cuda.get_device_properties(k).total_memory / 2**30, 1),
                "capability": ".".join(map(str, torch.cuda.get_device_capability(k))),
            }
            for k in range(torch.cuda.device_count())
        ]
    return d


def _cmd_info(a) -> int:
    d = info_dict()
    if a.json:
        print(json.dumps(d, default=str))
        return 0
    for k, v in d.items():
        if isinstance(v, dict):
            print(f"{k}:")
            for kk, vv in v.items():
                print(f"  {kk}: {vv}")
        elif isinstance(v, list):
            print(f"{k}:")
            for item in v:
                print(f"  {item}")
        else:
            print(f"{k}: {v}")
    return 0


COMMANDS = {
    "pretrain": _cmd_pretrain,
    "finetune": _cmd_finetune,
    "predict": _cmd_predict,
    "evaluate": _cmd_evaluate,
    "preprocess": _cmd_preprocess,
    "preview": _cmd_preview,
    "info": _cmd_info,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``genesis-ops``; returns the exit status (0 ok, 1 failure, 2 usage error)."""
    try:
        parser = build_parser()
    except ImportError as e:
        print(f"genesis-ops: error: {e} ({IMPORT_HINT})", file=sys.stderr)
        return 1
    try:
        a = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return int(e.code or 0)
    if not a.command:
        parser.print_help()
        return 2
    from .errors import GenesisError, Terminated, UsageError, describe_os_error

    prog = f"genesis-ops {a.command}"
    try:
        with _sigterm_raises(Terminated):
            return COMMANDS[a.command](a)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except GenesisError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a path that cannot be written or read: full disk, read-only, not a folder
        print(f"{prog}: error: {describe_os_error(e)}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"{prog}: error: {e} ({IMPORT_HINT})", file=sys.stderr)
        return 1
    except Terminated:
        print(
            f"{prog}: terminated by SIGTERM (the last checkpoint written stays loadable; continue with --resume)",
            file=sys.stderr,
        )
        return 143
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (the last checkpoint written stays loadable)", file=sys.stderr)
        return 130


class _sigterm_raises:
    """Context: SIGTERM (what schedulers send before a kill) raises ``exc`` in the main thread, so
    that it unwinds like Ctrl-C (temporary files removed, the last complete checkpoint kept); the
    previous handler comes back on exit. Elsewhere than the main thread it does nothing."""

    def __init__(self, exc: type[BaseException]):
        self.exc, self.old = exc, None

    def _raise(self, signum, frame):
        raise self.exc()

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGTERM, self._raise)
        return self

    def __exit__(self, *exc):
        import signal

        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)
        return False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
