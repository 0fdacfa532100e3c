"""A training run's clips: the synthetic benchmark rendered once into memory, and the batches drawn from it.

Clips are uint8 ``[N, T, H, W, 3]`` with int32 labels ``[N]``, rendered at ``render_scale`` times the model's size
and resized to it when the recipe says so; the batch of step ``s`` is ``batch_size`` distinct indices drawn by
``numpy.random.default_rng([seed, s])``, so that a resumed run sees the same batches.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import numpy as np

from jaxvx.train._recipes import Recipe

__all__ = ["batch_indices", "dataset", "downsampler", "render"]


def dataset(recipe: Recipe, split: str, num_clips: int, extra: Mapping[str, Any] | None = None):
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


def downsampler(recipe: Recipe) -> Callable | None:
    """uint8 ``[N, T, s H, s W, 3]`` -> uint8 ``[N, T, H, W, 3]`` with the card's resize (None when ``s = 1``)."""
    if recipe.render_scale == 1:
        return None
    from jaxvx import io

    size = (recipe.height, recipe.width)
    resize = jax.jit(lambda v: io.preprocess(v, size=size, resize="direct", crop="none", mean=(0.0, 0.0, 0.0),
                                             std=(1 / 255, 1 / 255, 1 / 255)))
    return lambda v: np.clip(np.rint(np.asarray(resize(v))), 0, 255).astype(np.uint8)


def render(ds, n: int, progress: bool, desc: str, down: Callable | None = None) -> tuple[np.ndarray, np.ndarray]:
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


def batch_indices(seed: int, step: int, n: int, batch: int) -> np.ndarray:
    """Indices of the training clips of ``step``: ``batch`` distinct draws from ``range(n)``, a pure function of
    ``(seed, step)`` so that resumed runs see the same batches."""
    return np.random.default_rng([seed, step]).choice(n, size=batch, replace=False)
