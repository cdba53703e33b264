"""GPU-only checks of the corruption masks (skipped without a GPU; here, not in tests/test_masks.py,
so that bench/gpu_check.py, which runs tests/test_cuda*.py, runs them): the masked ops, paint_mask
and shuffle_mask on CUDA equal the CPU kernels bit for bit (tests/test_masks.py checks the CPU and
the emulated CUDA launch against the NumPy reference)."""

import pytest
import torch

import genesis_ops as go

# Like test_cuda.py: a GPU without CUDA kernels fails there (test_cuda_kernels_were_built), not here.
pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and go.has_cuda_kernels()), reason="needs a GPU and a CUDA build"
)

SINGLE = {
    "local_shuffle": lambda x, **k: go.local_shuffle(x, p=0.7, num_windows=120, seed=11, sample_offset=3, **k),
    "inpaint": lambda x, **k: go.inpaint(x, p=0.7, value_range=(-1.0, 2.0), seed=11, sample_offset=3, **k),
    "outpaint": lambda x, **k: go.outpaint(x, p=0.7, value_range=(-1.0, 2.0), seed=11, sample_offset=3, **k),
}


@pytest.mark.parametrize("shape", [(4, 1, 64, 64, 32), (3, 2, 17, 9, 23), (2, 3, 40, 33), (3, 0, 5, 6, 7)])
def test_cuda_masks_equal_cpu(shape):
    x = torch.rand(shape)
    cfg = go.GenesisConfig(shuffle_p=0.8, paint_p=0.9, inpaint_rate=0.5)
    got = go.models_genesis(x.cuda(), cfg, seed=11, return_masks=True)
    want = go.models_genesis(x, cfg, seed=11, return_masks=True)
    assert got[2].device == x.cuda().device
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a.cpu(), b)
    for name, op in SINGLE.items():
        for a, b in zip(op(x.cuda(), return_mask=True), op(x, return_mask=True), strict=True):
            assert torch.equal(a.cpu(), b), name
    for op in ("models_genesis", "inpaint", "outpaint"):
        assert torch.equal(go.paint_mask(x.cuda(), 0.7, seed=11, op=op).cpu(), go.paint_mask(x, 0.7, seed=11, op=op))
        assert torch.equal(
            go.paint_mask(shape, 0.7, seed=11, op=op, device="cuda").cpu(), go.paint_mask(x, 0.7, seed=11, op=op)
        )
    assert torch.equal(go.shuffle_mask(x.cuda(), 0.8, seed=11).cpu(), go.shuffle_mask(x, 0.8, seed=11))
