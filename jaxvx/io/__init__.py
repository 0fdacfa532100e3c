"""Video files and model inputs: decode/encode, frame sampling, preprocessing.

- :func:`read_video`, :func:`read_sampled`, :func:`iter_frames`, :func:`video_info`, :func:`write_video`,
  :class:`VideoWriter`: uint8 ``[T, H, W, 3]`` RGB clips to and from files (OpenCV's FFmpeg backend, numpy for
  uncompressed AVI, libx264 for mp4 with imageio-ffmpeg), decoding only the frames asked for; broken files raise
  :class:`jaxvx.VideoError` naming the reason (:func:`path_problem`).
- :func:`snippet_indices`, :func:`snippet_span`, :func:`segment_indices`: which frames form a clip (strided
  snippets with exact rational steps and padding, and how many frames they read; one frame per equal segment);
  :func:`step_fraction`: the exact rational a step is sampled with.
- :func:`preprocess` and :data:`PRESETS`: resize, centre crop and normalise into float32 model input (jittable);
  :func:`input_geometry` (:class:`InputGeometry`): where a raw frame's pixels, boxes, masks and flows land in that
  input; :func:`preprocess_options`: the keywords a preprocessing spec (None, a preset name, a dict) stands for.
"""

from jaxvx.io._geometry import InputGeometry, input_geometry, preprocess_options
from jaxvx.io._preprocess import KINETICS_MEAN, KINETICS_STD, PRESETS, SPORTS1M_MEAN, preprocess
from jaxvx.io._sampling import PAD_MODES, segment_indices, snippet_indices, snippet_span, step_fraction
from jaxvx.io._video import (
    TruncatedVideoWarning,
    VideoInfo,
    iter_frames,
    path_problem,
    read_sampled,
    read_video,
    video_info,
)
from jaxvx.io._writer import WRITE_EXTENSIONS, CodecWarning, VideoWriter, write_video

__all__ = [
    "CodecWarning",
    "InputGeometry",
    "KINETICS_MEAN",
    "KINETICS_STD",
    "PAD_MODES",
    "PRESETS",
    "SPORTS1M_MEAN",
    "TruncatedVideoWarning",
    "VideoInfo",
    "VideoWriter",
    "WRITE_EXTENSIONS",
    "input_geometry",
    "iter_frames",
    "path_problem",
    "preprocess",
    "preprocess_options",
    "read_sampled",
    "read_video",
    "segment_indices",
    "snippet_indices",
    "snippet_span",
    "step_fraction",
    "video_info",
    "write_video",
]
