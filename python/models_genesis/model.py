"""The Models Genesis 3D U-Net (and the same network in 2D), an encoder-only classifier, and weight loading.

Layer and parameter names follow the published PyTorch weights (``Genesis_Chest_CT.pt``) so that
those weights load with ``strict=True`` once a ``module.`` prefix is stripped.

Tensor layout: ``(B, C, X, Y, Z)`` where the three spatial axes are the array axes of the
canonical (RAS) volume, i.e. the paper's ``rows x cols x depth`` (64 x 64 x 32 by default).
Every spatial side must be divisible by 8 (three 2x poolings). :class:`UNet2D` is the same network
built from 2D layers, on ``(B, C, H, W)``.
"""

from __future__ import annotations

import os
from typing import Any
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

NORMS = ("batch", "batch_stats")
ACTIVATIONS = ("sigmoid", "softmax", "none")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not match the model."""


class _BatchStats:
    """BatchNorm that always normalises with the current batch's statistics, also in eval mode.

    This reproduces the published model's behaviour (its outputs depend on batch composition).
    Unlike the published layer, running statistics are only updated in training mode, so
    validation batches do not leak into them. Parameter and buffer names equal ``nn.BatchNorm3d``
    (``nn.BatchNorm2d`` for the 2D model).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.training:
            return super().forward(x)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class BatchStatsNorm3d(_BatchStats, nn.BatchNorm3d):
    __doc__ = _BatchStats.__doc__


class BatchStatsNorm2d(_BatchStats, nn.BatchNorm2d):
    __doc__ = _BatchStats.__doc__


# The layer types of each dimensionality: the 2D and 3D networks are one definition built from these.
_LAYERS = {
    3: {
        "conv": nn.Conv3d,
        "up": nn.ConvTranspose3d,
        "pool": F.max_pool3d,
        "batch": nn.BatchNorm3d,
        "batch_stats": BatchStatsNorm3d,
    },
    2: {
        "conv": nn.Conv2d,
        "up": nn.ConvTranspose2d,
        "pool": F.max_pool2d,
        "batch": nn.BatchNorm2d,
        "batch_stats": BatchStatsNorm2d,
    },
}


def _norm(kind: str, ch: int, dims: int = 3) -> nn.Module:
    if kind not in NORMS:
        raise ValueError(f"norm: expected one of {NORMS}, got {kind!r}")
    return _LAYERS[dims][kind](ch)


class ConvBlock(nn.Module):
    """3x3(x3) convolution, normalisation, ReLU (names ``conv1`` / ``bn1`` as published)."""

    def __init__(self, cin: int, cout: int, norm: str, dims: int = 3):
        super().__init__()
        self.conv1 = _LAYERS[dims]["conv"](cin, cout, kernel_size=3, padding=1)
        self.bn1 = _norm(norm, cout, dims)
        self.relu1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.relu1(self.bn1(self.conv1(x)))


class DownBlock(nn.Module):
    def __init__(self, cin: int, cmid: int, cout: int, norm: str, pool: bool, dims: int = 3):
        super().__init__()
        self.ops = nn.Sequential(ConvBlock(cin, cmid, norm, dims), ConvBlock(cmid, cout, norm, dims))
        self.pool = pool
        self._pool = _LAYERS[dims]["pool"]

    def forward(self, x: torch.Tensor):  # noqa: D102
        skip = self.ops(x)
        out = self._pool(skip, 2) if self.pool else skip
        return out, skip


class UpBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int, norm: str, dims: int = 3):
        super().__init__()
        self.up_conv = _LAYERS[dims]["up"](cin, cin, kernel_size=2, stride=2)
        self.ops = nn.Sequential(ConvBlock(cin + cskip, cout, norm, dims), ConvBlock(cout, cout, norm, dims))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.ops(torch.cat([self.up_conv(x), skip], dim=1))


class OutBlock(nn.Module):
    def __init__(self, cin: int, n_classes: int, dims: int = 3):
        super().__init__()
        self.final_conv = _LAYERS[dims]["conv"](cin, n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.final_conv(x)


_LAYOUT = {3: "(B, C, X, Y, Z)", 2: "(B, C, H, W)"}


def _check_input(x: torch.Tensor, in_channels: int, dims: int = 3) -> None:
    if x.dim() != dims + 2:
        raise ValueError(f"x: expected a {_LAYOUT[dims]} tensor, got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(f"x: expected {in_channels} channel(s), got {x.shape[1]}")
    bad = [s for s in x.shape[2:] if s % 8 != 0 or s == 0]
    if bad:
        raise ValueError(f"x: every spatial side must be a positive multiple of 8, got {tuple(x.shape[2:])}")


def _check_args(**ints: Any) -> None:
    for name, v in ints.items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v!r}")


class _Encoder(nn.Module):
    """Shared encoder definition (attributes named as in the published weights); ``dims`` (class
    attribute) selects 2D or 3D layers."""

    dims = 3

    def _build_encoder(self, in_channels: int, w: int, norm: str) -> None:
        d = self.dims
        self.down_tr64 = DownBlock(in_channels, w, 2 * w, norm, pool=True, dims=d)
        self.down_tr128 = DownBlock(2 * w, 2 * w, 4 * w, norm, pool=True, dims=d)
        self.down_tr256 = DownBlock(4 * w, 4 * w, 8 * w, norm, pool=True, dims=d)
        self.down_tr512 = DownBlock(8 * w, 8 * w, 16 * w, norm, pool=False, dims=d)

    def encode(self, x: torch.Tensor):
        """Return the bottleneck features (``out512``) and the three skip tensors."""
        _check_input(x, self.in_channels, self.dims)
        h, s64 = self.down_tr64(x)
        h, s128 = self.down_tr128(h)
        h, s256 = self.down_tr256(h)
        out512, _ = self.down_tr512(h)
        return out512, (s64, s128, s256)


class _UNet(_Encoder):
    """The paper's U-Net in ``dims`` dimensions (:class:`UNet3D`, :class:`UNet2D`).

    Args:
        in_channels: input channels (1 for CT).
        n_classes: output channels of the 1x1(x1) head.
        width: channels of the first convolution (32 in the paper; 19,073,665 parameters in 3D).
        norm: ``"batch"`` (standard BatchNorm, default) or ``"batch_stats"`` (always batch
            statistics, as the published model).
        activation: ``"sigmoid"`` (default, as published), ``"softmax"`` or ``"none"``;
            applied by :meth:`forward`; :meth:`forward_logits` skips it.
    """

    arch = ""

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 1,
        width: int = 32,
        norm: str = "batch",
        activation: str = "sigmoid",
    ):
        super().__init__()
        _check_args(in_channels=in_channels, n_classes=n_classes, width=width)
        if norm not in NORMS:
            raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
        self.in_channels, self.n_classes, self.width = in_channels, n_classes, width
        self.norm, self.activation = norm, activation
        w, d = width, self.dims
        self._build_encoder(in_channels, w, norm)
        self.up_tr256 = UpBlock(16 * w, 8 * w, 8 * w, norm, d)
        self.up_tr128 = UpBlock(8 * w, 4 * w, 4 * w, norm, d)
        self.up_tr64 = UpBlock(4 * w, 2 * w, 2 * w, norm, d)
        self.out_tr = OutBlock(2 * w, n_classes, d)

    def config(self) -> dict[str, Any]:
        """Constructor arguments, stored in our checkpoints."""
        return {
            "arch": self.arch,
            "in_channels": self.in_channels,
            "n_classes": self.n_classes,
            "width": self.width,
            "norm": self.norm,
            "activation": self.activation,
        }

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        out512, (s64, s128, s256) = self.encode(x)
        h = self.up_tr256(out512, s256)
        h = self.up_tr128(h, s128)
        h = self.up_tr64(h, s64)
        return self.out_tr(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = self.forward_logits(x)
        if self.activation == "sigmoid":
            return torch.sigmoid(y)
        if self.activation == "softmax":
            return torch.softmax(y, dim=1)
        return y

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith("down_tr")}


class UNet3D(_UNet):
    __doc__ = (
        "The paper's 3D U-Net on ``(B, C, X, Y, Z)`` (key names of the published weights)."
        + _UNet.__doc__.split("\n", 1)[1]
    )
    dims, arch = 3, "unet3d"


class UNet2D(_UNet):
    __doc__ = (
        "The same U-Net in 2D on ``(B, C, H, W)``: the same depth, widths and key names, 2D layers "
        "(3x3 convolutions, 2x2 pooling). Width 32 has 6,821,953 parameters." + _UNet.__doc__.split("\n", 1)[1]
    )
    dims, arch = 2, "unet2d"


UNETS = {3: UNet3D, 2: UNet2D}


class GenesisClassifier(_Encoder):
    """Encoder of :class:`UNet3D` + global average pooling + MLP (Linear, ReLU, Linear).

    Encoder keys equal the U-Net's, so pretrained U-Net weights load into it. Returns logits.
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 1,
        width: int = 32,
        norm: str = "batch",
        hidden: int = 1024,
        dropout: float = 0.0,
    ):
        super().__init__()
        _check_args(in_channels=in_channels, n_classes=n_classes, width=width, hidden=hidden)
        if norm not in NORMS:
            raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
        self.in_channels, self.n_classes, self.width, self.norm = in_channels, n_classes, width, norm
        self.hidden, self.dropout = hidden, dropout
        self._build_encoder(in_channels, width, norm)
        self.head = nn.Sequential(
            nn.Linear(16 * width, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, n_classes)
        )

    def config(self) -> dict[str, Any]:
        return {
            "arch": "classifier",
            "in_channels": self.in_channels,
            "n_classes": self.n_classes,
            "width": self.width,
            "norm": self.norm,
            "hidden": self.hidden,
            "dropout": self.dropout,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out512, _ = self.encode(x)
        return self.head(out512.mean(dim=(2, 3, 4)))


def encoder_modules(model: nn.Module):
    """The four encoder blocks of a U-Net or classifier (for freezing)."""
    m = getattr(model, "module", model)
    m = getattr(m, "_orig_mod", m)
    return [m.down_tr64, m.down_tr128, m.down_tr256, m.down_tr512]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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


# ----------------------------------------------------------------------------------------------
# checkpoint reading


def read_checkpoint(path: str, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint file safely (``weights_only=True``); one-line errors naming the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means unreadable
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({msg})") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return dict(obj)


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


def _summarise(keys, n=3) -> str:
    keys = sorted(keys)
    s = ", ".join(keys[:n])
    return s + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


FIRST_CONV = "down_tr64.ops.0.conv1.weight"
HEAD_KEYS = ("out_tr.final_conv.weight", "out_tr.final_conv.bias")


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
    obj = read_checkpoint(weights) if isinstance(weights, (str, os.PathLike)) else weights
    w = extract_state_dict(obj).get(FIRST_CONV)
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
    if source is None:
        source = os.fspath(weights) if isinstance(weights, (str, os.PathLike)) else "checkpoint"
    obj = read_checkpoint(weights, map_location) if isinstance(weights, (str, os.PathLike)) else dict(weights)
    sd = extract_state_dict(obj, source)
    target = getattr(model, "module", model)
    target = getattr(target, "_orig_mod", target)
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
    if "down_tr64.ops.0.conv1.weight" in sd and "down_tr64.ops.0.conv1.weight" in own:
        a, b = sd["down_tr64.ops.0.conv1.weight"].shape, own["down_tr64.ops.0.conv1.weight"].shape
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


def load_model(weights: Any, map_location: Any = "cpu", source: str | None = None, **defaults: Any) -> nn.Module:
    """Build a model from a checkpoint: our checkpoints carry their config; a published or bare
    state dict is taken as a U-Net whose width/channels are inferred from the weights."""
    if source is None:
        source = os.fspath(weights) if isinstance(weights, (str, os.PathLike)) else "checkpoint"
    obj = read_checkpoint(weights, map_location) if isinstance(weights, (str, os.PathLike)) else dict(weights)
    cfg = obj.get("model_config")
    if isinstance(cfg, Mapping):
        model = build_model(cfg)
    else:
        sd = extract_state_dict(obj, source)
        w = sd.get("down_tr64.ops.0.conv1.weight")
        head = sd.get("out_tr.final_conv.weight")
        if w is None or head is None:
            raise CheckpointError(f"{source}: not a U-Net checkpoint (no down_tr64/out_tr weights)")
        cfg = {"in_channels": int(w.shape[1]), "n_classes": int(head.shape[0]), "width": int(w.shape[0])}
        cfg.update(defaults)
        model = UNETS.get(w.dim() - 2, UNet3D)(**cfg)  # a 4D kernel: 2D weights
    load_pretrained(model, obj, strict=True, source=source)
    return model
