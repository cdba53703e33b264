"""The CUDA kernels on a real GPU (skipped without one: the emulated launch in
test_ops_vs_reference.py runs the same bodies on the CPU in every run).

On a GPU they must equal the CPU kernels bit for bit and the NumPy reference exactly; run on the
caller's current stream and on the input's device; accept any layout; agree across batch splits;
and a single op (which writes no target: the kernels' ``target == nullptr`` branch) must equal its
stage of the fused pipeline. ``bench/gpu_check.py`` runs this file, and a part of it under
compute-sanitizer."""

import numpy as np
import pytest
import torch

import genesis_ops as go
import genesis_ops.reference as ref

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

SHAPES = [(4, 1, 64, 64, 32), (3, 2, 17, 9, 23), (2, 3, 224, 224), (2, 1, 1, 5, 3), (0, 1, 8, 8, 8)]
SMALL_SHAPES = [(3, 2, 17, 9, 23), (2, 3, 24, 20), (2, 1, 1, 5, 3)]  # the NumPy reference is slow
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
DEVICES = [
    "cuda:0",
    pytest.param(
        "cuda:1",
        marks=pytest.mark.skipif(
            not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs a second GPU"
        ),
    ),
]


def _id(v):
    """Test ids without spaces: (3, 2, 17) -> 3x2x17, torch.float32 -> float32."""
    return "x".join(map(str, v)) if isinstance(v, tuple) else str(v).replace("torch.", "")


def _ops(windows=10000):
    """Every op as (module, x, seed, sample_offset) -> tuple of outputs. genesis_ops and its NumPy
    reference share names and arguments, so one table drives both."""
    cfg = go.GenesisConfig(shuffle_p=0.7, num_windows=windows)
    return {
        "models_genesis": lambda m, x, s, o=0: tuple(m.models_genesis(x, cfg, seed=s, sample_offset=o)),
        "flip": lambda m, x, s, o=0: (m.flip(x, p=0.7, seed=s, sample_offset=o),),
        "local_shuffle": lambda m, x, s, o=0: (
            m.local_shuffle(x, p=1.0, num_windows=windows, seed=s, sample_offset=o),
        ),
        "nonlinear": lambda m, x, s, o=0: (m.nonlinear(x, p=1.0, value_range=(-0.05, 1.1), seed=s, sample_offset=o),),
        "inpaint": lambda m, x, s, o=0: (m.inpaint(x, p=0.8, seed=s, sample_offset=o),),
        "outpaint": lambda m, x, s, o=0: (m.outpaint(x, p=0.8, seed=s, sample_offset=o),),
    }


OPS = _ops()
SMALL_OPS = _ops(windows=300)


def _x(shape, dtype=torch.float32, seed=0):
    """Values a little outside [0, 1] (exercises the clamp), made on the CPU so every device gets
    the same numbers."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 1.2 - 0.1).to(dtype)


def assert_bits_equal(actual, expected, what=""):
    """Same dtype, shape and bits (stricter than torch.equal, which takes -0.0 == 0.0)."""
    actual, expected = actual.cpu(), expected.cpu()
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, what
    a, e = actual.contiguous().reshape(-1), expected.contiguous().reshape(-1)
    assert torch.equal(a.view(torch.uint8), e.view(torch.uint8)), (
        f"{what}: {int((a != e).sum())} of {a.numel()} values differ"
    )


def assert_all_equal(actual, expected, what=""):
    assert len(actual) == len(expected), what
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert_bits_equal(a, e, f"{what} output {i}")


def _reference(name, x, seed, offset=0):
    """The NumPy reference's outputs as tensors of x's dtype (for bfloat16 it computes in
    float32, and the single rounding to bfloat16 is the kernels' too)."""
    xn = x.float().numpy() if x.dtype == torch.bfloat16 else x.numpy()
    outs = SMALL_OPS[name](ref, xn, seed, offset)
    return tuple(torch.from_numpy(np.ascontiguousarray(o)).to(x.dtype) for o in outs)


def test_cuda_kernels_were_built():
    assert go.has_cuda_kernels(), "torch sees a GPU but genesis_ops was built without CUDA kernels"


@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("seed", [0, 2**64 - 1])
def test_cuda_equals_cpu(shape, dtype, seed):
    """Every op at the paper's 10,000 windows, the fused pipeline and the single ops."""
    x = _x(shape, dtype, seed=len(shape))
    xc = x.cuda()
    for name, fn in OPS.items():
        assert_all_equal(fn(go, xc, seed), fn(go, x, seed), name)
    assert torch.equal(xc.cpu(), x), "the input was written"


@pytest.mark.parametrize("shape", SMALL_SHAPES, ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("name", list(SMALL_OPS))
def test_cuda_equals_reference(shape, dtype, name):
    seed, offset = 2**63 + 12345, 7
    x = _x(shape, dtype, seed=3)
    assert_all_equal(SMALL_OPS[name](go, x.cuda(), seed, offset), _reference(name, x, seed, offset), name)


def _only(**stages):
    """A pipeline configuration with only the given stages on."""
    off = dict(flip_p=0.0, shuffle_p=0.0, nonlinear_p=0.0, paint_p=0.0, num_windows=300)
    off.update(stages)
    return go.GenesisConfig(**off)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=_id)
def test_single_op_is_its_pipeline_stage(dtype):
    """Single ops pass no target to the kernels (the target == nullptr branch, run only on a
    GPU); each must equal the fused pipeline with only its own stage on, which writes both."""
    x = _x((5, 2, 20, 18, 12), dtype, seed=5).cuda()
    s = 99
    pairs = [
        (go.flip(x, p=0.7, seed=s), go.models_genesis(x, _only(flip_p=0.7), seed=s)[1]),
        (go.local_shuffle(x, p=0.8, num_windows=300, seed=s), go.models_genesis(x, _only(shuffle_p=0.8), seed=s)[0]),
        (go.nonlinear(x, p=0.8, seed=s), go.models_genesis(x, _only(nonlinear_p=0.8), seed=s)[0]),
        (go.inpaint(x, p=1.0, seed=s), go.models_genesis(x, _only(paint_p=1.0, inpaint_rate=1.0), seed=s)[0]),
        (go.outpaint(x, p=1.0, seed=s), go.models_genesis(x, _only(paint_p=1.0, inpaint_rate=0.0), seed=s)[0]),
    ]
    for i, (single, stage) in enumerate(pairs):
        assert single.device == x.device
        assert_bits_equal(single, stage, f"op {i}")
    # and each changed something (a wrong branch that copies x would otherwise pass for flip)
    assert all(not torch.equal(single, x) for single, _ in pairs)


def _bezier_args(batch, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    cp = torch.rand(batch, 4, generator=g, dtype=torch.float64)
    inc = torch.rand(batch, generator=g) < 0.5
    return cp.to(device), inc.to(device)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=_id)
@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-0.25, 2.0)], ids=_id)
def test_bezier_equals_cpu_and_reference(dtype, value_range):
    x = _x((4, 2, 19, 11, 7), dtype, seed=8)
    cp, inc = _bezier_args(4, "cpu", seed=1)
    got = go.bezier(x.cuda(), cp.cuda(), inc.cuda(), value_range=value_range)
    assert got.dtype == dtype and got.is_cuda
    assert_bits_equal(got, go.bezier(x, cp, inc, value_range=value_range), "cuda vs cpu")
    xn = x.float().numpy() if dtype == torch.bfloat16 else x.numpy()
    want = torch.from_numpy(ref.bezier(xn, cp.tolist(), inc.tolist(), value_range)).to(dtype)
    assert_bits_equal(got, want, "cuda vs reference")


def _layouts(x):
    """The same values in other memory layouts (none of them contiguous)."""
    big = torch.zeros((x.shape[0] + 1, x.shape[1]) + tuple(d + 3 for d in x.shape[2:]), dtype=x.dtype, device=x.device)
    window = (slice(1, None), slice(None)) + tuple(slice(2, 2 + d) for d in x.shape[2:])
    big[window] = x
    out = {
        "permuted": x.permute(0, 1, 4, 3, 2).contiguous().permute(0, 1, 4, 3, 2),
        "strided with offset": big[window],
        "every other": torch.stack([x, torch.zeros_like(x)], dim=-1)[..., 0],
        "channels_last_3d": x.to(memory_format=torch.channels_last_3d),
    }
    for k, v in out.items():
        assert torch.equal(v, x) and not v.is_contiguous(), k
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=_id)
def test_any_layout(dtype):
    x = _x((3, 2, 16, 12, 10), dtype, seed=9)  # C=2: channels_last_3d is then not contiguous
    want = {name: fn(go, x, 21) for name, fn in SMALL_OPS.items()}
    for layout, xv in _layouts(x.cuda()).items():
        before = xv.clone()
        for name, fn in SMALL_OPS.items():
            assert_all_equal(fn(go, xv, 21), want[name], f"{name}, {layout}")
        cp, inc = _bezier_args(3, xv.device)
        # the curve's parameters as strided views too
        cp_view, inc_view = cp.t().contiguous().t(), torch.stack([inc, ~inc], dim=1)[:, 0]
        assert not cp_view.is_contiguous() and not inc_view.is_contiguous()
        assert_bits_equal(go.bezier(xv, cp_view, inc_view), go.bezier(x, cp.cpu(), inc.cpu()), f"bezier, {layout}")
        assert torch.equal(xv, before), f"{layout}: the input was written"


def test_independent_of_batch_split():
    """op(x[a:b], seed, sample_offset=a) == op(x, seed)[a:b]: per-sample streams, and views
    that start inside the allocation."""
    x = _x((7, 1, 16, 16, 8), seed=10).cuda()
    cp, inc = _bezier_args(7, "cuda")
    for name, fn in SMALL_OPS.items():
        full = fn(go, x, 4)
        for a, b in [(0, 3), (3, 7), (5, 6)]:
            assert_all_equal(fn(go, x[a:b], 4, a), [t[a:b] for t in full], f"{name} [{a}:{b}]")
    full = go.bezier(x, cp, inc)
    for a, b in [(0, 3), (3, 7), (5, 6)]:
        assert_bits_equal(go.bezier(x[a:b], cp[a:b], inc[a:b]), full[a:b], f"bezier [{a}:{b}]")


def _op_on(name, x, cp, inc):
    if name == "bezier":
        return (go.bezier(x, cp, inc),)
    return SMALL_OPS[name](go, x, 17)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(SMALL_OPS) + ["bezier"])
def test_runs_on_the_current_stream(device, name):
    """Launch on a side stream that is busy (torch.cuda._sleep) and only then writes the input.
    On the current stream the op reads the written input; a launch on any other stream runs at
    once and reads the zeros there before (an `x.cpu()` would synchronise and hide that)."""
    x_cpu = _x((3, 2, 24, 20, 12), seed=11)
    cp_cpu, inc_cpu = _bezier_args(3, "cpu", seed=2)
    want = _op_on(name, x_cpu, cp_cpu, inc_cpu)
    x = torch.zeros(x_cpu.shape, device=device)
    cp = torch.zeros(3, 4, dtype=torch.float64, device=device)
    inc = torch.zeros(3, dtype=torch.bool, device=device)
    src, cp_src, inc_src = x_cpu.to(device), cp_cpu.to(device), inc_cpu.to(device)
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))  # the zeros and sources are ready
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)  # about 50 ms at 2 GHz: far longer than any launch
        x.copy_(src)
        cp.copy_(cp_src)
        inc.copy_(inc_src)
        got = _op_on(name, x, cp, inc)
    torch.cuda.synchronize(device)
    for t in got:
        assert t.device == x.device
    assert_all_equal(got, want, name)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs a second GPU")
def test_runs_on_the_inputs_device():
    """x on cuda:1 while cuda:0 is current: the kernels run on cuda:1 (the device guard), the
    outputs live there, and the current device is left alone."""
    x = _x((3, 1, 20, 16, 12), seed=12)
    cp, inc = _bezier_args(3, "cpu")
    with torch.cuda.device(0):
        x1 = x.to("cuda:1")
        for name, fn in OPS.items():
            got = fn(go, x1, 5)
            assert all(t.device == x1.device for t in got), name
            assert_all_equal(got, fn(go, x, 5), name)
        got = go.bezier(x1, cp.to("cuda:1"), inc.to("cuda:1"))
        assert got.device == x1.device
        assert_bits_equal(got, go.bezier(x, cp, inc), "bezier")
        assert torch.cuda.current_device() == 0


def test_cuda_device_mismatch_is_an_error():
    x = torch.rand(2, 1, 8, 8, 8, device="cuda")
    with pytest.raises(ValueError, match="control_points is on cpu"):
        go.bezier(x, torch.rand(2, 4, dtype=torch.float64), [True, True])
    with pytest.raises(RuntimeError, match="x's device"):
        torch.ops.genesis.bezier(x, torch.rand(2, 4, dtype=torch.float64), torch.ones(2, dtype=torch.bool), 0.0, 1.0)
