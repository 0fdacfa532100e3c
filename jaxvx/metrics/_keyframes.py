"""Key frames by frame differencing (the "30 % detector" Jayawardhana et al. compare temporal saliency with)."""

from __future__ import annotations

import numbers
from typing import NamedTuple

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from jaxvx._checks import check_int, is_int

__all__ = ["KeyFrames", "keyframes", "difference_signal", "iterative_baseline", "peak_indices", "keyframe_correlation"]


class KeyFrames(NamedTuple):
    """Result of :func:`keyframes` for one clip of ``T`` frames.

    Attributes:
        indices: int64 ``[K]``, the key frames in increasing order.
        mask: bool ``[T]``, True at the key frames.
        difference: float64 ``[T]``, ``d_t`` (``d_0 = 0``).
        baseline: float64 ``[T]``, the polynomial baseline removed from ``d``.
        signal: float64 ``[T]``, ``d - baseline``, the signal the peaks are picked on.
        threshold: float, the absolute threshold used on ``signal``.
    """

    indices: np.ndarray
    mask: np.ndarray
    difference: np.ndarray
    baseline: np.ndarray
    signal: np.ndarray
    threshold: float


def _gray(frames: np.ndarray) -> np.ndarray:
    if frames.ndim == 4 and frames.shape[-1] == 3:
        flat = np.ascontiguousarray(frames.reshape(-1, frames.shape[2], 3))
        return cv2.cvtColor(flat, cv2.COLOR_RGB2GRAY).reshape(frames.shape[:3])
    if frames.ndim == 3:
        return frames
    raise ValueError(f"frames must be uint8 RGB [T, H, W, 3] or grayscale [T, H, W], got shape {frames.shape}")


def difference_signal(frames, *, blur: int = 9) -> np.ndarray:
    """``d_t``: how many pixels got brighter from frame ``t - 1`` to ``t``, after blurring; ``d_0 = 0``.

    Frames are converted to 8-bit grayscale (OpenCV's ``RGB2GRAY``: ``0.299 R + 0.587 G + 0.114 B``), blurred with a
    ``blur x blur`` Gaussian (``cv2.GaussianBlur``, sigma from the size: ``0.3 ((blur - 1) / 2 - 1) + 0.8``, 1.7 for
    9), and ``d_t`` counts the non-zero pixels of the saturating uint8 difference ``blurred_t - blurred_{t-1}``
    (negative differences saturate to 0, as ``cv2.subtract`` does).

    Args:
        frames: uint8 ``[T, H, W, 3]`` RGB or ``[T, H, W]`` grayscale.
        blur: odd Gaussian kernel size, or 1 for no blur. Default 9.

    Returns:
        float64 ``[T]``.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (as decoded), got {frames.dtype}")
    if not is_int(blur) or blur < 1 or blur % 2 == 0:
        raise ValueError(f"blur must be an odd int >= 1, got {blur!r}")
    gray = _gray(frames)
    if gray.shape[0] < 1:
        raise ValueError("frames must hold at least one frame")
    if blur > 1:
        # frames stacked along the channel axis: one OpenCV call per 128 frames (it blurs each channel alike)
        stack = np.ascontiguousarray(np.moveaxis(gray, 0, -1))
        chunks = [cv2.GaussianBlur(np.ascontiguousarray(stack[..., i:i + 128]), (blur, blur), 0.0)
                  for i in range(0, stack.shape[-1], 128)]
        gray = np.moveaxis(np.concatenate([c.reshape(stack.shape[:2] + (-1,)) for c in chunks], axis=-1), -1, 0)
    prev = np.concatenate([gray[:1], gray[:-1]])
    brighter = gray.astype(np.int16) - prev.astype(np.int16) > 0
    return brighter.reshape(len(gray), -1).sum(axis=1).astype(np.float64)


def iterative_baseline(y, *, degree: int = 2, max_iterations: int = 100, tol: float = 1e-3) -> np.ndarray:
    """A polynomial baseline under the peaks of ``y`` (the iterative fit of PeakUtils' ``baseline``).

    Fit a polynomial of ``degree`` by least squares on the abscissa ``linspace(0, max|y| ** (1 / (degree + 1)),
    N)``, replace ``y`` by ``min(y, fit)`` and refit, until the coefficients change by less than ``tol`` relative to
    the previous ones (the first comparison is with all-ones coefficients) or ``max_iterations`` fits were done.
    Returns the fit of the last accepted iteration, float64 ``[N]``.
    """
    y = np.asarray(y, dtype=np.float64).copy()
    order = degree + 1
    scale = np.abs(y).max() ** (1.0 / order) if y.size else 0.0
    vander = np.vander(np.linspace(0.0, scale, y.size), order)
    solve = np.linalg.pinv(vander)
    coeffs = np.ones(order)
    base = y.copy()
    for _ in range(max_iterations):
        new = solve @ y
        if np.linalg.norm(new - coeffs) / np.linalg.norm(coeffs) < tol:
            break
        coeffs = new
        base = vander @ coeffs
        y = np.minimum(y, base)
    return base


def peak_indices(y, threshold: float) -> np.ndarray:
    """Indices of the local maxima of ``y`` strictly above ``threshold`` (the first and last samples never count).

    A maximum is a sample higher than both neighbours; a flat top of equal samples ``[a, b]`` (rising into ``a``, falling after ``b``) counts once, at ``ceil((a + b - 1) / 2)``, and a
    flat run that touches either end of the signal does not count (PeakUtils' ``indexes`` with ``min_dist=1``).
    """
    y = np.asarray(y, dtype=np.float64)
    n = y.size
    if n < 3:
        return np.zeros(0, dtype=np.int64)
    dy = np.diff(y)
    if np.all(dy == 0):
        return np.zeros(0, dtype=np.int64)
    # runs of equal neighbours: give each zero difference the sign of its nearest non-zero difference on the side
    # of the run it is on (left half: the one before the run, right half and middle: the one after)
    sign = np.sign(dy)
    zero = sign == 0
    idx = np.arange(dy.size)
    last_nz = np.maximum.accumulate(np.where(~zero, idx, -1))
    next_nz = np.minimum.accumulate(np.where(~zero, idx, dy.size)[::-1])[::-1]
    run_start = np.where(zero, last_nz + 1, idx)
    run_end = np.where(zero, next_nz - 1, idx)
    before = np.where(last_nz >= 0, sign[np.maximum(last_nz, 0)], 0)
    after = np.where(next_nz < dy.size, sign[np.minimum(next_nz, dy.size - 1)], 0)
    # runs touching an end of the signal take the sign from their only neighbour
    left_side = idx < (run_start + run_end) / 2
    fill = np.where(last_nz < 0, after, np.where(next_nz >= dy.size, before, np.where(left_side, before, after)))
    sign = np.where(zero, fill, sign)
    rising = np.concatenate([[0.0], sign]) > 0
    falling = np.concatenate([sign, [0.0]]) < 0
    return np.flatnonzero(rising & falling & (y > threshold)).astype(np.int64)


def keyframes(frames, *, threshold: float = 0.3, blur: int = 9, degree: int = 2) -> KeyFrames:
    """Key frames of a clip by frame differencing: the 30 % detector Jayawardhana et al. compare with.

    1. ``d_t`` = :func:`difference_signal` (grayscale, ``blur x blur`` Gaussian, count of pixels that got brighter
       since the previous frame; ``d_0 = 0``);
    2. baseline removal: ``s = d - baseline`` with the iterative degree-``degree`` polynomial baseline
       (:func:`iterative_baseline`);
    3. peak picking (:func:`peak_indices`): local maxima of ``s`` strictly above the normalised threshold
       ``thr = threshold * (max s - min s) + min s`` (minimum distance 1: every such maximum counts).

    Args:
        frames: uint8 ``[T, H, W, 3]`` RGB or ``[T, H, W]`` grayscale, one clip.
        threshold: normalised threshold in [0, 1]. Default 0.3.
        blur: odd Gaussian kernel size (1: none). Default 9.
        degree: degree of the baseline polynomial. Default 2.

    Returns:
        :class:`KeyFrames`.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    check_int("degree", degree, 0)
    d = difference_signal(frames, blur=blur)
    base = iterative_baseline(d, degree=int(degree))
    s = d - base
    thr = float(threshold * (s.max() - s.min()) + s.min())
    idx = peak_indices(s, thr)
    mask = np.zeros(d.size, dtype=bool)
    mask[idx] = True
    return KeyFrames(indices=idx, mask=mask, difference=d, baseline=base, signal=s, threshold=thr)


def keyframe_correlation(saliency, keyframe_mask) -> jax.Array:
    """Pearson correlation of a temporal saliency with the key-frame indicator, per clip.

    ``r = cov(s, k) / (std(s) std(k))`` over the ``T`` frames, with ``k`` the 0/1 key-frame mask (the
    point-biserial correlation): positive when the saliency is higher on key frames.

    Args:
        saliency: float ``[..., T]`` (e.g. :func:`jaxvx.transforms.frame_share`'s ``[B, T]``).
        keyframe_mask: bool or 0/1 ``[..., T]`` (e.g. :attr:`KeyFrames.mask`), broadcastable to ``saliency``.

    Returns:
        float32 ``[...]``; NaN where either signal is constant over time.
    """
    s = jnp.asarray(saliency, dtype=jnp.float32)
    k = jnp.asarray(keyframe_mask)
    if k.ndim < 1 or k.shape[-1] != s.shape[-1]:
        raise ValueError(f"keyframe_mask must be [..., T] with T = {s.shape[-1]} like saliency {tuple(s.shape)}, "
                         f"got shape {tuple(k.shape)}")
    return _pearson(s, k)


@jax.jit
def _pearson(s, k):
    k = jnp.broadcast_to(k.astype(jnp.float32), jnp.broadcast_shapes(s.shape, k.shape))
    s = jnp.broadcast_to(s, k.shape)
    s = s - s.mean(axis=-1, keepdims=True)
    k = k - k.mean(axis=-1, keepdims=True)
    den = jnp.sqrt((s * s).sum(axis=-1) * (k * k).sum(axis=-1))
    return jnp.where(den > 0, (s * k).sum(axis=-1) / jnp.where(den > 0, den, 1), jnp.nan)
