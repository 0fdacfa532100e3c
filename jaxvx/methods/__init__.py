"""Explanation methods: factories that close over their settings and return a pure function

    relevance = method(forward, video, target, *, key=None)

with ``forward(video) -> logits`` pure (e.g. ``functools.partial(model.apply, variables)``), ``video`` float32
``[B, T, H, W, C]``, ``target`` int ``[B]`` or ``None`` (the predicted class), and ``relevance`` float
``[B, T, H, W, C]`` or ``[B, T, H, W, 1]`` for every method (:mod:`jaxvx.methods._common`); :func:`details` gives the
variant of a method with a richer result. :data:`REGISTRY` lists every method by name with what it needs
(:func:`make` builds one by name); :func:`chunked` runs any method over a batch a few clips at a time (memory;
speed on CPU).
"""

from jaxvx.methods._backprop_api import *  # noqa: F403
from jaxvx.methods._backprop_api import __all__ as _backprop
from jaxvx.methods._chunked import chunked
from jaxvx.methods._common import Method, details, with_details
from jaxvx.methods._perturbation_api import *  # noqa: F403
from jaxvx.methods._perturbation_api import __all__ as _perturbation

from jaxvx.methods._registry import EXTREMAL_AREA, NEEDS, REGISTRY, MethodInfo, make, method_names

__all__ = ["Method", "chunked", "details", "with_details", "REGISTRY", "MethodInfo", "NEEDS", "EXTREMAL_AREA", "make",
           "method_names", *_backprop, *_perturbation]
