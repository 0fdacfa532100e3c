"""The 30 % key-frame detector: difference signal, iterative baseline, peak picking, correlation with saliency."""

import numpy as np
import pytest
from scipy.signal import find_peaks

from jaxvx.metrics import (
    difference_signal,
    iterative_baseline,
    keyframe_correlation,
    keyframes,
    peak_indices,
)


def test_difference_signal_without_blur_counts_brighter_pixels():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(5, 9, 11), dtype=np.uint8)
    got = difference_signal(gray, blur=1)
    want = [0] + [int((gray[t].astype(int) > gray[t - 1].astype(int)).sum()) for t in range(1, 5)]
    np.testing.assert_array_equal(got, want)
    # RGB goes through grayscale first: a frame getting darker counts nothing, brighter counts every pixel
    rgb = np.zeros((3, 4, 4, 3), np.uint8)
    rgb[1] = 200
    rgb[2] = 100
    np.testing.assert_array_equal(difference_signal(rgb, blur=1), [0, 16, 0])
    with pytest.raises(ValueError, match="blur"):
        difference_signal(gray, blur=4)
    with pytest.raises(ValueError, match="uint8"):
        difference_signal(gray.astype(np.float32))


def test_blur_spreads_a_changed_pixel():
    gray = np.full((2, 21, 21), 100, np.uint8)
    gray[1, 10, 10] = 255
    assert difference_signal(gray, blur=1)[1] == 1
    blurred = difference_signal(gray, blur=9)[1]
    assert 9 < blurred <= 81  # the change now covers (part of) the 9 x 9 kernel's support


def test_iterative_baseline_follows_the_floor():
    t = np.arange(40, dtype=np.float64)
    floor = 0.05 * (t - 15) ** 2 + 3
    np.testing.assert_allclose(iterative_baseline(floor), floor, rtol=1e-6, atol=1e-6)
    spiky = floor.copy()
    spiky[[8, 25]] += 50
    base = iterative_baseline(spiky)
    # the baseline stays near the floor, under the spikes (the plain least-squares fit would be lifted by them)
    plain = np.polyval(np.polyfit(t, spiky, 2), t)
    assert np.abs(base - floor).max() < np.abs(plain - floor).max()
    assert np.all(base[[8, 25]] < spiky[[8, 25]] - 40)


def test_peaks_match_scipy_on_signals_without_plateaus():
    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.normal(size=30)
        thr = 0.3 * (y.max() - y.min()) + y.min()
        want, _ = find_peaks(y, height=thr)
        want = want[y[want] > thr]
        np.testing.assert_array_equal(peak_indices(y, thr), want)


@pytest.mark.parametrize("y, want", [
    ([0, 1, 1, 0], [1]),               # plateau of two: its first sample
    ([0, 1, 1, 1, 0], [2]),            # plateau of three: the middle
    ([0, 2, 2, 2, 2, 0], [2]),         # even plateau: ceil((a + b - 1) / 2)
    ([1, 1, 0, 2, 0], [3]),            # a run touching the start is not a peak
    ([0, 2, 0, 3, 3], [1]),            # nor one touching the end
    ([0, 1, 1, 2, 0], [3]),            # a shelf on the way up is not a peak
    ([3, 3, 3, 3], []),                # flat
    ([5, 0], []),
])
def test_peaks_on_plateaus(y, want):
    np.testing.assert_array_equal(peak_indices(np.asarray(y, float), -1.0), want)


def test_keyframes_find_scene_changes():
    rng = np.random.default_rng(2)
    t, h, w = 24, 48, 64
    # a static textured scene with slow noise, and new content (a bright block) appearing at frames 6 and 17
    base = rng.integers(40, 90, size=(h, w), dtype=np.uint8)
    frames = np.repeat(base[None], t, axis=0).copy()
    frames[6:, 5:30, 5:40] = 220
    frames[17:, 25:45, 30:60] = 250
    video = np.repeat(frames[..., None], 3, axis=-1)
    kf = keyframes(video)
    np.testing.assert_array_equal(kf.indices, [6, 17])
    assert kf.mask.sum() == 2 and kf.mask[6] and kf.mask[17]
    np.testing.assert_allclose(kf.signal, kf.difference - kf.baseline)
    assert kf.threshold == pytest.approx(0.3 * (kf.signal.max() - kf.signal.min()) + kf.signal.min())
    # a higher threshold keeps only the larger change
    assert list(keyframes(video, threshold=0.95).indices) == [6 if kf.signal[6] > kf.signal[17] else 17]


def test_keyframe_correlation_is_pearson():
    rng = np.random.default_rng(3)
    sal = rng.uniform(size=(4, 16)).astype(np.float32)
    mask = rng.uniform(size=(4, 16)) < 0.25
    mask[:, 0] = True
    got = np.asarray(keyframe_correlation(sal, mask))
    want = [np.corrcoef(sal[i], mask[i].astype(float))[0, 1] for i in range(4)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.isnan(float(keyframe_correlation(sal[0], np.zeros(16, bool))))
    assert float(keyframe_correlation(mask[0].astype(np.float32), mask[0])) == pytest.approx(1.0)
