"""The networks and weight loading: the paper's parameter count and the published key names, shapes
and the spatial-divisibility rule, the always-batch-statistics norm against the standard one, the
classifier's shapes and encoder keys, published-format loading (prefixed and bare) and its errors,
and weights-only loading refusing pickled code."""

import os

import pytest
import torch

from models_genesis import (
    BatchStatsNorm3d,
    CheckpointError,
    GenesisClassifier,
    UNet3D,
    count_parameters,
    load_model,
    load_pretrained,
)


def test_paper_parameter_count_and_published_key_names():
    m = UNet3D()  # 1 in, 1 class, width 32
    assert count_parameters(m) == 19_073_665
    keys = list(m.state_dict())
    assert len(keys) == 106
    assert keys[0] == "down_tr64.ops.0.conv1.weight"
    assert keys[-1] == "out_tr.final_conv.bias"
    assert keys[:7] == [
        "down_tr64.ops.0.conv1.weight",
        "down_tr64.ops.0.conv1.bias",
        "down_tr64.ops.0.bn1.weight",
        "down_tr64.ops.0.bn1.bias",
        "down_tr64.ops.0.bn1.running_mean",
        "down_tr64.ops.0.bn1.running_var",
        "down_tr64.ops.0.bn1.num_batches_tracked",
    ]
    sd = m.state_dict()
    assert tuple(sd["down_tr64.ops.0.conv1.weight"].shape) == (32, 1, 3, 3, 3)
    assert tuple(sd["up_tr256.up_conv.weight"].shape) == (512, 512, 2, 2, 2)
    assert tuple(sd["up_tr64.ops.1.conv1.weight"].shape) == (64, 64, 3, 3, 3)
    assert tuple(sd["out_tr.final_conv.weight"].shape) == (1, 64, 1, 1, 1)
    # up_conv comes before the block's convolutions, decoder after encoder
    i = keys.index("up_tr256.up_conv.weight")
    assert keys[i + 2] == "up_tr256.ops.0.conv1.weight"
    assert keys.index("down_tr512.ops.1.bn1.num_batches_tracked") < i
    assert sum(k.endswith("num_batches_tracked") for k in keys) == 14


def test_forward_shapes_range_and_divisibility():
    m = UNet3D(width=4)
    x = torch.rand(2, 1, 16, 24, 8)
    y = m(x).detach()
    assert y.shape == x.shape
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert m.forward_logits(x).shape == x.shape
    m2 = UNet3D(in_channels=2, n_classes=3, width=4, activation="softmax")
    out = m2(torch.rand(1, 2, 16, 16, 8))
    assert out.shape == (1, 3, 16, 16, 8)
    assert torch.allclose(out.sum(1), torch.ones(1, 16, 16, 8), atol=1e-5)
    with pytest.raises(ValueError, match="multiple of 8"):
        m(torch.rand(1, 1, 20, 16, 16))
    with pytest.raises(ValueError, match="channel"):
        m(torch.rand(1, 2, 16, 16, 16))
    with pytest.raises(ValueError, match="norm"):
        UNet3D(norm="group")


def test_batch_stats_norm_depends_on_batch_in_eval_standard_does_not():
    torch.manual_seed(1)
    x = torch.rand(2, 1, 16, 16, 8)
    x[1] *= 0.2
    for norm, depends in (("batch", False), ("batch_stats", True)):
        m = UNet3D(width=4, norm=norm)
        m.train()
        with torch.no_grad():
            for _ in range(3):
                m(torch.rand(4, 1, 16, 16, 8))  # populate running stats
        m.eval()
        with torch.no_grad():
            alone = m(x[:1])
            together = m(x)[:1]
        assert (not torch.allclose(alone, together, atol=1e-6)) == depends, norm
    assert isinstance(UNet3D(width=4, norm="batch_stats").down_tr64.ops[0].bn1, BatchStatsNorm3d)


def test_classifier_shapes_and_encoder_keys():
    c = GenesisClassifier(n_classes=3, width=4, hidden=16)
    assert c(torch.rand(2, 1, 16, 16, 8)).shape == (2, 3)
    enc = {k for k in c.state_dict() if k.startswith("down_tr")}
    assert enc == set(UNet3D(width=4).encoder_state_dict())


def _published(model):
    return {"state_dict": {"module." + k: v.clone() for k, v in model.state_dict().items()}}


def test_load_published_format_prefixed_and_bare(tmp_path):
    src = UNet3D(width=4)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / "Genesis_Chest_CT.pt"
    torch.save(_published(src), path)
    dst = UNet3D(width=4)
    load_pretrained(dst, str(path))
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    # a bare state dict, and building the model from the file alone (width inferred)
    bare = tmp_path / "bare.pt"
    torch.save(src.state_dict(), bare)
    m = load_model(str(bare))
    assert m.width == 4 and torch.equal(
        m.state_dict()["out_tr.final_conv.bias"], src.state_dict()["out_tr.final_conv.bias"]
    )
    x = torch.rand(2, 1, 16, 16, 8)
    src.eval()
    m.eval()
    assert torch.allclose(src(x), m(x))
    # files without BatchNorm's num_batches_tracked counters load too
    no_nbt = {k: v for k, v in _published(src)["state_dict"].items() if not k.endswith("num_batches_tracked")}
    assert len(no_nbt) == len(src.state_dict()) - 14
    m2 = UNet3D(width=4)
    load_pretrained(m2, {"state_dict": no_nbt})
    assert torch.equal(
        m2.state_dict()["up_tr128.ops.0.bn1.running_var"], src.state_dict()["up_tr128.ops.0.bn1.running_var"]
    )
    # the classifier takes the encoder only
    c = GenesisClassifier(width=4, hidden=8)
    load_pretrained(c, str(path))
    assert torch.equal(
        c.state_dict()["down_tr512.ops.1.conv1.weight"], src.state_dict()["down_tr512.ops.1.conv1.weight"]
    )


def test_load_errors_are_clear(tmp_path):
    src = UNet3D(width=4)
    p = tmp_path / "w.pt"
    torch.save(_published(src), p)
    with pytest.raises(CheckpointError, match=r"width 4\b.*width 8\b"):
        load_pretrained(UNet3D(width=8), str(p))
    sd = _published(src)
    del sd["state_dict"]["module.up_tr64.ops.1.bn1.running_var"]
    sd["state_dict"]["module.extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as e:
        load_pretrained(UNet3D(width=4), str(tmp_path / "bad.pt"))
    msg = str(e.value)
    assert "bad.pt" in msg and "up_tr64.ops.1.bn1.running_var" in msg and "extra.weight" in msg and "\n" not in msg
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable PyTorch checkpoint"):
        load_pretrained(UNet3D(width=4), str(tmp_path / "junk.pt"))
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_pretrained(UNet3D(width=4), str(tmp_path / "missing.pt"))
    torch.save({"epoch": 3}, tmp_path / "noweights.pt")
    with pytest.raises(CheckpointError, match="no model weights"):
        load_pretrained(UNet3D(width=4), str(tmp_path / "noweights.pt"))
    # different head size: strict error, unless the head is skipped
    two = UNet3D(width=4, n_classes=2)
    with pytest.raises(CheckpointError, match="out_tr.final_conv"):
        load_pretrained(two, str(p))
    load_pretrained(two, str(p), skip_head=True)
    assert torch.equal(
        two.state_dict()["down_tr64.ops.0.conv1.weight"], src.state_dict()["down_tr64.ops.0.conv1.weight"]
    )


def test_weights_only_loading_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"state_dict": {}, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_pretrained(UNet3D(width=4), str(tmp_path / "evil.pt"))
    assert not (tmp_path / "pwned").exists()
