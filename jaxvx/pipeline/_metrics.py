"""The metrics a pipeline run computes per clip, inside its jitted step (see :func:`jaxvx.pipeline.run`).

A metric is a function ``(relevance, batch) -> {column: array [B]}`` (or a single array [B] / [B, k]) traced inside
the step, with ``batch`` a dict of the batch's arrays: ``video`` float32 ``[B, T, H, W, C]``, ``target``,
``label``, ``prediction`` int ``[B]``, ``forward`` (the model as ``video -> logits``), ``logits`` (``forward`` of
``video``, ``[B, K]``), ``raw`` (the method's map before the transforms) and the ground truth the records carry,
mapped to the model's grid: ``boxes`` ``[B, T, 4]``, ``present`` ``[B, T]``, ``segment`` (bool ``[B, T]``: the
sampled frame lies in the action), ``motion`` ``[B, T, H, W]``, and what the host computes from the sampled frames
for the metrics that ask for it: ``flow`` (Farneback, ``[B, T, H, W, 2]``), ``keyframes`` (bool ``[B, T]``,
:func:`jaxvx.metrics.keyframes`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp

from jaxvx import metrics as M
from jaxvx._maps import channel_sum
from jaxvx.pipeline._options import MetricOptions
from jaxvx.transforms import frame_share

__all__ = ["BUILTIN", "Metric", "resolve_metrics"]


@dataclasses.dataclass(frozen=True)
class Metric:
    """A named per-clip metric: ``needs`` lists the batch keys it reads (ground truth), ``spatial`` whether it needs
    a map on the video's ``[B, T, H, W]`` grid, ``host`` the batch key the host computes from the sampled frames
    for it (``"flow"``, ``"keyframes"``) or None."""

    name: str
    fn: Callable
    needs: tuple[str, ...] = ()
    spatial: bool = False
    host: str | None = None


def _spatial_pg(opts: MetricOptions):
    def fn(rel, batch):
        res = M.spatial_pointing_game(rel, batch["boxes"], tolerance=opts.tolerance, shape=opts.pointing_shape,
                                      present=batch.get("present"))
        return {"spatial_pointing_game": res.clip_scores(), "spatial_pointing_game_hits": res.hits.sum(axis=1),
                "spatial_pointing_game_frames": res.valid.sum(axis=1)}
    return fn


def _temporal_pg(rel, batch):
    res = M.temporal_pointing_game(rel, batch["segment"])
    return {"temporal_pointing_game": res.clip_scores()}


def _motion_true(opts):
    def fn(rel, batch):
        return {"motion_precision": M.motion_precision(rel, batch["motion"])}
    return fn


def _motion_flow(opts):
    def fn(rel, batch):
        return {"motion_precision_flow": M.motion_precision(rel, batch["flow"], threshold=opts.flow_threshold)}
    return fn


def _keyframe_correlation(rel, batch):
    """Pearson correlation of the map's per-frame sum (its temporal saliency) with the key-frame indicator."""
    r_t = rel.reshape(rel.shape[0], rel.shape[1], -1).sum(axis=-1)
    return {"keyframe_correlation": M.keyframe_correlation(r_t, batch["keyframes"])}


def _frame_share(rel, batch):
    return {"frame_share": frame_share()(rel)}


def _selectivity(rel, batch):
    """What the transforms kept of the method's own map. When they reduced its channels (``[B, T, H, W, C]`` to
    ``[B, T, H, W, 1]``, as ``jaxvx run`` does before selective relevance), both are summed over channels first
    (:func:`jaxvx._maps.channel_sum`), so that both sides are one value per position."""
    raw = batch["raw"]
    if rel.shape != raw.shape and rel.shape[:4] == raw.shape[:4]:
        rel, raw = channel_sum(rel), channel_sum(raw)
    if raw.shape != rel.shape or rel.ndim not in (4, 5):
        raise ValueError("the 'selectivity' metric compares the transformed map with the method's own map: they "
                         f"must lie on the same [B, T, H, W] grid, got {tuple(rel.shape)} and {tuple(raw.shape)}")
    s = M.selectivity(rel, raw)
    return {"selectivity_positions": s.positions, "selectivity_relevance": s.relevance}


def _endpoint_logits(batch, opts):
    """The logits of the untouched clips and of the all-baseline input: the two points every deletion and insertion
    curve shares, whatever the map. Computed at the first curve of a batch and kept in ``batch`` (one dict per
    traced step), so that all the methods' curves reuse the step's own forward and one baseline forward."""
    if "perturbation_endpoints" not in batch:
        video = batch["video"]
        fill = jnp.broadcast_to(jnp.asarray(opts.perturbation_baseline, video.dtype), video.shape)
        batch["perturbation_endpoints"] = (batch["logits"], batch["forward"](fill))
    return batch["perturbation_endpoints"]


def _perturbation(mode, unit, opts):
    name = f"{mode}_{unit}"

    def fn(rel, batch):
        curve = M.perturbation_curve(batch["forward"], batch["video"], rel, batch["target"], mode=mode, unit=unit,
                                     steps=opts.perturbation_steps, baseline=opts.perturbation_baseline,
                                     endpoints=_endpoint_logits(batch, opts))
        return {name: curve.aopc, f"{name}_auc": curve.auc}
    return fn


def BUILTIN(opts: MetricOptions) -> dict[str, Metric]:  # noqa: N802 - a table, built per options
    """The built-in metrics by name."""
    table = [
        Metric("spatial_pointing_game", _spatial_pg(opts), ("boxes",), spatial=True),
        Metric("temporal_pointing_game", _temporal_pg, ("segment",)),
        Metric("motion_precision", _motion_true(opts), ("motion",), spatial=True),
        Metric("motion_precision_flow", _motion_flow(opts), ("flow",), spatial=True, host="flow"),
        Metric("keyframe_correlation", _keyframe_correlation, ("keyframes",), host="keyframes"),
        Metric("frame_share", _frame_share),
        Metric("selectivity", _selectivity, ("raw",), spatial=True),
    ]
    for mode in ("deletion", "insertion"):
        table.append(Metric(f"{mode}_frames", _perturbation(mode, "frames", opts)))
        table.append(Metric(f"{mode}_voxels", _perturbation(mode, "voxels", opts), spatial=True))
    return {m.name: m for m in table}


#: Metrics computed with ``metrics="auto"`` when the records carry what they need.
AUTO = ("spatial_pointing_game", "temporal_pointing_game", "motion_precision", "frame_share")


def resolve_metrics(metrics, opts: MetricOptions) -> tuple[list[Metric], bool]:
    """``(metrics, auto)``: the list of :class:`Metric` a run computes; ``auto`` True when they were chosen by
    ``"auto"`` (then metrics whose ground truth or map shape is missing are skipped instead of raising)."""
    builtin = BUILTIN(opts)
    if metrics == "auto" or metrics is None:
        return [builtin[name] for name in AUTO], True
    if isinstance(metrics, (str, Callable)):
        metrics = [metrics]
    items = list(metrics.items()) if isinstance(metrics, dict) else [(None, m) for m in metrics]
    out, seen = [], set()
    for name, m in items:
        if isinstance(m, str):
            if m == "auto":
                resolved = [builtin[n] for n in AUTO]
            elif m in builtin:
                resolved = [builtin[m]]
            else:
                raise ValueError(f"unknown metric {m!r}; built-in metrics are {sorted(builtin)} (or pass a callable "
                                 "(relevance, batch) -> {column: [B]})")
        elif callable(m):
            label = name or getattr(m, "__name__", None) or f"metric{len(out)}"
            resolved = [Metric(label, _wrap_custom(label, m))]
        else:
            raise TypeError(f"metrics entries must be names or callables, got {type(m).__name__} {m!r}")
        for metric in resolved:
            if metric.name in seen:
                raise ValueError(f"metric {metric.name!r} is listed twice")
            seen.add(metric.name)
            out.append(metric)
    return out, False


def _wrap_custom(label: str, fn: Callable) -> Callable:
    def wrapped(rel, batch):
        value = fn(rel, batch)
        if isinstance(value, dict):
            return value
        return {label: jnp.asarray(value)}
    wrapped.custom = fn  # identifies the metric in the pipeline's cache of compiled steps
    return wrapped
