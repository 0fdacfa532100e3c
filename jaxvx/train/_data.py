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

__all__ = ["batch_indices", "dataset", "downsampler", "render", "snippets"]

_SPLIT_CODES = {"train": 0, "test": 1, "curriculum": 2}


def dataset(recipe: Recipe, split: str, num_clips: int, extra: Mapping[str, Any] | None = None):
    from jaxvx import data

    kwargs = {**dict(recipe.data_kwargs), **dict(extra or {})}
    return data.synthetic(
        split,
        variant=recipe.variant,
        num_clips=num_clips,
        num_frames=recipe.num_frames + recipe.snippet_offsets,
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


def snippet_starts(recipe: Recipe, split: str, n: int) -> np.ndarray:
    """int ``[n]``: the start frame of each clip's snippet, uniform in ``[0, recipe.snippet_offsets]`` from
    ``numpy.random.default_rng([data_seed, split code, index])`` (0 everywhere when ``snippet_offsets == 0``)."""
    k = int(recipe.snippet_offsets)
    if k == 0:
        return np.zeros(n, np.int64)
    code = _SPLIT_CODES[split]
    return np.array([np.random.default_rng([recipe.data_seed, code, i]).integers(0, k + 1) for i in range(n)])


def snippets(recipe: Recipe, split: str, videos: np.ndarray) -> np.ndarray:
    """``[N, T + k, H, W, 3]`` -> ``[N, T, H, W, 3]``: clip ``i`` cut at :func:`snippet_starts`'s frame (the clips
    unchanged when ``k = recipe.snippet_offsets`` is 0)."""
    k, t = int(recipe.snippet_offsets), int(recipe.num_frames)
    if k == 0:
        return videos
    if videos.shape[1] != t + k:
        raise ValueError(f"snippets: videos must have num_frames + snippet_offsets = {t + k} frames, "
                         f"got shape {videos.shape}")
    starts = snippet_starts(recipe, split, len(videos))
    frames = starts[:, None] + np.arange(t)[None, :]
    return np.take_along_axis(videos, frames[:, :, None, None, None], axis=1)


def batch_indices(seed: int, step: int, n: int, batch: int) -> np.ndarray:
    """Indices of the training clips of ``step``: ``batch`` distinct draws from ``range(n)``, a pure function of
    ``(seed, step)`` so that resumed runs see the same batches."""
    return np.random.default_rng([seed, step]).choice(n, size=batch, replace=False)
