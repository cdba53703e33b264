"""The raw ops' output bits over a fixed grid (op x parameter set x dtype x shape x seed), as
sha256 digests, so that a refactor can show its outputs are unchanged and tests/test_output_hashes.py
can fail when any kernel's bits change.

Runs against any build since the op schemas took (seed, sample_offset) as ints: it calls only the
raw schemas under torch.ops.genesis with int streams and the fixed value range 0..1, so the same
script hashes an old and a new build alike. Run it as

    python tests/output_hashes.py --out FILE.json [--compare OTHER.json]

with the build to hash importable as genesis_ops (the development install, or an installed wheel
from outside the repository). Each key is "op|params|dtype|shape|seed|sample_offset"; each value
the digests of the op's outputs in order, each over the output's dtype, shape and bytes, cut to
96 bits (no accidental match)."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

import numpy as np
import torch

import genesis_ops  # noqa: F401  (registers torch.ops.genesis)

EMULATED = "_emulated_cuda_"
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
SHAPES = [(2, 1, 17, 9, 23), (3, 2, 16, 16, 8), (2, 1, 31, 29)]
SEEDS = [0, 1, 2**63 + 5]  # the Python API's 64-bit seeds; the schemas take them as int64
# Fewer cases at sizes whose shuffle windows take the CUDA launch's other window paths (the small
# shapes' windows all fit the thread-per-window path): one warp per window with shared memory
# (3D, up to 7 x 6 x 5 voxels) and with a slice of global scratch (2D, up to 80 x 80). Their
# parameter sets all but the defaults (whose 10000 windows take the same paths, slower).
LARGE = ([(2, 2, 70, 60, 50), (1, 1, 800, 803)], ["float32", "bfloat16"], [0, 2**63 + 5])
LO, HI = 0.0, 1.0


def _curves(B: int, which: str) -> tuple:
    if which == "table":
        cp, inc = [[0.2, 0.3, 0.6, 0.9]] * B, [True] * B
    else:  # one curve per sample, both directions
        rng = np.random.default_rng(7)
        cp, inc = rng.random((B, 4)).tolist(), [b % 2 == 0 for b in range(B)]
    return torch.tensor(cp, dtype=torch.float64), torch.tensor(inc, dtype=torch.bool)


# Per base op: (seeded, parameter sets as name -> (B -> the schema's arguments between x and the
# stream), sample offsets). "default" is the Python API's defaults; "on" turns every stage on.
_FUSED = {
    "default": lambda B: (0.4, 0.5, 10000, 0.9, 0.9, 0.2, LO, HI),
    "on": lambda B: (1.0, 1.0, 50, 1.0, 1.0, 0.5, LO, HI),
}
_SHUFFLE = {"default": lambda B: (0.5, 10000), "on": lambda B: (1.0, 50)}
BASE = {
    "models_genesis": (True, _FUSED),
    "flip": (True, {"default": lambda B: (0.4,), "on": lambda B: (1.0,)}),
    "local_shuffle": (True, _SHUFFLE),
    "nonlinear": (True, {"default": lambda B: (0.9, LO, HI), "on": lambda B: (1.0, LO, HI)}),
    "inpaint": (True, {"default": lambda B: (1.0, LO, HI), "half": lambda B: (0.5, LO, HI)}),
    "outpaint": (True, {"default": lambda B: (1.0, LO, HI), "half": lambda B: (0.5, LO, HI)}),
    "bezier": (
        False,
        {"table": lambda B: (*_curves(B, "table"), LO, HI), "random": lambda B: (*_curves(B, "r"), LO, HI)},
    ),
    "paint_mask": (True, {"default": lambda B: (0.9, 0.2, 1.0, 1.0), "on": lambda B: (1.0, 0.5, 1.0, 1.0)}),
    "shuffle_mask": (True, _SHUFFLE),
}
MASKED = ["models_genesis", "local_shuffle", "inpaint", "outpaint"]
EMULATED_BASES = ["models_genesis", "models_genesis_masked", "bezier", "paint_mask", "shuffle_mask"]


def schemas() -> dict[str, str]:
    """Every schema hashed, as name -> its base op (the 13 public ops and the emulated hooks)."""
    names = {b: b for b in BASE} | {b + "_masked": b for b in MASKED}
    names |= {EMULATED + n: names[n] for n in EMULATED_BASES}
    return dict(sorted(names.items()))


def make_input(shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """A fixed input in [0, 1): float64 from a numpy Generator seeded by the shape, then cast."""
    rng = np.random.default_rng([17, *shape])
    return torch.from_numpy(rng.random(shape)).to(dtype)


def digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def as_int64(seed: int) -> int:
    return seed - 2**64 if seed >= 2**63 else seed


def cases():
    """(key, schema, build the arguments) for the whole grid."""
    blocks = [(SHAPES, list(DTYPES), SEEDS, (0, 1), True), (*LARGE, (0,), False)]
    for name, base in schemas().items():
        seeded, params = BASE[base]
        for shapes, dtypes, seeds, offsets, with_defaults in blocks:
            for pname, args in params.items():
                if pname == "default" and not with_defaults:
                    continue
                for dname in dtypes:
                    for shape in shapes:
                        streams = [(s, o) for s in seeds for o in (offsets if pname != "default" else (0,))]
                        for seed, offset in streams if seeded else [("-", "-")]:
                            key = f"{name}|{pname}|{dname}|{'x'.join(map(str, shape))}|{seed}|{offset}"

                            def build(shape=shape, dtype=DTYPES[dname], args=args, seed=seed, offset=offset, s=seeded):
                                x = make_input(shape, dtype)
                                stream = (as_int64(seed), offset) if s else ()
                                return (x, *args(shape[0]), *stream)

                            yield key, name, build


def compute(keys=None) -> dict[str, list[str]]:
    """The digests of every case (or of those in keys)."""
    out = {}
    for key, name, build in cases():
        if keys is not None and key not in keys:
            continue
        res = getattr(torch.ops.genesis, name)(*build())
        out[key] = [digest(t) for t in (res if isinstance(res, (tuple, list)) else (res,))]
    return out


def compare(a: dict, b: dict) -> list[str]:
    """The keys present in both whose digests differ."""
    return sorted(k for k in a.keys() & b.keys() if a[k] != b[k])


def write(digests: dict, path: str) -> None:
    """JSON with one case a line, sorted (small diffs when a case changes)."""
    lines = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(digests.items())]
    with open(path, "w") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="where to write the digests (JSON)")
    ap.add_argument("--compare", help="digests to compare with (JSON); exit 1 on a mismatch")
    a = ap.parse_args(argv)
    got = compute()
    write(got, a.out)
    print(f"{len(got)} cases -> {a.out}")
    if a.compare:
        with open(a.compare) as f:
            other = json.load(f)
        bad = compare(got, other)
        only = sorted(got.keys() ^ other.keys())
        print(f"{len(got.keys() & other.keys())} keys in both, {len(bad)} differ, {len(only)} in one only")
        for k in bad:
            print("DIFFERS", k)
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
