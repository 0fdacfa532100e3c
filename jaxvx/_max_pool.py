"""Winner-takes-all max-pool backward without ``select_and_scatter``, for every method that differentiates a
max pooling (gradients, CAMs, LRP's ``wta`` rule).

XLA's CPU backend compiles the max-pool gradient (``select_and_scatter``) slowly and runs it slowly, many times the
pooling itself (docs/performance.md). For the common non-overlapping pools (stride = window) the same routing is a
reshape: every window becomes a trailing axis, the cotangent goes to the first maximal element (``argmax``, the
element XLA and PyTorch pick on ties). Overlapping pools (the I3D's 3 x 3 x 3 windows of stride 1, its 3 x 3
windows of stride 2) find each window's winning offset from one strided view per offset, then gather every input
position's cotangent in one pass of shifted reads (the same choice of winner; each input position is written once).
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp

from jaxvx import _program as P

__all__ = ["wta_backward", "fast_max_pool", "fast_pools"]


def _pads(padding, shape, window, strides):
    if isinstance(padding, str):
        return tuple(jax.lax.padtype_to_pads(shape, window, strides, padding))
    return tuple(tuple(p) for p in padding)


def wta_backward(x, g, window, strides, padding, y=None):
    """Cotangent of ``x`` for max pooling ``x`` ``[B, *spatial, C]`` with cotangent ``g`` on its output.

    ``window``/``strides``: per spatial axis; ``padding``: "VALID", "SAME" or ``(low, high)`` pairs (padded
    positions never win); ``y``: the pooling's output when the caller has it (else it is computed again). Each
    window's cotangent goes to its first maximal element.
    """
    window, strides = tuple(window), tuple(strides)
    n = len(window)
    spatial = x.shape[1:1 + n]
    pads = _pads(padding, spatial, window, strides)
    if window != strides:
        return _wta_overlapping(x, g, window, strides, pads, y)
    xp = jnp.pad(x, ((0, 0),) + pads + ((0, 0),), constant_values=-jnp.inf)
    out_sizes = tuple((s + lo + hi - w) // w + 1 for s, (lo, hi), w in zip(spatial, pads, window))
    used = tuple(o * w for o, w in zip(out_sizes, window))
    xc = xp[(slice(None),) + tuple(slice(0, u) for u in used)]
    b, c = x.shape[0], x.shape[-1]
    split = (b,) + sum(((o, w) for o, w in zip(out_sizes, window)), ()) + (c,)
    perm = (0,) + tuple(1 + 2 * i for i in range(n)) + (2 * n + 1,) + tuple(2 + 2 * i for i in range(n))
    k = math.prod(window)
    xr = xc.reshape(split).transpose(perm).reshape((b,) + out_sizes + (c, k))
    onehot = jax.nn.one_hot(jnp.argmax(xr, axis=-1), k, dtype=g.dtype)
    gr = (onehot * g[..., None]).reshape((b,) + out_sizes + (c,) + window)
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    gc = gr.transpose(inv).reshape(xc.shape)
    gp = jnp.pad(gc, ((0, 0),) + tuple((0, s - u) for s, u in zip(xp.shape[1:1 + n], used)) + ((0, 0),))
    return gp[(slice(None),) + tuple(slice(lo, lo + s) for (lo, _), s in zip(pads, spatial))]


def _strided_views(x, window, strides, pads, out):
    """``(xp, offsets, views)``: ``x`` padded with -inf, the window offsets (row-major) and one strided view of
    ``xp`` per offset."""
    xp = jnp.pad(x, ((0, 0),) + tuple(pads) + ((0, 0),), constant_values=-jnp.inf)
    offsets = list(itertools.product(*(range(w) for w in window)))
    views = [xp[(slice(None),) + tuple(slice(o, o + s * (m - 1) + 1, s) for o, s, m in zip(d, strides, out))]
             for d in offsets]
    return xp, offsets, views


def _strided_max(x, window, strides, pads):
    """Max pooling of ``x`` ``[B, *spatial, C]`` as the maximum of its strided views (exactly reduce_window's)."""
    n = len(window)
    out = tuple((s + lo + hi - w) // st + 1 for s, (lo, hi), w, st in zip(x.shape[1:1 + n], pads, window, strides))
    return functools.reduce(jnp.maximum, _strided_views(x, window, strides, pads, out)[2])


def _wta_overlapping(x, g, window, strides, pads, y=None):
    """:func:`wta_backward` for windows that overlap or leave gaps, in two fused passes.

    1. The winner: ``k[o]``, the first window offset ``d`` (row-major) with ``xp[o * s + d] == y[o]``, from one
       strided view of the padded input ``xp`` per offset (``prod(window)`` of them: a static loop over the window,
       not over positions).
    2. The routing: ``g`` and ``k`` are spread onto the padded grid (output ``o`` at ``o * s``, interior padding
       ``s - 1``), and the input cotangent is ``dx[q] = sum_d [k'[q - d] == d] g'[q - d]``: one shifted read per
       offset, every input position written once (no ``prod(window)`` passes over an input-sized accumulator).
    """
    n = len(window)
    out = g.shape[1:1 + n]
    xp, offsets, views = _strided_views(x, window, strides, pads, out)
    y = functools.reduce(jnp.maximum, views) if y is None else y
    index = jnp.int8 if len(offsets) < 127 else jnp.int32
    k = jnp.full(g.shape, -1, index)  # -1: no winner; a window holding a NaN drops its cotangent (XLA's
    # select_and_scatter hands it to a non-NaN element instead, and the reshape path above to the argmax)
    for i in reversed(range(len(offsets))):
        k = jnp.where(views[i] == y, jnp.asarray(i, index), k)
    # g and k on the padded grid, shifted by window - 1 so that every read q - d stays in range
    config = [(0, 0, 0)] + [(w - 1, size - (m - 1) * s - 1, s - 1)
                            for w, s, m, size in zip(window, strides, out, xp.shape[1:1 + n])] + [(0, 0, 0)]
    gs = jax.lax.pad(g, jnp.zeros((), g.dtype), config)
    ks = jax.lax.pad(k, jnp.asarray(-1, index), config)
    spatial = x.shape[1:1 + n]
    zero = jnp.zeros((), g.dtype)
    total = None
    for i, d in enumerate(offsets):
        # input position q (unpadded) is xp position q + lo, read at (q + lo) - d + (w - 1)
        at = (slice(None),) + tuple(slice(lo + w - 1 - e, lo + w - 1 - e + size)
                                    for (lo, _), w, e, size in zip(pads, window, d, spatial))
        term = jnp.where(ks[at] == i, gs[at], zero)
        total = term if total is None else total + term
    return total


def fast_max_pool(call):
    """A max-pooling node's output with the winner-takes-all backward of :func:`wta_backward` (the ordinary
    gradient, without XLA's slow ``select_and_scatter``); for overlapping windows or gaps the output itself is the
    maximum of strided views (the same values as ``reduce_window``). None where the pooling is not a channels-last
    ``[B, *spatial, C]`` window pooling, or pads a negative amount (cropping; the ordinary gradient then)."""
    e = call._program.eqns[call.node.eqns[0]]
    if e.prim.name != "reduce_window_max":
        return None
    wd, ws, pads = e.params["window_dimensions"], e.params["window_strides"], e.params["padding"]
    if (wd[0], wd[-1], ws[0], ws[-1]) != (1, 1, 1, 1) or tuple(pads[0]) != (0, 0) or tuple(pads[-1]) != (0, 0) \
            or any(d != 1 for d in e.params["base_dilation"] + e.params["window_dilation"]) \
            or any(p < 0 for pair in pads for p in pair):
        return None
    window, strides, padding = tuple(wd[1:-1]), tuple(ws[1:-1]), tuple(tuple(p) for p in pads[1:-1])
    if window != strides and call.inputs[0].dtype == jnp.float32:
        out = _strided_max(call.inputs[0], window, strides, padding)  # the same maxima, faster than reduce_window
    else:
        out = call.forward()
    return P.with_backward(lambda ins, o, ex, ct: (wta_backward(ins[0], ct, window, strides, padding, o),),
                           call.inputs, out)


def fast_pools(call):
    """A :func:`jaxvx._program.evaluate` handler: :func:`fast_max_pool` for every max pooling, else ordinary."""
    return fast_max_pool(call) if call.node.kind == "max_pool" else None
