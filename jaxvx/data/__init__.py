"""Data sources. Every record is a dict with at least ``video`` (uint8 ``[T, H, W, 3]`` RGB) and ``label`` (int).

- :func:`synthetic`: the procedural benchmark with exact ground truth (boxes, action segments, motion masks, flow).
- :func:`tfds`: a TFDS data source (array_record, no TensorFlow needed), e.g. the benchmark built as a TFDS dataset.
- :func:`folder`: a folder of videos in the UCF101 layout.

The TFDS names (:data:`TFDS_NAMES`) need tensorflow-datasets (``pip install "jaxvx[tfds]"``), imported on their first
use, so that ``import jaxvx.data`` does not load it.
"""

import importlib

from jaxvx.data._folder import FolderVideos, folder
from jaxvx.data._synthetic import CLASS_NAMES, SyntheticConfig, SyntheticVideos, render_clip, synthetic

#: the names of :mod:`jaxvx.data` that live in ``jaxvx.data._tfds`` and import tensorflow-datasets
TFDS_NAMES = ("SyntheticBuilder", "SyntheticBuilderConfig", "TFDSVideos", "build_synthetic_tfds", "tfds")

__all__ = [
    "CLASS_NAMES",
    "FolderVideos",
    "SyntheticBuilder",
    "SyntheticBuilderConfig",
    "SyntheticConfig",
    "SyntheticVideos",
    "TFDSVideos",
    "build_synthetic_tfds",
    "folder",
    "render_clip",
    "synthetic",
    "tfds",
]


def __getattr__(name: str):
    """The names of :data:`TFDS_NAMES`, imported from ``jaxvx.data._tfds`` on first use (PEP 562)."""
    if name not in TFDS_NAMES:
        raise AttributeError(f"module 'jaxvx.data' has no attribute {name!r}")
    value = getattr(importlib.import_module("jaxvx.data._tfds"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
