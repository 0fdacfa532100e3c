"""Which frames of a video make up a model's input clip: snippet (strided) and segment (TSN-style) sampling.

All maths is exact integer/rational arithmetic; the results are int64 index arrays to take frames with
``video[indices]``.
"""

from __future__ import annotations

import numbers
from fractions import Fraction

import numpy as np

from jaxvx._checks import is_int

__all__ = ["snippet_indices", "snippet_span", "segment_indices", "step_fraction", "PAD_MODES", "SEGMENT_POSITIONS"]

PAD_MODES = ("loop", "edge", "error")
SEGMENT_POSITIONS = ("center", "start", "random")
_MAX_DENOMINATOR = 10**6
_INT64_SAFE = 2**62


def _check_int(name: str, value, minimum: int) -> int:
    if not is_int(value):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def step_fraction(step) -> Fraction:
    """The exact rational a snippet step is sampled with: an int, a float (``limit_denominator(10**6)``), a string
    such as ``"1/16"`` or a Fraction; a TypeError or ValueError naming ``step`` for anything else or a step <= 0."""
    kinds = "a positive int, float, str such as '1/16', or fractions.Fraction"
    if isinstance(step, bool):
        raise TypeError(f"step must be {kinds}, got {step!r}")
    if isinstance(step, Fraction):
        frac = step
    elif isinstance(step, numbers.Integral):
        frac = Fraction(int(step))
    elif isinstance(step, numbers.Real):
        x = float(step)
        if not np.isfinite(x):
            raise ValueError(f"step must be a finite number > 0, got {step!r}")
        frac = Fraction(x).limit_denominator(_MAX_DENOMINATOR)
    elif isinstance(step, str):
        try:
            frac = Fraction(step.strip())
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"step must be {kinds}; cannot parse the string {step!r}") from None
        frac = frac.limit_denominator(_MAX_DENOMINATOR)
    else:
        raise TypeError(f"step must be {kinds}, got {type(step).__name__}")
    if frac <= 0:
        rounded = frac == 0 and not isinstance(step, (numbers.Integral, Fraction))
        why = " (it rounds to 0 with denominators <= 10**6)" if rounded else ""
        raise ValueError(f"step must be > 0, got {step!r}{why}")
    return frac


def snippet_indices(num_frames: int, length: int = 16, step=1, offset: int = 0, *, pad: str = "loop") -> np.ndarray:
    """Frame indices of a strided snippet: ``index_i = offset + floor(i * step)`` for ``i = 0 .. length - 1``.

    ``step`` is any positive rational, evaluated exactly: ``step=2`` takes every second frame, ``step=1`` a run
    of consecutive frames, ``step="1/16"`` repeats one frame 16 times (Anders et al. sweep 1/16, 1/8, ..., 32),
    ``step="1/3"`` repeats each frame three times with no floating-point drift.

    Parameters
    ----------
    num_frames : int
        Frames in the video, ``>= 1``.
    length : int
        Snippet length, ``>= 1``. Default 16 (C3D, R(2+1)D).
    step : int, float, str or fractions.Fraction
        Positive stride between sampled frames. Floats are converted with
        ``Fraction(step).limit_denominator(10**6)``, so ``1/3`` is exactly one third; strings go through
        ``Fraction(str)`` ("1/16", "0.25"). Default 1.
    offset : int
        First frame, ``0 <= offset < num_frames``. Default 0.
    pad : {"loop", "edge", "error"}
        What to do past the last frame: "loop" wraps modulo ``num_frames`` (short videos are looped, as in Hiley
        et al.), "edge" repeats the last frame, "error" raises. Default "loop".

    Returns
    -------
    np.ndarray
        int64 ``[length]``, every value in ``[0, num_frames)``. Non-decreasing unless "loop" wrapped.

    Raises
    ------
    ValueError
        Bad arguments, or ``pad="error"`` and the snippet needs a frame past the end (the message names
        num_frames, length, step, offset and the last index needed).
    TypeError
        Arguments of the wrong type.
    """
    num_frames = _check_int("num_frames", num_frames, 1)
    length = _check_int("length", length, 1)
    if not is_int(offset):
        raise TypeError(f"offset must be an int, got {offset!r} ({type(offset).__name__})")
    offset = int(offset)
    if not 0 <= offset < num_frames:
        raise ValueError(f"offset must satisfy 0 <= offset < num_frames={num_frames}, got {offset}")
    frac = step_fraction(step)
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
    p, q = frac.numerator, frac.denominator

    last = offset + ((length - 1) * p) // q
    if last < _INT64_SAFE:
        idx = offset + (np.arange(length, dtype=np.int64) * p) // q
    else:  # astronomically large steps: exact Python integers (length is small in practice)
        idx = np.array([offset + (i * p) // q for i in range(length)], dtype=object)

    if last >= num_frames:
        if pad == "error":
            raise ValueError(
                f"snippet runs past the end of the video: num_frames={num_frames}, length={length}, "
                f"step={frac}, offset={offset} needs frame index {last} (last valid index {num_frames - 1}); "
                "use pad='loop' or pad='edge', a smaller step or offset, or a shorter length"
            )
        if pad == "loop":
            idx = idx % num_frames
        else:
            idx = np.minimum(idx, num_frames - 1)
    return np.asarray(idx, dtype=np.int64)


def snippet_span(length: int = 16, step=1, offset: int = 0) -> int:
    """Frames a snippet reads from the start of a video: ``offset + floor((length - 1) * step) + 1``.

    :func:`snippet_indices` of a video of ``N`` frames equals that of its first ``min(N, span)`` frames (a
    shorter video is padded either way), so decoding ``max_frames=span`` gives the same snippet as decoding all.
    Arguments as :func:`snippet_indices`.
    """
    length = _check_int("length", length, 1)
    offset = _check_int("offset", offset, 0)
    frac = step_fraction(step)
    return offset + ((length - 1) * frac.numerator) // frac.denominator + 1


def segment_indices(num_frames: int, length: int = 16, *, position: str = "center", rng=None) -> np.ndarray:
    """One frame from each of ``length`` equal segments of the video (TSN-style sampling, used by Li et al.).

    Segment ``i`` covers frames ``[floor(i * N / length), floor((i + 1) * N / length))`` with ``N = num_frames``,
    widened to one frame when empty (``N < length``; indices then repeat). The frame taken from segment
    ``[s, e)`` is ``s + (e - s) // 2`` ("center"), ``s`` ("start"), or uniform in ``[s, e)`` ("random").

    Parameters
    ----------
    num_frames : int
        Frames in the video, ``>= 1``.
    length : int
        Number of segments (= frames returned), ``>= 1``. Default 16.
    position : {"center", "start", "random"}
        Which frame of each segment. Default "center".
    rng : numpy.random.Generator, optional
        Required for ``position="random"``; ignored otherwise.

    Returns
    -------
    np.ndarray
        int64 ``[length]``, non-decreasing, every value in ``[0, num_frames)``.
    """
    n = _check_int("num_frames", num_frames, 1)
    length = _check_int("length", length, 1)
    if position not in SEGMENT_POSITIONS:
        raise ValueError(f"position must be one of {SEGMENT_POSITIONS}, got {position!r}")
    if position == "random" and not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"position='random' needs rng, a numpy.random.Generator (np.random.default_rng(seed)), got {rng!r}"
        )
    i = np.arange(length, dtype=np.int64)
    start = (i * n) // length
    end = np.maximum(((i + 1) * n) // length, start + 1)
    if position == "start":
        idx = start
    elif position == "center":
        idx = start + (end - start) // 2
    else:
        idx = start + rng.integers(0, end - start, dtype=np.int64)
    return idx.astype(np.int64)
