"""Extremal perturbation (Fong, Patrick and Vedaldi, ICCV 2019): TorchRay 1.0's method, number for number.

For every clip and area one 2D mask, shared by the clip's frames, is optimised: the perturbed input is the
pyramid (:mod:`jaxvx.methods._pyramid`) under the mask of the generator (:mod:`jaxvx.methods._mask_generator`);
the energy is TorchRay's reward plus ``-lambda_t`` times the area loss (:mod:`jaxvx.methods._area`), ``lambda_t =
300 * 1.0035^t``, maximised by SGD with momentum 0.9 and dampening 0.9 (:mod:`jaxvx.methods._optimise`), the
input flipped left-right on even iterations. Everything runs as one jitted program, all areas and clips at once.
:mod:`jaxvx.methods._ep3d` builds Li et al.'s video methods from the same pieces.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvx._checks import check_int, is_int
from jaxvx.methods._area import area_loss, area_zeros
from jaxvx.methods._common import check_video, resolve_target, with_details
from jaxvx.methods._mask_generator import mask_generator
from jaxvx.methods._optimise import LOOPS, Program, geometric_schedule, run, sgd_dampened
from jaxvx.methods._pyramid import apply_levels_last, blur, perturbation_pyramid

__all__ = ["REWARDS", "VARIANTS", "ExtremalResult", "check_areas", "check_common", "extremal_perturbation",
           "torchray_reward"]


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


def check_areas(areas) -> tuple[float, ...]:
    if isinstance(areas, (int, float)):
        areas = (areas,)
    areas = tuple(float(a) for a in areas)
    if not areas or any(not 0.0 < a <= 1.0 for a in areas):
        raise ValueError(f"areas must be a non-empty sequence of fractions in (0, 1], got {areas!r}")
    return areas


def torchray_reward(logits: jax.Array, target: jax.Array, reward: str) -> jax.Array:
    """TorchRay's reward of ``logits`` ``[..., K]`` for ``target`` (broadcast): simple ``y_c``, contrastive
    ``y_c - max_{c' != c} y_c'``."""
    onehot = jax.nn.one_hot(target, logits.shape[-1], dtype=bool)
    y = jnp.sum(jnp.where(onehot, logits, 0.0), axis=-1)
    if reward == "simple":
        return y
    return y - jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)


def check_common(variant, reward, perturbation, step, sigma, max_iter, num_levels, loop):
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
        loop: ``"auto"``, ``"scan"`` or ``"python"``, see :func:`jaxvx.methods._optimise.run`.

    Returns:
        ``method(forward, video, target=None, *, key=None) -> relevance``; ``video`` float32 ``[B, T, H, W, C]``
        (``forward`` gets clips ``[B * A', T, H, W, C]``) or images ``[B, H, W, C]`` (``forward`` gets images).
        ``key`` is unused (the method is deterministic). ``relevance`` is the masks summed over areas
        (:attr:`ExtremalResult.saliency`) with a channel axis of 1, ``[B, T, H, W, 1]`` (``[B, H, W, 1]`` for
        images). ``jaxvx.methods.details(method)`` returns ``(relevance, result)``, the :class:`ExtremalResult` with
        ``masks`` ``[B, A, T, H, W]`` (the 2D mask repeated over time; ``[B, A, H, W]`` for images) and the
        per-iteration ``energy`` (maximised), ``reward`` and ``regulariser`` ``[B, A, max_iter]``.
    """
    areas = check_areas(areas)
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
    check_common(variant, reward, perturbation, step, sigma, max_iter, num_levels, loop)
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
                x = apply_levels_last(pyr, m)
            elif variant == "delete":
                x = apply_levels_last(pyr, 1.0 - m)
            else:
                x = jnp.concatenate([apply_levels_last(pyr, m), apply_levels_last(pyr, 1.0 - m)], axis=1)
            if jitter:
                x = jnp.where(xs["it"] % 2 == 0, jnp.flip(x, axis=-2), x)
            is_image = consts["image"].shape[0] == 0
            logits = model(x.reshape(b * games * n_area, t, h, w, c), is_image).reshape(b, games * n_area, -1)
            r = torchray_reward(logits, consts["target"][:, None], reward)  # [B, games * A]
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
