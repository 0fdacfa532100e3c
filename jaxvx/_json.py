"""Values as strict JSON: NumPy and JAX arrays and scalars as lists and numbers, NaN and inf as ``null``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["jsonable"]


def jsonable(value: Any) -> Any:
    """NumPy / JAX values as plain JSON values; NaN and inf become ``None`` (strict JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "__array__") or isinstance(value, np.generic):
        arr = np.asarray(value)
        if arr.ndim:
            return [jsonable(v) for v in arr.tolist()]
        value = arr.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
