#!/usr/bin/env python
"""The GPU path's work per voxel against the volume size, measured without a GPU, and a model of
its speed on an H200 (``gpu_model``: critical paths, warps per SM, bytes per sample; the
assumptions are in GPU_ASSUMPTIONS and written with the results; no GPU has checked them).

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
    python bench/work_model.py --gpu-model-only # the GPU model alone (seconds)
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


# ---- the GPU model: expected samples/s of each window path, before a GPU measures it ----------
#
# No GPU has run these kernels. The model counts, for the real windows of the target shape (drawn
# with the reference's words, owners stamped as the owner kernel does), the serial critical path
# of each kernel's threads, how many warps an SM keeps in flight, the instructions a warp issues
# and the bytes each sample moves, and takes each kernel's time as the largest of its latency,
# issue and memory bounds. Counts of this kind are good to about 2x; the assumptions are stated
# (GPU_ASSUMPTIONS) and written with the results, so anyone can change one and see the effect.
GPU_ASSUMPTIONS = {
    "gpu": "H200 SXM (GH100)",
    "sms": 132,
    "clock_ghz": 1.98,  # boost clock
    "issue_per_sm_per_clock": 4,  # 4 schedulers, one warp instruction each per clock
    "max_warps_per_sm": 64,
    "max_blocks_per_sm": 32,
    "registers_per_sm": 65536,
    "shared_bytes_per_sm": 228 * 1024,
    "dram_bytes_per_s": 4.8e12,
    "dram_efficiency": 0.85,  # share of the peak a streaming kernel reaches
    "l2_atomics_per_s": 2.0e11,  # red.global.max to scattered addresses (the owner kernel)
    "l2_bytes_per_s": 1.2e13,  # L2 read bandwidth (only the projections use it)
    # latencies in clocks
    "lat_l2": 260,  # global load that hits L2 (a sample's owner map is 512 KB; the working set fits the 50 MB L2)
    "lat_shared": 30,
    "lat_barrier": 25,
    "lat_alu": 5,  # dependent integer instruction
    "lat_philox": 150,  # one Philox4x32-10 block: 10 dependent rounds
    "instr_philox": 100,
    "lat_div32": 60,  # 32-bit division by a run-time value (about 20 instructions)
    "instr_div32": 20,
    "lat_div64": 200,  # 64-bit division (FastDiv set-up, twice per window)
    "instr_div64": 70,
    # registers per thread, from ptxas -v (sm_90, CUDA 13.0) of this tree's kernels
    "regs_window_block": 32,
    "regs_window_thread": 52,
    "regs_voxel": 74,
    "voxel_instr_per_group": 300,  # a 4-voxel group of the fused pipeline, every stage on (estimate)
}


def _window_stats(dims, num_windows: int, samples: int, seed: int):
    """Per window of `samples` samples at spatial `dims`: volume n, smallest owned position pmin
    (-1: owns nothing), with windows stamped in order (the last covering window owns a voxel)."""
    import numpy as np

    from genesis_ops import reference as ref

    out = []
    for sample in range(samples):
        starts, sizes = ref.shuffle_windows(seed, sample, dims, num_windows)
        owner = np.full(dims, -1, dtype=np.int32)
        sl = [
            tuple(slice(int(s), int(s + z)) for s, z in zip(starts[k], sizes[k], strict=True))
            for k in range(num_windows)
        ]
        for k in range(num_windows):
            owner[sl[k]] = k
        n = sizes.prod(axis=1)
        pmin = np.full(num_windows, -1, dtype=np.int64)
        for k in range(num_windows):
            owned = (owner[sl[k]] == k).ravel()
            if owned.any():
                pmin[k] = int(np.argmax(owned))
        out.append((n, pmin))
    return out


def _old_window_latency(n, pmin, a):
    """Block path, one warp per window: lane 0's serial phases plus 6 barriers (launch_bodies.h)."""
    import numpy as np

    active = pmin >= 0
    first = np.maximum(1, pmin)
    rounds = np.ceil(n / 32)
    begin = a["lat_l2"] + 1.2 * a["lat_philox"] + 10 * a["lat_alu"]
    claims = rounds * (2 * a["lat_div32"] + a["lat_l2"])
    scan = 32 * 2 + a["lat_shared"]  # lane 0's minimum over 32 shared entries
    draws = a["lat_philox"] + a["lat_shared"]
    swaps = np.where(active, (n - first) * (2 * a["lat_shared"] + 3 * a["lat_alu"]), 0)
    writes = np.where(active, np.ceil((n - np.maximum(pmin, 0)) / 32) * (4 * a["lat_div32"] + a["lat_l2"]), 0)
    barriers = 6 * a["lat_barrier"]
    lat = begin + claims + barriers + np.where(active, scan + draws, scan) + swaps + writes
    instr = 40 + rounds * (2 * a["instr_div32"] + 8) + 32 * 3 + np.where(active, a["instr_philox"] + (n - first) * 8, 0)
    return lat, instr


def _new_window_lane(n, pmin, a):
    """Thread path, one thread per window (window_thread_body): latency and instructions of a lane."""
    import numpy as np

    active = pmin >= 0
    first = np.maximum(1, pmin)
    scanned = np.where(active, pmin + 1, n)
    fastdiv = 4 * a["lat_alu"]
    begin = a["lat_l2"] + 1.2 * a["lat_philox"] + a["lat_div64"] + 10 * a["lat_alu"]
    scan = scanned * (fastdiv + a["lat_l2"])
    steps = np.where(active, n - first + (pmin == 0), 0)
    # a step: its share of a Philox block, the draw, the shared load of perm[j], the source's
    # position, and the owner load of position i (issued at the step's start: the larger wins)
    chain = a["lat_philox"] / 4 + 2 * a["lat_alu"] + a["lat_shared"] + fastdiv + 2 * a["lat_alu"]
    step = max(chain, a["lat_l2"])
    lat = begin + scan + np.where(active, n * 1.0 + steps * step, 0)
    instr = (
        30
        + 2 * a["instr_philox"]
        + 2 * a["instr_div64"]
        + scanned * 10
        + np.where(active, n * 2 + steps * (a["instr_philox"] / 4 + 22), 0)
    )
    return lat, instr


def gpu_model(
    shape: str = BASE_SHAPE,
    batch: int = 1024,
    num_windows: int = 10000,
    shuffle_p: float = 0.5,
    dtype_bytes: int = 4,
    stat_samples: int = 4,
    seed: int = 777,
    a: dict | None = None,
) -> dict:
    """Modelled time per batch of the fused pipeline on the GPU (GPU_ASSUMPTIONS), old and new window paths."""
    import numpy as np

    a = dict(GPU_ASSUMPTIONS if a is None else a)
    c, *dims = (int(d) for d in shape.split("x"))
    S = int(np.prod(dims))
    hz = a["clock_ghz"] * 1e9
    stats = _window_stats(tuple(dims), num_windows, stat_samples, seed)
    n = np.concatenate([s[0] for s in stats]).astype(float)
    pmin = np.concatenate([s[1] for s in stats])
    shuffled = batch * shuffle_p  # expected shuffled samples; the others' windows exit at once
    per_sample = num_windows

    def occupancy(threads_per_block, regs, smem_per_block):
        regs_block = threads_per_block * (-(-regs // 8) * 8)
        blocks = min(
            a["max_blocks_per_sm"],
            a["registers_per_sm"] // regs_block,
            a["shared_bytes_per_sm"] // max(1, smem_per_block + 1024),  # + the block's reserved 1 KB
            a["max_warps_per_sm"] * 32 // threads_per_block,
        )
        return blocks * threads_per_block // 32

    out = {
        "assumptions": a,
        "shape": shape,
        "batch": batch,
        "num_windows": num_windows,
        "shuffle_p": shuffle_p,
        "window_voxels_mean": float(n.mean()),
        "window_voxels_max": int(n.max()),
        "windows_owning_nothing": float((pmin < 0).mean()),
        "stat_samples": stat_samples,
    }
    # old path: one warp (block) per window item
    lat, instr = _old_window_latency(n, pmin, a)
    idle_lat = a["lat_l2"] + 6 * a["lat_barrier"]  # a window of an unshuffled sample
    warps_old = occupancy(32, a["regs_window_block"], 8 * int(n.max()) + 240)
    total_lat = shuffled * per_sample * lat.mean() + (batch - shuffled) * per_sample * idle_lat
    old_latency_s = total_lat / (a["sms"] * warps_old) / hz
    old_issue_s = (
        (shuffled * per_sample * instr.mean() + (batch - shuffled) * per_sample * 20)
        / (a["sms"] * a["issue_per_sm_per_clock"])
        / hz
    )
    # new path: 32 consecutive windows of a sample per warp; a warp takes its slowest lane's time
    lane_lat, lane_instr = _new_window_lane(n, pmin, a)
    w = len(n) // 32 * 32
    warp_lat = lane_lat[:w].reshape(-1, 32).max(axis=1)
    warp_instr = lane_instr[:w].reshape(-1, 32).max(axis=1)
    cap = int(np.prod([max(1, d // 10) for d in dims]))
    stride = ((-(-cap // 4)) | 1) * 4
    warps_new = occupancy(128, a["regs_window_thread"], 128 * stride)
    warps_per_sample = per_sample / 32
    idle_warp_lat = a["lat_l2"] + 10 * a["lat_alu"]
    new_total_lat = (
        shuffled * warps_per_sample * warp_lat.mean() + (batch - shuffled) * warps_per_sample * idle_warp_lat
    )
    new_latency_s = new_total_lat / (a["sms"] * warps_new) / hz
    new_issue_s = (
        (shuffled * warps_per_sample * warp_instr.mean() + (batch - shuffled) * warps_per_sample * 15)
        / (a["sms"] * a["issue_per_sm_per_clock"])
        / hz
    )
    # the stages both paths share
    bw = a["dram_bytes_per_s"] * a["dram_efficiency"]
    memset_s = batch * S * 4 / bw
    atomics = shuffled * per_sample * n.mean()
    owner_s = max(atomics / a["l2_atomics_per_s"], batch * S * 4 * shuffle_p / bw)
    voxel_bytes = S * (3 * c * dtype_bytes + 4 * shuffle_p)  # x, input, target; the owner map where shuffled
    voxel_mem_s = batch * voxel_bytes / bw
    voxel_issue_s = batch * (S / 4) / 32 * a["voxel_instr_per_group"] / (a["sms"] * a["issue_per_sm_per_clock"]) / hz
    voxel_s = max(voxel_mem_s, voxel_issue_s)
    window_bytes = shuffled * S * 4 * 2  # the window kernel reads and rewrites the shuffled samples' owner maps
    shared_s = memset_s + owner_s + voxel_s + batch * 2e-9  # + params and curves (about 2 ns per sample)
    for name, lat_s, issue_s, warps in (
        ("old", old_latency_s, old_issue_s, warps_old),
        ("new", new_latency_s, new_issue_s, warps_new),
    ):
        win_s = max(lat_s, issue_s, window_bytes / bw)
        total = shared_s + win_s
        out[name] = {
            "window_path": "one warp per window (block path)" if name == "old" else "one thread per window",
            "warps_per_sm": warps,
            "window_latency_bound_ms": 1e3 * lat_s,
            "window_issue_bound_ms": 1e3 * issue_s,
            "window_ms": 1e3 * win_s,
            "critical_path_cycles_per_window": float(lat.mean()) if name == "old" else None,
            "critical_path_cycles_per_warp_of_32_windows": float(warp_lat.mean()) if name == "new" else None,
            "total_ms": 1e3 * total,
            "samples_per_s": batch / total,
        }
    # Projections, not this tree's kernels: what the next two steps would give in the same model.
    # (1) lanes kept busy (a flattened per-lane step loop, so a warp no longer waits for its largest
    # window: warp work = the mean lane's, not the slowest lane's; optimistic, as the windows' set-up
    # would then diverge); (2) owners stamped per sample
    # slab in shared memory (no global atomics) and written once, only for shuffled samples.
    bal_lat_s = (
        (shuffled * warps_per_sample * lane_lat[:w].reshape(-1, 32).mean(axis=1).mean()) / (a["sms"] * warps_new) / hz
    )
    bal_issue_s = (
        (shuffled * warps_per_sample * lane_instr[:w].reshape(-1, 32).mean(axis=1).mean())
        / (a["sms"] * a["issue_per_sm_per_clock"])
        / hz
    )
    bal_win_s = max(bal_lat_s, bal_issue_s, window_bytes / bw)
    # the slab stage: each shuffled sample's windows' boxes computed once (2 Philox blocks, 16 bytes
    # each), read back from L2 by every slab of 4 planes, the slab's owners written once
    slabs = -(-dims[0] // 4) if len(dims) == 3 else 1
    boxes_s = shuffled * per_sample * (2 * a["instr_philox"] / 32) / (a["sms"] * a["issue_per_sm_per_clock"]) / hz
    slab_owner_s = boxes_s + shuffled * slabs * per_sample * 16 / a["l2_bytes_per_s"] + batch * shuffle_p * S * 4 / bw
    t1 = shared_s + bal_win_s
    t2 = slab_owner_s + voxel_s + batch * 2e-9 + bal_win_s
    out["projections"] = {
        "balanced_lanes": {"window_ms": 1e3 * bal_win_s, "total_ms": 1e3 * t1, "samples_per_s": batch / t1},
        "balanced_lanes_and_slab_owners": {
            "owner_ms": 1e3 * slab_owner_s,
            "total_ms": 1e3 * t2,
            "samples_per_s": batch / t2,
        },
    }
    out["shared_stages_ms"] = {
        "owner_memset": 1e3 * memset_s,
        "owner_atomics": 1e3 * owner_s,
        "voxel": 1e3 * voxel_s,
        "voxel_memory_bound": 1e3 * voxel_mem_s,
        "voxel_issue_bound": 1e3 * voxel_issue_s,
    }
    out["bytes_per_sample"] = {
        "voxel_kernel": voxel_bytes,
        "owner_memset": S * 4,
        "window_kernel": S * 4 * 2 * shuffle_p,
        "atomics": float(per_sample * n.mean() * shuffle_p),
    }
    return out


def gpu_markdown(m: dict) -> str:
    a = m["assumptions"]
    o, n, sh = m["old"], m["new"], m["shared_stages_ms"]
    out = [
        "## GPU model (no GPU has measured these numbers)",
        "",
        f"- {a['gpu']}: {a['sms']} SMs at {a['clock_ghz']} GHz, {a['dram_bytes_per_s'] / 1e12:.1f} TB/s "
        f"(x{a['dram_efficiency']} reached), L2 atomics {a['l2_atomics_per_s'] / 1e9:.0f} G/s; latencies in clocks: "
        f"L2 load {a['lat_l2']}, shared {a['lat_shared']}, barrier {a['lat_barrier']}, Philox block {a['lat_philox']}, "
        f"32-bit division {a['lat_div32']}, 64-bit division {a['lat_div64']}; registers from ptxas "
        f"(window block {a['regs_window_block']}, window thread {a['regs_window_thread']}, voxel {a['regs_voxel']})",
        f"- {m['shape']}, batch {m['batch']}, float32, {m['num_windows']:,} windows, shuffle_p {m['shuffle_p']}; "
        f"window statistics from {m['stat_samples']} samples' real windows: mean {m['window_voxels_mean']:.1f} voxels, "
        f"largest {m['window_voxels_max']}, {100 * m['windows_owning_nothing']:.0f}% own no voxel",
        "- each kernel's time: the largest of its latency bound (critical path x work / warps in flight), "
        "issue bound (warp instructions / 4 per SM per clock) and memory bound",
        "",
        "| window path | warps per SM | critical path | window kernel: latency / issue bound | window kernel "
        "| batch total | samples/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r, cp in (
        (o, f"{o['critical_path_cycles_per_window']:.0f} clocks per window"),
        (n, f"{n['critical_path_cycles_per_warp_of_32_windows']:.0f} clocks per warp of 32 windows"),
    ):
        out.append(
            f"| {r['window_path']} | {r['warps_per_sm']} | {cp} | {r['window_latency_bound_ms']:.2f} / "
            f"{r['window_issue_bound_ms']:.2f} ms | {r['window_ms']:.2f} ms | {r['total_ms']:.2f} ms | "
            f"**{r['samples_per_s']:,.0f}** |"
        )
    b = m["bytes_per_sample"]
    out += [
        "",
        f"Stages both paths share, per batch: owner map fill {sh['owner_memset']:.2f} ms, owner atomics "
        f"{sh['owner_atomics']:.2f} ms, voxel kernel {sh['voxel']:.2f} ms "
        f"(memory bound {sh['voxel_memory_bound']:.2f}, issue bound {sh['voxel_issue_bound']:.2f}). "
        f"Bytes per sample: voxel kernel {b['voxel_kernel'] / 1e6:.2f} MB, "
        f"owner fill {b['owner_memset'] / 1e6:.2f} MB, window kernel {b['window_kernel'] / 1e6:.2f} MB; "
        f"{b['atomics']:,.0f} atomics per sample.",
        "",
        "Projections in the same model (not implemented): lanes kept busy by a flattened per-lane step loop "
        f"{m['projections']['balanced_lanes']['samples_per_s']:,.0f} samples/s; that plus owners stamped in "
        "shared-memory slabs (no global atomics, no fill for unshuffled samples) "
        f"{m['projections']['balanced_lanes_and_slab_owners']['samples_per_s']:,.0f} samples/s.",
        "",
        "Sensitivity (samples/s, old / new path, one assumption changed at a time): "
        + "; ".join(
            ", ".join(f"{k} {v:g}" for k, v in r["change"].items()) + f": {r['old']:,.0f} / {r['new']:,.0f}"
            for r in m.get("sensitivity", [])
        )
        + ".",
        "",
        f"Target: modelled >= 1,000,000 samples/s with the new path: {n['samples_per_s']:,.0f}, "
        f"{'MET' if n['samples_per_s'] >= 1e6 else 'NOT MET'} (old path: {o['samples_per_s']:,.0f}).",
        "",
    ]
    return "\n".join(out)


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
    ap.add_argument("--gpu-model-only", action="store_true", help="only the GPU model (seconds; no timing)")
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
    model = gpu_model(seed=args.seed)
    # how far the answer moves with the least certain assumptions (one changed at a time)
    model["sensitivity"] = [
        {
            "change": change,
            **{
                path: gpu_model(seed=args.seed, stat_samples=2, a=dict(GPU_ASSUMPTIONS, **change))[path][
                    "samples_per_s"
                ]
                for path in ("old", "new")
            },
        }
        for change in (
            {"l2_atomics_per_s": 1.0e11},
            {"l2_atomics_per_s": 4.0e11},
            {"lat_l2": 500},
            {"lat_shared": 20, "lat_philox": 100},
            {"voxel_instr_per_group": 600},
        )
    ]
    print(gpu_markdown(model), flush=True)
    records = [] if args.gpu_model_only else measure(engines, shapes, args.seed, args.budget, args.min_reps)
    meta["elapsed_s"] = round(time.perf_counter() - t0, 1)
    meta["load_average_end"] = load_average()
    doc = {"meta": meta, "records": records, "targets": targets(records), "gpu_model": model}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "work_model.json"), "w") as f:
        json.dump(doc, f, indent=1)
    with open(os.path.join(args.out, "work_model.md"), "w") as f:
        f.write((markdown(doc) if records else "# genesis-ops work model\n\n") + "\n" + gpu_markdown(model))
    print(f"# wrote {args.out}/work_model.json and work_model.md ({meta['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
