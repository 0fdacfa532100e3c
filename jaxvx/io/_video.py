"""Decode and encode video files with OpenCV's FFmpeg backend.

Files hold uint8 RGB clips ``[T, H, W, 3]``; OpenCV works in BGR, so every read and write swaps the channel order.

Broken input, as measured with opencv-python-headless 5.0 (FFmpeg backend):

- a missing path, a directory, an empty file, a text file named ``.mp4``: OpenCV does not open them;
  :class:`jaxvx.VideoError` names the path and the reason.
- a truncated mp4 whose index (the ``moov`` atom, written at the end by most encoders, OpenCV's included) is cut
  off: FFmpeg cannot open it at all, so :class:`jaxvx.VideoError`.
- a truncated avi (or any container that still opens): FFmpeg decodes the frames before the cut and then stops.
  :func:`read_video` returns that decodable prefix and emits a :class:`TruncatedVideoWarning` saying how many
  frames the container claims and how many were decoded. A file that opens but yields no frame at all raises
  :class:`jaxvx.VideoError`.
"""

from __future__ import annotations

import math
import numbers
import os
import secrets
import warnings
from typing import NamedTuple

import cv2
import numpy as np

from jaxvx._errors import VideoError

__all__ = ["VideoInfo", "TruncatedVideoWarning", "read_video", "video_info", "write_video", "WRITE_EXTENSIONS"]

#: Extensions :func:`write_video` can write, and the FourCC used for each (``lossless=True`` picks FFV1 for .avi).
WRITE_EXTENSIONS = {".mp4": "mp4v", ".avi": "MJPG"}
_LOSSLESS_FOURCC = "FFV1"
_MAX_PREALLOCATED_FRAMES = 4096


class TruncatedVideoWarning(UserWarning):
    """Fewer frames could be decoded than the container claims (a truncated or partly corrupt file)."""


class VideoInfo(NamedTuple):
    """What a video container reports about its stream.

    Attributes
    ----------
    num_frames : int
        Frame count as the container reports it (``CAP_PROP_FRAME_COUNT``); 0 when the container does not know.
        It may differ from the number of decodable frames for truncated or oddly muxed files.
    fps : float
        Frames per second as reported by the container.
    height, width : int
        Size of the decoded frames in pixels (taken from the first decoded frame, so rotation metadata that
        OpenCV applies is accounted for).
    """

    num_frames: int
    fps: float
    height: int
    width: int


def _as_path(path) -> str:
    try:
        return os.fspath(path)
    except TypeError:
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}") from None


def _open(path) -> tuple[str, cv2.VideoCapture]:
    """Check the path and open it with the FFmpeg backend, raising VideoError with the reason on failure."""
    p = _as_path(path)
    if not os.path.exists(p):
        raise VideoError(f"cannot read video {p!r}: no such file")
    if os.path.isdir(p):
        raise VideoError(f"cannot read video {p!r}: it is a directory, not a file")
    if os.path.getsize(p) == 0:
        raise VideoError(f"cannot read video {p!r}: the file is empty (0 bytes)")
    try:
        # CAP_FFMPEG explicitly: the default backend list includes CAP_IMAGES, which reads names with '%' as
        # printf-style image sequences.
        cap = cv2.VideoCapture(p, cv2.CAP_FFMPEG)
    except cv2.error as exc:  # pragma: no cover - OpenCV reports failure through isOpened() in practice
        raise VideoError(f"cannot read video {p!r}: OpenCV raised {exc}") from exc
    if not cap.isOpened():
        cap.release()
        raise VideoError(
            f"cannot read video {p!r}: OpenCV/FFmpeg cannot open it (not a video, an unsupported codec, or a "
            "truncated/corrupt container such as an mp4 whose index is missing)"
        )
    return p, cap


def _reported_count(cap: cv2.VideoCapture) -> int:
    n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(n) if math.isfinite(n) and n > 0 else 0


def _check_max_frames(max_frames):
    if max_frames is None:
        return None
    if isinstance(max_frames, bool) or not isinstance(max_frames, numbers.Integral):
        raise TypeError(f"max_frames must be a positive int or None, got {max_frames!r} ({type(max_frames).__name__})")
    if max_frames < 1:
        raise ValueError(f"max_frames must be a positive int or None, got {max_frames}")
    return int(max_frames)


def read_video(path, *, max_frames: int | None = None) -> np.ndarray:
    """Decode a video file into an RGB uint8 array.

    Parameters
    ----------
    path : str or os.PathLike
        Video file (anything OpenCV's FFmpeg backend decodes: avi, mp4, mkv, mov, webm, ...).
    max_frames : int, optional
        Decode at most this many frames from the start, and stop decoding there (the rest of the file is never
        decoded). Must be a positive int. Default: the whole file.

    Returns
    -------
    np.ndarray
        uint8 ``[T, H, W, 3]``, RGB channel order, ``1 <= T`` (``T <= max_frames`` when given).

    Raises
    ------
    jaxvx.VideoError
        The path is missing, a directory, an empty file, not a decodable video, or no frame can be decoded.
        The message names the path and the reason.
    TypeError, ValueError
        ``max_frames`` is not a positive int.

    Warns
    -----
    TruncatedVideoWarning
        When decoding stops before the frame count the container claims (without ``max_frames`` cutting it
        short): the file is truncated or partly corrupt, and the decodable prefix is returned. A truncated mp4
        whose index is cut off cannot be opened at all and raises :class:`jaxvx.VideoError` instead.
    """
    max_frames = _check_max_frames(max_frames)
    p, cap = _open(path)
    try:
        claimed = _reported_count(cap)
        ok, frame = cap.read()
        if not ok or frame is None:
            raise VideoError(f"cannot read video {p!r}: the file opens but no frame can be decoded")
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise VideoError(
                f"cannot read video {p!r}: OpenCV decoded frames of shape {frame.shape} and dtype {frame.dtype}, "
                "expected [H, W, 3] uint8"
            )
        h, w = frame.shape[:2]
        limit = max_frames if max_frames is not None else math.inf
        # Trust the container's count for the first allocation, within reason (a bogus header must not make us
        # reserve terabytes); grow geometrically if it under-reports.
        capacity = int(min(limit, max(claimed, 1), _MAX_PREALLOCATED_FRAMES))
        out = np.empty((capacity, h, w, 3), dtype=np.uint8)
        cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=out[0])
        t = 1
        while t < limit:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            if frame.shape != (h, w, 3):
                raise VideoError(
                    f"cannot read video {p!r}: frame {t} has shape {frame.shape}, the first frame {(h, w, 3)}"
                )
            if t == out.shape[0]:  # the container under-reported its length (or the cap above): grow
                grown = min(limit, 2 * out.shape[0])
                out = np.concatenate([out, np.empty((int(grown) - out.shape[0], h, w, 3), np.uint8)])
            cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=out[t])
            t += 1
    finally:
        cap.release()
    wanted = min(limit, claimed)
    if claimed and t < wanted:
        warnings.warn(
            f"video {p!r}: decoded only {t} frame(s) but the container claims {claimed}; the file is probably "
            f"truncated or corrupt, returning the {t} decodable frame(s)",
            TruncatedVideoWarning,
            stacklevel=2,
        )
    return out[:t] if t < out.shape[0] else out


def video_info(path) -> VideoInfo:
    """Report a video's frame count, frame rate and frame size.

    Decodes only the first frame (to prove the file is decodable and to get the true frame size).

    Parameters
    ----------
    path : str or os.PathLike
        Video file.

    Returns
    -------
    VideoInfo
        ``(num_frames, fps, height, width)``; ``num_frames`` is the container's claim (0 if unknown), which
        :func:`read_video` may fall short of for truncated files.

    Raises
    ------
    jaxvx.VideoError
        Same conditions as :func:`read_video`.
    """
    p, cap = _open(path)
    try:
        ok, frame = cap.read()
        if not ok or frame is None:
            raise VideoError(f"cannot read video {p!r}: the file opens but no frame can be decoded")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        return VideoInfo(
            num_frames=_reported_count(cap),
            fps=fps if math.isfinite(fps) else 0.0,
            height=int(frame.shape[0]),
            width=int(frame.shape[1]),
        )
    finally:
        cap.release()


def write_video(path, frames, fps: float, *, lossless: bool = False) -> None:
    """Encode an RGB uint8 clip to a video file, atomically.

    The codec follows the extension: ``.mp4`` -> MPEG-4 part 2 (``mp4v``), ``.avi`` -> Motion JPEG (``MJPG``), or
    FFV1 (lossless, bit-exact round trip) when ``lossless=True`` (only with ``.avi``). Lossy codecs measured on a
    smooth test pattern: about 38 dB PSNR (MJPG) and 36 dB (mp4v); noise-like content is far worse.

    The clip is written to a hidden temporary file in the destination folder and renamed into place when complete,
    so an interrupted write never leaves a partial file under ``path``. An existing file at ``path`` is replaced.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; extension ``.mp4`` or ``.avi`` (case-insensitive). Its folder must exist.
    frames : array_like
        uint8 ``[T, H, W, 3]`` RGB, ``T >= 1``; ``H`` and ``W`` must be even (OpenCV's FFmpeg writer silently
        drops the last row/column of odd sizes, even for FFV1).
    fps : float
        Frame rate, finite and > 0.
    lossless : bool
        Use FFV1 in an avi container. Default False.

    Raises
    ------
    TypeError
        ``frames`` is not uint8.
    ValueError
        Bad shape, fps or extension, or ``lossless=True`` with ``.mp4``.
    jaxvx.VideoError
        The destination folder does not exist, the path is a directory, or OpenCV's writer fails.
    """
    p = _as_path(path)
    ext = os.path.splitext(p)[1].lower()
    if ext not in WRITE_EXTENSIONS:
        raise ValueError(
            f"cannot write video {p!r}: extension {ext or '(none)'!r} is not supported; "
            f"supported extensions: {', '.join(sorted(WRITE_EXTENSIONS))}"
        )
    if lossless and ext != ".avi":
        raise ValueError(f"cannot write video {p!r}: lossless=True needs an .avi path (FFV1), got {ext!r}")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise TypeError(f"frames must be uint8 [T, H, W, 3] RGB, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape [T, H, W, 3] (RGB), got shape {frames.shape}")
    t, h, w, _ = frames.shape
    if t < 1 or h < 1 or w < 1:
        raise ValueError(f"frames must have T >= 1 and H, W >= 1, got shape {frames.shape}")
    if h % 2 or w % 2:
        raise ValueError(
            f"frames must have even height and width (OpenCV's writer crops odd sizes), got H={h}, W={w}"
        )
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a finite number > 0, got {fps!r}")
    folder = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(folder):
        raise VideoError(f"cannot write video {p!r}: folder {folder!r} does not exist")
    if os.path.isdir(p):
        raise VideoError(f"cannot write video {p!r}: it is a directory")

    fourcc = _LOSSLESS_FOURCC if lossless else WRITE_EXTENSIONS[ext]
    stem = os.path.basename(p)[: -len(ext)]
    # The temporary name keeps the extension, which tells FFmpeg the container format.
    tmp = os.path.join(folder, f".{stem}.{secrets.token_hex(6)}.tmp{ext}")
    bgr = np.ascontiguousarray(frames[..., ::-1])
    writer = None
    try:
        writer = cv2.VideoWriter(tmp, cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h))
        if not writer.isOpened():
            raise VideoError(f"cannot write video {p!r}: OpenCV's writer did not open (codec {fourcc}, {w}x{h})")
        for frame in bgr:
            writer.write(frame)
        writer.release()
        writer = None
        if not os.path.isfile(tmp) or os.path.getsize(tmp) == 0:
            raise VideoError(f"cannot write video {p!r}: OpenCV's writer produced no data (codec {fourcc})")
        os.replace(tmp, p)
    except BaseException:
        if writer is not None:
            writer.release()
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
