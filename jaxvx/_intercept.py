"""Interception core: reach the Flax linen modules inside an opaque ``forward(video) -> logits``.

Explanation methods receive a pure function, not a model. Everything they need from inside it (a layer's
activation and gradient, a modified backward pass through a layer) is obtained with
``flax.linen.intercept_methods`` while ``forward`` runs, so the same ``forward`` serves every method.

Pieces:

- :func:`layer_matcher`: turn a layer spec (a module path such as ``"conv5b"``, a Module type, or a predicate
  ``(module, path) -> bool``) into a predicate.
- :func:`run`: call ``forward(x)`` with interception: per-module handlers (``rule_for``) and *taps* that capture a
  layer's output and optionally add a ``delta`` to it (the cotangent of a zero delta is the gradient at that
  layer).
- :func:`tap_shapes`, :func:`layer_vjp`: activation and pull-back to a layer in one forward pass.
- :func:`with_backward`: return a module's output unchanged but give it a custom vector-Jacobian product with
  respect to the module's inputs (the ordinary gradient through the module is cut). This is how LRP rules,
  guided backprop and deconvnet are attached: the custom VJP takes the layer's inputs, output and parameters as
  ordinary arguments (no closure over traced arrays), so it works under ``jax.jit`` and ``jax.vmap``.
- :func:`unbound_layer`: a pure function ``(variables, *inputs) -> output`` re-applying a bound module with other
  parameters (an unbound clone, applied with interception bypassed so that rules do not re-enter themselves).

Only ``__call__`` is acted on (``setup`` and other methods pass through), and a module that re-enters its own
``__call__`` (a ``super().__call__`` chain) is handled once.
"""

from __future__ import annotations

import contextlib
import fnmatch
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvx._program import with_backward

__all__ = [
    "LayerSpec",
    "Tap",
    "CallInfo",
    "layer_matcher",
    "module_path",
    "bypass",
    "is_bypassed",
    "run",
    "tap_shapes",
    "layer_vjp",
    "modules",
    "with_backward",
    "unbound_layer",
    "split_array_args",
]

LayerSpec = Any  # str path | Module type | tuple of types | Callable[[nn.Module, str], bool]

_local = threading.local()


def _bypass_depth() -> int:
    return getattr(_local, "bypass", 0)


@contextlib.contextmanager
def bypass():
    """Inside this block every jaxvx interceptor passes calls straight through (for re-applying layers)."""
    _local.bypass = _bypass_depth() + 1
    try:
        yield
    finally:
        _local.bypass = _bypass_depth() - 1


def is_bypassed() -> bool:
    return _bypass_depth() > 0


def module_path(module: nn.Module) -> str:
    """The ``/``-joined scope path of a bound module (``"conv5b"``, ``"cnn/conv5_3"``; ``""`` for the root)."""
    try:
        return "/".join(str(p) for p in module.path)
    except Exception:  # unbound module
        return module.name or ""


def _describe(spec) -> str:
    if isinstance(spec, str):
        return repr(spec)
    if isinstance(spec, type):
        return spec.__name__
    if isinstance(spec, tuple):
        return "(" + ", ".join(_describe(s) for s in spec) + ")"
    return getattr(spec, "__name__", repr(spec))


def layer_matcher(spec: LayerSpec, *, name: str = "layer") -> Callable[[nn.Module, str], bool]:
    """A predicate ``(module, path) -> bool`` from a layer spec.

    - a string: a module path; it matches the full path (``"layer4_1"``) or a trailing part of it on ``/``
      boundaries (``"conv5_3"`` matches ``"cnn/conv5_3"``); shell wildcards work (``"conv5*"``);
    - a Module class or a tuple of classes: ``isinstance``;
    - a callable ``(module, path) -> bool``: used as is.
    """
    if isinstance(spec, str):
        if not spec:
            raise ValueError(f"{name}: expected a module path such as 'conv5b', got an empty string")

        def match_path(module, path, _pat=spec):
            if fnmatch.fnmatchcase(path, _pat):
                return True
            parts = path.split("/")
            return any(fnmatch.fnmatchcase("/".join(parts[i:]), _pat) for i in range(1, len(parts)))

        match_path.__name__ = f"path {spec!r}"
        return match_path
    if isinstance(spec, type) and issubclass(spec, nn.Module) or (
            isinstance(spec, tuple) and spec and all(isinstance(s, type) and issubclass(s, nn.Module) for s in spec)):
        types = spec if isinstance(spec, tuple) else (spec,)

        def match_type(module, path, _types=types):
            return isinstance(module, _types)

        match_type.__name__ = _describe(spec)
        return match_type
    modules = getattr(spec, "modules", None)
    if isinstance(modules, tuple) and hasattr(spec, "kinds"):  # a jaxvx.lrp.Kind: its module classes

        def match_kind(module, path, _types=modules):
            return bool(_types) and isinstance(module, _types)

        match_kind.__name__ = spec.name
        return match_kind
    if callable(spec):
        return spec
    raise TypeError(f"{name}: expected a module path (str), a flax Module class or a predicate "
                    f"(module, path) -> bool, got {spec!r}")


@dataclass
class Tap:
    """A layer whose output :func:`run` captures (first matching call; a second call is an error)."""

    match: Callable[[nn.Module, str], bool]
    name: str = "layer"
    hit: Any = None
    path: str | None = None


@dataclass
class _Record:
    path: str
    type: str
    module: Any = field(repr=False, default=None)


def _is_array(a) -> bool:
    return isinstance(a, (jax.Array, np.ndarray)) or (hasattr(a, "shape") and hasattr(a, "dtype")
                                                       and not isinstance(a, (bool, int, float)))


def split_array_args(args: Sequence) -> tuple[tuple, Callable[[tuple], tuple]]:
    """Split positional ``args`` into the array ones and a function putting arrays back among the others."""
    idx = tuple(i for i, a in enumerate(args) if _is_array(a))
    arrays = tuple(args[i] for i in idx)
    args = tuple(args)

    def merge(new_arrays):
        out = list(args)
        for i, a in zip(idx, new_arrays):
            out[i] = a
        return tuple(out)

    return arrays, merge


@dataclass(frozen=True)
class CallInfo:
    """What :func:`run` knows about a module call: its path, and for each array argument whether it is
    non-negative by construction (the very output of a ReLU, or of a sign-preserving module applied to one)."""

    path: str
    nonneg: tuple[bool, ...]


def _sign_preserving():
    from jaxvx.models import AvgPool, Flatten, GlobalAvgPool, MaxPool, Sum, TemporalMean

    return (MaxPool, AvgPool, Flatten, GlobalAvgPool, TemporalMean, Sum, nn.Dropout)


def run(forward: Callable, x, *, rule_for: Callable | None = None, taps: Sequence[Tap] = (),
        deltas: Sequence | None = None, record: list | None = None):
    """``forward(x)`` with jaxvx's interceptor active.

    Args:
        forward: the user's pure ``forward(video) -> logits``.
        x: its input.
        rule_for: ``(module, path) -> handler | None``, asked once per module ``__call__`` in forward order; a
            handler ``(next_fun, module, args, kwargs, info) -> output`` replaces the call (``info``: a
            :class:`CallInfo`).
        taps: layers whose outputs are captured into ``tap.hit`` (first matching call).
        deltas: one array per tap, added to that layer's output (zeros whose cotangent is the layer gradient).
        record: a list to which a :class:`_Record` is appended per module call (for listings and errors).

    Returns:
        ``forward(x)``; the taps hold their layers' outputs (``None`` for a tap that never matched).
    """
    if deltas is not None and len(deltas) != len(taps):
        raise ValueError(f"deltas: expected one per tap ({len(taps)}), got {len(deltas)}")
    active: list = []
    from jaxvx.models import ReLU

    preserving = _sign_preserving()
    nonneg: dict[int, Any] = {}  # id -> the array itself (kept alive so that ids are not reused)

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__" or is_bypassed():
            return next_fun(*args, **kwargs)
        module = context.module
        if any(m is module for m in active):
            return next_fun(*args, **kwargs)
        path = module_path(module)
        active.append(module)
        try:
            if record is not None:
                record.append(_Record(path, type(module).__name__, module))
            handler = rule_for(module, path) if rule_for is not None else None
            arrays, _ = split_array_args(args)
            flags = tuple(id(a) in nonneg and nonneg[id(a)] is a for a in arrays)
            if handler is None:
                out = next_fun(*args, **kwargs)
            else:
                out = handler(next_fun, module, args, kwargs, CallInfo(path, flags))
            for i, tap in enumerate(taps):
                if tap.match(module, path):
                    if tap.hit is not None:
                        raise ValueError(f"{tap.name}: the module {path!r} (or another one matching it) is called more "
                                         f"than once in forward (first: {tap.path!r}); name one call's module "
                                         "uniquely")
                    if not _is_array(out):
                        raise ValueError(f"{tap.name}: module {path!r} returns {type(out).__name__}, not an array")
                    if deltas is not None:
                        out = out + deltas[i].astype(out.dtype)
                    tap.hit, tap.path = out, path
            if _is_array(out) and (isinstance(module, ReLU) or (
                    isinstance(module, preserving) and flags and all(flags))):
                nonneg[id(out)] = out
        finally:
            active.pop()
        return out

    with nn.intercept_methods(interceptor):
        return forward(x)


def modules(forward: Callable, x) -> list[tuple[str, str]]:
    """``(path, type name)`` of every module call in ``forward(x)``, in forward order (abstract evaluation only)."""
    record: list = []
    jax.eval_shape(lambda v: run(forward, v, record=record), x)
    return [(r.path, r.type) for r in record]


def _not_found(forward, x, specs, what) -> ValueError:
    seen = modules(forward, x)
    if not seen:
        return ValueError(f"{what}: forward calls no flax.linen Module, so no layer can be intercepted; pass a "
                          "function that applies a Flax linen model, e.g. functools.partial(model.apply, variables)")
    listing = ", ".join(f"{p or '<root>'} ({t})" for p, t in seen[:60])
    more = "" if len(seen) <= 60 else f", ... ({len(seen) - 60} more)"
    return ValueError(f"{what}: no module in forward matches {specs}; its modules are: {listing}{more}")


def tap_shapes(forward: Callable, x, layers: Sequence[LayerSpec], *, name: str = "layer", rule_for=None):
    """``(logits ShapeDtypeStruct, [layer output ShapeDtypeStruct, ...], [path, ...])`` by abstract evaluation.

    Raises a ValueError listing forward's modules when a layer is not found.
    """
    taps = [Tap(layer_matcher(s, name=name), name) for s in layers]

    def f(v):
        for t in taps:
            t.hit, t.path = None, None
        logits = run(forward, v, taps=taps, rule_for=rule_for() if rule_for is not None else None)
        missing = [s for s, t in zip(layers, taps) if t.hit is None]
        if missing:
            raise _not_found(forward, x, ", ".join(_describe(s) for s in missing), name)
        return logits, [t.hit for t in taps]

    logits, hits = jax.eval_shape(f, x)
    return logits, hits, [t.path for t in taps]


def layer_vjp(forward: Callable, x, layers: Sequence[LayerSpec], *, name: str = "layer",
              rule_for: Callable | None = None):
    """Logits, layer outputs and a pull-back from logit cotangents to the layers' outputs, in one forward pass.

    Returns ``(logits, activations, pullback)`` where ``activations[i]`` is the output of ``layers[i]`` and
    ``pullback(logit_cotangent) -> [cotangent at layers[i]'s output, ...]``. With ``rule_for`` (a zero-argument
    factory of a fresh ``rule_for`` for :func:`run`), the backward pass is the modified one of those rules (the
    cotangent is then the relevance reaching each layer's output).
    """
    _, shapes, _ = tap_shapes(forward, x, layers, name=name, rule_for=rule_for)
    taps = [Tap(layer_matcher(s, name=name), name) for s in layers]

    def f(deltas):
        for t in taps:
            t.hit, t.path = None, None
        logits = run(forward, x, taps=taps, deltas=deltas, rule_for=rule_for() if rule_for is not None else None)
        return logits, [t.hit for t in taps]

    zeros = [jnp.zeros(s.shape, s.dtype) for s in shapes]
    logits, pullback, acts = jax.vjp(f, zeros, has_aux=True)
    return logits, acts, lambda ct: pullback(ct)[0]


def unbound_layer(module: nn.Module, args: Sequence, kwargs: dict):
    """``(variables, *array_inputs) -> output``: ``module`` re-applied with other variables, other args as given.

    The module is cloned unbound and applied with interception bypassed. Non-array positional arguments and all
    keyword arguments are kept as they were in the original call (they must not be traced arrays).
    """
    clone = module.clone(parent=None)
    _, merge = split_array_args(args)

    def layer(variables, *arrays):
        with bypass():
            return clone.apply(variables, *merge(arrays), **kwargs)

    return layer
