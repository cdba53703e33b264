#!/usr/bin/env python
"""What writing the corruption mask costs: ``models_genesis(x, cfg, seed)`` against
``models_genesis(x, cfg, seed, return_masks=True)`` (same data, same seeds, so the same random
branches), on the CPU, in one process.

The two variants are interleaved call by call, in alternating order each round, so that a shared,
noisy machine slows both alike; per variant the median wall time per sample and the median process
CPU time per sample (all threads; steadier on a loaded machine) are reported, and their ratios
(masks / no masks). The target: the masked call within 10% of the plain one.

Run it as a script with the installed package::

    python bench/masks.py --threads 2                        # 1x64x64x32 batch 32, 1x128x128x64 batch 8
    python bench/masks.py --threads 2 --rounds 60 --out /tmp/masks
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import torch  # noqa: E402

from _common import load_average, machine_info, package_fingerprint, set_threads  # noqa: E402

try:
    import genesis_ops as go
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(f"bench/masks.py needs the installed genesis_ops package: {exc}")

# (shape C x spatial, batch): the two sizes the performance tables use.
CASES = [((1, 64, 64, 32), 32), ((1, 128, 128, 64), 8)]
CONFIGS = {
    "paper": go.GenesisConfig(),  # the paper's probabilities: the mask's cost as used in training
    "all_on": go.GenesisConfig(shuffle_p=1.0, paint_p=1.0, inpaint_rate=0.5),  # every sample shuffled and painted
}
VARIANTS = ("no_masks", "masks")


def measure(x, cfg, rounds: int, seed0: int):
    """{variant: (wall ms per call list, CPU ms per call list)}, interleaved call by call."""
    calls = {
        "no_masks": lambda s: go.models_genesis(x, cfg, seed=s),
        "masks": lambda s: go.models_genesis(x, cfg, seed=s, return_masks=True),
    }
    for v in VARIANTS:  # warm-up: allocator, caches, thread pool
        calls[v](seed0)
        calls[v](seed0 + 1)
    out = {v: ([], []) for v in VARIANTS}
    for r in range(rounds):
        order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
        for v in order:
            c0, t0 = time.process_time(), time.perf_counter()
            calls[v](seed0 + r)  # the same seed for both variants in a round
            out[v][0].append((time.perf_counter() - t0) * 1e3)
            out[v][1].append((time.process_time() - c0) * 1e3)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N) (default: torch's)")
    ap.add_argument("--rounds", type=int, default=40, help="timed calls per variant and case (default 40)")
    ap.add_argument("--seed", type=int, default=1000, help="seed of round 0 (round r uses seed + r)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="output directory (default bench/results)")
    args = ap.parse_args(argv)
    threads = set_threads(args.threads)
    info = machine_info()
    records = []
    for name, cfg in CONFIGS.items():
        for shape, batch in CASES:
            x = torch.rand((batch,) + shape, generator=torch.Generator().manual_seed(0))
            times = measure(x, cfg, args.rounds, args.seed)
            rec = {"config": name, "shape": "x".join(map(str, shape)), "batch": batch, "threads": threads}
            for v in VARIANTS:
                wall, cpu = times[v]
                rec[v] = {
                    "wall_ms_per_sample": statistics.median(wall) / batch,
                    "cpu_ms_per_sample": statistics.median(cpu) / batch,
                    "min_wall_ms_per_sample": min(wall) / batch,
                    "reps": len(wall),
                }
            rec["wall_ratio"] = rec["masks"]["wall_ms_per_sample"] / rec["no_masks"]["wall_ms_per_sample"]
            rec["cpu_ratio"] = rec["masks"]["cpu_ms_per_sample"] / rec["no_masks"]["cpu_ms_per_sample"]
            records.append(rec)
            print(
                f"{name:7s} {rec['shape']:>13s} B={batch:<3d} no masks {rec['no_masks']['wall_ms_per_sample']:7.3f} "
                f"ms/sample (CPU {rec['no_masks']['cpu_ms_per_sample']:7.3f})  masks "
                f"{rec['masks']['wall_ms_per_sample']:7.3f} (CPU {rec['masks']['cpu_ms_per_sample']:7.3f})  "
                f"ratio wall {rec['wall_ratio']:.3f} CPU {rec['cpu_ratio']:.3f}",
                flush=True,
            )
    info["load_average_end"] = load_average()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "masks.json"), "w") as f:
        json.dump({"machine": info, "package": package_fingerprint(go), "records": records}, f, indent=1)
    lines = [
        "# Cost of the corruption mask (bench/masks.py)",
        "",
        f"{info['cpu_model']}, {threads} threads, torch {info['torch']}, {info['time_utc']}, load average "
        f"{info['load_average_start']} -> {info['load_average_end']}; {args.rounds} interleaved calls per variant, "
        "medians per sample.",
        "",
        "| config | shape | batch | no masks ms/sample (CPU) | masks ms/sample (CPU) | wall ratio | CPU ratio |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        a, b = r["no_masks"], r["masks"]
        lines.append(
            f"| {r['config']} | {r['shape']} | {r['batch']} | {a['wall_ms_per_sample']:.3f} "
            f"({a['cpu_ms_per_sample']:.3f}) | {b['wall_ms_per_sample']:.3f} ({b['cpu_ms_per_sample']:.3f}) | "
            f"{r['wall_ratio']:.3f} | {r['cpu_ratio']:.3f} |"
        )
    with open(os.path.join(args.out, "masks.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}/masks.md and masks.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
