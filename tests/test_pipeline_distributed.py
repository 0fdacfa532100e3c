"""The pipeline over 2 and 4 processes on localhost (jax.distributed, 2 CPU devices each): the merged rows equal a
single process's row for row, a process stopped mid-run stops the others at once, and a restart resumes without
loss or duplicates. Each process is tests/_distributed_run.py."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from jaxvx import pipeline

HERE = pathlib.Path(__file__).parent
SCRIPT = HERE / "_distributed_run.py"
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
       "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
LIMIT_S = 240  # a run of every process, bounded: none may hang on a lost peer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out, n, *, die=None):
    """Start ``n`` processes (process ``die[0]`` sends itself SIGTERM at clip ``die[1]``); their exit codes and
    outputs, within LIMIT_S."""
    port = free_port()
    procs = []
    for p in range(n):
        extra = ["--die-at", str(die[1])] if die is not None and die[0] == p else []
        procs.append(subprocess.Popen([sys.executable, str(SCRIPT), str(out), str(p), str(n), str(port), *extra],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV))
    start = time.monotonic()
    results = []
    for proc in procs:
        try:
            output, _ = proc.communicate(timeout=max(1.0, LIMIT_S - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            pytest.fail(f"the processes did not finish within {LIMIT_S} s")
        results.append((proc.returncode, "\n".join(x for x in output.splitlines() if not x.startswith("[Gloo]"))))
    return results, time.monotonic() - start


def rows_of(out):
    rows = []
    for path in pipeline.results_paths(out):
        rows += [json.loads(x) for x in path.read_text().splitlines()[1:]]
    return sorted(rows, key=lambda r: r["clip"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    (code, output), = launch(out, 1)[0]
    assert code == 0, output
    return rows_of(out), (out / "summary.md").read_text()


def assert_same_rows(rows, reference_rows):
    assert [r["clip"] for r in rows] == [r["clip"] for r in reference_rows] == list(range(24))
    for a, b in zip(rows, reference_rows):
        assert (a["prediction"], a["target"], a["status"]) == (b["prediction"], b["target"], b["status"])
        assert a["score"] == pytest.approx(b["score"], rel=1e-5)
        for col, value in b["methods"]["gxi"].items():
            assert a["methods"]["gxi"][col] == pytest.approx(value, rel=1e-5, abs=1e-6), (a["clip"], col)


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 4])
def test_several_processes_give_the_rows_and_summary_of_one(tmp_path, reference, n):
    results, _ = launch(tmp_path, n)
    assert all(code == 0 for code, _ in results), results
    assert [out.split()[-1] for _, out in results] == [str(24 // n)] * n  # each process computed its share
    assert sorted(p.name for p in pipeline.results_paths(tmp_path)) == [f"results.{p}.jsonl" for p in range(n)]
    assert_same_rows(rows_of(tmp_path), reference[0])
    assert (tmp_path / "summary.md").read_text() == reference[1]  # process 0 summarised every process's rows
    assert pipeline.summarize_folder(tmp_path).markdown == reference[1]


@pytest.mark.slow
def test_a_process_stopped_mid_run_stops_the_others_and_a_restart_resumes(tmp_path, reference):
    results, seconds = launch(tmp_path, 2, die=(1, 9))
    (code0, out0), (code1, out1) = results
    assert code1 == 3 and "Terminated: received signal SIGTERM" in out1, out1
    assert code0 == 3 and "lost contact with the others" in out0 and "process 1 (pid" in out0 and "gone" in out0, out0
    assert seconds < 60, "a lost peer is noticed at the next exchange, not after JAX's timeouts"
    before = rows_of(tmp_path)
    assert 0 < len(before) < 24
    results, _ = launch(tmp_path, 2)  # every process again: each resumes its own file
    assert all(code == 0 for code, _ in results), results
    assert sum(int(out.split()[-1]) for _, out in results) == 24 - len(before)
    assert_same_rows(rows_of(tmp_path), reference[0])  # nothing lost, nothing twice


@pytest.mark.slow
def test_another_number_of_processes_cannot_write_into_the_folder(tmp_path, reference):
    results, _ = launch(tmp_path, 2)
    assert all(code == 0 for code, _ in results)
    (code, output), = launch(tmp_path, 1)[0]
    assert code != 0 and "holds the results of a run with another number of processes" in output


@pytest.mark.slow
def test_jaxvx_run_on_two_processes_and_jaxvx_summarize(tmp_path):
    """The command line: the same ``jaxvx run`` on each process with --coordinator/--num-processes/--process-id;
    process 0 prints the summary over both, and ``jaxvx summarize`` rebuilds it from the two files."""
    port = free_port()
    args = ["-m", "jaxvx", "run", "--checkpoint", "c3d-small", "--method", "gradient", "--num-clips", "8",
            "--batch-size", "2", "--out", str(tmp_path / "out"), "--coordinator", f"127.0.0.1:{port}",
            "--num-processes", "2"]
    procs = [subprocess.Popen([sys.executable, *args, "--process-id", str(p)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=ENV) for p in (0, 1)]
    outs = [proc.communicate(timeout=LIMIT_S)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outs
    assert "| (model) | accuracy |" in outs[0] and "| 8 |" in outs[0]
    assert "process 1 of 2: 4 clips computed" in outs[1] and "| (model) |" not in outs[1]
    summary = (tmp_path / "out" / "summary.md").read_text()
    done = subprocess.run([sys.executable, "-m", "jaxvx", "summarize", str(tmp_path / "out")], capture_output=True,
                          text=True, env=ENV, timeout=120)
    assert done.returncode == 0 and "8 rows from results.0.jsonl, results.1.jsonl" in done.stdout
    assert (tmp_path / "out" / "summary.md").read_text() == summary
