"""``jaxvx explain``: the README's main job, on a small checkpoint written by the test."""

import functools
import json
import xml.etree.ElementTree as ElementTree

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _nets import init
from jaxvx import checkpoints, lrp, methods, models
from jaxvx.cli import main
from jaxvx.explain import EXTREMAL_AREA, METHODS, Explanation, build_method, stream, write_outputs
from jaxvx.io import KINETICS_MEAN, KINETICS_STD, read_video, write_video


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    model = models.create("c3d", 10, width=0.0625)
    variables = init(model, jnp.zeros((1, 16, 32, 32, 3)), zero_bias=True)  # zero biases, as flax initialises
    card = {
        "input_shape": [16, 32, 32, 3],
        "class_names": [f"class{i}" for i in range(10)],
        "preprocess": {"size": [32, 32], "resize": "direct", "mean": list(KINETICS_MEAN), "std": list(KINETICS_STD)},
        "data": {"config": {"variant": "motion", "distractors": 1}},
    }
    return str(checkpoints.save(tmp_path_factory.mktemp("ck") / "tiny", model, variables, card))


@pytest.mark.slow
def test_explain_a_synthetic_clip_writes_every_output(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", "--checkpoint", tiny_checkpoint, "--method", "deep_taylor", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "synthetic test clip #0" in printed and "spatial_pointing" in printed
    numbers = json.loads((out / "explanation.json").read_text())
    # a freshly initialised model has zero biases: deep Taylor conserves the target logit
    assert numbers["relevance_sum_over_logit"] == pytest.approx(1.0, abs=1e-3)
    assert len(numbers["frame_share"]) == 16 and sum(numbers["frame_share"]) == pytest.approx(1.0, abs=1e-5)
    for key in ("relevance", "selective"):
        for metric in ("spatial_pointing", "temporal_pointing", "motion_precision"):
            assert 0.0 <= numbers["ground_truth"][key][metric] <= 1.0
    # provenance: the clip, the checkpoint's SHA-256 (as its card records it) and the versions
    assert numbers["clip"]["index"] == 0 and "SyntheticVideos" in numbers["clip"]["source"]
    assert numbers["checkpoint_sha256"] == checkpoints.load_card(tiny_checkpoint)["sha256"]
    assert {"jaxvx", "jax", "jaxlib", "flax"} <= set(numbers["versions"])
    relevance = np.load(out / "relevance.npy")
    assert relevance.shape == (16, 32, 32)
    overlay = read_video(out / "overlay.mp4")
    assert overlay.shape == (16, 224, 224, 3)
    sheet = cv2.imread(str(out / "sheet.png"))
    assert sheet is not None and sheet.shape[1] > sheet.shape[0] > 300  # three rows of eight frames
    svg = ElementTree.parse(out / "sheet.svg").getroot()
    text = " ".join("".join(e.itertext()) for e in svg.iter() if e.tag.endswith("text"))
    assert "deep_taylor" in text and "selective" in text, "the SVG beside the PNG keeps its text as text"
    plot = cv2.imread(str(out / "frame_share.png"))
    assert plot is not None and plot.std() > 10


@pytest.mark.slow
def test_explain_a_video_file_with_a_rational_step(tiny_checkpoint, tmp_path, capsys):
    frames = np.random.default_rng(0).integers(0, 255, size=(24, 40, 48, 3), dtype=np.uint8)
    path = tmp_path / "clip.avi"
    write_video(path, frames, 10, lossless=True)
    out = tmp_path / "out"
    assert main(["explain", str(path), "--checkpoint", tiny_checkpoint, "--method", "gradient", "--step", "1/2",
                 "--offset", "3", "--selective", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "frames [3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10]" in printed
    numbers = json.loads((out / "explanation.json").read_text())
    assert "selective" not in numbers and "ground_truth" not in numbers
    assert numbers["clip"]["frames"] == [3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10]
    assert numbers["clip"]["path"].endswith(".avi") or numbers["clip"]["path"].endswith(".mp4")


def test_perturbation_methods_by_name(tiny_checkpoint):
    """``build_method`` names the perturbation methods with the checkpoint's sizes; their maps get a channel axis
    of 1 so that every path reduces them like the others. Occlusion (windows of T/4 x H/7 x W/7) and frame masking
    (each frame filled with its score) run and equal direct calls; TSR, EP-3D and STEP (129 gradients, 1000
    iterations) are traced only."""
    model, variables, card = checkpoints.load(tiny_checkpoint)
    video = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, 16, 32, 32, 3)), jnp.float32)
    target = jnp.asarray([3])
    forward = functools.partial(model.apply, variables)
    direct = {"occlusion": methods.occlusion(window=(4, 4, 4)),
              "frame_masking": lambda f, v, t: methods.details(methods.frame_masking())(f, v, t)[1][
                  :, :, None, None, None] * jnp.ones((32, 32, 1))}
    for name in ("occlusion", "frame_masking", "tsr", "ep3d", "step"):
        assert name in METHODS
        method, model_m, variables_m = build_method(name, model, variables, card)
        assert model_m is model and variables_m is variables
        if name in direct:
            got = np.asarray(method(forward, video, target))
            want = np.asarray(direct[name](forward, video, target))
            assert got.shape == (1, 16, 32, 32, 1) and np.abs(want).max() > 0
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        else:
            shape = jax.eval_shape(lambda v, t, m=method: m(forward, v, t), video, target)
            assert shape.shape == (1, 16, 32, 32, 1)
    assert 0 < EXTREMAL_AREA < 1


def test_baselines_by_name_pick_their_layers_and_models(tiny_checkpoint):
    """excitation_backprop (on the folded model, at the last convolution) equals the direct call; saliency tubes
    and contrastive EB resolve on the shipped R(2+1)D and CNN-LSTM and name what they need elsewhere."""
    model, variables, card = checkpoints.load(tiny_checkpoint)
    video = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (1, 16, 32, 32, 3)), jnp.float32)
    target = jnp.asarray([1])
    method, model_m, variables_m = build_method("excitation_backprop", model, variables, card)
    folded, fv = lrp.canonize(model, variables)
    want = jax.jit(lambda v, t: methods.excitation_backprop("conv5b")(functools.partial(folded.apply, fv), v, t))(
        video, target)
    got = jax.jit(lambda v, t: method(functools.partial(model_m.apply, variables_m), v, t))(video, target)
    assert np.abs(np.asarray(want)).max() > 0
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)
    for name in ("saliency_tubes", "contrastive_excitation_backprop"):
        with pytest.raises(ValueError, match=f"{name}.*C3D"):
            build_method(name, model, variables, card)
    for name, shipped in (("saliency_tubes", "r2plus1d-small"), ("contrastive_excitation_backprop", "cnnlstm-small")):
        model, variables, card = checkpoints.load(shipped)
        method, model_m, variables_m = build_method(name, model, variables, card)
        shape = jax.eval_shape(lambda v, t: method(functools.partial(model_m.apply, variables_m), v, t), video, target)
        assert shape.shape == (*video.shape[:4], 1)


def test_explanation_json_is_strict_json(tmp_path):
    """An undefined number (NaN: e.g. the motion precision of a selective map that kept nothing) is written as
    null: strict parsers (jq, JavaScript) read explanation.json."""
    rng = np.random.default_rng(0)
    numbers = {"predicted": {"name": "a", "probability": 0.5}, "ground_truth": {"selective": {"motion_precision":
               float("nan")}}, "frame_share": np.full(4, 0.25), "border_effect_B": np.float32(np.inf)}
    result = Explanation("ck", "ep3d", rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8), rng.random((4, 8, 8)),
                         None, None, np.zeros(2), ["a", "b"], 0, np.full(4, 0.25), {}, numbers)
    paths = write_outputs(result, tmp_path / "out")

    def reject(constant):
        raise ValueError(f"not strict JSON: {constant}")

    written = json.loads((tmp_path / "out" / "explanation.json").read_text(), parse_constant=reject)
    assert written["ground_truth"]["selective"]["motion_precision"] is None and written["border_effect_B"] is None
    assert written["frame_share"] == [0.25] * 4 and written["files"]["json"] == paths["json"]


def test_explain_reports_bad_input_in_one_line(tiny_checkpoint, tmp_path, capsys):
    assert main(["explain", str(tmp_path / "missing.mp4"), "--checkpoint", tiny_checkpoint,
                 "--out", str(tmp_path / "o")]) == 2
    assert "missing.mp4" in capsys.readouterr().err
    assert main(["explain", "--checkpoint", "no-such-model", "--out", str(tmp_path / "o")]) == 2
    assert "no-such-model" in capsys.readouterr().err


@pytest.mark.slow
def test_run_a_pipeline_from_a_toml_file_and_resume(tiny_checkpoint, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(f'checkpoint = "{tiny_checkpoint}"\nmethod = "gradient"\nnum_clips = 4\nbatch_size = 2\n')
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--selective", "4"]) == 0
    printed = capsys.readouterr().out
    assert "| gradient | spatial_pointing_game |" in printed
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert "header" in rows[0] and [row["clip"] for row in rows[1:]] == [0, 1, 2, 3]
    assert all(row["status"] == "ok" for row in rows[1:])
    assert (out / "summary.md").read_text().count("| gradient |") >= 3
    # a second run resumes: nothing left to compute, same summary
    before = (out / "results.jsonl").read_text()
    assert main(["run", str(config), "--out", str(out), "--selective", "4"]) == 0
    assert (out / "results.jsonl").read_text() == before


@pytest.mark.slow
def test_run_sweeps_steps_and_offsets(tiny_checkpoint, tmp_path, capsys):
    config = tmp_path / "sweep.toml"
    config.write_text(f'checkpoint = "{tiny_checkpoint}"\nmethod = "deep_taylor"\nstep = ["1/2", 2]\n'
                      'num_clips = 2\nbatch_size = 2\nnum_frames = 32\n')
    out = tmp_path / "sweep"
    assert main(["run", str(config), "--offset", "0,4", "--title-frames", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 2 | 4 | deep_taylor | 2 |" in printed and "sweep.png" in printed
    for step in ("1_2", "2"):
        for offset in (0, 4):
            lines = (out / f"step-{step}-offset-{offset}" / "results.jsonl").read_text().splitlines()
            header = json.loads(lines[0])["header"]
            assert len(lines) == 3 and header["sampling"]["offset"] == offset
            assert "num_frames=32" in header["source"] and "title_frames=3" in header["source"]
    assert (out / "sweep.md").read_text().count("| deep_taylor |") == 4
    figure = cv2.imread(str(out / "sweep.png"))
    assert figure.shape[1] == 1260  # accuracy and border B over the step, lookahead L over the offset
    assert main(["run", str(config), "--offset", "0,x", "--title-frames", "3", "--out", str(out)]) == 2
    assert "offset must be one or several ints >= 0" in capsys.readouterr().err
    assert main(["run", str(config), "--data", "folder:/nowhere", "--out", str(out)]) == 2
    assert "num_frames render synthetic clips; data 'folder:/nowhere' is not synthetic" in capsys.readouterr().err


def test_run_rejects_unknown_config_keys(tiny_checkpoint, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('checkpoint = "x"\nmethods = "gradient"\n')
    assert main(["run", str(config), "--out", str(tmp_path / "o")]) == 2
    assert "unknown keys ['methods']" in capsys.readouterr().err


@pytest.mark.slow
def test_stream_overlays_every_frame_after_the_first_window(tiny_checkpoint, tmp_path, shared_videos):
    out = tmp_path / "stream.avi"
    r = stream(tiny_checkpoint, str(shared_videos / "ucf101_apply_eye_makeup.avi"), out, method="gradient",
               max_frames=20, progress=False)
    assert r["frames"] == 20 and r["explained"] == 20 - 16 + 1 and r["fps"] > 0
    video = read_video(out)
    assert video.shape == (20, 224, 224, 3)  # the 32 x 32 model input, enlarged 7 times for viewing
    assert not list(tmp_path.glob(".*part*")), "the temporary file was renamed into place"


@pytest.fixture(scope="module")
def other_checkpoints(tmp_path_factory):
    """Two more checkpoints of the tiny model's architecture: other random weights, and a NaN in one weight."""
    model = models.create("c3d", 10, width=0.0625)
    base = {
        "input_shape": [16, 32, 32, 3],
        "class_names": [f"class{i}" for i in range(10)],
        "preprocess": {"size": [32, 32], "resize": "direct", "mean": list(KINETICS_MEAN), "std": list(KINETICS_STD)},
        "data": {"config": {"variant": "motion", "distractors": 1}},
    }
    folder = tmp_path_factory.mktemp("others")
    other = init(model, jnp.zeros((1, 16, 32, 32, 3)), seed=1, zero_bias=True)
    broken = jax.tree_util.tree_map_with_path(
        lambda path, a: a.at[0, 0].set(jnp.nan) if "fc8" in jax.tree_util.keystr(path) and a.ndim == 2 else a, other)
    return (str(checkpoints.save(folder / "tiny-other", model, other, base)),
            str(checkpoints.save(folder / "tiny-nan", model, broken, base)))


def test_run_into_a_folder_of_another_checkpoint_stops_and_names_it(tiny_checkpoint, other_checkpoints, tmp_path,
                                                                     capsys):
    out = str(tmp_path / "mix")
    common = ["--method", "gradient", "--num-clips", "2", "--batch-size", "2", "--out", out]
    assert main(["run", "--checkpoint", tiny_checkpoint, *common]) == 0
    capsys.readouterr()
    assert main(["run", "--checkpoint", other_checkpoints[0], *common]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "variables_sha256" in err and "tiny-other" in err and "--no-resume" in err
    rows = (tmp_path / "mix" / "results.jsonl").read_text().splitlines()
    assert len(rows) == 3  # the header and the first run's two rows, nothing appended
    assert main(["run", "--checkpoint", other_checkpoints[0], *common, "--no-resume"]) == 0


def test_run_with_nan_weights_fails_and_names_the_checkpoint(other_checkpoints, tmp_path, capsys):
    out = tmp_path / "nan"
    code = main(["run", "--checkpoint", other_checkpoints[1], "--method", "gradient", "--num-clips", "2",
                 "--batch-size", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "the logits of" in err and "tiny-nan" in err and "NaN or inf" in err
    assert (out / "results.jsonl").read_text().count("\n") == 1  # the header only: no metric from NaN logits
    assert not (out / "summary.md").exists()


def test_stream_of_a_clip_shorter_than_the_model_is_an_error(tiny_checkpoint, tmp_path):
    clip = tmp_path / "two.avi"
    write_video(clip, np.full((2, 32, 32, 3), 128, np.uint8), 8.0)
    with pytest.raises(ValueError, match="2 frame\\(s\\) read, fewer than the 16 the model explains at once"):
        stream(tiny_checkpoint, str(clip), tmp_path / "s.avi", method="gradient", progress=False)
    assert not list(tmp_path.glob(".*part*")) and not (tmp_path / "s.avi").exists()


_STREAM_IN_CHILD = """
import sys
from jaxvx.explain import stream
r = stream(sys.argv[1], sys.argv[2], sys.argv[3], method="gradient", progress=False)
print(r["frames"], r["explained"])
"""


def test_stream_reads_an_uncompressed_avi_without_crashing(tiny_checkpoint, tmp_path):
    """A bottom-up BGR24 AVI corrupts OpenCV's heap on reading (SIGABRT); the stream reads it with jaxvx.io's
    numpy reader. Run in a child so that a crash cannot take the test session down."""
    import subprocess
    import sys

    from _avi import dib_avi

    clip = tmp_path / "dib.avi"
    clip.write_bytes(dib_avi(np.random.default_rng(0).integers(0, 256, (18, 48, 64, 3), dtype=np.uint8)))
    done = subprocess.run([sys.executable, "-c", _STREAM_IN_CHILD, tiny_checkpoint, str(clip), str(tmp_path / "o.avi")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["18", "3"]
    assert read_video(tmp_path / "o.avi").shape[0] == 18
