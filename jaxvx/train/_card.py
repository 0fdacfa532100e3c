"""The model card a training run writes beside its checkpoint: recipe, data, initialisation, optimiser,
accuracies, history, timing, machine and the command line that reproduces it."""

from __future__ import annotations

import dataclasses
import os
import platform
import shlex

import jax

from jaxvx.train._recipes import RECIPES, Recipe
from jaxvx.train._step import PRNG_IMPL

__all__ = ["command_line", "machine", "model_card"]


def machine() -> dict:
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


_CLI_FIELDS = {
    "steps": "--steps", "batch_size": "--batch-size", "lr": "--lr", "seed": "--seed", "optimizer": "--optimizer",
    "weight_decay": "--weight-decay", "warmup_steps": "--warmup-steps", "train_clips": "--train-clips",
    "test_clips": "--test-clips",
}


def command_line(recipe: Recipe, base: Recipe, out) -> str:
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


def model_card(recipe: Recipe, *, class_names, num_classes, data_cfg, init_source_sha, history, train_acc, n_tr,
               test_acc, train_time, wall, data_time, cpu, start, command) -> dict:
    """The card of a finished run (``jaxvx.checkpoints.save`` adds the file's sha256 and parameter count): accuracies
    ``train_acc`` (on ``n_tr`` training clips, None untrained) and ``test_acc``, times in seconds (``train_time`` the
    loop, ``wall`` the run, ``data_time`` the rendering, ``cpu`` CPU seconds), ``start`` the step a resume began at."""
    return {
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
        "train_time_s": round(train_time, 2),
        "wall_time_s": round(wall, 2),
        "data_time_s": round(data_time, 2),
        "cpu_time_s": round(cpu, 1),
        "timing_note": "train_time_s: the training loop (compilation included); wall_time_s: the whole run "
                       "(rendering, compilation, evaluation); cpu_time_s: CPU seconds of all threads, which "
                       "divided by the core count estimates the wall time on an otherwise idle machine",
        "resumed_from_step": start if start else None,
        "machine": machine(),
        "command": command,
        "notes": recipe.notes,
    }
