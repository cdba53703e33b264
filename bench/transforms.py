#!/usr/bin/env python
"""Speed of the genesis-ops transforms, side by side with the baselines.

For every op (nonlinear, local_shuffle, inpaint, outpaint, flip) and the fused pipeline
(models_genesis) this measures ms per sample and samples/s over batch sizes, volume sizes, dtypes
and devices, and in the same run, on the same data:

* ``genesis_ops.reference``: the package's NumPy reference (same random stream, same output);
* the closest MONAI composition, called per sample (skipped with a note when MONAI is missing);
* ``x.clone()``: the memory-bound floor (one read and one write of the batch).

Single ops run forced on (p=1) except flip (p=0.4, the paper's value); the pipeline runs with the
paper's defaults (``GenesisConfig()``). Repetition r of every implementation uses seed ``seed + r``,
so genesis_ops and its reference take the same random branches. Each measurement: warm-up calls,
then several timed repetitions (adaptive to a time budget), median reported; CUDA is timed with
events after a synchronisation.

Run it as a script with the installed package (not ``python -m`` from the repository root, where the
source directory would shadow the installed package)::

    python bench/transforms.py --threads 2            # full grid, writes bench/results/
    python bench/transforms.py --quick                # small subset, < 2 min on a 2-core CPU
    python bench/transforms.py --json out.json --out /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import torch  # noqa: E402

from _common import load_average, machine_info, package_fingerprint, set_threads, summarize, time_calls  # noqa: E402

try:
    import genesis_ops as go
    import genesis_ops.reference as ref
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(f"bench/transforms.py needs the installed genesis_ops package: {exc}")

OPS = ["nonlinear", "local_shuffle", "inpaint", "outpaint", "flip", "models_genesis"]
ALL_OPS = ["clone"] + OPS
# p used for the single-op measurements: forced on, except flip at the paper's 0.4.
SINGLE_OP_P = {"nonlinear": 1.0, "local_shuffle": 1.0, "inpaint": 1.0, "outpaint": 1.0, "flip": 0.4}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}
FULL = dict(batches=[1, 6, 32, 128], shapes=["1x64x64x32", "1x128x128x64", "1x224x224"],
            dtypes=["float32", "bfloat16"], baseline_batches=[1, 6])
QUICK = dict(batches=[1, 32], shapes=["1x64x64x32"], dtypes=["float32"], baseline_batches=[1])
# Figures measured during development (public Models Genesis code and a MONAI composition, per
# sample, 1x64x64x32, 1 thread, this machine kind; docs/SPEC.md); quoted, not measured here.
PUBLIC_CODE_MS = 50.0
MONAI_NOTES_MS = 140.0


def parse_shape(s: str) -> Tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {s!r}; expected e.g. 1x64x64x32")
    if len(dims) not in (3, 4) or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"bad shape {s!r}: C x 2 or 3 spatial dims, all >= 1")
    return dims


def csv(kind):
    def conv(s: str):
        return [kind(v) for v in s.split(",") if v]
    return conv


# --------------------------------------------------------------------------------------------
# The implementations
# --------------------------------------------------------------------------------------------

def op_fn(module, op: str, cfg) -> Optional[Callable]:
    """x, seed -> result for `op` of `module` (genesis_ops or its NumPy reference, which share
    names and arguments), with the benchmark's probabilities; None if the module lacks it."""
    if not hasattr(module, op):
        return None
    if op == "models_genesis":
        return lambda x, s: module.models_genesis(x, config=cfg, seed=s)
    if op == "local_shuffle":
        return lambda x, s: module.local_shuffle(x, p=SINGLE_OP_P[op], num_windows=cfg.num_windows, seed=s)
    f = getattr(module, op)
    return lambda x, s: f(x, p=SINGLE_OP_P[op], seed=s)


def import_monai():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import monai  # noqa: F401
            from monai import transforms as mt
        return mt, monai.__version__
    except Exception as exc:  # ImportError, or a broken install
        return None, f"{type(exc).__name__}: {exc}"


def monai_transforms(mt, spatial: Tuple[int, ...], cfg) -> Dict[str, object]:
    """Closest MONAI transforms per op (differences: bench/PERFORMANCE.md), for one sample."""
    sp = spatial

    def shuffle(prob):
        return mt.RandCoarseShuffle(holes=cfg.num_windows, spatial_size=1,
                                    max_spatial_size=tuple(max(1, d // 10) for d in sp), prob=prob)

    def hist(prob):
        return mt.RandHistogramShift(num_control_points=4, prob=prob)

    def inp(prob):
        return mt.RandCoarseDropout(holes=1, max_holes=5,
                                    spatial_size=tuple(max(1, d // 6) for d in sp),
                                    max_spatial_size=tuple(max(1, d // 3) for d in sp),
                                    fill_value=(0.0, 1.0), dropout_holes=True, prob=prob)

    def outp(prob):
        return mt.RandCoarseDropout(holes=1, max_holes=5,
                                    spatial_size=tuple(max(1, d - 4 * d // 7) for d in sp),
                                    max_spatial_size=tuple(max(1, d - 3 * d // 7) for d in sp),
                                    fill_value=(0.0, 1.0), dropout_holes=False, prob=prob)

    def flips(p):
        # MG flips up to 3 times, each continuing with probability p: marginals p, p^2, p^3.
        return mt.Compose([mt.RandAxisFlip(prob=p), mt.RandAxisFlip(prob=p ** 2),
                           mt.RandAxisFlip(prob=p ** 3)])

    pp = cfg.paint_p
    corrupt = mt.Compose([
        shuffle(cfg.shuffle_p),
        hist(cfg.nonlinear_p),
        mt.OneOf([mt.Identity(), inp(1.0), outp(1.0)],
                 weights=[1 - pp, pp * cfg.inpaint_rate, pp * (1 - cfg.inpaint_rate)]),
    ])
    return {
        "nonlinear": hist(SINGLE_OP_P["nonlinear"]),
        "local_shuffle": shuffle(SINGLE_OP_P["local_shuffle"]),
        "inpaint": inp(SINGLE_OP_P["inpaint"]),
        "outpaint": outp(SINGLE_OP_P["outpaint"]),
        "flip": flips(SINGLE_OP_P["flip"]),
        "models_genesis": (flips(cfg.flip_p), corrupt),
    }


def monai_fn(op: str, t) -> Callable:
    """Per-sample loop, as MONAI is used (it has no batch dimension).

    Every sample is cloned first: RandCoarseShuffle / RandCoarseDropout(dropout_holes=True) write
    into a CPU tensor's memory, and genesis_ops returns new memory too, so the copy is part of a
    fair comparison (MONAI's own tutorial uses CopyItemsd for the same reason).
    """
    if op == "models_genesis":
        flips, corrupt = t

        def run(x, s):
            flips.set_random_state(seed=s % 2**32)
            corrupt.set_random_state(seed=(s + 7919) % 2**32)
            out = []
            for i in range(x.shape[0]):
                target = flips(x[i].clone())
                out.append((corrupt(target.clone()), target))
            return out
        return run

    def run(x, s):
        t.set_random_state(seed=s % 2**32)
        return [t(x[i].clone()) for i in range(x.shape[0])]
    return run


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small subset (< 2 min on a 2-core CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N) (default: torch's)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="output directory (default bench/results)")
    ap.add_argument("--json", default=None, help="also write the records as JSON to this path")
    ap.add_argument("--batches", type=csv(int), default=None, help="e.g. 1,6,32,128")
    ap.add_argument("--shapes", type=csv(str), default=None, help="per-sample C x spatial, e.g. 1x64x64x32,1x224x224")
    ap.add_argument("--dtypes", type=csv(str), default=None, help="float32,bfloat16 (float16, float64 also accepted)")
    ap.add_argument("--devices", type=csv(str), default=None, help="cpu,cuda (default: cpu + cuda when present)")
    ap.add_argument("--ops", type=csv(str), default=None, help=",".join(ALL_OPS))
    ap.add_argument("--impls", type=csv(str), default=None, help="genesis_ops,reference,monai,torch")
    ap.add_argument("--baseline-batches", type=csv(int), default=None,
                    help="batch sizes at which the per-sample baselines (reference, MONAI) run")
    ap.add_argument("--baseline-reps", type=int, default=8,
                    help="minimum repetitions of the per-sample baseline pipelines (default 8)")
    ap.add_argument("--budget", type=float, default=None, help="seconds of timed calls per measurement")
    ap.add_argument("--min-reps", type=int, default=None)
    ap.add_argument("--max-reps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)

    preset = QUICK if args.quick else FULL
    batches = args.batches or preset["batches"]
    shapes = args.shapes or preset["shapes"]
    dtypes = args.dtypes or preset["dtypes"]
    baseline_batches = args.baseline_batches or preset["baseline_batches"]
    ops = args.ops or ALL_OPS
    impls = args.impls or ["torch", "genesis_ops", "reference", "monai"]
    budget = args.budget if args.budget is not None else (0.4 if args.quick else 1.5)
    min_reps = args.min_reps or 3
    max_reps = args.max_reps or (10 if args.quick else 30)
    for o in ops:
        if o not in ALL_OPS:
            ap.error(f"--ops: unknown op {o!r}; choose from {ALL_OPS}")
    for d in dtypes:
        if d not in DTYPES:
            ap.error(f"--dtypes: unknown dtype {d!r}; choose from {list(DTYPES)}")
    for b in batches + baseline_batches:
        if b < 1:
            ap.error("batch sizes must be >= 1")
    shape_dims = {s: parse_shape(s) for s in shapes}

    threads = set_threads(args.threads)
    skipped: List[str] = []
    if args.devices:
        devices = []
        for d in args.devices:
            if d.startswith("cuda") and not torch.cuda.is_available():
                skipped.append(f"device {d}: CUDA not available in this torch build / machine")
            else:
                devices.append(d)
    else:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        if not torch.cuda.is_available():
            skipped.append("cuda: not available here (torch.cuda.is_available() is False); GPU numbers pending")

    mt = None
    monai_version = None
    if "monai" in impls:
        mt, monai_version = import_monai()
        if mt is None:
            skipped.append(f"MONAI baseline skipped: MONAI not importable ({monai_version})")
            monai_version = None

    cfg = go.GenesisConfig()
    meta = machine_info()
    meta.update({
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "threads": threads,
        "genesis_ops_file": getattr(go, "__file__", None),
        "genesis_ops_build": package_fingerprint(go),
        "genesis_ops_build_info": _safe_build_info(),
        "monai": monai_version,
        "config": _cfg_dict(cfg),
        "single_op_p": SINGLE_OP_P,
        "budget_s": budget, "min_reps": min_reps, "max_reps": max_reps, "seed": args.seed,
    })
    print(f"# genesis-ops transform benchmark  ({meta['time_utc']})")
    print(f"# cpu: {meta['cpu_model']} x{meta['logical_cpus']}  torch {meta['torch']}  threads={threads}"
          f"  load avg={meta['load_average_start']}  cuda={meta['cuda_available']}  monai={monai_version}")
    print(f"# genesis_ops: {meta['genesis_ops_file']}  build: {meta['genesis_ops_build_info']} {meta['genesis_ops_build']}")
    for s in skipped:
        print(f"# note: {s}")

    records: List[Dict] = []
    t_start = time.perf_counter()
    header = f"{'op':<15}{'impl':<12}{'device':<7}{'shape':<14}{'dtype':<9}{'batch':>6}{'ms/sample':>12}{'samples/s':>12}{'reps':>6}"
    print(header)
    print("-" * len(header))

    def measure(op, impl, device, shape, dtype, batch, fn, x, **extra):
        if impl in ("genesis_ops", "torch"):
            lo, hi = min_reps, max_reps
        elif op == "models_genesis":
            # the pipeline's random branches (shuffle p=0.5) make per-sample baseline calls bimodal:
            # more repetitions so the median over calls is a fair per-sample cost
            lo, hi = args.baseline_reps, max(args.baseline_reps, 10)
        else:
            lo, hi = 3, 5
        cpu_ms: List[float] = []
        times = time_calls(lambda r: fn(x, args.seed + r + (10**6 if r < 0 else 0)), device,
                           warmup=2, min_reps=lo, max_reps=hi, budget_s=budget, cpu_times=cpu_ms)
        rec = {"op": op, "impl": impl, "device": device, "batch": batch, "shape": shape,
               "dtype": dtype, "threads": threads}
        rec.update(summarize(times, batch))
        if cpu_ms:
            # process CPU time (all threads) per sample: compare with ms_per_sample * threads
            rec["cpu_ms_per_sample"] = statistics.median(cpu_ms) / batch
        rec.update(extra)
        records.append(rec)
        print(f"{op:<15}{impl:<12}{device:<7}{shape:<14}{dtype:<9}{batch:>6}"
              f"{rec['ms_per_sample']:>12.4g}{rec['samples_per_s']:>12.4g}{rec['reps']:>6}", flush=True)
        return rec

    gen = torch.Generator().manual_seed(args.seed)
    for device in devices:
        for shape in shapes:
            dims = shape_dims[shape]
            spatial = dims[1:]
            mon = monai_transforms(mt, spatial, cfg) if mt is not None else None
            for dtype in dtypes:
                for batch in batches:
                    x32 = torch.rand((batch,) + dims, generator=gen, dtype=torch.float32)
                    x = x32.to(device=device, dtype=DTYPES[dtype])
                    for op in ops:
                        p = SINGLE_OP_P.get(op)
                        if op == "clone":
                            if "torch" in impls:
                                measure(op, "torch", device, shape, dtype, batch, lambda x, s: x.clone(), x)
                            continue
                        if "genesis_ops" in impls:
                            try:
                                measure(op, "genesis_ops", device, shape, dtype, batch, op_fn(go, op, cfg), x, p=p)
                            except Exception as exc:  # report, keep going
                                _skip(skipped, f"genesis_ops {op} {device} {shape} {dtype} b{batch}: {type(exc).__name__}: {exc}")
                        baseline_here = device == "cpu" and batch in baseline_batches
                        if not baseline_here:
                            continue
                        if dtype != "float32":
                            # NumPy has no bfloat16 and MONAI's coarse transforms go through NumPy:
                            # the baselines run in float32 only.
                            continue
                        if "reference" in impls:
                            f = op_fn(ref, op, cfg)
                            if f is None:
                                _skip(skipped, f"reference has no {op}")
                            else:
                                xn = x32.numpy()
                                try:
                                    measure(op, "reference", "cpu", shape, dtype, batch, f, xn, p=p)
                                except Exception as exc:
                                    _skip(skipped, f"reference {op} {shape} b{batch}: {type(exc).__name__}: {exc}")
                        if mon is not None:
                            try:
                                with warnings.catch_warnings():
                                    warnings.simplefilter("ignore")
                                    measure(op, "monai", "cpu", shape, dtype, batch, monai_fn(op, mon[op]), x32,
                                            p=p, note="per-sample loop, track_meta default")
                            except Exception as exc:
                                _skip(skipped, f"monai {op} {shape} b{batch}: {type(exc).__name__}: {exc}")
                    del x, x32
    meta["load_average_end"] = load_average()
    meta["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    print(f"# done in {meta['elapsed_s']} s; load avg at end {meta['load_average_end']}")

    ratios, targets = compute_ratios(records, threads)
    print()
    for line in format_ratios(ratios, targets):
        print(line)

    os.makedirs(args.out, exist_ok=True)
    doc = {"meta": meta, "records": records, "ratios": ratios, "targets": targets, "skipped": skipped}
    json_default = os.path.join(args.out, "transforms.json")
    for path in {json_default, args.json} - {None}:
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"# wrote {path}")
    md_path = os.path.join(args.out, "transforms.md")
    with open(md_path, "w") as f:
        f.write(markdown(doc))
    print(f"# wrote {md_path}")
    if not args.no_plot:
        png = os.path.join(args.out, "transforms.png")
        msg = plot(records, png, meta)
        print(f"# {msg}")
    return 0


def _skip(skipped: List[str], msg: str) -> None:
    if msg not in skipped:
        skipped.append(msg)
        print(f"# skipped: {msg}", flush=True)


def _safe_build_info():
    try:
        return go.build_info()
    except Exception as exc:  # pragma: no cover
        return f"unavailable: {type(exc).__name__}: {exc}"


def _cfg_dict(cfg):
    try:
        import dataclasses

        return dataclasses.asdict(cfg)
    except Exception:
        return {k: getattr(cfg, k) for k in dir(cfg) if not k.startswith("_") and not callable(getattr(cfg, k))}


# --------------------------------------------------------------------------------------------
# Ratios, targets, report
# --------------------------------------------------------------------------------------------

def _find(records, **kw):
    return [r for r in records if all(r.get(k) == v for k, v in kw.items())]


def _baseline(records, impl, op, shape):
    """Per-sample cost of a per-sample baseline: its largest measured batch (cost is per sample)."""
    rs = _find(records, impl=impl, op=op, shape=shape, dtype="float32", device="cpu")
    return max(rs, key=lambda r: r["batch"]) if rs else None


def compute_ratios(records, threads):
    ratios = []
    for r in _find(records, impl="genesis_ops"):
        if r["device"] == "cpu" and r["dtype"] == "float32":
            for impl in ("reference", "monai"):
                b = _baseline(records, impl, r["op"], r["shape"])
                if b:
                    ratios.append({"what": f"{r['op']} genesis_ops vs {impl}", "op": r["op"], "shape": r["shape"],
                                   "dtype": r["dtype"], "device": r["device"], "batch": r["batch"],
                                   "baseline_batch": b["batch"], "threads": threads,
                                   "speedup": b["ms_per_sample"] / r["ms_per_sample"]})
        if r["op"] == "nonlinear":
            c = _find(records, impl="torch", op="clone", shape=r["shape"], dtype=r["dtype"],
                      device=r["device"], batch=r["batch"])
            if c:
                ratios.append({"what": "nonlinear / clone (time ratio)", "op": "nonlinear", "shape": r["shape"],
                               "dtype": r["dtype"], "device": r["device"], "batch": r["batch"], "threads": threads,
                               "time_ratio": r["ms_per_sample"] / c[0]["ms_per_sample"]})
    targets = []
    key = dict(device="cpu", shape="1x64x64x32", dtype="float32", batch=32)
    fused = _find(records, impl="genesis_ops", op="models_genesis", **key)
    note = "" if threads == 2 else f" (measured with {threads} threads; the target names 2)"
    if fused:
        f = fused[0]["ms_per_sample"]
        mon = _baseline(records, "monai", "models_genesis", "1x64x64x32")
        if mon:
            s = mon["ms_per_sample"] / f
            targets.append({"target": "fused >= 100x faster than MONAI composition (measured here)" + note,
                            "value": s, "met": s >= 100})
        s = MONAI_NOTES_MS / f
        targets.append({"target": f"fused >= 100x faster than MONAI composition (~{MONAI_NOTES_MS:g} ms, quoted)" + note,
                        "value": s, "met": s >= 100})
        s = PUBLIC_CODE_MS / f
        targets.append({"target": f"fused >= 50x faster than public MG code (~{PUBLIC_CODE_MS:g} ms, quoted)" + note,
                        "value": s, "met": s >= 50})
        rr = _baseline(records, "reference", "models_genesis", "1x64x64x32")
        if rr:
            targets.append({"target": "(info) fused vs genesis_ops.reference (NumPy)" + note,
                            "value": rr["ms_per_sample"] / f, "met": None})
    nl = _find(records, impl="genesis_ops", op="nonlinear", **key)
    cl = _find(records, impl="torch", op="clone", **key)
    if nl and cl:
        v = nl[0]["ms_per_sample"] / cl[0]["ms_per_sample"]
        targets.append({"target": "nonlinear within 10x of x.clone() (time ratio <= 10)" + note, "value": v,
                        "met": v <= 10})
    for t in targets:
        t.update({"device": "cpu", "shape": "1x64x64x32", "dtype": "float32", "batch": 32, "threads": threads})
    gpu = [r for r in records if r["impl"] == "genesis_ops" and r["op"] == "models_genesis"
           and r["device"].startswith("cuda") and r["shape"] == "1x64x64x32"]
    if gpu:
        best = max(gpu, key=lambda r: r["samples_per_s"])
        targets.append({"target": f"GPU: fused >= 100,000 samples/s at 1x64x64x32 (best: {best['dtype']}, "
                                  f"batch {best['batch']})", "value": best["samples_per_s"],
                        "met": best["samples_per_s"] >= 1e5, "device": best["device"], "shape": "1x64x64x32",
                        "dtype": best["dtype"], "batch": best["batch"], "threads": threads})
    return ratios, targets


def format_ratios(ratios, targets) -> List[str]:
    out = ["## Ratios (cpu, float32; baselines at their largest measured batch)"]
    for r in ratios:
        if "speedup" in r:
            v = r["speedup"]
            word = f"{v:9.3g}x faster" if v >= 1 else f"{1 / v:9.3g}x SLOWER"
            out.append(f"  {r['what']:<40} {r['shape']:<13} batch {r['batch']:>4}"
                       f" (baseline batch {r['baseline_batch']}): {word}")
    for r in ratios:
        if "time_ratio" in r:
            out.append(f"  {r['what']:<38} {r['device']:<5}{r['shape']:<13}{r['dtype']:<9} batch {r['batch']:>4}:"
                       f" {r['time_ratio']:6.2f}x the time of clone")
    out.append("## Targets (cpu: 1x64x64x32, float32, batch 32)")
    if not targets:
        out.append("  (not measured in this run)")
    for t in targets:
        met = "" if t["met"] is None else ("MET" if t["met"] else "NOT MET")
        out.append(f"  {t['target']}: {t['value']:.3g}  {met}")
    return out


def markdown(doc) -> str:
    meta, records = doc["meta"], doc["records"]
    lines = ["# genesis-ops transform benchmark", ""]
    lines.append(f"- when: {meta['time_utc']}; elapsed {meta.get('elapsed_s')} s")
    lines.append(f"- machine: {meta['cpu_model']}, {meta['logical_cpus']} logical CPUs, "
                 f"{meta.get('mem_total_gib')} GiB; load average at start {meta['load_average_start']}, "
                 f"at end {meta.get('load_average_end')}")
    if meta.get("cuda_device"):
        lines.append(f"- GPU: {meta['cuda_device']} (CUDA {meta.get('cuda_runtime')})")
    lines.append(f"- torch {meta['torch']}, numpy {meta.get('numpy')}, MONAI {meta.get('monai')}, "
                 f"torch threads = **{meta['threads']}**")
    lines.append(f"- genesis_ops build: `{meta.get('genesis_ops_build_info')}`, library `{meta.get('genesis_ops_build')}`")
    lines.append(f"- command: `{meta['command']}`")
    lines.append(f"- single ops forced on (p={meta['single_op_p']}); pipeline = `GenesisConfig()` defaults "
                 f"{meta['config']}")
    lines.append("- median of the timed repetitions; ms per sample = median call time / batch")
    lines.append("")
    # pivot: rows (op, impl, device, shape, dtype), columns = batch
    batches = sorted({r["batch"] for r in records})
    keys = []
    for r in records:
        k = (r["shape"], r["device"], r["dtype"], r["op"], r["impl"])
        if k not in keys:
            keys.append(k)
    lines.append("## ms per sample (median) by batch size")
    lines.append("")
    lines.append("| shape | device | dtype | op | impl | " + " | ".join(f"B={b}" for b in batches)
                 + " | samples/s at largest B |")
    lines.append("|---|---|---|---|---|" + "---:|" * len(batches) + "---:|")
    for k in sorted(keys, key=lambda k: (k[0], k[1], k[2], ALL_OPS.index(k[3]) if k[3] in ALL_OPS else 99, k[4])):
        row = {r["batch"]: r for r in records if (r["shape"], r["device"], r["dtype"], r["op"], r["impl"]) == k}
        cells = [f"{row[b]['ms_per_sample']:.4g}" if b in row else "" for b in batches]
        big = row[max(row)]
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {k[4]} | " + " | ".join(cells)
                     + f" | {big['samples_per_s']:.4g} |")
    lines.append("")
    lines.extend(scaling_lines(records))
    lines.append("## Ratios and targets")
    lines.append("")
    lines.append("```")
    lines.extend(format_ratios(doc["ratios"], doc["targets"]))
    lines.append("```")
    if doc["skipped"]:
        lines.append("")
        lines.append("## Skipped / notes")
        lines.append("")
        for s in doc["skipped"]:
            lines.append(f"- {s}")
    lines.append("")
    return "\n".join(lines)


def _voxels(shape: str) -> int:
    n = 1
    for d in shape.split("x"):
        n *= int(d)
    return n


def scaling_lines(records) -> List[str]:
    """How time grows with batch size and volume size (genesis_ops ops and the clone floor)."""
    out = ["## Scaling", "",
           "Per-sample time at batch 1 and at the largest batch, and nanoseconds per voxel at the largest "
           "batch (a flat ns/voxel across sizes means time grows linearly with the volume).", "",
           "| device | dtype | op | shape | ms/sample B=1 | ms/sample largest B | largest B | ns/voxel |",
           "|---|---|---|---|---:|---:|---:|---:|"]
    keys = []
    for r in records:
        if r["impl"] in ("genesis_ops", "torch"):
            k = (r["device"], r["dtype"], r["op"], r["shape"])
            if k not in keys:
                keys.append(k)
    keys.sort(key=lambda k: (k[0], k[1], ALL_OPS.index(k[2]) if k[2] in ALL_OPS else 99, _voxels(k[3])))
    for dev, dt, op, shape in keys:
        rs = {r["batch"]: r for r in records if r["impl"] in ("genesis_ops", "torch")
              and (r["device"], r["dtype"], r["op"], r["shape"]) == (dev, dt, op, shape)}
        big = rs[max(rs)]
        b1 = f"{rs[1]['ms_per_sample']:.4g}" if 1 in rs else ""
        out.append(f"| {dev} | {dt} | {op} | {shape} | {b1} | {big['ms_per_sample']:.4g} | {big['batch']} | "
                   f"{1e6 * big['ms_per_sample'] / _voxels(shape):.3g} |")
    out.append("")
    return out


def plot(records, path, meta) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"plot skipped: matplotlib not importable ({exc})"
    shapes = []
    for r in records:
        if r["shape"] not in shapes:
            shapes.append(r["shape"])
    rows = []
    for r in records:
        if r["impl"] in ("genesis_ops", "torch") and (r["device"], r["dtype"]) not in rows:
            rows.append((r["device"], r["dtype"]))
    if not rows or not shapes:
        return "plot skipped: nothing to plot"
    fig, axes = plt.subplots(len(rows), len(shapes), figsize=(5.2 * len(shapes) + 2.0, 4.0 * len(rows)),
                             squeeze=False, sharey=True)
    styles = {"clone": ("k", ":"), "nonlinear": ("tab:blue", "-"), "local_shuffle": ("tab:orange", "-"),
              "inpaint": ("tab:green", "-"), "outpaint": ("tab:red", "-"), "flip": ("tab:purple", "-"),
              "models_genesis": ("black", "-")}
    for i, (dev, dt) in enumerate(rows):
        for j, shape in enumerate(shapes):
            ax = axes[i][j]
            for op in ALL_OPS:
                impl = "torch" if op == "clone" else "genesis_ops"
                rs = sorted(_find(records, op=op, impl=impl, device=dev, dtype=dt, shape=shape), key=lambda r: r["batch"])
                if not rs:
                    continue
                c, ls = styles[op]
                lw = 2.5 if op == "models_genesis" else 1.3
                label = "x.clone() (floor)" if op == "clone" else (
                    "fused pipeline" if op == "models_genesis" else op)
                ax.plot([r["batch"] for r in rs], [r["ms_per_sample"] for r in rs], color=c, ls=ls, lw=lw,
                        marker="o", ms=3, label=label)
            if dev == "cpu" and dt == "float32":
                for impl, mk, lab in (("reference", "s", "pipeline: NumPy reference"),
                                      ("monai", "^", "pipeline: MONAI per sample")):
                    rs = sorted(_find(records, op="models_genesis", impl=impl, shape=shape, dtype="float32"),
                                key=lambda r: r["batch"])
                    if rs:
                        ax.plot([r["batch"] for r in rs], [r["ms_per_sample"] for r in rs], color="gray",
                                ls="none", marker=mk, ms=7, label=lab)
                        # per-sample baselines cost the same per sample at any batch size
                        ax.axhline(rs[-1]["ms_per_sample"], color="gray", ls="--", lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{shape}  {dev}  {dt}", fontsize=10)
            ax.set_xlabel("batch size")
            if j == 0:
                ax.set_ylabel("ms per sample (median)")
            ax.grid(True, which="both", alpha=0.3)
    handles, labels = {}, []
    for row in axes:
        for ax in row:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in handles:
                    handles[lab] = h
                    labels.append(lab)
    fig.legend([handles[lab] for lab in labels], labels, loc="center right", fontsize=8)
    fig.suptitle(f"genesis-ops: time per sample vs batch size ({meta['cpu_model']}, torch threads={meta['threads']}"
                 + (f", GPU {meta['cuda_device']}" if meta.get("cuda_device") else "") + ")", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / (5.2 * len(shapes) + 2.0), 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path}"


if __name__ == "__main__":
    sys.exit(main())
