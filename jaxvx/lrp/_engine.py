"""The LRP engine: attach a composite's rules to the operations of ``forward``'s traced program as custom VJPs
(:mod:`jaxvx._program`), and seed it.

Every node of the program gets the rule of the composite's first matching entry; a node that only moves values
keeps its ordinary gradient; any other node without a rule (softmax, attention, LayerNorm, ...) is an error that
names it. The relevance travels as the cotangent, so what reaches the input is the relevance.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxvx import _program as P
from jaxvx._max_pool import fast_max_pool
from jaxvx._target import resolve_target
from jaxvx.lrp import _rules as R
from jaxvx.lrp._composites import Composite

__all__ = ["attach", "handler_for", "seed", "relevance", "SEEDS", "canonize"]

SEEDS = ("logit", "one_hot", "softmax")


def _unruled(composite: Composite, node) -> ValueError:
    return ValueError(
        f"composite {composite.name}: no LRP rule for {node.describe()}. LRP rules exist for convolutions, dense "
        "layers, activations, pooling, sums and scaling by constants; this operation (attention, softmax, "
        "LayerNorm, GELU and recurrent gates compute such) has none, and jaxvx does not fall back to its plain "
        "gradient silently. To take the ordinary gradient there on purpose, give it a rule by path: "
        f"composite.with_layers([({node.path or '<path>'!r}, jaxvx.lrp.gradient())])")


def _node_handler(rule: R.Rule, composite: Composite) -> Callable:
    """``call -> output | None`` applying ``rule`` to a node of the traced program (None: its ordinary gradient)."""
    def handle(call):
        node = call.node
        if rule.kind == "gradient":
            return None
        if rule.kind == "error":
            raise ValueError(rule.message.format(path=repr(node.path)))
        if rule.kind == "wta":
            if node.kind != "max_pool":
                raise ValueError(f"rule wta: {node.describe()} is not a max pooling")
            return fast_max_pool(call)
        out = call.forward()
        if rule.kind == "pass":
            (x,) = call.inputs if len(call.inputs) == 1 else (None,)
            if x is None or x.shape != out.shape:
                raise ValueError(f"rule pass: {node.describe()} must map one input to an output of the same shape, "
                                 f"got inputs {[tuple(i.shape) for i in call.inputs]}")
            return P.with_backward(lambda ins, o, e, ct: (ct,), call.inputs, out)
        if rule.layer == "window_sum":
            if node.kind != "max_pool":
                raise ValueError(f"rule {rule.name}: {node.describe()} is not a max pooling")
            layer, variables = _window_sum_layer(call), {"params": {}}
        else:
            layer, variables = call.layer()
        consts = {k: jnp.asarray(v) for k, v in rule.consts}
        nonneg = node.nonneg

        def backward(ins, o, extras, ct):
            vs, cs = extras
            return R.rule_backward(rule, layer, ins, o, vs, cs, ct, nonneg=nonneg)

        return P.with_backward(backward, call.inputs, out, (variables, consts))

    return handle


def _window_sum_layer(call):
    """The max pooling of ``call`` read as a sum pooling (padded positions count as 0)."""
    e = call._program.eqns[call.node.eqns[0]]
    if e.prim.name == "reduce_max":
        axes = tuple(e.params["axes"])
        return lambda variables, x: jnp.sum(x, axis=axes)
    params = {k: e.params[k] for k in ("window_dimensions", "window_strides", "padding", "base_dilation",
                                       "window_dilation")}
    return lambda variables, x: jax.lax.reduce_window_sum_p.bind(x, **params)


def attach(forward: Callable, composite: Composite, *, require: bool = True) -> Callable:
    """``forward`` with ``composite``'s rules attached: same outputs, relevance-propagating VJP.

    Returns ``f(video) -> logits``; ``jax.vjp(f, video)[1](seed)`` gives the input relevance for the output
    relevance ``seed``. ``forward`` is read as a traced program (:mod:`jaxvx._program`): any Flax linen or NNX
    model, or plain JAX function, with BatchNorm and other per-channel affine maps after a convolution or dense
    layer folded into it. ``require=True``: raise when no operation received a rule other than the gradient.
    """
    if not isinstance(composite, Composite):
        raise TypeError(f"composite: expected a jaxvx.lrp.Composite (e.g. jaxvx.lrp.deep_taylor(-1, 1)), got "
                        f"{type(composite).__name__}")

    def f(video):
        program = P.trace(forward, video)
        return P.evaluate(program, video, handler_for(composite, program, require=require))

    return f


def handler_for(composite: Composite, program, *, require: bool = True) -> Callable:
    """``call -> output | None`` for :func:`jaxvx._program.evaluate`: ``composite``'s rule for each node of
    ``program``. Raises for a node that is not mere structure and has no rule, and (``require``) when no node has
    a rule other than the gradient."""
    rules = composite.assign(program.nodes)
    handlers = {}
    for node, rule in zip(program.nodes, rules):
        if rule is None:
            if node.kind == "other":
                raise _unruled(composite, node)
            continue
        handlers[node.index] = _node_handler(rule, composite)
    if require and not any(r is not None and r.kind != "gradient" for r in rules):
        raise ValueError(f"composite {composite.name}: none of its rules applies to an operation of forward on "
                         "the video path; its operations are:\n" + (P.describe(program) or "(none)"))

    def handler(call):
        h = handlers.get(call.node.index)
        return None if h is None else h(call)

    return handler


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

