"""The class a method explains: a given target, checked against the logits, or the predicted class.

``target`` is int ``[B]`` (or a scalar, broadcast to ``[B]``) with every class in ``[0, K)`` for logits ``[B, K]``;
a traced target is checked for its shape only (its values are unknown when the program is traced). ``None`` is the
argmax of the logits, with no gradient through it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxvx._checks import is_traced

__all__ = ["check_target_range", "resolve_target"]


def resolve_target(logits: jax.Array, target, *, check_range: bool = True) -> jax.Array:
    """int32 ``[B]`` target classes: ``target`` itself (checked against ``logits`` ``[B, K]``: its shape, and when it
    is concrete its range ``[0, K)`` unless ``check_range=False``), or the argmax."""
    if target is None:
        return jnp.argmax(jax.lax.stop_gradient(logits), axis=-1).astype(jnp.int32)
    target = target if is_traced(target) else np.asarray(target)
    if not jnp.issubdtype(target.dtype, jnp.integer):
        raise ValueError(f"target must be an int array [B], got dtype {target.dtype}")
    if check_range:
        check_target_range(target, logits.shape[-1])
    if target.ndim == 0:
        target = jnp.broadcast_to(target, logits.shape[:1])
    if target.shape != logits.shape[:1]:
        raise ValueError(f"target must have shape [B] = {tuple(logits.shape[:1])}, got {tuple(target.shape)}")
    return jnp.asarray(target, jnp.int32)


def check_target_range(target, num_classes: int) -> None:
    """A ValueError if a concrete ``target`` holds a class outside ``[0, num_classes)``; a traced one passes."""
    if target is None or is_traced(target):
        return
    t = np.asarray(target)
    if np.any((t < 0) | (t >= num_classes)):
        raise ValueError(f"target must hold classes in [0, {num_classes}) (the model's {num_classes} outputs), got "
                         f"{t.tolist()}")
