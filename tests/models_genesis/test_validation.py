"""Fine-tuning validation that holds what is being learned: a label only in the first slices is
validated on (or stops with the error), a lesion in the middle slices of one volume is validated
on, a too-small one stops before training with a one-line error; whole-volume selection, the
explicit override, stratified classes and the missing-class error; empty/empty = 1; HD95 of
shifted cubes under anisotropic and permuted affines; the `evaluate` command; and best.pt never
chosen on an undefined metric."""

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models_genesis import UNet3D
from models_genesis import data
from models_genesis.cli import main
from models_genesis.checkpoint import CheckpointWriter, checkpoint_payload
from models_genesis.engine import Monitor, TrainStep, fit
from models_genesis.finetune import FinetuneConfig, finetune
from models_genesis.metrics import DiceIoU, dice_iou, evaluate_files, hd95, mask_scores, surface_voxels
from models_genesis.checkpoint import read_checkpoint

TINY = dict(batch_size=2, cube=(16, 16, 16), device="cpu", quiet=True, width=4, epochs=1, steps_per_epoch=1)


def _save(path, arr, zooms=(1.0, 1.0, 1.0), dtype=np.int16):
    nib.save(nib.Nifti1Image(np.asarray(arr).astype(dtype), np.diag([*zooms, 1.0])), str(path))
    return str(path)


def _volume(tmp_path, name, label, seed=0):
    """A CT-like image (soft tissue, brighter where labelled) and its label, saved as NIfTI."""
    rng = np.random.default_rng(seed)
    hu = np.where(label > 0, 200.0, 40.0) + rng.normal(0, 20, label.shape)
    return _save(tmp_path / f"{name}.nii.gz", hu), _save(tmp_path / f"{name}_lab.nii.gz", label, dtype=np.uint8)


def _boxes_disjoint_with_gap(sp, cube):
    a = sp.axis
    t, v = sp.train[a], sp.val[a]
    gap = v.start - t.stop if v.start >= t.stop else t.start - v.stop
    return gap >= cube[a] and all(s == slice(None) for k, s in enumerate(sp.train) if k != a)


# ---------------------------------------------------------------------------------------------- one volume


def test_label_only_in_the_first_slices_is_validated_on(tmp_path):
    lab = np.zeros((48, 40, 32), np.uint8)
    lab[4:45, 10:30, 0:4] = 1  # the first 4 slices only: the old split (last 20 % of z) held none of it
    old_tr, old_va = data.split_regions(lab.shape, 0.2, (16, 16, 16), axis=2)
    assert lab[old_va].sum() == 0
    sp = data.split_one_volume(lab, (16, 16, 16), 0.2)
    assert sp.axis == 0  # the longest axis works, so it is used
    assert lab[sp.val].sum() == sp.val_fg > 0 and lab[sp.train].sum() == sp.train_fg > 0
    assert _boxes_disjoint_with_gap(sp, (16, 16, 16))
    assert sp.train[0].stop - sp.train[0].start >= 16  # whole training cubes
    # end to end: the run validates on those voxels
    img, labp = _volume(tmp_path, "first", lab)
    res = finetune(FinetuneConfig(images=[img], labels=[labp], out=str(tmp_path / "o"), **TINY))
    (case,) = res["history"][-1]["val_cases"]
    assert case["name"] == "first.nii.gz" and case["foreground"] == sp.val_fg


def test_a_label_too_small_to_split_stops_before_training_with_one_line(tmp_path, capsys):
    lab = np.zeros((48, 40, 32), np.uint8)
    lab[2:5, 2:5, 0:2] = 1  # a speck in the first slices: no cut keeps foreground on both sides of a gap
    img, labp = _volume(tmp_path, "speck", lab)
    with pytest.raises(data.SplitError, match="--val-images/--val-labels"):
        finetune(FinetuneConfig(images=[img], labels=[labp], out=str(tmp_path / "o"), **TINY))
    assert not (tmp_path / "o").exists()  # nothing trained, nothing written
    argv = [
        "finetune",
        "--images",
        img,
        "--labels",
        labp,
        "--out",
        str(tmp_path / "c"),
        "--cube",
        "16",
        "16",
        "16",
        "--width",
        "4",
        "--device",
        "cpu",
        "--quiet",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "speck_lab.nii.gz" in err and "--val-images/--val-labels" in err
    assert not (tmp_path / "c").exists()


def test_empty_label_is_an_error_naming_the_file(tmp_path):
    img, labp = _volume(tmp_path, "empty", np.zeros((32, 32, 32), np.uint8))
    with pytest.raises(data.SplitError, match="empty_lab.nii.gz: no foreground"):
        finetune(FinetuneConfig(images=[img], labels=[labp], out=str(tmp_path / "o"), **TINY))


def test_lesion_in_the_middle_slices_of_one_volume_is_validated_on(tmp_path):
    # a lung lesion in small: a lesion in the middle slices, none in the last ones
    shape = (64, 56, 24)
    X, Y, Z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    lab = (((X - 30) / 12.0) ** 2 + ((Y - 28) / 9.0) ** 2 + ((Z - 11) / 4.0) ** 2 <= 1).astype(np.uint8)
    assert lab[:, :, 19:].sum() == 0  # the old validation slices
    img, labp = _volume(tmp_path, "lung", lab)
    cfg = dict(TINY, cube=(8, 8, 8), batch_size=4, epochs=2, steps_per_epoch=2, fg_fraction=1.0)
    res = finetune(FinetuneConfig(images=[img], labels=[labp], out=str(tmp_path / "o"), **cfg))
    sp = data.split_one_volume(lab, (8, 8, 8), 0.2)
    assert sp.axis == 0 and sp.val_fg > 0.1 * lab.sum() and sp.train_fg > 0.4 * lab.sum()
    assert all(r["val_cases"][0]["foreground"] == sp.val_fg for r in res["history"])
    assert 0.0 <= res["dice"] <= 1.0


def test_the_small_lesion_fixture_gives_the_error_or_validates_with_a_given_volume(tmp_path, lung_ct):
    # the fixture's lesion is 7 voxels wide: no one-cube gap fits inside it
    with pytest.raises(data.SplitError, match="ct_lung_lesion.nii.gz: no split.*smaller --cube"):
        finetune(FinetuneConfig(images=[lung_ct.image], labels=[lung_ct.labels], out=str(tmp_path / "o"), **TINY))
    # an explicit validation volume overrides the split: the whole fixture trains
    lab = np.zeros((32, 32, 16), np.uint8)
    lab[10:20, 10:20, 4:10] = 1
    vimg, vlab = _volume(tmp_path, "val", lab)
    res = finetune(
        FinetuneConfig(
            images=[lung_ct.image],
            labels=[lung_ct.labels],
            val_images=[vimg],
            val_labels=[vlab],
            out=str(tmp_path / "p"),
            **TINY,
        )
    )
    (case,) = res["history"][-1]["val_cases"]
    assert case["name"] == "val.nii.gz" and case["foreground"] == lab.sum()


def test_explicit_validation_without_foreground_is_refused(tmp_path, lung_ct):
    vimg, vlab = _volume(tmp_path, "none", np.zeros((32, 32, 16), np.uint8))
    with pytest.raises(data.SplitError, match="--val-labels: .*no foreground"):
        finetune(
            FinetuneConfig(
                images=[lung_ct.image],
                labels=[lung_ct.labels],
                val_images=[vimg],
                val_labels=[vlab],
                out=str(tmp_path / "o"),
                **TINY,
            )
        )
    with pytest.raises(ValueError, match="--val-images and --val-labels"):
        finetune(
            FinetuneConfig(
                images=[lung_ct.image], labels=[lung_ct.labels], val_images=[vimg], out=str(tmp_path / "o"), **TINY
            )
        )


# ---------------------------------------------------------------------------------------------- several volumes


@pytest.mark.parametrize(
    "fg, vf, want_val",
    [
        ([5, 5, 5, 5, 5], 0.2, [4]),  # foreground everywhere: the last volume, as before
        ([5, 5, 5, 0, 0], 0.2, [2]),  # the last volumes are empty: the last one with foreground
        ([5, 5, 0, 0], 0.5, [1, 3]),  # the first validation volume holds foreground, then the end
        ([5, 0, 0, 5], 0.75, [1, 2, 3]),  # volume 0 stays: training needs foreground too
        ([0, 5, 5, 0, 0, 0], 0.2, [2]),
    ],
)
def test_whole_volumes_are_held_out_with_foreground(fg, vf, want_val):
    tr, va = data.choose_validation_volumes(fg, vf, [f"l{i}" for i in range(len(fg))])
    assert va == want_val and sorted(tr + va) == list(range(len(fg)))
    assert sum(fg[i] for i in va) > 0 and sum(fg[i] for i in tr) > 0


def test_whole_volume_split_needs_two_volumes_with_foreground():
    with pytest.raises(data.SplitError, match="only b.nii of the 3 label volumes has foreground.*--val-images"):
        data.choose_validation_volumes([0, 3, 0], 0.3, ["a.nii", "b.nii", "c.nii"])
    with pytest.raises(data.SplitError, match="none of the 2"):
        data.choose_validation_volumes([0, 0], 0.5, ["a", "b"])


def test_several_volumes_end_to_end_validate_on_the_one_with_foreground(tmp_path):
    imgs, labs = [], []
    for k, has in enumerate([True, True, False]):
        lab = np.zeros((24, 24, 16), np.uint8)
        if has:
            lab[6:18, 6:18, 4:12] = 1
        i, l_ = _volume(tmp_path, f"v{k}", lab, seed=k)
        imgs.append(i)
        labs.append(l_)
    res = finetune(FinetuneConfig(images=imgs, labels=labs, out=str(tmp_path / "o"), val_fraction=0.3, **TINY))
    assert [c["name"] for c in res["history"][-1]["val_cases"]] == ["v1.nii.gz"]


# ---------------------------------------------------------------------------------------------- classification


def test_stratified_split_holds_every_class_on_both_sides():
    ys = [0, 0, 0, 1, 1, 1, 1, 2, 2, 0, 1, 2]
    tr, va = data.stratified_split(ys, 0.25, torch.Generator().manual_seed(3))
    assert sorted(tr + va) == list(range(len(ys)))
    assert {ys[i] for i in va} == {ys[i] for i in tr} == {0, 1, 2}
    assert [sum(ys[i] == c for i in va) for c in range(3)] == [1, 1, 1]  # round(4 * 0.25), round(5 * .25), 1
    again = data.stratified_split(ys, 0.25, torch.Generator().manual_seed(3))
    assert again == (tr, va)


def test_a_class_that_cannot_reach_validation_is_an_error(tmp_path):
    with pytest.raises(data.SplitError, match="class 2 has 1 case.*--val-csv"):
        data.stratified_split([0, 0, 1, 1, 2], 0.4, torch.Generator())
    paths = [_save(tmp_path / f"c{k}.nii.gz", np.zeros((16, 16, 16))) for k in range(4)]
    with pytest.raises(data.SplitError, match="class"):
        finetune(
            FinetuneConfig(
                task="classification", images=paths, labels=["0", "0", "0", "1"], out=str(tmp_path / "o"), **TINY
            )
        )
    # explicit validation data missing a class of the training data
    (tmp_path / "val.csv").write_text("c0.nii.gz,0\nc1.nii.gz,0\n")
    with pytest.raises(data.SplitError, match="class\\(es\\) 1 .*missing from the validation"):
        finetune(
            FinetuneConfig(
                task="classification",
                images=paths,
                labels=["0", "1", "0", "1"],
                val_csv=str(tmp_path / "val.csv"),
                out=str(tmp_path / "o"),
                **TINY,
            )
        )


# ---------------------------------------------------------------------------------------------- metrics


def test_empty_label_and_empty_prediction_score_one():
    z = np.zeros((6, 6, 6), bool)
    assert dice_iou(z, z) == (1.0, 1.0)
    one = z.copy()
    one[2, 2, 2] = True
    assert dice_iou(one, z) == (0.0, 0.0) and dice_iou(z, one) == (0.0, 0.0)
    s = mask_scores(z, z)
    assert (s["dice"], s["iou"], s["hd95_mm"]) == (1.0, 1.0, 0.0)
    assert mask_scores(one, z)["hd95_mm"] is None  # undefined, not 0 and not a number
    # pooled over cases an empty/empty case adds nothing; alone it is 1
    acc = DiceIoU().update(z, z).update(one, one)
    assert acc.compute() == (1.0, 1.0)


def test_surface_voxels_are_the_shell():
    m = np.zeros((7, 7, 7), bool)
    m[1:6, 1:6, 1:6] = True
    assert len(surface_voxels(m)) == 5**3 - 3**3
    full = np.ones((3, 3, 3), bool)  # the array border counts as outside
    assert len(surface_voxels(full)) == 26


@pytest.mark.parametrize("axis, k", [(0, 2), (1, 3), (2, 1), (2, 4)])
def test_hd95_of_shifted_cubes_is_the_shift_in_mm(axis, k):
    spacing = (0.7, 1.3, 3.0)
    a = np.zeros((30, 30, 30), bool)
    a[5:17, 6:18, 4:16] = True
    b = np.roll(a, k, axis=axis)
    aff = np.diag([*spacing, 1.0])
    assert hd95(a, b, aff) == pytest.approx(k * spacing[axis], rel=1e-9)
    assert hd95(b, a, aff) == pytest.approx(k * spacing[axis], rel=1e-9)
    assert hd95(a, a, aff) == 0.0


def test_hd95_uses_the_full_affine():
    a = np.zeros((20, 20, 20), bool)
    a[5:12, 5:12, 5:12] = True
    b = np.roll(a, 2, axis=0)
    rot = np.array([[0, -2.0, 0], [1.5, 0, 0], [0, 0, 1.0]])  # axes permuted and scaled: axis 0 is 1.5 mm
    aff = np.eye(4)
    aff[:3, :3] = rot
    assert hd95(a, b, aff) == pytest.approx(3.0, rel=1e-9)


def test_evaluate_command_binary_and_per_label(tmp_path, capsys):
    sp = (0.8, 0.8, 2.5)
    lab = np.zeros((32, 32, 20), np.uint8)
    lab[4:14, 4:14, 4:12] = 1
    lab[18:28, 18:28, 4:12] = 2
    pred = np.zeros_like(lab)
    pred[4:14, 4:14, 6:14] = 1  # label 1 shifted by 2 slices: HD95 = 2 * 2.5 mm
    pred[18:28, 18:28, 4:12] = 2  # label 2 exact
    lp, pp = _save(tmp_path / "lab.nii.gz", lab, sp, np.uint8), _save(tmp_path / "pred.nii.gz", pred, sp, np.uint8)
    empty = np.zeros_like(lab)
    le, pe = _save(tmp_path / "lab0.nii.gz", empty, sp, np.uint8), _save(tmp_path / "pred0.nii.gz", empty, sp, np.uint8)
    out = tmp_path / "scores.json"
    assert (
        main(["evaluate", "--pred", pp, pe, "--labels", lp, le, "--per-label", "--json", str(out), "--device", "cpu"])
        == 0
    )
    text = capsys.readouterr().out
    assert "hd95_mm" in text and "pred.nii.gz" in text and "ALL" in text
    res = json.loads(out.read_text())
    c1, c2 = res["cases"]  # the empty pair has no label value: nothing to score per label
    assert (c1["label"], c2["label"]) == (1, 2)
    assert c1["hd95_mm"] == pytest.approx(5.0) and c1["dice"] == pytest.approx(6 / 8)
    assert c2["hd95_mm"] == 0.0 and c2["dice"] == 1.0 and c2["iou"] == 1.0
    # binary: the two structures together; the empty pair scores 1
    res = evaluate_files([pp, pe], [lp, le])
    fg, emp = res["cases"]
    assert fg["label"] == "fg" and fg["dice"] == pytest.approx((2 * (600 + 800)) / (1600 + 1600))
    assert (emp["dice"], emp["iou"], emp["hd95_mm"]) == (1.0, 1.0, 0.0)
    (summary,) = res["summary"]
    assert summary["cases"] == 2 and summary["dice_mean"] == pytest.approx((fg["dice"] + 1) / 2)
    # --label-values picks the foreground
    (only2,) = evaluate_files([pp], [lp], label_values=[2])["cases"]
    assert only2["label_voxels"] == 800 and only2["pred_voxels"] == 1600


def test_evaluate_lines_up_a_mask_stored_in_another_orientation(tmp_path):
    lab = np.zeros((16, 16, 8), np.uint8)
    lab[3:9, 4:10, 2:6] = 1
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(lab, aff), tmp_path / "lab.nii.gz")
    flipped = lab[::-1, ::-1, :].copy()  # LPS copy of the same grid
    lps = aff.copy()
    lps[:, :2] *= -1
    lps[:3, 3] = aff[:3, :3] @ np.array([15, 15, 0])
    nib.save(nib.Nifti1Image(flipped, lps), tmp_path / "pred.nii.gz")
    (c,) = evaluate_files([str(tmp_path / "pred.nii.gz")], [str(tmp_path / "lab.nii.gz")])["cases"]
    assert c["dice"] == 1.0 and c["hd95_mm"] == 0.0
    nib.save(nib.Nifti1Image(lab, np.diag([1.0, 1.0, 3.0, 1.0])), tmp_path / "other.nii.gz")
    with pytest.raises(data.VolumeError, match="affine differs"):
        evaluate_files([str(tmp_path / "other.nii.gz")], [str(tmp_path / "lab.nii.gz")])


# ---------------------------------------------------------------------------------------------- best.pt


class _ScriptedTask:
    """A task whose monitored value per epoch is given (None / NaN = undefined)."""

    def __init__(self, model, opt, values):
        self.model, self.opt, self.values = model, opt, values

    def begin_epoch(self, epoch):
        return (lambda: (torch.rand(2, 1, 8, 8, 8), torch.rand(2, 1, 8, 8, 8))), ""

    def end_epoch(self, epoch, step, train_loss, progress, epoch_time):
        return {"epoch": epoch}, self.values[epoch - 1]

    def payload(self, epoch, step):
        return checkpoint_payload("finetune-segmentation", self.model, self.opt, {}, epoch, step)

    def after_save(self, rec):
        pass


@pytest.mark.parametrize(
    "values, best_epoch",
    [
        ([float("nan"), 0.3, float("nan"), 0.2], 2),
        ([None, float("nan"), 0.1], 3),
        ([float("nan"), float("nan")], None),
    ],
)
def test_best_checkpoint_is_chosen_only_on_a_defined_metric(tmp_path, values, best_epoch):
    model = UNet3D(width=4)
    opt = torch.optim.Adam(model.parameters())
    step = TrainStep(model, opt, torch.device("cpu"), lambda p, t: F.mse_loss(p, t))
    monitor, writer, history = Monitor("max"), CheckpointWriter(str(tmp_path)), []
    fit(
        step,
        _ScriptedTask(model, opt, values),
        model=model,
        epochs=len(values),
        steps_per_epoch=1,
        monitor=monitor,
        writer=writer,
        history=history,
        metrics_path=str(tmp_path / "m.jsonl"),
        show_progress=False,
    )
    writer.finish(had_best=monitor.best is not None)
    assert [r["best"] for r in history] == [i + 1 == best_epoch for i in range(len(values))]
    # no defined value at all: best.pt is the last epoch, not an arbitrary "best" undefined one
    assert read_checkpoint(writer.best)["epoch"] == (best_epoch or len(values))
    assert math.isfinite(monitor.best) if best_epoch else monitor.best is None


def test_evaluate_and_validation_flag_errors_are_one_line(tmp_path, capsys):
    lab = _save(tmp_path / "l.nii.gz", np.zeros((8, 8, 8)), dtype=np.uint8)
    lab2 = _save(tmp_path / "l2.nii.gz", np.zeros((8, 8, 8)), dtype=np.uint8)
    assert main(["evaluate", "--pred", lab, lab2, "--labels", lab]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--labels: got 1 label volume(s) for 2 prediction(s)" in err
    small = _save(tmp_path / "s.nii.gz", np.zeros((4, 8, 8)), dtype=np.uint8)
    assert main(["evaluate", "--pred", small, "--labels", lab]) == 1
    assert "s.nii.gz: shape" in capsys.readouterr().err
    assert main(["finetune", "--images", lab, "--labels", lab, "--val-csv", "v.csv"]) == 2
    assert "--val-csv: only for --task classification" in capsys.readouterr().err
