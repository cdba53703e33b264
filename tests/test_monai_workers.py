"""DataLoader-worker use (one sample per call on the CPU): the CPU engine runs on torch's intra-op
threads only, so in a DataLoader worker (torch sets 1 thread there) it starts no thread of its
own, and its results do not depend on the number of workers. No MONAI needed here."""

import os
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import torch

import genesis_ops as go

ALL_ON = go.GenesisConfig(shuffle_p=1.0, nonlinear_p=1.0, paint_p=1.0)
SHAPE = (1, 1, 40, 36, 24)

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc (Linux)")


def native_threads() -> int:
    """OS threads of this process that Python did not start: OpenMP's and torch's, never the
    DataLoader worker's own queue threads, which start and stop on their own schedule."""
    python = {t.native_id for t in threading.enumerate()}
    return len([t for t in os.listdir("/proc/self/task") if int(t) not in python])


def sample(i: int) -> torch.Tensor:
    return torch.rand(SHAPE, generator=torch.Generator().manual_seed(i))


class PerSample(torch.utils.data.Dataset):
    """Sample i: models_genesis of one sample with seed i, plus torch's thread count and the
    process's OS threads just before and after the op."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        x = sample(i)
        before = native_threads()
        inp, target = go.models_genesis(x, ALL_ON, seed=i)
        # A thread pool's threads stay; a thread the worker machinery is just starting or ending
        # (seen rarely under pytest) does not: the fewest over a short while is what the op left.
        counts = []
        for _ in range(5):
            time.sleep(0.01)
            counts.append(native_threads())
        after = min(counts)
        return i, torch.get_num_threads(), before, after, inp[0], target[0]


def test_thread_count_is_observable():
    """The check below can fail: in a fresh process the op at batch 1 starts threads with 2 torch
    threads and none with 1 (run in a subprocess: forked workers cannot raise their OpenMP threads)."""
    code = (
        "import os, torch, genesis_ops as go\n"
        "n = lambda: len(os.listdir('/proc/self/task'))  # no Python threads here\n"
        "x = torch.rand(1, 1, 40, 36, 24)\n"
        "torch.set_num_threads(1); a = n(); go.models_genesis(x, seed=0); b = n()\n"
        "torch.set_num_threads(2); go.models_genesis(x, seed=0); c = n()\n"
        "print(a, b, c)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120, cwd=tempfile.gettempdir()
    )  # not the repository root: its unbuilt sources
    a, b, c = map(int, out.stdout.split())
    assert b == a, "the op started threads with torch.set_num_threads(1)"
    assert c > b, "2 torch threads should start a thread: the thread count is not observable here"


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_dataloader_workers_use_one_thread_and_agree(workers):
    loader = torch.utils.data.DataLoader(PerSample(), batch_size=None, num_workers=workers)
    for i, threads, before, after, inp, target in loader:
        ref_inp, ref_target = go.models_genesis(sample(i), ALL_ON, seed=i)  # this process: all its threads
        assert torch.equal(inp, ref_inp[0]) and torch.equal(target, ref_target[0])
        if workers:
            assert threads == 1  # torch's DataLoader worker setting, which the CPU engine follows
            assert after <= before  # the op started no thread of its own: no oversubscription
