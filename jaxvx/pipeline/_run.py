"""Run explanation methods over a dataset: sampling, preprocessing, model, methods, transforms, metrics, results.

    source ─▶ snippet sampling + preprocessing (host) ─▶ batches sharded over all devices ─▶ one jitted step:
    model ─▶ each method (+ transforms) ─▶ metrics ─▶ rows written to results.jsonl as they come ─▶ summary

:func:`run` is the library entry point behind ``jaxvx run``. What it guarantees:

- **Compiled once per shape.** The step (forward, every method, transforms and metrics) is one ``jax.jit``
  function; batches keep one shape (the last is padded with copies of its last clip, marked invalid), so a run over
  equally sized clips compiles once. Clips of another shape (e.g. with ``resize="none"``) start a new batch.
- **Sharded over all devices.** A ``Mesh`` over every device with one ``"data"`` axis; the step is a
  ``shard_map`` over it: each device explains its own clips with the replicated variables, with no communication.
  The batch size is rounded up to a multiple of the local device count.
- **Several processes** (one per host of a TPU slice or GPU cluster, or several on one machine; start each with
  :func:`initialize`, then the same ``run``): process ``p`` of ``n`` reads only clips ``p, p + n, ...`` and writes
  ``results.<p>.jsonl``. The processes run the step in lockstep: before each step they exchange what they hold
  (clips, shapes, an error), one that has no clips left computes zeros it does not write, so shares of unequal size
  (a resume, skipped files) never hang; every batch must have one shape across processes. An error in one process
  (a clip that does not fit) stops every process with it; a process that dies stops the others at the next exchange
  with :class:`PeerLost` naming it; SIGTERM raises :class:`Terminated` after the batch in flight is written. After a
  barrier, process 0 summarises every process's rows (read from ``out``: a shared file system; else
  :func:`summarize_folder`, ``jaxvx summarize OUT``, merges the files). A folder holds the rows of one number of
  processes. See ``docs/scaling.md``.
- **Results as they are computed.** ``out/results.jsonl`` (a header line, then one JSON object per clip with its
  metrics), flushed and fsynced after every batch; optionally each clip's maps as ``out/maps/<method>/<clip>.npy``.
  One batch is computed while the host prepares the next (JAX dispatches asynchronously); on an exception or
  Ctrl-C the batch in flight is still written, so only the clips being assembled are lost; running again with ``resume=True`` skips the clips
  already written (a line cut short is dropped).
- **A summary.** Per method and metric, the mean over clips with a percentile-bootstrap CI, as
  ``out/summary.md`` (a Markdown table) and ``out/summary.json``.
- **Errors name the clip.** Input that does not fit (a video that is not ``[T, H, W, 3]``, too few frames with
  ``pad="error"``, a label outside the model's classes, NaN or inf in the input) stops the run with a ValueError
  naming the clip and the problem, after computing and writing the clips before it. A file a folder source cannot
  decode (:class:`jaxvx.VideoError`) is skipped with a warning and recorded as a row with ``"status": "skipped"``.

Example::

    model, variables, card = jaxvx.checkpoints.load("c3d-small")
    results = jaxvx.pipeline.run(
        jaxvx.data.synthetic("test", num_clips=200), model,
        {"gradient": jaxvx.methods.gradient(), "selective": jaxvx.chain(jaxvx.methods.gradient(), jaxvx.transforms.selective(4.0))},
        variables=variables, preprocess=card["preprocess"], out="runs/gradient")
    print(results.markdown)

Methods must return arrays (a :func:`jaxvx.transforms.named_chain` method returns a dict: use it interactively).

:func:`sweep` runs the same over several snippet steps and offsets (Anders et al.'s accuracy and border B over the
step, lookahead L over the offset), one resumable run per setting, and :func:`jaxvx.viz.plot_sweep` draws it::

    source = jaxvx.data.synthetic("test", num_clips=200, num_frames=64, height=64, width=64)
    sw = jaxvx.pipeline.sweep(source, model, jaxvx.methods.lrp(jaxvx.lrp.deep_taylor(-3.0, 3.0)),
                              steps=["1/4", "1/2", 1, 2, 4], variables=variables,
                              preprocess=card["preprocess"], out="runs/steps")
    print(sw.markdown)
    jaxvx.viz.save_png("steps.png", jaxvx.viz.plot_sweep(sw))
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxvx._checks import check_int
from jaxvx._errors import VideoError
from jaxvx.pipeline._metrics import Metric, MetricOptions, resolve_metrics
from jaxvx.pipeline._results import (ResultsFile, ResultsLocked, differences, jsonable, markdown_table, read_results,
                                     read_rows, summarize)
from jaxvx._distributed import PeerLost, Terminated, initialize
from jaxvx._provenance import describe, tree_sha256, versions
from jaxvx.io import preprocess as _preprocess
from jaxvx.io import segment_indices, snippet_indices, snippet_span

__all__ = ["run", "summarize_folder", "results_paths", "initialize", "PeerLost", "Terminated", "Results",
           "ResultsLocked", "RESULTS_FILE", "SUMMARY_FILE"]

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.md"
_TARGETS = ("label", "predicted")
_SAMPLINGS = ("snippet", "segment")
#: Ground-truth keys of a record the pipeline maps onto the model's grid and hands to the metrics.
_GT_KEYS = ("boxes", "present", "segment", "motion")


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


# ---------------------------------------------------------------------------------------------------- geometry
@dataclasses.dataclass(frozen=True)
class _Geometry:
    """How preprocessing maps a raw ``h x w`` frame onto the model's grid: resize to ``(rh, rw)``, crop
    ``[top, top + ch) x [left, left + cw)``."""

    h: int
    w: int
    rh: int
    rw: int
    top: int
    left: int
    ch: int
    cw: int

    @property
    def identity(self) -> bool:
        return (self.rh, self.rw, self.top, self.left, self.ch, self.cw) == (self.h, self.w, 0, 0, self.h, self.w)

    def boxes(self, boxes: np.ndarray) -> np.ndarray:
        """``(x_min, y_min, x_max, y_max)`` (max inclusive) to the output grid: every output pixel that overlaps the
        box's pixels; ``-1`` rows stay and boxes cropped away become ``-1``."""
        boxes = np.asarray(boxes, dtype=np.float64)
        if self.identity:
            return boxes.astype(np.float32)
        sx, sy = self.rw / self.w, self.rh / self.h
        x0 = np.floor(boxes[..., 0] * sx) - self.left
        y0 = np.floor(boxes[..., 1] * sy) - self.top
        x1 = np.ceil((boxes[..., 2] + 1) * sx) - 1 - self.left
        y1 = np.ceil((boxes[..., 3] + 1) * sy) - 1 - self.top
        absent = (boxes[..., 0] < 0) | (x1 < 0) | (y1 < 0) | (x0 > self.cw - 1) | (y0 > self.ch - 1)
        out = np.stack([np.clip(x0, 0, self.cw - 1), np.clip(y0, 0, self.ch - 1),
                        np.clip(x1, 0, self.cw - 1), np.clip(y1, 0, self.ch - 1)], axis=-1)
        out[absent] = -1
        return out.astype(np.float32)

    def _src(self):
        ys = np.clip(np.floor((np.arange(self.ch) + self.top + 0.5) * self.h / self.rh), 0, self.h - 1).astype(int)
        xs = np.clip(np.floor((np.arange(self.cw) + self.left + 0.5) * self.w / self.rw), 0, self.w - 1).astype(int)
        return ys, xs

    def grid(self, arr: np.ndarray) -> np.ndarray:
        """``[T, h, w, ...]`` to ``[T, ch, cw, ...]`` by nearest-neighbour sampling (masks, flows)."""
        if self.identity:
            return arr
        ys, xs = self._src()
        return arr[:, ys][:, :, xs]

    def flow(self, flow: np.ndarray) -> np.ndarray:
        """A flow ``[T, h, w, 2]`` in raw pixels to the output grid, in output pixels."""
        if self.identity:
            return flow
        scale = np.array([self.rw / self.w, self.rh / self.h], dtype=np.float32)
        return self.grid(flow) * scale


def _preprocess_options(preprocess) -> dict:
    if preprocess is None:
        return {"resize": "none", "crop": "none", "size": None}
    if isinstance(preprocess, str):
        return {"preset": preprocess}
    if isinstance(preprocess, Mapping):
        return dict(preprocess)
    raise TypeError(f"preprocess must be None, a preset name or a dict of jaxvx.io.preprocess keywords, got "
                    f"{type(preprocess).__name__}")


def _geometry(h: int, w: int, opts: dict) -> _Geometry:
    # the same option resolution as jaxvx.io.preprocess (its private helpers, so the two cannot drift apart)
    from jaxvx.io import _preprocess as pp

    merged = {**pp._DEFAULTS, **(pp.PRESETS[opts["preset"]] if opts.get("preset") else {}),
              **{k: v for k, v in opts.items() if k != "preset"}}
    crop = merged["crop"]
    size = pp._hw("size", merged["size"], allow_none=(crop == "none"))
    rto = pp._hw("resize_to", merged["resize_to"], allow_none=True)
    rh, rw = pp._resized_shape(h, w, merged["resize"], merged["short_side"], rto, size)
    if crop == "center":
        ch, cw = size
        return _Geometry(h, w, rh, rw, (rh - ch) // 2, (rw - cw) // 2, ch, cw)
    return _Geometry(h, w, rh, rw, 0, 0, rh, rw)


# ---------------------------------------------------------------------------------------------------- clips
@dataclasses.dataclass
class _Clip:
    index: int
    id: str
    video: np.ndarray  # float32 [T, h, w, 3]
    label: int
    gt: dict

    def key(self):
        return (self.video.shape, tuple(sorted((k, v.shape, v.dtype.str) for k, v in self.gt.items())))


def _clip_id(record: Mapping, index: int, source) -> str:
    path = record.get("path") if isinstance(record, Mapping) else None
    if path is not None:
        root = getattr(source, "root", None)
        return os.path.relpath(path, root) if root else str(path)
    return str(record.get("id", index)) if isinstance(record, Mapping) else str(index)


class _Preparer:
    """Host side of a clip: checks, sampling, preprocessing, ground truth on the model's grid."""

    def __init__(self, *, length, step, offset, pad, sampling, preprocess_opts, target, host, flow_kwargs,
                 keyframe_kwargs, label_key, seed):
        self.length, self.step, self.offset, self.pad = length, step, offset, pad
        self.sampling = sampling
        self.opts = preprocess_opts
        self.target = target
        self.host = host  # what to compute from the sampled frames: "flow", "keyframes"
        self.flow_kwargs = flow_kwargs
        self.keyframe_kwargs = keyframe_kwargs
        self.label_key = label_key
        self.seed = seed
        self.num_classes: int | None = None

    def __call__(self, record, index: int, cid: str) -> _Clip:
        if not isinstance(record, Mapping) or "video" not in record:
            raise ValueError(f"clip {cid}: a record must be a dict with a 'video' key, got "
                             f"{type(record).__name__}{' with keys ' + str(sorted(record)) if isinstance(record, Mapping) else ''}")
        video = np.asarray(record["video"])
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"clip {cid}: video must be [T, H, W, 3] (frames, height, width, RGB), got shape "
                             f"{video.shape}")
        if not (video.dtype == np.uint8 or np.issubdtype(video.dtype, np.floating)):
            raise ValueError(f"clip {cid}: video must be uint8 or float in [0, 255], got dtype {video.dtype}")
        t, h, w, _ = video.shape
        if t < 1 or h < 1 or w < 1:
            raise ValueError(f"clip {cid}: video is empty, shape {video.shape}")
        try:
            if self.sampling == "snippet":
                idx = snippet_indices(t, self.length, self.step, self.offset, pad=self.pad)
            else:
                idx = segment_indices(t, self.length)
        except ValueError as err:
            raise ValueError(f"clip {cid}: {err}") from None
        frames = video[idx]
        if np.issubdtype(frames.dtype, np.floating) and not np.all(np.isfinite(frames)):
            raise ValueError(f"clip {cid}: the video holds NaN or inf")
        try:
            x = np.asarray(_preprocess(frames, **self.opts))
        except ValueError as err:
            raise ValueError(f"clip {cid}: preprocessing failed: {err}") from None
        if not np.all(np.isfinite(x)):
            raise ValueError(f"clip {cid}: the preprocessed input holds NaN or inf")
        label = record.get(self.label_key)
        if label is None:
            if self.target == "label":
                raise ValueError(f"clip {cid}: target='label' needs a {self.label_key!r} in every record "
                                 "(or use target='predicted')")
            label = -1
        else:
            arr = np.asarray(label)
            if arr.ndim != 0 or not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"clip {cid}: label must be an int, got {label!r}")
            label = int(arr)
            if label < 0:
                raise ValueError(f"clip {cid}: label {label} is negative; a clip without a label has no "
                                 f"{self.label_key!r} key (or None), and target='predicted' explains it")
            if self.num_classes is not None and not 0 <= label < self.num_classes:
                raise ValueError(f"clip {cid}: label {label} is outside the model's classes [0, {self.num_classes})")

        geo = _geometry(h, w, self.opts)
        if (geo.ch, geo.cw) != x.shape[1:3]:  # pragma: no cover - would mean jaxvx.io.preprocess changed
            raise AssertionError(f"geometry {geo} does not match the preprocessed shape {x.shape}")
        gt = {}
        if "boxes" in record:
            gt["boxes"] = geo.boxes(np.asarray(record["boxes"])[idx])
        if "present" in record:
            gt["present"] = np.asarray(record["present"], dtype=bool)[idx]
        if "segment" in record:
            start, end = (int(v) for v in np.asarray(record["segment"]).reshape(2))
            gt["segment"] = (idx >= start) & (idx < end)
        if "motion" in record:
            gt["motion"] = geo.grid(np.asarray(record["motion"], dtype=bool)[idx])
        if self.host:
            raw = frames if frames.dtype == np.uint8 else np.clip(np.round(frames), 0, 255).astype(np.uint8)
        if "flow" in self.host:
            from jaxvx.flow import farneback

            # the flow between the sampled frames (what the model sees as consecutive)
            gt["flow"] = geo.flow(farneback(raw, **self.flow_kwargs))
        if "keyframes" in self.host:
            from jaxvx.metrics import keyframes

            gt["keyframes"] = keyframes(raw, **self.keyframe_kwargs).mask  # of the sampled frames, as the flow
        return _Clip(index, cid, x.astype(np.float32), label, gt)


# ---------------------------------------------------------------------------------------------------- the step
def _make_step(apply: Callable, methods: dict, transforms: tuple, metrics: list[Metric], auto: bool,
               target_mode: str, save_maps: bool, mesh: Mesh):
    """The jitted per-batch function ``(variables, video, label, (seed, first clip index), gt) -> outputs``.

    It is a ``shard_map`` over the mesh's ``"data"`` axis: each device explains its own clips with the replicated
    variables, with no communication between devices (XLA's partitioner would otherwise gather the batch onto
    every device around operations it cannot split, such as the oneDNN convolutions' custom calls)."""

    def step(variables, video, label, seed_index, gt):
        key = jax.random.fold_in(jax.random.PRNGKey(seed_index[0]), seed_index[1])
        forward = functools.partial(apply, variables)
        logits = forward(video)
        prediction = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        target = label if target_mode == "label" else prediction
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        out = {
            "prediction": prediction,
            "target": target,
            "score": jnp.take_along_axis(probs, target[:, None], axis=1)[:, 0],
            "finite": _finite_rows(logits),
            "methods": {},
        }
        batch = {"video": video, "label": label, "target": target, "prediction": prediction, "forward": forward,
                 **gt}
        for i, (name, method) in enumerate(methods.items()):
            raw = method(forward, video, target, key=jax.random.fold_in(key, i))
            if not hasattr(raw, "shape"):
                raise TypeError(f"method {name!r} must return an array (the map), got {type(raw).__name__}")
            rel = raw
            for transform in transforms:
                rel = transform(rel)
            batch["raw"] = raw
            cols = {}
            for metric in metrics:
                missing = [k for k in metric.needs if k not in batch]
                if missing or (metric.spatial and not _spatial_ok(rel, video)):
                    if auto:
                        continue
                    why = (f"the records lack {missing}" if missing else
                           f"it needs a map on the video's [B, T, H, W] grid, got shape {tuple(rel.shape)}")
                    raise ValueError(f"metric {metric.name!r} cannot run for method {name!r}: {why}")
                values = metric.fn(rel, batch)
                for col, value in values.items():
                    value = jnp.asarray(value)
                    if value.ndim < 1 or value.shape[0] != video.shape[0]:
                        raise ValueError(f"metric {metric.name!r} column {col!r} must be [B, ...] with B = "
                                         f"{video.shape[0]}, got shape {tuple(value.shape)}")
                    cols[col] = value
            entry = {"metrics": cols, "finite": _finite_rows(rel)}
            if save_maps:
                entry["map"] = rel
            out["methods"][name] = entry
        return out

    batch, whole = P("data"), P()
    return jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(whole, batch, batch, whole, batch), out_specs=batch,
                                 check_vma=False))


_STEP_CACHE: OrderedDict = OrderedDict()
_STEP_CACHE_SIZE = 8


def _cached_step(forward, plain, apply, methods, transforms, metrics, opts, auto, target_mode, save_maps, mesh):
    """Reuse the jitted step (and so its compiled programs) when ``run`` is called again with the same model object,
    method and transform objects and metric settings (e.g. resuming, or a notebook calling ``run`` repeatedly)."""
    objects = (forward, *methods.values(), *transforms, *(getattr(m.fn, "custom", None) for m in metrics))
    config = (plain, tuple(methods), tuple(m.name for m in metrics), opts, auto, target_mode, save_maps, mesh)
    key = (tuple(id(o) for o in objects), config)
    hit = _STEP_CACHE.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], objects)):
        _STEP_CACHE.move_to_end(key)
        return hit[1]
    step = _make_step(apply, methods, transforms, metrics, auto, target_mode, save_maps, mesh)
    _STEP_CACHE[key] = (objects, step)
    while len(_STEP_CACHE) > _STEP_CACHE_SIZE:
        _STEP_CACHE.popitem(last=False)
    return step


def _finite_rows(x: jax.Array) -> jax.Array:
    """bool ``[B]``: every value of row ``b`` of ``x`` ``[B, ...]`` is finite."""
    return jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)


def _spatial_ok(rel, video) -> bool:
    return rel.ndim in (4, 5) and tuple(rel.shape[:4]) == tuple(video.shape[:4])


# ---------------------------------------------------------------------------------------------------- run
def _as_methods(method) -> dict[str, Callable]:
    if isinstance(method, Mapping):
        methods = dict(method)
    elif callable(method):
        methods = {getattr(method, "__name__", "method"): method}
    elif isinstance(method, (list, tuple)):
        methods = {}
        for m in method:
            name = getattr(m, "__name__", f"method{len(methods)}")
            if name in methods:
                raise ValueError(f"two methods are both named {name!r}: pass a dict {{name: method}}")
            methods[name] = m
    else:
        raise TypeError(f"method must be a method, a list of methods or a dict {{name: method}}, got "
                        f"{type(method).__name__}")
    if not methods:
        raise ValueError("method: give at least one explanation method")
    for name, m in methods.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"method names must be non-empty strings without '/', got {name!r}")
        if not callable(m):
            raise TypeError(f"method {name!r} is not callable: {m!r}")
    return methods


def _forward_and_variables(forward, variables):
    """``(apply(variables, video) -> logits, variables)`` from a Flax module + variables or a plain callable."""
    if hasattr(forward, "apply") and hasattr(forward, "init"):  # a flax.linen Module
        if variables is None:
            raise ValueError("forward is a Flax module: pass its variables too (variables=...)")
        module = forward
        return (lambda v, x: module.apply(v, x)), variables
    if not callable(forward):
        raise TypeError(f"forward must be a Flax module (with variables=...) or a callable video -> logits, got "
                        f"{type(forward).__name__}")
    if variables is not None:
        fn = forward
        return (lambda v, x: fn(v, x)), variables
    fn = forward
    return (lambda v, x: fn(x)), {}


def _decoding_only_what_is_sampled(source, sampling: str, length: int, step, offset: int):
    """A folder source that decodes whole files, made to decode only the frames the sampling takes: the first
    :func:`jaxvx.io.snippet_span` frames for a snippet (its indices into them equal those into the whole file), or
    the ``length`` segment frames themselves (whose segments of one frame each are those frames again)."""
    from jaxvx.data import FolderVideos

    if not isinstance(source, FolderVideos) or source.max_frames is not None or source.sample is not None:
        return source
    if sampling == "snippet":
        return source.reading(max_frames=snippet_span(length, step, offset))
    return source.reading(sample=functools.partial(segment_indices, length=length))


def _is_indexable(source) -> bool:
    """A source with ``len`` and ``source[i]`` (read clip by clip, in any order) rather than one to iterate."""
    return isinstance(source, Sequence) or (hasattr(source, "__len__") and hasattr(source, "__getitem__"))


def _iterate(source, *, process_index: int, process_count: int, limit: int | None, skip=frozenset()):
    """Yield ``(index, record or VideoError, clip id)`` for this process's share of the source, leaving out the
    indices in ``skip`` (clips already written); an indexable source does not load (decode, render) those."""
    if _is_indexable(source):
        n = len(source) if limit is None else min(len(source), limit)
        paths = getattr(source, "paths", None)
        for i in range(process_index, n, process_count):
            if i in skip:
                continue
            try:
                record = source[i]
            except VideoError as err:
                cid = _clip_id({"path": paths[i]}, i, source) if paths is not None else str(i)
                yield i, err, cid
                continue
            yield i, record, _clip_id(record, i, source)
    else:
        for i, record in enumerate(source):
            if limit is not None and i >= limit:
                break
            if i % process_count == process_index and i not in skip:
                yield i, record, _clip_id(record, i, source)


def run(source, forward, method, *, variables=None, transforms: Sequence[Callable] = (), metrics="auto",
        batch_size: int = 8, length: int = 16, step=1, offset: int = 0, pad: str = "loop",
        sampling: str = "snippet", preprocess=None, target: str = "label", out=None, resume: bool = True,
        save_maps: bool = False, seed: int = 0, progress: bool | str = True, limit: int | None = None,
        tolerance: float = 7.0, pointing_shape: str = "disk", flow_threshold: float = 0.5, flow_options=None,
        keyframe_options=None,
        perturbation_steps: int | None = None, perturbation_baseline: float = 0.0, label_key: str = "label",
        confidence: float = 0.95, num_classes: int | None = None, summary: bool = True,
        provenance: Mapping | None = None) -> Results:
    """Explain every clip of ``source`` and score the explanations; see the module docstring for the guarantees.

    Args:
        source: a :mod:`jaxvx.data` source (``synthetic``, ``folder``, ``tfds``) or any iterable of records, each a
            dict with ``video`` (uint8 or float in [0, 255], ``[T, H, W, 3]``), ``label`` (int) and optionally the
            ground truth ``boxes`` ``[T, 4]``, ``present`` ``[T]``, ``segment`` ``[2]``, ``motion`` ``[T, H, W]``.
        forward: the model: a Flax module (with ``variables``) or a pure callable ``video [B, T, H, W, C] -> logits
            [B, K]`` (or ``(variables, video) -> logits`` when ``variables`` is given). Variables are passed to the
            jitted step as an argument (replicated on every device), not baked in as constants.
        method: an explanation method ``(forward, video, target, *, key) -> map``, a list of them, or a dict
            ``{name: method}`` (names label the results).
        variables: the model's variables (for a Flax module).
        transforms: applied in order to every method's map before the metrics (as :func:`jaxvx.chain` does).
        metrics: ``"auto"`` (default: the spatial and temporal pointing games, motion precision against the true
            motion mask and the frame share, each where the records carry the ground truth it needs), or a list of
            names and callables / a dict ``{name: callable}``. Names: ``spatial_pointing_game``,
            ``temporal_pointing_game``, ``motion_precision`` (true motion mask), ``motion_precision_flow``
            (Farneback flow of the sampled frames), ``frame_share``, ``keyframe_correlation`` (Pearson
            correlation of the map's per-frame sum with the key frames of the sampled frames, Jayawardhana et al.'s
            comparison; NaN for a clip without key frames), ``selectivity`` (transformed vs raw map; the raw map
            summed over channels when the transforms reduced them), ``deletion_frames``,
            ``insertion_frames``, ``deletion_voxels``, ``insertion_voxels`` (area over the perturbation curve, plus
            ``*_auc``). A callable is ``(relevance, batch) -> [B] or {column: [B]}`` traced
            in the step; ``batch`` is described in :mod:`jaxvx._pipeline_metrics`.
        batch_size: clips per batch (rounded up to a multiple of the device count). Default 8.
        length, step, offset, pad: snippet sampling (:func:`jaxvx.io.snippet_indices`). Defaults 16, 1, 0, "loop".
        sampling: ``"snippet"`` (default) or ``"segment"`` (one frame per equal segment,
            :func:`jaxvx.io.segment_indices`, centre frames).
        preprocess: ``None`` (default: no resize or crop, ``x / 255``), a preset name of :data:`jaxvx.io.PRESETS`,
            or a dict of :func:`jaxvx.io.preprocess` keywords. Ground truth follows the same resize and crop.
        target: ``"label"`` (default: explain the true class) or ``"predicted"``.
        out: output folder (results.jsonl, summary.md, summary.json, maps/); None keeps everything in memory.
        resume: continue the results file in ``out`` if there is one (its settings must match); False starts over.
        save_maps: also write each clip's final map as ``out/maps/<method>/<clip index>.npy`` (float32).
        seed: seeds the methods' random keys (``fold_in(PRNGKey(seed), first clip index of the batch)``, then the
            method's position) and the bootstrap.
        progress: show a tqdm progress bar with clips per second; a string is the bar's label (default label
            "jaxvx run"; :func:`sweep` labels each setting's bar with its step and offset).
        limit: only the first ``limit`` clips of the source.
        tolerance, pointing_shape: spatial pointing game settings (7 px, "disk").
        flow_threshold, flow_options: motion threshold in px per frame (0.5) and keyword arguments of
            :func:`jaxvx.flow.farneback` for ``motion_precision_flow``.
        keyframe_options: keyword arguments of :func:`jaxvx.metrics.keyframes` for ``keyframe_correlation``
            (default: the 30 % detector).
        perturbation_steps, perturbation_baseline: deletion/insertion settings (see
            :func:`jaxvx.metrics.perturbation_curve`).
        label_key: the record key holding the label. Default "label".
        confidence: level of the summary's bootstrap intervals. Default 0.95.
        num_classes: for the per-class pointing-game mean; default: the model's number of outputs.
        summary: summarise the results file at the end (bootstrap intervals; ``summary.md``, ``summary.json``).
            False skips it (``Results.summary`` empty, ``markdown`` ""), for a caller that runs again before it
            reads one, as :func:`sweep` does between chunks.
        provenance: what else identifies the run, recorded in the results header and checked on resume, e.g.
            ``{"checkpoint": name, "checkpoint_sha256": ...}`` (``jaxvx run`` passes the checkpoint's). Its
            ``"checkpoint"`` names the model in errors. The header always holds the SHA-256 of the model's
            variables, a description of every method and transform with their settings, the metrics and their
            options, the source, sampling, preprocessing, seed and the versions of jaxvx, jax, jaxlib and flax.

    Returns:
        :class:`Results`.

    Raises:
        ValueError: bad settings, a clip that does not fit, or logits that hold NaN or inf (the message names the
            clip and the model; rows before it are written first). A method whose map holds NaN or inf for a clip
            (finite logits) marks that clip's row ``"status": "failed"`` with the reason; failed rows stay out of
            the summary and are counted under it.
        jaxvx.pipeline.ResultsLocked: another run is writing to ``out``.
    """
    t_start = time.perf_counter()
    batch_size = check_int("batch_size", batch_size, 1)
    length = check_int("length", length, 1)
    seed = check_int("seed", seed, 0) % 2**32
    if target not in _TARGETS:
        raise ValueError(f"target must be one of {_TARGETS}, got {target!r}")
    if sampling not in _SAMPLINGS:
        raise ValueError(f"sampling must be one of {_SAMPLINGS}, got {sampling!r}")
    if limit is not None:
        limit = check_int("limit", limit, 0)
    methods = _as_methods(method)
    transforms = tuple(transforms)
    for i, t in enumerate(transforms):
        if not callable(t):
            raise TypeError(f"transforms[{i}] must be callable, got {t!r}")
    opts = MetricOptions(tolerance=float(tolerance), pointing_shape=pointing_shape,
                         flow_threshold=float(flow_threshold), perturbation_steps=perturbation_steps,
                         perturbation_baseline=float(perturbation_baseline))
    metric_list, auto = resolve_metrics(metrics, opts)
    apply, variables = _forward_and_variables(forward, variables)
    pp_opts = _preprocess_options(preprocess)
    snippet_indices(max(length, 1), 1, step, 0)  # validates step early
    source = _decoding_only_what_is_sampled(source, sampling, length, step, offset)

    process_index, process_count = jax.process_index(), jax.process_count()
    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("data",))
    data_sharding = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    n_dev_local = len(jax.local_devices())
    local_batch = -(-batch_size // n_dev_local) * n_dev_local

    provenance = dict(provenance or {})
    model_name = provenance.get("checkpoint", "the model")
    results_file = None
    out_dir = None
    if out is not None:
        header = {
            "methods": {name: describe(m) for name, m in methods.items()},
            "metrics": {"names": [m.name for m in metric_list] if not auto else "auto",
                        "options": dataclasses.asdict(opts), "flow": describe(dict(flow_options or {})),
                        "keyframes": describe(dict(keyframe_options or {})), "num_classes": num_classes},
            "transforms": [describe(t) for t in transforms],
            "target": target,
            "label_key": label_key,
            "sampling": {"mode": sampling, "length": length, "step": str(step), "offset": offset, "pad": pad},
            "preprocess": pp_opts,
            "source": describe(source),
            "limit": limit,
            "seed": seed,
            "model": {"forward": describe(forward), "variables_sha256": tree_sha256(variables)},
            "provenance": describe(provenance),
            "versions": versions(),
            "devices": [str(d) for d in devices],
            "process": [process_index, process_count],
            "process_count": process_count,
        }
        out_dir = Path(out)
        name = RESULTS_FILE if process_count == 1 else f"results.{process_index}.jsonl"
        foreign = [p.name for p in results_paths(out_dir) if p.name != name and
                   (process_count == 1 or _process_of(p) is None or _process_of(p) >= process_count)]
        if foreign:
            raise ValueError(f"{out_dir} holds the results of a run with another number of processes ({foreign}); "
                             f"this run has {process_count}: use that number, or another output folder")
        results_file = ResultsFile(out_dir / name, header, resume=resume)
    done = set(results_file.done) if results_file else set()
    rows: list[dict] = list(results_file.rows) if results_file else []

    host = {m.host for m in metric_list if m.host}
    preparer = _Preparer(length=length, step=step, offset=offset, pad=pad, sampling=sampling,
                         preprocess_opts=pp_opts, target=target, host=host,
                         flow_kwargs=dict(flow_options or {}), keyframe_kwargs=dict(keyframe_options or {}),
                         label_key=label_key, seed=seed)
    step_fn = _cached_step(forward, variables is None, apply, methods, transforms, metric_list, opts, auto, target,
                           save_maps, mesh)
    variables_dev = jax.device_put(variables, replicated)

    total = None
    if hasattr(source, "__len__"):
        n = len(source) if limit is None else min(len(source), limit)
        total = len(range(process_index, n, process_count))
    bar = _progress(total, progress, initial=sum(1 for r in rows if r["clip"] % process_count == process_index))
    computed = 0

    def write(new_rows):
        nonlocal rows
        if results_file is not None:
            results_file.append(new_rows)
            rows = results_file.rows
        else:
            rows.extend(jsonable(r) for r in new_rows)

    in_flight: list = []  # at most one dispatched batch whose rows are not written yet

    def finish():
        """Fetch the batch in flight and write its rows (and maps)."""
        nonlocal computed
        if not in_flight:
            return
        pending, result = in_flight.pop()
        result = _to_host(result, mesh)
        new_rows = []
        broken = None
        for i, clip in enumerate(pending):
            if not result["finite"][i]:
                broken = clip
                break
            row = {"clip": clip.index, "id": clip.id, "status": "ok", "label": clip.label if clip.label >= 0 else None,
                   "target": int(result["target"][i]), "prediction": int(result["prediction"][i]),
                   "score": float(result["score"][i])}
            if clip.label >= 0:
                row["correct"] = bool(result["prediction"][i] == clip.label)
            failed = [name for name, entry in result["methods"].items() if not entry["finite"][i]]
            if failed:
                row["status"] = "failed"
                row["error"] = f"the map of {', '.join(failed)} holds NaN or inf"
                warnings.warn(f"clip {clip.id}: {row['error']}; the row is marked failed", stacklevel=3)
            row["methods"] = {name: {col: np.asarray(v[i]) for col, v in entry["metrics"].items()}
                              for name, entry in result["methods"].items() if name not in failed}
            if save_maps and out_dir is not None:
                for name, entry in result["methods"].items():
                    _save_map(out_dir / "maps" / name / f"{clip.index:06d}.npy", np.asarray(entry["map"][i]))
            new_rows.append(row)
        write(new_rows)
        computed += len(new_rows)
        bar.update(len(new_rows))
        if broken is not None:
            raise ValueError(f"clip {broken.id}: the logits of {model_name} hold NaN or inf for a finite input: its "
                             "weights hold NaN or inf, or overflow float32; no metric is computed from them")

    def dispatch(pending: list[_Clip], template: dict | None = None, step_index: int | None = None):
        """Start the step on a batch (JAX dispatches asynchronously: the host prepares the next batch meanwhile),
        after writing the rows of the batch dispatched before. With several processes every process dispatches
        every step: one that has no clips left sends ``template``'s zeros, and writes no row for them."""
        if not pending and template is None:
            return
        if pending:
            clips = pending + [pending[-1]] * (local_batch - len(pending))
            video = np.stack([c.video for c in clips])
            label = np.array([max(c.label, 0) for c in clips], dtype=np.int32)
            gt = {k: np.stack([c.gt[k] for c in clips]) for k in pending[0].gt}
        else:
            video = np.zeros((local_batch, *template["video"]), np.float32)
            label = np.zeros(local_batch, np.int32)
            gt = {k: np.zeros((local_batch, *shape), np.dtype(dtype)) for k, shape, dtype in template["gt"]}
        first = pending[0].index if step_index is None else step_index  # one value on every process
        seed_index = np.array([seed, first], dtype=np.uint32)

        def put(x):
            return jax.make_array_from_process_local_data(data_sharding, x)

        result = step_fn(variables_dev, put(video), put(label), seed_index, {k: put(v) for k, v in gt.items()})
        finish()
        in_flight.append((pending, result))

    def prepare(record, index, cid) -> _Clip:
        clip = preparer(record, index, cid)
        if preparer.num_classes is None:
            shape = jax.ShapeDtypeStruct((1,) + clip.video.shape, jnp.float32)
            k = int(jax.eval_shape(apply, variables, shape).shape[-1])
            preparer.num_classes = k
            if clip.label >= k:
                raise ValueError(f"clip {cid}: label {clip.label} is outside the model's classes [0, {k})")
        return clip

    def batches():
        """Lists of at most ``local_batch`` clips of one shape, in order; a clip that does not fit ends them with
        its ValueError (after the batch of the clips before it). Undecodable files become skipped rows."""
        pending: list[_Clip] = []
        for index, record, cid in _iterate(source, process_index=process_index, process_count=process_count,
                                           limit=limit, skip=done):
            if isinstance(record, VideoError):
                warnings.warn(f"skipping clip {cid}: {record}", stacklevel=3)
                write([{"clip": index, "id": cid, "status": "skipped", "error": str(record)}])
                bar.update(1)
                continue
            try:
                clip = prepare(record, index, cid)
            except ValueError as err:
                if pending:
                    yield pending
                yield err
                return
            if pending and pending[0].key() != clip.key():
                yield pending
                pending = []
            pending.append(clip)
            if len(pending) == local_batch:
                yield pending
                pending = []
        if pending:
            yield pending

    try:
        if process_count == 1:
            for item in batches():
                if isinstance(item, ValueError):
                    finish()  # the clips before the bad one are computed and written first
                    raise item
                dispatch(item)
        else:
            _lockstep(batches(), dispatch, finish, process_index)
        finish()
    except BaseException:
        # a crash, Ctrl-C or SIGTERM: the batch in flight is already computed (or nearly): write it before leaving
        try:
            finish()
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        raise
    finally:
        bar.close()
        if results_file is not None:
            results_file.close()

    if process_count > 1:
        from jaxvx._distributed import barrier

        barrier("jaxvx.pipeline.run: every process wrote its rows")
        if process_index == 0 and summary:
            rows = _rows_of_every_process(out_dir, process_count, rows)
        summary = summary and process_index == 0  # one summary, over every process's rows
    skipped = [r for r in rows if r.get("status") == "skipped"]
    table, md = [], ""
    if summary:
        k = num_classes if num_classes is not None else (preparer.num_classes or None)
        table = summarize(rows, list(methods), num_classes=k, confidence=confidence, seed=seed)
        md = markdown_table(table, confidence=confidence, skipped=len(skipped),
                            failed=sum(1 for r in rows if r.get("status") == "failed"))
        if out_dir is not None and process_index == 0:
            _write_summary(out_dir, md, table)
    seconds = time.perf_counter() - t_start
    return Results(rows=rows, summary=table, markdown=md, out=out_dir, skipped=skipped, computed=computed,
                   seconds=seconds)


def _template(clip: _Clip) -> dict:
    """The shapes of a clip's arrays, as JSON: what another process needs to send zeros of the same shapes."""
    return {"video": list(clip.video.shape),
            "gt": [[k, list(v.shape), v.dtype.str] for k, v in sorted(clip.gt.items())]}


def _lockstep(batches, dispatch, finish, process_index: int) -> None:
    """Run the step on every process in step: before each step the processes exchange what they hold (clips, their
    shapes, an error), every process dispatches (zeros where it has no clips left) until none has clips, and an
    error of any process (a clip that does not fit, NaN logits) stops every process with that error."""
    from jaxvx._distributed import allgather_json

    error = None
    for step_index in itertools.count():
        item = None
        if error is None:
            item = next(batches, None)
            if isinstance(item, ValueError):
                error, item = str(item), None
        plan = allgather_json({"n": len(item or ()), "template": _template(item[0]) if item else None,
                               "error": error})
        errors = [f"process {q}: {p['error']}" for q, p in enumerate(plan) if p["error"]]
        if errors:
            finish()
            raise ValueError("; ".join(errors))
        shapes = {json.dumps(p["template"]) for p in plan if p["n"]}
        if not shapes:
            return
        if len(shapes) > 1:
            finish()
            detail = "; ".join(f"process {q}: {p['template']}" for q, p in enumerate(plan) if p["n"])
            raise ValueError("with several processes every batch must have one shape (preprocess the clips to one "
                             f"size and give them one number of frames): {detail}")
        template = next(p["template"] for p in plan if p["n"])
        try:
            dispatch(item or [], template, step_index)
        except ValueError as err:  # from writing the batch before (NaN logits): every process stops at the next step
            error = str(err)


def results_paths(out: str | os.PathLike) -> list[Path]:
    """The results files in folder ``out``: ``results.jsonl`` (one process) and ``results.<p>.jsonl`` (process p
    of several), in process order."""
    out_dir = Path(out)
    if not out_dir.is_dir():
        return []
    found = [p for p in out_dir.iterdir() if p.name == RESULTS_FILE or _process_of(p) is not None]
    return sorted(found, key=lambda p: -1 if p.name == RESULTS_FILE else _process_of(p))


def _process_of(path: Path) -> int | None:
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
    _write_summary(out_dir, md, table)
    return Results(rows=rows, summary=table, markdown=md, out=out_dir, skipped=skipped, computed=0,
                   seconds=time.perf_counter() - t_start)


def _write_summary(out_dir: Path, md: str, table: list[dict]) -> None:
    """``summary.md`` and ``summary.json``, each replaced atomically."""
    for name, text in ((SUMMARY_FILE, md), ("summary.json", json.dumps(jsonable(table), indent=1))):
        tmp = out_dir / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out_dir / name)


def _rows_of_every_process(out_dir: Path | None, process_count: int, own: list[dict]) -> list[dict]:
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


def _to_host(tree, mesh):
    """Outputs of the step as NumPy arrays holding this process's rows."""
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(np.asarray, tree)
    from jax.experimental import multihost_utils

    local = multihost_utils.global_array_to_host_local_array(tree, mesh, P("data"))
    return jax.tree_util.tree_map(np.asarray, local)


def _save_map(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr.astype(np.float32, copy=False))
    os.replace(tmp, path)


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total, enabled: bool | str, initial: int = 0):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    label = enabled if isinstance(enabled, str) else "jaxvx run"
    return tqdm(total=total, initial=initial, unit="clips", desc=label, smoothing=0.1, dynamic_ncols=True)
