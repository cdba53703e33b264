"""The CUDA launch without a GPU: its launch plan (grids, shared memory, scratch) at extreme sizes
through the genesis::_launch_plan hook, and the emulated launch (csrc/emulate, the GPU's bodies over
the GPU's grids) on the paths the small shapes of test_ops_vs_reference.py do not reach: the window
kernel's global-memory fallback for large windows, and explicit control points outside [0, 1]."""

import math

import numpy as np
import pytest
import torch

import genesis_ops as go
from genesis_ops import reference as ref

# The order of genesis::_launch_plan's result (csrc/emulate/emulate_cuda.cpp, launch_plan_hook).
PLAN_FIELDS = (
    "params_x",
    "curve_x",
    "owner_x",
    "window_x",
    "window_threads",
    "window_shared_bytes",
    "voxel_x",
    "voxel_y",
    "voxel_threads",
    "voxel_groups",
    "window_items",
    "window_capacity",
    "window_in_shared",
    "params_bytes",
    "curve_bytes",
    "owner_bytes",
    "window_bytes",
    "scratch_bytes",
)
MAX_GRID_X, MAX_GRID_Y = 2**31 - 1, 65535
SAMPLE_PARAMS_BYTES = 200
CURVE_BYTES_PER_SAMPLE = (2 * 2049 + 4097) * 4


def plan(sizes, shuffle_p=0.0, num_windows=0, nonlinear_p=0.0, params_given=False):
    values = torch.ops.genesis._launch_plan(list(sizes), shuffle_p, num_windows, nonlinear_p, params_given)
    assert len(values) == len(PLAN_FIELDS)
    return dict(zip(PLAN_FIELDS, values, strict=True))


def _align(n):
    return (n + 255) // 256 * 256


def assert_grids_valid(p, sizes):
    """Every grid within CUDA's limits, and the voxel grid covers every group of a sample."""
    B = sizes[0]
    S = math.prod(sizes[2:])
    for name in ("params_x", "curve_x", "owner_x", "window_x", "voxel_x"):
        assert 0 <= p[name] <= MAX_GRID_X, name
    assert 1 <= p["voxel_y"] <= MAX_GRID_Y
    assert p["voxel_y"] == min(B, MAX_GRID_Y)  # samples past 65535 are reached grid-stride
    assert p["voxel_groups"] == -(-S // 4)
    assert p["voxel_x"] * p["voxel_threads"] >= p["voxel_groups"]
    assert p["params_x"] >= 1


@pytest.mark.parametrize(
    "sizes,num_windows",
    [
        ((131072, 1, 20, 20), 10**7),  # B x windows = 1.3e12: wrapped the old 32-bit owner grid
        ((54976, 1, 20, 20), 10**7),  # the old owner grid's first failing launch
        ((2**32 - 1, 1, 1, 1), 10**7),  # the most samples sample_offset allows
        ((3, 2, 1290, 1290, 1290), 10**7),  # about the largest volume (2^31 - 1 voxels per channel)
        ((1, 1, 1, 1, 1), 1),
    ],
)
def test_launch_plan_within_cuda_limits_at_extreme_sizes(sizes, num_windows):
    p = plan(sizes, shuffle_p=1.0, num_windows=num_windows, nonlinear_p=0.9)
    assert_grids_valid(p, sizes)
    assert p["window_items"] == sizes[0] * num_windows  # 64-bit item count, no wrap
    assert p["owner_x"] >= 1 and p["window_x"] >= 1 and p["curve_x"] >= 1
    assert p["window_threads"] == 32
    assert p["window_shared_bytes"] <= 47 * 1024  # + WindowState (static) within 48 KB
    assert p["window_bytes"] <= 256 * 2**20


def test_launch_plan_window_memory_choice():
    """Windows up to 6016 voxels keep perm and draws in shared memory; larger ones use one global
    slice per block (linear work either way)."""
    p = plan((4, 1, 160, 160, 160), shuffle_p=1.0, num_windows=10000)
    assert p["window_capacity"] == 16**3 and p["window_in_shared"] == 1
    assert p["window_shared_bytes"] == 8 * 16**3 and p["window_bytes"] == 0
    p = plan((4, 1, 800, 800), shuffle_p=1.0, num_windows=10000)  # 2D: windows up to 80 x 80
    assert p["window_capacity"] == 6400 and p["window_in_shared"] == 0
    assert p["window_shared_bytes"] == 0
    assert p["window_bytes"] == p["window_x"] * 8 * 6400 and 1 <= p["window_x"] <= 40000
    p = plan((1, 1, 40, 33), shuffle_p=1.0, num_windows=5)
    assert p["window_capacity"] == 4 * 3


def test_launch_plan_scratch_only_for_what_the_op_runs():
    """flip on (65536, 1, 32, 32) used to need 2.15 GB of curve tables; now only its parameters."""
    sizes = (65536, 1, 32, 32)
    B, S = sizes[0], 32 * 32
    flip = plan(sizes)
    assert flip["curve_bytes"] == 0 and flip["owner_bytes"] == 0 and flip["window_bytes"] == 0
    assert flip["curve_x"] == 0 and flip["owner_x"] == 0 and flip["window_x"] == 0
    assert flip["scratch_bytes"] == _align(B * SAMPLE_PARAMS_BYTES)
    shuffle = plan(sizes, shuffle_p=0.5, num_windows=100)
    assert shuffle["curve_bytes"] == 0 and shuffle["owner_bytes"] == B * S * 4
    assert shuffle["scratch_bytes"] == _align(B * SAMPLE_PARAMS_BYTES) + B * S * 4
    nonlinear = plan(sizes, nonlinear_p=0.9)
    assert nonlinear["curve_bytes"] == B * CURVE_BYTES_PER_SAMPLE and nonlinear["owner_bytes"] == 0
    bezier = plan(sizes, params_given=True)
    assert bezier["curve_bytes"] == B * CURVE_BYTES_PER_SAMPLE
    assert plan(sizes, shuffle_p=0.5, num_windows=0)["owner_bytes"] == 0


def test_launch_plan_rejects_bad_sizes():
    with pytest.raises(RuntimeError, match="sizes must be"):
        torch.ops.genesis._launch_plan([1, 2, 3], 0.0, 0, 0.0, False)
    with pytest.raises(RuntimeError, match="2\\^31 - 1"):
        torch.ops.genesis._launch_plan([1, 1, 2048, 2048, 2048], 0.0, 0, 0.0, False)


def _emulated_shuffle(x, num_windows, seed):
    return torch.ops.genesis._emulated_cuda_models_genesis(x, 0.0, 1.0, num_windows, 0.0, 0.0, 0.0, 0.0, 1.0, seed, 0)[
        0
    ]


@pytest.mark.parametrize("shape,num_windows", [((2, 1, 800, 800), 40), ((1, 1, 20, 560, 560), 30)])
def test_emulated_window_kernel_global_fallback_matches_reference(shape, num_windows):
    """Windows too large for shared memory (up to 80 x 80 and 2 x 56 x 56 > 6016 voxels) go through
    the window kernel's global scratch; the result is still the reference's, bit for bit."""
    p = plan(shape, shuffle_p=1.0, num_windows=num_windows)
    assert p["window_in_shared"] == 0
    x = torch.rand(shape)
    got = _emulated_shuffle(x, num_windows, 5)
    expected = ref.local_shuffle(x.numpy(), p=1.0, num_windows=num_windows, seed=5)
    assert torch.equal(got, torch.from_numpy(expected))
    assert torch.equal(got, go.local_shuffle(x, p=1.0, num_windows=num_windows, seed=5))
    assert not torch.equal(got, x)


def test_emulated_shuffle_in_shared_memory_matches_cpu_at_160_cubed():
    """The paper's 10000 windows on a 160^3 volume (windows up to 16^3 voxels, in shared memory)."""
    x = torch.rand(1, 1, 160, 160, 160)
    assert torch.equal(_emulated_shuffle(x, 10000, 9), go.local_shuffle(x, p=1.0, num_windows=10000, seed=9))


OUTSIDE = [[-0.5, 0.2, 1.7, 0.9], [0.3, float("nan"), 0.6, float("inf")], [float("-inf"), 2.0, -1e-300, 1.0]]


def test_bezier_control_points_outside_unit_square_are_clamped_on_every_path():
    """One rule on every device: clamp to [0, 1], NaN counts as 0 (CPU kernel, the CUDA bodies in
    the emulation and the reference agree bit for bit, and equal the clamped curve)."""
    x = torch.rand(3, 2, 9, 17) * 1.4 - 0.2
    cp = torch.tensor(OUTSIDE, dtype=torch.float64)
    inc = torch.tensor([True, False, True])
    got = go.bezier(x, cp, inc)
    clamped = cp.nan_to_num(nan=0.0).clamp(0, 1)
    assert torch.equal(got, go.bezier(x, clamped, inc))
    assert torch.equal(got, torch.from_numpy(ref.bezier(x.numpy(), cp.numpy(), inc.numpy())))
    assert torch.equal(torch.ops.genesis._emulated_cuda_bezier(x, cp, inc, 0.0, 1.0), got)
    assert torch.equal(torch.ops.genesis.bezier(x, cp, inc, 0.0, 1.0), got)
    assert not torch.isnan(got).any()


def test_reference_clamp_rule():
    cp = np.array([-1.0, 0.0, 0.25, 1.0, 3.0, np.nan, np.inf, -np.inf])
    assert np.array_equal(ref.clamp_control_points(cp), [0.0, 0.0, 0.25, 1.0, 1.0, 0.0, 1.0, 0.0])
