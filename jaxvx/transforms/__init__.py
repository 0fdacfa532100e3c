"""Transforms of relevance maps and their composition with explanation methods.

A transform is a pure function ``relevance -> relevance`` (or ``-> [B, T]`` for the temporal ones), made by a
factory that closes over its settings, as optax's gradient transformations are: ``selective(sigma=4.0)`` returns
the function. All of them work under ``jax.jit`` and ``jax.vmap``. Maps are ``[B, T, H, W, C]`` as every method
returns them (``C`` is 1 for a map without channels, and after :func:`sum_channels`); the map transforms also take a
``[B, T, H, W]`` array a user reduced over channels, and return its shape.

- :func:`selective`: selective relevance (Hiley et al.), with :func:`selective_mask` and :func:`temporal_gradient`;
- :func:`frame_share`: the share of relevance per frame (Anders et al.), :func:`fit_border_lookahead` its fits;
- reductions and normalisations: :func:`sum_channels`, :func:`max_channels`, :func:`positive`, :func:`negative`,
  :func:`absolute`, :func:`normalize_minmax`, :func:`normalize_absmax`, :func:`normalize_percentile`;
- :func:`chain` composes a method with transforms into a method of the same call shape; :func:`named_chain` keeps
  the intermediate results.

Example::

    explain = chain(jaxvx.methods.gradient(), sum_channels(), selective(4.0))
    maps = explain(forward, video, target)          # [B, T, H, W, 1]
"""

from jaxvx.transforms._chain import RAW, chain, named_chain
from jaxvx.transforms._reduce import (
    absolute,
    max_channels,
    negative,
    normalize_absmax,
    normalize_minmax,
    normalize_percentile,
    positive,
    sum_channels,
)
from jaxvx.transforms._selective import PADDINGS, SOBEL_T, selective, selective_mask, temporal_gradient
from jaxvx.transforms._temporal import BorderLookaheadFit, fit_border_lookahead, frame_relevance, frame_share

__all__ = [
    "chain",
    "named_chain",
    "RAW",
    "selective",
    "selective_mask",
    "temporal_gradient",
    "SOBEL_T",
    "PADDINGS",
    "frame_share",
    "frame_relevance",
    "fit_border_lookahead",
    "BorderLookaheadFit",
    "sum_channels",
    "max_channels",
    "positive",
    "negative",
    "absolute",
    "normalize_minmax",
    "normalize_absmax",
    "normalize_percentile",
]
