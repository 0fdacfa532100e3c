"""Train the shipped models on the synthetic benchmark: recipes, one jitted optax train step, resumable runs.

A *recipe* names everything that defines a checkpoint: the architecture (a :mod:`jaxvx.models` registry name and
its kwargs), the benchmark (variant, clip size, number of training and test clips) and the default
hyper-parameters. :func:`train` runs a recipe, and the command line ``jaxvx train`` (:func:`cli`) does the same::

    jaxvx train --model c3d-small --data synthetic --out checkpoints [--steps N --batch-size B --lr LR --seed S]

Training (see :func:`train` for the details):

- data: a fixed training set of ``train_clips`` clips rendered once by :func:`jaxvx.data.synthetic` at the model's
  input size and held in memory as uint8; each step draws ``batch_size`` of them without replacement from a NumPy
  generator seeded by ``(seed, step)``, so a resumed run sees the same batches. Clips are normalised inside the step:
  ``x = (v / 255 - mean) / std`` per channel (recorded in the card as ``preprocess``, kwargs for
  :func:`jaxvx.io.preprocess`).
- loss: mean softmax cross-entropy; optimiser: AdamW (or SGD with Nesterov momentum), learning rate warmed up
  linearly over ``warmup_steps`` then decayed by a cosine to zero, global gradient-norm clipping at 1.
- one jitted, buffer-donating step ``(state, video, label, key) -> (state, metrics)`` where the state holds the
  step, parameters, batch statistics and optimiser state; parameters are initialised from ``key(seed)`` and the
  dropout key is ``fold_in(key(seed + 1), step)`` (JAX "rbg" keys). The same seed gives bit-identical parameters
  on the same machine and jax version.
- evaluation on ``test_clips`` clips of the held-out test split every ``eval_every`` steps and at the end.
- the full training state is written atomically to ``OUT/NAME.state.msgpack`` every ``checkpoint_every`` steps;
  ``resume=True`` continues from it (same final parameters as an uninterrupted run). At the end the model checkpoint
  ``OUT/NAME.msgpack`` + ``OUT/NAME.json`` is written with :func:`jaxvx.checkpoints.save` and the state file removed
  (``keep_state=True`` keeps it).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization, struct

__all__ = [
    "Recipe",
    "RECIPES",
    "recipes",
    "get_recipe",
    "TrainState",
    "TrainResult",
    "make_optimizer",
    "make_train_step",
    "make_eval_fn",
    "normalize",
    "train",
    "cli",
]

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
STATE_FORMAT = "jaxvx-train-state/1"
# JAX's "rbg" PRNG (XLA RngBitGenerator): on XLA:CPU a model's initialisation compiles about 10x faster than with
# the default threefry (minutes for C3D on 2 cores), and it is as deterministic on a given jax/XLA version.
PRNG_IMPL = "rbg"


# ------------------------------------------------------------------------------------------------------ recipes
@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that defines a trained checkpoint.

    Attributes:
      name: checkpoint name (the files are ``NAME.msgpack`` / ``NAME.json``).
      model: :func:`jaxvx.models.create` registry name; ``model_kwargs`` its constructor kwargs (besides
        ``num_classes``, which comes from the data).
      variant, num_frames, height, width, data_kwargs, data_seed: arguments of :func:`jaxvx.data.synthetic`; the
        model's input is ``[num_frames, height, width, 3]``.
      render_scale: clips are rendered at ``render_scale`` times the input size and brought down to it by
        :func:`jaxvx.io.preprocess`'s antialiased resize (the card's ``preprocess``), so that the model sees what a
        user sees when they preprocess the benchmark's clips as the card says. At 32 x 32 the renderer's point
        sampling aliases the actor's checker texture into spurious motion (a rotating "T" then looks like it turns
        either way); rendering at 64 x 64 and resizing removes it. The resized clips are stored rounded to uint8.
      train_clips, test_clips: sizes of the in-memory training set and of the evaluated test split.
      steps, batch_size, optimizer ("adamw" | "sgd"), lr (peak), weight_decay, warmup_steps, momentum: optimisation.
      seed: initialisation, batch order and dropout.
      kernel_gain: every ``kernel`` parameter (convolutions and dense layers) is multiplied by this factor after
        the model's own initialisation. ``sqrt(2)`` turns Flax's default LeCun-normal init into He init, which
        keeps the signal's variance through deep ReLU stacks without normalisation (C3D): with the default the
        logits of an 8-conv C3D hardly depend on the input and Adam drives the network to a constant output.
      mean, std: per-channel normalisation of ``v / 255``.
      zero_init: parameter paths (``"/"``-joined, e.g. ``"fc8"``) whose values start at zero: a zero classifier
        head gives zero initial logits, so the first updates do not shrink the whole network to silence random
        logits (the plateau of un-normalised ReLU networks).
      init_from, init_modules: start the parameters named by ``init_modules`` (top-level submodule names, e.g.
        ``("cnn",)``) from those of the checkpoint ``init_from`` (a shipped name or a path), the rest from the
        model's own initialisation: a pretrained backbone, as Li et al. start their VGG16-LSTM from an ImageNet
        VGG16. Shapes must match (a ``ValueError`` names the parameter and both shapes otherwise).
      curriculum_steps, curriculum_data: during the first ``curriculum_steps`` steps the batches come from a second
        training set of ``min(train_clips, curriculum_steps * batch_size)`` clips rendered with ``data_kwargs``
        updated by ``curriculum_data`` (e.g. ``{"distractors": 0}``: the actor alone, whose motion a network
        finds many times faster than among distractors that move alike); afterwards from the main training set.
      trained: False for a random-initialisation baseline (``steps`` must then be 0).
      notes: free text copied into the card.
    """

    name: str
    model: str
    model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    variant: str = "motion"
    num_frames: int = 16
    height: int = 64
    width: int = 64
    data_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    data_seed: int = 0
    render_scale: int = 1
    train_clips: int = 2000
    test_clips: int = 500
    steps: int = 1000
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    momentum: float = 0.9
    seed: int = 0
    kernel_gain: float = 1.0
    zero_init: tuple[str, ...] = ()
    init_from: str = ""
    init_modules: tuple[str, ...] = ()
    curriculum_steps: int = 0
    curriculum_data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    mean: tuple[float, ...] = KINETICS_MEAN
    std: tuple[float, ...] = KINETICS_STD
    trained: bool = True
    notes: str = ""

    def to_dict(self) -> dict:
        """JSON-able dict of all fields (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["model_kwargs"] = dict(self.model_kwargs)
        d["data_kwargs"] = dict(self.data_kwargs)
        d["curriculum_data"] = dict(self.curriculum_data)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["zero_init"] = list(self.zero_init)
        d["init_modules"] = list(self.init_modules)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Recipe":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"recipe config has unknown keys {unknown}; known keys are {sorted(fields)}")
        d = dict(d)
        for k in ("mean", "std"):
            if k in d:
                d[k] = tuple(float(v) for v in d[k])
        for k in ("zero_init", "init_modules"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def validate(self) -> "Recipe":
        """Raise ``ValueError`` naming the first out-of-range field; return self."""
        for k in ("num_frames", "height", "width", "train_clips", "test_clips", "batch_size", "render_scale"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"recipe {self.name!r}: {k} must be >= 1, got {getattr(self, k)}")
        if self.steps < 0:
            raise ValueError(f"recipe {self.name!r}: steps must be >= 0, got {self.steps}")
        if self.trained and self.batch_size > self.train_clips:
            raise ValueError(
                f"recipe {self.name!r}: batch_size ({self.batch_size}) must not exceed train_clips ({self.train_clips})"
            )
        if not self.trained and self.steps != 0:
            raise ValueError(f"recipe {self.name!r} is an untrained baseline: steps must be 0, got {self.steps}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"recipe {self.name!r}: optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.curriculum_steps < 0 or (self.curriculum_steps and not self.curriculum_data):
            raise ValueError(f"recipe {self.name!r}: curriculum_steps must be >= 0 and come with curriculum_data")
        if bool(self.init_from) != bool(self.init_modules):
            raise ValueError(f"recipe {self.name!r}: init_from and init_modules come together, got "
                             f"{self.init_from!r} and {self.init_modules!r}")
        if not self.kernel_gain > 0:
            raise ValueError(f"recipe {self.name!r}: kernel_gain must be > 0, got {self.kernel_gain}")
        if not self.lr > 0:
            raise ValueError(f"recipe {self.name!r}: lr must be > 0, got {self.lr}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"recipe {self.name!r}: mean and std must be 3 values (std > 0), got {self.mean}, {self.std}")
        return self


_SQRT2 = 1.4142135623730951
# C3D at width 1/8 on 16 x 32 x 32 clips (rendered at 64 x 64 and resized, see Recipe.render_scale): He-scaled init (no normalisation layers), no dropout, a short curriculum
# on clips without distractors (the actor's motion alone), then the benchmark's own clips (two distractors).
_C3D = dict(
    model="c3d", model_kwargs=dict(width=0.125, dropout=0.0), variant="motion", num_frames=16, height=32, width=32,
    render_scale=2, data_kwargs=dict(flow=False), kernel_gain=_SQRT2, train_clips=8000, test_clips=500, batch_size=8, lr=1e-3,
    warmup_steps=30, steps=4000, curriculum_steps=300, curriculum_data=dict(distractors=0),
)
_C3D_UNTRAINED = {**_C3D, "steps": 0, "curriculum_steps": 0, "curriculum_data": {}}

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(name="c3d-small", **_C3D),
        Recipe(
            name="c3d-small-untrained",
            **_C3D_UNTRAINED,
            trained=False,
            notes=(
                "Untrained baseline: the c3d-small architecture and initialisation (same seed, same He-scaled "
                "init), no training: the DTD-u / randomised-model baseline of Anders et al. Its accuracy is chance "
                "level by design."
            ),
        ),
        Recipe(name="r2plus1d-small", model="r2plus1d18", model_kwargs=dict(width=0.125), variant="motion",
               height=32, width=32, render_scale=2, data_kwargs=dict(flow=False), steps=4000, batch_size=8, lr=3e-3,
               train_clips=8000, warmup_steps=30, curriculum_steps=300, curriculum_data=dict(distractors=0),
               notes=("lr 3e-3 (BatchNorm): after 1200 steps 69.8 % test against 52.6 % with c3d-small's 1e-3.")),
        Recipe(name="cnnlstm-small", model="cnnlstm", model_kwargs=dict(backbone="small", hidden=64),
               variant="walk_run", height=32, width=32, data_kwargs=dict(flow=False), steps=1500, batch_size=8,
               lr=1e-3, train_clips=4000, init_from="lstm-small", init_modules=("cnn",),
               notes=("Per-frame CNN started from lstm-small's (a pretrained backbone, as Li et al. start from an "
                      "ImageNet VGG16); LSTM and classifier from scratch. From scratch the time-averaged logits "
                      "learned walk vs run too slowly for 20 minutes on 2 CPU cores (chance after 1200 steps), and "
                      "on the ten-class 'motion' variant 16 % after 600 steps.")),
        Recipe(name="lstm-ica-small", model="lstm",
               model_kwargs=dict(cell="input_cell_attention", hidden=32, frontend="small"), variant="walk_run",
               height=32, width=32, data_kwargs=dict(flow=False), steps=1500, batch_size=8, lr=1e-3,
               train_clips=4000, init_from="lstm-small", init_modules=("cnn",),
               notes=("Per-frame CNN started from lstm-small's (the same frame features for the LSTM and the "
                      "input-cell attention LSTM, as in Jayawardhana et al.'s comparison); attention, LSTM and "
                      "classifier from scratch. From scratch it reached 74.2 % after 2000 steps (405 s).")),
        Recipe(name="lstm-small", model="lstm", model_kwargs=dict(cell="lstm", hidden=32, frontend="small"),
               variant="walk_run", height=32, width=32, data_kwargs=dict(flow=False), steps=2000, batch_size=8,
               lr=1e-3, train_clips=4000),
    ]
}


def recipes() -> list[str]:
    """Sorted names of the built-in recipes."""
    return sorted(RECIPES)


def get_recipe(name: str) -> Recipe:
    """The built-in recipe called ``name``; ``ValueError`` listing the recipes if there is none."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: available recipes are {recipes()}")
    return RECIPES[name]


# ------------------------------------------------------------------------------------------------- building blocks
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


def _takes_train(model) -> bool:
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
    takes_train = _takes_train(model)
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
    kw = {"train": False} if _takes_train(model) else {}
    mean, std = tuple(recipe.mean), tuple(recipe.std)

    @jax.jit
    def logits(variables, video_u8):
        return model.apply(variables, normalize(video_u8, mean, std), **kw)

    return logits


# Compiled functions are reused across train() calls in one process (tests, sweeps): keyed by the model's config
# and the settings the function closes over. The seed is not among them: it enters as an argument.
_CACHE: dict = {}


def _cached(kind: str, model, recipe: Recipe, make: Callable):
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


def _accuracy(logits_fn, variables, videos: np.ndarray, labels: np.ndarray, batch: int = 50) -> float:
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


# ------------------------------------------------------------------------------------------------------------ data
def _dataset(recipe: Recipe, split: str, num_clips: int, extra: Mapping[str, Any] | None = None):
    from jaxvx import data

    kwargs = {**dict(recipe.data_kwargs), **dict(extra or {})}
    return data.synthetic(
        split,
        variant=recipe.variant,
        num_clips=num_clips,
        num_frames=recipe.num_frames,
        height=recipe.height * recipe.render_scale,
        width=recipe.width * recipe.render_scale,
        seed=recipe.data_seed,
        **kwargs,
    )


def _downsampler(recipe: Recipe) -> Callable | None:
    """uint8 ``[N, T, s H, s W, 3]`` -> uint8 ``[N, T, H, W, 3]`` with the card's resize (None when ``s = 1``)."""
    if recipe.render_scale == 1:
        return None
    from jaxvx import io

    size = (recipe.height, recipe.width)
    resize = jax.jit(lambda v: io.preprocess(v, size=size, resize="direct", crop="none", mean=(0.0, 0.0, 0.0),
                                             std=(1 / 255, 1 / 255, 1 / 255)))
    return lambda v: np.clip(np.rint(np.asarray(resize(v))), 0, 255).astype(np.uint8)


def _render(ds, n: int, progress: bool, desc: str, down: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All ``n`` clips of ``ds`` as uint8 ``[n, T, H, W, 3]`` and int32 labels ``[n]``, rendered in chunks (each
    chunk passed through ``down`` when given)."""
    from tqdm.auto import tqdm

    videos, labels = [], []
    chunk = 128
    with tqdm(total=n, desc=desc, unit="clip", disable=not progress, leave=False) as bar:
        for i in range(0, n, chunk):
            b = ds.batch(np.arange(i, min(i + chunk, n)), keys=["video", "label"])
            v = np.asarray(b["video"], np.uint8)
            videos.append(down(v) if down is not None else v)
            labels.append(np.asarray(b["label"], np.int32))
            bar.update(len(labels[-1]))
    return np.concatenate(videos), np.concatenate(labels)


def _batch_indices(seed: int, step: int, n: int, batch: int) -> np.ndarray:
    """Indices of the training clips of ``step``: ``batch`` distinct draws from ``range(n)``, a pure function of
    ``(seed, step)`` so that resumed runs see the same batches."""
    return np.random.default_rng([seed, step]).choice(n, size=batch, replace=False)


def _cpu_seconds() -> float:
    """User + system CPU seconds used by this process so far (all threads)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _machine() -> dict:
    dev = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "jax_backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "python": platform.python_version(),
        "jax": jax.__version__,
    }


# ----------------------------------------------------------------------------------------------------------- train
@dataclasses.dataclass
class TrainResult:
    """Outcome of :func:`train`: ``checkpoint`` path of the ``.msgpack`` written, its ``card``, the final
    ``variables``, the ``model``, ``history`` (one dict per evaluation: step, loss, train_accuracy (running, train
    mode), test_accuracy), and the final ``train_accuracy`` / ``test_accuracy`` (eval mode)."""

    checkpoint: Path
    card: dict
    model: Any
    variables: dict
    history: list
    train_accuracy: float
    test_accuracy: float


_CLI_FIELDS = {
    "steps": "--steps", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed", "optimizer": "--optimizer",
    "weight_decay": "--weight-decay", "warmup_steps": "--warmup-steps", "train_clips": "--train-clips",
    "test_clips": "--test-clips",
}


def _command(recipe: Recipe, base: Recipe, out) -> str:
    """The ``jaxvx train`` command line that reproduces ``recipe`` (a built-in ``base`` with overrides of CLI
    options), or else the equivalent Python call."""
    custom = RECIPES.get(base.name) != base or any(
        getattr(recipe, f.name) != getattr(base, f.name) for f in dataclasses.fields(Recipe) if f.name not in _CLI_FIELDS
    )
    if custom:
        code = f"from jaxvx.train import Recipe, train; train(Recipe.from_dict({recipe.to_dict()!r}), out={str(out)!r})"
        return shlex.join(["python", "-c", code])
    args = ["jaxvx", "train", "--model", base.name, "--data", "synthetic"]
    always = ("steps", "batch_size", "lr", "seed") if recipe.trained else ("seed",)
    for field, flag in _CLI_FIELDS.items():
        if field in always or getattr(recipe, field) != getattr(base, field):
            args += [flag, str(getattr(recipe, field))]
    args += ["--out", str(out)]
    return shlex.join(args)


def train(
    recipe_or_config: str | Recipe | Mapping[str, Any],
    *,
    out: str | os.PathLike,
    steps: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    lr: float | None = None,
    eval_every: int | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    progress: bool = True,
    keep_state: bool = False,
    callback: Callable[[int, dict], None] | None = None,
    command: str | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a recipe and write its checkpoint ``OUT/NAME.msgpack`` + ``OUT/NAME.json``.

    Args:
      recipe_or_config: a recipe name (see :func:`recipes`), a :class:`Recipe`, or a dict of Recipe fields.
      out: output folder (created).
      steps, batch_size, seed, lr: override the recipe's values (None keeps them); further Recipe fields can be
        overridden by keyword (``train_clips=..., test_clips=..., weight_decay=...``).
      eval_every: evaluate on the test split every this many steps (default ``steps // 5``; 0 = only at the end).
      checkpoint_every: write the training state every this many steps (default ``max(steps // 10, 1)``).
      resume: continue from ``OUT/NAME.state.msgpack`` if it exists (its recipe must match); without ``resume`` an
        existing state file is an error, to protect it.
      progress: show tqdm bars (rendering, training with running loss and accuracy).
      keep_state: keep the state file after the final checkpoint is written (default: remove it).
      callback: called as ``callback(step, {"loss": ..., "accuracy": ...})`` after every step (step counted from
        1); an exception it raises stops training (the last state file stays, as after a crash).
      command: the command line recorded in the card (default: the equivalent ``jaxvx train ...`` line).

    Returns:
      :class:`TrainResult`.
    """
    from jaxvx import checkpoints, models
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    cpu_start = _cpu_seconds()
    if isinstance(recipe_or_config, str):
        base = get_recipe(recipe_or_config)
    elif isinstance(recipe_or_config, Recipe):
        base = recipe_or_config
    elif isinstance(recipe_or_config, Mapping):
        base = Recipe.from_dict(recipe_or_config)
    else:
        raise TypeError(
            f"recipe_or_config must be a recipe name, a Recipe or a dict, got {type(recipe_or_config).__name__}"
        )
    repl = {k: v for k, v in dict(steps=steps, batch_size=batch_size, seed=seed, lr=lr).items() if v is not None}
    repl.update(overrides)
    try:
        recipe = dataclasses.replace(base, **repl).validate()
    except TypeError as e:
        raise ValueError(f"train: invalid override ({e}); Recipe fields are "
                         f"{[f.name for f in dataclasses.fields(Recipe)]}") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / f"{recipe.name}.state.msgpack"
    eval_every = recipe.steps // 5 if eval_every is None else int(eval_every)
    checkpoint_every = max(recipe.steps // 10, 1) if checkpoint_every is None else int(checkpoint_every)
    if checkpoint_every < 1:
        raise ValueError(f"train: checkpoint_every must be >= 1, got {checkpoint_every}")
    if state_path.exists() and not resume:
        raise ValueError(
            f"train: {str(state_path)!r} holds an unfinished run; pass resume=True (--resume) to continue it, "
            "or delete it / choose another out folder"
        )

    # --- data
    t0 = time.perf_counter()
    test_ds = _dataset(recipe, "test", recipe.test_clips)
    class_names = list(getattr(test_ds, "class_names", []))
    num_classes = len(class_names) if class_names else int(getattr(test_ds, "num_classes"))
    down = _downsampler(recipe)
    test_v, test_y = _render(test_ds, recipe.test_clips, progress, "test clips", down)
    if recipe.trained:
        train_ds = _dataset(recipe, "train", recipe.train_clips)
        train_v, train_y = _render(train_ds, recipe.train_clips, progress, "train clips", down)
        data_cfg = train_ds.config.to_dict() if hasattr(train_ds, "config") else {}
        if recipe.curriculum_steps:
            n_easy = min(recipe.train_clips, recipe.curriculum_steps * recipe.batch_size)
            easy_ds = _dataset(recipe, "train", n_easy, recipe.curriculum_data)
            easy_v, easy_y = _render(easy_ds, n_easy, progress, "curriculum clips", down)
    else:
        train_v = train_y = None
        data_cfg = test_ds.config.to_dict() if hasattr(test_ds, "config") else {}
    data_time = time.perf_counter() - t0

    # --- model, optimiser, state
    model = models.create(recipe.model, num_classes, **dict(recipe.model_kwargs))
    tx = make_optimizer(recipe)
    init_key = jax.random.key(recipe.seed, impl=PRNG_IMPL)
    dummy = jnp.zeros((1, recipe.num_frames, recipe.height, recipe.width, 3), jnp.float32)
    kw = {"train": False} if _takes_train(model) else {}
    init_fn = _cached("init", model, recipe, lambda: jax.jit(lambda k: model.init({"params": k, "dropout": k}, dummy, **kw)))
    variables = dict(init_fn(init_key))
    params = variables["params"]
    if recipe.kernel_gain != 1.0:
        gain = jnp.float32(recipe.kernel_gain)
        params = jax.tree_util.tree_map_with_path(
            lambda path, a: a * gain if getattr(path[-1], "key", None) == "kernel" else a, params
        )
    if recipe.zero_init:
        found = set()

        def zero(path, a):
            name = "/".join(str(getattr(k, "key", k)) for k in path)
            hit = [z for z in recipe.zero_init if name == z or name.startswith(z + "/")]
            found.update(hit)
            return jnp.zeros_like(a) if hit else a

        params = jax.tree_util.tree_map_with_path(zero, params)
        if set(recipe.zero_init) - found:
            raise ValueError(f"recipe {recipe.name!r}: zero_init names no parameters: "
                             f"{sorted(set(recipe.zero_init) - found)}")
    init_source_sha = None
    if recipe.init_from:
        params, init_source_sha = _init_from_checkpoint(params, recipe)
    state = TrainState(
        step=jnp.asarray(0, jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
    )
    history: list[dict] = []
    elapsed_before = loop_before = cpu_before = 0.0
    math_cfg = {k: v for k, v in recipe.to_dict().items() if k not in ("notes",)}
    if resume and state_path.exists():
        state, history, (elapsed_before, loop_before, cpu_before) = _load_state(state_path, state, math_cfg)
    start = int(state.step)

    step_fn = _cached("step", model, recipe, lambda: make_train_step(model, tx, recipe))
    logits_fn = _cached("eval", model, recipe, lambda: make_eval_fn(model, recipe))
    dropout_key = jax.random.key(recipe.seed + 1, impl=PRNG_IMPL)

    def evaluate(st) -> float:
        return _accuracy(logits_fn, st.variables(), test_v, test_y)

    # --- loop
    t_loop = time.perf_counter()
    run_loss, run_acc, n_avg = 0.0, 0.0, 0
    bar = tqdm(total=recipe.steps, initial=start, desc=f"train {recipe.name}", unit="step", disable=not progress)
    log = bar.write if progress else (lambda msg: None)
    try:
        for s in range(start, recipe.steps):
            vids, labs = (easy_v, easy_y) if s < recipe.curriculum_steps else (train_v, train_y)
            idx = _batch_indices(recipe.seed, s, len(vids), recipe.batch_size)
            state, metrics = step_fn(state, vids[idx], labs[idx], dropout_key)
            m = {k: float(v) for k, v in metrics.items()}
            run_loss += m["loss"]
            run_acc += m["accuracy"]
            n_avg += 1
            done = s + 1
            bar.update(1)
            bar.set_postfix(loss=f"{m['loss']:.3f}", acc=f"{run_acc / n_avg:.3f}")
            if callback is not None:
                callback(done, m)
            if done < recipe.steps and eval_every and done % eval_every == 0:
                h = {"step": done, "loss": run_loss / n_avg, "train_accuracy": run_acc / n_avg,
                     "test_accuracy": evaluate(state)}
                history.append(h)
                run_loss, run_acc, n_avg = 0.0, 0.0, 0
                log(f"step {done}: loss {h['loss']:.4f} train acc {h['train_accuracy']:.3f} "
                          f"test acc {h['test_accuracy']:.3f}")
            if done < recipe.steps and done % checkpoint_every == 0:
                now = time.perf_counter()
                timing = (elapsed_before + now - t_start, loop_before + now - t_loop,
                          cpu_before + _cpu_seconds() - cpu_start)
                _save_state(state_path, state, history, timing, math_cfg)
    finally:
        bar.close()
    loop_time = time.perf_counter() - t_loop

    # --- final evaluation and checkpoint
    test_acc = evaluate(state)
    if recipe.trained:
        n_tr = min(recipe.train_clips, recipe.test_clips)
        train_acc = _accuracy(logits_fn, state.variables(), train_v[:n_tr], train_y[:n_tr])
    else:
        n_tr, train_acc = 0, None
    if recipe.steps > 0 and (not history or history[-1]["step"] != recipe.steps):
        history.append({"step": recipe.steps, "loss": run_loss / max(n_avg, 1) if n_avg else None,
                        "train_accuracy": run_acc / n_avg if n_avg else None, "test_accuracy": test_acc})
    wall = elapsed_before + time.perf_counter() - t_start
    cpu = cpu_before + _cpu_seconds() - cpu_start
    variables = jax.device_get(state.variables())
    card = {
        "name": recipe.name,
        "description": recipe.notes or f"{recipe.model} trained on the synthetic '{recipe.variant}' benchmark",
        "trained": recipe.trained,
        "class_names": class_names,
        "num_classes": num_classes,
        "input_shape": [recipe.num_frames, recipe.height, recipe.width, 3],
        "preprocess": {"size": [recipe.height, recipe.width], "resize": "direct", "crop": "none",
                       "mean": list(recipe.mean), "std": list(recipe.std)},
        "normalization": "x = (video_uint8 / 255 - mean) / std per RGB channel, channels-last [B, T, H, W, C]",
        "data": {"source": "jaxvx.data.synthetic", "variant": recipe.variant, "config": data_cfg,
                 "train_clips": recipe.train_clips if recipe.trained else 0, "test_clips": recipe.test_clips,
                 "curriculum": {"steps": recipe.curriculum_steps, "data": dict(recipe.curriculum_data)}
                 if recipe.curriculum_steps else None},
        "recipe": recipe.to_dict(),
        "seed": recipe.seed,
        "init": "the model's Flax initialisers" + (
            f", then every kernel multiplied by {recipe.kernel_gain!r}" if recipe.kernel_gain != 1.0 else "") + (
            f", then {list(recipe.zero_init)} set to zero" if recipe.zero_init else "") + (
            f", then {list(recipe.init_modules)} copied from checkpoint {recipe.init_from!r} (sha256 "
            f"{init_source_sha})" if recipe.init_from else ""),
        "prng": {"impl": PRNG_IMPL, "init_key": f"jax.random.key({recipe.seed}, impl={PRNG_IMPL!r})",
                 "dropout_key": f"fold_in(jax.random.key({recipe.seed + 1}, impl={PRNG_IMPL!r}), step)",
                 "batches": f"numpy.random.default_rng([{recipe.seed}, step]).choice(train_clips, batch_size, "
                            "replace=False)"},
        "optimizer": {"name": recipe.optimizer, "lr": recipe.lr, "weight_decay": recipe.weight_decay,
                      "warmup_steps": recipe.warmup_steps, "schedule": "linear warm-up then cosine decay to 0",
                      "grad_clip_norm": 1.0, **({"momentum": recipe.momentum, "nesterov": True}
                                                if recipe.optimizer == "sgd" else {})},
        "steps": recipe.steps,
        "batch_size": recipe.batch_size,
        "train_accuracy": train_acc,
        "train_accuracy_clips": n_tr,
        "test_accuracy": test_acc,
        "test_accuracy_clips": recipe.test_clips,
        "history": history,
        "train_time_s": round(loop_before + loop_time, 2),
        "wall_time_s": round(wall, 2),
        "data_time_s": round(data_time, 2),
        "cpu_time_s": round(cpu, 1),
        "timing_note": "train_time_s: the training loop (compilation included); wall_time_s: the whole run "
                       "(rendering, compilation, evaluation); cpu_time_s: CPU seconds of all threads, which "
                       "divided by the core count estimates the wall time on an otherwise idle machine",
        "resumed_from_step": start if start else None,
        "machine": _machine(),
        "command": command or _command(recipe, base, out),
        "notes": recipe.notes,
    }
    path = checkpoints.save(out / f"{recipe.name}.msgpack", model, variables, card)
    if state_path.exists() and not keep_state:
        state_path.unlink()
    elif keep_state:
        _save_state(state_path, state, history, (wall, loop_before + loop_time, cpu), math_cfg)
    return TrainResult(path, checkpoints.load_card(path), model, variables, history, train_acc, test_acc)


def _init_from_checkpoint(params: dict, recipe: Recipe) -> tuple[dict, str | None]:
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


def _save_state(path: Path, state: TrainState, history: list, timing: tuple[float, ...], cfg: dict) -> None:
    from jaxvx.checkpoints import _atomic_write

    payload = {
        "format": STATE_FORMAT,
        "config": json.dumps(cfg, sort_keys=True),
        "history": json.dumps(history),
        "timing": [float(t) for t in timing],
        "state": serialization.to_state_dict(jax.device_get(state)),
    }
    _atomic_write(path, serialization.msgpack_serialize(payload))


def _load_state(path: Path, template: TrainState, cfg: dict):
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


# ------------------------------------------------------------------------------------------------------------- cli
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jaxvx train",
        description="Train a model recipe on the synthetic benchmark and write OUT/NAME.msgpack + OUT/NAME.json.",
    )
    p.add_argument("--model", help=f"recipe name, one of {recipes()}")
    p.add_argument("--data", default="synthetic", help="data source (only 'synthetic')")
    p.add_argument("--out", help="output folder for the checkpoint (and the resumable training state)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--seed", type=int)
    p.add_argument("--optimizer", choices=["adamw", "sgd"])
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--train-clips", type=int)
    p.add_argument("--test-clips", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--resume", action="store_true", help="continue from OUT/NAME.state.msgpack")
    p.add_argument("--keep-state", action="store_true", help="keep the training state file at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--list", action="store_true", help="list the recipes and exit")
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    """``jaxvx train`` entry point: parse ``argv`` (without the program name), train, print a summary; return the
    exit status (0 ok, 2 bad arguments)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = _parser()
    try:
        a = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if a.list:
        for name in recipes():
            r = RECIPES[name]
            print(f"{name:24s} {r.model} {dict(r.model_kwargs)} on '{r.variant}' "
                  f"[{r.num_frames}x{r.height}x{r.width}], {r.steps} steps")
        return 0
    if a.model is None or a.out is None:
        p.print_usage(sys.stderr)
        print("jaxvx train: error: --model and --out are required", file=sys.stderr)
        return 2
    if a.data != "synthetic":
        print(f"jaxvx train: error: --data must be 'synthetic', got {a.data!r}", file=sys.stderr)
        return 2
    if a.model not in RECIPES:
        print(f"jaxvx train: error: unknown recipe {a.model!r}: available recipes are {recipes()}", file=sys.stderr)
        return 2
    over = {k: v for k, v in dict(optimizer=a.optimizer, weight_decay=a.weight_decay, warmup_steps=a.warmup_steps,
                                     train_clips=a.train_clips, test_clips=a.test_clips).items() if v is not None}
    try:
        res = train(
            a.model, out=a.out, steps=a.steps, batch_size=a.batch_size, seed=a.seed, lr=a.lr,
            eval_every=a.eval_every, checkpoint_every=a.checkpoint_every, resume=a.resume,
            progress=not a.no_progress, keep_state=a.keep_state, **over,
        )
    except ValueError as e:
        print(f"jaxvx train: error: {e}", file=sys.stderr)
        return 2
    c = res.card
    tr = "n/a" if c["train_accuracy"] is None else f"{c['train_accuracy']:.4f}"
    print(f"wrote {res.checkpoint} ({res.checkpoint.stat().st_size / 1e6:.2f} MB, {c['param_count']} parameters): "
          f"train accuracy {tr}, test accuracy {c['test_accuracy']:.4f} on {c['test_accuracy_clips']} clips, "
          f"{c['wall_time_s']:.1f} s")
    return 0

