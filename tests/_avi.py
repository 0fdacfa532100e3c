"""Uncompressed (DIB) AVI files written byte by byte, for the tests of the formats OpenCV mishandles."""

import struct

import numpy as np


def _chunk(fourcc: bytes, payload: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) % 2)


def _list(kind: bytes, body: bytes) -> bytes:
    return b"LIST" + struct.pack("<I", len(body) + 4) + kind + body


def dib_frame(rgb: np.ndarray, bits: int = 24, bottom_up: bool = True) -> bytes:
    """One DIB: rows of B, G, R(, 0) bytes padded to a multiple of 4, the last image row first when bottom-up."""
    h, w, _ = rgb.shape
    bpp = bits // 8
    stride = (w * bpp + 3) // 4 * 4
    rows = np.zeros((h, stride), np.uint8)
    pixels = np.zeros((h, w, bpp), np.uint8)
    pixels[..., :3] = rgb[..., ::-1]
    rows[:, : w * bpp] = pixels.reshape(h, w * bpp)
    return (rows[::-1] if bottom_up else rows).tobytes()


def dib_avi(frames: np.ndarray, *, fps: int = 25, fourcc=0, bits: int = 24, bottom_up: bool = True) -> bytes:
    """An uncompressed AVI of RGB ``frames`` [T, H, W, 3]: one 'vids' stream, BITMAPINFOHEADER with biHeight > 0
    (bottom-up) or < 0 (top-down), frames as '00db' chunks, an idx1 index."""
    t, h, w, _ = frames.shape
    payloads = [dib_frame(f, bits, bottom_up) for f in frames]
    size = len(payloads[0])
    code = fourcc if isinstance(fourcc, int) else struct.unpack("<I", fourcc)[0]
    avih = struct.pack("<14I", 1_000_000 // fps, size * fps, 0, 0x10, t, 0, 1, size, w, h, 0, 0, 0, 0)
    strh = b"vids" + struct.pack("<IIHHIIIIIIIIhhhh", code, 0, 0, 0, 0, 1, fps, 0, t, size, 0xFFFFFFFF, 0,
                                 0, 0, w, h)
    strf = struct.pack("<IiiHHIIiiII", 40, w, h if bottom_up else -h, 1, bits, code, size, 0, 0, 0, 0)
    hdrl = _list(b"hdrl", _chunk(b"avih", avih) + _list(b"strl", _chunk(b"strh", strh) + _chunk(b"strf", strf)))
    movi = _list(b"movi", b"".join(_chunk(b"00db", p) for p in payloads))
    offsets = 4 + np.cumsum([0] + [8 + len(p) + len(p) % 2 for p in payloads[:-1]])
    idx1 = _chunk(b"idx1", b"".join(struct.pack("<4sIII", b"00db", 0x10, int(o), size) for o in offsets))
    body = b"AVI " + hdrl + movi + idx1
    return b"RIFF" + struct.pack("<I", len(body)) + body
