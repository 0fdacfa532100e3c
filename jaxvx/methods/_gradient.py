"""Gradient-based methods: sensitivity, gradient x input, integrated gradients, SmoothGrad, guided backprop,
deconvnet."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxvx import _program as P
from jaxvx._checks import check_int
from jaxvx._max_pool import fast_pools
from jaxvx.methods._common import check_batch_size, check_video, guarded, points_per_pass, resolve_target

__all__ = [
    "gradient",
    "gradient_x_input",
    "integrated_gradients",
    "smoothgrad",
    "guided_backprop",
    "deconvnet",
    "IG_METHODS",
    "ig_alphas",
]

IG_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def fast_forward(forward: Callable) -> Callable:
    """``forward`` with the same outputs and gradients, read as a traced program (:mod:`jaxvx._program`): its
    convolutions computed by :func:`jaxvx.models.conv_general_dilated` (oneDNN on the CPU), max pooling's backward
    without XLA's slow ``select_and_scatter`` (:mod:`jaxvx._max_pool`)."""

    def f(video):
        program = P.trace(forward, video)
        return P.evaluate(program, video, fast_pools)

    return f


def _target_grad(forward: Callable, video, target):
    """``(d logit[target] / d video, logits, target)`` with one forward and one backward pass."""
    logits, pullback = jax.vjp(fast_forward(forward), video)
    target = resolve_target(logits, target)
    (g,) = pullback(jax.nn.one_hot(target, logits.shape[-1], dtype=logits.dtype))
    return g, logits, target


def _check_bool(name, v):
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {v!r}")
    return bool(v)


def gradient(squared: bool = False, absolute: bool = False):
    """Sensitivity analysis: the gradient of the target logit with respect to the input.

    ``relevance = d f_c / d x`` (float32, shape of ``video``); ``squared=True``: ``(d f_c / d x)^2`` (Anders et
    al.'s sensitivity); ``absolute=True``: ``|d f_c / d x|`` (captum's ``Saliency`` default). Not both. Cost: one
    forward and one backward pass. ``target=None``: the predicted class.
    """
    squared, absolute = _check_bool("squared", squared), _check_bool("absolute", absolute)
    if squared and absolute:
        raise ValueError("squared, absolute: choose at most one (squared gradients are already non-negative)")

    @guarded
    def method(forward, video, target=None, *, key=None):
        video = check_video(video)
        g, _, _ = _target_grad(forward, video, target)
        if squared:
            return g * g
        if absolute:
            return jnp.abs(g)
        return g

    method.__name__ = "gradient"
    return method


def gradient_x_input():
    """``x * d f_c / d x`` (elementwise), shape of ``video``."""

    @guarded
    def method(forward, video, target=None, *, key=None):
        video = check_video(video)
        g, _, _ = _target_grad(forward, video, target)
        return video * g

    method.__name__ = "gradient_x_input"
    return method


def ig_alphas(steps: int, method: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """Integration points ``alphas`` in [0, 1] and weights (float64 ``[steps]``), as captum's approximations.

    ``gausslegendre``: ``alphas = (1 + nodes) / 2``, ``weights = w / 2`` (Gauss-Legendre nodes and weights);
    ``riemann_left``: ``alphas = linspace(0, 1 - 1/n, n)``; ``riemann_right``: ``linspace(1/n, 1, n)``;
    ``riemann_middle``: ``linspace(1/(2n), 1 - 1/(2n), n)``, weights ``1/n``; ``riemann_trapezoid``:
    ``linspace(0, 1, n)``, weights ``1/n`` with the first and last halved (as captum, whose weights then sum to
    ``1 - 1/n``).
    """
    n = check_int("steps", steps)
    if method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n)
        return 0.5 * (1 + nodes), 0.5 * w
    if method not in IG_METHODS:
        raise ValueError(f"method: expected one of {IG_METHODS}, got {method!r}")
    if n < 2:
        raise ValueError(f"steps: the Riemann methods need at least 2 steps, got {n}")
    w = np.full(n, 1.0 / n)
    if method == "riemann_left":
        a = np.linspace(0, 1 - 1 / n, n)
    elif method == "riemann_right":
        a = np.linspace(1 / n, 1, n)
    elif method == "riemann_middle":
        a = np.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
    else:
        a = np.linspace(0, 1, n)
        w[0] /= 2
        w[-1] /= 2
    return a, w


def _map_chunks(fn, xs, chunks):
    """``sum_i fn(xs[i])`` over the leading axis: a direct call for one chunk, a ``lax.map`` otherwise."""
    if chunks == 1:
        return fn(jax.tree.map(lambda a: a[0], xs))
    return jax.lax.map(fn, xs).sum(0)


def integrated_gradients(steps: int = 50, method: str = "gausslegendre", baseline=0.0,
                         batch_size: int | str | None = "auto"):
    """Integrated gradients (Sundararajan et al.), captum's defaults.

    ``relevance = (x - x0) * sum_k w_k * d f_c / d x (x0 + a_k (x - x0))`` with ``(a_k, w_k)`` from
    :func:`ig_alphas` (50 Gauss-Legendre points by default) and baseline ``x0`` (a scalar or an array
    broadcastable to ``video``; default 0). The path points are stacked into the batch axis, ``batch_size`` of them
    (``batch_size * B`` clips) per forward/backward pass, the passes in a ``lax.map`` (see :func:`points_per_pass`):
    ``None`` stacks all of them into one pass (captum's ``internal_batch_size=None``); the default ``"auto"`` does
    so on a GPU or TPU and takes one point per pass on the CPU backend, where that is faster (docs/performance.md).
    An int bounds memory. The result does not depend on
    ``batch_size`` beyond float32 rounding. ``target=None``: the class predicted for ``video`` itself.

    jaxvx's models keep a fast backward pass inside ``lax.map`` bodies on CPU; a model whose convolutions use JAX's
    own transpose runs its backward pass several times slower there on XLA's CPU backend (see
    :func:`jaxvx.models.conv_general_dilated`): pass ``batch_size=None`` for such a model.
    """
    alphas_all, weights_all = ig_alphas(steps, method)
    batch_size = check_batch_size(batch_size)

    @guarded
    def attribution(forward, video, target=None, *, key=None):
        k = points_per_pass(batch_size, len(alphas_all))
        pad = (-len(alphas_all)) % k
        alphas = np.concatenate([alphas_all, np.zeros(pad)]).reshape(-1, k)
        weights = np.concatenate([weights_all, np.zeros(pad)]).reshape(-1, k)
        video = check_video(video)
        x0 = jnp.broadcast_to(jnp.asarray(baseline, video.dtype), video.shape)
        if target is None:
            target = resolve_target(forward(video), None)
        else:
            target = resolve_target(jnp.zeros(video.shape[:1] + (1,)), target, check_range=False)
        diff = video - x0
        b = video.shape[0]
        tiled = jnp.tile(target, k)

        def chunk(aw):
            a, w = aw
            xs = x0[None] + a.astype(video.dtype)[:, None, None, None, None, None] * diff[None]
            g, _, _ = _target_grad(forward, xs.reshape((k * b,) + video.shape[1:]), tiled)
            return jnp.tensordot(w.astype(video.dtype), g.reshape((k,) + video.shape), axes=1)

        total = _map_chunks(chunk, (jnp.asarray(alphas), jnp.asarray(weights)), alphas.shape[0])
        return diff * total

    attribution.__name__ = "integrated_gradients"
    return attribution


def smoothgrad(base: Callable | None = None, n: int = 20, noise: float = 0.1, batch_size: int | str | None = "auto"):
    """SmoothGrad (Smilkov et al.) as a transform of any method: the mean of ``base`` over ``n`` noisy copies.

    ``relevance = 1/n sum_i base(forward, x + e_i, target)`` with ``e_i ~ N(0, sigma^2)`` per element and
    ``sigma = noise * (max(x) - min(x))`` per clip (zennit's noise level; its last sample is noise-free, ours are
    all noisy as in the paper). ``base``: a method (default :func:`gradient`); methods that draw noise get their
    own sub-keys. Needs ``key`` (a ``jax.random`` key). ``target=None``: the class predicted for the clean clip,
    kept for every noisy copy. Copies are stacked into the batch axis, ``batch_size`` of them per pass of
    ``base``, the passes in a ``lax.map`` (see :func:`points_per_pass`): ``None`` stacks all ``n``, the default
    ``"auto"`` does so on a GPU or TPU and takes one copy per pass on the CPU backend (faster there), an int bounds
    memory. Copy ``i`` draws its noise from ``fold_in(split(key)[0], i)``, so the noise, and the result up to float32
    rounding, do not depend on ``batch_size`` (a random ``base`` gets one key per pass, which does).

    jaxvx's models keep a fast backward pass inside ``lax.map`` bodies on CPU; a model whose convolutions use JAX's
    own transpose runs its backward pass several times slower there on XLA's CPU backend (see
    :func:`jaxvx.models.conv_general_dilated`): pass ``batch_size=None`` for such a model.
    """
    base = gradient() if base is None else base
    if not callable(base):
        raise TypeError(f"base: expected a method (callable), got {base!r}")
    check_int("n", n, numpy=False)
    if not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(f"noise: expected a number >= 0, got {noise!r}")
    batch_size = check_batch_size(batch_size)

    @guarded
    def method(forward, video, target=None, *, key=None):
        k = points_per_pass(batch_size, n)
        chunks = -(-n // k)
        video = check_video(video)
        if key is None:
            raise ValueError("key: smoothgrad draws noise and needs a jax.random key, got None")
        if target is None:
            target = resolve_target(forward(video), None)
        else:
            target = resolve_target(jnp.zeros(video.shape[:1] + (1,)), target, check_range=False)
        b = video.shape[0]
        axes = tuple(range(1, video.ndim))
        sigma = noise * (jnp.max(video, axes, keepdims=True) - jnp.min(video, axes, keepdims=True))
        tiled = jnp.tile(target, k)
        index = np.arange(chunks * k).reshape(chunks, k)
        valid = (index < n).astype(np.float32)
        key_noise, key_base = jax.random.split(key)
        noise_keys = jax.vmap(lambda i: jax.random.fold_in(key_noise, i))(jnp.arange(chunks * k))
        noise_keys = noise_keys.reshape((chunks, k) + noise_keys.shape[1:])  # one key per copy
        base_keys = jax.random.split(key_base, chunks)

        def chunk(args):
            kn, kb, mask = args
            e = jax.vmap(lambda c: jax.random.normal(c, video.shape, video.dtype))(kn) * sigma[None]
            xs = (video[None] + e).reshape((k * b,) + video.shape[1:])
            r = base(forward, xs, tiled, key=kb).reshape((k,) + video.shape)
            return jnp.tensordot(mask.astype(r.dtype), r, axes=1)

        return _map_chunks(chunk, (noise_keys, base_keys, jnp.asarray(valid)), chunks) / n

    method.__name__ = "smoothgrad"
    return method


def _relu_method(name: str, backward: Callable):
    @guarded
    def method(forward, video, target=None, *, key=None):
        video = check_video(video)

        def handler(call):
            if call.node.relu:
                out = call.forward()
                return P.with_backward(lambda ins, o, e, ct: (backward(ins[0], ct),), call.inputs, out)
            return fast_pools(call)

        def f(v):
            program = P.trace(forward, v)
            if not any(n.relu for n in program.nodes):
                raise ValueError(f"{name}: forward computes no ReLU (max(x, 0)) on the video path to modify; its "
                                 "operations are:\n" + (P.describe(program) or "(none)"))
            return P.evaluate(program, v, handler)

        logits, pullback = jax.vjp(f, video)
        target = resolve_target(logits, target)
        (g,) = pullback(jax.nn.one_hot(target, logits.shape[-1], dtype=logits.dtype))
        return g

    method.__name__ = name
    return method


def guided_backprop():
    """Guided backpropagation (Springenberg et al.): through every ReLU (``max(x, 0)``, module or function) the gradient
    is ``g_in = g_out * (x > 0) * (g_out > 0)`` (captum's and zennit's); elsewhere the ordinary gradient. Returns
    the modified gradient of the target logit (shape of ``video``)."""
    return _relu_method("guided_backprop", lambda x, g: jnp.where((x > 0) & (g > 0), g, 0))


def deconvnet():
    """DeconvNet (Zeiler & Fergus): through every ReLU (``max(x, 0)``, module or function) ``g_in = max(g_out, 0)``
    (the forward mask is ignored); elsewhere the ordinary gradient."""
    return _relu_method("deconvnet", lambda x, g: jnp.maximum(g, 0))
