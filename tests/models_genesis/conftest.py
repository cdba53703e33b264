"""Shared fixtures for the models_genesis tests (CPU, tiny models)."""
import os
import sys

import pytest
import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHARED_DATA = os.path.abspath(os.path.join(REPO, "..", "shared", "data"))
PY_DIR = os.path.join(REPO, "python")

# Test the layer's sources in python/models_genesis (identical to the installed copy after
# `pip install .`, and current while editing). python/ holds nothing else, so genesis_ops still
# comes from the installed package.
if os.path.isdir(os.path.join(PY_DIR, "models_genesis")):
    sys.path.insert(0, PY_DIR)
import models_genesis  # noqa: E402,F401


def _shared(name):
    p = os.path.join(SHARED_DATA, name)
    if not os.path.exists(p):
        pytest.skip(f"shared data {p} not available")
    return p


def _subprocess_env():
    """Environment for child processes: same interpreter, the layer importable, few threads."""
    env = dict(os.environ)
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(models_genesis.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([pkg_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


# One intra-op thread: the test machine has 2 cores that other jobs share, and a 2-thread
# OpenMP pool next to a busy process slows convolutions down by an order of magnitude.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def shared():
    """shared(name) -> path of a file in <repo>/../shared/data (skips when absent)."""
    return _shared


@pytest.fixture
def subprocess_env():
    return _subprocess_env()
