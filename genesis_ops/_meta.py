"""Fake (meta) kernels of torch.ops.genesis.*, so that torch.compile(fullgraph=True), meta
tensors and torch.library.opcheck work: every op returns new contiguous tensors of x's shape,
dtype and device, and the masks (B, 1, *spatial) on x's device: uint8 from the *_masked ops, bool
from the mask-only ops.

They check what they can see without data, as the C++ kernels do (csrc/op_common.h), with
the same messages: a graph traced with bad tensors fails at trace time, naming the argument,
instead of at run time. Scalar arguments are checked by the kernels when the graph runs.

Every seeded op has two schemas: the default one (SymInt seed, sample_offset) and the
tensor_seed overload (0-dim int64 tensors on x's device); both get the same fake kernel, the
overload's also checking the stream tensors."""

import torch

from ._checks import SUPPORTED_DTYPES

_MAX_SPATIAL = 2**31 - 1


def _like(x):
    return x.new_empty(x.shape)


def _mask_like(x, dtype):
    return x.new_empty((x.shape[0], 1) + tuple(x.shape[2:]), dtype=dtype)


def _check_x(x, op):
    _check_shape(x, op)
    torch._check(x.dtype in SUPPORTED_DTYPES, lambda: f"{op}: x must be float16, bfloat16, float32 or float64")


def _check_shape(x, op):
    """What the mask-only ops check: they read x's shape (any dtype) and device."""
    torch._check(
        x.dim() in (4, 5), lambda: f"{op}: x must have shape (B, C, H, W) or (B, C, D, H, W), got {x.dim()} dims"
    )
    spatial = 1
    for n in x.shape[2:]:
        spatial = spatial * n
    torch._check(
        spatial <= _MAX_SPATIAL, lambda: f"{op}: x has {spatial} voxels per channel; at most 2^31 - 1 are supported"
    )


def _check_bezier(x, control_points, increasing, op):
    _check_x(x, op)
    B = x.shape[0]
    torch._check(
        control_points.dim() == 2 and control_points.shape[0] == B and control_points.shape[1] == 4,
        lambda: f"{op}: control_points must have shape (B, 4) = ({B}, 4)",
    )
    torch._check(control_points.dtype == torch.float64, lambda: f"{op}: control_points must be float64")
    torch._check(increasing.dim() == 1 and increasing.shape[0] == B, lambda: f"{op}: increasing must have shape (B,)")
    torch._check(increasing.dtype == torch.bool, lambda: f"{op}: increasing must be a bool tensor")
    torch._check(
        control_points.device == x.device and increasing.device == x.device,
        lambda: f"{op}: control_points and increasing must be on x's device",
    )


def _check_stream(seed, sample_offset, x, op):
    for t, name in ((seed, "seed"), (sample_offset, "sample_offset")):
        torch._check(
            t.dim() == 0 and t.dtype == torch.int64 and t.device == x.device,
            lambda name=name: f"{op}: {name} must be a 0-dim int64 tensor on x's device",
        )


def _seeded(name):
    """Registers fn as the fake kernel of genesis::name and, checking the stream tensors (the
    schemas' last two arguments) after x as the C++ entries do, of its tensor_seed overload."""

    def register(fn):
        torch.library.register_fake(f"genesis::{name}")(fn)

        def tensor_seed(x, *args):
            out = fn(x, *args)
            _check_stream(args[-2], args[-1], x, f"genesis::{name}")
            return out

        torch.library.register_fake(f"genesis::{name}.tensor_seed")(tensor_seed)
        return fn

    return register


def _pair(x, op):
    _check_x(x, op)
    return _like(x), _like(x)


def _single(x, op):
    _check_x(x, op)
    return _like(x)


@_seeded("models_genesis")
def _models_genesis_fake(
    x, flip_p, shuffle_p, num_windows, nonlinear_p, paint_p, inpaint_rate, lo, hi, seed, sample_offset
):
    return _pair(x, "genesis::models_genesis")


@_seeded("flip")
def _flip_fake(x, p, seed, sample_offset):
    return _single(x, "genesis::flip")


@_seeded("local_shuffle")
def _local_shuffle_fake(x, p, num_windows, seed, sample_offset):
    return _single(x, "genesis::local_shuffle")


@_seeded("nonlinear")
def _nonlinear_fake(x, p, lo, hi, seed, sample_offset):
    return _single(x, "genesis::nonlinear")


@_seeded("inpaint")
def _inpaint_fake(x, p, lo, hi, seed, sample_offset):
    return _single(x, "genesis::inpaint")


@_seeded("outpaint")
def _outpaint_fake(x, p, lo, hi, seed, sample_offset):
    return _single(x, "genesis::outpaint")


@torch.library.register_fake("genesis::bezier")
def _bezier_fake(x, control_points, increasing, lo, hi):
    _check_bezier(x, control_points, increasing, "genesis::bezier")
    return _like(x)


@_seeded("_emulated_cuda_models_genesis")
def _emulated_fake(x, flip_p, shuffle_p, num_windows, nonlinear_p, paint_p, inpaint_rate, lo, hi, seed, sample_offset):
    return _pair(x, "genesis::_emulated_cuda_models_genesis")


@torch.library.register_fake("genesis::_emulated_cuda_bezier")
def _emulated_bezier_fake(x, control_points, increasing, lo, hi):
    _check_bezier(x, control_points, increasing, "genesis::_emulated_cuda_bezier")
    return _like(x)


def _masked_pair(x, op):
    _check_x(x, op)
    return _like(x), _mask_like(x, torch.uint8)


def _mask_only(x, op):
    _check_shape(x, op)
    return _mask_like(x, torch.bool)


def _models_genesis_masked_fake(op):
    def fake(x, flip_p, shuffle_p, num_windows, nonlinear_p, paint_p, inpaint_rate, lo, hi, seed, sample_offset):
        _check_x(x, op)
        return _like(x), _like(x), _mask_like(x, torch.uint8)

    return fake


for _prefix in ("", "_emulated_cuda_"):
    _seeded(f"{_prefix}models_genesis_masked")(_models_genesis_masked_fake(f"genesis::{_prefix}models_genesis_masked"))


@_seeded("local_shuffle_masked")
def _local_shuffle_masked_fake(x, p, num_windows, seed, sample_offset):
    return _masked_pair(x, "genesis::local_shuffle_masked")


@_seeded("inpaint_masked")
def _inpaint_masked_fake(x, p, lo, hi, seed, sample_offset):
    return _masked_pair(x, "genesis::inpaint_masked")


@_seeded("outpaint_masked")
def _outpaint_masked_fake(x, p, lo, hi, seed, sample_offset):
    return _masked_pair(x, "genesis::outpaint_masked")


def _paint_mask_fake(op):
    def fake(x, paint_p, inpaint_rate, inpaint_p, outpaint_p, seed, sample_offset):
        return _mask_only(x, op)

    return fake


def _shuffle_mask_fake(op):
    def fake(x, p, num_windows, seed, sample_offset):
        return _mask_only(x, op)

    return fake


for _prefix in ("", "_emulated_cuda_"):
    _seeded(f"{_prefix}paint_mask")(_paint_mask_fake(f"genesis::{_prefix}paint_mask"))
    _seeded(f"{_prefix}shuffle_mask")(_shuffle_mask_fake(f"genesis::{_prefix}shuffle_mask"))

# genesis::_launch_plan takes no tensor and returns ints: it is registered for
# CompositeExplicitAutograd (every backend, meta included), so it needs no fake kernel.
