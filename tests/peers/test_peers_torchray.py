"""jaxvx's extremal perturbation against TorchRay itself, on identical weights, input and settings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvx.methods import details, extremal_perturbation
from jaxvx.methods._area import area_template
from jaxvx.methods._mask_generator import MaskGenerator
from jaxvx.methods._pyramid import apply_pyramid, perturbation_pyramid


@pytest.fixture(scope="module")
def torchray_ep(torch):
    from torchray.attribution import extremal_perturbation as ep

    return ep


def _twins(torch, size):
    """A small 2D CNN in torch and the same network written in JAX (NHWC), plus an image with one textured patch.

    The logits respond strongly to the patch (max pooling, scaled classifier), so that the optimum is well defined:
    where a model has no preference, the masks are shaped by how the area loss breaks ties between equal mask values
    (TorchRay sorts with torch's unstable sort), which no port can reproduce value for value.
    """
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 5, padding=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    with torch.no_grad():
        net[-1].weight.mul_(10)
    w = [p.detach().numpy() for p in net.parameters()]
    dn = ("NHWC", "HWIO", "NHWC")

    def forward(x):
        y = jax.lax.conv_general_dilated(x, jnp.transpose(w[0], (2, 3, 1, 0)), (1, 1), ((2, 2), (2, 2)),
                                         dimension_numbers=dn) + w[1]
        y = jax.lax.conv_general_dilated(jax.nn.relu(y), jnp.transpose(w[2], (2, 3, 1, 0)), (1, 1),
                                         ((1, 1), (1, 1)), dimension_numbers=dn) + w[3]
        return jax.nn.relu(y).max(axis=(1, 2)) @ w[4].T + w[5]

    rng = np.random.RandomState(0)
    image = 0.05 * rng.randn(1, 3, size, size).astype(np.float32)
    r0, c0 = size // 4, size // 3
    image[:, :, r0:r0 + 10, c0:c0 + 10] += 2 * rng.randn(3, 10, 10).astype(np.float32)
    return net, forward, image


def test_pieces_match_torchray(torch, torchray_ep):
    rng = np.random.RandomState(1)
    image = rng.randn(1, 3, 40, 36).astype(np.float32)
    for kind in ("blur", "fade"):
        theirs = torchray_ep.Perturbation(torch.tensor(image[:1]), num_levels=8, type=kind)
        ours = jax.jit(perturbation_pyramid, static_argnums=(1, 2))(jnp.asarray(image[:1].transpose(0, 2, 3, 1)), 8, kind)[:, 0]
        np.testing.assert_allclose(np.asarray(ours), theirs.pyramid.numpy().transpose(0, 2, 3, 1), atol=2e-6)
        mask = rng.rand(3, 1, 40, 36).astype(np.float32)
        mask[0, 0, :4] = 1.0  # the top level exactly
        mask[1, 0, :4] = 0.0
        np.testing.assert_allclose(
            np.asarray(jax.jit(apply_pyramid)(ours, jnp.asarray(mask[:, 0]))),
            theirs.apply(torch.tensor(mask)).numpy().transpose(0, 2, 3, 1), atol=2e-6)
    for shape, step, sigma in [((48, 40), 7, 21), ((30, 41), 4, 8.5)]:
        theirs = torchray_ep.MaskGenerator(shape, step, sigma)
        ours = MaskGenerator(shape, step, sigma)
        assert ours.shape_in == tuple(theirs.shape_in) and ours.shape_out == tuple(theirs.shape_out)
        params = rng.rand(3, 1, *theirs.shape_in).astype(np.float32)
        params[0] = 1.0
        params[1, 0, :2] = 0.0
        cropped, full = theirs.generate(torch.tensor(params))
        ours_cropped, ours_full = jax.jit(ours.generate)(jnp.asarray(params[:, 0]))
        np.testing.assert_allclose(np.asarray(ours_cropped), cropped.numpy()[:, 0], atol=1e-5)
        np.testing.assert_allclose(np.asarray(ours_full), full.numpy()[:, 0], atol=1e-5)


@pytest.mark.slow
def test_extremal_perturbation_matches_torchray(torch, torchray_ep):
    size, areas, iters = 32, [0.05, 0.1, 0.2], 100
    net, forward, image = _twins(torch, size)
    x = jnp.asarray(image.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(np.asarray(forward(x)), net(torch.tensor(image)).detach().numpy(), atol=1e-4)
    target = int(net(torch.tensor(image)).argmax())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # faster than 2 for this tiny network
    try:
        theirs, hist = torchray_ep.extremal_perturbation(net, torch.tensor(image), target, areas=areas,
                                                         max_iter=iters, step=4, sigma=8)
    finally:
        torch.set_num_threads(threads)
    ours = details(extremal_perturbation(areas, max_iter=iters, step=4, sigma=8))(forward, x, jnp.array([target]))[1]
    assert ours.masks.shape == (1, 3, size, size)
    assert ours.energy.shape == (1, 3, iters)
    theirs = theirs.numpy()[:, 0]
    hist = hist.numpy()
    for i, area in enumerate(areas):
        corr = np.corrcoef(np.asarray(ours.masks[0, i]).ravel(), theirs[i].ravel())[0, 1]
        assert corr > 0.95, (area, corr)
        energy = hist[i, 0, -1] + hist[i, 1, -1]
        assert float(ours.energy[0, i, -1]) == pytest.approx(energy, rel=0.01), area
        # the first iteration agrees closely (later ones drift apart a little where ties break differently)
        np.testing.assert_allclose(np.asarray(ours.energy[0, i, :1]), hist[i, 0, :1] + hist[i, 1, :1], rtol=1e-5)
    # the template of the area loss: TorchRay's int(N (1 - a)) zeros
    n = 45 * 45
    np.testing.assert_array_equal(area_template(n, areas).sum(1), [n - int(n * (1 - a)) for a in areas])
