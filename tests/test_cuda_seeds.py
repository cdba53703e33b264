"""Tensor seeds on a GPU: the kernels read the seed and sample_offset tensors when they run, so a
captured CUDA graph replays with whatever was last written into them; int and tensor seeds agree
on the device as on the CPU (tests/test_seeds.py). Skipped without a GPU."""

import pytest
import torch

import genesis_ops as go
from op_table import TABLE

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and go.has_cuda_kernels()), reason="needs a GPU and CUDA kernels"
)
SEEDED = sorted(n for n, op in TABLE.items() if op.seeded and not op.emulated)


def _tuple(v):
    return v if isinstance(v, tuple) else (v,)


@pytest.mark.parametrize("name", SEEDED)
def test_cuda_tensor_seed_equals_int_seed(name):
    op = TABLE[name]
    x = torch.rand(3, 2, 17, 9, 23, device="cuda")
    for seed, offset in ((0, 0), (-(2**63), 5), (2**62 + 7, 2**32 - 3)):
        want = _tuple(op.packet.default(*op.raw_args(x, seed, offset)))
        got = _tuple(op.packet.tensor_seed(*op.tensor_seed_args(x, seed, offset)))
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
        cpu = _tuple(op.packet.default(*op.raw_args(x.cpu(), seed, offset)))
        assert all(torch.equal(a.cpu(), b) for a, b in zip(got, cpu, strict=True))


def test_cuda_graph_replays_with_the_new_seed():
    """Capture once (after one warm-up call, which checks the device outside the capture), then
    write new seeds into the tensor and replay: each replay equals the eager call with that seed."""
    x = torch.rand(4, 1, 32, 32, 16, device="cuda")
    cfg = go.GenesisConfig(num_windows=200)
    seed = torch.zeros((), dtype=torch.int64, device="cuda")
    offset = torch.zeros((), dtype=torch.int64, device="cuda")
    go.models_genesis(x, cfg, seed=seed, sample_offset=offset)  # warm-up
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        inp, tgt = go.models_genesis(x, cfg, seed=seed, sample_offset=offset)
    outs = set()
    for s in (11, 12, 2**40 + 3):
        seed.fill_(s)
        offset.fill_(s % 7)
        graph.replay()
        want = go.models_genesis(x, cfg, seed=s, sample_offset=s % 7)
        assert torch.equal(inp, want[0]) and torch.equal(tgt, want[1])
        outs.add(inp.sum().item())
    assert len(outs) == 3  # new randomness on every replay
