#!/usr/bin/env python
"""One sample per call through MONAI dictionary transforms, 1 torch thread (a DataLoader worker's
use): genesis-ops' ``RandModelsGenesisd`` against the corruption of MONAI's self-supervised
tutorial, in the same run on the same data.

Rows, per volume (channel-first float32 in [0, 1], a new seed per repetition):

* ``genesis_ops``: ``RandModelsGenesisd("image")`` with ``GenesisConfig()`` (the paper's
  probabilities: its stages are random per sample, shuffling, the costly one, in half of them, so
  read the mean, over at least 40 calls); it writes the corrupted input and the target
  ``image_target``. ``genesis_ops_all_on``: every stage on (the worst case, same work each call).
* ``monai_tutorial``: the tutorial's ``CopyItemsd`` (the target ``gt_image``), ``OneOf`` of two
  ``RandCoarseDropoutd`` (in-painting: 6 holes of 5..32 voxels; out-painting: 6 boxes of 20..64),
  then ``RandCoarseShuffled(prob=0.8, holes=10, spatial_size=8)``, with the tutorial's parameters
  (made for 96^3 crops). It does far less than Models Genesis: 10 shuffle windows instead of
  10,000, no intensity curve, no flips.

Each call gets a fresh copy of the sample (MONAI's coarse transforms may write into it).

    python bench/monai_pipeline.py                     # 64x64x32, 96^3, 160^3 (about 30 s)
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

from _common import load_average, machine_info, package_fingerprint, set_threads, time_calls  # noqa: E402

try:
    import genesis_ops as go
    from genesis_ops.monai import RandModelsGenesisd
    import monai
    from monai.transforms import Compose, CopyItemsd, OneOf, RandCoarseDropoutd, RandCoarseShuffled
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(f"bench/monai_pipeline.py needs genesis_ops installed with MONAI (pip install '.[monai]'): {exc}")

SHAPES = ["1x64x64x32", "1x96x96x96", "1x160x160x160"]
# Every stage on (flips at the paper's 0.4): the same work every call, so few repetitions suffice.
ALL_ON = go.GenesisConfig(shuffle_p=1.0, nonlinear_p=1.0, paint_p=1.0)


def pipelines():
    return {
        "genesis_ops": Compose([RandModelsGenesisd("image", config=go.GenesisConfig())]),
        "genesis_ops_all_on": Compose([RandModelsGenesisd("image", config=ALL_ON)]),
        "monai_tutorial": Compose(
            [
                CopyItemsd("image", times=1, names=["gt_image"]),
                OneOf(
                    [
                        RandCoarseDropoutd(
                            "image", prob=1.0, holes=6, spatial_size=5, dropout_holes=True, max_spatial_size=32
                        ),
                        RandCoarseDropoutd(
                            "image", prob=1.0, holes=6, spatial_size=20, dropout_holes=False, max_spatial_size=64
                        ),
                    ]
                ),
                RandCoarseShuffled("image", prob=0.8, holes=10, spatial_size=8),
            ]
        ),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=",".join(SHAPES), help="per-sample C x spatial, comma-separated")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of timed calls per row (default 2)")
    ap.add_argument(
        "--min-reps", type=int, default=20, help="at least (default 20): the paper's stages are random per sample"
    )
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="output directory (default bench/results)")
    args = ap.parse_args(argv)
    threads = set_threads(1)  # one DataLoader worker
    meta = machine_info()
    meta.update(
        {
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "threads": threads,
            "monai": monai.__version__,
            "genesis_ops_build": package_fingerprint(go),
            "seed": args.seed,
        }
    )
    print(
        f"# MONAI pipeline ({meta['time_utc']}): {meta['cpu_model']}, threads={threads}, "
        f"load avg={meta['load_average_start']}"
    )
    t0 = time.perf_counter()
    records = []
    gen = torch.Generator().manual_seed(args.seed)
    for shape in args.shapes.split(","):
        x = torch.rand(tuple(int(d) for d in shape.split("x")), generator=gen)
        for name, pipe in pipelines().items():

            def call(r, pipe=pipe, x=x):
                pipe.set_random_state(args.seed + r + (10**6 if r < 0 else 0))
                return pipe({"image": x.clone()})

            cpu_ms = []
            reps = 2 * args.min_reps if name == "genesis_ops" else args.min_reps
            times = time_calls(
                call, "cpu", warmup=1, min_reps=reps, max_reps=max(reps, 40), budget_s=args.budget, cpu_times=cpu_ms
            )
            rec = {
                "impl": name,
                "shape": shape,
                "threads": threads,
                "reps": len(times),
                "ms_median": statistics.median(times),
                "ms_mean": statistics.fmean(times),
                "cpu_ms_median": statistics.median(cpu_ms),
                "cpu_ms_mean": statistics.fmean(cpu_ms),
            }
            records.append(rec)
            print(
                f"{name:<20}{shape:<15}{rec['ms_median']:>10.2f} ms median{rec['ms_mean']:>10.2f} ms mean"
                f"{rec['cpu_ms_mean']:>10.2f} CPU ms mean ({rec['reps']} reps)",
                flush=True,
            )
    meta["elapsed_s"] = round(time.perf_counter() - t0, 1)
    meta["load_average_end"] = load_average()
    doc = {"meta": meta, "records": records}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "monai_pipeline.json"), "w") as f:
        json.dump(doc, f, indent=1)
    m = meta
    lines = [
        "# genesis-ops in a MONAI pipeline: one sample per call, 1 thread",
        "",
        f"- when: {m['time_utc']}; elapsed {m['elapsed_s']} s; machine: {m['cpu_model']}, {m['logical_cpus']} "
        f"logical CPUs; load average start {m['load_average_start']}, end {m['load_average_end']}",
        f"- torch {m['torch']}, MONAI {m['monai']}, torch threads **{threads}**; command: `{m['command']}`",
        "- genesis_ops: `RandModelsGenesisd` with `GenesisConfig()` (random stages per sample: read the mean); "
        "genesis_ops_all_on: every stage on; monai_tutorial: CopyItemsd + "
        "OneOf(2 x RandCoarseDropoutd) + RandCoarseShuffled with the self-supervised tutorial's parameters",
        "",
        "| volume | implementation | ms per sample (median) | ms (mean) | CPU ms (mean) |",
        "|---|---|---:|---:|---:|",
    ]
    for r in records:
        lines.append(
            f"| {r['shape']} | {r['impl']} | {r['ms_median']:.2f} | {r['ms_mean']:.2f} | {r['cpu_ms_mean']:.2f} |"
        )
    with open(os.path.join(args.out, "monai_pipeline.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"# wrote {args.out}/monai_pipeline.json and monai_pipeline.md ({meta['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
