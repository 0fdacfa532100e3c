"""Relevance maps: the one output contract of every explanation method, and its reduction over channels.

Every method of :mod:`jaxvx.methods` returns a float array ``relevance`` of rank 5, ``[B, T, H, W, C']``, on the
video's grid ``[B, T, H, W]``: ``C' = C`` (the video's channels) for the methods that attribute each input value
(gradients, LRP, guided backprop, guided Grad-CAM), ``C' = 1`` for those that score a place in the clip without
channels (Grad-CAM, saliency tubes, excitation backprop at a layer, occlusion, frame masking, TSR, extremal
perturbation, EP-3D, STEP).
A transform maps such a map to another (``sum_channels`` keeps a channel axis of 1); the per-frame reductions
(``frame_share``) end a chain with ``[B, T]``.

The consumers of maps (metrics, pictures, the pipeline) reduce them with :func:`channel_sum`, the one place that
turns ``[B, T, H, W, C']`` into the ``[B, T, H, W]`` grid, ``R[b, t, y, x] = sum_c R[b, t, y, x, c]``; it also takes
a map already reduced (``[B, T, H, W]``), the form a user's own array may have.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["LAYOUT", "channel_sum", "check_map"]

#: the layout of every method's output
LAYOUT = "[B, T, H, W, C]"


def check_map(relevance, video_shape, *, name: str = "relevance") -> None:
    """A ValueError unless ``relevance`` (an array or its ``ShapeDtypeStruct``) is ``[B, T, H, W, C']`` on the grid
    of a video of shape ``video_shape`` ``[B, T, H, W, C]``, with ``C' in (C, 1)``."""
    shape = tuple(relevance.shape)
    b, t, h, w, c = video_shape
    if len(shape) != 5 or shape[:4] != (b, t, h, w) or shape[4] not in (c, 1):
        raise ValueError(f"{name} must be {LAYOUT} on the video's grid, {(b, t, h, w, c)} or {(b, t, h, w, 1)}, "
                         f"got shape {shape}")


def channel_sum(relevance, *, name: str = "relevance") -> jax.Array:
    """``[B, T, H, W]``: a map ``[B, T, H, W, C']`` summed over its channel axis, or a ``[B, T, H, W]`` map as it is;
    any other rank is a ValueError naming ``name`` and the shape."""
    r = jnp.asarray(relevance)
    if r.ndim == 5:
        return r.sum(axis=-1)
    if r.ndim == 4:
        return r
    raise ValueError(f"{name} must be {LAYOUT} (or summed over channels, [B, T, H, W]), got shape {tuple(r.shape)}")
