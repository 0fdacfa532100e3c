"""jaxvx.methods.chunked: a method over a batch a few clips at a time gives the method's own result."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _nets import MLP, init
from jaxvx import lrp, methods

X = np.random.default_rng(3).normal(size=(5, 2, 4, 4, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def forward():
    model = MLP()
    return functools.partial(model.apply, init(model, jnp.asarray(X[:1])))


def test_chunked_equals_the_method(forward):
    """Chunks of 2 clips (not a divisor of 5: the padded copy is dropped) and "auto" (one clip on CPU) give the
    unchunked relevance, for the gradient (given and predicted targets) and deep Taylor; None is the method."""
    x = jnp.asarray(X)
    target = jnp.asarray([0, 3, 1, 2, 0])
    cases = [(methods.gradient(), target), (methods.gradient(), None),
             (methods.lrp(lrp.deep_taylor(-4.0, 4.0)), target)]
    for method, t in cases:
        want = np.asarray(method(forward, x, t))
        assert np.abs(want).max() > 0
        for batch_size in (2, "auto"):
            got = np.asarray(methods.chunked(method, batch_size)(forward, x, t))
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    assert methods.chunked(cases[0][0], None)(forward, x[:2], target[:2]).shape == x[:2].shape


def test_chunked_pytree_outputs_keys_and_jit(forward):
    """A method returning a pytree gets every leaf cut back to B; keys are split per chunk (deterministic);
    the chunked method runs under jit."""
    x = jnp.asarray(X)

    def noisy(forward, video, target=None, *, key=None):
        e = jax.random.normal(key, video.shape[:1])
        return {"logits": forward(video), "noise": e}

    out = methods.chunked(noisy, 2)(forward, x, key=jax.random.PRNGKey(0))
    assert out["logits"].shape == (5, 4) and out["noise"].shape == (5,)  # MLP: 4 classes
    np.testing.assert_allclose(out["logits"], forward(x), rtol=1e-5, atol=1e-6)
    again = methods.chunked(noisy, 2)(forward, x, key=jax.random.PRNGKey(0))
    np.testing.assert_array_equal(out["noise"], again["noise"])
    assert len(np.unique(np.asarray(out["noise"]))) == 5
    f = jax.jit(lambda v, t: methods.chunked(methods.gradient(), 2)(forward, v, t))
    np.testing.assert_allclose(f(x, jnp.zeros(5, jnp.int32)), methods.gradient()(forward, x, jnp.zeros(5, jnp.int32)),
                               rtol=1e-4, atol=1e-7)


def test_chunked_errors(forward):
    with pytest.raises(TypeError, match="method"):
        methods.chunked("gradient")
    for bad in (0, -1, 1.5, "all", True):
        with pytest.raises(ValueError, match="batch_size"):
            methods.chunked(methods.gradient(), bad)
    with pytest.raises(ValueError, match="target"):
        methods.chunked(methods.gradient(), 2)(forward, jnp.asarray(X), jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="video"):
        methods.chunked(methods.gradient(), 2)(forward, jnp.asarray(X[0]), None)
