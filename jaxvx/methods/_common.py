"""What every explanation method shares: the call shape, input checks and the target's score.

A method is a pure function ``relevance = method(forward, video, target, *, key=None)``:

- ``forward(video) -> logits``: a pure function, ``video`` float32 ``[B, T, H, W, C]`` -> ``[B, K]``;
- ``target``: int ``[B]`` (a traced array is fine: one compiled program serves every class), or ``None`` for the
  predicted class;
- ``key``: a ``jax.random`` key for methods that draw noise, else ignored;
- ``relevance``: the shape of ``video`` unless the method says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import jax
import jax.numpy as jnp

__all__ = ["Method", "check_batch_size", "check_positive_int", "check_video", "points_per_pass", "resolve_target",
           "select"]


def check_positive_int(name: str, value) -> int:
    """``value`` if it is an int >= 1 (not a bool), else ``ValueError`` naming the argument and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class Method(Protocol):
    def __call__(self, forward: Callable, video: jax.Array, target: jax.Array | None = None, *,
                 key: jax.Array | None = None) -> jax.Array: ...


def check_video(video, *, name: str = "video", rank: int = 5) -> jax.Array:
    """``video`` as a float array of rank ``rank`` (default ``[B, T, H, W, C]``), or a ValueError naming the shape."""
    video = jnp.asarray(video)
    if video.ndim != rank:
        layout = "[B, T, H, W, C]" if rank == 5 else f"rank {rank}"
        raise ValueError(f"{name} must be {layout}, got shape {tuple(video.shape)}")
    if not jnp.issubdtype(video.dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point (preprocessed), got {video.dtype}")
    return video


def resolve_target(logits: jax.Array, target) -> jax.Array:
    """int32 ``[B]`` target classes: ``target`` itself (checked against ``logits`` ``[B, K]``), or the argmax."""
    if target is None:
        return jnp.argmax(jax.lax.stop_gradient(logits), axis=-1).astype(jnp.int32)
    target = jnp.asarray(target)
    if not jnp.issubdtype(target.dtype, jnp.integer):
        raise ValueError(f"target must be an int array [B], got dtype {target.dtype}")
    if target.ndim == 0:
        target = jnp.broadcast_to(target, logits.shape[:1])
    if target.shape != logits.shape[:1]:
        raise ValueError(f"target must have shape [B] = {tuple(logits.shape[:1])}, got {tuple(target.shape)}")
    return target.astype(jnp.int32)


def select(logits: jax.Array, target: jax.Array) -> jax.Array:
    """``logits[b, target[b]]`` for every b: ``[B]``."""
    return jnp.take_along_axis(logits, target[:, None], axis=-1)[:, 0]


def check_batch_size(batch_size, *, allow_none: bool = True):
    """``batch_size`` if it is a positive int, ``"auto"`` or (with ``allow_none``) ``None``, else a ValueError
    naming it."""
    if batch_size == "auto" or (allow_none and batch_size is None):
        return batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        choices = "a positive int, None or 'auto'" if allow_none else "a positive int or 'auto'"
        raise ValueError(f"batch_size: expected {choices}, got {batch_size!r}")
    return batch_size


def points_per_pass(batch_size, n: int, accelerator: int | None = None) -> int:
    """How many of ``n`` items (path points, noisy copies, clips, masked clips) one forward/backward pass takes.

    ``None``: all ``n``; an int: at most that many; ``"auto"``: one on the CPU backend, elsewhere all ``n`` (at
    most ``accelerator`` when given, for methods with too many items to stack them all).
    On XLA's CPU backend a pass of ``k`` stacked clips costs more than ``k`` passes of one clip (C3D on 2 cores,
    integrated gradients with 8 points or the gradient of 8 clips: 1.15 to 1.3 times for the full C3D, 1.1 times
    at width 1/4); a GPU or TPU needs the stacked batch to fill the device.
    """
    if batch_size is None:
        return n
    if batch_size == "auto":
        if jax.default_backend() == "cpu":
            return 1
        return n if accelerator is None else min(accelerator, n)
    return min(batch_size, n)
