"""The functional API: thin wrappers over torch.ops.genesis.* that check arguments and turn
seed=None into a seed drawn from a torch generator. Semantics: ../SPEC.md and README."""
from __future__ import annotations

import torch

from . import _checks as C
from .config import GenesisConfig

__all__ = ["models_genesis", "nonlinear", "local_shuffle", "inpaint", "outpaint", "flip", "bezier"]

_ops = torch.ops.genesis


def models_genesis(x: torch.Tensor, config: GenesisConfig | None = None, seed: int | None = None,
                   generator: torch.Generator | None = None, sample_offset: int = 0):
    """One (input, target) training pair per sample, fused in one pass over the data:
    target = flip(x); input = paint(nonlinear(shuffle(target))). Returns two new tensors."""
    x = C.check_x(x)
    cfg = config if config is not None else GenesisConfig()
    if not isinstance(cfg, GenesisConfig):
        raise TypeError(f"config must be a GenesisConfig, got {type(cfg).__name__}")
    lo, hi = C.check_value_range(cfg.value_range, "config.value_range")
    return _ops.models_genesis(
        x, C.check_probability(cfg.flip_p, "config.flip_p"), C.check_probability(cfg.shuffle_p, "config.shuffle_p"),
        C.check_count(cfg.num_windows, "config.num_windows"),
        C.check_probability(cfg.nonlinear_p, "config.nonlinear_p"),
        C.check_probability(cfg.paint_p, "config.paint_p"),
        C.check_probability(cfg.inpaint_rate, "config.inpaint_rate"), lo, hi,
        C.resolve_seed(seed, generator), C.check_sample_offset(sample_offset, x.shape[0]))


def nonlinear(x: torch.Tensor, p: float = 0.9, value_range=(0.0, 1.0), seed: int | None = None,
              generator: torch.Generator | None = None, sample_offset: int = 0) -> torch.Tensor:
    """Random monotone Bezier intensity map (increasing or decreasing with probability 1/2)
    applied with probability p per sample; values are clamped to value_range first."""
    x = C.check_x(x)
    lo, hi = C.check_value_range(value_range)
    return _ops.nonlinear(x, C.check_probability(p, "p"), lo, hi, C.resolve_seed(seed, generator),
                          C.check_sample_offset(sample_offset, x.shape[0]))


def local_shuffle(x: torch.Tensor, p: float = 0.5, num_windows: int = 10000, seed: int | None = None,
                  generator: torch.Generator | None = None, sample_offset: int = 0) -> torch.Tensor:
    """Local pixel shuffling with probability p per sample: num_windows small windows, each a
    uniform permutation of its voxels read from the untouched input; the later window wins."""
    x = C.check_x(x)
    return _ops.local_shuffle(x, C.check_probability(p, "p"), C.check_count(num_windows, "num_windows"),
                              C.resolve_seed(seed, generator), C.check_sample_offset(sample_offset, x.shape[0]))


def inpaint(x: torch.Tensor, p: float = 1.0, value_range=(0.0, 1.0), seed: int | None = None,
            generator: torch.Generator | None = None, sample_offset: int = 0) -> torch.Tensor:
    """In-painting with probability p per sample: up to 5 boxes filled with uniform noise."""
    x = C.check_x(x)
    lo, hi = C.check_value_range(value_range)
    return _ops.inpaint(x, C.check_probability(p, "p"), lo, hi, C.resolve_seed(seed, generator),
                        C.check_sample_offset(sample_offset, x.shape[0]))


def outpaint(x: torch.Tensor, p: float = 1.0, value_range=(0.0, 1.0), seed: int | None = None,
             generator: torch.Generator | None = None, sample_offset: int = 0) -> torch.Tensor:
    """Out-painting with probability p per sample: uniform noise everywhere except 1 to 5
    windows where the input is kept."""
    x = C.check_x(x)
    lo, hi = C.check_value_range(value_range)
    return _ops.outpaint(x, C.check_probability(p, "p"), lo, hi, C.resolve_seed(seed, generator),
                         C.check_sample_offset(sample_offset, x.shape[0]))


def flip(x: torch.Tensor, p: float = 0.4, seed: int | None = None, generator: torch.Generator | None = None,
         sample_offset: int = 0) -> torch.Tensor:
    """Up to 3 flips per sample, each happening with probability p (continuing only after a
    flip), of a uniformly chosen spatial axis."""
    x = C.check_x(x)
    return _ops.flip(x, C.check_probability(p, "p"), C.resolve_seed(seed, generator),
                     C.check_sample_offset(sample_offset, x.shape[0]))


def bezier(x: torch.Tensor, control_points, increasing, value_range=(0.0, 1.0)) -> torch.Tensor:
    """The explicit intensity map: sample b is mapped by the Bezier curve with inner control
    points control_points[b] = (P1x, P1y, P2x, P2y), increasing if increasing[b] (else
    decreasing: f(Bx(s)) = By(1 - s)). Control points are clamped to [0, 1] (NaN counts as 0)
    by the kernels on every device, so the curve is a monotone function and no device needs a
    host synchronisation to check them. Lists are placed on x's device; tensors must already be
    there."""
    x = C.check_x(x)
    lo, hi = C.check_value_range(value_range)
    B = x.shape[0]
    if isinstance(control_points, torch.Tensor):
        if control_points.device != x.device:
            raise ValueError(f"control_points is on {control_points.device} but x is on {x.device}")
        cp = control_points.to(torch.float64)
    else:
        cp = torch.as_tensor(control_points, dtype=torch.float64, device=x.device)
    if isinstance(increasing, torch.Tensor):
        if increasing.device != x.device:
            raise ValueError(f"increasing is on {increasing.device} but x is on {x.device}")
        inc = increasing.to(torch.bool)
    else:
        inc = torch.as_tensor(increasing, dtype=torch.bool, device=x.device)
    if cp.shape != (B, 4):
        raise ValueError(f"control_points must have shape (B, 4) = ({B}, 4), got {tuple(cp.shape)}")
    if inc.shape != (B,):
        raise ValueError(f"increasing must have shape (B,) = ({B},), got {tuple(inc.shape)}")
    return _ops.bezier(x, cp, inc, lo, hi)
