#!/usr/bin/env python
"""genesis-ops against the public Models Genesis code, MONAI and the NumPy reference, in one run.

The fused pipeline (``models_genesis`` with ``GenesisConfig()``, the paper's rates) and every
baseline run interleaved in one process on the same data: round r times each implementation
once, in turn, so a change of machine load during the run hits all of them alike. The report
gives per-sample medians over the rounds and the ratios of those medians, with the thread count,
the date, the machine and its load average before and after.

Baselines:

* the public Models Genesis code: its ``generate_pair(img, batch_size, config)`` (``utils.py`` of
  the paper's PyTorch code, which draws samples, flips, shuffles, maps and paints them in NumPy).
  It is **not** part of this repository and must not be copied into it (its licence forbids
  that): put its ``utils.py`` in a folder of your own and pass that folder with
  ``--public-code``. Without it, that column is skipped. Its image-saving imports (``imageio``,
  ``skimage``) are replaced by empty modules when missing: ``generate_pair`` does not use them
  with ``save_samples=None``. It needs ``scipy``.
* ``genesis_ops.reference`` (the package's NumPy oracle; same outputs as the kernels) and the
  closest MONAI composition (``bench/transforms.py``; skipped when MONAI is missing).

Usage (from the repository root, with the package installed)::

    python bench/side_by_side.py --public-code /path/to/folder/with/utils.py --threads 2 \\
        --shapes 1x64x64x32:32,1x128x128x64:8 --rounds 9 --baseline-batch 4
    python bench/side_by_side.py --public-code DIR --threads 1 --shapes 1x64x64x32:1 --rounds 41
        # one sample, one thread: a DataLoader worker's view
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
import types
import warnings
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import load_average, machine_info, package_fingerprint, set_threads  # noqa: E402

try:
    import genesis_ops as go
    import genesis_ops.reference as ref
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(f"bench/side_by_side.py needs the installed genesis_ops package: {exc}")

from transforms import import_monai, monai_fn, monai_transforms, parse_shape  # noqa: E402


def load_public_code(folder: str):
    """The public code's utils.py from `folder`, imported under a private module name."""
    path = os.path.join(folder, "utils.py")
    if not os.path.isfile(path):
        raise SystemExit(f"--public-code: no utils.py in {folder}")
    for name in ("imageio", "skimage", "skimage.transform"):  # only its image saving uses them
        try:
            importlib.import_module(name)
        except ImportError:
            stub = types.ModuleType(name)
            stub.resize = None
            sys.modules[name] = stub
    spec = importlib.util.spec_from_file_location("_public_models_genesis_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "generate_pair"):
        raise SystemExit(f"--public-code: {path} has no generate_pair")
    return module


class PublicConfig:
    """The public code's config fields that generate_pair reads, at the paper's values (the
    same rates as genesis_ops.GenesisConfig())."""

    def __init__(self, cfg, batch_size: int):
        self.flip_rate = cfg.flip_p
        self.local_rate = cfg.shuffle_p
        self.nonlinear_rate = cfg.nonlinear_p
        self.paint_rate = cfg.paint_p
        self.inpaint_rate = cfg.inpaint_rate
        self.outpaint_rate = 1.0 - cfg.inpaint_rate
        self.batch_size = batch_size
        self.save_samples = None


def parse_shape_batch(s: str):
    shape, _, batch = s.partition(":")
    return parse_shape(shape), int(batch or 32)


def median(v: list[float]) -> float | None:
    return statistics.median(v) if v else None


def run_shape(shape, batch: int, args, public, monai_mt) -> dict:
    cfg = go.GenesisConfig()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((batch,) + shape, generator=gen)
    x_np = x.numpy()
    bb = min(batch, args.baseline_batch)  # per-sample baselines: fewer samples per call
    impls: dict[str, Callable[[int], int]] = {}

    def ours(r):
        go.models_genesis(x, cfg, seed=1000 + r)
        return batch

    impls["genesis_ops"] = ours

    if public is not None:
        pcfg = PublicConfig(cfg, bb)
        import random

        def pub(r):
            random.seed(1000 + r)
            np.random.seed(1000 + r)
            next(public.generate_pair(x_np[:bb], bb, pcfg))
            return bb

        impls["public_code"] = pub

    if not args.no_reference:

        def refr(r):
            ref.models_genesis(x_np[:bb], cfg, seed=1000 + r)
            return bb

        impls["reference"] = refr

    if monai_mt is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = monai_fn("models_genesis", monai_transforms(monai_mt, shape[1:], cfg)["models_genesis"])
        xb = x[:bb]

        def mon(r):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run(xb, 1000 + r)
            return bb

        impls["monai"] = mon

    for f in impls.values():  # warm-up
        f(-1)
    per_sample = {k: [] for k in impls}
    cpu_per_sample = {k: [] for k in impls}
    load_before = load_average()
    for r in range(args.rounds):
        for name, f in impls.items():
            c0, t0 = time.process_time(), time.perf_counter()
            n = f(r)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            per_sample[name].append(1e3 * dt / n)
            cpu_per_sample[name].append(1e3 * dc / n)
    out = {
        "shape": "x".join(map(str, shape)),
        "batch": batch,
        "baseline_batch": bb,
        "rounds": args.rounds,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "ms_per_sample_median": {k: median(v) for k, v in per_sample.items()},
        "ms_per_sample_all": per_sample,
        "ms_per_sample_mean": {k: statistics.fmean(v) for k, v in per_sample.items()},
        "cpu_ms_per_sample_median": {k: median(v) for k, v in cpu_per_sample.items()},
    }
    # The pipeline's random branches (shuffle with p=0.5) make the per-call times of small
    # batches bimodal: the mean over the rounds is the expected cost per sample, the median is
    # robust to load spikes. Both ratios are reported.
    for stat in ("median", "mean"):
        ms = out[f"ms_per_sample_{stat}"]
        out[f"speedup_of_genesis_ops_{stat}"] = {k: v / ms["genesis_ops"] for k, v in ms.items() if k != "genesis_ops"}
    return out


def markdown(report: dict) -> str:
    lines = [
        f"# genesis-ops side by side ({report['date_utc']}, {report['threads']} torch threads)",
        "",
        f"Machine: {report['machine'].get('cpu_model', '?')}, "
        f"{report['machine'].get('logical_cpus', '?')} logical CPUs; "
        f"torch {report['machine'].get('torch', '?')}; build {report['package'].get('lib_sha256_12', '?')}.",
        "",
        "Per-sample times over interleaved rounds (the baselines at `baseline_batch` samples per call). "
        "Wall time far above CPU time / threads means the process waited for a core (a loaded machine).",
        "",
    ]
    for r in report["results"]:
        ms, mean, cpu = r["ms_per_sample_median"], r["ms_per_sample_mean"], r["cpu_ms_per_sample_median"]
        sp, spm = r["speedup_of_genesis_ops_median"], r["speedup_of_genesis_ops_mean"]
        lines += [
            f"## {r['shape']}, batch {r['batch']} (baselines {r['baseline_batch']}), {r['rounds']} rounds, "
            f"load average {r['load_average_before']} -> {r['load_average_after']}",
            "",
            "| implementation | ms per sample, median (wall) | mean (wall) | CPU ms per sample, median "
            "| genesis-ops is ... faster (medians) | (means) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for k in ms:
            ratio = "– | –" if k == "genesis_ops" else f"{sp[k]:.1f}x | {spm[k]:.1f}x"
            lines.append(f"| {k} | {ms[k]:.3f} | {mean[k]:.3f} | {cpu[k]:.3f} | {ratio} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--public-code", help="folder holding the public Models Genesis utils.py (not in this repository)")
    ap.add_argument(
        "--shapes", default="1x64x64x32:32,1x128x128x64:8", help="comma-separated CxDxHxW:batch (default %(default)s)"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default %(default)s)")
    ap.add_argument(
        "--baseline-batch",
        type=int,
        default=4,
        help="samples per call of the per-sample baselines (default %(default)s)",
    )
    ap.add_argument("--no-reference", action="store_true", help="skip the NumPy reference (slow at large sizes)")
    ap.add_argument("--no-monai", action="store_true", help="skip MONAI")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "side_by_side"), help="output folder")
    args = ap.parse_args(argv)

    threads = set_threads(args.threads)
    public = load_public_code(args.public_code) if args.public_code else None
    if public is None:
        print("public code: skipped (no --public-code)")
    monai_mt = None
    if not args.no_monai:
        monai_mt, monai_version = import_monai()
        if monai_mt is None:
            print(f"MONAI: skipped ({monai_version})")
    report = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "threads": threads,
        "machine": machine_info(),
        "package": package_fingerprint(go),
        "public_code": os.path.abspath(args.public_code) if args.public_code else None,
        "results": [],
    }
    for spec in args.shapes.split(","):
        shape, batch = parse_shape_batch(spec)
        res = run_shape(shape, batch, args, public, monai_mt)
        report["results"].append(res)
        print(
            json.dumps(
                {
                    k: res[k]
                    for k in (
                        "shape",
                        "batch",
                        "ms_per_sample_median",
                        "speedup_of_genesis_ops_median",
                        "speedup_of_genesis_ops_mean",
                        "load_average_before",
                        "load_average_after",
                    )
                }
            ),
            flush=True,
        )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "side_by_side.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(args.out, "side_by_side.md"), "w") as f:
        f.write(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
