"""The mask optimisers' loop: PyTorch's dampened SGD as an optax transform and one compiled program per method.

A mask method is a :class:`Program` (``prepare``, ``objective``, ``finish``): :func:`run` compiles it once per
``forward`` and runs ``lax.scan`` over the iterations (or, ``loop="python"``, one jitted step per iteration), the
parameters clamped to [0, 1] after each optax update, the per-iteration terms of the objective kept as history.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvx.methods._common import is_traced

__all__ = ["LOOPS", "Program", "SGDDampenedState", "geometric_schedule", "resolve_loop", "run", "sgd_dampened"]


class SGDDampenedState(NamedTuple):
    count: jax.Array
    buffer: optax.Updates


def sgd_dampened(learning_rate: float, momentum: float = 0.9, dampening: float = 0.9) -> optax.GradientTransformation:
    """PyTorch's SGD with momentum and dampening (no Nesterov, no weight decay) as an optax transform.

    First step: ``buf = g``; then ``buf = momentum * buf + (1 - dampening) * g``; update ``= -learning_rate * buf``.
    (``optax.sgd(momentum=...)`` has no dampening: it accumulates ``buf = momentum * buf + g``.)
    """

    def init(params):
        return SGDDampenedState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        del params
        first = state.count == 0
        buf = jax.tree.map(lambda b, g: jnp.where(first, g, momentum * b + (1.0 - dampening) * g), state.buffer,
                           grads)
        updates = jax.tree.map(lambda b: -learning_rate * b, buf)
        return updates, SGDDampenedState(state.count + 1, buf)

    return optax.GradientTransformation(init, update)


def geometric_schedule(start: float, factor: float, num: int) -> np.ndarray:
    """``start * factor^t`` for t < num, by repeated multiplication in float64 (TorchRay's ``w *= factor``)."""
    return np.cumprod(np.concatenate([[start], np.full(num - 1, factor)]))[:num] if num > 0 else np.zeros(0)


LOOPS = ("auto", "scan", "python")




def resolve_loop(loop: str, traced: bool) -> str:
    """``"auto"`` is ``"scan"``: the faster loop on every backend measured for jaxvx's models (docs/performance.md).
    ``"python"`` is for models whose convolutions XLA's CPU backend runs slowly inside loop bodies (plain ``lax``
    convolutions with JAX's own transposes; jaxvx's models use :func:`jaxvx.models.conv_general_dilated`)."""
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}, got {loop!r}")
    if loop == "auto":
        return "scan"
    if loop == "python" and traced:
        raise ValueError("loop='python' cannot run under jax.jit / vmap; use loop='scan' (or 'auto')")
    return loop


class Program(NamedTuple):
    """An optimisation as three pure pieces (see :func:`run`).

    - ``prepare(video, target) -> (params0, consts)``: initial parameters and every array the loop reads
      (pyramid, resolved target, templates), computed once;
    - ``objective(params, consts, xs) -> (loss, aux)``: the loss to minimise at one iteration, ``xs`` that
      iteration's entries of the schedule;
    - ``finish(last_params, consts, history) -> output``: the result from the parameters of the last iteration
      and the stacked ``aux`` (leading axis: iterations).
    """

    prepare: Callable
    objective: Callable
    finish: Callable


def _compile(program: Program, optimizer: optax.GradientTransformation, schedule: dict):
    """``(whole, prepare, step, finish)``: the scanned program and the pieces of the Python loop."""

    def step(carry, consts, xs):
        params, state = carry
        (_, aux), grads = jax.value_and_grad(program.objective, has_aux=True)(params, consts, xs)
        updates, state = optimizer.update(grads, state, params)
        new = jnp.clip(optax.apply_updates(params, updates), 0.0, 1.0)
        return (new, state), (aux, params)

    def whole(video, target):
        params, consts = program.prepare(video, target)

        def scan_body(carry, xs):
            (new, state), (aux, params) = step(carry[:2], consts, xs)
            return (new, state, params), aux

        init = (params, optimizer.init(params), params)
        (_, _, last), history = jax.lax.scan(scan_body, init, {k: jnp.asarray(v) for k, v in schedule.items()})
        return program.finish(last, consts, history)

    def prepare(video, target):
        params, consts = program.prepare(video, target)
        return (params, optimizer.init(params)), consts

    return whole, prepare, step, program.finish


def run(build: Callable, forward: Callable, video, target, *, optimizer: optax.GradientTransformation,
        schedule: dict, loop: str, cache: weakref.WeakKeyDictionary | None = None):
    """Run the optimisation ``build(forward) -> Program`` on ``video`` for every iteration of ``schedule``.

    ``schedule`` maps names to NumPy arrays ``[num_iter, ...]`` (per-iteration constants). After each step the
    parameters are clamped to [0, 1]. ``loop`` (see :func:`resolve_loop`): ``"scan"`` is one jitted program (a
    ``lax.scan`` over iterations, the per-iteration ``aux`` as its output), ``"python"`` calls one jitted step per
    iteration from Python. Under an outer ``jax.jit`` the scan is traced inline. Compiled functions are kept per
    ``forward`` in ``cache`` (a weak dictionary), so calling a method again on clips of the same shape does not
    compile again.
    """
    traced = is_traced(video, target)
    loop = resolve_loop(loop, traced)
    if traced:
        return _compile(build(forward), optimizer, schedule)[0](video, target)
    fns = None
    if cache is not None:
        try:
            fns = cache.get(forward)
        except TypeError:  # not weakly referenceable
            cache = None
    if fns is None:
        whole, prepare, step, finish = _compile(build(forward), optimizer, schedule)
        fns = (jax.jit(whole), jax.jit(prepare), jax.jit(step), jax.jit(finish))
        if cache is not None:
            cache[forward] = fns
    whole, prepare, step, finish = fns
    if loop == "scan":
        return whole(video, target)
    carry, consts = prepare(video, target)
    num = len(next(iter(schedule.values())))
    auxes = []
    for i in range(num):
        carry, (aux, last) = step(carry, consts, {k: v[i] for k, v in schedule.items()})
        auxes.append(aux)
    history = jax.tree.map(lambda *a: np.stack(a), *jax.device_get(auxes))
    return finish(last, consts, history)
