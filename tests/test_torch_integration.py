"""torch.library.opcheck, torch.compile(fullgraph=True) and meta tensors on every op."""

import pytest
import torch

import genesis_ops as go

from op_table import IMAGE_OPS, TABLE

# The image ops (the masked and mask-only ones: tests/test_masks.py), test hooks included.
OPS = {name: TABLE[name] for name in IMAGE_OPS}


@pytest.mark.parametrize("name,device", [(n, d) for n in sorted(OPS) for d in OPS[n].devices])
@pytest.mark.parametrize("shape", [(2, 1, 12, 10, 8), (3, 2, 17, 9)])
def test_opcheck(name, shape, device):
    x = torch.rand(shape, device=device)
    torch.library.opcheck(OPS[name].packet.default, OPS[name].raw_args(x))


@pytest.mark.parametrize("name", sorted(OPS))
def test_meta_tensors(name):
    x = torch.empty(2, 1, 8, 8, 8, device="meta")
    args = OPS[name].raw_args(torch.rand(2, 1, 8, 8, 8))
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
        return y + go.bezier(
            x, torch.full((x.shape[0], 4), 0.5, dtype=torch.float64), torch.ones(x.shape[0], dtype=torch.bool)
        )

    x = torch.rand(2, 1, 16, 16, 8)
    compiled = torch.compile(f, fullgraph=True)
    assert torch.equal(compiled(x), f(x))


@pytest.mark.parametrize(
    "call",
    [
        lambda x: go.models_genesis(x, seed=1),
        lambda x: go.models_genesis(x, seed=1, return_masks=True),
        lambda x: go.flip(x, p=1.0, seed=1),
        lambda x: go.local_shuffle(x, p=1.0, seed=1),
        lambda x: go.nonlinear(x, p=1.0, seed=1),
        lambda x: go.inpaint(x, p=1.0, seed=1),
        lambda x: go.outpaint(x, p=1.0, seed=1),
        lambda x: go.bezier(x, [[0.2, 0.3, 0.7, 0.8]] * 2, [True, False]),
        lambda x: go.ModelsGenesis(go.GenesisConfig())(x),
    ],
)
def test_outputs_of_an_input_that_requires_grad_do_not(call, recwarn):
    """The ops are not differentiable: outputs never carry the dispatcher's fallthrough grad_fn
    (whose backward() only warns that it is silently incorrect), and the values are those of the
    detached input."""
    x = torch.rand(2, 1, 12, 10, 8)
    torch.manual_seed(0)  # the module draws its seeds from torch's generator
    out = call(x.clone().requires_grad_(True))
    torch.manual_seed(0)
    want = call(x)
    outs = out if isinstance(out, tuple) else (out,)
    wants = want if isinstance(want, tuple) else (want,)
    for o, w in zip(outs, wants, strict=True):
        assert not o.requires_grad and o.grad_fn is None
        assert torch.equal(o, w)
    assert not [w for w in recwarn if "silently incorrect" in str(w.message)]


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


def _bad_tensor_cases():
    """(op name, args builder on a device, message) for tensors every fake kernel must refuse."""
    good = torch.rand(2, 1, 8, 8, 8)
    cp, inc = torch.full((2, 4), 0.5, dtype=torch.float64), torch.ones(2, dtype=torch.bool)
    cases = [
        (name, OPS[name].raw_args, bad, "x must have shape")
        for name in OPS
        for bad in (torch.rand(2, 8, 8), torch.rand(1, 2, 3, 4, 5, 6))
    ]
    cases += [
        (name, OPS[name].raw_args, good.to(dt), "x must be float16")
        for name in ("models_genesis", "nonlinear")
        for dt in (torch.int32, torch.bool, torch.complex64)
    ]
    bez = [
        ((cp[:1], inc), "control_points must have shape"),
        ((cp[:, :3], inc), "control_points must have shape"),
        ((cp.float(), inc), "control_points must be float64"),
        ((cp, inc[:1]), "increasing must have shape"),
        ((cp, inc.to(torch.uint8)), "increasing must be a bool"),
    ]
    for name in ("bezier", "_emulated_cuda_bezier"):
        cases += [(name, (lambda x, a=a: (x,) + a + (0.0, 1.0)), good, msg) for a, msg in bez]
    return cases


@pytest.mark.parametrize("name,build,x,match", _bad_tensor_cases())
@pytest.mark.parametrize("mode", ["meta", "fake"])
def test_fake_kernels_refuse_bad_tensors(name, build, x, match, mode):
    """The fake kernels check ranks, dtypes and the Bezier tensors' shapes and dtypes, with the
    C++ kernels' messages, so a bad graph fails when traced (meta tensors, FakeTensorMode)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    op = getattr(torch.ops.genesis, name)
    if mode == "meta":
        args = tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in build(x))
        with pytest.raises(RuntimeError, match=match):
            op(*args)
    else:
        with FakeTensorMode() as fm:
            args = tuple(fm.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in build(x))
            with pytest.raises(RuntimeError, match=match):
                op(*args)
    # the real kernels refuse the same tensors with the same message
    with pytest.raises(RuntimeError, match=match):
        op(*build(x))


def test_fake_kernel_refuses_bezier_tensors_on_another_device():
    x = torch.empty(2, 1, 8, 8, 8, device="meta")
    cp = torch.full((2, 4), 0.5, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="on x's device"):
        torch.ops.genesis.bezier(x, cp.to("meta"), torch.ones(2, dtype=torch.bool), 0.0, 1.0)
