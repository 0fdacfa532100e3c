"""Occlusion and frame masking against a direct loop over windows (captum's algorithm, written out in NumPy)."""

import functools
import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _nets import init
from jaxvx.methods import broadcast_frames, details, frame_masking, occlusion
from jaxvx.methods._common import points_per_pass
from jaxvx.methods._occlusion import AUTO_BATCH_ACCELERATOR


class TinyNet(nn.Module):
    classes: int = 5

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3, 3))(x)
        x = jnp.tanh(x)
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.classes)(x)


@pytest.fixture(scope="module")
def setup():
    video = jnp.asarray(np.random.default_rng(0).standard_normal((2, 6, 8, 10, 3)), jnp.float32)
    model = TinyNet()
    variables = init(model, video, seed=1)
    forward = jax.jit(functools.partial(model.apply, variables))
    return forward, video


def _score(forward, x, target, score):
    logits = np.asarray(forward(jnp.asarray(x)), np.float64)
    if score == "logit":
        return logits[np.arange(len(target)), target]
    if score == "prob":
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        return p[np.arange(len(target)), target]
    return (logits.argmax(-1) == target).astype(np.float64)


def reference_occlusion(forward, video, target, window, stride, baseline, score="logit"):
    """captum Occlusion, literally: slide, occlude, accumulate drop * window mask and the covering counts."""
    video = np.asarray(video)
    shape = video.shape[1:4]
    starts = [range(0, (math.ceil((d - w) / s)) * s + 1, s) for d, w, s in zip(shape, window, stride)]
    total = np.zeros(video.shape[:4])
    count = np.zeros(video.shape[:4])
    s0 = _score(forward, video, target, score)
    for st, sh, sw in itertools.product(*starts):
        sl = (slice(None), slice(st, st + window[0]), slice(sh, sh + window[1]), slice(sw, sw + window[2]))
        x = video.copy()
        x[sl] = baseline
        drop = s0 - _score(forward, x, target, score)
        total[sl] += drop[:, None, None, None]
        count[sl] += 1
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


@pytest.mark.parametrize(
    "window, stride, baseline, score, batch_size",
    [
        ((3, 3, 4), (2, 2, 3), 0.5, "logit", 7),  # overlapping windows, ragged borders, chunk size not a divisor
        ((2, 5, 5), (1, 3, 5), -1.0, "prob", 4),
        ((1, 8, 10), (3, 8, 10), 0.0, "logit", 2),  # stride > window in time: uncovered frames get 0
    ],
)
def test_occlusion_matches_direct_loop(setup, window, stride, baseline, score, batch_size):
    forward, video = setup
    target = np.array([1, 3])
    got = occlusion(window, stride, baseline, score=score, batch_size=batch_size)(forward, video, jnp.asarray(target))
    want = reference_occlusion(forward, video, target, window, stride, baseline, score)
    assert got.shape == (2, 6, 8, 10, 1)  # the contract of every method: a channel axis (of 1 here)
    got = got[..., 0]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    if stride[0] > window[0]:
        assert np.all(np.asarray(got)[:, 1:3] == 0)  # frames 1, 2 lie in no window


def test_occlusion_default_target_is_argmax_and_array_baseline(setup):
    forward, video = setup
    predicted = np.asarray(forward(video)).argmax(-1)
    baseline = jnp.broadcast_to(jnp.asarray([0.1, -0.2, 0.3]), video.shape)  # per-channel means, say
    got = occlusion((2, 4, 5), None, baseline)(forward, video)[..., 0]
    want = reference_occlusion(forward, video, predicted, (2, 4, 5), (2, 4, 5), np.asarray(baseline)[:, :2, :4, :5])
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width, stride, score", [(2, 1, "prob"), (3, 2, "logit"), (1, 1, "accuracy")])
def test_frame_masking_matches_direct_loop(setup, width, stride, score):
    forward, video = setup
    target = np.array([0, 2])
    method = frame_masking(width, stride=stride, score=score, batch_size=3)
    mapped, got = details(method)(forward, video, jnp.asarray(target))
    want = reference_occlusion(forward, video, target, (width, 8, 10), (stride, 8, 10), 0.0, score)[:, :, 0, 0]
    assert got.shape == (2, 6) and mapped.shape == (2, 6, 8, 10, 1)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    # the map fills each frame with its score, and is what the method itself returns
    np.testing.assert_array_equal(np.asarray(mapped), np.broadcast_to(np.asarray(got)[:, :, None, None, None],
                                                                      mapped.shape))
    np.testing.assert_array_equal(np.asarray(method(forward, video, jnp.asarray(target))), np.asarray(mapped))


def test_frame_masking_width_one_is_per_frame_drop(setup):
    forward, video = setup
    target = jnp.array([4, 4])
    got = np.asarray(details(frame_masking())(forward, video, target)[1])
    s0 = np.asarray(forward(video))[:, 4]
    for t in (0, 5):
        masked = video.at[:, t].set(0.0)
        np.testing.assert_allclose(got[:, t], s0 - np.asarray(forward(masked))[:, 4], rtol=1e-5, atol=1e-5)
    mapped = broadcast_frames(got, video)
    assert mapped.shape == (2, 6, 8, 10, 1)
    np.testing.assert_array_equal(np.asarray(mapped)[:, :, 3, 7, 0], got)


def test_jit_and_traced_target(setup):
    forward, video = setup
    method = occlusion((2, 4, 5))
    jitted = jax.jit(lambda v, t: method(forward, v, t))
    a = jitted(video, jnp.array([0, 1]))
    b = jitted(video, jnp.array([2, 2]))
    np.testing.assert_allclose(np.asarray(a), np.asarray(method(forward, video, jnp.array([0, 1]))), atol=1e-6)
    assert not np.allclose(np.asarray(a), np.asarray(b))


def test_bad_arguments(setup):
    forward, video = setup
    with pytest.raises(ValueError, match="window"):
        occlusion((2, 4))
    with pytest.raises(ValueError, match="score"):
        occlusion(score="margin")
    with pytest.raises(ValueError, match="window: H size 9"):
        occlusion((2, 9, 4))(forward, video, None)
    with pytest.raises(ValueError, match="width"):
        frame_masking(7)(forward, video, None)
    with pytest.raises(ValueError, match=r"\[B, T, H, W, C\]"):
        occlusion()(forward, video[0], None)
    with pytest.raises(ValueError, match="scores"):
        broadcast_frames(jnp.zeros(3), video)
    for bad in (0, 2.5, "all", None):
        with pytest.raises(ValueError, match="batch_size"):
            occlusion(batch_size=bad)
        with pytest.raises(ValueError, match="batch_size"):
            frame_masking(batch_size=bad)


def test_auto_batch_size():
    """"auto": one masked clip per forward call on the CPU backend, 16 on an accelerator; ints pass through."""
    assert AUTO_BATCH_ACCELERATOR == 16
    assert points_per_pass("auto", 64, AUTO_BATCH_ACCELERATOR) == (1 if jax.default_backend() == "cpu" else 16)
    assert points_per_pass(5, 64, AUTO_BATCH_ACCELERATOR) == 5
