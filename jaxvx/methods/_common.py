"""What every explanation method shares: the call shape, input checks and the target's score.

A method is a pure function ``relevance = method(forward, video, target, *, key=None)``:

- ``forward(video) -> logits``: a pure function, ``video`` float32 ``[B, T, H, W, C]`` -> ``[B, K]``;
- ``target``: int ``[B]`` (a traced array is fine: one compiled program serves every class), or ``None`` for the
  predicted class;
- ``key``: a ``jax.random`` key for methods that draw noise, else ignored;
- ``relevance``: float ``[B, T, H, W, C']`` on the video's grid, ``C' = C`` for the methods that attribute every
  input value, ``C' = 1`` for those without channels (occlusion, frame masking, TSR, the extremal perturbations):
  every method, one contract (:mod:`jaxvx._maps`), checked by :func:`guarded` when the method is traced.

Richer results (an extremal perturbation's masks per area and energies, frame masking's per-frame scores, a named
chain's intermediates) come from the method's explicit variant, :func:`details`:
``relevance, info = details(method)(forward, video, target, key=key)``; the method itself returns the map only.

Bad input (:func:`guarded`, which every method of :mod:`jaxvx.methods` is wrapped in):

- checked eagerly, a ``ValueError`` naming the argument, the expected and the actual value: an empty video
  (``B = 0`` or any other axis 0); NaN or inf in a concrete video; a concrete target outside ``[0, K)`` (``-1`` is
  an error, not the last class); a video the model's parameters do not fit (Flax's shape error about a layer,
  named with the video's shape);
- under ``jax.jit`` (a traced video or target), where nothing can be checked before the computation runs: the
  result of every clip whose video holds NaN or inf or whose target is outside ``[0, K)`` is all NaN. A map is never
  silently zero or finite for such a clip; :func:`jaxvx.pipeline.run` and the CLI turn a NaN map into an error.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from jaxvx._checks import is_int, is_traced
from jaxvx._maps import check_map
from jaxvx._target import check_target_range, resolve_target

__all__ = ["Method", "check_batch_size", "check_video", "details", "guarded", "is_traced", "points_per_pass",
           "resolve_target", "select", "with_details"]


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


def _check_input(video) -> None:
    """Eager checks of a concrete ``video`` (see the module docstring)."""
    shape = tuple(getattr(video, "shape", ()))
    if not shape:
        return  # not an array: the method's own check names it
    if shape[0] == 0 or 0 in shape:
        raise ValueError(f"video must hold at least one clip with no empty axis ([B, T, H, W, C], B >= 1), got shape "
                         f"{shape}")
    if is_traced(video) or not jnp.issubdtype(jnp.asarray(video).dtype, jnp.floating):
        return
    with jax.ensure_compile_time_eval():  # concrete even inside another function's trace
        finite = jnp.isfinite(video)
        ok = bool(jnp.all(finite))
    if not ok:
        finite = np.asarray(finite)
        bad = int(finite.size - finite.sum())
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(f"video must be finite, got {bad} NaN or inf value(s) (the first at index {first})")


def _num_classes(forward, video) -> int:
    """The model's number of outputs K, from the shapes alone; a video the parameters do not fit is named."""
    with _naming_the_input(video):
        return int(jax.eval_shape(forward, video).shape[-1])


@contextlib.contextmanager
def _naming_the_input(video):
    """Flax's parameter shape error (raised when an input of another size meets the model's weights) re-raised as a
    ValueError that names the video's shape."""
    try:
        yield
    except Exception as err:
        if type(err).__name__ != "ScopeParamShapeError":
            raise
        raise ValueError(f"video of shape {tuple(video.shape)} does not fit the model: {err}. Give the input size the "
                         "model was built for (a checkpoint's card records it as input_shape)") from None


def _poison(result, bad: jax.Array):
    """Every floating leaf ``[B, ...]`` of ``result`` set to NaN in the rows where ``bad`` ``[B]`` is True."""

    def leaf(x):
        if not hasattr(x, "shape") or x.ndim == 0 or x.shape[0] != bad.shape[0] or not jnp.issubdtype(
                x.dtype, jnp.floating):
            return x
        return jnp.where(bad.reshape((-1,) + (1,) * (x.ndim - 1)), jnp.asarray(jnp.nan, x.dtype), x)

    return jax.tree_util.tree_map(leaf, result)


def _check_contract(result, video, method) -> None:
    """A ValueError unless an array ``result`` of a method given a clip ``video`` ``[B, T, H, W, C]`` is
    ``[B, T, H, W, C]`` or ``[B, T, H, W, 1]`` (:mod:`jaxvx._maps`); a ``(map, details)`` pair is checked on its
    map; other results (an analysis's record) and image input pass."""
    if isinstance(result, tuple) and len(result) == 2 and not hasattr(result, "_fields"):
        result = result[0]
    if not hasattr(result, "shape") or getattr(video, "ndim", 0) != 5:
        return
    name = getattr(method, "__name__", type(method).__name__)
    check_map(result, tuple(video.shape), name=f"the output of method {name!r}")


def guarded(method: Callable) -> Callable:
    """``method`` with the input checks of the module docstring: eager errors for concrete bad input, a NaN result
    for a clip whose traced video holds NaN or inf or whose traced target is outside the classes."""

    @functools.wraps(method)
    def checked(forward, video, target=None, *, key=None):
        _check_input(video)
        if target is not None and not is_traced(target):
            shape = jnp.shape(target)
            if shape not in ((), tuple(video.shape[:1])):
                raise ValueError(f"target must have shape [B] = {tuple(video.shape[:1])}, got {shape}")
            check_target_range(target, _num_classes(forward, video))
        traced = is_traced(video) or is_traced(target)
        with _naming_the_input(video):
            result = method(forward, video, target, key=key)
        _check_contract(result, video, method)
        if not traced:
            return result
        v = jnp.asarray(video)
        bad = ~jnp.all(jnp.isfinite(v.reshape(v.shape[0], -1)), axis=1)
        if target is not None:
            t = jnp.broadcast_to(jnp.asarray(target), v.shape[:1])
            bad = bad | (t < 0) | (t >= _num_classes(forward, v))
        return _poison(result, bad)

    return checked


def with_details(full: Callable) -> Callable:
    """A method from ``full(forward, video, target, *, key) -> (relevance, info)``: it returns the ``relevance``
    alone (the contract of every method), and :func:`details` gives the variant that returns both. Both are
    :func:`guarded`."""
    full = guarded(full)

    @functools.wraps(full)
    def method(forward, video, target=None, *, key=None):
        return full(forward, video, target, key=key)[0]

    method.details = full
    return method


def details(method: Callable) -> Callable:
    """The variant of ``method`` that returns ``(relevance, info)``: ``relevance`` as ``method`` returns it and
    ``info`` the method's richer result (see each method's docstring); a ValueError for a method without one."""
    full = getattr(method, "details", None)
    if full is None:
        name = getattr(method, "__name__", type(method).__name__)
        raise ValueError(f"method {name!r} has no details variant (only extremal_perturbation, ep3d, step, "
                         "frame_masking, named_chain and the chains of such a method have one)")
    return full


def select(logits: jax.Array, target: jax.Array) -> jax.Array:
    """``logits[b, target[b]]`` for every b: ``[B]``."""
    return jnp.take_along_axis(logits, target[:, None], axis=-1)[:, 0]


def check_batch_size(batch_size, *, allow_none: bool = True):
    """``batch_size`` if it is a positive int, ``"auto"`` or (with ``allow_none``) ``None``, else a ValueError
    naming it."""
    if batch_size == "auto" or (allow_none and batch_size is None):
        return batch_size
    if not is_int(batch_size, numpy=False) or batch_size < 1:
        choices = "a positive int, None or 'auto'" if allow_none else "a positive int or 'auto'"
        raise ValueError(f"batch_size: expected {choices}, got {batch_size!r}")
    return batch_size


def points_per_pass(batch_size, n: int, accelerator: int | None = None) -> int:
    """How many of ``n`` items (path points, noisy copies, clips, masked clips) one forward/backward pass takes.

    ``None``: all ``n``; an int: at most that many; ``"auto"``: one on the CPU backend, elsewhere all ``n`` (at
    most ``accelerator`` when given, for methods with too many items to stack them all).
    On XLA's CPU backend a pass of ``k`` stacked clips costs more than ``k`` passes of one clip
    (docs/performance.md); a GPU or TPU needs the stacked batch to fill the device.
    """
    if batch_size is None:
        return n
    if batch_size == "auto":
        if jax.default_backend() == "cpu":
            return 1
        return n if accelerator is None else min(accelerator, n)
    return min(batch_size, n)
