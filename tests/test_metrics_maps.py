"""motion_precision, selectivity and agreement against NumPy, and on the synthetic benchmark's true motion."""

import numpy as np
import pytest

from jaxvx.data import synthetic
from jaxvx.metrics import agreement, motion_mask, motion_precision, selectivity
from jaxvx.transforms import selective


def test_motion_precision_matches_numpy():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(3, 4, 6, 7, 3)).astype(np.float32)
    m = rng.uniform(size=(3, 4, 6, 7)) < 0.4
    r[2] = -np.abs(r[2])  # a clip with no positive relevance
    got = np.asarray(motion_precision(r, m))
    rs = r.sum(-1)
    for b in range(2):
        pos = rs[b] > 0
        assert got[b] == pytest.approx((pos & m[b]).sum() / pos.sum(), rel=1e-6)
        w = np.maximum(rs[b], 0)
        assert float(motion_precision(r, m, weighted=True)[b]) == pytest.approx((w * m[b]).sum() / w.sum(), rel=1e-5)
    assert np.isnan(got[2])


def test_motion_from_flow_threshold():
    flow = np.zeros((1, 2, 3, 4, 2), np.float32)
    flow[0, 0, 1, 2] = [0.3, 0.4]  # magnitude 0.5: not above 0.5
    flow[0, 1, 2, 3] = [0.0, -0.6]
    m = np.asarray(motion_mask(flow))
    assert m.sum() == 1 and m[0, 1, 2, 3]
    assert np.asarray(motion_mask(flow, threshold=0.49)).sum() == 2
    np.testing.assert_array_equal(np.asarray(motion_mask(np.linalg.norm(flow, axis=-1), threshold=0.49)),
                                  np.asarray(motion_mask(flow, threshold=0.49)))
    r = np.zeros((1, 2, 3, 4), np.float32)
    r[0, 1, 2, 3] = 1.0
    r[0, 0, 0, 0] = 2.0
    assert float(motion_precision(r, flow)[0]) == 0.5
    with pytest.raises(ValueError, match="grid"):
        motion_precision(r, flow[:, :1])


def test_synthetic_true_motion():
    source = synthetic("test", num_clips=3, height=40, width=48, num_frames=8, flow=True)
    batch = source.batch(range(3), keys=["actor", "motion", "flow"])
    motion = batch["motion"]
    # a map equal to the true motion mask has precision 1 against it, and against the true flow's support
    assert np.all(np.asarray(motion_precision(motion.astype(np.float32), motion)) == 1.0)
    # the actor mask: precision = the share of actor pixels that move
    actor = batch["actor"]
    want = (actor & motion).sum(axis=(1, 2, 3)) / actor.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(motion_precision(actor.astype(np.float32), motion)), want, rtol=1e-6)
    assert np.all(want < 1)


def test_selectivity_and_agreement_match_numpy():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(2, 6, 10, 12, 3)).astype(np.float32)
    sel = np.asarray(selective(1.0)(base))
    got = selectivity(sel, base)
    nz_s = (sel != 0).any(-1).sum(axis=(1, 2, 3))
    nz_b = (base != 0).any(-1).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(got.positions), nz_s / nz_b, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got.relevance),
                               np.abs(sel).sum(axis=(1, 2, 3, 4)) / np.abs(base).sum(axis=(1, 2, 3, 4)), rtol=1e-5)
    assert np.all(np.asarray(got.positions) < 1)

    a = base.sum(-1)
    b = rng.normal(size=a.shape).astype(np.float32)
    pa, pb = a > 0, b > 0
    want = (pa & pb).sum(axis=(1, 2, 3)) / (pa | pb).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(agreement(base, b)), want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(agreement(a, a)), 1.0)
    np.testing.assert_allclose(np.asarray(agreement(a, -a)), 0.0)
    assert np.isnan(float(agreement(-np.abs(a[:1]), -np.abs(b[:1]))[0]))
