"""From raw voxel values to what the networks see: resampling to a spacing, normalisation to
[0, 1] (CT through an HU window, default -1000..1000 as the paper; MRI by per-volume percentiles
or min-max), padding, and loading volumes (single files, 4D channel files, subjects) with it.

Loaded volumes can be cached in memory (float16 by default: half the RAM, well below the 1/2000
HU quantisation of the window) so epochs never re-read or re-decode files; fine-tuning and 2D
inputs use that. The ``preprocess`` command's work is here too: each source read once into the
on-disk store that 3D pretraining streams from (:func:`build_store`, :func:`ensure_store`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UsageError
from .readers import Volume, VolumeError, find_volumes, is_nifti, read_image, read_nifti
from .subjects import AFFINE_ATOL, Subject, channel_count, image_sources


@dataclass
class Preprocessing:
    """How raw voxel values become [0, 1] (stored in checkpoints so predict matches training).

    modality: ``"ct"`` (clip to ``hu_window`` then scale) or ``"mri"``.
    mri_norm: ``"percentile"`` (clip to the ``percentiles`` of the non-zero voxels, scale) or
        ``"minmax"`` (per-volume min-max, as the paper's authors did for BraTS).
    spacing: target voxel spacing in mm (x, y, z) for resampling; None keeps the native grid.
    """

    modality: str = "ct"
    hu_window: tuple[float, float] = (-1000.0, 1000.0)
    mri_norm: str = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)
    spacing: tuple[float, float, float] | None = None

    def __post_init__(self):
        if self.modality not in ("ct", "mri"):
            raise ValueError(f"modality: expected 'ct' or 'mri', got {self.modality!r}")
        if self.mri_norm not in ("percentile", "minmax"):
            raise ValueError(f"mri_norm: expected 'percentile' or 'minmax', got {self.mri_norm!r}")
        lo, hi = self.hu_window
        if not hi > lo:
            raise ValueError(f"hu_window: expected low < high, got {self.hu_window}")
        plo, phi = self.percentiles
        if not 0 <= plo < phi <= 100:
            raise ValueError(f"percentiles: expected 0 <= low < high <= 100, got {self.percentiles}")
        if self.spacing is not None:
            sp = tuple(float(s) for s in self.spacing)
            if len(sp) != 3 or min(sp) <= 0:
                raise ValueError(f"spacing: expected three positive numbers, got {self.spacing}")
            self.spacing = sp
        self.hu_window = (float(lo), float(hi))
        self.percentiles = (float(plo), float(phi))

    def to_dict(self) -> dict:
        return {
            "modality": self.modality,
            "hu_window": list(self.hu_window),
            "mri_norm": self.mri_norm,
            "percentiles": list(self.percentiles),
            "spacing": list(self.spacing) if self.spacing is not None else None,
        }

    @classmethod
    def from_config(cls, cfg) -> Preprocessing:
        """The preprocessing a run config asks for.

        Args:
            cfg: anything with ``modality``, ``hu_window``, ``mri_norm`` and ``spacing`` attributes
                (a :class:`config.RunConfig`, or the command line's parsed arguments); sequences may
                be lists.

        Returns:
            A validated :class:`Preprocessing` (default percentiles).
        """
        return cls(
            modality=cfg.modality,
            hu_window=tuple(cfg.hu_window),
            mri_norm=cfg.mri_norm,
            spacing=tuple(cfg.spacing) if cfg.spacing else None,
        )

    @classmethod
    def from_dict(cls, d: dict | None) -> Preprocessing:
        if not d:
            return cls()
        d = dict(d)
        for k in ("hu_window", "percentiles", "spacing"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


def resample(arr: np.ndarray, zooms: Sequence[float], spacing: Sequence[float], mode: str = "trilinear"):
    """Resample an (X, Y, Z) array from voxel size ``zooms`` to ``spacing`` (torch interpolation)."""
    shape = tuple(max(1, int(round(n * z / s))) for n, z, s in zip(arr.shape, zooms, spacing, strict=True))
    if shape == tuple(arr.shape):
        return arr
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
    if mode == "nearest":
        out = F.interpolate(t, size=shape, mode="nearest")
    else:
        out = F.interpolate(t, size=shape, mode="trilinear", align_corners=False)
    return out[0, 0].numpy()


def _resampled_affine(affine: np.ndarray, old_shape, new_shape) -> np.ndarray:
    scale = np.array([o / n for o, n in zip(old_shape, new_shape, strict=True)], dtype=np.float64)
    a = affine.copy()
    a[:3, :3] = affine[:3, :3] * scale[None, :]
    # keep the field of view: voxel centres shift by half the change of voxel size
    a[:3, 3] = affine[:3, 3] + affine[:3, :3] @ ((scale - 1.0) / 2.0)
    return a


def normalise(arr: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Map raw values to [0, 1] (float32)."""
    if pre.modality == "ct":
        lo, hi = pre.hu_window
        return ((np.clip(arr, lo, hi) - lo) / (hi - lo)).astype(np.float32)
    if pre.mri_norm == "minmax":
        lo, hi = float(arr.min()), float(arr.max())
    else:
        nz = arr[arr != 0]
        if nz.size == 0:
            nz = arr.ravel()
        lo, hi = (float(v) for v in np.percentile(nz, pre.percentiles))
    if hi <= lo:
        return np.zeros_like(arr, dtype=np.float32)
    return ((np.clip(arr, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def load_volume(path: str, pre: Preprocessing | None = None, label: bool = False) -> Volume:
    """Read (any format :func:`readers.read_image` opens), reorient, resample and normalise one
    volume (labels: no normalisation, nearest-neighbour resampling). A NIfTI image file with 4 axes
    is a multi-channel volume (last axis = channels, as MONAI reads NIfTI): see
    :func:`load_channels_file`."""
    pre = pre or Preprocessing()
    if not label:
        vol = load_channels_file(path, pre)
        if vol is not None:
            return vol
    img, can, arr = read_image(os.fspath(path))
    canonical_shape = tuple(int(s) for s in arr.shape)
    affine = np.asarray(can.affine, dtype=np.float64)
    if pre.spacing is not None:
        zooms = [float(z) for z in can.header.get_zooms()[:3]]
        new = resample(arr, zooms, pre.spacing, mode="nearest" if label else "trilinear")
        affine = _resampled_affine(affine, arr.shape, new.shape)
        arr = new
    if label:
        arr = np.rint(arr).astype(np.float32)
    else:
        arr = normalise(arr, pre)
    return Volume(
        path=os.fspath(path),
        data=arr,
        affine=affine,
        original_affine=np.asarray(img.affine, dtype=np.float64),
        original_shape=tuple(int(s) for s in img.shape[:3]),
        canonical_shape=canonical_shape,
        header=img.header,
    )


def pad_to(arr: np.ndarray, shape: Sequence[int], value: float = 0.0) -> tuple[np.ndarray, tuple]:
    """Pad (centred) to at least ``shape``; returns the array and the (before, after) pads."""
    pads = []
    for n, c in zip(arr.shape, shape, strict=True):
        extra = max(0, int(c) - n)
        pads.append((extra // 2, extra - extra // 2))
    if any(a or b for a, b in pads):
        arr = np.pad(arr, pads, mode="constant", constant_values=value)
    return arr, tuple(pads)


class VolumeCache:
    """In-memory cache of preprocessed volumes keyed by (path, preprocessing, label); ``loader`` reads
    one (``load_volume``; the 2D pipeline's also reads images)."""

    def __init__(self, dtype=np.float16, loader=None):
        self.dtype = dtype
        self.loader = loader or load_volume
        self._store: dict[tuple, Volume] = {}
        self.reads = 0

    def get(self, path, pre: Preprocessing, label: bool = False) -> Volume:
        """``path``: a NIfTI file or a :class:`Subject` (separate channel files)."""
        src = (path.paths, path.channels) if isinstance(path, Subject) else os.path.abspath(path)
        key = (src, repr(pre.to_dict()), label)
        v = self._store.get(key)
        if v is None:
            v = load_subject(path, pre) if isinstance(path, Subject) else self.loader(path, pre, label=label)
            self.reads += 1
            if not label and self.dtype is not None:
                v.data = v.data.astype(self.dtype)
            self._store[key] = v
        return v

    def __len__(self) -> int:
        return len(self._store)


def load_volumes(
    paths: Sequence[str],
    pre: Preprocessing | None = None,
    skip_bad: bool = False,
    cache: VolumeCache | None = None,
    log=print,
    channels: Sequence[str] | None = None,
    find=find_volumes,
) -> list[Volume]:
    """Load many volumes; a bad file raises :class:`VolumeError` unless ``skip_bad`` (then warns).

    ``channels``: names substituted for ``{channel}`` in ``paths`` (see :func:`image_sources`).
    ``find`` expands ``paths`` without channels (:func:`find_volumes`; the 2D pipeline's also finds
    images). All volumes must have the same number of channels (:func:`channel_count`)."""
    pre = pre or Preprocessing()
    cache = cache if cache is not None else VolumeCache()
    vols = []
    for p in image_sources(paths, channels, find=find):
        try:
            vols.append(cache.get(p, pre))
        except VolumeError as e:
            if not skip_bad:
                raise
            if log:  # once: through the caller's log, else as a Python warning
                log(f"warning: skipping {e}")
            else:
                warnings.warn(f"skipping {e}", stacklevel=2)
    if not vols:
        raise VolumeError("no usable volume among the given paths")
    channel_count(vols)
    return vols


def _stack_channels(
    arrays: Sequence[np.ndarray], names: Sequence[str], can, img, path: str, pre: Preprocessing
) -> Volume:
    """Resample and normalise each canonical (X, Y, Z) channel on its own, stack to (C, X, Y, Z)."""
    affine = np.asarray(can.affine, dtype=np.float64)
    canonical_shape = tuple(int(s) for s in arrays[0].shape)
    out = []
    for a in arrays:
        if pre.spacing is not None:
            zooms = [float(z) for z in can.header.get_zooms()[:3]]
            a = resample(a, zooms, pre.spacing)
        out.append(normalise(a, pre))
    if pre.spacing is not None:
        affine = _resampled_affine(affine, canonical_shape, out[0].shape)
    return Volume(
        path=path,
        data=np.stack(out),
        affine=affine,
        original_affine=np.asarray(img.affine, dtype=np.float64),
        original_shape=tuple(int(s) for s in img.shape[:3]),
        canonical_shape=canonical_shape,
        header=img.header,
        channel_names=tuple(names),
    )


def load_channels_file(path: str, pre: Preprocessing | None = None) -> Volume | None:
    """A 4D NIfTI file with several volumes as a (C, X, Y, Z) volume (channels named "0", "1", ...);
    None when the file holds a single volume (then it is read as usual)."""
    import nibabel as nib

    pre = pre or Preprocessing()
    path = os.fspath(path)
    try:
        hdr_shape = nib.load(path).shape if is_nifti(path) and os.path.isfile(path) else ()
    except Exception:  # noqa: BLE001 - unreadable: read_nifti gives the one-line error
        return None
    if len(hdr_shape) != 4 or hdr_shape[3] == 1:
        return None
    img, can, arr = read_nifti(path, channels=True)
    c = arr.shape[3]
    return _stack_channels([arr[..., k] for k in range(c)], [str(k) for k in range(c)], can, img, path, pre)


def _read_subject(subject: Subject) -> tuple[list[np.ndarray], object, object]:
    """``(channel arrays as stored, first channel's original image, its canonical image)``.

    Raises :class:`VolumeError` naming the subject when a channel file is missing or unreadable,
    or when the channels disagree in (canonical) shape or affine (they must be co-registered)."""
    arrays, first = [], None
    for c, p in zip(subject.channels, subject.paths, strict=True):
        try:
            img, can, arr = read_image(p)
        except VolumeError as e:
            raise VolumeError(f"subject {subject.name}: channel {c}: {e}") from None
        if first is None:
            first = (c, img, can, arr.shape)
        else:
            c0, _, can0, shape0 = first
            if arr.shape != shape0:
                raise VolumeError(
                    f"subject {subject.name}: channel {c} has shape {arr.shape}, channel {c0} "
                    f"{shape0} (channels must be co-registered)"
                )
            diff = float(np.abs(np.asarray(can.affine) - np.asarray(can0.affine)).max())
            if diff > AFFINE_ATOL:
                raise VolumeError(
                    f"subject {subject.name}: channel {c} affine differs from channel {c0}'s "
                    f"(by up to {diff:.3g}; channels must be co-registered)"
                )
        arrays.append(arr)
    return arrays, first[1], first[2]


def load_subject(subject: Subject, pre: Preprocessing | None = None) -> Volume:
    """Read a subject's channel files into one (C, X, Y, Z) volume (errors: :func:`_read_subject`)."""
    arrays, img, can = _read_subject(subject)
    return _stack_channels(arrays, subject.channels, can, img, subject.name, pre or Preprocessing())


def load_image(source, pre: Preprocessing | None = None) -> Volume:
    """Load a NIfTI path (3D, or 4D = channels) or a :class:`Subject`."""
    return load_subject(source, pre) if isinstance(source, Subject) else load_volume(source, pre)


# ----------------------------------------------------------------------------------------------
# ``genesis-ops preprocess``: each source read once into the store (models_genesis.store)


def _source_stat(source) -> dict:
    """Size and modification time of a source's files (a rerun redoes a volume whose files changed)."""
    from .readers import split_series

    if isinstance(source, Subject):
        files = list(source.paths)
    else:
        folder, _ = split_series(os.fspath(source))
        files = [os.path.join(folder, f) for f in sorted(os.listdir(folder))] if os.path.isdir(folder) else [folder]
        if folder.lower().endswith((".mhd", ".nhdr")):  # the header's data file changes too
            files += [
                p for p in (folder[:-4] + ".raw", folder[:-4] + ".zraw", folder[:-5] + ".raw.gz") if os.path.exists(p)
            ]
    st = [os.stat(f) for f in files if os.path.isfile(f)]
    return {
        "files": len(st),
        "size": sum(s.st_size for s in st),
        "mtime_ns": max((s.st_mtime_ns for s in st), default=0),
    }


def _read_raw(source) -> tuple[list[np.ndarray], object, object, tuple[str, ...]]:
    """``(channel arrays, canonical image, original image, channel names)`` of a source, values
    as stored in the file (HU for CT)."""
    if isinstance(source, Subject):
        arrays, img, can = _read_subject(source)
        return arrays, can, img, tuple(source.channels)
    path = os.fspath(source)
    if is_nifti(path) and os.path.isfile(path):
        import nibabel as nib

        try:
            shape = nib.load(path).shape
        except Exception:  # noqa: BLE001 - read_image gives the one-line error
            shape = ()
        if len(shape) == 4 and shape[3] > 1:
            img, can, arr = read_nifti(path, channels=True)
            return [arr[..., k] for k in range(arr.shape[3])], can, img, tuple(str(k) for k in range(arr.shape[3]))
    img, can, arr = read_image(path)
    return [arr], can, img, ()


def _stored_dtype(arrays: Sequence[np.ndarray], modality: str):
    """int16 for CT (HU) and for integer MR values that fit; float32 otherwise."""
    if modality == "ct":
        return np.int16
    ok = all(float(a.min()) >= -32768 and float(a.max()) <= 32767 and np.array_equal(a, np.rint(a)) for a in arrays)
    return np.int16 if ok else np.float32


def preprocess_one(source, root: str, modality: str = "ct", spacing=None, verify: bool = True) -> tuple[str, dict]:
    """Read one source, reorient it, resample it (``spacing``) and write it to the store at ``root``.

    Returns ``("written" | "kept", entry)``: "kept" when the store already holds this source,
    complete and matching its checksum, from unchanged files and the same preprocessing.

    Raises:
        VolumeError: the source is unreadable (one line naming it).
        StoreError: the store holds this source preprocessed differently, or the disk is full.
    """
    from . import store as st

    name = source.name if isinstance(source, Subject) else os.fspath(source)
    spacing = list(map(float, spacing)) if spacing else None
    key = st.volume_key(name)
    side = os.path.join(root, st.VOLUMES, key + ".json")
    stat = _source_stat(source)
    if os.path.isfile(side):
        import json

        with open(side) as f:
            old = json.load(f)
        st.check_version(old, side)
        if old.get("target_spacing") != spacing or old.get("modality") != modality:
            raise st.StoreError(
                f"{name}: the store at {root} holds it preprocessed with --modality {old.get('modality')} "
                f"--spacing {old.get('target_spacing')}; preprocess into a new folder to change them"
            )
        vol = st.StoreVolume(root, old)
        if old.get("source_stat") == stat and (not verify or vol.verify()):
            return "kept", old
    arrays, can, img, names = _read_raw(source)
    affine = np.asarray(can.affine, dtype=np.float64)
    canonical_shape = tuple(int(s) for s in arrays[0].shape)
    if spacing is not None:
        zooms = [float(z) for z in can.header.get_zooms()[:3]]
        arrays = [resample(a, zooms, spacing) for a in arrays]
        affine = _resampled_affine(affine, canonical_shape, arrays[0].shape)
    dtype = _stored_dtype(arrays, modality)
    if dtype == np.int16:
        arrays = [np.clip(np.rint(a), -32768, 32767).astype(np.int16) for a in arrays]
    else:
        arrays = [a.astype(np.float32) for a in arrays]
    stats = [st.channel_stats(a) for a in arrays]
    fg = np.maximum.reduce(
        [st.foreground_map(a, st.air_level(modality, s)) for a, s in zip(arrays, stats, strict=True)]
    )
    out = arrays[0] if len(arrays) == 1 else np.stack(arrays)
    meta = {
        "format": st.FORMAT,
        "version": st.VERSION,
        "shape": list(arrays[0].shape),
        "channel_names": list(names),
        "spacing": [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)],
        "affine": affine.tolist(),
        "original_affine": np.asarray(img.affine, dtype=np.float64).tolist(),
        "original_shape": [int(s) for s in img.shape[:3]],
        "canonical_shape": list(canonical_shape),
        "modality": modality,
        "dtype": np.dtype(dtype).name,
        "stats": stats,
        "target_spacing": spacing,
        "source_stat": stat,
        "raw_int16_bytes": int(out.size * 2),
        "_foreground_bytes": fg.tobytes(),
    }
    return "written", st.write_volume(root, name, out, meta)


def _work(args):
    """Pool entry: ``(status, source name, entry or error message, seconds)``; a bad source is a
    result, not an exception (the run goes on); a full disk stops the run."""
    import time

    from .store import StoreError

    source, root, modality, spacing = args
    name = source.name if isinstance(source, Subject) else os.fspath(source)
    t0 = time.perf_counter()
    try:
        status, entry = preprocess_one(source, root, modality, spacing)
        return status, name, entry, time.perf_counter() - t0
    except StoreError as e:
        return "fatal", name, str(e), time.perf_counter() - t0
    except VolumeError as e:
        return "failed", name, str(e), time.perf_counter() - t0
    except MemoryError:
        return "failed", name, f"{name}: out of memory reading it", time.perf_counter() - t0


def build_store(
    sources: Sequence,
    root: str,
    modality: str = "ct",
    spacing=None,
    workers: int = 1,
    part: int = 0,
    parts: int = 1,
    skip_bad: bool = True,
    log=print,
    progress: bool = True,
) -> dict:
    """Preprocess ``sources`` (paths or :class:`Subject` s) into the store at ``root``.

    Every source is read once, in ``workers`` processes; ``part``/``parts`` keep every
    ``parts``-th source (from the ``part``-th, sources sorted by name) for cluster job arrays whose
    runs write one store together. A rerun keeps the volumes already written and verified. Each
    volume is written atomically; the manifest is rebuilt (under a lock) at the end.

    Returns:
        The report: ``{"written", "kept", "failed" ([(source, reason)]), "bytes", "raw_bytes",
        "time_s", "volumes" (in the store now)}``.

    Raises:
        VolumeError: a bad source without ``skip_bad``.
        StoreError: the disk filled up (the volumes written so far are kept).
    """
    import sys
    import time

    from .store import StoreError, write_manifest

    if not 0 <= part < parts:
        raise UsageError(f"--part: expected 0 <= part < parts ({parts}), got {part}")
    t0 = time.perf_counter()
    root = os.path.abspath(os.fspath(root))
    os.makedirs(root, exist_ok=True)
    named = sorted(sources, key=lambda s: s.name if isinstance(s, Subject) else os.path.abspath(os.fspath(s)))
    mine = named[part::parts]
    spacing = tuple(spacing) if spacing else None
    jobs = [(s, root, modality, spacing) for s in mine]
    report = {"written": 0, "kept": 0, "failed": [], "bytes": 0, "raw_bytes": 0, "time_s": 0.0}
    tty = progress and hasattr(sys.stdout, "isatty") and sys.stdout.isatty()
    fatal = None

    def show(i, status, name):
        if not progress or not log:
            return
        n = 28
        bar = "#" * int(n * i / max(len(jobs), 1))
        line = f"preprocess [{bar:.<{n}}] {i}/{len(jobs)} {status} {os.path.basename(name.rstrip(os.sep))}"
        if tty:
            sys.stdout.write("\r" + line[:150].ljust(150) + ("\n" if i == len(jobs) else ""))
            sys.stdout.flush()
        else:
            log(line)

    def take(i, res):
        nonlocal fatal
        status, name, payload, _ = res
        if status in ("written", "kept"):
            report[status] += 1
            report["bytes"] += int(payload.get("nbytes", 0))
            report["raw_bytes"] += int(payload.get("raw_int16_bytes", 0))
        elif status == "fatal":
            fatal = fatal or payload
        else:
            if not skip_bad:
                raise VolumeError(payload)
            report["failed"].append((name, payload))
            if log:
                log(f"warning: skipping {payload}")
        show(i, status, name)

    if workers <= 1 or len(jobs) <= 1:
        for i, j in enumerate(jobs, 1):
            take(i, _work(j))
            if fatal:
                break
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: the workers start clean (no copy of a parent's threads or open files)
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futs = [pool.submit(_work, j) for j in jobs]
            try:
                for i, f in enumerate(as_completed(futs), 1):
                    take(i, f.result())
                    if fatal:
                        break
            finally:
                for f in futs:
                    f.cancel()
    try:
        report["volumes"] = write_manifest(root)
    except OSError as e:
        if fatal is None:
            raise StoreError(f"{root}: cannot write the store manifest ({e.strerror or e})") from None
        report["volumes"] = None  # the sidecars stay; the next run (or Store) reads them
    report["time_s"] = time.perf_counter() - t0
    if fatal:
        raise StoreError(fatal)
    return report


def format_report(report: dict, root: str) -> str:
    """The final report's lines: written, kept, failed (named, with reasons), bytes, time."""
    mib = report["bytes"] / 2**20
    ratio = report["bytes"] / report["raw_bytes"] if report["raw_bytes"] else float("nan")
    lines = [
        f"preprocess: {report['written']} volume(s) written, {report['kept']} already in the store, "
        f"{len(report['failed'])} skipped; {mib:.1f} MiB ({ratio:.2f}x raw int16) in {report['time_s']:.1f}s; "
        f"store {root} holds {report.get('volumes')} volume(s)"
    ]
    lines += [f"  skipped: {why}" for _, why in report["failed"]]
    return "\n".join(lines)


def ensure_store(
    paths: Sequence[str],
    cache: str,
    pre: Preprocessing,
    channels=None,
    workers: int = 1,
    skip_bad: bool = False,
    main: bool = True,
    barrier=None,
    log=print,
):
    """The store a run reads, and which of its volumes: ``paths`` naming one store folder is
    that store (all its volumes); raw inputs (files, folders, globs, list files, ``{channel}``
    patterns) are preprocessed into the store at ``cache`` first (the main process writes,
    ``barrier()`` makes the others wait), keeping volumes a previous run wrote.

    Returns:
        ``(store, indices)``: a :class:`store.Store` and the indices of the volumes of ``paths``.

    Raises:
        VolumeError: a bad input (unless ``skip_bad``), or nothing usable.
        StoreError: a store written with another preprocessing (``--spacing``, ``--modality``).
    """
    from .store import Store, StoreError, is_store, volume_key

    paths = [os.fspath(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if len(paths) == 1 and is_store(paths[0]):
        store = Store(paths[0])
        if pre.spacing is not None:
            bad = [e for e in store.entries if e.get("target_spacing") != list(pre.spacing)]
            if bad:
                raise StoreError(
                    f"{paths[0]}: --spacing {' '.join(f'{v:g}' for v in pre.spacing)} differs from the store's "
                    f"({bad[0].get('target_spacing')}); resampling happens at preprocess: leave --spacing out"
                )
        return store, list(range(len(store)))
    sources = image_sources(paths, channels)
    if main:
        report = build_store(
            sources,
            cache,
            pre.modality,
            pre.spacing,
            workers=workers,
            skip_bad=skip_bad,
            log=log,
            progress=log is not None,
        )
        if log and (report["written"] or report["failed"]):
            log(format_report(report, cache))
    if barrier is not None:
        barrier()
    store = Store(cache)
    pos = {e["key"]: i for i, e in enumerate(store.entries)}
    names = [s.name if isinstance(s, Subject) else s for s in sources]
    idx = [pos[k] for k in (volume_key(n) for n in names) if k in pos]
    if not idx:
        raise VolumeError("no usable volume among the given paths")
    return store, idx
