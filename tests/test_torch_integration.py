"""torch.library.opcheck, torch.compile(fullgraph=True) and meta tensors on every op."""
import pytest
import torch

import genesis_ops as go
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

OPS = {
    "models_genesis": lambda x: (x, 0.4, 0.5, 50, 0.9, 0.9, 0.2, 0.0, 1.0, 3, 0),
    "flip": lambda x: (x, 0.5, 3, 0),
    "local_shuffle": lambda x: (x, 1.0, 50, 3, 0),
    "nonlinear": lambda x: (x, 1.0, 0.0, 1.0, 3, 0),
    "inpaint": lambda x: (x, 1.0, 0.0, 1.0, 3, 0),
    "outpaint": lambda x: (x, 1.0, 0.0, 1.0, 3, 0),
    "bezier": lambda x: (x, torch.tensor([[0.2, 0.3, 0.6, 0.9]] * x.shape[0], dtype=torch.float64, device=x.device),
                         torch.tensor([True] * x.shape[0], device=x.device), 0.0, 1.0),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("shape", [(2, 1, 12, 10, 8), (3, 2, 17, 9)])
def test_opcheck(name, shape, device):
    x = torch.rand(shape, device=device)
    torch.library.opcheck(getattr(torch.ops.genesis, name).default, OPS[name](x))


@pytest.mark.parametrize("name", sorted(OPS))
def test_meta_tensors(name):
    x = torch.empty(2, 1, 8, 8, 8, device="meta")
    args = OPS[name](torch.rand(2, 1, 8, 8, 8))
    args = tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in (x,) + args[1:])
    out = getattr(torch.ops.genesis, name)(*args)
    for o in out if isinstance(out, tuple) else (out,):
        assert o.shape == x.shape and o.device.type == "meta"


def test_compile_fullgraph_all_ops():
    cfg = go.GenesisConfig(num_windows=100)

    def f(x):
        inp, tgt = go.models_genesis(x * 1.0, cfg, seed=7)
        y = go.flip(inp, p=0.5, seed=1) + go.local_shuffle(tgt, p=1.0, num_windows=50, seed=2)
        y = y + go.nonlinear(x, seed=3) + go.inpaint(x, seed=4) + go.outpaint(x, seed=5)
        return y + go.bezier(x, torch.full((x.shape[0], 4), 0.5, dtype=torch.float64), torch.ones(x.shape[0], dtype=torch.bool))

    x = torch.rand(2, 1, 16, 16, 8)
    compiled = torch.compile(f, fullgraph=True)
    assert torch.equal(compiled(x), f(x))


def test_module_in_compiled_training_step():
    """Dropping the module into a compiled step: transforms then a conv and a loss."""
    mg = go.ModelsGenesis(go.GenesisConfig(num_windows=50))
    conv = torch.nn.Conv3d(1, 1, 3, padding=1)

    def step(x, seed):
        inp, tgt = mg(x, seed=seed)
        return torch.nn.functional.mse_loss(torch.sigmoid(conv(inp)), tgt)

    x = torch.rand(2, 1, 16, 16, 8)
    loss = torch.compile(step, fullgraph=True)(x, 3)
    loss.backward()
    assert conv.weight.grad is not None and torch.isfinite(loss)
