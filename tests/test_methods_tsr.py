"""TSR against a direct loop implementation of Ismail et al.'s two-step algorithm."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _nets import init, planned_temp_bytes
from jaxvx.methods import tsr
from jaxvx.methods._tsr import tsr_num_selected


class TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Conv(3, (3, 3, 3))(x))
        return nn.Dense(4)(x.reshape(x.shape[0], -1))


def input_gradient(forward, video, target, *, key=None):
    """The plain input gradient of the target logit (a base method defined here, independent of jaxvx)."""
    def score(v):
        return jnp.take_along_axis(forward(v), target[:, None], axis=1).sum()
    return jax.grad(score)(video)


def noisy_gradient(forward, video, target, *, key=None):
    """A base that uses its key: the gradient at a noisy copy of the input (the same noise for every clip)."""
    return input_gradient(forward, video + 0.3 * jax.random.normal(key, video.shape[1:]), target)


@pytest.fixture(scope="module")
def setup():
    video = jnp.asarray(np.random.default_rng(0).standard_normal((2, 7, 9, 8, 2)), jnp.float32)
    model = TinyNet()
    variables = init(model, video, seed=1)
    return jax.jit(functools.partial(model.apply, variables)), video


def minmax(x):
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def reference_tsr(base, forward, video, target, alpha, block, fill, one_step=False, key=None):
    """Ismail et al.'s getTwoStepRescaling, one clip at a time, one base call per mask, in a Python loop."""
    jbase = jax.jit(lambda v, t: base(forward, v, t, key=key))
    video = np.asarray(video)
    out = []
    for b in range(video.shape[0]):
        x = video[b:b + 1]
        tgt = jnp.asarray(target[b:b + 1])
        actual = np.asarray(jbase(jnp.asarray(x), tgt), np.float64)
        _, t_len, h, w, _ = x.shape
        time_grad = np.zeros(t_len)
        for t in range(t_len):
            masked = x.copy()
            masked[:, t] = fill
            time_grad[t] = np.abs(actual - np.asarray(jbase(jnp.asarray(masked), tgt))).sum()
        time_contribution = minmax(time_grad)
        if one_step:
            new = time_contribution[:, None, None] * np.abs(actual[0]).sum(-1)
            out.append(minmax(new))
            continue
        threshold = np.quantile(time_contribution, alpha)
        new = np.zeros((t_len, h, w))
        for t in range(t_len):
            if time_contribution[t] > threshold:
                blocks = []
                for r in range(0, h, block[0]):
                    for c in range(0, w, block[1]):
                        masked = x.copy()
                        masked[:, t, r:r + block[0], c:c + block[1]] = fill
                        blocks.append(((r, c), np.abs(actual - np.asarray(jbase(jnp.asarray(masked), tgt))).sum()))
                feature = minmax(np.array([d for _, d in blocks]))
                for ((r, c), _), f in zip(blocks, feature):
                    new[t, r:r + block[0], c:c + block[1]] = time_contribution[t] * f
            else:
                new[t] = time_contribution[t] * 0.1
        out.append(minmax(new))
    return np.stack(out)


@pytest.mark.parametrize("alpha, block, fill", [(0.55, (4, 3), 0.0), (0.3, (9, 5), 0.7)])
def test_two_step_matches_loop(setup, alpha, block, fill):
    forward, video = setup
    target = np.array([1, 3])
    got = tsr(input_gradient, alpha=alpha, block=block, baseline=fill, batch_size=5)(
        forward, video, jnp.asarray(target))
    want = reference_tsr(input_gradient, forward, video, target, alpha, block, fill)
    assert got.shape == (2, 7, 9, 8, 1)
    got = got[..., 0]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
    # the rescaled frames: exactly the ones above the quantile carry block structure
    assert np.asarray(got).max() == pytest.approx(1.0)


def test_one_step_and_keyed_base_match_loop(setup):
    forward, video = setup
    target = np.array([0, 2])
    key = jax.random.key(5)
    got = tsr(noisy_gradient, one_step=True)(forward, video, jnp.asarray(target), key=key)
    assert got.shape == (*video.shape[:4], 1)
    got = got[..., 0]
    want = reference_tsr(noisy_gradient, forward, video, target, 0.55, None, 0.0, one_step=True, key=key)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fill", [0.0, 0.4])
def test_one_step_from_the_score_is_the_gradient_scaled_by_frame_masking(setup, fill):
    """Jayawardhana et al.'s one-step rescaling: |gradient| (channels summed) times the min-max scaled logit drop of
    masking each frame, written here as a loop over frames and clips."""
    forward, video = setup
    target = np.array([3, 1])
    got = tsr(input_gradient, one_step=True, time_from="score", baseline=fill)(forward, video, jnp.asarray(target))
    assert got.shape == (*video.shape[:4], 1)
    x = np.asarray(video)
    for b in range(x.shape[0]):
        logit = lambda v: float(np.asarray(forward(jnp.asarray(v)))[0, target[b]])
        drop = []
        for t in range(x.shape[1]):
            masked = x[b:b + 1].copy()
            masked[:, t] = fill
            drop.append(logit(x[b:b + 1]) - logit(masked))
        grad = np.abs(np.asarray(input_gradient(forward, video[b:b + 1], jnp.asarray(target[b:b + 1]))[0])).sum(-1)
        want = minmax(minmax(np.array(drop))[:, None, None] * grad)
        np.testing.assert_allclose(np.asarray(got[b, ..., 0]), want, rtol=1e-4, atol=1e-5)
        assert np.ptp(drop) > 0  # the frames differ: the rescaling is not a constant
    # it is not Ismail's time contribution (the base map's change): the two give different maps here
    from_map = tsr(input_gradient, one_step=True, baseline=fill)(forward, video, jnp.asarray(target))
    assert not np.allclose(np.asarray(from_map), np.asarray(got), atol=1e-3)


def test_time_from_is_checked():
    with pytest.raises(ValueError, match="time_from must be one of"):
        tsr(input_gradient, time_from="logit")


def test_selected_frame_budget():
    # numpy's linear quantile: count values strictly above it, over random draws with and without ties
    rng = np.random.default_rng(0)
    for t_len in (1, 2, 5, 16, 30):
        for alpha in (0.0, 0.3, 0.55, 0.9, 1.0):
            k = tsr_num_selected(t_len, alpha)
            for _ in range(20):
                values = rng.integers(0, 4, t_len).astype(float) if rng.random() < 0.5 else rng.random(t_len)
                assert (values > np.quantile(values, alpha)).sum() <= k
            distinct = rng.random(t_len)
            assert (distinct > np.quantile(distinct, alpha)).sum() == k
    assert tsr_num_selected(30, 0.55) == 14 and math.floor(0.55 * 29) == 15


def test_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        tsr(input_gradient, alpha=1.5)
    with pytest.raises(ValueError, match="block"):
        tsr(input_gradient, block=(0, 3))
    with pytest.raises(TypeError, match="base"):
        tsr("gradient")
    for bad in (0, 2.5, "all", None, True):
        with pytest.raises(ValueError, match="batch_size: expected a positive int or 'auto'"):
            tsr(input_gradient, batch_size=bad)


def test_jit_gives_the_same_map(setup):
    """Under jax.jit the evaluations run in lax.map (one program); eagerly in compiled chunks: same numbers."""
    forward, video = setup
    method = tsr(input_gradient, block=(5, 4), batch_size=4)
    target = jnp.array([2, 0])
    eager = method(forward, video, target)
    jitted = jax.jit(lambda v, t: method(forward, v, t))(video, target)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-5, atol=1e-6)
    auto = tsr(input_gradient, block=(5, 4))(forward, video, target)  # batch_size="auto": 1 per call on CPU
    np.testing.assert_allclose(np.asarray(auto), np.asarray(eager), rtol=1e-5, atol=1e-6)


def test_memory_is_bounded_by_batch_size_not_by_the_number_of_masks():
    """One masked clip per mask is built inside the loop body, never all of them: 1024 blocks per frame cost no more
    temporary memory than 1 block (apart from the [B, k, n_blocks] scores), while batch_size scales it."""
    video = jnp.asarray(np.random.default_rng(3).standard_normal((1, 8, 32, 32, 3)), jnp.float32)
    model = TinyNet()
    forward = functools.partial(model.apply, init(model, video, seed=2))
    target = jnp.array([1])
    clip_bytes = video.size * 4
    one_block = planned_temp_bytes(tsr(input_gradient, block=(32, 32), batch_size=2), forward, video, target)
    many_blocks = planned_temp_bytes(tsr(input_gradient, block=(1, 1), batch_size=2), forward, video, target)
    k = tsr_num_selected(8, 0.55)
    assert many_blocks - one_block < 2 * clip_bytes + 4 * 4 * k * 1024  # 1024 masked clips would be 1024 clips
    wide = planned_temp_bytes(tsr(input_gradient, block=(1, 1), batch_size=16), forward, video, target)
    assert wide > many_blocks + 4 * clip_bytes  # 16 masked clips (and their activations) at once
