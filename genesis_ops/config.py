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
        value_range (tuple[float, float] or "per_sample"): (lo, hi), the range the data lives
            in: the curve's domain and the fill noise's range; or "per_sample", each sample's own
            min and max over all its channels (for z-scored data). Default (0, 1).
    """

    flip_p: float = 0.4
    shuffle_p: float = 0.5
    num_windows: int = 10000
    nonlinear_p: float = 0.9
    paint_p: float = 0.9
    inpaint_rate: float = 0.2
    value_range: tuple[float, float] | str = (0.0, 1.0)


# The ops whose painting paint_mask reproduces (its `op` argument).
PAINT_MASK_OPS = ("models_genesis", "inpaint", "outpaint")


def paint_gates(p: float, inpaint_rate: float | None, op: str) -> tuple[float, float, float, float]:
    """The painting stage's gates (paint_p, inpaint_rate, inpaint_p, outpaint_p) of `op` with
    argument p, as the ops draw them (docs/SPEC.md, sections 2 and 3.3). Shared by
    genesis_ops.paint_mask and reference.paint_mask, so that both mean the same call:

    * ``op="models_genesis"``: p is the pipeline's paint gate ``config.paint_p`` (paint word 0) and
      inpaint_rate ``config.inpaint_rate`` (paint word 1; None means 1, in-painting always); the
      own gates of in- and out-painting are 1 there, as in the pipeline.
    * ``op="inpaint"`` / ``"outpaint"``: p is that op's own gate (inpaint or outpaint word 0);
      painting always runs and is in- (out-) painting, so inpaint_rate must be None.

    With p = 1 the three agree: every gate passes and only the boxes are drawn.
    """
    if op not in PAINT_MASK_OPS:
        raise ValueError(f"op must be one of {', '.join(map(repr, PAINT_MASK_OPS))}, got {op!r}")
    if op == "models_genesis":
        return p, 1.0 if inpaint_rate is None else inpaint_rate, 1.0, 1.0
    if inpaint_rate is not None:
        raise ValueError(
            f"inpaint_rate must be None with op={op!r} (it implies {1 if op == 'inpaint' else 0}); "
            "it is the fused pipeline's argument (op='models_genesis')"
        )
    return (1.0, 1.0, p, 1.0) if op == "inpaint" else (1.0, 0.0, 1.0, p)
