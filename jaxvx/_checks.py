"""Argument checks every jaxvx module may use; this module imports nothing of jaxvx."""

import math
import numbers

import jax

__all__ = ["check_float", "check_int", "is_int", "is_traced"]


def is_int(value, *, numpy: bool = True) -> bool:
    """Whether ``value`` is an int and not a bool; NumPy integers count unless ``numpy=False``."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral if numpy else int)


def check_int(name: str, value, low: int = 1, *, numpy: bool = True) -> int:
    """``int(value)`` if ``value`` is an int >= ``low`` (not a bool; NumPy integers only with ``numpy=True``), else
    ``ValueError`` naming the argument, the bound and the value."""
    if not is_int(value, numpy=numpy) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def is_traced(*trees) -> bool:
    """Whether any leaf of ``trees`` is a tracer (the caller runs under ``jit``, ``vmap`` or ``grad``)."""
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(trees))


def check_float(name: str, value, low: float | None = None) -> float:
    """``float(value)`` if ``value`` is a finite real number (not a bool) >= ``low`` (when given), else ``ValueError``
    naming the argument, what it must be and the value."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (low is not None and value < low):
        bound = "" if low is None else f" >= {low}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)
