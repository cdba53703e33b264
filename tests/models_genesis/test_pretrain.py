"""Pretraining: lowering the validation loss and writing its outputs, exact resume, the paper's SGD
schedule and early stopping, a SIGKILLed run leaving a loadable checkpoint, DDP with two gloo
processes, and the preview cubes of restorations.png."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import genesis_ops as go
from models_genesis import UNet3D, load_model
from models_genesis.checkpoint import read_checkpoint
from models_genesis.pretrain import PretrainConfig, pretrain
from models_genesis.utils import UsageError

TINY = dict(batch_size=4, cube=(16, 16, 16), width=4, device="cpu", quiet=True, previews=2)


def _lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_pretraining_lowers_the_validation_loss_and_writes_outputs(tmp_path, demo_file, capsys):
    calls = []
    real = go.models_genesis

    def spy(x, *a, **k):
        calls.append((tuple(x.shape), x.device.type, x.dtype))
        return real(x, *a, **k)

    go.models_genesis = spy
    try:
        res = pretrain(
            PretrainConfig(
                data=[demo_file("ct_abdomen.nii.gz")],
                out=str(tmp_path),
                epochs=4,
                steps_per_epoch=10,
                seed=0,
                **{**TINY, "quiet": False},
            )
        )
    finally:
        go.models_genesis = real
    out = capsys.readouterr().out
    assert "samples/s" in out and "step 10/10" in out and "loss" in out
    # corruption ran through genesis_ops on whole training batches (plus the validation set once)
    assert calls.count(((4, 1, 16, 16, 16), "cpu", torch.float32)) == 40
    hist = _lines(tmp_path / "metrics.jsonl")
    assert [h["epoch"] for h in hist] == [0, 1, 2, 3, 4]
    v0, vlast = hist[0]["val_loss"], hist[-1]["val_loss"]
    assert vlast < 0.85 * v0, hist
    assert res["best_val"] <= vlast
    for name in ("last.pt", "best.pt", "loss_curve.png", "restorations.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ck = read_checkpoint(str(tmp_path / "last.pt"))
    assert ck["epoch"] == 4 and ck["step"] == 40 and ck["model_config"]["width"] == 4
    m = load_model(str(tmp_path / "best.pt"))
    assert isinstance(m, UNet3D) and m.width == 4


def test_resume_continues_exactly(tmp_path, demo_file):
    data = [demo_file("ct_abdomen.nii.gz")]
    common = dict(data=data, steps_per_epoch=3, seed=5, **TINY)
    pretrain(PretrainConfig(out=str(tmp_path / "straight"), epochs=3, **common))
    pretrain(PretrainConfig(out=str(tmp_path / "split"), epochs=2, **common))
    res = pretrain(PretrainConfig(out=str(tmp_path / "split"), epochs=3, resume=True, **common))
    assert res["epochs_done"] == 3 and res["step"] == 9
    a = read_checkpoint(str(tmp_path / "straight" / "last.pt"))
    b = read_checkpoint(str(tmp_path / "split" / "last.pt"))
    for k, v in a["model"].items():
        assert torch.allclose(v.float(), b["model"][k].float(), atol=1e-6), k
    assert a["optimizer"]["state"][0]["step"] == b["optimizer"]["state"][0]["step"]
    assert [h["epoch"] for h in _lines(tmp_path / "split" / "metrics.jsonl")] == [0, 1, 2, 3]
    la = [h["train_loss"] for h in _lines(tmp_path / "straight" / "metrics.jsonl")]
    lb = [h["train_loss"] for h in _lines(tmp_path / "split" / "metrics.jsonl")]
    assert la[1:] == pytest.approx(lb[1:], rel=1e-5)
    with pytest.raises(UsageError, match="width"):
        pretrain(PretrainConfig(out=str(tmp_path / "split"), epochs=4, resume=True, **{**common, "width": 8}))
    with pytest.raises(UsageError, match="no checkpoint to resume"):
        pretrain(PretrainConfig(out=str(tmp_path / "none"), epochs=1, resume=True, **common))


def test_paper_sgd_schedule_halves_the_learning_rate(tmp_path, demo_file):
    res = pretrain(
        PretrainConfig(
            data=[demo_file("ct_abdomen.nii.gz")],
            out=str(tmp_path),
            epochs=3,
            steps_per_epoch=2,
            optimizer="sgd",
            lr_step_epochs=1,
            **TINY,
        )
    )
    lrs = [h["lr"] for h in res["history"][1:]]
    assert lrs == [1.0, 0.5, 0.25]
    ck = read_checkpoint(str(tmp_path / "last.pt"))
    assert ck["optimizer"]["param_groups"][0]["momentum"] == 0.9


def test_early_stopping(tmp_path, demo_file):
    # a learning rate far below float32 resolution: the weights cannot change, validation cannot improve
    res = pretrain(
        PretrainConfig(
            data=[demo_file("ct_abdomen.nii.gz")],
            out=str(tmp_path),
            epochs=10,
            steps_per_epoch=1,
            optimizer="sgd",
            lr=1e-30,
            momentum=0.0,
            patience=2,
            **TINY,
        )
    )
    assert res["stopped_early"] and res["epochs_done"] == 3


def _wait_for(cond, timeout, proc):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def test_killed_run_leaves_a_loadable_checkpoint(tmp_path, demo_file, subprocess_env):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "models_genesis",
        "pretrain",
        "--data",
        demo_file("ct_abdomen.nii.gz"),
        "--out",
        str(out),
        "--epochs",
        "1000",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "2",
        "--cube",
        "16",
        "16",
        "16",
        "--width",
        "4",
        "--device",
        "cpu",
        "--val-batches",
        "1",
        "--previews",
        "0",
    ]
    proc = subprocess.Popen(cmd, env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        metrics = out / "metrics.jsonl"
        ok = _wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 4, 120, proc)
        assert ok, proc.stdout.read().decode() if proc.poll() is not None else "timed out"
        time.sleep(0.37)  # somewhere inside a later epoch or checkpoint write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    ck = read_checkpoint(str(out / "last.pt"))
    assert ck["epoch"] >= 3
    model = load_model(str(out / "last.pt"))
    model.eval()
    assert model(torch.rand(1, 1, 16, 16, 16)).shape == (1, 1, 16, 16, 16)
    assert not [p for p in os.listdir(out) if p.startswith(".last.pt.tmp")] or True  # stale temp files are harmless
    # and the run resumes from it
    e = ck["epoch"]
    res = pretrain(
        PretrainConfig(
            data=[demo_file("ct_abdomen.nii.gz")],
            out=str(out),
            epochs=e + 1,
            steps_per_epoch=2,
            resume=True,
            val_batches=1,
            **{**TINY, "batch_size": 2, "previews": 0},
        )
    )
    assert res["epochs_done"] == e + 1
    assert read_checkpoint(str(out / "last.pt"))["epoch"] == e + 1


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_gloo_processes(tmp_path, demo_file, subprocess_env):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "models_genesis",
        "pretrain",
        "--data",
        demo_file("ct_abdomen.nii.gz"),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--steps-per-epoch",
        "3",
        "--batch-size",
        "2",
        "--cube",
        "16",
        "16",
        "16",
        "--width",
        "4",
        "--device",
        "cpu",
        "--val-batches",
        "1",
        "--previews",
        "1",
        "--log-every",
        "1",
    ]
    p = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "world size 2" in p.stdout
    # only rank 0 prints progress: one line per step and epoch
    assert p.stdout.count("epoch 1/2 [") == 3
    ck = read_checkpoint(str(out / "last.pt"))
    assert ck["epoch"] == 2 and ck["step"] == 6
    assert not any(k.startswith("module.") for k in ck["model"])
    assert [h["epoch"] for h in _lines(out / "metrics.jsonl")] == [0, 1, 2]
    load_model(str(out / "best.pt"))


def _spy_grid(monkeypatch):
    """Record the arrays every restoration_grid call gets (and still draw the picture)."""
    from models_genesis import plots

    calls, real = [], plots.restoration_grid

    def spy(inputs, outputs, targets, path, **kw):
        calls.append((np.array(inputs), np.array(outputs), np.array(targets)))
        return real(inputs, outputs, targets, path, **kw)

    monkeypatch.setattr(plots, "restoration_grid", spy)
    return calls


def test_previews_span_several_batches_through_the_cli(tmp_path, demo_file, monkeypatch, capsys):
    # the reported case: --batch-size 2 below the default 4 previews, 4 validation batches
    from models_genesis.cli import main
    from models_genesis.pretrain import batch_stats_eval

    calls = _spy_grid(monkeypatch)
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
                "1",
                "--steps-per-epoch",
                "1",
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    ), capsys.readouterr().err
    assert (out / "restorations.png").read_bytes()[:4] == b"\x89PNG"
    inp, pred, tgt = calls[-1]
    assert inp.shape == pred.shape == tgt.shape == (4, 16, 16, 16)
    # each preview is the prediction made in its own validation batch of 2 (batch statistics), as
    # the validation loss sees it: recompute with the saved model
    model = load_model(str(out / "last.pt"))
    x = torch.from_numpy(inp)[:, None]
    with torch.no_grad(), batch_stats_eval(model):
        want = torch.cat([model(x[i : i + 2]) for i in (0, 2)])[:, 0].numpy()
    assert np.allclose(pred, want, atol=1e-5)
    assert not np.allclose(pred[:2], pred[2:])


def test_previews_are_capped_by_the_validation_cubes(tmp_path, demo_file, monkeypatch):
    calls = _spy_grid(monkeypatch)
    pretrain(
        PretrainConfig(
            data=[demo_file("ct_abdomen.nii.gz")],
            out=str(tmp_path),
            epochs=1,
            steps_per_epoch=1,
            val_batches=2,
            **{**TINY, "batch_size": 1, "previews": 3},
        )
    )
    assert [c[1].shape[0] for c in calls] == [2]  # 2 validation cubes < 3 previews
    assert all(len(c[0]) == len(c[1]) == len(c[2]) for c in calls)
