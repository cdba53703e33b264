"""Multi-channel volumes: small two-modality subjects written as {channel} patterns (and the same
data as 4D NIfTI files): subject grouping, per-channel normalisation, 4D = separate files, each
bad-subject error, shared cube positions, single-channel weight adaptation (equal channels give
the 1-channel output), and a C = 2 pretrain, fine-tune (segmentation and classification) and
predict run through the command line."""

import os
import types

import nibabel as nib
import numpy as np
import pytest
import torch

from models_genesis import UNet3D, load_pretrained
from models_genesis import data
from models_genesis.cli import main
from models_genesis.checkpoint import CheckpointError, adapt_channels, read_checkpoint

SHAPE = (24, 24, 16)
CHANNELS = ("t1", "t2")


def _subject_arrays(rng):
    """T1-like and T2-like images of one head-ish blob with a lesion (bright in T1, dark in T2, on
    different raw scales) and the lesion mask."""
    X, Y, Z = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in SHAPE), indexing="ij")
    body = ((X - 11.5) / 10) ** 2 + ((Y - 11.5) / 10) ** 2 + ((Z - 7.5) / 7) ** 2 <= 1
    c = rng.integers(7, 16, 3)
    lesion = ((X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2) <= 9
    t1 = np.where(body, 600.0, 0.0) + np.where(lesion, 300.0, 0.0) + rng.normal(0, 10, SHAPE) * body
    t2 = np.where(body, 200.0, 0.0) - np.where(lesion, 150.0, 0.0) + rng.normal(0, 5, SHAPE) * body
    return {"t1": t1.astype(np.float32), "t2": t2.astype(np.float32)}, lesion.astype(np.uint8)


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    """Three subjects sub-0i/sub-0i_{t1,t2,seg}.nii.gz (1 mm, stored LPS) and a 4D file per
    subject holding the same two channels."""
    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("brats")
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    subjects = []
    for i in range(3):
        d = root / f"sub-0{i}"
        d.mkdir()
        chans, seg = _subject_arrays(rng)
        for name, arr in chans.items():
            nib.save(nib.Nifti1Image(arr, affine), d / f"sub-0{i}_{name}.nii.gz")
        nib.save(nib.Nifti1Image(seg, affine), d / f"sub-0{i}_seg.nii.gz")
        four = root / f"sub-0{i}_4d.nii.gz"
        nib.save(nib.Nifti1Image(np.stack([chans[c] for c in CHANNELS], axis=-1), affine), four)
        subjects.append(types.SimpleNamespace(dir=str(d), arrays=chans, seg=seg, four=str(four)))
    return types.SimpleNamespace(
        root=str(root),
        subjects=subjects,
        affine=affine,
        pattern=os.path.join(str(root), "sub-*", "sub-*_{channel}.nii.gz"),
        seg=os.path.join(str(root), "sub-*", "sub-*_seg.nii.gz"),
    )


MRI = data.Preprocessing(modality="mri", mri_norm="minmax")


def test_subjects_are_grouped_by_pattern(brats):
    subs = data.find_subjects([brats.pattern], ["t1,t2"])
    assert len(subs) == 3 and all(s.channels == CHANNELS for s in subs)
    s0 = subs[0]
    assert s0.name == os.path.join(brats.root, "sub-00", "sub-00_{channel}.nii.gz")
    assert s0.paths == tuple(os.path.join(brats.root, "sub-00", f"sub-00_{c}.nii.gz") for c in CHANNELS)
    # ** spans any number of folders, as in glob
    deep = data.find_subjects(os.path.join(brats.root, "**", "*_{channel}.nii.gz"), CHANNELS)
    assert [s.paths for s in deep] == [s.paths for s in subs]
    # channel order is the order of the names, not of the files
    assert data.find_subjects(brats.pattern, ["t2", "t1"])[0].paths == s0.paths[::-1]
    with pytest.raises(ValueError, match=r"\{channel\}"):
        data.find_subjects([os.path.join(brats.root, "sub-*", "sub-*_t1.nii.gz")], CHANNELS)
    with pytest.raises(ValueError, match="distinct"):
        data.channel_names(["t1", "t1"])
    with pytest.raises(data.VolumeError, match="no file for any channel"):
        data.find_subjects([os.path.join(brats.root, "nope", "{channel}.nii")], CHANNELS)


def test_channels_are_normalised_each_on_its_own(brats):
    vol = data.load_subject(data.find_subjects(brats.pattern, CHANNELS)[1], MRI)
    assert vol.data.shape == (2,) + SHAPE and vol.channels == 2 and vol.spatial_shape == SHAPE
    assert vol.channel_names == CHANNELS
    for k, c in enumerate(CHANNELS):
        alone = data.load_volume(os.path.join(brats.subjects[1].dir, f"sub-01_{c}.nii.gz"), MRI)
        assert np.array_equal(vol.data[k], alone.data)  # = loading that modality by itself
        assert vol.data[k].min() == 0.0 and vol.data[k].max() == 1.0
    # stored LPS: the canonical (RAS) array flips the first two axes of the stored one
    raw = brats.subjects[1].arrays["t2"][::-1, ::-1]
    assert np.allclose(vol.data[1], (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-6)
    # percentile normalisation and resampling also run per channel
    pre = data.Preprocessing(modality="mri", spacing=(2.0, 2.0, 2.0))
    v2 = data.load_subject(data.find_subjects(brats.pattern, CHANNELS)[1], pre)
    assert v2.data.shape == (2, 12, 12, 8) and np.allclose(np.abs(np.diag(v2.affine)[:3]), 2.0)


def test_a_4d_file_equals_the_separate_channel_files(brats):
    four = data.load_volume(brats.subjects[2].four, MRI)
    sep = data.load_subject(data.find_subjects(brats.pattern, CHANNELS)[2], MRI)
    assert four.channel_names == ("0", "1")
    assert np.array_equal(four.data, sep.data) and np.allclose(four.affine, sep.affine)
    # a volume on its own grid back: a (C, X, Y, Z) array is written as a 4D file on the input's grid
    out = os.path.join(brats.root, "back.nii.gz")
    data.save_like(four.data, four, out)
    back = np.asarray(nib.load(out).dataobj)
    assert back.shape == SHAPE + (2,)
    raw = brats.subjects[2].arrays["t1"]
    assert np.allclose(back[..., 0], (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-6)


def _broken(tmp_path, what):
    """A two-subject pattern whose second subject is broken in one way."""
    rng = np.random.default_rng(0)
    for i in range(2):
        d = tmp_path / f"s{i}"
        d.mkdir()
        for c in CHANNELS:
            shape, aff = SHAPE, np.eye(4)
            if i == 1 and c == "t2" and what == "shape":
                shape = (24, 24, 12)
            if i == 1 and c == "t2" and what == "affine":
                aff = np.diag([1.0, 1.0, 1.5, 1.0])
            if i == 1 and c == "t2" and what == "missing":
                continue
            nib.save(nib.Nifti1Image(rng.random(shape).astype(np.float32), aff), d / f"{c}.nii.gz")
    return str(tmp_path / "s*" / "{channel}.nii.gz"), str(tmp_path / "s1" / "{channel}.nii.gz")


@pytest.mark.parametrize(
    "what, needle", [("missing", "missing channel t2"), ("shape", "has shape"), ("affine", "affine differs")]
)
def test_bad_subjects_give_one_line_errors_naming_the_subject(tmp_path, capsys, what, needle):
    pattern, subject = _broken(tmp_path, what)
    with pytest.raises(data.VolumeError) as e:
        data.load_volumes([pattern], MRI, channels=CHANNELS, log=None)
    assert needle in str(e.value) and subject in str(e.value) and "\n" not in str(e.value)
    rc = main(
        [
            "pretrain",
            "--data",
            pattern,
            "--channels",
            "t1",
            "t2",
            "--modality",
            "mri",
            "--out",
            str(tmp_path / "o"),
            "--cube",
            "16",
            "16",
            "16",
            "--width",
            "4",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and subject in err and needle in err


def test_channel_counts_must_agree_and_patterns_need_names(brats, tmp_path, capsys):
    one = os.path.join(brats.subjects[0].dir, "sub-00_t1.nii.gz")
    with pytest.raises(data.VolumeError, match="1 channel"):
        data.load_volumes([brats.subjects[0].four, one], MRI, log=None)
    rc = main(["pretrain", "--data", brats.pattern, "--out", str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "--channels" in err
    assert main(["pretrain", "--data", brats.pattern, "--channels", "t1", "t1", "--device", "cpu"]) == 2
    assert "--channels" in capsys.readouterr().err


def test_cubes_share_their_position_across_channels(brats):
    vol = data.load_volume(brats.subjects[0].four, MRI)
    vol.data = np.stack([vol.data[0], 1.0 - vol.data[0]])  # channel 1 = 1 - channel 0, voxel by voxel
    cubes = data.CubeSampler([vol], (16, 16, 8), torch.Generator().manual_seed(1), min_foreground=0.0).sample(6)
    assert cubes.shape == (6, 2, 16, 16, 8)
    assert torch.allclose(cubes[:, 1], 1 - cubes[:, 0])
    assert not torch.allclose(cubes[0], cubes[1])
    lab = np.zeros(SHAPE, np.float32)
    lab[5:9, 5:9, 5:9] = 1
    x, y = data.PairSampler([vol.data], [lab], (16, 16, 8), torch.Generator().manual_seed(2), 1.0).sample(4)
    assert x.shape == (4, 2, 16, 16, 8) and y.shape == (4, 1, 16, 16, 8)
    assert torch.allclose(x[:, 1], 1 - x[:, 0]) and (y.sum(dim=(1, 2, 3, 4)) > 0).all()


def test_single_channel_weights_adapt_to_several_channels():
    torch.manual_seed(0)
    one = UNet3D(in_channels=1, n_classes=1, width=4).eval()
    three = UNet3D(in_channels=3, n_classes=3, width=4).eval()
    with pytest.raises(CheckpointError, match="adapt_single_channel"):
        load_pretrained(three, {"state_dict": one.state_dict()})
    load_pretrained(three, {"state_dict": one.state_dict()}, adapt_single_channel=True)
    x = torch.rand(2, 1, 16, 16, 8)
    with torch.no_grad():
        # three equal channels give the single-channel response, restored in every output channel
        assert torch.allclose(three(x.repeat(1, 3, 1, 1, 1)), one(x).repeat(1, 3, 1, 1, 1), atol=1e-5)
    sd = adapt_channels(one.state_dict(), 3)
    assert sd["down_tr64.ops.0.conv1.weight"].shape == (4, 3, 3, 3, 3)
    assert sd["out_tr.final_conv.weight"].shape == (1, 8, 1, 1, 1)  # heads only with n_out
    # weights of another channel count cannot be adapted
    two = UNet3D(in_channels=2, n_classes=1, width=4)
    with pytest.raises(CheckpointError, match="3 input channel"):
        load_pretrained(two, {"state_dict": three.state_dict()}, skip_head=True, adapt_single_channel=True)


def test_pretrain_finetune_predict_with_two_channels(brats, tmp_path, capsys):
    tiny = [
        "--cube",
        "16",
        "16",
        "16",
        "--width",
        "4",
        "--device",
        "cpu",
        "--batch-size",
        "2",
        "--modality",
        "mri",
        "--mri-norm",
        "minmax",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
    ]
    pre = tmp_path / "pre"
    assert (
        main(
            [
                "pretrain",
                "--data",
                brats.pattern,
                "--channels",
                "t1,t2",
                "--out",
                str(pre),
                "--val-batches",
                "1",
                "--previews",
                "3",
            ]
            + tiny
        )
        == 0
    ), capsys.readouterr().err
    assert "2 channels (t1, t2)" in capsys.readouterr().out
    ck = read_checkpoint(str(pre / "best.pt"))
    assert ck["model_config"]["in_channels"] == 2 and ck["model_config"]["n_classes"] == 2
    assert ck["config"]["channels"] == ["t1,t2"]
    ft = tmp_path / "ft"
    assert (
        main(
            [
                "finetune",
                "--images",
                brats.pattern,
                "--channels",
                "t1",
                "t2",
                "--labels",
                brats.seg,
                "--weights",
                str(pre / "best.pt"),
                "--out",
                str(ft),
                "--val-fraction",
                "0.34",
            ]
            + tiny
        )
        == 0
    ), capsys.readouterr().err
    assert "best validation Dice" in capsys.readouterr().out
    assert read_checkpoint(str(ft / "best.pt"))["model_config"]["in_channels"] == 2
    # predict one subject: its {channel} files (names from the checkpoint) or its 4D file, same mask
    subj = os.path.join(brats.subjects[0].dir, "sub-00_{channel}.nii.gz")
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    assert (
        main(
            [
                "predict",
                "--weights",
                str(ft / "best.pt"),
                "--input",
                subj,
                "--output",
                str(a),
                "--probabilities",
                "--device",
                "cpu",
            ]
        )
        == 0
    ), capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                "--weights",
                str(ft / "best.pt"),
                "--input",
                brats.subjects[0].four,
                "--output",
                str(b),
                "--probabilities",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    pa, pb = (np.asarray(nib.load(str(p)).dataobj) for p in (a, b))
    assert pa.shape == SHAPE and np.array_equal(pa, pb)
    assert np.allclose(nib.load(str(a)).affine, brats.affine)
    # the pretraining checkpoint restores both channels: a 4D file
    r = tmp_path / "r.nii.gz"
    assert (
        main(["predict", "--weights", str(pre / "best.pt"), "--input", subj, "--output", str(r), "--device", "cpu"])
        == 0
    )
    assert nib.load(str(r)).shape == SHAPE + (2,)
    # a single-channel input for a two-channel model: one line
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                "--weights",
                str(ft / "best.pt"),
                "--input",
                subj.replace("{channel}", "t1"),
                "--output",
                str(r),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "1 channel(s), but the model" in capsys.readouterr().err


def test_finetune_from_single_channel_weights_and_classification(brats, tmp_path, capsys):
    one = UNet3D(in_channels=1, n_classes=1, width=4)
    w = tmp_path / "published.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in one.state_dict().items()}}, w)
    tiny = [
        "--cube",
        "16",
        "16",
        "16",
        "--device",
        "cpu",
        "--batch-size",
        "2",
        "--modality",
        "mri",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "1",
        "--val-fraction",
        "0.34",
    ]
    fours = [s.four for s in brats.subjects]
    assert (
        main(
            ["finetune", "--images", *fours, "--labels", brats.seg, "--weights", str(w), "--out", str(tmp_path / "seg")]
            + tiny
        )
        == 0
    ), capsys.readouterr().err
    assert "adapted to 2 channels" in capsys.readouterr().out
    # weights of another channel count (3) than the data's (2): one line before any training
    w3 = tmp_path / "three.pt"
    torch.save({"state_dict": UNet3D(in_channels=3, n_classes=1, width=4).state_dict()}, w3)
    assert (
        main(
            [
                "finetune",
                "--images",
                *fours,
                "--labels",
                brats.seg,
                "--weights",
                str(w3),
                "--out",
                str(tmp_path / "seg3"),
            ]
            + tiny
        )
        == 2
    )
    assert "trained on 3 channel(s), the data has 2" in capsys.readouterr().err
    csv = tmp_path / "cls.csv"
    csv.write_text(
        "".join(
            f"{os.path.join(s.dir, os.path.basename(s.dir) + '_{channel}.nii.gz')},{i % 2}\n"
            for i, s in enumerate(brats.subjects)
        )
    )
    assert (
        main(
            [
                "finetune",
                "--task",
                "classification",
                "--csv",
                str(csv),
                "--channels",
                "t1",
                "t2",
                "--weights",
                str(w),
                "--out",
                str(tmp_path / "cls"),
            ]
            + tiny
            # one case of class 1 cannot be on both sides of a stratified split: validate on training
            + ["--val-fraction", "0"]
        )
        == 0
    ), capsys.readouterr().err
    ck = read_checkpoint(str(tmp_path / "cls" / "best.pt"))
    assert ck["model_config"]["arch"] == "classifier" and ck["model_config"]["in_channels"] == 2


def test_2d_refuses_multichannel_inputs_in_one_line(brats, tmp_path, capsys):
    """2D is single-channel: --channels with --dims 2, or a 4D file among 2D inputs (even with
    --skip-bad, which must not silently drop it), or predict --channels with a 2D checkpoint."""
    from models_genesis import UNet2D
    from models_genesis.data2d import SINGLE_CHANNEL_2D

    out = ["--out", str(tmp_path / "o"), "--device", "cpu"]
    w2 = tmp_path / "w2.pt"
    torch.save(UNet2D(width=4).state_dict(), w2)
    cases = [
        (["pretrain", "--dims", "2", "--data", brats.pattern, "--channels", "t1,t2"] + out, SINGLE_CHANNEL_2D),
        (
            ["finetune", "--dims", "2", "--images", brats.pattern, "--channels", "t1", "t2", "--labels", brats.seg]
            + out,
            SINGLE_CHANNEL_2D,
        ),
        (
            ["pretrain", "--dims", "2", "--data", brats.subjects[0].four, "--skip-bad", "--cube", "16", "16"] + out,
            f"{brats.subjects[0].four}: 2 channels; {SINGLE_CHANNEL_2D}",
        ),
        (
            [
                "finetune",
                "--dims",
                "2",
                "--images",
                brats.subjects[0].four,
                "--labels",
                os.path.join(brats.subjects[0].dir, "sub-00_seg.nii.gz"),
                "--cube",
                "16",
                "16",
            ]
            + out,
            f"{brats.subjects[0].four}: 2 channels; {SINGLE_CHANNEL_2D}",
        ),
        (
            [
                "predict",
                "--weights",
                str(w2),
                "--input",
                brats.subjects[0].four,
                "--output",
                str(tmp_path / "p.nii.gz"),
                "--device",
                "cpu",
            ],
            f"{brats.subjects[0].four}: 2 channels; {SINGLE_CHANNEL_2D}",
        ),
        (
            [
                "predict",
                "--weights",
                str(w2),
                "--input",
                os.path.join(brats.subjects[0].dir, "sub-00_{channel}.nii.gz"),
                "--channels",
                "t1",
                "t2",
                "--output",
                str(tmp_path / "p.nii.gz"),
                "--device",
                "cpu",
            ],
            SINGLE_CHANNEL_2D,
        ),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (argv, err)
    assert not os.path.exists(tmp_path / "p.nii.gz")
