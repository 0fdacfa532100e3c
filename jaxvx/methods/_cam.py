"""Class activation maps: Grad-CAM (global or per-frame weights), guided Grad-CAM, saliency tubes.

Layer activations and gradients are reached in the traced program of ``forward`` (:mod:`jaxvx._program`), so
any Flax linen or NNX model or plain function works; the layer is named by its path (``layer="conv5b"``,
``"Mixed_5c"``, an NNX attribute path such as ``"blocks/3/conv"``; see :meth:`jaxvx._program.Program.layer`): its
output is that of the last operation inside it. A 3D layer's output is ``[B, T', H', W', K]``; a per-frame 2D
layer inside a CNN-LSTM sees ``[B*T, H', W', K]`` and is read as ``[B, T, H', W', K]``.

Maps are upsampled to the clip's ``(T, H, W)`` by separable interpolation matrices: ``"linear"`` (trilinear,
PyTorch's ``F.interpolate(..., align_corners=False)``), ``"nearest"`` (PyTorch's ``nearest``: source index
``floor(i * in / out)``) or ``"spline"`` (SciPy's ``ndimage.zoom(order=3)``), and repeated over the C channels so
that the relevance has the clip's shape (take ``[..., 0]`` for the map itself).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxvx import _program as P
from jaxvx._max_pool import fast_pools
from jaxvx.methods._common import check_video, guarded, resolve_target
from jaxvx.methods._gradient import guided_backprop

__all__ = ["gradcam", "guided_gradcam", "saliency_tubes", "upsample", "interpolation_matrix", "INTERPOLATIONS",
           "clip_maps"]

INTERPOLATIONS = ("linear", "nearest", "spline")


@functools.lru_cache(maxsize=256)
def interpolation_matrix(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """``M`` float64 ``[n_out, n_in]`` such that ``M @ v`` resizes a 1D signal ``v`` (see the module docstring)."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got {n_in} -> {n_out}")
    m = np.zeros((n_out, n_in))
    o = np.arange(n_out)
    if mode == "linear":
        src = np.maximum((o + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        lam = src - i0
        np.add.at(m, (o, i0), 1.0 - lam)
        np.add.at(m, (o, i1), lam)
    elif mode == "nearest":
        src = np.minimum(np.floor(o * (n_in / n_out)).astype(int), n_in - 1)
        m[o, src] = 1.0
    elif mode == "spline":
        from scipy import ndimage

        for i in range(n_in):
            e = np.zeros(n_in)
            e[i] = 1.0
            m[:, i] = ndimage.zoom(e, n_out / n_in, order=3)
    else:
        raise ValueError(f"interpolation: expected one of {INTERPOLATIONS}, got {mode!r}")
    return m


def upsample(maps, size, mode: str = "linear"):
    """Resize ``maps`` ``[B, t, h, w]`` to ``[B, *size]`` with separable :func:`interpolation_matrix` s."""
    if maps.ndim != 4:
        raise ValueError(f"maps: expected [B, t, h, w], got shape {tuple(maps.shape)}")
    out = maps
    for axis, n_out in zip((1, 2, 3), size):
        n_in = out.shape[axis]
        if n_in == n_out and mode != "spline":
            continue
        mat = jnp.asarray(interpolation_matrix(int(n_in), int(n_out), mode), maps.dtype)
        out = jnp.moveaxis(jnp.tensordot(out, mat, axes=((axis,), (1,))), -1, axis)
    return out


def clip_maps(a, video_shape, *, name: str = "layer"):
    """A layer output as ``[B, t, h, w, K]``: 3D layers as they are, per-frame 2D layers ``[B*T, h, w, K]``
    regrouped by clip, a 2D layer of ``[B, h, w, K]`` as one time step."""
    b, t = video_shape[:2]
    if a.ndim == 5:
        if a.shape[0] != b:
            raise ValueError(f"{name}: output {tuple(a.shape)} does not have the batch size {b} of the clip")
        return a
    if a.ndim == 4:
        if a.shape[0] == b * t:
            return a.reshape((b, t) + a.shape[1:])
        if a.shape[0] == b:
            return a[:, None]
        raise ValueError(f"{name}: 2D output {tuple(a.shape)} has a leading size that is neither B*T = {b * t} "
                         f"nor B = {b}")
    raise ValueError(f"{name}: expected a 3D conv output [B, T', H', W', K] or per-frame 2D output "
                     f"[B*T, H', W', K], got shape {tuple(a.shape)}")


def _check_layer(layer, name: str = "layer"):
    if not isinstance(layer, str) or not layer:
        raise TypeError(f"{name}: expected a layer path such as 'conv5b' or 'Mixed_5c', got {layer!r}")
    return layer


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")


def _cam(forward, video, target, layer, pooling, relu):
    logits, acts, pullback = P.layer_vjp(forward, video, [layer], handler=lambda program: fast_pools)
    target = resolve_target(logits, target)
    (grad,) = pullback(jax.nn.one_hot(target, logits.shape[-1], dtype=logits.dtype))
    a = clip_maps(acts[0], video.shape)
    g = clip_maps(grad, video.shape)
    if pooling == "global":
        w = jnp.mean(g, axis=(1, 2, 3))
        cam = jnp.einsum("bthwk,bk->bthw", a, w)
    else:
        w = jnp.mean(g, axis=(2, 3))
        cam = jnp.einsum("bthwk,btk->bthw", a, w)
    if relu:
        cam = jnp.maximum(cam, 0)
    return cam, target


def gradcam(layer, *, pooling: str = "global", relu: bool = True, interpolation: str = "linear"):
    """Grad-CAM (Selvaraju et al.) at ``layer``.

    With A ``[B, T', H', W', K]`` the layer's output and G the gradient of the target logit with respect to it:
    ``pooling="global"`` (captum's ``LayerGradCam``): ``w_k = mean_{t,h,w} G``, ``cam = sum_k w_k A_k``;
    ``pooling="per_frame"`` (Li et al.): ``w_{t,k} = mean_{h,w} G`` per time step, ``cam_t = sum_k w_{t,k} A_{t,k}``.
    ``relu=True`` keeps the positive part. The map is upsampled to ``(T, H, W)`` (default trilinear, PyTorch's
    ``align_corners=False``): relevance ``[B, T, H, W, 1]`` (one value per position, no channels).
    """
    _check_choice("pooling", pooling, ("global", "per_frame"))
    _check_choice("interpolation", interpolation, INTERPOLATIONS)
    _check_layer(layer)

    @guarded
    def method(forward, video, target=None, *, key=None):
        video = check_video(video)
        cam, _ = _cam(forward, video, target, layer, pooling, relu)
        cam = upsample(cam, video.shape[1:4], interpolation)
        return cam[..., None].astype(video.dtype)

    method.__name__ = "gradcam"
    return method


def guided_gradcam(layer, *, pooling: str = "global", interpolation: str = "nearest"):
    """Guided Grad-CAM (captum's ``GuidedGradCam``): :func:`guided_backprop` times the ReLU'd Grad-CAM map at
    ``layer`` upsampled to the clip (nearest by default, as captum), shape of ``video``."""
    _check_choice("pooling", pooling, ("global", "per_frame"))
    _check_choice("interpolation", interpolation, INTERPOLATIONS)
    _check_layer(layer)
    gb = guided_backprop()

    @guarded
    def method(forward, video, target=None, *, key=None):
        video = check_video(video)
        cam, target = _cam(forward, video, target, layer, pooling, True)
        cam = upsample(cam, video.shape[1:4], interpolation)
        return gb(forward, video, target) * cam[..., None]

    method.__name__ = "guided_gradcam"
    return method


def saliency_tubes(layer, head, *, interpolation: str = "spline", normalize: bool = True):
    """Saliency tubes (Stergiou et al.): ``cam = sum_k W_head[k, c] A_k`` at the last conv block ``layer`` (A after
    its ReLU), with ``head`` the Dense layer reading the globally pooled ``A`` (its kernel ``[K, classes]``); no
    bias, no ReLU; upsampled to ``(T, H, W)`` by cubic spline (SciPy ``zoom(order=3)``), min-max normalised per
    clip to [0, 1] (a constant map gives 0): relevance ``[B, T, H, W, 1]``.

    E.g. ``saliency_tubes("layer4_1", "fc")`` for :class:`jaxvx.models.R2Plus1D18`.
    """
    _check_choice("interpolation", interpolation, INTERPOLATIONS)
    _check_layer(layer)
    _check_layer(head, "head")

    @guarded
    def method(forward, video, target=None, *, key=None):
        video = check_video(video)
        program = P.trace(forward, video)
        node = program.layer(layer)
        head_node = program.layer(head, name="head")
        if head_node.kind != "dense":
            raise ValueError(f"head: {head!r} ends in {head_node.describe()}, not a dense layer")
        kernels = []

        def handler(call):
            if call.node.index == head_node.index:
                kernels.append(call.layer()[1]["params"]["kernel"])  # [K, classes]
            return None

        logits, captured = P.evaluate(program, video, handler, taps={node.index: 0.0})
        target = resolve_target(logits, target)
        a = clip_maps(captured[node.index], video.shape)
        kernel = kernels[0]
        if kernel.ndim != 2 or kernel.shape[0] != a.shape[-1]:
            raise ValueError(f"head: kernel of shape {tuple(kernel.shape)} does not read the {a.shape[-1]} channels "
                             f"of layer {layer!r}; saliency tubes need a head on globally pooled channels")
        w = jnp.take(kernel, target, axis=1).T  # [B, K]
        cam = jnp.einsum("bthwk,bk->bthw", a, w.astype(a.dtype))
        cam = upsample(cam, video.shape[1:4], interpolation)
        if normalize:
            lo = cam.min(axis=(1, 2, 3), keepdims=True)
            span = cam.max(axis=(1, 2, 3), keepdims=True) - lo
            cam = jnp.where(span > 0, (cam - lo) / jnp.where(span > 0, span, 1), 0)
        return cam[..., None].astype(video.dtype)

    method.__name__ = "saliency_tubes"
    return method
