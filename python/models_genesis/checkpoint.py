"""The checkpoint format: writing, reading, inspecting, loading into a model, and resume checks.

Our checkpoints are dicts loadable with ``torch.load(..., weights_only=True)``::

    {format, kind, version, model, model_config, optimizer, epoch, step, rng, config, **extra}

``kind`` is ``"pretrain"``, ``"finetune-segmentation"`` or ``"finetune-classification"``; the extras
are a task's (``scheduler``, ``preprocessing``, ``history``, ``metrics``, ``best_val``...). The
published Models Genesis weights (``{"state_dict": ...}`` with ``module.`` prefixes) and bare state
dicts are read too. Every write is atomic (a temporary file beside the target, fsync, rename), so
an interruption at any moment leaves the previous complete file.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

import torch
import torch.nn as nn

from .errors import CheckpointError, UsageError
from .model import UNETS, GenesisClassifier, UNet2D, UNet3D, unwrap
from .utils import rng_state, set_rng_state

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "FIRST_CONV",
    "HEAD_KEYS",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointWriter",
    "adapt_channels",
    "atomic_save",
    "build_model",
    "check_resume",
    "checkpoint_payload",
    "extract_state_dict",
    "initialised_note",
    "inspect_checkpoint",
    "load_model",
    "load_pretrained",
    "plain",
    "read_checkpoint",
    "remove_stale_temp_files",
    "restore_training",
    "generator_states",
    "ResumePoint",
]

CHECKPOINT_FORMAT = "models_genesis"
CHECKPOINT_VERSION = 1

# The first convolution's kernel: its shape gives width, input channels and dimensionality.
FIRST_CONV = "down_tr64.ops.0.conv1.weight"
HEAD_KEYS = ("out_tr.final_conv.weight", "out_tr.final_conv.bias")


# ----------------------------------------------------------------------------------------------
# writing


def plain(d: Any) -> Any:
    """A checkpoint-safe (``weights_only``) copy of a config: dataclasses become dicts, tuples lists."""
    if is_dataclass(d) and not isinstance(d, type):
        d = asdict(d)
    if isinstance(d, dict):
        return {k: plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [plain(v) for v in d]
    return d


def checkpoint_payload(
    kind: str, model: nn.Module, optimizer: torch.optim.Optimizer, config: Any, epoch: int, step: int, **extra: Any
) -> dict[str, Any]:
    """The dict every checkpoint holds (loadable with ``torch.load(..., weights_only=True)``).

    Args:
        kind: ``"pretrain"``, ``"finetune-segmentation"`` or ``"finetune-classification"``.
        model: the trained model (wrappers are removed: keys have no ``module.`` prefix).
        optimizer: its optimiser (state saved for resuming).
        config: the run's config (dataclass or dict; tuples are stored as lists).
        epoch: epochs completed; step: optimiser steps completed.
        **extra: task-specific entries (``scheduler``, ``preprocessing``, ``history``, ``metrics``...).

    Returns:
        ``{format, kind, version, model, model_config, optimizer, epoch, step, rng, config, **extra}``.
    """
    m = unwrap(model)
    return {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "version": CHECKPOINT_VERSION,
        "model": m.state_dict(),
        "model_config": m.config(),
        "optimizer": optimizer.state_dict(),
        "epoch": int(epoch),
        "step": int(step),
        "rng": rng_state(),
        "config": plain(config),
        **extra,
    }


def _temp_name(path: str, pid: int) -> str:
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp.{pid}")


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace``: a reader
    (or a crash at any moment) sees either the old complete file or the new complete file. The
    temporary file is removed whatever stops the write (an error, Ctrl-C, a signal turned into an
    exception); only SIGKILL can leave it, and :func:`remove_stale_temp_files` clears it later."""
    path = os.path.abspath(path)
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    tmp = _temp_name(path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            try:
                torch.save(obj, f)
            except RuntimeError as e:
                # torch reports a failed write of the Python file (Ctrl-C, SIGTERM, a full disk)
                # as a RuntimeError; surface what stopped it
                cause = _write_failure(e)
                if cause is None:
                    raise
                raise cause from None
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # name the file: a full disk's error says only "No space left on device"
        if e.filename is None:
            raise OSError(e.errno, e.strerror, tmp) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    try:  # make the rename durable
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _write_failure(e: BaseException) -> BaseException | None:
    """The interrupt (KeyboardInterrupt, SIGTERM) or OSError behind a failed ``torch.save``."""
    seen = set()
    c: BaseException | None = e
    while c is not None and id(c) not in seen:
        seen.add(id(c))
        if isinstance(c, (KeyboardInterrupt, OSError)):
            return c
        c = c.__cause__ or c.__context__
    return None


_TEMP = re.compile(r"^\.(?:last|best)\.pt\.(?:tmp|copy)\.(\d+)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temp_files(out: str) -> list[str]:
    """Remove the temporary checkpoint files (``.last.pt.tmp.<pid>``, ``.best.pt.tmp.<pid>``,
    ``.best.pt.copy.<pid>``) that processes no longer alive left in ``out`` (a SIGKILL during a
    write); returns the removed paths. Files of live processes (e.g. a concurrent writer) stay."""
    removed = []
    try:
        names = os.listdir(out)
    except OSError:
        return removed
    for name in names:
        m = _TEMP.match(name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            p = os.path.join(out, name)
            try:
                os.remove(p)
                removed.append(p)
            except FileNotFoundError:
                pass
    return removed


class CheckpointWriter:
    """Writes ``last.pt`` after every epoch and ``best.pt`` when the epoch is the best, each
    atomically (:func:`atomic_save`): an interruption at any moment leaves the previous complete
    file.

    Args:
        out: the run folder.
    """

    def __init__(self, out: str):
        self.out = out
        self.last = os.path.join(out, "last.pt")
        self.best = os.path.join(out, "best.pt")

    def save(self, payload: dict[str, Any], is_best: bool) -> None:
        """Write ``payload`` as ``last.pt``, and as ``best.pt`` too when ``is_best``."""
        if is_best:
            atomic_save(payload, self.best)
        atomic_save(payload, self.last)

    def finish(self, had_best: bool) -> None:
        """At the end of a run: when no epoch was ever the best (the metric was undefined
        throughout) or ``best.pt`` is missing, ``best.pt`` becomes a copy of ``last.pt``."""
        if os.path.exists(self.last) and (not had_best or not os.path.exists(self.best)):
            tmp = os.path.join(self.out, f".best.pt.copy.{os.getpid()}")
            try:
                shutil.copyfile(self.last, tmp)
                os.replace(tmp, self.best)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)


# ----------------------------------------------------------------------------------------------
# reading


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _load_error(e: BaseException) -> str:
    """What was wrong with a file ``torch.load(weights_only=True)`` refused, in one line, without
    torch's advice to turn the protection off."""
    if isinstance(e, EOFError):
        return "empty or truncated file"
    text = _ANSI.sub("", str(e))
    m = re.search(r"(?i)unsupported global[: ]+(?:GLOBAL )?([\w.]+)", text)
    if m:
        return f"unsupported global {m.group(1)}: not a genesis-ops checkpoint; its code was not run"
    if re.search(r"(?i)unsupported operand|invalid load key|magic number|EOFError|Ran out of input", text):
        return "not a PyTorch checkpoint file"
    if "PytorchStreamReader" in text or "zip archive" in text:
        return "truncated or corrupted file"
    lines = [
        ln.strip()
        for ln in text.splitlines()
        if ln.strip() and "weights_only" not in ln and "Re-running" not in ln and "WeightsUnpickler" not in ln
    ]
    return lines[0].split(". ")[0].rstrip(".") if lines else type(e).__name__


def read_checkpoint(path: str, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint file safely (``weights_only=True``); one-line errors naming the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    try:
        with warnings.catch_warnings():  # e.g. torch's note on a pickle protocol: the error says enough
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure means unreadable
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_load_error(e)})") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return dict(obj)


def _source(weights: Any, source: str | None) -> str:
    if source is not None:
        return source
    return os.fspath(weights) if isinstance(weights, (str, os.PathLike)) else "checkpoint"


def _obj(weights: Any, map_location: Any = "cpu") -> dict[str, Any]:
    """A loaded checkpoint dict from a path or an already loaded dict."""
    return read_checkpoint(weights, map_location) if isinstance(weights, (str, os.PathLike)) else dict(weights)


def extract_state_dict(obj: Mapping[str, Any], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the state dict in our format (``model``), the published one (``state_dict``) or a bare one,
    and strip ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes."""
    if "model" in obj and isinstance(obj["model"], Mapping):
        sd = obj["model"]
    elif "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        sd = obj["state_dict"]
    elif obj and all(torch.is_tensor(v) for v in obj.values()):
        sd = obj
    else:
        raise CheckpointError(
            f"{source}: no model weights found (expected a 'model' or 'state_dict' "
            f"entry or a bare state dict; top-level keys: {sorted(obj)[:8]})"
        )
    out = {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            raise CheckpointError(f"{source}: entry {k!r} is not a tensor")
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


@dataclass
class CheckpointInfo:
    """What a weights file says about its model and run.

    Attributes:
        kind: ``"pretrain"``, ``"finetune-segmentation"``, ``"finetune-classification"``, or
            ``"published"`` for the published format and bare state dicts.
        dims: 2 or 3 (from the first convolution's kernel).
        width: channels of the first convolution.
        in_channels: input channels the model takes.
        norm: ``"batch"`` or ``"batch_stats"`` (``"batch"`` when the file does not say).
        cube: the training cube (ours only, else None).
        channels: the channel names the run was trained on (ours only, else None).
        preprocessing: the run's :class:`data.Preprocessing` as a dict (ours only, else None).
        obj: the loaded checkpoint dict.
    """

    kind: str
    dims: int
    width: int
    in_channels: int
    norm: str = "batch"
    cube: tuple[int, ...] | None = None
    channels: tuple[str, ...] | None = None
    preprocessing: dict[str, Any] | None = None
    obj: dict[str, Any] = field(default_factory=dict, repr=False)


def inspect_checkpoint(weights: Any, source: str | None = None) -> CheckpointInfo:
    """:class:`CheckpointInfo` of a weights file (ours or the published format) or a loaded dict."""
    source = _source(weights, source)
    obj = _obj(weights)
    w = extract_state_dict(obj, source).get(FIRST_CONV)
    if w is None:
        raise CheckpointError(f"{source}: no U-Net encoder weights ({FIRST_CONV}) found")
    mc = obj.get("model_config") or {}
    cfg = obj.get("config") or {}
    cube, channels = cfg.get("cube"), cfg.get("channels")
    return CheckpointInfo(
        kind=str(obj.get("kind", "published")),
        dims=w.dim() - 2,
        width=int(w.shape[0]),
        in_channels=int(w.shape[1]),
        norm=mc.get("norm", "batch"),
        cube=tuple(int(c) for c in cube) if cube else None,
        channels=tuple(channels) if channels else None,
        preprocessing=obj.get("preprocessing"),
        obj=obj,
    )


# ----------------------------------------------------------------------------------------------
# loading into a model


def _summarise(keys, n=3) -> str:
    keys = sorted(keys)
    s = ", ".join(keys[:n])
    return s + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def adapt_channels(sd: dict[str, torch.Tensor], in_channels: int, n_out: int | None = None) -> dict[str, torch.Tensor]:
    """Single-channel weights made to fit a ``in_channels``-channel model (restoring ``n_out``
    channels when given): the first convolution's kernel is repeated over the input channels and
    divided by their number, so an input whose channels are all equal gives exactly the
    single-channel response; a one-output head is repeated for every output channel. Every other
    tensor is kept. Weights that are not single-channel are returned unchanged."""
    sd = dict(sd)
    w = sd.get(FIRST_CONV)
    if w is not None and w.shape[1] == 1 and in_channels > 1:
        sd[FIRST_CONV] = w.repeat(1, in_channels, 1, 1, 1) / in_channels
    if n_out is not None and n_out > 1:
        for k in HEAD_KEYS:
            if k in sd and sd[k].shape[0] == 1:
                sd[k] = sd[k].repeat(n_out, *([1] * (sd[k].dim() - 1)))
    return sd


def initialised_note(weights: Any, in_channels: int) -> str:
    """ "" or the log note saying that single-channel ``weights`` were adapted to ``in_channels``
    (:func:`adapt_channels`), for the commands' "initialised from ..." line."""
    w = extract_state_dict(_obj(weights)).get(FIRST_CONV)
    if w is None or w.shape[1] == in_channels:
        return ""
    return (
        f"; single-channel weights adapted to {in_channels} channels: first convolution's kernel repeated "
        f"over the channels and divided by {in_channels} (a one-output restoration head repeated per channel)"
    )


def load_pretrained(
    model: nn.Module,
    weights: Any,
    strict: bool = True,
    skip_head: bool = False,
    map_location: Any = "cpu",
    source: str | None = None,
    adapt_single_channel: bool = False,
) -> dict[str, Any]:
    """Load weights into ``model`` from a path or an already loaded checkpoint dict.

    Accepts our checkpoints (``{'model': ..., 'model_config': ...}``), the published format
    (``{'state_dict': ...}`` with ``module.`` prefixes) and bare state dicts.

    * :class:`UNet3D`: all keys must match (``strict``); ``skip_head=True`` keeps the model's own
      ``out_tr`` head (e.g. to fine-tune with a different number of classes).
    * :class:`GenesisClassifier`: only the encoder (``down_tr*``) is taken from a U-Net checkpoint;
      a classifier checkpoint loads completely.
    * ``adapt_single_channel``: single-channel weights (the published ones) initialise a
      multi-channel model through :func:`adapt_channels`; without it a channel mismatch is an error.

    Raises :class:`CheckpointError` with a one-line message on any mismatch. Returns the
    checkpoint's metadata (everything but tensors' state dicts).
    """
    source = _source(weights, source)
    obj = _obj(weights, map_location)
    sd = extract_state_dict(obj, source)
    target = unwrap(model)
    own = target.state_dict()
    if adapt_single_channel:
        sd = adapt_channels(
            sd, target.in_channels, None if skip_head or isinstance(target, GenesisClassifier) else target.n_classes
        )
    if isinstance(target, GenesisClassifier) and not any(k.startswith("head.") for k in sd):
        sd = {k: v for k, v in sd.items() if k.startswith("down_tr")}
        own_keys = {k for k in own if k.startswith("down_tr")}
    else:
        own_keys = set(own)
    if skip_head:
        sd = {k: v for k, v in sd.items() if not k.startswith(("out_tr.", "head."))}
        own_keys = {k for k in own_keys if not k.startswith(("out_tr.", "head."))}
    # BatchNorm's num_batches_tracked counters are optional (older or converted files may lack them)
    missing = {k for k in own_keys - set(sd) if not k.endswith("num_batches_tracked")}
    unexpected = set(sd) - set(own)
    if FIRST_CONV in sd and FIRST_CONV in own:
        a, b = sd[FIRST_CONV].shape, own[FIRST_CONV].shape
        if len(a) != len(b):
            raise CheckpointError(
                f"{source}: weights of a {len(a) - 2}D model, the model is {len(b) - 2}D (--dims {len(b) - 2})"
            )
        if a != b:
            hint = (
                "; single-channel weights can initialise it with adapt_single_channel=True"
                if a[1] == 1 and a[0] == b[0]
                else ""
            )
            raise CheckpointError(
                f"{source}: first convolution has shape {tuple(a)} (width {a[0]}, {a[1]} input channel(s)) "
                f"but the model expects {tuple(b)} (width {b[0]}, {b[1]} input channel(s)){hint}"
            )
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing keys: {_summarise(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_summarise(unexpected)}")
        raise CheckpointError(f"{source}: weights do not match the model ({'; '.join(parts)})")
    for k, v in sd.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(f"{source}: {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    sd = {k: v for k, v in sd.items() if k in own}
    target.load_state_dict(sd, strict=False)
    return {k: v for k, v in obj.items() if k not in ("model", "state_dict", "optimizer", "scheduler")}


def build_model(config: Mapping[str, Any]) -> nn.Module:
    """Build a model from the ``model_config`` stored in our checkpoints."""
    cfg = dict(config)
    arch = cfg.pop("arch", "unet3d")
    if arch == "unet3d":
        return UNet3D(**cfg)
    if arch == "unet2d":
        return UNet2D(**cfg)
    if arch == "classifier":
        return GenesisClassifier(**cfg)
    raise CheckpointError(f"unknown model architecture {arch!r} in checkpoint")


def load_model(weights: Any, map_location: Any = "cpu", source: str | None = None, **defaults: Any) -> nn.Module:
    """Build a model from a checkpoint: our checkpoints carry their config; a published or bare
    state dict is taken as a U-Net whose width/channels are inferred from the weights."""
    source = _source(weights, source)
    obj = _obj(weights, map_location)
    cfg = obj.get("model_config")
    if isinstance(cfg, Mapping):
        model = build_model(cfg)
    else:
        sd = extract_state_dict(obj, source)
        w = sd.get(FIRST_CONV)
        head = sd.get(HEAD_KEYS[0])
        if w is None or head is None:
            raise CheckpointError(f"{source}: not a U-Net checkpoint (no down_tr64/out_tr weights)")
        cfg = {"in_channels": int(w.shape[1]), "n_classes": int(head.shape[0]), "width": int(w.shape[0])}
        cfg.update(defaults)
        model = UNETS.get(w.dim() - 2, UNet3D)(**cfg)  # a 4D kernel: 2D weights
    load_pretrained(model, obj, strict=True, source=source)
    return model


# ----------------------------------------------------------------------------------------------
# resuming


def _as_tuple(v: Any) -> tuple | None:
    return tuple(v) if v else None


def check_resume(
    ckpt: Mapping[str, Any], cfg: Any, source: str, kind: str, keys: Sequence[str], needs: Sequence[str] = ()
) -> None:
    """Raise :class:`UsageError` (naming ``--resume`` and ``source``) unless ``ckpt`` continues a
    ``kind`` run whose settings ``keys`` equal ``cfg``'s and which holds the entries ``needs``
    (``optimizer``, ``scheduler``... beside the model, epoch and step every resume reads)."""
    got = ckpt.get("kind", "published")
    if ckpt.get("format") != CHECKPOINT_FORMAT or got != kind:
        raise UsageError(
            f"--resume: {source} is a {got} checkpoint, not one of a {kind} run; "
            "start a new run (--init-weights/--weights take other checkpoints)"
        )
    lacking = [k for k in ("model", "epoch", "step", "optimizer", *needs) if k not in ckpt]
    if lacking:
        raise UsageError(f"--resume: {source} lacks {', '.join(lacking)}; it cannot continue a run")
    saved = ckpt.get("config") or {}
    for k in keys:
        sv = saved.get(k)
        if k == "channels":
            sv, cur = _as_tuple(sv), _as_tuple(cfg.channels)
            if sv != cur:
                raise UsageError(f"--resume: channels {cur} differ from the checkpoint's {sv}")
            continue
        if k == "cube" and sv is not None:
            sv = tuple(sv)
        cur = getattr(cfg, k)
        if k == "cube" and cur is not None:
            cur = tuple(cur)
        if sv is not None and cur is not None and sv != cur:
            raise UsageError(f"--resume: {k} {cur} differs from the checkpoint's {sv}")


@dataclass
class ResumePoint:
    """Where a resumed run continues: the first epoch to run, optimiser steps so far, the
    monitor's best value and epochs without improvement, and the metrics records so far."""

    start_epoch: int
    step: int
    best_val: float
    bad_epochs: int
    history: list[dict[str, Any]]


def generator_states(generators: Mapping[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """The states of a task's own random generators, for the checkpoint (``weights_only``-safe)."""
    return {k: g.get_state() for k, g in generators.items()}


def restore_training(
    ckpt: Mapping[str, Any],
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any = None,
    source: str = "checkpoint",
    generators: Mapping[str, torch.Generator] | None = None,
) -> ResumePoint:
    """Load a resumed run's model, optimiser, scheduler, global RNG and the task's generators from
    ``ckpt`` (checked by :func:`check_resume`), so the run continues exactly as if never stopped."""
    load_pretrained(model, ckpt, strict=True, source=source)
    opt.load_state_dict(ckpt["optimizer"])
    if sched is not None:
        sched.load_state_dict(ckpt["scheduler"])
    if "rng" in ckpt:
        set_rng_state(ckpt["rng"])
    saved = ckpt.get("generators") or {}
    for k, g in (generators or {}).items():
        if k not in saved:
            raise UsageError(f"--resume: {source} lacks the state of the {k} generator; it cannot continue exactly")
        g.set_state(saved[k])
    return ResumePoint(
        start_epoch=int(ckpt["epoch"]) + 1,
        step=int(ckpt["step"]),
        best_val=float(ckpt.get("best_val", float("nan"))),
        bad_epochs=int(ckpt.get("bad_epochs", 0)),
        history=list(ckpt.get("history", [])),
    )
