#!/usr/bin/env python
"""The data path of pretraining at scale: the preprocessed store streamed by DataLoader workers,
against the old in-RAM path (every volume decoded into RAM before step 1) in the same run.

Sections (each writes its rows into ``data_path.json`` and ``data_path.md`` under ``--out``):

* **start-up**: seconds from launching the process to the start of the first optimiser step,
  and peak RSS / PSS of the whole process tree (launcher, ranks, DataLoader workers; sampled
  every 50 ms from /proc), versus the number N of synthetic CT-like int16 volumes (64x64x48,
  .nii.gz) and at realistic size (512x512x250, MetaImage as LUNA16). The store path is the real
  ``genesis-ops pretrain --data STORE`` (CPU defaults: width 8, 32x32x16 cubes, batch 8, its
  default workers; one step), with the first step detected by wrapping ``TrainStep.__call__``.
  The old path is what pretraining did before the store: ``data.load_volumes`` (float16 copy of
  every volume) + ``CubeSampler`` + the same model and one step; it cuts no validation cubes, so
  it is a lower bound of the old start-up. 1 rank, and 2 ranks under torchrun (gloo, CPU).
  ``OMP_NUM_THREADS=1`` in every launched process.
* **preprocess**: ``genesis-ops preprocess`` of each synthetic set: seconds per volume, peak RSS.
* **cubes/s per worker** at 64x64x32 (batch 8) and 160^3 (batch 2) from the realistic store,
  read in the measuring process (0 workers: a worker's own rate) and through the DataLoader with
  1 and 2 workers; warm (every store file read once before) and cold (``posix_fadvise(DONTNEED)``
  on every store file before each batch, in the process that makes the batch; the eviction's own
  time is subtracted).
* **store size** against raw int16: the bundled demo CT, the files given with ``--ct``, and the
  synthetic sets.
* **data wait**: the share of a CPU training step (width 8 U-Net, genesis-ops transforms on the
  CPU, SGD) spent waiting for the streaming loader's next batch, with the default workers.
* **GPU demand**: cubes/s that an H200 step consumes at width 32, AMP, 64x64x32 batch 32 and
  160^3 batch 2, from a FLOP model (FLOPs of forward + backward counted by
  ``torch.utils.flop_counter`` on the real model, on the meta device; divided by an assumed
  sustained bf16 rate: no GPU measured it).
* optional (``--big-store-gib G``, off by default): a store larger than RAM, made by copying the
  realistic volumes (real copies, no links: nothing is shared in the page cache), streamed for
  ``--big-seconds`` with the default workers: RSS and cubes/s over the run.

    python bench/data_path.py                    # about 5 min on a 2-core VM
    python bench/data_path.py --quick            # about 1.5 min: every section, small sizes
    python bench/data_path.py --ct scan.nii.gz   # add a real CT to the size table
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import load_average, machine_info, package_fingerprint, set_threads  # noqa: E402

SAMPLE_S = 0.05
MIB = 2**20
# the targets, checked in the summary
TARGET_RSS_RATIO = 1.10
TARGET_RSS_GIB = 3.0
TARGET_STARTUP_S = 5.0
TARGET_RATE = {"64x64x32": 1000.0, "160x160x160": 50.0}
TARGET_STORE_RATIO = 0.6
# assumed sustained bf16 rates of an H200 for this U-Net's 3D convolutions (dense peak: 989 TFLOP/s)
H200_TFLOPS = (200.0, 400.0)


# ----------------------------------------------------------------------------------------------
# Memory of a process tree, from /proc


def _ppids() -> dict[int, int]:
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    s = f.read()
                out[int(d)] = int(s[s.rindex(")") + 2 :].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return out


def tree(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for p, pp in _ppids().items():
        kids.setdefault(pp, []).append(p)
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def rss_pss_kib(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


class TreeMemory:
    """Peak of the summed RSS and PSS over a process and its descendants (call :meth:`sample`)."""

    def __init__(self, pid: int):
        self.pid, self.peak_rss, self.peak_pss, self.procs = pid, 0, 0, 0
        self.trace: list[tuple[float, float, float]] = []

    def sample(self, t: float | None = None) -> tuple[int, int]:
        pids = tree(self.pid)
        mem = [rss_pss_kib(p) for p in pids]
        rss, pss = sum(m[0] for m in mem), sum(m[1] for m in mem)
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
        self.procs = max(self.procs, len(pids))
        if t is not None:
            self.trace.append((round(t, 3), round(rss / 1024, 1), round(pss / 1024, 1)))
        return rss, pss


def launch(cmd: list[str], markers: list[str], log: str, timeout: float, env_extra: dict | None = None) -> dict:
    """Run ``cmd`` in its own session, sample the tree's memory every 50 ms until every marker
    file says ``done`` (then the session is killed) or the process ends; seconds are from launch."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(env_extra or {}))
    for m in markers:
        if os.path.exists(m):
            os.remove(m)
    t0 = time.time()
    with open(log, "w") as lf:
        p = subprocess.Popen(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT, start_new_session=True)
        mem = TreeMemory(p.pid)
        first = done = None
        try:
            while True:
                tick = time.time()
                mem.sample()
                marks = [_read_marker(m) for m in markers]
                if markers and all("done" in mk for mk in marks):
                    first = max(mk["first"] for mk in marks) - t0
                    done = max(mk["done"] for mk in marks) - t0
                    break
                if p.poll() is not None or tick - t0 > timeout:
                    break
                time.sleep(max(0.0, SAMPLE_S - (time.time() - tick)))
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)  # the session this function started
            p.wait()
    res = {"startup_s": first, "first_step_done_s": done, "peak_rss_mib": mem.peak_rss / 1024}
    res.update(peak_pss_mib=mem.peak_pss / 1024, processes=mem.procs)
    if first is None:
        with open(log) as f:
            res["error"] = f.read()[-1500:]
    return res


def _read_marker(path: str) -> dict:
    out = {}
    try:
        with open(path) as f:
            for line in f:
                k, v = line.split()
                out[k] = float(v)
    except (OSError, ValueError):
        pass
    return out


# ----------------------------------------------------------------------------------------------
# Child processes (this script run with --child)


def _mark_first_step(marker: str) -> None:
    """Wrap ``TrainStep.__call__`` so the first call writes its start and end times to ``marker``."""
    from models_genesis import engine

    orig = engine.TrainStep.__call__
    calls = [0]

    def call(self, *a, **k):
        calls[0] += 1
        if calls[0] == 1:
            with open(marker, "a") as f:
                f.write(f"first {time.time()}\n")
        out = orig(self, *a, **k)
        if calls[0] == 1:
            with open(marker, "a") as f:
                f.write(f"done {time.time()}\n")
        return out

    engine.TrainStep.__call__ = call


def _marker_path() -> str:
    return f"{os.environ['DATA_PATH_MARKER']}.{os.environ.get('RANK', '0')}"


def child_cli(argv: list[str]) -> int:
    _mark_first_step(_marker_path())
    from models_genesis import cli

    return cli.main(argv)


def child_ram(argv: list[str]) -> int:
    """The old path: every volume in RAM (float16), CubeSampler, the model, one step."""
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--cube", default="32x32x16")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--width", type=int, default=8)
    a = ap.parse_args(argv)
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    _mark_first_step(_marker_path())
    import genesis_ops as go
    from models_genesis import data, engine, losses
    from models_genesis.model import UNet3D

    vols = data.load_volumes([a.data], data.Preprocessing(), log=None)
    sampler = data.CubeSampler(vols, tuple(int(c) for c in a.cube.split("x")), torch.Generator().manual_seed(rank))
    torch.manual_seed(0)
    model = UNet3D(in_channels=1, n_classes=1, width=a.width)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # pretrain's default optimiser
    step = engine.TrainStep(model, opt, torch.device("cpu"), loss_fn=losses.mse_loss, amp=False)
    inp, tgt = go.models_genesis(sampler.sample(a.batch), config=go.GenesisConfig(), seed=rank)
    step(inp, tgt)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


def child_import(argv: list[str]) -> int:
    """The floor of every start-up: the interpreter, torch and the pretraining modules imported."""
    with open(_marker_path(), "a") as f:
        import genesis_ops  # noqa: F401
        import models_genesis.pretrain  # noqa: F401

        t = time.time()
        f.write(f"first {t}\ndone {t}\n")
    return 0


# ----------------------------------------------------------------------------------------------
# Synthetic CT-like volumes


def ct_like(shape, rng: np.random.Generator) -> np.ndarray:
    """int16 HU: air (-1000) around an elliptic body of soft tissue with two lungs and a spine,
    plus noise; the body's outline changes slowly along z."""
    x, y, z = shape
    gx, gy = np.meshgrid(
        np.linspace(-1, 1, x, dtype=np.float32), np.linspace(-1, 1, y, dtype=np.float32), indexing="ij"
    )
    out = np.empty(shape, np.int16)
    ax, ay = rng.uniform(0.75, 0.9), rng.uniform(0.55, 0.7)
    for k in range(z):
        s = 1.0 + 0.08 * np.sin(2 * np.pi * k / max(z, 1) + ax)
        body = (gx / (ax * s)) ** 2 + (gy / (ay * s)) ** 2 < 1
        lung = ((np.abs(gx) - 0.35 * s) / (0.25 * s)) ** 2 + (gy / (0.4 * s)) ** 2 < 1
        spine = gx**2 + (gy - 0.4 * ay * s) ** 2 < 0.01
        sl = np.where(body, 40, -1000).astype(np.int16)
        sl[lung & body] = -850
        sl[spine] = 700
        out[..., k] = sl
    out += rng.integers(-25, 26, size=shape, dtype=np.int16)
    return out


def write_set(folder: str, n: int, shape, fmt: str, seed: int) -> float:
    """``n`` CT-like volumes as .nii.gz or .mhd in ``folder``; returns seconds."""
    import nibabel as nib

    t0 = time.perf_counter()
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = ct_like(shape, rng)
    for i in range(n):
        # each volume its own values: a shifted copy of one body plus fresh noise is cheap and
        # compresses as a new scan would (the noise dominates the entropy)
        a = np.roll(base, int(rng.integers(0, shape[2])), axis=2)
        a = a + rng.integers(-4, 5, size=shape, dtype=np.int16)
        if fmt == "nii.gz":
            nib.save(nib.Nifti1Image(a, np.diag([0.8, 0.8, 2.5, 1.0])), os.path.join(folder, f"v{i:05d}.nii.gz"))
        else:
            import SimpleITK as sitk

            img = sitk.GetImageFromArray(np.ascontiguousarray(a.transpose(2, 1, 0)))
            img.SetSpacing((0.7, 0.7, 1.25))
            sitk.WriteImage(img, os.path.join(folder, f"v{i:05d}.mhd"))
    return time.perf_counter() - t0


def store_files(store: str) -> list[str]:
    return sorted(glob.glob(os.path.join(store, "volumes", "*.b2nd")))


def evict(paths) -> None:
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_all(paths) -> None:
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass


# ----------------------------------------------------------------------------------------------
# Sections


def preprocess(src: str, store: str, workers: int, tmp: str, tag: str) -> dict:
    cmd = [sys.executable, "-m", "models_genesis", "preprocess", src, "--out", store]
    cmd += ["--workers", str(workers), "--quiet"]
    marker = os.path.join(tmp, f"pre-{tag}")
    t0 = time.perf_counter()
    r = launch(
        cmd, [], os.path.join(tmp, f"preprocess-{tag}.log"), timeout=1800, env_extra={"DATA_PATH_MARKER": marker}
    )
    r["time_s"] = time.perf_counter() - t0
    from models_genesis.store import Store

    s = Store(store)
    r["volumes"] = len(s)
    r["bytes"] = sum(e["nbytes"] for e in s.entries)
    r["raw_int16_bytes"] = sum(e["raw_int16_bytes"] for e in s.entries)
    r["ratio"] = r["bytes"] / r["raw_int16_bytes"]
    r["s_per_volume"] = r["time_s"] / len(s)
    r.pop("startup_s"), r.pop("first_step_done_s")
    return r


def startup(path: str, n: int, shape: str, ranks: int, tmp: str, timeout: float) -> list[dict]:
    """The store path (real CLI) and the old in-RAM path on the same inputs; ``path``: the store
    for the first, the raw folder for the second is ``path + '.raw'``."""
    rows = []
    me = os.path.abspath(__file__)
    for kind in ("store", "ram"):
        tag = f"{kind}-n{n}-{shape}-r{ranks}"
        marker = os.path.join(tmp, f"mark-{tag}")
        if kind == "store":
            run = os.path.join(tmp, f"run-{tag}")
            args = ["pretrain", "--data", path, "--out", run, "--overwrite", "--device", "cpu", "--epochs", "1"]
            args += ["--steps-per-epoch", "2", "--val-batches", "1", "--quiet", "--seed", "0"]
            child = ["--child", "cli", "--", *args]
        else:
            child = ["--child", "ram", "--", path + ".raw"]
        if ranks > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", me]
        else:
            cmd = [sys.executable, me]
        markers = [f"{marker}.{r}" for r in range(ranks)]
        r = launch(cmd + child, markers, os.path.join(tmp, f"{tag}.log"), timeout, {"DATA_PATH_MARKER": marker})
        r.update(path=kind, n=n, shape=shape, ranks=ranks)
        rows.append(r)
        print(
            f"  start-up {kind:5s} N={n:5d} {shape} ranks={ranks}: {_fmt(r['startup_s'])} s, peak RSS "
            f"{r['peak_rss_mib']:.0f} MiB, PSS {r['peak_pss_mib']:.0f} MiB ({r['processes']} processes)"
            + (f"  ERROR {r['error'][-300:]}" if r.get("error") else ""),
            flush=True,
        )
    return rows


def _fmt(v, nd=2):
    return "-" if v is None else f"{v:.{nd}f}"


class _Evicting(torch.utils.data.Dataset):
    """A :class:`samplers.StoreCubes` whose every batch starts with the store's files evicted
    from the page cache; each item also carries the eviction's seconds."""

    def __init__(self, inner, files, cold: bool):
        self.inner, self.files, self.cold = inner, files, cold

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, key):
        t = time.perf_counter()
        if self.cold:
            evict(self.files)
        te = time.perf_counter() - t
        return (*self.inner[key], te)  # the worker's hand-over (stored values, windows, seed) + eviction s


def cube_rate(store_path: str, cube, batch: int, workers: int, cold: bool, budget: float) -> dict:
    from models_genesis import samplers
    from models_genesis.preprocess import Preprocessing
    from models_genesis.store import Store

    files = store_files(store_path)
    ds = _Evicting(samplers.StoreCubes(Store(store_path), cube, batch, Preprocessing(), seed=1), files, cold)
    if not cold:
        read_all(files)
    batches = evict_s = 0.0
    if workers == 0:
        ds[(0, 0)]  # opens the files, loads the foreground maps
        t0 = time.perf_counter()
        b = 1
        while time.perf_counter() - t0 < budget or batches < 3:
            te = ds[(0, b)][-1]
            evict_s += te
            batches += 1
            b += 1
        el = time.perf_counter() - t0 - evict_s
    else:
        loader, sampler = samplers.cube_loader(ds, 10**9, workers, pin_memory=False, prefetch=2)
        it = iter(loader)
        for _ in range(2 * workers):  # worker start-up and the first batches: not timed
            next(it)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < budget or batches < 3 * workers:
            te = next(it)[-1]
            evict_s += float(te)
            batches += 1
        el = time.perf_counter() - t0 - evict_s / workers
        del it, loader
    cubes = batches * batch
    total = cubes / el
    return {
        "cube": "x".join(map(str, cube)),
        "batch": batch,
        "workers": workers,
        "cache": "cold" if cold else "warm",
        "cubes": int(cubes),
        "seconds": el,
        "cubes_per_s": total,
        "cubes_per_s_per_worker": total / max(1, workers),
        "evict_s": evict_s,
    }


class _Filled(torch.utils.data.Dataset):
    """Batches of ones, made at memory speed: what the DataLoader's hand-over alone costs."""

    def __init__(self, shape):
        self.shape = shape

    def __len__(self):
        return 2**62

    def __getitem__(self, key):
        a = np.empty(self.shape, np.float32)
        a.fill(1.0)
        return torch.from_numpy(a)


CODECS = {
    "LZ4 + byte shuffle": ("LZ4", "SHUFFLE"),
    "LZ4 + bit shuffle (the store's)": ("LZ4", "BITSHUFFLE"),
    "ZSTD 1 + byte shuffle": ("ZSTD", "SHUFFLE"),
    "ZSTD 1 + bit shuffle": ("ZSTD", "BITSHUFFLE"),
}


def codecs(arrays: dict, tmp: str, reps: int) -> list[dict]:
    """Size against raw int16 of each array under each blosc2 setting (the store's chunks and
    blocks), and for arrays at least 160^3 the warm read time of random 64x64x32 and 160^3 cubes."""
    import blosc2

    from models_genesis.store import BLOCKS, CHUNKS

    rows, rng = [], np.random.default_rng(5)
    path = os.path.join(tmp, "codec.b2nd")
    for name, (codec, filt) in CODECS.items():
        cp = blosc2.CParams(
            codec=getattr(blosc2.Codec, codec),
            clevel=1 if codec == "ZSTD" else 5,
            filters=[getattr(blosc2.Filter, filt)],
            nthreads=1,
        )
        for what, a in arrays.items():
            chunks = tuple(min(c, n) for c, n in zip(CHUNKS, a.shape, strict=True))
            blocks = tuple(min(b, c) for b, c in zip(BLOCKS, chunks, strict=True))
            t0 = time.perf_counter()
            nd = blosc2.asarray(a, chunks=chunks, blocks=blocks, urlpath=path, mode="w", cparams=cp)
            row = {"setting": name, "volume": what, "ratio": nd.schunk.cbytes / a.nbytes}
            row["write_s"] = time.perf_counter() - t0
            del nd
            if min(a.shape) >= 160:
                nd = blosc2.open(path, mode="r", dparams=blosc2.DParams(nthreads=1))
                for cube in ((64, 64, 32), (160, 160, 160)):
                    n = reps if cube[0] == 64 else max(2, reps // 5)
                    offs = [
                        [int(rng.integers(0, s - c + 1)) for s, c in zip(a.shape, cube, strict=True)]
                        for _ in range(n + 1)
                    ]
                    boxes = [tuple(slice(o, o + c) for o, c in zip(off, cube, strict=True)) for off in offs]
                    nd[boxes[0]]
                    t0 = time.perf_counter()
                    for b in boxes[1:]:
                        nd[b]
                    row[f"read_ms_{'x'.join(map(str, cube))}"] = 1e3 * (time.perf_counter() - t0) / n
                del nd
            rows.append(row)
    os.remove(path)
    return rows


def transfer_floor(cube, batch: int, budget: float) -> dict:
    """ms per batch of making a batch of ones in this process, and through one DataLoader worker
    (the difference: the worker's copy into a new shared-memory segment and its hand-over)."""
    ds = _Filled((batch, 1, *cube))
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < budget / 2:
        ds[n]
        n += 1
    inproc = (time.perf_counter() - t0) / n
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=1, persistent_workers=True)
    it = iter(loader)
    next(it), next(it)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < budget / 2:
        next(it)
        n += 1
    worker = (time.perf_counter() - t0) / n
    del it, loader
    mib = batch * np.prod(cube) * 4 / MIB
    return {
        "cube": "x".join(map(str, cube)),
        "batch": batch,
        "mib": mib,
        "in_process_ms": 1e3 * inproc,
        "one_worker_ms": 1e3 * worker,
        "handover_ms_per_mib": 1e3 * (worker - inproc) / mib,
    }


def normalise_cost(cube, batch: int, reps: int = 5) -> dict:
    """ms per batch of ``samplers.normalise_cubes`` on the CPU (where the cubes arrive in a CPU run;
    on a GPU it runs there, after the copy)."""
    from models_genesis.samplers import normalise_cubes

    raw = torch.randint(-1024, 2000, (batch, 1, *cube), dtype=torch.int16)
    win = torch.tensor([[[-1000.0, 1000.0]]], dtype=torch.float64).expand(batch, 1, 2)
    normalise_cubes(raw, win)
    t0 = time.perf_counter()
    for _ in range(reps):
        normalise_cubes(raw, win)
    return {"cube": "x".join(map(str, cube)), "batch": batch, "ms": 1e3 * (time.perf_counter() - t0) / reps}


def data_wait(store_path: str, cube, batch: int, steps: int, threads: int) -> dict:
    import genesis_ops as go
    from models_genesis import engine, losses, samplers
    from models_genesis.model import UNet3D
    from models_genesis.preprocess import Preprocessing
    from models_genesis.store import Store

    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    workers = samplers.default_workers()
    ds = samplers.StoreCubes(Store(store_path), cube, batch, Preprocessing(), seed=2)
    cubes = samplers.StreamedCubes(ds, steps + 2, workers)
    torch.manual_seed(0)
    model = UNet3D(in_channels=1, n_classes=1, width=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # pretrain's default optimiser
    step = engine.TrainStep(model, opt, torch.device("cpu"), loss_fn=losses.mse_loss, amp=False)
    it = cubes.epoch(1, torch.device("cpu"))
    wait = work = 0.0
    for i in range(steps + 2):
        t0 = time.perf_counter()
        x, seed = next(it)
        t1 = time.perf_counter()
        inp, tgt = go.models_genesis(x, config=go.GenesisConfig(), seed=seed)
        step(inp, tgt)
        t2 = time.perf_counter()
        if i >= 2:  # the first two: worker start-up and the first allocation of the model's buffers
            wait += t1 - t0
            work += t2 - t1
    cubes.close()
    torch.set_num_threads(prev)
    return {
        "cube": "x".join(map(str, cube)),
        "batch": batch,
        "workers": workers,
        "threads": threads,
        "steps": steps,
        "wait_ms_per_step": 1e3 * wait / steps,
        "step_ms": 1e3 * (wait + work) / steps,
        "wait_share": wait / (wait + work),
    }


def gpu_demand() -> list[dict]:
    from torch.utils.flop_counter import FlopCounterMode

    from models_genesis.model import UNet3D

    rows = []
    for cube, batch in (((64, 64, 32), 32), ((160, 160, 160), 2)):
        with torch.device("meta"):
            m = UNet3D(in_channels=1, n_classes=1, width=32)
            x = torch.zeros(batch, 1, *cube)
        fc = FlopCounterMode(display=False)
        with fc:
            m(x).float().pow(2).mean().backward()
        tflop = fc.get_total_flops() / 1e12
        row = {"cube": "x".join(map(str, cube)), "batch": batch, "tflop_per_step": tflop}
        for r in H200_TFLOPS:
            row[f"step_ms_at_{r:g}"] = 1e3 * tflop / r
            row[f"cubes_per_s_at_{r:g}"] = batch * r / tflop
        rows.append(row)
    return rows


def big_store(src_store: str, gib: float, seconds: float, tmp: str) -> dict:
    """Copies of the realistic volumes until the store holds ``gib`` GiB, then streamed."""
    from models_genesis import samplers
    from models_genesis.preprocess import Preprocessing
    from models_genesis.store import VOLUMES, Store, write_manifest

    dst = os.path.join(tmp, "big_store")
    vdir = os.path.join(dst, VOLUMES)
    os.makedirs(vdir, exist_ok=True)
    src = Store(src_store).entries
    total, k, t0 = 0, 0, time.perf_counter()
    while total < gib * 2**30:
        e = dict(src[k % len(src)])
        key = f"copy{k:05d}-{e['key']}"
        shutil.copyfile(os.path.join(src_store, VOLUMES, e["key"] + ".b2nd"), os.path.join(vdir, key + ".b2nd"))
        e.update(key=key, source=f"{e['source']}#copy{k}")
        with open(os.path.join(vdir, key + ".json"), "w") as f:
            json.dump(e, f)
        total += e["nbytes"]
        k += 1
    write_manifest(dst)
    os.sync()
    made_s = time.perf_counter() - t0
    evict(store_files(dst))
    workers = samplers.default_workers()
    ds = samplers.StoreCubes(Store(dst), (64, 64, 32), 8, Preprocessing(), seed=3)
    loader, _ = samplers.cube_loader(ds, 10**9, workers, pin_memory=False)
    mem = TreeMemory(os.getpid())
    it = iter(loader)
    t0 = last = time.perf_counter()
    windows, n = [], 0
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += 8
        now = time.perf_counter()
        if now - last >= 5.0:
            rss, pss = mem.sample()
            windows.append(
                {
                    "t_s": round(now - t0, 1),
                    "cubes_per_s": n / (now - last),
                    "rss_mib": rss / 1024,
                    "pss_mib": pss / 1024,
                }
            )
            n, last = 0, now
    del it, loader
    shutil.rmtree(dst)
    return {
        "gib": total / 2**30,
        "volumes": k,
        "made_s": made_s,
        "workers": workers,
        "windows": windows,
        "peak_rss_mib": mem.peak_rss / 1024,
        "peak_pss_mib": mem.peak_pss / 1024,
    }


# ----------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        rest = argv[3:] if argv[2:3] == ["--"] else argv[2:]
        return {"cli": child_cli, "ram": child_ram, "import": child_import}[argv[1]](rest)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "data_path"), help="output folder")
    ap.add_argument(
        "--workdir", default=None, help="scratch folder for volumes and stores (default: a new one in TMPDIR)"
    )
    ap.add_argument("--quick", action="store_true", help="small sizes and short budgets: about a minute")
    ap.add_argument("--ct", nargs="*", default=[], metavar="FILE", help="real CT files added to the store-size table")
    ap.add_argument("--ns", default=None, help="N values of the small synthetic sets (default 10,100,1000)")
    ap.add_argument("--budget", type=float, default=None, help="seconds per cubes/s measurement (default 4)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the data-wait training loop (default 1)")
    ap.add_argument("--big-store-gib", type=float, default=0.0, help="also stream a store this large (0: skip)")
    ap.add_argument("--big-seconds", type=float, default=60.0)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--from-json", metavar="FILE", help="only rewrite data_path.md (in --out) from a data_path.json")
    a = ap.parse_args(argv)
    if a.from_json:
        with open(a.from_json) as f:
            res = json.load(f)
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "data_path.md"), "w") as f:
            f.write(report(res))
        return 0
    for p in a.ct:
        if not os.path.isfile(p):
            ap.error(f"--ct: no such file {p}")
    ns = [int(v) for v in (a.ns or ("10,100" if a.quick else "10,100,1000")).split(",")]
    small = (64, 64, 48)
    real_shape, real_n = ((256, 256, 128), 2) if a.quick else ((512, 512, 250), 4)
    budget = a.budget if a.budget is not None else (0.8 if a.quick else 4.0)
    wait_steps = 3 if a.quick else 4
    set_threads(1)
    meta = machine_info()
    meta.update(
        small_shape="x".join(map(str, small)),
        command=" ".join([os.path.basename(sys.executable)] + sys.argv),
        omp_num_threads_children=1,
        quick=a.quick,
        genesis_ops_build=package_fingerprint(__import__("genesis_ops")),
    )
    import blosc2

    meta["blosc2"] = blosc2.__version__
    print(
        f"# data path ({meta['time_utc']}): {meta['cpu_model']}, {meta['logical_cpus']} CPUs, "
        f"load avg {meta['load_average_start']}",
        flush=True,
    )
    tmp = a.workdir or tempfile.mkdtemp(prefix="genesis-data-path-")
    os.makedirs(tmp, exist_ok=True)
    os.makedirs(a.out, exist_ok=True)
    res: dict = {
        "meta": meta,
        "startup": [],
        "preprocess": [],
        "rates": [],
        "sizes": [],
        "wait": [],
        "gpu": [],
        "handover": [],
    }
    t_all = time.perf_counter()
    from models_genesis.readers import DEMO_CT

    try:
        # -- inputs and stores
        need = (max(ns) * np.prod(small) + real_n * np.prod(real_shape)) * 2 * 2.5  # raw + store + slack
        free = shutil.disk_usage(tmp).free
        meta["scratch_free_gib"] = round(free / 2**30, 1)
        if free < need:
            sys.exit(f"--workdir {tmp}: {free / 2**30:.1f} GiB free, the volumes and stores need {need / 2**30:.1f}")
        sets = [(n, "x".join(map(str, small)), small, "nii.gz") for n in ns]
        sets.append((real_n, "x".join(map(str, real_shape)), real_shape, "mhd"))
        stores = {}
        for n, tag, shape, fmt in sets:
            raw = os.path.join(tmp, f"set-{tag}-n{n}.raw")
            gen_s = write_set(raw, n, shape, fmt, seed=n)
            st = os.path.join(tmp, f"set-{tag}-n{n}")
            r = preprocess(raw, st, 2, tmp, f"{tag}-n{n}")
            r.update(n=n, shape=tag, format=fmt, generate_s=gen_s)
            res["preprocess"].append(r)
            res["sizes"].append(
                {
                    "what": f"synthetic {n} x {tag}",
                    "raw_int16_mib": r["raw_int16_bytes"] / MIB,
                    "store_mib": r["bytes"] / MIB,
                    "ratio": r["ratio"],
                }
            )
            stores[(n, tag)] = st
            print(
                f"  preprocess N={n} {tag} ({fmt}): {r['s_per_volume'] * 1e3:.0f} ms/volume, "
                f"{r['ratio']:.3f}x raw, peak RSS {r['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
        for p in [DEMO_CT, *a.ct]:
            st = os.path.join(tmp, "ct-" + os.path.basename(p).split(".")[0])
            r = preprocess(p, st, 1, tmp, os.path.basename(st))
            shape = "x".join(map(str, Store_entries(st)[0]["shape"]))
            res["sizes"].append(
                {
                    "what": f"real CT {os.path.basename(p)} ({shape})",
                    "raw_int16_mib": r["raw_int16_bytes"] / MIB,
                    "store_mib": r["bytes"] / MIB,
                    "ratio": r["ratio"],
                    "s_per_volume": r["s_per_volume"],
                }
            )
            print(f"  store size {os.path.basename(p)}: {r['ratio']:.3f}x raw int16", flush=True)
        from models_genesis.readers import read_image
        from models_genesis.store import Store

        arrays = {}
        for p in [DEMO_CT, *a.ct]:
            img = read_image(p)[2]
            arrays[os.path.basename(p)] = np.clip(np.rint(img), -32768, 32767).astype(np.int16)
        real_tag = "x".join(map(str, real_shape))
        arrays["synthetic " + real_tag] = Store(stores[(real_n, real_tag)])[0][:, :, :]
        res["codecs"] = codecs(arrays, tmp, 10 if a.quick else 40)
        del arrays
        os.sync()  # written pages reach the disk, so that eviction works

        # -- start-up and RSS
        me = os.path.abspath(__file__)
        marker = os.path.join(tmp, "mark-import")
        imp = launch(
            [sys.executable, me, "--child", "import"],
            [marker + ".0"],
            os.path.join(tmp, "import.log"),
            120,
            {"DATA_PATH_MARKER": marker},
        )
        res["import"] = imp
        print(f"  import floor: {_fmt(imp['startup_s'])} s, {imp['peak_rss_mib']:.0f} MiB", flush=True)
        two_rank_n = (10,) if a.quick else (100, 1000)
        for n, tag, _, _ in sets:
            res["startup"] += startup(stores[(n, tag)], n, tag, 1, tmp, timeout=600)
            if n in two_rank_n and tag == "x".join(map(str, small)):
                res["startup"] += startup(stores[(n, tag)], n, tag, 2, tmp, timeout=600)
        real_store = stores[(real_n, "x".join(map(str, real_shape)))]

        # -- cubes/s
        for cube, batch in (((64, 64, 32), 8), ((160, 160, 160), 2)):
            if min(real_shape) < max(cube) and not a.quick:
                continue
            for cold in (False, True):
                for workers in (0, 1, 2):
                    r = cube_rate(real_store, cube, batch, workers, cold, budget)
                    res["rates"].append(r)
                    print(
                        f"  cubes/s {r['cube']} {r['cache']} workers={workers}: {r['cubes_per_s']:.0f} "
                        f"({r['cubes_per_s_per_worker']:.0f} per worker)",
                        flush=True,
                    )

            r = transfer_floor(cube, batch, budget)
            r["normalise_ms"] = normalise_cost(cube, batch)["ms"]
            res["handover"].append(r)
            print(f"  DataLoader hand-over {r['cube']} x{batch}: {r['handover_ms_per_mib']:.2f} ms/MiB", flush=True)

        # -- data wait and the GPU's demand
        for cube, batch in [((32, 32, 16), 8)] if a.quick else [((32, 32, 16), 8), ((64, 64, 32), 6)]:
            r = data_wait(real_store, cube, batch, wait_steps, a.threads)
            res["wait"].append(r)
            print(
                f"  data wait {r['cube']} batch {batch}: {100 * r['wait_share']:.1f}% of a {r['step_ms']:.0f} ms step",
                flush=True,
            )
        res["gpu"] = gpu_demand()
        if a.big_store_gib > 0:
            res["big"] = big_store(real_store, a.big_store_gib, a.big_seconds, tmp)
    finally:
        meta["elapsed_s"] = round(time.perf_counter() - t_all, 1)
        meta["load_average_end"] = load_average()
        with open(os.path.join(a.out, "data_path.json"), "w") as f:
            json.dump(res, f, indent=1)
        with open(os.path.join(a.out, "data_path.md"), "w") as f:
            f.write(report(res))
        if not a.keep and a.workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {a.out}/data_path.md and .json in {meta['elapsed_s']} s", flush=True)
    return 0


def Store_entries(path):  # noqa: N802 - a store's entries without holding it open
    from models_genesis.store import Store

    return Store(path).entries


def report(res: dict) -> str:
    m = res["meta"]
    L = [
        "# Data path: the store streamed by workers, against the in-RAM path",
        "",
        f"- when: {m['time_utc']}; elapsed {m.get('elapsed_s')} s; machine: {m['cpu_model']}, {m['logical_cpus']} "
        f"logical CPUs, {m['mem_total_gib']} GiB RAM; load average start {m['load_average_start']}, end "
        f"{m.get('load_average_end')}",
        f"- torch {m['torch']}, blosc2 {m.get('blosc2')}; threads: 1 in this process's readers, "
        f"OMP_NUM_THREADS=1 in the launched runs; command: `{m['command']}`",
        "- RSS and PSS: summed over the process tree (launcher, ranks, DataLoader workers), sampled every 50 ms; "
        "PSS divides shared pages between processes, RSS counts them in each",
        "",
    ]
    if res.get("import"):
        L += [
            f"Floor of every start-up (interpreter + torch + models_genesis imported): "
            f"{_fmt(res['import']['startup_s'])} s, {res['import']['peak_rss_mib']:.0f} MiB.",
            "",
        ]
    if res["startup"]:
        L += [
            "## Start-up to the first step, and peak memory of the process tree",
            "",
            "store: `genesis-ops pretrain --data STORE` (CPU defaults, default workers, validation cubes cut "
            "first); ram: the old path (`load_volumes` + `CubeSampler`, no validation cubes).",
            "",
            "| path | N | volume | ranks | processes | start-up (s) | peak RSS (MiB) | peak PSS (MiB) |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for r in res["startup"]:
            L.append(
                f"| {r['path']} | {r['n']} | {r['shape']} | {r['ranks']} | {r['processes']} | "
                f"{_fmt(r['startup_s'])} | {r['peak_rss_mib']:.0f} | {r['peak_pss_mib']:.0f} |"
            )
        L.append("")
    if res["preprocess"]:
        L += [
            "## Preprocess (`genesis-ops preprocess --workers 2`)",
            "",
            "| N | volume | source | s per volume | peak RSS (MiB) | store / raw int16 |",
            "|---:|---|---|---:|---:|---:|",
        ]
        for r in res["preprocess"]:
            L.append(
                f"| {r['n']} | {r['shape']} | .{r['format']} | {r['s_per_volume']:.3f} | {r['peak_rss_mib']:.0f} | "
                f"{r['ratio']:.3f} |"
            )
        L.append("")
    if res["rates"]:
        L += [
            "## Cubes/s from the realistic store",
            "",
            "workers 0: read in the measuring process (one worker's own rate, no IPC). cold: every store file "
            "evicted (`posix_fadvise(DONTNEED)`) before each batch, the eviction's time subtracted.",
            "",
            "| cube | batch | cache | workers | cubes/s | per worker |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for r in res["rates"]:
            L.append(
                f"| {r['cube']} | {r['batch']} | {r['cache']} | {r['workers']} | {r['cubes_per_s']:.0f} | "
                f"{r['cubes_per_s_per_worker']:.0f} |"
            )
        L.append("")
    if res.get("codecs"):
        L += [
            "## blosc2 settings compared (the store's chunks and blocks; warm reads in this process, 1 thread)",
            "",
            "| setting | volume | size / raw int16 | write (s) | 64x64x32 read (ms) | 160^3 read (ms) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in res["codecs"]:
            L.append(
                f"| {r['setting']} | {r['volume']} | {r['ratio']:.3f} | {r['write_s']:.2f} | "
                f"{_fmt(r.get('read_ms_64x64x32'))} | {_fmt(r.get('read_ms_160x160x160'))} |"
            )
        L.append("")
    if res.get("handover"):
        L += [
            "DataLoader hand-over alone (a float32 batch of ones made in the worker, against the same made in this "
            "process; the difference is the copy into a fresh shared-memory segment and its transfer). Workers hand "
            "over int16 cubes (half these bytes) that the consumer normalises (`samplers.normalise_cubes`; last "
            "column: its cost per batch on the CPU):",
            "",
            "| cube | batch | MiB | in process (ms) | through 1 worker (ms) | ms per MiB | normalise on CPU (ms) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res["handover"]:
            L.append(
                f"| {r['cube']} | {r['batch']} | {r['mib']:.1f} | {r['in_process_ms']:.2f} | "
                f"{r['one_worker_ms']:.2f} | {r['handover_ms_per_mib']:.2f} | {_fmt(r.get('normalise_ms'))} |"
            )
        L.append("")
    if res["sizes"]:
        L += [
            "## Store size against raw int16",
            "",
            "| volume(s) | raw int16 (MiB) | store (MiB) | ratio |",
            "|---|---:|---:|---:|",
        ]
        for r in res["sizes"]:
            L.append(f"| {r['what']} | {r['raw_int16_mib']:.1f} | {r['store_mib']:.1f} | {r['ratio']:.3f} |")
        L.append("")
    if res["wait"]:
        L += [
            "## Data wait in a CPU training step (width 8, transforms on the CPU, Adam)",
            "",
            "| cube | batch | workers | torch threads | step (ms) | wait (ms) | wait share |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res["wait"]:
            L.append(
                f"| {r['cube']} | {r['batch']} | {r['workers']} | {r['threads']} | {r['step_ms']:.0f} | "
                f"{r['wait_ms_per_step']:.1f} | {100 * r['wait_share']:.1f}% |"
            )
        L.append("")
    if res["gpu"]:
        lo, hi = (f"{v:g}" for v in H200_TFLOPS)
        L += [
            "## Estimated GPU demand: H200, width 32, AMP (FLOP model, not measured)",
            "",
            f"FLOPs of forward + backward counted by `torch.utils.flop_counter` on `UNet3D(width=32)` (meta device), "
            f"divided by an assumed sustained bf16 rate of {lo} or {hi} TFLOP/s (dense peak 989). "
            "Transforms, optimiser and memory-bound layers are left out, so the real step is slower and the "
            "demand lower.",
            "",
            f"| cube | batch | TFLOP per step | step at {lo} / {hi} TFLOP/s (ms) | cubes/s consumed |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in res["gpu"]:
            L.append(
                f"| {r['cube']} | {r['batch']} | {r['tflop_per_step']:.2f} | {r[f'step_ms_at_{lo}']:.0f} / "
                f"{r[f'step_ms_at_{hi}']:.0f} | {r[f'cubes_per_s_at_{lo}']:.0f}-{r[f'cubes_per_s_at_{hi}']:.0f} |"
            )
        L.append("")
    if res.get("big"):
        b = res["big"]
        L += [
            f"## A store larger than RAM: {b['gib']:.1f} GiB ({b['volumes']} volumes), {b['workers']} workers, "
            "64x64x32 batch 8, cold start",
            "",
            "| t (s) | cubes/s | RSS (MiB) | PSS (MiB) |",
            "|---:|---:|---:|---:|",
        ]
        for w in b["windows"]:
            L.append(f"| {w['t_s']} | {w['cubes_per_s']:.0f} | {w['rss_mib']:.0f} | {w['pss_mib']:.0f} |")
        L.append("")
    L += targets(res)
    return "\n".join(L) + "\n"


def targets(res: dict) -> list[str]:
    L = ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    small = res["meta"].get("small_shape")
    one = {
        (r["path"], r["n"]): r
        for r in res["startup"]
        if r["ranks"] == 1 and r["startup_s"] is not None and r["shape"] == small
    }
    ns = sorted(n for p, n in one if p == "store")
    if len(ns) >= 2:
        lo, hi = one[("store", ns[0])], one[("store", ns[-1])]
        ratio = hi["peak_rss_mib"] / lo["peak_rss_mib"]
        pss = hi["peak_pss_mib"] / lo["peak_pss_mib"]
        L.append(
            f"| peak RSS at N={ns[-1]} within 10% of N={ns[0]} (1 rank) | {hi['peak_rss_mib']:.0f} vs "
            f"{lo['peak_rss_mib']:.0f} MiB ({ratio:.2f}x; PSS {pss:.2f}x) | "
            f"{'yes' if ratio <= TARGET_RSS_RATIO else 'no'} |"
        )
        L.append(
            f"| peak RSS at N={ns[-1]} under 3 GiB | {hi['peak_rss_mib']:.0f} MiB | "
            f"{'yes' if hi['peak_rss_mib'] < TARGET_RSS_GIB * 1024 else 'no'} |"
        )
        L.append(
            f"| start-up at N={ns[-1]} under 5 s | {hi['startup_s']:.2f} s | "
            f"{'yes' if hi['startup_s'] < TARGET_STARTUP_S else 'no'} |"
        )
    for cube, want in TARGET_RATE.items():
        for w, how in ((0, "read in process (a worker's own rate)"), (1, "through 1 DataLoader worker")):
            rows = [r for r in res["rates"] if r["cube"] == cube and r["cache"] == "warm" and r["workers"] == w]
            if rows:
                v = rows[0]["cubes_per_s_per_worker"]
                L.append(
                    f"| >= {want:g} cubes/s per worker at {cube}, warm, {how} | {v:.0f} | "
                    f"{'yes' if v >= want else 'no'} |"
                )
        rows = [r for r in res["rates"] if r["cube"] == cube and r["cache"] == "warm" and r["workers"] in (1, 2)]
        if len(rows) == 2:
            L.append(
                f"| scaling with workers at {cube}, warm: 2 workers / 1 worker | "
                f"{rows[1]['cubes_per_s'] / rows[0]['cubes_per_s']:.2f}x | - |"
            )
    real = [r for r in res["sizes"] if r["what"].startswith("real CT")]
    for r in real:
        L.append(
            f"| store <= 0.6x raw int16: {r['what']} | {r['ratio']:.3f} | "
            f"{'yes' if r['ratio'] <= TARGET_STORE_RATIO else 'no'} |"
        )
    return L + [""]


if __name__ == "__main__":
    sys.exit(main())
