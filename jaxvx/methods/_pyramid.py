"""The perturbation pyramid of extremal perturbation (TorchRay 1.0's, number for number).

``L`` copies of the input, increasingly perturbed: Gaussian blur with ``sigma_l = (1 - s_l) * max_blur``,
``s = linspace(0, 1, L)`` (TorchRay's ``imsmooth``: separable, half-width ``ceil(4 sigma)``, normalised kernel
``exp(-(i / (sqrt(2) sigma + eps))^2)``, zero padding), or fading ``x * s_l``. A mask value ``m`` in [0, 1] picks
level ``m (L - 1)`` by linear interpolation between the two nearest levels (1 keeps the input, 0 perturbs it
fully). Frames ``[..., H, W, C]``; the pyramid ``[L, ..., H, W, C]`` or, for the optimisers, levels next to
channels ``[..., L, C]``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["MAX_BLUR", "apply_levels_last", "apply_pyramid", "blur", "gaussian_filter", "perturbation_pyramid"]

MAX_BLUR = 20.0
_EPS32 = np.float32(1.19209290e-07)  # TorchRay's EPSILON_SINGLE, added to the Gaussian's scale
_HIGHEST = jax.lax.Precision.HIGHEST


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
    return apply_levels_last(jnp.moveaxis(pyramid, 0, -2), mask)


def apply_levels_last(pyramid: jax.Array, mask: jax.Array) -> jax.Array:
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
