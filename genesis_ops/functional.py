"""The functional API: thin wrappers over torch.ops.genesis.* that check arguments and turn
seed=None into a seed drawn from a torch generator. Semantics: docs/SPEC.md."""

from __future__ import annotations

import torch

from ._checks import (
    check_count,
    check_flag,
    check_probability,
    check_shape_source,
    check_stream,
    check_value_range,
    check_x,
)
from .config import GenesisConfig, paint_gates

__all__ = [
    "models_genesis",
    "nonlinear",
    "local_shuffle",
    "inpaint",
    "outpaint",
    "flip",
    "bezier",
    "paint_mask",
    "shuffle_mask",
]

_ops = torch.ops.genesis

# Arguments every op shares, documented once and filled into each docstring by _documented.
_RAISES = """Raises:
        TypeError, ValueError: a bad argument, named in the message (docs/SPEC.md, section 7)."""
_COMMON_ARGS = {
    "x": """x (Tensor[B, C, H, W] or Tensor[B, C, D, H, W]): the batch; float16, bfloat16, float32
            or float64, on the CPU or a CUDA device, any strides. Not modified.""",
    "value_range": """value_range (tuple[float, float] or "per_sample"): (lo, hi), the range the data
            lives in: the curve maps [lo, hi] onto itself and the fill noise is uniform in it.
            "per_sample": each sample's own min and max over all its channels (z-scored or
            unnormalised data; docs/SPEC.md, section 4.8), found on the device. Default (0, 1).""",
    "seeding": """seed (int or Tensor, optional): the 64-bit seed, in [0, 2**64). None draws one from
            generator. The result is a pure function of (x, seed, sample_offset, the other
            arguments). A 0-dim int64 tensor on x's device (its 64 bits are the seed) is read by
            the kernels when they run: no host synchronisation, one torch.compile graph for every
            value, and a captured CUDA graph replays with whatever was last written into it.
        generator (torch.Generator, optional): where seed=None draws the seed from; None
            means torch's default CPU generator (so torch.manual_seed makes a script reproducible).
        sample_offset (int or Tensor): the sample index of x[0] in the random streams, so that
            op(x[a:b], seed, sample_offset=a) == op(x, seed)[a:b]. Default 0. May be a 0-dim
            int64 tensor on x's device as seed may (on CUDA its value is not checked: the sample
            index is then taken modulo 2**32).""",
    "raises": _RAISES,
    "one_output": """Returns:
        Tensor: a new contiguous tensor of x's shape, dtype and device (never requiring grad).

    """
    + _RAISES,
    "return_mask": """return_mask (bool): also return the corruption mask, written in the same pass
            (docs/SPEC.md, section 4.7). Default False.""",
    "masked_output": """Returns:
        Tensor, or tuple[Tensor, Tensor] with return_mask: a new contiguous tensor of x's shape,
        dtype and device; with return_mask also the mask, torch.uint8 of shape (B, 1, *spatial) on
        x's device, shared by all channels: {mask_bits}

    """
    + _RAISES,
    "shape_source": """x_or_shape (Tensor or sequence of int): a batch (only its shape and device are
            read; any dtype), or its shape (B, C, H, W) or (B, C, D, H, W).
        device (torch.device or str, optional): where the mask is made when x_or_shape is a
            shape (default: the CPU); with a tensor it must be None or x's device.""",
}
_MASK_BITS = {
    "shuffle": "bit value 1 where a shuffle window covers the voxel (the union of the sample's\n"
    "        windows when its shuffle ran; 0 elsewhere, and everywhere when it did not).",
    "paint": "bit value 2 where fill noise replaced the voxel (inside an in-painting box, or\n"
    "        outside every kept window of out-painting).",
}


def _seeded(op, x, *args, seed, generator, sample_offset):
    """op(x, *args, seed, sample_offset) through the overload that takes the stream as given: the
    default one (SymInt) or tensor_seed. Chosen here, not by the overload packet, which would
    read a 0-dim tensor as an int on the host (a synchronisation on CUDA)."""
    stream = check_stream(seed, generator, sample_offset, x)
    overload = op.tensor_seed if isinstance(stream[0], torch.Tensor) else op.default
    return overload(x, *args, *stream)


def _documented(fn, mask_bits=""):
    if fn.__doc__:  # None under python -OO
        fn.__doc__ = fn.__doc__.format(**_COMMON_ARGS).replace("{mask_bits}", mask_bits)
    return fn


def _masked(bits):
    """_documented, with the mask bits that op writes."""
    return lambda fn: _documented(fn, bits)


@_documented
def models_genesis(
    x: torch.Tensor,
    config: GenesisConfig | None = None,
    seed: int | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    sample_offset: int | torch.Tensor = 0,
    return_masks: bool = False,
):
    """One Models Genesis training pair per sample, fused in one pass over the data::

        target = flip(x);  input = paint(nonlinear(shuffle(target)))

    painting being in-painting (probability config.inpaint_rate) or out-painting, never both.
    Spatial randomness is shared by the channels of a sample, fill noise is not.

    Args:
        {x}
        config (GenesisConfig, optional): probabilities and sizes; None means the paper's
            defaults, GenesisConfig().
        {seeding}
        return_masks (bool): also return the corruption mask, written in the same pass.
            Default False.

    Returns:
        tuple[Tensor, Tensor]: (input, target), two new contiguous tensors of x's shape, dtype
        and device: the corrupted input and the (flipped) restoration target. With
        return_masks, (input, target, mask): input and target as without it, bit for bit, and
        mask, torch.uint8 of shape (B, 1, *spatial) on x's device, in the target's frame (after
        the flip) and shared by all channels (docs/SPEC.md, section 4.7):

        * bit value 1: the voxel lies in a shuffle window. Every covered voxel is owned by the
          last window covering it, so this is the union of the sample's windows when its
          shuffle ran, and 0 everywhere when its shuffle gate did not fire. The voxel's value
          may come from elsewhere in its window, or be its own. Equals
          ``shuffle_mask(x, config.shuffle_p, config.num_windows, seed, ...)``.
        * bit value 2: the voxel was replaced by fill noise (inside an in-painting box, or
          outside every kept window of out-painting). Equals
          ``paint_mask(x, config.paint_p, config.inpaint_rate, seed, ...)``.

        ``(mask & 2) != 0`` is the region to weight a restoration loss on; ``mask != 0``, every
        voxel the corruption may have changed (the intensity curve aside, which changes all).

    {raises}
    """
    x = check_x(x)
    cfg = config if config is not None else GenesisConfig()
    if not isinstance(cfg, GenesisConfig):
        raise TypeError(f"config must be a GenesisConfig, got {type(cfg).__name__}")
    lo, hi = check_value_range(cfg.value_range, "config.value_range")
    op = _ops.models_genesis_masked if check_flag(return_masks, "return_masks") else _ops.models_genesis
    return _seeded(
        op,
        x,
        check_probability(cfg.flip_p, "config.flip_p"),
        check_probability(cfg.shuffle_p, "config.shuffle_p"),
        check_count(cfg.num_windows, "config.num_windows"),
        check_probability(cfg.nonlinear_p, "config.nonlinear_p"),
        check_probability(cfg.paint_p, "config.paint_p"),
        check_probability(cfg.inpaint_rate, "config.inpaint_rate"),
        lo,
        hi,
        seed=seed,
        generator=generator,
        sample_offset=sample_offset,
    )


@_documented
def nonlinear(
    x: torch.Tensor,
    p: float = 0.9,
    value_range=(0.0, 1.0),
    seed: int | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    sample_offset: int | torch.Tensor = 0,
) -> torch.Tensor:
    """Random Bezier intensity map, applied to each sample with probability p.

    The cubic Bezier curve from (0, 0) to (1, 1) has inner control points uniform in the unit
    square; it is increasing or, with probability 1/2, decreasing (f(Bx(s)) = By(1 - s)).
    Values are clamped to value_range first (+-inf go to its ends, NaN stays NaN) and
    computed in float32.

    Args:
        {x}
        p (float): probability that a sample is mapped, in [0, 1]. Default 0.9.
            (No return_mask: the map changes every voxel of a mapped sample, so a mask would
            only repeat the sample's gate.)
        {value_range}
        {seeding}

    {one_output}
    """
    x = check_x(x)
    lo, hi = check_value_range(value_range)
    return _seeded(
        _ops.nonlinear,
        x,
        check_probability(p, "p"),
        lo,
        hi,
        seed=seed,
        generator=generator,
        sample_offset=sample_offset,
    )


@_masked(_MASK_BITS["shuffle"])
def local_shuffle(
    x: torch.Tensor,
    p: float = 0.5,
    num_windows: int = 10000,
    seed: int | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    sample_offset: int | torch.Tensor = 0,
    return_mask: bool = False,
):
    """Local pixel shuffling, applied to each sample with probability p.

    num_windows windows per sample, side uniform in 1..max(1, dim // 10) per spatial axis; each
    writes a uniform (Fisher-Yates) permutation of its voxels, read from the untouched input; where
    windows overlap, the later one wins. Values are moved, never changed.

    Args:
        {x}
        p (float): probability that a sample is shuffled, in [0, 1]. Default 0.5.
        num_windows (int): windows per sample, in [0, 10**7]. Default 10000.
        {seeding}
        {return_mask}

    {masked_output}
    """
    x = check_x(x)
    op = _ops.local_shuffle_masked if check_flag(return_mask, "return_mask") else _ops.local_shuffle
    return _seeded(
        op,
        x,
        check_probability(p, "p"),
        check_count(num_windows, "num_windows"),
        seed=seed,
        generator=generator,
        sample_offset=sample_offset,
    )


@_masked(_MASK_BITS["paint"])
def inpaint(
    x: torch.Tensor,
    p: float = 1.0,
    value_range=(0.0, 1.0),
    seed: int | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    sample_offset: int | torch.Tensor = 0,
    return_mask: bool = False,
):
    """In-painting, applied to each sample with probability p: up to 5 boxes (before each one,
    continue with probability 0.95), side dim // 6 .. dim // 3, 3 voxels from the border, filled
    with uniform noise in value_range (drawn per voxel and channel).

    Args:
        {x}
        p (float): probability that a sample is in-painted, in [0, 1]. Default 1.
        {value_range}
        {seeding}
        {return_mask}

    {masked_output}
    """
    x = check_x(x)
    lo, hi = check_value_range(value_range)
    op = _ops.inpaint_masked if check_flag(return_mask, "return_mask") else _ops.inpaint
    return _seeded(
        op,
        x,
        check_probability(p, "p"),
        lo,
        hi,
        seed=seed,
        generator=generator,
        sample_offset=sample_offset,
    )


@_masked(_MASK_BITS["paint"])
def outpaint(
    x: torch.Tensor,
    p: float = 1.0,
    value_range=(0.0, 1.0),
    seed: int | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    sample_offset: int | torch.Tensor = 0,
    return_mask: bool = False,
):
    """Out-painting, applied to each sample with probability p: uniform noise in value_range
    everywhere except inside 1 + up to 4 windows (each extra one continues with probability
    0.95) of side dim - (3 * dim // 7 .. 4 * dim // 7), where the input is kept.

    Args:
        {x}
        p (float): probability that a sample is out-painted, in [0, 1]. Default 1.
        {value_range}
        {seeding}
        {return_mask}

    {masked_output}
    """
    x = check_x(x)
    lo, hi = check_value_range(value_range)
    op = _ops.outpaint_masked if check_flag(return_mask, "return_mask") else _ops.outpaint
    return _seeded(
        op,
        x,
        check_probability(p, "p"),
        lo,
        hi,
        seed=seed,
        generator=generator,
        sample_offset=sample_offset,
    )


@_documented
def flip(
    x: torch.Tensor,
    p: float = 0.4,
    seed: int | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    sample_offset: int | torch.Tensor = 0,
) -> torch.Tensor:
    """Random flips: up to 3 times per sample, continue with probability p and flip one
    uniformly chosen spatial axis (depth included). Values are moved, never changed.

    Args:
        {x}
        p (float): continue probability of each flip, in [0, 1]. Default 0.4.
            (No return_mask: a flip moves every voxel and corrupts none; the masks of the other
            ops are in the flipped frame.)
        {seeding}

    {one_output}
    """
    x = check_x(x)
    return _seeded(_ops.flip, x, check_probability(p, "p"), seed=seed, generator=generator, sample_offset=sample_offset)


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


@_documented
def paint_mask(
    x_or_shape,
    p: float = 1.0,
    inpaint_rate: float | None = None,
    seed: int | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    sample_offset: int | torch.Tensor = 0,
    device=None,
    *,
    op: str = "models_genesis",
) -> torch.Tensor:
    """The voxels that painting replaces under this seed, as bool, with no image written: the
    same Philox words as the ops, so it equals, bit for bit, the painted region of

    ============================================================  ===================================
    paint_mask call                                               painted region of
    ============================================================  ===================================
    ``paint_mask(x, p, inpaint_rate, seed, op="models_genesis")``  ``models_genesis(x, cfg, seed)``
                                                                  with ``cfg.paint_p = p`` and
                                                                  ``cfg.inpaint_rate = inpaint_rate``
                                                                  (``mask & 2`` of return_masks)
    ``paint_mask(x, p, seed=seed, op="inpaint")``                 ``inpaint(x, p, seed=seed)``
    ``paint_mask(x, p, seed=seed, op="outpaint")``                ``outpaint(x, p, seed=seed)``
    ============================================================  ===================================

    (same sample_offset throughout). The gates differ: in models_genesis p is the painting gate
    (paint word 0) and inpaint_rate picks in- or out-painting (paint word 1); in inpaint and
    outpaint p is the op's own gate (word 0 of its stream). With p = 1 all gates pass and the
    three calls agree for inpaint_rate 1 / 0. Boxes: docs/SPEC.md, sections 4.4 and 4.5.

    Use it to fill the boxes differently (zeros, a mean, a mask token)::

        m = go.paint_mask(x, seed=s)              # in-painting boxes (p = 1, inpaint_rate = 1)
        x_filled = x.masked_fill(m, 0.0)          # m broadcasts over the channels

    Args:
        {shape_source}
        p (float): the painting gate of op (above), in [0, 1]. Default 1.
        inpaint_rate (float, optional): probability that painting is in-painting, in [0, 1];
            op="models_genesis" only (None there means 1). Default None.
        {seeding}
        op (str): whose painting: "models_genesis" (default), "inpaint" or "outpaint".

    Returns:
        Tensor: bool, shape (B, 1, *spatial), on x's device (or device): True where painting
        replaces the voxel (inside an in-painting box, or outside every kept window of
        out-painting); all False for samples whose gates fail.

    {raises}
    """
    x = check_shape_source(x_or_shape, device)
    paint_p, rate, inpaint_p, outpaint_p = paint_gates(
        check_probability(p, "p"), None if inpaint_rate is None else check_probability(inpaint_rate, "inpaint_rate"), op
    )
    return _seeded(
        _ops.paint_mask,
        x,
        paint_p,
        rate,
        inpaint_p,
        outpaint_p,
        seed=seed,
        generator=generator,
        sample_offset=sample_offset,
    )


@_documented
def shuffle_mask(
    x_or_shape,
    p: float = 0.5,
    num_windows: int = 10000,
    seed: int | torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    sample_offset: int | torch.Tensor = 0,
    device=None,
) -> torch.Tensor:
    """The union of the local-shuffle windows of each sample whose shuffle gate passes, as bool,
    with no image written and no permutation drawn: bit for bit the voxels that
    ``local_shuffle(x, p, num_windows, seed)`` (``mask & 1`` of its return_mask) and
    ``models_genesis(x, cfg, seed)`` with ``cfg.shuffle_p = p``, ``cfg.num_windows = num_windows``
    (``mask & 1`` of return_masks) shuffle, under the same sample_offset. A voxel inside may keep
    its own value (the permutation may fix it).

    Args:
        {shape_source}
        p (float): probability that a sample is shuffled, in [0, 1]. Default 0.5.
        num_windows (int): windows per sample, in [0, 10**7]. Default 10000.
        {seeding}

    Returns:
        Tensor: bool, shape (B, 1, *spatial), on x's device (or device).

    {raises}
    """
    x = check_shape_source(x_or_shape, device)
    return _seeded(
        _ops.shuffle_mask,
        x,
        check_probability(p, "p"),
        check_count(num_windows, "num_windows"),
        seed=seed,
        generator=generator,
        sample_offset=sample_offset,
    )
