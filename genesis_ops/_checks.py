"""Argument checks of the Python API: every bad argument raises a clear TypeError/ValueError
naming it, before anything reaches the C++ kernels (which check again)."""

from __future__ import annotations

import math
import numbers
import struct

import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_WINDOWS = 10_000_000
_U64 = 1 << 64


def check_x(x, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (4, 5):
        raise ValueError(f"{name} must have shape (B, C, H, W) or (B, C, D, H, W), got {tuple(x.shape)}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if x.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {x.layout}")
    _check_spatial(x.shape, name)
    # The ops are not differentiable (random corruptions; the target is a copy): the outputs of
    # an input that requires grad must not carry the dispatcher's fallthrough grad_fn, whose
    # backward() only warns that it is silently incorrect. detach() shares x's storage.
    return x.detach() if x.requires_grad else x


def _check_spatial(shape, name: str) -> None:
    spatial = math.prod(shape[2:])
    if spatial > 2**31 - 1:
        raise ValueError(f"{name} has {spatial} voxels per channel; at most 2**31 - 1 are supported")


def check_shape_source(x_or_shape, device) -> torch.Tensor:
    """The tensor a mask-only op reads the shape and device of: x itself (any dtype), or, for a
    shape, a zero-stride view of one byte on `device` (nothing of the batch's size is allocated)."""
    if isinstance(x_or_shape, torch.Tensor):
        x = x_or_shape
        if x.dim() not in (4, 5):
            raise ValueError(f"x_or_shape must have shape (B, C, H, W) or (B, C, D, H, W), got {tuple(x.shape)}")
        if x.layout != torch.strided:
            raise TypeError(f"x_or_shape must be a dense (strided) tensor, got layout {x.layout}")
        if device is not None and _device(device) != x.device:
            raise ValueError(
                f"device must be None or x's device ({x.device}) when x_or_shape is a tensor, got {device}"
            )
        _check_spatial(x.shape, "x_or_shape")
        return x
    try:
        shape = tuple(x_or_shape)
    except TypeError:
        raise TypeError(
            f"x_or_shape must be a torch.Tensor or a sequence of ints, got {type(x_or_shape).__name__}"
        ) from None
    if len(shape) not in (4, 5) or any(
        isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0 for n in shape
    ):
        raise ValueError(f"x_or_shape must be a shape (B, C, H, W) or (B, C, D, H, W) of ints >= 0, got {shape!r}")
    shape = tuple(int(n) for n in shape)
    _check_spatial(shape, "x_or_shape")
    return torch.empty((), dtype=torch.uint8, device=_device(device if device is not None else "cpu")).expand(shape)


def _device(device) -> torch.device:
    try:
        return torch.device(device)
    except (TypeError, RuntimeError, ValueError):
        raise TypeError(f"device must be a torch.device, a device string or None, got {device!r}") from None


def check_flag(flag, name: str) -> bool:
    if not isinstance(flag, bool):
        raise TypeError(f"{name} must be a bool, got {flag!r}")
    return flag


def check_probability(p, name: str) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{name} must be a real number in [0, 1], got {p!r}")
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    return p


def check_count(n, name: str, low: int = 0, high: int = MAX_WINDOWS) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {n!r}")
    n = int(n)
    if not low <= n <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {n}")
    return n


# value_range="per_sample": each sample's own min and max (docs/SPEC.md, section 4.8). The raw ops
# take it as lo = hi = NaN, so their schemas are unchanged.
PER_SAMPLE = "per_sample"


def check_value_range(value_range, name: str = "value_range") -> tuple[float, float]:
    if isinstance(value_range, str):
        if value_range != PER_SAMPLE:
            raise ValueError(f"{name} must be a pair (lo, hi) or {PER_SAMPLE!r}, got {value_range!r}")
        return math.nan, math.nan
    try:
        lo, hi = value_range
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (lo, hi) of numbers, got {value_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name} must be finite with lo < hi, got ({lo}, {hi})")
    if not torch.compiler.is_compiling() and not _float32_range_ok(lo, hi):
        raise ValueError(f"{name} ({lo}, {hi}) is not representable in float32 (the kernels compute in float32)")
    return lo, hi


def _float32_range_ok(lo: float, hi: float) -> bool:
    """lo < hi and hi - lo finite once rounded to float32 (what the kernels compute in)."""
    try:
        lo32, hi32 = struct.unpack("2f", struct.pack("2f", lo, hi))
        (diff,) = struct.unpack("f", struct.pack("f", hi32 - lo32))
    except OverflowError:
        return False
    return lo32 < hi32 and math.isfinite(diff)


def check_sample_offset(offset, batch: int) -> int:
    offset = check_count(offset, "sample_offset", 0, 2**32 - 1)
    if offset + batch > 2**32:
        raise ValueError(f"sample_offset + batch must be <= 2**32, got {offset} + {batch}")
    return offset


def check_stream(seed, generator, sample_offset, x: torch.Tensor):
    """(seed, sample_offset) as the op schemas take them: two ints, or, where either is a tensor,
    two 0-dim int64 tensors on x's device (the ops' tensor_seed overloads, which the kernels read
    when they run: no host synchronisation, and a CUDA graph replays with the values last written
    into them). An int beside a tensor becomes a tensor on x's device (torch.full, no copy from the
    host). A tensor seed's 64 bits are the seed; a tensor sample_offset is checked by the CPU
    kernels only (reading a CUDA tensor's value would synchronise)."""
    if not isinstance(seed, torch.Tensor) and not isinstance(sample_offset, torch.Tensor):
        return resolve_seed(seed, generator), check_sample_offset(sample_offset, x.shape[0])
    if not isinstance(seed, torch.Tensor):
        seed = torch.full((), resolve_seed(seed, generator), dtype=torch.int64, device=x.device)
    if not isinstance(sample_offset, torch.Tensor):
        offset = check_sample_offset(sample_offset, x.shape[0])
        sample_offset = torch.full((), offset, dtype=torch.int64, device=x.device)
    return check_stream_tensor(seed, "seed", x), check_stream_tensor(sample_offset, "sample_offset", x)


def check_stream_tensor(t: torch.Tensor, name: str, x: torch.Tensor) -> torch.Tensor:
    if t.dim() != 0 or t.dtype != torch.int64 or t.device != x.device:
        raise ValueError(
            f"{name} must be a 0-dim int64 tensor on x's device ({x.device}), "
            f"got {t.dtype} of shape {tuple(t.shape)} on {t.device}"
        )
    return t


def resolve_seed(seed, generator) -> int:
    """The 64-bit seed as the int64 the op schemas take. seed=None draws one from `generator`
    or, when that is None too, from torch's default CPU generator (so torch.manual_seed makes
    a script reproducible). Drawing from a CUDA generator synchronises with its device."""
    if seed is None:
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        device = generator.device if generator is not None else "cpu"
        seed = int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64, device=device, generator=generator))
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int in [0, 2**64) or None, got {seed!r}")
    seed = int(seed)
    if not 0 <= seed < _U64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed - _U64 if seed >= 2**63 else seed
