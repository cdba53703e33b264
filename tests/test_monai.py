"""genesis_ops.monai against the real MONAI package: equality with models_genesis under the drawn
seed, shared spatial randomness of co-registered keys, metadata, a real NIfTI pipeline through a
2-worker DataLoader, CacheDataset, reproducibility under set_determinism, and CUDA tensors."""

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

monai = pytest.importorskip("monai")  # in the test extra: CI installs it, so this never skips there

import genesis_ops as go  # noqa: E402
from genesis_ops.monai import RandModelsGenesis, RandModelsGenesisd  # noqa: E402
from monai.data import CacheDataset, DataLoader, Dataset, MetaTensor  # noqa: E402
from monai.transforms import (  # noqa: E402
    Compose,
    CopyItemsd,
    EnsureChannelFirstd,
    LoadImaged,
    RandSpatialCropd,  # noqa: E402
    ScaleIntensityRanged,
    ToDeviced,
)
from monai.utils import set_determinism  # noqa: E402

ALL_ON = go.GenesisConfig(shuffle_p=1.0, nonlinear_p=1.0, paint_p=1.0)
NO_PAINT = go.GenesisConfig(flip_p=0.6, shuffle_p=1.0, nonlinear_p=1.0, paint_p=0.0)  # no fill noise
OUTPAINT = go.GenesisConfig(flip_p=0.6, shuffle_p=1.0, nonlinear_p=1.0, paint_p=1.0, inpaint_rate=0.0)
AFFINE = np.diag([0.8, 0.7, 2.5, 1.0])
CROP = (24, 20, 12)


def drawn_seed(state_seed: int) -> int:
    """The seed RandModelsGenesis draws first after set_random_state(state_seed)."""
    return int(np.random.RandomState(state_seed).randint(0, 2**64, dtype=np.uint64))


class RecordSeed:
    """Copies the seed the given transform drew for this sample into data["seed"] (a str: seeds
    reach 2**64, beyond what collation into int64 tensors keeps). Runs in the same process as the
    transform, DataLoader workers included."""

    def __init__(self, t: RandModelsGenesisd):
        self.t = t

    def __call__(self, d):
        return {**d, "seed": str(self.t.transform._seed)}


def check_pairs(batch, cfg):
    """Each sample's (image, image_target) is models_genesis of its uncorrupted copy "orig" under the
    recorded seed, bit for bit, whatever process and thread count produced it."""
    for i, seed in enumerate(batch["seed"]):
        inp, target = go.models_genesis(batch["orig"][i : i + 1].as_tensor(), cfg, seed=int(seed))
        assert torch.equal(batch["image"][i].as_tensor(), inp[0])
        assert torch.equal(batch["image_target"][i].as_tensor(), target[0])


@pytest.fixture(scope="module")
def nifti_files(tmp_path_factory):
    """Two small CT-like volumes (Hounsfield units, int16) with a non-trivial affine."""
    d = tmp_path_factory.mktemp("nifti")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        vol = rng.integers(-1000, 1500, size=(30, 28, 18)).astype(np.int16)
        p = d / f"ct{i}.nii.gz"
        nib.save(nib.Nifti1Image(vol, AFFINE), str(p))
        paths.append(str(p))
    return paths


def pipeline(cfg=ALL_ON, crop=True):
    ours = RandModelsGenesisd("image", config=cfg)
    ts = [
        LoadImaged("image", image_only=True),
        EnsureChannelFirstd("image"),
        ScaleIntensityRanged("image", a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True),
    ]
    if crop:
        ts.append(RandSpatialCropd("image", CROP, random_size=False))
    ts += [CopyItemsd("image", names="orig"), ours, RecordSeed(ours)]
    return Compose(ts)


@given(
    shape=st.sampled_from([(1, 9, 7), (3, 12, 10), (1, 10, 9, 7), (2, 8, 11, 6)]),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16]),
    state=st.integers(0, 2**32 - 1),
    numpy_in=st.booleans(),
)
def test_array_form_is_models_genesis_under_the_drawn_seed(shape, dtype, state, numpy_in):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(state)).to(dtype)
    t = RandModelsGenesis(ALL_ON).set_random_state(state)
    inp, target = t(x.numpy() if numpy_in else x)
    ref_inp, ref_target = go.models_genesis(x[None], ALL_ON, seed=drawn_seed(state))
    if numpy_in:  # returns the type it was given
        assert isinstance(inp, np.ndarray) and isinstance(target, np.ndarray)
        inp, target = torch.from_numpy(inp), torch.from_numpy(target)
    assert inp.dtype == dtype and inp.shape == x.shape
    assert torch.equal(inp, ref_inp[0]) and torch.equal(target, ref_target[0])
    # A second call draws a new seed from the same state.
    inp2, _ = t(x.numpy() if numpy_in else x)
    assert not np.array_equal(np.asarray(inp2), inp.numpy())


def test_dict_keys_are_channels_of_one_call():
    """Keys of one sample run as one (C1 + C2)-channel sample: spatial randomness shared."""
    g = torch.Generator().manual_seed(1)
    t1, t2 = torch.rand(1, 14, 12, 10, generator=g), torch.rand(2, 14, 12, 10, generator=g, dtype=torch.float64)
    t = RandModelsGenesisd(["t1", "t2"], config=ALL_ON).set_random_state(5)
    d = t({"t1": t1, "t2": t2, "label": "kept"})
    inp, target = go.models_genesis(torch.cat([t1.double(), t2])[None], ALL_ON, seed=drawn_seed(5))
    assert torch.equal(d["t1"], inp[0, :1].float()) and torch.equal(d["t1_target"], target[0, :1].float())
    assert torch.equal(d["t2"], inp[0, 1:]) and torch.equal(d["t2_target"], target[0, 1:])
    assert d["t1"].dtype == torch.float32 and d["t2"].dtype == torch.float64 and d["label"] == "kept"


@pytest.mark.parametrize("state", range(6))
def test_identical_keys_differ_only_by_fill_noise(state):
    x = torch.rand(1, 16, 14, 12, generator=torch.Generator().manual_seed(state))
    # Without painting there is no fill noise: identical keys give identical pairs.
    d = RandModelsGenesisd(["a", "b"], config=NO_PAINT).set_random_state(state)({"a": x, "b": x.clone()})
    assert torch.equal(d["a"], d["b"]) and torch.equal(d["a_target"], d["b_target"])
    assert not torch.equal(d["a"], d["a_target"])  # shuffle and curve forced on: it did something
    # With out-painting (always some noise, some kept windows): the same targets (flips) and
    # windows; the noise outside them differs per channel.
    d = RandModelsGenesisd(["a", "b"], config=OUTPAINT).set_random_state(state)({"a": x, "b": x.clone()})
    assert torch.equal(d["a_target"], d["b_target"])
    differ = d["a"] != d["b"]
    assert differ.any() and (~differ).any()  # noise inside the painted region, the same data outside


@pytest.mark.parametrize("numpy_in", [False, True])
@pytest.mark.parametrize("state", range(4))
def test_masks_are_those_of_models_genesis_under_the_drawn_seed(state, numpy_in):
    x = torch.rand(2, 14, 12, 10, generator=torch.Generator().manual_seed(state))
    want = go.models_genesis(x[None], OUTPAINT, seed=drawn_seed(state), return_masks=True)
    got = RandModelsGenesis(OUTPAINT, return_mask=True).set_random_state(state)(x.numpy() if numpy_in else x)
    assert len(got) == 3
    if numpy_in:
        assert all(isinstance(t, np.ndarray) for t in got)
        got = [torch.from_numpy(t) for t in got]
    assert got[2].dtype == torch.uint8 and got[2].shape == (1, 14, 12, 10)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w[0])
    assert (got[2] & 2).any() and (got[2] & 1).any()  # out-painted and shuffled: both bits occur
    # The dictionary form: one mask for the sample's keys, the pairs as without it.
    y = torch.rand(1, 14, 12, 10, generator=torch.Generator().manual_seed(state + 9))
    m = MetaTensor(y, affine=torch.as_tensor(AFFINE))
    plain = RandModelsGenesisd(["a", "b"], config=OUTPAINT).set_random_state(state)({"a": m, "b": x})
    d = RandModelsGenesisd(["a", "b"], config=OUTPAINT, mask_key="mask").set_random_state(state)({"a": m, "b": x})
    both = go.models_genesis(torch.cat([y, x])[None], OUTPAINT, seed=drawn_seed(state), return_masks=True)
    assert isinstance(d["mask"], MetaTensor) and d["mask"].dtype == torch.uint8  # the first key's type
    assert torch.equal(d["mask"].as_tensor(), both[2][0])
    assert torch.equal(d["mask"].affine, torch.as_tensor(AFFINE, dtype=torch.float64))
    for k in ("a", "a_target", "b", "b_target"):
        assert torch.equal(torch.as_tensor(d[k]), torch.as_tensor(plain[k]))
    assert "mask" not in plain


def test_bad_mask_arguments():
    with pytest.raises(TypeError, match="return_mask"):
        RandModelsGenesis(return_mask=1)
    with pytest.raises(ValueError, match="mask_key"):
        RandModelsGenesisd("image", mask_key="")
    with pytest.raises(ValueError, match="mask_key 'image_target'"):
        RandModelsGenesisd("image", mask_key="image_target")


def test_metatensor_metadata_kept_on_both_outputs():
    m = MetaTensor(torch.rand(1, 12, 10, 8), affine=torch.as_tensor(AFFINE), meta={"filename_or_obj": "ct.nii.gz"})
    d = RandModelsGenesisd("image").set_random_state(0)({"image": m})
    for k in ("image", "image_target"):
        assert isinstance(d[k], MetaTensor)
        assert torch.equal(d[k].affine, torch.as_tensor(AFFINE, dtype=torch.float64))
        assert d[k].meta["filename_or_obj"] == "ct.nii.gz"
    d["image"].meta["filename_or_obj"] = "changed"  # copies, not shared with the input or each other
    assert m.meta["filename_or_obj"] == "ct.nii.gz" and d["image_target"].meta["filename_or_obj"] == "ct.nii.gz"


def test_real_nifti_pipeline_in_two_dataloader_workers(nifti_files):
    set_determinism(0)
    try:
        ds = Dataset([{"image": p} for p in nifti_files * 4], transform=pipeline())
        batches = list(DataLoader(ds, batch_size=2, num_workers=2))
    finally:
        set_determinism(None)
    assert len(batches) == 4
    for b in batches:
        for k in ("image", "image_target"):
            assert isinstance(b[k], MetaTensor) and b[k].shape == (2, 1) + CROP
            assert b[k].min() >= 0 and b[k].max() <= 1  # value_range (0, 1) after ScaleIntensityRanged
            assert np.allclose(b[k].affine[0, :3, :3].numpy(), AFFINE[:3, :3])
        check_pairs(b, ALL_ON)  # bit-identical to the op in this (2-thread) process
    seeds = [s for b in batches for s in b["seed"]]
    assert len(set(seeds)) == len(seeds)  # MONAI's DataLoader reseeded each worker: no repeated pairs


@pytest.mark.parametrize("num_workers", [0, 2])
def test_set_determinism_reproduces_the_pipeline(nifti_files, num_workers):
    def run():
        set_determinism(7)
        try:
            ds = Dataset([{"image": p} for p in nifti_files * 2], transform=pipeline())
            return list(DataLoader(ds, batch_size=1, num_workers=num_workers))
        finally:
            set_determinism(None)

    a, b = run(), run()
    for x, y in zip(a, b, strict=True):
        assert x["seed"] == y["seed"]
        for k in ("image", "image_target", "orig"):
            assert torch.equal(x[k], y[k])


def test_results_do_not_depend_on_the_number_of_workers(nifti_files):
    """Each pair is models_genesis of its sample under its seed, bit for bit, in 0, 1 or 2 workers
    (1 thread each) as in the main process; the seeds themselves are MONAI's: its DataLoader seeds
    worker k from base_seed + k, as for its own random transforms."""
    for workers in (0, 1, 2):
        ds = Dataset([{"image": p} for p in nifti_files * 3], transform=pipeline(crop=False))
        for b in DataLoader(ds, batch_size=2, num_workers=workers):
            check_pairs(b, ALL_ON)


def test_cache_dataset(nifti_files):
    ds = CacheDataset([{"image": p} for p in nifti_files], transform=pipeline(), num_workers=1, progress=False)
    epochs = [list(DataLoader(ds, batch_size=2, num_workers=2)) for _ in range(2)]
    for batches in epochs:
        for b in batches:
            check_pairs(b, ALL_ON)
    # The cache holds the deterministic prefix; the random transforms run again every epoch.
    assert [s for b in epochs[0] for s in b["seed"]] != [s for b in epochs[1] for s in b["seed"]]


def test_bad_input():
    with pytest.raises(TypeError, match="config"):
        RandModelsGenesisd("image", config={"flip_p": 0.4})
    with pytest.raises(ValueError, match="target_suffix"):
        RandModelsGenesisd("image", target_suffix="")
    t = RandModelsGenesisd(["a", "b"])
    with pytest.raises(ValueError, match=r"data\['b'\]"):
        t({"a": torch.rand(1, 8, 8, 8), "b": torch.rand(1, 8, 8, 7)})
    with pytest.raises(ValueError, match=r"channel first"):
        t({"a": torch.rand(8, 8), "b": torch.rand(8, 8)})
    with pytest.raises(KeyError):
        t({"a": torch.rand(1, 8, 8, 8)})
    d = RandModelsGenesisd(["a", "b"], allow_missing_keys=True)({"a": torch.rand(1, 8, 8, 8)})
    assert set(d) == {"a", "a_target"}
    with pytest.raises(TypeError, match="float16, bfloat16, float32 or float64"):
        RandModelsGenesis()(np.zeros((1, 8, 8), dtype=np.int16))
    with pytest.raises(TypeError, match="img"):
        RandModelsGenesis()([[0.0]])


@pytest.mark.skipif(
    not torch.cuda.is_available() or not go.has_cuda_kernels(), reason="needs a CUDA device and kernels"
)
def test_cuda_tensors_after_to_deviced():
    m = MetaTensor(torch.rand(2, 20, 18, 12), affine=torch.as_tensor(AFFINE))
    ours = RandModelsGenesisd("image", config=ALL_ON)
    t = Compose([CopyItemsd("image", names="orig"), ToDeviced("image", "cuda:0"), ours, RecordSeed(ours)])
    for _s in range(3):
        d = t({"image": m})
        assert d["image"].device.type == "cuda" and d["image_target"].device.type == "cuda"
        assert isinstance(d["image"], MetaTensor) and torch.equal(d["image"].affine, m.affine)
        inp, target = go.models_genesis(m.as_tensor()[None], ALL_ON, seed=int(d["seed"]))  # on the CPU
        assert torch.equal(d["image"].cpu().as_tensor(), inp[0])  # the contract: CPU == CUDA
        assert torch.equal(d["image_target"].cpu().as_tensor(), target[0])


def test_the_package_does_not_import_monai():
    """MONAI is optional: only genesis_ops.monai imports it."""
    import subprocess
    import sys
    import tempfile

    code = "import sys, genesis_ops; assert 'monai' not in sys.modules, 'genesis_ops imported monai'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=tempfile.gettempdir())


def test_pickles_with_its_random_state():
    """Spawned DataLoader workers (macOS, Windows) receive the transform pickled: the copy carries
    the random state, so it draws what the original draws."""
    import pickle

    x = torch.rand(1, 10, 9, 8)
    t = RandModelsGenesisd("image", config=ALL_ON, target_suffix="_gt").set_random_state(11)
    u = pickle.loads(pickle.dumps(t))
    a, b = t({"image": x}), u({"image": x})
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["image_gt"], b["image_gt"])
