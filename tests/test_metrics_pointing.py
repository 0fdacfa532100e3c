"""Spatial and temporal pointing games against direct references, orientation checks and the synthetic benchmark."""

import jax
import numpy as np
import pytest

from jaxvx.data import synthetic
from jaxvx.metrics import argmax_point, pointing_accuracy, spatial_pointing_game, temporal_pointing_game


def test_argmax_orientation_asymmetric():
    # a 12 x 20 map (H != W) with its maximum at row 3, column 15: x is the column, y the row
    r = np.zeros((1, 1, 12, 20), np.float32)
    r[0, 0, 3, 15] = 1.0
    x, y = argmax_point(r)
    assert (int(x[0, 0]), int(y[0, 0])) == (15, 3)
    hit_box = np.array([[[14, 2, 16, 4]]], np.float32)  # (x_min, y_min, x_max, y_max) around column 15, row 3
    swapped = np.array([[[2, 14, 4, 16]]], np.float32)  # the same box with rows and columns swapped
    assert bool(spatial_pointing_game(r, hit_box, tolerance=0).hits[0, 0])
    assert not bool(spatial_pointing_game(r, swapped, tolerance=0).hits[0, 0])
    # channels are summed before the argmax
    rc = np.zeros((1, 1, 12, 20, 3), np.float32)
    rc[0, 0, 3, 15] = [0.4, 0.4, 0.4]
    rc[0, 0, 5, 5] = [1.0, 0.0, 0.0]
    assert bool(spatial_pointing_game(rc, hit_box, tolerance=0).hits[0, 0])


def test_disk_versus_box_tolerance():
    r = np.zeros((1, 2, 30, 30), np.float32)
    r[0, :, 20, 20] = 1.0  # the point (x=20, y=20)
    boxes = np.array([[[10, 10, 15, 15], [10, 10, 14, 15]]], np.float32)  # dx=dy=5 ; dx=6, dy=5
    disk = spatial_pointing_game(r, boxes, tolerance=7, shape="disk")
    box = spatial_pointing_game(r, boxes, tolerance=7, shape="box")
    # distance sqrt(50) = 7.07 > 7: a miss in the disk; in the box grown by 7 px: a hit. sqrt(61) misses too.
    np.testing.assert_array_equal(np.asarray(disk.hits), [[False, False]])
    np.testing.assert_array_equal(np.asarray(box.hits), [[True, True]])
    r2 = r[:, :1]
    assert bool(spatial_pointing_game(r2, boxes[:, :1], tolerance=7.08, shape="disk").hits[0, 0])
    assert not bool(spatial_pointing_game(r2, boxes[:, :1], tolerance=4.9, shape="box").hits[0, 0])


def _reference_hits(r, boxes, tolerance, shape):
    """TorchRay's definition written out: a hit if any pixel of the box lies within the tolerance of the argmax."""
    b, t, h, w = r.shape
    hits = np.zeros((b, t), bool)
    valid = boxes[..., 0] >= 0
    for i in range(b):
        for j in range(t):
            if not valid[i, j]:
                continue
            y, x = np.unravel_index(np.argmax(r[i, j]), (h, w))
            x0, y0, x1, y1 = boxes[i, j].astype(int)
            ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1]
            if shape == "disk":
                d = np.sqrt((xs - x) ** 2 + (ys - y) ** 2)
            else:
                d = np.maximum(np.abs(xs - x), np.abs(ys - y))
            hits[i, j] = (d <= tolerance).any()
    return hits, valid


@pytest.mark.parametrize("shape", ["disk", "box"])
def test_matches_pixel_enumeration(shape):
    rng = np.random.default_rng(0)
    b, t, h, w = 4, 6, 24, 32
    r = rng.normal(size=(b, t, h, w)).astype(np.float32)
    x0 = rng.integers(0, w - 6, size=(b, t))
    y0 = rng.integers(0, h - 6, size=(b, t))
    boxes = np.stack([x0, y0, x0 + rng.integers(0, 6, (b, t)), y0 + rng.integers(0, 6, (b, t))], -1).astype(np.float32)
    boxes[rng.uniform(size=(b, t)) < 0.25] = -1  # frames without a box
    want_hits, want_valid = _reference_hits(r, boxes, 7, shape)
    got = jax.jit(lambda r, bx: spatial_pointing_game(r, bx, tolerance=7, shape=shape))(r, boxes)
    np.testing.assert_array_equal(np.asarray(got.valid), want_valid)
    np.testing.assert_array_equal(np.asarray(got.hits), want_hits)
    assert 0 < want_hits[want_valid].mean() < 1


def test_ties_first_versus_centroid():
    # a saturated 9 x 9 plateau at rows and columns 10..18 of a 32 x 32 map: argmax takes its top-left pixel
    # (10, 10); the centroid of the tied pixels is (14, 14)
    r = np.zeros((1, 2, 32, 32), np.float32)
    r[0, :, 10:19, 10:19] = 1.0
    r[0, 1, 0, 0] = 1.0  # frame 1: one more tied pixel at (0, 0), pulling the centroid to (81 * 14 / 82, ...)
    boxes = np.array([[[13, 13, 15, 15], [13, 13, 15, 15]]], np.float32)
    first = spatial_pointing_game(r, boxes, tolerance=2)
    centroid = spatial_pointing_game(r, boxes, tolerance=2, ties="centroid")
    np.testing.assert_array_equal(np.asarray(first.hits), [[False, False]])  # (10, 10) is 3 px off in x and y
    np.testing.assert_array_equal(np.asarray(centroid.hits), [[True, True]])  # (14, 14) and (13.83, 13.83)
    # a unique maximum: the two rules agree
    u = np.random.default_rng(0).random((2, 4, 16, 16)).astype(np.float32)
    ub = np.tile(np.array([4, 4, 8, 8], np.float32), (2, 4, 1))
    np.testing.assert_array_equal(np.asarray(spatial_pointing_game(u, ub, tolerance=1).hits),
                                  np.asarray(spatial_pointing_game(u, ub, tolerance=1, ties="centroid").hits))
    with pytest.raises(ValueError, match="ties"):
        spatial_pointing_game(r, boxes, ties="middle")


def test_frames_without_box_are_left_out():
    r = np.zeros((1, 3, 8, 8), np.float32)  # argmax at (0, 0) everywhere
    boxes = np.array([[[0, 0, 1, 1], [-1, -1, -1, -1], [5, 5, 7, 7]]], np.float32)
    res = spatial_pointing_game(r, boxes, tolerance=0)
    np.testing.assert_array_equal(np.asarray(res.valid), [[True, False, True]])
    np.testing.assert_array_equal(np.asarray(res.hits), [[True, False, False]])
    assert float(res.clip_scores()[0]) == 0.5  # 1 of 2 annotated frames, not 1 of 3 (or 2 of 3 with a free pass)
    present = np.array([[False, True, True]])
    res = spatial_pointing_game(r, boxes, tolerance=0, present=present)
    np.testing.assert_array_equal(np.asarray(res.valid), [[False, False, True]])
    assert np.isnan(float(spatial_pointing_game(r, np.full((1, 3, 4), -1.0), tolerance=0).clip_scores()[0]))


def test_pointing_accuracy_per_class_mean():
    hits = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 0], [1, 1, 1]], bool)
    valid = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0]], bool)
    labels = np.array([0, 0, 1, 2])
    acc = pointing_accuracy(hits, valid, labels, num_classes=4)
    # class 0: 2 hits of 5 frames; class 1: 1 of 1; classes 2 and 3: nothing valid (left out of the mean)
    np.testing.assert_allclose(acc["per_class"][:2], [0.4, 1.0])
    assert np.isnan(acc["per_class"][2]) and np.isnan(acc["per_class"][3])
    assert acc["class_mean"] == pytest.approx(0.7)
    assert acc["overall"] == pytest.approx(3 / 6)
    np.testing.assert_array_equal(acc["counts"], [5, 1, 0, 0])
    with pytest.raises(ValueError, match="labels"):
        pointing_accuracy(hits, valid, labels, num_classes=2)


def test_temporal_pointing_game():
    rng = np.random.default_rng(1)
    r = rng.uniform(size=(5, 8, 4, 4, 3)).astype(np.float32)
    segment = np.array([[0, 8], [2, 5], [6, 8], [3, 3], [0, 1]])
    got = temporal_pointing_game(r, segment)
    peak = r.sum(axis=(2, 3, 4)).argmax(axis=1)
    want = (peak >= segment[:, 0]) & (peak < segment[:, 1])
    np.testing.assert_array_equal(np.asarray(got.valid), [True, True, True, False, True])
    np.testing.assert_array_equal(np.asarray(got.hits), want & np.asarray(got.valid))
    mask = (np.arange(8)[None] >= segment[:, :1]) & (np.arange(8)[None] < segment[:, 1:])
    same = temporal_pointing_game(r, mask)
    np.testing.assert_array_equal(np.asarray(same.hits), np.asarray(got.hits))
    # a temporal saliency [B, T] works as is
    sal = np.zeros((1, 6), np.float32)
    sal[0, 4] = 1
    assert bool(temporal_pointing_game(sal, np.array([[4, 6]])).hits[0])
    assert not bool(temporal_pointing_game(sal, np.array([[0, 4]])).hits[0])


def test_synthetic_actor_mask_scores_perfectly():
    source = synthetic("test", num_clips=4, height=48, width=64, num_frames=8, title_frames=2, flow=False)
    batch = source.batch(range(4), keys=["actor", "boxes", "present", "distractors", "segment"])
    actor = batch["actor"].astype(np.float32)
    res = spatial_pointing_game(actor, batch["boxes"], tolerance=0, present=batch["present"])
    valid = np.asarray(res.valid)
    np.testing.assert_array_equal(valid, batch["present"])
    assert valid.sum() == 4 * 6  # the title frames have no box and are left out
    assert np.asarray(res.hits)[valid].all()
    # a map on the distractors only misses (almost) always with zero tolerance
    distract = spatial_pointing_game(batch["distractors"].astype(np.float32), batch["boxes"], tolerance=0)
    assert np.asarray(distract.hits)[valid].mean() < 0.3
    # the actor's frames are the segment: temporal pointing game on the actor mask hits
    tp = temporal_pointing_game(actor, batch["segment"])
    assert np.asarray(tp.hits).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"boxes must be \[B, T, 4\]"):
        spatial_pointing_game(np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="shape must be"):
        spatial_pointing_game(np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 4)), shape="circle")
    with pytest.raises(ValueError, match="tolerance"):
        spatial_pointing_game(np.zeros((1, 2, 4, 4)), np.zeros((1, 2, 4)), tolerance=-1)
    with pytest.raises(ValueError, match="segment"):
        temporal_pointing_game(np.zeros((1, 2, 4, 4)), np.zeros((1, 3), int))
