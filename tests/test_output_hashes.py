"""The ops' output bits are pinned: every raw schema (the public ops and the emulated CUDA hooks)
over tests/output_hashes.py's grid (parameter sets x float16/bfloat16/float32/float64 x 4D and 5D
odd shapes x seeds 0, 1, 2**63 + 5 x sample offsets) hashes to tests/data/op_output_hashes.json,
which was made by the build before the op table, SymInt/tensor seeds and the CUDA launch sequence
were written. Any kernel whose bits change fails here, naming the op and the case; a change meant
to alter outputs changes docs/SPEC.md and the reference with it and regenerates the file
(CONTRIBUTING, Tests). CPU and emulated launch only (a GPU's bits are checked against the CPU in
tests/test_cuda.py)."""

import json
from pathlib import Path

import pytest
import torch

import output_hashes as oh
from op_table import TABLE

PINNED = json.loads((Path(__file__).parent / "data" / "op_output_hashes.json").read_text())
CASES = {key: (name, build) for key, name, build in oh.cases()}


def test_grid_covers_every_schema():
    """A schema added to the op table without a row in output_hashes.py fails here."""
    assert set(oh.schemas()) == set(TABLE), (
        f"tests/output_hashes.py hashes {sorted(set(oh.schemas()) ^ set(TABLE))} differently from tests/op_table.py"
    )


def test_grid_is_the_pinned_grid():
    """The pinned file and the script's grid hold the same cases (none dropped, none unpinned)."""
    assert set(CASES) == set(PINNED), (
        f"only in the grid: {sorted(set(CASES) - set(PINNED))[:5]}, only pinned: {sorted(set(PINNED) - set(CASES))[:5]}"
    )


def _mismatches(name, run, seed=None):
    bad = []
    for key, (n, build) in CASES.items():
        if n == name and key in PINNED and seed in (None, key.split("|")[4]):
            got = [oh.digest(t) for t in run(n, build())]
            if got != PINNED[key]:
                bad.append(key)
    return bad


def _int_stream(name, args):
    res = getattr(torch.ops.genesis, name)(*args)
    return res if isinstance(res, (tuple, list)) else (res,)


def _tensor_stream(name, args):
    *rest, seed, offset = args
    t = lambda v: torch.tensor(v, dtype=torch.int64)  # noqa: E731
    res = getattr(torch.ops.genesis, name).tensor_seed(*rest, t(seed), t(offset))
    return res if isinstance(res, (tuple, list)) else (res,)


@pytest.mark.parametrize("name", sorted(oh.schemas()))
def test_outputs_match_pinned_bits(name):
    bad = _mismatches(name, _int_stream)
    assert not bad, f"genesis::{name}: {len(bad)} cases changed bits, e.g. {bad[:5]}"


@pytest.mark.parametrize("name", sorted(n for n, op in TABLE.items() if op.seeded))
def test_tensor_seed_overload_matches_pinned_bits(name):
    """The stream as 0-dim tensors gives the same bits as the pinned int streams (the cases whose
    seed is 2**63 + 5, a negative int64 in the schema)."""
    bad = _mismatches(name, _tensor_stream, seed=str(2**63 + 5))
    assert not bad, f"genesis::{name}.tensor_seed: {len(bad)} cases differ from the int stream, e.g. {bad[:5]}"
