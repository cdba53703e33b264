"""CUDA kernels equal the CPU kernels bit for bit (run whenever a GPU is present; skipped
otherwise: the emulated launch in test_ops_vs_reference.py covers the same bodies on the CPU)."""
import pytest
import torch

import genesis_ops as go

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

SHAPES = [(4, 1, 64, 64, 32), (3, 2, 17, 9, 23), (2, 3, 224, 224), (2, 1, 1, 5, 3), (0, 1, 8, 8, 8)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def test_cuda_kernels_were_built():
    assert go.has_cuda_kernels(), "torch sees a GPU but genesis_ops was built without CUDA kernels"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 2**64 - 1])
def test_cuda_equals_cpu(shape, dtype, seed):
    x = torch.rand(shape).to(dtype)
    xc = x.cuda()
    cfg = go.GenesisConfig(shuffle_p=0.7)
    for a, b in zip(go.models_genesis(x, cfg, seed=seed), go.models_genesis(xc, cfg, seed=seed)):
        assert torch.equal(a, b.cpu())
    for fn in (lambda t: go.flip(t, p=0.7, seed=seed), lambda t: go.local_shuffle(t, p=1.0, seed=seed),
               lambda t: go.nonlinear(t, p=1.0, seed=seed), lambda t: go.inpaint(t, seed=seed),
               lambda t: go.outpaint(t, seed=seed)):
        assert torch.equal(fn(x), fn(xc).cpu())


def test_cuda_bezier_and_streams():
    x = torch.rand(3, 1, 32, 32, 16, device="cuda")
    cp = torch.rand(3, 4, dtype=torch.float64, device="cuda")
    inc = torch.tensor([True, False, True], device="cuda")
    assert torch.equal(go.bezier(x, cp, inc).cpu(), go.bezier(x.cpu(), cp.cpu(), inc.cpu()))
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y = go.models_genesis(x, seed=3)[0]
    s.synchronize()
    assert torch.equal(y.cpu(), go.models_genesis(x.cpu(), seed=3)[0])


def test_cuda_device_mismatch_is_an_error():
    x = torch.rand(2, 1, 8, 8, 8, device="cuda")
    with pytest.raises(ValueError, match="control_points is on cpu"):
        go.bezier(x, torch.rand(2, 4, dtype=torch.float64), [True, True])
    with pytest.raises(RuntimeError, match="x's device"):
        torch.ops.genesis.bezier(x, torch.rand(2, 4, dtype=torch.float64), torch.ones(2, dtype=torch.bool), 0.0, 1.0)
