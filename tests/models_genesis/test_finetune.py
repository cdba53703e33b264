"""Fine-tuning and prediction end to end: the metrics, the sliding window covering every voxel,
segmentation from published-format weights with a frozen encoder, segmentation then prediction
(including a reoriented input), label errors, classification learning a separable task, and the
classifier from a pretrained encoder."""

import math

import nibabel as nib
import numpy as np
import pytest
import torch

from models_genesis import UNet3D
from models_genesis.finetune import FinetuneConfig, finetune
from models_genesis.inferers import predict_volume, sliding_window
from models_genesis.losses import dice_bce_loss
from models_genesis.metrics import dice_iou, roc_auc
from models_genesis.checkpoint import read_checkpoint
from models_genesis.utils import UsageError

TINY = dict(batch_size=2, cube=(16, 16, 16), device="cpu", quiet=True)


def test_metrics():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a[:2] = True
    b[1:3] = True
    d, i = dice_iou(a, b)
    assert d == pytest.approx(0.5) and i == pytest.approx(1 / 3)
    assert dice_iou(a, a) == (1.0, 1.0)
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))
    logits = torch.tensor([[[[[10.0, -10.0]]]]])
    assert float(dice_bce_loss(logits, torch.tensor([[[[[1.0, 0.0]]]]]))) < 0.01
    assert float(dice_bce_loss(-logits, torch.tensor([[[[[1.0, 0.0]]]]]))) > 1.5


def test_sliding_window_covers_every_voxel():
    vol = np.random.default_rng(0).random((37, 20, 9)).astype(np.float32)
    m = UNet3D(width=4)
    out = sliding_window(m, vol, (16, 16, 8), overlap=0.5, batch_size=3, fn=lambda model, x: x * 2)
    assert out.shape == vol.shape
    assert np.allclose(out, vol * 2, atol=1e-6)


def _fake_published(path, width=4):
    src = UNet3D(width=width)
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, path)
    return src


def test_segmentation_from_published_weights_with_frozen_encoder(tmp_path, demo_file):
    src = _fake_published(tmp_path / "pub.pt")
    res = finetune(
        FinetuneConfig(
            task="segmentation",
            images=[demo_file("ct_abdomen.nii.gz")],
            labels=[demo_file("ct_abdomen_vertebrae.nii.gz")],
            weights=str(tmp_path / "pub.pt"),
            out=str(tmp_path / "ft"),
            epochs=2,
            steps_per_epoch=2,
            freeze_encoder_epochs=2,
            **TINY,
        )
    )
    assert 0.0 <= res["dice"] <= 1.0 and 0.0 <= res["iou"] <= res["dice"] + 1e-9
    ck = read_checkpoint(res["last"])
    assert ck["kind"] == "finetune-segmentation" and ck["model_config"]["width"] == 4
    sd0 = src.state_dict()
    # frozen encoder weights are unchanged, the decoder moved
    assert torch.equal(ck["model"]["down_tr64.ops.0.conv1.weight"], sd0["down_tr64.ops.0.conv1.weight"])
    assert torch.equal(ck["model"]["down_tr512.ops.1.conv1.weight"], sd0["down_tr512.ops.1.conv1.weight"])
    assert not torch.equal(ck["model"]["up_tr64.ops.1.conv1.weight"], sd0["up_tr64.ops.1.conv1.weight"])
    assert [h["encoder_frozen"] for h in res["history"]] == [True, True]


def test_segmentation_then_predict_end_to_end(tmp_path, demo_file):
    ct, lab = demo_file("ct_abdomen.nii.gz"), demo_file("ct_abdomen_vertebrae.nii.gz")
    res = finetune(
        FinetuneConfig(
            task="segmentation",
            images=[ct],
            labels=[lab],
            width=4,
            out=str(tmp_path / "ft"),
            epochs=2,
            steps_per_epoch=8,
            lr=3e-3,
            fg_fraction=1.0,
            seed=1,
            **{**TINY, "batch_size": 4},
        )
    )
    hist = res["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    out = tmp_path / "pred.nii.gz"
    info = predict_volume(res["best"], ct, str(out), device="cpu", batch_size=8)
    assert info["mask"]
    img, pred = nib.load(ct), nib.load(str(out))
    assert pred.shape == img.shape and np.allclose(pred.affine, img.affine)
    arr = np.asarray(pred.dataobj)
    assert arr.dtype == np.uint8 and set(np.unique(arr)) <= {0, 1}
    # an LPS copy of the input gives the same mask, stored on the LPS grid with the LPS affine
    data = np.asarray(img.dataobj)[::-1, ::-1, :].astype(np.int16)
    aff = img.affine.copy()
    aff[:, :2] *= -1
    aff[:3, 3] = img.affine[:3, :3] @ np.array([img.shape[0] - 1, img.shape[1] - 1, 0]) + img.affine[:3, 3]
    nib.save(nib.Nifti1Image(data, aff), tmp_path / "lps.nii.gz")
    predict_volume(
        res["best"], str(tmp_path / "lps.nii.gz"), str(tmp_path / "pred_lps.nii.gz"), device="cpu", batch_size=8
    )
    p2 = nib.load(str(tmp_path / "pred_lps.nii.gz"))
    assert np.allclose(p2.affine, aff)
    assert np.array_equal(np.asarray(p2.dataobj)[::-1, ::-1, :], arr)
    # probabilities instead of a mask
    predict_volume(res["best"], ct, str(tmp_path / "prob.nii.gz"), threshold=None, batch_size=8)
    prob = np.asarray(nib.load(str(tmp_path / "prob.nii.gz")).dataobj)
    assert prob.dtype == np.float32 and 0 <= prob.min() and prob.max() <= 1
    assert np.array_equal(prob >= 0.5, arr.astype(bool))


def test_label_shape_mismatch_and_missing_labels(tmp_path, demo_file):
    from models_genesis.data import VolumeError

    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), tmp_path / "small.nii.gz")
    with pytest.raises(VolumeError, match="small.nii.gz: label shape"):
        finetune(
            FinetuneConfig(
                images=[demo_file("ct_abdomen.nii.gz")],
                labels=[str(tmp_path / "small.nii.gz")],
                width=4,
                out=str(tmp_path / "o"),
                epochs=1,
                steps_per_epoch=1,
                **TINY,
            )
        )
    with pytest.raises(UsageError, match="--labels"):
        finetune(FinetuneConfig(images=[demo_file("ct_abdomen.nii.gz")], width=4, out=str(tmp_path / "o"), **TINY))


def test_classification_learns_a_separable_task(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for k in range(12):
        y = k % 2
        a = rng.normal(-600, 50, (20, 20, 20)).astype(np.int16)
        if y:
            a[4:16, 4:16, 4:16] = 400  # a bright block
        p = tmp_path / f"v{k}.nii.gz"
        nib.save(nib.Nifti1Image(a, np.eye(4)), p)
        rows.append(f"v{k}.nii.gz,{y}")
    (tmp_path / "cls.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    res = finetune(
        FinetuneConfig(
            task="classification",
            csv=str(tmp_path / "cls.csv"),
            width=4,
            out=str(tmp_path / "cls"),
            epochs=3,
            steps_per_epoch=6,
            val_fraction=0.34,
            **{**TINY, "batch_size": 4},
        )
    )
    assert res["auc"] == pytest.approx(1.0) and 0.0 <= res["accuracy"] <= 1.0
    assert res["history"][-1]["train_loss"] < res["history"][0]["train_loss"]
    ck = read_checkpoint(res["best"])
    assert ck["model_config"]["arch"] == "classifier"
    # multi-class uses cross-entropy
    paths = [str(tmp_path / f"v{k}.nii.gz") for k in range(6)]
    res3 = finetune(
        FinetuneConfig(
            task="classification",
            images=paths,
            labels=["0", "1", "2", "0", "1", "2"],
            width=4,
            out=str(tmp_path / "cls3"),
            epochs=1,
            steps_per_epoch=2,
            val_fraction=0.5,
            **TINY,
        )
    )
    assert read_checkpoint(res3["best"])["model_config"]["n_classes"] == 3
    assert 0 <= res3["accuracy"] <= 1


def test_classifier_from_pretrained_encoder(tmp_path):
    src = _fake_published(tmp_path / "pub.pt")
    rng = np.random.default_rng(1)
    paths = []
    for k in range(4):
        p = tmp_path / f"c{k}.nii.gz"
        nib.save(nib.Nifti1Image(rng.normal(0, 300, (16, 16, 16)).astype(np.int16), np.eye(4)), p)
        paths.append(str(p))
    res = finetune(
        FinetuneConfig(
            task="classification",
            images=paths,
            labels=["0", "1", "0", "1"],
            weights=str(tmp_path / "pub.pt"),
            out=str(tmp_path / "o"),
            epochs=1,
            steps_per_epoch=1,
            freeze_encoder_epochs=1,
            **TINY,
        )
    )
    ck = read_checkpoint(res["last"])
    assert torch.equal(ck["model"]["down_tr256.ops.0.conv1.weight"], src.state_dict()["down_tr256.ops.0.conv1.weight"])
