"""The pipeline configuration (paper defaults), shared by the ops and the NumPy reference."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GenesisConfig:
    """Probabilities and sizes of the Models Genesis pipeline; defaults are the paper's.

    target = flip(x);  input = paint(nonlinear(shuffle(target)))

    flip_p: continue probability of each of up to 3 flips of a random spatial axis.
    shuffle_p: probability that local pixel shuffling is applied to a sample.
    num_windows: shuffle windows per sample.
    nonlinear_p: probability of the Bezier intensity map.
    paint_p: probability of painting; then in-painting with probability inpaint_rate,
        otherwise out-painting (never both).
    value_range: (lo, hi), the range the data lives in (curve domain, fill-noise range).
    """

    flip_p: float = 0.4
    shuffle_p: float = 0.5
    num_windows: int = 10000
    nonlinear_p: float = 0.9
    paint_p: float = 0.9
    inpaint_rate: float = 0.2
    value_range: tuple[float, float] = (0.0, 1.0)
