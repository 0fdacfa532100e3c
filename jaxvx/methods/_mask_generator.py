"""TorchRay's smooth-max mask generator: a smooth mask in [0, 1] from control points every ``step`` pixels.

Control points ``[..., h, w]`` with ``h = ceil(H / step)`` become a mask ``[..., H, W]`` (and its padded extent,
which enters the area loss): each pixel takes the smooth maximum ``sum_k z_k softmax(COLDNESS z)_k`` of its
neighbouring control points' values, each weighted by a Gaussian of its distance over ``sigma``, clamped to
[0, 1]. :class:`MaskGenerator` gives the constants; :func:`mask_generator` caches one per shape and setting."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["COLDNESS", "MaskGenerator", "mask_generator"]

COLDNESS = 20.0
_HIGHEST = jax.lax.Precision.HIGHEST


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
