"""The tests' op table: one row per schema under torch.ops.genesis (the tensor_seed overloads
aside), with sample arguments and what the schema returns, feeding every op test and CI's wheel
check (.ci/run). Importing it asserts that the table lists exactly the registered schemas, so a
schema added without a row (or a row without a schema) fails at collection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

import genesis_ops as go

EMULATED = "_emulated_cuda_"


@dataclass(frozen=True)
class Op:
    name: str  # the schema's name under torch.ops.genesis
    args: Callable  # x -> the schema's arguments between x and the stream (seed, sample_offset)
    seeded: bool = True  # ends with (seed, sample_offset) and has a tensor_seed overload
    masked: bool = False  # a *_masked schema: the plain op's outputs, then the uint8 mask
    mask_only: bool = False  # returns only a bool mask; reads x's shape and device (any dtype)
    emulated: bool = False  # the CUDA bodies run on the CPU: CPU tensors only (test hook)

    @property
    def base(self) -> str:
        """The op it is a form of: the name without the emulation prefix and the _masked suffix."""
        return self.name.removeprefix(EMULATED).removesuffix("_masked")

    def raw_args(self, x, seed=3, sample_offset=0) -> tuple:
        """Valid arguments of the schema for x (the stream as ints, or tensors if given so)."""
        stream = (seed, sample_offset) if self.seeded else ()
        return (x, *self.args(x), *stream)

    def tensor_seed_args(self, x, seed=3, sample_offset=0) -> tuple:
        """raw_args with the stream as 0-dim int64 tensors on x's device (the tensor_seed overload)."""
        t = lambda v: torch.tensor(v, dtype=torch.int64, device=x.device)  # noqa: E731
        return self.raw_args(x, t(seed), t(sample_offset))

    @property
    def devices(self) -> list[str]:
        return ["cpu"] if self.emulated else DEVICES

    @property
    def packet(self):
        return getattr(torch.ops.genesis, self.name)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and go.has_cuda_kernels() else [])


def _curves(x):
    B = x.shape[0]
    return (
        torch.tensor([[0.2, 0.3, 0.6, 0.9]] * B, dtype=torch.float64, device=x.device),
        torch.tensor([True] * B, device=x.device),
        0.0,
        1.0,
    )


_BASE = [  # (name, sample arguments, seeded, has a masked form, mask-only, has an emulated form)
    ("models_genesis", lambda x: (0.4, 0.8, 50, 0.9, 0.9, 0.5, 0.0, 1.0), True, True, False, True),
    ("flip", lambda x: (0.5,), True, False, False, False),
    ("local_shuffle", lambda x: (1.0, 50), True, True, False, False),
    ("nonlinear", lambda x: (1.0, 0.0, 1.0), True, False, False, False),
    ("inpaint", lambda x: (1.0, 0.0, 1.0), True, True, False, False),
    ("outpaint", lambda x: (1.0, 0.0, 1.0), True, True, False, False),
    ("bezier", _curves, False, False, False, True),
    ("paint_mask", lambda x: (0.9, 0.5, 1.0, 1.0), True, False, True, True),
    ("shuffle_mask", lambda x: (1.0, 50), True, False, True, True),
]


def _rows():
    rows = []
    for name, args, seeded, masked, mask_only, emulated in _BASE:
        for prefix in ("", EMULATED) if emulated else ("",):
            e = prefix != ""
            rows.append(Op(prefix + name, args, seeded, False, mask_only, e))
            if masked:
                rows.append(Op(prefix + name + "_masked", args, seeded, True, False, e))
    return {op.name: op for op in rows}


TABLE: dict[str, Op] = _rows()
# The user-facing ops (no test hooks): what CI checks on both dispatch keys.
PUBLIC = sorted(n for n, op in TABLE.items() if not op.emulated)
# The ops that write an image only (the pre-mask ops) and those that return a mask.
IMAGE_OPS = sorted(n for n, op in TABLE.items() if not op.masked and not op.mask_only)
MASK_OPS = sorted(n for n, op in TABLE.items() if op.masked or op.mask_only)
# The Python API function of each public op (bezier needs its curves: batch 2).
_CP, _INC = torch.full((2, 4), 0.5, dtype=torch.float64), torch.ones(2, dtype=torch.bool)
API = {
    name: (lambda x, **k: go.bezier(x, _CP, _INC, **k)) if name == "bezier" else getattr(go, name)
    for name in sorted({TABLE[n].base for n in PUBLIC})
}


def registered_schemas() -> set[str]:
    """The genesis schemas torch knows, as names under torch.ops.genesis (overloads folded)."""
    names = {
        n.split("::", 1)[1].split(".")[0] for n in torch._C._dispatch_get_all_op_names() if n.startswith("genesis::")
    }
    return names - {"_launch_plan", "_arch_fit"}  # test hooks without a tensor: not ops on data


def _check_table_is_complete():
    missing, extra = registered_schemas() - TABLE.keys(), TABLE.keys() - registered_schemas()
    assert not missing and not extra, (
        f"tests/op_table.py: schemas without a row {missing}, rows without a schema {extra}"
    )
    for op in TABLE.values():
        overloads = set(op.packet.overloads())
        want = {"default", "tensor_seed"} if op.seeded else {"default"}
        assert overloads == want, f"genesis::{op.name} has overloads {overloads}, the table says {want}"
    api = set(go.functional.__all__)
    assert set(API) == api, (
        f"tests/op_table.py: functions without a row {api - set(API)}, rows without one {set(API) - api}"
    )


_check_table_is_complete()
