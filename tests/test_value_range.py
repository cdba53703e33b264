"""value_range="per_sample" (docs/SPEC.md, section 4.8): each sample's own min and max over all its
channels. Kernels (CPU and the emulated CUDA launch) against the NumPy reference, bit for bit, on
data of any scale with constant samples and non-finite values; z-scored data: no saturation, and
the pair is the [0, 1] pipeline's on the min-max normalised sample, mapped back; opcheck, compile,
bad input and the MONAI transform."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import genesis_ops as go
from genesis_ops import reference as ref

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
NAN = math.nan


@st.composite
def volumes(draw, max_side=20):
    """Volumes on a drawn scale and offset (z-scored, CT-like, tiny), sometimes with a constant
    sample, NaN, +-inf or -0 planted."""
    nd = draw(st.sampled_from([2, 3]))
    spatial = tuple(draw(st.integers(1, max_side)) for _ in range(nd))
    batch = draw(st.integers(1, 3))
    channels = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**64 - 1))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    scale = draw(st.sampled_from([1.0, 1000.0, 1e-3, 30.0]))
    offset = draw(st.sampled_from([0.0, -1024.0, 0.5, 7.0]))
    x = torch.randn((batch, channels) + spatial, generator=g, dtype=torch.float64) * scale + offset
    special = draw(st.sampled_from(["none", "constant", "nan", "inf", "negzero", "allnan"]))
    flat = x.view(batch, -1)
    if special == "constant":
        flat[0] = offset
    elif special == "nan":
        flat[0, 0] = NAN
    elif special == "inf":
        flat[-1, -1] = math.inf
        flat[0, 0] = -math.inf
    elif special == "negzero":
        flat[0] = torch.where(flat[0] < 0, torch.tensor(-0.0, dtype=x.dtype), torch.tensor(0.0, dtype=x.dtype))
    elif special == "allnan":
        flat[-1] = NAN
    return x.to(dtype), seed


def _np(x):
    return x.float().numpy() if x.dtype == torch.bfloat16 else x.numpy()


def assert_same(actual, expected_np, like):
    expected = torch.from_numpy(np.ascontiguousarray(expected_np)).to(like.dtype)
    assert actual.dtype == like.dtype and actual.shape == like.shape
    # Bit for bit, except a NaN's payload, which the reference's float32 detour of bfloat16 drops.
    a, e = actual.reshape(-1), expected.reshape(-1)
    both_nan = a.isnan() & e.isnan()
    same_bits = torch.equal(a[~both_nan].view(torch.uint8), e[~both_nan].view(torch.uint8))
    assert torch.equal(a.isnan(), e.isnan()) and same_bits, (
        f"max diff {(actual.double() - expected.double()).abs().nan_to_num().max()}"
    )


probabilities = st.sampled_from([0.0, 0.3, 1.0])
configs = st.builds(
    go.GenesisConfig,
    flip_p=probabilities,
    shuffle_p=probabilities,
    num_windows=st.integers(0, 100),
    nonlinear_p=probabilities,
    paint_p=probabilities,
    inpaint_rate=st.sampled_from([0.0, 0.2, 1.0]),
    value_range=st.just("per_sample"),
)


def _emulated(x, cfg, seed, offset=0, masked=False):
    op = (
        torch.ops.genesis._emulated_cuda_models_genesis_masked
        if masked
        else torch.ops.genesis._emulated_cuda_models_genesis
    )
    args = (cfg.flip_p, cfg.shuffle_p, cfg.num_windows, cfg.nonlinear_p, cfg.paint_p, cfg.inpaint_rate)
    return op(x, *args, NAN, NAN, go._checks.resolve_seed(seed, None), offset)


@settings(max_examples=60)
@given(volumes(), configs, st.integers(0, 1000))
def test_models_genesis_cpu_and_emulated_equal_reference(v, cfg, offset):
    x, seed = v
    rin, rtarget, rmask = ref.models_genesis(_np(x), cfg, seed=seed, sample_offset=offset, return_masks=True)
    inp, target, mask = go.models_genesis(x, cfg, seed=seed, sample_offset=offset, return_masks=True)
    assert_same(target, rtarget, x)
    assert_same(inp, rin, x)
    assert np.array_equal(mask.numpy(), rmask)
    ein, etarget, emask = _emulated(x, cfg, seed, offset, masked=True)
    assert_same(ein, rin, x)
    assert_same(etarget, rtarget, x)
    assert torch.equal(emask, mask)
    ein, etarget = _emulated(x, cfg, seed, offset)
    assert_same(ein, rin, x)


@given(volumes(), probabilities)
def test_single_ops_equal_reference(v, p):
    x, seed = v
    for name in ("nonlinear", "inpaint", "outpaint"):
        got = getattr(go, name)(x, p=p, value_range="per_sample", seed=seed)
        assert_same(got, getattr(ref, name)(_np(x), p=p, value_range="per_sample", seed=seed), x)
    got, mask = go.inpaint(x, p=p, value_range="per_sample", seed=seed, return_mask=True)
    rgot, rmask = ref.inpaint(_np(x), p=p, value_range="per_sample", seed=seed, return_mask=True)
    assert_same(got, rgot, x)
    assert np.array_equal(mask.numpy(), rmask)


@given(volumes(), st.lists(st.floats(0, 1), min_size=4, max_size=4), st.booleans())
def test_bezier_equals_reference(v, ctrl, increasing):
    x, _ = v
    cp, inc = [ctrl] * x.shape[0], [increasing] * x.shape[0]
    got = go.bezier(x, cp, inc, value_range="per_sample")
    assert_same(got, ref.bezier(_np(x), cp, inc, "per_sample"), x)
    emu = torch.ops.genesis._emulated_cuda_bezier(x, torch.tensor(cp, dtype=torch.float64), torch.tensor(inc), NAN, NAN)
    assert torch.equal(emu.reshape(-1).view(torch.uint8), got.reshape(-1).view(torch.uint8))


def test_range_is_each_samples_own():
    """The per-sample range equals the fixed range of that sample's own min and max, so a batch is
    the concatenation of its samples run alone with their own (lo, hi)."""
    x = torch.randn(3, 2, 16, 12, 10) * torch.tensor([1.0, 100.0, 0.01]).view(3, 1, 1, 1, 1)
    cfg = go.GenesisConfig(value_range="per_sample", num_windows=100)
    inp, target = go.models_genesis(x, cfg, seed=9)
    for b in range(3):
        own = go.GenesisConfig(value_range=(float(x[b].min()), float(x[b].max())), num_windows=100)
        i_b, t_b = go.models_genesis(x[b : b + 1], own, seed=9, sample_offset=b)
        assert torch.equal(inp[b : b + 1], i_b) and torch.equal(target[b : b + 1], t_b)


def _normalise(x):
    """The min-max normalisation of each sample in the spec's float32 arithmetic:
    n = (x - lo) * float32(1 / range), and its inverse lo + n * range."""
    lo = x.flatten(1).amin(1).view(-1, *[1] * (x.dim() - 1))
    rng = x.flatten(1).amax(1).view_as(lo) - lo
    return (x - lo) * (1.0 / rng), lo, rng


@pytest.mark.parametrize("nonlinear_p", [1.0, 0.9])
def test_z_scored_no_saturation_and_equal_to_normalised_pipeline(nonlinear_p):
    """Standard-normal samples (nnU-Net / nnssl data): the share of output voxels at a sample's min or
    max stays at the input's (the public code's clamp to [0, 1] puts 66% there), and the pair is the
    [0, 1] pipeline's on the min-max normalised sample, mapped back: exactly for every voxel the
    curve or the noise computes (the curve's t and the noise's lo + range * u are the same float32
    operations), within 4 float32 ulps of the sample's scale for voxels only moved (the target and
    unmapped samples), since lo + ((x - lo) * inv) * range need not round back to x."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 32, 32, 32, generator=g)
    cfg = go.GenesisConfig(value_range="per_sample", nonlinear_p=nonlinear_p)
    inp, target, mask = go.models_genesis(x, cfg, seed=21, return_masks=True)
    lo_x, hi_x = x.flatten(1).amin(1), x.flatten(1).amax(1)
    for b in range(4):
        at_ends_in = ((x[b] == lo_x[b]) | (x[b] == hi_x[b])).float().mean().item()
        at_ends_out = ((inp[b] <= lo_x[b]) | (inp[b] >= hi_x[b])).float().mean().item()
        assert at_ends_in < 1e-4 and at_ends_out < at_ends_in + 1e-4, (at_ends_in, at_ends_out)
        # lo + f(t) * range and lo + range * u are rounded once: at most one ulp past the max.
        assert inp[b].min() >= lo_x[b] and inp[b].max() <= torch.nextafter(hi_x[b], torch.tensor(math.inf))
    n, lo, rng = _normalise(x)
    i01, t01 = go.models_genesis(n, go.GenesisConfig(nonlinear_p=nonlinear_p), seed=21)
    back_in, back_target = lo + i01 * rng, lo + t01 * rng
    tol = 4 * torch.finfo(torch.float32).eps * (lo.abs() + rng)
    assert ((back_target - target).abs() <= tol).all()
    assert ((back_in - inp).abs() <= tol).all()
    params = [ref.draw_sample_params(21, b, x.shape[2:], ref._Probabilities(nonlinear_p=nonlinear_p)) for b in range(4)]
    computed = (mask & 2).bool() | torch.tensor([p.nonlinear for p in params]).view(4, 1, 1, 1, 1)
    assert torch.equal(back_in[computed], inp[computed])
    if nonlinear_p == 1.0:
        assert computed.all()


def test_fixed_range_unchanged_and_raw_sentinel():
    """lo = hi = NaN on a raw op is the per-sample range; one NaN alone is still refused."""
    x = torch.randn(2, 1, 8, 9, 10)
    a = go.nonlinear(x, p=1.0, value_range="per_sample", seed=3)
    assert torch.equal(a, torch.ops.genesis.nonlinear(x, 1.0, NAN, NAN, 3, 0))
    with pytest.raises(RuntimeError, match="value range must be finite"):
        torch.ops.genesis.nonlinear(x, 1.0, NAN, 1.0, 3, 0)
    with pytest.raises(ValueError, match="value_range must be a pair"):
        go.nonlinear(x, value_range="per_channel")
    with pytest.raises(ValueError, match="config.value_range"):
        go.models_genesis(x, go.GenesisConfig(value_range="minmax"))


def test_opcheck_and_compile():
    x = torch.randn(2, 2, 10, 9, 8) * 50
    torch.library.opcheck(torch.ops.genesis.models_genesis.default, (x, 0.4, 0.5, 20, 0.9, 0.9, 0.2, NAN, NAN, 3, 0))
    torch.library.opcheck(torch.ops.genesis.nonlinear.default, (x, 1.0, NAN, NAN, 3, 0))
    torch.library.opcheck(torch.ops.genesis.outpaint_masked.default, (x, 1.0, NAN, NAN, 3, 0))
    cfg = go.GenesisConfig(value_range="per_sample", num_windows=20)

    def f(v):
        i, t = go.models_genesis(v, cfg, seed=5)
        return i - t + go.inpaint(v, value_range="per_sample", seed=6)

    assert torch.equal(torch.compile(f, fullgraph=True)(x), f(x))


def test_monai_transform_per_sample():
    pytest.importorskip("monai")
    from genesis_ops.monai import RandModelsGenesis

    img = torch.randn(2, 16, 16, 12) * 3 + 1
    t = RandModelsGenesis(go.GenesisConfig(value_range="per_sample"))
    t.set_random_state(4)
    inp, target = t(img)
    seed = t._seed
    want_in, want_target = go.models_genesis(img[None], go.GenesisConfig(value_range="per_sample"), seed=seed)
    assert torch.equal(torch.as_tensor(inp), want_in[0]) and torch.equal(torch.as_tensor(target), want_target[0])
    # lo + f(t) * range is rounded once, so it may end one float32 ulp past the image's max.
    top = torch.nextafter(img.max(), torch.tensor(math.inf))
    assert torch.as_tensor(inp).min() >= img.min() and torch.as_tensor(inp).max() <= top


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_equals_cpu_without_host_sync(dtype):
    """On a GPU the range stage (a block per sample) gives the CPU's bits, and nothing in the call
    synchronises with the host (sync debug mode "error" raises on a synchronising call)."""
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(5, 2, 24, 20, 18, generator=g) * 40 - 3).to(dtype)
    x.view(5, -1)[1] = 2.5  # a constant sample
    x.view(5, -1)[2, 7] = math.nan
    cfg = go.GenesisConfig(value_range="per_sample", num_windows=200)
    want = go.models_genesis(x, cfg, seed=13, return_masks=True)
    xc = x.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = go.models_genesis(xc, cfg, seed=13, return_masks=True)
        cp = torch.tensor([[0.1, 0.8, 0.7, 0.2]] * 5, dtype=torch.float64, device="cuda")
        inc = torch.tensor([True, False, True, False, True], device="cuda")
        bez = go.bezier(xc, cp, inc, value_range="per_sample")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for w, o in zip(want, got, strict=True):
        assert torch.equal(w.reshape(-1).view(torch.uint8), o.cpu().reshape(-1).view(torch.uint8))
    want_bez = go.bezier(x, cp.cpu(), inc.cpu(), value_range="per_sample")
    assert torch.equal(want_bez.reshape(-1).view(torch.uint8), bez.cpu().reshape(-1).view(torch.uint8))
