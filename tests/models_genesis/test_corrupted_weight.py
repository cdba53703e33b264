"""pretrain --corrupted-weight: the corruption-weighted loss against a hand computation and a
float64 one (hypothesis), W = 1 being the MSE and W = 0 ignoring corrupted voxels, bad weights
rejected by name (function, config, command line), the mask reaching the loss through TrainStep
(float32, bfloat16, float16 with loss scaling), a default run requesting no training masks, and a
weighted run through the command line with the mask column in restorations.png."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import genesis_ops as go
from models_genesis.cli import main
from models_genesis.config import PretrainConfig
from models_genesis.engine import TrainStep
from models_genesis.losses import corruption_weighted_mse, mse_loss, restoration_loss
from models_genesis.checkpoint import read_checkpoint
from models_genesis.pretrain import pretrain
from models_genesis.utils import UsageError

CPU = torch.device("cpu")
TINY = dict(batch_size=2, cube=(16, 16, 16), width=4, device="cpu", quiet=True, previews=2, val_batches=1)


def _pair_and_mask(shape, seed, channels=1):
    """A real (prediction-like, target, mask) triple: the target and mask of genesis_ops on random
    cubes, a noisy prediction."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((shape[0], channels, *shape[1:]), generator=g)
    _, target, mask = go.models_genesis(x, seed=seed, return_masks=True)
    pred = target + 0.1 * torch.randn(target.shape, generator=g)
    return pred, target, mask


# ---------------------------------------------------------------------------------------------
# the loss


def test_weighted_loss_by_hand():
    # squared errors 0, 1, 4, 9; mask 0, 1, 0, 2 (shuffled, painted); W = 3: weights 1, 3, 1, 3
    pred = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 4)
    target = torch.zeros(1, 1, 4)
    mask = torch.tensor([0, 1, 0, 2], dtype=torch.uint8).view(1, 1, 4)
    assert corruption_weighted_mse(pred, target, mask, 3.0).item() == pytest.approx((0 + 3 + 4 + 27) / 8)
    # a second channel with zero error: the mask applies to it too (the denominator doubles)
    pred2 = torch.cat([pred, torch.zeros_like(pred)], dim=1)
    assert corruption_weighted_mse(pred2, torch.zeros(1, 2, 4), mask, 3.0).item() == pytest.approx(34 / 16)
    # W = 0: the corrupted voxels are ignored, the mean over the others
    assert corruption_weighted_mse(pred, target, mask, 0.0).item() == pytest.approx((0 + 4) / 2)
    # W = 1: the plain mean
    assert corruption_weighted_mse(pred, target, mask, 1.0).item() == pytest.approx(14 / 4)
    # a per-channel mask is taken as it is
    mask2 = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.uint8).view(1, 2, 4)
    pred3 = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]]).view(1, 2, 4)
    assert corruption_weighted_mse(pred3, torch.zeros(1, 2, 4), mask2, 2.0).item() == pytest.approx(
        (2 * 1 + 1 + 2 * 4) / 10
    )


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 3),
    c=st.integers(1, 3),
    spatial=st.sampled_from([(8, 8, 8), (16, 8, 8), (8, 16)]),
    weight=st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 100.0)),
    seed=st.integers(0, 2**31),
    half=st.booleans(),
)
def test_weighted_loss_matches_a_float64_computation(b, c, spatial, weight, seed, half):
    pred, target, mask = _pair_and_mask((b, *spatial), seed, c)
    if half:  # autocast outputs: the loss works in float32 whatever the prediction's dtype
        pred = pred.to(torch.bfloat16)
    got = corruption_weighted_mse(pred, target, mask, weight)
    assert got.dtype == torch.float32 and got.shape == ()
    p, t = pred.double().numpy(), target.double().numpy()
    w = np.broadcast_to(np.where(mask.numpy() != 0, weight, 1.0), p.shape)
    if w.sum() == 0:
        assert got.item() == 0.0
    else:
        assert got.item() == pytest.approx((w * (p - t) ** 2).sum() / w.sum(), rel=1e-5, abs=1e-9)


@settings(max_examples=15, deadline=None)
@given(b=st.integers(1, 3), c=st.integers(1, 2), seed=st.integers(0, 2**31))
def test_weight_one_is_the_plain_mse(b, c, seed):
    pred, target, mask = _pair_and_mask((b, 16, 8, 8), seed, c)
    pred.requires_grad_(True)
    got = corruption_weighted_mse(pred, target, mask, 1.0)
    want = F.mse_loss(pred, target)
    assert torch.allclose(got, want, rtol=1e-6, atol=0)
    (g_got,) = torch.autograd.grad(got, pred)
    (g_want,) = torch.autograd.grad(want, pred)
    assert torch.allclose(g_got, g_want, rtol=1e-5, atol=1e-12)


def test_weight_zero_ignores_the_corrupted_voxels():
    pred, target, mask = _pair_and_mask((2, 16, 16, 8), 3, 2)
    corrupted = (mask != 0).expand_as(pred)
    assert 0 < corrupted.float().mean() < 1  # both kinds of voxel present
    pred = pred.clone().requires_grad_(True)
    loss = corruption_weighted_mse(pred, target, mask, 0.0)
    assert loss.item() == pytest.approx(((pred - target)[~corrupted] ** 2).mean().item(), rel=1e-6)
    (grad,) = torch.autograd.grad(loss, pred)
    assert (grad[corrupted] == 0).all() and (grad[~corrupted] != 0).any()
    # changing the prediction on corrupted voxels changes nothing
    moved = torch.where(corrupted, pred.detach() + 5.0, pred.detach())
    assert corruption_weighted_mse(moved, target, mask, 0.0).item() == pytest.approx(loss.item(), rel=1e-6)
    # a batch corrupted everywhere: a zero loss with zero gradients, not NaN
    everywhere = torch.full_like(mask, 2)
    z = corruption_weighted_mse(pred, target, everywhere, 0.0)
    assert z.item() == 0.0
    assert (torch.autograd.grad(z, pred)[0] == 0).all()


@pytest.mark.parametrize("weight", [-1.0, -1e-9, float("nan"), float("inf"), "heavy", None, True])
def test_bad_weights_are_rejected_by_name(weight):
    pred = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="weight"):
        corruption_weighted_mse(pred, pred, torch.zeros(1, 1, 4, 4, dtype=torch.uint8), weight)
    if weight is not None:
        with pytest.raises(ValueError, match="corrupted_weight"):
            restoration_loss(weight)


@pytest.mark.parametrize("mask_shape", [(1, 1, 4), (2, 1, 4, 4), (1, 1, 4, 8), (1, 3, 4, 4)])
def test_mask_of_the_wrong_shape_is_rejected(mask_shape):
    pred = torch.zeros(1, 2, 4, 4)
    with pytest.raises(ValueError, match="mask"):
        corruption_weighted_mse(pred, pred, torch.zeros(mask_shape, dtype=torch.uint8), 2.0)


def test_restoration_loss_is_the_plain_mse_by_default():
    assert restoration_loss(None) is mse_loss
    pred, target, mask = _pair_and_mask((2, 8, 8, 8), 1)
    assert restoration_loss(4).func is corruption_weighted_mse
    assert restoration_loss(4)(pred, target, mask) == corruption_weighted_mse(pred, target, mask, 4.0)


# ---------------------------------------------------------------------------------------------
# config and command line


@pytest.mark.parametrize("w", [-0.5, float("nan"), float("inf"), float("-inf")])
def test_config_rejects_bad_corrupted_weight(w):
    with pytest.raises(UsageError, match="--corrupted-weight"):
        PretrainConfig(corrupted_weight=w).validate()


@pytest.mark.parametrize("w", ["-1", "nan", "inf", "lots"])
def test_cli_rejects_bad_corrupted_weight(w, capsys):
    assert main(["pretrain", "--corrupted-weight", w]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--corrupted-weight" in err


def test_good_weights_pass():
    for w in (None, 0.0, 1.0, 5, 1e6):
        PretrainConfig(corrupted_weight=w).validate()


# ---------------------------------------------------------------------------------------------
# the training step carries the mask to the loss


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv3d(2, 1, 1))


@pytest.mark.parametrize("dtype", [None, torch.bfloat16, torch.float16])
def test_train_step_passes_the_mask_to_the_loss(dtype):
    x, target, mask = go.models_genesis(torch.rand(2, 1, 8, 8, 8), seed=4, return_masks=True)
    loss_fn = restoration_loss(5.0)
    seen = []

    def spy(pred, tgt, m):
        seen.append(m)
        return loss_fn(pred, tgt, m)

    m = _net()
    step = TrainStep(
        m, torch.optim.SGD(m.parameters(), lr=0.1), CPU, spy, dtype=dtype, scaler_kwargs={"init_scale": 2.0**8}
    )
    assert (step.scaler is not None) == (dtype == torch.float16)
    loss = step(x, target, mask)
    assert len(seen) == 1 and torch.equal(seen[0], mask) and step.steps == 1
    # the same loss and gradients as the weighted loss computed outside the step
    ref = _net()
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        pred = ref(x)
    want = loss_fn(pred, target, mask)
    want.backward()
    assert math.isclose(loss.item(), want.item(), rel_tol=1e-6)
    for p, r in zip(m.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p.grad, r.grad, rtol=2e-2, atol=1e-5)
    # and differs from the unweighted loss on this batch
    assert not math.isclose(loss.item(), mse_loss(pred, target).item(), rel_tol=1e-3)


# ---------------------------------------------------------------------------------------------
# pretraining runs


def _spy_models_genesis(monkeypatch):
    calls, real = [], go.models_genesis

    def spy(x, *a, **k):
        calls.append((x.shape[0], bool(k.get("return_masks", False))))
        return real(x, *a, **k)

    monkeypatch.setattr(go, "models_genesis", spy)
    return calls


def _spy_grid(monkeypatch):
    from models_genesis import plots

    calls, real = [], plots.restoration_grid

    def spy(inputs, outputs, targets, path, **kw):
        calls.append((np.array(inputs), np.array(outputs), np.array(targets), kw.get("masks")))
        return real(inputs, outputs, targets, path, **kw)

    monkeypatch.setattr(plots, "restoration_grid", spy)
    return calls


def _png_size(path):
    head = open(path, "rb").read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_default_pretraining_requests_no_training_masks(tmp_path, demo_file, monkeypatch):
    calls = _spy_models_genesis(monkeypatch)
    grid = _spy_grid(monkeypatch)
    res = pretrain(
        PretrainConfig(data=[demo_file("ct_abdomen.nii.gz")], out=str(tmp_path), epochs=1, steps_per_epoch=3, **TINY)
    )
    train = [c for c in calls if c[0] == TINY["batch_size"] and c != calls[0]]
    # one validation call (masks made once, for the pictures), then plain training batches
    assert calls[0][1] is True and len(calls) == 4 and not any(c[1] for c in calls[1:]), calls
    assert len(train) == 3
    assert "val_mse" not in res["history"][-1]
    # the pictures show the validation masks all the same
    inp, pred, tgt, masks = grid[-1]
    assert masks is not None and masks.shape == inp.shape and set(np.unique(masks)) <= {0, 1, 2, 3}


def test_weighted_pretraining_through_the_cli(tmp_path, demo_file, monkeypatch, capsys):
    from models_genesis import plots

    calls = _spy_models_genesis(monkeypatch)
    grid = _spy_grid(monkeypatch)
    out = tmp_path / "run"
    assert (
        main(
            [
                "pretrain",
                "--data",
                demo_file("ct_abdomen.nii.gz"),
                "--out",
                str(out),
                "--batch-size",
                "2",
                "--cube",
                "16",
                "16",
                "16",
                "--width",
                "4",
                "--epochs",
                "2",
                "--steps-per-epoch",
                "2",
                "--val-batches",
                "1",
                "--previews",
                "2",
                "--device",
                "cpu",
                "--corrupted-weight",
                "5",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "corruption-weighted MSE (W=5)" in text
    assert len(calls) == 1 + 2 * 2 and all(c[1] for c in calls)  # every batch brings its mask
    ck = read_checkpoint(str(out / "last.pt"))
    assert ck["epoch"] == 2 and ck["step"] == 4 and ck["config"]["corrupted_weight"] == 5.0
    hist = ck["history"]
    assert all(math.isfinite(h["val_loss"]) and math.isfinite(h["val_mse"]) for h in hist)
    assert all(math.isfinite(h["train_loss"]) for h in hist[1:])
    # restorations.png has the mask column: wider than the same grid without it
    inp, pred, tgt, masks = grid[-1]
    assert masks.shape == inp.shape == (2, 16, 16, 16) and masks.dtype == np.uint8
    assert ((masks & 1) != 0).any() or ((masks & 2) != 0).any()
    plots.restoration_grid(inp, pred, tgt, str(tmp_path / "three.png"))
    (w4, _h4), (w3, _h3) = _png_size(out / "restorations.png"), _png_size(tmp_path / "three.png")
    assert w4 > w3 * 1.2, (w4, w3)


def test_mask_overlay_colours_each_bit():
    from models_genesis.plots import MASK_COLOURS, mask_overlay

    m = np.array([[0, 1], [2, 3]], np.uint8)
    rgba = mask_overlay(m)
    assert rgba.shape == (2, 2, 4) and rgba[0, 0, 3] == 0
    for v in (1, 2, 3):
        assert tuple(rgba[v // 2, v % 2]) == pytest.approx(MASK_COLOURS[v][0])
    assert len({MASK_COLOURS[v][0] for v in (1, 2, 3)}) == 3
