"""Pictures: contact sheets of clips with their ground truth.

Images are uint8 ``[H, W, 3]`` RGB arrays; :func:`save_png` writes one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["contact_sheet", "save_png"]

_BOX = (40, 255, 40)
_ABSENT = (90, 90, 90)
_SEGMENT = (255, 200, 0)
_CUE = (255, 60, 255)


def _label(image: np.ndarray, text: str, org: tuple[int, int], scale: float, colour=(255, 255, 255)) -> None:
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def contact_sheet(
    records: Sequence[dict],
    *,
    class_names: Sequence[str] | None = None,
    num_columns: int = 8,
    cell: int = 112,
    gap: int = 4,
) -> np.ndarray:
    """One row per record: ``num_columns`` frames spread evenly over the clip, with the ground truth drawn on them.

    Each frame shows the actor's box (green; frames without the actor get a grey corner mark), the context cue's box
    (magenta) when there is one, and a bar under the frame that is orange inside the action segment. The row title
    gives the clip's index and class.

    Args:
        records: dicts with ``video`` uint8 ``[T, H, W, 3]`` and ``label``; ``boxes`` ``[T, 4]`` (x_min, y_min,
            x_max, y_max), ``present`` ``[T]``, ``segment`` ``[2]`` and ``cue_box`` ``[4]`` are drawn when present.
        class_names: names for the labels.
        num_columns: frames per row.
        cell: the side of each frame's square cell in pixels (frames are resized to fit, aspect kept).
        gap: pixels between cells.

    Returns:
        uint8 ``[H', W', 3]`` RGB image.
    """
    if not records:
        raise ValueError("records must not be empty")
    if num_columns < 1 or cell < 16:
        raise ValueError(f"num_columns must be >= 1 and cell >= 16, got {num_columns} and {cell}")
    title_h, bar_h = 18, 5
    row_h = title_h + cell + bar_h + gap
    sheet = np.full((gap + row_h * len(records), gap + (cell + gap) * num_columns, 3), 24, dtype=np.uint8)
    for r, record in enumerate(records):
        video = np.asarray(record["video"])
        if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
            raise ValueError(f"records[{r}]['video'] must be uint8 [T, H, W, 3], got {video.dtype} {video.shape}")
        t_all, h, w, _ = video.shape
        zoom = min(cell / h, cell / w)
        size = (max(1, round(w * zoom)), max(1, round(h * zoom)))
        label = int(record.get("label", -1))
        name = class_names[label] if class_names is not None and 0 <= label < len(class_names) else str(label)
        top = gap + r * row_h
        _label(sheet, f"#{record.get('index', r)}  {name}", (gap + 2, top + 13), 0.45)
        segment = record.get("segment")
        for c, t in enumerate(np.linspace(0, t_all - 1, min(num_columns, t_all)).round().astype(int)):
            frame = cv2.resize(video[t], size, interpolation=cv2.INTER_NEAREST if zoom >= 1 else cv2.INTER_AREA)
            frame = np.ascontiguousarray(frame)
            if "boxes" in record:
                present = bool(np.asarray(record.get("present", np.ones(t_all, bool)))[t])
                if present:
                    x0, y0, x1, y1 = np.asarray(record["boxes"][t], dtype=float)
                    p0 = (int(round(x0 * zoom)), int(round(y0 * zoom)))
                    p1 = (int(round((x1 + 1) * zoom)) - 1, int(round((y1 + 1) * zoom)) - 1)
                    cv2.rectangle(frame, p0, p1, _BOX, 1)
                else:
                    cv2.rectangle(frame, (0, 0), (8, 8), _ABSENT, -1)
            cue = record.get("cue_box")
            if cue is not None and np.asarray(cue)[0] >= 0:
                x0, y0, x1, y1 = np.asarray(cue, dtype=float)
                cv2.rectangle(frame, (int(x0 * zoom), int(y0 * zoom)), (int((x1 + 1) * zoom) - 1,
                                                                        int((y1 + 1) * zoom) - 1), _CUE, 1)
            _label(frame, str(t), (2, frame.shape[0] - 4), 0.35)
            x = gap + c * (cell + gap)
            y = top + title_h
            sheet[y:y + frame.shape[0], x:x + frame.shape[1]] = frame
            if segment is not None:
                inside = int(segment[0]) <= t < int(segment[1])
                sheet[y + cell + 1:y + cell + bar_h, x:x + cell] = _SEGMENT if inside else (60, 60, 60)
    return sheet


def save_png(path: str | os.PathLike, image: np.ndarray) -> str:
    """Write an RGB uint8 image ``[H, W, 3]`` as PNG (atomically: a temporary file renamed into place)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp.png")
    if not cv2.imwrite(tmp, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write PNG {path}")
    os.replace(tmp, path)
    return path
