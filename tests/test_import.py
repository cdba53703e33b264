"""Which copy `import genesis_ops` runs. After the development install (CONTRIBUTING.md: in-place
editable) the repository's genesis_ops/ holds the compiled extension and is the package imported,
from any directory, the repository root included. With an installed wheel (CI, users) the tests
run that wheel; in a clean checkout's root the source directory comes first on sys.path, and its
import must then fail with an error saying what to do, not with a bare missing-module error.
A source directory without a build always fails that way."""

import importlib.machinery
import os
import shutil
import subprocess
import sys


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import torch, genesis_ops as go, genesis_ops.reference as ref
from genesis_ops import functional
x = torch.rand(2, 1, 6, 6, 6, generator=torch.Generator().manual_seed(0))
inp, tgt = go.models_genesis(x, go.GenesisConfig(num_windows=20), seed=5)
rin, rtgt = ref.models_genesis(x.numpy(), go.GenesisConfig(num_windows=20), seed=5)
assert (inp.numpy() == rin).all() and (tgt.numpy() == rtgt).all()
assert functional.flip is go.flip and go.build_info()["version"] == go.__version__
print(go.__file__)
"""

# Imports a copy of the package's Python files (no compiled extension) as genesis_ops, whatever
# the environment holds (an editable install's finder would otherwise supply the repository's).
UNBUILT = """
import importlib.util, os, sys
d = sys.argv[1]
spec = importlib.util.spec_from_file_location(
    "genesis_ops", os.path.join(d, "__init__.py"), submodule_search_locations=[d])
m = importlib.util.module_from_spec(spec)
sys.modules["genesis_ops"] = m
spec.loader.exec_module(m)
"""


def _env():
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _built_in_place():
    """Whether the repository's genesis_ops/ holds a compiled extension (the development install)."""
    d = os.path.join(REPO, "genesis_ops")
    return any(os.path.isfile(os.path.join(d, "_C" + suffix)) for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def test_import_from_the_repository_root():
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300
    )
    if _built_in_place():
        # The files being edited are the ones imported, with the extension built beside them.
        assert p.returncode == 0, p.stderr
        assert os.path.realpath(p.stdout.strip()) == os.path.realpath(os.path.join(REPO, "genesis_ops", "__init__.py"))
    else:
        # A clean checkout (CI tests a wheel): its unbuilt sources shadow the install, and say so.
        assert p.returncode != 0
        assert "genesis_ops._C is missing" in p.stderr and "CONTRIBUTING.md" in p.stderr, p.stderr


def test_unbuilt_source_directory_says_what_to_do(tmp_path):
    src = os.path.join(REPO, "genesis_ops")
    dst = tmp_path / "genesis_ops"
    dst.mkdir()
    for name in os.listdir(src):
        if name.endswith(".py") and name != "_build_info.py":
            shutil.copy(os.path.join(src, name), dst / name)
    p = subprocess.run(
        [sys.executable, "-c", UNBUILT, str(dst)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: genesis_ops: the compiled extension genesis_ops._C is missing from"), last
    assert str(dst) in last and "pip install --no-build-isolation -e ." in last, last
