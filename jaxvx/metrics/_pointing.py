"""Spatial and temporal pointing games (Li et al., WACV 2021; Zhang et al.'s pointing game extended to video)."""

from __future__ import annotations

import functools
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvx._maps import channel_sum

__all__ = [
    "PointingResult", "spatial_pointing_game", "temporal_pointing_game", "argmax_point", "pointing_accuracy",
    "SHAPES", "TIES",
]

SHAPES = ("disk", "box")
TIES = ("first", "centroid")


class PointingResult(NamedTuple):
    """Hits of a pointing game and which entries count (a pytree: it passes through ``jax.jit``).

    Attributes:
        hits: bool, ``[B, T]`` (spatial: one entry per frame) or ``[B]`` (temporal: one per clip).
        valid: bool, same shape: the entries that have ground truth; the others are left out of every score.
    """

    hits: jax.Array
    valid: jax.Array

    def clip_scores(self) -> jax.Array:
        """Per clip: hits / valid entries, float ``[B]``; NaN for a clip without any valid entry."""
        hits = jnp.asarray(self.hits)
        valid = jnp.asarray(self.valid)
        if hits.ndim == 1:
            return jnp.where(valid, hits.astype(jnp.float32), jnp.nan)
        n = valid.sum(axis=1)
        h = (hits & valid).sum(axis=1)
        return jnp.where(n > 0, h / jnp.maximum(n, 1), jnp.nan)


def argmax_point(relevance) -> tuple[jax.Array, jax.Array]:
    """Per frame, the ``(x, y)`` = (column, row) of the map's maximum (channels summed first).

    ``relevance`` ``[B, T, H, W(, C)]``; the flat argmax over ``H * W`` in row-major order gives row
    ``y = i // W`` and column ``x = i % W`` (the order Li et al.'s code swapped). Ties go to the first in row-major
    order. Returns int32 ``x [B, T]`` and ``y [B, T]``.
    """
    r = channel_sum(relevance)
    b, t, h, w = r.shape
    flat = jnp.argmax(r.reshape(b, t, h * w), axis=-1).astype(jnp.int32)
    return flat % w, flat // w


def _check_tolerance(tolerance) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or not math.isfinite(tolerance) \
            or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number of pixels >= 0, got {tolerance!r}")
    return float(tolerance)


def spatial_pointing_game(relevance, boxes, *, tolerance: float = 7, shape: str = "disk",
                          present=None, ties: str = "first") -> PointingResult:
    """Spatial pointing game: per annotated frame, is the map's maximum within ``tolerance`` px of the box?

    For every frame, the argmax point ``(x, y)`` of the channel-summed map (:func:`argmax_point`) is a hit when

    - ``shape="disk"`` (TorchRay's pointing game): some pixel of the box lies within Euclidean distance
      ``tolerance`` of the point, i.e. the distance from the point to the box, ``sqrt(dx^2 + dy^2)`` with
      ``dx = max(x_min - x, 0, x - x_max)`` (likewise dy), is ``<= tolerance``;
    - ``shape="box"`` (Li et al.): the point lies in the box grown by ``tolerance`` on every side,
      ``max(dx, dy) <= tolerance``.

    Frames without a box (``present`` False, or a box with ``x_min < 0``, the ``-1`` rows of
    :mod:`jaxvx.data`) are left out: their ``valid`` is False. Li et al.'s evaluation code swaps the argmax's row and
    column and scores such frames anyway; neither happens here.

    Args:
        relevance: ``[B, T, H, W, C]`` or ``[B, T, H, W]``.
        boxes: ``[B, T, 4]`` ``(x_min, y_min, x_max, y_max)`` in pixel indices of the map, max inclusive.
        tolerance: pixels, ``>= 0``. Default 7 (Li et al. for 112-px frames; TorchRay's 2D default is 15).
        shape: ``"disk"`` (default) or ``"box"``.
        present: optional bool ``[B, T]``; frames where it is False are left out.
        ties: where a frame's maximum is shared by several pixels (a saturated mask, a map upsampled from a coarse
            grid, a map constant over the frame): ``"first"`` (default) points at the first of them in row-major
            order, the top-left one, as ``argmax`` does; ``"centroid"`` at the mean ``(x, y)`` of all of them
            (pixels within ``1e-6`` of the maximum, relative), which need not be one of them.

    Returns:
        :class:`PointingResult` with ``hits`` and ``valid`` bool ``[B, T]``. Aggregate with :func:`pointing_accuracy`
        (per-class mean and overall) or ``.clip_scores()``.
    """
    tolerance = _check_tolerance(tolerance)
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    r = channel_sum(relevance)
    boxes = jnp.asarray(boxes)
    if boxes.shape != r.shape[:2] + (4,):
        raise ValueError(f"boxes must be [B, T, 4] = {r.shape[:2] + (4,)} to match relevance {tuple(r.shape)}, "
                         f"got {tuple(boxes.shape)}")
    if present is None:
        present = jnp.ones(r.shape[:2], bool)
    present = jnp.asarray(present)
    if present.shape != r.shape[:2]:
        raise ValueError(f"present must be [B, T] = {r.shape[:2]}, got {tuple(present.shape)}")
    return _spatial(r, boxes, present.astype(bool), tolerance, shape=shape, ties=ties)


def _tie_centroid(relevance) -> tuple[jax.Array, jax.Array]:
    """Per frame, the mean ``(x, y)`` of the pixels at the frame's maximum (within 1e-6 of it, relative)."""
    r = channel_sum(relevance)
    h, w = r.shape[2:]
    m = r.max(axis=(2, 3), keepdims=True)
    tied = (r >= m - 1e-6 * jnp.abs(m)).astype(jnp.float32)
    n = tied.sum(axis=(2, 3))
    x = (tied * jnp.arange(w, dtype=jnp.float32)).sum(axis=(2, 3)) / n
    y = (tied * jnp.arange(h, dtype=jnp.float32)[:, None]).sum(axis=(2, 3)) / n
    return x, y


@functools.partial(jax.jit, static_argnames=("shape", "ties"))
def _spatial(r, boxes, present, tolerance, *, shape, ties="first"):
    x, y = argmax_point(r) if ties == "first" else _tie_centroid(r)
    x = x.astype(jnp.float32)
    y = y.astype(jnp.float32)
    x0, y0, x1, y1 = (boxes[..., i].astype(jnp.float32) for i in range(4))
    dx = jnp.maximum(jnp.maximum(x0 - x, x - x1), 0.0)
    dy = jnp.maximum(jnp.maximum(y0 - y, y - y1), 0.0)
    if shape == "disk":
        hits = dx * dx + dy * dy <= tolerance * tolerance
    else:
        hits = jnp.maximum(dx, dy) <= tolerance
    valid = (x0 >= 0) & (y0 >= 0) & (x1 >= x0) & (y1 >= y0) & present
    return PointingResult(hits=hits & valid, valid=valid)


def temporal_pointing_game(relevance, segment) -> PointingResult:
    """Temporal pointing game: does the frame with the largest summed relevance lie in the ground-truth segment?

    The map is summed over every axis after time (``[B, T, ...] -> [B, T]``; a temporal saliency ``[B, T]`` such
    as :func:`jaxvx.transforms.frame_share`'s output is used as is); its argmax over time (ties: the first frame) is
    a hit when it lies in the segment.

    Args:
        relevance: ``[B, T, ...]``.
        segment: int ``[B, 2]`` ``(start, end)`` with ``end`` exclusive, in the clip's frame indices, or a bool mask
            ``[B, T]`` of the frames in the segment (use the mask when the clip's frames were sampled from a longer
            video: ``mask = (start <= idx) & (idx < end)``).

    Returns:
        :class:`PointingResult` with ``hits`` and ``valid`` bool ``[B]``; ``valid`` is False for an empty segment.
    """
    r = jnp.asarray(relevance)
    if r.ndim < 2:
        raise ValueError(f"relevance must be [B, T, ...], got shape {tuple(r.shape)}")
    b, t = r.shape[:2]
    segment = jnp.asarray(segment)
    if segment.dtype == jnp.bool_:
        if segment.shape != (b, t):
            raise ValueError(f"segment mask must be bool [B, T] = {(b, t)}, got {tuple(segment.shape)}")
    elif segment.shape != (b, 2):
        raise ValueError(f"segment must be int [B, 2] (start, end exclusive) = {(b, 2)} or a bool mask [B, T], "
                         f"got shape {tuple(segment.shape)} dtype {segment.dtype}")
    return _temporal(r, segment)


@jax.jit
def _temporal(r, segment):
    b, t = r.shape[:2]
    r_t = r.reshape(b, t, -1).sum(axis=-1)
    if segment.dtype == jnp.bool_:
        inside = segment
    else:
        frames = jnp.arange(t)
        inside = (frames[None] >= segment[:, :1]) & (frames[None] < segment[:, 1:])
    peak = jnp.argmax(r_t, axis=1)
    hits = jnp.take_along_axis(inside, peak[:, None], axis=1)[:, 0]
    valid = inside.any(axis=1)
    return PointingResult(hits=hits & valid, valid=valid)


def pointing_accuracy(hits, valid, labels, num_classes: int | None = None) -> dict:
    """Aggregate pointing-game hits: overall accuracy and the per-class mean (Li et al.'s score).

    Per class ``k``: ``acc_k = hits / (hits + misses)`` over every valid entry (frame or clip) of the clips labelled
    ``k``; the class mean is the mean of ``acc_k`` over the classes that have at least one valid entry. Overall:
    all valid hits over all valid entries. Host-side NumPy.

    Args:
        hits, valid: bool ``[N]`` or ``[N, T]`` (from :func:`spatial_pointing_game` / :func:`temporal_pointing_game`,
            possibly concatenated over batches).
        labels: int ``[N]``, each clip's class.
        num_classes: number of classes ``K``; default ``max(labels) + 1``.

    Returns:
        ``{"overall": float, "class_mean": float, "per_class": float64 [K] (NaN for classes without entries),
        "counts": int64 [K] valid entries per class, "num_valid": int}``; scores are NaN when nothing is valid.
    """
    hits = np.asarray(hits, dtype=bool)
    valid = np.asarray(valid, dtype=bool)
    labels = np.asarray(labels).astype(np.int64)
    if hits.shape != valid.shape:
        raise ValueError(f"hits and valid must have the same shape, got {hits.shape} and {valid.shape}")
    if hits.ndim == 1:
        hits, valid = hits[:, None], valid[:, None]
    if hits.ndim != 2 or labels.shape != (hits.shape[0],):
        raise ValueError(f"labels must be [N] = ({hits.shape[0]},) matching hits {hits.shape}, got {labels.shape}")
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}), got values in [{labels.min()}, {labels.max()}]")
    per_clip_hits = (hits & valid).sum(axis=1)
    per_clip_valid = valid.sum(axis=1)
    class_hits = np.bincount(labels, weights=per_clip_hits, minlength=k)
    counts = np.bincount(labels, weights=per_clip_valid, minlength=k).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, class_hits / np.maximum(counts, 1), np.nan)
    total = int(per_clip_valid.sum())
    present = counts > 0
    return {
        "overall": float(per_clip_hits.sum() / total) if total else float("nan"),
        "class_mean": float(per_class[present].mean()) if present.any() else float("nan"),
        "per_class": per_class,
        "counts": counts,
        "num_valid": total,
    }
