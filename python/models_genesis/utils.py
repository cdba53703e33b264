"""Small helpers shared by pretraining, fine-tuning and the command line."""

from __future__ import annotations

import enum
import json
import os
import sys
import time
from typing import Any

import torch
import torch.distributed as dist


from .atomic import replacing
from .errors import UsageError  # noqa: F401  (importable from here, as before)


def resolve_device(device: str | None) -> torch.device:
    """``auto``/None -> CUDA when available, else CPU. Validates explicit choices."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise UsageError(f"--device: not a device: {device!r} ({e})") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            "--device cuda: CUDA is not available on this machine (torch "
            f"{torch.__version__}, built with CUDA: {torch.version.cuda is not None})"
        )
    if d.type not in ("cpu", "cuda"):
        raise UsageError(f"--device: expected cpu or cuda, got {device!r}")
    return d


def append_jsonl(path: str, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def rewrite_jsonl(path: str, records) -> None:
    """Replace ``path`` atomically with one JSON line per record (a resumed run's metrics: the
    checkpoint's history is authoritative, since a kill may fall between the two writes)."""
    with replacing(path) as tmp, open(tmp, "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")


def read_jsonl(path: str):
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass  # a line cut by a kill
    return out


def rng_state() -> dict[str, Any]:
    st = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    if "torch" in st:
        torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(st["cuda"])
        except (RuntimeError, IndexError):
            pass  # different number of GPUs; the data streams are re-derived from the seed anyway


class SeedStream(enum.IntEnum):
    """The training layer's random streams, each drawn from ``derive_seed(seed, ..., stream)``: one
    number per purpose, so that no two purposes share a stream and a resumed run redraws exactly
    what it would have drawn (the numbers are part of every run's results: never renumber)."""

    MODEL_INIT = 1  # pretraining: (seed, rank, MODEL_INIT) seeds torch's global generator
    TRAIN_CUBES = 2  # pretraining: (seed, rank, epoch, TRAIN_CUBES) cube positions
    TRAIN_CORRUPTION = 3  # pretraining: (seed, rank, epoch, TRAIN_CORRUPTION) per-batch op seeds
    VAL_CUBES = 7  # pretraining: (seed, VAL_CUBES) the fixed validation cubes
    VAL_CORRUPTION = 8  # pretraining: (seed, VAL_CORRUPTION) their fixed corruption
    FINETUNE_INIT = 11  # fine-tuning: (seed, FINETUNE_INIT) seeds torch's global generator
    SEG_CUBES = 12  # segmentation: training cube positions
    SEG_FLIPS = 13  # segmentation: per-batch flip seeds
    CLS_DRAWS = 14  # classification: the stratified split, then the training cases and crops


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64-style mixing), for per-rank/per-epoch streams."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) & 0xFFFFFFFFFFFFFFFF
        x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x = z ^ (z >> 31)
    return x & 0x7FFFFFFFFFFFFFFF


class DistInfo:
    """Rank/world size, set up from torchrun's environment variables."""

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        self.initialised_here = False

    @classmethod
    def single(cls) -> DistInfo:
        """A single process, whatever the environment says (for tasks that do not run under DDP)."""
        d = cls.__new__(cls)
        d.world_size, d.rank, d.local_rank, d.enabled, d.initialised_here = 1, 0, 0, False, False
        return d

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def init(self, device_type: str) -> None:
        if self.enabled and not dist.is_initialized():
            backend = "nccl" if device_type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
            self.initialised_here = True

    def barrier(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.barrier()

    def mean(self, value: float, device: torch.device) -> float:
        if not (self.enabled and dist.is_initialized()):
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def broadcast_flag(self, flag: bool, device: torch.device) -> bool:
        if not (self.enabled and dist.is_initialized()):
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
        dist.broadcast(t, 0)
        return bool(t.item())

    def close(self) -> None:
        if self.initialised_here and dist.is_initialized():
            try:  # leave together: a peer that tears down early can abort gloo's pending pairs
                dist.barrier()
            except RuntimeError:
                pass
            dist.destroy_process_group()


class Progress:
    """Plain-text progress: a self-rewriting line on a terminal, a line every ``every`` steps
    otherwise (logs, CI). Shows steps, loss and samples/s."""

    def __init__(self, total: int, prefix: str, enabled: bool = True, every: int | None = None, stream=None):
        self.total, self.prefix, self.enabled = total, prefix, enabled
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = every or max(1, total // 5)
        self.t0 = time.perf_counter()
        self.samples = 0

    def update(self, step: int, loss: float, samples: int, extra: str = "") -> None:
        self.samples += samples
        if not self.enabled:
            return
        if not self.tty and step % self.every != 0 and step != self.total:
            return
        dt = max(time.perf_counter() - self.t0, 1e-9)
        n = 28
        filled = int(n * step / max(self.total, 1))
        bar = "#" * filled + "." * (n - filled)
        line = (
            f"{self.prefix} [{bar}] step {step}/{self.total} loss {loss:.5f} "
            f"{self.samples / dt:.1f} samples/s{(' ' + extra) if extra else ''}"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if step == self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def rate(self) -> float:
        return self.samples / max(time.perf_counter() - self.t0, 1e-9)


def log(msg: str, enabled: bool = True) -> None:
    if enabled:
        print(msg, flush=True)
