"""scripts/experiments/reproduce.py: its steps name experiments and configs that exist, every analysis of
results_extra.py is one of its steps, --full scales the costly steps up, and bad arguments stop it before it runs."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "experiments"


def _load(name):
    sys.path.insert(0, str(HERE))
    try:
        spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(HERE))


reproduce = _load("reproduce")
extra = _load("results_extra")


def _target(args):
    """``("config", NAME)`` or ``("extra", NAME)`` of a step's command."""
    if args[:3] == ("-m", "jaxvx", "run"):
        return "config", pathlib.Path(args[3].replace("{here}/", "")).stem
    assert args[0] == "{here}/results_extra.py" and args[1] == "{out}/extra", args
    return "extra", args[2]


def test_steps_name_existing_configs_and_experiments():
    names = [s.name for s in reproduce.STEPS]
    assert len(names) == len(set(names))
    for step in reproduce.STEPS:
        for args in (step.args, step.full or step.args):
            kind, name = _target(args)
            if kind == "config":
                assert (HERE / f"{name}.toml").exists(), name
            else:
                assert name in extra.EXPERIMENTS, name


def test_every_analysis_of_results_extra_is_a_step():
    run = {_target(s.args)[1] for s in reproduce.STEPS if _target(s.args)[0] == "extra"}
    assert run == set(extra.EXPERIMENTS)


def test_full_scales_the_costly_steps_and_adds_the_accelerator_only_ones():
    cpu = dict((s.name, args) for s, args in reproduce.plan(full=False))
    full = dict((s.name, args) for s, args in reproduce.plan(full=True))
    assert set(full) - set(cpu) == {s.name for s in reproduce.STEPS if s.full_only} == {"li_areas", "i3d_ep3d"}
    for name in ("li_masks", "li_masks_scaled", "li_table4", "li_table2"):
        assert cpu[name][-2:] != ("--limit", "200") and full[name][-2:] == ("--limit", "200")
    assert full["i3d_deletion"][-2:] == ("--offsets", reproduce.FULL_OFFSETS)
    assert list(cpu) == [s.name for s in reproduce.STEPS if not s.full_only]  # in order


def test_only_and_skip_select_steps_and_unknown_names_stop():
    assert [s.name for s, _ in reproduce.plan(False, only=("hiley_raw", "anders_steps"))] == ["anders_steps",
                                                                                             "hiley_raw"]
    assert "hiley_raw" not in [s.name for s, _ in reproduce.plan(False, skip=("hiley_raw",))]
    with pytest.raises(SystemExit, match=r"unknown steps \['nope'\]"):
        reproduce.plan(False, only=("nope",))


def test_command_line_errors_name_the_argument(tmp_path):
    script = str(HERE / "reproduce.py")
    res = subprocess.run([sys.executable, script, str(tmp_path / "out"), "--videos", str(tmp_path / "missing")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "--videos must be a folder of video files" in res.stderr
    res = subprocess.run([sys.executable, script], capture_output=True, text=True)
    assert res.returncode == 2 and "OUT is required" in res.stderr
    res = subprocess.run([sys.executable, script, "--list", "--full"], capture_output=True, text=True, check=True)
    assert "i3d_ep3d" in res.stdout and "{here}" not in res.stdout


def test_real_snippets_come_from_the_folder_in_order(tmp_path):
    records = extra._real_snippets(16, (0, 48))
    clips = list(dict.fromkeys(r["clip"] for r in records))
    assert clips == list(extra.VIDEOS)  # the repository's clips, in the documented order
    assert [r["offset"] for r in records if r["clip"] == "ntu_rgbd_S001C001P001R001A001.avi"] == [0, 48]
    assert all(r["video"].shape[0] == 16 and min(r["video"].shape[1:3]) == 256 for r in records)
    with pytest.raises(SystemExit, match="no video files"):
        extra._real_snippets(16, (0,), root=str(tmp_path))


@pytest.mark.slow
def test_every_step_runs_at_toy_sizes(tmp_path):
    """The whole set end to end (``--smoke``: 4 synthetic clips, 2 real snippets, 3 mask iterations): every step
    exits 0, writes its results and is timed, and the figures are drawn; a second call skips what finished."""
    out = tmp_path / "out"
    script = str(HERE / "reproduce.py")
    res = subprocess.run([sys.executable, script, str(out), "--smoke"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "timings.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == [s.name for s, _ in reproduce.plan(False)]
    assert all(r["returncode"] == 0 and r["seconds"] > 0 for r in rows)
    assert "| hiley_raw | Hiley: motion precision, raw |" in (out / "timings.md").read_text()
    for step, args in reproduce.plan(False):
        kind, name = _target(args)
        folder = pathlib.Path(args[5].format(out=out)) if kind == "config" else out / "extra" / name
        printed = (out / "logs" / f"{step.name}.log").read_text()
        assert folder.exists() or "|" in printed, step.name  # its results, or the tables it prints
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert {"anders_steps.png", "hiley_selective.png", "li_pointing.png", "i3d_overlays.png"} <= figures
    again = subprocess.run([sys.executable, script, str(out), "--smoke", "--only", "hiley_raw"], capture_output=True,
                           text=True, check=True)
    assert "done before, skipped" in again.stdout
