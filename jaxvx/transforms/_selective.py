"""Selective relevance (Hiley et al., 2019): keep the relevance that changes quickly over time."""

from __future__ import annotations

import functools
import math
import numbers

import jax
import jax.numpy as jnp

from jaxvx._maps import channel_sum
from jaxvx.transforms._base import as_map, named

__all__ = ["selective", "selective_mask", "temporal_gradient", "SOBEL_T", "PADDINGS"]

PADDINGS = ("zeros", "edge")

#: The 3x3x3 temporal Sobel kernel ``[t][h][w]``: slice t=0 is S, t=1 zeros, t=2 is -S, S = [[1,2,1],[2,4,2],[1,2,1]]
#: (unnormalised), applied as a cross-correlation (no flip), as ``torch.nn.functional.conv3d`` does.
SOBEL_T = (
    ((1, 2, 1), (2, 4, 2), (1, 2, 1)),
    ((0, 0, 0), (0, 0, 0), (0, 0, 0)),
    ((-1, -2, -1), (-2, -4, -2), (-1, -2, -1)),
)


def _check_padding(padding) -> str:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    return padding


def temporal_gradient(relevance, *, padding: str = "zeros") -> jax.Array:
    """|G|: the magnitude of the temporal Sobel response of the channel-summed relevance.

    ``G = R_sum (x) K`` is the cross-correlation with the kernel :data:`SOBEL_T` over ``(T, H, W)`` with one element
    of padding on every side, so that ``G[t] = S * R[t - 1] - S * R[t + 1]`` where ``S *`` is the spatial [1, 2, 1]
    x [1, 2, 1] smoothing. Computed separably (adds and shifts, no convolution call): ``O(T H W)``.

    Args:
        relevance: ``[B, T, H, W, C]`` (summed over C first) or ``[B, T, H, W]``.
        padding: ``"zeros"`` (Hiley et al.: frames and pixels outside the clip count as zero relevance) or
            ``"edge"`` (replicate the first/last frame, row and column).

    Returns:
        float ``[B, T, H, W]``, non-negative.
    """
    _check_padding(padding)
    return _gradient(channel_sum(as_map(relevance)), padding=padding)


@functools.partial(jax.jit, static_argnames=("padding",))
def _gradient(r, *, padding):
    mode = "constant" if padding == "zeros" else "edge"
    p = jnp.pad(r, ((0, 0), (1, 1), (1, 1), (1, 1)), mode=mode)
    # spatial [1, 2, 1] smoothing along H then W, on the padded volume (valid part only)
    p = p[:, :, :-2] + 2.0 * p[:, :, 1:-1] + p[:, :, 2:]
    p = p[:, :, :, :-2] + 2.0 * p[:, :, :, 1:-1] + p[:, :, :, 2:]
    # temporal slices: +S at t - 1, -S at t + 1
    return jnp.abs(p[:, :-2] - p[:, 2:])


def selective_mask(relevance, sigma: float = 4.0, *, padding: str = "zeros") -> jax.Array:
    """Boolean ``[B, T, H, W]``: ``|G| > sigma * std(|G|)`` with the std over each clip's ``(T, H, W)``.

    ``std`` is the population standard deviation (``ddof=0``); see :func:`selective`.
    """
    _check_padding(padding)
    return _mask(channel_sum(as_map(relevance)), sigma, padding=padding)


@functools.partial(jax.jit, static_argnames=("padding",))
def _mask(r, sigma, *, padding):
    g = _gradient(r, padding=padding)
    std = jnp.std(g, axis=(1, 2, 3), keepdims=True)
    return g > sigma * std


@functools.partial(jax.jit, static_argnames=("padding",))
def _select(relevance, sigma, *, padding):
    mask = _mask(channel_sum(relevance), sigma, padding=padding)
    if relevance.ndim == 5:
        mask = mask[..., None]
    return relevance * mask.astype(relevance.dtype)


def _check_sigma(sigma) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    return float(sigma)


def selective(sigma: float = 4.0, *, padding: str = "zeros"):
    """Selective relevance (Hiley et al., 2019) as a transform ``relevance -> relevance``.

    Steps, per clip:

    1. ``R_sum``: the relevance summed over channels (``[B, T, H, W, C] -> [B, T, H, W]``; a rank-4 map is used as
       is);
    2. ``G``: cross-correlation of ``R_sum`` with the temporal Sobel kernel :data:`SOBEL_T` (slices S, 0, -S along
       time, ``S = [[1, 2, 1], [2, 4, 2], [1, 2, 1]]``, unnormalised), one element of padding on every side;
    3. ``mask = |G| > sigma * std(|G|)``, the std (population, ``ddof=0``) taken over the clip's whole ``(T, H, W)``
       map;
    4. the output is the input relevance times the mask (broadcast over channels): signed, raw, same shape and dtype.

    Padding: ``"zeros"`` is the paper's behaviour. It treats the frames before the first and after the last as zero
    relevance, so ``G[0] = -S * R[1]`` and ``G[T-1] = S * R[T-2]``: the first and last frames light up wherever there
    is any relevance at all (artefacts of the padding, not motion). ``"edge"`` replicates the border frames (and
    rows/columns), which removes that artefact: a clip whose relevance is constant over time selects nothing.

    Differences from the public code of the paper (``SelectiveRelevance.selective_relevance``): that code min-max
    normalises maps with negative values first, thresholds the signed response ``G > sigma * std(G)`` (one direction
    of change only) and uses PyTorch's unbiased std. jaxvx follows the method as the paper describes it, on |G|.

    Cost: a handful of adds per element; negligible next to the explanation (see ``scripts/bench/bench_selective.py``).

    Args:
        sigma: number of standard deviations, ``>= 0``. Default 4 (the paper; 2 was found unhelpful for Grad-CAM).
        padding: ``"zeros"`` (default) or ``"edge"``.

    Returns:
        A function ``relevance [B, T, H, W, C] or [B, T, H, W] -> same shape``, jit- and vmap-able.
    """
    sigma = _check_sigma(sigma)
    _check_padding(padding)

    def transform(relevance):
        return _select(as_map(relevance), sigma, padding=padding)

    return named(transform, f"selective(sigma={sigma:g}, padding={padding!r})")
