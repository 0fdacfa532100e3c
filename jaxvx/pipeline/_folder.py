"""A run's output folder: its results files (one per process), the summary files and :class:`Results`.

``out/results.jsonl`` (one process) or ``out/results.<p>.jsonl`` (process ``p`` of several), ``out/summary.md``
and ``out/summary.json``, ``out/maps/<method>/<clip index>.npy``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from jaxvx._json import jsonable
from jaxvx.pipeline._results import differences, markdown_table, read_results, read_rows, summarize

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.md"


@dataclasses.dataclass
class Results:
    """What :func:`run` returns.

    Attributes:
        rows: every row of the results file (earlier runs included when resuming), one dict per clip.
        summary: the summary table as a list of dicts (``method, metric, mean, low, high, n, note``).
        markdown: the summary as a Markdown table.
        out: the output folder, or None when nothing was written.
        skipped: the rows of clips skipped because they could not be decoded.
        computed: how many clips this call computed (not counting resumed or skipped ones).
        seconds: wall time of this call; ``clips_per_second`` = computed / seconds.
    """

    rows: list[dict]
    summary: list[dict]
    markdown: str
    out: Path | None
    skipped: list[dict]
    computed: int
    seconds: float

    @property
    def clips_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else float("nan")

    def column(self, method: str, metric: str) -> np.ndarray:
        """float64 ``[N]`` of one metric over the computed clips, in clip order (NaN where undefined)."""
        ok = sorted((r for r in self.rows if r.get("status") == "ok"), key=lambda r: r["clip"])
        vals = [r["methods"][method].get(metric) for r in ok]
        return np.array([np.nan if v is None else v for v in vals], dtype=np.float64)


def results_paths(out: str | os.PathLike) -> list[Path]:
    """The results files in folder ``out``: ``results.jsonl`` (one process) and ``results.<p>.jsonl`` (process p
    of several), in process order."""
    out_dir = Path(out)
    if not out_dir.is_dir():
        return []
    found = [p for p in out_dir.iterdir() if p.name == RESULTS_FILE or process_of(p) is not None]
    return sorted(found, key=lambda p: -1 if p.name == RESULTS_FILE else process_of(p))


def process_of(path: Path) -> int | None:
    parts = path.name.split(".")
    if len(parts) == 3 and parts[0] == "results" and parts[2] == "jsonl" and parts[1].isdigit():
        return int(parts[1])
    return None


def summarize_folder(out: str | os.PathLike, *, confidence: float = 0.95, num_resamples: int = 1000) -> Results:
    """Merge the results files of ``out`` (written by one process or several, :func:`results_paths`) and summarise
    them as :func:`run` does, writing ``summary.md`` and ``summary.json``; what ``jaxvx summarize OUT`` runs.

    Raises:
        ValueError: no results file, files whose headers disagree on what was computed (the keys are named), or a
            clip in two files.
    """
    t_start = time.perf_counter()
    out_dir = Path(out)
    paths = results_paths(out_dir)
    if not paths:
        raise ValueError(f"out: {out_dir} holds no {RESULTS_FILE} or results.<process>.jsonl")
    first, rows, owner = None, [], {}
    for path in paths:
        header, file_rows = read_results(path)
        if first is None:
            first = header
        elif differences(first, header):
            raise ValueError(f"{path} and {paths[0]} were written with other settings "
                             f"({', '.join(differences(first, header))}): they cannot be summarised together")
        for row in file_rows:
            if row["clip"] in owner:
                raise ValueError(f"clip {row['clip']} is in both {owner[row['clip']]} and {path.name}")
            owner[row["clip"]] = path.name
        rows.extend(file_rows)
    count = first.get("process_count", 1)
    if count > 1 and len(paths) < count:
        warnings.warn(f"{out_dir}: {len(paths)} of the run's {count} process files are there; the summary covers "
                      "those", stacklevel=2)
    rows.sort(key=lambda r: r["clip"])
    methods = list(first.get("methods", {}))
    k = (first.get("metrics") or {}).get("num_classes")
    table = summarize(rows, methods, num_classes=k, confidence=confidence, num_resamples=num_resamples,
                      seed=first.get("seed", 0))
    skipped = [r for r in rows if r.get("status") == "skipped"]
    md = markdown_table(table, confidence=confidence, skipped=len(skipped),
                        failed=sum(1 for r in rows if r.get("status") == "failed"))
    write_summary(out_dir, md, table)
    return Results(rows=rows, summary=table, markdown=md, out=out_dir, skipped=skipped, computed=0,
                   seconds=time.perf_counter() - t_start)


def write_summary(out_dir: Path, md: str, table: list[dict]) -> None:
    """``summary.md`` and ``summary.json``, each replaced atomically."""
    for name, text in ((SUMMARY_FILE, md), ("summary.json", json.dumps(jsonable(table), indent=1))):
        tmp = out_dir / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out_dir / name)


def rows_of_every_process(out_dir: Path | None, process_count: int, own: list[dict]) -> list[dict]:
    """Every process's rows, read from ``results.<p>.jsonl`` in ``out_dir`` (a shared file system); a process's
    missing file is a warning naming it and ``jaxvx summarize`` (the summary then covers the files present)."""
    if out_dir is None:
        warnings.warn("with several processes and no out folder, each process summarises only its own rows",
                      stacklevel=3)
        return own
    rows = []
    for q in range(process_count):
        path = out_dir / f"results.{q}.jsonl"
        if not path.is_file():
            warnings.warn(f"{path} is not there (no shared file system?): the summary covers the other processes' "
                          f"rows; gather the files and run `jaxvx summarize {out_dir}`", stacklevel=3)
            continue
        rows.extend(read_rows(path))
    return sorted(rows, key=lambda r: r["clip"])


def save_map(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr.astype(np.float32, copy=False))
    os.replace(tmp, path)

