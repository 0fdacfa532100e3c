"""jaxvx.pipeline.run: rows against direct computation, sharding over 4 host devices, resume, input errors, skips."""

import functools
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvx import pipeline
from jaxvx.pipeline import MetricOptions, OutputOptions, Sampling
from jaxvx.data import synthetic
from jaxvx.metrics import (keyframe_correlation, keyframes, motion_precision, perturbation_curve, selectivity,
                           spatial_pointing_game, temporal_pointing_game)
from jaxvx.transforms import selective, sum_channels

T, S, K = 8, 24, 10


def prun(*args, sampling=None, **kwargs):
    """pipeline.run with snippets of the clips' length."""
    return pipeline.run(*args, sampling=sampling or Sampling(length=T), **kwargs)


def make_source(num_clips=7):
    return synthetic("test", num_clips=num_clips, num_frames=T, height=S, width=S, distractors=1, action_frames=5,
                     flow=False)


def make_variables():
    rng = np.random.default_rng(0)
    return {"w": jnp.asarray(rng.normal(size=(T * 6 * 6 * 3, K)).astype(np.float32))}


def apply(variables, video):
    """A tiny video classifier: 4x4 average pooling, then one dense layer."""
    b = video.shape[0]
    pooled = video.reshape(b, T, 6, 4, 6, 4, 3).mean(axis=(3, 5))
    return pooled.reshape(b, -1) @ variables["w"]


def input_gradient(forward, video, target=None, *, key=None):
    def score(v):
        return jnp.take_along_axis(forward(v), target[:, None], axis=1).sum()

    return jax.grad(score)(video)


def gradient_x_input(forward, video, target=None, *, key=None):
    """A map that depends on the frames (the tiny model's gradient alone does not: it is linear), with zeros and
    signs of its own."""
    return video * input_gradient(forward, video, target)


def run_reference_config(out, **kwargs):
    """The run the sharding test repeats on 4 devices (imported by the subprocess)."""
    return prun(make_source(), apply, {"grad": input_gradient}, variables=make_variables(),
                transforms=[sum_channels(), selective(1.0, padding="edge")], batch_size=4, out=out,
                progress=False, output=OutputOptions(save_maps=True), **kwargs)


def _ok_rows(res):
    return sorted((r for r in res.rows if r["status"] == "ok"), key=lambda r: r["clip"])


def test_rows_match_direct_computation(tmp_path):
    source = make_source()
    variables = make_variables()
    traces = []

    def counting_gradient(forward, video, target=None, *, key=None):
        traces.append(video.shape)  # runs once per trace, not per call
        return input_gradient(forward, video, target)

    res = prun(source, apply, {"grad": counting_gradient}, variables=variables, batch_size=3, out=tmp_path,
               progress=False, output=OutputOptions(save_maps=True))
    rows = _ok_rows(res)
    assert [r["clip"] for r in rows] == list(range(7))  # 3 + 3 + 1 (padded) clips
    assert traces == [(3, T, S, S, 3)]  # one compiled step for the three batches
    batch = source.batch(range(7))
    video = jnp.asarray(batch["video"].astype(np.float32) / 255.0)
    label = jnp.asarray(batch["label"])
    maps = jax.jit(lambda v, t: input_gradient(lambda x: apply(variables, x), v, t))(video, label)
    logits = apply(variables, video)
    spg = spatial_pointing_game(maps, batch["boxes"], tolerance=7, present=batch["present"]).clip_scores()
    tpg = temporal_pointing_game(maps, batch["segment"]).clip_scores()
    mp = motion_precision(maps, batch["motion"])
    for i, row in enumerate(rows):
        m = row["methods"]["grad"]
        assert row["label"] == int(label[i]) == row["target"]
        assert row["prediction"] == int(jnp.argmax(logits[i]))
        assert row["score"] == pytest.approx(float(jax.nn.softmax(logits[i])[label[i]]), rel=1e-5)
        assert m["spatial_pointing_game"] == pytest.approx(float(spg[i]))
        assert m["temporal_pointing_game"] == pytest.approx(float(tpg[i]))
        assert m["motion_precision"] == pytest.approx(float(mp[i]), rel=1e-5)
        assert m["spatial_pointing_game_frames"] == int(batch["present"][i].sum())
        assert len(m["frame_share"]) == T
        saved = np.load(tmp_path / "maps" / "grad" / f"{i:06d}.npy")
        np.testing.assert_allclose(saved, np.asarray(maps[i]), rtol=1e-5, atol=1e-7)
    # the results file: a header, then one line per clip
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert "header" in json.loads(lines[0]) and len(lines) == 8
    summary = (tmp_path / "summary.md").read_text()
    assert "| grad | spatial_pointing_game |" in summary and "95 % CI" in summary
    want = np.nanmean([float(s) for s in spg])
    got = next(r for r in res.summary if r["method"] == "grad" and r["metric"] == "spatial_pointing_game")
    assert got["mean"] == pytest.approx(want) and got["low"] <= want <= got["high"]
    assert any(r["metric"].startswith("border B") for r in res.summary)


@pytest.mark.parametrize("reduce", [True, False])
def test_selectivity_metric_against_the_methods_own_map(reduce):
    """What the transforms keep, against the method's map (summed over channels when they reduced them, as
    ``jaxvx run`` does before selective relevance)."""
    source, variables = make_source(4), make_variables()

    select = selective(1.0, padding="edge")
    chain = [sum_channels(), select] if reduce else [select]
    res = prun(source, apply, {"gxi": gradient_x_input}, variables=variables, transforms=chain,
               metrics=["selectivity"], batch_size=4, progress=False)
    batch = source.batch(range(4))
    video = jnp.asarray(batch["video"].astype(np.float32) / 255.0)
    raw = gradient_x_input(lambda x: apply(variables, x), video, jnp.asarray(batch["label"]))
    base = raw.sum(axis=-1) if reduce else raw
    want = selectivity(select(base), base)
    assert np.all(np.asarray(want.positions) < 1) and np.all(np.asarray(want.positions) > 0)
    for i, row in enumerate(_ok_rows(res)):
        m = row["methods"]["gxi"]
        assert m["selectivity_positions"] == pytest.approx(float(want.positions[i]), rel=1e-5)
        assert m["selectivity_relevance"] == pytest.approx(float(want.relevance[i]), rel=1e-4)


def test_keyframe_correlation_metric_against_direct_computation():
    """Jayawardhana et al.'s comparison: the map's per-frame sum against the key frames of the sampled frames."""
    source, variables = make_source(6), make_variables()

    res = prun(source, apply, {"gxi": gradient_x_input}, variables=variables, metrics=["keyframe_correlation"],
               batch_size=3, progress=False, metric_options=MetricOptions(keyframe_options={"threshold": 0.2}))
    batch = source.batch(range(6))
    video = jnp.asarray(batch["video"].astype(np.float32) / 255.0)
    maps = gradient_x_input(lambda x: apply(variables, x), video, jnp.asarray(batch["label"]))
    per_frame = maps.reshape(6, T, -1).sum(axis=-1)
    masks = np.stack([keyframes(clip, threshold=0.2).mask for clip in batch["video"]])
    want = np.asarray(keyframe_correlation(per_frame, masks))
    got = np.array([np.nan if r["methods"]["gxi"]["keyframe_correlation"] is None
                    else r["methods"]["gxi"]["keyframe_correlation"] for r in _ok_rows(res)])
    assert np.isfinite(want).sum() >= 3  # most clips have key frames and a varying saliency
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)  # NaN where they are undefined, on both sides


def test_deletion_insertion_metrics_against_direct_computation():
    """Every method's curves against :func:`perturbation_curve` run alone; the two map-independent points of the
    curves are one forward per batch for all of them (the step's own forward and one of the baseline)."""
    source, variables = make_source(4), make_variables()
    calls = []

    def counted(variables, video):
        jax.debug.callback(lambda: calls.append(1))
        return apply(variables, video)

    def reversed_gxi(forward, video, target=None, *, key=None):
        return -gradient_x_input(forward, video, target)

    methods = {"gxi": gradient_x_input, "reversed": reversed_gxi}
    opts = MetricOptions(perturbation_steps=4, perturbation_baseline=0.25)
    res = prun(source, counted, methods, variables=variables, metrics=["deletion_frames", "insertion_frames"],
               batch_size=4, progress=False, metric_options=opts)
    # one batch: the prediction, each method's own forward (its gradient), the baseline, then S - 1 = 3 steps for
    # each of 2 curves of 2 methods (S + 1 = 5 each without the shared points: 23 calls)
    assert len(calls) == 1 + 2 + 1 + 2 * 2 * 3
    batch = source.batch(range(4))
    video = jnp.asarray(batch["video"].astype(np.float32) / 255.0)
    forward = functools.partial(apply, variables)
    target = jnp.asarray(batch["label"])
    rows = _ok_rows(res)
    for name, method in methods.items():
        rel = method(forward, video, target)
        for mode in ("deletion", "insertion"):
            want = perturbation_curve(forward, video, rel, target, mode=mode, steps=4, baseline=0.25)
            got = [r["methods"][name][f"{mode}_frames"] for r in rows]
            got_auc = [r["methods"][name][f"{mode}_frames_auc"] for r in rows]
            np.testing.assert_allclose(got, np.asarray(want.aopc), rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(got_auc, np.asarray(want.auc), rtol=1e-4, atol=1e-6)
    # the two maps order the frames oppositely: what one deletes first hurts the score more
    assert any(r["methods"]["gxi"]["deletion_frames"] != r["methods"]["reversed"]["deletion_frames"] for r in rows)


@pytest.mark.slow
def test_sharded_run_equals_single_device(tmp_path):
    single = run_reference_config(tmp_path / "one")
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
        import jax
        assert jax.device_count() == 4, jax.devices()
        import test_pipeline as tp
        res = tp.run_reference_config({str(tmp_path / "four")!r})
        print(json.dumps(res.rows))
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = json.loads((tmp_path / "four" / "results.jsonl").read_text().splitlines()[0])["header"]
    assert len(header["devices"]) == 4
    four = sorted((r for r in json.loads(proc.stdout.strip().splitlines()[-1]) if r["status"] == "ok"),
                  key=lambda r: r["clip"])
    one = _ok_rows(single)
    assert [r["clip"] for r in four] == [r["clip"] for r in one] == list(range(7))
    for a, b in zip(one, four):
        assert (a["prediction"], a["target"]) == (b["prediction"], b["target"])
        assert a["score"] == pytest.approx(b["score"], rel=1e-5)
        for key, value in a["methods"]["grad"].items():
            np.testing.assert_allclose(np.asarray(b["methods"]["grad"][key], dtype=float),
                                       np.asarray(value, dtype=float), rtol=1e-5, atol=1e-7, err_msg=key)
        np.testing.assert_allclose(np.load(tmp_path / "four" / "maps" / "grad" / f"{a['clip']:06d}.npy"),
                                   np.load(tmp_path / "one" / "maps" / "grad" / f"{a['clip']:06d}.npy"),
                                   rtol=1e-5, atol=1e-7)


class _Crashing:
    """A source that dies (like a killed process) when asked for clip ``crash_at``."""

    def __init__(self, source, crash_at):
        self.source, self.crash_at = source, crash_at

    def __repr__(self):  # the same data as the source it wraps: a resume compares sources by their repr
        return repr(self.source)

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        if i == self.crash_at:
            raise KeyboardInterrupt
        return self.source[i]


@pytest.mark.slow
def test_resume_after_crash(tmp_path):
    source = make_source()
    variables = make_variables()
    kwargs = dict(variables=variables, batch_size=2, out=tmp_path, progress=False)
    with pytest.raises(KeyboardInterrupt):
        prun(_Crashing(source, 5), apply, {"grad": input_gradient}, **kwargs)
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()[1:]]
    assert sorted(r["clip"] for r in rows) == [0, 1, 2, 3]  # two full batches made it; clip 4 was in flight
    with open(tmp_path / "results.jsonl", "a") as fh:
        fh.write('{"clip": 4, "status": "o')  # a line cut short by the crash
    counting = Counting(source)
    with pytest.warns(UserWarning, match="1 damaged or repeated line"):
        res = prun(counting, apply, {"grad": input_gradient}, **kwargs)
    assert res.computed == 3
    assert counting.loaded == [4, 5, 6]  # the clips already written are not loaded (decoded, rendered) again
    assert [r["clip"] for r in _ok_rows(res)] == list(range(7))
    fresh = prun(source, apply, {"grad": input_gradient}, variables=variables, batch_size=2, progress=False)
    for a, b in zip(_ok_rows(res), _ok_rows(fresh)):
        assert a["methods"]["grad"]["spatial_pointing_game"] == pytest.approx(
            b["methods"]["grad"]["spatial_pointing_game"], nan_ok=True)
    # summary=False leaves the summary out (and its files alone); the rows are all there
    (tmp_path / "summary.md").unlink()
    quiet = prun(source, apply, {"grad": input_gradient}, output=OutputOptions(summary=False), **kwargs)
    assert quiet.summary == [] and quiet.markdown == "" and not (tmp_path / "summary.md").exists()
    assert [r["clip"] for r in _ok_rows(quiet)] == list(range(7))
    # nothing left to do: a third call computes nothing; other settings refuse to resume
    assert prun(source, apply, {"grad": input_gradient}, **kwargs).computed == 0
    with pytest.raises(ValueError, match="cannot resume"):
        prun(source, apply, {"other": input_gradient}, **kwargs)


class Counting:
    """A source that records which clips a run loads."""

    def __init__(self, source):
        self.source, self.loaded = source, []

    def __repr__(self):
        return repr(self.source)

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        self.loaded.append(i)
        return self.source[i]


class _Broken:
    def __init__(self, source, bad_at, how):
        self.source, self.bad_at, self.how = source, bad_at, how

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        record = dict(self.source[i])
        if i == self.bad_at:
            if self.how == "rank":
                record["video"] = record["video"][0]
            elif self.how == "label":
                record["label"] = K + 3
            elif self.how == "nan":
                v = record["video"].astype(np.float32)
                v[2, 3, 4, 1] = np.nan
                record["video"] = v
            elif self.how == "short":
                record["video"] = record["video"][:3]
        return record


@pytest.mark.parametrize("how, message", [
    ("rank", r"clip 3: video must be \[T, H, W, 3\].*got shape \(24, 24, 3\)"),
    ("label", r"clip 3: label 13 is outside the model's classes \[0, 10\)"),
    ("nan", r"clip 3: the video holds NaN"),
    ("short", r"clip 3: snippet runs past the end of the video: num_frames=3"),
])
def test_bad_input_stops_naming_the_clip_and_keeps_rows(tmp_path, how, message):
    source = _Broken(make_source(5), 3, how)
    with pytest.raises(ValueError, match=message):
        prun(source, apply, {"grad": input_gradient}, variables=make_variables(), batch_size=2, sampling=Sampling(length=T, pad="error"),
             out=tmp_path, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()[1:]]
    assert sorted(r["clip"] for r in rows) == [0, 1, 2]  # clip 2 was pending: computed and written before the error


def folder_with_a_broken_file(root, clips):
    """A UCF101-layout folder: a/good.avi and b/good.avi (clips 0 and 1), and b/broken.avi, which is no video."""
    from jaxvx.data import folder
    from jaxvx.io import write_video

    for cls, i in (("a", 0), ("b", 1)):
        (root / cls).mkdir(parents=True)
        write_video(root / cls / "good.avi", clips[i]["video"], fps=8)
    (root / "b" / "broken.avi").write_bytes(b"not a video at all")
    return folder(root)


def test_folder_source_skips_undecodable_files(tmp_path):
    source = folder_with_a_broken_file(tmp_path / "videos", make_source(2))
    with pytest.warns(UserWarning, match="skipping clip b/broken.avi"):
        res = prun(source, apply, {"grad": input_gradient}, variables=make_variables(), batch_size=2,
                   out=tmp_path / "out", progress=False)
    assert len(res.skipped) == 1 and res.skipped[0]["id"] == os.path.join("b", "broken.avi")
    assert [r["id"] for r in _ok_rows(res)] == [os.path.join("a", "good.avi"), os.path.join("b", "good.avi")]
    assert "1 clip(s) skipped" in (tmp_path / "out" / "summary.md").read_text()
    # a resumed run does not retry the skipped file
    again = prun(source, apply, {"grad": input_gradient}, variables=make_variables(), batch_size=2,
                 out=tmp_path / "out", progress=False)
    assert again.computed == 0 and len(again.skipped) == 1


def test_ground_truth_follows_resize_and_crop():
    from jaxvx.io import input_geometry

    src = synthetic("test", num_clips=8, num_frames=4, height=60, width=90, flow=False)
    geo = input_geometry(60, 90, {"resize": "short_side", "short_side": 40, "size": (32, 32), "crop": "center"})
    assert (geo.rh, geo.rw, geo.ch, geo.cw) == (40, 60, 32, 32)
    checked = 0
    for i in range(8):
        rec = src[i]
        boxes = geo.boxes(rec["boxes"])
        actor = geo.grid(rec["actor"])
        for t in range(4):
            ys, xs = np.nonzero(actor[t])
            if len(xs) == 0:
                continue
            x0, y0, x1, y1 = boxes[t]
            # the resampled actor lies in the mapped box, which is at most a pixel larger on each side (unless the crop
            # cut the actor: a clipped box is not the tight box of what is left)
            assert x0 <= xs.min() and xs.max() <= x1 and y0 <= ys.min() and ys.max() <= y1
            if min(x0, y0) == 0 or x1 == geo.cw - 1 or y1 == geo.ch - 1:
                continue
            checked += 1
            assert xs.min() - x0 <= 1.5 and x1 - xs.max() <= 1.5 and ys.min() - y0 <= 1.5 and y1 - ys.max() <= 1.5
    assert checked >= 4
    # a box cropped away disappears; absent boxes stay absent
    out = geo.boxes(np.array([[0, 0, 5, 5], [-1, -1, -1, -1]], np.float32))
    np.testing.assert_array_equal(out, -1)


def test_argument_errors():
    with pytest.raises(ValueError, match="unknown metric 'pointing'"):
        prun(make_source(1), apply, input_gradient, variables=make_variables(), metrics=["pointing"])
    with pytest.raises(ValueError, match="target must be"):
        prun(make_source(1), apply, input_gradient, variables=make_variables(), target="true")
    with pytest.raises(ValueError, match="metric 'spatial_pointing_game' cannot run"):
        prun(make_source(1), apply, input_gradient, variables=make_variables(), progress=False,
             transforms=[lambda r: r.sum(axis=(2, 3, 4))], metrics=["spatial_pointing_game"])


def test_a_folder_source_decodes_only_the_frames_the_sampling_takes(tmp_path, monkeypatch):
    """A 40-frame clip explained with snippets of T frames at offset 3 needs its first 3 + T frames: the pipeline
    decodes no more, and its rows equal those of the whole clips decoded (as records in a list)."""
    from jaxvx import io
    from jaxvx.data import _folder, folder

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "clips" / cls).mkdir(parents=True)
        io.write_video(tmp_path / "clips" / cls / "v.avi", rng.integers(0, 256, (40, S, S, 3), dtype=np.uint8), 8.0,
                       lossless=True)
    source = folder(tmp_path / "clips")
    asked = []
    read = _folder.read_video

    def counting(path, **kwargs):
        asked.append(kwargs.get("max_frames"))
        return read(path, **kwargs)

    monkeypatch.setattr(_folder, "read_video", counting)
    kwargs = dict(variables=make_variables(), sampling=Sampling(length=T, offset=3), metrics=["frame_share"],
                  progress=False)
    lazy = prun(source, apply, {"grad": gradient_x_input}, **kwargs)
    assert asked == [3 + T, 3 + T]
    monkeypatch.setattr(_folder, "read_video", read)
    whole = prun([dict(r) for r in folder(tmp_path / "clips")], apply, {"grad": gradient_x_input}, **kwargs)
    assert [len(r["video"]) for r in folder(tmp_path / "clips")] == [40, 40]
    for a, b in zip(lazy.rows, whole.rows):
        np.testing.assert_allclose(a["methods"]["grad"]["frame_share"], b["methods"]["grad"]["frame_share"],
                                   rtol=1e-6)
