"""The results of a pipeline run: the JSON-lines file (written as rows are computed, resumable) and the summary."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxvx.metrics import bootstrap_ci, pointing_accuracy
from jaxvx.transforms import fit_border_lookahead

__all__ = ["ResultsFile", "summarize", "markdown_table", "jsonable"]

FORMAT = "jaxvx-pipeline/1"


def jsonable(value: Any) -> Any:
    """NumPy / JAX values as plain JSON values; NaN and inf become ``None`` (strict JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "__array__") or isinstance(value, np.generic):
        arr = np.asarray(value)
        if arr.ndim:
            return [jsonable(v) for v in arr.tolist()]
        value = arr.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ResultsFile:
    """``results.jsonl``: a header line, then one JSON object per clip, appended and flushed batch by batch.

    The header holds the run's settings; reopening with ``resume=True`` checks them and reads the rows already
    there, so that :func:`jaxvx.pipeline.run` computes only the missing clips. A line cut short by a crash is dropped
    (the file is truncated to its last complete line).
    """

    def __init__(self, path: str | os.PathLike, header: dict, *, resume: bool):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        header = {"format": FORMAT, **jsonable(header)}
        if resume and self.path.exists() and self.path.stat().st_size > 0:
            old_header, self.rows = self._read()
            mismatch = {k: (old_header.get(k), v) for k, v in header.items()
                        if k in _CHECKED and old_header.get(k) != v}
            if mismatch:
                detail = "; ".join(f"{k}: file has {a!r}, this run {b!r}" for k, (a, b) in mismatch.items())
                raise ValueError(f"cannot resume {self.path}: it was written with other settings ({detail}); "
                                 "use another output folder or resume=False to start over")
            self._fh = open(self.path, "a", encoding="utf-8")
        else:
            self._fh = open(self.path, "w", encoding="utf-8")
            self._write_lines([{"header": header}])
        self.done = {row["clip"] for row in self.rows}

    def _read(self) -> tuple[dict, list[dict]]:
        data = self.path.read_bytes()
        good_end = data.rfind(b"\n") + 1
        if good_end < len(data):  # a line cut short by a crash: drop it
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)
            data = data[:good_end]
        lines = [line for line in data.decode("utf-8").splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"cannot resume {self.path}: the file has no header line")
        try:
            first = json.loads(lines[0])
            header = first["header"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"cannot resume {self.path}: its first line is not a jaxvx pipeline header") from None
        rows = []
        for n, line in enumerate(lines[1:], 2):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"cannot resume {self.path}: line {n} is not valid JSON") from None
        return header, rows

    def _write_lines(self, objs: Iterable[dict]) -> None:
        for obj in objs:
            self._fh.write(json.dumps(jsonable(obj), separators=(",", ":")) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def append(self, rows: list[dict]) -> None:
        rows = [jsonable(r) for r in rows]
        self._write_lines(rows)
        self.rows.extend(rows)
        self.done.update(r["clip"] for r in rows)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


#: Header keys that must agree for a run to resume a file.
_CHECKED = ("format", "methods", "metrics", "target", "sampling", "preprocess", "transforms")


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


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    ax = abs(x)
    if ax != 0 and (ax < 1e-3 or ax >= 1e4):
        return f"{x:.3e}"
    return f"{x:.4f}"


def markdown_table(table: list[dict], *, confidence: float = 0.95, skipped: int = 0) -> str:
    """The summary rows as a Markdown table (``-`` where a value is undefined)."""
    level = f"{100 * confidence:g} % CI"
    lines = [f"| method | metric | mean | {level} | clips | note |", "|---|---|---:|---|---:|---|"]
    for row in table:
        ci = "-" if not (row["low"] is not None and math.isfinite(row["low"])) else \
            f"[{_fmt(row['low'])}, {_fmt(row['high'])}]"
        lines.append(f"| {row['method']} | {row['metric']} | {_fmt(row['mean'])} | {ci} | {row['n']} | "
                     f"{row['note']} |")
    if skipped:
        lines.append("")
        lines.append(f"{skipped} clip(s) skipped (undecodable); see the rows with status \"skipped\".")
    return "\n".join(lines) + "\n"
