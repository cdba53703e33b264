"""NumPy reference implementation of the Models Genesis transforms.

Plain, readable NumPy that follows docs/SPEC.md step by step and draws its random numbers from the
same Philox4x32-10 words as the C++/CUDA kernels, so the kernels can be compared with it
exactly. It is slow (Python loops over windows) and meant for tests, documentation and
benchmarks, not for training.

Random words. Every random number is one 32-bit word
    philox4x32_10(counter=(index // 4, stream, sample, purpose), key=(seed_lo, seed_hi))[index % 4]
where `sample` is the sample's index in the batch plus `sample_offset`. From a word w:
    uniform01(w)     = w / 2**32                    (double, for gates and control points)
    uniform01f(w)    = (w >> 8) / 2**24             (float32, for fill noise)
    uniform_below(w, n) = (w * n) >> 32             (integer in {0 .. n-1})
Arithmetic on voxel values is float32 (inputs are converted to float32, results rounded once
to the input dtype), matching the kernels bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import GenesisConfig, paint_gates

__all__ = [
    "philox4x32_10",
    "flip",
    "local_shuffle",
    "nonlinear",
    "bezier",
    "inpaint",
    "outpaint",
    "models_genesis",
    "paint_mask",
    "shuffle_mask",
    "draw_sample_params",
    "curve_table",
    "GenesisConfig",
]

# Purposes (the last counter word); part of the reproducibility contract.
FLIP, SHUFFLE_GATE, SHUFFLE_WINDOW, SHUFFLE_PERM, NONLINEAR, PAINT, INPAINT, OUTPAINT, NOISE = range(1, 10)

MAX_FLIPS = 3
MAX_PAINT_BOXES = 5
PAINT_CONTINUE = 0.95
PAINT_MARGIN = 3
CURVE_SEGMENTS = 2048
CURVE_GRID = 4096
# Bits of a corruption mask byte (docs/SPEC.md, section 4.7).
MASK_SHUFFLED = 1  # the voxel lies in a shuffle window (the sample's shuffle ran)
MASK_PAINTED = 2  # the voxel was replaced by fill noise

_M32 = np.uint64(0xFFFFFFFF)


# ---------------------------------------------------------------------------------------------
# Philox4x32-10
# ---------------------------------------------------------------------------------------------
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10, elementwise over broadcast arrays.

    Args:
        c0, c1, c2, c3 (int or array of int): the counter words (taken modulo 2**32).
        k0, k1 (int): the key words (taken modulo 2**32).

    Returns:
        list[np.ndarray]: the four output words, uint32 arrays of the broadcast shape.
    """
    c = [np.asarray(v, dtype=np.uint64) & _M32 for v in (c0, c1, c2, c3)]
    k0 = np.uint64(int(k0) & 0xFFFFFFFF)
    k1 = np.uint64(int(k1) & 0xFFFFFFFF)
    m0, m1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    w0, w1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
    for _ in range(10):
        p0 = m0 * c[0]
        p1 = m1 * c[2]
        hi0, lo0 = p0 >> np.uint64(32), p0 & _M32
        hi1, lo1 = p1 >> np.uint64(32), p1 & _M32
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
        k0 = (k0 + w0) & _M32
        k1 = (k1 + w1) & _M32
    return [v.astype(np.uint32) for v in c]


def words(seed: int, sample: int, purpose: int, stream, index):
    """Random words of the contract (docs/SPEC.md, section 3.1), elementwise.

    Args:
        seed (int): the 64-bit seed. sample (int): sample index (batch index + sample_offset).
        purpose (int): one of FLIP .. NOISE. stream, index (int or array of int): broadcast.

    Returns:
        np.ndarray: uint32 words of the broadcast shape of stream and index.
    """
    index = np.asarray(index, dtype=np.uint64)
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    out = philox4x32_10(index >> np.uint64(2), stream, sample, purpose, seed & 0xFFFFFFFF, seed >> 32)
    lane = (index & np.uint64(3)).astype(np.intp)
    return np.choose(lane, out).astype(np.uint32)


def word(seed, sample, purpose, stream, index) -> int:
    """One random word (see words), as a Python int."""
    return int(words(seed, sample, purpose, stream, index))


def uniform01(w) -> float:
    """w / 2**32: a float in [0, 1) (exact in double)."""
    return float(w) / 4294967296.0


def uniform01f(w):
    """(w >> 8) / 2**24 for uint32 word(s) w: float32 in [0, 1), exact."""
    return (np.asarray(w, dtype=np.uint32) >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / 16777216.0)


def uniform_below(w, n):
    """(w * n) >> 32: integer(s) in {0 .. n-1} (uint64 arrays), for 1 <= n <= 2**32."""
    return (np.asarray(w, dtype=np.uint64) * np.uint64(n)) >> np.uint64(32)


def uniform_between(w, lo: int, hi: int) -> int:
    """lo + uniform_below(w, hi - lo + 1): an int in {lo .. hi}."""
    return lo + int(uniform_below(w, hi - lo + 1))


# ---------------------------------------------------------------------------------------------
# Per-sample parameters
# ---------------------------------------------------------------------------------------------
@dataclass
class SampleParams:
    flip_axes: list = field(default_factory=list)  # spatial axes flipped (in flip order)
    shuffle: bool = False
    nonlinear: bool = False
    ctrl: tuple = (0.0, 0.0, 0.0, 0.0)  # P1x, P1y, P2x, P2y
    increasing: bool = True
    paint: str = "none"  # "none", "in", "out"
    boxes: list = field(default_factory=list)  # [(start tuple, size tuple)] over spatial axes


@dataclass(frozen=True)
class _Probabilities:
    flip_p: float = 0.0
    shuffle_p: float = 0.0
    num_windows: int = 0
    nonlinear_p: float = 0.0
    paint_p: float = 0.0
    inpaint_rate: float = 0.0
    inpaint_p: float = 1.0
    outpaint_p: float = 1.0


def _paint_box(seed, sample, purpose, base, dims, outpaint: bool):
    nd = len(dims)
    start, size = [], []
    for a, dim in enumerate(dims):
        if outpaint:
            lo, hi = (3 * dim) // 7, (4 * dim) // 7
            s = max(1, dim - uniform_between(word(seed, sample, purpose, 0, base + a), lo, hi))
        else:
            lo = max(1, dim // 6)
            hi = max(lo, dim // 3)
            s = min(dim, uniform_between(word(seed, sample, purpose, 0, base + a), lo, hi))
        margin = min(PAINT_MARGIN, (dim - s) // 2)
        start.append(uniform_between(word(seed, sample, purpose, 0, base + nd + a), margin, dim - s - margin))
        size.append(s)
    return tuple(start), tuple(size)


def draw_sample_params(seed: int, sample: int, dims, probs: _Probabilities) -> SampleParams:
    """All random choices of one sample, in the word layout shared with the kernels
    (docs/SPEC.md, section 3.3).

    Args:
        seed (int): the 64-bit seed.
        sample (int): the sample's index in the streams (batch index + sample_offset).
        dims (tuple[int, ...]): the 2 or 3 spatial sizes.
        probs (_Probabilities): the stage probabilities (a single op sets only its own).

    Returns:
        SampleParams: flip axes, shuffle and curve gates, control points and direction, paint
        mode and boxes (the shuffle windows are drawn separately, by shuffle_windows).
    """
    nd = len(dims)
    p = SampleParams()
    # Flip: up to 3 times, continue with flip_p, then flip a uniformly chosen spatial axis.
    for t in range(MAX_FLIPS):
        if not uniform01(word(seed, sample, FLIP, 0, 2 * t)) < probs.flip_p:
            break
        p.flip_axes.append(int(uniform_below(word(seed, sample, FLIP, 0, 2 * t + 1), nd)))
    # Local pixel shuffling gate.
    p.shuffle = uniform01(word(seed, sample, SHUFFLE_GATE, 0, 0)) < probs.shuffle_p and probs.num_windows > 0
    # Non-linear: gate, P1x, P1y, P2x, P2y, direction.
    w = words(seed, sample, NONLINEAR, 0, np.arange(6))
    p.nonlinear = uniform01(w[0]) < probs.nonlinear_p
    p.ctrl = tuple(uniform01(v) for v in w[1:5])
    p.increasing = uniform01(w[5]) < 0.5
    # Painting: gate, in- vs out-painting, that transform's own gate, then its boxes.
    per_box = 1 + 2 * nd
    if uniform01(word(seed, sample, PAINT, 0, 0)) < probs.paint_p:
        if uniform01(word(seed, sample, PAINT, 0, 1)) < probs.inpaint_rate:
            if uniform01(word(seed, sample, INPAINT, 0, 0)) < probs.inpaint_p:
                p.paint = "in"
                for k in range(MAX_PAINT_BOXES):  # before each box, continue with 0.95
                    base = 1 + k * per_box
                    if not uniform01(word(seed, sample, INPAINT, 0, base)) < PAINT_CONTINUE:
                        break
                    p.boxes.append(_paint_box(seed, sample, INPAINT, base + 1, dims, outpaint=False))
        else:
            if uniform01(word(seed, sample, OUTPAINT, 0, 0)) < probs.outpaint_p:
                p.paint = "out"
                p.boxes.append(_paint_box(seed, sample, OUTPAINT, 1, dims, outpaint=True))
                for k in range(MAX_PAINT_BOXES - 1):  # up to 4 more, each continuing with 0.95
                    base = 1 + 2 * nd + k * per_box
                    if not uniform01(word(seed, sample, OUTPAINT, 0, base)) < PAINT_CONTINUE:
                        break
                    p.boxes.append(_paint_box(seed, sample, OUTPAINT, base + 1, dims, outpaint=True))
    return p


def shuffle_windows(seed: int, sample: int, dims, num_windows: int):
    """(starts, sizes), int64 arrays of shape (num_windows, nd); window k uses stream k: words
    0..nd-1 give its sides (uniform in {1 .. max(1, dim // 10)}), words nd..2nd-1 its position
    (uniform so that the window fits)."""
    nd = len(dims)
    k = np.arange(num_windows, dtype=np.uint64)[:, None]
    w = words(seed, sample, SHUFFLE_WINDOW, k, np.arange(2 * nd, dtype=np.uint64)[None, :])
    sizes = np.empty((num_windows, nd), dtype=np.int64)
    starts = np.empty((num_windows, nd), dtype=np.int64)
    for a, dim in enumerate(dims):
        sizes[:, a] = 1 + uniform_below(w[:, a], max(1, dim // 10)).astype(np.int64)
        room = (dim - sizes[:, a] + 1).astype(np.uint64)
        starts[:, a] = ((w[:, nd + a].astype(np.uint64) * room) >> np.uint64(32)).astype(np.int64)
    return starts, sizes


def fisher_yates(seed: int, sample: int, k: int, n: int) -> np.ndarray:
    """Durstenfeld shuffle of range(n): for i = n-1..1: j = uniform{0..i}; swap(a[i], a[j])."""
    a = np.arange(n)
    if n > 1:
        i = np.arange(n, dtype=np.uint64)
        j = uniform_below(words(seed, sample, SHUFFLE_PERM, k, i), i + np.uint64(1)).astype(np.int64)
        for step in range(n - 1, 0, -1):
            a[step], a[j[step]] = a[j[step]], a[step]
    return a


# ---------------------------------------------------------------------------------------------
# The intensity curve
# ---------------------------------------------------------------------------------------------
def _bezier_coord(s, c1, c2):
    r = 1.0 - s
    return 3.0 * r * r * s * c1 + 3.0 * r * s * s * c2 + s * s * s


def curve_table(ctrl, increasing: bool):
    """The per-sample table of the intensity curve (docs/SPEC.md, section 4.3).

    Args:
        ctrl (sequence of 4 floats): P1x, P1y, P2x, P2y, in [0, 1].
        increasing (bool): f(Bx(s)) = By(s) if True, else By(1 - s).

    Returns:
        tuple[np.ndarray, np.ndarray, np.ndarray]: xs and ys, float32 arrays of shape
        (CURVE_SEGMENTS + 1,), the polyline sampled uniformly in s; grid, an int array of shape
        (CURVE_GRID + 1,), grid[g] = largest i < CURVE_SEGMENTS with xs[i] <= g / CURVE_GRID.
    """
    i = np.arange(CURVE_SEGMENTS + 1, dtype=np.float64)
    s = i / CURVE_SEGMENTS
    sy = s if increasing else (CURVE_SEGMENTS - i) / CURVE_SEGMENTS
    xs = _bezier_coord(s, ctrl[0], ctrl[2]).astype(np.float32)
    ys = _bezier_coord(sy, ctrl[1], ctrl[3]).astype(np.float32)
    g = (np.arange(CURVE_GRID + 1, dtype=np.float32) / np.float32(CURVE_GRID)).astype(np.float32)
    grid = np.searchsorted(xs[:CURVE_SEGMENTS], g, side="right") - 1
    return xs, ys, grid


def curve_eval(xs, ys, t):
    """f(t) for float32 t in [0, 1]: linear interpolation along the polyline."""
    i = np.searchsorted(xs[:CURVE_SEGMENTS], t, side="right") - 1  # largest i with xs[i] <= t
    x0, x1, y0, y1 = xs[i], xs[i + 1], ys[i], ys[i + 1]
    dx = (x1 - x0).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = ((y1 - y0) / dx).astype(np.float32)  # per segment, so kernels may tabulate it
        y = y0 + slope * (t - x0)
    y = np.where(dx > 0, y, y1)
    return np.where(t >= 1, ys[-1], y).astype(np.float32)  # exact end point


def intensity_map(v32, xs, ys, lo: float, hi: float):
    """Clamp to [lo, hi], normalise (t = (v - lo) * float32(1 / (hi - lo))), map through the curve,
    scale back; NaN stays NaN."""
    lo32, rng = _fixed_range(lo, hi)
    return _map_in_range(v32, xs, ys, lo32, rng)


def _map_in_range(v32, xs, ys, lo32, rng):
    """intensity_map with the range given as float32 (lo32, rng = hi32 - lo32), rng > 0."""
    inv_rng = np.float32(np.float32(1) / rng)
    with np.errstate(invalid="ignore"):
        t = ((v32 - lo32) * inv_rng).astype(np.float32)
        t = np.clip(t, np.float32(0), np.float32(1))
    nan = np.isnan(t)
    out = lo32 + curve_eval(xs, ys, np.where(nan, np.float32(0), t)) * rng
    return np.where(nan, v32, out).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The transforms, one sample at a time
# ---------------------------------------------------------------------------------------------
def _as_float32(v):
    return np.asarray(v).astype(np.float32)


def _fixed_range(lo, hi):
    """A given value_range in float32: (lo32, hi32 - lo32)."""
    lo32, hi32 = np.float32(lo), np.float32(hi)
    return lo32, np.float32(hi32 - lo32)


def sample_range(xs):
    """value_range="per_sample" for one sample (C, *spatial) (docs/SPEC.md, section 4.8): the min
    and max of its finite values over all channels, in float32, as (lo32, rng = max - min). -0
    counts as +0. Without spread (constant, no finite value, or rng overflows float32) rng is 0
    (and lo32 is 0 without a finite value)."""
    v = _as_float32(xs).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.float32(0), np.float32(0)
    lo32 = np.float32(v.min() + np.float32(0))
    hi32 = np.float32(v.max() + np.float32(0))
    with np.errstate(over="ignore"):
        rng = np.float32(hi32 - lo32)
    if not (rng > 0 and np.isfinite(rng)):
        rng = np.float32(0)
    return lo32, rng


def _resolve_range(xs, value_range):
    """(lo32, rng) of one sample: its own (sample_range) for "per_sample", else the given pair's."""
    if isinstance(value_range, str):
        if value_range != "per_sample":
            raise ValueError(f"value_range must be a pair (lo, hi) or 'per_sample', got {value_range!r}")
        return sample_range(xs)
    return _fixed_range(*value_range)


def _noise(seed, sample, shape_cs, lo32, rng):
    """Fill noise for every (channel, voxel) of a sample: lo32 + rng * uniform01f(w) in float32
    (nominally [lo, hi); the rounded sum can equal hi)."""
    C = shape_cs[0]
    S = int(np.prod(shape_cs[1:]))
    c = np.arange(C, dtype=np.uint64)[:, None]
    v = np.arange(S, dtype=np.uint64)[None, :]
    u = uniform01f(words(seed, sample, NOISE, c, v))
    return (lo32 + rng * u).astype(np.float32).reshape(shape_cs)


def _box_slices(box):
    start, size = box
    return tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))


def _paint_region(p: SampleParams, dims):
    """Bool array of dims: the voxels painting replaces (inside an in-painting box, or outside
    every out-painting window; none without painting)."""
    inside = np.zeros(dims, dtype=bool)
    for box in p.boxes:
        inside[_box_slices(box)] = True
    if p.paint == "none":
        return inside  # no boxes: all False
    return inside if p.paint == "in" else ~inside


def _window_slices(starts, sizes, k):
    return tuple(slice(int(starts[k, a]), int(starts[k, a] + sizes[k, a])) for a in range(starts.shape[1]))


def sample_mask(seed: int, sample: int, dims, probs: _Probabilities, p: SampleParams | None = None):
    """The corruption mask of one sample (docs/SPEC.md, section 4.7), uint8 of shape dims:
    MASK_SHUFFLED where a shuffle window covers the voxel (when the sample's shuffle runs: the
    union of its windows), MASK_PAINTED where painting replaces it. Drawn from the same words as
    the transforms (p: the sample's parameters, if already drawn)."""
    if p is None:
        p = draw_sample_params(seed, sample, dims, probs)
    mask = np.zeros(dims, dtype=np.uint8)
    if p.shuffle:
        starts, sizes = shuffle_windows(seed, sample, dims, probs.num_windows)
        for k in range(probs.num_windows):
            mask[_window_slices(starts, sizes, k)] = MASK_SHUFFLED
    mask[_paint_region(p, dims)] |= MASK_PAINTED
    return mask


def _apply_sample(xs, seed, sample, probs: _Probabilities, value_range):
    """One sample (C, *spatial): returns (input, target, mask) following docs/SPEC.md step by step."""
    dims = xs.shape[1:]
    lo32, rng = _resolve_range(xs, value_range)  # 0. the value range (per sample: of xs itself)
    p = draw_sample_params(seed, sample, dims, probs)
    # 1. flip (shared by input and target)
    target = xs.copy()
    for axis in p.flip_axes:
        target = np.flip(target, axis=1 + axis)
    target = np.ascontiguousarray(target)
    out = target.copy()
    # 2. local pixel shuffling: windows read the untouched volume; the later window wins
    if p.shuffle:
        starts, sizes = shuffle_windows(seed, sample, dims, probs.num_windows)
        for k in range(probs.num_windows):
            sl = _window_slices(starts, sizes, k)
            block = target[(slice(None),) + sl]
            flat = block.reshape(block.shape[0], -1)
            perm = fisher_yates(seed, sample, k, flat.shape[1])
            out[(slice(None),) + sl] = flat[:, perm].reshape(block.shape)
    # 3. non-linear intensity map, computed in float32
    if p.nonlinear and rng > 0:  # rng is 0 only for a per-sample range without spread
        xs_t, ys_t, _ = curve_table(p.ctrl, p.increasing)
        out = _map_in_range(_as_float32(out), xs_t, ys_t, lo32, rng).astype(xs.dtype)
    # 4. painting with per-voxel, per-channel uniform noise
    if p.paint != "none":
        noise = _noise(seed, sample, xs.shape, lo32, rng).astype(xs.dtype)
        out = np.where(_paint_region(p, dims)[None], noise, out)
    return out, target, sample_mask(seed, sample, dims, probs, p)


def _check(x):
    x = np.asarray(x)
    if x.ndim not in (4, 5):
        raise ValueError(f"x: expected (B, C, H, W) or (B, C, D, H, W), got shape {x.shape}")
    if x.dtype not in (np.float16, np.float32, np.float64):
        raise TypeError(f"x: expected a float16/float32/float64 array, got {x.dtype}")
    return x


def _run(x, seed, probs, value_range=(0.0, 1.0), sample_offset=0):
    """(inputs, targets, masks), masks uint8 of shape (B, 1, *spatial)."""
    x = _check(x)
    inputs, targets = np.empty_like(x), np.empty_like(x)
    masks = np.empty((x.shape[0], 1) + x.shape[2:], dtype=np.uint8)
    for b in range(x.shape[0]):
        inputs[b], targets[b], masks[b, 0] = _apply_sample(x[b], seed, sample_offset + b, probs, value_range)
    return inputs, targets, masks


def _single(outputs, return_mask):
    """A single op's result: its output, or (output, mask)."""
    return (outputs[0], outputs[2]) if return_mask else outputs[0]


def _masks(shape, seed, probs, sample_offset, bit):
    """Bool (B, 1, *spatial): bit `bit` of the corruption masks, no image computed."""
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (4, 5):
        raise ValueError(f"shape: expected (B, C, H, W) or (B, C, D, H, W), got {shape}")
    out = np.empty((shape[0], 1) + shape[2:], dtype=bool)
    for b in range(shape[0]):
        out[b, 0] = (sample_mask(seed, sample_offset + b, shape[2:], probs) & bit) != 0
    return out


# Arguments the transforms share, documented once and filled into each docstring by _documented.
_COMMON_ARGS = {
    "x": """x (np.ndarray[B, C, H, W] or np.ndarray[B, C, D, H, W]): float16, float32 or float64
            (for bfloat16 pass its float32 values and round the result once). Not modified.""",
    "seeding": """seed (int): the 64-bit seed, in [0, 2**64). Default 0.
        sample_offset (int): the sample index of x[0] in the random streams. Default 0.""",
    "one_output": """Returns:
        np.ndarray: a new array of x's shape and dtype, equal to the kernels' output.""",
    "masked_output": """return_mask (bool): also return the corruption mask. Default False.

    Returns:
        np.ndarray, or tuple[np.ndarray, np.ndarray] with return_mask: a new array of x's shape
        and dtype, equal to the kernels' output, and the mask, uint8 (B, 1, *spatial) (docs/SPEC.md,
        section 4.7).""",
}


def _documented(fn):
    if fn.__doc__:  # None under python -OO
        fn.__doc__ = fn.__doc__.format(**_COMMON_ARGS)
    return fn


@_documented
def models_genesis(
    x, config: GenesisConfig | None = None, seed: int = 0, sample_offset: int = 0, return_masks: bool = False
):
    """NumPy version of genesis_ops.models_genesis: target = flip(x),
    input = paint(nonlinear(shuffle(target))), from the same words, so equal to the kernels.

    Args:
        {x}
        config (GenesisConfig, optional): probabilities and sizes; None means GenesisConfig().
        {seeding}
        return_masks (bool): also return the corruption mask. Default False.

    Returns:
        tuple[np.ndarray, np.ndarray]: (input, target), new arrays of x's shape and dtype; with
        return_masks, (input, target, mask), mask uint8 of shape (B, 1, *spatial): bit 1 where
        a shuffle window covers the voxel, bit 2 where fill noise replaced it (docs/SPEC.md,
        section 4.7).
    """
    c = config or GenesisConfig()
    probs = _Probabilities(
        flip_p=c.flip_p,
        shuffle_p=c.shuffle_p,
        num_windows=c.num_windows,
        nonlinear_p=c.nonlinear_p,
        paint_p=c.paint_p,
        inpaint_rate=c.inpaint_rate,
    )
    inputs, targets, masks = _run(x, seed, probs, c.value_range, sample_offset)
    return (inputs, targets, masks) if return_masks else (inputs, targets)


def paint_mask(
    shape,
    p: float = 1.0,
    inpaint_rate: float | None = None,
    seed: int = 0,
    sample_offset: int = 0,
    op: str = "models_genesis",
):
    """NumPy version of genesis_ops.paint_mask: the voxels the painting of `op` replaces, as bool
    (B, 1, *spatial), from the same words (p, inpaint_rate, op: see config.paint_gates).

    Args:
        shape (sequence of int): (B, C, H, W) or (B, C, D, H, W).
        p (float): the painting gate of op. Default 1.
        inpaint_rate (float, optional): the fused pipeline's in-painting rate (op="models_genesis"
            only; None means 1).
        {seeding}
        op (str): "models_genesis", "inpaint" or "outpaint". Default "models_genesis".

    Returns:
        np.ndarray: bool, shape (B, 1, *spatial).
    """
    paint_p, rate, inpaint_p, outpaint_p = paint_gates(p, inpaint_rate, op)
    probs = _Probabilities(paint_p=paint_p, inpaint_rate=rate, inpaint_p=inpaint_p, outpaint_p=outpaint_p)
    return _masks(shape, seed, probs, sample_offset, MASK_PAINTED)


def shuffle_mask(shape, p: float = 0.5, num_windows: int = 10000, seed: int = 0, sample_offset: int = 0):
    """NumPy version of genesis_ops.shuffle_mask: the union of the shuffle windows of each sample
    whose shuffle gate passes, as bool (B, 1, *spatial), from the same words as local_shuffle.

    Args:
        shape (sequence of int): (B, C, H, W) or (B, C, D, H, W).
        p (float): probability that a sample is shuffled. Default 0.5.
        num_windows (int): windows per sample. Default 10000.
        {seeding}

    Returns:
        np.ndarray: bool, shape (B, 1, *spatial).
    """
    return _masks(shape, seed, _Probabilities(shuffle_p=p, num_windows=num_windows), sample_offset, MASK_SHUFFLED)


@_documented
def flip(x, p: float = 0.4, seed: int = 0, sample_offset: int = 0):
    """NumPy flip (docs/SPEC.md, section 4.1); same words as genesis_ops.flip.

    Args:
        {x}
        p (float): continue probability of each of up to 3 flips. Default 0.4.
        {seeding}

    {one_output}
    """
    return _run(x, seed, _Probabilities(flip_p=p), sample_offset=sample_offset)[0]


@_documented
def local_shuffle(
    x, p: float = 0.5, num_windows: int = 10000, seed: int = 0, sample_offset: int = 0, return_mask: bool = False
):
    """NumPy local pixel shuffling (docs/SPEC.md, section 4.2); same words as
    genesis_ops.local_shuffle.

    Args:
        {x}
        p (float): probability that a sample is shuffled. Default 0.5.
        num_windows (int): windows per sample. Default 10000.
        {seeding}
        {masked_output}
    """
    return _single(
        _run(x, seed, _Probabilities(shuffle_p=p, num_windows=num_windows), sample_offset=sample_offset), return_mask
    )


@_documented
def nonlinear(x, p: float = 0.9, value_range=(0.0, 1.0), seed: int = 0, sample_offset: int = 0):
    """NumPy Bezier intensity map (docs/SPEC.md, section 4.3); same words as
    genesis_ops.nonlinear.

    Args:
        {x}
        p (float): probability that a sample is mapped. Default 0.9.
        value_range (tuple[float, float] or "per_sample"): (lo, hi), or each sample's own. Default (0, 1).
        {seeding}

    {one_output}
    """
    return _run(x, seed, _Probabilities(nonlinear_p=p), value_range, sample_offset)[0]


@_documented
def inpaint(
    x, p: float = 1.0, value_range=(0.0, 1.0), seed: int = 0, sample_offset: int = 0, return_mask: bool = False
):
    """NumPy in-painting (docs/SPEC.md, section 4.4); same words as genesis_ops.inpaint.

    Args:
        {x}
        p (float): probability that a sample is in-painted. Default 1.
        value_range (tuple[float, float] or "per_sample"): (lo, hi), the fill noise's range, or each
            sample's own. Default (0, 1).
        {seeding}
        {masked_output}
    """
    probs = _Probabilities(paint_p=1.0, inpaint_rate=1.0, inpaint_p=p)
    return _single(_run(x, seed, probs, value_range, sample_offset), return_mask)


@_documented
def outpaint(
    x, p: float = 1.0, value_range=(0.0, 1.0), seed: int = 0, sample_offset: int = 0, return_mask: bool = False
):
    """NumPy out-painting (docs/SPEC.md, section 4.5); same words as genesis_ops.outpaint.

    Args:
        {x}
        p (float): probability that a sample is out-painted. Default 1.
        value_range (tuple[float, float] or "per_sample"): (lo, hi), the fill noise's range, or each
            sample's own. Default (0, 1).
        {seeding}
        {masked_output}
    """
    probs = _Probabilities(paint_p=1.0, inpaint_rate=0.0, outpaint_p=p)
    return _single(_run(x, seed, probs, value_range, sample_offset), return_mask)


def clamp_control_points(cp):
    """Explicit control points are clamped to [0, 1]; NaN counts as 0 (+-inf go to the ends)."""
    return np.where(cp >= 0, np.minimum(cp, 1.0), 0.0)


@_documented
def bezier(x, control_points, increasing, value_range=(0.0, 1.0)):
    """NumPy version of genesis_ops.bezier: sample b is mapped by the curve with
    control_points[b] = (P1x, P1y, P2x, P2y), clamped to [0, 1] (NaN counts as 0), increasing if
    increasing[b].

    Args:
        {x}
        control_points (array-like[B, 4]): control points per sample (clamped as above).
        increasing (array-like[B] of bool): direction per sample.
        value_range (tuple[float, float] or "per_sample"): (lo, hi), or each sample's own. Default (0, 1).

    Returns:
        np.ndarray: a new array of x's shape and dtype.
    """
    x = _check(x)
    cp = clamp_control_points(np.asarray(control_points, dtype=np.float64).reshape(x.shape[0], 4))
    inc = np.asarray(increasing, dtype=bool).reshape(x.shape[0])
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        lo32, rng = _resolve_range(x[b], value_range)
        if not rng > 0:  # a per-sample range without spread: no curve
            out[b] = x[b]
            continue
        xs_t, ys_t, _ = curve_table(tuple(cp[b]), bool(inc[b]))
        out[b] = _map_in_range(_as_float32(x[b]), xs_t, ys_t, lo32, rng).astype(x.dtype)
    return out
