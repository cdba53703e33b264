"""The CUDA launch without a GPU: its launch plan (grids, shared memory, scratch) at extreme sizes
through the genesis::_launch_plan hook, and the emulated launch (csrc/emulate, the GPU's launch
sequence over the GPU's grids) on the paths the small shapes of test_ops_vs_reference.py do not
reach. The window stage has three paths, chosen by the largest window of a volume: one thread per
window (up to 128 voxels), one warp per window with its permutation in shared memory (up to 6016),
and one warp per window with a slice of global scratch (the rest); each is checked bit for bit
against the NumPy reference and the CPU kernels, on both sides of each boundary. Also: explicit
control points outside [0, 1]."""

import math

import numpy as np
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

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
    "window_per_thread",
    "window_slice_stride",
    "voxel_vector",
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
    assert p["window_threads"] == (128 if p["window_per_thread"] else 32)
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


def window_path(p):
    if p["window_per_thread"]:
        return "thread"
    return "block_shared" if p["window_in_shared"] else "block_global"


# (shape, path): the largest window is prod(max(1, side // 10)) voxels.
PATH_SHAPES = [
    ((2, 1, 64, 64, 32), "thread"),  # the throughput target's volume: windows up to 6 x 6 x 3 = 108
    ((1, 1, 80, 160), "thread"),  # 8 x 16 = 128: the largest thread-path window (2D)
    ((1, 1, 40, 40, 80), "thread"),  # 4 x 4 x 8 = 128 (3D)
    ((1, 1, 80, 170), "block_shared"),  # 8 x 17 = 136: just past the boundary
    ((1, 1, 40, 40, 90), "block_shared"),  # 4 x 4 x 9 = 144
    ((1, 2, 100, 100, 30), "block_shared"),  # 10 x 10 x 3 = 300, two channels
    ((1, 1, 770, 780), "block_shared"),  # 77 x 78 = 6006 <= 6016: the largest in shared memory
    ((1, 1, 790, 770), "block_global"),  # 79 x 77 = 6083 > 6016: global slices
]


def test_launch_plan_window_paths():
    """The path follows the largest window; the thread path gives each of its 128 threads a slice of
    an odd number of 4-byte words (threads at the same position hit different banks)."""
    for shape, path in PATH_SHAPES:
        p = plan(shape, shuffle_p=1.0, num_windows=100)
        assert window_path(p) == path, shape
        cap = p["window_capacity"]
        assert cap == math.prod(max(1, d // 10) for d in shape[2:])
        if path == "thread":
            assert cap <= 128 and p["window_threads"] == 128 and p["window_bytes"] == 0
            stride = p["window_slice_stride"]
            assert stride >= cap and stride % 4 == 0 and (stride // 4) % 2 == 1
            assert p["window_shared_bytes"] == 128 * stride
            assert p["window_x"] == -(-p["window_items"] // 128)
        else:
            assert cap > 128 and p["window_threads"] == 32 and p["window_slice_stride"] == 0
    assert plan((1, 1, 64, 64, 32), shuffle_p=1.0, num_windows=100)["window_slice_stride"] == 108  # 27 words
    assert plan((1, 1, 80, 160), shuffle_p=1.0, num_windows=100)["window_slice_stride"] == 132  # 32 -> 33 words
    # shuffle_mask needs no permutation: no window kernel on any path
    assert plan((1, 1, 64, 64, 32), shuffle_p=0.0, num_windows=100)["window_x"] == 0


def test_window_global_scratch_cap_from_free_memory():
    """Large windows' global slices: an eighth of the device's free memory, within [256 MB, 4 GB];
    free_bytes=0 (the emulation, or no query) keeps the fixed 256 MB."""
    sizes = (1, 1, 512, 512, 512)
    per_window = 8 * 51**3
    for free, cap in [
        (0, 256 << 20),
        (1 << 30, 256 << 20),  # an eighth would be 128 MB: not below what every call could take
        (16 << 30, 2 << 30),
        (141 << 30, 4 << 30),  # an empty H200: the 4 GB ceiling
    ]:
        values = torch.ops.genesis._launch_plan(list(sizes), 1.0, 10000, 0.0, False, free)
        p = dict(zip(PLAN_FIELDS, values, strict=True))
        assert window_path(p) == "block_global"
        assert p["window_x"] == min(10000, cap // per_window), free
        assert p["window_bytes"] == p["window_x"] * per_window <= cap
    assert plan(sizes, shuffle_p=1.0, num_windows=10000)["window_x"] == (256 << 20) // per_window


def test_launch_plan_vector_stores_where_groups_align():
    assert plan((2, 1, 64, 64, 32))["voxel_vector"] == 1
    assert plan((2, 1, 4, 6))["voxel_vector"] == 1
    assert plan((2, 1, 5, 7))["voxel_vector"] == 0  # 35 voxels: groups of 4 straddle the planes
    assert plan((2, 3, 3, 5, 7))["voxel_vector"] == 0


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
    raw_seed = go._checks.resolve_seed(seed, None)
    return torch.ops.genesis._emulated_cuda_models_genesis(
        x, 0.0, 1.0, num_windows, 0.0, 0.0, 0.0, 0.0, 1.0, raw_seed, 0
    )[0]


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


def _check_shuffle_paths(x, num_windows, seed):
    got = _emulated_shuffle(x, num_windows, seed)
    expected = ref.local_shuffle(x.numpy(), p=1.0, num_windows=num_windows, seed=seed)
    assert torch.equal(got, torch.from_numpy(expected))
    assert torch.equal(got, go.local_shuffle(x, p=1.0, num_windows=num_windows, seed=seed))
    return got


@pytest.mark.parametrize(
    "shape,path", PATH_SHAPES[:6], ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v
)
def test_emulated_window_paths_match_reference(shape, path):
    """Every window path, on both sides of the thread path's boundary, equals the reference and the
    CPU kernels bit for bit (the global path: test_emulated_window_kernel_global_fallback_matches_reference)."""
    assert window_path(plan(shape, shuffle_p=1.0, num_windows=60)) == path
    x = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
    got = _check_shuffle_paths(x, 60, 11)
    assert not torch.equal(got, x)


@st.composite
def path_volumes(draw, path):
    """Volumes whose largest window (the product of the sides // 10) takes `path`: "thread" (at most
    128 voxels) or "block" (more; up to 16 x 16 in 2D, 7 x 7 x 7 in 3D), any remainders."""
    nd = draw(st.sampled_from([2, 3]))
    top = 16 if nd == 2 else 7
    sides = [draw(st.integers(0, top)) for _ in range(nd)]
    # repair towards the path (no filtering): grow the smallest side, or shrink the largest
    while path == "block" and math.prod(max(1, w) for w in sides) <= 128:
        sides[sides.index(min(sides))] += 1
    while path == "thread" and math.prod(max(1, w) for w in sides) > 128:
        sides[sides.index(max(sides))] -= 1
    spatial = tuple(10 * w + draw(st.integers(0 if w else 1, 9)) for w in sides)
    batch = draw(st.integers(1, 2))
    channels = draw(st.integers(1, 2))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    return torch.rand((batch, channels) + spatial, generator=g)


@pytest.mark.parametrize("path", ["thread", "block"])
@settings(max_examples=25, deadline=None)
@given(data=st.data(), num_windows=st.integers(1, 40), seed=st.integers(0, 2**64 - 1))
def test_emulated_shuffle_over_shapes_matches_reference(path, data, num_windows, seed):
    x = data.draw(path_volumes(path))
    assert window_path(plan(tuple(x.shape), shuffle_p=1.0, num_windows=num_windows)).startswith(path)
    _check_shuffle_paths(x, num_windows, seed)


@pytest.mark.parametrize("path", ["thread", "block"])
@settings(max_examples=15, deadline=None)
@given(
    data=st.data(),
    num_windows=st.integers(1, 30),
    seed=st.integers(0, 2**64 - 1),
    shuffle_p=st.sampled_from([0.5, 1.0]),
)
def test_emulated_fused_with_masks_over_shapes_matches_reference_and_cpu(path, data, num_windows, seed, shuffle_p):
    """Every stage with masks on each window path, and the voxel kernel's vector stores where the
    spatial size is a multiple of 4 (scalar stores elsewhere)."""
    x = data.draw(path_volumes(path))
    cfg = go.GenesisConfig(
        flip_p=0.4, shuffle_p=shuffle_p, num_windows=num_windows, nonlinear_p=0.9, paint_p=0.9, inpaint_rate=0.5
    )
    p = plan(tuple(x.shape), shuffle_p=shuffle_p, num_windows=num_windows, nonlinear_p=0.9)
    assert window_path(p).startswith(path)
    event(f"vector stores {bool(p['voxel_vector'])}")
    lo, hi = cfg.value_range
    raw_seed = go._checks.resolve_seed(seed, None)
    args = (cfg.flip_p, shuffle_p, num_windows, cfg.nonlinear_p, cfg.paint_p, cfg.inpaint_rate, lo, hi, raw_seed, 0)
    got = torch.ops.genesis._emulated_cuda_models_genesis_masked(x, *args)
    expected = ref.models_genesis(x.numpy(), cfg, seed=seed, return_masks=True)
    cpu = go.models_genesis(x, cfg, seed=seed, return_masks=True)
    for g, e, c in zip(got, expected, cpu, strict=True):
        assert torch.equal(g, torch.from_numpy(np.ascontiguousarray(e)).to(g.dtype))
        assert torch.equal(g, c)
