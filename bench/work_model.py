#!/usr/bin/env python
"""The GPU path's work per voxel against the volume size, measured without a GPU.

``torch.ops.genesis._emulated_cuda_models_genesis`` runs the CUDA kernels' bodies over their whole
launch grids on the CPU, sequentially (csrc/emulate): its time per voxel is the work the GPU path
does per voxel, so a ratio that grows with the volume means the GPU algorithm is not linear in the
voxels. Rows (batch 1, 1 torch thread, the median over repetitions with seeds ``seed + r``):

* ``emulated_cuda``: the CUDA bodies, emulated;
* ``cpu``: the CPU engine itself at batch 1 and 1 thread, i.e. one sample per call in a
  DataLoader worker (the usual setup when transforms run in workers).

Modes: ``shuffle`` (local shuffle only, p=1, 10,000 windows: the stage whose GPU work used to grow
with the window size), ``fused`` (every stage on: flip_p=0.4, shuffle_p=1, nonlinear_p=1,
paint_p=1) and, for the CPU rows, ``paper`` (``GenesisConfig()``: the paper's probabilities;
its stages are random per sample, so its mean is the throughput figure).

    python bench/work_model.py                  # 64x64x32, 96^3, 128x128x64, 160^3 (about 1-2 min)
    python bench/work_model.py --quick          # 64x64x32 and 96^3 only (seconds)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import torch  # noqa: E402

from _common import load_average, machine_info, package_fingerprint, set_threads, time_calls  # noqa: E402

try:
    import genesis_ops as go
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(f"bench/work_model.py needs the installed genesis_ops package: {exc}")

SHAPES = ["1x64x64x32", "1x96x96x96", "1x128x128x64", "1x160x160x160"]
QUICK_SHAPES = ["1x64x64x32", "1x96x96x96"]
BASE_SHAPE = "1x64x64x32"  # the ratio column is relative to this volume
MODES = {
    "shuffle": go.GenesisConfig(flip_p=0.0, shuffle_p=1.0, num_windows=10000, nonlinear_p=0.0, paint_p=0.0),
    "fused": go.GenesisConfig(shuffle_p=1.0, nonlinear_p=1.0, paint_p=1.0),
    "paper": go.GenesisConfig(),
}
ENGINE_MODES = {"emulated_cuda": ["shuffle", "fused"], "cpu": ["shuffle", "fused", "paper"]}


def run_engine(engine: str, x: torch.Tensor, cfg, seed: int):
    if engine == "cpu":
        return go.models_genesis(x, cfg, seed=seed)
    lo, hi = cfg.value_range
    return torch.ops.genesis._emulated_cuda_models_genesis(
        x, cfg.flip_p, cfg.shuffle_p, cfg.num_windows, cfg.nonlinear_p, cfg.paint_p, cfg.inpaint_rate, lo, hi, seed, 0
    )


def voxels(shape: str) -> int:
    n = 1
    for d in shape.split("x"):
        n *= int(d)
    return n


def measure(engines: list[str], shapes: list[str], seed: int, budget: float, min_reps: int) -> list[dict]:
    records = []
    gen = torch.Generator().manual_seed(seed)
    for shape in shapes:
        x = torch.rand((1,) + tuple(int(d) for d in shape.split("x")), generator=gen)
        for engine in engines:
            for mode in ENGINE_MODES[engine]:
                cfg = MODES[mode]
                # the paper's mode is random per sample: more repetitions for a fair mean
                lo = max(min_reps, 12) if mode == "paper" else min_reps
                cpu_ms: list[float] = []
                times = time_calls(
                    lambda r, engine=engine, x=x, cfg=cfg: run_engine(
                        engine, x, cfg, seed + r + (10**6 if r < 0 else 0)
                    ),
                    "cpu",
                    warmup=1,
                    min_reps=lo,
                    max_reps=max(lo, 30),
                    budget_s=budget,
                    cpu_times=cpu_ms,
                )
                med = statistics.median(times)
                cpu_med = statistics.median(cpu_ms)
                rec = {
                    "engine": engine,
                    "mode": mode,
                    "shape": shape,
                    "voxels": voxels(shape),
                    "batch": 1,
                    "threads": torch.get_num_threads(),
                    "reps": len(times),
                    "ms_median": med,
                    "ms_mean": statistics.fmean(times),
                    "ms_min": min(times),
                    "ms_max": max(times),
                    "ns_per_voxel": 1e6 * med / voxels(shape),
                    "ns_per_voxel_mean": 1e6 * statistics.fmean(times) / voxels(shape),
                    "cpu_ms_median": cpu_med,
                    "cpu_ms_mean": statistics.fmean(cpu_ms),
                    "cpu_ns_per_voxel": 1e6 * cpu_med / voxels(shape),
                }
                records.append(rec)
                print(
                    f"{engine:<14}{mode:<9}{shape:<15}{rec['ms_median']:>11.3f} ms{rec['ns_per_voxel']:>10.1f} ns/voxel"
                    f"{rec['cpu_ns_per_voxel']:>10.1f} CPU-ns/voxel  ({rec['reps']} reps)",
                    flush=True,
                )
    for r in records:
        base = [b for b in records if (b["engine"], b["mode"], b["shape"]) == (r["engine"], r["mode"], BASE_SHAPE)]
        # CPU time, not wall time: with 1 thread it is the work itself, and it does not grow when
        # other processes take the core (wall time does, on a shared machine)
        r["ratio_to_base"] = r["cpu_ns_per_voxel"] / base[0]["cpu_ns_per_voxel"] if base else None
    return records


def markdown(doc: dict) -> str:
    m = doc["meta"]
    out = [
        "# genesis-ops work model: work per voxel against the volume",
        "",
        f"- when: {m['time_utc']}; elapsed {m.get('elapsed_s')} s; machine: {m['cpu_model']}, "
        f"{m['logical_cpus']} logical CPUs; load average start {m['load_average_start']}, "
        f"end {m.get('load_average_end')}",
        f"- torch {m['torch']}, torch threads **{m['threads']}**, batch 1; "
        f"genesis_ops build `{m.get('genesis_ops_build')}`",
        f"- command: `{m['command']}`",
        "- `emulated_cuda`: the CUDA kernels' bodies over their launch grids, run sequentially on the CPU "
        "(its time per voxel is the GPU path's work); `cpu`: the CPU engine, one sample per call "
        "(a DataLoader worker's use)",
        "- modes: `shuffle` = local shuffle only (p=1, 10,000 windows); `fused` = every stage on; "
        "`paper` = `GenesisConfig()` (random stages per sample: read the mean)",
        "- ns per voxel: wall time (median); CPU ns per voxel: the process's CPU time (median), which "
        "is the work itself with 1 thread and does not grow when other processes share the core",
        f"- ratio = CPU ns per voxel / CPU ns per voxel at {BASE_SHAPE} (same engine and mode)",
        "",
        "| engine | mode | volume | voxels | ms per sample (median) | ms (mean) | CPU ms (mean) | ns per voxel "
        "| CPU ns per voxel | ratio |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["records"]:
        ratio = f"{r['ratio_to_base']:.2f}x" if r["ratio_to_base"] is not None else ""
        out.append(
            f"| {r['engine']} | {r['mode']} | {r['shape']} | {r['voxels']:,} | {r['ms_median']:.3f} | "
            f"{r['ms_mean']:.3f} | {r['cpu_ms_mean']:.3f} | {r['ns_per_voxel']:.1f} | "
            f"{r['cpu_ns_per_voxel']:.1f} | {ratio} |"
        )
    out += ["", "Target: emulated GPU work per voxel at 160^3 <= 1.5x that at 64x64x32.", ""]
    for t in doc["targets"]:
        out.append(f"- {t['target']}: {t['value']:.2f}x, {'MET' if t['met'] else 'NOT MET'}")
    out.append("")
    return "\n".join(out)


def targets(records: list[dict]) -> list[dict]:
    out = []
    for r in records:
        if r["engine"] == "emulated_cuda" and r["shape"] == "1x160x160x160" and r["ratio_to_base"] is not None:
            out.append(
                {
                    "target": f"emulated GPU work per voxel ({r['mode']}), 160^3 vs {BASE_SHAPE} <= 1.5x",
                    "mode": r["mode"],
                    "value": r["ratio_to_base"],
                    "met": r["ratio_to_base"] <= 1.5,
                }
            )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_SHAPES)}")
    ap.add_argument(
        "--shapes", default=None, help="per-sample C x spatial, comma-separated (default: {})".format(",".join(SHAPES))
    )
    ap.add_argument("--engines", default="emulated_cuda,cpu", help="emulated_cuda,cpu")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of timed calls per row (default 2)")
    ap.add_argument("--min-reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="output directory (default bench/results)")
    args = ap.parse_args(argv)
    shapes = args.shapes.split(",") if args.shapes else (QUICK_SHAPES if args.quick else SHAPES)
    engines = [e for e in args.engines.split(",") if e]
    for e in engines:
        if e not in ENGINE_MODES:
            ap.error(f"--engines: unknown engine {e!r}; choose from {list(ENGINE_MODES)}")
    # 1 thread: the emulation is sequential anyway, and the CPU rows model one DataLoader worker
    threads = set_threads(1)
    meta = machine_info()
    meta.update(
        {
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "threads": threads,
            "genesis_ops_build": package_fingerprint(go),
            "seed": args.seed,
            "budget_s": args.budget,
            "modes": {k: dataclasses.asdict(v) for k, v in MODES.items()},
        }
    )
    print(
        f"# work model ({meta['time_utc']}): {meta['cpu_model']}, threads={threads}, "
        f"load avg={meta['load_average_start']}"
    )
    t0 = time.perf_counter()
    records = measure(engines, shapes, args.seed, args.budget, args.min_reps)
    meta["elapsed_s"] = round(time.perf_counter() - t0, 1)
    meta["load_average_end"] = load_average()
    doc = {"meta": meta, "records": records, "targets": targets(records)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "work_model.json"), "w") as f:
        json.dump(doc, f, indent=1)
    with open(os.path.join(args.out, "work_model.md"), "w") as f:
        f.write(markdown(doc))
    print(f"# wrote {args.out}/work_model.json and work_model.md ({meta['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
