"""The functional API: thin wrappers over torch.ops.genesis.* that check arguments and turn
seed=None into a seed drawn from a torch generator. Semantics: docs/SPEC.md."""
from __future__ import annotations

import torch

from ._checks import check_count, check_probability, check_sample_offset, check_value_range, check_x, resolve_seed
from .config import GenesisConfig

__all__ = ["models_genesis", "nonlinear", "local_shuffle", "inpaint", "outpaint", "flip", "bezier"]

_ops = torch.ops.genesis

# Arguments every op shares, documented once and filled into each docstring by _documented.
_RAISES = """Raises:
        TypeError, ValueError: a bad argument, named in the message (docs/SPEC.md, section 7)."""
_COMMON_ARGS = {
    "x": """x (Tensor[B, C, H, W] or Tensor[B, C, D, H, W]): the batch; float16, bfloat16, float32
            or float64, on the CPU or a CUDA device, any strides. Not modified.""",
    "value_range": """value_range (tuple[float, float]): (lo, hi), the range the data lives in: the
            curve maps [lo, hi] onto itself and the fill noise is uniform in it. Default (0, 1).""",
    "seeding": """seed (int, optional): the 64-bit seed, in [0, 2**64). None draws one from generator.
            The result is a pure function of (x, seed, sample_offset, the other arguments).
        generator (torch.Generator, optional): where seed=None draws the seed from; None
            means torch's default CPU generator (so torch.manual_seed makes a script reproducible).
        sample_offset (int): the sample index of x[0] in the random streams, so that
            op(x[a:b], seed, sample_offset=a) == op(x, seed)[a:b]. Default 0.""",
    "raises": _RAISES,
    "one_output": """Returns:
        Tensor: a new contiguous tensor of x's shape, dtype and device.

    """ + _RAISES,
}


def _documented(fn):
    if fn.__doc__:  # None under python -OO
        fn.__doc__ = fn.__doc__.format(**_COMMON_ARGS)
    return fn


@_documented
def models_genesis(x: torch.Tensor, config: GenesisConfig | None = None, seed: int | None = None,
                   generator: torch.Generator | None = None, sample_offset: int = 0):
    """One Models Genesis training pair per sample, fused in one pass over the data::

        target = flip(x);  input = paint(nonlinear(shuffle(target)))

    painting being in-painting (probability config.inpaint_rate) or out-painting, never both.
    Spatial randomness is shared by the channels of a sample, fill noise is not.

    Args:
        {x}
        config (GenesisConfig, optional): probabilities and sizes; None means the paper's
            defaults, GenesisConfig().
        {seeding}

    Returns:
        tuple[Tensor, Tensor]: (input, target), two new contiguous tensors of x's shape, dtype
        and device: the corrupted input and the (flipped) restoration target.

    {raises}
    """
    x = check_x(x)
    cfg = config if config is not None else GenesisConfig()
    if not isinstance(cfg, GenesisConfig):
        raise TypeError(f"config must be a GenesisConfig, got {type(cfg).__name__}")
    lo, hi = check_value_range(cfg.value_range, "config.value_range")
    return _ops.models_genesis(
        x, check_probability(cfg.flip_p, "config.flip_p"), check_probability(cfg.shuffle_p, "config.shuffle_p"),
        check_count(cfg.num_windows, "config.num_windows"),
        check_probability(cfg.nonlinear_p, "config.nonlinear_p"),
        check_probability(cfg.paint_p, "config.paint_p"),
        check_probability(cfg.inpaint_rate, "config.inpaint_rate"), lo, hi,
        resolve_seed(seed, generator), check_sample_offset(sample_offset, x.shape[0]))


@_documented
def nonlinear(x: torch.Tensor, p: float = 0.9, value_range=(0.0, 1.0), seed: int | None = None,
              generator: torch.Generator | None = None, sample_offset: int = 0) -> torch.Tensor:
    """Random Bezier intensity map, applied to each sample with probability p.

    The cubic Bezier curve from (0, 0) to (1, 1) has inner control points uniform in the unit
    square; it is increasing or, with probability 1/2, decreasing (f(Bx(s)) = By(1 - s)).
    Values are clamped to value_range first (+-inf go to its ends, NaN stays NaN) and
    computed in float32.

    Args:
        {x}
        p (float): probability that a sample is mapped, in [0, 1]. Default 0.9.
        {value_range}
        {seeding}

    {one_output}
    """
    x = check_x(x)
    lo, hi = check_value_range(value_range)
    return _ops.nonlinear(x, check_probability(p, "p"), lo, hi, resolve_seed(seed, generator),
                          check_sample_offset(sample_offset, x.shape[0]))


@_documented
def local_shuffle(x: torch.Tensor, p: float = 0.5, num_windows: int = 10000, seed: int | None = None,
                  generator: torch.Generator | None = None, sample_offset: int = 0) -> torch.Tensor:
    """Local pixel shuffling, applied to each sample with probability p.

    num_windows windows per sample, side uniform in 1..max(1, dim // 10) per spatial axis; each
    writes a uniform (Fisher-Yates) permutation of its voxels, read from the untouched input; where
    windows overlap, the later one wins. Values are moved, never changed.

    Args:
        {x}
        p (float): probability that a sample is shuffled, in [0, 1]. Default 0.5.
        num_windows (int): windows per sample, in [0, 10**7]. Default 10000.
        {seeding}

    {one_output}
    """
    x = check_x(x)
    return _ops.local_shuffle(x, check_probability(p, "p"), check_count(num_windows, "num_windows"),
                              resolve_seed(seed, generator), check_sample_offset(sample_offset, x.shape[0]))


@_documented
def inpaint(x: torch.Tensor, p: float = 1.0, value_range=(0.0, 1.0), seed: int | None = None,
            generator: torch.Generator | None = None, sample_offset: int = 0) -> torch.Tensor:
    """In-painting, applied to each sample with probability p: up to 5 boxes (before each one,
    continue with probability 0.95), side dim // 6 .. dim // 3, 3 voxels from the border, filled
    with uniform noise in value_range (drawn per voxel and channel).

    Args:
        {x}
        p (float): probability that a sample is in-painted, in [0, 1]. Default 1.
        {value_range}
        {seeding}

    {one_output}
    """
    x = check_x(x)
    lo, hi = check_value_range(value_range)
    return _ops.inpaint(x, check_probability(p, "p"), lo, hi, resolve_seed(seed, generator),
                        check_sample_offset(sample_offset, x.shape[0]))


@_documented
def outpaint(x: torch.Tensor, p: float = 1.0, value_range=(0.0, 1.0), seed: int | None = None,
             generator: torch.Generator | None = None, sample_offset: int = 0) -> torch.Tensor:
    """Out-painting, applied to each sample with probability p: uniform noise in value_range
    everywhere except inside 1 + up to 4 windows (each extra one continues with probability
    0.95) of side dim - (3 * dim // 7 .. 4 * dim // 7), where the input is kept.

    Args:
        {x}
        p (float): probability that a sample is out-painted, in [0, 1]. Default 1.
        {value_range}
        {seeding}

    {one_output}
    """
    x = check_x(x)
    lo, hi = check_value_range(value_range)
    return _ops.outpaint(x, check_probability(p, "p"), lo, hi, resolve_seed(seed, generator),
                         check_sample_offset(sample_offset, x.shape[0]))


@_documented
def flip(x: torch.Tensor, p: float = 0.4, seed: int | None = None, generator: torch.Generator | None = None,
         sample_offset: int = 0) -> torch.Tensor:
    """Random flips: up to 3 times per sample, continue with probability p and flip one
    uniformly chosen spatial axis (depth included). Values are moved, never changed.

    Args:
        {x}
        p (float): continue probability of each flip, in [0, 1]. Default 0.4.
        {seeding}

    {one_output}
    """
    x = check_x(x)
    return _ops.flip(x, check_probability(p, "p"), resolve_seed(seed, generator),
                     check_sample_offset(sample_offset, x.shape[0]))


@_documented
def bezier(x: torch.Tensor, control_points, increasing, value_range=(0.0, 1.0)) -> torch.Tensor:
    """The explicit intensity map (no randomness): sample b is mapped by the Bezier curve with
    inner control points control_points[b] = (P1x, P1y, P2x, P2y), increasing if increasing[b],
    else decreasing (f(Bx(s)) = By(1 - s)). nonlinear(x, p=1, seed) is this map with the
    control points and directions drawn for that seed.

    Args:
        {x}
        control_points (Tensor[B, 4] or nested sequence): P1x, P1y, P2x, P2y per sample. The
            kernels clamp them to [0, 1] (NaN counts as 0) on every device, so the curve is a
            monotone function and no device needs a host synchronisation to check them. A
            tensor must be on x's device (any float dtype; converted to float64); a sequence is
            placed there.
        increasing (Tensor[B] or sequence of bool): direction per sample; a tensor must be on
            x's device (converted to bool).
        {value_range}

    {one_output}
    """
    x = check_x(x)
    lo, hi = check_value_range(value_range)
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
