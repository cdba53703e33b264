"""Corruption masks (docs/SPEC.md, section 4.7): the *_masked ops and the mask-only paint_mask and
shuffle_mask, on the C++ CPU kernels and on the CUDA kernels' bodies run by the emulated launch,
against the NumPy reference, bit for bit. Also: the masked ops' images equal the plain ops', the
mask-only ops equal the masks of the ops they mirror under the same seed, the mask is exact where a
diff is not, bad arguments, opcheck, meta tensors and torch.compile(fullgraph=True)."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import genesis_ops as go
from genesis_ops import reference as ref
import reference_checks
from op_table import MASK_OPS, TABLE
from reference_checks import RANGES, assert_bits, probabilities, raw_fused_args, to_numpy

ops = torch.ops.genesis
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and go.has_cuda_kernels() else [])


def assert_mask(mask, x, dtype):
    assert mask.dtype == dtype and mask.device == x.device and mask.is_contiguous()
    assert mask.shape == (x.shape[0], 1) + tuple(x.shape[2:])


def volumes(max_side=18):
    return reference_checks.volumes(max_side=max_side, max_channels=2)


value_ranges = st.sampled_from(RANGES)
configs = reference_checks.configs(150, RANGES)
_np = to_numpy
assert_same = assert_bits
_raw_fused_args = raw_fused_args


# ---- the fused pipeline ------------------------------------------------------------------------


@given(volumes(), configs, st.integers(0, 1000))
def test_models_genesis_masks_match_reference(v, cfg, offset):
    x, seed = v
    inp, target, mask = go.models_genesis(x, cfg, seed=seed, sample_offset=offset, return_masks=True)
    rin, rtarget, rmask = ref.models_genesis(_np(x), cfg, seed=seed, sample_offset=offset, return_masks=True)
    assert_mask(mask, x, torch.uint8)
    assert_same(mask, rmask)
    assert_same(inp, rin, x)
    assert_same(target, rtarget, x)
    # the images are the plain op's, bit for bit
    pin, ptarget = go.models_genesis(x, cfg, seed=seed, sample_offset=offset)
    assert torch.equal(pin.view(-1).view(torch.uint8), inp.view(-1).view(torch.uint8))
    assert torch.equal(ptarget, target)


@given(volumes(max_side=16), configs, st.integers(0, 1000))
def test_emulated_cuda_masks_match_reference(v, cfg, offset):
    """The voxel kernel's body writes the mask from the owner map (any entry but -1: covered) and
    its painting test; the CUDA launch runs it over its grids."""
    x, seed = v
    s = go._checks.resolve_seed(seed, None)
    inp, target, mask = ops._emulated_cuda_models_genesis_masked(x, *_raw_fused_args(cfg), s, offset)
    rin, rtarget, rmask = ref.models_genesis(_np(x), cfg, seed=seed, sample_offset=offset, return_masks=True)
    assert_same(mask, rmask)
    assert_same(inp, rin, x)
    assert_same(target, rtarget, x)


def test_module_returns_the_functional_masks():
    x = torch.rand(2, 1, 12, 12, 8)
    mg = go.ModelsGenesis(go.GenesisConfig(num_windows=40, shuffle_p=1.0, paint_p=1.0))
    got = mg(x, seed=3, return_masks=True)
    want = go.models_genesis(x, mg.config, seed=3, return_masks=True)
    assert len(got) == 3 and all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert len(mg(x, seed=3)) == 2


def test_masks_on_both_cpu_schedules_and_any_thread_count():
    """The CPU runs whole samples per task when B >= 4 x threads (the claim bitmap of a sample
    lives in its thread's scratch), else samples then rows (one bitmap per sample); both equal
    the reference, for every thread count."""
    x = torch.rand(9, 1, 12, 10, 70)  # rows of 70 voxels: bitmap rows of 2 words
    cfg = go.GenesisConfig(num_windows=120, shuffle_p=0.8, paint_p=0.9, inpaint_rate=0.5)
    want = ref.models_genesis(x.numpy(), cfg, seed=4, return_masks=True)[2]
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            for batch in (x, x[:1], x[:2]):
                mask = go.models_genesis(batch, cfg, seed=4, return_masks=True)[2]
                assert_same(mask, want[: batch.shape[0]])
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("shape", [(1, 1, 4, 6, 130), (2, 1, 3, 5, 65), (1, 1, 2, 700), (1, 1, 3, 1300)])
def test_shuffle_bit_on_long_rows(shape):
    """Rows of more than 64 voxels: a window's row segment may straddle two bitmap words or span
    several (W >= 650)."""
    x = torch.rand(shape)
    for seed in (0, 5):
        out, mask = go.local_shuffle(x, p=1.0, num_windows=300, seed=seed, return_mask=True)
        rout, rmask = ref.local_shuffle(x.numpy(), p=1.0, num_windows=300, seed=seed, return_mask=True)
        assert_same(mask, rmask)
        assert_same(out, rout, x)
        assert torch.equal(go.shuffle_mask(x, p=1.0, num_windows=300, seed=seed), mask != 0)


def _window_union(shape, p, num_windows, seed, offset=0):
    """The union of each sample's windows, drawn here from the reference's window draws (not from
    its mask code), where the sample's shuffle gate passes."""
    dims = shape[2:]
    out = np.zeros((shape[0], 1) + tuple(dims), dtype=bool)
    for b in range(shape[0]):
        params = ref.draw_sample_params(
            seed, offset + b, dims, ref._Probabilities(shuffle_p=p, num_windows=num_windows)
        )
        if not params.shuffle:
            continue
        starts, sizes = ref.shuffle_windows(seed, offset + b, dims, num_windows)
        for k in range(num_windows):
            out[(b, 0) + tuple(slice(s, s + n) for s, n in zip(starts[k], sizes[k], strict=True))] = True
    return out


@given(volumes(max_side=20), probabilities, st.integers(0, 200), st.integers(0, 1000))
def test_shuffle_bit_is_the_union_of_windows(v, p, num_windows, offset):
    x, seed = v
    want = _window_union(x.shape, p, num_windows, seed, offset)
    _, mask = go.local_shuffle(x, p=p, num_windows=num_windows, seed=seed, sample_offset=offset, return_mask=True)
    assert_same(mask, want.astype(np.uint8))  # bit 1 exactly, no bit 2
    s = go._checks.resolve_seed(seed, None)
    for got in (
        go.shuffle_mask(x, p, num_windows, seed=seed, sample_offset=offset),
        go.shuffle_mask(tuple(x.shape), p, num_windows, seed=seed, sample_offset=offset),
        ops._emulated_cuda_shuffle_mask(x, p, num_windows, s, offset),
    ):
        assert_mask(got, x, torch.bool)
        assert_same(got, want)
    assert_same(
        go.shuffle_mask(x, p, num_windows, seed=seed, sample_offset=offset),
        ref.shuffle_mask(x.shape, p, num_windows, seed=seed, sample_offset=offset),
    )


# ---- the single ops ----------------------------------------------------------------------------

SINGLE = {
    "local_shuffle": lambda m, x, p, s, o, **k: m.local_shuffle(x, p=p, num_windows=120, seed=s, sample_offset=o, **k),
    "inpaint": lambda m, x, p, s, o, **k: m.inpaint(x, p=p, value_range=(-1.0, 2.0), seed=s, sample_offset=o, **k),
    "outpaint": lambda m, x, p, s, o, **k: m.outpaint(x, p=p, value_range=(-1.0, 2.0), seed=s, sample_offset=o, **k),
}


@given(volumes(), st.sampled_from(sorted(SINGLE)), probabilities, st.integers(0, 1000))
def test_single_op_masks_match_reference(v, name, p, offset):
    x, seed = v
    out, mask = SINGLE[name](go, x, p, seed, offset, return_mask=True)
    rout, rmask = SINGLE[name](ref, _np(x), p, seed, offset, return_mask=True)
    assert_mask(mask, x, torch.uint8)
    assert_same(mask, rmask)
    assert_same(out, rout, x)
    plain = SINGLE[name](go, x, p, seed, offset)
    assert torch.equal(plain.view(-1).view(torch.uint8), out.view(-1).view(torch.uint8))
    bit = 1 if name == "local_shuffle" else 2
    assert not (mask & ~np.uint8(bit)).any()  # a single op sets only its own bit


# ---- paint_mask --------------------------------------------------------------------------------


@given(
    volumes(max_side=20),
    probabilities,
    st.sampled_from([None, 0.0, 0.2, 1.0]),
    st.sampled_from(["models_genesis", "inpaint", "outpaint"]),
    st.integers(0, 1000),
)
def test_paint_mask_is_the_painted_region_of_the_op_it_names(v, p, rate, op, offset):
    """paint_mask(x, p, inpaint_rate, seed, op=...) is, bit for bit, the painted region of the call
    its docstring names: models_genesis(x, cfg with paint_p=p, inpaint_rate) or inpaint/outpaint(x, p)."""
    x, seed = v
    if op != "models_genesis":
        rate = None
    got = go.paint_mask(x, p, rate, seed=seed, sample_offset=offset, op=op)
    assert_mask(got, x, torch.bool)
    assert_same(got, ref.paint_mask(x.shape, p, rate, seed=seed, sample_offset=offset, op=op))
    assert torch.equal(go.paint_mask(tuple(x.shape), p, rate, seed=seed, sample_offset=offset, op=op), got)
    if op == "models_genesis":
        cfg = go.GenesisConfig(
            num_windows=30, shuffle_p=0.5, flip_p=0.5, paint_p=p, inpaint_rate=1.0 if rate is None else rate
        )
        mask = go.models_genesis(x, cfg, seed=seed, sample_offset=offset, return_masks=True)[2]
    else:
        mask = getattr(go, op)(x, p=p, seed=seed, sample_offset=offset, return_mask=True)[1]
    assert torch.equal(got, (mask & 2) != 0)
    gates = go.config.paint_gates(p, rate, op)
    emulated = ops._emulated_cuda_paint_mask(x, *gates, go._checks.resolve_seed(seed, None), offset)
    assert torch.equal(emulated, got)


def test_paint_mask_gates_are_the_ops_words():
    """The fused pipeline draws the painting gate from paint word 0, inpaint from its own word 0:
    at p < 1 the two name different samples, which is why paint_mask takes op."""
    x = torch.rand(64, 1, 8, 8, 8)
    fused = go.paint_mask(x, 0.5, 1.0, seed=3).flatten(1).any(1)
    own = go.paint_mask(x, 0.5, seed=3, op="inpaint").flatten(1).any(1)
    assert not torch.equal(fused, own)
    assert torch.equal(own, go.inpaint(x, p=0.5, seed=3, return_mask=True)[1].flatten(1).any(1))
    assert torch.equal(
        fused,
        go.models_genesis(x, go.GenesisConfig(paint_p=0.5, inpaint_rate=1.0, shuffle_p=0.0), seed=3, return_masks=True)[
            2
        ]
        .flatten(1)
        .any(1),
    )
    # p = 1: every gate passes and the three calls agree
    assert torch.equal(go.paint_mask(x, seed=3), go.paint_mask(x, seed=3, op="inpaint"))
    assert torch.equal(go.paint_mask(x, 1.0, 0.0, seed=3), go.paint_mask(x, seed=3, op="outpaint"))


def test_filling_boxes_with_a_constant():
    """The README's example: paint_mask gives the in-painting boxes; masked_fill fills them."""
    x = torch.rand(4, 2, 16, 16, 16)
    m = go.paint_mask(x, seed=7)
    filled = x.masked_fill(m, 0.0)
    noisy, mask = go.inpaint(x, seed=7, return_mask=True)
    assert torch.equal(m, mask != 0) and m.any()
    assert torch.equal(filled == 0, m.expand_as(x) | (x == 0))
    assert torch.equal(torch.where(m, noisy, filled), noisy)  # the boxes are all that inpaint replaces


# ---- the mask against a diff ---------------------------------------------------------------------


def test_painted_bit_equals_changed_voxels_except_where_noise_equals_the_original():
    """Painting only, random float32 input: outside the painted region input == target bit for bit,
    inside input != target except where the fill noise equals the original. torch.rand's float32
    values and the noise (uniform01f) both lie on the grid k / 2^24, so such a tie has probability
    2^-24 per painted voxel: here 1.09 M painted voxels, 0.065 ties expected; measured 0.
    Allowed: at most 3 (Poisson(0.065) exceeds 3 with probability 7e-7)."""
    x = torch.rand(24, 1, 64, 64, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x * 2**24, (x * 2**24).round())  # on the noise's grid: ties are 2^-24 likely
    cfg = go.GenesisConfig(flip_p=0.0, shuffle_p=0.0, nonlinear_p=0.0, paint_p=1.0, inpaint_rate=0.5)
    inp, target, mask = go.models_genesis(x, cfg, seed=123, return_masks=True)
    painted = ((mask & 2) != 0).expand_as(x)
    changed = inp != target
    assert torch.equal(changed & ~painted, torch.zeros_like(changed))  # nothing changes outside
    ties = int((painted & ~changed).sum())
    n = int(painted.sum())
    assert n > 1_000_000 and ties <= 3, (n, ties)
    assert torch.equal(inp[~painted], x[~painted])


def test_mask_is_exact_where_a_diff_is_not():
    """A voxel painted with the value it had, or shuffled onto itself, shows no change in a diff;
    the mask still says what the ops did. Repainting the painted output with the same seed writes
    the same noise over it: the diff is empty there, the mask is not."""
    x = torch.rand(3, 2, 20, 18, 16)
    once, mask = go.inpaint(x, seed=9, return_mask=True)
    twice, mask2 = go.inpaint(once, seed=9, return_mask=True)
    assert torch.equal(twice, once) and torch.equal(mask2, mask) and mask.any()
    # a shuffle window that happens to fix voxels: covered, unchanged
    out, smask = go.local_shuffle(x, p=1.0, num_windows=200, seed=2, return_mask=True)
    fixed = (smask != 0).expand_as(x) & (out == x)
    assert fixed.any()


def test_masks_without_channels_and_empty_batches():
    """A batch without channels has no image but still has voxels: its mask is the masks' rule
    (paint_mask, shuffle_mask of the same call). An empty batch gives empty masks."""
    cfg = go.GenesisConfig(num_windows=40, shuffle_p=1.0, paint_p=1.0, inpaint_rate=0.5)
    x = torch.rand(3, 0, 10, 9, 8)
    inp, target, mask = go.models_genesis(x, cfg, seed=1, return_masks=True)
    assert inp.shape == x.shape and mask.shape == (3, 1, 10, 9, 8)
    want = go.shuffle_mask(x, 1.0, 40, seed=1).to(torch.uint8) | 2 * go.paint_mask(x, 1.0, 0.5, seed=1).to(torch.uint8)
    assert torch.equal(mask, want)
    assert torch.equal(ops._emulated_cuda_models_genesis_masked(x, *_raw_fused_args(cfg), 1, 0)[2], want)
    for shape in ((0, 1, 8, 8), (2, 1, 0, 8, 8)):
        e = torch.rand(shape)
        assert go.models_genesis(e, cfg, seed=1, return_masks=True)[2].shape == (shape[0], 1) + shape[2:]
        assert go.paint_mask(shape, seed=1).shape == (shape[0], 1) + shape[2:]
        assert go.shuffle_mask(e, seed=1).numel() == 0


def test_mask_only_ops_read_only_the_shape():
    """Any dtype, any strides; a shape makes the mask on `device` (meta: the fake kernel)."""
    x = torch.rand(2, 3, 12, 11, 10)
    want = go.paint_mask(x, seed=5)
    assert torch.equal(go.paint_mask(x.to(torch.int32), seed=5), want)
    assert torch.equal(go.paint_mask(x.transpose(2, 4), seed=5), go.paint_mask((2, 3, 10, 11, 12), seed=5))
    assert torch.equal(go.paint_mask([2, 1, 12, 11, 10], seed=5, device="cpu"), want)
    meta = go.paint_mask((2, 1, 12, 11, 10), seed=5, device="meta")
    assert meta.device.type == "meta" and meta.shape == want.shape and meta.dtype == torch.bool
    assert go.shuffle_mask((2, 1, 12, 11, 10), seed=5, device="meta").device.type == "meta"


# ---- bad arguments -------------------------------------------------------------------------------

X = torch.rand(2, 1, 8, 8, 8)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: go.models_genesis(X, return_masks=1), TypeError, "return_masks must be a bool"),
        (lambda: go.inpaint(X, return_mask="yes"), TypeError, "return_mask must be a bool"),
        (lambda: go.local_shuffle(X, return_mask=None), TypeError, "return_mask must be a bool"),
        (lambda: go.paint_mask(X, p=1.5), ValueError, "p must be"),
        (lambda: go.paint_mask(X, inpaint_rate=-0.1), ValueError, "inpaint_rate must be"),
        (lambda: go.paint_mask(X, inpaint_rate=True), TypeError, "inpaint_rate must be"),
        (lambda: go.paint_mask(X, op="flip"), ValueError, "op must be one of"),
        (lambda: go.paint_mask(X, inpaint_rate=1.0, op="inpaint"), ValueError, "inpaint_rate must be None"),
        (lambda: go.paint_mask(X, inpaint_rate=0.0, op="outpaint"), ValueError, "inpaint_rate must be None"),
        (lambda: go.paint_mask((2, 1, 8)), ValueError, "x_or_shape must be a shape"),
        (lambda: go.paint_mask((2, 1, -8, 8)), ValueError, "x_or_shape must be a shape"),
        (lambda: go.paint_mask((2, 1, 8.0, 8)), ValueError, "x_or_shape must be a shape"),
        (lambda: go.paint_mask((2, 1, 2048, 2048, 2048)), ValueError, "x_or_shape has"),
        (lambda: go.paint_mask(3), TypeError, "x_or_shape must be a torch.Tensor or a sequence"),
        (lambda: go.paint_mask(torch.rand(8, 8, 8)), ValueError, "x_or_shape must have shape"),
        (lambda: go.paint_mask(X, device="meta"), ValueError, "device must be None or x's device"),
        (lambda: go.paint_mask((2, 1, 8, 8), device=3.5), TypeError, "device must be"),
        (lambda: go.paint_mask(X, seed=-1), ValueError, "seed"),
        (lambda: go.paint_mask(X, sample_offset=2**32 - 1), ValueError, "sample_offset"),
        (lambda: go.shuffle_mask(X, num_windows=-1), ValueError, "num_windows"),
        (lambda: go.shuffle_mask(X, p="0.5"), TypeError, "p must be"),
        (lambda: go.shuffle_mask([[1.0]]), ValueError, "x_or_shape must be a shape"),
    ],
)
def test_bad_arguments_name_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: ops.paint_mask(X, 1.0, 1.0, 2.0, 1.0, 0, 0), "inpaint_p must be"),
        (lambda: ops.paint_mask(X, 1.0, 1.0, 1.0, -1.0, 0, 0), "outpaint_p must be"),
        (lambda: ops.paint_mask(X, 1.5, 1.0, 1.0, 1.0, 0, 0), "paint_p must be"),
        (lambda: ops.paint_mask(X, 1.0, float("nan"), 1.0, 1.0, 0, 0), "inpaint_rate must be"),
        (lambda: ops.paint_mask(torch.rand(8, 8), 1.0, 1.0, 1.0, 1.0, 0, 0), "x must have shape"),
        (lambda: ops.paint_mask(X, 1.0, 1.0, 1.0, 1.0, 0, -1), "sample_offset"),
        (lambda: ops.shuffle_mask(X, 0.5, -1, 0, 0), "num_windows"),
        (lambda: ops.shuffle_mask(X, 2.0, 10, 0, 0), "genesis::shuffle_mask: p must be"),
        (lambda: ops.models_genesis_masked(X.int(), 0.4, 0.5, 10, 0.9, 0.9, 0.2, 0.0, 1.0, 0, 0), "x must be float16"),
        (lambda: ops.models_genesis_masked(X, 0.4, 0.5, 10, 0.9, 0.9, 0.2, 1.0, 0.0, 0, 0), "value range"),
        (lambda: ops.local_shuffle_masked(X, 0.5, 10**9, 0, 0), "num_windows"),
        (lambda: ops.inpaint_masked(X, -0.5, 0.0, 1.0, 0, 0), "genesis::inpaint_masked: p must be"),
        (lambda: ops.outpaint_masked(torch.rand(2, 8, 8), 0.5, 0.0, 1.0, 0, 0), "x must have shape"),
        (lambda: ops._emulated_cuda_paint_mask(X, 1.0, 1.0, 1.0, 7.0, 0, 0), "outpaint_p must be"),
    ],
)
def test_raw_ops_check_arguments(call, match):
    with pytest.raises(RuntimeError, match=match):
        call()


# ---- torch integration ---------------------------------------------------------------------------

NEW_OPS = {name: TABLE[name] for name in MASK_OPS}  # the masked and mask-only schemas, test hooks included


@pytest.mark.parametrize("name,device", [(n, d) for n in sorted(NEW_OPS) for d in NEW_OPS[n].devices])
@pytest.mark.parametrize("shape", [(2, 1, 12, 10, 8), (3, 2, 17, 9)])
def test_opcheck(name, device, shape):
    x = torch.rand(shape, device=device)
    torch.library.opcheck(NEW_OPS[name].packet.default, NEW_OPS[name].raw_args(x))


@pytest.mark.parametrize("name", sorted(NEW_OPS))
def test_meta_tensors(name):
    x = torch.empty(2, 3, 8, 7, 6, device="meta")
    out = getattr(ops, name)(*NEW_OPS[name].raw_args(x))
    outs = out if isinstance(out, tuple) else (out,)
    mask = outs[-1]
    assert mask.device.type == "meta" and mask.shape == (2, 1, 8, 7, 6)
    assert mask.dtype == (torch.bool if name.endswith("_mask") else torch.uint8)
    for o in outs[:-1]:
        assert o.shape == x.shape and o.dtype == x.dtype


@pytest.mark.parametrize("name", sorted(NEW_OPS))
@pytest.mark.parametrize("mode", ["meta", "fake"])
def test_fake_kernels_refuse_bad_tensors(name, mode):
    """Rank (every new op) and dtype (the image ops; the mask-only ops take any dtype), with the
    C++ kernels' messages."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    op = getattr(ops, name)
    cases = [(torch.rand(2, 8, 8), "x must have shape")]
    if not name.endswith("_mask"):
        cases.append((torch.zeros(2, 1, 8, 8, dtype=torch.int32), "x must be float16"))
    for bad, match in cases:
        if mode == "meta":
            with pytest.raises(RuntimeError, match=match):
                op(*NEW_OPS[name].raw_args(bad.to("meta")))
        else:
            with FakeTensorMode() as fm:
                fake = fm.from_tensor(bad)
                with pytest.raises(RuntimeError, match=match):
                    op(*NEW_OPS[name].raw_args(fake))
        with pytest.raises(RuntimeError, match=match):
            op(*NEW_OPS[name].raw_args(bad))


def test_compile_fullgraph_masked_paths():
    cfg = go.GenesisConfig(num_windows=60, shuffle_p=0.8, paint_p=1.0)

    def f(x):
        inp, tgt, mask = go.models_genesis(x * 1.0, cfg, seed=7, return_masks=True)
        w = 1.0 + 4.0 * ((mask & 2) != 0).to(x.dtype)
        loss = (w * (inp - tgt) ** 2).mean()
        s, sm = go.local_shuffle(x, p=1.0, num_windows=50, seed=2, return_mask=True)
        i, im = go.inpaint(x, seed=4, return_mask=True)
        o, om = go.outpaint(x, seed=5, return_mask=True)
        pm = go.paint_mask(x, seed=6) | go.paint_mask(x.shape, 0.5, seed=6, op="outpaint")
        shm = go.shuffle_mask(x, 1.0, 30, seed=8)
        return loss, s + i + o, sm + im + om, pm, shm

    x = torch.rand(2, 1, 16, 16, 8)
    got, want = torch.compile(f, fullgraph=True)(x), f(x)
    torch.testing.assert_close(got[0], want[0])  # the loss: inductor may sum in another order
    for a, b in zip(got[1:], want[1:], strict=True):  # the ops' outputs: exact
        assert torch.equal(a, b)
