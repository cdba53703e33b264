#!/usr/bin/env python
"""Does the model still wait for data? One Models Genesis pretraining step, split in two.

Part 1 (step split): one pretraining step of the paper's 3D U-Net at the paper's settings
(batch 6 of 1x64x64x32, SGD lr 1.0 momentum 0.9, MSE against the target) is timed as
  * transform time: ``genesis_ops.models_genesis`` on the batch, on the training device;
  * model time: forward + MSE + backward + optimizer step, through the training engine's
    ``models_genesis.engine.TrainStep`` (the step pretraining runs: on CUDA under autocast,
    bfloat16 where supported; float32 on the CPU). The precision is printed and recorded.
On a GPU the paper's width (32, 19.1M parameters) is used; on a CPU a narrow width (default 8)
so that a step takes seconds rather than minutes; the width is printed and recorded.

Part 2 (whole loop, samples/s): N training steps end to end with
  * ``device``:   raw cubes -> device -> ``genesis_ops.models_genesis`` on the device -> step;
  * ``workers_reference``: the usual setup: NumPy transforms (``genesis_ops.reference``, per
    sample) in ``torch.utils.data.DataLoader`` worker processes -> device -> step. That reference
    is a correctness oracle, several times slower than the public Models Genesis code, so this
    mode overstates the usual setup's cost; hence also
  * ``workers_monai``: the closest MONAI composition (per sample, ~3x the public code's cost) in
    the workers (skipped when MONAI is missing);
  * ``workers_genesis_ops`` (optional): the genesis_ops CPU kernels per sample in the workers;
  * ``model_only``: pre-made pairs, no transform at all (upper bound).

Run as a script with the installed genesis_ops (and ``python/`` on PYTHONPATH for models_genesis)::

    PYTHONPATH=python python bench/train_step.py --threads 2
    PYTHONPATH=python python bench/train_step.py --quick
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
_PY = os.path.join(os.path.dirname(HERE), "python")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from _common import load_average, machine_info, package_fingerprint, set_threads, sync, time_calls  # noqa: E402

try:
    import genesis_ops as go
    import genesis_ops.reference as ref
except ImportError as exc:  # pragma: no cover
    sys.exit(f"bench/train_step.py needs the installed genesis_ops package: {exc}")


def _import_models_genesis():
    """models_genesis (UNet3D and the training engine); python/ is tried when it is not importable
    already. Raises ImportError when it is missing."""
    try:
        import models_genesis  # noqa: F401
    except ImportError:
        if os.path.isdir(_PY) and _PY not in sys.path:
            sys.path.append(_PY)
    from models_genesis.engine import TrainStep
    from models_genesis.model import UNet3D

    return UNet3D, TrainStep


def load_unet(width: int, allow_fallback: bool):
    """``(model, description, TrainStep class)``: the models_genesis UNet3D trained by the engine's
    TrainStep (the step pretraining runs: mixed precision on CUDA), or with ``allow_fallback`` a
    minimal conv net and a plain float32 step when models_genesis is not importable."""
    try:
        UNet3D, TrainStep = _import_models_genesis()
    except ImportError as exc:
        if not allow_fallback:
            sys.exit(f"models_genesis not importable ({exc}); set PYTHONPATH=python or pass --allow-fallback-model")
        print(
            f"# WARNING: models_genesis not importable ({exc}); using the FALLBACK minimal "
            "conv net: the model times are NOT those of the paper's U-Net"
        )
        return _FallbackNet(width), "FALLBACK minimal conv net (not the paper's U-Net)", _FallbackStep
    return UNet3D(in_channels=1, n_classes=1, width=width), f"models_genesis.model.UNet3D(width={width})", TrainStep


class _FallbackStep:
    """Development stand-in for models_genesis.engine.TrainStep (float32, no scaler)."""

    dtype = None

    def __init__(self, model, optimizer, device, loss_fn, **_):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn

    def __call__(self, inp, tgt):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(inp), tgt)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


class _FallbackNet(nn.Module):
    """Development stand-in only (two convs down, two up); clearly labelled in every output."""

    def __init__(self, w):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv3d(1, w, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2), nn.Conv3d(w, 2 * w, 3, padding=1), nn.ReLU()
        )
        self.dec = nn.Sequential(nn.ConvTranspose3d(2 * w, w, 2, stride=2), nn.ReLU(), nn.Conv3d(w, 1, 1))

    def forward(self, x):
        return torch.sigmoid(self.dec(self.enc(x)))


class RawCubes(torch.utils.data.Dataset):
    """Untransformed cubes (index -> pool[index % P]); the transforms run on the device."""

    def __init__(self, pool: torch.Tensor, n: int):
        self.pool, self.n = pool, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.pool[i % self.pool.shape[0]]


class WorkerTransformed(torch.utils.data.Dataset):
    """The usual setup: one (input, target) pair made per sample inside a DataLoader worker."""

    def __init__(self, pool: torch.Tensor, n: int, cfg, seed: int, impl: str):
        self.pool_np = pool.numpy()
        self.pool = pool
        self.n, self.cfg, self.seed, self.impl = n, cfg, seed, impl

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        # sample i of the epoch gets the random stream of sample i of one batched call
        # (seed, sample_offset=i): the same pairs the batched op would make
        j = i % self.pool.shape[0]
        if self.impl == "reference":
            inp, tgt = ref.models_genesis(
                self.pool_np[j : j + 1], config=self.cfg, **_seed_kw(ref.models_genesis, self.seed, i)
            )
            return torch.from_numpy(np.ascontiguousarray(inp[0])), torch.from_numpy(np.ascontiguousarray(tgt[0]))
        inp, tgt = go.models_genesis(self.pool[j : j + 1], config=self.cfg, **_seed_kw(go.models_genesis, self.seed, i))
        return inp[0], tgt[0]


def _seed_kw(fn, seed: int, i: int) -> dict:
    try:
        if "sample_offset" in inspect.signature(fn).parameters:
            return {"seed": seed, "sample_offset": i}
    except (TypeError, ValueError):  # pragma: no cover
        pass
    return {"seed": seed + i}


class WorkerMonai(torch.utils.data.Dataset):
    """The same setup with the closest MONAI composition (see transforms.py) per sample."""

    def __init__(self, pool: torch.Tensor, n: int, cfg, seed: int):
        from transforms import import_monai, monai_transforms

        mt, _ = import_monai()
        self.flips, self.corrupt = monai_transforms(mt, tuple(pool.shape[2:]), cfg)["models_genesis"]
        self.pool, self.n, self.seed = pool, n, seed
        self.reseed(0)

    def reseed(self, worker_id: int):
        # forked workers inherit identical NumPy RandomStates: give each worker its own stream
        self.flips.set_random_state(seed=(self.seed + 2 * worker_id) % 2**32)
        self.corrupt.set_random_state(seed=(self.seed + 2 * worker_id + 1) % 2**32)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        x = self.pool[i % self.pool.shape[0]].clone()
        target = torch.as_tensor(self.flips(x)).clone()
        inp = torch.as_tensor(self.corrupt(target.clone()))
        return inp.as_subclass(torch.Tensor).contiguous(), target.as_subclass(torch.Tensor).contiguous()


def _worker_init(worker_id):
    torch.set_num_threads(1)
    info = torch.utils.data.get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(worker_id)


def parse_shape(s):
    dims = tuple(int(v) for v in s.lower().split("x"))
    if len(dims) != 4 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"bad shape {s!r}; expected C x D x H x W, e.g. 1x64x64x32")
    return dims


MODES = ("device", "workers_reference", "workers_monai", "workers_genesis_ops", "model_only")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few steps, narrow width (about a minute on CPU)")
    ap.add_argument("--device", default=None, help="cuda when present, else cpu")
    ap.add_argument("--width", type=int, default=None, help="U-Net width (default 32 on GPU, 8 on CPU, 4 with --quick)")
    ap.add_argument("--batch", type=int, default=6, help="batch size (paper: 6)")
    ap.add_argument("--shape", type=parse_shape, default=(1, 64, 64, 32), help="per-sample C x spatial")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N) in the main process")
    ap.add_argument(
        "--workers", type=int, default=None, help="DataLoader workers for the usual setup (default: number of CPUs)"
    )
    ap.add_argument("--steps", type=int, default=None, help="timed repetitions for part 1")
    ap.add_argument("--loop-steps", type=int, default=None, help="timed training steps per loop mode in part 2")
    ap.add_argument(
        "--modes",
        default="model_only,device,workers_reference,workers_monai",
        help="part-2 modes: model_only,device,workers_reference,workers_monai,workers_genesis_ops",
    )
    ap.add_argument("--lr", type=float, default=1.0, help="SGD learning rate (paper: 1.0)")
    ap.add_argument(
        "--amp",
        choices=["auto", "none", "bf16"],
        default="auto",
        help="mixed precision of the model step: auto (the engine's choice, as pretraining: "
        "bf16 autocast on CUDA where supported, float32 on the CPU), none (float32) or bf16",
    )
    ap.add_argument(
        "--allow-fallback-model",
        action="store_true",
        help="development only: a minimal conv net when models_genesis is missing",
    )
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument(
        "--cpu-variants",
        action="store_true",
        help="part 3 only: the demo's CPU pretraining step under channels_last_3d / bfloat16 autocast / "
        "torch.compile / threads, interleaved",
    )
    ap.add_argument("--rounds", type=int, default=3, help="--cpu-variants: interleaved rounds")
    ap.add_argument(
        "--no-compile-variants",
        dest="compile_variants",
        action="store_false",
        help="--cpu-variants: skip the torch.compile variants (their compilation takes minutes)",
    )
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    for m in args.modes:
        if m not in MODES:
            ap.error(f"--modes: unknown mode {m!r}")
    return args


class Bench:
    """One benchmark run: the settings resolved from the arguments, the model and its training
    step, and the pool of raw cubes every part draws from."""

    def __init__(self, args):
        self.args = args
        self.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.on_gpu = self.device.startswith("cuda")
        self.threads = set_threads(args.threads)
        self.width = args.width or (32 if self.on_gpu else (4 if args.quick else 8))
        self.steps = args.steps or (3 if args.quick else (20 if self.on_gpu else 5))
        self.loop_steps = args.loop_steps or (3 if args.quick else (50 if self.on_gpu else 6))
        self.workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
        self.modes = list(args.modes)
        self.notes: list[str] = []
        self.B, self.dims = args.batch, args.shape
        self.cfg = go.GenesisConfig()

    def drop_missing_monai(self) -> None:
        if "workers_monai" in self.modes:
            from transforms import import_monai

            if import_monai()[0] is None:
                self.modes.remove("workers_monai")
                self.notes.append("workers_monai skipped: MONAI not importable")
                print("# note: MONAI not importable: workers_monai skipped")

    def build(self) -> None:
        """Model, optimiser (the paper's SGD) and the training step; the pool of raw cubes."""
        args = self.args
        torch.manual_seed(args.seed)
        torch.set_flush_denormal(True)
        model, self.model_desc, step_cls = load_unet(self.width, args.allow_fallback_model)
        self.model = model.to(self.device)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        opt = torch.optim.SGD(self.model.parameters(), lr=args.lr, momentum=0.9, weight_decay=0.0)
        # --amp auto: the engine's choice (bf16 autocast on CUDA where supported, else fp16 with a
        # GradScaler; float32 on the CPU), the step pretraining runs
        self.train_step = step_cls(
            self.model,
            opt,
            torch.device(self.device),
            lambda pred, tgt: F.mse_loss(pred.float(), tgt.float()),
            amp=args.amp != "none",
            dtype=torch.bfloat16 if args.amp == "bf16" else None,
        )
        self.amp = str(self.train_step.dtype).replace("torch.", "") if self.train_step.dtype else "float32"
        self.pool = torch.rand((max(32, self.B),) + self.dims, generator=torch.Generator().manual_seed(args.seed))

    def describe(self) -> dict:
        meta = machine_info()
        meta.update(
            {
                "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
                "threads": self.threads,
                "device": self.device,
                "model": self.model_desc,
                "width": self.width,
                "parameters": self.n_params,
                "batch": self.B,
                "shape": "x".join(map(str, self.dims)),
                "optimizer": f"SGD lr={self.args.lr} momentum=0.9",
                "precision": self.amp,
                "loss": "MSE(model(input), target)",
                "workers": self.workers,
                "genesis_ops_build": package_fingerprint(go),
            }
        )
        try:
            meta["genesis_ops_build_info"] = go.build_info()
        except Exception as exc:  # pragma: no cover
            meta["genesis_ops_build_info"] = f"unavailable: {exc}"
        print(
            f"# train-step benchmark ({meta['time_utc']}): {self.model_desc}, {self.n_params:,} parameters, "
            f"device {self.device}"
            + (f" ({meta.get('cuda_device')})" if self.on_gpu else "")
            + f", precision {self.amp}"
        )
        print(
            f"# cpu: {meta['cpu_model']} x{meta['logical_cpus']}  torch {meta['torch']}  threads={self.threads}  "
            f"load avg={meta['load_average_start']}  batch {self.B} of {meta['shape']}"
        )
        self.meta = meta
        return meta

    # ---------------- part 1: one step, split ---------------------------------------------------
    def step_split(self) -> dict:
        """Median transform time, model time (forward + MSE + backward + step) and whole step."""
        args, cfg, device, B = self.args, self.cfg, self.device, self.B
        x = self.pool[:B].to(device)
        inp, tgt = go.models_genesis(x, config=cfg, seed=args.seed)
        t_tr = time_calls(
            lambda r: go.models_genesis(x, config=cfg, seed=args.seed + 1000 + r),
            device,
            warmup=2,
            min_reps=max(self.steps, 5),
            max_reps=max(self.steps, 50),
            budget_s=1.0,
        )
        t_model = time_calls(
            lambda r: self.train_step(inp, tgt),
            device,
            warmup=2,
            min_reps=self.steps,
            max_reps=self.steps,
            budget_s=0.0,
        )

        def full_step(r):
            i, t = go.models_genesis(x, config=cfg, seed=args.seed + 5000 + r)
            return self.train_step(i, t)

        t_step = time_calls(full_step, device, warmup=1, min_reps=self.steps, max_reps=self.steps, budget_s=0.0)
        tr, mo, st = statistics.median(t_tr), statistics.median(t_model), statistics.median(t_step)
        split = {
            "part": "step",
            "device": device,
            "width": self.width,
            "batch": B,
            "shape": self.meta["shape"],
            "amp": self.amp,
            "threads": self.threads,
            "transform_ms": tr,
            "model_ms": mo,
            "step_ms": st,
            "transform_fraction": tr / (tr + mo),
            "transform_reps": len(t_tr),
            "model_reps": len(t_model),
            "step_reps": len(t_step),
            "transform_ms_per_sample": tr / B,
        }
        print(
            f"\n## one pretraining step (median): transforms {tr:.3f} ms | model fwd+bwd+step {mo:.1f} ms | "
            f"whole step {st:.1f} ms | transforms = {100 * split['transform_fraction']:.3f}% of transform+model"
        )
        return split

    # ---------------- part 2: whole loop --------------------------------------------------------
    def batches(self, mode: str, warm: int):
        """``(iterator of (input, target) on the device, DataLoader workers)`` for a loop mode."""
        args, cfg, pool, B, device = self.args, self.cfg, self.pool, self.B, self.device
        n_total = (self.loop_steps + 2) * B
        if mode == "model_only":
            pairs = [go.models_genesis(pool[:B], config=cfg, seed=args.seed + k) for k in range(2)]
            pairs = [(a.to(device), b.to(device)) for a, b in pairs]
            return (pairs[k % 2] for k in range(self.loop_steps + warm)), 0
        if mode == "device":
            dl = torch.utils.data.DataLoader(
                RawCubes(pool, n_total),
                batch_size=B,
                shuffle=True,
                num_workers=0,
                pin_memory=self.on_gpu,
                drop_last=True,
                generator=torch.Generator().manual_seed(args.seed),
            )
            return (
                go.models_genesis(xb.to(device, non_blocking=True), config=cfg, seed=args.seed + 10_000 + k)
                for k, xb in enumerate(dl)
            ), 0
        if mode == "workers_monai":
            ds = WorkerMonai(pool, n_total, cfg, args.seed + 30_000)
        else:
            impl = "reference" if mode == "workers_reference" else "genesis_ops"
            ds = WorkerTransformed(pool, n_total, cfg, args.seed + 20_000, impl)
        w = self.workers
        dl = torch.utils.data.DataLoader(
            ds,
            batch_size=B,
            shuffle=True,
            num_workers=w,
            pin_memory=self.on_gpu,
            drop_last=True,
            worker_init_fn=_worker_init,
            prefetch_factor=2 if w > 0 else None,
            persistent_workers=False,
            generator=torch.Generator().manual_seed(args.seed),
        )
        return ((a.to(device, non_blocking=True), b.to(device, non_blocking=True)) for a, b in dl), w

    def run_loop(self, mode: str) -> dict:
        """``loop_steps`` timed training steps (after 2 warm-up steps) on the batches of ``mode``."""
        warm, device = 2, self.device
        it, nw = self.batches(mode, warm)
        t0 = None
        done = 0
        for k, (a, b) in enumerate(it):
            if k == warm:
                sync(device)
                t0 = time.perf_counter()
            self.train_step(a, b)
            if k >= warm:
                done += 1
            if done >= self.loop_steps:
                break
        sync(device)
        dt = time.perf_counter() - t0
        rec = {
            "part": "loop",
            "mode": mode,
            "device": device,
            "width": self.width,
            "batch": self.B,
            "shape": self.meta["shape"],
            "threads": self.threads,
            "workers": nw,
            "steps": done,
            "seconds": dt,
            "samples_per_s": done * self.B / dt,
            "ms_per_step": 1e3 * dt / done,
        }
        print(
            f"  loop {mode:<20} workers={nw:<3} {done} steps in {dt:7.2f} s: {rec['samples_per_s']:9.2f} samples/s"
            f"  ({rec['ms_per_step']:.1f} ms/step)",
            flush=True,
        )
        return rec


def summarise(split: dict, loops: list[dict], workers: int, notes: list[str], on_gpu: bool) -> list[str]:
    """The summary lines: ratios between the loop modes and the transforms' share of a step."""
    by = {r["mode"]: r for r in loops}
    summary = []
    if "device" in by and "workers_reference" in by:
        v = by["device"]["samples_per_s"] / by["workers_reference"]["samples_per_s"]
        summary.append(f"transforms on the device vs NumPy reference in {workers} workers: {v:.2f}x the samples/s")
    if "device" in by and "model_only" in by:
        v = by["device"]["samples_per_s"] / by["model_only"]["samples_per_s"]
        summary.append(f"transforms on the device reach {100 * v:.1f}% of the no-transform (model-only) rate")
    if "device" in by and "workers_monai" in by:
        v = by["device"]["samples_per_s"] / by["workers_monai"]["samples_per_s"]
        summary.append(f"transforms on the device vs MONAI composition in {workers} workers: {v:.2f}x the samples/s")
    for m, name in (
        ("workers_reference", "NumPy reference"),
        ("workers_monai", "MONAI composition"),
        ("workers_genesis_ops", "genesis_ops CPU per sample"),
    ):
        if m in by and "model_only" in by:
            v = by[m]["samples_per_s"] / by["model_only"]["samples_per_s"]
            summary.append(f"{name} in {workers} workers reaches {100 * v:.1f}% of the model-only rate")
    summary.extend(notes)
    summary.append(
        f"transforms are {100 * split['transform_fraction']:.3f}% of a step's transform+model time"
        + (
            " (GPU target: < 2% of a paper U-Net step with AMP bf16)"
            if on_gpu
            else " (CPU, narrow width: not the GPU target)"
        )
    )
    return summary


def write_outputs(doc: dict, out: str, json_path, tag: str) -> None:
    """``train_step_{tag}.json`` and ``.md`` in ``out`` (and ``json_path`` when given)."""
    os.makedirs(out, exist_ok=True)
    for path in {os.path.join(out, f"train_step_{tag}.json"), json_path} - {None}:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"# wrote {path}")
    md = os.path.join(out, f"train_step_{tag}.md")
    with open(md, "w") as f:
        f.write(markdown(doc))
    print(f"# wrote {md}")


# --------------------------------------------------------------------------------------------
# Part 3 (--cpu-variants): which CPU settings make the demo's pretraining step faster


def _variant_step(width: int, batch: int, cube, channels_last: bool, bf16: bool, compile_: bool, seed: int):
    """One demo pretraining step (genesis_ops.models_genesis on the batch, then the U-Net's
    forward/backward/Adam step through the engine's TrainStep) with the given settings; returns
    ``step()``. The model is built here so every variant starts from the same weights."""
    UNet3D, TrainStep = _import_models_genesis()
    torch.manual_seed(seed)
    model = UNet3D(in_channels=1, n_classes=1, width=width)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    run = torch.compile(model) if compile_ else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = TrainStep(run, opt, torch.device("cpu"), F.mse_loss, dtype=torch.bfloat16 if bf16 else None)
    step.dtype = torch.bfloat16 if bf16 else None  # explicit: no CPU default in either direction
    gen = torch.Generator().manual_seed(seed)
    pool = torch.rand((4 * batch, 1) + tuple(cube), generator=gen)
    cfg = go.GenesisConfig()
    k = [0]

    def one():
        i = k[0] % 4
        k[0] += 1
        inp, tgt = go.models_genesis(pool[i * batch : (i + 1) * batch], cfg, seed=seed + k[0])
        step(inp, tgt)

    return one


CPU_VARIANTS = {
    # name: (channels_last_3d, bfloat16 autocast, torch.compile, threads)
    "float32 (before)": (False, False, False, None),
    "channels_last_3d (default)": (True, False, False, None),
    "bf16 autocast": (False, True, False, None),
    "bf16 + channels_last_3d": (True, True, False, None),
    "bf16 + channels_last_3d, 1 thread": (True, True, False, 1),
    "torch.compile float32": (False, False, True, None),
    "torch.compile bf16 + channels_last_3d": (True, True, True, None),
}


def cpu_variants(args) -> int:
    """Samples/s of the demo's pretraining step under each of :data:`CPU_VARIANTS`, interleaved
    (round r runs every variant once, so a load change on the shared machine hits all of them),
    median over rounds; written to ``train_step_cpu_variants.json`` / ``.md``."""
    from models_genesis.engine import cpu_has_bf16

    threads = set_threads(args.threads)
    batch, cube, width = 8, (32, 32, 16), args.width or 8
    names = [n for n in CPU_VARIANTS if args.compile_variants or not CPU_VARIANTS[n][2]]
    if not cpu_has_bf16():
        names = [n for n in names if not CPU_VARIANTS[n][1]]
    load0, t_start = load_average(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    steps, compile_s = {}, {}
    for n in names:
        cl, bf, comp, th = CPU_VARIANTS[n]
        t0 = time.perf_counter()
        steps[n] = _variant_step(width, batch, cube, cl, bf, comp, args.seed)
        torch.set_num_threads(th or threads)
        for _ in range(2):  # warm-up (and compilation)
            steps[n]()
        compile_s[n] = time.perf_counter() - t0
        torch.set_num_threads(threads)
    per_round = args.loop_steps or 5
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names:
            torch.set_num_threads(CPU_VARIANTS[n][3] or threads)
            t0 = time.perf_counter()
            for _ in range(per_round):
                steps[n]()
            rates[n].append(per_round * batch / (time.perf_counter() - t0))
            torch.set_num_threads(threads)
        print(f"# round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {rates[n][-1]:.1f}" for n in names))
    base = statistics.median(rates[names[0]])
    recs = [
        {
            "variant": n,
            "channels_last_3d": CPU_VARIANTS[n][0],
            "bf16": CPU_VARIANTS[n][1],
            "compile": CPU_VARIANTS[n][2],
            "threads": CPU_VARIANTS[n][3] or threads,
            "samples_per_s": rates[n],
            "median": statistics.median(rates[n]),
            "vs_before": statistics.median(rates[n]) / base,
            "setup_s": compile_s[n],
        }
        for n in names
    ]
    meta = {
        **machine_info(),
        "time_utc": t_start,
        "load_average_start": load0,
        "load_average_end": load_average(),
        "threads": threads,
        "avx512_bf16": cpu_has_bf16(),
        "step": f"demo pretraining step: UNet3D(width={width}), batch {batch} of 1x{'x'.join(map(str, cube))}, "
        "genesis_ops.models_genesis + Adam + MSE through models_genesis.engine.TrainStep",
        "rounds": args.rounds,
        "steps_per_round": per_round,
        "command": "python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:]),
    }
    lines = [
        "# genesis-ops: CPU settings of the demo's pretraining step",
        "",
        f"- when: {t_start}; machine: {meta['cpu_model']}, {meta['logical_cpus']} logical CPUs (shared with "
        f"other jobs); load average start {load0}, end {meta['load_average_end']}",
        f"- torch {torch.__version__}, threads {threads}; native bfloat16 (oneDNN): {meta['avx512_bf16']}",
        f"- {meta['step']}; {args.rounds} interleaved rounds of {per_round} steps, median",
        f"- command: `{meta['command']}`",
        "",
        "| variant | threads | samples/s (median) | per round | vs float32 | setup+warm-up (s) |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for r in recs:
        lines.append(
            f"| {r['variant']} | {r['threads']} | {r['median']:.1f} | "
            + " ".join(f"{v:.1f}" for v in r["samples_per_s"])
            + f" | {r['vs_before']:.2f}x | {r['setup_s']:.1f} |"
        )
    print("\n".join(lines))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "train_step_cpu_variants.json"), "w") as f:
        json.dump({"meta": meta, "records": recs}, f, indent=1)
    with open(os.path.join(args.out, "train_step_cpu_variants.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"# wrote {os.path.join(args.out, 'train_step_cpu_variants.md')}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cpu_variants:
        return cpu_variants(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("# CUDA requested but not available: nothing to do (GPU numbers pending)")
        return 0
    bench = Bench(args)
    bench.drop_missing_monai()
    bench.build()
    meta = bench.describe()
    split = bench.step_split()
    print(f"\n## whole loop, {bench.loop_steps} timed steps after 2 warm-up steps (batch {bench.B})")
    loops = [bench.run_loop(mode) for mode in bench.modes]
    meta["load_average_end"] = load_average()
    summary = summarise(split, loops, bench.workers, bench.notes, bench.on_gpu)
    print("\n## summary")
    for s in summary:
        print("  " + s)
    print(f"# load avg at end {meta['load_average_end']}")
    write_outputs(
        {"meta": meta, "records": [split] + loops, "summary": summary},
        args.out,
        args.json,
        "gpu" if bench.on_gpu else "cpu",
    )
    return 0


def markdown(doc) -> str:
    m, recs = doc["meta"], doc["records"]
    s = recs[0]
    out = [
        "# genesis-ops: one pretraining step and the whole loop",
        "",
        f"- when: {m['time_utc']}; machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs"
        + (f"; GPU {m['cuda_device']}" if m.get("cuda_device") else "")
        + f"; load average start {m['load_average_start']}, end {m.get('load_average_end')}",
        f"- torch {m['torch']}, threads **{m['threads']}**, device **{m['device']}**",
        f"- model: {m['model']} ({m['parameters']:,} parameters); {m['optimizer']}; {m['loss']}; "
        f"precision {m.get('precision', 'float32')}",
        f"- batch {m['batch']} of {m['shape']}; DataLoader workers for the usual setup: {m['workers']}",
        f"- command: `{m['command']}`",
        "",
        "## One step (median)",
        "",
        "| transforms (ms) | model fwd+bwd+step (ms) | whole step (ms) | transforms share |",
        "|---:|---:|---:|---:|",
        f"| {s['transform_ms']:.3f} | {s['model_ms']:.1f} | {s['step_ms']:.1f} | "
        f"{100 * s['transform_fraction']:.3f}% |",
        "",
        "## Whole loop",
        "",
        "| mode | workers | steps | samples/s | ms/step |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in recs[1:]:
        out.append(
            f"| {r['mode']} | {r['workers']} | {r['steps']} | {r['samples_per_s']:.2f} | {r['ms_per_step']:.1f} |"
        )
    out += ["", "## Summary", ""] + [f"- {x}" for x in doc["summary"]] + [""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
