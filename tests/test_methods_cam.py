"""Grad-CAM (global and per-frame), guided Grad-CAM, saliency tubes and the upsampling they use."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from _nets import init
from jaxvx import methods
from jaxvx.methods._cam import interpolation_matrix, upsample
from jaxvx.models import CNNLSTM, GlobalAvgPool, MaxPool3D, ReLU


class GapNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = ReLU(name="relu1")(nn.Conv(4, (3, 3, 3), padding=((1, 1),) * 3, name="conv1")(x))
        x = MaxPool3D((1, 2, 2), name="pool1")(x)
        x = ReLU(name="relu2")(nn.Conv(5, (3, 3, 3), padding=((1, 1),) * 3, name="conv2")(x))
        x = MaxPool3D((2, 2, 2), name="pool2")(x)
        return nn.Dense(3, name="fc")(GlobalAvgPool(name="gap")(x))


X = np.random.default_rng(1).normal(size=(2, 4, 8, 8, 2)).astype(np.float32)
TARGET = np.asarray([2, 0])


@pytest.fixture(scope="module")
def net():
    model = GapNet()
    variables = init(model, jnp.asarray(X))
    forward = functools.partial(model.apply, variables)
    _, inter = model.apply(variables, jnp.asarray(X), capture_intermediates=True, mutable=["intermediates"])
    a = inter["intermediates"]["conv2"]["__call__"][0]  # [2, 4, 4, 4, 5] before its ReLU
    p = variables["params"]["fc"]

    def head(a):  # the rest of the network, written out: relu, 2x2x2 max pool, mean, dense
        h = nn.max_pool(jax.nn.relu(a), (2, 2, 2), (2, 2, 2))
        return h.mean(axis=(1, 2, 3)) @ p["kernel"] + p["bias"]

    g = jax.grad(lambda a: head(a)[np.arange(2), TARGET].sum())(a)
    return forward, np.asarray(a, np.float64), np.asarray(g, np.float64), variables


def _torch_linear_1d(v, n_out, axis):
    """PyTorch's linear interpolation (align_corners=False) along ``axis``, element by element."""
    n_in = v.shape[axis]
    v = np.moveaxis(v, axis, -1)
    out = np.zeros(v.shape[:-1] + (n_out,))
    for o in range(n_out):
        src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        out[..., o] = (1 - lam) * v[..., i0] + lam * v[..., i1]
    return np.moveaxis(out, -1, axis)


def _trilinear(m, size):
    for axis, n in zip((1, 2, 3), size):
        m = _torch_linear_1d(m, n, axis)
    return m


def _nearest(m, size):
    for axis, n in zip((1, 2, 3), size):
        idx = np.minimum(np.floor(np.arange(n) * m.shape[axis] / n).astype(int), m.shape[axis] - 1)
        m = np.take(m, idx, axis=axis)
    return m


def test_gradcam_global_and_per_frame(net):
    forward, a, g, _ = net
    x, t = jnp.asarray(X), jnp.asarray(TARGET)
    cam = np.einsum("bthwk,bk->bthw", a, g.mean(axis=(1, 2, 3)))
    got = np.asarray(methods.gradcam("conv2", relu=False)(forward, x, t))
    assert got.shape == (*X.shape[:4], 1)
    np.testing.assert_allclose(got[..., 0], _trilinear(cam, X.shape[1:4]), rtol=1e-4, atol=1e-6)
    got = np.asarray(methods.gradcam("conv2")(forward, x, t))
    np.testing.assert_allclose(got[..., 0], _trilinear(np.maximum(cam, 0), X.shape[1:4]), rtol=1e-4, atol=1e-6)
    cam_t = np.einsum("bthwk,btk->bthw", a, g.mean(axis=(2, 3)))
    got = np.asarray(methods.gradcam("conv2", pooling="per_frame", interpolation="nearest")(forward, x, t))
    np.testing.assert_allclose(got[..., 0], _nearest(np.maximum(cam_t, 0), X.shape[1:4]), rtol=1e-4, atol=1e-6)
    assert not np.allclose(cam_t, cam[:, :, :, :])  # per-frame weights differ from the global ones here


def test_guided_gradcam(net):
    forward, a, g, _ = net
    x, t = jnp.asarray(X), jnp.asarray(TARGET)
    cam = np.maximum(np.einsum("bthwk,bk->bthw", a, g.mean(axis=(1, 2, 3))), 0)
    gb = np.asarray(methods.guided_backprop()(forward, x, t))
    got = np.asarray(methods.guided_gradcam("conv2")(forward, x, t))
    np.testing.assert_allclose(got, gb * _nearest(cam, X.shape[1:4])[..., None], rtol=1e-4, atol=1e-7)


def test_saliency_tubes(net):
    forward, a, _, variables = net
    kernel = np.asarray(variables["params"]["fc"]["kernel"], np.float64)
    x, t = jnp.asarray(X), jnp.asarray(TARGET)
    got = np.asarray(methods.saliency_tubes("relu2", "fc")(forward, x, t))
    for b in range(2):
        cam = np.einsum("thwk,k->thw", np.maximum(a[b], 0), kernel[:, TARGET[b]])
        up = ndimage.zoom(cam, np.asarray(X.shape[1:4]) / np.asarray(cam.shape), order=3)
        want = (up - up.min()) / (up.max() - up.min())
        np.testing.assert_allclose(got[b, ..., 0], want, rtol=1e-4, atol=1e-5)
    assert got.min() == 0 and got.max() == pytest.approx(1)
    with pytest.raises(ValueError, match="head"):
        methods.saliency_tubes("relu1", "fc")(forward, x, t)  # fc does not read relu1's 4 channels


@pytest.mark.parametrize("n_in, n_out", [(2, 16), (3, 7), (7, 112), (5, 5), (1, 4)])
def test_interpolation_matrices(n_in, n_out):
    v = np.random.default_rng(n_in * n_out).normal(size=(1, n_in, 1, 1))
    got = interpolation_matrix(n_in, n_out, "linear") @ v[0, :, 0, 0]
    np.testing.assert_allclose(got, _torch_linear_1d(v, n_out, 1)[0, :, 0, 0], rtol=1e-12)
    got = interpolation_matrix(n_in, n_out, "nearest") @ v[0, :, 0, 0]
    np.testing.assert_allclose(got, _nearest(v, (n_out, 1, 1))[0, :, 0, 0], rtol=1e-12)


def test_spline_upsampling_is_scipy_zoom():
    """Per-axis spline matrices reproduce SciPy's 3D ``zoom(order=3)`` (it is separable)."""
    m = np.random.default_rng(2).normal(size=(2, 2, 7, 5))
    got = np.asarray(upsample(jnp.asarray(m, jnp.float32), (16, 112, 40), "spline"))
    for b in range(2):
        want = ndimage.zoom(m[b], (8, 16, 8), order=3)
        np.testing.assert_allclose(got[b], want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_gradcam_on_per_frame_2d_layer_of_cnn_lstm():
    """A CNN-LSTM's per-frame conv sees [B*T, h, w, K]; its map is regrouped per clip and frame."""
    model = CNNLSTM(num_classes=3, backbone="small", hidden=4, width=0.25)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 2, 8, 8, 3)), jnp.float32)
    forward = functools.partial(model.apply, init(model, x))
    got = np.asarray(methods.gradcam("conv3", pooling="per_frame")(forward, x, jnp.asarray([0, 1])))
    assert got.shape == (*x.shape[:4], 1) and np.isfinite(got).all() and got.min() >= 0
    assert np.abs(got).max() > 0


def test_layer_errors(net):
    forward = net[0]
    with pytest.raises(ValueError, match=r"conv9.*its scopes are: conv1, relu1, pool1, conv2"):
        methods.gradcam("conv9")(forward, jnp.asarray(X), None)
    with pytest.raises(ValueError, match="pooling"):
        methods.gradcam("conv2", pooling="temporal")
    with pytest.raises(ValueError, match="conv2.*none: forward's operations carry no names"):
        methods.gradcam("conv2")(lambda v: v.reshape(v.shape[0], -1)[:, :3], jnp.asarray(X), None)
