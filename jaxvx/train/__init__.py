"""Train the shipped models on the synthetic benchmark (:mod:`jaxvx.train._loop`)."""

from jaxvx.train._loop import (RECIPES, Recipe, TrainResult, TrainState, cli, get_recipe, make_eval_fn, make_optimizer,
                               make_train_step, normalize, recipes, train)

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
