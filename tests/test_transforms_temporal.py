"""Frame share (Anders et al.) and the border/lookahead fits with bootstrap intervals."""

import jax
import numpy as np
import pytest

from jaxvx.transforms import fit_border_lookahead, frame_relevance, frame_share


def test_frame_share_matches_numpy_and_sums_to_one():
    rng = np.random.default_rng(0)
    r = rng.uniform(0, 1, size=(3, 5, 4, 6, 3)).astype(np.float32)
    got = np.asarray(frame_share()(r))
    r_t = r.astype(np.float64).sum(axis=(2, 3, 4))
    np.testing.assert_allclose(got, r_t / r_t.sum(axis=1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(frame_relevance(r)), r_t, rtol=1e-5)


def test_frame_share_zero_total_is_zero_not_nan():
    r = np.zeros((2, 4, 3, 3), np.float32)
    r[1, 2] = 1.0
    r[0, 0], r[0, 1] = 1.0, -1.0  # total exactly zero
    got = np.asarray(jax.jit(frame_share())(r))
    np.testing.assert_array_equal(got[0], 0.0)
    np.testing.assert_array_equal(got[1], [0, 0, 1, 0])


def _shares(rng, n, t, coeffs, noise):
    tt = np.arange(t)
    curve = np.polyval(coeffs, tt)  # highest degree first
    return curve[None] + noise * rng.normal(size=(n, t))


def test_fit_recovers_known_border_and_lookahead():
    rng = np.random.default_rng(1)
    t = 16
    # P_t = B t^2 + C t + D with B = 4e-4, plus noise per clip: the quadratic fit must find B, the linear fit the
    # least-squares slope of that same mean curve
    p = _shares(rng, 400, t, [4e-4, -0.006, 0.08], noise=0.01)
    fit = fit_border_lookahead(p, num_bootstrap=500)
    mean = p.mean(axis=0)
    np.testing.assert_allclose(fit.quadratic, np.polyfit(np.arange(t), mean, 2), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(fit.linear, np.polyfit(np.arange(t), mean, 1), rtol=1e-8, atol=1e-12)
    lo, hi = fit.border_ci
    assert lo < 4e-4 < hi and lo > 0  # a real border effect is detected with its sign
    assert hi - lo < 1e-4
    np.testing.assert_allclose(fit.mean, mean)
    np.testing.assert_allclose(fit.quadratic_curve(), np.polyval(fit.quadratic, np.arange(t)))


def test_fit_lookahead_interval_covers_truth_and_shrinks():
    rng = np.random.default_rng(2)
    t, slope = 16, 0.002
    widths = []
    for n in (50, 800):
        p = _shares(rng, n, t, [slope, 0.0625 - slope * 7.5], noise=0.02)
        fit = fit_border_lookahead(p, num_bootstrap=400, seed=3)
        lo, hi = fit.lookahead_ci
        assert lo < slope < hi
        assert abs(fit.border) < 1e-3
        widths.append(hi - lo)
    # the interval shrinks like 1 / sqrt(N): 16x more clips, about 4x narrower
    assert 2.5 < widths[0] / widths[1] < 6.5


def test_fit_bootstrap_is_seeded_and_validated():
    rng = np.random.default_rng(4)
    p = rng.uniform(size=(20, 8))
    a = fit_border_lookahead(p, num_bootstrap=50, seed=1)
    b = fit_border_lookahead(p, num_bootstrap=50, seed=1)
    np.testing.assert_array_equal(a.quadratic_ci, b.quadratic_ci)
    assert a.to_dict()["num_clips"] == 20
    with pytest.raises(ValueError, match=r"shares must be \[N, T\]"):
        fit_border_lookahead(np.zeros(8))
    with pytest.raises(ValueError, match="T >= 3"):
        fit_border_lookahead(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="finite"):
        fit_border_lookahead(np.full((4, 5), np.nan))
