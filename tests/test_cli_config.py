"""``jaxvx run CONFIG.toml``: which value wins, a flag given, the file's, or the default (pipeline.run is faked)."""

import types

import pytest

from jaxvx import checkpoints, pipeline
from jaxvx.cli import main


@pytest.fixture
def calls(monkeypatch):
    """What ``jaxvx run`` asked for: the checkpoints it loaded and the arguments it gave ``pipeline.run``."""
    seen = {"loaded": []}
    load = checkpoints.load

    def recording_load(name):
        seen["loaded"].append(name)
        return load(name)

    def fake_run(source, model, methods, **kwargs):
        records = [kwargs.pop(name) for name in ("sampling", "output") if name in kwargs]
        seen.update(methods=sorted(methods), **kwargs, **{k: v for r in records for k, v in vars(r).items()})
        return types.SimpleNamespace(markdown="| a summary |", computed=0)

    monkeypatch.setattr(checkpoints, "load", recording_load)
    monkeypatch.setattr(pipeline, "run", fake_run)
    return seen


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('checkpoint = "c3d-small-untrained"\nmethod = "gradient"\nbatch_size = 2\nresume = true\n'
                    'num_clips = 3\n')
    return str(path)


def test_flags_equal_to_their_defaults_override_the_file(config, calls, tmp_path):
    argv = ["run", config, "--checkpoint", "c3d-small", "--method", "deep_taylor", "--batch-size", "8", "--no-resume",
            "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    assert calls["loaded"] == ["c3d-small"] and calls["methods"] == ["deep_taylor"]
    assert calls["batch_size"] == 8 and calls["resume"] is False


def test_the_file_overrides_the_defaults_and_flags_left_out(config, calls, tmp_path):
    assert main(["run", config, "--out", str(tmp_path / "o")]) == 0
    assert calls["loaded"] == ["c3d-small-untrained"] and calls["methods"] == ["gradient"]
    assert calls["batch_size"] == 2 and calls["resume"] is True and calls["save_maps"] is False


def test_without_a_file_the_defaults_hold(calls, tmp_path):
    assert main(["run", "--num-clips", "2", "--out", str(tmp_path / "o")]) == 0
    assert calls["loaded"] == ["c3d-small"] and calls["methods"] == ["deep_taylor"]
    assert calls["batch_size"] == 8 and calls["resume"] is True and calls["save_maps"] is False
    assert calls["step"] == "1" and calls["offset"] == 0 and calls["pad"] == "loop" and calls["limit"] is None
