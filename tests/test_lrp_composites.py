"""Composites on whole models: layer assignment, conservation, seeds, jit/vmap, errors."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _nets import init
from jaxvx import lrp, methods, program
from jaxvx.models import C3D, Flatten, R2Plus1D18, ReLU, fold_batchnorm

SHAPE = (16, 16, 16, 3)  # the smallest clip C3D accepts


@pytest.fixture(scope="module")
def c3d():
    model = C3D(num_classes=5, width=1 / 16)
    return model, init(model, jnp.zeros((1,) + SHAPE), bias_std=0.05)


def _bias_free(variables):
    return {"params": {k: {n: (jnp.zeros_like(v) if n == "bias" else v) for n, v in d.items()}
                       for k, d in variables["params"].items()}}


def _clips(n=2, seed=3):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (n,) + SHAPE), jnp.float32)


_JITTED = {}


def _jitted(model, key):
    """One compiled deep_taylor per variant, the variables an argument (so biased and bias-free share it)."""
    if key not in _JITTED:
        method = methods.lrp(lrp.deep_taylor(-1.0, 1.0, bias=(key == "deep_taylor_bias")))

        def run(variables, video, target):
            forward = functools.partial(model.apply, variables)
            return method(forward, video, target), forward(video)

        _JITTED[key] = jax.jit(run)
    return _JITTED[key]


def test_assignment_follows_first_match_and_first_layer(c3d):
    model, variables = c3d
    nodes = program.trace(functools.partial(model.apply, variables), jnp.zeros((1,) + SHAPE)).nodes
    for comp, first, conv, dense in [
        (lrp.epsilon_plus_flat(), "flat", "zplus", "epsilon(1e-06)"),
        (lrp.epsilon_gamma_box(-1, 1), "zbox", "gamma(0.25)", "epsilon(1e-06)"),
        (lrp.deep_taylor(-1, 1), "zbox", "zplus", "zplus"),
        (lrp.epsilon_alpha2_beta1(), "alpha_beta(2, 1)", "alpha_beta(2, 1)", "epsilon(1e-06)"),
    ]:
        rules = {n.path: getattr(r, "name", None) for n, r in zip(nodes, comp.assign(nodes))}
        assert rules["conv1"] == first, comp.name
        assert {rules[p] for p in ("conv2", "conv3a", "conv5b")} == {conv}, comp.name
        assert {rules[p] for p in ("fc7", "fc8")} == {dense}, comp.name
        assert rules["relu1"] == "pass" and rules["pool1"] == "wta" and rules["flatten"] is None
    rules = lrp.deep_taylor(-1, 1, max_pool="proportional").assign(nodes)
    assert {r.name for n, r in zip(nodes, rules) if n.path.startswith("pool")} == {"proportional"}


def test_deep_taylor_conserves_the_logit(c3d):
    """deep_taylor (z^B first, z+ elsewhere, biases left out of z) on a bias-free C3D: the input relevance sums to
    the target's logit within 1e-4 relative. Zero and huge clips in the same batch give finite relevance.

    With biases (same compiled function, other variables): deep_taylor leaves them out of z, so the relevance is
    still conserved; the expected deviation comes only from units with z+ = 0 but a positive output (they lose
    their relevance), none here: within 1e-4 as well."""
    model, variables = c3d
    x = jnp.concatenate([_clips(2), jnp.zeros((1,) + SHAPE), 1e6 * _clips(1, seed=9)])
    target = jnp.asarray([0, 3, 1, 2])
    rel, logits = _jitted(model, "deep_taylor")(_bias_free(variables), x, target)
    rel, logits = np.asarray(rel), np.asarray(logits)
    assert rel.shape == x.shape and rel.dtype == np.float32
    assert np.isfinite(rel).all()
    want = logits[np.arange(4), np.asarray(target)]
    got = rel.reshape(4, -1).sum(1)
    np.testing.assert_allclose(got[:2], want[:2], rtol=1e-4)
    assert np.all(rel[2] == 0)  # a zero clip of a bias-free net has zero logits and zero relevance

    rel, logits = _jitted(model, "deep_taylor")(_positive_biases(variables), x, target)
    rel, logits = np.asarray(rel), np.asarray(logits)
    want = logits[np.arange(4), np.asarray(target)]
    assert np.isfinite(rel).all() and np.all(want[:2] != 0)
    np.testing.assert_allclose(rel.reshape(4, -1).sum(1)[:2], want[:2], rtol=1e-4)


@pytest.mark.slow
def test_deep_taylor_biases_in_z_absorb_relevance(c3d):
    """With ``bias=True`` the positive biases are in z+ and absorb relevance: the input relevance is smaller than
    the (positive) logit by more than 0.1 % here, and still positive."""
    model, variables = c3d
    x = _clips(4)
    rel, logits = _jitted(model, "deep_taylor_bias")(_positive_biases(variables), x, None)
    want = np.asarray(logits).max(-1)
    got = np.asarray(rel).reshape(4, -1).sum(1)
    assert np.all(want > 0)
    assert np.all(got < want * (1 - 1e-3)) and np.all(got > 0)


def _positive_biases(variables):
    return {"params": jax.tree.map(lambda a: jnp.abs(a) if a.ndim == 1 else a, variables["params"])}


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = Flatten()(x)
        x = ReLU(name="relu1")(nn.Dense(6, name="fc1")(x))
        return nn.Dense(4, name="fc2")(x)


@pytest.fixture(scope="module")
def mlp():
    model = _MLP()
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 2, 2, 2, 2)), jnp.float32)
    variables = init(model, x, seed=5, bias_std=0.3)
    return functools.partial(model.apply, variables), x


def test_seeds_scale_the_relevance(mlp):
    """The modified backward is linear in the seed: logit seed = logit x one-hot seed; softmax likewise."""
    forward, x = mlp
    comp = lrp.epsilon_plus()
    target = jnp.asarray([0, 1, 3])
    logits = np.asarray(forward(x))[np.arange(3), [0, 1, 3]]
    probs = np.asarray(jax.nn.softmax(forward(x)))[np.arange(3), [0, 1, 3]]
    r_one = np.asarray(methods.lrp(comp, seed="one_hot")(forward, x, target))
    r_logit = np.asarray(methods.lrp(comp)(forward, x, target))
    r_soft = np.asarray(methods.lrp(comp, seed="softmax")(forward, x, target))
    tol = 1e-5 * np.abs(r_logit).max()
    np.testing.assert_allclose(r_logit, r_one * logits[:, None, None, None, None], rtol=1e-4, atol=tol)
    tol = 1e-5 * np.abs(r_soft).max()
    np.testing.assert_allclose(r_soft, r_one * probs[:, None, None, None, None], rtol=1e-4, atol=tol)
    # epsilon rule on dense layers only: the input relevance sums to the logit minus what the biases absorb
    assert np.all(np.abs(r_logit.reshape(3, -1).sum(1) - logits) > 1e-4)


def test_lrp_under_jit_and_vmap(mlp):
    forward, x = mlp
    method = methods.lrp(lrp.epsilon_gamma_box(-3.0, 3.0))
    eager = np.asarray(method(forward, x, None))
    jitted = np.asarray(jax.jit(method, static_argnums=0)(forward, x, None))
    vmapped = np.asarray(jax.vmap(lambda v: method(forward, v[None], None)[0])(x))
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(vmapped, eager, rtol=1e-5, atol=1e-7)


def test_errors():
    with pytest.raises(ValueError, match=r"none of its rules applies(.|\n)*#0 structure reshape"):
        methods.lrp(lrp.epsilon_plus())(lambda v: v.reshape(v.shape[0], -1)[:, :3], jnp.zeros((1,) + SHAPE))
    with pytest.raises(TypeError, match="Composite"):
        methods.lrp("epsilon_plus")
    with pytest.raises(ValueError, match="seed"):
        methods.lrp(lrp.epsilon_plus(), seed="probability")
    with pytest.raises(ValueError, match="max_pool"):
        lrp.deep_taylor(-1, 1, max_pool="average")


def test_batchnorm_is_folded_without_asking():
    """A BatchNorm after a convolution (negative scales included) is folded into it: the relevance equals that of
    the explicitly folded model, for z+ (which sees the folded kernel's signs) and epsilon."""
    model = _WithBatchNorm()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 2, 4, 4, 2)), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    rng = np.random.default_rng(1)
    variables = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), variables)
    variables["batch_stats"] = jax.tree.map(jnp.abs, variables["batch_stats"])
    assert np.any(np.asarray(variables["params"]["conv_bn"]["scale"]) < 0)
    folded, fvars = fold_batchnorm(_WithBatchNormFoldable(), {"params": {"conv": variables["params"]["conv"],
                                                                         "fc": variables["params"]["fc"],
                                                                         "conv_bn": variables["params"]["conv_bn"]},
                                                              "batch_stats": variables["batch_stats"]})
    for comp in (lrp.epsilon_plus(), lrp.epsilon_alpha2_beta1()):
        got = methods.lrp(comp)(functools.partial(model.apply, variables), x, jnp.asarray([0, 1]))
        want = methods.lrp(comp)(functools.partial(folded.apply, fvars), x, jnp.asarray([0, 1]))
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6 * np.abs(want).max())


class _WithBatchNorm(nn.Module):
    """Written as users write it: the BatchNorm after the conv, relu and reshape as functions."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(3, (1, 1, 1), name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, name="conv_bn")(x)
        return nn.Dense(2, name="fc")(nn.relu(x).reshape(x.shape[0], -1))


class _WithBatchNormFoldable(nn.Module):
    """The same network in the form jaxvx.models.fold_batchnorm rewrites (a ``<conv>_bn`` after ``conv``)."""

    fold_bn: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(3, (1, 1, 1), name="conv")(x)
        if not self.fold_bn:
            x = nn.BatchNorm(use_running_average=True, name="conv_bn")(x)
        return nn.Dense(2, name="fc")(ReLU()(x).reshape(x.shape[0], -1))


@pytest.mark.slow
def test_deep_taylor_on_folded_r2plus1d_conserves():
    """R(2+1)D with BatchNorm folded: residual Sums get the norm rule, the global average pool too; the relevance
    of deep_taylor (biases out of z) is conserved within 1e-3."""
    model = R2Plus1D18(num_classes=4, width=1 / 16)
    x = _clips(2)[:, :8]
    variables = init(model, x, seed=4, zero_bias=True)
    # positive running means and zero BatchNorm biases: every folded bias is negative, so no unit is switched on by
    # its bias alone and the z+ rule (biases out of z) loses no relevance
    rng = np.random.default_rng(4)
    stats = jax.tree.map(lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), a.dtype), variables["batch_stats"])
    folded, fv = fold_batchnorm(model, {"params": variables["params"], "batch_stats": stats})
    forward = functools.partial(folded.apply, fv)
    rel = jax.jit(methods.lrp(lrp.deep_taylor(-1, 1)), static_argnums=0)(forward, x, None)
    logits = np.asarray(forward(x))
    want = logits.max(-1)
    np.testing.assert_allclose(np.asarray(rel).reshape(2, -1).sum(1), want, rtol=1e-3)


@pytest.mark.slow
def test_proportional_max_pool_conserves(c3d):
    model, variables = c3d
    x = _clips(2)
    forward = functools.partial(model.apply, _bias_free(variables))
    rel = jax.jit(methods.lrp(lrp.deep_taylor(-1, 1, max_pool="proportional")), static_argnums=0)(forward, x, None)
    want = np.asarray(forward(x)).max(-1)
    np.testing.assert_allclose(np.asarray(rel).reshape(2, -1).sum(1), want, rtol=1e-4)


def test_rules_and_composites_with_other_bounds_differ():
    """Bounds are part of a rule's identity: a composite used as a static jit argument must never be served
    another composite's compiled program (zbox(-1, 1) compared equal to zbox(-3, 3), with equal hashes)."""
    assert lrp.zbox(-1, 1) != lrp.zbox(-3, 3) and lrp.zbox(-1, 1) == lrp.zbox(-1, 1)
    assert hash(lrp.zbox(-1, 1)) == hash(lrp.zbox(-1, 1))
    assert lrp.deep_taylor(-1.0, 1.0) != lrp.deep_taylor(-3.0, 3.0)
    assert lrp.epsilon_gamma_box(np.zeros(3), np.ones(3)) != lrp.epsilon_gamma_box(np.zeros(3), 2 * np.ones(3))
    assert hash(lrp.deep_taylor(np.zeros(3), np.ones(3))) == hash(lrp.deep_taylor(np.zeros(3), np.ones(3)))
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 2, 4, 4, 2)), jnp.float32)

    def forward(v):
        return jax.lax.conv_general_dilated(v, jnp.ones((1, 1, 1, 2, 3)), (1, 1, 1), "VALID",
                                            dimension_numbers=("NDHWC", "DHWIO", "NDHWC")).reshape(1, -1)

    run = jax.jit(lambda comp, v: methods.lrp(comp)(forward, v, jnp.asarray([0])), static_argnums=0)
    a = np.asarray(run(lrp.deep_taylor(-1.0, 1.0), x))
    b = np.asarray(run(lrp.deep_taylor(-3.0, 3.0), x))
    assert np.abs(a - b).max() > 1e-3
