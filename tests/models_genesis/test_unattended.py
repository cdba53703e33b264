"""Unattended runs on a shared cluster: nothing lost, nothing silently wrong, every failure one line.

Each test reproduces one way a scheduled run went wrong (a concurrent run on one folder, a restart
without --resume, SIGTERM / SIGINT in the middle of a checkpoint write, a full disk, a label on
another grid, NaN flags...) and checks the fix. Command-line behaviour is checked through the real
command (``python -m models_genesis``, what the ``genesis-ops`` script runs) in a subprocess: exit
status, a single stderr line, and what is left in the run folder.
"""

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

import nibabel as nib
import numpy as np
import pytest
import torch

from models_genesis.checkpoint import read_checkpoint, remove_stale_temp_files
from models_genesis.errors import DivergedError, GenesisError, RunLockedError, UsageError
from models_genesis.finetune import FinetuneConfig, finetune
from models_genesis.pretrain import PretrainConfig, pretrain
from models_genesis.runfolder import RunFolder

TINY = dict(batch_size=2, cube=(16, 16, 16), width=4, device="cpu", quiet=True, previews=0, val_batches=1)
TINY_FLAGS = ["--cube", "16", "16", "16", "--width", "4", "--device", "cpu", "--batch-size", "2"]
TINY_FLAGS += ["--val-batches", "1", "--previews", "0"]


def _cli(args, env, cwd, timeout=240, **kw):
    """Run the command line in a subprocess; returns (returncode, stdout, stderr)."""
    p = subprocess.run(
        [sys.executable, "-m", "models_genesis", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )
    return p.returncode, p.stdout, p.stderr


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "\x1b[" not in err
    return lines[0]


def _temp_files(folder) -> list[str]:
    return [n for n in os.listdir(folder) if ".tmp." in n or ".copy." in n]


def _tiny_pretrain(out, ct, **kw):
    return pretrain(PretrainConfig(data=[ct], out=str(out), **{"steps_per_epoch": 1, "seed": 3, **TINY, **kw}))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _pair(tmp_path, label_affine=None, label=None, name="lab.nii.gz"):
    """A small image (soft-tissue HU with a bright box) and its label."""
    rng = np.random.default_rng(0)
    img = rng.normal(40, 20, (32, 32, 16)).astype(np.float32)
    lab = np.zeros((32, 32, 16), np.uint8)
    lab[4:14, 6:20, 3:12] = 1
    img[lab > 0] += 300
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(img, affine), tmp_path / "img.nii.gz")
    lab_aff = affine if label_affine is None else label_affine
    nib.save(nib.Nifti1Image(lab if label is None else label, lab_aff), tmp_path / name)
    return str(tmp_path / "img.nii.gz"), str(tmp_path / name)


# ---------------------------------------------------------------------------------------------
# 1-4: silent garbage


def test_finetune_refuses_a_label_on_another_grid(tmp_path, subprocess_env):
    # same shape, x axis mirrored about the origin: in space the label lies beside the image
    mirrored = np.diag([-1.0, 1.0, 2.0, 1.0])
    img, lab = _pair(tmp_path, label_affine=mirrored, name="lab_wrong_affine.nii.gz")
    rc, _, err = _cli(
        ["finetune", "--images", img, "--labels", lab, "--val-fraction", "0", "--epochs", "1", "--steps-per-epoch", "1"]
        + TINY_FLAGS[:8]
        + ["--out", str(tmp_path / "o")],
        subprocess_env,
        tmp_path,
    )
    line = _one_line(err)
    assert rc == 1 and "lab_wrong_affine.nii.gz" in line and "affine" in line
    assert not (tmp_path / "o" / "last.pt").exists()


def test_a_label_without_foreground_is_refused_even_without_validation_split(tmp_path):
    img, lab = _pair(tmp_path, label=np.zeros((32, 32, 16), np.uint8), name="empty.nii.gz")
    cfg = FinetuneConfig(
        images=[img], labels=[lab], val_fraction=0.0, epochs=1, steps_per_epoch=1, out=str(tmp_path / "o"), **TINY_FT
    )
    with pytest.raises(UsageError, match="empty.nii.gz: no foreground"):
        finetune(cfg)


TINY_FT = dict(batch_size=2, cube=(16, 16, 16), width=4, device="cpu", quiet=True)


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--optimizer", "sgd", "--momentum", "nan"], "--momentum"),
        (["--weight-decay", "inf"], "--weight-decay"),
        (["--lr-gamma", "nan"], "--lr-gamma"),
        (["--hu-window", "0", "inf"], "--hu-window"),
        (["--air-value", "nan"], "--air-value"),
        (["--num-windows", "20000000"], "--num-windows"),
        (["--spacing", "0", "1", "1"], "--spacing"),
    ],
)
def test_numeric_flags_must_be_finite_and_in_range(flags, needle, tmp_path, subprocess_env):
    rc, _, err = _cli(["pretrain", "--out", str(tmp_path / "o"), *flags, *TINY_FLAGS], subprocess_env, tmp_path)
    line = _one_line(err)
    assert rc == 2 and needle in line and "--lr (now" not in line and "config." not in line
    assert not (tmp_path / "o").exists()  # refused before anything was loaded or written


def test_a_non_finite_validation_loss_stops_and_keeps_the_finite_checkpoints(tmp_path, demo_file, monkeypatch):
    from models_genesis import pretrain as pt

    out = tmp_path / "o"
    real = pt._PretrainTask.evaluate
    calls = {"n": 0}

    def evaluate(self):  # epoch 0 and 1 finite, epoch 2 diverged
        calls["n"] += 1
        v = real(self)
        return {**v, "val_loss": float("nan")} if calls["n"] >= 3 else v

    monkeypatch.setattr(pt._PretrainTask, "evaluate", evaluate)
    with pytest.raises(DivergedError, match="validation MSE became nan at epoch 2"):
        _tiny_pretrain(out, demo_file("ct_abdomen.nii.gz"), epochs=3)
    last, best = read_checkpoint(str(out / "last.pt")), read_checkpoint(str(out / "best.pt"))
    assert last["epoch"] == 1 and best["epoch"] == 1 and np.isfinite(best["best_val"])
    assert [json.loads(x)["epoch"] for x in open(out / "metrics.jsonl")] == [0, 1]


# ---------------------------------------------------------------------------------------------
# 6, 7, 9: the run folder


def test_restart_over_a_finished_run_is_refused_without_resume_or_overwrite(tmp_path, demo_file, subprocess_env):
    ct = demo_file("ct_abdomen.nii.gz")
    out = tmp_path / "run"
    _tiny_pretrain(out, ct, epochs=2)
    before = {n: (out / n).read_bytes() for n in ("best.pt", "last.pt", "metrics.jsonl")}
    rc, _, err = _cli(
        ["pretrain", "--data", ct, "--out", str(out), "--epochs", "1", *TINY_FLAGS], subprocess_env, tmp_path
    )
    line = _one_line(err)
    assert rc == 2 and "--resume" in line and "--overwrite" in line and str(out) in line
    assert {n: (out / n).read_bytes() for n in before} == before  # nothing touched
    with pytest.raises(UsageError, match="--resume and --overwrite"):
        _tiny_pretrain(out, ct, epochs=1, resume=True, overwrite=True)
    res = _tiny_pretrain(out, ct, epochs=1, overwrite=True)
    assert res["epochs_done"] == 1 and read_checkpoint(str(out / "last.pt"))["epoch"] == 1
    assert [json.loads(x)["epoch"] for x in open(out / "metrics.jsonl")] == [0, 1]


def test_a_second_run_on_a_locked_folder_names_the_holder_then_sigterm_exits_143(tmp_path, demo_file, subprocess_env):
    ct = demo_file("ct_abdomen.nii.gz")
    out = tmp_path / "run"
    args = ["pretrain", "--data", ct, "--out", str(out), "--epochs", "1000", "--steps-per-epoch", "2", *TINY_FLAGS]
    first = subprocess.Popen(
        [sys.executable, "-m", "models_genesis", *args],
        env=subprocess_env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        t0 = time.time()
        while not (out / "last.pt").exists() and time.time() - t0 < 180 and first.poll() is None:
            time.sleep(0.2)
        assert (out / "last.pt").exists(), first.stderr.read() if first.poll() is not None else "timed out"
        # a second run on the same folder, even with --resume, is refused while the first lives
        rc, _, err = _cli([*args, "--resume"], subprocess_env, tmp_path)
        line = _one_line(err)
        assert rc == 1 and f"PID {first.pid}" in line and str(out) in line
        first.send_signal(signal.SIGTERM)
        rc = first.wait(timeout=60)
        err = first.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        first.stderr.close()
    line = _one_line(err)
    assert rc == 143 and "SIGTERM" in line and "--resume" in line
    assert _temp_files(out) == []
    epoch = read_checkpoint(str(out / "last.pt"))["epoch"]
    assert epoch >= 1
    # the lock went with the process: the requeued run continues
    res = _tiny_pretrain(out, ct, epochs=epoch + 1, resume=True, steps_per_epoch=2)
    assert res["epochs_done"] == epoch + 1


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    with RunFolder(str(tmp_path / "r")):
        assert (tmp_path / "r" / ".lock").read_text().strip() == str(os.getpid())
        with pytest.raises(RunLockedError, match=f"PID {os.getpid()}"):
            with RunFolder(str(tmp_path / "r")):
                pass
    with RunFolder(str(tmp_path / "r")):  # released on exit
        pass


def test_stale_temp_files_of_dead_processes_are_removed_on_resume(tmp_path, demo_file):
    ct = demo_file("ct_abdomen.nii.gz")
    out = tmp_path / "run"
    _tiny_pretrain(out, ct, epochs=1)
    dead, live = _dead_pid(), os.getppid()
    for name in (f".last.pt.tmp.{dead}", f".best.pt.tmp.{dead}", f".best.pt.copy.{dead}", f".last.pt.tmp.{live}"):
        (out / name).write_bytes(b"x" * 1000)
    _tiny_pretrain(out, ct, epochs=2, resume=True)
    assert _temp_files(out) == [f".last.pt.tmp.{live}"]  # a live process's file stays
    assert remove_stale_temp_files(str(out)) == []


# ---------------------------------------------------------------------------------------------
# 8: fine-tuning resumes exactly


@pytest.mark.parametrize("task", ["segmentation", "classification"])
def test_finetune_resume_continues_exactly(task, tmp_path, lung_ct):
    if task == "segmentation":
        kw = dict(images=[lung_ct.image], labels=[lung_ct.labels], val_fraction=0.0, cube=(16, 16, 8))
    else:
        other = tmp_path / "other.nii.gz"
        other.write_bytes(open(lung_ct.image, "rb").read())
        kw = dict(images=[lung_ct.image, str(other)], labels=["0", "1"], task="classification", cube=(16, 16, 8))
        kw["val_fraction"] = 0.0
    common = dict(steps_per_epoch=2, seed=4, **{**TINY_FT, **kw})
    straight = finetune(FinetuneConfig(out=str(tmp_path / "straight"), epochs=3, **common))
    finetune(FinetuneConfig(out=str(tmp_path / "split"), epochs=2, **common))
    resumed = finetune(FinetuneConfig(out=str(tmp_path / "split"), epochs=3, resume=True, **common))
    a = read_checkpoint(straight["last"])
    b = read_checkpoint(resumed["last"])
    assert a["epoch"] == b["epoch"] == 3 and a["step"] == b["step"] == 6
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    la = [(h["epoch"], h["train_loss"]) for h in straight["history"]]
    lb = [(h["epoch"], h["train_loss"]) for h in resumed["history"]]
    assert la == lb
    assert [json.loads(x)["epoch"] for x in open(tmp_path / "split" / "metrics.jsonl")] == [1, 2, 3]
    with pytest.raises(UsageError, match="--resume: .* is a pretrain checkpoint"):
        torch.save({**a, "kind": "pretrain"}, tmp_path / "split" / "last.pt")
        finetune(FinetuneConfig(out=str(tmp_path / "split"), epochs=4, resume=True, **common))


# ---------------------------------------------------------------------------------------------
# 10, 11: signals in the middle of a checkpoint write

# Runs the real command-line entry with torch.save slowed down, so that a signal lands inside the
# write: the marker file says the write has begun.
_SLOW_WRITE = textwrap.dedent(
    """
    import signal, sys, time, torch
    # Python's own SIGINT handler, as under a terminal (a background job may start with SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    marker = sys.argv[1]
    real = torch.save

    class Slow:
        def __init__(self, f):
            self.f = f
        def write(self, b):
            open(marker, "w").close()
            time.sleep(0.05)
            return self.f.write(b)
        def flush(self):
            return self.f.flush()

    torch.save = lambda obj, f, *a, **k: real(obj, Slow(f), *a, **k)
    from models_genesis.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)


@pytest.mark.parametrize("sig, rc, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_during_a_checkpoint_write_exits_in_one_line_and_leaves_no_temp_file(
    sig, rc, word, tmp_path, demo_file, subprocess_env
):
    out, marker = tmp_path / "run", tmp_path / "writing"
    args = ["pretrain", "--data", demo_file("ct_abdomen.nii.gz"), "--out", str(out), "--epochs", "3"]
    p = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITE, str(marker), *args, "--steps-per-epoch", "1", *TINY_FLAGS],
        env=subprocess_env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        t0 = time.time()
        while not marker.exists() and time.time() - t0 < 180 and p.poll() is None:
            time.sleep(0.02)
        assert marker.exists(), p.stderr.read()
        time.sleep(0.1)
        p.send_signal(sig)
        got = p.wait(timeout=60)
        err = p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()
    line = _one_line(err)
    assert got == rc and word in line
    assert _temp_files(out) == []


# ---------------------------------------------------------------------------------------------
# 12, 13: one line, never a traceback


def test_out_that_is_a_file_or_under_one_gives_one_line(tmp_path, demo_file, subprocess_env):
    f = tmp_path / "afile"
    f.write_text("x")
    ct = demo_file("ct_abdomen.nii.gz")
    for out in (f, f / "sub"):
        rc, _, err = _cli(
            ["pretrain", "--data", ct, "--out", str(out), "--epochs", "1", *TINY_FLAGS], subprocess_env, tmp_path
        )
        line = _one_line(err)
        assert rc == 2 and str(f) in line and "--out" in line
    img, lab = _pair(tmp_path)
    rc, _, err = _cli(
        ["finetune", "--images", img, "--labels", lab, "--out", str(f / "sub"), *TINY_FLAGS[:8]],
        subprocess_env,
        tmp_path,
    )
    assert rc == 2 and str(f) in _one_line(err)


def test_a_file_size_limit_during_a_checkpoint_write_gives_one_line(tmp_path, demo_file, subprocess_env):
    out, st = tmp_path / "run", tmp_path / "store"
    # the store first, without the limit: the limit is then met by the first checkpoint write
    rc, _, err = _cli(
        ["preprocess", demo_file("ct_abdomen.nii.gz"), "--out", str(st), "--quiet"], subprocess_env, tmp_path
    )
    assert rc == 0, err

    def limit():  # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))

    rc, _, err = _cli(
        ["pretrain", "--data", str(st), "--out", str(out), "--epochs", "2", *TINY_FLAGS],
        subprocess_env,
        tmp_path,
        preexec_fn=limit,
    )
    line = _one_line(err)
    assert rc == 1 and os.strerror(errno.EFBIG) in line and "MiB free" in line and str(out) in line
    assert _temp_files(out) == []


def test_absurd_width_or_spacing_is_refused_before_loading(tmp_path, demo_file, subprocess_env):
    ct = demo_file("ct_abdomen.nii.gz")
    for flags, needle in (
        (["--width", "100000"], "--width 100000"),
        (["--spacing", "0.01", "0.01", "0.01"], "--spacing"),
    ):
        argv = ["pretrain", "--data", ct, "--out", str(tmp_path / "o"), "--epochs", "1", *TINY_FLAGS, *flags]
        rc, _, err = _cli(argv, subprocess_env, tmp_path)
        line = _one_line(err)
        assert rc == 2 and needle in line and "GiB" in line


def test_resume_from_a_checkpoint_that_cannot_continue_the_run_gives_one_line(tmp_path, demo_file, subprocess_env):
    ct = demo_file("ct_abdomen.nii.gz")
    out = tmp_path / "run"
    _tiny_pretrain(out, ct, epochs=1)
    ck = read_checkpoint(str(out / "last.pt"))
    cases = {
        "finetune": {**ck, "kind": "finetune-segmentation"},
        "published": {"state_dict": ck["model"]},
        "no-optimizer": {k: v for k, v in ck.items() if k != "optimizer"},
    }
    for name, obj in cases.items():
        torch.save(obj, out / "last.pt")
        argv = ["pretrain", "--data", ct, "--out", str(out), "--epochs", "2", "--resume", *TINY_FLAGS]
        rc, _, err = _cli(argv, subprocess_env, tmp_path)
        line = _one_line(err)
        assert rc == 2 and "--resume" in line and str(out / "last.pt") in line, name
        assert "KeyError" not in line


def test_checkpoint_load_errors_say_what_was_wrong_without_advising_to_disable_the_protection(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"model": Evil()}))
    torch.save({"model": Evil()}, tmp_path / "evil_zip.pt")
    (tmp_path / "junk.pt").write_bytes(os.urandom(4096))
    for name in ("evil.pt", "evil_zip.pt", "junk.pt"):
        with pytest.raises(GenesisError) as e:
            read_checkpoint(str(tmp_path / name))
        msg = str(e.value)
        assert len(msg.splitlines()) == 1 and name in msg, msg
        assert "weights_only" not in msg and "Re-running" not in msg and "\x1b[" not in msg, msg
        if name == "evil_zip.pt":  # torch's format: the unpickler reaches the global and names it
            assert "unsupported global" in msg and "system" in msg and "not a genesis-ops checkpoint" in msg, msg


# ---------------------------------------------------------------------------------------------
# 14: minor


def test_predict_refuses_a_folder_or_a_non_nifti_output(tmp_path, demo_file, subprocess_env):
    from models_genesis import UNet3D

    torch.save({"state_dict": UNet3D(width=4).state_dict()}, tmp_path / "w.pt")
    (tmp_path / "dir").mkdir()
    for output in (tmp_path / "dir", tmp_path / "mask.txt"):
        argv = ["predict", "--weights", str(tmp_path / "w.pt"), "--input", demo_file("ct_abdomen.nii.gz")]
        rc, _, err = _cli([*argv, "--output", str(output), "--device", "cpu"], subprocess_env, tmp_path)
        assert rc == 2 and "--output" in _one_line(err)
    assert sorted(os.listdir(tmp_path)) == ["dir", "w.pt"] and os.listdir(tmp_path / "dir") == []


def test_skip_bad_warns_once_and_quiet_silences_it(tmp_path, demo_file, capsys, recwarn):
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(b"not a volume")
    ct = demo_file("ct_abdomen.nii.gz")
    for quiet, expected in ((False, 1), (True, 0)):
        out = tmp_path / f"run{quiet}"
        pretrain(
            PretrainConfig(
                data=[str(bad), ct],
                out=str(out),
                epochs=1,
                steps_per_epoch=1,
                skip_bad=True,
                **{**TINY, "quiet": quiet},
            )
        )
        captured = capsys.readouterr()
        assert (captured.out + captured.err).count("skipping") == expected
    assert not [w for w in recwarn if "skipping" in str(w.message)]


def test_evaluate_refuses_a_ct_as_the_prediction_in_one_line(tmp_path, demo_file, subprocess_env):
    ct = demo_file("ct_abdomen.nii.gz")
    rc, _, err = _cli(["evaluate", "--pred", ct, "--labels", ct, "--device", "cpu"], subprocess_env, tmp_path)
    line = _one_line(err)
    assert rc == 1 and "not a label mask" in line and "ct_abdomen.nii.gz" in line


def test_finetune_refuses_a_ct_as_the_labels_in_one_line(tmp_path, demo_file, subprocess_env):
    ct = demo_file("ct_abdomen.nii.gz")
    argv = ["finetune", "--images", ct, "--labels", ct, "--out", str(tmp_path / "f"), *TINY_FLAGS[:8]]
    rc, _, err = _cli(argv, subprocess_env, tmp_path)
    line = _one_line(err)
    assert rc == 1 and "not a label mask" in line and "ct_abdomen.nii.gz" in line
    assert not (tmp_path / "f" / "last.pt").exists()


# ---------------------------------------------------------------------------------------------
# 4: preprocessing that destroys the data


def test_a_nan_volume_is_refused_and_a_constant_one_named_in_a_warning(tmp_path, demo_file, subprocess_env, capsys):
    nan = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(np.full((40, 40, 24), np.nan, np.float32), np.eye(4)), nan)
    rc, _, err = _cli(
        ["pretrain", "--data", str(nan), "--out", str(tmp_path / "o"), *TINY_FLAGS], subprocess_env, tmp_path
    )
    line = _one_line(err)
    assert rc == 1 and "nan.nii.gz" in line and "NaN" in line
    zero = tmp_path / "zero.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((40, 40, 24), np.float32), np.eye(4)), zero)
    ct = demo_file("ct_abdomen.nii.gz")
    cfg = PretrainConfig(data=[str(zero), ct], out=str(tmp_path / "z"), epochs=1, steps_per_epoch=1, min_foreground=0.0)
    pretrain(replace_quiet(cfg))
    out = capsys.readouterr().out
    assert "zero.nii.gz: constant after preprocessing" in out and out.count("constant after preprocessing") == 1
    # a 0..255 label map given as a CT: windowed as HU it is not constant, but has a handful of values
    labels = tmp_path / "labels.nii.gz"
    lab = np.zeros((40, 40, 24), np.int16)
    lab[5:30, 5:30, 4:20] = 1
    lab[10:20, 10:20, 8:16] = 255
    nib.save(nib.Nifti1Image(lab, np.eye(4)), labels)
    cfg = PretrainConfig(
        data=[str(labels), ct], out=str(tmp_path / "l"), epochs=1, steps_per_epoch=1, min_foreground=0.0
    )
    pretrain(replace_quiet(cfg))
    out = capsys.readouterr().out
    assert "labels.nii.gz: only 3 distinct values; a label map rather than a CT?" in out
    assert "ct_abdomen.nii.gz: only" not in out


def replace_quiet(cfg):
    from dataclasses import replace

    return replace(cfg, **{**TINY, "quiet": False})


# ---------------------------------------------------------------------------------------------
# 5: MONAI transforms state their input contract


def test_monai_transforms_require_channel_first_and_warn_once_on_out_of_range_values():
    pytest.importorskip("monai")
    from genesis_ops.monai import RandModelsGenesis, RandModelsGenesisd

    t = RandModelsGenesis()
    for shape in ((32, 32, 16), (32, 32, 16, 1)):
        with pytest.raises(ValueError, match="channel"):
            t(np.random.rand(*shape).astype(np.float32))
    with pytest.raises(ValueError, match="channel"):
        RandModelsGenesisd("image")({"image": np.random.rand(32, 32, 16).astype(np.float32)})
    inp, tgt = t(np.random.rand(1, 32, 32, 16).astype(np.float32))
    assert inp.shape == tgt.shape == (1, 32, 32, 16)
    with pytest.warns(UserWarning, match="outside value_range"):
        t(np.random.rand(1, 16, 16, 16).astype(np.float32) * 1000)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t(np.random.rand(1, 16, 16, 16).astype(np.float32) * 1000)  # once per transform


def test_a_full_disk_during_a_later_write_keeps_the_previous_checkpoint(tmp_path, demo_file, capsys, monkeypatch):
    from models_genesis.cli import main

    out = tmp_path / "run"
    real = torch.save
    saves = {"n": 0}

    class Full:  # the disk fills up in the middle of the third checkpoint write
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, b):
            self.written += len(b)
            if self.written > 100_000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(b)

    def save(obj, f, *a, **k):
        saves["n"] += 1
        return real(obj, Full(f) if saves["n"] >= 3 else f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    argv = ["pretrain", "--data", demo_file("ct_abdomen.nii.gz"), "--out", str(out), "--epochs", "3", "--quiet"]
    assert main([*argv, "--steps-per-epoch", "1", *TINY_FLAGS]) == 1
    line = _one_line(capsys.readouterr().err)
    assert os.strerror(errno.ENOSPC) in line and "MiB free" in line and str(out) in line
    monkeypatch.setattr(torch, "save", real)
    assert read_checkpoint(str(out / "last.pt"))["epoch"] >= 1  # the previous complete checkpoint
    assert _temp_files(out) == []


def test_a_read_only_run_folder_gives_one_line(tmp_path, demo_file, capsys, monkeypatch):
    from models_genesis import runfolder
    from models_genesis.cli import main

    def read_only(path, *a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(runfolder.os, "makedirs", read_only)
    out = tmp_path / "ro"
    argv = ["pretrain", "--data", demo_file("ct_abdomen.nii.gz"), "--out", str(out), "--epochs", "1", *TINY_FLAGS]
    assert main(argv) == 1
    line = _one_line(capsys.readouterr().err)
    assert os.strerror(errno.EROFS) in line and str(out) in line


def test_an_interrupted_figure_or_file_write_leaves_the_old_file_and_no_temporary(tmp_path):
    """SIGTERM can land while a PNG, a NIfTI or a JSON file is being written (it did, in CI, in the
    middle of loss_curve.png): the old file stays whole and no temporary is left beside it."""
    import pathlib

    from models_genesis import plots
    from models_genesis.atomic import replacing

    png = tmp_path / "loss_curve.png"
    plots.loss_curve([{"epoch": 0, "val_loss": 0.5}, {"epoch": 1, "train_loss": 0.4}], str(png))
    before = png.read_bytes()
    import matplotlib.figure

    real = matplotlib.figure.Figure.savefig

    def half_then_sigterm(self, fname, *a, **kw):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG half")
        raise KeyboardInterrupt  # what the SIGTERM handler raises, mid-write

    matplotlib.figure.Figure.savefig = half_then_sigterm
    try:
        with pytest.raises(KeyboardInterrupt):
            plots.loss_curve([{"epoch": 0, "val_loss": 0.3}], str(png))
    finally:
        matplotlib.figure.Figure.savefig = real
    assert png.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["loss_curve.png"]
    out = tmp_path / "summary.json"
    with pytest.raises(OSError):
        with replacing(str(out)) as tmp:
            pathlib.Path(tmp).write_text("{")
            raise OSError("disk full")
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["loss_curve.png"]
    with replacing(str(out)) as tmp:
        pathlib.Path(tmp).write_text("{}")
    assert out.read_text() == "{}" and sorted(os.listdir(tmp_path)) == ["loss_curve.png", "summary.json"]
