"""Fake (meta) kernels of torch.ops.genesis.*, so that torch.compile(fullgraph=True), meta
tensors and torch.library.opcheck work: every op returns new contiguous tensors of x's shape,
dtype and device."""
import torch


def _like(x):
    return x.new_empty(x.shape)


@torch.library.register_fake("genesis::models_genesis")
def _models_genesis_fake(x, flip_p, shuffle_p, num_windows, nonlinear_p, paint_p, inpaint_rate, lo, hi, seed,
                         sample_offset):
    return _like(x), _like(x)


@torch.library.register_fake("genesis::flip")
def _flip_fake(x, p, seed, sample_offset):
    return _like(x)


@torch.library.register_fake("genesis::local_shuffle")
def _local_shuffle_fake(x, p, num_windows, seed, sample_offset):
    return _like(x)


@torch.library.register_fake("genesis::nonlinear")
def _nonlinear_fake(x, p, lo, hi, seed, sample_offset):
    return _like(x)


@torch.library.register_fake("genesis::inpaint")
def _inpaint_fake(x, p, lo, hi, seed, sample_offset):
    return _like(x)


@torch.library.register_fake("genesis::outpaint")
def _outpaint_fake(x, p, lo, hi, seed, sample_offset):
    return _like(x)


@torch.library.register_fake("genesis::bezier")
def _bezier_fake(x, control_points, increasing, lo, hi):
    torch._check(control_points.shape == (x.shape[0], 4), lambda: "control_points must have shape (B, 4)")
    torch._check(increasing.shape == (x.shape[0],), lambda: "increasing must have shape (B,)")
    return _like(x)


@torch.library.register_fake("genesis::_emulated_cuda_models_genesis")
def _emulated_fake(x, flip_p, shuffle_p, num_windows, nonlinear_p, paint_p, inpaint_rate, lo, hi, seed,
                   sample_offset):
    return _like(x), _like(x)


@torch.library.register_fake("genesis::_emulated_cuda_bezier")
def _emulated_bezier_fake(x, control_points, increasing, lo, hi):
    return _like(x)

# genesis::_launch_plan takes no tensor and returns ints: it is registered for
# CompositeExplicitAutograd (every backend, meta included), so it needs no fake kernel.
