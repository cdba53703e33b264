"""The command line's flags are the config dataclasses' fields: same names, same defaults, and
every flag lands in its field."""

from dataclasses import fields

import pytest

from models_genesis.cli import build_parser, config_from_args, field_defaults, signature_defaults
from models_genesis.config import FinetuneConfig, PretrainConfig
from models_genesis.data import Preprocessing
from models_genesis.inferers import predict_volume


def _sub(name):
    for a in build_parser()._actions:
        if a.__class__.__name__ == "_SubParsersAction":
            return a.choices[name]
    raise AssertionError("no subcommands")


def _defaults(parser):
    return {a.dest: a.default for a in parser._actions if a.option_strings and a.dest != "help"}


def _norm(v):
    return tuple(v) if isinstance(v, list) else v


@pytest.mark.parametrize("command, cls", [("pretrain", PretrainConfig), ("finetune", FinetuneConfig)])
def test_flags_and_defaults_are_the_dataclass_fields(command, cls):
    got = _defaults(_sub(command))
    want = field_defaults(cls)
    assert set(got) == {f.name for f in fields(cls)}
    assert {k: _norm(v) for k, v in got.items()} == {k: _norm(v) for k, v in want.items()}
    # parsing nothing gives the dataclass's defaults
    argv = [command] + (["--demo"] if command == "finetune" else [])
    a = build_parser().parse_args(argv)
    assert config_from_args(cls, a) == cls(**({"demo": True} if command == "finetune" else {}))


def test_predict_and_preview_defaults_come_from_their_sources():
    pred = _defaults(_sub("predict"))
    sig = signature_defaults(predict_volume)
    for k in ("threshold", "overlap", "batch_size", "cube", "device", "amp", "channels"):
        assert pred[k] == sig[k], k
    prev = _defaults(_sub("preview"))
    for k in ("modality", "hu_window", "mri_norm", "spacing"):
        assert _norm(prev[k]) == _norm(field_defaults(Preprocessing)[k]), k


PRETRAIN_ARGV = [
    "pretrain",
    "--data",
    "a.nii",
    "b.nii",
    "--data",
    "c.nii",
    "--out",
    "o",
    "--epochs",
    "3",
    "--steps-per-epoch",
    "4",
    "--batch-size",
    "2",
    "--cube",
    "16",
    "16",
    "8",
    "--width",
    "4",
    "--norm",
    "batch_stats",
    "--resume",
    "--init-weights",
    "w.pt",
    "--optimizer",
    "sgd",
    "--lr",
    "0.5",
    "--momentum",
    "0.8",
    "--weight-decay",
    "0.01",
    "--lr-step-epochs",
    "3",
    "--lr-gamma",
    "0.3",
    "--val-fraction",
    "0.1",
    "--val-batches",
    "2",
    "--patience",
    "0",
    "--compile",
    "--flip-p",
    "0.1",
    "--shuffle-p",
    "0.2",
    "--num-windows",
    "5",
    "--nonlinear-p",
    "0.3",
    "--paint-p",
    "0.4",
    "--inpaint-rate",
    "0.6",
    "--corrupted-weight",
    "2.5",
    "--modality",
    "mri",
    "--hu-window",
    "-100",
    "200",
    "--mri-norm",
    "minmax",
    "--spacing",
    "1",
    "2",
    "3",
    "--min-foreground",
    "0.2",
    "--air-value",
    "0.1",
    "--skip-bad",
    "--previews",
    "0",
    "--channels",
    "t1",
    "t2,flair",
    "--device",
    "cpu",
    "--seed",
    "7",
    "--no-amp",
    "--log-every",
    "3",
    "--quiet",
]

FINETUNE_ARGV = [
    "finetune",
    "--task",
    "classification",
    "--csv",
    "f.csv",
    "--images",
    "a",
    "--labels",
    "1",
    "2",
    "--val-images",
    "v1",
    "--val-images",
    "v2",
    "--val-labels",
    "0",
    "1",
    "--val-csv",
    "v.csv",
    "--label-values",
    "1",
    "3",
    "--weights",
    "w.pt",
    "--out",
    "o",
    "--epochs",
    "2",
    "--steps-per-epoch",
    "3",
    "--batch-size",
    "4",
    "--cube",
    "8",
    "8",
    "8",
    "--width",
    "4",
    "--norm",
    "batch_stats",
    "--n-classes",
    "3",
    "--lr",
    "0.01",
    "--freeze-encoder-epochs",
    "2",
    "--val-fraction",
    "0.3",
    "--fg-fraction",
    "0.7",
    "--threshold",
    "0.4",
    "--overlap",
    "0.25",
    "--patience",
    "2",
    "--modality",
    "mri",
    "--hu-window",
    "-5",
    "5",
    "--mri-norm",
    "minmax",
    "--spacing",
    "1",
    "1",
    "1",
    "--channels",
    "t1",
    "--device",
    "cpu",
    "--seed",
    "3",
    "--no-amp",
    "--log-every",
    "2",
    "--quiet",
    "--demo",
]


def test_every_pretrain_flag_lands_in_its_field():
    cfg = config_from_args(PretrainConfig, build_parser().parse_args(PRETRAIN_ARGV))
    assert cfg == PretrainConfig(
        data=["a.nii", "b.nii", "c.nii"],
        out="o",
        epochs=3,
        steps_per_epoch=4,
        batch_size=2,
        cube=(16, 16, 8),
        width=4,
        norm="batch_stats",
        resume=True,
        init_weights="w.pt",
        optimizer="sgd",
        lr=0.5,
        momentum=0.8,
        weight_decay=0.01,
        lr_step_epochs=3,
        lr_gamma=0.3,
        val_fraction=0.1,
        val_batches=2,
        patience=0,
        compile=True,
        flip_p=0.1,
        shuffle_p=0.2,
        num_windows=5,
        nonlinear_p=0.3,
        paint_p=0.4,
        inpaint_rate=0.6,
        corrupted_weight=2.5,
        modality="mri",
        hu_window=(-100.0, 200.0),
        mri_norm="minmax",
        spacing=(1.0, 2.0, 3.0),
        min_foreground=0.2,
        air_value=0.1,
        skip_bad=True,
        previews=0,
        channels=["t1", "t2,flair"],
        device="cpu",
        seed=7,
        amp=False,
        log_every=3,
        quiet=True,
    )
    assert isinstance(cfg.cube, tuple) and isinstance(cfg.hu_window, tuple) and isinstance(cfg.spacing, tuple)


def test_every_finetune_flag_lands_in_its_field():
    cfg = config_from_args(FinetuneConfig, build_parser().parse_args(FINETUNE_ARGV))
    assert cfg == FinetuneConfig(
        task="classification",
        csv="f.csv",
        images=["a"],
        labels=["1", "2"],
        val_images=["v1", "v2"],
        val_labels=["0", "1"],
        val_csv="v.csv",
        label_values=[1, 3],
        weights="w.pt",
        out="o",
        epochs=2,
        steps_per_epoch=3,
        batch_size=4,
        cube=(8, 8, 8),
        width=4,
        norm="batch_stats",
        n_classes=3,
        lr=0.01,
        freeze_encoder_epochs=2,
        val_fraction=0.3,
        fg_fraction=0.7,
        threshold=0.4,
        overlap=0.25,
        patience=2,
        modality="mri",
        hu_window=(-5.0, 5.0),
        mri_norm="minmax",
        spacing=(1.0, 1.0, 1.0),
        channels=["t1"],
        device="cpu",
        seed=3,
        amp=False,
        log_every=2,
        quiet=True,
        demo=True,
    )
    pre = Preprocessing.from_config(cfg)
    assert pre == Preprocessing(modality="mri", hu_window=(-5.0, 5.0), mri_norm="minmax", spacing=(1.0, 1.0, 1.0))


def test_every_evaluate_flag_lands_in_its_argument():
    from models_genesis.metrics import evaluate_files

    ev = _defaults(_sub("evaluate"))
    sig = signature_defaults(evaluate_files)
    for k in ("per_label", "label_values"):
        assert ev[k] == sig[k], k
    a = build_parser().parse_args(
        [
            "evaluate",
            "--pred",
            "p1",
            "p2",
            "--labels",
            "l1",
            "--labels",
            "l2",
            "--per-label",
            "--label-values",
            "3",
            "4",
            "--json",
            "s.json",
            "--device",
            "cpu",
        ]
    )
    assert (a.pred_paths, a.label_paths, a.per_label, a.label_values, a.json, a.device) == (
        ["p1", "p2"],
        ["l1", "l2"],
        True,
        [3, 4],
        "s.json",
        "cpu",
    )


def test_every_predict_flag_lands_in_its_argument():
    a = build_parser().parse_args(
        [
            "predict",
            "--weights",
            "w",
            "--input",
            "i",
            "--output",
            "o",
            "--threshold",
            "0.3",
            "--probabilities",
            "--overlap",
            "0.2",
            "--batch-size",
            "2",
            "--cube",
            "8",
            "8",
            "8",
            "--device",
            "cpu",
            "--no-amp",
            "--channels",
            "t1",
            "t2",
        ]
    )
    assert (
        a.weights,
        a.input_path,
        a.output_path,
        a.threshold,
        a.probabilities,
        a.overlap,
        a.batch_size,
        a.cube,
        a.device,
        a.amp,
        a.channels,
    ) == ("w", "i", "o", 0.3, True, 0.2, 2, [8, 8, 8], "cpu", False, ["t1", "t2"])
