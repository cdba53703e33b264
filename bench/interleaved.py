#!/usr/bin/env python
"""genesis-ops against the public Models Genesis algorithm, interleaved as a training loop runs them.

A training loop or a DataLoader worker does other work between two calls of the transforms:
NumPy, the model, the loader. That work allocates and frees memory, so a call of ours often
starts on memory the allocator has just handed back to the OS (its outputs then take fresh page
faults) and on caches the other work has evicted. This script measures ours in that setting: in
every round it first runs the public code's algorithm (bench/public_algorithm.py, a NumPy
re-implementation written for timing) on a batch, then ours (``models_genesis`` with
``GenesisConfig()``) on a batch of the same shape, and reports the per-sample medians over the
rounds, their ratio, and our call's minor page faults (getrusage). Both sides run in the same
rounds, so a change of load on the shared machine hits both alike.

Settings (the default runs all; shape is (D, H, W) for ours and (R, C, D) for the public layout):

* ``64x64x32:32:2``   batch 32, 2 threads (the paper's cube and a training batch);
* ``128x128x64:8:2``  batch 8, 2 threads;
* ``160x160x160:2:1`` batch 2, 1 thread: nnssl's setting (it calls the public code per sample);
* ``alone``           batch 1 at 96^3, 1 thread (a DataLoader worker's call): ours right after our
  own call ("alone") and ours right after a public-code sample ("after foreign work"), in the
  same rounds; their ratio should be close to 1.

Usage (from the repository root, with the package installed)::

    python bench/interleaved.py --rounds 7 --out bench/reported/interleaved
    python bench/interleaved.py --settings alone --rounds 15
    python bench/interleaved.py --data ct --rounds 7 --out bench/reported/interleaved_ct
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import public_algorithm as public  # noqa: E402
from _common import load_average, machine_info, package_fingerprint, set_threads  # noqa: E402
from _common import parse_setting as parse_sized_setting  # noqa: E402

try:
    import genesis_ops as go
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(f"bench/interleaved.py needs the installed genesis_ops package: {exc}")

DEFAULT_SETTINGS = ["64x64x32:32:2", "128x128x64:8:2", "160x160x160:2:1", "alone"]
TARGETS = {"64x64x32:32:2": 100.0, "128x128x64:8:2": 50.0, "160x160x160:2:1": 30.0}
ALONE_TARGET = 1.2  # after foreign work / alone, at most


def _usage():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_minflt, u.ru_utime + u.ru_stime


CPU_MS: list[float] = []  # process CPU time (all threads) of every timed call, in call order


def timed(fn):
    """fn(), its wall time in ms and its minor page faults; its process CPU time (user + system, all
    threads) is appended to CPU_MS. On a shared machine CPU time is the steadier measure: wall
    time also counts the time other processes hold the cores."""
    (f0, c0), t0 = _usage(), time.perf_counter()
    out = fn()
    t1, (f1, c1) = time.perf_counter(), _usage()
    CPU_MS.append((c1 - c0) * 1e3)
    return out, (t1 - t0) * 1e3, f1 - f0


def parse_setting(s: str):
    return None if s == "alone" else parse_sized_setting(s)


DATA = "uniform"  # --data: uniform random values, or cubes of the bundled CT
_CT = None


def _ct_volume():
    """The bundled demo CT (python/models_genesis/demo), HU-windowed to [0, 1] as pretraining reads
    it, resampled from 3 mm to 1.5 mm voxels (244 x 202 x 224) so that 160^3 cubes fit."""
    global _CT
    if _CT is None:
        from models_genesis import data as mg_data

        vol = mg_data.load_volume(mg_data.DEMO_CT, mg_data.Preprocessing(spacing=(1.5, 1.5, 1.5)))
        _CT = np.ascontiguousarray(vol.channel_first()[0], dtype=np.float32)
    return _CT


def data(dims, batch, seed=0):
    """The same values for both sides, in [0, 1]: ours (B, 1, *dims), the public (B, 1, *dims).
    Uniform random values (every table lookup of the intensity curve lands anywhere: the costliest
    case for ours), or, with --data ct, cubes cut at random places from the bundled CT (its
    intensities cluster, as real scans' do)."""
    g = torch.Generator().manual_seed(seed)
    if DATA == "uniform":
        x = torch.rand((batch, 1) + dims, generator=g)
    else:
        ct = _ct_volume()
        if any(d > n for d, n in zip(dims, ct.shape, strict=True)):
            raise SystemExit(f"--data ct: a {'x'.join(map(str, dims))} cube does not fit the CT {ct.shape}")
        rng = np.random.default_rng(seed)
        cubes = []
        for _ in range(batch):
            at = [int(rng.integers(0, n - d + 1)) for d, n in zip(dims, ct.shape, strict=True)]
            cubes.append(ct[tuple(slice(a, a + d) for a, d in zip(at, dims, strict=True))])
        x = torch.from_numpy(np.stack(cubes)[:, None].copy())
    return x, x.numpy().copy()


def med(v):
    return statistics.median(v) if v else None


def run_ratio(dims, batch, threads, rounds, public_batch) -> dict:
    set_threads(threads)
    x, img = data(dims, batch)
    cfg = go.GenesisConfig()
    pb = min(public_batch or batch, batch)
    go.models_genesis(x, cfg, seed=0)  # warm-up: first-call costs are not a training loop's
    public.generate_pair(img, 1)
    ours_ms, pub_ms, faults, alone_ms, alone_faults = [], [], [], [], []
    pub_cpu, ours_cpu, alone_cpu = [], [], []
    for r in range(rounds):
        _, ms, _ = timed(lambda: public.generate_pair(img, pb))
        pub_ms.append(ms / pb)
        pub_cpu.append(CPU_MS[-1] / pb)
        _, ms, f = timed(lambda r=r: go.models_genesis(x, cfg, seed=r + 1))
        ours_ms.append(ms / batch)
        ours_cpu.append(CPU_MS[-1] / batch)
        faults.append(f)
        # The same call (same seed, so the same work) again, right after our own: what it costs
        # without foreign work in between.
        _, ms, f = timed(lambda r=r: go.models_genesis(x, cfg, seed=r + 1))
        alone_ms.append(ms / batch)
        alone_cpu.append(CPU_MS[-1] / batch)
        alone_faults.append(f)
        print(
            f"  round {r + 1}/{rounds}: public {pub_ms[-1]:.1f} ms, ours {ours_ms[-1]:.2f} ms per sample "
            f"({faults[-1]} faults), ours alone {alone_ms[-1]:.2f} ms ({alone_faults[-1]} faults)",
            flush=True,
        )
    ratio = med(pub_ms) / med(ours_ms)
    return {
        "setting": f"{'x'.join(map(str, dims))}:{batch}:{threads}",
        "shape": list(dims),
        "batch": batch,
        "threads": threads,
        "public_samples_per_round": pb,
        "public_ms_per_sample": pub_ms,
        "ours_ms_per_sample": ours_ms,
        "ours_minflt_per_call": faults,
        "ours_alone_ms_per_sample": alone_ms,
        "ours_alone_minflt_per_call": alone_faults,
        "ours_alone_ms_median": med(alone_ms),
        "slowdown_after_foreign": med(ours_ms) / med(alone_ms),
        "public_ms_median": med(pub_ms),
        "ours_ms_median": med(ours_ms),
        "ratio": ratio,
        # Total public time over total ours: the throughput ratio. At a small batch the median
        # depends on which rounds' samples drew the costly stages (the shuffle, p = 0.5).
        "ratio_of_totals": sum(pub_ms) / sum(ours_ms),
        "public_cpu_ms_per_sample": pub_cpu,
        "ours_cpu_ms_per_sample": ours_cpu,
        "ours_alone_cpu_ms_per_sample": alone_cpu,
        "cpu_ratio": med(pub_cpu) / med(ours_cpu),
        "cpu_slowdown_after_foreign": med(ours_cpu) / med(alone_cpu),
        "per_round_ratio": [p / o for p, o in zip(pub_ms, ours_ms, strict=True)],
    }


def run_alone(rounds) -> dict:
    """B = 1, 96^3, 1 thread: ours right after ours vs ours right after a public-code sample."""
    set_threads(1)
    dims = (96, 96, 96)
    x, img = data(dims, 1)
    cfg = go.GenesisConfig()
    go.models_genesis(x, cfg, seed=0)
    public.generate_pair(img, 1)
    alone, after, f_alone, f_after, pub = [], [], [], [], []
    c_alone, c_after = [], []
    for r in range(rounds):
        # One seed per round for all three calls: at B = 1 the work depends on the sample's gates.
        go.models_genesis(x, cfg, seed=r + 1)  # the call before "alone" is ours too
        _, ms, f = timed(lambda r=r: go.models_genesis(x, cfg, seed=r + 1))
        alone.append(ms)
        c_alone.append(CPU_MS[-1])
        f_alone.append(f)
        _, ms, _ = timed(lambda: public.generate_pair(img, 1))
        pub.append(ms)
        _, ms, f = timed(lambda r=r: go.models_genesis(x, cfg, seed=r + 1))
        after.append(ms)
        c_after.append(CPU_MS[-1])
        f_after.append(f)
        print(f"  round {r + 1}/{rounds}: alone {alone[-1]:.2f} ms, after foreign work {after[-1]:.2f} ms", flush=True)
    return {
        "setting": "alone",
        "shape": list(dims),
        "batch": 1,
        "threads": 1,
        "alone_ms": alone,
        "after_foreign_ms": after,
        "alone_minflt": f_alone,
        "after_foreign_minflt": f_after,
        "public_ms": pub,
        "alone_ms_median": med(alone),
        "after_foreign_ms_median": med(after),
        "alone_minflt_median": med(f_alone),
        "after_foreign_minflt_median": med(f_after),
        "slowdown": med(after) / med(alone),
        "alone_cpu_ms": c_alone,
        "after_foreign_cpu_ms": c_after,
        "cpu_slowdown": med(c_after) / med(c_alone),
        "ratio_to_public_after_foreign": med(pub) / med(after),
    }


def markdown(doc) -> str:
    m = doc["machine"]
    lines = [
        f"Interleaved with the public algorithm (bench/interleaved.py), {m['time_utc']}, {m['cpu_model']}, "
        f"{m['logical_cpus']} logical CPUs, load average {m['load_average_start']} -> {doc['load_average_end']}, "
        f"{doc['rounds']} rounds, data {doc.get('data', 'uniform')}, "
        f"MALLOC_TRIM_THRESHOLD_={doc['malloc_trim_threshold']}.",
        "",
        "Wall time per sample (median over rounds), and CPU time (user + system over all threads) per sample;",
        "ratio of totals: all rounds' public time over all rounds' ours (throughput).",
        "",
        "| setting | threads | public ms | ours ms | ratio (target) | ratio of totals | ours faults/call "
        "| ours alone ms (faults) | interleaved / alone | public CPU ms | ours CPU ms | CPU ratio "
        "| CPU interleaved / alone |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        if r["setting"] == "alone":
            continue
        t = TARGETS.get(r["setting"])
        target = f">= {t:.0f}x" if t else "-"
        lines.append(
            f"| {r['setting']} | {r['threads']} | {r['public_ms_median']:.1f} | {r['ours_ms_median']:.2f} | "
            f"{r['ratio']:.0f}x ({target}) | {r['ratio_of_totals']:.0f}x | "
            f"{med(r['ours_minflt_per_call']):.0f} | {r['ours_alone_ms_median']:.2f} "
            f"({med(r['ours_alone_minflt_per_call']):.0f}) | {r['slowdown_after_foreign']:.2f} | "
            f"{med(r['public_cpu_ms_per_sample']):.1f} | {med(r['ours_cpu_ms_per_sample']):.2f} | "
            f"{r['cpu_ratio']:.0f}x | {r['cpu_slowdown_after_foreign']:.2f} |"
        )
    for r in doc["results"]:
        if r["setting"] != "alone":
            continue
        lines += [
            "",
            f"B = 1, 96^3, 1 thread: alone {r['alone_ms_median']:.2f} ms ({r['alone_minflt_median']:.0f} faults), "
            f"after a public-code sample {r['after_foreign_ms_median']:.2f} ms ({r['after_foreign_minflt_median']:.0f} "
            f"faults): {r['slowdown']:.2f}x (target <= {ALONE_TARGET}x); CPU time {med(r['alone_cpu_ms']):.2f} -> "
            f"{med(r['after_foreign_cpu_ms']):.2f} ms, {r['cpu_slowdown']:.2f}x; the public algorithm "
            f"{med(r['public_ms']):.0f} ms per sample, {r['ratio_to_public_after_foreign']:.0f}x ours.",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--settings", default=",".join(DEFAULT_SETTINGS), help="comma-separated SHAPE:BATCH:THREADS or alone"
    )
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--public-batch", type=int, default=None, help="public-code samples per round (default: the batch)")
    ap.add_argument(
        "--data",
        choices=["uniform", "ct"],
        default="uniform",
        help="uniform random values in [0, 1] (default), or cubes of the bundled CT, HU-windowed to [0, 1]",
    )
    ap.add_argument("--out", default=None, help="folder for interleaved.json and interleaved.md")
    args = ap.parse_args(argv)
    global DATA
    DATA = args.data
    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    parsed = [parse_setting(s) for s in settings]
    random.seed(0)
    np.random.seed(0)
    doc = {
        "machine": machine_info(),
        "package": package_fingerprint(go),
        "rounds": args.rounds,
        "data": args.data,
        "malloc_trim_threshold": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
        "results": [],
    }
    for s, p in zip(settings, parsed, strict=True):
        print(f"{s}:", flush=True)
        doc["results"].append(run_alone(args.rounds) if p is None else run_ratio(*p, args.rounds, args.public_batch))
    doc["load_average_end"] = load_average()
    text = markdown(doc)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "interleaved.json"), "w") as f:
            json.dump(doc, f, indent=1)
        with open(os.path.join(args.out, "interleaved.md"), "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
