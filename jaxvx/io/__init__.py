"""Video files and model inputs: decode/encode, frame sampling, preprocessing.

- :func:`read_video`, :func:`video_info`, :func:`write_video`: uint8 ``[T, H, W, 3]`` RGB clips to and from files
  (OpenCV's FFmpeg backend); broken files raise :class:`jaxvx.VideoError`.
- :func:`snippet_indices`, :func:`segment_indices`: which frames form a clip (strided snippets with exact rational
  steps and padding; one frame per equal segment).
- :func:`preprocess` and :data:`PRESETS`: resize, centre crop and normalise into float32 model input (jittable).
"""

from jaxvx.io._preprocess import KINETICS_MEAN, KINETICS_STD, PRESETS, SPORTS1M_MEAN, preprocess
from jaxvx.io._sampling import segment_indices, snippet_indices
from jaxvx.io._video import (
    WRITE_EXTENSIONS,
    TruncatedVideoWarning,
    VideoInfo,
    read_video,
    video_info,
    write_video,
)

__all__ = [
    "KINETICS_MEAN",
    "KINETICS_STD",
    "PRESETS",
    "SPORTS1M_MEAN",
    "TruncatedVideoWarning",
    "VideoInfo",
    "WRITE_EXTENSIONS",
    "preprocess",
    "read_video",
    "segment_indices",
    "snippet_indices",
    "video_info",
    "write_video",
]
