"""Train the shipped models on the synthetic benchmark: recipes, one jitted optax train step, resumable runs.

A *recipe* names everything that defines a checkpoint: the architecture (a :mod:`jaxvx.models` registry name and
its kwargs), the benchmark (variant, clip size, number of training and test clips) and the default
hyper-parameters. :func:`train` runs a recipe, and the command line ``jaxvx train`` (:func:`cli`) does the same::

    jaxvx train --model c3d-small --data synthetic --out checkpoints [--steps N --batch-size B --lr LR --seed S]

Training (see :func:`train` for the details):

- data: a fixed training set of ``train_clips`` clips rendered once by :func:`jaxvx.data.synthetic` at the model's
  input size (cut into snippets at random offsets when the recipe's ``snippet_offsets`` says so: :func:`snippets`)
  and held in memory as uint8; each step draws ``batch_size`` of them without replacement from a NumPy
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

The package, bottom to top: :mod:`._recipes` (:class:`Recipe`, :data:`RECIPES`), :mod:`._step` (normalisation,
:class:`TrainState`, the optimiser, the jitted train and eval steps), :mod:`._data` (the rendered clips and the
batches), :mod:`._state` (the state file, initial parameters from another checkpoint), :mod:`._card` (the model
card), :mod:`._loop` (:func:`train`), :mod:`._cli` (``jaxvx train``).
"""

from jaxvx.train._cli import cli
from jaxvx.train._data import snippets
from jaxvx.train._loop import TrainResult, train
from jaxvx.train._recipes import RECIPES, Recipe, get_recipe, recipes
from jaxvx.train._step import TrainState, make_eval_fn, make_optimizer, make_train_step, normalize

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
    "snippets",
    "train",
    "cli",
]
