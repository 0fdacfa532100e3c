"""Sliding occlusion (captum's ``Occlusion`` semantics) and frame masking (the time contribution).

Every occluded copy of the clip is built inside the compiled program from the window's index, ``batch_size``
copies evaluated at once (bounding memory; :func:`evaluate_many`: ``jax.lax.map`` under ``jit``, chunks of one
compiled program when called eagerly), and the per-window score drops are spread back over the elements they cover
by separable one-hot sums, never by a Python loop over windows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxvx._checks import check_int, is_int
from jaxvx.methods._common import (check_batch_size, check_video, guarded, is_traced, points_per_pass, resolve_target,
                                  select, with_details)

__all__ = ["occlusion", "frame_masking", "broadcast_frames", "SCORES"]

SCORES = ("logit", "prob", "accuracy")


def _score(logits: jax.Array, target: jax.Array, score: str) -> jax.Array:
    """The target's score ``[B]`` from ``logits`` ``[B, K]``."""
    if score == "logit":
        return select(logits, target)
    if score == "prob":
        return select(jax.nn.softmax(logits, axis=-1), target)
    if score == "accuracy":
        return (jnp.argmax(logits, axis=-1) == target).astype(logits.dtype)
    raise ValueError(f"score must be one of {SCORES}, got {score!r}")


def _check_score(score):
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")


def _triple(name: str, value, dims: Sequence[int] | None = None) -> tuple[int, int, int]:
    if is_int(value):
        value = (int(value),) * 3
    try:
        value = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be an int or a (T, H, W) triple of ints, got {value!r}") from None
    if len(value) != 3 or any(not is_int(v) or v < 1 for v in value):
        raise ValueError(f"{name} must be a (T, H, W) triple of positive ints, got {value!r}")
    return tuple(int(v) for v in value)


def window_starts(size: int, window: int, stride: int) -> np.ndarray:
    """Start indices of captum's sliding windows along one axis: ``ceil((size - window) / stride) + 1`` of them.

    The last window may run past the end (it is clipped there), exactly as captum's slicing does.
    """
    if window > size:
        raise ValueError(f"window {window} is larger than the axis it slides along ({size})")
    count = math.ceil((size - window) / stride) + 1
    return np.arange(count) * stride


def _window_matrix(size: int, window: int, stride: int) -> np.ndarray:
    """One-hot membership ``[n_windows, size]`` float32: 1 where element ``i`` lies in window ``n``."""
    starts = window_starts(size, window, stride)
    idx = np.arange(size)
    return ((idx[None] >= starts[:, None]) & (idx[None] < starts[:, None] + window)).astype(np.float32)




@functools.partial(jax.jit, static_argnums=(0, 1))
def _chunk(one, settings, indices, args):
    return jax.vmap(lambda i: one(i, args, settings))(indices)


@functools.partial(jax.jit, static_argnums=0)
def jit_forward(forward, video):
    """``forward(video)``, compiled once per ``forward`` (an eager call of a Flax model runs op by op)."""
    return forward(video)


# Masked clips per forward call for batch_size="auto" on a GPU or TPU; on the CPU backend "auto" is one clip, which
# is faster there (C3D width 1/4, 64 occlusion windows at 16 x 112 x 112 on 2 cores: 5.6 to 6.1 s against 6.8 to
# 8.1 s with 16 per call). See jaxvx.methods._common.points_per_pass.
AUTO_BATCH_ACCELERATOR = 16


def evaluate_many(one: Callable, settings: tuple, n: int, args, batch_size: int | str):
    """``[one(i, args, settings) for i in range(n)]`` stacked along a new leading axis, without a Python loop per i.

    ``one`` is a module-level function and ``settings`` a hashable tuple (the model's ``forward``, the base
    method, ...): together they key the compiled program, which is reused across calls. ``args`` holds the arrays.

    - Under a trace (``jax.jit`` / ``vmap`` of the caller): ``jax.lax.map(..., batch_size=batch_size)``, so the
      whole method stays one program.
    - Called eagerly: chunks of ``batch_size`` indices, each one call of a jitted ``vmap`` (the last chunk padded by
      repeating its last index, so that one program serves every chunk); on an accelerator they cost one dispatch
      per chunk. On XLA's CPU backend a convolution differentiated by JAX's own rule runs its backward pass
      several times slower inside ``lax.map``'s loop than in a top-level program (docs/performance.md); jaxvx's
      models write that backward out (:func:`jaxvx.models.conv_general_dilated`) and run as fast in the loop, so
      for them the jitted program is as fast as the eager chunks or faster; for other models call eagerly on CPU.
    """
    size = max(1, points_per_pass(batch_size, n, AUTO_BATCH_ACCELERATOR))
    if is_traced(args):
        return jax.lax.map(lambda i: one(i, args, settings), jnp.arange(n), batch_size=size)
    outs = [_chunk(one, settings, jnp.asarray(np.minimum(np.arange(start, start + size), n - 1), jnp.int32), args)
            for start in range(0, n, size)]
    return jax.tree.map(lambda *parts: jnp.concatenate(parts)[:n], *outs)


def _occluded_drop(index, args, settings):
    forward, score, counts = settings
    video, baseline, target, base_score, mt, mh, mw = args
    it, ih, iw = jnp.unravel_index(index, counts)
    inside = mt[it][:, None, None] & mh[ih][None, :, None] & mw[iw][None, None, :]
    occluded = jnp.where(inside[None, ..., None], baseline, video)
    return base_score - _score(forward(occluded), target, score)


def _sliding_drops(forward, video, target, window, stride, baseline, score, batch_size):
    """Score drop ``s(x) - s(x occluded)`` for every (T, H, W) window, and the membership matrices.

    Returns ``(drops [nT, nH, nW, B], (MT [nT, T], MH [nH, H], MW [nW, W]))``.
    """
    _, t, h, w, _ = video.shape
    mats = [_window_matrix(size, win, st) for size, win, st in zip((t, h, w), window, stride)]
    counts = tuple(m.shape[0] for m in mats)
    logits = forward(video) if is_traced(video) else jit_forward(forward, video)
    target = resolve_target(logits, target)
    base_score = _score(logits, target, score)
    baseline = jnp.asarray(baseline, video.dtype)
    masks = tuple(jnp.asarray(m, dtype=bool) for m in mats)
    drops = evaluate_many(_occluded_drop, (forward, score, counts), int(np.prod(counts)),
                          (video, baseline, target, base_score, *masks), batch_size)
    return drops.reshape(*counts, -1), mats


def _spread(drops, mats):
    """captum's attribution: each element gets the mean drop over the windows that cover it (0 where none does)."""
    mt, mh, mw = (jnp.asarray(m) for m in mats)
    total = jnp.einsum("ijkb,it,jh,kw->bthw", drops, mt, mh, mw, precision=jax.lax.Precision.HIGHEST)
    count = mt.sum(0)[:, None, None] * mh.sum(0)[None, :, None] * mw.sum(0)[None, None, :]
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)


def occlusion(window: Sequence[int] | int = (4, 16, 16), stride: Sequence[int] | int | None = None,
              baseline: float | jax.Array = 0.0, *, score: str = "logit", batch_size: int | str = "auto") -> Callable:
    """Sliding occlusion over time and space with captum's ``Occlusion`` semantics.

    A window of ``T' x H' x W'`` elements (all channels) slides over the clip with ``stride``; along each axis of
    size D there are ``ceil((D - w) / s) + 1`` windows starting at ``0, s, 2s, ...`` (the last one is clipped at the
    border). Every window position gives one occluded clip (the window's elements replaced by ``baseline``) and the
    drop ``d = s(x) - s(x occluded)`` of the target's score. Each element's attribution is the mean of ``d`` over
    the windows that cover it (captum divides the summed drops by the covering count); an element no window covers
    (possible only when ``stride > window``) gets 0, where captum would divide by zero.

    Args:
        window: ``(T', H', W')`` (an int means a cube); default ``(4, 16, 16)``.
        stride: ``(sT, sH, sW)`` or an int; default ``None`` = the window (non-overlapping windows; captum's default
            stride of 1 would cost one evaluation per element).
        baseline: the occlusion value, a scalar or an array broadcastable to the video ``[B, T, H, W, C]`` (for
            example per-channel means, or a blurred copy of the clip). Default 0 (the mean of a normalised clip).
        score: what the drop is measured on: ``"logit"`` (captum's choice: the model's output), ``"prob"`` (softmax
            probability) or ``"accuracy"`` (1 if the argmax is the target, else 0).
        batch_size: occluded clips evaluated per ``forward`` call (memory bound; see :func:`evaluate_many`);
            ``"auto"`` (default): 1 on the CPU backend, 16 elsewhere (:data:`AUTO_BATCH_ACCELERATOR`).

    Returns:
        ``method(forward, video, target=None, *, key=None) -> relevance`` float32 ``[B, T, H, W, 1]`` (windows cover
        every channel: one value per position). ``target`` ``None`` means the predicted class. Cost:
        ``1 + nT * nH * nW`` forward passes.
    """
    window = _triple("window", window)
    stride = window if stride is None else _triple("stride", stride)
    _check_score(score)
    check_batch_size(batch_size, allow_none=False)

    @guarded
    def method(forward, video, target=None, *, key=None):
        del key
        video = check_video(video)
        for axis, size, win in zip("THW", video.shape[1:4], window):
            if win > size:
                raise ValueError(f"window: {axis} size {win} exceeds the video's {axis} = {size} "
                                 f"(video shape {tuple(video.shape)})")
        drops, mats = _sliding_drops(forward, video, target, window, stride, baseline, score, batch_size)
        return _spread(drops, mats)[..., None]

    return method


def frame_masking(width: int = 1, *, stride: int = 1, baseline: float | jax.Array = 0.0, score: str = "logit",
                  batch_size: int | str = "auto") -> Callable:
    """The time contribution of each frame (Jayawardhana et al.): mask runs of frames, measure the score's change.

    A run of ``width`` consecutive frames (every pixel and channel) is replaced by ``baseline``; runs start every
    ``stride`` frames (``ceil((T - width) / stride) + 1`` runs, captum's windows along time). The contribution of
    frame t is the mean, over the runs that contain it, of ``s(x) - s(x with the run masked)``. With the default
    ``width=1`` this is simply the drop caused by masking frame t alone; it equals :func:`occlusion` with the
    window ``(width, H, W)`` and stride ``(stride, H, W)``.

    Args:
        width: frames masked at once (default 1).
        stride: frames between run starts (default 1).
        baseline: the masking value, a scalar or an array broadcastable to ``[B, T, H, W, C]``; default 0.
        score: ``"logit"`` (default), ``"prob"`` (softmax probability) or ``"accuracy"`` (whether the argmax is the
            target: 1 - 1[masked clip still correct], a frame is important when masking it flips the decision).
        batch_size: masked clips per ``forward`` call (see :func:`evaluate_many`); ``"auto"`` (default): 1 on the CPU
            backend, 16 elsewhere.

    Returns:
        ``method(forward, video, target=None, *, key=None) -> relevance`` float32 ``[B, T, H, W, 1]``, every pixel of
        frame t its score (:func:`broadcast_frames`); ``jaxvx.methods.details(method)`` returns ``(relevance,
        scores)`` with the scores ``[B, T]``.
    """
    check_int("width", width, numpy=False)
    check_int("stride", stride, numpy=False)
    _check_score(score)
    check_batch_size(batch_size, allow_none=False)

    def full(forward, video, target=None, *, key=None):
        del key
        video = check_video(video)
        _, t, h, w, _ = video.shape
        if width > t:
            raise ValueError(f"width: {width} frames exceed the video's T = {t} (shape {tuple(video.shape)})")
        drops, (mt, _, _) = _sliding_drops(forward, video, target, (width, h, w), (stride, h, w), baseline, score,
                                           batch_size)
        drops = drops[:, 0, 0, :]  # [nT, B]
        mt = jnp.asarray(mt)
        scores = jnp.einsum("ib,it->bt", drops, mt, precision=jax.lax.Precision.HIGHEST) / mt.sum(0)[None]
        return broadcast_frames(scores, video), scores

    return with_details(full)


def broadcast_frames(scores: jax.Array, like) -> jax.Array:
    """Per-frame scores ``[B, T]`` as a map ``[B, T, H, W, 1]`` (each frame filled with its score).

    ``like`` is a video ``[B, T, H, W, C]`` or a map ``[B, T, H, W]`` (its H and W are used), or a shape tuple.
    """
    scores = jnp.asarray(scores)
    shape = tuple(like) if isinstance(like, (tuple, list)) else tuple(np.shape(like))
    if scores.ndim != 2:
        raise ValueError(f"scores must be [B, T], got shape {tuple(scores.shape)}")
    if len(shape) not in (4, 5) or tuple(shape[:2]) != tuple(scores.shape):
        raise ValueError(f"like must be [B, T, H, W(, C)] with [B, T] = {tuple(scores.shape)}, got shape {shape}")
    return jnp.broadcast_to(scores[:, :, None, None, None], (*shape[:2], shape[2], shape[3], 1))
