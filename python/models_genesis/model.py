"""The Models Genesis 3D U-Net (and the same network in 2D) and an encoder-only classifier.

Layer and parameter names follow the published PyTorch weights (``Genesis_Chest_CT.pt``) so that
those weights load with ``strict=True`` once a ``module.`` prefix is stripped. Reading, writing and
loading weights is :mod:`models_genesis.checkpoint`.

Tensor layout: ``(B, C, X, Y, Z)`` where the three spatial axes are the array axes of the
canonical (RAS) volume, i.e. the paper's ``rows x cols x depth`` (64 x 64 x 32 by default).
Every spatial side must be divisible by 8 (three 2x poolings). :class:`UNet2D` is the same network
built from 2D layers, on ``(B, C, H, W)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

NORMS = ("batch", "batch_stats")
ACTIVATIONS = ("sigmoid", "softmax", "none")


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


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    m = getattr(model, "module", model)
    m = getattr(m, "_orig_mod", m)
    return getattr(m, "module", m)


def encoder_modules(model: nn.Module):
    """The four encoder blocks of a U-Net or classifier (for freezing)."""
    m = unwrap(model)
    return [m.down_tr64, m.down_tr128, m.down_tr256, m.down_tr512]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# The checkpoint functions lived here before models_genesis.checkpoint held the format; they stay
# importable from here (resolved lazily: checkpoint imports this module).
_CHECKPOINT_NAMES = (
    "CheckpointError",
    "FIRST_CONV",
    "HEAD_KEYS",
    "adapt_channels",
    "build_model",
    "extract_state_dict",
    "initialised_note",
    "load_model",
    "load_pretrained",
    "read_checkpoint",
)


def __getattr__(name: str) -> Any:
    if name in _CHECKPOINT_NAMES:
        from . import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
