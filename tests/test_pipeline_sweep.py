"""jaxvx.pipeline.sweep: one pipeline run per snippet setting, gathered; resume; argument errors; the figure."""

import json

import numpy as np
import pytest

from jaxvx import pipeline, viz
from jaxvx.pipeline import OutputOptions, Sampling
from jaxvx._json import jsonable
from jaxvx.data import synthetic
from test_pipeline import T, Counting, apply, folder_with_a_broken_file, gradient_x_input, make_variables

STEPS = ["1/2", 1, 2]
OFFSETS = [0, 3]


def long_source(num_clips=4):
    """Clips of 2 T frames, so that step 2 reaches the last one without padding."""
    return synthetic("test", num_clips=num_clips, num_frames=2 * T, height=24, width=24, distractors=1, flow=False)


def sweep(source, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("sampling", Sampling(length=T))
    return pipeline.sweep(source, apply, {"gxi": gradient_x_input}, variables=make_variables(), batch_size=2,
                          **kwargs)


def _strict(text):
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_sweep_is_one_run_per_setting_and_resumes(tmp_path):
    source = long_source()
    counting = Counting(source)
    sw = sweep(counting, steps=STEPS, offsets=OFFSETS, out=tmp_path, chunk=2)
    assert counting.loaded == [0, 1, 2, 3]  # each clip read once for the six settings (two chunks of two)
    assert all(r.computed == 4 for r in sw.runs.values())
    assert list(sw.runs) == [(s, o) for s in ["1/2", "1", "2"] for o in OFFSETS]
    for (step, offset), results in sw.runs.items():
        direct = pipeline.run(source, apply, {"gxi": gradient_x_input}, variables=make_variables(), batch_size=2,
                              progress=False, sampling=Sampling(length=T, step=step, offset=offset))
        assert results.summary == direct.summary
        assert (tmp_path / f"step-{step.replace('/', '_')}-offset-{offset}" / "results.jsonl").exists()
        rows = [r for r in sw.table if (r["step"], r["offset"]) == (step, offset)]
        assert [{k: r[k] for k in direct.summary[0]} for r in rows] == direct.summary
    # the settings differ where they should: the sampled frames, hence the maps' frame shares
    borders = sw.series("gxi", "border B (frame share)", offset=0)
    np.testing.assert_array_equal(borders["step"], [0.5, 1.0, 2.0])
    assert np.all(np.isfinite(borders["mean"])) and len(set(borders["mean"].tolist())) == 3
    assert np.all(borders["low"] <= borders["mean"]) and np.all(borders["mean"] <= borders["high"])
    accuracy = sw.series("(model)", "accuracy", step="2/4")
    np.testing.assert_array_equal(accuracy["offset"], OFFSETS)
    assert np.all((accuracy["mean"] >= 0) & (accuracy["mean"] <= 1)) and np.all(accuracy["n"] == 4)
    table = (tmp_path / pipeline.SWEEP_FILE).read_text()
    assert table == sw.markdown and len(table.splitlines()) == 2 + 6
    assert "| 1/2 | 3 | gxi | 4 |" in table
    assert _strict((tmp_path / "sweep.json").read_text()) == jsonable(sw.table)  # NaN written as null
    # a second sweep over the same folder reads and computes nothing again and gathers the same table
    counting.loaded.clear()
    again = sweep(counting, steps=STEPS, offsets=OFFSETS, out=tmp_path, chunk=2)
    assert all(r.computed == 0 for r in again.runs.values()) and counting.loaded == []
    assert again.markdown == sw.markdown
    # in memory (no folder: each setting reads the whole source), the same table
    assert sweep(source, steps=STEPS, offsets=OFFSETS).table == sw.table
    # resume=False starts every setting over: the files hold each clip once
    fresh = sweep(source, steps=["1/2"], offsets=[3], out=tmp_path, resume=False)
    assert fresh.runs[("1/2", 3)].computed == 4
    assert len((tmp_path / "step-1_2-offset-3" / "results.jsonl").read_text().splitlines()) == 1 + 4


def test_sweep_arguments():
    source = long_source(2)
    with pytest.raises(ValueError, match="re-iterable"):
        sweep(iter(list(source)))
    with pytest.raises(TypeError, match="source must be a jaxvx.data source or a list of records, got int"):
        sweep(3)
    with pytest.raises(ValueError, match="at least one"):
        sweep(source, steps=[])
    with pytest.raises(ValueError, match=r"steps repeat \['1/2'\]"):
        sweep(source, steps=["1/2", 0.5])
    with pytest.raises(ValueError, match="offsets must be ints >= 0"):
        sweep(source, offsets=[-1])
    with pytest.raises(ValueError, match="step must be > 0"):
        sweep(source, steps=[0])
    with pytest.raises(TypeError, match=r"sweep sets \['step'\] itself"):
        sweep(source, sampling=Sampling(length=T, step=2))
    with pytest.raises(TypeError, match=r"sweep sets \['summary'\] itself"):
        sweep(source, output=OutputOptions(summary=False))


def test_plot_sweep_draws_a_panel_per_varied_axis():
    source = long_source(2)
    both = viz.plot_sweep(sweep(source, steps=["1/2", 1], offsets=[0, 1]))
    steps_only = viz.plot_sweep(sweep(source, steps=["1/2", 1]))
    one = viz.plot_sweep(sweep(source))
    assert both.dtype == np.uint8 and both.shape[2] == 3
    # 4.2 inches at 100 dpi per panel: accuracy and B over the step, L over the offset; the single setting shows all
    assert (both.shape[1], steps_only.shape[1], one.shape[1]) == (1260, 840, 1260)
    assert both.std() > 10  # lines and text, not a blank canvas


def test_each_settings_progress_bar_names_it(capsys):
    sweep(long_source(2), steps=["1/2", 2], progress=True)
    err = capsys.readouterr().err
    assert "step 1/2, offset 0" in err and "step 2, offset 0" in err
    sweep(long_source(2), offsets=[1], progress="mine")
    assert "mine: step 1, offset 1" in capsys.readouterr().err


def test_an_undecodable_file_is_skipped_in_every_setting(tmp_path):
    source = folder_with_a_broken_file(tmp_path / "videos", long_source(2))
    with pytest.warns(UserWarning, match="skipping clip b/broken.avi"):
        sw = sweep(source, steps=[1, 2], out=tmp_path / "out")
    for results in sw.runs.values():
        assert [r["id"] for r in results.skipped] == ["b/broken.avi"]
        assert sorted(r["id"] for r in results.rows if r["status"] == "ok") == ["a/good.avi", "b/good.avi"]
