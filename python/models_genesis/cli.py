"""The ``genesis-ops`` command line: pretrain, finetune, predict, preview, info."""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import List, Optional

CUBE_HELP = ("cube size in voxels along the three array axes of the canonical (RAS) volume, i.e. "
             "rows cols depth (slices); each a multiple of 8. Paper: 64 64 32. Default: 32 32 16 on CPU, "
             "64 64 32 on CUDA")
DEFAULT_PRETRAIN_OUT = os.path.join("runs", "pretrain")
DEFAULT_FINETUNE_OUT = os.path.join("runs", "finetune")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (plus a pointer to --help) and exit status 2."""

    def error(self, message):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _fraction(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a value in [0, 1], got {s}")
    return v


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s}")
    return v


def _nonneg_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {s}")
    return v


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {s}")
    return v


def _cube_side(s: str) -> int:
    v = _positive_int(s)
    if v % 8:
        raise argparse.ArgumentTypeError(f"cube sides must be multiples of 8 (three 2x poolings), got {s}")
    return v


def _add_common(p, device_default="auto"):
    p.add_argument("--device", default=device_default, choices=["auto", "cpu", "cuda"],
                   help="training device: auto (CUDA when available), cpu or cuda (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed; a run is reproducible from it (default: 0)")
    p.add_argument("--no-amp", dest="amp", action="store_false",
                   help="disable mixed precision on CUDA (bfloat16, or float16 with loss scaling); CPU runs in float32")
    p.add_argument("--log-every", type=_positive_int, default=None, metavar="N",
                   help="print a progress line every N steps when not on a terminal (default: 5 lines per epoch)")
    p.add_argument("--quiet", action="store_true", help="print only errors and the final summary")


def _add_data(p):
    g = p.add_argument_group("data preprocessing")
    g.add_argument("--modality", choices=["ct", "mri"], default="ct",
                   help="ct: clip to --hu-window and scale to [0, 1]; mri: per-volume normalisation (--mri-norm)")
    g.add_argument("--hu-window", nargs=2, type=float, default=[-1000.0, 1000.0], metavar=("LO", "HI"),
                   help="CT window in HU mapped to [0, 1] (default: -1000 1000, as the paper)")
    g.add_argument("--mri-norm", choices=["percentile", "minmax"], default="percentile",
                   help="MRI: clip to the 0.5/99.5 percentiles of non-zero voxels then scale, or per-volume min-max")
    g.add_argument("--spacing", nargs=3, type=_positive_float, default=None, metavar=("SX", "SY", "SZ"),
                   help="resample to this voxel spacing in mm before cutting cubes (default: keep the native grid)")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="genesis-ops",
                 description="Models Genesis: self-supervised pretraining of a 3D U-Net on CT/MRI volumes "
                             "(NIfTI), fine-tuning and inference. Transforms run on the training device "
                             "through the genesis_ops kernels.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # pretrain -------------------------------------------------------------------------------
    p = sub.add_parser("pretrain", help="self-supervised pretraining (no --data: short demo on the bundled CT)",
                       description="Pretrain the 3D U-Net to restore Models-Genesis-corrupted cubes (MSE). "
                                   "Without --data, runs a short demo on the bundled abdominal CT. Writes "
                                   "last.pt, best.pt, metrics.jsonl, loss_curve.png and restorations.png to --out. "
                                   "For several GPUs/nodes launch with torchrun (DDP).")
    p.add_argument("--data", nargs="+", action="extend", metavar="PATH", default=None,
                   help="NIfTI files, folders (searched recursively) or glob patterns; repeatable")
    p.add_argument("--out", default=DEFAULT_PRETRAIN_OUT, metavar="DIR", help="run folder (default: %(default)s)")
    p.add_argument("--epochs", type=_positive_int, metavar="N", help="epochs (default: demo 8 on CPU / 20 on CUDA; else 100)")
    p.add_argument("--steps-per-epoch", type=_positive_int, metavar="N",
                   help="optimiser steps per epoch (default: demo 20 on CPU / 50 on CUDA; else 100)")
    p.add_argument("--batch-size", type=_positive_int, metavar="N", help="cubes per step per process (default: 8 on CPU, 16 on CUDA)")
    p.add_argument("--cube", nargs=3, type=_cube_side, metavar=("X", "Y", "Z"), help=CUBE_HELP)
    p.add_argument("--width", type=_positive_int, metavar="N",
                   help="channels of the first convolution: 32 is the paper's 19.07M-parameter model (default: 8 on CPU, 32 on CUDA)")
    p.add_argument("--norm", choices=["batch", "batch_stats"], default="batch",
                   help="batch: standard BatchNorm; batch_stats: always batch statistics, as the published model")
    p.add_argument("--resume", action="store_true", help="continue from DIR/last.pt (model, optimiser, scheduler, epoch, RNG)")
    p.add_argument("--init-weights", metavar="CKPT", help="start from these weights (ours or the published Genesis_Chest_CT.pt format)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=["adam", "sgd"], default="adam",
                   help="adam (default, lr 1e-3) or sgd (the paper's: lr 1.0, momentum 0.9)")
    g.add_argument("--lr", type=_positive_float, help="learning rate (default: 1e-3 for adam, 1.0 for sgd)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    g.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (default: 0)")
    g.add_argument("--lr-step-epochs", type=_positive_int, default=40, metavar="N",
                   help="multiply the learning rate by --lr-gamma every N epochs (default: 40, as the paper)")
    g.add_argument("--lr-gamma", type=_positive_float, default=0.5, help="learning-rate decay factor (default: 0.5)")
    g.add_argument("--val-fraction", type=float, default=0.2,
                   help="validation share: whole volumes when there are several, else the last slices (default: 0.2; 0 = none)")
    g.add_argument("--val-batches", type=_positive_int, default=4, metavar="N",
                   help="fixed validation batches, evaluated with batch statistics after every epoch (default: 4)")
    g.add_argument("--patience", type=_nonneg_int, default=20, metavar="N",
                   help="early stopping after N epochs without improvement (default: 20; 0 = off)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g = p.add_argument_group("transforms (paper defaults)")
    g.add_argument("--flip-p", type=_fraction, default=0.4, help="flip loop probability (default: 0.4)")
    g.add_argument("--shuffle-p", type=_fraction, default=0.5, help="local pixel shuffling probability (default: 0.5)")
    g.add_argument("--num-windows", type=_positive_int, default=10000, help="shuffling windows per cube (default: 10000)")
    g.add_argument("--nonlinear-p", type=_fraction, default=0.9, help="non-linear intensity probability (default: 0.9)")
    g.add_argument("--paint-p", type=_fraction, default=0.9, help="in/out-painting probability (default: 0.9)")
    g.add_argument("--inpaint-rate", type=_fraction, default=0.2, help="share of painting that is in-painting (default: 0.2)")
    _add_data(p)
    g = p.add_argument_group("cube sampling")
    g.add_argument("--min-foreground", type=_fraction, default=0.5,
                   help="reject cubes with less than this share of non-air voxels (default: 0.5)")
    g.add_argument("--air-value", type=float, default=0.05,
                   help="normalised value below which a voxel counts as air (default: 0.05, about -900 HU)")
    g.add_argument("--skip-bad", action="store_true", help="skip unreadable volumes with a warning instead of stopping")
    g.add_argument("--previews", type=_nonneg_int, default=4, metavar="N", help="cubes shown in restorations.png (default: 4)")
    _add_common(p)

    # finetune -------------------------------------------------------------------------------
    f = sub.add_parser("finetune", help="fine-tune for segmentation or classification (--demo: bundled vertebrae)",
                       description="Fine-tune from pretrained weights (ours or the published format) or from scratch. "
                                   "Segmentation trains the full U-Net with Dice + BCE and reports Dice/IoU; "
                                   "classification trains the encoder + an MLP head with BCE/CE and reports AUC/accuracy. "
                                   "--demo segments the vertebrae of the bundled CT twice, from --weights "
                                   f"(default {DEFAULT_PRETRAIN_OUT}/best.pt) and from scratch, and prints both Dice scores.")
    f.add_argument("--task", choices=["segmentation", "classification"], default="segmentation",
                   help="segmentation (default) or classification")
    f.add_argument("--images", nargs="+", action="extend", metavar="PATH", help="image volumes (files, folders, globs)")
    f.add_argument("--labels", nargs="+", action="extend", metavar="L",
                   help="segmentation: label volumes in the same order as --images; classification: one integer class per image")
    f.add_argument("--csv", metavar="FILE", help="classification: CSV rows 'path,label' (instead of --images/--labels)")
    f.add_argument("--label-values", nargs="+", type=int, metavar="V",
                   help="segmentation: label values that count as foreground (default: every value > 0)")
    f.add_argument("--weights", metavar="CKPT",
                   help="initial weights: our checkpoint or the published Genesis_Chest_CT.pt format (default: scratch; "
                        f"with --demo: {DEFAULT_PRETRAIN_OUT}/best.pt)")
    f.add_argument("--demo", action="store_true", help="vertebra segmentation on the bundled CT, pretrained vs scratch")
    f.add_argument("--out", default=DEFAULT_FINETUNE_OUT, metavar="DIR", help="run folder (default: %(default)s)")
    f.add_argument("--epochs", type=_positive_int, metavar="N", help="epochs (default: demo 6 on CPU / 20 on CUDA; else 50)")
    f.add_argument("--steps-per-epoch", type=_positive_int, metavar="N", help="steps per epoch (default: demo 15 on CPU / 50 on CUDA; else 50)")
    f.add_argument("--batch-size", type=_positive_int, metavar="N", help="cubes per step (default: 8 on CPU, 16 on CUDA)")
    f.add_argument("--cube", nargs=3, type=_cube_side, metavar=("X", "Y", "Z"), help=CUBE_HELP)
    f.add_argument("--width", type=_positive_int, metavar="N", help="model width when training from scratch (default: as the weights; 8 on CPU, 32 on CUDA)")
    f.add_argument("--norm", choices=["batch", "batch_stats"], default="batch", help="normalisation (see pretrain --help)")
    f.add_argument("--n-classes", type=_positive_int, metavar="N", help="classification: classes (default: from the labels; 2 classes use one sigmoid output)")
    f.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    f.add_argument("--freeze-encoder-epochs", type=_nonneg_int, default=0, metavar="N",
                   help="keep the encoder frozen for the first N epochs (default: 0)")
    f.add_argument("--val-fraction", type=float, default=0.2,
                   help="validation share: whole volumes when there are several, else the last slices (default: 0.2)")
    f.add_argument("--fg-fraction", type=_fraction, default=0.5, help="segmentation: share of cubes centred on foreground (default: 0.5)")
    f.add_argument("--threshold", type=_fraction, default=0.5, help="probability threshold for masks/classes (default: 0.5)")
    f.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap for validation (default: 0.5)")
    f.add_argument("--patience", type=_nonneg_int, default=0, metavar="N", help="early stopping patience in epochs (default: 0 = off)")
    _add_data(f)
    _add_common(f)

    # predict --------------------------------------------------------------------------------
    r = sub.add_parser("predict", help="sliding-window inference on a whole volume, written as NIfTI",
                       description="Run a checkpoint over a whole NIfTI volume in overlapping cubes and write the result "
                                   "with the input's affine: a uint8 mask for segmentation checkpoints (probabilities with "
                                   "--probabilities), the restored [0, 1] volume for pretraining or published weights.")
    r.add_argument("--weights", required=True, metavar="CKPT", help="checkpoint (ours or the published format)")
    r.add_argument("--input", required=True, metavar="NII", help="input NIfTI volume")
    r.add_argument("--output", required=True, metavar="NII", help="output NIfTI path (.nii or .nii.gz)")
    r.add_argument("--threshold", type=_fraction, default=0.5, help="mask threshold (default: 0.5)")
    r.add_argument("--probabilities", action="store_true", help="write float probabilities instead of a mask")
    r.add_argument("--overlap", type=float, default=0.5, help="window overlap fraction in [0, 1) (default: 0.5)")
    r.add_argument("--batch-size", type=_positive_int, default=4, metavar="N", help="windows per forward pass (default: 4)")
    r.add_argument("--cube", nargs=3, type=_cube_side, metavar=("X", "Y", "Z"),
                   help="window size (default: the training cube stored in the checkpoint; 64 64 32 for published weights)")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device (default: auto)")
    r.add_argument("--no-amp", dest="amp", action="store_false", help="disable mixed precision on CUDA")

    # preview --------------------------------------------------------------------------------
    v = sub.add_parser("preview", help="PNG of one slice through the original and each transform",
                       description="Apply each Models Genesis transform (flip, local shuffle, non-linear, in-painting, "
                                   "out-painting, and the full pipeline) to a volume and save one axial slice of each.")
    v.add_argument("--input", required=True, metavar="NII", help="input NIfTI volume")
    v.add_argument("--output", required=True, metavar="PNG", help="output PNG path")
    v.add_argument("--slice", type=int, default=None, metavar="K", help="axial slice index (default: middle)")
    v.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    v.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device (default: auto)")
    _add_data(v)

    # info -----------------------------------------------------------------------------------
    i = sub.add_parser("info", help="versions, build information and devices",
                       description="Print versions (models_genesis, genesis_ops, torch, numpy, nibabel), the genesis_ops "
                                   "build information and the available devices.")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    return ap


# ------------------------------------------------------------------------------------------------


def _cmd_pretrain(a) -> int:
    from .pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(
        data=a.data, out=a.out, epochs=a.epochs, steps_per_epoch=a.steps_per_epoch, batch_size=a.batch_size,
        cube=tuple(a.cube) if a.cube else None, width=a.width, norm=a.norm, device=a.device, seed=a.seed,
        resume=a.resume, optimizer=a.optimizer, lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay,
        lr_step_epochs=a.lr_step_epochs, lr_gamma=a.lr_gamma, val_fraction=a.val_fraction,
        val_batches=a.val_batches, patience=a.patience, amp=a.amp, compile=a.compile, flip_p=a.flip_p,
        shuffle_p=a.shuffle_p, num_windows=a.num_windows, nonlinear_p=a.nonlinear_p, paint_p=a.paint_p,
        inpaint_rate=a.inpaint_rate, modality=a.modality, hu_window=tuple(a.hu_window), mri_norm=a.mri_norm,
        spacing=tuple(a.spacing) if a.spacing else None, min_foreground=a.min_foreground, air_value=a.air_value,
        skip_bad=a.skip_bad, init_weights=a.init_weights, previews=a.previews, log_every=a.log_every,
        quiet=a.quiet)
    res = pretrain(cfg)
    h = [r for r in res["history"] if r.get("val_loss") is not None]
    if h and int(os.environ.get("RANK", "0")) == 0:
        print(f"validation MSE: {h[0]['val_loss']:.5f} (epoch {h[0]['epoch']}) -> {h[-1]['val_loss']:.5f} "
              f"(epoch {h[-1]['epoch']}), best {res['best_val']:.5f}; {res['time_s']:.1f}s")
    return 0


def _cmd_finetune(a) -> int:
    from .finetune import FinetuneConfig, finetune, finetune_demo

    weights = a.weights
    if a.demo and not weights:
        cand = os.path.join(DEFAULT_PRETRAIN_OUT, "best.pt")
        weights = cand if os.path.exists(cand) else None
    cfg = FinetuneConfig(
        task=a.task, images=a.images, labels=a.labels, csv=a.csv, label_values=a.label_values, weights=weights,
        out=a.out, epochs=a.epochs, steps_per_epoch=a.steps_per_epoch, batch_size=a.batch_size,
        cube=tuple(a.cube) if a.cube else None, width=a.width, norm=a.norm, n_classes=a.n_classes, lr=a.lr,
        freeze_encoder_epochs=a.freeze_encoder_epochs, val_fraction=a.val_fraction, fg_fraction=a.fg_fraction,
        threshold=a.threshold, overlap=a.overlap, patience=a.patience, device=a.device, seed=a.seed, amp=a.amp,
        modality=a.modality, hu_window=tuple(a.hu_window), mri_norm=a.mri_norm,
        spacing=tuple(a.spacing) if a.spacing else None, demo=a.demo, log_every=a.log_every, quiet=a.quiet)
    if a.demo:
        if a.task != "segmentation":
            from .utils import UsageError
            raise UsageError("--demo: the bundled demo is vertebra segmentation (--task segmentation)")
        res = finetune_demo(cfg)
        p, s = res["pretrained"], res["scratch"]
        pl, sl = p["history"][-1]["val_dice"], s["history"][-1]["val_dice"]
        print(f"vertebra segmentation Dice on the held-out slices: from pretrained weights ({weights}) "
              f"{p['dice']:.4f} best epoch / {pl:.4f} last epoch; from scratch {s['dice']:.4f} best / "
              f"{sl:.4f} last; {res['time_s']:.1f}s")
        return 0
    res = finetune(cfg)
    if a.task == "segmentation":
        print(f"best validation Dice {res['dice']:.4f}, IoU {res['iou']:.4f}; checkpoint {res['best']}")
    else:
        print(f"best validation AUC {res['auc']:.4f}, accuracy {res['accuracy']:.4f}; checkpoint {res['best']}")
    return 0


def _cmd_predict(a) -> int:
    from .finetune import predict_volume

    res = predict_volume(a.weights, a.input, a.output, device=a.device,
                         threshold=None if a.probabilities else a.threshold, overlap=a.overlap,
                         batch_size=a.batch_size, cube=tuple(a.cube) if a.cube else None, amp=a.amp)
    what = "mask" if res["mask"] else "float volume"
    print(f"wrote {what} {res['output']} (shape {'x'.join(map(str, res['shape']))}, {res['kind']} checkpoint, "
          f"{res['time_s']:.1f}s)")
    return 0


def _cmd_preview(a) -> int:
    import numpy as np
    import torch

    import genesis_ops as go

    from . import data as D
    from . import plots
    from .utils import UsageError, resolve_device

    dev = resolve_device(a.device)
    pre = D.Preprocessing(modality=a.modality, hu_window=tuple(a.hu_window), mri_norm=a.mri_norm,
                          spacing=tuple(a.spacing) if a.spacing else None)
    vol = D.load_volume(a.input, pre)
    x = torch.from_numpy(vol.data.astype(np.float32))[None, None].to(dev)
    k = vol.data.shape[2] // 2 if a.slice is None else a.slice
    if not 0 <= k < vol.data.shape[2]:
        raise UsageError(f"--slice: {k} is outside 0..{vol.data.shape[2] - 1}")
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
    plots.panels(imgs, [n for n, _ in outs], a.output,
                 title=f"{os.path.basename(a.input)}: axial slice {k} of {vol.data.shape[2]}")
    print(f"wrote {a.output} (slice {k}, seed {s})")
    return 0


def info_dict() -> dict:
    import numpy as np
    import torch

    from . import __version__
    from .data import DEMO_CT, DEMO_LABELS

    d = {"models_genesis": __version__, "python": platform.python_version(), "platform": platform.platform(),
         "torch": torch.__version__, "numpy": np.__version__, "torch_cuda": torch.version.cuda,
         "cuda_available": torch.cuda.is_available(), "cpu_threads": torch.get_num_threads(),
         "demo_data": all(os.path.exists(p) for p in (DEMO_CT, DEMO_LABELS))}
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
            {"index": k, "name": torch.cuda.get_device_name(k),
             "memory_gib": round(torch.cuda.get_device_properties(k).total_memory / 2 ** 30, 1),
             "capability": ".".join(map(str, torch.cuda.get_device_capability(k)))}
            for k in range(torch.cuda.device_count())]
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


COMMANDS = {"pretrain": _cmd_pretrain, "finetune": _cmd_finetune, "predict": _cmd_predict,
            "preview": _cmd_preview, "info": _cmd_info}


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``genesis-ops``; returns the exit status (0 ok, 1 failure, 2 usage error)."""
    parser = build_parser()
    try:
        a = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return int(e.code or 0)
    if not a.command:
        parser.print_help()
        return 2
    from .data import VolumeError
    from .model import CheckpointError
    from .utils import UsageError

    prog = f"genesis-ops {a.command}"
    try:
        return COMMANDS[a.command](a)
    except (UsageError, ValueError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except (VolumeError, CheckpointError, FloatingPointError, FileNotFoundError, PermissionError,
            IsADirectoryError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"{prog}: error: {e} (is genesis_ops installed? `pip install .` at the repository root)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (the last checkpoint written stays loadable)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
