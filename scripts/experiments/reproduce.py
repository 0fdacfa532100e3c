"""Every table and figure of docs/results.md from one command, each step timed.

    python scripts/experiments/reproduce.py OUT [--full] [--only NAME ...] [--skip NAME ...] [--videos DIR]
    python scripts/experiments/reproduce.py --list [--full]

Runs the steps of :data:`STEPS` in order, each in its own process (``python -m jaxvx run CONFIG`` for the
configurations of this folder, ``results_extra.py`` for the rest), then draws the figures:

- ``OUT/runs/NAME/``, ``OUT/extra/NAME/``: each step's results (``results.jsonl``, ``summary.md``, ...);
- ``OUT/logs/NAME.log``: what the step printed (several analyses print their tables there only);
- ``OUT/timings.md`` and ``OUT/timings.jsonl``: each step's wall time, command, sizes and exit status, and the
  machine (CPU, cores, JAX devices and versions, commit);
- ``OUT/figures/``: the figures of docs/results.md (``--figures docs/images/results`` to replace those).

The default sizes are the ones docs/results.md reports and fit in an hour on a 2-core CPU; ``--full`` scales the
costly steps up for an accelerator (200 clips for every mask optimisation, each of Li et al.'s four areas, six
snippets per real clip instead of two, the I3D's deletion curves in 8 steps instead of 4, and EP-3D on the I3D).
Run again, it skips the steps that finished (``--force`` runs them again) and the pipeline runs resume where they
stopped. JAX's persistent compilation cache lives in ``OUT/.jax_cache`` unless ``JAX_COMPILATION_CACHE_DIR`` is
set, so the I3D's programs compile once across steps.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FULL_OFFSETS = "0,48,96,144,192,240"


class Step(NamedTuple):
    """One timed step: ``NAME`` (its folder and log), the docs/results.md table it feeds, and its command's
    arguments after ``python`` (``{out}``, ``{here}`` and ``{videos}`` are filled in); ``full`` replaces them under
    ``--full`` (``None``: the same command), and a ``full_only`` step runs only then."""

    name: str
    table: str
    args: tuple
    full: tuple | None = None
    full_only: bool = False


def _config(name, *extra, out=None):
    """``jaxvx run`` of this folder's ``NAME.toml`` into ``OUT/runs/NAME`` (or ``OUT/extra/<out>``)."""
    target = f"{{out}}/runs/{name}" if out is None else f"{{out}}/extra/{out}"
    return ("-m", "jaxvx", "run", f"{{here}}/{name}.toml", "--out", target, *extra)


def _extra(name, *sizes):
    """``results_extra.py OUT/extra NAME`` with the real clips of ``--videos`` and the given sizes."""
    return ("{here}/results_extra.py", "{out}/extra", name, "--videos", "{videos}", *sizes)


def _real(name, table, *cpu):
    """A step on the real clips: the two default offsets and ``cpu``'s sizes, or under ``--full`` six offsets at the
    script's own sizes."""
    return Step(name, table, _extra(name, *cpu), full=_extra(name, "--offsets", FULL_OFFSETS))


STEPS = (
    # Anders et al.: border effect, lookahead, step
    Step("anders_steps", "Anders: B over the step", _config("anders_steps")),
    Step("dtdu_steps", "Anders: B over the step (DTD-u)",
         _config("anders_steps", "--checkpoint", "c3d-small-untrained", out="dtdu_steps")),
    Step("anders_lookahead", "Anders: L over the offset", _config("anders_lookahead")),
    Step("dtdu_lookahead", "Anders: L over the offset (DTD-u)",
         _config("anders_lookahead", "--checkpoint", "c3d-small-untrained", out="dtdu_lookahead")),
    Step("titles_lookahead", "Anders: a model that has seen title cards",
         _config("anders_lookahead", "--checkpoint", "c3d-small-titles", out="titles_lookahead")),
    Step("dtd_proportional_steps", "Anders: proportional max pooling", _extra("dtd_proportional_steps")),
    Step("steps_both_sides", "Anders: accuracy on both sides of the training step",
         _extra("steps_both_sides", "--clips", "100"), full=_extra("steps_both_sides", "--clips", "200")),
    # Hiley et al.: selective relevance
    Step("hiley_raw", "Hiley: motion precision, raw", _config("hiley_raw")),
    Step("hiley_selective", "Hiley: motion precision, selective", _config("hiley_selective")),
    Step("chance_hiley", "chance levels (Hiley's setting)", _extra("chance_hiley")),
    Step("hiley_padding", "Hiley: zero and edge padding, proportional pooling", _extra("hiley_padding")),
    Step("hiley_weighted", "Hiley: motion precision weighted by relevance", _extra("hiley_weighted")),
    Step("hiley_sigma2", "Hiley: sigma 2", _extra("hiley_sigma2")),
    Step("hiley_agreement", "Hiley: agreement between the baselines", _extra("hiley_agreement")),
    Step("hiley_cue", "Hiley: a known spatial bias", _extra("hiley_cue")),
    # Li et al.: pointing games, EP-3D and STEP
    Step("li_pointing_baselines", "Li: pointing games, baselines", _config("li_pointing")),
    Step("li_pointing", "Li: box, 2-px and tie columns; chance", _extra("li_pointing")),
    Step("li_deletion", "Li: deletion / insertion over frames", _extra("li_deletion")),
    Step("li_deletion_voxels", "Li: deletion / insertion over voxels", _extra("li_deletion_voxels")),
    Step("li_cnnlstm", "Li: the CNN-LSTM column", _extra("li_cnnlstm")),
    Step("li_masks", "Li: EP-3D and STEP, 112-px constants", _extra("li_masks", "--limit", "6"),
         full=_extra("li_masks", "--limit", "200")),
    Step("li_masks_scaled", "Li: EP-3D and STEP, scaled constants (pointing, deletion / insertion)",
         _extra("li_masks_scaled", "--limit", "20"), full=_extra("li_masks_scaled", "--limit", "200")),
    Step("li_table4", "Li: Table 4 variants", _extra("li_table4", "--limit", "6"),
         full=_extra("li_table4", "--limit", "200")),
    Step("li_table2", "Li: Table 2, minimum preservation ratio", _extra("li_table2", "--limit", "4"),
         full=_extra("li_table2", "--limit", "200")),
    Step("li_areas", "Li: EP-3D and STEP at each of the four areas", _extra("li_areas", "--limit", "200"),
         full_only=True),
    # Jayawardhana et al.: temporal saliency
    Step("jayawardhana_temporal", "Jayawardhana: temporal pointing, key frames", _config("jayawardhana_temporal")),
    Step("chance_jaya", "chance levels (Jayawardhana's setting)", _extra("chance_jaya")),
    Step("jaya_tsr_clean", "Jayawardhana: no distractors", _extra("jaya_tsr_clean")),
    Step("jaya_lstm", "Jayawardhana: input-cell attention against the plain LSTM", _extra("jaya_lstm")),
    Step("jaya_one_step", "Jayawardhana: one-step TSR, accuracy, flow", _extra("jaya_one_step")),
    # the I3D on real clips (--full: six offsets per clip)
    _real("i3d_real", "I3D: B, L, selective relevance, flow, kept voxels"),
    _real("i3d_untrained", "I3D: re-initialised B, L"),
    _real("i3d_edges", "I3D: kept voxels, re-initialised"),
    _real("i3d_flip", "I3D: mirrored snippets"),
    Step("i3d_offsets", "I3D: L over the offset", _extra("i3d_offsets")),
    _real("i3d_deletion", "I3D: deletion / insertion over frames, with controls", "--curve-steps", "4"),
    Step("i3d_deletion_paired", "I3D: paired differences", _extra("i3d_deletion_paired")),
    _real("i3d_edge_stages", "I3D: the pile-up stage by stage"),
    _real("i3d_edge_channels", "I3D: the pile-up's channels"),
    _real("i3d_pads_mirrored", "I3D: padding moved"),
    Step("i3d_ep3d", "I3D: EP-3D", _extra("i3d_ep3d", "--offsets", FULL_OFFSETS), full_only=True),
)


SMOKE_CONFIG = ("--num-clips", "4", "--limit", "4")
SMOKE_EXTRA = ("--clips", "4", "--limit", "2", "--iterations", "3", "--offsets", "0")


def _smoke(args: tuple) -> tuple:
    """A step's command at toy sizes: 4 synthetic clips, 2 of them (or 2 real snippets) explained, 3 iterations of
    every mask optimisation; the step's own sizes are dropped."""
    if args[:3] == ("-m", "jaxvx", "run"):
        return args + SMOKE_CONFIG
    kept, i = [], 0
    while i < len(args):
        if args[i] in ("--clips", "--limit", "--iterations", "--offsets"):
            i += 2
            continue
        kept.append(args[i])
        i += 1
    return tuple(kept) + SMOKE_EXTRA


def plan(full: bool, only=(), skip=(), smoke: bool = False):
    """The steps to run, in order, with the command each runs under ``full`` (or at toy sizes with ``smoke``: the
    default steps, to check that every one runs); names not in :data:`STEPS` raise."""
    known = {s.name for s in STEPS}
    unknown = sorted((set(only) | set(skip)) - known)
    if unknown:
        raise SystemExit(f"unknown steps {unknown}; known: {', '.join(s.name for s in STEPS)}")
    steps = [s for s in STEPS if (full or not s.full_only) and (not only or s.name in only) and s.name not in skip]
    if smoke:
        return [(s, _smoke(s.args)) for s in steps]
    return [(s, s.full if full and s.full is not None else s.args) for s in steps]


def machine() -> dict:
    """The machine and software a run's timings belong to."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    probe = ("import jax, flax; from jaxvx.models import conv_form; "
             "print(jax.__version__, flax.__version__, jax.devices()[0].device_kind, jax.device_count(), conv_form())")
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
        info.update(jax=out[0], flax=out[1], device=" ".join(out[2:-2]), devices=int(out[-2]), conv=out[-1])
    except (subprocess.CalledProcessError, IndexError, ValueError) as e:
        info["jax"] = f"unknown ({e})"
    try:
        info["commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True,
                               check=True).stdout.strip()
        info["commit"] += " (with uncommitted changes)" if dirty else ""
    except (subprocess.CalledProcessError, FileNotFoundError):
        info["commit"] = "unknown"
    return info


def write_timings(out: Path, info: dict, rows: list[dict]):
    """``OUT/timings.md``: the machine and one row per step (the latest run of each)."""
    latest = {}
    for r in rows:
        latest[r["name"]] = r
    total = sum(r["seconds"] for r in latest.values())
    lines = [f"# Run times of `{' '.join(shlex.quote(a) for a in info['argv'])}`", "",
             f"Machine: {info['cpu']}, {info['cores']} cores; JAX {info.get('jax')} on {info.get('devices')} x "
             f"{info.get('device')} (convolutions: {info.get('conv')}); flax {info.get('flax')}, Python "
             f"{info['python']}; commit {info.get('commit')}.", "",
             "| step | feeds (docs/results.md) | started (UTC) | seconds | status |", "|---|---|---|---:|---|"]
    for r in latest.values():
        lines.append(f"| {r['name']} | {r['table']} | {r['started']} | {r['seconds']:.0f} | "
                     f"{'ok' if r['returncode'] == 0 else 'exit ' + str(r['returncode'])} |")
    lines += ["", f"Total: {total:.0f} s ({total / 60:.1f} min)."]
    (out / "timings.md").write_text("\n".join(lines) + "\n")


def run_step(step: Step, args: tuple, out: Path, videos: str, env: dict) -> dict:
    """Runs one step's command, its output copied to ``OUT/logs/NAME.log``; returns its timing row."""
    argv = [sys.executable] + [a.format(out=out, here=HERE, videos=videos) for a in args]
    log = out / "logs" / f"{step.name}.log"
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        f.write(f"$ {' '.join(shlex.quote(a) for a in argv)}\n")
        f.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                                env=env)
        for line in proc.stdout:
            f.write(line)
            f.flush()
            print(f"  {line}", end="", flush=True)
        code = proc.wait()
    return {"name": step.name, "table": step.table, "command": argv[1:], "started": started.strftime("%Y-%m-%d %H:%M"),
            "seconds": time.perf_counter() - t0, "returncode": code}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", type=Path, help="output folder")
    p.add_argument("--full", action="store_true", help="the sizes for an accelerator (see the module docstring)")
    p.add_argument("--only", nargs="+", default=(), metavar="NAME", help="run these steps only")
    p.add_argument("--skip", nargs="+", default=(), metavar="NAME", help="leave these steps out")
    p.add_argument("--force", action="store_true", help="run steps again that finished before")
    p.add_argument("--smoke", action="store_true",
                   help="every step at toy sizes (a few clips, 3 mask iterations): checks that they run, in minutes; "
                        "the numbers mean nothing")
    p.add_argument("--videos", default=str(REPO / "tests" / "data" / "videos"),
                   help="folder of real clips for the I3D steps (default: the repository's tests/data/videos)")
    p.add_argument("--figures", type=Path, default=None, help="where to draw the figures (default OUT/figures)")
    p.add_argument("--list", action="store_true", help="print the steps and their commands, run nothing")
    a = p.parse_args(argv)
    if a.smoke and a.full:
        p.error("--smoke and --full exclude each other")
    steps = plan(a.full, a.only, a.skip, smoke=a.smoke)
    if a.list:
        for step, args in steps:
            shown = (arg.format(out="OUT", here="scripts/experiments", videos=a.videos) for arg in args)
            print(f"{step.name:24s} {step.table}\n{'':24s} python {' '.join(shown)}")
        return 0
    if a.out is None:
        p.error("OUT is required (or --list)")
    if not os.path.isdir(a.videos):
        p.error(f"--videos must be a folder of video files, got {a.videos!r}")
    out = a.out.resolve()
    for sub in ("logs", "runs", "extra"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(out / ".jax_cache"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    info = {**machine(), "argv": ["python", "scripts/experiments/reproduce.py", *(argv or sys.argv[1:])]}
    (out / "machine.json").write_text(json.dumps(info, indent=1) + "\n")
    timings = out / "timings.jsonl"
    rows = [json.loads(line) for line in timings.read_text().splitlines()] if timings.exists() else []
    done = {r["name"] for r in rows if r["returncode"] == 0}
    failed = []
    for i, (step, args) in enumerate(steps, 1):
        if step.name in done and not a.force:
            print(f"[{i}/{len(steps)}] {step.name}: done before, skipped (--force runs it again)", flush=True)
            continue
        print(f"[{i}/{len(steps)}] {step.name}: {step.table}", flush=True)
        row = run_step(step, args, out, a.videos, env)
        rows.append(row)
        with open(timings, "a") as f:
            f.write(json.dumps(row) + "\n")
        write_timings(out, info, rows)
        status = "ok" if row["returncode"] == 0 else f"FAILED (exit {row['returncode']}, see logs/{step.name}.log)"
        print(f"[{i}/{len(steps)}] {step.name}: {row['seconds']:.0f} s, {status}", flush=True)
        if row["returncode"] != 0:
            failed.append(step.name)
    figures = a.figures or out / "figures"
    cmd = [sys.executable, str(HERE / "results_figures.py"), str(out / "runs"), str(out / "extra"), "--out",
           str(figures), "--videos", a.videos]
    with open(out / "logs" / "figures.log", "w") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env).returncode
    print(f"figures in {figures} ({'ok' if code == 0 else 'FAILED, see logs/figures.log'}); "
          f"run times in {out / 'timings.md'}", flush=True)
    if failed or code:
        print(f"failed: {', '.join(failed + (['figures'] if code else []))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
