"""The LRP engine: attach a composite's rules to the modules inside ``forward`` as custom VJPs, and seed it."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvx import _intercept as I
from jaxvx.lrp import _rules as R
from jaxvx.lrp._composites import Composite
from jaxvx.lrp._pool import wta_handler

__all__ = ["attach", "rule_for", "rule_handler", "seed", "relevance", "SEEDS", "canonize"]

SEEDS = ("logit", "one_hot", "softmax")


def _window_sum(module: nn.Module):
    """``(variables, x) -> window sums`` with the max pool's window, strides and padding (pads count as 0)."""
    window = getattr(module, "window", None)
    if window is None:
        raise ValueError(f"proportional rule: module {I.module_path(module)!r} ({type(module).__name__}) has no "
                         "'window' attribute; it applies to jaxvx.models.MaxPool modules")
    from jaxvx.models._layers import _padding

    window = tuple(int(w) for w in window)
    strides = tuple(window if module.strides is None else module.strides)
    padding = _padding(module.padding, len(window))

    def layer(variables, x):
        if isinstance(padding, str):
            pad = padding
        else:
            pad = ((0, 0),) + tuple(padding) + ((0, 0),)
        return jax.lax.reduce_window(x, np.zeros((), x.dtype), jax.lax.add, (1, *window, 1), (1, *strides, 1), pad)

    return layer


def rule_handler(rule: R.Rule, path: str = "") -> Callable | None:
    """A :func:`jaxvx._intercept.run` handler applying ``rule`` to a module call (None for the gradient rule)."""
    if rule.kind == "gradient":
        return None
    if rule.kind == "wta":
        def wta(next_fun, module, args, kwargs, info):
            if not hasattr(module, "window"):
                raise ValueError(f"rule wta: module {I.module_path(module)!r} ({type(module).__name__}) is not a "
                                 "jaxvx.models.MaxPool")
            return wta_handler(next_fun, module, args, kwargs, info)
        return wta
    if rule.kind == "error":
        def fail(next_fun, module, args, kwargs, info):
            raise ValueError(rule.message.format(path=repr(I.module_path(module))))
        return fail

    def handle(next_fun, module, args, kwargs, info):
        out = next_fun(*args, **kwargs)
        inputs, _ = I.split_array_args(args)
        if not inputs:
            raise ValueError(f"rule {rule.name}: module {I.module_path(module)!r} was called without array inputs")
        if not I._is_array(out):
            raise ValueError(f"rule {rule.name}: module {I.module_path(module)!r} returns {type(out).__name__}, "
                             "not an array")
        if rule.kind == "pass":
            if len(inputs) != 1 or inputs[0].shape != out.shape:
                raise ValueError(f"rule pass: module {I.module_path(module)!r} must map one input to an output of "
                                 f"the same shape, got inputs {[tuple(i.shape) for i in inputs]} -> "
                                 f"{tuple(out.shape)}")
            return I.with_backward(lambda ins, o, e, ct: (ct,), inputs, out)
        layer = _window_sum(module) if rule.layer == "window_sum" else I.unbound_layer(module, args, kwargs)
        variables = {} if rule.layer == "window_sum" else _float_variables(module)
        consts = {k: jnp.asarray(v) for k, v in rule.consts}
        nonneg = bool(info.nonneg) and all(info.nonneg)

        def backward(ins, o, extras, ct):
            vs, cs = extras
            return R.rule_backward(rule, layer, ins, o, vs, cs, ct, nonneg=nonneg)

        return I.with_backward(backward, inputs, out, (variables, consts))

    return handle


def _float_variables(module: nn.Module) -> dict:
    variables = module.variables
    out = {}
    for col, tree in dict(variables).items():
        leaves = jax.tree.leaves(tree)
        if any(not jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating) for v in leaves):
            raise ValueError(f"module {I.module_path(module)!r}: collection {col!r} holds non-float variables; "
                             "LRP rules handle float parameters only")
        out[col] = tree
    return out


def rule_for(composite: Composite, hooked: list | None = None) -> Callable:
    """A fresh ``(module, path) -> handler | None`` for :func:`jaxvx._intercept.run` applying ``composite``;
    the paths of hooked modules are appended to ``hooked``."""
    assign = composite.assigner()

    def for_module(module, path):
        rule = assign(module, path)
        if rule is None:
            return None
        if hooked is not None:
            hooked.append(path)
        return rule_handler(rule, path)

    return for_module


def attach(forward: Callable, composite: Composite, *, require: bool = True) -> Callable:
    """``forward`` with ``composite``'s rules attached: same outputs, relevance-propagating VJP.

    Returns ``f(video) -> logits``; ``jax.vjp(f, video)[1](seed)`` gives the input relevance for the output
    relevance ``seed``. ``require=True``: raise when no module in forward received a rule.
    """
    if not isinstance(composite, Composite):
        raise TypeError(f"composite: expected a jaxvx.lrp.Composite (e.g. jaxvx.lrp.deep_taylor(-1, 1)), got "
                        f"{type(composite).__name__}")

    def f(video):
        hooked = []
        logits = I.run(forward, video, rule_for=rule_for(composite, hooked))
        if require and not hooked:
            seen = I.modules(forward, video)
            if not seen:
                raise ValueError("forward calls no flax.linen Module, so LRP rules cannot be attached; pass a "
                                 "function that applies a Flax linen model, e.g. functools.partial(model.apply, "
                                 "variables)")
            raise ValueError(f"composite {composite.name}: no module of forward matches any of its layers; "
                             f"modules seen: {', '.join(f'{p} ({t})' for p, t in seen[:40])}")
        return logits

    return f


def seed(logits, target, kind: str = "logit"):
    """Output relevance ``[B, K]``: zero except at ``target``, where it is the logit (``"logit"``), 1
    (``"one_hot"``) or the softmax probability (``"softmax"``)."""
    onehot = jax.nn.one_hot(target, logits.shape[-1], dtype=logits.dtype)
    logits = jax.lax.stop_gradient(logits)
    if kind == "logit":
        return onehot * logits
    if kind == "one_hot":
        return onehot
    if kind == "softmax":
        return onehot * jax.nn.softmax(logits, axis=-1)
    raise ValueError(f"seed: expected one of {SEEDS}, got {kind!r}")


def relevance(forward: Callable, video, target, composite: Composite, *, seed_kind: str = "logit"):
    """``(relevance [like video], logits, target)`` of ``composite`` for ``target`` (None: the predicted class)."""
    from jaxvx.methods._common import resolve_target

    logits, pullback = jax.vjp(attach(forward, composite), video)
    target = resolve_target(logits, target)
    (rel,) = pullback(seed(logits, target, seed_kind))
    return rel, logits, target


def canonize(model, variables):
    """LRP's canonical form of a model: BatchNorm folded into the preceding convolutions.

    ``(model, variables) -> (model, variables)``; the same as :func:`jaxvx.models.fold_batchnorm` (a pure
    rewrite of the variables; models without BatchNorm come back unchanged).
    """
    from jaxvx.models import fold_batchnorm

    return fold_batchnorm(model, variables)

