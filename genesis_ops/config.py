"""The pipeline configuration (paper defaults), shared by the ops and the NumPy reference."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GenesisConfig:
    """Probabilities and sizes of the Models Genesis pipeline; defaults are the paper's.

        target = flip(x);  input = paint(nonlinear(shuffle(target)))

    Frozen (hashable); used by models_genesis, ModelsGenesis and reference.models_genesis.
    Values are checked when an op runs, not here.

    Args:
        flip_p (float): continue probability of each of up to 3 flips of a uniformly chosen
            spatial axis, in [0, 1]. Default 0.4.
        shuffle_p (float): probability that local pixel shuffling is applied to a sample,
            in [0, 1]. Default 0.5.
        num_windows (int): shuffle windows per sample, in [0, 10**7]. Default 10000.
        nonlinear_p (float): probability of the Bezier intensity map, in [0, 1]. Default 0.9.
        paint_p (float): probability of painting, in [0, 1]. Default 0.9.
        inpaint_rate (float): probability that painting is in-painting; otherwise it is
            out-painting (never both). Default 0.2.
        value_range (tuple[float, float]): (lo, hi), the range the data lives in: the curve's
            domain and the fill noise's range. Default (0, 1).
    """

    flip_p: float = 0.4
    shuffle_p: float = 0.5
    num_windows: int = 10000
    nonlinear_p: float = 0.9
    paint_p: float = 0.9
    inpaint_rate: float = 0.2
    value_range: tuple[float, float] = (0.0, 1.0)
