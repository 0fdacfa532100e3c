"""A training run: data, model and state, the loop of jitted steps with evaluations and state files, the card.

See :mod:`jaxvx.train` for what a run does and guarantees.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from jaxvx.train._card import command_line, model_card
from jaxvx.train._data import batch_indices, dataset, downsampler, render, snippets
from jaxvx.train._recipes import Recipe, get_recipe
from jaxvx.train._state import init_from_checkpoint, load_state, save_state
from jaxvx.train._step import PRNG_IMPL, TrainState, accuracy, cached, make_eval_fn, make_optimizer, make_train_step, \
    has_train_flag

__all__ = ["TrainResult", "train"]


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
    test_ds = dataset(recipe, "test", recipe.test_clips)
    class_names = list(getattr(test_ds, "class_names", []))
    num_classes = len(class_names) if class_names else int(getattr(test_ds, "num_classes"))
    down = downsampler(recipe)
    test_v, test_y = render(test_ds, recipe.test_clips, progress, "test clips", down)
    test_v = snippets(recipe, "test", test_v)
    if recipe.trained:
        train_ds = dataset(recipe, "train", recipe.train_clips)
        train_v, train_y = render(train_ds, recipe.train_clips, progress, "train clips", down)
        train_v = snippets(recipe, "train", train_v)
        data_cfg = train_ds.config.to_dict() if hasattr(train_ds, "config") else {}
        if recipe.curriculum_steps:
            n_easy = min(recipe.train_clips, recipe.curriculum_steps * recipe.batch_size)
            easy_ds = dataset(recipe, "train", n_easy, recipe.curriculum_data)
            easy_v, easy_y = render(easy_ds, n_easy, progress, "curriculum clips", down)
            easy_v = snippets(recipe, "curriculum", easy_v)
    else:
        train_v = train_y = None
        data_cfg = test_ds.config.to_dict() if hasattr(test_ds, "config") else {}
    data_time = time.perf_counter() - t0

    # --- model, optimiser, state
    model = models.create(recipe.model, num_classes, **dict(recipe.model_kwargs))
    tx = make_optimizer(recipe)
    init_key = jax.random.key(recipe.seed, impl=PRNG_IMPL)
    dummy = jnp.zeros((1, recipe.num_frames, recipe.height, recipe.width, 3), jnp.float32)
    kw = {"train": False} if has_train_flag(model) else {}
    init_fn = cached("init", model, recipe, lambda: jax.jit(lambda k: model.init({"params": k, "dropout": k}, dummy, **kw)))
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
        params, init_source_sha = init_from_checkpoint(params, recipe)
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
        state, history, (elapsed_before, loop_before, cpu_before) = load_state(state_path, state, math_cfg)
    start = int(state.step)

    step_fn = cached("step", model, recipe, lambda: make_train_step(model, tx, recipe))
    logits_fn = cached("eval", model, recipe, lambda: make_eval_fn(model, recipe))
    dropout_key = jax.random.key(recipe.seed + 1, impl=PRNG_IMPL)

    def evaluate(st) -> float:
        return accuracy(logits_fn, st.variables(), test_v, test_y)

    # --- loop
    t_loop = time.perf_counter()
    run_loss, run_acc, n_avg = 0.0, 0.0, 0
    bar = tqdm(total=recipe.steps, initial=start, desc=f"train {recipe.name}", unit="step", disable=not progress)
    log = bar.write if progress else (lambda msg: None)
    try:
        for s in range(start, recipe.steps):
            vids, labs = (easy_v, easy_y) if s < recipe.curriculum_steps else (train_v, train_y)
            idx = batch_indices(recipe.seed, s, len(vids), recipe.batch_size)
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
                save_state(state_path, state, history, timing, math_cfg)
    finally:
        bar.close()
    loop_time = time.perf_counter() - t_loop

    # --- final evaluation and checkpoint
    test_acc = evaluate(state)
    if recipe.trained:
        n_tr = min(recipe.train_clips, recipe.test_clips)
        train_acc = accuracy(logits_fn, state.variables(), train_v[:n_tr], train_y[:n_tr])
    else:
        n_tr, train_acc = 0, None
    if recipe.steps > 0 and (not history or history[-1]["step"] != recipe.steps):
        history.append({"step": recipe.steps, "loss": run_loss / max(n_avg, 1) if n_avg else None,
                        "train_accuracy": run_acc / n_avg if n_avg else None, "test_accuracy": test_acc})
    wall = elapsed_before + time.perf_counter() - t_start
    cpu = cpu_before + _cpu_seconds() - cpu_start
    variables = jax.device_get(state.variables())
    card = model_card(recipe, class_names=class_names, num_classes=num_classes, data_cfg=data_cfg,
                      init_source_sha=init_source_sha, history=history, train_acc=train_acc, n_tr=n_tr,
                      test_acc=test_acc, train_time=loop_before + loop_time, wall=wall, data_time=data_time, cpu=cpu,
                      start=start, command=command or command_line(recipe, base, out))
    path = checkpoints.save(out / f"{recipe.name}.msgpack", model, variables, card)
    if state_path.exists() and not keep_state:
        state_path.unlink()
    elif keep_state:
        save_state(state_path, state, history, (wall, loop_before + loop_time, cpu), math_cfg)
    return TrainResult(path, checkpoints.load_card(path), model, variables, history, train_acc, test_acc)


def _cpu_seconds() -> float:
    """User + system CPU seconds used by this process so far (all threads)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
