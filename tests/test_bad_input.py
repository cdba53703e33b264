"""Every bad argument in docs/SPEC.md's list (section 7) gives a Python exception naming it (or a
correct result), never a crash or a hang; also through the raw torch.ops with their own C++ checks."""

import inspect

import pytest
import torch

import genesis_ops as go
from op_table import API, TABLE

X = torch.rand(2, 1, 8, 8, 8)
# The Python API's functions that take a batch x (the mask-only ones take x_or_shape: test_masks.py).
ALL = {name: fn for name, fn in API.items() if not TABLE[name].mask_only}
# Those with a probability argument p.
WITH_P = sorted(name for name, fn in API.items() if "p" in inspect.signature(fn).parameters)


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize(
    "x,exc,match",
    [
        (torch.rand(8, 8, 8), ValueError, "x must have shape"),
        (torch.rand(1, 1, 2, 2, 2, 2), ValueError, "x must have shape"),
        (torch.randint(0, 5, (1, 1, 4, 4, 4)), TypeError, "x must be float16"),
        (torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool), TypeError, "x must be float16"),
        (torch.zeros(1, 1, 4, 4, 4, dtype=torch.complex64), TypeError, "x must be float16"),
        (torch.zeros(1, 1, 4, 4, 4).to_sparse(), TypeError, "x must be"),
        ([[1.0]], TypeError, "x must be a torch.Tensor"),
    ],
)
def test_bad_x(name, x, exc, match):
    with pytest.raises(exc, match=match):
        ALL[name](x)


@pytest.mark.parametrize("name", WITH_P)
@pytest.mark.parametrize(
    "p,exc",
    [
        (-0.1, ValueError),
        (1.5, ValueError),
        (float("nan"), ValueError),
        ("0.5", TypeError),
        (None, TypeError),
        (True, TypeError),
    ],
)
def test_bad_probability(name, p, exc):
    with pytest.raises(exc, match=r"^p must be"):  # the argument p itself, not e.g. flip_p
        API[name](X, p=p)


@pytest.mark.parametrize(
    "field,value,exc",
    [
        ("flip_p", 2.0, ValueError),
        ("shuffle_p", -1.0, ValueError),
        ("nonlinear_p", float("inf"), ValueError),
        ("paint_p", 1.01, ValueError),
        ("inpaint_rate", -0.5, ValueError),
        ("num_windows", -1, ValueError),
        ("num_windows", 10**12, ValueError),
        ("num_windows", 2.5, TypeError),
        ("value_range", (1.0, 0.0), ValueError),
        ("value_range", (0.0, float("nan")), ValueError),
        ("value_range", 3, TypeError),
    ],
)
def test_bad_config(field, value, exc):
    with pytest.raises(exc, match=f"config.{field}"):
        go.models_genesis(X, go.GenesisConfig(**{field: value}))


@pytest.mark.parametrize(
    "kw,exc,match",
    [
        ({"num_windows": -3}, ValueError, "num_windows"),
        ({"num_windows": 10**9}, ValueError, "num_windows"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 2**64}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"generator": "cpu"}, TypeError, "generator"),
        ({"sample_offset": -1}, ValueError, "sample_offset"),
        ({"sample_offset": 2**32 - 1}, ValueError, "sample_offset"),
    ],
)
def test_bad_keywords(kw, exc, match):
    with pytest.raises(exc, match=match):
        go.local_shuffle(X, **kw)


@pytest.mark.parametrize(
    "value_range", [(1.0, 1.0), (2.0, 1.0), (0.0, float("inf")), (-1e39, 0.0), ("a", "b"), (1.0, 1.0 + 1e-12)]
)
def test_bad_value_range(value_range):
    with pytest.raises((ValueError, TypeError), match="value_range"):
        go.nonlinear(X, value_range=value_range)


def test_bad_bezier_arguments():
    with pytest.raises(ValueError, match="control_points must have shape"):
        go.bezier(X, [[0.1, 0.2, 0.3]], [True, True])
    with pytest.raises(ValueError, match="increasing must have shape"):
        go.bezier(X, [[0.1, 0.2, 0.3, 0.4]] * 2, [True])
    with pytest.raises(ValueError, match="control_points is on meta"):
        go.bezier(X, torch.zeros(2, 4, device="meta"), [True, True])


def test_raw_ops_check_arguments_too():
    """The C++ kernels validate on their own: a RuntimeError naming the argument, no crash."""
    ops = torch.ops.genesis
    cases = [
        (lambda: ops.nonlinear(torch.rand(3, 3), 0.5, 0.0, 1.0, 0, 0), "x must have shape"),
        (lambda: ops.nonlinear(torch.zeros(1, 1, 3, 3, dtype=torch.int32), 0.5, 0.0, 1.0, 0, 0), "x must be float16"),
        (lambda: ops.nonlinear(X, 1.5, 0.0, 1.0, 0, 0), "genesis::nonlinear: p must be"),
        (lambda: ops.nonlinear(X, 0.5, 1.0, 0.0, 0, 0), "value range"),
        (lambda: ops.inpaint(X, -0.5, 0.0, 1.0, 0, 0), "genesis::inpaint: p must be"),
        (lambda: ops.flip(X, 2.0, 0, 0), "genesis::flip: p must be"),
        (lambda: ops.local_shuffle(X, 2.0, 10, 0, 0), "genesis::local_shuffle: p must be"),
        (lambda: ops.local_shuffle(X, 0.5, -1, 0, 0), "num_windows"),
        (lambda: ops.local_shuffle(X, 0.5, 10, 0, -5), "sample_offset"),
        (lambda: ops.models_genesis(X, 0.4, 0.5, 10**9, 0.9, 0.9, 0.2, 0.0, 1.0, 0, 0), "num_windows"),
        (lambda: ops.bezier(X, torch.zeros(2, 4), torch.ones(2, dtype=torch.bool), 0.0, 1.0), "float64"),
        (
            lambda: ops.bezier(X, torch.zeros(3, 4, dtype=torch.float64), torch.ones(3, dtype=torch.bool), 0.0, 1.0),
            "control_points must have shape",
        ),
    ]
    for fn, match in cases:
        with pytest.raises(RuntimeError, match=match):
            fn()


def test_nan_and_inf_are_documented_behaviour():
    """Non-finite values: moved unchanged by flip/shuffle/painting (outside painted areas);
    the intensity map clamps +-inf to the range ends and keeps NaN."""
    x = torch.rand(2, 1, 12, 12, 12)
    x[0, 0, 3, 3, 3] = float("nan")
    x[1, 0, 5, 5, 5] = float("inf")
    y = go.nonlinear(x, p=1.0, seed=0)
    assert torch.isnan(y[0, 0, 3, 3, 3]) and torch.isfinite(y[1]).all()
    s = go.local_shuffle(x, p=1.0, num_windows=100, seed=0)
    assert torch.isnan(s[0]).sum() <= 1 and torch.isinf(s[1]).sum() <= 1
    assert torch.isnan(go.flip(x, p=1.0, seed=0)[0]).sum() == 1
