"""Provenance: stable descriptions of what produced a result (model weights, methods and their settings, versions).

Two runs whose descriptions agree computed comparable rows; a results file records them in its header and a resume
compares them key by key. A description is plain JSON (strings, numbers, lists, dicts) and never holds a memory
address, so it is equal across processes and sessions for equal settings:

- arrays (NumPy, JAX) are named by ``shape``, ``dtype`` and the SHA-256 of their bytes;
- a function by its qualified name, the values of the variables it closes over and, for ``functools.partial``,
  its arguments (recursively, to a bounded depth);
- any other object by its ``repr`` with ``at 0x...`` addresses removed.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import re
from importlib import metadata
from typing import Any

import numpy as np

__all__ = ["describe", "digest", "tree_sha256", "versions"]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MAX_DEPTH = 4
_MAX_REPR = 300


def tree_sha256(tree) -> str:
    """SHA-256 (hex) over the leaves of a pytree of arrays: each leaf's path, shape, dtype and bytes, in order."""
    import jax

    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        arr = np.asarray(leaf)
        h.update(jax.tree_util.keystr(path).encode())
        h.update(f"{arr.shape}{arr.dtype.str}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _array(obj) -> dict:
    arr = np.asarray(obj)
    return {"array": list(arr.shape), "dtype": str(arr.dtype),
            "sha256": hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()[:16]}


def _is_array(obj) -> bool:
    return isinstance(obj, np.ndarray | np.generic) or type(obj).__module__.startswith(("jax", "jaxlib")) and hasattr(
        obj, "shape") and hasattr(obj, "dtype")


def describe(obj: Any, _depth: int = 0) -> Any:
    """A JSON description of ``obj`` that is equal for equal settings and never holds a memory address."""
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else str(obj)
    if _is_array(obj):
        return _array(obj)
    if _depth >= _MAX_DEPTH:
        return _short(obj)
    if isinstance(obj, list | tuple):
        return [describe(v, _depth + 1) for v in obj]
    if isinstance(obj, dict):
        return {str(k): describe(v, _depth + 1) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, functools.partial):
        return {"partial": describe(obj.func, _depth + 1), "args": describe(list(obj.args), _depth + 1),
                "keywords": describe(dict(obj.keywords), _depth + 1)}
    code = getattr(obj, "__code__", None)
    if code is not None and callable(obj):
        out: dict[str, Any] = {"function": f"{getattr(obj, '__module__', '?')}.{obj.__qualname__}"}
        if getattr(obj, "__name__", None) not in (None, obj.__qualname__.rsplit(".", 1)[-1]):
            out["name"] = obj.__name__
        cells = {}
        for name, cell in zip(code.co_freevars, obj.__closure__ or ()):
            try:
                cells[name] = describe(cell.cell_contents, _depth + 1)
            except ValueError:  # an empty cell
                cells[name] = None
        if cells:
            out["closure"] = cells
        defaults = getattr(obj, "__kwdefaults__", None)
        if defaults:
            out["defaults"] = describe(dict(defaults), _depth + 1)
        return out
    try:
        import jax

        leaves, treedef = jax.tree_util.tree_flatten(obj)
        if leaves and any(_is_array(leaf) for leaf in leaves) and not (len(leaves) == 1 and leaves[0] is obj):
            return {"pytree": _ADDRESS.sub("", str(treedef))[:_MAX_REPR], "sha256": tree_sha256(obj)}
    except Exception:  # noqa: BLE001 - not a pytree: described by its repr below
        pass
    return _short(obj)


def _short(obj) -> str:
    """``repr(obj)`` without addresses; a long one is cut and completed by the SHA-256 of the whole."""
    text = _ADDRESS.sub("", repr(obj))
    if len(text) <= _MAX_REPR:
        return text
    return f"{text[:_MAX_REPR]}... (sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]})"


def digest(description: Any) -> str:
    """A short SHA-256 of a description (its canonical JSON)."""
    import json

    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    """The versions that can change results: jaxvx, jax, jaxlib, flax, numpy, Python."""
    out = {}
    for dist in ("jaxvx", "jax", "jaxlib", "flax", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["python"] = platform.python_version()
    return out
