"""The fine-tuning demo's multi-seed summary, its comparison line and its pictures."""

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from models_genesis import UNet3D, plots
from models_genesis.cli import main
from models_genesis.data import split_one_volume
from models_genesis.demo import compare, segmentation_picture, spread, summarise, verdict, write_summary


def test_spread_is_mean_min_max_and_sample_std():
    s = spread([0.5, 0.7, 0.6])
    assert s["mean"] == pytest.approx(0.6) and s["min"] == 0.5 and s["max"] == 0.7
    assert s["std"] == pytest.approx(0.1)  # sqrt(((-.1)^2 + .1^2 + 0) / 2)
    assert spread([0.3])["std"] == 0.0
    assert all(math.isnan(v) for v in spread([0.3, float("nan")]).values())


def test_summary_arithmetic_and_json(tmp_path):
    runs = {
        "pretrained": [(0, [0.2, 0.6]), (1, [0.4, 0.7]), (2, [0.3, 0.5])],
        "scratch": [(0, [0.1, 0.65]), (1, [0.2, 0.6]), (2, [0.15, 0.55])],
    }
    s = summarise(runs)
    assert s["pretrained"]["seeds"] == [0, 1, 2]
    assert s["pretrained"]["val_dice"] == [[0.2, 0.6], [0.4, 0.7], [0.3, 0.5]]
    assert s["pretrained"]["final"] == [0.6, 0.7, 0.5] and s["scratch"]["final"] == [0.65, 0.6, 0.55]
    assert s["pretrained"]["per_epoch"][0]["mean"] == pytest.approx(0.3)
    assert s["scratch"]["per_epoch"][1]["min"] == pytest.approx(0.55)
    assert s["scratch"]["final_spread"]["max"] == pytest.approx(0.65)
    # epoch 1: +0.1, +0.2, +0.15 in every seed; the end: -0.05, +0.1, -0.05 (signs disagree)
    assert s["comparison"] == (
        "pretrained vs scratch over 3 seeds, validation Dice after epoch 1: pretrained ahead in all 3 seeds "
        "by 0.150 (range +0.100..+0.200); at the end (epoch 2): within seed noise (the seeds disagree in sign; "
        "pretrained - scratch -0.050..+0.100)"
    )
    p = tmp_path / "summary.json"
    write_summary({**s, "x": float("nan")}, str(p))
    back = json.loads(p.read_text())
    assert back["pretrained"]["val_dice"] == s["pretrained"]["val_dice"] and back["x"] is None
    with pytest.raises(ValueError, match="different seeds"):
        summarise({"pretrained": runs["pretrained"], "scratch": runs["scratch"][:2]})
    with pytest.raises(ValueError, match="same, non-zero number of epochs"):
        summarise({"pretrained": [(0, [0.1]), (1, [0.1, 0.2])], "scratch": [(0, [0.1]), (1, [0.1])]})


@pytest.mark.parametrize(
    "diffs, expected",
    [
        ([0.1, 0.2, 0.05], "pretrained ahead in all 3 seeds by 0.117"),
        ([-0.1, -0.2, -0.05, -0.01], "scratch ahead in all 4 seeds by 0.090"),
        ([0.1, -0.2, 0.05], "within seed noise (the seeds disagree in sign"),
        ([0.1, 0.0, 0.05], "within seed noise (the seeds disagree in sign"),  # a tie is no lead
        ([0.3, 0.2], "within seed noise (only 2 seed(s)"),  # too few seeds to claim a lead
        ([0.3, float("nan"), 0.1], "undefined"),
    ],
)
def test_verdict_never_claims_a_lead_the_seeds_do_not_all_show(diffs, expected):
    assert verdict(diffs).startswith(expected)


def test_compare_pairs_seeds_and_reads_the_first_and_last_epoch():
    line = compare([[0.5, 0.9, 0.6]] * 3, [[0.4, 0.1, 0.7]] * 3)
    assert "after epoch 1: pretrained ahead in all 3 seeds by 0.100" in line
    assert "at the end (epoch 3): scratch ahead in all 3 seeds by 0.100" in line
    assert "epoch 2" not in line  # the middle epoch is not quoted
    with pytest.raises(ValueError):
        compare([[0.5]], [])


def test_seg_overlay_colours_each_case():
    pred = np.array([[1, 1], [0, 0]])
    lab = np.array([[1, 0], [1, 0]])
    rgba = plots.seg_overlay(pred, lab)
    assert rgba.shape == (2, 2, 4)
    assert tuple(rgba[0, 0]) == pytest.approx(plots.BOTH_RGBA)
    assert tuple(rgba[0, 1]) == pytest.approx(plots.PRED_RGBA)
    assert tuple(rgba[1, 0]) == pytest.approx(plots.LABEL_RGBA)
    assert rgba[1, 1, 3] == 0  # transparent where neither


def test_pick_slices_spreads_over_the_labelled_slices():
    m = np.zeros((4, 4, 20))
    m[:, :, 5:15] = 1
    ks = plots.pick_slices(m, 3)
    assert len(ks) == 3 and all(5 <= k < 15 for k in ks) and ks == sorted(set(ks))
    assert plots.pick_slices(np.zeros((4, 4, 9)), 3) == [2, 4, 6]


def _png(path):
    with Image.open(path) as im:
        return im.mode, im.size


def test_demo_pictures_have_one_panel_per_slice_and_column(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.random((1, 40, 30, 12)).astype(np.float32)
    lab = np.zeros((40, 30, 12), np.float32)
    lab[10:20, 10:20, 3:9] = 1
    prob = np.zeros_like(lab)
    prob[12:22, 10:20, 3:9] = 0.9
    preds = {"pretrained": [("v", img, lab, prob)], "scratch": [("v", img, lab, prob * 0.5)]}
    p3 = tmp_path / "seg3d.png"
    segmentation_picture(preds, str(p3), dims=3)
    p2 = tmp_path / "seg2d.png"
    segmentation_picture(preds, str(p2), dims=2)  # 2D: patches around the label
    one = np.zeros_like(lab)
    one[10:20, 10:20, 5] = 1  # a label on one slice: one row
    p1 = tmp_path / "seg1.png"
    segmentation_picture({k: [("v", img, one, prob)] for k in preds}, str(p1), dims=3)
    (m3, (w3, h3)), (m2, (_w2, h2)), (_, (w1, h1)) = _png(p3), _png(p2), _png(p1)
    assert m3 in ("RGB", "RGBA") and m2 in ("RGB", "RGBA")
    # one column per entry (label, 2 arms): the same width; one row per slice: 3 rows are taller
    assert abs(w3 - w1) < 0.05 * w1 and h3 > 2 * h1 * 0.8 and h2 > 2 * h1 * 0.8
    # the overlaid colours are in the picture: the label-only green of the scratch arm's empty mask
    arr = np.asarray(Image.open(p3).convert("RGB")).astype(int)
    assert (np.abs(arr - np.array([128, 230, 51])).sum(-1) < 90).any() or (arr[..., 1] - arr[..., 0] > 60).any()
    curves = tmp_path / "curves.png"
    plots.dice_curves(
        summarise({"pretrained": [(0, [0.2, 0.5]), (1, [0.3, 0.6])], "scratch": [(0, [0.1, 0.4]), (1, [0.2, 0.5])]}),
        str(curves),
    )
    assert _png(curves)[1][0] > 300


def test_split_with_the_image_skips_a_side_full_of_unlabelled_lookalikes():
    # a bright structure along z; at low z there are also many bright unlabelled voxels (a "pelvis")
    img = np.zeros((24, 24, 60), np.float32)
    lab = np.zeros_like(img)
    img[10:14, 10:14, :] = 1.0
    lab[10:14, 10:14, :] = 1
    img[:, :, :15] = np.where(lab[:, :, :15] > 0, 1.0, 0.0)
    img[0:10, 0:24, :15] = 1.0  # lookalikes only at the low end
    plain = split_one_volume(lab, (8, 8, 8), 0.2)
    aware = split_one_volume(lab, (8, 8, 8), 0.2, image=img)
    assert aware.axis == 2 and aware.val[2].start > aware.train[2].stop  # validation at the high end
    assert aware.val[2].stop == 60
    # both keep the gap and the voxel rule: no overlap of training and validation
    for sp in (plain, aware):
        t, v = sp.train[sp.axis], sp.val[sp.axis]
        assert t.stop + sp.gap <= v.start or v.stop + sp.gap <= t.start


def test_predict_png_on_tiny_data(tmp_path, capsys):
    w = tmp_path / "w.pt"
    torch.save(UNet3D(width=4).state_dict(), w)  # published-format weights: a restoration model
    vol = (np.random.default_rng(1).random((24, 20, 16)) * 1000 - 500).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii.gz")
    args = ["predict", "--weights", str(w), "--input", str(tmp_path / "v.nii.gz"), "--device", "cpu"]
    args += ["--output", str(tmp_path / "o.nii.gz"), "--cube", "16", "16", "16", "--png", str(tmp_path / "o.png")]
    assert main(args) == 0
    mode, (wd, ht) = _png(tmp_path / "o.png")
    assert mode in ("RGB", "RGBA") and wd > ht  # input and output of 2 slices in one row
