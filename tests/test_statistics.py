"""The statistics docs/SPEC.md quotes, within sampling error, and the shape of the curve."""

import math

import numpy as np
import torch

import genesis_ops as go
from genesis_ops import reference as ref

CUBE = (1, 64, 64, 32)


def test_shuffle_changes_about_78_percent():
    x = torch.rand((16,) + CUBE)
    y = go.local_shuffle(x, p=1.0, seed=1)
    frac = (y != x).float().mean().item()
    assert 0.75 < frac < 0.81, frac
    # every output value is a value of the same sample (windows permute, later ones overwrite)
    for b in range(4):
        assert torch.isin(y[b], x[b]).all()


def test_inpaint_replaces_about_5_percent():
    x = torch.full((400,) + CUBE, 2.0)  # outside the noise range, so replaced voxels are visible
    y = go.inpaint(x, p=1.0, seed=2)
    replaced = (y != 2.0).float().flatten(1).mean(1)
    assert 0.048 < replaced.mean().item() < 0.060, replaced.mean()
    noise = y[y != 2.0]
    assert noise.min() >= 0 and noise.max() < 1 and abs(noise.mean().item() - 0.5) < 0.01


def test_outpaint_keeps_about_31_percent():
    x = torch.full((400,) + CUBE, 2.0)
    kept = (go.outpaint(x, p=1.0, seed=3) == 2.0).float().flatten(1).mean(1)
    assert 0.29 < kept.mean().item() < 0.33, kept.mean()
    assert kept.min() > 0.05 and kept.max() < 0.5


def _params(n, dims, **probs):
    return [ref.draw_sample_params(5, s, dims, ref._Probabilities(**probs)) for s in range(n)]


def _check_frequencies(counts, probs, n):
    for k, p in probs.items():
        sd = math.sqrt(p * (1 - p) / n)
        assert abs(counts.get(k, 0) / n - p) < 5 * sd + 1e-9, (k, counts.get(k, 0) / n, p)


def test_box_count_distributions():
    n = 4000
    inb = _params(n, (64, 64, 32), paint_p=1.0, inpaint_rate=1.0)
    counts = {}
    for p in inb:
        counts[len(p.boxes)] = counts.get(len(p.boxes), 0) + 1
    _check_frequencies(counts, {k: 0.95**k * 0.05 for k in range(5)} | {5: 0.95**5}, n)
    out = _params(n, (64, 64, 32), paint_p=1.0, inpaint_rate=0.0)
    counts = {}
    for p in out:
        counts[len(p.boxes)] = counts.get(len(p.boxes), 0) + 1
    _check_frequencies(counts, {1 + k: 0.95**k * 0.05 for k in range(4)} | {5: 0.95**4}, n)
    # box sides and margins
    for p in inb:
        for start, size in p.boxes:
            assert all(d // 6 <= s <= d // 3 for s, d in zip(size, (64, 64, 32), strict=True))
            assert all(3 <= a and a + s <= d - 3 for a, s, d in zip(start, size, (64, 64, 32), strict=True))
    for p in out:
        for _start, size in p.boxes:
            assert all(d - 4 * d // 7 <= s <= d - 3 * d // 7 for s, d in zip(size, (64, 64, 32), strict=True))


def test_paint_split_and_gates():
    n = 5000
    ps = _params(n, (64, 64, 32), paint_p=0.9, inpaint_rate=0.2, nonlinear_p=0.9, shuffle_p=0.5, num_windows=1)
    kinds = {}
    for p in ps:
        kinds[p.paint] = kinds.get(p.paint, 0) + 1
    _check_frequencies(kinds, {"none": 0.1, "in": 0.18, "out": 0.72}, n)
    _check_frequencies({"nl": sum(p.nonlinear for p in ps)}, {"nl": 0.9}, n)
    _check_frequencies({"sh": sum(p.shuffle for p in ps)}, {"sh": 0.5}, n)
    _check_frequencies({"inc": sum(p.increasing for p in ps)}, {"inc": 0.5}, n)


def test_flip_axes_include_depth():
    """All spatial axes are eligible (the public code never flips depth; that is a bug)."""
    n = 6000
    ps = _params(n, (64, 64, 32), flip_p=0.4)
    counts = {}
    for p in ps:
        counts[len(p.flip_axes)] = counts.get(len(p.flip_axes), 0) + 1
    _check_frequencies(counts, {0: 0.6, 1: 0.24, 2: 0.096, 3: 0.064}, n)
    axes = [a for p in ps for a in p.flip_axes]
    for a in range(3):
        _check_frequencies({a: axes.count(a)}, {a: 1 / 3}, len(axes))
    # and the op flips exactly those axes
    x = torch.rand(8, 2, 6, 7, 5)
    y = go.flip(x, p=0.7, seed=5)
    for b in range(8):
        p = ref.draw_sample_params(5, b, (6, 7, 5), ref._Probabilities(flip_p=0.7))
        want = x[b]
        for a in p.flip_axes:
            want = want.flip(1 + a)
        assert torch.equal(y[b], want)


def _exact_curve(ctrl, increasing, t):
    """f(t) by solving Bx(s) = t with bisection in float64 (60 halvings)."""
    lo, hi = np.zeros_like(t), np.ones_like(t)
    for _ in range(60):
        mid = (lo + hi) / 2
        left = ref._bezier_coord(mid, ctrl[0], ctrl[2]) < t
        lo, hi = np.where(left, mid, lo), np.where(left, hi, mid)
    s = (lo + hi) / 2
    return ref._bezier_coord(s if increasing else 1 - s, ctrl[1], ctrl[3])


def test_curve_accuracy_monotonicity_and_end_points():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 20001, dtype=np.float32)
    errors = []
    for k in range(300):
        ctrl = tuple(rng.random(4))
        inc = bool(k % 2)
        x = torch.from_numpy(t).reshape(1, 1, 1, -1)
        y = go.bezier(x, [ctrl], [inc]).flatten().numpy().astype(np.float64)
        d = np.diff(y)
        assert (d >= 0).all() if inc else (d <= 0).all()
        assert (y[0], y[-1]) == ((0.0, 1.0) if inc else (1.0, 0.0))
        # Bx'(s) = 0 somewhere makes f vertical there; away from such curves the map is within 1e-5
        s = np.linspace(0, 1, 4001)
        dbx = np.gradient(ref._bezier_coord(s, ctrl[0], ctrl[2]), s)
        err = np.abs(y - _exact_curve(ctrl, inc, t.astype(np.float64))).max()
        errors.append(err)
        if dbx.min() > 0.05:
            assert err < 1e-5, (ctrl, inc, err)
    assert np.median(errors) < 1e-6


def test_curve_is_monotone_across_segment_breakpoints():
    """Each segment is y0 + slope * (t - x0) with a rounded slope: just below a breakpoint the map
    must not overshoot the next segment's start (checked one float step either side of every
    breakpoint of many curves, through the kernel)."""
    rng = np.random.default_rng(1)
    for k in range(40):
        ctrl = tuple(rng.random(4))
        inc = bool(k % 2)
        xs, _, _ = ref.curve_table(ctrl, inc)
        below = np.nextafter(xs[1:], np.float32(-1)).astype(np.float32)
        t = np.sort(np.concatenate([xs, below, np.nextafter(xs, np.float32(2)).astype(np.float32)]))
        t = t[(t >= 0) & (t <= 1)]
        y = go.bezier(torch.from_numpy(t).reshape(1, 1, 1, -1), [ctrl], [inc]).flatten().numpy()
        d = np.diff(y.astype(np.float64))
        assert (d >= 0).all() if inc else (d <= 0).all(), (ctrl, inc)


def test_nonlinear_clamps_and_propagates_nan():
    x = torch.tensor([-5.0, -0.0, 0.0, 1.0, 7.0, float("inf"), float("-inf"), float("nan")]).reshape(1, 1, 1, -1)
    y = go.bezier(x, [[0.3, 0.6, 0.7, 0.2]], [True]).flatten()
    assert y[:3].eq(0).all() and y[3:6].eq(1).all() and y[6] == 0 and torch.isnan(y[7])
    z = go.bezier(x, [[0.3, 0.6, 0.7, 0.2]], [False]).flatten()
    assert z[:3].eq(1).all() and z[3:6].eq(0).all() and torch.isnan(z[7])
