"""Dense optical flow with OpenCV's Farneback algorithm, for motion precision on videos without true motion."""

from __future__ import annotations

import cv2
import numpy as np

from jaxvx._checks import check_int

__all__ = ["farneback", "FARNEBACK_DEFAULTS", "PAD_MODES"]

#: Parameters of ``cv2.calcOpticalFlowFarneback`` used by :func:`farneback` (OpenCV's sample values, good for
#: 100-300 px frames): see :func:`farneback` for what each means.
FARNEBACK_DEFAULTS = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
PAD_MODES = ("repeat", "zeros", "none")


def _gray(frames: np.ndarray) -> np.ndarray:
    if frames.dtype != np.uint8:
        if not np.issubdtype(frames.dtype, np.floating):
            raise ValueError(f"frames must be uint8 or float in [0, 255], got {frames.dtype}")
        frames = np.clip(np.round(frames), 0, 255).astype(np.uint8)
    if frames.shape[-1] == 3:
        t, h, w, _ = frames.shape
        return cv2.cvtColor(np.ascontiguousarray(frames.reshape(t * h, w, 3)), cv2.COLOR_RGB2GRAY).reshape(t, h, w)
    return frames[..., 0]


def farneback(frames, *, pyr_scale: float = 0.5, levels: int = 3, winsize: int = 15, iterations: int = 3,
              poly_n: int = 5, poly_sigma: float = 1.2, flags: int = 0, pad: str = "repeat") -> np.ndarray:
    """Forward optical flow ``(dx, dy)`` from each frame to the next (Farneback, ``cv2.calcOpticalFlowFarneback``).

    Frames are converted to 8-bit grayscale (``cv2.COLOR_RGB2GRAY``) and every consecutive pair ``(t, t + 1)`` gives
    ``flow[t]``, in pixels: the point at ``(x, y)`` in frame ``t`` is at ``(x + dx, y + dy)`` in frame ``t + 1``
    (the convention of the synthetic benchmark's true ``flow``). OpenCV is called once per pair, on the host.

    Args:
        frames: ``[..., T, H, W, 3]`` RGB (or ``[..., T, H, W, 1]`` grayscale), uint8 or float in [0, 255]; any
            leading batch axes; ``T >= 2``.
        pyr_scale: scale between pyramid levels (< 1; 0.5 halves the frame at each level). Default 0.5.
        levels: number of pyramid levels including the frame itself (1: no pyramid). Default 3.
        winsize: averaging window size in pixels; larger is more robust to noise and finds faster motion, but blurs
            the motion field. Default 15.
        iterations: iterations of the algorithm at each pyramid level. Default 3.
        poly_n: neighbourhood size of the per-pixel polynomial expansion (5 or 7). Default 5.
        poly_sigma: std of the Gaussian weighting of that expansion (1.1 for poly_n 5, 1.5 for 7). Default 1.2.
        flags: OpenCV flags (``cv2.OPTFLOW_FARNEBACK_GAUSSIAN`` for a Gaussian window). Default 0 (box window).
        pad: the last frame has no successor: ``"repeat"`` (default) gives it the flow of the pair before it,
            ``"zeros"`` zero flow, ``"none"`` returns ``T - 1`` flows.

    Returns:
        float32 ``[..., T, H, W, 2]`` (``[..., T - 1, H, W, 2]`` with ``pad="none"``).
    """
    frames = np.asarray(frames)
    if frames.ndim < 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"frames must be [..., T, H, W, 3] (or 1 channel), got shape {frames.shape}")
    if frames.shape[-4] < 2:
        raise ValueError(f"frames must hold T >= 2 frames for a flow, got shape {frames.shape}")
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
    if not 0 < float(pyr_scale) < 1:
        raise ValueError(f"pyr_scale must be in (0, 1), got {pyr_scale!r}")
    for name, value, low in (("levels", levels, 1), ("winsize", winsize, 1), ("iterations", iterations, 1),
                             ("poly_n", poly_n, 1)):
        check_int(name, value, low)
    lead = frames.shape[:-4]
    clips = frames.reshape((-1,) + frames.shape[-4:])
    out = []
    for clip in clips:
        gray = _gray(clip)
        pairs = [
            cv2.calcOpticalFlowFarneback(gray[i], gray[i + 1], None, float(pyr_scale), int(levels), int(winsize),
                                         int(iterations), int(poly_n), float(poly_sigma), int(flags))
            for i in range(gray.shape[0] - 1)
        ]
        flow = np.stack(pairs).astype(np.float32)
        if pad == "repeat":
            flow = np.concatenate([flow, flow[-1:]])
        elif pad == "zeros":
            flow = np.concatenate([flow, np.zeros_like(flow[-1:])])
        out.append(flow)
    result = np.stack(out)
    return result.reshape(lead + result.shape[1:])
