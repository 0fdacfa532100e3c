"""Extremal perturbation (Fong, Patrick and Vedaldi, ICCV 2019): a port of TorchRay's implementation to JAX.

The pieces follow TorchRay 1.0 (``torchray.attribution.extremal_perturbation``) number for number:

- the perturbation pyramid (:func:`perturbation_pyramid`, :func:`apply_pyramid`): ``L`` levels of Gaussian blur
  with ``sigma_l = (1 - s_l) * 20``, ``s = linspace(0, 1, L)`` (TorchRay's ``imsmooth``: separable, half-width
  ``ceil(4 sigma)``, normalised kernel ``exp(-(i / (sqrt(2) sigma + eps))^2)``, zero padding), or fading
  ``x * s_l``; a mask value m picks level ``m (L - 1)`` by linear interpolation between the two nearest levels;
- the smooth-max mask generator (:class:`MaskGenerator`);
- the area loss: the mask over its padded extent sorted ascending against a zeros-then-ones template
  (:func:`area_template`);
- SGD with momentum 0.9 and dampening 0.9 as an optax transform (:func:`sgd_dampened`; optax's SGD has no
  dampening), the parameters clamped to [0, 1] after each step;
- the regulariser weight 300 growing by x1.0035 per iteration, and the horizontal flip on even iterations.

Everything runs as one jitted program: the pyramid and the generator's weights are computed once outside the
loop, the loop is a ``jax.lax.scan`` (or, ``loop="python"``, one jitted step called from Python; see :func:`run` and
docs/performance.md for which is faster where), and all areas (and clips) are optimised at once.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvx._checks import check_int, is_int
from jaxvx.methods._common import check_video, is_traced, resolve_target, with_details

__all__ = [
    "ExtremalResult",
    "MaskGenerator",
    "apply_pyramid",
    "area_template",
    "blur",
    "extremal_perturbation",
    "gaussian_filter",
    "perturbation_pyramid",
    "sgd_dampened",
]

MAX_BLUR = 20.0
COLDNESS = 20.0
_ONE_BITS = int(np.float32(1.0).view(np.int32))
_EPS32 = np.float32(1.19209290e-07)  # TorchRay's EPSILON_SINGLE, added to the Gaussian's scale
_HIGHEST = jax.lax.Precision.HIGHEST


# --------------------------------------------------------------------------------------------- perturbation pyramid
def gaussian_filter(sigma: float) -> np.ndarray:
    """TorchRay's 1D Gaussian (``imsmooth``): float32 ``[2 w + 1]``, ``w = ceil(4 sigma)``, summing to one.

    ``f_i = exp(-(i / (sqrt(2) sigma + eps))^2)`` for ``i = -w..w`` (eps = float32 machine epsilon), all in float32
    as TorchRay computes it; ``sigma = 0`` gives the identity ``[1]``.
    """
    sigma = np.float32(sigma)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    width = math.ceil(np.float32(4) * sigma)
    i = np.arange(-width, width + 1, dtype=np.float32) / (np.float32(math.sqrt(2)) * sigma + _EPS32)
    f = np.exp(-i * i)
    return (f / f.sum(dtype=np.float32)).astype(np.float32)


def _blur_matrix(size: int, sigma: float) -> np.ndarray:
    """``[size, size]`` float32: out[o] = sum_i M[o, i] x[i], the Gaussian with zero padding ("same" output)."""
    f = gaussian_filter(sigma)
    width = (len(f) - 1) // 2
    offset = np.arange(size)[None, :] - np.arange(size)[:, None]  # i - o
    inside = np.abs(offset) <= width
    return np.where(inside, f[np.clip(offset + width, 0, len(f) - 1)], 0).astype(np.float32)


def blur(x: jax.Array, sigma: float, *, axes: tuple[int, int] = (-3, -2)) -> jax.Array:
    """Separable Gaussian blur of ``x`` along ``axes`` (default H, W of ``[..., H, W, C]``), zero padding.

    The filter is :func:`gaussian_filter` (TorchRay's ``imsmooth`` with ``padding_mode="constant"``), applied as a
    banded matrix along each axis (exact "same"-size convolution with zeros outside the image).
    """
    x = jnp.asarray(x)
    ah, aw = (a % x.ndim for a in axes)
    mh = jnp.asarray(_blur_matrix(x.shape[ah], sigma))
    mw = jnp.asarray(_blur_matrix(x.shape[aw], sigma))
    x = jnp.moveaxis(jnp.tensordot(mh, x, axes=([1], [ah]), precision=_HIGHEST), 0, ah)
    return jnp.moveaxis(jnp.tensordot(mw, x, axes=([1], [aw]), precision=_HIGHEST), 0, aw)


def _levels(num_levels: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, num_levels).astype(np.float32)  # torch.linspace(0, 1, L) in float32


def perturbation_pyramid(x: jax.Array, num_levels: int = 8, kind: str = "blur", max_blur: float = MAX_BLUR):
    """The ``L`` increasingly perturbed copies of ``x`` ``[..., H, W, C]``: ``[L, ..., H, W, C]``.

    Level l uses ``s_l = linspace(0, 1, L)[l]``: ``"blur"`` is :func:`blur` with ``sigma = (1 - s_l) * max_blur``
    (level 0 the most blurred, level L-1 the input), ``"fade"`` is ``x * s_l`` (level 0 black).
    """
    if num_levels < 2:
        raise ValueError(f"num_levels must be >= 2, got {num_levels}")
    s = _levels(num_levels)
    if kind == "blur":
        sig = (np.float32(1) - s) * np.float32(max_blur)
        return jnp.stack([blur(x, float(v)) if v > 0 else jnp.asarray(x) for v in sig])
    if kind == "fade":
        return jnp.stack([x * jnp.float32(v) for v in s])
    raise ValueError(f"perturbation must be 'blur' or 'fade', got {kind!r}")


def apply_pyramid(pyramid: jax.Array, mask: jax.Array) -> jax.Array:
    """Perturbed input for ``mask`` in [0, 1] (1 keeps the input, 0 perturbs it fully).

    ``pyramid`` ``[L, ..., C]`` (:func:`perturbation_pyramid`); ``mask`` broadcastable to ``pyramid.shape[1:-1]``
    (no channel axis). With ``w = m (L - 1)``, ``k = floor(w)``, ``f = w - k``:
    ``out = (1 - f) level_k + f level_min(k+1, L-1)`` (TorchRay's ``Perturbation.apply``; the gradient flows
    through ``f`` only).
    """
    return _apply_levels_last(jnp.moveaxis(pyramid, 0, -2), mask)


def _apply_levels_last(pyramid: jax.Array, mask: jax.Array) -> jax.Array:
    """:func:`apply_pyramid` for a pyramid laid out ``[..., L, C]`` (levels next to channels): two gathers along
    the level axis, broadcast against the mask's leading axes (areas), and no scatter in the backward pass (the
    pyramid is a constant)."""
    num = pyramid.shape[-2]
    mask = jnp.asarray(mask)
    rank = max(mask.ndim, pyramid.ndim - 2)  # broadcast the two to a common rank
    mask = mask.reshape((1,) * (rank - mask.ndim) + mask.shape)
    pyramid = pyramid.reshape((1,) * (rank + 2 - pyramid.ndim) + pyramid.shape)
    w = mask * (num - 1)
    k = jnp.floor(w)
    f = w - k
    k = k.astype(jnp.int32)
    k1 = jnp.minimum(k + 1, num - 1)
    y0 = jnp.take_along_axis(pyramid, k[..., None, None], axis=-2)[..., 0, :]
    y1 = jnp.take_along_axis(pyramid, k1[..., None, None], axis=-2)[..., 0, :]
    return (1.0 - f)[..., None] * y0 + f[..., None] * y1


# --------------------------------------------------------------------------------------------- mask generator
def _clamp01(x: jax.Array) -> jax.Array:
    """``clip(x, 0, 1)`` with torch's gradient: 1 inside [0, 1] including the ends, 0 outside.

    (``jnp.clip`` would pass half the gradient at exactly 0 or 1, where the generator's masks often sit.)
    """
    return jnp.where((x >= 0) & (x <= 1), x, jax.lax.stop_gradient(jnp.clip(x, 0.0, 1.0)))


class MaskGenerator:
    """TorchRay's smooth-max mask generator: control points every ``step`` pixels to a smooth ``shape`` mask.

    With ``margin = sigma``, ``padding = 1 + ceil(2 sigma / step)``, ``radius = 1 + ceil(sigma / step)``, the
    parameters (``shape_in = ceil(shape / step)`` control points per axis, zero padded by ``padding``) are read in
    ``(2 radius + 1)^2`` neighbourhoods (``shape_mid`` positions), upsampled by nearest neighbour by ``step``
    (``shape_up``) and cut to ``shape_out = shape_up - step + 1``. Output pixel u combines its neighbours' values
    ``v_k`` weighted by ``g_k = exp(-2 max(z_k - 0.5, 0)^2)``, ``z_k`` = distance from u to control point k over
    ``sigma``: ``z = v * g``, pooled by the smooth max ``sum_k z_k softmax(20 z)_k``, clamped to [0, 1]. The mask
    proper is the crop ``[m : m + H, m : m + W]`` with ``m = round(sigma)``; the full ``shape_out`` mask (with its
    margin) enters the area loss. All constants are float32 as in TorchRay (its nearest upsampling and weights use
    the float32 ratio ``shape_mid / shape_up``; where that ever disagrees with integer division the generator falls
    back to an explicit one-hot upsampling).
    """

    def __init__(self, shape: Sequence[int], step: int, sigma: float, *, _force_general: bool = False):
        if isinstance(step, bool) or int(step) != step or step < 1:
            raise ValueError(f"step must be a positive int, got {step!r}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        self.shape = tuple(int(s) for s in shape)
        self.step = step = int(step)
        self.sigma = sigma
        self.margin = sigma
        self.padding = 1 + math.ceil((self.margin + sigma) / step)
        self.radius = 1 + math.ceil(sigma / step)
        self.shape_in = tuple(math.ceil(z / step) for z in self.shape)
        self.shape_mid = tuple(z + 2 * self.padding - (2 * self.radius + 1) + 1 for z in self.shape_in)
        self.shape_up = tuple(step * z for z in self.shape_mid)
        self.shape_out = tuple(z - step + 1 for z in self.shape_up)
        self.crop = round(self.margin)
        if any(out < self.crop + z for out, z in zip(self.shape_out, self.shape)):
            raise ValueError(
                f"step={step}, sigma={sigma}: TorchRay's generator makes padded masks of {self.shape_out}, too small "
                f"to crop {self.shape} at offset {self.crop}; change step or sigma (or the frame size)")
        d = 2 * self.radius + 1
        # TorchRay's source index of the nearest upsampling (float32 ratio, as torch's interpolate and its weights)
        ratio = [np.float32(zm) / np.float32(zo) for zm, zo in zip(self.shape_mid, self.shape_up)]
        src = [np.minimum(np.floor(r * np.arange(n, dtype=np.float32)).astype(np.int64), zm - 1)
               for r, n, zm in zip(ratio, self.shape_up, self.shape_mid)]
        self._fast = not _force_general and all(
            np.array_equal(s, np.arange(n) // step) for s, n in zip(src, self.shape_up))
        grid = self.shape_up if self._fast else self.shape_out
        uy, ux = np.meshgrid(np.arange(grid[0], dtype=np.float32), np.arange(grid[1], dtype=np.float32),
                             indexing="ij")
        base_y = src[0][: grid[0]].astype(np.float32)[:, None]
        base_x = src[1][: grid[1]].astype(np.float32)[None, :]
        weights = np.empty((d * d, *grid), np.float32)
        margin32, step32, sigma32 = np.float32(self.margin), np.float32(step), np.float32(sigma)
        for ky in range(d):
            for kx in range(d):
                iy = base_y + np.float32(ky - self.padding)
                ix = base_x + np.float32(kx - self.padding)
                delta = np.sqrt((uy - (margin32 + step32 * iy)) ** 2 + (ux - (margin32 + step32 * ix)) ** 2)
                z = np.maximum(delta / sigma32 - np.float32(0.5), np.float32(0))
                weights[ky * d + kx] = np.exp(np.float32(-2) * z * z)
        weights = np.moveaxis(weights, 0, -1)  # the neighbour axis last: the reductions run along the minor axis
        if self._fast:
            mh, mw = self.shape_mid
            self._weight = weights.reshape(mh, step, mw, step, d * d)
        else:
            self._weight = weights
            self._up = [np.eye(zm, dtype=np.float32)[s[:n]] for s, zm, n in zip(src, self.shape_mid, self.shape_out)]

    def generate(self, params: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Masks from parameters ``[..., h_in, w_in]``: ``(cropped [..., H, W], full [..., *shape_out])``."""
        params = jnp.asarray(params)
        if tuple(params.shape[-2:]) != self.shape_in:
            raise ValueError(f"params must end in shape_in {self.shape_in}, got shape {tuple(params.shape)}")
        lead = params.shape[:-2]
        p = params.reshape((-1, *self.shape_in))
        pad = self.padding
        p = jnp.pad(p, ((0, 0), (pad, pad), (pad, pad)))
        d = 2 * self.radius + 1
        mh, mw = self.shape_mid
        # the (2r+1)^2 neighbourhoods (F.unfold), neighbour k = ky (2r+1) + kx last: 2 (2r+1) slices, not (2r+1)^2
        rows = jnp.stack([p[:, ky:ky + mh, :] for ky in range(d)], axis=-1)  # [N, mh, w_pad, d]
        patches = jnp.stack([rows[:, :, kx:kx + mw, :] for kx in range(d)], axis=-1)  # [N, mh, mw, d_y, d_x]
        patches = patches.reshape(*patches.shape[:3], d * d)
        oh, ow = self.shape_out
        if self._fast:
            z = patches[:, :, None, :, None, :] * jnp.asarray(self._weight)  # [N, mh, step, mw, step, K]
        else:
            z = jnp.einsum("nijk,ui,vj->nuvk", patches, jnp.asarray(self._up[0]), jnp.asarray(self._up[1]),
                           precision=_HIGHEST) * jnp.asarray(self._weight)
        # smooth max over the neighbours: sum_k z_k softmax(20 z)_k
        e = jnp.exp(COLDNESS * (z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))))
        pooled = jnp.sum(z * e, axis=-1) / jnp.sum(e, axis=-1)
        pooled = pooled.reshape(pooled.shape[0], *self.shape_up)[:, :oh, :ow] if self._fast else pooled
        full = _clamp01(pooled)
        m = self.crop
        cropped = full[:, m:m + self.shape[0], m:m + self.shape[1]]
        return cropped.reshape((*lead, *self.shape)), full.reshape((*lead, oh, ow))


@functools.lru_cache(maxsize=32)
def mask_generator(shape: tuple[int, int], step: int, sigma: float) -> MaskGenerator:
    """A cached :class:`MaskGenerator` (its weights are computed once per shape and setting)."""
    return MaskGenerator(shape, step, sigma)


def area_template(num: int, areas: Sequence[float]) -> np.ndarray:
    """The sorted-mask target ``[A, num]`` float32: ``int(num (1 - a))`` zeros then ones, for each area ``a``."""
    ref = np.ones((len(areas), num), np.float32)
    for i, a in enumerate(areas):
        ref[i, : int(num * (1 - a))] = 0
    return ref


def _kth_smallest_bits(bits: jax.Array, rank: jax.Array) -> jax.Array:
    """The ``rank``-th smallest (0-based) of the int32 ``bits`` along the last axis, by bisection on the value.

    ``bits`` are the bit patterns of floats in [0, 1] (ordered as the floats); 31 halvings of ``[0, bits(1.0)]``.
    """
    lo = jnp.zeros(bits.shape[:-1], jnp.int32)
    hi = jnp.full(bits.shape[:-1], _ONE_BITS, jnp.int32)

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = jnp.sum(bits <= mid[..., None], axis=-1) >= rank + 1
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    return jax.lax.fori_loop(0, 31, halve, (lo, hi))[0]


def area_loss(masks: jax.Array, num_zeros) -> jax.Array:
    """TorchRay's area loss ``mean((sort(m) - template)^2)`` over the last axis, the template being ``num_zeros``
    zeros then ones (:func:`area_template`); ``masks`` ``[..., N]`` in [0, 1], ``num_zeros`` broadcastable to
    ``masks.shape[:-1]``. Returns ``masks.shape[:-1]``.

    Sorting only permutes, so the loss is ``mean((m - o)^2)`` with ``o_i = 1`` for the elements a stable ascending
    sort puts at positions ``>= num_zeros`` (ties in index order, as ``jnp.sort``). ``o`` needs only the
    ``num_zeros``-th smallest value, found by bisection on the floats' bit patterns: the same value and gradient as
    differentiating through ``jnp.sort``, and faster on CPU, where XLA's sort is slow (docs/performance.md).
    """
    m = jnp.asarray(masks) + 0.0  # -0.0 -> +0.0, so that bit patterns order as the values
    n = m.shape[-1]
    bits = jax.lax.bitcast_convert_type(jax.lax.stop_gradient(m), jnp.int32)
    zeros = jnp.broadcast_to(jnp.asarray(num_zeros, jnp.int32), m.shape[:-1])
    tau = _kth_smallest_bits(bits, jnp.minimum(zeros, n - 1))[..., None]
    below = jnp.sum(bits < tau, axis=-1, keepdims=True)
    tied = bits == tau
    tie_rank = jnp.cumsum(tied, axis=-1, dtype=jnp.int32) - tied
    ones = (bits > tau) | (tied & (tie_rank >= zeros[..., None] - below))
    ones = ones & (zeros < n)[..., None]
    return jnp.mean((m - ones) ** 2, axis=-1)


def area_zeros(num: int, areas: Sequence[float]) -> np.ndarray:
    """``int(num (1 - a))`` for each area: the zeros of TorchRay's template (int32 ``[A]``)."""
    return np.array([int(num * (1 - a)) for a in areas], np.int32)


# --------------------------------------------------------------------------------------------- optimiser
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


# --------------------------------------------------------------------------------------------- TorchRay's method
VARIANTS = ("preserve", "delete", "dual")
REWARDS = ("simple", "contrastive")


class ExtremalResult(NamedTuple):
    """What the extremal-perturbation optimisers return (a pytree).

    Attributes:
        masks: ``[B, A, T, H, W]`` float32 in [0, 1], one mask per clip and area (``[B, A, H, W]`` for images).
            For TorchRay's method on clips the one 2D mask is repeated over time.
        energy: ``[B, A, num_iter]``: the objective per iteration, ``reward + regulariser`` with the method's sign
            (TorchRay's: maximised; Li et al.'s: minimised).
        reward: ``[B, A, num_iter]``: the reward term.
        regulariser: ``[B, A, num_iter]``: the weighted area (plus, for STEP, smoothness) term.
    """

    masks: jax.Array
    energy: jax.Array
    reward: jax.Array
    regulariser: jax.Array

    @property
    def saliency(self) -> jax.Array:
        """The masks summed over areas (``[B, T, H, W]``): TorchRay's combined map for several areas."""
        return self.masks.sum(axis=1)


def _check_areas(areas) -> tuple[float, ...]:
    if isinstance(areas, (int, float)):
        areas = (areas,)
    areas = tuple(float(a) for a in areas)
    if not areas or any(not 0.0 < a <= 1.0 for a in areas):
        raise ValueError(f"areas must be a non-empty sequence of fractions in (0, 1], got {areas!r}")
    return areas


def _torchray_reward(logits: jax.Array, target: jax.Array, reward: str) -> jax.Array:
    """TorchRay's reward of ``logits`` ``[..., K]`` for ``target`` (broadcast): simple ``y_c``, contrastive
    ``y_c - max_{c' != c} y_c'``."""
    onehot = jax.nn.one_hot(target, logits.shape[-1], dtype=bool)
    y = jnp.sum(jnp.where(onehot, logits, 0.0), axis=-1)
    if reward == "simple":
        return y
    return y - jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)


def _check_common(variant, reward, perturbation, step, sigma, max_iter, num_levels, loop):
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if perturbation not in ("blur", "fade"):
        raise ValueError(f"perturbation must be 'blur' or 'fade', got {perturbation!r}")
    if not is_int(step, numpy=False) or step < 1:
        raise ValueError(f"step must be a positive int (pixels between control points), got {step!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    check_int("max_iter", max_iter, numpy=False)
    check_int("num_levels", num_levels, 2, numpy=False)
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}, got {loop!r}")


def _as_clips(video):
    """``(clips [B, T, H, W, C], is_image)`` from a video ``[B, T, H, W, C]`` or images ``[B, H, W, C]``."""
    x = jnp.asarray(video)
    if x.ndim == 4:
        return check_video(x, name="video", rank=4)[:, None], True
    return check_video(x), False


def extremal_perturbation(areas: Sequence[float] | float = (0.1,), *, variant: str = "preserve",
                          reward: str = "simple", perturbation: str = "blur", step: int = 7, sigma: float = 21,
                          max_iter: int = 800, num_levels: int = 8, jitter: bool = True, smooth: float = 0.0,
                          learning_rate: float = 0.01, loop: str = "auto") -> Callable:
    """Extremal perturbation (Fong et al., ICCV 2019), TorchRay's algorithm and defaults, on images or clips.

    For every clip and area ``a`` one 2D mask ``m`` (shared by all frames of a clip) is optimised:

    - mask: :class:`MaskGenerator` ``(step, sigma)`` from parameters initialised to 1, clamped to [0, 1];
    - perturbed input: :func:`apply_pyramid` of the ``num_levels`` blur (sigma up to 20) or fade pyramid with ``m``
      (``preserve``), ``1 - m`` (``delete``), or both (``dual``); even iterations flip it left-right (``jitter``);
    - reward (TorchRay, maximised): ``simple`` = the target logit ``y_c`` (``preserve``), ``-y_c`` (``delete``),
      ``y_c(m) - y_c(1 - m)`` (``dual``); ``contrastive`` replaces ``y_c`` by ``y_c - max_{c' != c} y_c'``;
    - regulariser: ``-lambda_t * mean((sort(full mask) - template)^2)`` with the template ``int(N (1 - a))`` zeros
      then ones over the generator's padded extent, ``lambda_t = 300 * 1.0035^t``;
    - energy ``reward + regulariser`` summed over areas is maximised by SGD (``learning_rate`` 0.01, momentum 0.9,
      dampening 0.9; :func:`sgd_dampened`) for ``max_iter`` iterations; parameters clamped to [0, 1] after each step.

    The returned mask is the one evaluated in the last iteration, optionally smoothed by a Gaussian of
    ``sigma = smooth * min(H, W)`` (zero padding), as TorchRay does.

    Args:
        areas: target area fractions, optimised together (default ``(0.1,)``).
        variant: ``"preserve"``, ``"delete"`` or ``"dual"``.
        reward: ``"simple"`` or ``"contrastive"``.
        perturbation: ``"blur"`` or ``"fade"``.
        step, sigma: control point pitch and smoothing of the mask generator (defaults 7 and 21).
        max_iter: iterations (default 800). num_levels: pyramid levels (default 8).
        jitter: flip the perturbed input horizontally on even iterations (default True).
        smooth: final smoothing as a fraction of ``min(H, W)`` (default 0: none).
        learning_rate: SGD step (TorchRay: 0.01).
        loop: ``"auto"``, ``"scan"`` or ``"python"``, see :func:`run`.

    Returns:
        ``method(forward, video, target=None, *, key=None) -> relevance``; ``video`` float32 ``[B, T, H, W, C]``
        (``forward`` gets clips ``[B * A', T, H, W, C]``) or images ``[B, H, W, C]`` (``forward`` gets images).
        ``key`` is unused (the method is deterministic). ``relevance`` is the masks summed over areas
        (:attr:`ExtremalResult.saliency`) with a channel axis of 1, ``[B, T, H, W, 1]`` (``[B, H, W, 1]`` for
        images). ``jaxvx.methods.details(method)`` returns ``(relevance, result)``, the :class:`ExtremalResult` with
        ``masks`` ``[B, A, T, H, W]`` (the 2D mask repeated over time; ``[B, A, H, W]`` for images) and the
        per-iteration ``energy`` (maximised), ``reward`` and ``regulariser`` ``[B, A, max_iter]``.
    """
    areas = _check_areas(areas)
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
    _check_common(variant, reward, perturbation, step, sigma, max_iter, num_levels, loop)
    schedule = {"it": np.arange(max_iter, dtype=np.int32),
                "lam": geometric_schedule(300.0, 1.0035, max_iter).astype(np.float32)}
    n_area = len(areas)
    games = 2 if variant == "dual" else 1
    cache = weakref.WeakKeyDictionary()

    def build(forward):
        def model(x, is_image):  # [N, T, H, W, C] -> logits [N, K]
            return forward(x[:, 0] if is_image else x)

        def prepare(video, target):
            clips, is_image = _as_clips(video)
            b, _, h, w, _ = clips.shape
            generator = mask_generator((h, w), step, sigma)
            consts = {
                "target": resolve_target(model(clips, is_image), target),
                "pyramid": jnp.moveaxis(perturbation_pyramid(clips, num_levels, perturbation), 0, -2),  # [B, T, H, W, L, C]
                "zeros": jnp.asarray(area_zeros(int(np.prod(generator.shape_out)), areas)),
                "image": jnp.zeros((0,) if is_image else (1,)),  # carries the input's rank, statically
            }
            return jnp.ones((b, n_area, *generator.shape_in), clips.dtype), consts

        def objective(params, consts, xs):
            pyramid = consts["pyramid"]
            b, t, h, w, _, c = pyramid.shape
            mask, full = mask_generator((h, w), step, sigma).generate(params)  # [B, A, H, W], [B, A, oh, ow]
            m = mask[:, :, None]  # shared over time
            pyr = pyramid[:, None]  # [B, 1, T, H, W, L, C]
            if variant == "preserve":
                x = _apply_levels_last(pyr, m)
            elif variant == "delete":
                x = _apply_levels_last(pyr, 1.0 - m)
            else:
                x = jnp.concatenate([_apply_levels_last(pyr, m), _apply_levels_last(pyr, 1.0 - m)], axis=1)
            if jitter:
                x = jnp.where(xs["it"] % 2 == 0, jnp.flip(x, axis=-2), x)
            is_image = consts["image"].shape[0] == 0
            logits = model(x.reshape(b * games * n_area, t, h, w, c), is_image).reshape(b, games * n_area, -1)
            r = _torchray_reward(logits, consts["target"][:, None], reward)  # [B, games * A]
            if variant == "delete":
                r = -r
            elif variant == "dual":
                r = r[:, :n_area] - r[:, n_area:]
            regul = -xs["lam"] * area_loss(full.reshape(b, n_area, -1), consts["zeros"])
            energy = r + regul
            return -jnp.sum(energy), (energy, r, regul)

        def finish(last, consts, history):
            b, t, h, w, _, _ = consts["pyramid"].shape
            masks = mask_generator((h, w), step, sigma).generate(last)[0]  # [B, A, H, W]
            if smooth > 0:
                masks = blur(masks[..., None], smooth * min(h, w))[..., 0]
            if consts["image"].shape[0] == 1:
                masks = jnp.broadcast_to(masks[:, :, None], (b, n_area, t, h, w))
            return ExtremalResult(masks, *(jnp.moveaxis(jnp.asarray(a), 0, -1) for a in history))

        return Program(prepare, objective, finish)

    def full(forward, video, target=None, *, key=None):
        del key
        _as_clips(video)  # checks the input before tracing
        result = run(build, forward, video, target, optimizer=sgd_dampened(learning_rate), schedule=schedule,
                     loop=loop, cache=cache)
        return result.saliency[..., None], result

    return with_details(full)
