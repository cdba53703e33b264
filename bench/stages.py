#!/usr/bin/env python
"""Where the CPU time goes: each corruption stage of ours against the same stage of the public algorithm.

bench/interleaved.py gives the ratio users meet for the whole pipeline. This script splits it
by stage, to show which stage bounds it: per round, for each stage, the public code's function
(bench/public_algorithm.py) on each sample of the batch, then our single op with that stage
always on (``p=1``) on the batch, in turn, so a change of load hits all alike. ``x.clone()`` is
the floor (one output written). Reported: per-sample medians, their ratio, and each stage's
expected share of a ``GenesisConfig()`` call (the stage's cost above the floor times its gate:
shuffle 0.5, intensity curve 0.9, in-painting 0.9 x 0.2, out-painting 0.9 x 0.8; flips and the
two outputs always).

Usage (from the repository root, with the package installed)::

    python bench/stages.py --rounds 5 --out bench/reported/stages
    python bench/stages.py --settings 160x160x160:2:1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import public_algorithm as public  # noqa: E402
from _common import load_average, machine_info, package_fingerprint, parse_setting, set_threads  # noqa: E402

try:
    import genesis_ops as go
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(f"bench/stages.py needs the installed genesis_ops package: {exc}")

DEFAULT_SETTINGS = ["160x160x160:2:1", "64x64x32:32:2"]
# stage: (ours on the batch, public on one (1, R, C, D) sample, gate in GenesisConfig())
STAGES = {
    "flip": (lambda x, s: go.flip(x, seed=s), lambda a: public.flip(a, a), 1.0),
    "shuffle": (lambda x, s: go.local_shuffle(x, p=1.0, seed=s), lambda a: public.local_pixel_shuffling(a, 1.0), 0.5),
    "curve": (lambda x, s: go.nonlinear(x, p=1.0, seed=s), lambda a: public.nonlinear(a, 1.0), 0.9),
    "in-painting": (lambda x, s: go.inpaint(x, p=1.0, seed=s), lambda a: public.in_painting(a.copy()), 0.9 * 0.2),
    "out-painting": (lambda x, s: go.outpaint(x, p=1.0, seed=s), lambda a: public.out_painting(a), 0.9 * 0.8),
}


def ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def run(dims, batch, threads, rounds) -> dict:
    set_threads(threads)
    x = torch.rand((batch, 1) + dims, generator=torch.Generator().manual_seed(0))
    img = x.numpy().copy()
    ours = {k: [] for k in ["clone", "full", *STAGES]}
    pub = {k: [] for k in ["full", *STAGES]}
    cfg = go.GenesisConfig()
    for op, _, _ in STAGES.values():  # warm-up: first-call costs are not a training loop's
        op(x, 0)
    go.models_genesis(x, cfg, seed=0)
    for r in range(rounds):
        ours["clone"].append(ms(lambda: x.clone()) / batch)
        ours["full"].append(ms(lambda r=r: go.models_genesis(x, cfg, seed=r + 1)) / batch)
        pub["full"].append(ms(lambda: public.generate_pair(img, batch)) / batch)
        for name, (op, pub_op, _) in STAGES.items():
            ours[name].append(ms(lambda r=r, op=op: op(x, r + 1)) / batch)
            pub[name].append(sum(ms(lambda n=n, f=pub_op: f(img[n].copy())) for n in range(batch)) / batch)
        print(
            f"  round {r + 1}/{rounds}: "
            + ", ".join(f"{k} {ours[k][-1]:.2f}/{pub[k][-1]:.1f}" for k in ["full", *STAGES])
            + " ms per sample (ours/public)",
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in ours.items()}
    pmed = {k: statistics.median(v) for k, v in pub.items()}
    floor = med["clone"]
    rows = []
    for name, (_, _, gate) in STAGES.items():
        rows.append(
            {
                "stage": name,
                "gate": gate,
                "ours_ms": med[name],
                "public_ms": pmed[name],
                "ratio": pmed[name] / med[name],
                "ours_above_floor_ms": med[name] - floor,
                "ours_expected_ms": gate * (med[name] - floor),
                "public_expected_ms": gate * pmed[name],
            }
        )
    return {
        "setting": f"{'x'.join(map(str, dims))}:{batch}:{threads}",
        "threads": threads,
        "batch": batch,
        "clone_ms": floor,
        "ours_full_ms": med["full"],
        "public_full_ms": pmed["full"],
        "full_ratio": pmed["full"] / med["full"],
        "stages": rows,
        "ours_ms_per_round": ours,
        "public_ms_per_round": pub,
    }


def markdown(doc) -> str:
    m = doc["machine"]
    lines = [
        f"Stages (bench/stages.py), {m['time_utc']}, {m['cpu_model']}, {m['logical_cpus']} logical CPUs, "
        f"load average {m['load_average_start']} -> {doc['load_average_end']}, {doc['rounds']} rounds.",
        "",
    ]
    for r in doc["results"]:
        lines += [
            f"**{r['setting']}** ({r['threads']} thread(s)): whole pipeline ours {r['ours_full_ms']:.2f} ms, "
            f"public {r['public_full_ms']:.1f} ms per sample, {r['full_ratio']:.0f}x; "
            f"x.clone() {r['clone_ms']:.2f} ms.",
            "",
            "| stage (p = 1) | ours ms | public ms | ratio | ours above clone | gate | expected ours ms "
            "| expected public ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in r["stages"]:
            lines.append(
                f"| {s['stage']} | {s['ours_ms']:.2f} | {s['public_ms']:.1f} | {s['ratio']:.0f}x | "
                f"{s['ours_above_floor_ms']:.2f} | {s['gate']:.2f} | {s['ours_expected_ms']:.2f} | "
                f"{s['public_expected_ms']:.1f} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", default=",".join(DEFAULT_SETTINGS), help="comma-separated SHAPE:BATCH:THREADS")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=None, help="folder for stages.json and stages.md")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    parsed = [parse_setting(s.strip()) for s in args.settings.split(",") if s.strip()]
    random.seed(0)
    np.random.seed(0)
    doc = {"machine": machine_info(), "package": package_fingerprint(go), "rounds": args.rounds, "results": []}
    for p in parsed:
        print(f"{'x'.join(map(str, p[0]))}:{p[1]}:{p[2]}:", flush=True)
        doc["results"].append(run(*p, args.rounds))
    doc["load_average_end"] = load_average()
    text = markdown(doc)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "stages.json"), "w") as f:
            json.dump(doc, f, indent=1)
        with open(os.path.join(args.out, "stages.md"), "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
