"""Excitation backprop (z+ winning probabilities) and contrastive excitation backprop for CNN-LSTMs."""

import functools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from _nets import init, MLP
from jaxvx import methods
from jaxvx.models import CNNLSTM, GlobalAvgPool, MaxPool3D, ReLU


def _stab(z):
    return z + np.where(z >= 0, 1e-6, -1e-6)


def test_excitation_backprop_matches_numpy():
    """Winning probabilities P_i = a_i sum_j w+_ij P_j / sum_i' a_i' w+_i'j (biases ignored) from a one-hot top;
    signed inputs of the first layer are split into x+ (with W+) and x- (with W-), as the z+ rule does."""
    model = MLP()
    x = np.random.default_rng(3).normal(size=(3, 2, 3, 3, 2)).astype(np.float32)
    v = init(model, jnp.asarray(x), seed=4)
    p = {k: {n: np.asarray(a, np.float64) for n, a in d.items()} for k, d in v["params"].items()}
    target = np.asarray([0, 1, 3])
    got = np.asarray(methods.excitation_backprop()(functools.partial(model.apply, v), jnp.asarray(x),
                                                   jnp.asarray(target)))
    a0 = x.reshape(3, -1).astype(np.float64)
    a1 = np.maximum(a0 @ p["fc1"]["kernel"] + p["fc1"]["bias"], 0)
    a2 = np.maximum(a1 @ p["fc2"]["kernel"] + p["fc2"]["bias"], 0)
    w1, w2, w3 = (np.maximum(p[k]["kernel"], 0) for k in ("fc1", "fc2", "fc3"))
    r = np.eye(4)[target]
    r = a2 * ((r / _stab(a2 @ w3)) @ w3.T)
    r = a1 * ((r / _stab(a1 @ w2)) @ w2.T)
    w1n = np.minimum(p["fc1"]["kernel"], 0)
    xp, xn = np.maximum(a0, 0), np.minimum(a0, 0)
    s = r / _stab(xp @ w1 + xn @ w1n)
    want = xp * (s @ w1.T) + xn * (s @ w1n.T)
    np.testing.assert_allclose(got.reshape(3, -1), want, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got.reshape(3, -1).sum(1), 1.0, rtol=1e-4)


class GapNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = ReLU(name="relu1")(nn.Conv(4, (3, 3, 3), padding=((1, 1),) * 3, name="conv1")(x))
        x = MaxPool3D((1, 2, 2), name="pool1")(x)
        x = ReLU(name="relu2")(nn.Conv(5, (3, 3, 3), padding=((1, 1),) * 3, name="conv2")(x))
        return nn.Dense(3, name="fc")(GlobalAvgPool(name="gap")(x))


def test_excitation_backprop_at_a_layer_sums_to_one():
    model = GapNet()
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 8, 8, 2)), jnp.float32)
    forward = functools.partial(model.apply, init(model, x))
    got = np.asarray(methods.excitation_backprop("conv2", interpolation="nearest")(forward, x, jnp.asarray([0, 2])))
    assert got.shape == (*x.shape[:4], 1) and got.min() >= 0  # one value per position
    # conv2's map is 4 x 4 x 4, upsampled x1 x2 x2: 4 copies of each value
    np.testing.assert_allclose(got.reshape(2, -1).sum(1) / 4, 1.0, rtol=1e-4)


@pytest.fixture(scope="module")
def cnn_lstm():
    model = CNNLSTM(num_classes=3, backbone="small", hidden=8, width=0.25)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 16, 16, 3)), jnp.float32)
    return model, init(model, x, seed=5), x


@pytest.mark.slow
def test_contrastive_excitation_backprop(cnn_lstm):
    """D = P+/sum P+ - P-/sum P- sums to 0 per clip and EB conserves it down to the last conv (conv3): the map
    sums to ~0. Negating the classifier's weights swaps P+ and P- (the CNN and the LSTM's gradient are unchanged):
    the map changes sign."""
    model, v, x = cnn_lstm
    method = methods.contrastive_excitation_backprop(interpolation="nearest")
    target = jnp.asarray([0, 2])
    got = np.asarray(method(functools.partial(model.apply, v), x, target))
    assert got.shape == (*x.shape[:4], 1) and np.isfinite(got).all()
    copies = 16  # conv3 is 4 x 4 per frame: x4 x4 upsampling
    sums = got.reshape(2, -1).sum(1) / copies
    scale = np.abs(got).reshape(2, -1).sum(1) / copies
    assert np.all(scale > 0) and got.min() < 0 < got.max()
    np.testing.assert_allclose(sums, 0.0, atol=1e-4 * scale.max())
    params = dict(v["params"])
    params["classifier"] = {"kernel": -params["classifier"]["kernel"], "bias": params["classifier"]["bias"]}
    flipped = np.asarray(method(functools.partial(model.apply, {"params": params}), x, target))
    np.testing.assert_allclose(flipped, -got, rtol=1e-4, atol=1e-5 * np.abs(got).max())


def test_contrastive_errors(cnn_lstm):
    model, v, x = cnn_lstm
    with pytest.raises(ValueError, match="features"):
        methods.contrastive_excitation_backprop(features="backbone")(functools.partial(model.apply, v), x, None)
