"""The random stream as an argument: one torch.compile graph for every seed (the schemas take
SymInt), the tensor_seed overloads (0-dim int64 tensors on x's device, read by the kernels when
they run) equal to int seeds bit for bit on the CPU kernels and the emulated CUDA launch, opcheck
on the new signatures, and errors that name the schema's own arguments. The CUDA graph that
replays with the seed written into its tensor: tests/test_cuda_seeds.py."""

import pytest
import torch
import torch._dynamo.testing
from hypothesis import given
from hypothesis import strategies as st

import genesis_ops as go
from op_table import TABLE

SEEDED = sorted(n for n, op in TABLE.items() if op.seeded)
X = torch.rand(2, 2, 12, 10, 8)


def _equal(a, b):
    a, b = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
    return len(a) == len(b) and all(u.dtype == v.dtype and torch.equal(u, v) for u, v in zip(a, b, strict=True))


@given(
    st.sampled_from(SEEDED),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 4),
    st.sampled_from([torch.float32, torch.float16]),
)
def test_tensor_seed_equals_int_seed(name, seed, offset, dtype):
    """Every seeded schema, on the CPU kernels and (the _emulated_cuda_ hooks) the CUDA bodies,
    whose config then holds no seed: every body must read the stream the params body wrote."""
    op, x = TABLE[name], X.to(dtype)
    s = go._checks.resolve_seed(seed, None)  # the int64 the schemas take
    want = op.packet.default(*op.raw_args(x, s, offset))
    assert _equal(op.packet.tensor_seed(*op.tensor_seed_args(x, s, offset)), want)
    # the overload packet picks the tensor overload for tensors (never reading them as ints)
    assert _equal(op.packet(*op.tensor_seed_args(x, s, offset)), want)


@given(st.integers(0, 2**64 - 1), st.integers(0, 1000))
def test_python_api_takes_tensor_seeds(seed, offset):
    t = torch.tensor(go._checks.resolve_seed(seed, None))
    cfg = go.GenesisConfig(num_windows=60)
    assert _equal(
        go.models_genesis(X, cfg, seed=t, sample_offset=offset), go.models_genesis(X, cfg, seed, None, offset)
    )
    got = go.local_shuffle(X, 1.0, 40, seed=t, sample_offset=torch.tensor(offset), return_mask=True)
    assert _equal(got, go.local_shuffle(X, 1.0, 40, seed=seed, sample_offset=offset, return_mask=True))
    assert _equal(go.paint_mask(X.shape, 0.7, 0.5, seed=t), go.paint_mask(X.shape, 0.7, 0.5, seed=seed))


@pytest.mark.parametrize("name,device", [(n, d) for n in SEEDED for d in TABLE[n].devices])
def test_opcheck_tensor_seed(name, device):
    op = TABLE[name]
    x = torch.rand(2, 1, 12, 10, 8, device=device)
    torch.library.opcheck(op.packet.tensor_seed, op.tensor_seed_args(x, 5, 1))


def _count_compiles(fn, seeds, dynamic=None):
    counter = torch._dynamo.testing.CompileCounter()
    compiled = torch.compile(fn, fullgraph=True, backend=counter, dynamic=dynamic)
    for s in seeds:
        compiled(s)
    return counter.frame_count


def test_compile_one_graph_for_every_int_seed():
    """SymInt seeds: dynamo compiles once for the first seed and once, dynamic, for all others
    (its automatic dynamic ints); with dynamic=True once. An int schema argument recompiled per
    seed and hit the recompile limit at the 9th."""
    cfg = go.GenesisConfig(num_windows=40)
    assert _count_compiles(lambda s: go.models_genesis(X, cfg, seed=s), range(24)) <= 2
    assert _count_compiles(lambda s: go.flip(X, 0.5, seed=s, sample_offset=s), range(24), dynamic=True) == 1
    compiled = torch.compile(lambda s: go.models_genesis(X, cfg, seed=s, return_masks=True), fullgraph=True)
    for s in range(20, 44):
        assert _equal(compiled(s), go.models_genesis(X, cfg, seed=s, return_masks=True))


def test_compile_one_graph_for_a_tensor_seed():
    cfg = go.GenesisConfig(num_windows=40)
    seeds = [torch.tensor(s) for s in range(24)]
    assert _count_compiles(lambda t: go.models_genesis(X, cfg, seed=t), seeds) == 1
    seed = torch.zeros((), dtype=torch.int64)
    compiled = torch.compile(lambda t: go.models_genesis(X, cfg, seed=t, sample_offset=7), fullgraph=True)
    for s in range(21):
        seed.fill_(s)
        assert _equal(compiled(seed), go.models_genesis(X, cfg, seed=s, sample_offset=7))


@pytest.mark.parametrize(
    "seed,offset",
    [
        (torch.tensor(1, dtype=torch.int32), torch.tensor(0)),
        (torch.tensor([1]), torch.tensor(0)),
        (torch.tensor(1), torch.tensor(0.0)),
        (torch.tensor(1, device="meta"), torch.tensor(0)),
    ],
)
def test_bad_stream_tensors_name_the_argument(seed, offset):
    name = "sample_offset" if seed.dtype == torch.int64 and seed.dim() == 0 and seed.device.type == "cpu" else "seed"
    with pytest.raises(ValueError, match=rf"^{name} must be a 0-dim int64 tensor on x's device"):
        go.flip(X, seed=seed, sample_offset=offset)
    with pytest.raises(RuntimeError, match=rf"genesis::flip: {name} must be a 0-dim int64 tensor on x's device"):
        torch.ops.genesis.flip.tensor_seed(X, 0.5, seed, offset)
    if seed.device.type == "meta":
        return  # on meta (below) the seed would be on x's device
    # the fake kernel, with the same message
    meta = [t.to("meta") for t in (seed, offset)]
    with pytest.raises(RuntimeError, match=rf"genesis::flip: {name} must be a 0-dim int64 tensor on x's device"):
        torch.ops.genesis.flip.tensor_seed(X.to("meta"), 0.5, *meta)


def test_tensor_sample_offset_is_checked_on_the_cpu():
    with pytest.raises(RuntimeError, match="sample_offset must be >= 0"):
        go.local_shuffle(X, seed=torch.tensor(1), sample_offset=torch.tensor(2**32 - 1))


def _probability_arguments(op):
    schema = op.packet.default._schema
    return [a.name for a in schema.arguments if a.name.endswith("p") or a.name == "inpaint_rate"]


@pytest.mark.parametrize("name", sorted(n for n, op in TABLE.items() if _probability_arguments(op)))
def test_errors_name_the_schemas_own_argument(name):
    """Each probability argument out of range: the C++ error names it as the schema does."""
    op = TABLE[name]
    schema_args = [a.name for a in op.packet.default._schema.arguments]
    for arg in _probability_arguments(op):
        args = list(op.raw_args(X))
        args[schema_args.index(arg)] = 2.0
        with pytest.raises(RuntimeError, match=rf"genesis::{name}: {arg} must be a probability"):
            op.packet.default(*args)
