"""Shared helpers of the transforms: shape checks on relevance maps and naming of transform closures."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["as_map", "named", "clip_axes"]


def as_map(relevance, name: str = "relevance", *, ranks=(4, 5)) -> jax.Array:
    """``relevance`` as a floating jnp array of one of ``ranks``, or a ValueError naming the shape."""
    relevance = jnp.asarray(relevance)
    if relevance.ndim not in ranks:
        layouts = {2: "[B, T]", 4: "[B, T, H, W]", 5: "[B, T, H, W, C]"}
        want = " or ".join(layouts.get(r, f"rank {r}") for r in ranks)
        raise ValueError(f"{name} must be {want}, got shape {tuple(relevance.shape)}")
    if not jnp.issubdtype(relevance.dtype, jnp.floating):
        relevance = relevance.astype(jnp.float32)
    return relevance


def clip_axes(x: jax.Array) -> tuple[int, ...]:
    """Every axis but the leading batch axis."""
    return tuple(range(1, x.ndim))


def named(fn: Callable, name: str) -> Callable:
    """Give a transform closure a readable name (shown in reprs, error messages and the pipeline's results)."""
    fn.__name__ = name
    fn.__qualname__ = name
    return fn
