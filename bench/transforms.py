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
import dataclasses
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable

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
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
FULL = dict(
    batches=[1, 6, 32, 128],
    shapes=["1x64x64x32", "1x128x128x64", "1x224x224"],
    dtypes=["float32", "bfloat16"],
    baseline_batches=[1, 6],
)
QUICK = dict(batches=[1, 32], shapes=["1x64x64x32"], dtypes=["float32"], baseline_batches=[1])
# Figures measured during development (public Models Genesis code and a MONAI composition, per
# sample, 1x64x64x32, 1 thread, this machine kind; docs/SPEC.md); quoted, not measured here.
PUBLIC_CODE_MS = 50.0
MONAI_NOTES_MS = 140.0
# The GPU targets (an H200): the fused pipeline at >= 1,000,000 samples/s (the HBM limit of
# one read and two writes is about 1.9M/s), and these single ops at >= 50% of clone's bandwidth.
GPU_TARGET_SHAPE, GPU_TARGET_BATCH = "1x64x64x32", 1024
GPU_FUSED_TARGET = 1e6
GPU_BANDWIDTH_OPS = ("nonlinear", "inpaint", "outpaint", "flip")


def parse_shape(s: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in s.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {s!r}; expected e.g. 1x64x64x32") from None
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


def op_fn(module, op: str, cfg) -> Callable | None:
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


def monai_transforms(mt, spatial: tuple[int, ...], cfg) -> dict[str, object]:
    """Closest MONAI transforms per op (differences: bench/PERFORMANCE.md), for one sample."""
    sp = spatial

    def shuffle(prob):
        return mt.RandCoarseShuffle(
            holes=cfg.num_windows, spatial_size=1, max_spatial_size=tuple(max(1, d // 10) for d in sp), prob=prob
        )

    def hist(prob):
        return mt.RandHistogramShift(num_control_points=4, prob=prob)

    def inp(prob):
        return mt.RandCoarseDropout(
            holes=1,
            max_holes=5,
            spatial_size=tuple(max(1, d // 6) for d in sp),
            max_spatial_size=tuple(max(1, d // 3) for d in sp),
            fill_value=(0.0, 1.0),
            dropout_holes=True,
            prob=prob,
        )

    def outp(prob):
        return mt.RandCoarseDropout(
            holes=1,
            max_holes=5,
            spatial_size=tuple(max(1, d - 4 * d // 7) for d in sp),
            max_spatial_size=tuple(max(1, d - 3 * d // 7) for d in sp),
            fill_value=(0.0, 1.0),
            dropout_holes=False,
            prob=prob,
        )

    def flips(p):
        # MG flips up to 3 times, each continuing with probability p: marginals p, p^2, p^3.
        return mt.Compose([mt.RandAxisFlip(prob=p), mt.RandAxisFlip(prob=p**2), mt.RandAxisFlip(prob=p**3)])

    pp = cfg.paint_p
    corrupt = mt.Compose(
        [
            shuffle(cfg.shuffle_p),
            hist(cfg.nonlinear_p),
            mt.OneOf(
                [mt.Identity(), inp(1.0), outp(1.0)],
                weights=[1 - pp, pp * cfg.inpaint_rate, pp * (1 - cfg.inpaint_rate)],
            ),
        ]
    )
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


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small subset (< 2 min on a 2-core CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N) (default: torch's)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="output directory (default bench/results)")
    ap.add_argument("--json", default=None, help="also write the records as JSON to this path")
    ap.add_argument("--batches", type=csv(int), default=None, help="e.g. 1,6,32,128")
    ap.add_argument(
        "--batches-at",
        type=shape_batches,
        action="append",
        default=[],
        metavar="SHAPE=B,B",
        help="batch sizes for one shape, overriding --batches there (repeatable), e.g. 1x160x160x160=8,32",
    )
    ap.add_argument("--shapes", type=csv(str), default=None, help="per-sample C x spatial, e.g. 1x64x64x32,1x224x224")
    ap.add_argument("--dtypes", type=csv(str), default=None, help="float32,bfloat16 (float16, float64 also accepted)")
    ap.add_argument("--devices", type=csv(str), default=None, help="cpu,cuda (default: cpu + cuda when present)")
    ap.add_argument("--ops", type=csv(str), default=None, help=",".join(ALL_OPS))
    ap.add_argument("--impls", type=csv(str), default=None, help="genesis_ops,reference,monai,torch")
    ap.add_argument(
        "--baseline-batches",
        type=csv(int),
        default=None,
        help="batch sizes at which the per-sample baselines (reference, MONAI) run",
    )
    ap.add_argument(
        "--baseline-reps",
        type=int,
        default=8,
        help="minimum repetitions of the per-sample baseline pipelines (default 8)",
    )
    ap.add_argument("--budget", type=float, default=None, help="seconds of timed calls per measurement")
    ap.add_argument("--min-reps", type=int, default=None)
    ap.add_argument("--max-reps", type=int, default=None)
    ap.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="start no new measurement after this many seconds (the rest is listed as skipped)",
    )
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)
    try:
        check_args(args)
    except ValueError as exc:
        ap.error(str(exc))
    return args


def shape_batches(s: str) -> tuple[str, list[int]]:
    shape, sep, batches = s.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"bad --batches-at {s!r}; expected SHAPE=B,B e.g. 1x96x96x96=8,32")
    parse_shape(shape)
    return shape, csv(int)(batches)


def check_args(args: argparse.Namespace) -> None:
    """Fill the grid's defaults from the preset (--quick or the full grid) and validate it."""
    preset = QUICK if args.quick else FULL
    args.batches = args.batches or preset["batches"]
    args.shapes = args.shapes or preset["shapes"]
    args.dtypes = args.dtypes or preset["dtypes"]
    args.baseline_batches = args.baseline_batches or preset["baseline_batches"]
    args.ops = args.ops or ALL_OPS
    args.impls = args.impls or ["torch", "genesis_ops", "reference", "monai"]
    args.budget = args.budget if args.budget is not None else (0.4 if args.quick else 1.5)
    args.min_reps = args.min_reps or 3
    args.max_reps = args.max_reps or (10 if args.quick else 30)
    args.batches_at = dict(args.batches_at)
    for o in args.ops:
        if o not in ALL_OPS:
            raise ValueError(f"--ops: unknown op {o!r}; choose from {ALL_OPS}")
    for d in args.dtypes:
        if d not in DTYPES:
            raise ValueError(f"--dtypes: unknown dtype {d!r}; choose from {list(DTYPES)}")
    for shape in args.batches_at:
        if shape not in args.shapes:
            raise ValueError(f"--batches-at {shape}: not one of the --shapes {args.shapes}")
    for b in args.batches + args.baseline_batches + [b for bs in args.batches_at.values() for b in bs]:
        if b < 1:
            raise ValueError("batch sizes must be >= 1")
    args.shape_dims = {s: parse_shape(s) for s in args.shapes}


def select_devices(requested: list[str] | None, skipped: list[str]) -> list[str]:
    if requested:
        devices = []
        for d in requested:
            if d.startswith("cuda") and not torch.cuda.is_available():
                skipped.append(f"device {d}: CUDA not available in this torch build / machine")
            else:
                devices.append(d)
        return devices
    if not torch.cuda.is_available():
        skipped.append("cuda: not available here (torch.cuda.is_available() is False); GPU numbers pending")
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class Bench:
    """One run over the grid: the measurements, in order, and what was skipped."""

    def __init__(self, args: argparse.Namespace, threads: int, cfg, mt, skipped: list[str]):
        self.args, self.threads, self.cfg, self.mt = args, threads, cfg, mt
        self.records: list[dict] = []
        self.skipped = skipped
        self.t_start = time.perf_counter()

    def out_of_time(self) -> bool:
        limit = self.args.time_limit
        return limit is not None and time.perf_counter() - self.t_start > limit

    def measure(self, op, impl, device, shape, dtype, batch, fn, x, **extra) -> dict:
        args = self.args
        if impl in ("genesis_ops", "torch"):
            lo, hi = args.min_reps, args.max_reps
        elif op == "models_genesis":
            # the pipeline's random branches (shuffle p=0.5) make per-sample baseline calls bimodal:
            # more repetitions so the median over calls is a fair per-sample cost
            lo, hi = args.baseline_reps, max(args.baseline_reps, 10)
        else:
            lo, hi = 3, 5
        cpu_ms: list[float] = []
        times = time_calls(
            lambda r: fn(x, args.seed + r + (10**6 if r < 0 else 0)),
            device,
            warmup=2,
            min_reps=lo,
            max_reps=hi,
            budget_s=args.budget,
            cpu_times=cpu_ms,
        )
        rec = {
            "op": op,
            "impl": impl,
            "device": device,
            "batch": batch,
            "shape": shape,
            "dtype": dtype,
            "threads": self.threads,
        }
        rec.update(summarize(times, batch))
        if cpu_ms:
            # process CPU time (all threads) per sample: compare with ms_per_sample * threads
            rec["cpu_ms_per_sample"] = statistics.median(cpu_ms) / batch
        rec.update(extra)
        self.records.append(rec)
        print(
            f"{op:<15}{impl:<12}{device:<7}{shape:<14}{dtype:<9}{batch:>6}"
            f"{rec['ms_per_sample']:>12.4g}{rec['samples_per_s']:>12.4g}{rec['reps']:>6}",
            flush=True,
        )
        return rec

    def run(self, devices: list[str]) -> None:
        args = self.args
        gen = torch.Generator().manual_seed(args.seed)
        for device in devices:
            for shape in args.shapes:
                dims = args.shape_dims[shape]
                mon = monai_transforms(self.mt, dims[1:], self.cfg) if self.mt is not None else None
                for dtype in args.dtypes:
                    for batch in args.batches_at.get(shape, args.batches):
                        if self.out_of_time():
                            _skip(
                                self.skipped,
                                f"--time-limit {args.time_limit:g} s reached: "
                                f"{device} {shape} {dtype} b{batch} and later not measured",
                            )
                            return
                        x32 = torch.rand((batch,) + dims, generator=gen, dtype=torch.float32)
                        self.run_batch(device, shape, dtype, batch, x32, mon)

    def run_batch(self, device, shape, dtype, batch, x32, mon) -> None:
        """Every op and implementation on one batch (the baselines only on CPU, float32, at
        --baseline-batches)."""
        args, impls = self.args, self.args.impls
        x = x32.to(device=device, dtype=DTYPES[dtype])
        for op in args.ops:
            p = SINGLE_OP_P.get(op)
            if op == "clone":
                if "torch" in impls:
                    self.measure(op, "torch", device, shape, dtype, batch, lambda x, s: x.clone(), x)
                continue
            if "genesis_ops" in impls:
                try:
                    self.measure(op, "genesis_ops", device, shape, dtype, batch, op_fn(go, op, self.cfg), x, p=p)
                except Exception as exc:  # report, keep going
                    _skip(
                        self.skipped, f"genesis_ops {op} {device} {shape} {dtype} b{batch}: {type(exc).__name__}: {exc}"
                    )
            # NumPy has no bfloat16 and MONAI's coarse transforms go through NumPy: the baselines
            # run in float32 only.
            if device != "cpu" or batch not in args.baseline_batches or dtype != "float32":
                continue
            if "reference" in impls:
                f = op_fn(ref, op, self.cfg)
                if f is None:
                    _skip(self.skipped, f"reference has no {op}")
                else:
                    try:
                        self.measure(op, "reference", "cpu", shape, dtype, batch, f, x32.numpy(), p=p)
                    except Exception as exc:
                        _skip(self.skipped, f"reference {op} {shape} b{batch}: {type(exc).__name__}: {exc}")
            if mon is not None:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        self.measure(
                            op,
                            "monai",
                            "cpu",
                            shape,
                            dtype,
                            batch,
                            monai_fn(op, mon[op]),
                            x32,
                            p=p,
                            note="per-sample loop, track_meta default",
                        )
                except Exception as exc:
                    _skip(self.skipped, f"monai {op} {shape} b{batch}: {type(exc).__name__}: {exc}")


def run_meta(args: argparse.Namespace, threads: int, cfg, monai_version) -> dict:
    meta = machine_info()
    meta.update(
        {
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "threads": threads,
            "genesis_ops_build": package_fingerprint(go),
            "genesis_ops_build_info": _safe_build_info(),
            "monai": monai_version,
            "config": dataclasses.asdict(cfg),
            "single_op_p": SINGLE_OP_P,
            "budget_s": args.budget,
            "min_reps": args.min_reps,
            "max_reps": args.max_reps,
            "seed": args.seed,
            "time_limit_s": args.time_limit,
        }
    )
    return meta


def write_outputs(doc: dict, args: argparse.Namespace) -> None:
    os.makedirs(args.out, exist_ok=True)
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
        msg = plot(doc["records"], png, doc["meta"])
        print(f"# {msg}")


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = set_threads(args.threads)
    skipped: list[str] = []
    devices = select_devices(args.devices, skipped)
    mt = monai_version = None
    if "monai" in args.impls:
        mt, monai_version = import_monai()
        if mt is None:
            skipped.append(f"MONAI baseline skipped: MONAI not importable ({monai_version})")
            monai_version = None
    cfg = go.GenesisConfig()
    meta = run_meta(args, threads, cfg, monai_version)
    print(f"# genesis-ops transform benchmark  ({meta['time_utc']})")
    print(
        f"# cpu: {meta['cpu_model']} x{meta['logical_cpus']}  torch {meta['torch']}  threads={threads}"
        f"  load avg={meta['load_average_start']}  cuda={meta['cuda_available']}  monai={monai_version}"
    )
    print(
        f"# genesis_ops: {meta['genesis_ops_build']['dir']}  "
        f"build: {meta['genesis_ops_build_info']} {meta['genesis_ops_build']}"
    )
    for s in skipped:
        print(f"# note: {s}")
    header = (
        f"{'op':<15}{'impl':<12}{'device':<7}{'shape':<14}{'dtype':<9}"
        f"{'batch':>6}{'ms/sample':>12}{'samples/s':>12}{'reps':>6}"
    )
    print(header)
    print("-" * len(header))

    bench = Bench(args, threads, cfg, mt, skipped)
    bench.run(devices)
    meta["load_average_end"] = load_average()
    meta["elapsed_s"] = round(time.perf_counter() - bench.t_start, 1)
    print(f"# done in {meta['elapsed_s']} s; load avg at end {meta['load_average_end']}")

    ratios, targets = compute_ratios(bench.records, threads)
    print()
    for line in format_ratios(ratios, targets):
        print(line)
    write_outputs(
        {"meta": meta, "records": bench.records, "ratios": ratios, "targets": targets, "skipped": skipped}, args
    )
    return 0


def _skip(skipped: list[str], msg: str) -> None:
    if msg not in skipped:
        skipped.append(msg)
        print(f"# skipped: {msg}", flush=True)


def _safe_build_info():
    try:
        return go.build_info()
    except Exception as exc:  # pragma: no cover
        return f"unavailable: {type(exc).__name__}: {exc}"


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
        on_gpu = r["device"].startswith("cuda")
        if r["device"] == "cpu" and r["dtype"] == "float32":
            for impl in ("reference", "monai"):
                b = _baseline(records, impl, r["op"], r["shape"])
                if b:
                    ratios.append(
                        {
                            "what": f"{r['op']} genesis_ops vs {impl}",
                            "op": r["op"],
                            "shape": r["shape"],
                            "dtype": r["dtype"],
                            "device": r["device"],
                            "batch": r["batch"],
                            "baseline_batch": b["batch"],
                            "threads": threads,
                            "speedup": b["ms_per_sample"] / r["ms_per_sample"],
                        }
                    )
        if on_gpu:
            c = _find(
                records,
                impl="genesis_ops",
                op=r["op"],
                shape=r["shape"],
                dtype=r["dtype"],
                device="cpu",
                batch=r["batch"],
            )
            if c:
                ratios.append(
                    {
                        "what": f"{r['op']} {r['device']} vs cpu",
                        "op": r["op"],
                        "shape": r["shape"],
                        "dtype": r["dtype"],
                        "device": r["device"],
                        "batch": r["batch"],
                        "baseline_batch": r["batch"],
                        "threads": threads,
                        "speedup": c[0]["ms_per_sample"] / r["ms_per_sample"],
                    }
                )
        # on CPU the nonlinear map's target; on GPU every single op (bandwidth targets)
        if r["op"] == "nonlinear" or (on_gpu and r["op"] in SINGLE_OP_P):
            c = _find(
                records,
                impl="torch",
                op="clone",
                shape=r["shape"],
                dtype=r["dtype"],
                device=r["device"],
                batch=r["batch"],
            )
            if c:
                ratios.append(
                    {
                        "what": f"{r['op']} / clone (time ratio)",
                        "op": r["op"],
                        "shape": r["shape"],
                        "dtype": r["dtype"],
                        "device": r["device"],
                        "batch": r["batch"],
                        "threads": threads,
                        "time_ratio": r["ms_per_sample"] / c[0]["ms_per_sample"],
                    }
                )
    return ratios, cpu_targets(records, threads) + gpu_targets(records, threads)


def cpu_targets(records, threads) -> list[dict]:
    """The CPU targets (1x64x64x32, float32, batch 32, 2 threads)."""
    targets = []
    key = dict(device="cpu", shape="1x64x64x32", dtype="float32", batch=32)
    fused = _find(records, impl="genesis_ops", op="models_genesis", **key)
    note = "" if threads == 2 else f" (measured with {threads} threads; the target names 2)"
    if fused:
        f = fused[0]["ms_per_sample"]
        mon = _baseline(records, "monai", "models_genesis", "1x64x64x32")
        if mon:
            s = mon["ms_per_sample"] / f
            targets.append(
                {
                    "target": "fused >= 100x faster than MONAI composition (measured here)" + note,
                    "value": s,
                    "met": s >= 100,
                }
            )
        s = MONAI_NOTES_MS / f
        targets.append(
            {
                "target": f"fused >= 100x faster than MONAI composition (~{MONAI_NOTES_MS:g} ms, quoted)" + note,
                "value": s,
                "met": s >= 100,
            }
        )
        s = PUBLIC_CODE_MS / f
        targets.append(
            {
                "target": f"fused >= 50x faster than public MG code (~{PUBLIC_CODE_MS:g} ms, quoted)" + note,
                "value": s,
                "met": s >= 50,
            }
        )
        rr = _baseline(records, "reference", "models_genesis", "1x64x64x32")
        if rr:
            targets.append(
                {
                    "target": "(info) fused vs genesis_ops.reference (NumPy)" + note,
                    "value": rr["ms_per_sample"] / f,
                    "met": None,
                }
            )
    nl = _find(records, impl="genesis_ops", op="nonlinear", **key)
    cl = _find(records, impl="torch", op="clone", **key)
    if nl and cl:
        v = nl[0]["ms_per_sample"] / cl[0]["ms_per_sample"]
        targets.append(
            {"target": "nonlinear within 10x of x.clone() (time ratio <= 10)" + note, "value": v, "met": v <= 10}
        )
    for t in targets:
        t.update({"device": "cpu", "shape": "1x64x64x32", "dtype": "float32", "batch": 32, "threads": threads})
    return targets


def gpu_targets(records, threads) -> list[dict]:
    """The GPU targets at 1x64x64x32 float32, batch 1024 (or the largest batch measured,
    said in the target's text): the fused pipeline's samples/s, and the single ops' bandwidth as
    a fraction of clone's (the same bytes read and written, so clone's time / the op's time)."""
    targets = []
    for dev in sorted({r["device"] for r in records if r["device"].startswith("cuda")}):
        key = dict(impl="genesis_ops", device=dev, shape=GPU_TARGET_SHAPE, dtype="float32")
        fused = _find(records, op="models_genesis", **key)
        if fused:
            f = max(fused, key=lambda r: r["batch"])
            targets.append(
                {
                    "target": f"GPU: fused >= {GPU_FUSED_TARGET:,.0f} samples/s at {GPU_TARGET_SHAPE} float32, "
                    f"batch {f['batch']}" + _batch_note(f["batch"]),
                    "value": f["samples_per_s"],
                    "met": f["samples_per_s"] >= GPU_FUSED_TARGET,
                    "device": dev,
                    "shape": GPU_TARGET_SHAPE,
                    "dtype": "float32",
                    "batch": f["batch"],
                    "threads": threads,
                }
            )
        for op in GPU_BANDWIDTH_OPS:
            rs = _find(records, op=op, **key)
            if not rs:
                continue
            o = max(rs, key=lambda r: r["batch"])
            c = _find(
                records, impl="torch", op="clone", device=dev, shape=GPU_TARGET_SHAPE, dtype="float32", batch=o["batch"]
            )
            if c:
                frac = c[0]["ms_per_sample"] / o["ms_per_sample"]
                targets.append(
                    {
                        "target": f"GPU: {op} >= 50% of clone's bandwidth at {GPU_TARGET_SHAPE} float32, "
                        f"batch {o['batch']}" + _batch_note(o["batch"]),
                        "value": frac,
                        "met": frac >= 0.5,
                        "device": dev,
                        "shape": GPU_TARGET_SHAPE,
                        "dtype": "float32",
                        "batch": o["batch"],
                        "threads": threads,
                    }
                )
    return targets


def _batch_note(batch: int) -> str:
    return "" if batch == GPU_TARGET_BATCH else f" (the target names batch {GPU_TARGET_BATCH})"


def format_ratios(ratios, targets) -> list[str]:
    out = ["## Ratios (baselines: cpu, float32, at their largest measured batch; GPU vs CPU: same batch and dtype)"]
    for r in ratios:
        if "speedup" in r:
            v = r["speedup"]
            word = f"{v:9.3g}x faster" if v >= 1 else f"{1 / v:9.3g}x SLOWER"
            out.append(
                f"  {r['what']:<40} {r['shape']:<13}{r['dtype']:<9} batch {r['batch']:>4}"
                f" (baseline batch {r['baseline_batch']}): {word}"
            )
    for r in ratios:
        if "time_ratio" in r:
            out.append(
                f"  {r['what']:<38} {r['device']:<5}{r['shape']:<13}{r['dtype']:<9} batch {r['batch']:>4}:"
                f" {r['time_ratio']:6.2f}x the time of clone"
            )
    out.append("## Targets (cpu ones: 1x64x64x32, float32, batch 32; GPU ones as named)")
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
    lines.append(
        f"- machine: {meta['cpu_model']}, {meta['logical_cpus']} logical CPUs, "
        f"{meta.get('mem_total_gib')} GiB; load average at start {meta['load_average_start']}, "
        f"at end {meta.get('load_average_end')}"
    )
    if meta.get("cuda_device"):
        lines.append(f"- GPU: {meta['cuda_device']} (CUDA {meta.get('cuda_runtime')})")
    lines.append(
        f"- torch {meta['torch']}, numpy {meta.get('numpy')}, MONAI {meta.get('monai')}, "
        f"torch threads = **{meta['threads']}**"
    )
    lines.append(
        f"- genesis_ops build: `{meta.get('genesis_ops_build_info')}`, library `{meta.get('genesis_ops_build')}`"
    )
    lines.append(f"- command: `{meta['command']}`")
    lines.append(
        f"- single ops forced on (p={meta['single_op_p']}); pipeline = `GenesisConfig()` defaults {meta['config']}"
    )
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
    lines.append(
        "| shape | device | dtype | op | impl | "
        + " | ".join(f"B={b}" for b in batches)
        + " | samples/s at largest B |"
    )
    lines.append("|---|---|---|---|---|" + "---:|" * len(batches) + "---:|")
    for k in sorted(keys, key=lambda k: (k[0], k[1], k[2], ALL_OPS.index(k[3]) if k[3] in ALL_OPS else 99, k[4])):
        row = {r["batch"]: r for r in records if (r["shape"], r["device"], r["dtype"], r["op"], r["impl"]) == k}
        cells = [f"{row[b]['ms_per_sample']:.4g}" if b in row else "" for b in batches]
        big = row[max(row)]
        lines.append(
            f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {k[4]} | " + " | ".join(cells) + f" | {big['samples_per_s']:.4g} |"
        )
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


def scaling_lines(records) -> list[str]:
    """How time grows with batch size and volume size (genesis_ops ops and the clone floor)."""
    out = [
        "## Scaling",
        "",
        "Per-sample time at batch 1 and at the largest batch, and nanoseconds per voxel at the largest "
        "batch (a flat ns/voxel across sizes means time grows linearly with the volume).",
        "",
        "| device | dtype | op | shape | ms/sample B=1 | ms/sample largest B | largest B | ns/voxel |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    keys = []
    for r in records:
        if r["impl"] in ("genesis_ops", "torch"):
            k = (r["device"], r["dtype"], r["op"], r["shape"])
            if k not in keys:
                keys.append(k)
    keys.sort(key=lambda k: (k[0], k[1], ALL_OPS.index(k[2]) if k[2] in ALL_OPS else 99, _voxels(k[3])))
    for dev, dt, op, shape in keys:
        rs = {
            r["batch"]: r
            for r in records
            if r["impl"] in ("genesis_ops", "torch")
            and (r["device"], r["dtype"], r["op"], r["shape"]) == (dev, dt, op, shape)
        }
        big = rs[max(rs)]
        b1 = f"{rs[1]['ms_per_sample']:.4g}" if 1 in rs else ""
        out.append(
            f"| {dev} | {dt} | {op} | {shape} | {b1} | {big['ms_per_sample']:.4g} | {big['batch']} | "
            f"{1e6 * big['ms_per_sample'] / _voxels(shape):.3g} |"
        )
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
    fig, axes = plt.subplots(
        len(rows), len(shapes), figsize=(5.2 * len(shapes) + 2.0, 4.0 * len(rows)), squeeze=False, sharey=True
    )
    styles = {
        "clone": ("k", ":"),
        "nonlinear": ("tab:blue", "-"),
        "local_shuffle": ("tab:orange", "-"),
        "inpaint": ("tab:green", "-"),
        "outpaint": ("tab:red", "-"),
        "flip": ("tab:purple", "-"),
        "models_genesis": ("black", "-"),
    }
    for i, (dev, dt) in enumerate(rows):
        for j, shape in enumerate(shapes):
            ax = axes[i][j]
            for op in ALL_OPS:
                impl = "torch" if op == "clone" else "genesis_ops"
                rs = sorted(
                    _find(records, op=op, impl=impl, device=dev, dtype=dt, shape=shape), key=lambda r: r["batch"]
                )
                if not rs:
                    continue
                c, ls = styles[op]
                lw = 2.5 if op == "models_genesis" else 1.3
                label = "x.clone() (floor)" if op == "clone" else ("fused pipeline" if op == "models_genesis" else op)
                ax.plot(
                    [r["batch"] for r in rs],
                    [r["ms_per_sample"] for r in rs],
                    color=c,
                    ls=ls,
                    lw=lw,
                    marker="o",
                    ms=3,
                    label=label,
                )
            if dev == "cpu" and dt == "float32":
                for impl, mk, lab in (
                    ("reference", "s", "pipeline: NumPy reference"),
                    ("monai", "^", "pipeline: MONAI per sample"),
                ):
                    rs = sorted(
                        _find(records, op="models_genesis", impl=impl, shape=shape, dtype="float32"),
                        key=lambda r: r["batch"],
                    )
                    if rs:
                        ax.plot(
                            [r["batch"] for r in rs],
                            [r["ms_per_sample"] for r in rs],
                            color="gray",
                            ls="none",
                            marker=mk,
                            ms=7,
                            label=lab,
                        )
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
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                if lab not in handles:
                    handles[lab] = h
                    labels.append(lab)
    fig.legend([handles[lab] for lab in labels], labels, loc="center right", fontsize=8)
    fig.suptitle(
        f"genesis-ops: time per sample vs batch size ({meta['cpu_model']}, torch threads={meta['threads']}"
        + (f", GPU {meta['cuda_device']}" if meta.get("cuda_device") else "")
        + ")",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / (5.2 * len(shapes) + 2.0), 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path}"


if __name__ == "__main__":
    sys.exit(main())
