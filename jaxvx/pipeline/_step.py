"""The pipeline's jitted step: model, methods, transforms and metrics on one batch, sharded over the devices.

``step(variables, video [B, T, H, W, C], label [B], (seed, first clip index), gt) -> outputs``: the logits'
``prediction``, the explained ``target`` (label or prediction), its softmax ``score`` and whether the logits are
finite (all ``[B]``), and per method its metric columns ``[B, ...]``, whether its map is finite and (when maps are
saved) the map. Method ``i`` draws its key as ``fold_in(fold_in(PRNGKey(seed), first clip index), i)``.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxvx.pipeline._metrics import Metric


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
                 "logits": logits, **gt}
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


def cached_step(forward, plain, apply, methods, transforms, metrics, opts, auto, target_mode, save_maps, mesh):
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


def to_host(tree, mesh):
    """Outputs of the step as NumPy arrays holding this process's rows."""
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(np.asarray, tree)
    from jax.experimental import multihost_utils

    local = multihost_utils.global_array_to_host_local_array(tree, mesh, P("data"))
    return jax.tree_util.tree_map(np.asarray, local)
