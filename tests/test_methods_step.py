"""EP-3D, EP-3D-Evenly, temporal smoothing, STEP and the minimum preservation ratio: the losses against direct
loops, the first iteration against a hand computation, and STEP against EP-3D on the synthetic benchmark."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvx.data
from jaxvx.methods import details, ep3d, min_preservation_ratio, step
from jaxvx.methods._ep3d import core_loss, core_topk, ellipsoid_kernel, temporal_gaussian
from jaxvx.methods._mask_generator import MaskGenerator
from jaxvx.methods._pyramid import apply_pyramid, perturbation_pyramid


def test_ellipsoid_kernel_and_topk():
    kernel = ellipsoid_kernel(7, 11)
    assert kernel.shape == (7, 11, 11)
    for t in range(7):
        for i in range(11):
            for j in range(11):
                v = (-1 + 2 * t / 6, -1 + 2 * i / 10, -1 + 2 * j / 10)
                assert kernel[t, i, j] == (math.sqrt(sum(x * x for x in v)) <= 1)
    assert kernel[3, 5, 5] == 1 and kernel[0, 0, 0] == 0
    # Li et al.: ceil(a N / int(K S S 0.5236)); for K = 7, S = 11: int(443.49) = 443
    assert core_topk(0.1, 16 * 134 * 134, 7, 11) == math.ceil(0.1 * 16 * 134 * 134 / 443)


def reference_core_loss(full, kernel, topk):
    b, a, t, h, w = full.shape
    k, s, _ = kernel.shape
    out = np.zeros((b, a))
    for bi in range(b):
        for ai in range(a):
            responses = []
            for t0 in range(t - k + 1):
                for y in range(0, h - s + 1, s):
                    for x in range(0, w - s + 1, s):
                        responses.append((full[bi, ai, t0:t0 + k, y:y + s, x:x + s] * kernel).sum() / kernel.sum())
            r = np.sort(np.array(responses))[::-1]
            n = min(topk[ai], len(r))
            out[bi, ai] = (((r[:n] - 1) ** 2).mean() if n else 0.0) + ((r[n:] ** 2).mean() if n < len(r) else 0.0)
    return out


def test_core_loss_matches_loop():
    rng = np.random.default_rng(0)
    full = rng.uniform(size=(2, 3, 6, 13, 12)).astype(np.float32)
    kernel = ellipsoid_kernel(3, 4)
    topk = np.array([1, 5, 100])  # the last one is more than the 4 * 3 * 3 = 36 responses
    got = jax.jit(core_loss, static_argnums=2)(jnp.asarray(full), jnp.asarray(kernel), tuple(topk))
    np.testing.assert_allclose(np.asarray(got), reference_core_loss(full, kernel, topk), rtol=1e-5)


def test_temporal_gaussian():
    g = temporal_gaussian(6, 1.5)
    t = np.arange(6)
    want = np.exp(-((t[:, None] - t[None]) ** 2) / (2 * 1.5 ** 2))
    np.testing.assert_allclose(g, want / want.sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(g.sum(1), 1, rtol=1e-6)


def _log_softmax(y):
    y = np.asarray(y, np.float64)
    return y - y.max(-1, keepdims=True) - np.log(np.exp(y - y.max(-1, keepdims=True)).sum(-1, keepdims=True))


@pytest.mark.slow
def test_first_iteration_terms():
    """Reward, area and smoothness terms at iteration 0 (all parameters 1), computed by hand in NumPy."""
    rng = np.random.default_rng(1)
    t_len, size, areas = 4, 16, (0.1, 0.4)
    video = jnp.asarray(rng.normal(size=(1, t_len, size, size, 3)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(t_len * size * size * 3, 5)) * 0.02, jnp.float32)

    def forward(x):
        return x.reshape(x.shape[0], -1) @ weights

    gen = MaskGenerator((size, size), 4, 5)
    mask0, full0 = (np.asarray(a) for a in gen.generate(jnp.ones((t_len, *gen.shape_in))))  # per frame
    pyr = perturbation_pyramid(video, 8, "blur")
    p_keep = _log_softmax(forward(apply_pyramid(pyr, jnp.asarray(mask0))))[0]
    p_drop = _log_softmax(forward(apply_pyramid(pyr, jnp.asarray(1 - mask0))))[0]
    target = 2
    kernel = ellipsoid_kernel(3, 5)

    def area_volume(a):
        v = np.sort(full0.ravel())
        ref = np.zeros_like(v)
        ref[int(v.size * (1 - a)):] = 1
        return ((v - ref) ** 2).mean()

    def area_evenly(a):
        s = full0.reshape(t_len, -1)
        ref = np.zeros(s.shape[1])
        ref[int(s.shape[1] * (1 - a)):] = 1
        return ((np.sort(s, axis=1) - ref) ** 2).mean()

    common = dict(max_iter=1, step=4, sigma=5, loop="scan")
    cases = [
        (ep3d(areas, **common), -p_keep[target], area_volume, 0.0),
        (ep3d(areas, evenly=True, variant="dual", **common),
         -p_keep[target] - np.log(1 - np.exp(p_drop[target])), area_evenly, 0.0),
        (step(areas, kernel_frames=3, kernel_size=5, smoothness_start=-1, smoothness_weight=7.0, **common),
         -p_keep[target], area_volume, 7.0),
    ]
    for method, reward, area, core_weight in cases:
        saliency, result = details(method)(forward, video, jnp.array([target]))
        assert result.masks.shape == (1, 2, t_len, size, size) and saliency.shape == (1, t_len, size, size, 1)
        np.testing.assert_allclose(np.asarray(result.reward[0, :, 0]), [reward, reward], rtol=1e-4)
        oh = full0.shape[-1]
        core = reference_core_loss(full0[None, None], kernel,
                                   [core_topk(a, t_len * oh * oh, 3, 5) for a in areas[:1]])[0, 0]
        core2 = reference_core_loss(full0[None, None], kernel,
                                    [core_topk(a, t_len * oh * oh, 3, 5) for a in areas[1:]])[0, 0]
        want = [300 * area(areas[0]) + core_weight * core, 300 * area(areas[1]) + core_weight * core2]
        np.testing.assert_allclose(np.asarray(result.regulariser[0, :, 0]), want, rtol=1e-4)
        np.testing.assert_allclose(np.asarray(result.energy), np.asarray(result.reward + result.regulariser))


@pytest.mark.slow
def test_temporal_smoothing_applies_to_the_control_points():
    """With temporal_sigma the masks are the generator applied to time-smoothed parameters (checked at t=0
    through the returned masks of a 1-iteration run, whose parameters are still all ones: a constant is a fixed
    point of a normalised smoothing, so the masks equal the plain ones)."""
    rng = np.random.default_rng(2)
    video = jnp.asarray(rng.normal(size=(1, 3, 16, 16, 3)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(3 * 16 * 16 * 3, 2)) * 0.02, jnp.float32)
    forward = lambda x: x.reshape(x.shape[0], -1) @ weights  # noqa: E731
    smooth = details(ep3d((0.2,), temporal_sigma=2.0, max_iter=1, step=4, sigma=5, loop="scan"))(forward, video)[1]
    plain = details(ep3d((0.2,), max_iter=1, step=4, sigma=5, loop="scan"))(forward, video)[1]
    np.testing.assert_allclose(np.asarray(smooth.masks), np.asarray(plain.masks), atol=1e-6)
    with pytest.raises(ValueError, match="temporal_sigma"):
        ep3d((0.2,), temporal_sigma=0.0)


def _actor_clip(size=32):
    clip = jaxvx.data.synthetic("test", num_clips=1, height=size, width=size, num_frames=16)[0]
    video = ((clip["video"].astype(np.float32) / 255 - 0.45) / 0.225)[None]
    boxes = np.zeros((16, size, size), bool)
    for t, (x0, y0, x1, y1) in enumerate(clip["boxes"].astype(int)):
        if clip["present"][t]:
            boxes[t, y0:y1 + 1, x0:x1 + 1] = True
    return jnp.asarray(video), jnp.asarray(clip["actor"], jnp.float32), boxes


def _actor_model(actor, beta=10.0):
    """A model that looks at the actor: the logit is the texture energy on the actor's pixels, soft-maxed over
    frames (any frame showing the actor sharply is enough: the evidence is redundant in time)."""

    def forward(x):
        local = (jnp.roll(x, 1, -2) + jnp.roll(x, -1, -2) + jnp.roll(x, 1, -3) + jnp.roll(x, -1, -3)) / 4
        energy = ((x - local) ** 2).mean(-1)
        per_frame = (energy * actor).sum((2, 3)) / jnp.maximum(actor.sum((1, 2)), 1)  # [N, T]
        score = jax.nn.logsumexp(beta * per_frame, axis=1) / beta
        return jnp.stack([2 * score, jnp.full_like(score, 2.0)], axis=-1)

    return forward


def temporal_roughness(mask):
    """Mean absolute frame-to-frame change of a mask ``[T, H, W]``, relative to its mean value."""
    return np.abs(np.diff(mask, axis=0)).mean() / mask.mean()


@pytest.mark.slow
def test_step_is_smoother_in_time_than_ep3d_and_covers_the_actor():
    video, actor, boxes = _actor_clip()
    forward = _actor_model(actor)
    settings = dict(max_iter=150, step=4, sigma=5)
    plain = details(ep3d((0.01,), **settings))(forward, video, jnp.array([0]))[1]
    smooth = details(step((0.01,), kernel_frames=7, kernel_size=5, smoothness_start=20, **settings))(
        forward, video, jnp.array([0]))[1]
    rough_ep3d = temporal_roughness(np.asarray(plain.masks[0, 0]))
    rough_step = temporal_roughness(np.asarray(smooth.masks[0, 0]))
    assert rough_step < 0.85 * rough_ep3d, (rough_step, rough_ep3d)
    for result in (plain, smooth):
        mask = np.asarray(result.masks[0, 0])
        assert mask[boxes].mean() > 3 * mask[~boxes].mean(), (mask[boxes].mean(), mask[~boxes].mean())


@pytest.mark.slow
def test_min_preservation_ratio_scores_each_area():
    video, actor, _ = _actor_clip(24)
    forward = _actor_model(actor)
    areas = (0.02, 0.1, 0.5, 1.0)
    method = min_preservation_ratio(areas, bound=0.2, explainer=ep3d, max_iter=3, step=4, sigma=5, loop="scan")
    result = method(forward, video, jnp.array([0]))
    masks = np.asarray(result.explanation.masks)
    assert masks.shape == (1, 4, 16, 24, 24)
    pyr = perturbation_pyramid(video, 8, "blur")
    for i in range(4):
        logits = np.asarray(forward(apply_pyramid(pyr, jnp.asarray(masks[0, i]))))
        p = np.exp(_log_softmax(logits))[0, 0]
        np.testing.assert_allclose(float(result.probability[0, i]), p, rtol=1e-5)
        assert bool(result.passed[0, i]) == (p >= 0.2)
    passed = np.asarray(result.passed[0])
    want = areas[int(np.argmax(passed))] if passed.any() else np.nan
    np.testing.assert_allclose(float(result.ratio[0]), want, rtol=1e-6)  # NaN == NaN here
    assert np.asarray(result.passed).any()  # the whole clip (area 1) keeps the target above the bound
    with pytest.raises(ValueError, match="preserve"):
        min_preservation_ratio(variant="delete")


def test_bad_arguments():
    video = jnp.zeros((1, 4, 16, 16, 3))
    with pytest.raises(ValueError, match="STEP kernel"):
        step((0.1,), kernel_frames=7, step=4, sigma=5)(lambda x: x.reshape(x.shape[0], -1)[:, :2], video)
    with pytest.raises(ValueError, match="kernel_size"):
        step((0.1,), kernel_size=0)
    with pytest.raises(ValueError, match="reward"):
        ep3d((0.1,), reward="prob")
    with pytest.raises(ValueError, match="areas"):
        ep3d((1.5,))
