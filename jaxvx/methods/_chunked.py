"""A method run over the clips of a batch a few at a time: :func:`chunked`."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxvx.methods._common import check_batch_size, check_video, guarded, points_per_pass, resolve_target

__all__ = ["chunked"]


def chunked(method: Callable, batch_size: int | str | None = "auto") -> Callable:
    """``method`` applied to the clips of a batch ``batch_size`` at a time, the chunks in one ``lax.map``.

    For a method whose clips do not interact (every method in :mod:`jaxvx.methods`, with a ``forward`` in
    inference mode), ``chunked(method, k)(forward, video, target)`` equals ``method(forward, video, target)`` up to
    float32 rounding; it only changes how the work is cut. Use it to bound memory (``k`` clips of activations
    instead of ``B``), or for speed on CPU: XLA's CPU convolutions run a batch of ``B`` clips more slowly than
    ``B`` single clips (docs/performance.md).

    Args:
        method: any method ``method(forward, video, target, *, key=None)`` whose outputs (an array or a pytree of
            arrays) have the batch as their leading axis.
        batch_size: clips per call of ``method``: an int, ``None`` (the whole batch: ``method`` itself) or
            ``"auto"`` (one clip on the CPU backend, the whole batch elsewhere; see
            :func:`jaxvx.methods._common.points_per_pass`).

    Returns:
        a method of the same call shape. ``video`` ``[B, T, H, W, C]`` is padded with copies of its last clip to a
        multiple of ``k`` (their results are dropped); ``target`` ``[B]`` or ``None`` (each chunk's predicted
        classes); a ``key`` is split into one key per chunk, so a random method draws other numbers than
        unchunked (still deterministic for a given key and ``batch_size``).
    """
    if not callable(method):
        raise TypeError(f"method: expected a method (callable), got {method!r}")
    batch_size = check_batch_size(batch_size)

    @guarded
    def run(forward, video, target=None, *, key=None):
        video = check_video(video)
        b = video.shape[0]
        k = points_per_pass(batch_size, b)
        if k >= b:
            return method(forward, video, target, key=key)
        if target is not None:
            target = resolve_target(jnp.zeros((b, 1)), target, check_range=False)  # checked against the batch, as [B] int32
        n = -(-b // k)
        pad = n * k - b

        def split(a):
            if pad:
                a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)])
            return a.reshape((n, k) + a.shape[1:])

        xs = {"video": split(video)}
        if target is not None:
            xs["target"] = split(target)
        if key is not None:
            xs["key"] = jax.random.split(key, n)

        def one(c):
            return method(forward, c["video"], c.get("target"), key=c.get("key"))

        out = jax.lax.map(one, xs)
        return jax.tree.map(lambda a: a.reshape((n * k,) + a.shape[2:])[:b], out)

    run.__name__ = f"chunked({getattr(method, '__name__', 'method')})"
    return run
