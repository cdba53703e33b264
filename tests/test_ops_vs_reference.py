"""Kernels against the NumPy reference: bit-exact over shapes (2D and 3D, tiny and odd sizes),
dtypes, channels, seeds and parameters; for the C++ CPU kernels and for the CUDA kernels' bodies
run by the CPU emulation (csrc/emulate), so GPU code is checked on machines without a GPU."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import genesis_ops as go
from genesis_ops import reference as ref
from reference_checks import WIDE_RANGES, assert_same, probabilities, raw_fused_args, to_numpy, volumes
from reference_checks import configs as configs_of

_np = to_numpy


@given(volumes(), probabilities)
def test_flip(v, p):
    x, seed = v
    assert_same(go.flip(x, p=p, seed=seed), ref.flip(_np(x), p=p, seed=seed), x)


@given(volumes(), probabilities, st.integers(0, 300))
def test_local_shuffle(v, p, num_windows):
    x, seed = v
    got = go.local_shuffle(x, p=p, num_windows=num_windows, seed=seed)
    assert_same(got, ref.local_shuffle(_np(x), p=p, num_windows=num_windows, seed=seed), x)


@pytest.mark.parametrize(
    "shape", [(1, 1, 4, 6, 130), (2, 1, 3, 5, 64), (2, 1, 3, 5, 65), (1, 2, 3, 2, 129), (1, 1, 2, 700), (1, 1, 3, 1300)]
)
@pytest.mark.parametrize("num_windows", [1, 40, 300, 3000])
def test_local_shuffle_long_rows(shape, num_windows):
    """Rows of more than 64 voxels: the CPU claims windows in a bitmap of 64-bit words per row,
    where a window's row segment may straddle two words, or span several (W >= 650)."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(num_windows))
    for seed in (0, 5):
        got = go.local_shuffle(x, p=1.0, num_windows=num_windows, seed=seed)
        assert_same(got, ref.local_shuffle(_np(x), p=1.0, num_windows=num_windows, seed=seed), x)


value_ranges = st.sampled_from(WIDE_RANGES)


@given(volumes(), probabilities, value_ranges)
def test_nonlinear(v, p, value_range):
    x, seed = v
    got = go.nonlinear(x, p=p, value_range=value_range, seed=seed)
    want = ref.nonlinear(_np(x), p=p, value_range=value_range, seed=seed)
    assert_same(got, want, x)


@given(volumes(), probabilities, value_ranges)
def test_inpaint(v, p, value_range):
    x, seed = v
    assert_same(
        go.inpaint(x, p=p, value_range=value_range, seed=seed),
        ref.inpaint(_np(x), p=p, value_range=value_range, seed=seed),
        x,
    )


@given(volumes(), probabilities, value_ranges)
def test_outpaint(v, p, value_range):
    x, seed = v
    assert_same(
        go.outpaint(x, p=p, value_range=value_range, seed=seed),
        ref.outpaint(_np(x), p=p, value_range=value_range, seed=seed),
        x,
    )


configs = configs_of(200, WIDE_RANGES)


@given(volumes(), configs, st.integers(0, 1000))
def test_models_genesis(v, cfg, offset):
    x, seed = v
    inp, target = go.models_genesis(x, cfg, seed=seed, sample_offset=offset)
    rin, rtarget = ref.models_genesis(_np(x), cfg, seed=seed, sample_offset=offset)
    assert_same(target, rtarget, x)
    assert_same(inp, rin, x)


def _emulated(x, cfg, seed, offset=0):
    return torch.ops.genesis._emulated_cuda_models_genesis(
        x, *raw_fused_args(cfg), go._checks.resolve_seed(seed, None), offset
    )


@given(volumes(max_side=20), configs, st.integers(0, 1000))
def test_emulated_cuda_launch_matches_reference(v, cfg, offset):
    """The CUDA kernels' bodies over their grids (per-window owner stamping with atomic max, one
    warp per window building its Fisher-Yates permutation, 4-voxel groups sharing a noise block,
    per-block curve tables) equal the sequential reference."""
    x, seed = v
    inp, target = _emulated(x, cfg, seed, offset)
    rin, rtarget = ref.models_genesis(_np(x), cfg, seed=seed, sample_offset=offset)
    assert_same(target, rtarget, x)
    assert_same(inp, rin, x)


@pytest.mark.parametrize("inpaint_rate", [0.5, 0.0, 1.0])
@pytest.mark.parametrize("shape", [(2, 1, 64, 64, 32), (1, 2, 40, 33), (1, 1, 1, 1, 1)])
def test_paper_defaults_full_size(shape, inpaint_rate):
    """The paper's configuration (10000 windows) at the paper's cube size, CPU and emulated GPU.
    Shuffled and painted: the CPU skips the permutations of windows that painting covers
    (rates 0 and 1 force out- and in-painting)."""
    x = torch.rand(shape)
    cfg = go.GenesisConfig(shuffle_p=1.0, paint_p=1.0, inpaint_rate=inpaint_rate)
    inp, target = go.models_genesis(x, cfg, seed=7)
    rin, rtarget = ref.models_genesis(x.numpy(), cfg, seed=7)
    assert_same(inp, rin, x)
    assert_same(target, rtarget, x)
    ein, etarget = _emulated(x, cfg, 7)
    assert torch.equal(ein, inp) and torch.equal(etarget, target)


@given(st.integers(1, 3), st.lists(st.floats(0, 1), min_size=4, max_size=4), st.booleans(), value_ranges)
def test_bezier_explicit(batch, ctrl, increasing, value_range):
    x = torch.rand(batch, 2, 9, 17) * 1.4 - 0.2
    cp = [ctrl] * batch
    inc = [increasing] * batch
    got = go.bezier(x, cp, inc, value_range=value_range)
    assert_same(got, ref.bezier(x.numpy(), cp, inc, value_range), x)
    emu = torch.ops.genesis._emulated_cuda_bezier(
        x, torch.tensor(cp, dtype=torch.float64), torch.tensor(inc), *value_range
    )
    assert torch.equal(emu, got)


def test_bezier_is_what_nonlinear_draws():
    """nonlinear(x, seed) == bezier(x, the control points and direction drawn for that seed)."""
    x = torch.rand(4, 1, 16, 16, 8)
    y = go.nonlinear(x, p=1.0, seed=11)
    params = [ref.draw_sample_params(11, b, x.shape[2:], ref._Probabilities(nonlinear_p=1.0)) for b in range(4)]
    z = go.bezier(x, [p.ctrl for p in params], [p.increasing for p in params])
    assert torch.equal(y, z)


def test_portable_paths_equal_avx2_paths(tmp_path):
    """The hand-written AVX-512 paths (Philox of the shuffle and the fill noise, the intensity
    map's gathers) and AVX2 paths (Philox) have fallbacks for CPUs without them:
    GENESIS_OPS_NO_AVX512=1 selects the AVX2 ones, GENESIS_OPS_NO_AVX2=1 the portable ones, in
    a fresh process since the choice is made once. The intensity map's gathers run only where a
    timing at start-up finds them faster; GENESIS_OPS_MAP_GATHERS=1 or =0 forces them on or
    off. All must give the same bits (and the reference's). (On a CPU without AVX-512 or AVX2
    some runs coincide.)"""
    import os
    import subprocess
    import sys

    script = (
        "import sys, torch, genesis_ops as go\n"
        "x = torch.rand((5, 2, 12, 20, 70), generator=torch.Generator().manual_seed(7))\n"
        "cfg = go.GenesisConfig(num_windows=400, shuffle_p=0.8, paint_p=1.0, inpaint_rate=0.5)\n"
        "torch.save(go.models_genesis(x, cfg, seed=11), sys.argv[1])\n"
    )
    outs = []
    runs = (
        {},
        {"GENESIS_OPS_MAP_GATHERS": "1"},
        {"GENESIS_OPS_MAP_GATHERS": "0"},
        {"GENESIS_OPS_NO_AVX512": "1"},
        {"GENESIS_OPS_NO_AVX2": "1"},
    )
    for i, run in enumerate(runs):
        env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_OPS_")}
        env.update(run)
        path = tmp_path / f"out{i}.pt"
        subprocess.run([sys.executable, "-c", script, str(path)], env=env, check=True, cwd=tmp_path)
        outs.append(torch.load(path, weights_only=True))
    for other in outs[1:]:
        for a, b in zip(outs[0], other, strict=True):
            assert torch.equal(a, b)
    x = torch.rand((5, 2, 12, 20, 70), generator=torch.Generator().manual_seed(7))
    cfg = go.GenesisConfig(num_windows=400, shuffle_p=0.8, paint_p=1.0, inpaint_rate=0.5)
    want = ref.models_genesis(x.numpy(), cfg, seed=11)
    assert np.array_equal(outs[-1][0].numpy(), want[0]) and np.array_equal(outs[-1][1].numpy(), want[1])


# Volumes whose windows take every path of the CPU shuffle's claims and writes: rows within one
# 64-bit word, straddling two (W > 64), windows over 16 wide (two 16-column chunks, W >= 170)
# and over 64 wide (W >= 650), 2D and 3D, several channels.
_ORDER_CASES = [
    ((2, 1, 12, 20, 70), 400),
    ((2, 1, 20, 30, 180), 300),
    ((1, 2, 3, 2, 129), 300),
    ((1, 1, 2, 700), 200),
    ((1, 1, 3, 1300), 100),
    ((3, 1, 16, 16, 16), 3000),
]
_ORDER_SCRIPT = """
import sys, torch, genesis_ops as go
outs = []
for shape, k in {cases!r}:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(k))
    for inpaint_rate in (0.0, 1.0):
        cfg = go.GenesisConfig(num_windows=k, shuffle_p=1.0, paint_p=0.6, inpaint_rate=inpaint_rate)
        outs.append(go.models_genesis(x, cfg, seed=3, return_masks=True))
    outs.append((go.local_shuffle(x, p=1.0, num_windows=k, seed=4),))
torch.save(outs, sys.argv[1])
"""


def _order_outputs(tmp_path, name, env_set):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_OPS_")}
    env.update(env_set)
    path = tmp_path / f"{name}.pt"
    script = _ORDER_SCRIPT.format(cases=_ORDER_CASES)
    subprocess.run([sys.executable, "-c", script, str(path)], env=env, check=True, cwd=tmp_path)
    return torch.load(path, weights_only=True)


def test_shuffle_plane_order_equals_window_order(tmp_path):
    """The CPU shuffle permutes a sample's windows in window order, or, where its source map
    is large (over 8 MiB), in plane order, writing only the voxels each window owns.
    GENESIS_OPS_SHUFFLE_ORDER forces either; both, with the AVX-512, AVX2 and portable writes
    of the plane order, must give the reference's bits (inputs, targets, masks)."""
    runs = {
        "windows": {"GENESIS_OPS_SHUFFLE_ORDER": "windows"},
        "planes": {"GENESIS_OPS_SHUFFLE_ORDER": "planes"},
        "planes_avx2": {"GENESIS_OPS_SHUFFLE_ORDER": "planes", "GENESIS_OPS_NO_AVX512": "1"},
        "planes_portable": {"GENESIS_OPS_SHUFFLE_ORDER": "planes", "GENESIS_OPS_NO_AVX2": "1"},
    }
    outs = {name: _order_outputs(tmp_path, name, env) for name, env in runs.items()}
    want = []
    for shape, k in _ORDER_CASES:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(k)).numpy()
        for inpaint_rate in (0.0, 1.0):
            cfg = go.GenesisConfig(num_windows=k, shuffle_p=1.0, paint_p=0.6, inpaint_rate=inpaint_rate)
            want.append(ref.models_genesis(x, cfg, seed=3, return_masks=True))
        want.append((ref.local_shuffle(x, p=1.0, num_windows=k, seed=4),))
    for name, got in outs.items():
        assert len(got) == len(want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            for a, b in zip(g, w, strict=True):
                assert np.array_equal(a.numpy(), np.asarray(b)), f"{name}: case {i}"


def test_shuffle_plane_order_by_size():
    """Without the variable, a volume over 8 MiB of source map (2.1 M voxels) takes the plane
    order: the reference's bits, with painting and without."""
    x = torch.rand((1, 1, 130, 128, 128), generator=torch.Generator().manual_seed(3))
    for paint_p in (0.0, 1.0):
        cfg = go.GenesisConfig(num_windows=300, shuffle_p=1.0, paint_p=paint_p, inpaint_rate=0.5)
        got = go.models_genesis(x, cfg, seed=5, return_masks=True)
        want = ref.models_genesis(x.numpy(), cfg, seed=5, return_masks=True)
        for a, b in zip(got, want, strict=True):
            assert np.array_equal(a.numpy(), b)
