"""Summary statistics over clips: means with percentile-bootstrap confidence intervals."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxvx._checks import check_int

__all__ = ["MeanCI", "bootstrap_ci"]


class MeanCI(NamedTuple):
    """A mean over clips with its confidence interval; ``n`` counts the finite values used (NaNs are left out)."""

    mean: float
    low: float
    high: float
    n: int


def bootstrap_ci(values, *, num_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> MeanCI:
    """Mean of ``values`` with a percentile-bootstrap confidence interval.

    NaN values (clips where a metric is undefined, e.g. a pointing game on a clip without boxes) are left out. The
    mean of each of ``num_resamples`` resamples (drawn with replacement, NumPy ``default_rng(seed)``) is computed
    and the interval is their ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles. With one value the
    interval is that value; with none, everything is NaN and ``n = 0``.

    Args:
        values: array-like of numbers (any shape; flattened).
        num_resamples: ``>= 1``. Default 1000.
        confidence: in (0, 1). Default 0.95.
        seed: resampling seed. Default 0.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    check_int("num_resamples", num_resamples)
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return MeanCI(float("nan"), float("nan"), float("nan"), 0)
    mean = float(v.mean())
    if n == 1:
        return MeanCI(mean, mean, mean, 1)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=num_resamples)
    means = counts @ v / n
    alpha = (1.0 - float(confidence)) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return MeanCI(mean, float(low), float(high), n)
