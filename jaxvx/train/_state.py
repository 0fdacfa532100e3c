"""A run's parameters on disk besides the final checkpoint: the resumable training state, and initial parameters
copied from another checkpoint.

The state file ``OUT/NAME.state.msgpack`` holds the format tag, the recipe's settings (JSON; a resume must match
them), the evaluation history, the timing so far and the :class:`jaxvx.train.TrainState` as a Flax state dict.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import serialization

from jaxvx.train._recipes import Recipe
from jaxvx.train._step import TrainState

__all__ = ["STATE_FORMAT", "init_from_checkpoint", "load_state", "save_state"]

STATE_FORMAT = "jaxvx-train-state/1"


def init_from_checkpoint(params: dict, recipe: Recipe) -> tuple[dict, str | None]:
    """``params`` with the submodules ``recipe.init_modules`` replaced by those of checkpoint ``recipe.init_from``,
    and the sha256 its card records for the file that was read."""
    from jaxvx import checkpoints

    _, source, source_card = checkpoints.load(recipe.init_from)
    source = source["params"]
    params = dict(params)
    for name in recipe.init_modules:
        if name not in params or name not in source:
            where = "the model" if name not in params else f"checkpoint {recipe.init_from!r}"
            raise ValueError(f"recipe {recipe.name!r}: init_modules names {name!r}, which {where} does not have "
                             f"(it has {sorted(params if name not in params else source)})")
        ours = jax.tree_util.tree_flatten_with_path(params[name])[0]
        theirs = dict(jax.tree_util.tree_flatten_with_path(source[name])[0])
        for path, a in ours:
            key = name + jax.tree_util.keystr(path)
            if path not in theirs:
                raise ValueError(f"recipe {recipe.name!r}: checkpoint {recipe.init_from!r} has no parameter {key}")
            if tuple(theirs[path].shape) != tuple(a.shape):
                raise ValueError(f"recipe {recipe.name!r}: parameter {key} has shape {tuple(a.shape)}, checkpoint "
                                 f"{recipe.init_from!r} has {tuple(theirs[path].shape)}")
        extra = sorted(name + jax.tree_util.keystr(p) for p in set(theirs) - {path for path, _ in ours})
        if extra:
            raise ValueError(f"recipe {recipe.name!r}: checkpoint {recipe.init_from!r} has parameters the model "
                             f"lacks: {extra}")
        params[name] = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), source[name])
    return params, source_card.get("sha256")


def save_state(path: Path, state: TrainState, history: list, timing: tuple[float, ...], cfg: dict) -> None:
    from jaxvx.checkpoints import _atomic_write

    payload = {
        "format": STATE_FORMAT,
        "config": json.dumps(cfg, sort_keys=True),
        "history": json.dumps(history),
        "timing": [float(t) for t in timing],
        "state": serialization.to_state_dict(jax.device_get(state)),
    }
    _atomic_write(path, serialization.msgpack_serialize(payload))


def load_state(path: Path, template: TrainState, cfg: dict):
    from jaxvx import CheckpointError

    try:
        payload = serialization.msgpack_restore(path.read_bytes())
        fmt = payload.get("format")
    except Exception as e:
        raise CheckpointError(f"training state {str(path)!r} is corrupt ({type(e).__name__}: {e})") from None
    if fmt != STATE_FORMAT:
        raise CheckpointError(f"training state {str(path)!r} has format {fmt!r}, expected {STATE_FORMAT!r}")
    saved = json.loads(payload["config"])
    diff = sorted(k for k in set(saved) | set(cfg) if saved.get(k) != json.loads(json.dumps(cfg)).get(k))
    if diff:
        raise ValueError(
            f"train: cannot resume from {str(path)!r}: it was started with different settings for {diff} "
            f"(saved {[saved.get(k) for k in diff]}, now {[cfg.get(k) for k in diff]})"
        )
    try:
        state = serialization.from_state_dict(template, payload["state"])
    except Exception as e:
        raise CheckpointError(f"training state {str(path)!r} does not fit the model ({e})") from None
    state = jax.tree.map(jnp.asarray, state)
    return state, json.loads(payload["history"]), tuple(float(t) for t in payload["timing"])
