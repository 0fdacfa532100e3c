"""Uncompressed (DIB) AVI files read with numpy: the layout OpenCV's FFmpeg backend mishandles.

An uncompressed AVI stores each frame as a Windows DIB: ``H`` rows of ``W`` pixels, 3 bytes (B, G, R) or 4
(B, G, R, unused) each, every row padded to ``stride = 4 * ceil(W * bytes / 4)`` bytes. With ``biHeight > 0``
(the usual layout) the rows are stored bottom-up, the last image row first; with ``biHeight < 0`` top-down.
opencv-python-headless 5.0 corrupts its heap decoding bottom-up 24-bit frames (the process aborts with SIGABRT or
SIGSEGV), and cannot open ``'DIB '`` FourCCs at all, so :func:`jaxvx.io.read_video` reads these files here.

The RIFF layout read (little-endian; chunk = FourCC, uint32 size, data padded to an even size)::

    RIFF 'AVI ' { LIST 'hdrl' { avih, LIST 'strl' { strh ('vids', ...), strf (BITMAPINFOHEADER) } ... },
                  LIST 'movi' { NNdb | NNdc | LIST 'rec ' {...} ... }, idx1 }
    RIFF 'AVIX' { LIST 'movi' {...} } ...          (OpenDML files over 1 GB)

Frames are the ``NNdb`` / ``NNdc`` chunks of video stream ``NN``, in file order; an empty one repeats the
previous frame (a dropped frame). The index (``idx1``) is not needed.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

import numpy as np

from jaxvx._errors import VideoError

#: biCompression values of uncompressed frames: BI_RGB (0) and the FourCCs encoders write for it.
_UNCOMPRESSED = (0, *(struct.unpack("<I", c)[0] for c in (b"DIB ", b"RGB ", b"raw ")))
_BYTES_PER_PIXEL = {24: 3, 32: 4}
_EMPTY = -1  # offset of an empty frame chunk: repeat the previous frame


class DibLayout(NamedTuple):
    """Where an uncompressed AVI's frames are and how their bytes map to pixels.

    Attributes
    ----------
    width, height : int
        Frame size in pixels.
    bits : int
        Bits per pixel (24 or 32 are decoded).
    bottom_up : bool
        Rows stored last image row first (``biHeight > 0``).
    fps : float
        ``dwRate / dwScale`` of the stream header (0 when unset).
    offsets : tuple of int
        File offset of each frame's data, in frame order (``-1``: an empty chunk, the previous frame again).
    truncated : bool
        The file ends inside a frame chunk (the frames before it are in ``offsets``).
    claimed : int
        Frame count of the stream header (``dwLength``).
    """

    width: int
    height: int
    bits: int
    bottom_up: bool
    fps: float
    offsets: tuple
    truncated: bool
    claimed: int

    @property
    def stride(self) -> int:
        """Bytes per stored row: ``4 * ceil(width * bits / 32)``."""
        return (self.width * self.bits + 31) // 32 * 4


def _chunks(fh, start: int, end: int):
    """Yield ``(fourcc, data_offset, size, list_type)`` of the chunks in ``[start, end)`` of an open file;
    ``list_type`` is the 4-byte type of a ``RIFF`` / ``LIST`` chunk, else ``None``. A chunk whose data runs past
    ``end`` is yielded too (the caller sees the truncation); a header cut off ends the walk."""
    pos = start
    while pos + 8 <= end:
        fh.seek(pos)
        head = fh.read(12)
        if len(head) < 8:
            return
        fourcc, size = head[:4], struct.unpack("<I", head[4:8])[0]
        list_type = head[8:12] if fourcc in (b"RIFF", b"LIST") and len(head) == 12 else None
        yield fourcc, pos + 8, size, list_type
        pos += 8 + size + (size & 1)


def _video_stream(fh, hdrl_start: int, hdrl_end: int):
    """``(stream number, strh bytes, strf bytes)`` of the first 'vids' stream in ``hdrl``, or None."""
    number = 0
    for fourcc, off, size, kind in _chunks(fh, hdrl_start, hdrl_end):
        if fourcc != b"LIST" or kind != b"strl":
            continue
        parts = {}
        for sub, sub_off, sub_size, _ in _chunks(fh, off + 4, off + size):
            if sub in (b"strh", b"strf"):
                fh.seek(sub_off)
                parts[sub] = fh.read(sub_size)
        strh = parts.get(b"strh", b"")
        if strh[:4] == b"vids" and len(parts.get(b"strf", b"")) >= 40 and len(strh) >= 36:
            return number, strh, parts[b"strf"]
        number += 1
    return None


def _frame_offsets(fh, movi_start: int, movi_end: int, ids: tuple, frame_bytes: int, file_end: int):
    """Data offsets of the frame chunks (``ids``) in a ``movi`` list, descending into ``LIST 'rec '``; the
    second value says whether the file ends inside a frame."""
    offsets = []
    for fourcc, off, size, kind in _chunks(fh, movi_start, movi_end):
        if fourcc == b"LIST" and kind == b"rec ":
            inner, cut = _frame_offsets(fh, off + 4, min(off + size, file_end), ids, frame_bytes, file_end)
            offsets += inner
            if cut:
                return offsets, True
        elif fourcc in ids:
            if size == 0:
                offsets.append(_EMPTY)
            elif size < frame_bytes or off + frame_bytes > file_end:
                return offsets, True
            else:
                offsets.append(off)
    return offsets, False


def dib_layout(path: str) -> DibLayout | None:
    """The frame layout of an uncompressed-video AVI, or None for any other file (left to OpenCV).

    Raises
    ------
    jaxvx.VideoError
        An uncompressed AVI with a bit depth other than 24 or 32 (palettised or 16-bit frames), or with a
        non-positive width or zero height.
    """
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
            return None
        file_end = fh.seek(0, os.SEEK_END)
        segments = [(off, min(off + size, file_end)) for fourcc, off, size, kind in _chunks(fh, 0, file_end)
                    if fourcc == b"RIFF" and kind in (b"AVI ", b"AVIX")]
        first = segments[0]
        hdrl = next(((off + 4, min(off + size, file_end)) for fourcc, off, size, kind
                     in _chunks(fh, first[0] + 4, first[1]) if fourcc == b"LIST" and kind == b"hdrl"), None)
        stream = None if hdrl is None else _video_stream(fh, *hdrl)
        if stream is None:
            return None
        number, strh, strf = stream
        _, width, height, _, bits, compression = struct.unpack("<IiiHHI", strf[:20])
        if compression not in _UNCOMPRESSED:
            return None
        if bits not in _BYTES_PER_PIXEL or width <= 0 or height == 0:
            raise VideoError(f"cannot read video {path!r}: an uncompressed AVI with {bits}-bit frames of "
                             f"{width} x {abs(height)} pixels; only 24- and 32-bit frames of positive size are read")
        scale, rate = struct.unpack("<II", strh[20:28])
        claimed = struct.unpack("<I", strh[32:36])[0]
        stride = (width * bits + 31) // 32 * 4
        ids = (b"%02ddb" % number, b"%02ddc" % number)
        offsets, truncated = [], False
        for seg_start, seg_end in segments:
            for fourcc, off, size, kind in _chunks(fh, seg_start + 4, seg_end):
                if fourcc == b"LIST" and kind == b"movi" and not truncated:
                    found, truncated = _frame_offsets(fh, off + 4, min(off + size, file_end), ids,
                                                      stride * abs(height), file_end)
                    offsets += found
    while offsets and offsets[0] == _EMPTY:  # an empty first chunk has no previous frame to repeat
        offsets.pop(0)
    return DibLayout(width, abs(height), bits, height > 0, rate / scale if scale else 0.0, tuple(offsets),
                     truncated, claimed)


def read_dib_frame(fh, layout: DibLayout, index: int, dst: np.ndarray) -> None:
    """Decode frame ``index`` of an open uncompressed AVI into ``dst`` (uint8 ``[H, W, 3]`` RGB).

    Pixel ``(y, x)`` of the image is stored in row ``H - 1 - y`` (bottom-up) or ``y`` (top-down), at bytes
    ``[x * b, x * b + 3)`` of that row as B, G, R, with ``b`` = 3 or 4 bytes per pixel.
    """
    while layout.offsets[index] == _EMPTY:
        index -= 1
    fh.seek(layout.offsets[index])
    rows = np.frombuffer(fh.read(layout.stride * layout.height), np.uint8).reshape(layout.height, layout.stride)
    pixels = rows[:, : layout.width * _BYTES_PER_PIXEL[layout.bits]].reshape(layout.height, layout.width, -1)
    dst[...] = pixels[::-1 if layout.bottom_up else 1, :, 2::-1]
