"""Parameter-free layers as Flax Modules, so that explanation rules can see them.

``flax.linen.intercept_methods`` only sees Module calls: ``nn.relu``, ``nn.max_pool``, ``x + y`` or ``x.reshape`` are
invisible to it. Every model in :mod:`jaxvx.models` therefore routes those operations through the Modules below, and
uses ``flax.linen.Conv`` / ``flax.linen.Dense`` / ``flax.linen.BatchNorm`` for the layers with parameters.

All layers take channels-last arrays: ``[B, *spatial, C]`` (``[B, T, H, W, C]`` for 3D, ``[B, H, W, C]`` for 2D).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

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
]


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded half up, at least 1 (the channel count of a width-scaled layer)."""
    return max(1, int(math.floor(channels * width + 0.5)))


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
