"""jaxvx.models.fold_batchnorm: BatchNorm merged into the preceding conv keeps the logits."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _nets import init
from jaxvx import models


def random_variables(model, x, seed=0):
    """Variables with non-trivial BatchNorm statistics (mean != 0, var and scale != 1)."""
    return init(model, x, seed, bias_std=0.2, mean_std=0.3, scale_range=(0.3, 2.0))


def _module_types(model, variables, x):
    types = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__":
            types.append(type(context.module).__name__)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(model.apply, variables, x)
    return types


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.slow
def test_fold_r2plus1d_keeps_logits():
    model = models.R2Plus1D18(6, width=1 / 8)
    x = np.random.default_rng(1).standard_normal((2, 4, 24, 24, 3)).astype(np.float32)
    variables = random_variables(model, x, seed=2)
    folded, fvars = models.fold_batchnorm(model, variables)
    assert folded == models.R2Plus1D18(6, width=1 / 8, fold_bn=True)
    assert set(fvars) == {"params"}
    # exactly the parameters the folded architecture declares
    expected = jax.eval_shape(folded.init, jax.random.PRNGKey(0), x)
    assert set(expected) == {"params"}
    assert jax.tree_util.tree_structure(expected) == jax.tree_util.tree_structure(fvars)
    for a, b in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(fvars)):
        assert a.shape == b.shape and a.dtype == b.dtype
    types = _module_types(folded, fvars, x)
    assert "BatchNorm" not in types and types.count("Conv") == 2 + 8 * 4 + 3
    assert _module_types(model, variables, x).count("BatchNorm") == 2 + 8 * 4 + 3

    out, fout = jax.jit(model.apply)(variables, x), jax.jit(folded.apply)(fvars, x)
    assert np.std(np.asarray(out)) > 0.1  # non-trivial logits
    assert _rel_err(fout, out) < 1e-5


def test_fold_single_block_against_numpy_formula():
    # a Conv2Plus1D with bias-free convs and two BatchNorms, folded, against the per-channel formula in float64
    block = models.Conv2Plus1D(5, 4, spatial_kernel=3, temporal_kernel=3)
    x = np.random.default_rng(3).standard_normal((1, 3, 5, 5, 2)).astype(np.float32)
    v = random_variables(block, x, seed=4)
    folded, _ = models.fold_batchnorm(block, v)
    fv = jax.jit(lambda v: models.fold_batchnorm(block, v)[1])(v)  # the variables part is a pure array function
    p, s = v["params"], v["batch_stats"]
    for conv in ("spatial", "temporal"):
        g = np.asarray(p[conv + "_bn"]["scale"], np.float64)
        beta = np.asarray(p[conv + "_bn"]["bias"], np.float64)
        mu = np.asarray(s[conv + "_bn"]["mean"], np.float64)
        var = np.asarray(s[conv + "_bn"]["var"], np.float64)
        w = np.asarray(p[conv]["kernel"], np.float64)
        np.testing.assert_allclose(fv["params"][conv]["kernel"], w * g / np.sqrt(var + 1e-5), rtol=1e-6)
        np.testing.assert_allclose(fv["params"][conv]["bias"], -mu * g / np.sqrt(var + 1e-5) + beta, rtol=1e-5,
                                   atol=1e-7)
    np.testing.assert_allclose(jax.jit(folded.apply)(fv, x), jax.jit(block.apply)(v, x), rtol=1e-5, atol=1e-5)


def test_fold_without_batchnorm_is_identity():
    model = models.C3D(3, width=1 / 16)
    x = jnp.zeros((1, 16, 16, 16, 3))
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    folded, fvars = models.fold_batchnorm(model, variables)
    assert folded is model and fvars["params"] is variables["params"]


def test_fold_errors():
    model = models.R2Plus1D18(3, width=1 / 16)
    x = jnp.zeros((1, 2, 16, 16, 3))
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    variables = jax.tree_util.tree_map(lambda s: np.ones(s.shape, s.dtype), shapes)
    folded = model.clone(fold_bn=True)
    with pytest.raises(ValueError, match="already has fold_bn=True"):
        models.fold_batchnorm(folded, variables)
    with pytest.raises(TypeError, match="C3D has batch_stats but no fold_bn"):
        models.fold_batchnorm(models.C3D(3), variables)
    broken = {"params": variables["params"], "batch_stats": {**variables["batch_stats"], "extra": {"mean": 0}}}
    with pytest.raises(ValueError, match="'extra' is not named '<conv>_bn'"):
        models.fold_batchnorm(model, broken)
    with pytest.raises(ValueError, match="expected a 'params' collection"):
        models.fold_batchnorm(model, {"batch_stats": variables["batch_stats"]})
