"""Readers: every format ends in the same canonical (RAS) array and affine; sources expand from
files, folders, globs and list files; bad files give one-line errors naming them."""

import os

import nibabel as nib
import numpy as np
import pytest

from models_genesis import data, readers

sitk = pytest.importorskip("SimpleITK")

# A non-trivial grid: voxel axes permuted and flipped against RAS, anisotropic spacing, an offset
# origin. Values are exact in DICOM's decimal strings so affines compare tightly.
AFFINE = np.array(
    [
        [0.0, -0.75, 0.0, 40.0],
        [0.0, 0.0, 2.5, -30.0],
        [-1.25, 0.0, 0.0, 12.5],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
SHAPE = (9, 11, 7)


def _volume(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 2000, SHAPE).astype(np.int16)


def _itk_image(arr, affine):
    """The SimpleITK image of an (i, j, k) array with a RAS affine (ITK is LPS, index order k, j, i)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    img.SetSpacing(spacing.tolist())
    img.SetDirection((lps / spacing[None, :]).ravel().tolist())
    img.SetOrigin((np.diag([-1.0, -1.0, 1.0]) @ affine[:3, 3]).tolist())
    return img


def write_dicom_series(arr, affine, folder, series_uid="1.2.826.0.1.3680043.2.1125.1", modality="CT", compressor=None):
    """One DICOM file per k slice, with the geometry tags a scanner writes; uncompressed, or in
    ``compressor``'s transfer syntax (GDCM: "JPEG2000" is JPEG 2000 lossless)."""
    os.makedirs(folder, exist_ok=True)
    img = _itk_image(arr, affine)
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")  # the files carry no .dcm: name the writer
    if compressor is not None:
        writer.SetUseCompression(True)
        writer.SetCompressor(compressor)
    # written in shuffled order with scrambled names: the reader must sort by position, not by name
    order = np.random.default_rng(1).permutation(arr.shape[2])
    for n, k in enumerate(order):
        sl = img[:, :, int(k)]
        pos = img.TransformIndexToPhysicalPoint((0, 0, int(k)))
        tags = {
            "0008|0060": modality,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.9",
            "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in pos),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*d[:, 0], *d[:, 1])),
            "0018|0050": f"{img.GetSpacing()[2]:.6f}",
        }
        for key, val in tags.items():
            sl.SetMetaData(key, val)
        writer.SetFileName(os.path.join(folder, f"IM{series_uid[-2:]}{(n * 7919) % 1000:04d}"))
        writer.Execute(sl)
    return folder


def _write_all(tmp_path, arr):
    paths = {}
    nii = str(tmp_path / "v.nii.gz")
    nib.save(nib.Nifti1Image(arr, AFFINE), nii)
    paths["nifti"] = nii
    for ext in ("mhd", "mha", "nrrd"):
        p = str(tmp_path / f"v.{ext}")
        sitk.WriteImage(_itk_image(arr, AFFINE), p)
        paths[ext] = p
    paths["dicom"] = write_dicom_series(arr, AFFINE, str(tmp_path / "dicom"))
    return paths


def test_every_format_reads_to_the_same_canonical_array_and_affine(tmp_path):
    arr = _volume()
    paths = _write_all(tmp_path, arr)
    ref = nib.as_closest_canonical(nib.Nifti1Image(arr, AFFINE))
    want = np.asarray(ref.dataobj, dtype=np.float32)
    assert nib.aff2axcodes(ref.affine) == ("R", "A", "S") and want.shape != arr.shape  # a real reorientation
    for fmt, p in paths.items():
        img, can, got = readers.read_image(p)
        assert np.array_equal(got, want), fmt
        np.testing.assert_allclose(can.affine, ref.affine, atol=1e-4, err_msg=fmt)
        if fmt != "dicom":  # a DICOM series orders its slices along the normal: see the next test
            np.testing.assert_allclose(img.affine, AFFINE, atol=1e-4, err_msg=fmt)
        v = data.load_volume(p)  # the normalised volume too, and predict's way back to the file's grid
        assert np.array_equal(v.data, data.load_volume(paths["nifti"]).data), fmt
        np.testing.assert_allclose(v.affine, ref.affine, atol=1e-4)


def test_dicom_world_positions_match_the_nifti(tmp_path):
    """The DICOM read reverses or permutes its voxel order as the slice normal says, but every
    voxel lands at the same world position as in the NIfTI."""
    arr = _volume()
    img, _, _ = readers.read_image(write_dicom_series(arr, AFFINE, str(tmp_path / "d")))
    raw = np.asarray(img.dataobj)
    for idx in [(0, 0, 0), (3, 5, 2), (8, 10, 6)]:
        world = AFFINE @ [*idx, 1]
        back = np.rint(np.linalg.inv(img.affine) @ world).astype(int)[:3]
        assert raw[tuple(back)] == arr[idx]


def test_a_jpeg2000_lossless_series_reads_as_the_uncompressed_one(tmp_path):
    """Compressed transfer syntaxes decode: the same volume as a JPEG 2000 lossless series (the
    syntax of real scanner exports) gives the uncompressed series' values and affine."""
    arr = _volume()
    j2k = write_dicom_series(arr, AFFINE, str(tmp_path / "j2k"), compressor="JPEG2000")
    name = sorted(os.listdir(j2k))[0]
    assert b"1.2.840.10008.1.2.4.90" in open(os.path.join(j2k, name), "rb").read(4096)  # JPEG 2000 lossless
    _, can, got = readers.read_image(j2k)
    _, ref_can, ref = readers.read_image(write_dicom_series(arr, AFFINE, str(tmp_path / "raw")))
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_allclose(can.affine, ref_can.affine, atol=1e-6)


def test_sources_from_folders_globs_and_list_files(tmp_path):
    arr = _volume()
    paths = _write_all(tmp_path, arr)
    assert (tmp_path / "v.raw").exists()  # the .mhd's data file: not a source of its own
    (tmp_path / "notes.md").write_text("not a volume")
    found = data.find_volumes([str(tmp_path)])
    assert sorted(map(os.path.abspath, found)) == sorted(os.path.abspath(p) for p in paths.values())
    # a glob and a list file (relative paths from its folder, comments skipped)
    assert data.find_volumes([str(tmp_path / "v.m*")]) == [paths["mha"], paths["mhd"]]
    lst = tmp_path / "list.txt"
    lst.write_text("# training set\nv.nrrd\n\ndicom\n")
    assert [os.path.abspath(p) for p in data.find_volumes([str(lst)])] == [paths["nrrd"], paths["dicom"]]
    # two series in one folder are two sources, told apart by Series Instance UID
    two = tmp_path / "two"
    write_dicom_series(arr, AFFINE, str(two), series_uid="1.2.3.4")
    write_dicom_series(_volume(5), AFFINE, str(two), series_uid="1.2.3.5")
    src = data.find_volumes([str(two)])
    assert src == [f"{two}#1.2.3.4", f"{two}#1.2.3.5"]
    a, b = (readers.read_image(s)[2] for s in src)
    assert np.array_equal(a, readers.read_image(paths["nifti"])[2]) and not np.array_equal(a, b)
    with pytest.raises(data.VolumeError, match="holds 2 DICOM series"):
        readers.read_image(str(two))


def test_bad_files_give_one_line_errors_or_are_skipped(tmp_path):
    arr = _volume()
    good = str(tmp_path / "good.mha")
    sitk.WriteImage(_itk_image(arr, AFFINE), good)
    bad = tmp_path / "bad.mha"
    bad.write_bytes(open(good, "rb").read()[:300])  # truncated
    junk = tmp_path / "junk.nrrd"
    junk.write_text("garbage")
    for p in (bad, junk):
        with pytest.raises(data.VolumeError) as e:
            data.load_volume(str(p))
        msg = str(e.value)
        assert msg.startswith(str(p)) and "\n" not in msg and "cannot read" in msg
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(data.VolumeError, match="not a volume file"):
        readers.read_image(str(tmp_path / "x.json"))
    with pytest.warns(UserWarning, match="skipping"):
        vols = data.load_volumes([str(tmp_path)], skip_bad=True, log=None)
    assert [v.path for v in vols] == [good]


def test_evaluate_and_preview_take_every_format(tmp_path, capsys):
    """`evaluate` scores masks stored as MetaImage/NRRD/DICOM against labels in another format (on
    the canonical grid, so the pairs line up), and `preview` reads a MetaImage volume."""
    from models_genesis.cli import main
    from models_genesis.metrics import evaluate_files

    lab = np.zeros(SHAPE, np.int16)
    lab[2:7, 3:9, 1:5] = 1
    pred = lab.copy()
    pred[2, 3:9, 1:5] = 0  # one face missing: Dice 2 * 96 / (120 + 96)
    os.makedirs(tmp_path / "lab")
    os.makedirs(tmp_path / "pred")
    labels, preds = _write_all(tmp_path / "lab", lab), _write_all(tmp_path / "pred", pred)
    want = 2 * 96 / (120 + 96)
    for fmt_pred, fmt_lab in (("mha", "nifti"), ("nrrd", "mhd"), ("dicom", "nrrd"), ("nifti", "dicom")):
        (case,) = evaluate_files([preds[fmt_pred]], [labels[fmt_lab]])["cases"]
        assert case["dice"] == pytest.approx(want) and case["label_voxels"] == 120, (fmt_pred, fmt_lab)
    png = tmp_path / "prev.png"
    volume = _volume().astype(np.float32)
    sitk.WriteImage(_itk_image(volume, AFFINE), str(tmp_path / "ct.mha"))
    assert main(["preview", "--input", str(tmp_path / "ct.mha"), "--output", str(png), "--device", "cpu"]) == 0
    assert png.stat().st_size > 0
