"""Temporal analysis of relevance (Anders et al.): the share of relevance per frame and its border/lookahead fits."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxvx._checks import check_int
from jaxvx.transforms._base import named

__all__ = ["frame_share", "frame_relevance", "fit_border_lookahead", "BorderLookaheadFit"]


def frame_relevance(relevance) -> jax.Array:
    """``R_t``: relevance summed over everything but batch and time. ``[B, T, ...] -> [B, T]`` (float)."""
    relevance = jnp.asarray(relevance)
    if relevance.ndim < 2:
        raise ValueError(f"relevance must be [B, T, ...] (rank >= 2), got shape {tuple(relevance.shape)}")
    if not jnp.issubdtype(relevance.dtype, jnp.floating):
        relevance = relevance.astype(jnp.float32)
    return relevance.reshape(relevance.shape[:2] + (-1,)).sum(axis=-1)


def frame_share():
    """The share of relevance in each frame (Anders et al.) as a transform ``relevance -> [B, T]``.

    ``R_t = sum over pixels (and channels) of R[t]`` and ``P_t = R_t / sum_t' R_t'``; the ``P_t`` of a clip sum to 1.
    The relevance is signed as given: chain :func:`positive` or :func:`absolute` before it for the share of positive
    or absolute relevance. A clip whose total relevance is exactly 0 gets ``P_t = 0`` for every t (not NaN).

    Returns:
        A function ``relevance [B, T, ...] -> float [B, T]``, jit- and vmap-able.
    """

    def transform(relevance):
        return _share(frame_relevance(relevance))

    return named(transform, "frame_share()")


@jax.jit
def _share(r_t):
    total = r_t.sum(axis=1, keepdims=True)
    safe = jnp.where(total == 0, 1.0, total)
    return jnp.where(total == 0, 0.0, r_t / safe)


@dataclasses.dataclass(frozen=True)
class BorderLookaheadFit:
    """Least-squares fits of the mean frame share, with bootstrap confidence intervals over clips.

    Attributes:
        t: float64 ``[T]``, the abscissa of the fits (frame indices ``0 .. T-1`` unless given).
        mean: float64 ``[T]``, the mean ``P_t`` over clips.
        quadratic: ``(B, C, D)`` of ``q(t) = B t^2 + C t + D``; ``border = B``.
        linear: ``(L, A)`` of ``l(t) = L t + A``; ``lookahead = L``.
        quadratic_ci, linear_ci: ``[3, 2]`` and ``[2, 2]``: (low, high) of each coefficient.
        border_ci, lookahead_ci: ``(low, high)`` of ``B`` and ``L``.
        num_clips: number of clips ``N``; ``num_bootstrap`` resamples; ``confidence`` level.
    """

    t: np.ndarray
    mean: np.ndarray
    quadratic: np.ndarray
    linear: np.ndarray
    quadratic_ci: np.ndarray
    linear_ci: np.ndarray
    num_clips: int
    num_bootstrap: int
    confidence: float

    @property
    def border(self) -> float:
        return float(self.quadratic[0])

    @property
    def lookahead(self) -> float:
        return float(self.linear[0])

    @property
    def border_ci(self) -> tuple[float, float]:
        return float(self.quadratic_ci[0, 0]), float(self.quadratic_ci[0, 1])

    @property
    def lookahead_ci(self) -> tuple[float, float]:
        return float(self.linear_ci[0, 0]), float(self.linear_ci[0, 1])

    def quadratic_curve(self, t=None) -> np.ndarray:
        t = self.t if t is None else np.asarray(t, dtype=np.float64)
        b, c, d = self.quadratic
        return b * t**2 + c * t + d

    def linear_curve(self, t=None) -> np.ndarray:
        t = self.t if t is None else np.asarray(t, dtype=np.float64)
        slope, intercept = self.linear
        return slope * t + intercept

    def to_dict(self) -> dict:
        """JSON-able summary."""
        return {
            "border": self.border, "border_ci": list(self.border_ci),
            "lookahead": self.lookahead, "lookahead_ci": list(self.lookahead_ci),
            "quadratic": self.quadratic.tolist(), "linear": self.linear.tolist(),
            "mean": self.mean.tolist(), "t": self.t.tolist(),
            "num_clips": self.num_clips, "num_bootstrap": self.num_bootstrap, "confidence": self.confidence,
        }


def fit_border_lookahead(shares, *, t=None, num_bootstrap: int = 1000, confidence: float = 0.95,
                         seed: int = 0) -> BorderLookaheadFit:
    """Border effect and lookahead of the frame shares ``P`` of many clips (Anders et al.).

    The mean share ``P̄_t`` over clips is fitted by least squares with a quadratic ``q(t) = B t^2 + C t + D`` (the
    border effect ``B``: relevance piling up at both ends of the clip gives ``B > 0``) and a line
    ``l(t) = L t + A`` (the lookahead ``L``: relevance drifting towards later frames gives ``L > 0``). Confidence
    intervals: percentile bootstrap over clips (clips resampled with replacement ``num_bootstrap`` times, both fits
    redone on each resample's mean). The fits are linear in ``P̄``, so every resample costs one small matrix product.
    Host-side NumPy in float64 (a statistic over a whole run, not a per-clip transform).

    Args:
        shares: ``[N, T]`` frame shares (the output of :func:`frame_share` for N clips), ``N >= 1``, ``T >= 3``.
        t: abscissa ``[T]``; default the frame indices ``0 .. T-1``.
        num_bootstrap: number of bootstrap resamples (``>= 1``). Default 1000.
        confidence: two-sided level of the intervals, in (0, 1). Default 0.95.
        seed: seed of the resampling (NumPy ``default_rng``). Default 0.

    Returns:
        :class:`BorderLookaheadFit`.
    """
    p = np.asarray(shares, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"shares must be [N, T] (frame shares of N clips), got shape {p.shape}")
    n, length = p.shape
    if n < 1 or length < 3:
        raise ValueError(f"shares must have N >= 1 clips and T >= 3 frames for a quadratic fit, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("shares must be finite; found NaN or inf")
    check_int("num_bootstrap", num_bootstrap)
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    tt = np.arange(length, dtype=np.float64) if t is None else np.asarray(t, dtype=np.float64)
    if tt.shape != (length,):
        raise ValueError(f"t must have shape [T] = ({length},), got {tt.shape}")

    design_q = np.stack([tt**2, tt, np.ones_like(tt)], axis=1)
    design_l = np.stack([tt, np.ones_like(tt)], axis=1)
    solve_q = np.linalg.pinv(design_q)  # [3, T]
    solve_l = np.linalg.pinv(design_l)  # [2, T]

    mean = p.mean(axis=0)
    rng = np.random.default_rng(seed)
    # resample counts instead of index arrays: [num_bootstrap, N] @ [N, T] stays small for large N
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=num_bootstrap).astype(np.float64)
    boot_means = counts @ p / n  # [num_bootstrap, T]
    boot_q = boot_means @ solve_q.T
    boot_l = boot_means @ solve_l.T
    alpha = (1.0 - float(confidence)) / 2.0
    q_ci = np.quantile(boot_q, [alpha, 1.0 - alpha], axis=0).T
    l_ci = np.quantile(boot_l, [alpha, 1.0 - alpha], axis=0).T
    return BorderLookaheadFit(
        t=tt, mean=mean, quadratic=solve_q @ mean, linear=solve_l @ mean, quadratic_ci=q_ci, linear_ci=l_ci,
        num_clips=n, num_bootstrap=int(num_bootstrap), confidence=float(confidence),
    )
