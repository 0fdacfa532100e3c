"""Deletion and insertion curves: faithfulness of a map without ground truth (Samek et al.'s AOPC, Petsiuk et al.)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvx._checks import check_int

__all__ = ["PerturbationCurve", "perturbation_curve", "deletion_curve", "insertion_curve", "MODES", "UNITS", "SCORES"]

MODES = ("deletion", "insertion")
UNITS = ("frames", "voxels")
SCORES = ("probability", "logit")


class PerturbationCurve(NamedTuple):
    """A deletion or insertion curve (a pytree).

    Attributes:
        fractions: float32 ``[S + 1]``, the fraction of units (frames or voxels) deleted / inserted at each step,
            ``k / S`` rounded to whole units (``n_k / N``).
        scores: float32 ``[B, S + 1]``, the model's score of the target after each step (step 0: the untouched
            input for deletion, the all-baseline input for insertion).
        aopc: float32 ``[B]``, the area over the perturbation curve: ``mean_k (scores_0 - scores_k)`` for deletion
            (Samek et al.), ``mean_k (scores_k - scores_0)`` for insertion; larger is more faithful in both modes.
        auc: float32 ``[B]``, the trapezoidal area under ``scores`` over ``fractions`` (insertion: larger is
            better; deletion: smaller is better).
    """

    fractions: jax.Array
    scores: jax.Array
    aopc: jax.Array
    auc: jax.Array


def _unit_relevance(relevance, video_shape, unit: str) -> jax.Array:
    """``[B, N]`` relevance per unit: frames ``N = T`` or voxels ``N = T H W``."""
    r = jnp.asarray(relevance)
    b, t, h, w, _ = video_shape
    if unit == "frames":
        if r.ndim < 2 or r.shape[:2] != (b, t):
            raise ValueError(f"relevance must be [B, T, ...] with (B, T) = {(b, t)} to rank frames, "
                             f"got shape {tuple(r.shape)}")
        return r.reshape(b, t, -1).sum(axis=-1)
    if r.ndim == 5:
        r = r.sum(axis=-1)
    if r.shape != (b, t, h, w):
        raise ValueError(f"relevance must be [B, T, H, W(, C)] on the video's grid {(b, t, h, w)} to rank voxels, "
                         f"got shape {tuple(r.shape)}")
    return r.reshape(b, -1)


def perturbation_curve(forward: Callable, video, relevance, target, *, mode: str = "deletion",
                       unit: str = "frames", steps: int | None = None, baseline=0.0,
                       score: str = "probability", batch_size: int | None = None,
                       endpoints=None) -> PerturbationCurve:
    """Delete (or insert) the most relevant frames or voxels first and follow the model's score of the target.

    Units are ranked by relevance, largest first (frames by their summed relevance, voxels ``(t, y, x)`` by the
    channel-summed map; ties keep index order). At step ``k = 0 .. S`` the ``n_k = round(k N / S)`` top units are

    - ``mode="deletion"``: replaced by ``baseline`` in the input (all channels of a voxel);
    - ``mode="insertion"``: taken from the input, every other unit being ``baseline``;

    and the model scores the target. One forward per step, evaluated with ``jax.lax.map`` (``batch_size`` steps at
    a time when given, to bound memory). Jittable with ``forward``, ``mode``, ``unit``, ``steps`` and ``score``
    static.

    Args:
        forward: ``video [B, T, H, W, C] -> logits [B, K]``, pure.
        video: float32 ``[B, T, H, W, C]``, the model's input.
        relevance: the map: ``[B, T, ...]`` for frames (e.g. ``[B, T]`` temporal saliency), ``[B, T, H, W(, C)]``
            for voxels.
        target: int ``[B]``, the class whose score is followed.
        mode: ``"deletion"`` (default) or ``"insertion"``.
        unit: ``"frames"`` (default) or ``"voxels"``.
        steps: ``S``, number of steps; default ``T`` for frames (one frame per step), 20 for voxels (5 % each).
        baseline: the value of a removed unit: a scalar (0, the default, is the dataset mean for normalised input)
            or an array broadcastable to ``video`` (e.g. a blurred copy of it).
        score: ``"probability"`` (softmax, default) or ``"logit"``.
        batch_size: steps evaluated together by ``jax.lax.map``; default ``None``: one step at a time.
        endpoints: ``(logits of video, logits of the all-baseline input)``, float ``[B, K]`` each, when the caller
            has them (the pipeline computes them once for every map of a batch). The two points of the curve that
            do not depend on the map (nothing and everything removed or inserted) are then scored from them, and
            only the ``S - 1`` steps between take a forward each. Default ``None``: ``S + 1`` forwards.

    Returns:
        :class:`PerturbationCurve`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    video = jnp.asarray(video)
    if video.ndim != 5:
        raise ValueError(f"video must be [B, T, H, W, C], got shape {tuple(video.shape)}")
    b, t, h, w, c = video.shape
    per_unit = _unit_relevance(relevance, video.shape, unit)
    n = per_unit.shape[1]
    if steps is None:
        steps = t if unit == "frames" else 20
    steps = check_int("steps", steps)
    target = jnp.asarray(target)
    if target.shape != (b,) or not jnp.issubdtype(target.dtype, jnp.integer):
        raise ValueError(f"target must be int [B] = ({b},), got shape {tuple(target.shape)} dtype {target.dtype}")
    fill = jnp.broadcast_to(jnp.asarray(baseline, dtype=video.dtype), video.shape)
    if endpoints is not None:
        endpoints = tuple(jnp.asarray(e) for e in endpoints)
        if len(endpoints) != 2 or any(e.ndim != 2 or e.shape[0] != b for e in endpoints):
            raise ValueError(f"endpoints must be (logits of video, logits of the baseline input), [B, K] each with "
                             f"B = {b}, got shapes {[tuple(e.shape) for e in endpoints]}")

    def compute(video, per_unit, target, fill, endpoints):
        # rank[b, u] = position of unit u in the descending order (0 = most relevant); stable for ties
        order = jnp.argsort(-per_unit, axis=1, stable=True)
        rank = jnp.argsort(order, axis=1, stable=True)
        counts = jnp.round(jnp.arange(steps + 1) * (n / steps)).astype(jnp.int32)  # n_k

        def expand(keep):  # [B, N] -> broadcastable to the video
            if unit == "frames":
                return keep.reshape(b, t, 1, 1, 1)
            return keep.reshape(b, t, h, w, 1)

        def target_score(logits):
            if score == "probability":
                logits = jax.nn.softmax(logits, axis=-1)
            return jnp.take_along_axis(logits, target[:, None].astype(jnp.int32), axis=-1)[:, 0]

        def step_score(n_k):
            top = rank < n_k  # [B, N]
            take_input = ~top if mode == "deletion" else top
            return target_score(forward(jnp.where(expand(take_input), video, fill)))

        if endpoints is None:
            scores = jax.lax.map(step_score, counts, batch_size=batch_size).T  # [B, S + 1]
        else:  # step 0 and step S: the untouched input and the all-baseline one, in the order of the mode
            first, last = (target_score(e)[:, None] for e in (endpoints if mode == "deletion" else endpoints[::-1]))
            inner = [jax.lax.map(step_score, counts[1:-1], batch_size=batch_size).T] if steps > 1 else []
            scores = jnp.concatenate([first, *inner, last], axis=1)
        scores = scores.astype(jnp.float32)
        fractions = counts.astype(jnp.float32) / n
        gain = scores - scores[:, :1]
        aopc = (-gain if mode == "deletion" else gain).mean(axis=1)
        auc = ((scores[:, 1:] + scores[:, :-1]) * 0.5 * jnp.diff(fractions)).sum(axis=1)
        return PerturbationCurve(fractions=fractions, scores=scores, aopc=aopc, auc=auc)

    # one program per call (inlined when the caller is itself jitted)
    return jax.jit(compute)(video, per_unit, target, fill, endpoints)


def deletion_curve(forward, video, relevance, target, **kwargs) -> PerturbationCurve:
    """:func:`perturbation_curve` with ``mode="deletion"``."""
    return perturbation_curve(forward, video, relevance, target, mode="deletion", **kwargs)


def insertion_curve(forward, video, relevance, target, **kwargs) -> PerturbationCurve:
    """:func:`perturbation_curve` with ``mode="insertion"``."""
    return perturbation_curve(forward, video, relevance, target, mode="insertion", **kwargs)
