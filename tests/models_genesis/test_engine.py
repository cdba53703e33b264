"""The shared training engine, without a GPU: the float16 path through a CPU autocast and
GradScaler("cpu") (gradients reach the optimiser unscaled; a step whose scaled gradients overflow
is skipped and the scale halves), the non-finite-loss error, best-epoch tracking, and that an
interrupted checkpoint write leaves the previous file intact."""

import math
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models_genesis import UNet3D, load_model
from models_genesis.checkpoint import CheckpointWriter, checkpoint_payload, plain, read_checkpoint
from models_genesis.engine import Monitor, TrainStep, amp_dtype, run_epoch
from models_genesis.model import unwrap
from models_genesis.utils import Progress

CPU = torch.device("cpu")


def _mse(pred, target):
    return F.mse_loss(pred.float(), target.float())


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv3d(2, 1, 1))


def _params(m):
    return [p.detach().clone() for p in m.parameters()]


def test_float16_step_scales_the_loss_and_unscales_the_gradients():
    x, y = torch.rand(2, 1, 8, 8, 8), torch.rand(2, 1, 8, 8, 8)
    m = _net()
    step = TrainStep(
        m,
        torch.optim.SGD(m.parameters(), lr=0.1),
        CPU,
        _mse,
        dtype=torch.float16,
        scaler_kwargs={"init_scale": 2.0**10},
    )
    assert isinstance(step.scaler, torch.amp.GradScaler) and step.scaler.get_scale() == 2.0**10
    before = _params(m)
    loss = step(x, y)
    assert math.isfinite(float(loss)) and step.steps == 1
    # the optimiser saw unscaled gradients: they match an unscaled float16 backward
    ref = _net()
    with torch.autocast("cpu", dtype=torch.float16):
        pred = ref(x)
    _mse(pred, y).backward()
    for p, r in zip(m.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p.grad, r.grad, rtol=2e-2, atol=1e-4)
    # SGD applied lr * grad
    for p, b in zip(m.parameters(), before, strict=True):
        assert torch.allclose(p.detach(), b - 0.1 * p.grad, atol=1e-6)


def test_float16_step_skips_the_update_and_lowers_the_scale_when_gradients_overflow():
    x, y = torch.rand(2, 1, 8, 8, 8), torch.rand(2, 1, 8, 8, 8)
    m = _net()
    # a scale this large turns the float16 gradients into inf
    step = TrainStep(
        m,
        torch.optim.SGD(m.parameters(), lr=0.1),
        CPU,
        _mse,
        dtype=torch.float16,
        scaler_kwargs={"init_scale": 2.0**60},
    )
    before = _params(m)
    loss = step(x, y)
    assert math.isfinite(float(loss))  # the loss itself is fine: no FloatingPointError, a skipped step
    for p, b in zip(m.parameters(), before, strict=True):
        assert torch.equal(p.detach(), b)
    assert step.scaler.get_scale() == 2.0**59
    # the scale keeps halving until the gradients fit, then training proceeds
    for _ in range(60):
        step(x, y)
        if any(not torch.equal(p.detach(), b) for p, b in zip(m.parameters(), before, strict=True)):
            break
    else:
        pytest.fail("the scaler never recovered from the overflow")
    assert step.scaler.get_scale() < 2.0**59


def test_no_scaler_without_float16():
    m = _net()
    assert amp_dtype(CPU, True) is None  # the CPU trains in float32
    assert amp_dtype(CPU, False) is None
    for dtype in (None, torch.bfloat16):
        assert TrainStep(m, torch.optim.SGD(m.parameters(), lr=0.1), CPU, _mse, dtype=dtype).scaler is None


def test_a_non_finite_loss_stops_training_with_the_learning_rate_in_the_message():
    m = _net()
    step = TrainStep(m, torch.optim.SGD(m.parameters(), lr=0.25), CPU, lambda p, t: (p * float("nan")).mean())
    batch = (torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 8))
    with pytest.raises(FloatingPointError, match=r"epoch 3 step 1; try a lower --lr \(now 0.25\)"):
        run_epoch(step, lambda: batch, 2, Progress(2, "x", enabled=False), epoch=3)


def test_monitor_best_and_patience():
    lo = Monitor("min", patience=2)
    assert [lo.update(v) for v in (3.0, float("nan"), 2.0, 2.5, None)] == [True, False, True, False, False]
    assert lo.best == 2.0 and lo.bad_epochs == 2 and lo.should_stop
    hi = Monitor("max")
    assert [hi.update(v) for v in (float("nan"), 0.1, 0.05, 0.3)] == [False, True, False, True]
    assert hi.best == 0.3 and not hi.should_stop  # patience 0 never stops
    resumed = Monitor("min", best=float("inf"), bad_epochs=1)  # a checkpoint without a best yet
    assert resumed.best is None and resumed.update(5.0)


def _payload(model, epoch):
    opt = torch.optim.Adam(model.parameters())
    return checkpoint_payload("pretrain", model, opt, {"cube": (16, 16, 8)}, epoch, 10 * epoch, note="x")


def test_checkpoint_payload_loads_with_weights_only(tmp_path):
    m = UNet3D(width=4)
    w = CheckpointWriter(str(tmp_path))
    w.save(_payload(torch.compile(m), 1), is_best=True)  # wrappers leave no prefix in the keys
    ck = read_checkpoint(w.last)  # weights_only=True
    assert ck["format"] == "models_genesis" and ck["kind"] == "pretrain" and ck["epoch"] == 1 and ck["step"] == 10
    assert ck["config"] == {"cube": [16, 16, 8]} and ck["note"] == "x"
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in ck["model"])
    assert load_model(w.best).width == 4
    assert plain({"a": (1, (2, 3))}) == {"a": [1, [2, 3]]}


def test_unwrap_strips_compile_wrappers():
    m = UNet3D(width=4)
    assert unwrap(torch.compile(m)) is m and unwrap(m) is m


def test_an_interrupted_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    m = UNet3D(width=4)
    w = CheckpointWriter(str(tmp_path))
    w.save(_payload(m, 1), is_best=True)
    good = (tmp_path / "last.pt").read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *a, **k):  # writes half a file, then the process "dies"
        real_save(obj, f, *a, **k)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        w.save(_payload(m, 2), is_best=True)
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / "last.pt").read_bytes() == good
    assert read_checkpoint(w.last)["epoch"] == 1 and read_checkpoint(w.best)["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "last.pt"]  # no temporary file left behind


def test_finish_makes_best_a_copy_of_last_when_no_epoch_was_best(tmp_path):
    m = UNet3D(width=4)
    w = CheckpointWriter(str(tmp_path))
    w.save(_payload(m, 1), is_best=True)
    w.save(_payload(m, 2), is_best=False)
    w.finish(had_best=True)
    assert read_checkpoint(w.best)["epoch"] == 1
    w.finish(had_best=False)  # e.g. the metric was undefined in every epoch: best.pt of another run must go
    assert read_checkpoint(w.best)["epoch"] == 2
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "last.pt"]
