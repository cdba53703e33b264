"""Reading volume files: finding them, reading one into the canonical (RAS) orientation, and
writing results back onto the original grid.

Arrays keep the canonical axis order ``(X, Y, Z)`` = the paper's rows x cols x depth.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import replacing
from .errors import VolumeError  # noqa: F401  (raised here, importable from here)


NIFTI_SUFFIXES = (".nii", ".nii.gz")
# read by SimpleITK: MetaImage (LUNA16's .mhd + .raw, or one .mha) and NRRD (.nrrd, or .nhdr + data)
ITK_SUFFIXES = (".mhd", ".mha", ".nrrd", ".nhdr")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
VOLUME_KINDS = ".nii/.nii.gz/.mhd/.mha/.nrrd volume or DICOM series"
# a folder holding several DICOM series names each as "<folder>#<SeriesInstanceUID>"
SERIES_SEP = "#"
DEMO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo")
DEMO_CT = os.path.join(DEMO_DIR, "ct_abdomen.nii.gz")
DEMO_LABELS = os.path.join(DEMO_DIR, "ct_abdomen_vertebrae.nii.gz")


def _one_line(e: BaseException) -> str:
    s = str(e).strip()
    lines = [ln.strip() for ln in s.splitlines() if ln.strip()]
    # ITK puts the useful sentence after "ITK ERROR: <class>(<address>): "
    for ln in lines:
        if "ITK ERROR:" in ln:
            return ln.split("ITK ERROR:", 1)[1].split("): ", 1)[-1].strip()
    return lines[0] if lines else type(e).__name__


def is_nifti(path: str) -> bool:
    return path.lower().endswith(NIFTI_SUFFIXES)


def is_volume_file(path: str) -> bool:
    """A file one of the readers opens by its name (NIfTI, MetaImage, NRRD); DICOM goes by content."""
    return os.fspath(path).lower().endswith(VOLUME_SUFFIXES)


def is_dicom_file(path: str) -> bool:
    """A DICOM Part 10 file: ``.dcm``, or the "DICM" magic after the 128-byte preamble (series from
    scanners often carry no extension)."""
    if path.lower().endswith(".dcm"):
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def split_series(source: str) -> tuple[str, str | None]:
    """``(folder, SeriesInstanceUID or None)`` of a DICOM source name."""
    if SERIES_SEP in source and not os.path.exists(source):
        folder, uid = source.rsplit(SERIES_SEP, 1)
        if os.path.isdir(folder):
            return folder, uid
    return source, None


def dicom_series(folder: str) -> list[str]:
    """The DICOM series in ``folder`` (not its subfolders): ``[folder]`` when it holds one, else
    ``folder#UID`` per series (split by Series Instance UID, as GDCM groups them)."""
    import SimpleITK as sitk

    ids = sorted(sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder))
    if len(ids) <= 1:
        return [folder] if ids else []
    return [f"{folder}{SERIES_SEP}{uid}" for uid in ids]


def _list_file(path: str) -> list[str]:
    """The paths in a text file, one per line (blank lines and ``#`` comments skipped); relative
    paths are taken from the list file's folder."""
    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f]
    except (OSError, UnicodeDecodeError) as e:
        raise VolumeError(f"{path}: cannot read list file ({_one_line(e)})") from None
    out = [ln if os.path.isabs(ln) else os.path.join(base, ln) for ln in lines if ln and not ln.startswith("#")]
    if not out:
        raise VolumeError(f"{path}: list file names no path")
    return out


def _walk(folder: str, accept, dicom: bool) -> list[str]:
    """Accepted files under ``folder`` (recursively), plus one source per DICOM series found."""
    hits = []
    for d, subdirs, files in os.walk(folder):
        subdirs.sort()
        names = sorted(files)
        hits.extend(os.path.join(d, f) for f in names if accept(os.path.join(d, f)))
        if dicom and any(is_dicom_file(os.path.join(d, f)) for f in names if not is_volume_file(f)):
            hits.extend(dicom_series(d))
    return hits


def find_volumes(paths: Sequence[str], accept=None, kinds: str | None = None) -> list[str]:
    """Expand files, folders (searched recursively), glob patterns and ``.txt`` list files into
    volume sources.

    Without ``accept``, the sources are NIfTI, MetaImage and NRRD files and DICOM series (a folder
    of DICOM files; several series in one folder are told apart by Series Instance UID, each named
    ``folder#UID``); a folder holding several formats yields them all. ``accept(path)`` replaces
    the file test (named ``kinds`` in errors; the 2D loader accepts images and NIfTI, no DICOM).
    A ``.txt`` file lists paths, one per line (each expanded the same way). Raises
    :class:`VolumeError` naming the first path that matches nothing."""
    dicom = accept is None
    accept = accept or is_volume_file
    kinds = kinds or (VOLUME_KINDS if dicom else ".nii/.nii.gz")
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[str] = []
    for p in paths:
        p = os.fspath(p)
        if any(c in p for c in "*?[") and not os.path.exists(p):
            hits = []
            for h in sorted(glob.glob(p, recursive=True)):
                if os.path.isdir(h):
                    hits.extend(_walk(h, accept, dicom))
                elif accept(h):
                    hits.append(h)
                elif dicom and is_dicom_file(h):
                    hits.extend(dicom_series(os.path.dirname(h) or "."))
            if not hits:
                raise VolumeError(f"{p}: pattern matches no {kinds} file")
            out.extend(hits)
        elif os.path.isdir(p):
            hits = _walk(p, accept, dicom)
            if not hits:
                raise VolumeError(f"{p}: folder contains no {kinds} file")
            out.extend(hits)
        elif os.path.isfile(p) and p.lower().endswith(".txt"):
            out.extend(find_volumes(_list_file(p), None if dicom else accept, kinds))
        elif os.path.isfile(p) or (dicom and split_series(p)[1] is not None):
            out.append(p)
        else:
            raise VolumeError(f"{p}: no such file or folder")
    seen, uniq = set(), []
    for p in out:
        a = os.path.abspath(p)
        if a not in seen:
            seen.add(a)
            uniq.append(p)
    return uniq


@dataclass
class Volume:
    """A canonical-orientation volume: ``data`` (X, Y, Z) plus the geometry needed to go back."""

    path: str
    data: np.ndarray
    affine: np.ndarray  # affine of ``data`` (canonical, possibly resampled)
    original_affine: np.ndarray
    original_shape: tuple[int, int, int]
    canonical_shape: tuple[int, int, int]
    header: object = field(default=None, repr=False)
    # () : ``data`` is (X, Y, Z); else ``data`` is (C, X, Y, Z), one named channel per entry
    channel_names: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        return len(self.channel_names) or 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[1:] if self.channel_names else self.data.shape)

    def channel_first(self) -> np.ndarray:
        """``data`` as (C, X, Y, Z) (a view; C = 1 for a single-channel volume)."""
        return self.data if self.channel_names else self.data[None]


def channels_first(a: np.ndarray, spatial_dims: int) -> np.ndarray:
    """``a`` with a leading channel axis: unchanged when it has ``spatial_dims + 1`` axes, else a
    one-channel view (samplers and the sliding window take single- or multi-channel arrays)."""
    return a if a.ndim == spatial_dims + 1 else a[None]


def read_nifti(path: str, channels: bool = False):
    """Open a NIfTI file and return the closest-canonical image; one-line errors naming the file.

    ``channels``: also accept a 4D file whose last axis holds several channels (the array is then
    (X, Y, Z, C)); otherwise a 4D file must hold a single volume."""
    import nibabel as nib

    if not os.path.exists(path):
        raise VolumeError(f"{path}: no such file")
    if os.path.isdir(path):
        raise VolumeError(f"{path}: is a folder, expected a NIfTI file")
    if not is_nifti(path):
        raise VolumeError(f"{path}: not a NIfTI file (expected .nii or .nii.gz)")
    try:
        img = nib.load(path)
        if len(img.shape) == 4 and img.shape[3] == 1:
            img = img.slicer[..., 0]
        if len(img.shape) != 3 and not (channels and len(img.shape) == 4):
            raise VolumeError(f"{path}: expected a 3D volume, got shape {tuple(img.shape)}")
        can = nib.as_closest_canonical(img)
        arr = np.asarray(can.dataobj, dtype=np.float32)
    except VolumeError:
        raise
    except Exception as e:  # noqa: BLE001 - nibabel, gzip, zlib, EOF... all mean "corrupt"
        raise VolumeError(f"{path}: cannot read NIfTI ({_one_line(e)})") from None
    if arr.size == 0 or min(arr.shape) < 1:
        raise VolumeError(f"{path}: empty volume {arr.shape}")
    arr = _finite(arr, path)
    return img, can, arr


def _finite(arr: np.ndarray, path: str) -> np.ndarray:
    """``arr`` with NaN and infinite voxels set to 0 (scanners and registration tools write NaN
    outside the field of view); VolumeError naming the file when no voxel is finite, since the
    volume would then train on a constant."""
    finite = np.isfinite(arr)
    if finite.all():
        return arr
    if not finite.any():
        raise VolumeError(f"{path}: every voxel is NaN or infinite; nothing to train on")
    return np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)


def itk_affine(image) -> np.ndarray:
    """The RAS voxel-to-world affine (NIfTI's convention) of a SimpleITK image, for the voxel
    axes in ITK's index order (i, j, k): ITK's geometry is LPS, so x and y change sign."""
    d = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    a = np.eye(4)
    a[:3, :3] = d * np.asarray(image.GetSpacing(), dtype=np.float64)[None, :]
    a[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ a


def _read_itk(path: str):
    """A MetaImage / NRRD file or a DICOM series (folder, or ``folder#UID``) as a SimpleITK image."""
    import SimpleITK as sitk

    folder, uid = split_series(path)
    if os.path.isdir(folder):
        reader = sitk.ImageSeriesReader()
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
        if not ids:
            raise VolumeError(f"{path}: folder holds no DICOM series")
        if uid is None and len(ids) > 1:
            raise VolumeError(f"{path}: folder holds {len(ids)} DICOM series; name one as {folder}{SERIES_SEP}UID")
        if uid is not None and uid not in ids:
            raise VolumeError(f"{path}: no DICOM series {uid} in {folder}")
        # GDCM orders the files by slice position along the slice normal and applies rescale slope/intercept
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder, uid or ids[0]))
        return reader.Execute()
    return sitk.ReadImage(path)


def read_image(path: str, channels: bool = False):
    """Open any supported volume and return ``(image, canonical image, float32 array)`` as
    :func:`read_nifti` does: NIfTI through nibabel; MetaImage, NRRD and DICOM series through
    SimpleITK, turned into a NIfTI image with the same RAS affine, so every reader ends in the
    same canonical (RAS) array and affine. One-line errors naming the file."""
    import nibabel as nib

    path = os.fspath(path)
    folder, uid = split_series(path)
    if not os.path.exists(folder):
        raise VolumeError(f"{path}: no such file")
    if is_nifti(path):
        return read_nifti(path, channels=channels)
    if not (os.path.isdir(folder) or is_volume_file(path) or is_dicom_file(path)):
        raise VolumeError(f"{path}: not a volume file (expected {VOLUME_KINDS})")
    if os.path.isfile(path) and is_dicom_file(path) and not is_volume_file(path):
        path = folder = os.path.dirname(path) or "."  # one file of a series: read its series
    try:
        image = _read_itk(path)
    except VolumeError:
        raise
    except Exception as e:  # noqa: BLE001 - ITK raises RuntimeError for every corrupt or truncated file
        raise VolumeError(
            f"{path}: cannot read {'DICOM series' if os.path.isdir(folder) else 'volume'} ({_one_line(e)})"
        ) from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        size = tuple(image.GetSize()) + (
            (image.GetNumberOfComponentsPerPixel(),) if image.GetNumberOfComponentsPerPixel() > 1 else ()
        )
        raise VolumeError(f"{path}: expected a 3D single-channel volume, got size {size}")
    import SimpleITK as sitk

    arr = np.ascontiguousarray(sitk.GetArrayViewFromImage(image).transpose(2, 1, 0))
    img = nib.Nifti1Image(arr, itk_affine(image))
    can = nib.as_closest_canonical(img)
    out = np.asarray(can.dataobj, dtype=np.float32)
    if out.size == 0:
        raise VolumeError(f"{path}: empty volume {out.shape}")
    out = _finite(out, path)
    return img, can, out


def to_original_grid(arr: np.ndarray, vol: Volume, label: bool = False) -> np.ndarray:
    """Undo resampling and canonical reorientation: map an array on ``vol.data``'s grid back onto
    the grid of the original file (so it can be saved with the original affine)."""
    import nibabel as nib

    if tuple(arr.shape) != tuple(vol.canonical_shape):
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
        mode = {"mode": "nearest"} if label else {"mode": "trilinear", "align_corners": False}
        arr = F.interpolate(t, size=tuple(vol.canonical_shape), **mode)[0, 0].numpy()
    orig = nib.io_orientation(vol.original_affine)
    canon = nib.orientations.axcodes2ornt(("R", "A", "S"))
    xform = nib.orientations.ornt_transform(canon, orig)
    return np.ascontiguousarray(nib.orientations.apply_orientation(arr, xform))


def save_like(arr: np.ndarray, vol: Volume, path: str, label: bool = False) -> None:
    """Save ``arr`` (on the canonical grid of ``vol``) as NIfTI with the input file's affine; a
    channel-first ``(C, X, Y, Z)`` array becomes a 4D file (last axis = channels)."""
    import nibabel as nib

    if arr.ndim == len(vol.canonical_shape) + 1:
        out = np.stack([to_original_grid(a, vol, label=label) for a in arr], axis=-1)
    else:
        out = to_original_grid(arr, vol, label=label)
    dtype = np.uint8 if label else np.float32
    img = nib.Nifti1Image(out.astype(dtype), vol.original_affine)
    img.header.set_xyzt_units("mm", "sec")
    with replacing(path, ".nii.gz" if path.endswith(".gz") else ".nii") as tmp:
        nib.save(img, tmp)
