"""2D (--dims 2): UNet2D (parameter count, the 3D key names and kernel shapes without depth, the
2D/3D weight mismatch), PNG (8/16-bit, RGB), JPEG and label-image reading and their errors, that
patches from NIfTI volumes are windows of single axial slices, 2D pretraining on PNGs and on CT
slices (lowering the validation loss), fine-tuning on NIfTI slices from the 2D weights, prediction
on NIfTI and PNG, and the 2D usage errors."""

import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch

from models_genesis import (
    BatchStatsNorm2d,
    CheckpointError,
    UNet2D,
    UNet3D,
    build_model,
    count_parameters,
    load_model,
    load_pretrained,
)
from models_genesis import data
from models_genesis import data2d
from models_genesis.cli import main

PIL = pytest.importorskip("PIL.Image")

TINY2D = [
    "--dims",
    "2",
    "--cube",
    "32",
    "32",
    "--width",
    "4",
    "--device",
    "cpu",
    "--batch-size",
    "4",
    "--log-every",
    "1000",
]


# ------------------------------------------------------------------------------------------------
# model


def test_unet2d_is_the_3d_network_in_2d():
    m2, m3 = UNet2D(), UNet3D()
    assert count_parameters(m2) == 6_821_953
    sd2, sd3 = m2.state_dict(), m3.state_dict()
    assert list(sd2) == list(sd3)  # same blocks, same names, same order
    for k in sd3:  # every kernel is the 3D one without its depth axis
        s3 = tuple(sd3[k].shape)
        want = s3[:-1] if len(s3) == 5 else s3
        assert tuple(sd2[k].shape) == want, k
    # the parameter count follows from the shapes: 3x3 kernels instead of 3x3x3
    assert count_parameters(UNet2D(width=8)) < count_parameters(UNet3D(width=8))


def test_unet2d_forward_shapes_and_errors():
    m = UNet2D(width=4)
    x = torch.rand(2, 1, 32, 24)
    y = m(x).detach()
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    out = UNet2D(in_channels=2, n_classes=3, width=4, activation="softmax")(torch.rand(1, 2, 16, 40))
    assert out.shape == (1, 3, 16, 40)
    assert torch.allclose(out.sum(1), torch.ones(1, 16, 40), atol=1e-5)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        m(torch.rand(1, 1, 16, 16, 8))
    with pytest.raises(ValueError, match="multiple of 8"):
        m(torch.rand(1, 1, 20, 16))
    with pytest.raises(ValueError, match=r"\(B, C, X, Y, Z\)"):
        UNet3D(width=4)(x)
    assert isinstance(UNet2D(width=4, norm="batch_stats").down_tr64.ops[0].bn1, BatchStatsNorm2d)


def test_unet2d_checkpoints_round_trip_and_refuse_3d_weights(tmp_path):
    m = UNet2D(width=4, norm="batch_stats")
    assert m.config()["arch"] == "unet2d"
    again = build_model(m.config())
    assert isinstance(again, UNet2D) and again.norm == "batch_stats"
    torch.save(m.state_dict(), tmp_path / "bare2d.pt")  # a bare 2D state dict: 2D from the kernel rank
    loaded = load_model(str(tmp_path / "bare2d.pt"))
    assert isinstance(loaded, UNet2D) and loaded.width == 4
    for k, v in m.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    torch.save({"state_dict": {"module." + k: v for k, v in UNet3D(width=4).state_dict().items()}}, tmp_path / "w3d.pt")
    with pytest.raises(CheckpointError, match="3D model, the model is 2D"):
        load_pretrained(UNet2D(width=4), str(tmp_path / "w3d.pt"))
    assert isinstance(load_model(str(tmp_path / "w3d.pt")), UNet3D)  # published-format 3D still loads


# ------------------------------------------------------------------------------------------------
# data


def _png(path, arr, mode=None):
    img = PIL.fromarray(arr) if mode is None else PIL.fromarray(arr).convert(mode)
    img.save(path)
    return str(path)


def test_png_and_jpeg_reading(tmp_path):
    rng = np.random.default_rng(0)
    a8 = rng.integers(0, 256, (40, 56), dtype=np.uint8)
    x = data2d.read_image(_png(tmp_path / "g8.png", a8))
    assert x.shape == (40, 56) and x.dtype == np.float32
    np.testing.assert_array_equal(x, a8.astype(np.float32) / 255)
    a16 = rng.integers(0, 65536, (24, 16), dtype=np.uint16)
    np.testing.assert_allclose(data2d.read_image(_png(tmp_path / "g16.png", a16)), a16 / 65535.0, rtol=1e-6)
    rgb = np.stack([a8, a8, a8], -1)  # grey stored as RGB: luminance is the grey value
    np.testing.assert_allclose(data2d.read_image(_png(tmp_path / "rgb.png", rgb)), a8 / 255.0, atol=1 / 255)
    smooth = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (32, 1))
    PIL.fromarray(smooth).save(tmp_path / "s.jpg", quality=95)
    j = data2d.read_image(str(tmp_path / "s.jpg"))
    assert j.shape == (32, 64) and np.abs(j - smooth / 255.0).max() < 0.05
    lab = np.zeros((16, 16), np.uint8)
    lab[4:8, 4:8] = 3
    v = data2d.load_input(_png(tmp_path / "lab.png", lab), label=True)
    assert v.data.shape == (16, 16, 1) and set(np.unique(v.data)) == {0.0, 3.0}  # values, not scaled
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    with pytest.raises(data.VolumeError, match="broken.png: cannot read image"):
        data2d.read_image(str(bad))
    with pytest.raises(data.VolumeError, match="no such file"):
        data2d.read_image(str(tmp_path / "none.png"))
    with pytest.raises(data.VolumeError, match="broken.png"):
        data2d.load_inputs([str(bad), str(tmp_path / "g8.png")], log=None)
    with pytest.warns(UserWarning, match="broken.png"):
        vols = data2d.load_inputs([str(bad), str(tmp_path / "g8.png")], skip_bad=True, log=None)
    assert len(vols) == 1 and vols[0].data.shape == (40, 56, 1) and vols[0].data.dtype == np.float16


def test_find_inputs_takes_images_and_volumes(tmp_path, ct_path):
    (tmp_path / "d").mkdir()
    _png(tmp_path / "d" / "a.png", np.zeros((8, 8), np.uint8))
    _png(tmp_path / "d" / "b.JPG", np.zeros((8, 8), np.uint8))
    (tmp_path / "d" / "notes.txt").write_text("x")
    found = data2d.find_inputs([str(tmp_path / "d"), ct_path])
    assert [os.path.basename(p) for p in found] == ["a.png", "b.JPG", "ct_abdomen.nii.gz"]
    with pytest.raises(data.VolumeError, match=r"\.png/\.jpg"):
        data2d.find_inputs([str(tmp_path / "d" / "*.txt")])


def test_nifti_slice_patches_come_from_one_axial_slice(tmp_path):
    # every voxel value encodes its (x, y, z): a patch is a 2D window of one slice iff its values
    # decode to consecutive rows/cols at one z
    shape = (40, 48, 6)
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    code = (x * 100 + y) * 10 + z
    p = tmp_path / "coded.nii.gz"
    nib.save(nib.Nifti1Image(code.astype(np.float32), np.eye(4)), p)
    vol = data2d.load_input(str(p), data.Preprocessing(modality="mri", mri_norm="minmax"))
    np.testing.assert_allclose(vol.data, code / code.max(), rtol=1e-6)
    vol.data = code.astype(np.float32)  # keep exact codes for decoding
    s = data.CubeSampler([vol], data2d.sampling_cube((16, 24)), torch.Generator().manual_seed(3), min_foreground=0.0)
    b = data2d.drop_slice_axis(s.sample(20), 2)
    assert b.shape == (20, 1, 16, 24)
    zs = set()
    for patch in b[:, 0].numpy().astype(np.int64):
        x0, y0, z0 = patch[0, 0] // 1000, (patch[0, 0] // 10) % 100, patch[0, 0] % 10
        np.testing.assert_array_equal(patch, code[x0 : x0 + 16, y0 : y0 + 24, z0])
        zs.add(int(z0))
    assert len(zs) > 1  # patches come from several slices


# ------------------------------------------------------------------------------------------------
# end to end


@pytest.fixture
def png_folder(tmp_path):
    """Eight 64x72 synthetic 'X-rays' (a bright ellipse on a darker field, noise) as 8-bit PNGs."""
    rng = np.random.default_rng(5)
    d = tmp_path / "xr"
    d.mkdir()
    yy, xx = np.mgrid[:64, :72]
    for k in range(8):
        body = ((yy - 32 - k) / 26.0) ** 2 + ((xx - 36 + k) / 30.0) ** 2 <= 1
        img = np.where(body, 180, 40) + rng.normal(0, 10, body.shape)
        _png(d / f"x{k}.png", np.clip(img, 0, 255).astype(np.uint8))
    return d


def test_pretrain_2d_on_pngs_then_finetune_on_nifti_slices_and_predict(tmp_path, png_folder, lung_ct, capsys):
    out = tmp_path / "pre"
    assert (
        main(
            [
                "pretrain",
                "--data",
                str(png_folder),
                "--out",
                str(out),
                "--epochs",
                "2",
                "--steps-per-epoch",
                "3",
                "--val-batches",
                "1",
                "--previews",
                "2",
                "--quiet",
            ]
            + TINY2D
        )
        == 0
    )
    ck = torch.load(out / "best.pt", weights_only=True)
    assert ck["model_config"]["arch"] == "unet2d" and tuple(ck["config"]["cube"]) == (32, 32)
    assert ck["config"]["dims"] == 2
    hist = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [h["epoch"] for h in hist] == [0, 1, 2] and all(h["val_loss"] > 0 for h in hist)
    assert (out / "restorations.png").stat().st_size > 0
    assert isinstance(load_model(str(out / "best.pt")), UNet2D)
    # resume with another dimensionality is refused
    assert (
        main(
            [
                "pretrain",
                "--data",
                str(png_folder),
                "--out",
                str(out),
                "--resume",
                "--cube",
                "32",
                "32",
                "16",
                "--width",
                "4",
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "--resume: dims" in capsys.readouterr().err

    # fine-tune on the slices of a NIfTI volume (lesion label), from the 2D weights
    ft = tmp_path / "ft"
    assert (
        main(
            [
                "finetune",
                "--images",
                lung_ct.image,
                "--labels",
                lung_ct.labels,
                "--weights",
                str(out / "best.pt"),
                "--out",
                str(ft),
                "--epochs",
                "2",
                "--steps-per-epoch",
                "2",
                "--val-fraction",
                "0.5",
                "--quiet",
            ]
            + TINY2D[:2]
            + ["--device", "cpu", "--batch-size", "4"]
        )
        == 0
    )
    msg = capsys.readouterr().out
    assert "best validation Dice" in msg
    fck = torch.load(ft / "best.pt", weights_only=True)
    assert fck["model_config"]["arch"] == "unet2d" and tuple(fck["config"]["cube"]) == (32, 32)  # from the weights
    rec = json.loads(open(ft / "metrics.jsonl").readline())
    assert 0.0 <= rec["val_dice"] <= 1.0

    # predict: slice by slice over a NIfTI volume (written on its grid), and on a PNG
    mask = tmp_path / "mask.nii.gz"
    assert (
        main(
            [
                "predict",
                "--weights",
                str(ft / "best.pt"),
                "--input",
                lung_ct.image,
                "--output",
                str(mask),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    m = nib.load(str(mask))
    assert m.shape == lung_ct.shape and np.allclose(m.affine, nib.load(lung_ct.image).affine)
    assert set(np.unique(np.asarray(m.dataobj))) <= {0, 1}
    png_out = tmp_path / "mask.png"
    assert (
        main(
            [
                "predict",
                "--weights",
                str(ft / "best.pt"),
                "--input",
                str(png_folder / "x0.png"),
                "--output",
                str(png_out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    got = np.asarray(PIL.open(png_out))
    assert got.shape == (64, 72) and set(np.unique(got)) <= {0, 255}
    rest = tmp_path / "rest.png"  # pretraining weights: the restored image
    assert (
        main(
            [
                "predict",
                "--weights",
                str(out / "best.pt"),
                "--input",
                str(png_folder / "x1.png"),
                "--output",
                str(rest),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert np.asarray(PIL.open(rest)).shape == (64, 72)


def test_pretrain_2d_on_ct_slices_lowers_the_validation_loss(tmp_path):
    from models_genesis.config import PretrainConfig
    from models_genesis.pretrain import pretrain

    res = pretrain(
        PretrainConfig(
            dims=2,
            cube=(32, 32),
            width=4,
            batch_size=8,
            epochs=4,
            steps_per_epoch=6,
            val_batches=2,
            previews=0,
            device="cpu",
            out=str(tmp_path / "p"),
            quiet=True,
        )
    )
    v = [h["val_loss"] for h in res["history"]]
    assert res["config"]["dims"] == 2 and res["best_val"] < v[0]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (
            ["pretrain", "--dims", "2", "--cube", "64", "64", "32"],
            "--cube: expected two positive multiples of 8 with --dims 2",
        ),
        (["pretrain", "--cube", "64", "64"], "--cube: expected three positive multiples of 8 with --dims 3"),
        (["pretrain", "--dims", "4"], "--dims"),
        (["finetune", "--dims", "2", "--cube", "16", "16", "16", "--demo"], "--cube: expected two"),
        (
            ["finetune", "--dims", "2", "--task", "classification", "--images", "a.png", "--labels", "0"],
            "2D fine-tuning is segmentation only",
        ),
    ],
)
def test_bad_2d_usage_gives_one_line_errors(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_2d_finetune_refuses_3d_weights_and_predict_checks_the_output(tmp_path, capsys, png_folder):
    w3 = tmp_path / "w3.pt"
    torch.save({"state_dict": UNet3D(width=4).state_dict()}, w3)
    assert main(["finetune", "--dims", "2", "--demo", "--weights", str(w3), "--out", str(tmp_path / "f")]) == 2
    assert "--dims 2: " + str(w3) + " holds 3D weights" in capsys.readouterr().err
    w2 = tmp_path / "w2.pt"
    torch.save(UNet2D(width=4).state_dict(), w2)
    assert (
        main(
            [
                "predict",
                "--weights",
                str(w2),
                "--input",
                str(png_folder / "x0.png"),
                "--output",
                str(tmp_path / "o.nii.gz"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "a 2D image input gives a PNG" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                "--weights",
                str(w2),
                "--input",
                str(png_folder / "x0.png"),
                "--cube",
                "16",
                "16",
                "8",
                "--output",
                str(tmp_path / "o.png"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "2D checkpoint needs 2 sizes" in capsys.readouterr().err


def test_dims_flag_lands_in_the_config():
    from models_genesis.cli import build_parser, config_from_args
    from models_genesis.config import FinetuneConfig, PretrainConfig, run_out

    a = build_parser().parse_args(["pretrain", "--dims", "2", "--cube", "64", "48"])
    cfg = config_from_args(PretrainConfig, a)
    assert cfg.dims == 2 and cfg.cube == (64, 48)
    assert run_out(cfg) == os.path.join("runs", "pretrain2d")  # the 3D demo's folder stays the 3D one's
    assert run_out(config_from_args(PretrainConfig, build_parser().parse_args(["pretrain"]))) == os.path.join(
        "runs", "pretrain"
    )
    f = config_from_args(FinetuneConfig, build_parser().parse_args(["finetune", "--dims", "2", "--demo"]))
    assert f.dims == 2 and run_out(f) == os.path.join("runs", "finetune2d")
    assert run_out(FinetuneConfig(dims=2, out="mine")) == "mine"
