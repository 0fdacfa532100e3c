"""Data sources. Every record is a dict with at least ``video`` (uint8 ``[T, H, W, 3]`` RGB) and ``label`` (int).

- :func:`synthetic`: the procedural benchmark with exact ground truth (boxes, action segments, motion masks, flow).
- :func:`tfds`: a TFDS data source (array_record, no TensorFlow needed), e.g. the benchmark built as a TFDS dataset.
- :func:`folder`: a folder of videos in the UCF101 layout.
"""

from jaxvx.data._folder import FolderVideos, folder
from jaxvx.data._synthetic import CLASS_NAMES, SyntheticConfig, SyntheticVideos, render_clip, synthetic
from jaxvx.data._tfds import SyntheticBuilder, SyntheticBuilderConfig, TFDSVideos, build_synthetic_tfds, tfds

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
