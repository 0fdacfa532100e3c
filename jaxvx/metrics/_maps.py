"""Metrics comparing a relevance map with motion, with another map, or with the map it was filtered from."""

from __future__ import annotations

import functools
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvx._maps import channel_sum

__all__ = ["motion_precision", "motion_mask", "selectivity", "Selectivity", "agreement"]


def _ratio(num, den):
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), jnp.nan)


def motion_mask(motion, *, threshold: float = 0.5) -> jax.Array:
    """Bool ``[B, T, H, W]`` "there is motion here" from a mask, a flow field or a flow magnitude.

    - bool ``[B, T, H, W]``: used as is (e.g. the synthetic benchmark's true ``motion`` mask);
    - float ``[B, T, H, W, 2]``: an optical flow ``(dx, dy)``; motion where ``sqrt(dx^2 + dy^2) > threshold``;
    - float ``[B, T, H, W]``: a flow magnitude; motion where it is ``> threshold``.
    """
    m = jnp.asarray(motion)
    if m.dtype == jnp.bool_:
        if m.ndim != 4:
            raise ValueError(f"a motion mask must be bool [B, T, H, W], got shape {tuple(m.shape)}")
        return m
    if m.ndim == 5 and m.shape[-1] == 2:
        m = jnp.sqrt((m.astype(jnp.float32) ** 2).sum(axis=-1))
    if m.ndim != 4:
        raise ValueError("motion must be a bool mask [B, T, H, W], a flow [B, T, H, W, 2] or a flow magnitude "
                         f"[B, T, H, W], got shape {tuple(m.shape)} dtype {m.dtype}")
    return m > threshold


def motion_precision(relevance, motion, *, threshold: float = 0.5, weighted: bool = False) -> jax.Array:
    """The share of positive relevance that falls where there is motion (Hiley et al.'s precision P).

    With ``R`` the channel-summed map and ``M`` the motion mask (:func:`motion_mask`), per clip:

    - ``weighted=False`` (default): ``P = #{R > 0 and M} / #{R > 0}``, a share of voxels;
    - ``weighted=True``: ``P = sum(R+ * M) / sum(R+)``, a share of positive relevance.

    Args:
        relevance: ``[B, T, H, W, C]`` or ``[B, T, H, W]``.
        motion: a bool mask, a flow ``[B, T, H, W, 2]`` (e.g. :func:`jaxvx.flow.farneback`) or a flow magnitude
            ``[B, T, H, W]``, on the map's grid.
        threshold: flow magnitude in pixels per frame above which a pixel moves. Default 0.5 (above Farneback's
            noise on a static background, below the synthetic benchmark's slowest actors).
        weighted: see above.

    Returns:
        float32 ``[B]``; NaN for a clip without positive relevance.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    r = jnp.asarray(relevance)
    motion = jnp.asarray(motion)
    grid = jax.eval_shape(channel_sum, r).shape
    mask_shape = jax.eval_shape(functools.partial(motion_mask, threshold=0.0), motion).shape
    if mask_shape != grid:
        raise ValueError(f"motion must be on the map's grid {grid}, got shape {tuple(motion.shape)}")
    return _precision(r, motion, float(threshold), weighted=bool(weighted))


@functools.partial(jax.jit, static_argnames=("weighted",))
def _precision(relevance, motion, threshold, *, weighted):
    r = channel_sum(relevance)
    m = motion_mask(motion, threshold=threshold)
    axes = (1, 2, 3)
    if weighted:
        pos = jnp.maximum(r, 0).astype(jnp.float32)
        return _ratio((pos * m).sum(axis=axes), pos.sum(axis=axes))
    pos = r > 0
    return _ratio((pos & m).sum(axis=axes).astype(jnp.float32), pos.sum(axis=axes).astype(jnp.float32))


class Selectivity(NamedTuple):
    """What a transform kept of a map, per clip (float32 ``[B]``, NaN where the base has nothing to keep).

    Attributes:
        positions: the share of the base's non-zero positions ``(t, y, x)`` that are non-zero in the selected map.
        relevance: the share of the base's absolute relevance ``sum |R|`` that the selected map holds.
    """

    positions: jax.Array
    relevance: jax.Array


def selectivity(selected, base) -> Selectivity:
    """The share of positions and the share of relevance that a transform (e.g. selective relevance) keeps.

    A position ``(t, y, x)`` is non-zero when any of its channels is. ``positions = #nonzero(selected) /
    #nonzero(base)``, ``relevance = sum |selected| / sum |base|`` (over all channels).

    Args:
        selected, base: ``[B, T, H, W, C]`` or ``[B, T, H, W]``, the same shape.
    """
    s = jnp.asarray(selected)
    b = jnp.asarray(base)
    if s.shape != b.shape or s.ndim not in (4, 5):
        raise ValueError(f"selected and base must be the same [B, T, H, W(, C)] shape, got {tuple(s.shape)} and "
                         f"{tuple(b.shape)}")
    return _selectivity(s, b)


@jax.jit
def _selectivity(s, b):
    nz_s, nz_b = s != 0, b != 0
    if s.ndim == 5:
        nz_s, nz_b = nz_s.any(axis=-1), nz_b.any(axis=-1)
    axes = tuple(range(1, s.ndim))
    positions = _ratio(nz_s.sum(axis=(1, 2, 3)).astype(jnp.float32), nz_b.sum(axis=(1, 2, 3)).astype(jnp.float32))
    relevance = _ratio(jnp.abs(s).sum(axis=axes).astype(jnp.float32), jnp.abs(b).sum(axis=axes).astype(jnp.float32))
    return Selectivity(positions=positions, relevance=relevance)


def agreement(a, b) -> jax.Array:
    """Overlap of the positive areas of two maps: the Jaccard index ``|A and B| / |A or B|`` per clip.

    ``A = {sum_c a > 0}``, ``B = {sum_c b > 0}`` over ``(t, y, x)``. 1 for identical positive areas, 0 for
    disjoint ones.

    Args:
        a, b: ``[B, T, H, W, C]`` or ``[B, T, H, W]`` (each may have channels or not; grids must match).

    Returns:
        float32 ``[B]``; NaN where neither map has positive relevance.
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    ga = jax.eval_shape(functools.partial(channel_sum, name="a"), a).shape
    gb = jax.eval_shape(functools.partial(channel_sum, name="b"), b).shape
    if ga != gb:
        raise ValueError(f"a and b must be on the same [B, T, H, W] grid, got {ga} and {gb}")
    return _agreement(a, b)


@jax.jit
def _agreement(a, b):
    pa = channel_sum(a) > 0
    pb = channel_sum(b) > 0
    axes = (1, 2, 3)
    return _ratio((pa & pb).sum(axis=axes).astype(jnp.float32), (pa | pb).sum(axis=axes).astype(jnp.float32))
