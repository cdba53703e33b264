"""Shared helpers for the benchmark scripts in bench/ (timing, machine description).

Not part of the installed package; imported by bench/transforms.py and bench/train_step.py,
which put this directory on sys.path themselves.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict:
    info = {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total_gib": mem_total_gib(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "load_average_start": load_average(),
        "cuda_available": torch.cuda.is_available(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_runtime"] = torch.version.cuda
    return info


def parse_setting(s: str):
    """SHAPE:BATCH:THREADS (e.g. 64x64x32:32:2) -> ((D, H, W), batch, threads), for the scripts
    that compare with the public algorithm (3 sides >= 10: its window sides go up to dim // 10)."""
    try:
        shape, batch, threads = s.split(":")
        dims = tuple(int(v) for v in shape.split("x"))
        batch, threads = int(batch), int(threads)
    except ValueError:
        raise SystemExit(f"--settings: expected SHAPE:BATCH:THREADS (e.g. 64x64x32:32:2), got {s!r}") from None
    if len(dims) != 3 or min(dims) < 10 or batch < 1 or threads < 1:
        raise SystemExit(f"--settings: {s!r} needs 3 sides >= 10 (the public code's limit), batch and threads >= 1")
    return dims, batch, threads


def package_fingerprint(module) -> dict:
    """Where the benchmarked package lives and which build it is (hash and mtime of its _C library)."""
    import glob
    import hashlib

    d = os.path.dirname(getattr(module, "__file__", "") or "")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # Where it lives, without naming this machine's folders: the checkout this script is in (a
    # development install) or an installed copy.
    out = {"dir": "checkout" if os.path.abspath(d).startswith(repo + os.sep) else "installed"}
    libs = sorted(glob.glob(os.path.join(d, "_C*.so")) + glob.glob(os.path.join(d, "_C*.pyd")))
    if libs:
        with open(libs[0], "rb") as f:
            out["lib_sha256_12"] = hashlib.sha256(f.read()).hexdigest()[:12]
        out["lib_mtime_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(libs[0])))
    return out


def set_threads(n: int | None) -> int:
    """Pin torch's intra-op thread count (when given) and return the count in effect."""
    if n is not None:
        if n < 1:
            raise ValueError(f"--threads must be >= 1, got {n}")
        torch.set_num_threads(n)
    return torch.get_num_threads()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_calls(
    fn: Callable[[int], object],
    device: str,
    *,
    warmup: int = 2,
    min_reps: int = 3,
    max_reps: int = 30,
    budget_s: float = 2.0,
    cpu_times: list[float] | None = None,
) -> list[float]:
    """Time ``fn(rep_index)`` and return one wall time in milliseconds per repetition.

    ``fn`` receives the repetition index (warm-up calls get negative indices) so callers can vary
    the seed per repetition. The number of repetitions adapts to ``budget_s``: the first warm-up
    call estimates the cost, then ``clamp(budget_s / estimate, min_reps, max_reps)`` timed calls
    follow. On CUDA every repetition is timed with CUDA events recorded after a synchronisation,
    so queued work from earlier calls is excluded and the kernel time up to the end event is
    included; on CPU with ``time.perf_counter``. When ``cpu_times`` is a list, the process CPU
    time of each CPU repetition (all threads, ``time.process_time``) is appended to it in ms: wall
    time far above CPU time / threads means the process waited for a core (a loaded machine).
    """
    is_cuda = device.startswith("cuda")
    est = None
    for w in range(max(1, warmup)):
        sync(device)
        t0 = time.perf_counter()
        fn(-1 - w)
        sync(device)
        dt = time.perf_counter() - t0
        est = dt if est is None else min(est, dt)
        # a slow op (> budget) needs no second warm-up call
        if dt > budget_s:
            break
    reps = int(budget_s / max(est, 1e-6))
    reps = max(min_reps, min(max_reps, reps))
    times: list[float] = []
    if is_cuda:
        for r in range(reps):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn(r)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for r in range(reps):
            c0 = time.process_time()
            t0 = time.perf_counter()
            fn(r)
            times.append((time.perf_counter() - t0) * 1e3)
            if cpu_times is not None:
                cpu_times.append((time.process_time() - c0) * 1e3)
    return times


def summarize(times_ms: list[float], batch: int) -> dict:
    med = statistics.median(times_ms)
    return {
        "ms_per_call": med,
        "ms_per_sample": med / batch,
        "samples_per_s": (batch * 1e3 / med) if med > 0 else float("inf"),
        "mean_ms_per_sample": statistics.fmean(times_ms) / batch,
        "min_ms_per_sample": min(times_ms) / batch,
        "max_ms_per_sample": max(times_ms) / batch,
        "reps": len(times_ms),
    }
