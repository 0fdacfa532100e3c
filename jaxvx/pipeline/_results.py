"""The results of a pipeline run: the JSON-lines file (written as rows are computed, resumable) and the summary."""

from __future__ import annotations

import json
import math
import os
import socket
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from jaxvx._json import jsonable
from jaxvx.metrics import bootstrap_ci, pointing_accuracy
from jaxvx.transforms import fit_border_lookahead

__all__ = ["ResultsFile", "ResultsLocked", "differences", "read_results", "read_rows", "summarize", "markdown_table"]

FORMAT = "jaxvx-pipeline/1"


class ResultsLocked(RuntimeError):
    """Another writer holds the results file (a second run into the same output folder)."""


class _Lock:
    """An exclusive, non-blocking lock on ``path`` (``fcntl.flock`` where available, else an ``O_EXCL`` file).

    The kernel releases an ``flock`` when its process dies, so a crashed run never leaves a stale lock behind.
    """

    def __init__(self, path: Path, what: Path):
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            fcntl = None
        try:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:  # pragma: no cover
                os.close(self._fd)
                self._fd = os.open(f"{path}.excl", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except OSError:
            os.close(self._fd)
            self._fd = None
            holder = _read_text(path).strip() or "another process"
            raise ResultsLocked(f"{what} is being written by another run ({holder}): wait for it to finish, or "
                                "write to another output folder") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


class ResultsFile:
    """``results.jsonl``: a header line, then one JSON object per clip, appended and flushed batch by batch.

    The header holds what makes rows comparable (model weights, methods and their settings, transforms, metrics,
    data source and sampling, seed, versions, see :mod:`jaxvx._provenance`). Reopening with ``resume=True`` checks
    it key by key (a difference is a ``ValueError`` naming the key, both values and how to start over) and reads the
    rows already there, so that :func:`jaxvx.pipeline.run` computes only the missing clips.

    While open, the file is locked (``<file>.lock``): a second writer gets :class:`ResultsLocked` at once.

    Damage is recovered, never a dead end: lines that are not JSON (a line cut short by a crash, two writers' lines
    run together) and repeated clips are moved to ``<file>.damaged`` with a warning and the file is rewritten
    atomically without them; those clips are computed again. A file whose header itself is damaged and that holds
    no rows is started over; one with rows is left untouched and reported.
    """

    def __init__(self, path: str | os.PathLike, header: dict, *, resume: bool):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _Lock(self.path.with_name(self.path.name + ".lock"), self.path)
        try:
            self._open(header, resume)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, header: dict, resume: bool) -> None:
        self.rows: list[dict] = []
        header = {"format": FORMAT, **jsonable(header)}
        self.header = header
        old = self._read() if resume and self.path.exists() and self.path.stat().st_size > 0 else None
        if old is not None:
            old_header, self.rows = old
            mismatch = differences(old_header, header)
            if mismatch:
                detail = "; ".join(f"{k}: the file has {_brief(old_header.get(k))}, this run "
                                   f"{_brief(header.get(k))}" for k in mismatch)
                raise ValueError(f"cannot resume {self.path}: it was written with other settings ({detail}). Write "
                                 "to another output folder, or start over (resume=False; jaxvx run --no-resume)")
            self._fh = open(self.path, "a", encoding="utf-8")
        else:
            self._fh = _replace_with(self.path, [{"header": header}])
        self.done = {row["clip"] for row in self.rows}

    def _read(self) -> tuple[dict, list[dict]] | None:
        """The header and rows, recovering damage (see the class docstring); None: start over."""
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        complete = data.endswith(b"\n")
        try:
            header = json.loads(lines[0])["header"]
            if not isinstance(header, dict) or (len(lines) == 1 and not complete):
                raise ValueError
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            if sum(1 for line in lines[1:] if line.strip()) == 0:
                warnings.warn(f"{self.path}: its header line is damaged and it holds no rows: starting it over",
                              stacklevel=4)
                _append_damaged(self.path, [(1, lines[0])])
                return None
            raise ValueError(f"cannot resume {self.path}: its first line is not a jaxvx pipeline header; the file is "
                             "left as it is (move it away, or write to another output folder)") from None
        rows, damaged, seen = [], [], set()
        for n, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("clip"), int):
                    raise ValueError
            except (ValueError, UnicodeDecodeError):
                damaged.append((n, line))
                continue
            if row["clip"] in seen:
                damaged.append((n, line))
                continue
            seen.add(row["clip"])
            rows.append(row)
        if damaged:
            _append_damaged(self.path, damaged)
            warnings.warn(f"{self.path}: {len(damaged)} damaged or repeated line(s) (line "
                          f"{', '.join(str(n) for n, _ in damaged[:5])}{', ...' if len(damaged) > 5 else ''}) moved to "
                          f"{self.path.name}.damaged; their clips are computed again", stacklevel=4)
            _replace_with(self.path, [{"header": header}, *rows]).close()
        return header, rows

    def _write_lines(self, objs: Iterable[dict]) -> None:
        _write_lines(self._fh, objs)

    def append(self, rows: list[dict]) -> None:
        rows = [jsonable(r) for r in rows]
        self._write_lines(rows)
        self.rows.extend(rows)
        self.done.update(r["clip"] for r in rows)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._lock.release()


def _write_lines(fh, objs: Iterable[dict]) -> None:
    for obj in objs:
        fh.write(json.dumps(jsonable(obj), separators=(",", ":")) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def _replace_with(path: Path, objs: list[dict]):
    """Write ``objs`` as JSON lines to a temporary file, move it over ``path`` atomically, return it open for
    appending."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        _write_lines(fh, objs)
    os.replace(tmp, path)
    return open(path, "a", encoding="utf-8")


def _append_damaged(path: Path, lines: list[tuple[int, bytes]]) -> None:
    with open(path.with_name(path.name + ".damaged"), "ab") as fh:
        for n, line in lines:
            fh.write(f"# line {n} of {path.name}\n".encode() + line + b"\n")


def _brief(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 160 else text[:157] + "..."


def read_results(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """The header and rows of a results file, read only (no lock, nothing rewritten): lines that are not JSON and
    repeated clips are left out, as a resume would set them aside."""
    data = Path(path).read_bytes().split(b"\n")
    try:
        header = json.loads(data[0])["header"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ValueError(f"{path}: its first line is not a jaxvx pipeline header") from None
    rows, seen = [], set()
    for line in data[1:]:
        try:
            row = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(row, dict) and isinstance(row.get("clip"), int) and row["clip"] not in seen:
            seen.add(row["clip"])
            rows.append(row)
    return header, rows


def read_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of a results file (:func:`read_results`)."""
    return read_results(path)[1]


def differences(a: dict, b: dict) -> list[str]:
    """The header keys on which two results headers disagree about what was computed."""
    return [k for k in sorted(set(a) | set(b)) if k not in _UNCHECKED and a.get(k) != b.get(k)]


#: Header keys that may differ between the runs that write one file (where and how it ran, not what it computed).
_UNCHECKED = ("devices", "process", "limit")


#: Per-clip counts kept for exact aggregation (not averaged on their own).
_COUNT_COLUMNS = ("spatial_pointing_game_hits", "spatial_pointing_game_frames")


def _scalar_columns(rows: list[dict], method: str) -> list[str]:
    cols: dict[str, None] = {}
    for row in rows:
        for key, value in row.get("methods", {}).get(method, {}).items():
            if not isinstance(value, list) and key not in _COUNT_COLUMNS:
                cols[key] = None
    return list(cols)


def summarize(rows: list[dict], methods: list[str], *, num_classes: int | None = None, confidence: float = 0.95,
              num_resamples: int = 1000, seed: int = 0) -> list[dict]:
    """Per method and metric: mean over clips with a bootstrap CI, as a list of table rows.

    Besides every scalar column, the spatial pointing game gets its frame-pooled overall score and Li et al.'s
    per-class mean (``spatial_pointing_game (class mean)``), and a ``frame_share`` column gets the border and
    lookahead of :func:`jaxvx.transforms.fit_border_lookahead` with their bootstrap intervals.
    """
    ok = [r for r in rows if r.get("status") == "ok"]
    table = []

    def add(method, metric, ci, note=""):
        table.append({"method": method, "metric": metric, "mean": ci[0], "low": ci[1], "high": ci[2], "n": ci[3],
                      "note": note})

    if ok and all("correct" in r for r in ok):
        add("(model)", "accuracy", bootstrap_ci([float(r["correct"]) for r in ok], confidence=confidence,
                                                num_resamples=num_resamples, seed=seed))
    for method in methods:
        per = [r["methods"][method] for r in ok if method in r.get("methods", {})]
        for col in _scalar_columns(ok, method):
            values = [np.nan if m.get(col) is None else float(m[col]) for m in per]
            add(method, col, bootstrap_ci(values, confidence=confidence, num_resamples=num_resamples, seed=seed))
        hits = [m.get("spatial_pointing_game_hits") for m in per]
        if per and all(h is not None for h in hits):
            frames = np.array([m["spatial_pointing_game_frames"] for m in per], dtype=np.int64)
            hit_arr = np.array(hits, dtype=np.int64)
            labels = np.array([r["label"] for r in ok if method in r.get("methods", {})])
            if frames.sum() and labels.size and np.all(labels >= 0):
                t_max = int(frames.max()) if frames.size else 0
                idx = np.arange(max(t_max, 1))[None]
                acc = pointing_accuracy(idx < hit_arr[:, None], idx < frames[:, None], labels,
                                        num_classes=num_classes)
                add(method, "spatial_pointing_game (all frames)", (acc["overall"], np.nan, np.nan, acc["num_valid"]),
                    "frames pooled")
                n_cls = int(np.sum(acc["counts"] > 0))
                add(method, "spatial_pointing_game (class mean)", (acc["class_mean"], np.nan, np.nan, n_cls),
                    "mean over classes (Li et al.)")
        shares = [m.get("frame_share") for m in per]
        if per and all(isinstance(s, list) and len(s) >= 3 for s in shares) and len({len(s) for s in shares}) == 1:
            arr = np.array([[np.nan if v is None else v for v in s] for s in shares], dtype=np.float64)
            arr = arr[np.all(np.isfinite(arr), axis=1)]
            if len(arr):
                fit = fit_border_lookahead(arr, num_bootstrap=num_resamples, confidence=confidence, seed=seed)
                add(method, "border B (frame share)", (fit.border, *fit.border_ci, fit.num_clips),
                    "q(t) = B t^2 + C t + D")
                add(method, "lookahead L (frame share)", (fit.lookahead, *fit.lookahead_ci, fit.num_clips),
                    "l(t) = L t + A")
    return table


def format_number(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    ax = abs(x)
    if ax != 0 and (ax < 1e-3 or ax >= 1e4):
        return f"{x:.3e}"
    return f"{x:.4f}"


def markdown_table(table: list[dict], *, confidence: float = 0.95, skipped: int = 0, failed: int = 0) -> str:
    """The summary rows as a Markdown table (``-`` where a value is undefined)."""
    level = f"{100 * confidence:g} % CI"
    lines = [f"| method | metric | mean | {level} | clips | note |", "|---|---|---:|---|---:|---|"]
    for row in table:
        ci = "-" if not (row["low"] is not None and math.isfinite(row["low"])) else \
            f"[{format_number(row['low'])}, {format_number(row['high'])}]"
        lines.append(f"| {row['method']} | {row['metric']} | {format_number(row['mean'])} | {ci} | {row['n']} | "
                     f"{row['note']} |")
    if skipped:
        lines.append("")
        lines.append(f"{skipped} clip(s) skipped (undecodable); see the rows with status \"skipped\".")
    if failed:
        lines.append("")
        lines.append(f"{failed} clip(s) failed (a map holds NaN or inf) and are left out; see the rows with status "
                     "\"failed\".")
    return "\n".join(lines) + "\n"
