"""chain / named_chain compose a method with transforms; reductions and normalisations against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvx.methods import details, frame_masking
from jaxvx.transforms import (
    absolute,
    chain,
    frame_share,
    max_channels,
    named_chain,
    negative,
    normalize_absmax,
    normalize_minmax,
    normalize_percentile,
    positive,
    selective,
    sum_channels,
)

T, H, W, C, K = 4, 6, 5, 3, 3


def _forward():
    weights = jnp.asarray(np.random.default_rng(0).normal(size=(T * H * W * C, K)).astype(np.float32))
    return lambda video: video.reshape(video.shape[0], -1) @ weights


def input_gradient(forward, video, target=None, *, key=None):
    """A minimal method of the common call shape: the gradient of the target logit."""
    if target is None:
        target = jnp.argmax(forward(video), axis=-1)

    def score(v):
        return jnp.take_along_axis(forward(v), target[:, None], axis=1).sum()

    return jax.grad(score)(video)


@pytest.fixture(scope="module")
def clip():
    return jnp.asarray(np.random.default_rng(1).normal(size=(2, T, H, W, C)).astype(np.float32))


def test_chain_equals_manual_composition(clip):
    forward = _forward()
    target = jnp.array([0, 2])
    method = chain(input_gradient, sum_channels(), selective(1.0, padding="edge"))
    raw = jax.jit(lambda v, t: input_gradient(forward, v, t))(clip, target)
    want = selective(1.0, padding="edge")(raw.sum(-1, keepdims=True))
    got = method(forward, clip, target)
    assert got.shape == (2, T, H, W, 1)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)
    assert method.__name__.startswith("chain(input_gradient, sum_channels(), selective(")
    # chains chain, and the result jits with a traced target (one program for every class)
    twice = chain(method, frame_share())
    jitted = jax.jit(lambda v, t: twice(forward, v, t))
    got = np.asarray(jitted(clip, target))
    assert got.shape == (2, T)
    np.testing.assert_allclose(got, np.asarray(frame_share()(want)), rtol=1e-5, atol=1e-7)


def test_chain_passes_key_and_default_target(clip):
    seen = {}

    def method(forward, video, target=None, *, key=None):
        seen["target"], seen["key"] = target, key
        return video

    key = object()  # passed through untouched
    out = chain(method, positive())(_forward(), clip, key=key)
    assert seen["target"] is None and seen["key"] is key
    np.testing.assert_array_equal(np.asarray(out), np.maximum(np.asarray(clip), 0))


def test_named_chain_keeps_intermediates(clip):
    forward = _forward()
    method = named_chain(input_gradient, ("sum", sum_channels()), ("selective", selective(1.0)))
    last, out = jax.jit(lambda v: details(method)(forward, v))(clip)
    assert list(out) == ["relevance", "sum", "selective"]
    raw = jax.jit(lambda v: input_gradient(forward, v))(clip)
    np.testing.assert_allclose(np.asarray(out["relevance"]), np.asarray(raw), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["sum"]), np.asarray(raw).sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)
    # the method itself returns the last map, as chain does
    np.testing.assert_array_equal(np.asarray(last), np.asarray(out["selective"]))
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda v: method(forward, v))(clip)), np.asarray(last))
    want = chain(input_gradient, sum_channels(), selective(1.0))(forward, clip)
    np.testing.assert_allclose(np.asarray(last), np.asarray(want), rtol=1e-6)


def test_chain_of_a_detailed_method_keeps_its_details(clip):
    """A chain of a method with a details variant has one: the transformed map beside the method's details."""
    forward = _forward()
    target = jnp.array([1, 0])
    method = chain(frame_masking(), positive())
    got, scores = details(method)(forward, clip, target)
    _, want = details(frame_masking())(forward, clip, target)
    np.testing.assert_array_equal(np.asarray(scores), np.asarray(want))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(method(forward, clip, target)))
    assert got.shape == (2, T, H, W, 1) and np.all(np.asarray(got) >= 0)
    with pytest.raises(ValueError, match="no details variant"):
        details(chain(input_gradient, positive()))


def test_chain_argument_errors():
    with pytest.raises(TypeError, match="method must be callable"):
        chain(3)
    with pytest.raises(TypeError, match=r"transforms\[1\] must be callable"):
        chain(input_gradient, positive(), "selective")
    with pytest.raises(ValueError, match="unique"):
        named_chain(input_gradient, ("a", positive()), ("a", absolute()))
    with pytest.raises(ValueError, match="relevance"):
        named_chain(input_gradient, ("relevance", positive()))
    with pytest.raises(TypeError, match="pair"):
        named_chain(input_gradient, positive())


def test_reductions_against_numpy():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(2, 3, 4, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(sum_channels()(r)), r.sum(-1, keepdims=True), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(max_channels()(r)), r.max(-1, keepdims=True))
    np.testing.assert_array_equal(np.asarray(positive()(r)), np.maximum(r, 0))
    np.testing.assert_array_equal(np.asarray(negative()(r)), np.maximum(-r, 0))
    np.testing.assert_array_equal(np.asarray(absolute()(r)), np.abs(r))
    with pytest.raises(ValueError, match=r"\[B, T, H, W, C\]"):
        sum_channels()(r[..., 0])


def test_normalisations_per_clip():
    rng = np.random.default_rng(1)
    r = rng.normal(size=(3, 4, 6, 7)).astype(np.float32)
    r[2] = 0.5  # a constant clip
    mm = np.asarray(normalize_minmax()(r))
    for b in range(2):
        np.testing.assert_allclose(mm[b], (r[b] - r[b].min()) / (r[b].max() - r[b].min()), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mm[2], 0)
    am = np.asarray(normalize_absmax()(r))
    np.testing.assert_allclose(am[0], r[0] / np.abs(r[0]).max(), rtol=1e-6)
    np.testing.assert_allclose(am[2], 1.0)
    pc = np.asarray(normalize_percentile(90)(r))
    for b in range(3):
        scale = np.percentile(np.abs(r[b]), 90)
        np.testing.assert_allclose(pc[b], np.clip(r[b] / scale, -1, 1), rtol=1e-5, atol=1e-6)
    assert np.isclose(np.abs(pc[0]).max(), 1.0) and (np.abs(pc[0]) == 1).mean() > 0.05
    np.testing.assert_array_equal(np.asarray(normalize_percentile()(np.zeros((1, 2, 3, 3)))), 0)
    with pytest.raises(ValueError, match="percentile"):
        normalize_percentile(0)
