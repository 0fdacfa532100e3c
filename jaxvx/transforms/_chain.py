"""Compose an explanation method with transforms into a new method of the same call shape (as ``optax.chain``)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import jax.numpy as jnp

__all__ = ["chain", "named_chain", "RAW"]

#: Key of the method's own output in the details of a :func:`named_chain` method.
RAW = "relevance"


def _name(fn) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def _check_callable(name: str, value) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__} {value!r}")


def chain(method: Callable, *transforms: Callable) -> Callable:
    """A method that runs ``method`` and then each transform in order.

    ``chain(method, t1, t2)(forward, video, target, key=key) == t2(t1(method(forward, video, target, key=key)))``.
    The result has the call shape of every method, ``relevance = m(forward, video, target=None, *, key=None)``, so
    it can itself be chained, jitted (with ``forward`` closed over or static) and given to :mod:`jaxvx.pipeline`.

    Args:
        method: an explanation method ``(forward, video [B, T, H, W, C], target [B] | None, *, key) -> map``.
        *transforms: functions ``map -> map`` (e.g. :func:`selective`, :func:`sum_channels`, :func:`frame_share`).

    Returns:
        The composed method; its ``__name__`` lists the parts, e.g. ``"chain(gradient, selective(sigma=4, ...))"``.
        Where ``method`` has a details variant (``jaxvx.methods.details``), so has the chain: it returns the
        transformed map and the method's details.
    """
    _check_callable("method", method)
    for i, t in enumerate(transforms):
        _check_callable(f"transforms[{i}]", t)

    def transformed(raw):
        relevance = raw
        for transform in transforms:
            relevance = transform(relevance)
        return _keep_nan_rows(raw, relevance)

    def chained(forward, video, target=None, *, key=None):
        return transformed(method(forward, video, target, key=key))

    inner = getattr(method, "details", None)
    if inner is not None:
        def chained_details(forward, video, target=None, *, key=None):
            raw, info = inner(forward, video, target, key=key)
            return transformed(raw), info

        chained.details = chained_details
    name = f"chain({', '.join([_name(method), *map(_name, transforms)])})"
    chained.__name__ = chained.__qualname__ = name
    chained.method = method
    chained.transforms = tuple(transforms)
    return chained


def _keep_nan_rows(raw, relevance):
    """``relevance`` with every row ``b`` all NaN where the method's own map ``raw`` ``[B, ...]`` holds NaN or inf in
    that row: a transform (a threshold, a frame share) must not turn a failed map into a finite one."""
    if not (hasattr(raw, "shape") and hasattr(relevance, "shape")) or raw.ndim == 0 or relevance.ndim == 0 or \
            relevance.shape[0] != raw.shape[0] or not jnp.issubdtype(relevance.dtype, jnp.floating):
        return relevance
    bad = ~jnp.all(jnp.isfinite(raw.reshape(raw.shape[0], -1)), axis=1)
    return jnp.where(bad.reshape((-1,) + (1,) * (relevance.ndim - 1)), jnp.nan, relevance)


def named_chain(method: Callable, *transforms: tuple[str, Callable]) -> Callable:
    """Like :func:`chain`, with every intermediate result kept in its details variant.

    ``m = named_chain(method, ("sum", sum_channels()), ("selective", selective(4)))``; ``m(forward, video, target)``
    returns the last map, ``t2(t1(r0))``, as :func:`chain` does, and ``jaxvx.methods.details(m)(forward, video,
    target)`` returns ``(t2(t1(r0)), {"relevance": r0, "sum": t1(r0), "selective": t2(t1(r0))})``: the method's own
    output under ``"relevance"`` (:data:`RAW`), then each transform's output under its name, in order. The dict is
    a ``collections.OrderedDict``, a pytree whose order survives ``jax.jit`` (a plain dict's keys come back sorted).

    Args:
        method: an explanation method.
        *transforms: ``(name, transform)`` pairs; names are unique non-empty strings other than ``"relevance"``.
    """
    _check_callable("method", method)
    names = []
    for i, pair in enumerate(transforms):
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise TypeError(f"transforms[{i}] must be a (name, transform) pair, got {pair!r}")
        name, fn = pair
        if not name or name == RAW or name in names:
            raise ValueError(f"transforms[{i}]: name {name!r} must be non-empty, unique and not {RAW!r}")
        _check_callable(f"transforms[{i}][1]", fn)
        names.append(name)

    def chained_details(forward, video, target=None, *, key=None):
        out = OrderedDict(relevance=method(forward, video, target, key=key))
        current = out[RAW]
        for name, transform in transforms:
            current = transform(current)
            out[name] = _keep_nan_rows(out[RAW], current)
        return next(reversed(out.values())), out

    def chained(forward, video, target=None, *, key=None):
        return chained_details(forward, video, target, key=key)[0]

    chained.details = chained_details
    label = f"named_chain({', '.join([_name(method), *(f'{n}={_name(f)}' for n, f in transforms)])})"
    chained.__name__ = chained.__qualname__ = label
    chained.method = method
    chained.transforms = tuple(transforms)
    return chained
