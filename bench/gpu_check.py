#!/usr/bin/env python3
"""One command that proves the GPU path on a machine with a GPU; a dry run without one.

    python3 bench/gpu_check.py [--prebuilt WHEEL_OR_SITE] [OUT_DIR]   # default bench/results/gpu_check

Run it from a clone of the repository with the Python that holds the machine's CUDA torch (it
needs torch, pytest, hypothesis and numpy; matplotlib for a plot; no nibabel, no network). With
--prebuilt it installs a wheel built elsewhere (the CI wheel holds sm_90) with
`pip install --no-deps --no-index --target WORK/site WHEEL`, or uses a folder that already holds
an installed genesis_ops (a site folder), so the GPU machine needs no nvcc, cmake,
scikit-build-core, ninja or Python headers. Without it, or when the prebuilt one does not install
or import, it builds there as before (nvcc of torch's CUDA major version, scikit-build-core,
ninja): `pip install --no-build-isolation --no-deps --no-index --target WORK/site .` with
GENESIS_WITH_CUDA=ON and CUDAARCHS = the GPU's compute capability.

The steps run in the order of what their numbers are worth, each with its own time cap (and
never past the whole budget), each writing OUT_DIR/gpu_check.json and gpu_check.md again when it
finishes, so a run killed at any point leaves every finished step's results:

  env         the GPU, torch, nvcc and compute-sanitizer seen;
  build       the prebuilt wheel or site, else the build; every later step imports it (checked);
  tests       pytest on tests/test_cuda*.py: CUDA against the CPU and the reference, CUDA graphs
              with tensor seeds (junit XML in OUT_DIR);
  fused       bench/transforms.py: the fused pipeline and clone at the target shape, 1x64x64x32,
              batch 1024, float32 (OUT_DIR/bench/fused/);
  train_step  bench/train_step.py on cuda: the paper's U-Net (width 32), batch 6 of 1x64x64x32,
              AMP bf16: transforms as a share of a training step, and the training loop's
              samples/s with the transforms on the device (the end-to-end figure of this tree);
  transforms  bench/transforms.py on cuda and cpu: clone, the single ops and the fused pipeline,
              batch 32 to 1024 at 1x64x64x32, and 96^3 and 160^3, float32 and bfloat16;
  work_model  bench/work_model.py --quick: the emulated GPU work per voxel, beside the GPU's times;
  memcheck, racecheck, initcheck, synccheck
              compute-sanitizer on a handful of small CUDA tests (SANITIZER_TESTS), with torch's
              caching allocator off and GENESIS_CUDA_SEPARATE_SCRATCH=1 (each scratch piece its own
              allocation), so that an access outside a buffer is outside an allocation. A
              sanitizer that runs out of time is "incomplete", one that is missing or refuses the
              device "unavailable"; neither is a failure.

Without a GPU (torch.cuda.is_available() is False) it says so, installs or builds (with CUDA for
sm_90 when torch is a CUDA build and nvcc is there, else CPU only), runs the CUDA tests (they
skip), skips the sanitizers and runs the CPU half of the benchmarks in a quick mode: this is the
dry run that CI runs (with --prebuilt and the CI wheel). nibabel is made unimportable in every
step (the lent GPU machines have none), so a step that starts needing it fails here first.

Exit status: 0 when no step failed (skipped, incomplete and unavailable steps are not failures).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_BUDGET_S = 450  # under 8 minutes on a bare machine, start-up included
# Each step's cap in seconds (a step also stops at the whole budget). In running order.
STEP_CAPS = {
    "env": 60,
    "build": 300,  # the fallback build; installing a prebuilt wheel takes seconds
    "tests": 150,
    "fused": 60,
    "train_step": 90,
    "transforms": 150,
    "work_model": 45,
    "memcheck": 90,
    "racecheck": 60,
    "initcheck": 45,
    "synccheck": 45,
}
# About six small tests run under each compute-sanitizer tool: the fused pipeline and the shuffle
# at a small odd 3D shape, the single-op (no target) branch, the given-curve (bezier) path, the
# masked and mask-only kernels, and a CUDA graph replayed with a new tensor seed.
SANITIZER_FILES = ("test_cuda.py", "test_cuda_masks.py", "test_cuda_seeds.py")
SANITIZER_TESTS = (
    "(test_cuda_equals_reference and float32 and 3x2x17x9x23 and (models_genesis or local_shuffle)) "
    "or (test_single_op_is_its_pipeline_stage and float32) "
    "or (test_bezier_equals_cpu_and_reference and float32 and not 2.0) "
    "or (test_cuda_masks_equal_cpu and shape1) "
    "or test_cuda_graph_replays_with_the_new_seed"
)
SANITIZER_FLAGS = {
    "memcheck": ["--leak-check", "no"],
    "racecheck": [],
    "initcheck": [],
    "synccheck": [],
}
ENV_PROBE = r"""
import json, os, sys
d = {"python": sys.version.split()[0], "executable": sys.executable}
try:
    import torch
    d.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
             cpu_threads=torch.get_num_threads())
    if torch.cuda.is_available():
        d.update(device_count=torch.cuda.device_count(), device_name=torch.cuda.get_device_name(0),
                 capability=list(torch.cuda.get_device_capability(0)),
                 memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
except Exception as exc:
    d["torch_error"] = f"{type(exc).__name__}: {exc}"
for name in ("scikit_build_core", "ninja", "pytest", "hypothesis", "numpy", "matplotlib", "nibabel"):
    try:
        mod = __import__(name)
        d[name] = getattr(mod, "__version__", "present")
    except Exception as exc:
        d[name] = f"missing ({exc})"
print(json.dumps(d))
"""
BUILD_PROBE = r"""
import json, genesis_ops
print(json.dumps(dict(genesis_ops.build_info(), file=genesis_ops.__file__)))
"""


class Check:
    """The run: its folders, environment, time budget and the steps' results."""

    def __init__(self, out: str, python: str, budget_s: float, prebuilt: str | None = None):
        self.out, self.python = os.path.abspath(out), python
        self.logs = os.path.join(self.out, "logs")
        self.bench = os.path.join(self.out, "bench")
        os.makedirs(self.logs, exist_ok=True)
        self.work = tempfile.mkdtemp(prefix="gpu_check_")
        self.site = os.path.join(self.work, "site")
        self.prebuilt = os.path.abspath(prebuilt) if prebuilt else None
        if self.prebuilt and os.path.isdir(self.prebuilt):
            self.site = self.prebuilt  # a folder holding an installed genesis_ops: imported as is
        self.deadline = time.monotonic() + budget_s
        self.steps: list[dict] = []
        self.info: dict = {}
        self.gpu = False
        self.built = False
        # every step: unbuffered output, and nibabel unimportable (the lent GPU machines have none)
        shim = os.path.join(self.work, "no_nibabel", "nibabel")
        os.makedirs(shim)
        with open(os.path.join(shim, "__init__.py"), "w") as f:
            f.write('raise ImportError("nibabel is blocked by bench/gpu_check.py: GPU machines may not have it")\n')
        self.env = dict(
            os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", PIP_DISABLE_PIP_VERSION_CHECK="1"
        )
        self.env["PYTHONPATH"] = os.pathsep.join(
            [self.site, os.path.dirname(shim)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
        )

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def time_for(self, cap: float, reserve: float = 0.0) -> float:
        """Seconds a step may take: at most cap, leaving reserve for the steps after it."""
        return min(cap, self.left() - reserve)

    def cap(self, name: str) -> float:
        """The step's own cap, cut to what is left of the whole budget."""
        return self.time_for(STEP_CAPS[name])

    def run(self, name: str, cmd: list[str], timeout: float, env: dict | None = None, cwd: str = ROOT) -> dict:
        """Run cmd with its output in logs/NAME.log; kill its whole process group on timeout."""
        log = os.path.join(self.logs, f"{name}.log")
        timeout = max(1.0, timeout)  # the steps size their timeouts from the budget left
        t0 = time.monotonic()
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            start = f.tell()
            proc = subprocess.Popen(
                cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env or self.env, start_new_session=True
            )
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = None
                f.write(f"\n### killed after {timeout:.0f} s\n")
        with open(log, errors="replace") as f:
            f.seek(start)
            text = f.read()  # this command's output only (a log can hold several commands)
        return {
            "rc": rc,
            "seconds": round(time.monotonic() - t0, 1),
            "timed_out": rc is None,
            "output": text,
            "command": " ".join(cmd),
            "log": os.path.relpath(log, self.out),
            "timeout_s": round(timeout),
        }

    def step(self, name: str, fn) -> dict:
        print(f"\n== {name} ({self.left():.0f} s of the budget left) ==", flush=True)
        t0 = time.monotonic()
        try:
            res = fn()
        except Exception as exc:  # a bug in a step must not stop the others
            res = {"status": "failed", "note": f"{type(exc).__name__}: {exc}"}
        res = {"name": name, "seconds": round(time.monotonic() - t0, 1), **res}
        res.pop("output", None)
        self.steps.append(res)
        print(f"   {res['status'].upper()} in {res['seconds']} s: {res.get('note', '')}", flush=True)
        return res


def status_of(r: dict, what: str) -> dict:
    if r["timed_out"]:
        return {"status": "failed", "note": f"{what}: timed out after {r['timeout_s']} s"}
    if r["rc"] != 0:
        tail = r["output"].strip().splitlines()[-15:]
        print("   " + "\n   ".join(tail), flush=True)
        return {"status": "failed", "note": f"{what}: exit status {r['rc']} (see {r['log']})"}
    return {"status": "ok", "note": what}


def find_tool(name: str, nvcc: str | None = None) -> str | None:
    """A CUDA tool on PATH, next to nvcc (compute-sanitizer often is not on PATH) or in the
    toolkit's usual places."""
    found = shutil.which(name)
    if found:
        return found
    dirs = []
    if nvcc:
        bindir = os.path.dirname(os.path.realpath(nvcc))
        dirs += [bindir, os.path.join(os.path.dirname(bindir), name)]
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            dirs += [os.path.join(home, "bin"), os.path.join(home, name)]
    for d in dirs:
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


# ---------------------------------------------------------------------------------------------
# The steps
# ---------------------------------------------------------------------------------------------


def step_env(c: Check) -> dict:
    r = c.run("env", [c.python, "-P", "-c", ENV_PROBE], 60)
    lines = [ln for ln in r["output"].splitlines() if ln.startswith("{")]
    if r["rc"] != 0 or not lines:
        return status_of(r, "probing python") if r["rc"] else {"status": "failed", "note": "no probe output"}
    c.info = json.loads(lines[-1])
    c.gpu = bool(c.info.get("cuda_available"))
    nvcc = os.environ.get("CUDACXX") or find_tool("nvcc")
    c.info["nvcc"] = nvcc
    c.info["compute_sanitizer"] = find_tool("compute-sanitizer", nvcc)
    if shutil.which("nvidia-smi"):
        c.run("env", ["nvidia-smi"], 30)
    if nvcc:
        out = c.run("env", [nvcc, "--version"], 30)["output"]
        c.info["nvcc_version"] = next((ln for ln in out.splitlines() if "release" in ln), "").strip()
    if c.gpu:
        note = (
            f"GPU: {c.info.get('device_name')} (sm_{''.join(map(str, c.info.get('capability', [])))}), "
            f"torch {c.info.get('torch')} (CUDA {c.info.get('torch_cuda')})"
        )
    else:
        note = f"NO GPU (torch {c.info.get('torch')}, torch.cuda.is_available() is False): dry run; GPU numbers pending"
    return {"status": "ok", "note": note, "info": c.info}


def probe_build(c: Check, res: dict, cuda_expected: bool) -> dict:
    """Imports what was installed into c.site, in a fresh process: it must be that copy, and hold
    CUDA kernels where they were expected (always where a GPU is present)."""
    p = c.run("build", [c.python, "-P", "-c", BUILD_PROBE], 60)
    lines = [ln for ln in p["output"].splitlines() if ln.startswith("{")]
    if p["rc"] != 0 or not lines:
        return {**res, "status": "failed", "note": "the build does not import (see the log)"}
    info = json.loads(lines[-1])
    res["build_info"] = info
    if not info["file"].startswith(c.site):
        return {**res, "status": "failed", "note": f"imported genesis_ops from {info['file']}, not the build"}
    if (cuda_expected or c.gpu) and not info.get("cuda_kernels"):
        return {**res, "status": "failed", "note": "the build holds no CUDA kernels"}
    c.built = True
    return {**res, "status": "ok"}


def install_prebuilt(c: Check) -> dict:
    """--prebuilt: a wheel, installed into the scratch site without dependencies or an index, or
    a site folder that already holds genesis_ops (used as it is)."""
    if os.path.isdir(c.prebuilt):
        res = {"status": "ok", "prebuilt": c.prebuilt}
    elif c.prebuilt.endswith(".whl") and os.path.isfile(c.prebuilt):
        cmd = [c.python, "-m", "pip", "install", "--no-deps", "--no-index", "--no-cache-dir", "--target", c.site]
        r = c.run("build", cmd + [c.prebuilt], c.time_for(120))
        res = {**status_of(r, "pip install (prebuilt wheel)"), "prebuilt": c.prebuilt, "log": r["log"]}
        if res["status"] != "ok":
            return res
    else:
        return {"status": "failed", "note": f"--prebuilt {c.prebuilt}: not a .whl file or a folder"}
    res = probe_build(c, res, cuda_expected=c.gpu)
    if res["status"] == "ok":
        info = res["build_info"]
        res["note"] = (
            f"prebuilt {os.path.basename(c.prebuilt)}: CUDA kernels {info.get('cuda_kernels')} for "
            f"{info.get('cuda_archs')} (nvcc {info.get('nvcc_version')}), built against torch "
            f"{info.get('built_with_torch')}"
        )
    return res


def step_build(c: Check) -> dict:
    fallback = ""
    if c.prebuilt:
        res = install_prebuilt(c)
        if res["status"] == "ok":
            return res
        # the build below is the fallback: a lent GPU is not wasted on a bad wheel
        fallback = f"prebuilt failed ({res.get('note')}); built here instead: "
        if c.site == c.prebuilt:
            c.site = os.path.join(c.work, "site")
            c.env["PYTHONPATH"] = os.pathsep.join([c.site] + c.env["PYTHONPATH"].split(os.pathsep)[1:])
    cuda_build = bool(c.info.get("torch_cuda")) and bool(c.info.get("nvcc"))
    if c.gpu and not cuda_build:
        return {
            "status": "failed",
            "note": fallback + "a GPU is present but torch is not a CUDA build or nvcc is missing",
        }
    env = dict(c.env, CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
    if cuda_build:
        env.setdefault("CUDACXX", c.info["nvcc"])  # CMake finds it even when it is not on PATH
        cap = c.info.get("capability")
        env.setdefault("CUDAARCHS", f"{cap[0]}{cap[1]}" if cap else "90")
        env["GENESIS_WITH_CUDA"] = "ON"
    else:
        env["GENESIS_WITH_CUDA"] = "OFF"
    cmd = [
        c.python,
        "-m",
        "pip",
        "install",
        "--no-build-isolation",
        "--no-deps",
        "--no-index",
        "--no-cache-dir",
        "--target",
        c.site,
        f"-Cbuild-dir={os.path.join(c.work, 'build')}",
        ROOT,
    ]
    r = c.run("build", cmd, c.cap("build"), env=env)
    res = status_of(r, "pip install")
    res.update(command=r["command"], log=r["log"], cuda_archs=env.get("CUDAARCHS"))
    if res["status"] != "ok":
        return {**res, "note": fallback + res["note"]}
    res = probe_build(c, res, cuda_build)
    if res["status"] != "ok":
        return {**res, "note": fallback + res["note"]}
    info = res["build_info"]
    res["note"] = fallback + (
        f"CUDA kernels for {info.get('cuda_archs')} (nvcc {info.get('nvcc_version')}) against torch "
        f"{info.get('built_with_torch')}"
        if cuda_build
        else "CPU-only build: torch is not a CUDA build or nvcc is missing (CUDA build skipped)"
    )
    return res


def junit_counts(path: str) -> dict:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    keys = ("tests", "failures", "errors", "skipped")
    return {k: sum(int(s.get(k, 0)) for s in suites) for k in keys}


def cuda_test_files() -> list[str]:
    return sorted(glob.glob(os.path.join(ROOT, "tests", "**", "test_cuda*.py"), recursive=True))


def pytest_cmd(c: Check, files: list[str], junit: str, extra: list[str] = ()) -> list[str]:
    # -P: the repository root is not put on sys.path, so the unbuilt source directory cannot
    # shadow the build under test
    return [
        c.python,
        "-P",
        "-m",
        "pytest",
        *files,
        "-rs",
        f"--junitxml={junit}",
        "-o",
        f"cache_dir={os.path.join(c.work, 'pytest_cache')}",
        *extra,
    ]


def step_tests(c: Check) -> dict:
    if not c.built:
        return {"status": "skipped", "note": "no build to test"}
    files = cuda_test_files()
    junit = os.path.join(c.out, "junit_cuda.xml")
    r = c.run("tests", pytest_cmd(c, files, junit), c.cap("tests"))
    counts = junit_counts(junit)
    res = status_of(
        r,
        f"{counts.get('tests', '?')} tests: {counts.get('failures', '?')} failed, "
        f"{counts.get('errors', '?')} errors, {counts.get('skipped', '?')} skipped",
    )
    if res["status"] == "ok" and c.gpu and counts.get("tests") and counts.get("skipped") == counts.get("tests"):
        res = {"status": "failed", "note": "a GPU is present but every CUDA test skipped"}
    return {**res, "files": [os.path.relpath(f, ROOT) for f in files], "counts": counts, "log": r["log"]}


def sanitizer_step(tool: str):
    def step(c: Check) -> dict:
        if not c.gpu:
            return {"status": "skipped", "note": "no GPU"}
        if not c.built:
            return {"status": "skipped", "note": "no build to check"}
        san = c.info.get("compute_sanitizer")
        if not san:
            return {"status": "unavailable", "note": "compute-sanitizer not found (PATH, next to nvcc, CUDA_HOME)"}
        timeout = c.cap(tool)
        if timeout < 20:
            return {"status": "incomplete", "note": f"{tool}: not started, {c.left():.0f} s left of the budget"}
        junit = os.path.join(c.work, f"junit_{tool}.xml")
        # No caching allocator: each tensor its own cudaMalloc; and each scratch piece its own
        # tensor: so the sanitizer sees the true bounds of every buffer.
        env = dict(c.env, PYTORCH_NO_CUDA_MEMORY_CACHING="1", GENESIS_CUDA_SEPARATE_SCRATCH="1")
        cmd = [san, "--tool", tool, "--error-exitcode", "86", "--print-limit", "50", *SANITIZER_FLAGS[tool]]
        cmd += pytest_cmd(
            c, [os.path.join(ROOT, "tests", f) for f in SANITIZER_FILES], junit, ["-k", SANITIZER_TESTS, "-x"]
        )
        r = c.run(tool, cmd, timeout, env=env)
        out, counts = r["output"], junit_counts(junit)
        summary = [ln.strip(" =") for ln in out.splitlines() if "ERROR SUMMARY" in ln or "RACECHECK SUMMARY" in ln]
        if r["timed_out"]:
            # out of time is not a finding: what ran is in the log
            return {
                "status": "incomplete",
                "note": f"{tool}: stopped after {r['timeout_s']} s; {'; '.join(summary) or 'no summary yet'}",
                "log": r["log"],
            }
        refused = any(
            s in out
            for s in (
                "Device not supported",
                "device not supported",
                "not supported on this",
                "Unable to initialize",
                "error 999",
            )
        )
        all_skipped = bool(counts.get("tests")) and counts.get("skipped") == counts.get("tests")
        if refused or (r["rc"] == 0 and all_skipped):
            return {
                "status": "unavailable",
                "note": f"{tool}: the sanitizer refused the device or CUDA did not start under it (see {r['log']})",
                "log": r["log"],
            }
        res = status_of(
            r,
            f"{tool}: {'; '.join(summary) or 'no summary line'}; "
            f"{counts.get('tests', '?')} tests, {counts.get('failures', '?')} failed",
        )
        if res["status"] == "ok" and not counts.get("tests"):
            res = {"status": "failed", "note": f"{tool}: no test ran under the sanitizer (see {r['log']})"}
        return {**res, "summary": summary, "counts": counts, "log": r["log"]}

    return step


def bench_cmd(c: Check, script: str, args: list[str], out: str | None = None) -> list[str]:
    return [c.python, os.path.join(ROOT, "bench", script), "--out", out or c.bench, *args]


def step_fused(c: Check) -> dict:
    """The number the GPU is lent for first: the fused pipeline's samples/s at the target shape,
    beside clone (the bandwidth floor), in a few seconds."""
    if not c.built:
        return {"status": "skipped", "note": "no build to measure"}
    limit = max(20.0, c.cap("fused") - 25)  # start-up and the report stay inside the cap
    device = "cuda" if c.gpu else "cpu"
    batch = "1024" if c.gpu else "32"
    args = ["--devices", device, "--shapes", "1x64x64x32", "--batches", batch, "--dtypes", "float32"]
    args += ["--ops", "clone,models_genesis", "--impls", "torch,genesis_ops", "--budget", "0.5" if c.gpu else "0.1"]
    args += ["--max-reps", "20" if c.gpu else "3", "--time-limit", f"{limit:.0f}", "--no-plot"]
    r = c.run("fused", bench_cmd(c, "transforms.py", args, os.path.join(c.bench, "fused")), c.cap("fused"))
    res = status_of(r, f"bench/fused/transforms.md: fused pipeline, 1x64x64x32, batch {batch}, {device}")
    return {**res, "log": r["log"]}


def step_transforms(c: Check) -> dict:
    if not c.built:
        return {"status": "skipped", "note": "no build to measure"}
    # the grid stops starting measurements at the limit, inside the step's cap
    limit = max(30.0, c.cap("transforms") - 30)
    if c.gpu:
        args = [
            "--devices",
            "cuda,cpu",
            "--shapes",
            "1x64x64x32,1x96x96x96,1x160x160x160",
            "--batches",
            "32,128,512,1024",
            "--batches-at",
            "1x96x96x96=8,32",
            "--batches-at",
            "1x160x160x160=4,16",
            "--dtypes",
            "float32,bfloat16",
            "--impls",
            "torch,genesis_ops",
            "--budget",
            "0.25",
            "--max-reps",
            "20",
            "--time-limit",
            f"{limit:.0f}",
        ]
    else:
        args = [
            "--devices",
            "cpu",
            "--shapes",
            "1x64x64x32",
            "--batches",
            "32",
            "--dtypes",
            "float32",
            "--impls",
            "torch,genesis_ops",
            "--budget",
            "0.1",
            "--max-reps",
            "5",
            "--time-limit",
            f"{limit:.0f}",
        ]
    r = c.run("transforms", bench_cmd(c, "transforms.py", args), c.cap("transforms"))
    res = status_of(r, "bench/transforms.md" + ("" if c.gpu else " (CPU half, quick)"))
    return {**res, "log": r["log"]}


def step_train_step(c: Check) -> dict:
    if not c.built:
        return {"status": "skipped", "note": "no build to measure"}
    if c.gpu:
        args = [
            "--device",
            "cuda",
            "--width",
            "32",
            "--batch",
            "6",
            "--amp",
            "bf16",
            "--steps",
            "20",
            "--loop-steps",
            "30",
            "--modes",
            "model_only,device,workers_reference",
        ]
    else:
        args = [
            "--device",
            "cpu",
            "--quick",
            "--width",
            "2",
            "--batch",
            "2",
            "--shape",
            "1x32x32x16",
            "--amp",
            "bf16",
            "--steps",
            "1",
            "--loop-steps",
            "1",
            "--modes",
            "model_only,device",
        ]
    r = c.run("train_step", bench_cmd(c, "train_step.py", args), c.cap("train_step"))
    res = status_of(r, "bench/train_step_" + ("gpu.md" if c.gpu else "cpu.md (CPU, tiny: the code path only)"))
    return {**res, "log": r["log"]}


def step_work_model(c: Check) -> dict:
    if not c.built:
        return {"status": "skipped", "note": "no build to measure"}
    r = c.run(
        "work_model",
        bench_cmd(c, "work_model.py", ["--quick", "--budget", "0.5"]),
        c.cap("work_model"),
    )
    return {**status_of(r, "bench/work_model.md (quick)"), "log": r["log"]}


# In the order of what their results are worth (STEP_CAPS holds each one's time).
STEPS = [
    ("env", step_env),
    ("build", step_build),
    ("tests", step_tests),
    ("fused", step_fused),
    ("train_step", step_train_step),
    ("transforms", step_transforms),
    ("work_model", step_work_model),
    ("memcheck", sanitizer_step("memcheck")),
    ("racecheck", sanitizer_step("racecheck")),
    ("initcheck", sanitizer_step("initcheck")),
    ("synccheck", sanitizer_step("synccheck")),
]


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _load(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def key_numbers(c: Check) -> dict:
    """The figures PERFORMANCE.md needs, collected from the benchmarks' JSON."""
    out: dict = {}
    fu = _load(os.path.join(c.bench, "fused", "transforms.json"))
    if fu:
        out["fused_target"] = [
            {k: r[k] for k in ("device", "shape", "dtype", "batch", "ms_per_sample", "samples_per_s")}
            for r in fu["records"]
            if r["op"] == "models_genesis" and r["impl"] == "genesis_ops"
        ]
    tr = _load(os.path.join(c.bench, "transforms.json"))
    if tr:
        out["targets"] = tr.get("targets", [])
        recs = [r for r in tr["records"] if r["impl"] in ("genesis_ops", "torch")]
        out["fused"] = [
            {k: r[k] for k in ("device", "shape", "dtype", "batch", "ms_per_sample", "samples_per_s")}
            for r in recs
            if r["op"] == "models_genesis"
        ]
        out["vs_clone"] = [
            {k: r[k] for k in ("what", "device", "shape", "dtype", "batch", "time_ratio")}
            for r in tr.get("ratios", [])
            if "time_ratio" in r and r["device"].startswith("cuda")
        ]
        out["vs_cpu"] = [
            {k: r[k] for k in ("what", "shape", "dtype", "batch", "speedup")}
            for r in tr.get("ratios", [])
            if r["what"].endswith("vs cpu")
        ]
        out["transforms_skipped"] = tr.get("skipped", [])
    ts = _load(os.path.join(c.bench, f"train_step_{'gpu' if c.gpu else 'cpu'}.json"))
    if ts:
        out["train_step"] = ts["records"][0]
        out["train_step_summary"] = ts.get("summary", [])
    wm = _load(os.path.join(c.bench, "work_model.json"))
    if wm:
        out["work_model"] = [
            {k: r[k] for k in ("engine", "mode", "shape", "cpu_ns_per_voxel", "ratio_to_base")} for r in wm["records"]
        ]
    return out


def markdown(doc: dict) -> str:
    i, k = doc["env"], doc["numbers"]
    lines = [
        "# genesis-ops GPU check",
        "",
        f"- when: {doc['time_utc']}; wall time {doc['seconds']} s; exit status {doc['exit_status']}",
        f"- GPU: **{i.get('device_name', 'none: dry run, GPU numbers pending')}**"
        + (
            f", sm_{''.join(map(str, i['capability']))}, {i.get('memory_gib')} GiB, {i.get('device_count')} device(s)"
            if i.get("capability")
            else ""
        ),
        f"- python {i.get('python')}, torch {i.get('torch')} (CUDA {i.get('torch_cuda')}), {i.get('nvcc_version')}, "
        f"compute-sanitizer: {i.get('compute_sanitizer')}",
        f"- command: `{doc['command']}`",
        "",
        "## Steps",
        "",
        "| step | status | seconds | note |",
        "|---|---|---:|---|",
    ]
    for s in doc["steps"]:
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']} | {s.get('note', '')} |")
    if k.get("fused_target"):
        lines += ["", "## Fused pipeline at the target shape (first benchmark step)", ""]
        for r in k["fused_target"]:
            lines.append(
                f"- {r['device']} {r['shape']} {r['dtype']} batch {r['batch']}: **{r['samples_per_s']:.4g} samples/s** "
                f"({r['ms_per_sample']:.4g} ms per sample; target on an H200: >= 1,000,000 samples/s)"
            )
    gpu_targets = [t for t in k.get("targets", []) if t["device"].startswith("cuda")]
    lines += ["", "## GPU targets", ""]
    if not gpu_targets:
        lines.append(
            "Not measured: "
            + (
                "no GPU in this run (GPU numbers pending)."
                if not doc["gpu"]
                else "see the transforms step and bench/transforms.md."
            )
        )
    else:
        lines += ["| target | value | met |", "|---|---:|---|"]
        for t in gpu_targets:
            met = "" if t["met"] is None else ("yes" if t["met"] else "**no**")
            lines.append(f"| {t['target']} | {t['value']:.4g} | {met} |")
    ts = k.get("train_step")
    if ts:
        lines += [
            "",
            "## One training step (median)",
            "",
            f"{ts['device']}, width {ts['width']}, batch {ts['batch']} of {ts['shape']}, AMP {ts.get('amp')}: "
            f"transforms {ts['transform_ms']:.3f} ms, model {ts['model_ms']:.2f} ms, "
            f"transforms = **{100 * ts['transform_fraction']:.3f}%** of transforms + model "
            "(target on a GPU: < 2%)",
        ]
    if k.get("fused"):
        lines += [
            "",
            "## Fused pipeline",
            "",
            "| device | shape | dtype | batch | ms per sample | samples/s |",
            "|---|---|---|---:|---:|---:|",
        ]
        for r in k["fused"]:
            lines.append(
                f"| {r['device']} | {r['shape']} | {r['dtype']} | {r['batch']} | {r['ms_per_sample']:.4g} | "
                f"{r['samples_per_s']:.4g} |"
            )
    for key, title, col, unit in (
        (
            "vs_clone",
            "GPU single ops against clone (time ratio; <= 2 is >= 50% of clone's bandwidth)",
            "time_ratio",
            "x the time of clone",
        ),
        ("vs_cpu", "GPU against the CPU path (same batch and dtype)", "speedup", "x faster"),
    ):
        if k.get(key):
            lines += ["", f"## {title}", "", "| what | shape | dtype | batch | value |", "|---|---|---|---:|---:|"]
            for r in k[key]:
                lines.append(f"| {r['what']} | {r['shape']} | {r['dtype']} | {r['batch']} | {r[col]:.3g}{unit} |")
    if k.get("work_model"):
        lines += [
            "",
            "## Work model (emulated CUDA bodies and the CPU engine, 1 thread)",
            "",
            "| engine | mode | shape | CPU ns per voxel | ratio |",
            "|---|---|---|---:|---:|",
        ]
        for r in k["work_model"]:
            lines.append(
                f"| {r['engine']} | {r['mode']} | {r['shape']} | {r['cpu_ns_per_voxel']:.1f} | "
                f"{r['ratio_to_base']:.2f}x |"
            )
    lines += ["", "Details: `bench/transforms.md`, `bench/train_step_*.md`, `bench/work_model.md`, `logs/`.", ""]
    return "\n".join(lines)


def write_report(c: Check, t0: float, done: bool) -> dict:
    """gpu_check.json and .md from the steps finished so far: written after every step, so that a
    run killed at any point leaves the finished steps' results."""
    failed = [s["name"] for s in c.steps if s["status"] == "failed"]
    finished = [s["name"] for s in c.steps]
    doc = {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.monotonic() - t0, 1),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "complete": done,
        "not_run_yet": [name for name, _ in STEPS if name not in finished],
        "gpu": c.gpu,
        "env": c.info,
        "steps": c.steps,
        "failed": failed,
        "exit_status": 1 if failed else 0,
        "numbers": key_numbers(c),
    }
    for name, text in (("gpu_check.json", json.dumps(doc, indent=1)), ("gpu_check.md", markdown(doc))):
        tmp = os.path.join(c.out, name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(c.out, name))  # a kill mid-write leaves the previous report
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "out",
        nargs="?",
        default=os.path.join(ROOT, "bench", "results", "gpu_check"),
        help="results folder (default bench/results/gpu_check)",
    )
    ap.add_argument(
        "--budget", type=float, default=TOTAL_BUDGET_S, help=f"seconds for all steps (default {TOTAL_BUDGET_S})"
    )
    ap.add_argument(
        "--prebuilt",
        metavar="WHEEL_OR_SITE",
        default=None,
        help="install this wheel (or use this folder holding an installed genesis_ops) instead of building; "
        "the build stays the fallback",
    )
    ap.add_argument("--keep-work", action="store_true", help="keep the scratch folder (the build) and print its path")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    c = Check(args.out, sys.executable, args.budget, args.prebuilt)
    print(f"# genesis-ops GPU check: results in {c.out}, scratch in {c.work}")
    try:
        for name, fn in STEPS:
            c.step(name, lambda fn=fn: fn(c))
            write_report(c, t0, done=False)
    finally:
        if args.keep_work:
            print(f"# scratch kept: {c.work}")
        else:
            shutil.rmtree(c.work, ignore_errors=True)  # a prebuilt site folder is the caller's: outside it
    doc = write_report(c, t0, done=True)
    failed = doc["failed"]
    print(
        f"\n# {'GPU check' if c.gpu else 'dry run (no GPU; GPU numbers pending)'} done in {doc['seconds']} s: "
        + (f"FAILED steps: {', '.join(failed)}" if failed else "no step failed")
        + f"; wrote {c.out}/gpu_check.md and gpu_check.json"
    )
    return doc["exit_status"]


if __name__ == "__main__":
    sys.exit(main())
