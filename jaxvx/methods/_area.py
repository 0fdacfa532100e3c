"""The area loss of extremal perturbation: a mask's sorted values against a zeros-then-ones template.

For a mask of ``N`` values and an area fraction ``a``, the template is ``int(N (1 - a))`` zeros then ones; the loss
``mean((sort(m) - template)^2)`` is 0 exactly when the mask keeps ``N - int(N (1 - a))`` values at 1 and the rest
at 0, whatever their place (TorchRay's, and Li et al.'s over a clip's whole volume or per frame).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["area_loss", "area_template", "area_zeros"]

_ONE_BITS = int(np.float32(1.0).view(np.int32))


def area_template(num: int, areas: Sequence[float]) -> np.ndarray:
    """The sorted-mask target ``[A, num]`` float32: ``int(num (1 - a))`` zeros then ones, for each area ``a``."""
    ref = np.ones((len(areas), num), np.float32)
    for i, a in enumerate(areas):
        ref[i, : int(num * (1 - a))] = 0
    return ref


def _kth_smallest_bits(bits: jax.Array, rank: jax.Array) -> jax.Array:
    """The ``rank``-th smallest (0-based) of the int32 ``bits`` along the last axis, by bisection on the value.

    ``bits`` are the bit patterns of floats in [0, 1] (ordered as the floats); 31 halvings of ``[0, bits(1.0)]``.
    """
    lo = jnp.zeros(bits.shape[:-1], jnp.int32)
    hi = jnp.full(bits.shape[:-1], _ONE_BITS, jnp.int32)

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = jnp.sum(bits <= mid[..., None], axis=-1) >= rank + 1
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    return jax.lax.fori_loop(0, 31, halve, (lo, hi))[0]


def area_loss(masks: jax.Array, num_zeros) -> jax.Array:
    """TorchRay's area loss ``mean((sort(m) - template)^2)`` over the last axis, the template being ``num_zeros``
    zeros then ones (:func:`area_template`); ``masks`` ``[..., N]`` in [0, 1], ``num_zeros`` broadcastable to
    ``masks.shape[:-1]``. Returns ``masks.shape[:-1]``.

    Sorting only permutes, so the loss is ``mean((m - o)^2)`` with ``o_i = 1`` for the elements a stable ascending
    sort puts at positions ``>= num_zeros`` (ties in index order, as ``jnp.sort``). ``o`` needs only the
    ``num_zeros``-th smallest value, found by bisection on the floats' bit patterns: the same value and gradient as
    differentiating through ``jnp.sort``, and faster on CPU, where XLA's sort is slow (docs/performance.md).
    """
    m = jnp.asarray(masks) + 0.0  # -0.0 -> +0.0, so that bit patterns order as the values
    n = m.shape[-1]
    bits = jax.lax.bitcast_convert_type(jax.lax.stop_gradient(m), jnp.int32)
    zeros = jnp.broadcast_to(jnp.asarray(num_zeros, jnp.int32), m.shape[:-1])
    tau = _kth_smallest_bits(bits, jnp.minimum(zeros, n - 1))[..., None]
    below = jnp.sum(bits < tau, axis=-1, keepdims=True)
    tied = bits == tau
    tie_rank = jnp.cumsum(tied, axis=-1, dtype=jnp.int32) - tied
    ones = (bits > tau) | (tied & (tie_rank >= zeros[..., None] - below))
    ones = ones & (zeros < n)[..., None]
    return jnp.mean((m - ones) ** 2, axis=-1)


def area_zeros(num: int, areas: Sequence[float]) -> np.ndarray:
    """``int(num (1 - a))`` for each area: the zeros of TorchRay's template (int32 ``[A]``)."""
    return np.array([int(num * (1 - a)) for a in areas], np.int32)
