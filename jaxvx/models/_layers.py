"""Parameter-free layers as Flax Modules (each gets a module path: ``"relu1"``, ``"pool5"``), and jaxvx's fast
convolution.

jaxvx's own models route ReLU, pooling, residual sums and reshapes through the Modules below and use
``flax.linen.Conv`` / ``flax.linen.Dense`` / ``flax.linen.BatchNorm`` for the layers with parameters. The
explanation methods do not need them (they read any model as a traced program, :mod:`jaxvx.program`).

All layers take channels-last arrays: ``[B, *spatial, C]`` (``[B, T, H, W, C]`` for 3D, ``[B, H, W, C]`` for 2D).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxvx.models import _onednn

__all__ = [
    "ReLU",
    "MaxPool",
    "MaxPool2D",
    "MaxPool3D",
    "AvgPool",
    "AvgPool2D",
    "AvgPool3D",
    "Sum",
    "Flatten",
    "GlobalAvgPool",
    "TemporalMean",
    "scaled",
    "conv_general_dilated",
    "conv_form",
]


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded half up, at least 1 (the channel count of a width-scaled layer)."""
    return max(1, int(math.floor(channels * width + 0.5)))


_NDHWC = ("NDHWC", "DHWIO", "NDHWC")
# Up to this many input channels the kT temporal taps of a 3D convolution are stacked along the channel axis and
# run as one 2D convolution (kT * C input channels); above it, as kT 2D convolutions summed. Measured on C3D, 2 CPU
# cores: stacking makes the first layers (3 to 128 channels) 1.3 to 4 times faster, forward and backward; on the
# 512-channel layers the two forms are level.
_STACK_MAX_CHANNELS = 128
_NHWC = ("NHWC", "HWIO", "NHWC")
CONV_ENV = "JAXVX_CONV"
# In the "auto" onednn form, convolutions of less work than this (2 x input elements x kernel elements, in FLOP)
# stay with XLA: oneDNN's reorders and thread wake-ups cost more than they save there. Measured on 2 cores,
# alternating rounds: the shipped 32 x 32 models are level with XLA at 50 MFLOP (1.2 to 1.7 times slower without
# the threshold: R(2+1)D-18 x 1/8 at batch 1, CNN-LSTM small at batch 8), C3D x 1/4 at 112 x 112 keeps its gain
# (forward 50 against 73 ms, gradient 163 against 226 ms).
_ONEDNN_MIN_FLOP = 50e6
CONV_FORMS = ("onednn", "rewrite", "lax")


_PLAIN = contextvars.ContextVar("jaxvx_plain_convolutions", default=False)


@contextlib.contextmanager
def plain_convolutions():
    """Inside this block :func:`conv_general_dilated` is ``lax.conv_general_dilated`` itself, so that a traced
    program shows each convolution as one ``conv_general_dilated`` equation (:mod:`jaxvx._program` reads programs
    so, and evaluates the convolutions through :func:`conv_general_dilated` again)."""
    token = _PLAIN.set(True)
    try:
        yield
    finally:
        _PLAIN.reset(token)


def _requested_form() -> str:
    """``JAXVX_CONV`` normalised: ``"auto"`` or one of :data:`CONV_FORMS`."""
    form = os.environ.get(CONV_ENV, "auto").strip().lower() or "auto"
    if form not in ("auto", *CONV_FORMS):
        raise ValueError(f"{CONV_ENV}: expected one of {('auto', *CONV_FORMS)}, got {form!r}")
    return form


def conv_form() -> str:
    """How :func:`conv_general_dilated` computes the 3D convolutions of the program being traced.

    - ``"onednn"``: oneDNN's kernels as XLA custom calls (:mod:`jaxvx.models._onednn`; CPU backend only);
    - ``"rewrite"``: as 2D convolutions XLA runs (its CPU backend's 3D convolutions are several times slower);
    - ``"lax"``: ``lax.conv_general_dilated`` itself, XLA's native 3D convolution (cuDNN's on NVIDIA GPUs).

    The environment variable ``JAXVX_CONV`` (read when a program is traced) picks one; ``auto`` (default) means
    ``onednn`` on the CPU backend where jaxvx's oneDNN library loaded (forward and input gradient faster than the
    rewrite; docs/performance.md), else ``rewrite`` on CPU, and ``lax`` on GPU and TPU. Asking for ``onednn``
    off the CPU backend or without the library raises ``RuntimeError``.
    """
    form = _requested_form()
    cpu = jax.default_backend() == "cpu"
    if form == "auto":
        return ("onednn" if _onednn.available() else "rewrite") if cpu else "lax"
    if form == "onednn" and not (cpu and _onednn.available()):
        why = _onednn.load_error() if cpu else f"the default backend is {jax.default_backend()!r}, not 'cpu'"
        raise RuntimeError(f"{CONV_ENV}=onednn: jaxvx's oneDNN convolutions cannot run here ({why})")
    return form


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None):
    """``jax.lax.conv_general_dilated`` with faster channels-last 3D convolutions on the CPU (same result).

    A drop-in replacement (same signature and semantics) given to every ``flax.linen.Conv`` of jaxvx's models
    as ``conv_general_dilated=``. For an ``[B, T, H, W, C]`` input and a ``[kT, kH, kW, I, O]`` kernel without
    dilation or groups, :func:`conv_form` picks how:

    - ``"onednn"`` (CPU default where the library loaded; float32 only, other dtypes take ``"rewrite"``): oneDNN's
      convolution, input-gradient and kernel-gradient kernels as XLA custom calls (:mod:`jaxvx.models._onednn`).
      Under ``auto``, convolutions of under 50 MFLOP (``2 * input elements * kernel elements``) take
      ``"rewrite"`` (the small models' layers, where oneDNN's overheads outweigh its speed); ``JAXVX_CONV=onednn``
      sends every size to oneDNN.
    - ``"rewrite"`` (CPU without oneDNN): XLA's CPU backend runs 3D convolutions through a slow generic path and
      2D ones through its Eigen kernels, so the 3D convolution becomes 2D ones. A temporal kernel (kH = kW = 1,
      spatial stride 1, no spatial padding) is a 2D convolution of the ``[B, T, H*W, C]`` view with a ``(kT, 1)``
      kernel; otherwise the clip is zero-padded in time and cut into kT stride-sliced copies, one per temporal
      tap ``dt``; with at most 128 input channels the copies are stacked along the channel axis,
      ``[B*T', H, W, kT*C]``, and convolved once with the kernel reshaped to ``[kH, kW, kT*C, O]``; with more,
      the output is ``sum_dt conv2d(frames shifted by dt, kernel[dt])``. The 2D convolutions' input gradient is
      written out (:func:`_conv2d`), so that it runs as fast inside ``lax.map`` / ``lax.scan`` bodies as outside.
    - ``"lax"`` (GPU, TPU): ``lax.conv_general_dilated`` itself.

    Channels-last 2D convolutions (``[B, H, W, C]``, ``[kH, kW, I, O]``; the per-frame CNNs of
    :class:`~jaxvx.models.CNNLSTM`) go to oneDNN in the ``"onednn"`` form, as a 3D convolution of the ``B`` images
    taken as frames with a one-frame kernel (faster than XLA's for the CNN-LSTM with VGG16, level for the small one;
    docs/performance.md), to ``lax.conv_general_dilated`` otherwise.
    Any other case (other layouts, dilation, groups, other ranks) goes to ``lax.conv_general_dilated``. Results
    equal the 3D convolution up to float32 rounding (a different summation order). Works under ``jit`` and
    ``vmap``; differentiable in reverse mode (``jax.grad``, ``jax.vjp``, to any order); forward mode
    (``jax.jvp``) through the ``onednn`` and ``rewrite`` forms is not supported.
    """
    nd = len(lhs.shape)
    layout = {5: _NDHWC, 4: _NHWC}.get(nd)
    plain = (
        not _PLAIN.get()
        and layout is not None
        and feature_group_count == 1
        and batch_group_count == 1
        and all(d == 1 for d in (lhs_dilation or (1,) * (nd - 2)))
        and all(d == 1 for d in (rhs_dilation or (1,) * (nd - 2)))
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        == lax.conv_dimension_numbers(lhs.shape, rhs.shape, layout)
    )
    form = conv_form() if plain else "lax"
    if nd == 4 and form == "onednn" and _onednn_takes(lhs, rhs, padding, preferred_element_type):
        # a 2D convolution of N images is a 3D one of one clip of N frames with a one-frame kernel (measured
        # faster than N one-frame clips: CNN-LSTM small, 128 frames of 32 x 32, forward 11 against 26 ms)
        pads = padding if isinstance(padding, str) else ((0, 0), *padding)
        return conv_general_dilated(lhs[None], rhs[None], (1, *window_strides), pads, precision=precision,
                                    dimension_numbers=_NDHWC)[0]
    if form == "lax" or nd == 4:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, batch_group_count, precision,
                                        preferred_element_type)
    t, h, w = lhs.shape[1:4]
    kt, kh, kw = rhs.shape[:3]
    strides = tuple(window_strides)
    if isinstance(padding, str):
        pads = tuple(lax.padtype_to_pads((t, h, w), (kt, kh, kw), strides, padding))
    else:
        pads = tuple(tuple(p) for p in padding)
    if form == "onednn" and _onednn_takes(lhs, rhs, pads, preferred_element_type):
        return _onednn.conv3d(lhs, rhs, strides, pads)
    return _conv3d_as_2d(lhs, rhs, strides, pads, precision, preferred_element_type)


def _onednn_takes(lhs, rhs, pads, preferred_element_type) -> bool:
    """Whether oneDNN's kernels compute this convolution: float32 throughout, no negative padding."""
    f32 = jnp.dtype(jnp.float32)
    # (an upper bound of) the convolution's work: small ones stay with XLA unless JAXVX_CONV=onednn asks for all
    flop = 2.0 * math.prod(lhs.shape[:-1]) * math.prod(rhs.shape)
    return (lhs.dtype == f32 and rhs.dtype == f32 and preferred_element_type in (None, f32)
            and (flop >= _ONEDNN_MIN_FLOP or _requested_form() == "onednn")
            and (isinstance(pads, str) or all(lo >= 0 and hi >= 0 for lo, hi in pads)))


def _conv3d_as_2d(lhs, rhs, strides, pads, precision, preferred_element_type):
    """The ``"rewrite"`` form of :func:`conv_general_dilated` (see there), explicit ``pads``."""
    b, t, h, w, c = lhs.shape
    kt, kh, kw = rhs.shape[:3]
    kwargs = dict(precision=precision, preferred_element_type=preferred_element_type)
    if kh == kw == 1 and strides[1:] == (1, 1) and pads[1:] == ((0, 0), (0, 0)):
        y = _conv2d(lhs.reshape(b, t, h * w, c), rhs.reshape(kt, 1, *rhs.shape[3:]), (strides[0], 1),
                    (pads[0], (0, 0)), **kwargs)
        return y.reshape(b, y.shape[1], h, w, y.shape[-1])
    (lo, hi), st = pads[0], strides[0]
    if lo or hi:
        lhs = lax.pad(lhs, jnp.zeros((), lhs.dtype), ((0, 0, 0), (lo, hi, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0)))
    t_out = (t + lo + hi - kt) // st + 1
    if t_out < 1:
        raise ValueError(f"conv_general_dilated: {t} frames padded by {(lo, hi)} are fewer than the kernel's {kt}")
    taps = [lax.slice_in_dim(lhs, dt, dt + st * (t_out - 1) + 1, st, axis=1) for dt in range(kt)]
    if c <= _STACK_MAX_CHANNELS:
        frames = taps[0] if kt == 1 else jnp.concatenate(taps, axis=-1)
        kernel = jnp.moveaxis(rhs, 0, 2).reshape(kh, kw, kt * c, rhs.shape[-1])
        y = _conv2d(frames.reshape(b * t_out, *frames.shape[2:]), kernel, strides[1:], pads[1:], **kwargs)
        return y.reshape(b, t_out, *y.shape[1:])
    out = None
    for dt, frames in enumerate(taps):
        y = _conv2d(frames.reshape(b * t_out, *frames.shape[2:]), rhs[dt], strides[1:], pads[1:], **kwargs)
        out = y if out is None else out + y
    return out.reshape(b, t_out, *out.shape[1:])


def _conv2d(x, k, strides, pads, precision=None, preferred_element_type=None):
    """2D channels-last convolution ``[N, H, W, I] * [kH, kW, I, O]`` whose input gradient is written out.

    JAX transposes a convolution into one whose kernel has its I and O axes swapped in the dimension numbers
    (``01oi``). At the top level of a program XLA's CPU backend copies such a kernel into the usual layout and runs
    the fast kernels; inside a loop body (``lax.map``, ``lax.scan``) it does not, and the backward convolutions ran
    several times slower there (docs/performance.md). Here the input gradient is the same convolution written with a
    flipped, I/O-swapped kernel in ``HWIO`` layout: ``dx = conv(dilate(g, strides), flip(k)^T)`` with padding
    ``(kH - 1 - lo, H - 1 - (H' - 1) s + lo)`` per axis. Kernel gradients use JAX's own rule. Reverse mode only for
    the cases it takes (see :func:`_conv2d_takes`); anything else goes to ``lax.conv_general_dilated``.
    """
    if not _conv2d_takes(x.shape, k.shape, strides, pads):
        return lax.conv_general_dilated(x, k, strides, pads, dimension_numbers=_NHWC, precision=precision,
                                        preferred_element_type=preferred_element_type)
    return _conv2d_vjp(x, k, tuple(strides), tuple(tuple(p) for p in pads), precision, preferred_element_type)


def _conv2d_takes(x_shape, k_shape, strides, pads):
    """Whether the written-out input gradient applies: every padding between 0 and the kernel size minus one."""
    for n, kk, s, (lo, hi) in zip(x_shape[1:3], k_shape[:2], strides, pads):
        o = (n + lo + hi - kk) // s + 1
        if o < 1 or not 0 <= lo <= kk - 1 or n - 1 - (o - 1) * s + lo < 0:
            return False
    return True


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv2d_vjp(x, k, strides, pads, precision, preferred_element_type):
    return lax.conv_general_dilated(x, k, strides, pads, dimension_numbers=_NHWC, precision=precision,
                                    preferred_element_type=preferred_element_type)


def _conv2d_fwd(x, k, strides, pads, precision, preferred_element_type):
    return _conv2d_vjp(x, k, strides, pads, precision, preferred_element_type), (x, k)


def _conv2d_bwd(strides, pads, precision, preferred_element_type, res, g):
    x, k = res
    g = g.astype(x.dtype)
    # an optimisation barrier keeps XLA from folding the swap back into the dimension numbers
    kt = lax.optimization_barrier(jnp.flip(k, (0, 1)).swapaxes(2, 3))
    tpads = []
    for n, kk, s, (lo, _) in zip(x.shape[1:3], k.shape[:2], strides, pads):
        o = g.shape[1 + len(tpads)]
        tpads.append((kk - 1 - lo, n - 1 - (o - 1) * s + lo))
    dx = lax.conv_general_dilated(g, kt, (1, 1), tpads, lhs_dilation=strides, dimension_numbers=_NHWC,
                                  precision=precision)
    _, pull_k = jax.vjp(lambda k_: lax.conv_general_dilated(x, k_, strides, pads, dimension_numbers=_NHWC,
                                                            precision=precision), k)
    (dk,) = pull_k(g)
    return dx.astype(x.dtype), dk.astype(k.dtype)


_conv2d_vjp.defvjp(_conv2d_fwd, _conv2d_bwd)


def _check_ndim(x, ndim: int, who: str):
    if x.ndim != ndim:
        raise ValueError(f"{who}: expected an input of {ndim} dims, got shape {tuple(x.shape)}")


def _padding(padding, n: int):
    if isinstance(padding, str):
        return padding
    pads = tuple(tuple(int(v) for v in p) if isinstance(p, (tuple, list)) else (int(p), int(p)) for p in padding)
    if len(pads) != n:
        raise ValueError(f"padding: expected {n} (low, high) pairs or ints, got {padding!r}")
    return pads


class ReLU(nn.Module):
    """Rectified linear unit, ``max(x, 0)`` elementwise, any shape (a Module so that rules can see it)."""

    @nn.compact
    def __call__(self, x):
        return jax.nn.relu(x)


class MaxPool(nn.Module):
    """Max pooling over the spatial axes of a channels-last ``[B, *spatial, C]`` array.

    Attributes:
        window: window size per spatial axis, e.g. ``(2, 2, 2)``; its length fixes the number of spatial axes.
        strides: stride per spatial axis; ``None`` (default) means equal to ``window``.
        padding: ``"VALID"`` (default), ``"SAME"``, or one ``(low, high)`` pair (or int) per spatial axis. Padded
            positions hold ``-inf``, as in PyTorch's ``MaxPool3d(padding=...)``, so they never win.

    Output size per axis (explicit padding): ``floor((n + low + high - window) / stride) + 1`` (PyTorch's
    ``ceil_mode=False``).
    """

    window: Sequence[int]
    strides: Sequence[int] | None = None
    padding: str | Sequence = "VALID"

    @nn.compact
    def __call__(self, x):
        n = len(self.window)
        _check_ndim(x, n + 2, type(self).__name__)
        strides = tuple(self.window if self.strides is None else self.strides)
        return nn.max_pool(x, tuple(self.window), strides, _padding(self.padding, n))


class MaxPool3D(MaxPool):
    """:class:`MaxPool` over ``[B, T, H, W, C]``; ``window`` has three entries, ``(kT, kH, kW)``."""


class MaxPool2D(MaxPool):
    """:class:`MaxPool` over ``[B, H, W, C]``; ``window`` has two entries, ``(kH, kW)``."""


class AvgPool(nn.Module):
    """Average pooling over the spatial axes of a channels-last ``[B, *spatial, C]`` array.

    Attributes as :class:`MaxPool`; padded positions count as zeros in the average (PyTorch's default
    ``count_include_pad=True``).
    """

    window: Sequence[int]
    strides: Sequence[int] | None = None
    padding: str | Sequence = "VALID"

    @nn.compact
    def __call__(self, x):
        n = len(self.window)
        _check_ndim(x, n + 2, type(self).__name__)
        strides = tuple(self.window if self.strides is None else self.strides)
        return nn.avg_pool(x, tuple(self.window), strides, _padding(self.padding, n), count_include_pad=True)


class AvgPool3D(AvgPool):
    """:class:`AvgPool` over ``[B, T, H, W, C]``."""


class AvgPool2D(AvgPool):
    """:class:`AvgPool` over ``[B, H, W, C]``."""


class Sum(nn.Module):
    """Elementwise sum of its (equally shaped) arguments: ``Sum()(a, b) = a + b``.

    Used for residual connections so that LRP can apply a Norm rule (``R_i = x_i / sum(x) * R``) to them instead
    of passing relevance through both branches.
    """

    @nn.compact
    def __call__(self, *xs):
        if not xs:
            raise ValueError("Sum: expected at least one input, got none")
        shapes = {tuple(x.shape) for x in xs}
        if len(shapes) != 1:
            raise ValueError(f"Sum: all inputs must have the same shape, got {[tuple(x.shape) for x in xs]}")
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class Flatten(nn.Module):
    """Flatten ``[B, *dims]`` to ``[B, prod(dims)]``.

    Attributes:
        channels_first: if True, move the last (channel) axis to position 1 before flattening, so that the order
            of the features is PyTorch's ``(C, *spatial)`` order for a channels-last input. Default False (plain
            row-major flatten of the channels-last array).
    """

    channels_first: bool = False

    @nn.compact
    def __call__(self, x):
        if x.ndim < 2:
            raise ValueError(f"Flatten: expected an input with a batch axis, got shape {tuple(x.shape)}")
        if self.channels_first and x.ndim > 2:
            x = jnp.moveaxis(x, -1, 1)
        return x.reshape(x.shape[0], -1)


class GlobalAvgPool(nn.Module):
    """Mean over every spatial axis: ``[B, *spatial, C] -> [B, C]``.

    (PyTorch's ``AdaptiveAvgPool3d(1)`` followed by ``flatten(1)``.)
    """

    @nn.compact
    def __call__(self, x):
        if x.ndim < 3:
            raise ValueError(f"GlobalAvgPool: expected [B, *spatial, C], got shape {tuple(x.shape)}")
        return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


class TemporalMean(nn.Module):
    """Mean over the time axis: ``[B, T, ...] -> [B, ...]`` (averages per-time-step logits)."""

    @nn.compact
    def __call__(self, x):
        if x.ndim < 2:
            raise ValueError(f"TemporalMean: expected [B, T, ...], got shape {tuple(x.shape)}")
        return jnp.mean(x, axis=1)
