"""Each LRP rule against an independent dense-matrix reference in float64 (as zennit tests its rules).

A layer is written as a dense matrix ``W`` ``[n_in, n_out]`` built here by explicit index arithmetic (for a
convolution: every kernel tap placed at its input/output positions), with the bias repeated per position. The
reference relevance is then the rule's formula in NumPy float64; jaxvx's custom-VJP engine runs the same layer
(a Flax module inside a one-layer model) and must agree to ~1e-10.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvx import _max_pool, lrp
from jaxvx._max_pool import wta_backward
from jaxvx.models import AvgPool3D, MaxPool3D, ReLU, Sum

RNG = np.random.default_rng(0)


class One(nn.Module):
    """A model of exactly one layer (``make`` builds it), named ``layer``."""

    make: object

    @nn.compact
    def __call__(self, *xs):
        return self.make(name="layer")(*xs)


class ReluThen(nn.Module):
    """``layer(relu(x))``: the layer's input is non-negative by construction (the engine then skips the
    negative-input terms at trace time)."""

    make: object

    @nn.compact
    def __call__(self, x):
        return self.make(name="layer")(ReLU(name="relu")(x))


def _pos(x):
    return np.maximum(x, 0)


def _neg(x):
    return np.minimum(x, 0)


def _stab(z, eps):
    return z + np.where(z >= 0, eps, -eps)


# ------------------------------------------------------------------------------------------ dense references
def conv_matrix(kernel, in_spatial, strides, pads):
    """Dense matrix ``[prod(in_spatial) * Ci, prod(out_spatial) * Co]`` of a channels-last N-D convolution."""
    kernel = np.asarray(kernel, np.float64)
    ks = kernel.shape[:-2]
    ci, co = kernel.shape[-2:]
    out_spatial = tuple((n + lo + hi - k) // s + 1 for n, k, s, (lo, hi) in zip(in_spatial, ks, strides, pads))
    m = np.zeros(tuple(in_spatial) + (ci,) + out_spatial + (co,))
    for out_pos in np.ndindex(*out_spatial):
        for tap in np.ndindex(*ks):
            src = tuple(o * s + t - lo for o, s, t, (lo, _) in zip(out_pos, strides, tap, pads))
            if all(0 <= p < n for p, n in zip(src, in_spatial)):
                m[src + (slice(None),) + out_pos + (slice(None),)] += kernel[tap]
    return m.reshape(int(np.prod(in_spatial)) * ci, -1), out_spatial


def window_matrix(in_spatial, c, window, strides, pads, value):
    """Dense matrix of a pooling that sums ``value`` times each window's inputs (padded taps count as 0)."""
    kernel = np.zeros(tuple(window) + (c, c))
    for i in range(c):
        kernel[..., i, i] = value
    return conv_matrix(kernel, in_spatial, strides, pads)


LAYERS = {
    # name: (module factory given bias flag, input shape without batch, matrix builder)
    "dense": dict(shape=(7,), make=lambda bias: functools.partial(nn.Dense, 5, use_bias=bias)),
    "conv3d_k2_s2": dict(shape=(4, 4, 6, 2), make=lambda bias: functools.partial(
        nn.Conv, 3, (2, 2, 2), strides=(2, 2, 2), padding="VALID", use_bias=bias), kernel=(2, 2, 2),
        strides=(2, 2, 2), pads=((0, 0),) * 3),
    "conv3d_k3_p1": dict(shape=(3, 4, 4, 3), make=lambda bias: functools.partial(
        nn.Conv, 4, (3, 3, 3), padding=((1, 1),) * 3, use_bias=bias), kernel=(3, 3, 3), strides=(1, 1, 1),
        pads=((1, 1),) * 3),
    "conv2d_k3_p1": dict(shape=(5, 5, 2), make=lambda bias: functools.partial(
        nn.Conv, 3, (3, 3), padding=((1, 1),) * 2, use_bias=bias), kernel=(3, 3), strides=(1, 1),
        pads=((1, 1),) * 2),
}


def build(layer_name, bias, batch=3, nonneg=False):
    """``(model, variables, x, W_full, b_full, out_shape)`` in float64 with random weights and biases.

    ``nonneg=True``: the model applies a ReLU before the layer and ``x`` is returned already rectified (the
    reference then sees the layer's actual input)."""
    spec = LAYERS[layer_name]
    model = (ReluThen if nonneg else One)(spec["make"](bias))
    x = RNG.normal(size=(batch,) + spec["shape"])
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(1), jnp.asarray(x, jnp.float32))
    if nonneg:
        x = _pos(x)
    params = jax.tree.map(lambda a: RNG.normal(size=a.shape), variables["params"])
    variables = {"params": params}
    kernel = params["layer"]["kernel"]
    if layer_name == "dense":
        w_full, out_spatial = kernel, ()
        out_shape = (kernel.shape[1],)
    else:
        w_full, out_spatial = conv_matrix(kernel, spec["shape"][:-1], spec["strides"], spec["pads"])
        out_shape = out_spatial + (kernel.shape[-1],)
    b = params["layer"].get("bias", np.zeros(kernel.shape[-1]))
    b_full = np.broadcast_to(b, out_shape).reshape(-1)
    return model, variables, x, np.asarray(w_full), b_full, out_shape


def engine_relevance(model, variables, x, rule, r_out, *extra):
    """jaxvx's output and input relevances for ``rule`` on the model's single layer, given ``r_out``."""
    comp = lrp.Composite("test", ((lambda m, p: p == "layer", rule),))
    if extra:
        def forward(xs):
            return model.apply(variables, *xs)
        arg = (jnp.asarray(x),) + tuple(jnp.asarray(e) for e in extra)
    else:
        forward = functools.partial(model.apply, variables)
        arg = jnp.asarray(x)
    y, pull = jax.vjp(lrp.attach(forward, comp), arg)
    (ct,) = pull(jnp.asarray(r_out))
    return np.asarray(y), [np.asarray(c) for c in (ct if extra else (ct,))]


def reference(rule_name, x, w, b, r, *, eps=1e-6, gamma=0.25, alpha=2.0, beta=1.0, low=-2.0, high=3.0,
              zero_bias=False):
    """Rule formulas on flattened ``x`` ``[B, n_in]``, ``w`` ``[n_in, n_out]``, ``b`` ``[n_out]``, ``r``
    ``[B, n_out]``."""
    wp, wn = _pos(w), _neg(w)
    bp, bn = _pos(b), _neg(b)
    xp, xn = _pos(x), _neg(x)
    if zero_bias:
        b = bp = bn = np.zeros_like(b)
    if rule_name == "epsilon":
        s = r / _stab(x @ w + b, eps)
        return x * (s @ w.T)
    if rule_name == "zplus":
        s = r / _stab(xp @ wp + xn @ wn + bp, eps)
        return xp * (s @ wp.T) + xn * (s @ wn.T)
    if rule_name == "alpha_beta":
        sa = r / _stab(xp @ wp + xn @ wn + bp, eps)
        sb = r / _stab(xp @ wn + xn @ wp + bn, eps)
        return alpha * (xp * (sa @ wp.T) + xn * (sa @ wn.T)) - beta * (xp * (sb @ wn.T) + xn * (sb @ wp.T))
    if rule_name == "gamma":
        wgp, wgn = w + gamma * wp, w + gamma * wn
        y = x @ w + b
        sp = np.where(y > 0, r / _stab(xp @ wgp + xn @ wgn + b + gamma * bp, eps), 0)
        sn = np.where(y < 0, r / _stab(xp @ wgn + xn @ wgp + b + gamma * bn, eps), 0)
        return xp * (sp @ wgp.T) + xn * (sp @ wgn.T) + xp * (sn @ wgn.T) + xn * (sn @ wgp.T)
    if rule_name == "zbox":
        lo, hi = np.full_like(x, low), np.full_like(x, high)
        s = r / _stab(x @ w - lo @ wp - hi @ wn, eps)
        return x * (s @ w.T) - lo * (s @ wp.T) - hi * (s @ wn.T)
    if rule_name == "flat":
        ones = (w != 0).astype(np.float64)  # the structural taps (random weights are never exactly 0)
        s = r / _stab(np.ones_like(x) @ ones, eps)
        return s @ ones.T
    if rule_name == "wsquare":
        s = r / _stab(np.ones_like(x) @ (w * w) + b * b, eps)
        return s @ (w * w).T
    raise KeyError(rule_name)


RULES = {
    "epsilon": lambda: lrp.epsilon(1e-6),
    "zplus": lambda: lrp.zplus(),
    "alpha_beta": lambda: lrp.alpha_beta(2, 1),
    "gamma": lambda: lrp.gamma(0.25),
    "zbox": lambda: lrp.zbox(-2.0, 3.0),
    "flat": lambda: lrp.flat(),
    "wsquare": lambda: lrp.wsquare(),
}


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# The default run covers a padded 3D conv with bias and a dense layer without; the other shapes are marked slow.
_DEFAULT = {("conv3d_k3_p1", True), ("dense", False)}
LAYER_CASES = [pytest.param(name, bias, id=f"{name}-{'bias' if bias else 'nobias'}",
                            marks=() if (name, bias) in _DEFAULT else pytest.mark.slow)
               for name in sorted(LAYERS) for bias in (True, False)]


@pytest.mark.parametrize("layer_name, bias", LAYER_CASES)
@pytest.mark.parametrize("rule_name", sorted(RULES))
def test_rule_matches_dense_reference(rule_name, layer_name, bias):
    model, variables, x, w, b, out_shape = build(layer_name, bias)
    r_out = RNG.normal(size=(x.shape[0],) + out_shape)
    y, (r_in,) = engine_relevance(model, variables, x, RULES[rule_name](), r_out)
    bsz = x.shape[0]
    np.testing.assert_allclose(y.reshape(bsz, -1), x.reshape(bsz, -1) @ w + b, rtol=1e-10, atol=1e-10)
    want = reference(rule_name, x.reshape(bsz, -1), w, b, r_out.reshape(bsz, -1)).reshape(x.shape)
    assert r_in.dtype == np.float64
    np.testing.assert_allclose(r_in, want, rtol=1e-8, atol=1e-8 * np.abs(want).max())


@pytest.mark.parametrize("rule_name", ["zplus", "alpha_beta", "gamma"])
@pytest.mark.parametrize("layer_name", ["dense", pytest.param("conv3d_k3_p1", marks=pytest.mark.slow)])
def test_rule_on_nonnegative_inputs(rule_name, layer_name):
    """After a ReLU the negative-input terms vanish; the engine leaves them out at trace time and must agree."""
    model, variables, x, w, b, out_shape = build(layer_name, True, nonneg=True)
    r_out = RNG.normal(size=(x.shape[0],) + out_shape)
    _, (r_in,) = engine_relevance(model, variables, x, RULES[rule_name](), r_out)
    bsz = x.shape[0]
    want = reference(rule_name, x.reshape(bsz, -1), w, b, r_out.reshape(bsz, -1)).reshape(x.shape)
    np.testing.assert_allclose(r_in, want, rtol=1e-8, atol=1e-8 * np.abs(want).max())


def test_zplus_zero_bias_and_absorbed_relevance():
    """``zero_params=("bias",)`` drops b+ from z (the layer then conserves relevance); with b+ in z the missing
    relevance is exactly ``sum_j R_j b+_j / stab(z_j)``."""
    model, variables, x, w, b, out_shape = build("conv3d_k3_p1", True, nonneg=True)
    bsz = x.shape[0]
    r_out = np.abs(RNG.normal(size=(bsz,) + out_shape))
    _, (r0,) = engine_relevance(model, variables, x, lrp.zplus(zero_params=("bias",)), r_out)
    xf, rf = x.reshape(bsz, -1), r_out.reshape(bsz, -1)
    want = reference("zplus", xf, w, b, rf, zero_bias=True).reshape(x.shape)
    np.testing.assert_allclose(r0, want, rtol=1e-8, atol=1e-12)
    z0 = _pos(xf) @ _pos(w)
    np.testing.assert_allclose(r0.reshape(bsz, -1).sum(1), (rf * (z0 / _stab(z0, 1e-6))).sum(1), rtol=1e-10)
    _, (r1,) = engine_relevance(model, variables, x, lrp.zplus(), r_out)
    bp = _pos(b)[None]
    absorbed = (rf * (bp + 1e-6) / _stab(z0 + bp, 1e-6)).sum(1)
    np.testing.assert_allclose(rf.sum(1) - r1.reshape(bsz, -1).sum(1), absorbed, rtol=1e-6)


def _zbox_dense(x, w, r_out, low, high):
    """z^B's input relevance ``[B, N]`` with the layer as the dense matrix ``w`` and bounds broadcast to ``x``."""
    bsz = x.shape[0]
    lo = np.broadcast_to(low, x.shape).reshape(bsz, -1)
    hi = np.broadcast_to(high, x.shape).reshape(bsz, -1)
    xf, rf = x.reshape(bsz, -1), r_out.reshape(bsz, -1)
    s = rf / _stab(xf @ w - lo @ _pos(w) - hi @ _neg(w), 1e-6)
    return xf * (s @ w.T) - lo * (s @ _pos(w).T) - hi * (s @ _neg(w).T)


def test_zbox_per_channel_bounds():
    model, variables, x, w, b, out_shape = build("conv3d_k3_p1", True)
    low, high = np.array([-1.0, -2.0, -0.5]), np.array([1.0, 2.5, 0.5])
    bsz = x.shape[0]
    r_out = RNG.normal(size=(bsz,) + out_shape)
    _, (r_in,) = engine_relevance(model, variables, x, lrp.zbox(low, high), r_out)
    np.testing.assert_allclose(r_in.reshape(bsz, -1), _zbox_dense(x, w, r_out, low, high), rtol=1e-8, atol=1e-10)


def test_zbox_per_pixel_bounds_and_term_count():
    # scalar / per-channel bounds run the two bound terms as one layer call; bounds that vary over the input's
    # positions keep three terms; both against the dense reference
    assert len(lrp.zbox(-1.0, 1.0).terms) == 2 and len(lrp.zbox([-1.0, 0.0, -2.0], 1.0).terms) == 2
    model, variables, x, w, b, out_shape = build("conv3d_k3_p1", True)
    bsz = x.shape[0]
    # float32-exact values: the rule keeps its bounds in float32
    low = (-1.0 - RNG.uniform(size=x.shape[1:])).astype(np.float32).astype(np.float64)
    high = (1.0 + RNG.uniform(size=x.shape[1:])).astype(np.float32).astype(np.float64)
    rule = lrp.zbox(low, high)
    assert len(rule.terms) == 3
    r_out = RNG.normal(size=(bsz,) + out_shape)
    _, (r_in,) = engine_relevance(model, variables, x, rule, r_out)
    np.testing.assert_allclose(r_in.reshape(bsz, -1), _zbox_dense(x, w, r_out, low, high), rtol=1e-8, atol=1e-10)
    # per-channel bounds that do not match the kernel's input axis: an error naming both shapes
    with pytest.raises(ValueError, match=r"bounds of shape \(2,\).*kernel shape"):
        engine_relevance(model, variables, x, lrp.zbox([-1.0, -1.0], [1.0, 1.0]), r_out)


def test_norm_on_sum_and_average_pool():
    a, c = RNG.normal(size=(2, 3, 4, 4, 2)), RNG.normal(size=(2, 3, 4, 4, 2))
    r = RNG.normal(size=a.shape)
    _, (ra, rc) = engine_relevance(One(Sum), {"params": {}}, a, lrp.norm(), r, c)
    s = r / _stab(a + c, 1e-6)
    np.testing.assert_allclose(ra, a * s, rtol=1e-10)
    np.testing.assert_allclose(rc, c * s, rtol=1e-10)

    x = RNG.normal(size=(2, 4, 4, 6, 3))
    pool = One(functools.partial(AvgPool3D, (2, 2, 3)))
    out_shape = (2, 2, 2, 3)
    r = RNG.normal(size=(2,) + out_shape)
    _, (rx,) = engine_relevance(pool, {"params": {}}, x, lrp.norm(), r)
    m, _ = window_matrix((4, 4, 6), 3, (2, 2, 3), (2, 2, 3), ((0, 0),) * 3, 1 / 12)
    xf, rf = x.reshape(2, -1), r.reshape(2, -1)
    want = xf * ((rf / _stab(xf @ m, 1e-6)) @ m.T)
    np.testing.assert_allclose(rx.reshape(2, -1), want, rtol=1e-8)


@pytest.mark.parametrize("padding", ["VALID", ((0, 0), (1, 1), (1, 1))])
def test_max_pool_rules(padding):
    """``proportional``: max pooling read as sum pooling (padded taps 0); ``wta``: the ordinary max-pool gradient
    (first maximum), including ties between zeros after a ReLU."""
    x = _pos(RNG.normal(size=(2, 4, 5, 5, 3)))
    pads = ((0, 0),) * 3 if padding == "VALID" else padding
    pool = One(functools.partial(MaxPool3D, (2, 2, 2), (2, 2, 2), padding))
    out_spatial = tuple((n + lo + hi - 2) // 2 + 1 for n, (lo, hi) in zip((4, 5, 5), pads))
    r = RNG.normal(size=(2,) + out_spatial + (3,))
    y, (rx,) = engine_relevance(pool, {"params": {}}, x, lrp.proportional(), r)
    m, _ = window_matrix((4, 5, 5), 3, (2, 2, 2), (2, 2, 2), pads, 1.0)
    xf, rf = x.reshape(2, -1), r.reshape(2, -1)
    want = xf * ((rf / _stab(xf @ m, 1e-6)) @ m.T)
    np.testing.assert_allclose(rx.reshape(2, -1), want, rtol=1e-8, atol=1e-12)
    _, (rw,) = engine_relevance(pool, {"params": {}}, x, lrp.wta(), r)
    pad_arg = padding
    _, pull = jax.vjp(lambda v: nn.max_pool(v, (2, 2, 2), (2, 2, 2), pad_arg), jnp.asarray(x))
    np.testing.assert_array_equal(rw, np.asarray(pull(jnp.asarray(r))[0]))


def test_wta_backward_ties_and_overlap():
    x = np.zeros((1, 2, 4, 4, 1))
    x[0, 0, 0, 1, 0] = 0.0  # an all-zero window: the first element wins
    g = np.ones((1, 1, 2, 2, 1))
    got = np.asarray(wta_backward(jnp.asarray(x), jnp.asarray(g), (2, 2, 2), (2, 2, 2), "VALID"))
    assert got.sum() == 4 and got[0, 0, 0, 0, 0] == 1 and got[0, 0, 0, 2, 0] == 1
    # overlapping windows (the I3D's pools among them) or gaps, padding, ties at zero after a ReLU: the ordinary
    # gradient, exactly (integer cotangents, so that the order of the sums cannot matter)
    for shape, window, strides, padding in [((2, 5, 5, 2), (3, 3), (2, 2), "VALID"),
                                            ((2, 5, 7, 6, 3), (3, 3, 3), (1, 1, 1), "SAME"),
                                            ((1, 4, 9, 8, 2), (1, 3, 3), (1, 2, 2), "SAME"),
                                            ((1, 5, 6, 7, 2), (3, 3, 3), (2, 2, 2), "SAME"),
                                            ((1, 4, 5, 6, 2), (2, 3, 3), (1, 2, 1), ((0, 1), (1, 1), (0, 0))),
                                            ((2, 7, 8, 2), (2, 2), (3, 3), "VALID"),  # gaps between windows
                                            ((1, 7, 9, 3), (2, 3), (3, 2), "SAME")]:
        x = np.maximum(RNG.normal(size=shape), 0).astype(np.float32)
        y, pull = jax.vjp(lambda v: nn.max_pool(v, window, strides, padding), jnp.asarray(x))
        g = RNG.integers(-4, 5, size=y.shape).astype(np.float32)
        got = np.asarray(wta_backward(jnp.asarray(x), jnp.asarray(g), window, strides, padding))
        np.testing.assert_array_equal(got, np.asarray(pull(jnp.asarray(g))[0]), err_msg=str((window, strides)))
        pads = _max_pool._pads(padding, shape[1:-1], window, strides)  # the forward the engine runs instead
        np.testing.assert_array_equal(np.asarray(_max_pool._strided_max(jnp.asarray(x), window, strides, pads)),
                                      np.asarray(y))


def test_max_pool_with_negative_padding_is_left_to_xla():
    """A pooling that crops (negative padding) keeps its ordinary forward when read as a program (JAX itself cannot
    differentiate it)."""
    from jaxvx.methods._gradient import fast_forward

    def forward(v):
        return nn.max_pool(jnp.maximum(v, 0), (1, 3, 3), strides=(1, 2, 1), padding=((0, 0), (-1, 0), (0, 0)))
    x = jnp.asarray(RNG.normal(size=(2, 2, 7, 6, 2)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(fast_forward(forward)(x)), np.asarray(forward(x)))


def test_pass_rule_crosses_relu_unchanged():
    x = RNG.normal(size=(2, 6))
    r = RNG.normal(size=(2, 6))
    _, (rx,) = engine_relevance(One(ReLU), {"params": {}}, x, lrp.pass_(), r)
    np.testing.assert_array_equal(rx, r)


def test_stabilizer_sign_of_zero_is_positive():
    z = jnp.asarray([-2.0, 0.0, 3.0])
    np.testing.assert_allclose(np.asarray(lrp.stabilize(z, 0.5)), [-2.5, 0.5, 3.5])


@pytest.mark.parametrize("rule_name", sorted(RULES))
def test_no_nan_on_zero_and_huge_inputs(rule_name):
    model, variables, x, w, b, out_shape = build("dense", True)
    for scale in (0.0, 1e15):
        xs = x * scale
        r_out = RNG.normal(size=(x.shape[0],) + out_shape) * (1.0 if scale == 0 else 1e15)
        _, (r_in,) = engine_relevance(model, variables, xs, RULES[rule_name](), r_out)
        assert np.isfinite(r_in).all(), (rule_name, scale)
    # an all-zero layer: weights and biases zero
    zeros = jax.tree.map(np.zeros_like, variables)
    _, (r_in,) = engine_relevance(model, zeros, x, RULES[rule_name](), np.ones((x.shape[0],) + out_shape))
    assert np.isfinite(r_in).all()


def test_rule_argument_checks():
    with pytest.raises(ValueError, match="alpha - beta"):
        lrp.alpha_beta(3, 1)
    with pytest.raises(ValueError, match=">= 0"):
        lrp.alpha_beta(-1, -2)
    with pytest.raises(ValueError, match="low <= high"):
        lrp.zbox(1.0, -1.0)
    with pytest.raises(ValueError, match="eps"):
        lrp.epsilon(-1)
