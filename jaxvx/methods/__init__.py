"""Explanation methods: factories that close over their settings and return a pure function

    relevance = method(forward, video, target, *, key=None)

with ``forward(video) -> logits`` pure (e.g. ``functools.partial(model.apply, variables)``), ``video`` float32
``[B, T, H, W, C]``, ``target`` int ``[B]`` or ``None`` (the predicted class). See :mod:`jaxvx.methods._common`.
:func:`chunked` runs any method over a batch a few clips at a time (memory; speed on CPU).
"""

from jaxvx.methods._backprop_api import *  # noqa: F403
from jaxvx.methods._backprop_api import __all__ as _backprop
from jaxvx.methods._chunked import chunked
from jaxvx.methods._common import Method
from jaxvx.methods._perturbation_api import *  # noqa: F403
from jaxvx.methods._perturbation_api import __all__ as _perturbation

__all__ = ["Method", "chunked", *_backprop, *_perturbation]
