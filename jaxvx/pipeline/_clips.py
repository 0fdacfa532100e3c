"""The host side of a pipeline run: records of a source to clips of model input with their ground truth.

A record is a dict with ``video`` (uint8 or float in [0, 255], ``[T, h, w, 3]``), ``label`` (int) and optionally
ground truth: ``boxes`` ``[T, 4]`` (``x_min, y_min, x_max, y_max``, max inclusive, ``-1`` where absent),
``present`` ``[T]``, ``segment`` ``[2]`` (first frame, end frame), ``motion`` ``[T, h, w]``. A :class:`Clip` holds
the sampled, preprocessed frames float32 ``[T', H, W, 3]`` and the ground truth of those frames on the model's
``H x W`` grid (the same resize and crop), plus what the host computes from the sampled frames for the metrics
that ask for it (``flow`` ``[T', H, W, 2]``, ``keyframes`` bool ``[T']``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping, Sequence

import numpy as np

from jaxvx._errors import VideoError
from jaxvx.io import input_geometry
from jaxvx.io import preprocess as _preprocess
from jaxvx.io import segment_indices, snippet_indices, snippet_span
from jaxvx.pipeline._options import MetricOptions, Sampling


@dataclasses.dataclass
class Clip:
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


class Preparer:
    """Host side of a clip: checks, sampling, preprocessing, ground truth on the model's grid."""

    def __init__(self, *, sampling: Sampling, preprocess_opts: dict, target: str, host: set,
                 metric_options: MetricOptions, label_key: str):
        self.sampling = sampling
        self.opts = preprocess_opts
        self.target = target
        self.host = host  # what to compute from the sampled frames: "flow", "keyframes"
        self.flow_kwargs = dict(metric_options.flow_options or {})
        self.keyframe_kwargs = dict(metric_options.keyframe_options or {})
        self.label_key = label_key
        self.num_classes: int | None = None

    def __call__(self, record, index: int, cid: str) -> Clip:
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
            s = self.sampling
            if s.mode == "snippet":
                idx = snippet_indices(t, s.length, s.step, s.offset, pad=s.pad)
            else:
                idx = segment_indices(t, s.length)
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

        geo = input_geometry(h, w, self.opts)
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
        return Clip(index, cid, x.astype(np.float32), label, gt)


def decoding_only_what_is_sampled(source, sampling: Sampling):
    """A folder source that decodes whole files, made to decode only the frames the sampling takes: the first
    :func:`jaxvx.io.snippet_span` frames for a snippet (its indices into them equal those into the whole file), or
    the ``length`` segment frames themselves (whose segments of one frame each are those frames again)."""
    from jaxvx.data import FolderVideos

    if not isinstance(source, FolderVideos) or source.max_frames is not None or source.sample is not None:
        return source
    if sampling.mode == "snippet":
        return source.reading(max_frames=snippet_span(sampling.length, sampling.step, sampling.offset))
    return source.reading(sample=functools.partial(segment_indices, length=sampling.length))


def is_indexable(source) -> bool:
    """A source with ``len`` and ``source[i]`` (read clip by clip, in any order) rather than one to iterate."""
    return isinstance(source, Sequence) or (hasattr(source, "__len__") and hasattr(source, "__getitem__"))


def iterate(source, *, process_index: int, process_count: int, limit: int | None, skip=frozenset()):
    """Yield ``(index, record or VideoError, clip id)`` for this process's share of the source, leaving out the
    indices in ``skip`` (clips already written); an indexable source does not load (decode, render) those."""
    if is_indexable(source):
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

