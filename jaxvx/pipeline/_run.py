"""One pipeline run: every clip of a source through the jitted step, its rows written as they come, a summary.

The loop keeps one batch in flight: the host prepares batch ``i + 1`` (:mod:`._clips`) while the devices compute
batch ``i`` (:mod:`._step`); the rows of a batch are written (:mod:`._folder`, :mod:`._results`) when the next one
is dispatched, and before the run leaves on an error. With several processes the batches go through
:func:`._lockstep.lockstep`. See :mod:`jaxvx.pipeline` for what a run guarantees.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxvx._checks import check_int
from jaxvx._errors import VideoError
from jaxvx._json import jsonable
from jaxvx._provenance import describe, tree_sha256, versions
from jaxvx.io import preprocess_options
from jaxvx.pipeline._clips import Clip, Preparer, decoding_only_what_is_sampled, iterate
from jaxvx.pipeline._folder import (RESULTS_FILE, Results, process_of, results_paths, rows_of_every_process,
                                    save_map, write_summary)
from jaxvx.pipeline._lockstep import lockstep
from jaxvx.pipeline._metrics import resolve_metrics
from jaxvx.pipeline._options import MetricOptions, OutputOptions, Sampling, check_record
from jaxvx.pipeline._progress import progress_bar
from jaxvx.pipeline._results import ResultsFile, markdown_table, summarize
from jaxvx.pipeline._step import cached_step, to_host

__all__ = ["run"]

_TARGETS = ("label", "predicted")


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


def run(source, forward, method, *, variables=None, transforms: Sequence[Callable] = (), metrics="auto",
        preprocess=None, target: str = "label", batch_size: int = 8, out=None, resume: bool = True,
        limit: int | None = None, seed: int = 0, progress: bool | str = True, label_key: str = "label",
        sampling: Sampling = Sampling(), metric_options: MetricOptions = MetricOptions(),
        output: OutputOptions = OutputOptions()) -> Results:
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
            in the step; ``batch`` is described in :mod:`jaxvx.pipeline._metrics`.
        preprocess: ``None`` (default: no resize or crop, ``x / 255``), a preset name of :data:`jaxvx.io.PRESETS`,
            or a dict of :func:`jaxvx.io.preprocess` keywords. Ground truth follows the same resize and crop
            (:func:`jaxvx.io.input_geometry`).
        target: ``"label"`` (default: explain the true class) or ``"predicted"``.
        batch_size: clips per batch (rounded up to a multiple of the device count). Default 8.
        out: output folder (results.jsonl, summary.md, summary.json, maps/); None keeps everything in memory.
        resume: continue the results file in ``out`` if there is one (its settings must match); False starts over.
        limit: only the first ``limit`` clips of the source.
        seed: seeds the methods' random keys (``fold_in(PRNGKey(seed), first clip index of the batch)``, then the
            method's position) and the bootstrap.
        progress: show a tqdm progress bar with clips per second; a string is the bar's label (default label
            "jaxvx run"; :func:`sweep` labels each setting's bar with its step and offset).
        label_key: the record key holding the label. Default "label".
        sampling: which frames of each clip the model sees, a :class:`Sampling` (default: 16-frame snippets of
            step 1 from frame 0, looped past the clip's end).
        metric_options: the built-in metrics' settings, a :class:`MetricOptions` (pointing-game tolerance and
            shape, motion threshold, Farneback and key-frame options, deletion / insertion steps and baseline).
        output: what the run writes besides its rows, an :class:`OutputOptions` (maps, the summary and its
            interval level and classes, the provenance recorded in the results header).

        The results header always holds the SHA-256 of the model's variables, a description of every method and
        transform with their settings, the metrics and their options, the source, sampling, preprocessing, seed,
        the provenance and the versions of jaxvx, jax, jaxlib and flax; a resume compares it key by key.

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
    seed = check_int("seed", seed, 0) % 2**32
    if target not in _TARGETS:
        raise ValueError(f"target must be one of {_TARGETS}, got {target!r}")
    check_record("sampling", sampling, Sampling)
    check_record("metric_options", metric_options, MetricOptions)
    check_record("output", output, OutputOptions)
    if limit is not None:
        limit = check_int("limit", limit, 0)
    methods = _as_methods(method)
    transforms = tuple(transforms)
    for i, t in enumerate(transforms):
        if not callable(t):
            raise TypeError(f"transforms[{i}] must be callable, got {t!r}")
    metric_list, auto = resolve_metrics(metrics, metric_options)
    apply, variables = _forward_and_variables(forward, variables)
    pp_opts = preprocess_options(preprocess)
    source = decoding_only_what_is_sampled(source, sampling)

    process_index, process_count = jax.process_index(), jax.process_count()
    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("data",))
    data_sharding = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    n_dev_local = len(jax.local_devices())
    local_batch = -(-batch_size // n_dev_local) * n_dev_local

    provenance = dict(output.provenance or {})
    model_name = provenance.get("checkpoint", "the model")
    results_file = None
    out_dir = None
    if out is not None:
        header = {
            "methods": {name: describe(m) for name, m in methods.items()},
            "metrics": {"names": [m.name for m in metric_list] if not auto else "auto",
                        "options": dict(metric_options.in_step()),
                        "flow": describe(dict(metric_options.flow_options or {})),
                        "keyframes": describe(dict(metric_options.keyframe_options or {})),
                        "num_classes": output.num_classes},
            "transforms": [describe(t) for t in transforms],
            "target": target,
            "label_key": label_key,
            "sampling": {"mode": sampling.mode, "length": sampling.length, "step": str(sampling.step),
                         "offset": sampling.offset, "pad": sampling.pad},
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
                   (process_count == 1 or process_of(p) is None or process_of(p) >= process_count)]
        if foreign:
            raise ValueError(f"{out_dir} holds the results of a run with another number of processes ({foreign}); "
                             f"this run has {process_count}: use that number, or another output folder")
        results_file = ResultsFile(out_dir / name, header, resume=resume)
    done = set(results_file.done) if results_file else set()
    rows: list[dict] = list(results_file.rows) if results_file else []

    host = {m.host for m in metric_list if m.host}
    preparer = Preparer(sampling=sampling, preprocess_opts=pp_opts, target=target, host=host,
                        metric_options=metric_options, label_key=label_key)
    save_maps = output.save_maps
    step_fn = cached_step(forward, variables is None, apply, methods, transforms, metric_list,
                          metric_options.in_step(), auto, target, save_maps, mesh)
    variables_dev = jax.device_put(variables, replicated)

    total = None
    if hasattr(source, "__len__"):
        n = len(source) if limit is None else min(len(source), limit)
        total = len(range(process_index, n, process_count))
    bar = progress_bar(total, progress, initial=sum(1 for r in rows if r["clip"] % process_count == process_index))
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
        result = to_host(result, mesh)
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
                    save_map(out_dir / "maps" / name / f"{clip.index:06d}.npy", np.asarray(entry["map"][i]))
            new_rows.append(row)
        write(new_rows)
        computed += len(new_rows)
        bar.update(len(new_rows))
        if broken is not None:
            raise ValueError(f"clip {broken.id}: the logits of {model_name} hold NaN or inf for a finite input: its "
                             "weights hold NaN or inf, or overflow float32; no metric is computed from them")

    def dispatch(pending: list[Clip], template: dict | None = None, step_index: int | None = None):
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

    def prepare(record, index, cid) -> Clip:
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
        pending: list[Clip] = []
        for index, record, cid in iterate(source, process_index=process_index, process_count=process_count,
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
            lockstep(batches(), dispatch, finish, process_index)
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
        if process_index == 0 and output.summary:
            rows = rows_of_every_process(out_dir, process_count, rows)
    summary = output.summary and process_index == 0  # with several processes, one summary over every process's rows
    skipped = [r for r in rows if r.get("status") == "skipped"]
    table, md = [], ""
    if summary:
        k = output.num_classes if output.num_classes is not None else (preparer.num_classes or None)
        table = summarize(rows, list(methods), num_classes=k, confidence=output.confidence, seed=seed)
        md = markdown_table(table, confidence=output.confidence, skipped=len(skipped),
                            failed=sum(1 for r in rows if r.get("status") == "failed"))
        if out_dir is not None and process_index == 0:
            write_summary(out_dir, md, table)
    seconds = time.perf_counter() - t_start
    return Results(rows=rows, summary=table, markdown=md, out=out_dir, skipped=skipped, computed=computed,
                   seconds=seconds)

