"""The preprocessed store pretraining streams cubes from: one chunked, compressed array per volume.

Layout of a store folder::

    STORE/manifest.json          index of every committed volume (rebuilt from the sidecars)
    STORE/volumes/<key>.b2nd     the volume: blosc2 NDArray, canonical (RAS) orientation,
                                 (X, Y, Z) or (C, X, Y, Z); CT as int16 HU, MR as its own values
    STORE/volumes/<key>.json     the volume's manifest entry; written last, so it marks the volume
                                 as complete (its checksum covers the .b2nd)

Values are stored raw (HU for CT), so the window / MR normalisation is applied when a cube is read
and changing ``--hu-window`` needs no new store. Each volume also holds a coarse foreground map
(one cell per 8x8x8 voxels: the share of voxels above the air level), so sampling rejects cubes
that are mostly air before it reads them.

Chunks of 64^3 voxels with 32x32x16 blocks (LZ4 + bit shuffle): a 64x64x32 cube touches at most
8 chunks and decompresses only the blocks it needs; a 160^3 cube reads 27-64 chunks. Among blosc2
(LZ4 or ZSTD, byte or bit shuffle), zarr v3 and memory-mapped .npy / .nii on CT, this setting
reads as fast as LZ4 + byte shuffle and makes files about 15% smaller: 0.55x raw int16 on the
bundled CT, 0.49x on a 512x512x48 chest CT (bench/PERFORMANCE.md, data path).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import shutil
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .readers import VolumeError, _one_line

FORMAT = "genesis-ops-store"
VERSION = 1
MANIFEST = "manifest.json"
VOLUMES = "volumes"
CHUNKS = (64, 64, 64)
BLOCKS = (32, 32, 16)
FG_CELL = 8
# air level of the foreground map: -900 HU for CT (0.05 of the paper's -1000..1000 window, the
# sampler's default air value); for MR, 5% of the volume's 99.5th percentile
CT_AIR_HU = -900.0
MR_AIR_SHARE = 0.05
# percentiles kept per channel, so MR normalisation by any of them happens at read time
PERCENTILES = (0.0, 0.5, 1.0, 2.0, 5.0, 95.0, 98.0, 99.0, 99.5, 100.0)


class StoreError(VolumeError):
    """A store (or one of its volumes) is missing, from another version, or damaged; one line."""


def is_store(path: str) -> bool:
    """True when ``path`` is a store folder (holds a manifest or a volumes folder with entries)."""
    p = os.fspath(path)
    return os.path.isdir(p) and (os.path.isfile(os.path.join(p, MANIFEST)) or os.path.isdir(os.path.join(p, VOLUMES)))


def volume_key(source: str) -> str:
    """The file name stem of a source's volume: readable prefix + hash of the absolute path."""
    a = os.path.abspath(source)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in os.path.basename(a.rstrip(os.sep)))[:48]
    return f"{stem}-{hashlib.sha1(a.encode()).hexdigest()[:12]}"


def file_checksum(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(d: str) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))


def channel_stats(a: np.ndarray) -> dict:
    """Intensity statistics of one channel: min, max, mean, std, and the percentiles of the
    non-zero voxels (MR normalisation reads them; the voxels outside the head are often 0)."""
    flat = a.ravel()
    nz = flat[flat != 0]
    if nz.size == 0:
        nz = flat
    pct = np.percentile(nz.astype(np.float64), PERCENTILES)
    return {
        "min": float(flat.min()),
        "max": float(flat.max()),
        "mean": float(flat.mean(dtype=np.float64)),
        "std": float(flat.std(dtype=np.float64)),
        # distinct values in an evenly strided sample of about 200,000 voxels: a label map given
        # as an image has a handful (quality.check_store_intensities)
        "distinct_sampled": int(len(np.unique(flat[:: max(1, flat.size // 200_000)]))),
        "nonzero_percentiles": {f"{p:g}": float(v) for p, v in zip(PERCENTILES, pct, strict=True)},
    }


def air_level(modality: str, stats: dict) -> float:
    return CT_AIR_HU if modality == "ct" else MR_AIR_SHARE * stats["nonzero_percentiles"]["99.5"]


def foreground_map(a: np.ndarray, level: float) -> np.ndarray:
    """Share of voxels above ``level`` in each ``FG_CELL``^3 cell of an (X, Y, Z) array, as uint8
    (0..255); edge cells count only the voxels inside the volume."""
    fg = (a > level).astype(np.float32)
    shape = tuple(-(-n // FG_CELL) for n in a.shape)
    pads = [(0, s * FG_CELL - n) for s, n in zip(shape, a.shape, strict=True)]
    ones = np.pad(np.ones(a.shape, np.float32), pads)
    fg = np.pad(fg, pads)
    r = (shape[0], FG_CELL, shape[1], FG_CELL, shape[2], FG_CELL)
    share = fg.reshape(r).sum(axis=(1, 3, 5)) / np.maximum(ones.reshape(r).sum(axis=(1, 3, 5)), 1)
    return np.rint(share * 255).astype(np.uint8)


def write_volume(root: str, source: str, arr: np.ndarray, meta: dict) -> dict:
    """Write one volume atomically and return its manifest entry.

    ``arr``: (X, Y, Z) or (C, X, Y, Z), in the dtype to store. ``meta``: the entry's geometry and
    provenance (shape, spacing, affine, modality, ...). The array goes to a temporary file that
    is fsynced and renamed; the entry (with the file's checksum) is written the same way after it,
    so a kill at any moment leaves either a complete volume or none in the manifest.

    Raises:
        StoreError: the disk filled up (naming the volume and the free space; nothing half
            written is left).
    """
    import blosc2

    vdir = os.path.join(root, VOLUMES)
    os.makedirs(vdir, exist_ok=True)
    key = volume_key(source)
    final = os.path.join(vdir, key + ".b2nd")
    tmp = os.path.join(vdir, f".{key}.b2nd.tmp-{os.getpid()}")
    spatial = arr.shape[-3:]
    chunks = tuple(min(c, n) for c, n in zip(CHUNKS, spatial, strict=True))
    blocks = tuple(min(b, c) for b, c in zip(BLOCKS, chunks, strict=True))
    if arr.ndim == 4:
        chunks, blocks = (1, *chunks), (1, *blocks)
    cparams = blosc2.CParams(codec=blosc2.Codec.LZ4, clevel=5, filters=[blosc2.Filter.BITSHUFFLE], nthreads=1)
    try:
        if os.path.exists(tmp):
            os.remove(tmp)
        nd = blosc2.asarray(
            np.ascontiguousarray(arr), chunks=chunks, blocks=blocks, urlpath=tmp, mode="w", cparams=cparams
        )
        nd.schunk.vlmeta["foreground"] = meta.pop("_foreground_bytes")
        # blosc2 keeps no checksum of the compressed data, and a damaged LZ4 stream can decode
        # into wrong values without an error: each chunk's CRC-32, checked when it is first read
        crcs = [zlib.crc32(nd.schunk.get_chunk(i)) for i in range(nd.schunk.nchunks)]
        del nd
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        entry = dict(meta, key=key, source=os.path.abspath(source), checksum=file_checksum(tmp), chunk_crc32=crcs)
        entry["nbytes"] = os.path.getsize(tmp)
        os.replace(tmp, final)
        _fsync_dir(vdir)
        _atomic_write_text(os.path.join(vdir, key + ".json"), json.dumps(entry))
        return entry
    except OSError as e:
        for p in (tmp, os.path.join(vdir, key + ".json.tmp-" + str(os.getpid()))):
            if os.path.exists(p):
                os.remove(p)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(root).free
            raise StoreError(
                f"{source}: disk full writing it to {root} ({free / 2**20:.0f} MiB free); "
                "the volumes written so far are kept; free space and run preprocess again to go on"
            ) from None
        raise StoreError(f"{source}: cannot write to {root} ({_one_line(e)})") from None
    except RuntimeError as e:  # blosc2 reports a failed write (disk full, file-size limit) this way
        if os.path.exists(tmp):
            os.remove(tmp)
        free = shutil.disk_usage(root).free
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        why = f"a file-size limit (ulimit -f) of {limit} bytes" if limit != resource.RLIM_INFINITY else "disk full?"
        raise StoreError(
            f"{source}: cannot write it to {root} ({_one_line(e)}; {free / 2**20:.0f} MiB free; {why}); "
            "the volumes written so far are kept"
        ) from None


def read_entries(root: str) -> list[dict]:
    """Every committed volume entry of a store: the manifest's, plus sidecars written since (a
    part still running, or a run that was killed before it rebuilt the manifest)."""
    root = os.fspath(root)
    entries: dict[str, dict] = {}
    mpath = os.path.join(root, MANIFEST)
    if os.path.isfile(mpath):
        try:
            with open(mpath) as f:
                man = json.load(f)
        except (OSError, ValueError) as e:
            raise StoreError(f"{mpath}: cannot read store manifest ({_one_line(e)})") from None
        check_version(man, mpath)
        entries = {e["key"]: e for e in man.get("volumes", [])}
    vdir = os.path.join(root, VOLUMES)
    if os.path.isdir(vdir):
        for name in os.listdir(vdir):
            if name.endswith(".json") and not name.startswith(".") and name[:-5] not in entries:
                p = os.path.join(vdir, name)
                try:
                    with open(p) as f:
                        e = json.load(f)
                except (OSError, ValueError):
                    continue  # half-written sidecars never exist (atomic rename); unreadable: not committed
                check_version(e, p)
                entries[e["key"]] = e
    return sorted(entries.values(), key=lambda e: e["source"])


def check_version(d: dict, path: str) -> None:
    if d.get("format") != FORMAT or d.get("version") != VERSION:
        raise StoreError(
            f"{path}: store format {d.get('format')!r} version {d.get('version')!r}; this genesis-ops reads "
            f"{FORMAT!r} version {VERSION}: preprocess the sources again into a new store folder"
        )


def write_manifest(root: str) -> int:
    """Rebuild ``manifest.json`` from the sidecars, under a lock (several ``--part`` runs may end at
    the same time); returns the number of volumes."""
    import fcntl

    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        vdir = os.path.join(root, VOLUMES)
        entries = []
        if os.path.isdir(vdir):
            for name in sorted(os.listdir(vdir)):
                if name.endswith(".json") and not name.startswith("."):
                    with open(os.path.join(vdir, name)) as f:
                        e = json.load(f)
                    check_version(e, os.path.join(vdir, name))
                    entries.append(e)
        entries.sort(key=lambda e: e["source"])
        _atomic_write_text(
            os.path.join(root, MANIFEST), json.dumps({"format": FORMAT, "version": VERSION, "volumes": entries})
        )
    return len(entries)


@dataclass
class StoreVolume:
    """One stored volume. ``vol[x0:x1, y0:y1, z0:z1]`` (numpy slicing; channel-first volumes take
    a leading channel index) returns the stored values and decompresses only the chunks it
    touches; :meth:`read` also normalises them to [0, 1]."""

    root: str
    entry: dict
    _nd: object = None
    _checked: set | None = None  # chunks whose CRC-32 matched, in this process

    @property
    def source(self) -> str:
        return self.entry["source"]

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape (X, Y, Z)."""
        return tuple(self.entry["shape"])

    @property
    def channels(self) -> int:
        return len(self.entry.get("channel_names") or ()) or 1

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(self.entry["spacing"])

    @property
    def affine(self) -> np.ndarray:
        return np.asarray(self.entry["affine"], dtype=np.float64)

    @property
    def modality(self) -> str:
        return self.entry["modality"]

    @property
    def path(self) -> str:
        return os.path.join(self.root, VOLUMES, self.entry["key"] + ".b2nd")

    def _array(self):
        if self._nd is None:
            import blosc2

            try:
                self._nd = blosc2.open(self.path, mode="r", dparams=blosc2.DParams(nthreads=1))
            except Exception as e:  # noqa: BLE001 - missing or truncated file
                raise StoreError(f"{self.source}: stored volume {self.path} unreadable ({_one_line(e)})") from None
        return self._nd

    def _check_chunks(self, nd, idx) -> None:
        """StoreError naming the volume when a chunk ``idx`` touches does not match the CRC-32
        written with it (each chunk checked once per process; stores without CRCs: no check)."""
        crcs = self.entry.get("chunk_crc32")
        if crcs is None:
            return
        if self._checked is None:
            self._checked = set()
        idx = idx if isinstance(idx, tuple) else (idx,)
        idx = idx + (slice(None),) * (len(nd.shape) - len(idx))
        ranges = []
        for i, n, c in zip(idx, nd.shape, nd.chunks, strict=True):
            if isinstance(i, slice):
                lo, hi, _ = i.indices(n)
                hi = max(hi, lo + 1)
            else:
                lo = int(i) % n
                hi = lo + 1
            ranges.append(range(lo // c, (min(hi, n) - 1) // c + 1))
        grid = [-(-n // c) for n, c in zip(nd.shape, nd.chunks, strict=True)]
        for cell in np.ndindex(*[len(r) for r in ranges]):
            k = int(np.ravel_multi_index([r[j] for r, j in zip(ranges, cell, strict=True)], grid))
            if k in self._checked:
                continue
            if zlib.crc32(nd.schunk.get_chunk(k)) != crcs[k]:
                raise StoreError(
                    f"{self.source}: stored volume {self.path} damaged (chunk {k} does not match its checksum); "
                    "run genesis-ops preprocess on its source again"
                )
            self._checked.add(k)

    def __getitem__(self, idx) -> np.ndarray:
        try:
            nd = self._array()
            self._check_chunks(nd, idx)
            out = nd[idx]
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001 - blosc2 reports a damaged or missing chunk as RuntimeError/ValueError
            raise StoreError(f"{self.source}: stored volume {self.path} damaged ({_one_line(e)})") from None
        return np.asarray(out)

    def foreground(self) -> np.ndarray:
        """The coarse foreground map: share (0..1) of voxels above the air level per 8^3 cell."""
        shape = tuple(-(-n // FG_CELL) for n in self.shape)
        try:
            raw = self._array().schunk.vlmeta["foreground"]
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001
            raise StoreError(
                f"{self.source}: stored volume {self.path} has no foreground map ({_one_line(e)})"
            ) from None
        return np.frombuffer(raw, dtype=np.uint8).reshape(shape).astype(np.float32) / 255.0

    def verify(self) -> bool:
        """True when the stored file matches the checksum written with it."""
        return os.path.isfile(self.path) and file_checksum(self.path) == self.entry["checksum"]

    def read(self, idx, pre) -> np.ndarray:
        """``self[idx]`` mapped to [0, 1] float32 by ``pre`` (a :class:`preprocess.Preprocessing`):
        CT through its HU window, MR by the stored per-channel percentiles or min-max."""
        a = self[idx].astype(np.float32)
        stats = self.entry["stats"]
        if len(stats) == 1:
            return normalise_stored(a, pre, stats[0], self.source)
        ch = idx[0] if isinstance(idx, tuple) else idx
        sel = range(len(stats))[ch] if isinstance(ch, (int, slice)) else range(len(stats))
        sel = [sel] if isinstance(sel, int) else list(sel)
        if len(sel) == 1 and a.ndim == 3:
            return normalise_stored(a, pre, stats[sel[0]], self.source)
        return np.stack([normalise_stored(a[k], pre, stats[c], self.source) for k, c in enumerate(sel)])


def stored_window(pre, stats: dict, source: str = "") -> tuple[float, float]:
    """The raw values (lo, hi) that ``pre`` (a :class:`preprocess.Preprocessing`) maps to 0 and 1
    for one stored channel: the HU window for CT; for MR the whole volume's min-max or non-zero
    percentiles from the manifest (a cube alone would give other percentiles)."""
    if pre.modality == "ct":
        return tuple(pre.hu_window)
    if pre.mri_norm == "minmax":
        return stats["min"], stats["max"]
    pct = stats["nonzero_percentiles"]
    try:
        return tuple(pct[f"{p:g}"] for p in pre.percentiles)
    except KeyError:
        raise StoreError(f"{source}: the store keeps the percentiles {', '.join(pct)}, not {pre.percentiles}") from None


def normalise_stored(a: np.ndarray, pre, stats: dict, source: str = "") -> np.ndarray:
    """Stored values mapped to [0, 1] float32 as :func:`preprocess.normalise` maps a whole volume."""
    lo, hi = stored_window(pre, stats, source)
    if hi <= lo:
        return np.zeros_like(a, dtype=np.float32)
    out = np.clip(a.astype(np.float32), lo, hi)
    out -= lo
    out *= 1.0 / (hi - lo)
    return out


class Store:
    """A preprocessed store, opened for reading.

    ``len(store)`` volumes; ``store[i]`` is a :class:`StoreVolume` with ``.shape``, ``.spacing``,
    ``.affine``, ``.source`` and numpy slicing. Volumes are ordered by source path. At most
    ``max_open`` volume files are held open at once (least recently used closed first), so RAM
    and file descriptors stay bounded whatever the number of volumes: about 0.08 MiB each, so the
    default (1024) is up to 80 MiB per reading process. Reopening costs: from 400 small volumes,
    64 open gave 2500 cubes/s of 32x32x16 against 3870 with all open (bench/PERFORMANCE.md, data
    path). Chunks found intact (CRC-32) stay known when their volume is closed.

    Raises:
        StoreError: not a store, an empty one, or one written by another format version.
    """

    def __init__(self, path: str, max_open: int = 1024):
        self.root = os.path.abspath(os.fspath(path))
        if not os.path.isdir(self.root):
            raise StoreError(f"{path}: no such store folder")
        if not is_store(self.root):
            raise StoreError(f"{path}: not a store (no {MANIFEST}; make one with genesis-ops preprocess)")
        self.entries = read_entries(self.root)
        if not self.entries:
            raise StoreError(f"{path}: store holds no volume")
        self.max_open = max(1, int(max_open))
        self._open: OrderedDict[int, StoreVolume] = OrderedDict()
        self._crc_ok: dict[int, set] = {}  # per volume: chunks whose CRC-32 matched, in this process

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> StoreVolume:
        i = range(len(self.entries))[i]
        v = self._open.get(i)
        if v is None:
            # the chunks found intact stay known when the volume leaves the open set
            v = StoreVolume(self.root, self.entries[i], _checked=self._crc_ok.setdefault(i, set()))
            self._open[i] = v
            if len(self._open) > self.max_open:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(i)
        return v

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getstate__(self):  # DataLoader workers get the index, not open files
        return {"root": self.root, "entries": self.entries, "max_open": self.max_open}

    def __setstate__(self, st):
        self.root, self.entries, self.max_open = st["root"], st["entries"], st["max_open"]
        self._open = OrderedDict()
        self._crc_ok: dict[int, set] = {}

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(self.entries[0].get("channel_names") or ())

    def sizes(self) -> np.ndarray:
        """Voxels of each volume (spatial), for size-weighted sampling."""
        return np.array([float(np.prod(e["shape"])) for e in self.entries])

    def subset(self, indices: Sequence[int]) -> Store:
        s = object.__new__(Store)
        s.__setstate__({"root": self.root, "entries": [self.entries[i] for i in indices], "max_open": self.max_open})
        return s
