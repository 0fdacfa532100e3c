"""Temporal Saliency Rescaling (Ismail et al., NeurIPS 2020) over any base method, as one jitted program."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxvx._checks import is_int
from jaxvx._maps import channel_sum
from jaxvx.methods._common import check_batch_size, check_video, guarded, is_traced, resolve_target
from jaxvx.methods._occlusion import evaluate_many, frame_masking, jit_forward

__all__ = ["tsr", "tsr_num_selected"]

TIME_FROM = ("map", "score")

FEATURE_SCORE_BELOW_THRESHOLD = 0.1  # Ismail et al.: the feature contribution of frames under the threshold


def _minmax(x: jax.Array, axis) -> jax.Array:
    """``(x - min) / (max - min)`` along ``axis``; 0 where the range is 0 (as sklearn's ``minmax_scale``)."""
    lo = jnp.min(x, axis=axis, keepdims=True)
    span = jnp.max(x, axis=axis, keepdims=True) - lo
    return (x - lo) / jnp.where(span > 0, span, 1.0)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _call_base(base, forward, video, target, key):
    return base(forward, video, target, key=key)


def _change(mask, args, settings):
    """``sum |R0 - R(video with mask := fill)|`` per clip ``[B]``; ``mask`` bool ``[B, T, H, W]``."""
    forward, base = settings[:2]
    video, r0, target, fill, key = args[:5]
    masked = jnp.where(mask[..., None], fill, video)
    diff = jnp.abs(r0 - base(forward, masked, target, key=key))
    return diff.reshape(video.shape[0], -1).sum(axis=1)


def _frame_change(i, args, settings):
    b, t, h, w, _ = args[0].shape
    return _change(jnp.broadcast_to((jnp.arange(t) == i)[None, :, None, None], (b, t, h, w)), args, settings)


def _block_change(index, args, settings):
    n_blocks = settings[2]
    order, block_of = args[5:7]
    i, j = index // n_blocks, index % n_blocks
    in_frame = jnp.arange(args[0].shape[1])[None, :] == order[:, i][:, None]  # [B, T]
    return _change(in_frame[:, :, None, None] & (block_of == j)[None, None], args, settings)


def tsr_num_selected(num_frames: int, alpha: float) -> int:
    """How many frames can lie strictly above the ``alpha`` quantile of ``num_frames`` values: step 2's budget.

    With linear interpolation the quantile sits at position ``p = alpha (T - 1)`` of the sorted values, so at most
    ``T - 1 - floor(p)`` values exceed it (fewer with ties). Known before tracing, it fixes step 2's shapes.
    """
    return max(0, num_frames - 1 - math.floor(alpha * (num_frames - 1)))


def tsr(base: Callable, *, alpha: float = 0.55, block: Sequence[int] = (10, 10), one_step: bool = False,
        time_from: str = "map", baseline: float | jax.Array = 0.0, normalize: bool = True,
        batch_size: int | str = "auto") -> Callable:
    """Temporal Saliency Rescaling of a base method (Ismail et al., "Benchmarking deep learning interpretability
    in time series predictions", NeurIPS 2020), with frames as time steps and pixel blocks as features.

    Let ``R(x)`` be the base method's map and ``R0 = R(video)`` (computed once and reused):

    1. Time contribution: for every frame t, mask the whole frame (every pixel and channel := ``baseline``),
       ``d_t = sum |R0 - R(x with frame t masked)|`` over all elements; ``D_t`` = ``d`` min-max scaled over t.
    2. Feature contribution, only for frames with ``D_t > q`` where ``q`` is the ``alpha`` quantile of ``D`` (numpy's
       linear interpolation; strictly greater, as in Ismail et al.'s code): for every spatial block j of
       ``block = (bh, bw)`` pixels (the last row/column of blocks may be smaller) mask that block in frame t only,
       ``d_tj = sum |R0 - R(x masked)|``; ``F_tj`` = ``d_tj`` min-max scaled over the blocks. Frames under the
       threshold get ``F_tj = 0.1`` (their constant).
    3. ``TSR[t, h, w] = D_t * F_t,block(h, w)``, then min-max scaled over the clip when ``normalize``.

    ``one_step=True`` skips step 2: ``TSR = D_t * sum_c |R0|`` (the base map's magnitude, channels summed), then the
    optional normalisation.

    ``time_from`` says what step 1 measures. ``"map"`` (default, Ismail et al.): the change of the base *map*,
    ``d_t`` above. ``"score"`` (Jayawardhana et al.'s temporal contribution): the change of the *model's logit*,
    ``d_t = f_c(x) - f_c(x with frame t masked)`` (:func:`frame_masking`'s scores; signed: a frame whose masking
    raises the logit scores lowest), min-max scaled over t as before. With ``one_step=True`` it is Jayawardhana et
    al.'s one-step rescaling: the gradient's magnitude scaled by frame masking's time contribution, at ``T`` forward
    passes beside the one base call instead of ``T`` base calls.

    Where the settings come from: ``alpha = 0.55`` and the 0.1 floor are the constants of Ismail et al.'s code;
    their masking value is a constant read from the input itself, and zero, the mean of a normalised clip, is the
    usual choice for video (Jayawardhana et al. mask with it too). The 10 x 10 blocks follow Jayawardhana et al.

    Shapes are fixed before tracing: at most :func:`tsr_num_selected` ``(T, alpha)`` frames can exceed the quantile,
    so step 2 is evaluated for that many top-ranked frames per clip (``k * n_blocks`` masked clips instead of
    ``T * n_blocks``) and frames among them that do not exceed it (ties) are discarded by a mask. Every masked clip
    is built inside the compiled program from its index and evaluated ``batch_size`` at a time
    (:func:`jaxvx.methods._occlusion.evaluate_many`: ``jax.lax.map`` under ``jit``, so that the whole method is one
    program; chunks of one cached compiled program when called eagerly).

    Args:
        base: a method ``base(forward, video, target, *, key=None) -> map`` (any shape with a leading batch axis,
            e.g. ``[B, T, H, W, C]``); it must be traceable (it is vmapped over masked copies).
        alpha: quantile of the time contributions above which frames get step 2 (default 0.55).
        block: ``(bh, bw)`` block size in pixels (default ``(10, 10)``).
        one_step: only rescale the base map by the time contribution (default False).
        time_from: ``"map"`` (default) or ``"score"``: what masking a frame is measured on in step 1 (above).
        baseline: the masking value, scalar or array broadcastable to ``[B, T, H, W, C]`` (default 0).
        normalize: min-max scale the final map per clip (default True).
        batch_size: masked clips evaluated at once (memory bound); ``"auto"`` (default): 1 on the CPU backend,
            where stacking gains nothing (docs/performance.md), 16 elsewhere
            (:data:`jaxvx.methods._occlusion.AUTO_BATCH_ACCELERATOR`).

    Returns:
        ``method(forward, video, target=None, *, key=None) -> relevance`` float32 ``[B, T, H, W, 1]``. ``key`` is passed
        unchanged to every call of ``base`` (a noisy base then sees the same noise in every masked copy, so that
        the differences measure the masking and not the noise). Cost: ``1 + T (+ k * n_blocks)`` calls of ``base``
        (``1 (+ k * n_blocks)`` and ``T`` forward passes with ``time_from="score"``).
    """
    if not callable(base):
        raise TypeError(f"base must be a method base(forward, video, target, *, key=None), got {base!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be a quantile in [0, 1], got {alpha!r}")
    block = tuple(block)
    if len(block) != 2 or any(not is_int(b) or b < 1 for b in block):
        raise ValueError(f"block must be a (height, width) pair of positive ints, got {block!r}")
    check_batch_size(batch_size, allow_none=False)
    if time_from not in TIME_FROM:
        raise ValueError(f"time_from must be one of {TIME_FROM}, got {time_from!r}")
    frame_scores = frame_masking(baseline=baseline, batch_size=batch_size).details if time_from == "score" else None

    @guarded
    def method(forward, video, target=None, *, key=None):
        video = check_video(video)
        b, t, h, w, _ = video.shape
        if not one_step and (block[0] > h or block[1] > w):
            raise ValueError(f"block {block} is larger than the frames ({h} x {w})")
        eager = not is_traced((video, target, key))
        target = resolve_target(jit_forward(forward, video) if eager else forward(video), target)
        fill = jnp.asarray(baseline, video.dtype)
        r0 = _call_base(base, forward, video, target, key) if eager else base(forward, video, target, key=key)

        if time_from == "score":
            d_time = frame_scores(forward, video, target)[1]
        else:
            d_time = evaluate_many(_frame_change, (forward, base), t, (video, r0, target, fill, key), batch_size).T
        d_time = _minmax(d_time, axis=1)  # [B, T]

        if one_step:
            magnitude = channel_sum(jnp.abs(r0), name="the base method's map")
            if magnitude.shape != (b, t, h, w):
                raise ValueError(f"one_step needs a base map [B, T, H, W, C] on the video's grid, got shape "
                                 f"{tuple(r0.shape)}")
            out = d_time[:, :, None, None] * magnitude
            return (_minmax(out, axis=(1, 2, 3)) if normalize else out)[..., None]

        nbh, nbw = math.ceil(h / block[0]), math.ceil(w / block[1])
        rows = np.arange(h) // block[0]
        cols = np.arange(w) // block[1]
        block_of = jnp.asarray(rows[:, None] * nbw + cols[None, :])  # [H, W] block index of each pixel
        n_blocks = nbh * nbw
        k = tsr_num_selected(t, alpha)
        threshold = jnp.quantile(d_time, alpha, axis=1)  # [B]
        feature = jnp.full((b, t, n_blocks), FEATURE_SCORE_BELOW_THRESHOLD, d_time.dtype)
        if k > 0:
            order = jnp.argsort(-d_time, axis=1)[:, :k]  # [B, k] the k largest time contributions
            above = jnp.take_along_axis(d_time, order, axis=1) > threshold[:, None]  # [B, k]
            d_feat = evaluate_many(_block_change, (forward, base, n_blocks), k * n_blocks,
                                   (video, r0, target, fill, key, order, block_of), batch_size)
            d_feat = _minmax(d_feat.T.reshape(b, k, n_blocks), axis=2)
            chosen = jnp.where(above[..., None], d_feat, FEATURE_SCORE_BELOW_THRESHOLD)  # [B, k, n_blocks]
            onehot = (order[:, :, None] == jnp.arange(t)[None, None, :]).astype(d_time.dtype)  # [B, k, T]
            feature = feature + jnp.einsum("bkt,bkn->btn", onehot, chosen - FEATURE_SCORE_BELOW_THRESHOLD,
                                           precision=jax.lax.Precision.HIGHEST)
        scores = d_time[:, :, None] * feature  # [B, T, n_blocks]
        out = jnp.take(scores, block_of.reshape(-1), axis=2).reshape(b, t, h, w)
        return (_minmax(out, axis=(1, 2, 3)) if normalize else out)[..., None]

    return method
