"""The synthetic benchmark: determinism, shapes, and ground truth checked against the pixels it drew."""

import numpy as np
import pytest

from jaxvx.data import CLASS_NAMES, SyntheticConfig, render_clip, synthetic

SMALL = dict(num_frames=12, height=48, width=48)


def _clip(label_name, variant="motion", index=0, **kw):
    """The first clip of the given class (the benchmark places each class once in every block of K indices)."""
    cfg = SyntheticConfig(variant=variant, **{**SMALL, **kw})
    names = CLASS_NAMES[variant]
    for i in range(index * len(names), (index + 1) * len(names)):
        record = render_clip(cfg, "train", i)
        if record["label"] == names.index(label_name):
            return record
    raise AssertionError("every class appears once per block")


def _centres(record):
    b = record["boxes"]
    return (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2


def test_record_keys_shapes_and_dtypes():
    record = synthetic("train", **SMALL)[3]
    t, h, w = 12, 48, 48
    expected = {
        "video": ((t, h, w, 3), np.uint8), "boxes": ((t, 4), np.float32), "present": ((t,), np.bool_),
        "segment": ((2,), np.int64), "actor": ((t, h, w), np.bool_), "distractors": ((t, h, w), np.bool_),
        "motion": ((t, h, w), np.bool_), "flow": ((t, h, w, 2), np.float32), "cue_box": ((4,), np.float32),
    }
    for key, (shape, dtype) in expected.items():
        assert record[key].shape == shape, key
        assert record[key].dtype == dtype, key
    assert isinstance(record["label"], int) and 0 <= record["label"] < 10
    assert record["cue_label"] == -1 and np.all(record["cue_box"] == -1)
    assert "flow" not in synthetic("train", flow=False, **SMALL)[0]


def test_deterministic_and_seed_split_dependent():
    a = synthetic("train", seed=3, **SMALL)
    b = synthetic("train", seed=3, **SMALL)
    for key in ("video", "boxes", "motion", "flow"):
        np.testing.assert_array_equal(a[5][key], b[5][key])
    assert not np.array_equal(a[5]["video"], synthetic("train", seed=4, **SMALL)[5]["video"])
    assert not np.array_equal(a[5]["video"], synthetic("test", seed=3, **SMALL)[5]["video"])


def test_labels_balanced_in_blocks():
    for variant, k in (("motion", 10), ("walk_run", 2)):
        source = synthetic("test", variant=variant, num_clips=4 * k, **SMALL)
        labels = np.array([source[i]["label"] for i in range(4 * k)]).reshape(4, k)
        assert all(sorted(row) == list(range(k)) for row in labels)
        assert source.class_names == CLASS_NAMES[variant]


def test_same_clip_at_any_resolution():
    small = render_clip(SyntheticConfig(num_frames=8, height=40, width=40), "train", 7)
    large = render_clip(SyntheticConfig(num_frames=8, height=120, width=120), "train", 7)
    assert small["label"] == large["label"]
    for s_centre, l_centre in zip(_centres(small), _centres(large)):
        # pixel centres: x_large + 0.5 = 3 (x_small + 0.5), up to a pixel of rasterisation at each size
        np.testing.assert_allclose(3 * (s_centre + 0.5) - 0.5, l_centre, atol=4.0)


def test_box_is_the_tight_box_of_the_pixels_that_differ_from_the_background():
    # no distractors and a translating actor: the background is the per-pixel median over time, so the actor's
    # pixels are observable from the video alone, independently of the generator's masks
    record = _clip("right", distractors=0, num_frames=16, height=64, width=64)
    video = record["video"].astype(int)
    background = np.median(video, axis=0)
    seen = np.any(np.abs(video - background) > 0, axis=-1)
    for t in range(16):
        ys, xs = np.nonzero(seen[t])
        x0, y0, x1, y1 = record["boxes"][t]
        assert xs.min() >= x0 and xs.max() <= x1 and ys.min() >= y0 and ys.max() <= y1
        # tight: the observed actor touches every side of its box (within one pixel: a texture cell may match)
        assert xs.min() <= x0 + 1 and xs.max() >= x1 - 1 and ys.min() <= y0 + 1 and ys.max() >= y1 - 1
    np.testing.assert_array_equal(record["actor"], seen | record["actor"])  # all seen change is the actor


def test_box_contains_actor_mask_and_is_tight():
    record = synthetic("train", **SMALL)[4]
    for t in np.nonzero(record["present"])[0]:
        ys, xs = np.nonzero(record["actor"][t])
        np.testing.assert_array_equal(record["boxes"][t], [xs.min(), ys.min(), xs.max(), ys.max()])


def test_motion_mask_is_where_frames_differ_because_of_the_actor():
    record = _clip("circle_cw", distractors=0)
    video = record["video"].astype(int)
    changed = np.any(video[:-1] != video[1:], axis=-1)
    motion = record["motion"][:-1]
    assert np.all(motion | ~changed), "every change of the frames is in the motion mask"
    # the mask is defined before rounding to uint8: a colour and the background may round alike on a few pixels
    assert (motion & ~changed).sum() <= 0.01 * motion.sum()
    assert motion.sum() > 0


def test_with_distractors_every_change_is_the_actor_or_a_distractor():
    record = synthetic("train", distractors=3, **SMALL)[2]
    video = record["video"].astype(int)
    changed = np.any(video[:-1] != video[1:], axis=-1)
    d = record["distractors"]
    explained = record["motion"][:-1] | d[:-1] | d[1:]
    assert np.all(explained | ~changed)
    assert not np.any(record["distractors"] & record["actor"])


def _texture_hits(record, flow):
    """Share of actor pixels whose colour reappears at (pixel + flow, rounded) in the next frame."""
    video, actor = record["video"].astype(int), record["actor"]
    t, h, w = actor.shape
    hits = total = 0
    for i in range(t - 1):
        ys, xs = np.nonzero(actor[i])
        x1 = np.rint(xs + flow[i, ys, xs, 0]).astype(int)
        y1 = np.rint(ys + flow[i, ys, xs, 1]).astype(int)
        inside = (x1 >= 0) & (x1 < w) & (y1 >= 0) & (y1 < h)
        same = np.all(video[i, ys, xs] == video[i + 1, y1.clip(0, h - 1), x1.clip(0, w - 1)], axis=-1)
        hits += (same & inside).sum()
        total += inside.sum()
    return hits / total


@pytest.mark.parametrize("name", ["right", "up", "rotate_cw", "circle_ccw"])
def test_flow_carries_the_actor_texture_to_the_next_frame(name):
    record = _clip(name, distractors=0, height=64, width=64)
    flow = record["flow"]
    true, still, backwards = (_texture_hits(record, f) for f in (flow, np.zeros_like(flow), -flow))
    # rounding sub-pixel flow to whole pixels misses near the ~3-pixel texture cells' edges
    assert true > 0.75 and true > still + 0.2 and true > backwards + 0.3, (true, still, backwards)
    assert np.all(flow[~record["actor"]] == 0)


@pytest.mark.parametrize("name", ["right", "down", "circle_cw"])
def test_flow_of_a_translating_actor_is_its_displacement(name):
    record = _clip(name, distractors=0, height=96, width=96)
    for i in range(11):
        ys, xs = np.nonzero(record["actor"][i])
        ys1, xs1 = np.nonzero(record["actor"][i + 1])
        mean_flow = record["flow"][i, ys, xs].mean(axis=0)
        # centroids of binary masks jitter by a fraction of a pixel as edges cross pixel centres
        np.testing.assert_allclose(mean_flow, [xs1.mean() - xs.mean(), ys1.mean() - ys.mean()], atol=0.5)


def test_flow_of_a_growing_actor_is_its_expansion():
    record = _clip("grow", distractors=0, height=96, width=96)
    area = record["actor"].sum(axis=(1, 2))
    for i in range(11):
        ys, xs = np.nonzero(record["actor"][i])
        r = np.stack([xs - xs.mean(), ys - ys.mean()], axis=1)
        f = record["flow"][i, ys, xs]
        expansion = np.sum(r * f) / np.sum(r * r)  # least-squares f = e r
        np.testing.assert_allclose(expansion, np.sqrt(area[i + 1] / area[i]) - 1, atol=0.02)


def test_each_class_moves_as_its_name_says():
    def velocity(name):
        x, y = _centres(_clip(name, distractors=0))
        return np.mean(np.diff(x)), np.mean(np.diff(y))

    assert velocity("right")[0] > 0.5 and velocity("left")[0] < -0.5
    assert velocity("up")[1] < -0.5 and velocity("down")[1] > 0.5
    area = {n: _clip(n, distractors=0)["actor"].sum(axis=(1, 2)) for n in ("grow", "shrink")}
    assert area["grow"][-1] > 2 * area["grow"][0] and area["shrink"][0] > 2 * area["shrink"][-1]
    for name, sign in (("circle_cw", 1), ("circle_ccw", -1), ("rotate_cw", 1), ("rotate_ccw", -1)):
        record = _clip(name, distractors=0, height=64, width=64)
        if name.startswith("circle"):  # turning direction of the path: cross product of successive steps
            x, y = _centres(record)
            dx, dy = np.diff(x), np.diff(y)
            turn = dx[:-1] * dy[1:] - dy[:-1] * dx[1:]
        else:  # spin of the actor about its centroid, from the true flow: (r x f) > 0 is clockwise with y down
            turn = []
            for i in range(11):
                ys, xs = np.nonzero(record["actor"][i])
                f = record["flow"][i, ys, xs]
                turn.append(np.mean((xs - xs.mean()) * f[:, 1] - (ys - ys.mean()) * f[:, 0]))
        assert sign * np.sum(turn) > 0, name


def test_rotation_turns_about_the_foot_of_the_stem():
    # the true flow of a rotating actor is a rigid turn, f = (R - I)(p - P) with R = [[a + 1, -b], [b, a + 1]], about
    # a point P that stays put, lies on the actor (the foot of the T's stem) and away from its centroid
    for name in ("rotate_cw", "rotate_ccw"):
        record = _clip(name, distractors=0, height=96, width=96)
        pivots, spins = [], []
        for i in range(11):
            ys, xs = (c.astype(np.float64) for c in np.nonzero(record["actor"][i]))
            f = record["flow"][i, ys.astype(int), xs.astype(int)].astype(np.float64)
            one, zero = np.ones_like(xs), np.zeros_like(xs)
            design = np.concatenate([np.stack([xs, -ys, one, zero], 1), np.stack([ys, xs, zero, one], 1)])
            (a, b, c1, c2), residual, *_ = np.linalg.lstsq(design, np.concatenate([f[:, 0], f[:, 1]]), rcond=None)
            assert np.sqrt(residual[0] / len(design)) < 0.02 * np.abs(f).max(), name  # rigid
            pivot = -np.linalg.solve([[a, -b], [b, a]], [c1, c2])
            pivots.append(pivot)
            spins.append(b)
            assert np.linalg.norm(pivot - [xs.mean(), ys.mean()]) > 8, name  # 1.27 radii; the centre: 0.27
            assert np.min(np.hypot(xs - pivot[0], ys - pivot[1])) < 1.5, name
        assert np.all(np.std(pivots, axis=0) < 0.05), (name, pivots)
        assert np.all(np.sign(spins) == (1 if name == "rotate_cw" else -1)), name


def test_walk_and_run_differ_in_speed_only():
    speeds = {0: [], 1: []}
    source = synthetic("test", variant="walk_run", num_clips=24, distractors=0, num_frames=16, height=64, width=64)
    for record in source:
        x, _ = _centres(record)
        speeds[record["label"]].append(abs(x[-1] - x[0]) / 15)
    assert max(speeds[0]) < min(speeds[1])
    assert np.mean(speeds[1]) > 2 * np.mean(speeds[0])


def test_title_frames():
    record = synthetic("train", title_frames=4, **SMALL)[0]
    assert not record["present"][:4].any() and record["present"][4:].all()
    np.testing.assert_array_equal(record["segment"], [4, 12])
    assert np.all(record["boxes"][:4] == -1) and not record["motion"][:4].any()
    assert not record["distractors"][:4].any()
    assert all(np.array_equal(record["video"][0], record["video"][i]) for i in range(4))  # static card


def test_action_segment_with_static_surround():
    record = _clip("right", distractors=0, action_frames=5)
    start, end = record["segment"]
    assert end - start == 5
    moving = record["motion"].any(axis=(1, 2))
    np.testing.assert_array_equal(moving, (np.arange(12) >= start) & (np.arange(12) < end))
    boxes = record["boxes"]
    assert np.all(boxes[:start + 1] == boxes[0]) and np.all(boxes[end:] == boxes[-1])
    assert record["present"].all()


def test_action_segment_with_other_class_surround():
    source = synthetic("train", action_frames=4, surround="other", **SMALL)
    for record in source[:5]:
        start, end = record["segment"]
        inside = (np.arange(12) >= start) & (np.arange(12) < end)
        np.testing.assert_array_equal(record["present"], inside)
        assert not record["motion"][~inside].any()


def test_context_cue_matches_the_class_in_training_only():
    train = synthetic("train", context_cue=1.0, num_clips=20, **SMALL)
    test = synthetic("test", context_cue=1.0, num_clips=60, **SMALL)
    assert all(r["cue_label"] == r["label"] for r in train)
    assert np.mean([r["cue_label"] == r["label"] for r in test]) < 0.4
    record = train[0]
    x0, y0, x1, y1 = record["cue_box"].astype(int)
    inner = record["video"][:, y0 + 1:y1, x0 + 1:x1].reshape(-1, 3)
    assert (inner == inner[0]).all(axis=1).mean() > 0.6  # a flat colour, under distractors at times
    none = synthetic("train", context_cue=0.0, num_clips=40, **SMALL)
    assert np.mean([r["cue_label"] == r["label"] for r in none]) < 0.4


def test_batch_stacks_records():
    source = synthetic("train", num_clips=6, **SMALL)
    batch = source.batch([0, 2, 5], keys=["video", "label", "boxes"])
    assert set(batch) == {"video", "label", "boxes"}
    assert batch["video"].shape == (3, 12, 48, 48, 3)
    np.testing.assert_array_equal(batch["label"], [source[i]["label"] for i in (0, 2, 5)])
    with pytest.raises(KeyError, match="unknown keys"):
        source.batch([0], keys=["nope"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(variant="dance"), "variant must be one of"),
        (dict(num_frames=0), "num_frames must be an int >= 1"),
        (dict(height=4), "height must be an int >= 8"),
        (dict(title_frames=16), "title_frames must be < num_frames"),
        (dict(action_frames=17), "action_frames must be None or in"),
        (dict(surround="loop"), "surround must be one of"),
        (dict(context_cue=1.5), "context_cue must be None or a rate"),
    ],
)
def test_invalid_config_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic("train", **kwargs)


def test_invalid_source_arguments():
    with pytest.raises(ValueError, match="split must be one of"):
        synthetic("dev")
    with pytest.raises(TypeError, match="unknown synthetic option"):
        synthetic("train", frames=8)
    with pytest.raises(IndexError, match="out of range"):
        synthetic("train", num_clips=3)[3]
