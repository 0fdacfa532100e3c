"""jaxvx's gradient, integrated gradients, guided backprop, Grad-CAM and guided Grad-CAM against captum's, on a
small C3D twin with identical weights (the twin of ``test_peers_zennit``). Maximum relative error under 1e-4."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvx import methods

from test_peers_zennit import rel_err, twin  # noqa: E402  (tests/peers is on sys.path under pytest)


@pytest.fixture(scope="module")
def setup(torch):
    return twin(torch, seed=1)


def _ndhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 4, 1)


def _jit(method):
    return jax.jit(method, static_argnums=0)


def test_gradient_and_integrated_gradients(torch, setup):
    from captum.attr import IntegratedGradients, Saliency

    model, forward, xt, x, targets = setup
    t = torch.as_tensor(targets)
    want = _ndhwc(Saliency(model).attribute(xt.clone().requires_grad_(True), target=t, abs=False))
    got = np.asarray(_jit(methods.gradient())(forward, x, jnp.asarray(targets)))
    assert rel_err(got, want) < 1e-4, rel_err(got, want)
    want = _ndhwc(IntegratedGradients(model).attribute(xt, baselines=0.0, target=t, n_steps=50,
                                                       method="gausslegendre"))
    got = np.asarray(_jit(methods.integrated_gradients())(forward, x, jnp.asarray(targets)))
    assert rel_err(got, want) < 1e-4, rel_err(got, want)


def test_guided_backprop(torch, setup):
    from captum.attr import GuidedBackprop

    model, forward, xt, x, targets = setup
    want = _ndhwc(GuidedBackprop(model).attribute(xt.clone().requires_grad_(True), target=torch.as_tensor(targets)))
    got = np.asarray(_jit(methods.guided_backprop())(forward, x, jnp.asarray(targets)))
    assert rel_err(got, want) < 1e-4, rel_err(got, want)


def test_gradcam_and_guided_gradcam(torch, setup):
    from captum.attr import GuidedGradCam, LayerAttribution, LayerGradCam

    model, forward, xt, x, targets = setup
    t = torch.as_tensor(targets)
    cam = LayerGradCam(model, model.conv5b).attribute(xt, target=t, relu_attributions=True)
    assert cam.shape[2:] == (2, 2, 2)
    want = _ndhwc(LayerAttribution.interpolate(cam, tuple(xt.shape[2:]), interpolate_mode="trilinear"))[..., 0]
    got = np.asarray(_jit(methods.gradcam("conv5b"))(forward, x, jnp.asarray(targets)))
    assert np.abs(want).max() > 0
    assert rel_err(got[..., 0], want) < 1e-4, rel_err(got[..., 0], want)
    want = _ndhwc(GuidedGradCam(model, model.conv5b).attribute(xt.clone().requires_grad_(True), target=t))
    got = np.asarray(_jit(methods.guided_gradcam("conv5b"))(forward, x, jnp.asarray(targets)))
    assert np.abs(want).max() > 0
    assert rel_err(got, want) < 1e-4, rel_err(got, want)
