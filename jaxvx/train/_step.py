"""The pieces of one training step: input normalisation, the state, the optimiser, the jitted train and eval steps.

``x = (v / 255 - mean) / std`` per channel from uint8 clips ``[B, T, H, W, 3]``; the loss is the mean softmax
cross-entropy of the train-mode logits; the optimiser clips the global gradient norm at 1, then AdamW or SGD with
Nesterov momentum under a linear warm-up and cosine decay of the learning rate. Compiled functions are cached
across :func:`jaxvx.train.train` calls in one process.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxvx.train._recipes import Recipe

__all__ = ["PRNG_IMPL", "TrainState", "accuracy", "cached", "make_eval_fn", "make_optimizer", "make_train_step",
           "normalize", "has_train_flag"]

# JAX's "rbg" PRNG (XLA RngBitGenerator): on XLA:CPU a model's initialisation compiles about 10x faster than with
# the default threefry (minutes for C3D on 2 cores), and it is as deterministic on a given jax/XLA version.
PRNG_IMPL = "rbg"


def normalize(video_u8: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """uint8 ``[..., C]`` video to float32: ``(v / 255 - mean) / std`` per channel (``C = len(mean)``)."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return (video_u8.astype(jnp.float32) / 255.0 - mean) / std


@struct.dataclass
class TrainState:
    """Training state (a pytree): ``step`` int32 scalar, ``params``, ``batch_stats`` ({} for models without
    BatchNorm) and the optax ``opt_state``."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any

    def variables(self) -> dict:
        """The model's variables ``{"params": ..., ["batch_stats": ...]}`` for ``model.apply``."""
        v = {"params": self.params}
        if self.batch_stats:
            v["batch_stats"] = self.batch_stats
        return v


def make_optimizer(recipe: Recipe) -> optax.GradientTransformation:
    """optax chain: clip global gradient norm at 1, then AdamW (``b1=0.9, b2=0.999, eps=1e-8``, decoupled weight
    decay ``weight_decay``) or SGD with Nesterov momentum ``momentum`` plus L2 ``weight_decay``; learning rate
    ``lr * min(1, (t + 1) / warmup)`` during warm-up, then cosine decay to 0 at ``steps``
    (:func:`optax.warmup_cosine_decay_schedule`)."""
    total = max(int(recipe.steps), 1)
    warm = min(int(recipe.warmup_steps), max(total - 1, 0))
    sched = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=recipe.lr, warmup_steps=warm, decay_steps=total, end_value=0.0
    )
    if recipe.optimizer == "adamw":
        opt = optax.adamw(sched, weight_decay=recipe.weight_decay)
    else:
        opt = optax.chain(
            optax.add_decayed_weights(recipe.weight_decay), optax.sgd(sched, momentum=recipe.momentum, nesterov=True)
        )
    return optax.chain(optax.clip_by_global_norm(1.0), opt)


def has_train_flag(model) -> bool:
    try:
        return "train" in inspect.signature(type(model).__call__).parameters
    except (TypeError, ValueError):
        return False


def make_train_step(model, tx: optax.GradientTransformation, recipe: Recipe) -> Callable:
    """One jitted training step ``step(state, video_u8, label, key) -> (state, metrics)``.

    ``video_u8`` uint8 ``[B, T, H, W, 3]``, ``label`` int ``[B]``, ``key`` the run's base PRNG key (the dropout key
    of the step is ``jax.random.fold_in(key, state.step)``). The clip is normalised with ``recipe.mean`` /
    ``recipe.std`` (:func:`normalize`); the loss is the mean softmax cross-entropy of the train-mode logits; the
    gradient goes through ``tx``; BatchNorm statistics (if any) are updated. ``metrics = {"loss": ...,
    "accuracy": fraction of argmax(logits) == label}`` (train-mode forward, before the update). The state's
    buffers are donated.
    """
    takes_train = has_train_flag(model)
    mean, std = tuple(recipe.mean), tuple(recipe.std)

    def step(state: TrainState, video_u8, label, key):
        x = normalize(video_u8, mean, std)
        key = jax.random.fold_in(key, state.step)
        kw = {"train": True} if takes_train else {}

        def loss_fn(params):
            variables = {"params": params}
            if state.batch_stats:
                variables["batch_stats"] = state.batch_stats
                logits, updates = model.apply(variables, x, rngs={"dropout": key}, mutable=["batch_stats"], **kw)
                new_stats = updates["batch_stats"]
            else:
                logits = model.apply(variables, x, rngs={"dropout": key}, **kw)
                new_stats = state.batch_stats
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, label).mean()
            return loss, (logits, new_stats)

        (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        acc = jnp.mean(jnp.argmax(logits, -1) == label)
        new_state = TrainState(step=state.step + 1, params=params, batch_stats=new_stats, opt_state=opt_state)
        return new_state, {"loss": loss, "accuracy": acc}

    return jax.jit(step, donate_argnums=0)


def make_eval_fn(model, recipe: Recipe) -> Callable:
    """Jitted ``logits(variables, video_u8) -> [B, K]``: eval-mode forward (no dropout, running BatchNorm stats)
    of the clips normalised with ``recipe.mean`` / ``recipe.std``."""
    kw = {"train": False} if has_train_flag(model) else {}
    mean, std = tuple(recipe.mean), tuple(recipe.std)

    @jax.jit
    def logits(variables, video_u8):
        return model.apply(variables, normalize(video_u8, mean, std), **kw)

    return logits


# Compiled functions are reused across train() calls in one process (tests, sweeps): keyed by the model's config
# and the settings the function closes over. The seed is not among them: it enters as an argument.
_CACHE: dict = {}


def cached(kind: str, model, recipe: Recipe, make: Callable):
    from jaxvx import models

    fields = {
        "step": ("steps", "optimizer", "lr", "weight_decay", "warmup_steps", "momentum", "mean", "std"),
        "eval": ("mean", "std"),
        "init": ("num_frames", "height", "width"),
    }[kind]
    d = recipe.to_dict()
    key = (kind, json.dumps(models.config(model), sort_keys=True), json.dumps([d[f] for f in fields]))
    if key not in _CACHE:
        if len(_CACHE) > 32:
            _CACHE.clear()
        _CACHE[key] = make()
    return _CACHE[key]


def accuracy(logits_fn, variables, videos: np.ndarray, labels: np.ndarray, batch: int = 50) -> float:
    """Fraction of correct argmax predictions over ``videos`` in batches of ``batch`` (last batch padded)."""
    n = len(videos)
    correct = 0
    for i in range(0, n, batch):
        v = videos[i : i + batch]
        m = len(v)
        if m < batch and n > batch:  # pad to a fixed shape so that one compilation serves every batch
            v = np.concatenate([v, np.zeros((batch - m, *v.shape[1:]), v.dtype)])
        pred = np.asarray(jnp.argmax(logits_fn(variables, v), -1))[:m]
        correct += int((pred == labels[i : i + m]).sum())
    return correct / n
