"""Reductions over channels, sign selection and per-clip normalisations of relevance maps."""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp

from jaxvx.transforms._base import as_map, clip_axes, named

__all__ = [
    "sum_channels", "max_channels", "positive", "negative", "absolute",
    "normalize_minmax", "normalize_absmax", "normalize_percentile",
]


def _rank5(relevance):
    return as_map(relevance, ranks=(5,))


def sum_channels():
    """Transform ``[B, T, H, W, C] -> [B, T, H, W, 1]``: the sum over channels (the usual heatmap of a signed map),
    the channel axis kept (every map has one: :mod:`jaxvx._maps`)."""

    def transform(relevance):
        return _rank5(relevance).sum(axis=-1, keepdims=True)

    return named(transform, "sum_channels()")


def max_channels():
    """Transform ``[B, T, H, W, C] -> [B, T, H, W, 1]``: the maximum over channels (as for gradient saliency maps),
    the channel axis kept."""

    def transform(relevance):
        return _rank5(relevance).max(axis=-1, keepdims=True)

    return named(transform, "max_channels()")


def positive():
    """Transform keeping the positive part ``max(R, 0)``; any shape."""

    def transform(relevance):
        return jnp.maximum(jnp.asarray(relevance), 0)

    return named(transform, "positive()")


def negative():
    """Transform keeping the magnitude of the negative part ``max(-R, 0)``; any shape."""

    def transform(relevance):
        return jnp.maximum(-jnp.asarray(relevance), 0)

    return named(transform, "negative()")


def absolute():
    """Transform ``|R|``; any shape."""

    def transform(relevance):
        return jnp.abs(jnp.asarray(relevance))

    return named(transform, "absolute()")


def _batched(relevance):
    relevance = jnp.asarray(relevance)
    if relevance.ndim < 2:
        raise ValueError(f"relevance must be batched [B, ...] (rank >= 2), got shape {tuple(relevance.shape)}")
    if not jnp.issubdtype(relevance.dtype, jnp.floating):
        relevance = relevance.astype(jnp.float32)
    return relevance


def normalize_minmax():
    """Per-clip min-max normalisation to [0, 1]: ``(R - min) / (max - min)`` over all non-batch axes.

    A constant clip maps to 0 everywhere (not NaN). Any shape ``[B, ...]``.
    """

    def transform(relevance):
        return _minmax(_batched(relevance))

    return named(transform, "normalize_minmax()")


def normalize_absmax():
    """Per-clip symmetric normalisation to [-1, 1]: ``R / max |R|`` (0 keeps its meaning; for diverging colour maps).

    An all-zero clip stays 0. Any shape ``[B, ...]``.
    """

    def transform(relevance):
        return _absmax(_batched(relevance))

    return named(transform, "normalize_absmax()")


def normalize_percentile(q: float = 99.5):
    """Per-clip robust symmetric normalisation: ``clip(R / percentile(|R|, q), -1, 1)``.

    A few extreme values no longer wash out the rest of the map. The percentile is NumPy's default (linear
    interpolation) over all non-batch axes of the clip; a clip whose percentile is 0 maps to
    ``clip(R / max|R|, -1, 1)`` (and an all-zero clip stays 0).

    Args:
        q: percentile in (0, 100]. Default 99.5.
    """
    if isinstance(q, bool) or not isinstance(q, numbers.Real) or not math.isfinite(q) or not 0 < q <= 100:
        raise ValueError(f"q must be a percentile in (0, 100], got {q!r}")
    q = float(q)

    def transform(relevance):
        return _percentile(_batched(relevance), q)

    return named(transform, f"normalize_percentile(q={q:g})")


@jax.jit
def _minmax(r):
    axes = clip_axes(r)
    lo = r.min(axis=axes, keepdims=True)
    span = r.max(axis=axes, keepdims=True) - lo
    return jnp.where(span > 0, (r - lo) / jnp.where(span > 0, span, 1), 0)


@jax.jit
def _absmax(r):
    scale = jnp.abs(r).max(axis=clip_axes(r), keepdims=True)
    return jnp.where(scale > 0, r / jnp.where(scale > 0, scale, 1), 0)


@jax.jit
def _percentile(r, q):
    axes = clip_axes(r)
    mag = jnp.abs(r)
    scale = jnp.percentile(mag.reshape(mag.shape[0], -1), q, axis=1).reshape((-1,) + (1,) * (r.ndim - 1))
    scale = jnp.where(scale > 0, scale, mag.max(axis=axes, keepdims=True))
    return jnp.where(scale > 0, jnp.clip(r / jnp.where(scale > 0, scale, 1), -1, 1), 0)
