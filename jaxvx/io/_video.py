"""Decode video files: OpenCV's FFmpeg backend, numpy for uncompressed AVI (writing: :mod:`jaxvx.io._writer`).

Files hold uint8 RGB clips ``[T, H, W, 3]``; OpenCV and the DIB frames of uncompressed AVI store BGR, so every
read swaps the channel order.

Decoding, as measured with opencv-python-headless 5.0 (FFmpeg backend):

- a path that is not a readable regular file (missing, a directory, a FIFO, a socket or device, a dangling
  symbolic link or a link loop, unreadable for this user, or empty): :class:`jaxvx.VideoError` names the path and
  which of these it is, before OpenCV sees it (opening a FIFO would block until something writes to it, and
  OpenCV reports all of them alike).
- an uncompressed (DIB) AVI: OpenCV corrupts its heap on bottom-up 24-bit frames and the process aborts, so these
  files are read with numpy (:mod:`jaxvx.io._avi`), bit-exactly.
- a text file named ``.mp4``, an mp4 whose index (the ``moov`` atom, written at the end by most encoders) is cut
  off: FFmpeg cannot open it, so :class:`jaxvx.VideoError`.
- a truncated avi (or any container that still opens): FFmpeg decodes the frames before the cut and then stops.
  :func:`read_video` returns that decodable prefix and emits a :class:`TruncatedVideoWarning` saying how many
  frames the container claims and how many were decoded. A file that opens but yields no frame at all raises
  :class:`jaxvx.VideoError`.

Only the frames asked for are kept: :func:`read_video` with ``max_frames`` or ``indices`` and :func:`read_sampled`
stop at the last frame needed and skip the others without converting or storing them, so memory is that of the
returned frames whatever the file's length.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import warnings
from collections.abc import Iterator
from typing import NamedTuple

import cv2
import numpy as np

from jaxvx._checks import is_int
from jaxvx._errors import VideoError
from jaxvx.io._avi import dib_layout, read_dib_frame

__all__ = ["VideoInfo", "TruncatedVideoWarning", "iter_frames", "read_video", "read_sampled", "video_info",
           "path_problem"]

_MAX_PREALLOCATED_FRAMES = 4096


class TruncatedVideoWarning(UserWarning):
    """Fewer frames could be decoded than the container claims (a truncated or partly corrupt file)."""


class VideoInfo(NamedTuple):
    """What a video container reports about its stream.

    Attributes
    ----------
    num_frames : int
        Frame count as the container reports it (``CAP_PROP_FRAME_COUNT``; an uncompressed AVI's frame chunks);
        0 when the container does not know. It may differ from the number of decodable frames for truncated or
        oddly muxed files.
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


# ---------------------------------------------------------------------------------------------------- path checks
def _stat_problem(path: str, err: OSError) -> str:
    """Why ``os.stat(path)`` failed, in words (``err`` is what it raised)."""
    if err.errno == errno.ELOOP:
        return "a symbolic link loop (following its links leads back to itself)"
    if isinstance(err, FileNotFoundError):
        if os.path.islink(path):
            return f"a dangling symbolic link (its target {os.readlink(path)!r} does not exist)"
        return "no such file"
    if isinstance(err, PermissionError):
        return "permission denied: a folder on its path cannot be searched by this user"
    if err.errno == errno.ENOTDIR:
        return "no such file (a part of its path is a file, not a folder)"
    return f"cannot look it up: {err.strerror or err}"


def _mode_problem(st: os.stat_result) -> str | None:
    """Why a file with this ``stat`` cannot be a video (not a regular file, or empty), or None."""
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return "it is a directory, not a file"
    if stat.S_ISFIFO(mode):
        return "it is a FIFO (named pipe), not a regular file"
    if stat.S_ISSOCK(mode):
        return "it is a socket, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "it is a device, not a regular file"
    if not stat.S_ISREG(mode):
        return "it is not a regular file"
    if st.st_size == 0:
        return "the file is empty (0 bytes)"
    return None


def _readable(path: str) -> bool:
    """Whether this process may open ``path`` for reading (checked by opening it, so root's rights count)."""
    try:
        os.close(os.open(path, os.O_RDONLY))
    except PermissionError:
        return False
    return True


def path_problem(path) -> str | None:
    """Why ``path`` cannot be read as a video file, or None when it is a readable, non-empty regular file.

    The reasons: "no such file", a dangling symbolic link (naming its target), a symbolic link loop, a folder on
    the path that cannot be searched, a directory, a FIFO, a socket, a device, an empty file, a file this user
    may not read. Nothing is opened but the file itself (a FIFO is recognised without opening it, which would
    block).
    """
    p = _as_path(path)
    try:
        st = os.stat(p)
    except OSError as err:
        return _stat_problem(p, err)
    problem = _mode_problem(st)
    if problem is None and not _readable(p):
        problem = "permission denied: this user may not read the file"
    return problem


# ---------------------------------------------------------------------------------------------------- readers
class _CvReader:
    """Frames through OpenCV's FFmpeg backend: ``skip`` demuxes and decodes one frame without converting it."""

    def __init__(self, path: str, cap: cv2.VideoCapture):
        self.path, self.cap = path, cap
        n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.claimed = int(n) if math.isfinite(n) and n > 0 else 0
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        self.fps = fps if math.isfinite(fps) else 0.0

    def skip(self) -> bool:
        return bool(self.cap.grab())

    def read(self) -> np.ndarray | None:
        """The next frame, uint8 ``[H, W, 3]`` RGB, or None at the end."""
        ok, frame = self.cap.read()
        if not ok or frame is None:
            return None
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise VideoError(f"cannot read video {self.path!r}: OpenCV decoded frames of shape {frame.shape} and "
                             f"dtype {frame.dtype}, expected [H, W, 3] uint8")
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self.cap.release()


class _DibReader:
    """Frames of an uncompressed AVI read with numpy; ``skip`` reads nothing."""

    def __init__(self, path: str, layout):
        self.layout, self.fh, self.t = layout, open(path, "rb"), 0
        self.claimed = max(layout.claimed, len(layout.offsets))
        self.fps = layout.fps

    def skip(self) -> bool:
        self.t += 1
        return self.t <= len(self.layout.offsets)

    def read(self) -> np.ndarray | None:
        if self.t >= len(self.layout.offsets):
            return None
        frame = np.empty((self.layout.height, self.layout.width, 3), np.uint8)
        read_dib_frame(self.fh, self.layout, self.t, frame)
        self.t += 1
        return frame

    def close(self) -> None:
        self.fh.close()


def _open(path):
    """Check the path and open a reader for it, raising VideoError with the reason on failure."""
    p = _as_path(path)
    problem = path_problem(p)
    if problem is not None:
        raise VideoError(f"cannot read video {p!r}: {problem}")
    try:
        layout = dib_layout(p)
    except OSError as err:
        raise VideoError(f"cannot read video {p!r}: {err.strerror or err}") from err
    if layout is not None:
        return p, _DibReader(p, layout)
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
    return p, _CvReader(p, cap)


def _check_max_frames(max_frames):
    if max_frames is None:
        return None
    if not is_int(max_frames):
        raise TypeError(f"max_frames must be a positive int or None, got {max_frames!r} ({type(max_frames).__name__})")
    if max_frames < 1:
        raise ValueError(f"max_frames must be a positive int or None, got {max_frames}")
    return int(max_frames)


def _check_indices(indices, name: str = "indices") -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0 or not (np.issubdtype(idx.dtype, np.integer) or idx.dtype == object):
        raise ValueError(f"{name} must be a non-empty 1-D array of ints, got shape {idx.shape} dtype {idx.dtype}")
    idx = idx.astype(np.int64)
    if idx.min() < 0:
        raise ValueError(f"{name} must be >= 0, got {int(idx.min())}")
    return idx


def _first_frame(p: str, reader) -> np.ndarray:
    frame = reader.read()
    if frame is None:
        raise VideoError(f"cannot read video {p!r}: the file opens but no frame can be decoded")
    return frame


def _checked(p: str, frame: np.ndarray, t: int, shape: tuple) -> np.ndarray:
    if frame.shape != shape:
        raise VideoError(f"cannot read video {p!r}: frame {t} has shape {frame.shape}, the first frame {shape}")
    return frame


def _read_prefix(p: str, reader, limit: float) -> np.ndarray:
    """Frames ``0 .. min(limit, decodable) - 1`` as uint8 ``[T, H, W, 3]``, warning when the file falls short."""
    first = _first_frame(p, reader)
    # Trust the container's count for the first allocation, within reason (a bogus header must not make us reserve
    # terabytes); grow geometrically if it under-reports.
    capacity = int(min(limit, max(reader.claimed, 1), _MAX_PREALLOCATED_FRAMES))
    out = np.empty((capacity, *first.shape), dtype=np.uint8)
    out[0] = first
    t = 1
    while t < limit:
        frame = reader.read()
        if frame is None:
            break
        if t == out.shape[0]:  # the container under-reported its length (or the cap above): grow
            grown = min(limit, 2 * out.shape[0])
            out = np.concatenate([out, np.empty((int(grown) - out.shape[0], *first.shape), np.uint8)])
        out[t] = _checked(p, frame, t, first.shape)
        t += 1
    _warn_if_short(p, t, min(limit, reader.claimed), reader.claimed)
    return out[:t] if t < out.shape[0] else out


def _read_at(p: str, reader, idx: np.ndarray) -> tuple[np.ndarray | None, int]:
    """``(frames[idx], last + 1)`` reading frames ``0 .. last = max(idx)`` once each and keeping those in ``idx``;
    ``(None, n)`` when only ``n <= last`` frames can be decoded."""
    positions = {int(t): np.flatnonzero(idx == t) for t in np.unique(idx)}
    last = int(idx.max())
    out = None
    for t in range(last + 1):
        if t not in positions:
            if not reader.skip():
                return None, t
            continue
        frame = reader.read()
        if frame is None:
            return None, t
        if out is None:
            out = np.empty((len(idx), *frame.shape), np.uint8)
        out[positions[t]] = _checked(p, frame, t, out.shape[1:])
    return out, last + 1


def _warn_if_short(p: str, decoded: int, wanted: float, claimed: int) -> None:
    if claimed and decoded < wanted:
        warnings.warn(
            f"video {p!r}: decoded only {decoded} frame(s) but the container claims {claimed}; the file is probably "
            f"truncated or corrupt, returning the {decoded} decodable frame(s)",
            TruncatedVideoWarning,
            stacklevel=3,
        )


def read_video(path, *, max_frames: int | None = None, indices=None) -> np.ndarray:
    """Decode a video file into an RGB uint8 array: all of it, a prefix, or chosen frames.

    Parameters
    ----------
    path : str or os.PathLike
        Video file (anything OpenCV's FFmpeg backend decodes: avi, mp4, mkv, mov, webm, ...; uncompressed AVI
        is read with numpy).
    max_frames : int, optional
        Decode at most this many frames from the start, and stop decoding there (the rest of the file is never
        decoded). Must be a positive int. Default: the whole file.
    indices : array_like of int, optional
        ``[K]`` frame numbers (any order, repeats allowed): returns ``video[indices]``, decoding frames
        ``0 .. max(indices)`` once each, keeping only those listed and stopping after the last. Not together
        with ``max_frames``.

    Returns
    -------
    np.ndarray
        uint8 ``[T, H, W, 3]``, RGB channel order, ``1 <= T`` (``T <= max_frames`` when given; ``T = K`` with
        ``indices``).

    Raises
    ------
    jaxvx.VideoError
        The path is not a readable non-empty regular file (see :func:`path_problem`), not a decodable video, no
        frame can be decoded, or an index is past the last decodable frame. The message names the path and the
        reason.
    TypeError, ValueError
        ``max_frames`` is not a positive int, ``indices`` not a non-empty 1-D array of ints >= 0, or both given.

    Warns
    -----
    TruncatedVideoWarning
        When decoding stops before the frame count the container claims (without ``max_frames`` cutting it
        short): the file is truncated or partly corrupt, and the decodable prefix is returned. A truncated mp4
        whose index is cut off cannot be opened at all and raises :class:`jaxvx.VideoError` instead.
    """
    max_frames = _check_max_frames(max_frames)
    if indices is not None and max_frames is not None:
        raise ValueError(f"max_frames and indices: give at most one, got max_frames={max_frames} and indices")
    idx = None if indices is None else _check_indices(indices)
    p, reader = _open(path)
    try:
        if idx is None:
            return _read_prefix(p, reader, max_frames if max_frames is not None else math.inf)
        out, n = _read_at(p, reader, idx)
    finally:
        reader.close()
    if out is None:
        raise VideoError(f"cannot read video {p!r}: frame {int(idx.max())} was asked for but only {n} frame(s) "
                         f"can be decoded (the container claims {reader.claimed or 'no count'})")
    return out


def _count_frames(path: str) -> int:
    """Decodable frames of a file, counted by decoding without keeping any."""
    p, reader = _open(path)
    try:
        n = 0
        while reader.skip():
            n += 1
        return n
    finally:
        reader.close()


def _sampled_indices(sample, num_frames: int, p: str) -> np.ndarray:
    return _check_indices(sample(num_frames), f"sample({num_frames}) for {p!r}")


def read_sampled(path, sample) -> tuple[np.ndarray, np.ndarray]:
    """Decode only the frames a sampling rule picks: ``video[sample(N)]`` with ``N`` the file's frame count.

    ``N`` is the container's count when it gives one; when the file holds fewer decodable frames (truncated) or
    gives no count, the decodable frames are counted (decoding without keeping them) and ``sample`` is applied
    to that count. Frames after the last one picked are never decoded, and only picked frames are kept.

    Parameters
    ----------
    path : str or os.PathLike
        Video file.
    sample : callable
        ``sample(num_frames) -> int [K]`` frame numbers in ``[0, num_frames)``, e.g.
        ``functools.partial(snippet_indices, length=16)``.

    Returns
    -------
    (np.ndarray, np.ndarray)
        uint8 ``[K, H, W, 3]`` RGB frames and the int64 ``[K]`` indices they are at.

    Raises
    ------
    jaxvx.VideoError
        As :func:`read_video`.

    Warns
    -----
    TruncatedVideoWarning
        The file holds fewer decodable frames than the container claims.
    """
    p, reader = _open(path)
    try:
        claimed = reader.claimed
        idx = _sampled_indices(sample, claimed, p) if claimed else None
        out, n = (None, 0) if idx is None else _read_at(p, reader, idx)
    finally:
        reader.close()
    if out is not None:
        return out, idx
    n = _count_frames(p) if idx is None else n
    if n == 0:
        raise VideoError(f"cannot read video {p!r}: the file opens but no frame can be decoded")
    _warn_if_short(p, n, claimed, claimed)
    idx = _sampled_indices(sample, n, p)
    return read_video(p, indices=idx), idx


def iter_frames(path) -> Iterator[np.ndarray]:
    """The frames of a video file one at a time, each uint8 ``[H, W, 3]`` RGB, holding one frame at a time.

    The file is checked and opened at the call (errors as :func:`read_video`), decoded as the iterator advances,
    and closed when it is exhausted or closed. Uncompressed AVI is read with numpy, as by :func:`read_video`.
    """
    p, reader = _open(path)
    return _frames(p, reader)


def _frames(p: str, reader) -> Iterator[np.ndarray]:
    try:
        first = _first_frame(p, reader)
        yield first
        t = 1
        while (frame := reader.read()) is not None:
            yield _checked(p, frame, t, first.shape)
            t += 1
    finally:
        reader.close()


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
    p, reader = _open(path)
    try:
        frame = _first_frame(p, reader)
        return VideoInfo(num_frames=reader.claimed, fps=reader.fps, height=int(frame.shape[0]),
                         width=int(frame.shape[1]))
    finally:
        reader.close()
