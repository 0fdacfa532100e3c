"""Deletion and insertion curves against a direct NumPy loop, with a model whose answer depends on known frames."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvx.metrics import deletion_curve, insertion_curve, perturbation_curve

B, T, H, W, C, K = 2, 6, 4, 5, 3, 3


WEIGHTS = np.random.default_rng(0).normal(size=(T * H * W * C, K)).astype(np.float32) * 0.1


def _forward():
    weights = jnp.asarray(WEIGHTS)
    return lambda v: v.reshape(v.shape[0], -1) @ weights


def _numpy_forward(x):
    return x.reshape(x.shape[0], -1).astype(np.float64) @ WEIGHTS.astype(np.float64)


def _reference(video, rel_units, target, mode, unit, steps, fill, score):
    """The curve written out: sort units, perturb the top n_k, score; one step and one clip at a time."""
    b = video.shape[0]
    n = rel_units.shape[1]
    scores = np.zeros((b, steps + 1))
    for i in range(b):
        order = np.argsort(-rel_units[i], kind="stable")
        for k in range(steps + 1):
            n_k = int(np.round(k * n / steps))
            top = np.zeros(n, bool)
            top[order[:n_k]] = True
            keep = ~top if mode == "deletion" else top
            keep = keep.reshape((T, 1, 1, 1) if unit == "frames" else (T, H, W, 1))
            x = np.where(keep, video[i], fill)[None]
            logits = _numpy_forward(x)[0]
            if score == "probability":
                logits = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            scores[i, k] = logits[target[i]]
    return scores


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
@pytest.mark.parametrize("unit, steps", [("frames", None), ("voxels", 7)])
def test_matches_loop_reference(mode, unit, steps):
    rng = np.random.default_rng(1)
    forward = _forward()
    video = rng.normal(size=(B, T, H, W, C)).astype(np.float32)
    relevance = rng.normal(size=(B, T, H, W, C)).astype(np.float32)
    target = np.array([0, 2])
    curve = perturbation_curve(forward, video, relevance, target, mode=mode, unit=unit, steps=steps,
                               baseline=0.5, score="probability")
    s = T if steps is None else steps
    units = relevance.sum(axis=(2, 3, 4)) if unit == "frames" else relevance.sum(-1).reshape(B, -1)
    want = _reference(video, units, target, mode, unit, s, 0.5, "probability")
    np.testing.assert_allclose(np.asarray(curve.scores), want, rtol=1e-4, atol=1e-6)
    gain = want - want[:, :1]
    np.testing.assert_allclose(np.asarray(curve.aopc), (-gain if mode == "deletion" else gain).mean(1),
                               rtol=1e-4, atol=1e-6)
    fr = np.round(np.arange(s + 1) * units.shape[1] / s) / units.shape[1]
    np.testing.assert_allclose(np.asarray(curve.fractions), fr, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(curve.auc), np.trapezoid(want, fr, axis=1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
@pytest.mark.parametrize("unit, steps", [("frames", None), ("voxels", 7), ("frames", 1)])
def test_endpoints_replace_the_two_map_independent_forwards(mode, unit, steps):
    """With the logits of the clip and of the all-baseline input given, the curve is the same, its first and last
    points come from them, and only the S - 1 steps between run the model."""
    rng = np.random.default_rng(3)
    forward = _forward()
    video = rng.normal(size=(B, T, H, W, C)).astype(np.float32)
    relevance = rng.normal(size=(B, T, H, W, C)).astype(np.float32)
    target = np.array([1, 2])
    ends = (forward(video), forward(np.full_like(video, 0.5)))
    kw = dict(mode=mode, unit=unit, steps=steps, baseline=0.5)
    plain = perturbation_curve(forward, video, relevance, target, **kw)
    calls = []

    def counted(v):
        jax.debug.callback(lambda: calls.append(1))
        return forward(v)

    given = perturbation_curve(counted, video, relevance, target, endpoints=ends, **kw)
    s = T if steps is None else steps
    assert len(calls) == s - 1
    for field in ("scores", "aopc", "auc", "fractions"):
        np.testing.assert_allclose(np.asarray(getattr(given, field)), np.asarray(getattr(plain, field)), rtol=1e-5,
                                   atol=1e-7)
    # the endpoints are read, not recomputed: shifted logits of the untouched clip move that end of the curve
    shifted = (ends[0].at[:, 0].add(5.0), ends[1])
    moved = np.asarray(perturbation_curve(forward, video, relevance, target, endpoints=shifted, **kw).scores)
    untouched = 0 if mode == "deletion" else -1
    assert np.all(moved[:, untouched] != np.asarray(plain.scores)[:, untouched])
    np.testing.assert_allclose(np.delete(moved, untouched, axis=1),
                               np.delete(np.asarray(plain.scores), untouched, axis=1), rtol=1e-5, atol=1e-7)


def test_faithful_map_beats_reversed_map():
    # the model looks only at frame 2's mean brightness: class 0 score = 10 * mean(frame 2)
    def forward(v):
        m = v[:, 2].mean(axis=(1, 2, 3))
        return jnp.stack([10 * m, jnp.zeros_like(m)], axis=1)

    # clip 0 with the faithful map (frame 2 first), clip 1 with the reversed one: one call per mode
    video = np.ones((2, T, H, W, C), np.float32)
    maps = np.zeros((2, T), np.float32)
    maps[0, 2], maps[1, 2] = 1.0, -1.0
    target = np.array([0, 0])
    deletion = deletion_curve(forward, video, maps, target, score="logit")
    # deleting frame 2 first drops the logit from 10 to 0 at the first step
    np.testing.assert_allclose(np.asarray(deletion.scores)[0], [10, 0, 0, 0, 0, 0, 0], atol=1e-5)
    np.testing.assert_allclose(np.asarray(deletion.scores)[1], [10, 10, 10, 10, 10, 10, 0], atol=1e-5)
    assert float(deletion.aopc[0]) > float(deletion.aopc[1])
    ins = insertion_curve(forward, video, maps, target, score="logit")
    np.testing.assert_allclose(np.asarray(ins.scores)[0], [0, 10, 10, 10, 10, 10, 10], atol=1e-5)
    assert float(ins.auc[0]) > float(ins.auc[1]) and float(ins.aopc[0]) > float(ins.aopc[1])


def test_jit_and_batched_steps():
    rng = np.random.default_rng(2)
    forward = _forward()
    video = rng.normal(size=(B, T, H, W, C)).astype(np.float32)
    relevance = rng.normal(size=(B, T)).astype(np.float32)
    target = jnp.array([1, 0])
    eager = perturbation_curve(forward, video, relevance, target)
    jitted = jax.jit(lambda v, r, t: perturbation_curve(forward, v, r, t, batch_size=3))(video, relevance, target)
    np.testing.assert_allclose(np.asarray(jitted.scores), np.asarray(eager.scores), rtol=1e-5, atol=1e-7)


def test_bad_arguments():
    video = np.zeros((1, T, H, W, C), np.float32)
    forward = _forward()
    with pytest.raises(ValueError, match="mode"):
        perturbation_curve(forward, video, np.zeros((1, T)), np.array([0]), mode="both")
    with pytest.raises(ValueError, match="unit"):
        perturbation_curve(forward, video, np.zeros((1, T)), np.array([0]), unit="pixels")
    with pytest.raises(ValueError, match="rank voxels"):
        perturbation_curve(forward, video, np.zeros((1, T)), np.array([0]), unit="voxels")
    with pytest.raises(ValueError, match="target"):
        perturbation_curve(forward, video, np.zeros((1, T)), np.array([0.5]))
    with pytest.raises(ValueError, match=r"endpoints must be .*B = 1, got shapes \[\(2, 3\), \(1, 3\)\]"):
        perturbation_curve(forward, video, np.zeros((1, T)), np.array([0]),
                           endpoints=(np.zeros((2, 3)), np.zeros((1, 3))))
