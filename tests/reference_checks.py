"""What the tests comparing kernels with the NumPy reference share (test_ops_vs_reference.py,
test_masks.py): random batches, the reference's dtypes, bit comparisons, and configurations."""

import numpy as np
import torch
from hypothesis import strategies as st

import genesis_ops as go

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@st.composite
def volumes(draw, max_side=24, max_channels=3):
    """(x, seed): a 2D or 3D batch of any dtype, values a little outside [0, 1] (exercising the
    clamp), and a 64-bit seed."""
    nd = draw(st.sampled_from([2, 3]))
    spatial = tuple(draw(st.integers(1, max_side)) for _ in range(nd))
    batch = draw(st.integers(1, 3))
    channels = draw(st.integers(1, max_channels))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**64 - 1))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    x = torch.rand((batch, channels) + spatial, generator=g, dtype=torch.float64)
    return (x * 1.2 - 0.1).to(dtype), seed


def to_numpy(x):
    """The reference works on NumPy float16/32/64; bfloat16 values are exact in float32."""
    return x.float().numpy() if x.dtype == torch.bfloat16 else x.numpy()


def from_reference(a, like):
    return torch.from_numpy(np.ascontiguousarray(a)).to(like.dtype)


def assert_bits(actual, expected_np, like=None):
    """Same bits as the reference's array (rounded once to like's dtype, for bfloat16)."""
    expected = torch.from_numpy(np.ascontiguousarray(expected_np))
    if like is not None:
        expected = expected.to(like.dtype)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert torch.equal(actual.reshape(-1).view(torch.uint8), expected.reshape(-1).view(torch.uint8))


def assert_same(actual, expected_np, like):
    """x's dtype and shape, and the reference's bits (or equal values)."""
    expected = from_reference(expected_np, like)
    assert actual.dtype == like.dtype and actual.shape == like.shape
    assert torch.equal(actual.view(-1).view(torch.uint8), expected.view(-1).view(torch.uint8)) or torch.equal(
        actual, expected
    ), f"max diff {(actual.double() - expected.double()).abs().max()}"


probabilities = st.sampled_from([0.0, 0.3, 0.5, 1.0])
RANGES = [(0.0, 1.0), (-1.0, 1.0), (0.25, 0.5)]
WIDE_RANGES = [(0.0, 1.0), (-1.0, 1.0), (-1000.0, 3000.0), (0.25, 0.5)]


def configs(max_windows, ranges):
    return st.builds(
        go.GenesisConfig,
        flip_p=probabilities,
        shuffle_p=probabilities,
        num_windows=st.integers(0, max_windows),
        nonlinear_p=probabilities,
        paint_p=probabilities,
        inpaint_rate=st.sampled_from([0.0, 0.2, 1.0]),
        value_range=st.sampled_from(ranges),
    )


def raw_fused_args(cfg):
    """The fused schema's arguments between x and the stream, from a GenesisConfig."""
    return (
        cfg.flip_p,
        cfg.shuffle_p,
        cfg.num_windows,
        cfg.nonlinear_p,
        cfg.paint_p,
        cfg.inpaint_rate,
        *cfg.value_range,
    )
