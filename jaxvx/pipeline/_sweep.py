"""A pipeline run per snippet setting: how accuracy, border B and lookahead L move with the step and the offset.

Anders et al. sample C3D's 16-frame snippets with steps from 1/16 (one frame repeated 16 times) to 32 (every 32nd
frame) and follow the model's accuracy and the border effect B of the frame shares; the lookahead L they follow
over the snippet's offset. :func:`sweep` gives every setting a :func:`jaxvx.pipeline.run` of its own, into a folder
of its own (so every setting resumes on its own after a crash), reads each clip once for all of them, and gathers
the summaries into one table.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import numbers
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from jaxvx._checks import check_int, is_int
from jaxvx._errors import VideoError
from jaxvx._json import jsonable
from jaxvx.io import step_fraction
from jaxvx.pipeline._clips import is_indexable
from jaxvx.pipeline._options import OutputOptions, Sampling, check_record
from jaxvx.pipeline._progress import progress_bar
from jaxvx.pipeline._results import format_number
from jaxvx.pipeline._run import run

__all__ = ["sweep", "Sweep", "SWEEP_FILE", "step_label"]

SWEEP_FILE = "sweep.md"
#: The summary rows a sweep gathers per method (besides the model's accuracy), in the sweep table's column order.
SWEEP_METRICS = ("border B (frame share)", "lookahead L (frame share)")


def step_label(step) -> str:
    """A step as the exact rational it is sampled with: ``"1/16"``, ``"2"`` (``Fraction`` spelling)."""
    return str(step_fraction(step))


def _folder(step: str, offset: int) -> str:
    return f"step-{step.replace('/', '_')}-offset-{offset}"


@dataclasses.dataclass
class Sweep:
    """What :func:`sweep` returns.

    Attributes:
        runs: ``{(step, offset): Results}`` in sweep order, ``step`` as :func:`step_label` spells it.
        table: one dict per setting and summary row: ``step``, ``step_value`` (float), ``offset``, then the
            summary row's ``method, metric, mean, low, high, n, note``.
        markdown: the sweep as a Markdown table, a line per setting and method (accuracy, B and L with their CIs).
        out: the output folder, or None.
    """

    runs: dict
    table: list[dict]
    markdown: str
    out: Path | None

    @property
    def methods(self) -> list[str]:
        return _methods(self.table)

    def series(self, method: str, metric: str, *, offset: int | None = None, step=None) -> dict[str, np.ndarray]:
        """One summary value across the sweep: ``{"step", "offset", "mean", "low", "high", "n"}``, float64 arrays in
        sweep order (NaN where undefined). ``method="(model)", metric="accuracy"`` is the model's accuracy. Pass
        ``offset`` (or ``step``) to keep the settings with that offset (step) only."""
        want = None if step is None else step_label(step)
        rows = [r for r in self.table if r["method"] == method and r["metric"] == metric
                and (offset is None or r["offset"] == offset) and (want is None or r["step"] == want)]

        def col(key):
            return np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=np.float64)

        return {"step": col("step_value"), "offset": col("offset"), "mean": col("mean"), "low": col("low"),
                "high": col("high"), "n": col("n")}


def _methods(table: list[dict]) -> list[str]:
    """The explanation methods of a sweep table, in order (the model's own rows left out)."""
    return list(dict.fromkeys(r["method"] for r in table if r["method"] != "(model)"))


def _settings(steps, offsets) -> list[tuple[str, int]]:
    if isinstance(steps, (str, numbers.Number, Fraction)):
        steps = [steps]
    if isinstance(offsets, numbers.Number):
        offsets = [offsets]
    steps, offsets = list(steps), list(offsets)
    if not steps or not offsets:
        raise ValueError(f"steps and offsets must each hold at least one value, got steps={steps!r}, "
                         f"offsets={offsets!r}")
    labels = [step_label(s) for s in steps]
    for o in offsets:
        if not is_int(o) or o < 0:
            raise ValueError(f"offsets must be ints >= 0, got {o!r} in {offsets!r}")
    for name, values in (("steps", labels), ("offsets", [int(o) for o in offsets])):
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"{name} repeat {repeated} (as exact values): each setting is run once")
    return [(s, int(o)) for s, o in itertools.product(labels, offsets)]


def sweep(source, forward, method, *, steps: Sequence = (1,), offsets: Sequence[int] = (0,), out=None,
          resume: bool = True, chunk: int = 32, **run_kwargs) -> Sweep:
    """Run :func:`jaxvx.pipeline.run` once for every snippet ``step`` with every ``offset`` and gather the summaries.

    The sweep of Anders et al.: C3D's accuracy and the border effect B (the quadratic coefficient of the mean
    frame share ``P_t``, :func:`jaxvx.transforms.fit_border_lookahead`) as the step goes from ``"1/16"`` to 32, and
    the lookahead L (the linear coefficient) as the offset moves. Every setting is an ordinary pipeline run: the
    same method, metrics and clips; only the sampled frames differ. Clips of one shape compile the pipeline's step
    once for the whole sweep. B and L need the ``frame_share`` metric (part of ``metrics="auto"``).

    Each clip is read (decoded, rendered) once for all settings: with ``out`` and an indexable source, the sweep
    takes ``chunk`` clips at a time, keeps their records in memory and runs every setting on them, appending to each
    setting's results file (the rows and summaries are those of one run per setting over all the clips). Without
    ``out``, or for a source that can only be iterated, each setting reads the whole source in turn.

    Args:
        source: a :mod:`jaxvx.data` source, a list of records, or any re-iterable source. Clips shorter than
            ``offset + length * step`` frames are padded as ``pad`` says (default ``"loop"``); render or pick clips
            long enough for the largest step (``jaxvx.data.synthetic(num_frames=...)``).
        forward, method: as for :func:`jaxvx.pipeline.run`.
        steps: snippet steps (ints, floats, strings such as ``"1/16"`` or Fractions), each distinct as a rational.
            Default ``(1,)``.
        offsets: first frames of the snippets, ints >= 0, distinct. Default ``(0,)``.
        out: output folder. Each setting writes its run to ``out/step-<p>_<q>-offset-<o>/`` (``step-1_16-offset-0``;
            ``step-2-offset-0``), and the sweep writes ``out/sweep.md`` and ``out/sweep.json`` (the table, strict
            JSON). None keeps everything in memory.
        resume: continue every setting's results file in ``out``: a setting that holds all its rows computes
            nothing again. False starts every setting over.
        chunk: clips kept in memory at once and run through every setting (rounded up to a multiple of
            ``batch_size``). Default 32.
        **run_kwargs: any other keyword of :func:`jaxvx.pipeline.run` (``variables``, ``transforms``, ``metrics``,
            ``batch_size``, ``preprocess``, ``limit``, ``progress``, ``sampling``, ``output``, ...), the same for
            every setting; the sweep sets ``sampling.step`` and ``.offset`` (keep them at their defaults: the
            :class:`Sampling` gives the ``length``, ``pad`` and ``mode``) and ``output.summary``. The progress bar
            counts clips times settings (one bar per setting without ``out``).

    Returns:
        :class:`Sweep`; ``runs[setting].computed`` and ``.seconds`` add up the setting's share of every chunk.
    """
    sampling = check_record("sampling", run_kwargs.pop("sampling", Sampling()), Sampling)
    output = check_record("output", run_kwargs.pop("output", OutputOptions()), OutputOptions)
    clash = [name for name in ("step", "offset") if getattr(sampling, name) != getattr(Sampling(), name)]
    clash += [] if output.summary else ["summary"]
    if clash:
        raise TypeError(f"sweep sets {clash} itself (its own arguments are steps=[...], offsets=[...], out= and "
                        "resume=)")
    try:
        one_pass = iter(source) is source
    except TypeError:
        raise TypeError(f"source must be a jaxvx.data source or a list of records, got {type(source).__name__}") \
            from None
    if one_pass:
        raise ValueError(f"source must be re-iterable (a jaxvx.data source or a list of records): the sweep reads "
                         f"it once per setting, and {type(source).__name__} is a one-pass iterator")
    settings = _settings(steps, offsets)
    chunk = check_int("chunk", chunk, 1)
    out_dir = None if out is None else Path(out)
    progress = run_kwargs.pop("progress", True)
    prefix = f"{progress}: " if isinstance(progress, str) else ""
    runs = {}
    if out_dir is None or not is_indexable(source):
        for step, offset in settings:
            where = None if out_dir is None else out_dir / _folder(step, offset)
            runs[(step, offset)] = run(source, forward, method, out=where, resume=resume,
                                       progress=progress and f"{prefix}step {step}, offset {offset}",
                                       sampling=dataclasses.replace(sampling, step=step, offset=offset),
                                       output=output, **run_kwargs)
    else:
        limit = run_kwargs.pop("limit", None)
        n = len(source) if limit is None else min(len(source), check_int("limit", limit, 0))
        batch = run_kwargs.get("batch_size", 8)
        chunk = -(-chunk // batch) * batch if isinstance(batch, int) and batch > 0 else chunk
        window = _Window(source)
        bar = progress_bar(n * len(settings), progress and f"{prefix}sweep, {len(settings)} settings")
        totals = dict.fromkeys(settings, (0, 0.0))
        try:
            for lo in range(0, max(n, 1), chunk):
                hi = min(n, lo + chunk)
                window.keep(range(lo, hi))
                for setting in settings:
                    results = run(window, forward, method, out=out_dir / _folder(*setting),
                                  resume=resume or lo > 0, progress=False, limit=hi,
                                  sampling=dataclasses.replace(sampling, step=setting[0], offset=setting[1]),
                                  output=dataclasses.replace(output, summary=hi >= n), **run_kwargs)
                    computed, seconds = totals[setting]
                    totals[setting] = (computed + results.computed, seconds + results.seconds)
                    runs[setting] = results
                    bar.update(hi - lo)
        finally:
            bar.close()
        runs = {s: dataclasses.replace(r, computed=totals[s][0], seconds=totals[s][1]) for s, r in runs.items()}
    table = []
    for (step, offset), results in runs.items():
        for row in results.summary:
            table.append({"step": step, "step_value": float(Fraction(step)), "offset": offset, **row})
    md = _markdown(table, settings, confidence=output.confidence)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / SWEEP_FILE).write_text(md, encoding="utf-8")
        (out_dir / "sweep.json").write_text(json.dumps(jsonable(table), indent=1, allow_nan=False),
                                            encoding="utf-8")
    return Sweep(runs=runs, table=table, markdown=md, out=out_dir)


class _Window:
    """An indexable source that keeps the records of the clips in one chunk, so that every setting of a sweep reads
    a clip once (an undecodable clip raises its :class:`jaxvx.VideoError` for each setting, which records the skip).
    Other attributes (``root``, ``paths``, ...) are the source's."""

    def __init__(self, source):
        self._source = source
        self._records: dict = {}

    def keep(self, indices) -> None:
        self._records = {i: r for i, r in self._records.items() if i in indices}

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index):
        if index not in self._records:
            try:
                self._records[index] = self._source[index]
            except VideoError as err:
                self._records[index] = err
        record = self._records[index]
        if isinstance(record, VideoError):
            raise record
        return record

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._source, name)

    def __repr__(self) -> str:
        return repr(self._source)


def _cell(row) -> str:
    """A summary row's mean with its interval, as the pipeline's summary table writes numbers; ``-`` for none."""
    if row is None:
        return "-"
    text = format_number(row["mean"])
    if row["low"] is not None and math.isfinite(row["low"]):
        text += f" [{format_number(row['low'])}, {format_number(row['high'])}]"
    return text


def _markdown(table: list[dict], settings: list[tuple[str, int]], *, confidence: float) -> str:
    """A line per setting and method: clips, accuracy, then B and L with their bootstrap CIs."""
    index = {(r["step"], r["offset"], r["method"], r["metric"]): r for r in table}
    methods = _methods(table)
    level = f"{100 * confidence:g} % CI"
    lines = [f"| step | offset | method | clips | accuracy [{level}] | border B [{level}] | lookahead L [{level}] |",
             "|---:|---:|---|---:|---|---|---|"]
    for step, offset in settings:
        acc = index.get((step, offset, "(model)", "accuracy"))
        for method in methods or ["-"]:
            b, ll = (index.get((step, offset, method, m)) for m in SWEEP_METRICS)
            n = next((r["n"] for r in (b, ll, acc) if r is not None), "-")
            lines.append(f"| {step} | {offset} | {method} | {n} | {_cell(acc)} | {_cell(b)} | {_cell(ll)} |")
    return "\n".join(lines) + "\n"
