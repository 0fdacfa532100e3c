"""Gradient family: sensitivity, gradient x input, integrated gradients, SmoothGrad, guided backprop, deconvnet."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _nets import MLP, init
from jaxvx import methods
from jaxvx.methods._common import points_per_pass
from jaxvx.methods._gradient import ig_alphas
from jaxvx.models import Flatten, MaxPool3D, ReLU


class Tiny3D(nn.Module):
    """conv-relu-maxpool twice (the second pool padded like C3D's pool5), flatten, dense."""

    bias: bool = True

    @nn.compact
    def __call__(self, x):
        x = ReLU(name="relu1")(nn.Conv(4, (3, 3, 3), padding=((1, 1),) * 3, use_bias=self.bias, name="conv1")(x))
        x = MaxPool3D((1, 2, 2), name="pool1")(x)
        x = ReLU(name="relu2")(nn.Conv(4, (3, 3, 3), padding=((1, 1),) * 3, use_bias=self.bias, name="conv2")(x))
        x = MaxPool3D((2, 2, 2), padding=((0, 0), (1, 1), (1, 1)), name="pool2")(x)
        return nn.Dense(4, use_bias=self.bias, name="fc")(Flatten(channels_first=True, name="flatten")(x))


class Quad(nn.Module):
    """f_c(x) = sum_i a[i, c] x_i^2 (smooth, so integrated gradients have closed forms)."""

    classes: int = 3

    @nn.compact
    def __call__(self, x):
        a = self.param("a", nn.initializers.normal(1.0), (int(np.prod(x.shape[1:])), self.classes))
        return (x * x).reshape(x.shape[0], -1) @ a


X3D = np.random.default_rng(1).normal(size=(2, 4, 6, 6, 2)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
    model = Tiny3D()
    x = jnp.asarray(X3D)
    return model, init(model, x), x


def _plain_grad(model, variables, x, target):
    return jax.grad(lambda v: jnp.sum(model.apply(variables, v)[jnp.arange(v.shape[0]), target]))(x)


def test_gradient_matches_plain_autodiff(tiny):
    """The methods' max-pool backward (a fast argmax routing) equals XLA's own max-pool gradient."""
    model, variables, x = tiny
    forward = functools.partial(model.apply, variables)
    target = jnp.asarray([1, 3])
    want = np.asarray(_plain_grad(model, variables, x, target))
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(np.asarray(methods.gradient()(forward, x, target)), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(methods.gradient(squared=True)(forward, x, target)), want ** 2,
                               rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(np.asarray(methods.gradient_x_input()(forward, x, target)), X3D * want,
                               rtol=1e-5, atol=1e-7)


def test_gradient_jit_vmap_and_predicted_target(tiny):
    """Under jit (forward static) and vmap the methods give the eager result; target None is the argmax."""
    model, variables, x = tiny
    forward = functools.partial(model.apply, variables)
    pred = np.argmax(np.asarray(jax.jit(forward)(x)), -1)
    method = methods.gradient(absolute=True)
    jitted = np.asarray(jax.jit(method, static_argnums=0)(forward, x, None))
    want = np.abs(np.asarray(_plain_grad(model, variables, x, jnp.asarray(pred))))
    np.testing.assert_allclose(jitted, want, rtol=1e-5, atol=1e-7)
    method = methods.guided_backprop()
    eager = np.asarray(method(forward, x, jnp.asarray([0, 2])))
    vm = np.asarray(jax.vmap(lambda v, t: method(forward, v[None], t[None])[0])(x, jnp.asarray([0, 2])))
    np.testing.assert_allclose(vm, eager, rtol=1e-5, atol=1e-7)


def _mlp_numpy(params, x, target, relu_backward):
    p = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in params["params"].items()}
    a0 = x.reshape(x.shape[0], -1).astype(np.float64)
    h1 = a0 @ p["fc1"]["kernel"] + p["fc1"]["bias"]
    a1 = np.maximum(h1, 0)
    h2 = a1 @ p["fc2"]["kernel"] + p["fc2"]["bias"]
    g = np.eye(4)[target] @ p["fc3"]["kernel"].T
    g = relu_backward(h2, g) @ p["fc2"]["kernel"].T
    g = relu_backward(h1, g) @ p["fc1"]["kernel"].T
    return g.reshape(x.shape)


def test_guided_backprop_and_deconvnet_match_numpy():
    model = MLP()
    x = np.random.default_rng(3).normal(size=(3, 2, 3, 3, 2)).astype(np.float32)
    params = init(model, jnp.asarray(x), seed=4)
    forward = functools.partial(model.apply, params)
    target = np.asarray([0, 1, 3])
    gb = np.asarray(methods.guided_backprop()(forward, jnp.asarray(x), jnp.asarray(target)))
    want = _mlp_numpy(params, x, target, lambda h, g: g * (h > 0) * (g > 0))
    np.testing.assert_allclose(gb, want, rtol=1e-5, atol=1e-6)
    dc = np.asarray(methods.deconvnet()(forward, jnp.asarray(x), jnp.asarray(target)))
    want = _mlp_numpy(params, x, target, lambda h, g: np.maximum(g, 0))
    np.testing.assert_allclose(dc, want, rtol=1e-5, atol=1e-6)
    plain = _mlp_numpy(params, x, target, lambda h, g: g * (h > 0))
    assert not np.allclose(gb, plain) and not np.allclose(dc, plain)


@pytest.fixture(scope="module")
def quad():
    model = Quad()
    x = np.random.default_rng(5).normal(size=(2, 2, 3, 3, 1)).astype(np.float32)
    params = init(model, jnp.asarray(x))
    a = np.asarray(params["params"]["a"], np.float64)
    return functools.partial(model.apply, params), x, a


def test_integrated_gradients_closed_forms(quad):
    """For f_c = sum a_ic x_i^2 and baseline b: IG = (x^2 - b^2) a_c exactly with Gauss-Legendre (exact for
    polynomials) and with the midpoint rule (exact for the linear integrand); the left Riemann sum gives
    b-terms plus (n-1)/n of the x-terms: IG = (x - b) a_c (2b + (x - b)(n - 1)/n)."""
    forward, x, a = quad
    target = np.asarray([2, 0])
    ac = a[:, target].T.reshape(x.shape)
    for steps, method, batch in ((3, "gausslegendre", None), (50, "gausslegendre", 7)):
        ig = methods.integrated_gradients(steps=steps, method=method, batch_size=batch)
        got = np.asarray(ig(forward, jnp.asarray(x), jnp.asarray(target)))
        np.testing.assert_allclose(got, x.astype(np.float64) ** 2 * ac, rtol=1e-4, atol=1e-6)
    b = 0.5
    ig = methods.integrated_gradients(steps=4, method="riemann_middle", baseline=b)
    got = np.asarray(ig(forward, jnp.asarray(x), jnp.asarray(target)))
    np.testing.assert_allclose(got, (x.astype(np.float64) ** 2 - b * b) * ac, rtol=1e-4, atol=1e-6)
    n = 8
    ig = methods.integrated_gradients(steps=n, method="riemann_left", baseline=b, batch_size=3)
    got = np.asarray(ig(forward, jnp.asarray(x), jnp.asarray(target)))
    d = x.astype(np.float64) - b
    np.testing.assert_allclose(got, d * ac * (2 * b + d * (n - 1) / n), rtol=1e-4, atol=1e-6)


def test_integrated_gradients_on_homogeneous_net():
    """A bias-free ReLU/max-pool net is positively homogeneous: along the ray from 0 its gradient is constant,
    so IG with a zero baseline is exactly gradient x input."""
    model = Tiny3D(bias=False)
    x = jnp.asarray(X3D)
    forward = functools.partial(model.apply, init(model, x, zero_bias=True))
    target = jnp.asarray([0, 1])
    ig = np.asarray(methods.integrated_gradients(steps=6, batch_size=3)(forward, x, target))
    gxi = np.asarray(methods.gradient_x_input()(forward, x, target))
    np.testing.assert_allclose(ig, gxi, rtol=1e-4, atol=1e-6 * np.abs(gxi).max())


def test_ig_alphas_weights():
    a, w = ig_alphas(50)
    assert np.all((a > 0) & (a < 1)) and abs(w.sum() - 1) < 1e-12
    a, w = ig_alphas(4, "riemann_trapezoid")
    np.testing.assert_allclose(a, [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(w, [1 / 8, 1 / 4, 1 / 4, 1 / 8])  # captum's: 1/n with the ends halved
    with pytest.raises(ValueError, match="method"):
        ig_alphas(4, "simpson")


class Linear(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def test_smoothgrad():
    x = np.random.default_rng(6).normal(size=(2, 2, 3, 3, 1)).astype(np.float32)
    key = jax.random.PRNGKey(0)
    # a linear model has a constant gradient: SmoothGrad changes nothing
    model = Linear()
    forward = functools.partial(model.apply, init(model, jnp.asarray(x)))
    sg = methods.smoothgrad(methods.gradient(), n=5, noise=0.3, batch_size=2)  # 3 chunks in a lax.map
    np.testing.assert_allclose(np.asarray(sg(forward, jnp.asarray(x), jnp.asarray([0, 2]), key=key)),
                               np.asarray(methods.gradient()(forward, jnp.asarray(x), jnp.asarray([0, 2]))),
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="key"):
        sg(forward, jnp.asarray(x), None)
    # f = sum x^2: squared gradient 4 (x + e)^2 averages to 4 (x^2 + sigma^2), sigma = noise * (max - min).
    # The estimate of sigma^2 below averages 120 copies x 256 elements: its standard deviation is about 1.1 % of
    # sigma^2 for both clips (the element x = 2 or 10 dominates: Var(2 x e + e^2) = 4 x^2 sigma^2 + 2 sigma^4), so
    # rtol 0.05 is more than 4 standard deviations.
    q = Quad(classes=1)
    xq = np.zeros((2, 4, 8, 8, 1), np.float32)
    xq[0, 0, 0, 0] = 2.0  # range 2 -> sigma 0.2
    xq[1, 0, 0, 0] = 10.0  # range 10 -> sigma 1.0
    forward = functools.partial(q.apply, {"params": {"a": jnp.ones((256, 1))}})
    sg = methods.smoothgrad(methods.gradient(squared=True), n=120, noise=0.1)
    r = np.asarray(sg(forward, jnp.asarray(xq), jnp.asarray([0, 0]), key=key), np.float64)
    sigma2 = (r / 4 - xq.astype(np.float64) ** 2).reshape(2, -1).mean(1)
    np.testing.assert_allclose(sigma2, [0.04, 1.0], rtol=0.05)


def test_batch_size_changes_nothing_but_the_passes():
    """IG's path points and SmoothGrad's noisy copies give the same result however many go into one pass (the
    noise of copy i comes from its own key), and "auto" takes one per pass on CPU, all of them elsewhere."""
    model = Tiny3D()
    x = jnp.asarray(X3D)
    forward = functools.partial(model.apply, init(model, x))
    target = jnp.asarray([0, 1])
    key = jax.random.PRNGKey(7)
    sg = {bs: np.asarray(methods.smoothgrad(n=5, noise=0.2, batch_size=bs)(forward, x, target, key=key))
          for bs in (None, 2, "auto")}
    ig = {bs: np.asarray(methods.integrated_gradients(steps=6, batch_size=bs)(forward, x, target))
          for bs in (None, 4, "auto")}
    for maps in (sg, ig):
        ref = maps[None]
        assert np.abs(ref).max() > 0
        for got in maps.values():
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    # another key draws other noise
    other = np.asarray(methods.smoothgrad(n=5, noise=0.2)(forward, x, target, key=jax.random.PRNGKey(8)))
    assert np.abs(other - sg[None]).max() > 1e-3 * np.abs(sg[None]).max()
    assert points_per_pass(None, 8) == 8 and points_per_pass(3, 8) == 3 and points_per_pass(20, 8) == 8
    assert points_per_pass("auto", 8) == (1 if jax.default_backend() == "cpu" else 8)
    for bad in (0, 2.5, "all", True):
        with pytest.raises(ValueError, match="batch_size"):
            methods.integrated_gradients(batch_size=bad)
        with pytest.raises(ValueError, match="batch_size"):
            methods.smoothgrad(batch_size=bad)


def test_errors():
    with pytest.raises(ValueError, match="squared, absolute"):
        methods.gradient(squared=True, absolute=True)
    with pytest.raises(ValueError, match="steps"):
        methods.integrated_gradients(steps=0)
    model = Linear()
    x = jnp.zeros((1, 2, 3, 3, 1))
    forward = functools.partial(model.apply, init(model, x))
    with pytest.raises(ValueError, match="ReLU"):
        methods.guided_backprop()(forward, x)
    with pytest.raises(ValueError, match=r"\[B, T, H, W, C\]"):
        methods.gradient()(forward, jnp.zeros((2, 3, 3, 1)))
