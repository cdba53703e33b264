"""The `genesis-ops` command line: every flag in --help, one-line errors for bad flags and bad files
(exit status 2 and 1), --skip-bad, `info` and `preview`, the demo's pretrain -> finetune -> predict
through the command line, and the `python -m models_genesis` entry point."""

import gzip
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from models_genesis.cli import build_parser, main
from models_genesis.checkpoint import read_checkpoint

TINY = ["--cube", "16", "16", "16", "--width", "4", "--device", "cpu", "--batch-size", "2"]


def _subparsers(parser):
    for a in parser._actions:
        if a.__class__.__name__ == "_SubParsersAction":
            return a.choices
    raise AssertionError("no subcommands")


def test_every_flag_is_in_help(capsys):
    parser = build_parser()
    subs = _subparsers(parser)
    assert set(subs) == {"pretrain", "finetune", "predict", "evaluate", "preprocess", "preview", "info"}
    for name, sp in subs.items():
        assert main([name, "--help"]) == 0
        text = capsys.readouterr().out
        for action in sp._actions:
            for opt in action.option_strings:
                assert opt in text, (name, opt)
            if action.option_strings and action.help is not None:
                assert action.help.strip(), (name, action.option_strings)
    for flag in (
        "--data",
        "--out",
        "--epochs",
        "--steps-per-epoch",
        "--batch-size",
        "--cube",
        "--width",
        "--device",
        "--seed",
        "--resume",
    ):
        assert flag in subs["pretrain"].format_help()
    for flag in ("--task", "--labels", "--weights", "--demo"):
        assert flag in subs["finetune"].format_help()
    assert main(["--help"]) == 0
    assert "pretrain" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["pretrain", "--epochs", "0"], "--epochs"),
        (["pretrain", "--cube", "30", "32", "32"], "--cube"),
        (["pretrain", "--cube", "32", "32"], "--cube"),
        (["pretrain", "--shuffle-p", "1.5"], "--shuffle-p"),
        (["pretrain", "--device", "tpu"], "--device"),
        (["pretrain", "--bogus"], "--bogus"),
        (["pretrain", "--lr", "-1"], "--lr"),
        (["predict", "--weights", "w.pt"], "--input"),
        (["finetune", "--task", "detection"], "--task"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_bad_flags_give_one_line_errors(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "error" in err


def test_bad_files_give_one_line_errors(tmp_path, capsys, demo_file):
    missing = str(tmp_path / "missing.nii.gz")
    assert main(["pretrain", "--data", missing, "--out", str(tmp_path / "o")] + TINY) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and missing in err
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(gzip.compress(b"\x00" * 400))
    assert main(["pretrain", "--data", str(bad), "--out", str(tmp_path / "o")] + TINY) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"nope")
    assert (
        main(
            [
                "predict",
                "--weights",
                str(junk),
                "--input",
                demo_file("ct_abdomen.nii.gz"),
                "--output",
                str(tmp_path / "p.nii.gz"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(junk) in err
    assert main(["preview", "--input", str(tmp_path / "notes.txt"), "--output", str(tmp_path / "x.png")]) == 1
    assert "notes.txt" in capsys.readouterr().err
    assert main(["pretrain", "--resume", "--out", str(tmp_path / "fresh")] + TINY) == 2
    assert "no checkpoint to resume" in capsys.readouterr().err
    assert main(["finetune", "--out", str(tmp_path / "f")]) == 2
    assert "--images" in capsys.readouterr().err


def test_skip_bad_continues_with_a_warning(tmp_path, capsys, demo_file):
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(b"not gzip")
    rc = main(
        [
            "pretrain",
            "--data",
            str(bad),
            demo_file("ct_abdomen.nii.gz"),
            "--skip-bad",
            "--out",
            str(tmp_path / "o"),
            "--epochs",
            "1",
            "--steps-per-epoch",
            "1",
            "--val-fraction",
            "0",
            "--previews",
            "0",
        ]
        + TINY
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "skipping" in out and "corrupt.nii.gz" in out
    assert read_checkpoint(str(tmp_path / "o" / "last.pt"))["epoch"] == 1


def test_info_and_preview(tmp_path, capsys, demo_file):
    assert main(["info", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["torch"] == torch.__version__ and "build_info" in d and d["demo_data"] is True
    assert main(["info"]) == 0
    assert "genesis_ops" in capsys.readouterr().out
    png = tmp_path / "prev.png"
    assert main(["preview", "--input", demo_file("ct_abdomen.nii.gz"), "--output", str(png), "--device", "cpu"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["preview", "--input", demo_file("ct_abdomen.nii.gz"), "--output", str(png), "--slice", "500"]) == 2


def test_pretrain_finetune_demo_and_predict_through_the_cli(tmp_path, capsys, demo_file):
    pre = tmp_path / "pre"
    # no --data: the bundled demo CT
    assert (
        main(
            [
                "pretrain",
                "--out",
                str(pre),
                "--epochs",
                "1",
                "--steps-per-epoch",
                "2",
                "--val-batches",
                "1",
                "--seed",
                "3",
            ]
            + TINY
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "demo CT (bundled)" in out and "validation MSE" in out
    for f in ("last.pt", "best.pt", "metrics.jsonl", "loss_curve.png", "restorations.png"):
        assert (pre / f).exists(), f
    ft = tmp_path / "ft"
    assert (
        main(
            [
                "finetune",
                "--demo",
                "--weights",
                str(pre / "best.pt"),
                "--out",
                str(ft),
                "--epochs",
                "1",
                "--steps-per-epoch",
                "2",
                "--cube",
                "16",
                "16",
                "16",
                "--batch-size",
                "2",
                "--device",
                "cpu",
                "--seeds",
                "2",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    # two seeds never support "ahead": the line says so
    line = [x for x in out.splitlines() if x.startswith("pretrained vs scratch over 2 seeds")]
    assert len(line) == 1 and "within seed noise (only 2 seed(s)" in line[0], out
    summary = json.loads((ft / "summary.json").read_text())
    for arm in ("pretrained", "scratch"):
        assert summary[arm]["seeds"] == [5, 6] and len(summary[arm]["val_dice"]) == 2
        assert [c[-1] for c in summary[arm]["val_dice"]] == summary[arm]["final"]
        for seed in (5, 6):
            assert (ft / arm / f"seed{seed}" / "best.pt").exists()
    assert summary["comparison"] == line[0]
    assert read_checkpoint(str(ft / "scratch" / "seed5" / "best.pt"))["model_config"]["width"] == 4
    for png in ("finetune_curves.png", "segmentation.png"):
        assert (ft / png).stat().st_size > 0
    # predict with a fine-tuned checkpoint and with a pretraining checkpoint (restoration)
    ct = demo_file("ct_abdomen.nii.gz")
    assert (
        main(
            [
                "predict",
                "--weights",
                str(ft / "pretrained" / "seed5" / "best.pt"),
                "--input",
                ct,
                "--output",
                str(tmp_path / "mask.nii.gz"),
                "--device",
                "cpu",
                "--png",
                str(tmp_path / "mask.png"),
            ]
        )
        == 0
    )
    m = nib.load(str(tmp_path / "mask.nii.gz"))
    with Image.open(tmp_path / "mask.png") as im:  # input and prediction side by side, 3 slices down
        assert im.mode in ("RGB", "RGBA") and im.size[1] > im.size[0]
    assert m.shape == nib.load(ct).shape and m.get_data_dtype() == np.uint8
    assert (
        main(["predict", "--weights", str(pre / "best.pt"), "--input", ct, "--output", str(tmp_path / "restored.nii")])
        == 0
    )
    r = np.asarray(nib.load(str(tmp_path / "restored.nii")).dataobj)
    assert r.dtype == np.float32 and r.shape == nib.load(ct).shape
    assert "wrote" in capsys.readouterr().out


def test_finetune_demo_without_weights_explains(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/pretrain/best.pt here
    assert main(["finetune", "--demo", "--device", "cpu"]) == 2
    assert "genesis-ops pretrain" in capsys.readouterr().err


def test_console_module_entry_point(tmp_path, subprocess_env):
    p = subprocess.run(
        [sys.executable, "-m", "models_genesis", "pretrain", "--epochs", "0"],
        env=subprocess_env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert p.returncode == 2 and "--epochs" in p.stderr and "Traceback" not in p.stderr
