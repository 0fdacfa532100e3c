"""Results integrity: provenance in the header, a lock against two writers, damaged files recovered, NaN never a metric."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvx import pipeline
from jaxvx.pipeline import OutputOptions, Sampling
from jaxvx.pipeline._results import ResultsFile
from jaxvx._provenance import tree_sha256
from jaxvx.data import synthetic

T, S, K = 4, 16, 10


def source(num_clips=4):
    return synthetic("test", num_clips=num_clips, num_frames=T, height=S, width=S, distractors=0, flow=False)


def weights(scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(scale * rng.normal(size=(T * S * S * 3, K)).astype(np.float32))}


def apply(variables, video):
    return video.reshape(video.shape[0], -1) @ variables["w"]


def grad_x_input(forward, video, target=None, *, key=None):
    g = jax.grad(lambda v: jnp.take_along_axis(forward(v), target[:, None], axis=1).sum())(video)
    return video * g


def run(out, *, variables=None, method=grad_x_input, **kwargs):
    kwargs.setdefault("metrics", ["frame_share"])
    return pipeline.run(source(kwargs.pop("num_clips", 4)), apply, {"m": method},
                        variables=weights() if variables is None else variables, sampling=Sampling(length=T),
                        batch_size=2, out=out, progress=False, **kwargs)


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------- provenance
def test_header_records_what_makes_rows_comparable(tmp_path):
    run(tmp_path, output=OutputOptions(provenance={"checkpoint": "tiny", "checkpoint_sha256": "ab" * 32}))
    header = lines(tmp_path / "results.jsonl")[0]["header"]
    assert header["model"]["variables_sha256"] == tree_sha256(weights())
    assert header["methods"]["m"]["function"].endswith("grad_x_input")
    assert header["provenance"] == {"checkpoint": "tiny", "checkpoint_sha256": "ab" * 32}
    assert header["seed"] == 0 and header["sampling"]["length"] == T
    assert {"jaxvx", "jax", "jaxlib", "flax"} <= set(header["versions"])
    assert "SyntheticVideos" in header["source"]


def test_resume_with_another_model_or_setting_stops_and_names_the_difference(tmp_path):
    first = run(tmp_path)
    assert first.computed == 4
    with pytest.raises(ValueError, match=r"cannot resume .*model: the file has .*variables_sha256"):
        run(tmp_path, variables=weights(seed=1))
    with pytest.raises(ValueError, match=r"provenance: the file has \{\}"):
        run(tmp_path, output=OutputOptions(provenance={"checkpoint": "other"}))
    with pytest.raises(ValueError, match="seed: the file has 0, this run 1"):
        run(tmp_path, seed=1)
    with pytest.raises(ValueError, match="source: the file has"):
        run(tmp_path, num_clips=8)
    with pytest.raises(ValueError, match="methods: the file has"):
        run(tmp_path, method=lambda forward, video, target=None, *, key=None: video)
    # nothing was appended by the refused runs; the same settings resume (nothing to do); resume=False starts over
    assert len(lines(tmp_path / "results.jsonl")) == 5
    assert run(tmp_path).computed == 0
    again = run(tmp_path, variables=weights(seed=1), resume=False)
    assert again.computed == 4 and len(lines(tmp_path / "results.jsonl")) == 5


def test_method_settings_are_part_of_the_header(tmp_path):
    from jaxvx import lrp, methods

    kwargs = dict(metrics=["frame_share"])
    run(tmp_path, method=methods.lrp(lrp.deep_taylor(-1.0, 1.0)), **kwargs)
    with pytest.raises(ValueError, match="methods: the file has"):
        run(tmp_path, method=methods.lrp(lrp.deep_taylor(-3.0, 3.0)), **kwargs)
    assert run(tmp_path, method=methods.lrp(lrp.deep_taylor(-1.0, 1.0)), **kwargs).computed == 0


# ---------------------------------------------------------------------------------------------------- the lock
_HOLD = textwrap.dedent("""
    import sys, time
    from jaxvx.pipeline._results import ResultsFile
    f = ResultsFile(sys.argv[1], {"holder": 1}, resume=True)
    print("locked", flush=True)
    time.sleep(60)
""")


def test_a_second_writer_is_refused_at_once_and_a_killed_one_leaves_no_stale_lock(tmp_path):
    path = tmp_path / "results.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(pipeline.ResultsLocked, match=rf"{path}.* is being written by another run \(pid"):
            run(tmp_path)
        assert lines(path) == [{"header": {"format": "jaxvx-pipeline/1", "holder": 1}}]  # untouched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    res = run(tmp_path, resume=False)  # the kernel released the dead holder's lock
    assert res.computed == 4
    # in one process too: the file stays locked while a ResultsFile is open, and is free after close()
    f = ResultsFile(path, {"x": 1}, resume=False)
    with pytest.raises(pipeline.ResultsLocked):
        ResultsFile(path, {"x": 1}, resume=True)
    f.close()
    ResultsFile(path, {"x": 1}, resume=True).close()


# ---------------------------------------------------------------------------------------------------- damage
def test_damaged_lines_in_the_middle_are_set_aside_and_their_clips_recomputed(tmp_path):
    path = tmp_path / "results.jsonl"
    full = run(tmp_path)
    good = path.read_text().splitlines()
    # two writers' lines run together in the middle, a repeated row, a line cut short at the end
    damaged = [good[0], good[1], good[2][:20] + good[3], good[1], good[4][:15]]
    path.write_text("\n".join(damaged))
    with pytest.warns(UserWarning, match=r"3 damaged or repeated line\(s\) \(line 3, 4, 5\)"):
        res = run(tmp_path)
    assert res.computed == 3  # clips 1, 2 and 3 again
    rows = lines(path)[1:]
    assert sorted(r["clip"] for r in rows) == [0, 1, 2, 3]
    by_clip = {r["clip"]: r for r in rows}
    for r in full.rows:
        assert by_clip[r["clip"]]["methods"]["m"]["frame_share"] == pytest.approx(r["methods"]["m"]["frame_share"])
    kept = (tmp_path / "results.jsonl.damaged").read_text()
    assert kept.count("# line ") == 3 and good[4][:15] in kept
    assert run(tmp_path).computed == 0  # and the recovered file resumes cleanly


def test_a_header_cut_short_is_started_over_not_truncated_to_nothing(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"header": {"format": "jaxvx-pip')
    with pytest.warns(UserWarning, match="header line is damaged and it holds no rows"):
        res = run(tmp_path)
    assert res.computed == 4 and len(lines(path)) == 5
    assert '{"header": {"format": "jaxvx-pip' in (tmp_path / "results.jsonl.damaged").read_text()


def test_a_file_without_a_header_but_with_rows_is_left_untouched(tmp_path):
    path = tmp_path / "results.jsonl"
    text = 'not a header\n{"clip": 0, "status": "ok"}\n'
    path.write_text(text)
    with pytest.raises(ValueError, match="first line is not a jaxvx pipeline header; the file is left as it is"):
        run(tmp_path)
    assert path.read_text() == text


# ---------------------------------------------------------------------------------------------------- NaN
@pytest.mark.parametrize("bad", ["nan", "huge"])
def test_nan_or_overflowing_weights_stop_the_run_and_name_the_checkpoint(tmp_path, bad):
    w = weights()
    w = {"w": w["w"].at[0, 0].set(jnp.nan)} if bad == "nan" else weights(scale=1e37)
    with pytest.raises(ValueError, match=r"clip 0: the logits of broken-ckpt hold NaN or inf"):
        run(tmp_path, variables=w, output=OutputOptions(provenance={"checkpoint": "broken-ckpt"}))
    assert lines(tmp_path / "results.jsonl")[1:] == []  # no row, no metric


def test_a_nan_map_marks_the_row_failed_and_stays_out_of_the_summary(tmp_path):
    def nan_in_second_row(forward, video, target=None, *, key=None):
        m = grad_x_input(forward, video, target)
        return m.at[1, 0, 0, 0, 0].set(jnp.nan)  # batches of 2: clips 1 and 3

    with pytest.warns(UserWarning, match="the map of m holds NaN or inf; the row is marked failed"):
        res = run(tmp_path, method=nan_in_second_row)
    status = {r["clip"]: r["status"] for r in res.rows}
    assert status == {0: "ok", 1: "failed", 2: "ok", 3: "failed"}
    assert all(r["methods"] == {} for r in res.rows if r["status"] == "failed")
    shares = [r for r in res.summary if r["method"] == "m"]
    assert shares and all(r["n"] == 2 for r in shares)
    assert "2 clip(s) failed" in res.markdown


def test_a_negative_label_on_the_first_record_is_an_error_not_no_labels(tmp_path):
    records = [dict(r) for r in source(2)]
    records[0]["label"] = -1
    with pytest.raises(ValueError, match=r"clip 0: label -1 is negative"):
        pipeline.run(records, apply, {"m": grad_x_input}, variables=weights(), sampling=Sampling(length=T),
                     progress=False)


def test_sha_of_variables_is_independent_of_the_process():
    code = "import numpy as np, jax.numpy as jnp; from jaxvx._provenance import tree_sha256; " \
           "rng = np.random.default_rng(0); print(tree_sha256({'w': jnp.asarray(rng.normal(size=(3, 4)))}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"}).stdout.strip()
    from jaxvx._provenance import tree_sha256

    rng = np.random.default_rng(0)
    assert out == tree_sha256({"w": jnp.asarray(rng.normal(size=(3, 4)))})
