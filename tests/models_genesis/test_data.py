"""The data pipeline on the bundled CT and the synthetic lung CT (conftest.py): CT windowing and
the canonical (RAS) volume, reorientation, label alignment, resampling to a spacing, MRI
normalisation, finding files / folders / globs, corrupt files (named, or skipped), the volume
cache, cube sampling (air rejection, reproducibility, padding) and the pretraining split."""

import gzip
import os

import nibabel as nib
import numpy as np
import pytest
import torch

from models_genesis import data


def test_ct_window_and_canonical_volume(ct_path):
    raw = np.asarray(nib.load(ct_path).dataobj, dtype=np.float32)  # already RAS
    v = data.load_volume(ct_path)
    assert v.data.shape == (122, 101, 112) and v.data.dtype == np.float32
    expected = (np.clip(raw, -1000, 1000) + 1000) / 2000
    assert np.allclose(v.data, expected, atol=1e-6)
    assert v.data.min() == 0.0 and v.data.max() == 1.0
    # a custom window maps -50 HU to 0 and 200 HU to 1
    w = data.load_volume(ct_path, data.Preprocessing(hu_window=(-50, 200)))
    k = np.argwhere((raw > 0) & (raw < 100))[0]
    assert w.data[tuple(k)] == pytest.approx((raw[tuple(k)] + 50) / 250, abs=1e-6)


def test_reoriented_file_loads_to_the_same_canonical_array(tmp_path, ct_path):
    img = nib.load(ct_path)
    arr = np.asarray(img.dataobj).astype(np.int16)
    # store it as LPS with the first two axes flipped: same anatomy, different array order
    flipped = arr[::-1, ::-1, :].copy()
    aff = img.affine.copy()
    aff[:, 0] *= -1
    aff[:, 1] *= -1
    aff[:3, 3] = img.affine[:3, :3] @ np.array([arr.shape[0] - 1, arr.shape[1] - 1, 0]) + img.affine[:3, 3]
    p = tmp_path / "lps.nii.gz"
    nib.save(nib.Nifti1Image(flipped, aff), p)
    assert nib.aff2axcodes(aff) == ("L", "P", "S")
    a = data.load_volume(str(p))
    b = data.load_volume(ct_path)
    assert np.array_equal(a.data, b.data)
    assert np.allclose(a.affine, b.affine)
    # and an array on the canonical grid goes back onto the file's grid
    back = data.to_original_grid(b.data, a)
    assert np.array_equal(back, ((np.clip(flipped, -1000, 1000) + 1000) / 2000).astype(np.float32))


def test_resampling_to_a_spacing(ct_path, demo_file):
    v = data.load_volume(ct_path, data.Preprocessing(spacing=(6.0, 6.0, 4.0)))
    assert v.data.shape == (61, round(101 * 3 / 6), 84)
    assert np.allclose(np.abs(np.diag(v.affine)[:3]), [6, 6, 4], rtol=0.02)  # field of view kept exactly
    assert 0 <= v.data.min() and v.data.max() <= 1
    lab = data.load_volume(
        demo_file("ct_abdomen_vertebrae.nii.gz"), data.Preprocessing(spacing=(6.0, 6.0, 4.0)), label=True
    )
    assert lab.data.shape == v.data.shape
    assert set(np.unique(lab.data)) <= {0, 26, 27, 28, 29, 30, 31, 32, 33}  # nearest neighbour: no new labels


def test_lung_volume_labels_and_mri_normalisation(lung_ct):
    p, lab_path, shape, (lx, ly, lz) = lung_ct.image, lung_ct.labels, lung_ct.shape, lung_ct.lesion_centre
    v = data.load_volume(p)
    assert v.data.shape == shape  # LPS -> RAS flips two axes, keeps the shape
    assert 0 <= v.data.min() and v.data.max() <= 1
    assert nib.aff2axcodes(v.affine) == ("R", "A", "S")
    # the lesion label stays on the image's voxels after reorientation: inside it, soft tissue
    # (~60 HU -> ~0.53); around it in the same slices, lung (~-850 HU -> ~0.075)
    lab = data.load_volume(lab_path, label=True)
    inside = lab.data == 1
    assert inside.sum() == np.asarray(nib.load(lab_path).dataobj).sum() > 0
    assert abs(float(v.data[inside].mean()) - 0.53) < 0.02
    x, y, z = shape[0] - 1 - lx, shape[1] - 1 - ly, lz  # the lesion centre in RAS order
    assert inside[x, y, z] and not inside[x + 5, y, z] and v.data[x + 5, y, z] < 0.15
    m = data.load_volume(p, data.Preprocessing(modality="mri", mri_norm="minmax"))
    assert m.data.min() == 0.0 and m.data.max() == 1.0
    q = data.load_volume(p, data.Preprocessing(modality="mri", mri_norm="percentile"))
    assert q.data.min() == 0.0 and q.data.max() == 1.0
    assert (q.data == 1.0).mean() > (m.data == 1.0).mean()  # top 0.5% clipped


def test_find_volumes_files_folders_globs(tmp_path, ct_path):
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    for n in ("x.nii.gz", "y.nii"):
        (sub / n).write_bytes(b"")
    (sub / "notes.txt").write_text("no")
    assert [os.path.basename(p) for p in data.find_volumes([str(tmp_path)])] == ["x.nii.gz", "y.nii"]
    assert [os.path.basename(p) for p in data.find_volumes([str(sub / "*.nii*")])] == ["x.nii.gz", "y.nii"]
    assert data.find_volumes([ct_path, ct_path]) == [ct_path]
    with pytest.raises(data.VolumeError, match="no such file or folder"):
        data.find_volumes([str(tmp_path / "nope.nii.gz")])
    with pytest.raises(data.VolumeError, match="matches no"):
        data.find_volumes([str(tmp_path / "*.nrrd")])


def test_corrupt_files_name_the_file_or_are_skipped(tmp_path, ct_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(gzip.compress(b"garbage" * 100))
    trunc = tmp_path / "truncated.nii.gz"
    trunc.write_bytes(open(ct_path, "rb").read()[:50000])
    for p in (bad, trunc):
        with pytest.raises(data.VolumeError) as e:
            data.load_volume(str(p))
        assert str(p) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(data.VolumeError, match="broken.nii.gz"):
        data.load_volumes([str(bad), ct_path])
    with pytest.warns(UserWarning, match="broken.nii.gz"):
        vols = data.load_volumes([str(bad), ct_path], skip_bad=True, log=None)
    assert [v.path for v in vols] == [ct_path]
    # a 4D image file is a multi-channel volume now (test_multichannel.py); a 4D label is not,
    # and neither is a 2D or 5D file
    p = tmp_path / "four.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.int16), np.eye(4)), p)
    with pytest.raises(data.VolumeError, match="expected a 3D volume"):
        data.load_volume(str(p), label=True)
    for shape in ((4, 4), (4, 4, 4, 1, 2)):
        p = tmp_path / f"dims{len(shape)}.nii"
        nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.eye(4)), p)
        with pytest.raises(data.VolumeError, match="expected a 3D volume"):
            data.load_volume(str(p))


def test_cache_reads_each_volume_once(ct_path):
    cache = data.VolumeCache()
    pre = data.Preprocessing()
    a = cache.get(ct_path, pre)
    b = cache.get(ct_path, pre)
    assert a is b and cache.reads == 1 and len(cache) == 1
    assert a.data.dtype == np.float16
    cache.get(ct_path, data.Preprocessing(hu_window=(-500, 500)))
    assert cache.reads == 2


def test_cubes_skip_air_and_are_reproducible(ct_path):
    v = data.VolumeCache().get(ct_path, data.Preprocessing())
    s = data.CubeSampler([v], (32, 32, 16), torch.Generator().manual_seed(3), min_foreground=0.6)
    x = s.sample(16)
    assert x.shape == (16, 1, 32, 32, 16) and x.dtype == torch.float32
    fg = (x > 0.05).float().mean(dim=(1, 2, 3, 4))
    assert bool((fg >= 0.6).all())
    # the volume does have mostly-air cubes: without the rule some are drawn, with it some were rejected
    anyc = data.CubeSampler([v], (32, 32, 16), torch.Generator().manual_seed(3), min_foreground=0.0).sample(64)
    assert float((anyc > 0.05).float().mean(dim=(1, 2, 3, 4)).min()) < 0.6
    assert s.rejected > 0
    s2 = data.CubeSampler([v], (32, 32, 16), torch.Generator().manual_seed(3), min_foreground=0.6)
    assert torch.equal(s2.sample(16), x)


def test_small_volume_is_padded():
    small = data.Volume(
        path="small",
        data=np.full((10, 40, 5), 0.7, np.float32),
        affine=np.eye(4),
        original_affine=np.eye(4),
        original_shape=(10, 40, 5),
        canonical_shape=(10, 40, 5),
    )
    s = data.CubeSampler([small], (16, 32, 8), torch.Generator().manual_seed(0), min_foreground=0.0)
    x = s.sample(3)
    assert x.shape == (3, 1, 16, 32, 8)
    assert float(x.max()) == pytest.approx(0.7) and float(x.min()) == 0.0
    assert int((x[0] > 0).sum()) == 10 * 32 * 5  # all of the small volume's X and Z, 32 of its 40 Y


def test_split_regions():
    tr, va = data.split_regions((100, 100, 112), 0.2, (32, 32, 16))
    assert tr[2] == slice(0, 90) and va[2] == slice(90, 112)
    tr, va = data.split_regions((100, 100, 112), 0.0, (32, 32, 16))
    assert va is None
