"""Extremal perturbation's pieces against direct float64 formulas, and the optimiser end to end on a model whose
evidence is known (TorchRay itself is compared in tests/peers/test_peers_torchray.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.ndimage as ndi

from _nets import planned_temp_bytes
from jaxvx.methods import ExtremalResult, details, extremal_perturbation, sgd_dampened
from jaxvx.methods._area import area_loss, area_template, area_zeros
from jaxvx.methods._mask_generator import MaskGenerator
from jaxvx.methods._pyramid import apply_pyramid, blur, gaussian_filter, perturbation_pyramid


def test_gaussian_filter_and_blur_match_formula():
    for sigma in (0.5, 2.857143, 20.0):
        width = math.ceil(4 * sigma)
        i = np.arange(-width, width + 1)
        want = np.exp(-0.5 * i ** 2 / sigma ** 2)
        np.testing.assert_allclose(gaussian_filter(sigma), want / want.sum(), rtol=1e-5, atol=1e-7)
    assert gaussian_filter(0.0).tolist() == [1.0]
    x = np.random.default_rng(0).normal(size=(2, 13, 11, 3))
    f = gaussian_filter(2.0).astype(np.float64)
    want = ndi.correlate1d(ndi.correlate1d(x, f, axis=1, mode="constant"), f, axis=2, mode="constant")
    np.testing.assert_allclose(np.asarray(jax.jit(lambda v: blur(v, 2.0))(jnp.asarray(x, jnp.float32))), want,
                               atol=1e-5)


def test_pyramid_and_interpolation():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 9, 10, 2)).astype(np.float32)
    levels = 5
    pyr = np.asarray(jax.jit(perturbation_pyramid, static_argnums=(1, 2))(jnp.asarray(x), levels, "blur"))
    np.testing.assert_allclose(pyr[-1], x)  # level L-1 is the input
    np.testing.assert_allclose(pyr[0], np.asarray(blur(jnp.asarray(x), 20.0)), atol=1e-6)  # level 0: sigma 20
    fade = np.asarray(perturbation_pyramid(jnp.asarray(x), levels, "fade"))
    np.testing.assert_allclose(fade, np.linspace(0, 1, levels)[:, None, None, None, None] * x[None], atol=1e-6)
    mask = rng.uniform(size=(3, 1, 9, 10)).astype(np.float32)
    mask[0, 0, 0] = 1.0
    mask[1, 0, 0] = 0.0
    mask[2, 0, 0] = 0.5  # exactly on level 2
    w = mask.astype(np.float64) * (levels - 1)
    k = np.floor(w).astype(int)
    f = w - k
    k1 = np.minimum(k + 1, levels - 1)
    p = pyr[:, 0].astype(np.float64)  # [L, H, W, C]
    hh, ww = np.meshgrid(np.arange(9), np.arange(10), indexing="ij")
    want = (1 - f)[..., None] * p[k, hh, ww] + f[..., None] * p[k1, hh, ww]  # [3, 1, H, W, C]
    got = jax.jit(apply_pyramid)(jnp.asarray(pyr), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    # the gradient flows through the fractional part only: (L - 1)(level_k+1 - level_k), 0 at m = 1
    grad = jax.grad(lambda m: apply_pyramid(jnp.asarray(pyr), m).sum())(jnp.asarray(mask))
    want_grad = (levels - 1) * (p[k1, hh, ww] - p[k, hh, ww]).sum(-1)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-4, atol=1e-4)
    assert np.all(np.asarray(grad)[0, 0, 0] == 0)


def reference_generator(params, shape, step, sigma):
    """TorchRay's smooth-max mask, written per output pixel from its definition, in float64."""
    margin = sigma
    pad = 1 + math.ceil((margin + sigma) / step)
    radius = 1 + math.ceil(sigma / step)
    h_in, w_in = (math.ceil(z / step) for z in shape)
    out = [step * (z + 2 * pad - 2 * radius) - step + 1 for z in (h_in, w_in)]
    uy, ux = np.meshgrid(np.arange(out[0]), np.arange(out[1]), indexing="ij")
    zs = []
    for ky in range(2 * radius + 1):
        for kx in range(2 * radius + 1):
            iy = uy // step + ky - pad  # the control point's index in the parameter grid
            ix = ux // step + kx - pad
            inside = (iy >= 0) & (iy < h_in) & (ix >= 0) & (ix < w_in)
            v = np.where(inside[None], params[:, np.clip(iy, 0, h_in - 1), np.clip(ix, 0, w_in - 1)], 0.0)
            dist = np.hypot(uy - (margin + step * iy), ux - (margin + step * ix))
            zs.append(v * np.exp(-2 * np.maximum(dist / sigma - 0.5, 0) ** 2))
    z = np.stack(zs, axis=-1)
    e = np.exp(20 * (z - z.max(-1, keepdims=True)))
    full = np.clip((z * e).sum(-1) / e.sum(-1), 0, 1)
    m = round(margin)
    return full[:, m:m + shape[0], m:m + shape[1]], full


@pytest.mark.parametrize("shape, step, sigma", [((21, 17), 4, 5.5), ((24, 24), 7, 11)])
def test_mask_generator_matches_definition(shape, step, sigma):
    gen = MaskGenerator(shape, step, sigma)
    rng = np.random.default_rng(2)
    params = rng.uniform(size=(3, *gen.shape_in))
    params[0] = 1.0
    params[1, :2] = 0.0
    want_crop, want_full = reference_generator(params, shape, step, sigma)
    crop, full = jax.jit(gen.generate)(jnp.asarray(params, jnp.float32))
    assert full.shape == (3, *gen.shape_out) and crop.shape == (3, *shape)
    np.testing.assert_allclose(np.asarray(full), want_full, atol=2e-6)
    np.testing.assert_allclose(np.asarray(crop), want_crop, atol=2e-6)
    general = MaskGenerator(shape, step, sigma, _force_general=True)  # the one-hot upsampling fallback
    np.testing.assert_allclose(np.asarray(jax.jit(general.generate)(jnp.asarray(params, jnp.float32))[1]),
                               want_full, atol=2e-6)


def test_generator_clamp_passes_gradient_at_zero_like_torch():
    gen = MaskGenerator((16, 16), 4, 5)
    grad = jax.jit(jax.grad(lambda p: gen.generate(p)[0].sum()))
    at_zero = np.asarray(grad(jnp.zeros((1, *gen.shape_in))))
    near_zero = np.asarray(grad(jnp.full((1, *gen.shape_in), 1e-6)))
    assert at_zero.min() > 0  # jnp.clip would pass only half of it at exactly 0
    np.testing.assert_allclose(at_zero, near_zero, rtol=1e-3)


def test_area_loss_equals_sorted_template_loss():
    rng = np.random.default_rng(3)
    m = rng.uniform(size=(2, 3, 500)).astype(np.float32)
    m[:, :, :200] = 0.0  # ties at zero
    m[0, 1, 200:260] = 0.75  # ties inside
    m[1, 2] = 1.0
    areas = [0.05, 0.5, 1.0]
    template = area_template(500, areas)
    assert area_zeros(500, areas).tolist() == [475, 250, 0]
    want = ((np.sort(m, axis=-1) - template) ** 2).mean(-1)
    got = area_loss(jnp.asarray(m), jnp.asarray(area_zeros(500, areas)))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
    # the gradient of differentiating through a stable sort, tie for tie
    zeros = jnp.asarray(area_zeros(500, areas))
    g = jax.grad(lambda x: area_loss(x, zeros).sum())(jnp.asarray(m))
    g_sort = jax.grad(lambda x: ((jnp.sort(x, axis=-1) - template) ** 2).mean(-1).sum())(jnp.asarray(m))
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_sort), atol=1e-9)


def test_sgd_dampened_is_torch_sgd():
    rng = np.random.default_rng(4)
    grads = rng.normal(size=(6, 5))
    lr, mom, damp = 0.05, 0.9, 0.9
    opt = sgd_dampened(lr, mom, damp)
    p = jnp.zeros(5)
    state = opt.init(p)
    want_p, buf = np.zeros(5), None
    for g in grads:
        buf = g.copy() if buf is None else mom * buf + (1 - damp) * g  # torch.optim.SGD, documented recursion
        want_p = want_p - lr * buf
        updates, state = opt.update(jnp.asarray(g, jnp.float32), state, p)
        p = optax.apply_updates(p, updates)
        np.testing.assert_allclose(np.asarray(p), want_p, rtol=1e-5, atol=1e-6)


def _region_model(region):
    """Logits whose first entry is the mean intensity inside ``region`` (a known evidence area)."""
    region = jnp.asarray(region, jnp.float32)

    def forward(x):  # [N, (T,) H, W, C]
        inside = (x.mean(-1) * region).sum(axis=(-2, -1)) / region.sum()
        if inside.ndim == 2:  # clips: mean over time
            inside = inside.mean(-1)
        return jnp.stack([5 * inside, jnp.full_like(inside, 2.0), -inside], axis=-1)

    return forward


@pytest.mark.slow
def test_first_iteration_terms_for_each_variant():
    rng = np.random.default_rng(5)
    video = jnp.asarray(rng.normal(size=(1, 2, 16, 16, 3)), jnp.float32)
    region = np.zeros((16, 16))
    region[4:9, 5:11] = 1
    forward = _region_model(region)
    gen = MaskGenerator((16, 16), 4, 5)
    mask0, full0 = (np.asarray(a)[0] for a in gen.generate(jnp.ones((1, *gen.shape_in))))
    pyr = perturbation_pyramid(video, 8, "blur")
    n = full0.size
    for variant, reward in [("delete", "simple"), ("dual", "contrastive")]:
        saliency, result = details(extremal_perturbation(
            (0.1, 0.3), variant=variant, reward=reward, max_iter=1, step=4, sigma=5, jitter=False, loop="scan"))(
            forward, video, jnp.array([0]))
        assert isinstance(result, ExtremalResult)
        assert saliency.shape == (*video.shape[:4], 1)  # the map: the masks summed over areas, a channel axis of 1
        np.testing.assert_allclose(np.asarray(saliency)[..., 0], np.asarray(result.masks).sum(1), rtol=1e-6)
        kept = np.asarray(forward(apply_pyramid(pyr, jnp.asarray(mask0))))[0]
        gone = np.asarray(forward(apply_pyramid(pyr, jnp.asarray(1 - mask0))))[0]
        score = (lambda y: y[0]) if reward == "simple" else (lambda y: y[0] - max(y[1:]))
        want = {"preserve": score(kept), "delete": -score(gone), "dual": score(kept) - score(gone)}[variant]
        np.testing.assert_allclose(np.asarray(result.reward[0, :, 0]), [want, want], rtol=1e-5)
        for i, a in enumerate((0.1, 0.3)):
            ref = np.zeros(n)
            ref[int(n * (1 - a)):] = 1
            regul = -300 * ((np.sort(full0.ravel()) - ref) ** 2).mean()
            np.testing.assert_allclose(float(result.regulariser[0, i, 0]), regul, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(result.energy), np.asarray(result.reward + result.regulariser))


@pytest.mark.slow
def test_preserved_region_is_found_on_clips_and_images():
    rng = np.random.default_rng(6)
    region = np.zeros((24, 24))
    region[3:10, 8:16] = 1  # about 10 % of the frame, symmetric left-right (TorchRay flips the input)
    forward = _region_model(region)
    images = jnp.asarray(0.1 * rng.normal(size=(2, 24, 24, 3)) + 2 * region[:, :, None], jnp.float32)
    video = jnp.stack([images, images], axis=1)  # two identical frames: the clip's evidence is the image's
    method = extremal_perturbation((0.1, 0.2), max_iter=80, step=4, sigma=5, learning_rate=0.05)
    saliency, result = details(method)(forward, video, jnp.array([0, 0]))
    assert result.masks.shape == (2, 2, 2, 24, 24) and result.energy.shape == (2, 2, 80)
    masks = np.asarray(result.masks)
    assert masks.min() >= 0 and masks.max() <= 1
    np.testing.assert_array_equal(masks[:, :, 0], masks[:, :, 1])  # one 2D mask per clip, repeated over time
    inside = masks[..., region > 0].mean(-1)
    outside = masks[..., region == 0].mean(-1)
    assert np.all(inside > 0.6) and np.all(outside < 0.35), (inside, outside)
    assert np.all(np.asarray(result.reward[..., -1]) > np.asarray(result.reward[..., 5]))
    # images [B, H, W, C]: the same method, the model sees images
    image_map, image_result = details(method)(lambda x: forward(x[:, None]), images, jnp.array([0, 0]))
    assert image_result.masks.shape == (2, 2, 24, 24) and image_map.shape == (2, 24, 24, 1)
    np.testing.assert_allclose(np.asarray(image_result.masks), masks[:, :, 0], atol=1e-5)
    # the method itself returns the map: the masks summed over areas, with a channel axis of 1
    np.testing.assert_allclose(np.asarray(method(forward, video, jnp.array([0, 0]))), masks.sum(1)[..., None],
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(saliency), masks.sum(1)[..., None], atol=1e-5)


@pytest.mark.slow
def test_scan_python_loop_and_jit_agree():
    rng = np.random.default_rng(7)
    region = np.zeros((16, 16))
    region[2:8, 3:9] = 1
    forward = _region_model(region)
    video = jnp.asarray(rng.normal(size=(1, 2, 16, 16, 3)), jnp.float32)
    kwargs = dict(max_iter=6, step=4, sigma=5)
    python = details(extremal_perturbation((0.1, 0.2), loop="python", **kwargs))(forward, video, jnp.array([0]))[1]
    method = details(extremal_perturbation((0.1, 0.2), **kwargs))
    jitted = jax.jit(lambda v, t: method(forward, v, t)[1])(video, jnp.array([0]))  # traced: the scan
    for other in (jitted,):
        np.testing.assert_allclose(np.asarray(other.masks), np.asarray(python.masks), atol=1e-5)
        np.testing.assert_allclose(np.asarray(other.energy), np.asarray(python.energy), rtol=1e-5)
    with pytest.raises(ValueError, match="loop='python'"):
        jax.jit(lambda v: extremal_perturbation(loop="python", **kwargs)(forward, v, jnp.array([0])))(video)


def test_scan_memory_does_not_grow_with_the_iterations():
    """The scanned optimisation keeps one iteration's buffers: 5 and 200 iterations plan the same temporaries,
    apart from the per-iteration energy history ([iterations, areas, B] floats)."""
    region = np.zeros((16, 16))
    region[2:8, 3:9] = 1
    forward = _region_model(region)
    video = jnp.asarray(np.random.default_rng(8).normal(size=(1, 2, 16, 16, 3)), jnp.float32)
    target = jnp.array([0])

    def temp_bytes(iters):
        method = extremal_perturbation((0.1, 0.2), max_iter=iters, step=4, sigma=5)
        return planned_temp_bytes(method, forward, video, target)

    short, long = temp_bytes(5), temp_bytes(200)
    assert long - short <= 4 * 195 * 2 * 1 * 2 + 1024  # the history (energy and its terms), not 195 iterations
    assert long < 2 * short


def test_bad_arguments():
    with pytest.raises(ValueError, match="areas"):
        extremal_perturbation((0.0,))
    with pytest.raises(ValueError, match="variant"):
        extremal_perturbation(variant="keep")
    with pytest.raises(ValueError, match="reward"):
        extremal_perturbation(reward="log")
    with pytest.raises(ValueError, match="loop"):
        extremal_perturbation(loop="while")
    with pytest.raises(ValueError, match="step"):
        extremal_perturbation(step=0)
    with pytest.raises(ValueError, match=r"\[B, T, H, W, C\]"):
        extremal_perturbation()(lambda x: x, jnp.zeros((2, 3)), None)
