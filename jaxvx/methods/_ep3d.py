"""EP-3D, EP-3D-Evenly, temporally smoothed EP-3D and STEP (Li et al., WACV 2021 / TCSVT 2021), and the minimum
preservation ratio.

All of them optimise one TorchRay mask per frame (:class:`jaxvx.methods._mask_generator.MaskGenerator` applied to each
frame's control points), perturb each frame with its own blur (or fade) pyramid and score the clip with the model's
softmax probability. Settings are those of Li et al.'s code (``visual_meth/perturbation_area.py`` of
``shinkyo0513/Spatio-Temporal-Perturbations-for-Video-Attribution``): reward ``-log p_c`` (preserve),
``-log(1 - p_c)`` (delete), their sum (dual); area weight ``300 * 1.0008668^t``; SGD lr 0.05, momentum and
dampening 0.9; 8 levels; step 7 and sigma 11 for 112-pixel frames (23 for larger frames); no flip jitter.
The energy is minimised.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvx._checks import check_int
from jaxvx.methods._common import check_video, details, guarded, is_traced, resolve_target, with_details
from jaxvx.methods._area import area_loss, area_zeros
from jaxvx.methods._extremal import ExtremalResult, check_areas, check_common, torchray_reward
from jaxvx.methods._mask_generator import mask_generator
from jaxvx.methods._optimise import Program, geometric_schedule, run, sgd_dampened
from jaxvx.methods._pyramid import apply_levels_last, apply_pyramid, perturbation_pyramid

__all__ = [
    "TEMPORAL_SIGMAS",
    "PreservationResult",
    "core_loss",
    "core_topk",
    "ellipsoid_kernel",
    "ep3d",
    "min_preservation_ratio",
    "step",
    "temporal_gaussian",
]

# The temporal Gaussian-smoothing baseline of Li et al. has no public code or sigmas; these are jaxvx's choice, in
# frames: light, moderate and strong smoothing of 16-frame clips (a sigma of 4 frames spans a quarter of the clip).
TEMPORAL_SIGMAS = (1.0, 2.0, 4.0)
REWARDS = ("log", "simple", "contrastive")
AREA_GROWTH = 1.0008668  # Li et al.: 1.00069^800 = 2 in their comment; the code multiplies by 1.0008668
_HIGHEST = jax.lax.Precision.HIGHEST


def temporal_gaussian(num_frames: int, sigma: float) -> np.ndarray:
    """``[T, T]`` float32 smoothing matrix: row t is ``exp(-(t - s)^2 / (2 sigma^2))`` normalised to sum to one
    (so the first and last frames average over the frames that exist, no padding)."""
    if not sigma > 0:
        raise ValueError(f"temporal_sigma must be > 0, got {sigma!r}")
    t = np.arange(num_frames, dtype=np.float64)
    g = np.exp(-((t[:, None] - t[None, :]) ** 2) / (2.0 * sigma * sigma))
    return (g / g.sum(axis=1, keepdims=True)).astype(np.float32)


def ellipsoid_kernel(frames: int, size: int) -> np.ndarray:
    """Binary ellipsoid ``[frames, size, size]`` float32: 1 where ``v1^2 + v2^2 + v3^2 <= 1`` on a
    ``linspace(-1, 1)`` grid per axis (Li et al.'s STEP kernel)."""
    v1, v2, v3 = np.meshgrid(np.linspace(-1, 1, frames), np.linspace(-1, 1, size), np.linspace(-1, 1, size),
                             indexing="ij")
    return (np.sqrt(v1 ** 2 + v2 ** 2 + v3 ** 2) <= 1).astype(np.float32)


def core_topk(area: float, num_voxels: int, frames: int, size: int) -> int:
    """STEP's number of kernel positions pushed to 1: ``ceil(a N / int(K S S 0.5236))`` (0.5236 ~ pi / 6, the
    ellipsoid's share of its box, as in Li et al.'s code); N counts the padded mask's voxels."""
    return math.ceil(area * num_voxels / int(frames * size * size * 0.5236))


def core_loss(full: jax.Array, kernel: jax.Array, topk: jax.Array) -> jax.Array:
    """STEP's spatio-temporal smoothness loss of padded masks ``full`` ``[B, A, T, H', W']``.

    The masks are convolved with ``kernel`` ``[K, S, S]`` (stride ``(1, S, S)``, no padding) and divided by the
    kernel's sum; per clip and area the responses are sorted in descending order, the first ``topk[a]`` are pushed
    to 1 and the rest to 0: ``mean((top - 1)^2) + mean(rest^2)`` (an empty part counts 0). Returns ``[B, A]``.
    """
    b, a, t, h, w = full.shape
    k, s, _ = kernel.shape
    # stride = kernel size in space, so the windows tile the frame: cut it into s x s blocks, contract each block
    # with every temporal slice of the kernel, then add the K slices along the diagonal (frame t' + i with slice
    # i). The same numbers as a strided 3D convolution, whose gradient XLA runs ~100x slower on CPU.
    nh, nw = (h - s) // s + 1, (w - s) // s + 1
    blocks = full[..., : nh * s, : nw * s].reshape(b, a, t, nh, s, nw, s)
    per_slice = jnp.einsum("bathiwj,kij->batkhw", blocks, kernel, precision=_HIGHEST)  # [B, A, T, K, nh, nw]
    t_out = t - k + 1
    conv = sum(per_slice[:, :, i:i + t_out, i] for i in range(k)) / jnp.sum(kernel)
    conv = conv.reshape(b, a, -1)
    n = conv.shape[-1]
    ordered = -jnp.sort(-conv, axis=-1)
    top_k = jnp.minimum(jnp.asarray(topk), n)[:, None]  # [A, 1]
    is_top = jnp.arange(n)[None, :] < top_k
    top = jnp.sum(jnp.where(is_top, (ordered - 1.0) ** 2, 0.0), axis=-1) / jnp.maximum(top_k[:, 0], 1)
    rest = jnp.sum(jnp.where(is_top, 0.0, ordered ** 2), axis=-1) / jnp.maximum(n - top_k[:, 0], 1)
    return top + rest


def _log_reward(logits: jax.Array, target: jax.Array, game: str) -> jax.Array:
    """Li et al.'s rewards (minimised): ``-log p_c`` (preserve) or ``-log(1 - p_c)`` (delete), from logits."""
    onehot = jax.nn.one_hot(target, logits.shape[-1], dtype=bool)
    total = jax.nn.logsumexp(logits, axis=-1)
    if game == "preserve":
        return total - jnp.sum(jnp.where(onehot, logits, 0.0), axis=-1)
    return total - jax.nn.logsumexp(jnp.where(onehot, -jnp.inf, logits), axis=-1)


def _video_perturbation(areas, *, evenly, temporal_sigma, core, variant, reward, perturbation, step, sigma, max_iter,
                        num_levels, learning_rate, jitter, loop):
    areas = check_areas(areas)
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
    check_common(variant, reward, perturbation, step, 11 if sigma is None else sigma, max_iter, num_levels, loop)
    if temporal_sigma is not None and not temporal_sigma > 0:
        raise ValueError(f"temporal_sigma must be None or > 0, got {temporal_sigma!r}")
    n_area = len(areas)
    games = 2 if variant == "dual" else 1
    core_weights = np.zeros(max_iter, np.float32)
    if core is not None:
        frames, size, weight, start = core
        core_weights = np.where(np.arange(max_iter) > start, weight, 0.0).astype(np.float32)
    schedule = {"it": np.arange(max_iter, dtype=np.int32),
                "lam": geometric_schedule(300.0, AREA_GROWTH, max_iter).astype(np.float32),
                "core_w": core_weights}
    cache = weakref.WeakKeyDictionary()

    def generator_for(h, w):
        return mask_generator((h, w), step, sigma if sigma is not None else (11 if min(h, w) <= 112 else 23))

    def smoothing(t):
        return None if temporal_sigma is None else jnp.asarray(temporal_gaussian(t, temporal_sigma))

    def build(forward):
        def prepare(video, target):
            b, t, h, w, _ = video.shape
            oh, ow = generator_for(h, w).shape_out
            consts = {
                "target": resolve_target(forward(video), target),
                # [B, 1, T, H, W, L, C]: levels next to channels, a unit axis for the areas
                "pyramid": jnp.moveaxis(perturbation_pyramid(video, num_levels, perturbation), 0, -2)[:, None],
                "zeros": jnp.asarray(area_zeros(oh * ow, areas))[:, None] if evenly  # [A, 1]: per frame
                else jnp.asarray(area_zeros(t * oh * ow, areas)),  # [A]: over the volume
            }
            if core is not None:
                consts["kernel"] = jnp.asarray(ellipsoid_kernel(frames, size))
            return jnp.ones((b, n_area, t, *generator_for(h, w).shape_in), video.dtype), consts

        def masks_of(params, t, h, w):
            smooth_t = smoothing(t)
            if smooth_t is not None:
                params = jnp.einsum("ts,bashw->bathw", smooth_t, params, precision=_HIGHEST)
            return generator_for(h, w).generate(params)  # [B, A, T, H, W], [B, A, T, oh, ow]

        def objective(params, consts, xs):
            pyramid = consts["pyramid"]
            b, _, t, h, w, _, c = pyramid.shape
            mask, full = masks_of(params, t, h, w)
            oh, ow = full.shape[-2:]
            if variant == "preserve":
                x = apply_levels_last(pyramid, mask)
            elif variant == "delete":
                x = apply_levels_last(pyramid, 1.0 - mask)
            else:
                x = jnp.concatenate([apply_levels_last(pyramid, mask), apply_levels_last(pyramid, 1.0 - mask)],
                                    axis=1)
            if jitter:
                x = jnp.where(xs["it"] % 2 == 0, jnp.flip(x, axis=-2), x)
            logits = forward(x.reshape(b * games * n_area, t, h, w, c)).reshape(b, games * n_area, -1)
            tgt = consts["target"][:, None]
            if reward == "log":
                if variant == "dual":
                    r = (_log_reward(logits[:, :n_area], tgt, "preserve")
                         + _log_reward(logits[:, n_area:], tgt, "delete"))
                else:
                    r = _log_reward(logits, tgt, variant)
            else:  # TorchRay's rewards, negated: here the energy is minimised
                r = torchray_reward(logits, tgt, reward)
                r = r[:, :n_area] - r[:, n_area:] if variant == "dual" else r
                r = r if variant == "delete" else -r
            if evenly:
                area = area_loss(full.reshape(b, n_area, t, oh * ow), consts["zeros"]).mean(axis=-1)
            else:
                area = area_loss(full.reshape(b, n_area, t * oh * ow), consts["zeros"])
            regul = xs["lam"] * area
            if core is not None:
                topk = np.array([core_topk(a, t * oh * ow, frames, size) for a in areas])
                regul = regul + xs["core_w"] * core_loss(full, consts["kernel"], topk)
            energy = r + regul
            return jnp.sum(energy), (energy, r, regul)

        def finish(last, consts, history):
            _, _, t, h, w, _, _ = consts["pyramid"].shape
            return ExtremalResult(masks_of(last, t, h, w)[0], *(jnp.moveaxis(jnp.asarray(a), 0, -1)
                                                                 for a in history))

        return Program(prepare, objective, finish)

    def full(forward, video, target=None, *, key=None):
        del key
        video = check_video(video)
        _, t, h, w, _ = video.shape
        if core is not None:
            oh, _ = generator_for(h, w).shape_out
            if frames > t or size > oh:
                raise ValueError(f"STEP kernel {frames} x {size} x {size} does not fit the padded masks "
                                 f"{t} x {oh} x {oh} (video shape {tuple(video.shape)})")
        result = run(build, forward, video, target, optimizer=sgd_dampened(learning_rate), schedule=schedule,
                     loop=loop, cache=cache)
        return result.saliency[..., None], result

    return with_details(full)


_COMMON_DOC = """
    Common settings (Li et al.'s defaults):
        variant: ``"preserve"`` (default), ``"delete"`` or ``"dual"``.
        reward: ``"log"`` (default: ``-log p_c``, ``-log(1 - p_c)``, their sum for dual, from the softmax of the
            logits), or TorchRay's ``"simple"`` / ``"contrastive"`` rewards negated (the energy is minimised here).
        perturbation: ``"blur"`` (default) or ``"fade"``; ``num_levels`` pyramid levels (8).
        step, sigma: the mask generator's control-point pitch (7) and smoothing (``None``: 11 for frames up to 112
            pixels, 23 for larger ones, as Li et al.).
        max_iter: iterations (1000). learning_rate: SGD step (0.05; momentum and dampening 0.9).
        jitter: flip the input left-right on even iterations (False: Li et al. do not).
        loop: ``"auto"``, ``"scan"`` or ``"python"`` (see :func:`jaxvx.methods._optimise.run`).

    Returns:
        ``method(forward, video, target=None, *, key=None) -> relevance`` with ``video`` float32 ``[B, T, H, W, C]``;
        ``forward`` gets ``[B * A (* 2 for dual), T, H, W, C]`` perturbed clips per iteration; ``key`` is unused
        (deterministic). ``relevance`` ``[B, T, H, W, 1]`` is the masks summed over areas.
        ``jaxvx.methods.details(method)`` returns ``(relevance, result)``, the :class:`ExtremalResult` whose
        ``masks`` are ``[B, A, T, H, W]`` in [0, 1] (the masks of the last iteration) and whose ``energy``,
        ``reward``, ``regulariser`` are ``[B, A, max_iter]`` (the energy is minimised).
"""


def ep3d(areas: Sequence[float] | float, *, evenly: bool = False, temporal_sigma: float | None = None,
         variant: str = "preserve", reward: str = "log", perturbation: str = "blur", step: int = 7,
         sigma: float | None = None, max_iter: int = 1000, num_levels: int = 8, learning_rate: float = 0.05,
         jitter: bool = False, loop: str = "auto") -> Callable:
    """EP-3D (Li et al.): extremal perturbation with one TorchRay mask per frame and one area loss over the clip.

    Parameters ``[B, A, T, h, w]`` (ones) give per-frame masks through the 2D mask generator; each frame is
    perturbed through its own pyramid. Energy (minimised) per clip and area: ``reward + lambda_t * area_loss`` with
    ``lambda_t = 300 * 1.0008668^t`` and the area loss of the sorted mask values over the whole padded
    ``T x H' x W'`` volume against ``int(N (1 - a))`` zeros then ones.

    - ``evenly=True`` (EP-3D-Evenly): the area loss per frame (each frame's mask sorted against a per-frame
      template), averaged over frames, so every frame keeps the same area.
    - ``temporal_sigma``: the Gaussian-smoothing baseline: the control points are smoothed along time by
      :func:`temporal_gaussian` before the generator (and the returned masks come from the smoothed parameters).
      Li et al. give no sigmas; :data:`TEMPORAL_SIGMAS` = (1, 2, 4) frames are jaxvx's documented choices.

    Args:
        areas: area fractions in (0, 1], optimised together (Li et al. use 0.05, 0.1, 0.15, 0.5 on UCF101-24).
        evenly: per-frame area loss (default False).
        temporal_sigma: ``None`` (default) or the smoothing sigma in frames.
    """
    return _video_perturbation(areas, evenly=evenly, temporal_sigma=temporal_sigma, core=None, variant=variant,
                               reward=reward, perturbation=perturbation, step=step, sigma=sigma, max_iter=max_iter,
                               num_levels=num_levels, learning_rate=learning_rate, jitter=jitter, loop=loop)


def step(areas: Sequence[float] | float, *, kernel_frames: int = 7, kernel_size: int = 11,
         smoothness_weight: float = 300.0, smoothness_start: int = 100, evenly: bool = False,
         variant: str = "preserve", reward: str = "log", perturbation: str = "blur", step: int = 7,
         sigma: float | None = None, max_iter: int = 1000, num_levels: int = 8, learning_rate: float = 0.05,
         jitter: bool = False, loop: str = "auto") -> Callable:
    """STEP, spatio-temporal extremal perturbation (Li et al.): EP-3D plus a spatio-temporal smoothness loss.

    The smoothness ("core") loss, :func:`core_loss`: the padded masks are convolved with a binary ellipsoid of
    ``kernel_frames x kernel_size x kernel_size`` (:func:`ellipsoid_kernel`), stride ``(1, kernel_size,
    kernel_size)``, no padding, divided by the kernel's sum; the top ``k = ceil(a N / int(K S S 0.5236))``
    responses are pushed to 1 and the rest to 0 (mean squared errors). It rewards masks made of whole
    spatio-temporal ellipsoids, hence smooth in time. Its weight is 0 for iterations ``t <= smoothness_start``
    (100) and ``smoothness_weight`` (300) afterwards, as in Li et al.'s code; it is not multiplied by the growing
    area weight. Li et al. use K from 5 to 14 (7 in their demo).

    Args:
        areas: area fractions in (0, 1], optimised together.
        kernel_frames, kernel_size: the ellipsoid's extent K (7) and S (11); K must not exceed T.
        smoothness_weight, smoothness_start: the smoothness loss's weight and the last iteration without it.
        evenly: per-frame area loss as in :func:`ep3d` (default False: Li et al.'s STEP uses the volume loss).
    """
    check_int("kernel_frames", kernel_frames, numpy=False)
    check_int("kernel_size", kernel_size, numpy=False)
    return _video_perturbation(areas, evenly=evenly, temporal_sigma=None,
                               core=(kernel_frames, kernel_size, float(smoothness_weight), int(smoothness_start)),
                               variant=variant, reward=reward, perturbation=perturbation, step=step, sigma=sigma,
                               max_iter=max_iter, num_levels=num_levels, learning_rate=learning_rate, jitter=jitter,
                               loop=loop)


ep3d.__doc__ += _COMMON_DOC
step.__doc__ += _COMMON_DOC


class PreservationResult(NamedTuple):
    """What :func:`min_preservation_ratio` returns.

    Attributes:
        ratio: ``[B]`` the smallest area whose preserved clip passes the test (NaN where none does).
        probability: ``[B, A]`` the target's softmax probability on each area's preserved clip.
        passed: ``[B, A]`` bool, whether each area's preserved clip passes.
        areas: ``[A]`` the areas searched, ascending.
        explanation: the optimiser's :class:`ExtremalResult` (masks ``[B, A, T, H, W]``).
    """

    ratio: jax.Array
    probability: jax.Array
    passed: jax.Array
    areas: jax.Array
    explanation: ExtremalResult


def min_preservation_ratio(areas: Sequence[float] = tuple(np.round(np.arange(1, 11) * 0.05, 2)), *,
                           bound: float | None = None, explainer: Callable = step, **settings) -> Callable:
    """The minimum preservation ratio (Li et al.'s Table 2): the smallest area whose preserved clip still keeps the
    target, found by optimising preservation masks for all candidate areas at once.

    ``explainer(areas, variant="preserve", **settings)`` (default :func:`step`; :func:`ep3d` works too) optimises
    one mask per area in a single run; each area's preserved clip (its mask applied to the same perturbation
    pyramid) is then scored in one batched forward pass. The test is ``p_c >= bound`` for the target's softmax
    probability, or, with ``bound=None`` (default), that the target is still the predicted class. The ratio is
    the smallest area (of the ascending ``areas``) that passes, NaN if none does.

    Args:
        areas: candidate area fractions (default 0.05, 0.10, ..., 0.50), sorted here.
        bound: probability bound, or ``None`` for "still predicted".
        explainer: the mask optimiser factory.
        **settings: passed to ``explainer`` (``max_iter``, ``perturbation``, ``num_levels``, ...).

    Returns:
        ``method(forward, video, target=None, *, key=None) -> PreservationResult``.
    """
    areas = tuple(sorted(check_areas(areas)))
    if bound is not None and not 0.0 <= float(bound) <= 1.0:
        raise ValueError(f"bound must be None or a probability in [0, 1], got {bound!r}")
    if "variant" in settings and settings["variant"] != "preserve":
        raise ValueError(f"min_preservation_ratio needs the preserve variant, got variant={settings['variant']!r}")
    settings = {**settings, "variant": "preserve"}
    optimiser = details(explainer(areas, **settings))
    kind = settings.get("perturbation", "blur")
    levels = settings.get("num_levels", 8)

    @guarded
    def method(forward, video, target=None, *, key=None):
        video = check_video(video)
        b, n = video.shape[0], len(areas)
        target = resolve_target(forward(video), target)
        _, result = optimiser(forward, video, target, key=key)

        def score(video, target, masks):
            pyramid = perturbation_pyramid(video, levels, kind)[:, :, None]
            kept = apply_pyramid(pyramid, masks)  # [B, A, T, H, W, C]
            logits = forward(kept.reshape(b * n, *video.shape[1:])).reshape(b, n, -1)
            prob = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), target[:, None, None], axis=-1)[..., 0]
            passed = jnp.argmax(logits, axis=-1) == target[:, None] if bound is None else prob >= bound
            grid = jnp.asarray(areas, video.dtype)
            ratio = jnp.where(passed.any(axis=1), grid[jnp.argmax(passed, axis=1)], jnp.nan)
            return ratio, prob, passed, grid

        if not is_traced(video, target):
            score = jax.jit(score)
        return PreservationResult(*score(video, target, result.masks), result)

    return method
