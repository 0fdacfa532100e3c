"""Farneback optical flow: a known translation is recovered, padding modes and batch axes."""

import numpy as np
import pytest

from jaxvx.data import synthetic
from jaxvx.flow import farneback
from jaxvx.metrics import motion_precision


def _translating_texture(shift=(2, 1), frames=4, size=64):
    rng = np.random.default_rng(0)
    big = rng.uniform(0, 255, size=(size // 4 + 8, size // 4 + 8)).repeat(4, 0).repeat(4, 1)
    from scipy.ndimage import gaussian_filter
    big = gaussian_filter(big, 2.0)
    dx, dy = shift
    clip = np.stack([np.roll(big, (dy * i, dx * i), axis=(0, 1))[:size, :size] for i in range(frames)])
    return np.repeat(np.clip(clip, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def test_recovers_translation():
    clip = _translating_texture((2, 1))
    flow = farneback(clip)
    assert flow.shape == (4, 64, 64, 2) and flow.dtype == np.float32
    inner = flow[:3, 16:48, 16:48].reshape(-1, 2)
    np.testing.assert_allclose(np.median(inner, axis=0), [2.0, 1.0], atol=0.15)
    np.testing.assert_array_equal(flow[3], flow[2])  # pad="repeat"


def test_padding_modes_and_batches():
    clip = _translating_texture((1, 0), frames=3, size=32)
    assert farneback(clip, pad="none").shape == (2, 32, 32, 2)
    z = farneback(clip, pad="zeros")
    np.testing.assert_array_equal(z[-1], 0)
    batch = farneback(np.stack([clip, clip[:, :, ::-1]]), pad="none")
    assert batch.shape == (2, 2, 32, 32, 2)
    np.testing.assert_array_equal(batch[0], farneback(clip, pad="none"))
    with pytest.raises(ValueError, match="T >= 2"):
        farneback(clip[:1])
    with pytest.raises(ValueError, match="pad"):
        farneback(clip, pad="loop")


def test_flow_motion_precision_close_to_true_motion_on_synthetic():
    source = synthetic("test", num_clips=4, height=64, width=64, num_frames=8, distractors=0)
    batch = source.batch(range(4), keys=["video", "motion", "actor", "flow"])
    flow = farneback(batch["video"])
    p = np.asarray(motion_precision(batch["motion"].astype(np.float32), flow))
    background = (~(batch["actor"] | batch["motion"])).astype(np.float32)
    p_background = np.asarray(motion_precision(background, flow))
    # the true motion mask as a map lies on Farneback's motion far more than the static background does (which
    # still gets some: the flow window smears motion onto the pixels around a moving object) ...
    assert np.all(p > p_background + 0.2), (p, p_background)
    # ... and wholly so where the actor moves faster than 2 px per frame (slow scaling, and rotation near its pivot, fall under 0.5 px)
    speed = np.array([np.median(np.linalg.norm(f[a], axis=-1)) for f, a in zip(batch["flow"], batch["actor"])])
    assert (speed > 2).sum() >= 2
    assert np.all(p[speed > 2] > 0.9), (p, speed)
