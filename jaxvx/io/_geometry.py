"""Where a raw frame's pixels land in a model's input: the resize and crop of :func:`jaxvx.io.preprocess` as a record.

Preprocessing an ``h x w`` frame resizes it to ``rh x rw`` and crops rows ``[top, top + ch)`` and columns
``[left, left + cw)``; :class:`InputGeometry` holds those numbers and carries ground truth along the same way:
boxes ``(x_min, y_min, x_max, y_max)`` (max inclusive) to every output pixel they overlap, masks ``[T, h, w, ...]``
by nearest-neighbour sampling (output pixel ``(i, j)`` takes raw pixel ``(floor((i + top + 1/2) h / rh),
floor((j + left + 1/2) w / rw))``), flows ``[T, h, w, 2]`` sampled so and scaled by ``(rw / w, rh / h)``.
:func:`input_geometry` resolves the options with :func:`preprocess`'s own code, so the two agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from jaxvx._checks import check_int
from jaxvx.io._preprocess import _layout, _resolve

__all__ = ["InputGeometry", "input_geometry", "preprocess_options"]

#: The keywords of :func:`jaxvx.io.preprocess` that decide the geometry (the others, ``mean`` and ``std``, do not).
_GEOMETRY_KEYS = ("size", "resize", "short_side", "resize_to", "crop", "preset")
_KEYS = _GEOMETRY_KEYS + ("mean", "std")


@dataclasses.dataclass(frozen=True)
class InputGeometry:
    """How preprocessing maps a raw ``h x w`` frame onto the model's ``ch x cw`` grid.

    Attributes:
        h, w: the raw frame's height and width.
        rh, rw: the frame's height and width after the resize.
        top, left: the crop's first row and column in the resized frame.
        ch, cw: the crop's (the model input's) height and width.
    """

    h: int
    w: int
    rh: int
    rw: int
    top: int
    left: int
    ch: int
    cw: int

    @property
    def identity(self) -> bool:
        """Whether the model sees the raw frame's pixels where they are (no resize, no crop)."""
        return (self.rh, self.rw, self.top, self.left, self.ch, self.cw) == (self.h, self.w, 0, 0, self.h, self.w)

    def boxes(self, boxes: np.ndarray) -> np.ndarray:
        """float32 ``[..., 4]`` boxes ``(x_min, y_min, x_max, y_max)`` (max inclusive) on the output grid: every
        output pixel that overlaps the box's pixels; ``-1`` rows stay and boxes cropped away become ``-1``."""
        boxes = np.asarray(boxes, dtype=np.float64)
        if self.identity:
            return boxes.astype(np.float32)
        sx, sy = self.rw / self.w, self.rh / self.h
        x0 = np.floor(boxes[..., 0] * sx) - self.left
        y0 = np.floor(boxes[..., 1] * sy) - self.top
        x1 = np.ceil((boxes[..., 2] + 1) * sx) - 1 - self.left
        y1 = np.ceil((boxes[..., 3] + 1) * sy) - 1 - self.top
        absent = (boxes[..., 0] < 0) | (x1 < 0) | (y1 < 0) | (x0 > self.cw - 1) | (y0 > self.ch - 1)
        out = np.stack([np.clip(x0, 0, self.cw - 1), np.clip(y0, 0, self.ch - 1),
                        np.clip(x1, 0, self.cw - 1), np.clip(y1, 0, self.ch - 1)], axis=-1)
        out[absent] = -1
        return out.astype(np.float32)

    def _src(self):
        ys = np.clip(np.floor((np.arange(self.ch) + self.top + 0.5) * self.h / self.rh), 0, self.h - 1).astype(int)
        xs = np.clip(np.floor((np.arange(self.cw) + self.left + 0.5) * self.w / self.rw), 0, self.w - 1).astype(int)
        return ys, xs

    def grid(self, arr: np.ndarray) -> np.ndarray:
        """``[T, h, w, ...]`` to ``[T, ch, cw, ...]`` by nearest-neighbour sampling (masks, flows)."""
        if self.identity:
            return arr
        ys, xs = self._src()
        return arr[:, ys][:, :, xs]

    def flow(self, flow: np.ndarray) -> np.ndarray:
        """A flow ``[T, h, w, 2]`` (``dx, dy``) in raw pixels to ``[T, ch, cw, 2]`` in output pixels."""
        if self.identity:
            return flow
        scale = np.array([self.rw / self.w, self.rh / self.h], dtype=np.float32)
        return self.grid(flow) * scale


def preprocess_options(preprocess=None) -> dict:
    """The keywords of :func:`jaxvx.io.preprocess` that ``preprocess`` stands for: ``None`` is no resize or crop
    (``x / 255``), a string a preset of :data:`jaxvx.io.PRESETS` (``{"preset": name}``), a dict itself (copied)."""
    if preprocess is None:
        return {"resize": "none", "crop": "none", "size": None}
    if isinstance(preprocess, str):
        return {"preset": preprocess}
    if isinstance(preprocess, Mapping):
        return dict(preprocess)
    raise TypeError(f"preprocess must be None, a preset name or a dict of jaxvx.io.preprocess keywords, got "
                    f"{type(preprocess).__name__}")


def input_geometry(height: int, width: int, preprocess=None) -> InputGeometry:
    """The :class:`InputGeometry` of an ``height x width`` frame under ``preprocess`` (as :func:`preprocess_options`
    reads it: None, a preset name, or a dict of :func:`jaxvx.io.preprocess` keywords).

    Raises:
        ValueError: a size that is not an int >= 1, an unknown keyword, or options :func:`jaxvx.io.preprocess`
            refuses for such a frame (named as it names them).
    """
    h, w = check_int("height", height, 1), check_int("width", width, 1)
    opts = preprocess_options(preprocess)
    unknown = sorted(set(opts) - set(_KEYS))
    if unknown:
        raise ValueError(f"preprocess: unknown keywords {unknown}; jaxvx.io.preprocess takes {list(_KEYS)}")
    given = {k: v for k, v in opts.items() if k != "preset"}
    (rh, rw), (top, left, ch, cw) = _layout(h, w, _resolve(given, opts.get("preset")),
                                             short_side_given="short_side" in given)
    return InputGeometry(h, w, rh, rw, top, left, ch, cw)
