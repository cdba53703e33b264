"""`import genesis_ops` works from the repository root, where the source directory (without a
compiled extension, unless built in place) comes first on sys.path: the import hands over to
the installed package, or an editable install supplies the extension."""

import os
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


def test_import_from_the_repository_root():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
