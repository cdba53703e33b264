"""The public Models Genesis code's algorithm, re-implemented in NumPy for timing only.

The public code (MrGiovanni/ModelsGenesis, ``utils.py``) is not in this repository and nothing
here is taken from it (its licence forbids copying). This module is written from the published
description of what it does (the paper, and docs/SPEC.md "The public implementation"): one sample
at a time, scalar draws from Python's ``random``, noise volumes from ``np.random.rand``, and the
costs that make it slow kept as they are:

* flips: up to 3, each continuing with probability 0.4, of an axis of the (1, R, C, D) sample,
  channel axis included (so depth is never flipped);
* local pixel shuffling (probability 0.5): 10000 windows, sides uniform in {1 .. dim // 10}, read
  from the unshuffled sample, each permuted with ``np.random.shuffle``;
* the intensity curve (probability 0.9): a cubic Bezier curve sampled at 100,000 points, sorted,
  and applied with ``np.interp`` (which clamps to [0, 1]);
* painting (probability 0.9): in-painting (rate 0.2, up to 5 boxes, sides dim // 6 .. dim // 3,
  margin 3) or out-painting (noise everywhere, then up to 5 windows of the sample put back).

bench/interleaved.py times it against genesis_ops, interleaved as a training loop runs both. It is
a stand-in with the same work per sample; its absolute time is checked there against the public
code's published figure (about 50 ms per 1x64x64x32 sample on this kind of machine).
"""

from __future__ import annotations

import random

import numpy as np

CURVE_POINTS = 100_000
NUM_WINDOWS = 10_000


def _bernstein(i: int, t: np.ndarray) -> np.ndarray:
    """Cubic Bernstein polynomial i in (1 - t), so that t = 0 is the curve's last point."""
    coef = (1, 3, 3, 1)[i]
    return coef * (t ** (3 - i)) * ((1 - t) ** i)


def _curve(points) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 1.0, CURVE_POINTS)
    basis = np.array([_bernstein(i, t) for i in range(4)])
    px = np.array([p[0] for p in points])
    py = np.array([p[1] for p in points])
    return px @ basis, py @ basis


def nonlinear(x: np.ndarray, prob: float = 0.9) -> np.ndarray:
    if random.random() >= prob:
        return x
    points = [[0, 0], [random.random(), random.random()], [random.random(), random.random()], [1, 1]]
    xs, ys = _curve(points)
    if random.random() < 0.5:
        xs = np.sort(xs)  # decreasing map
    else:
        xs, ys = np.sort(xs), np.sort(ys)
    return np.interp(x, xs, ys)


def local_pixel_shuffling(x: np.ndarray, prob: float = 0.5) -> np.ndarray:
    if random.random() >= prob:
        return x
    src = x.copy()
    out = x.copy()
    _, rows, cols, deps = x.shape
    for _ in range(NUM_WINDOWS):
        bx = random.randint(1, rows // 10)
        by = random.randint(1, cols // 10)
        bz = random.randint(1, deps // 10)
        x0 = random.randint(0, rows - bx)
        y0 = random.randint(0, cols - by)
        z0 = random.randint(0, deps - bz)
        window = src[0, x0 : x0 + bx, y0 : y0 + by, z0 : z0 + bz].flatten()
        np.random.shuffle(window)
        out[0, x0 : x0 + bx, y0 : y0 + by, z0 : z0 + bz] = window.reshape((bx, by, bz))
    return out


def _box(dims, side_lo, side_hi, outer: bool):
    sides, starts = [], []
    for d in dims:
        s = d - random.randint(side_lo(d), side_hi(d)) if outer else random.randint(side_lo(d), side_hi(d))
        sides.append(s)
    for d, s in zip(dims, sides, strict=True):
        starts.append(random.randint(3, d - s - 3))
    return tuple(slice(a, a + s) for a, s in zip(starts, sides, strict=True)), sides


def in_painting(x: np.ndarray) -> np.ndarray:
    dims = x.shape[1:]
    left = 5
    while left > 0 and random.random() < 0.95:
        sl, sides = _box(dims, lambda d: d // 6, lambda d: d // 3, outer=False)
        x[(slice(None),) + sl] = np.random.rand(*sides)
        left -= 1
    return x


def out_painting(x: np.ndarray) -> np.ndarray:
    dims = x.shape[1:]
    kept = x.copy()
    x = np.random.rand(*x.shape)
    sl, _ = _box(dims, lambda d: 3 * d // 7, lambda d: 4 * d // 7, outer=True)
    x[(slice(None),) + sl] = kept[(slice(None),) + sl]
    left = 4
    while left > 0 and random.random() < 0.95:
        sl, _ = _box(dims, lambda d: 3 * d // 7, lambda d: 4 * d // 7, outer=True)
        x[(slice(None),) + sl] = kept[(slice(None),) + sl]
        left -= 1
    return x


def flip(x: np.ndarray, y: np.ndarray, prob: float = 0.4):
    left = 3
    while random.random() < prob and left > 0:
        axis = random.choice([0, 1, 2])
        x, y = np.flip(x, axis=axis), np.flip(y, axis=axis)
        left -= 1
    return x, y


def generate_pair(img: np.ndarray, batch_size: int):
    """One batch (x, y) from img (N, 1, R, C, D), samples drawn with replacement, one at a time."""
    index = list(range(img.shape[0]))
    random.shuffle(index)
    y = img[index[:batch_size]]
    x = y.copy()
    for n in range(batch_size):
        x[n] = y[n].copy()
        x[n], y[n] = flip(x[n], y[n])
        x[n] = local_pixel_shuffling(x[n])
        x[n] = nonlinear(x[n])
        if random.random() < 0.9:
            x[n] = in_painting(x[n]) if random.random() < 0.2 else out_painting(x[n])
    return x, y
