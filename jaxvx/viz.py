"""Pictures: contact sheets of clips with their ground truth, heatmaps of relevance, overlays and plots.

Images are uint8 ``[H, W, 3]`` RGB arrays; :func:`save_png` writes one. Relevance is signed: heatmaps use a
diverging colour map centred on zero (blue negative, white zero, red positive, as zennit's ``bwr``), scaled per clip
by the largest absolute value so that frames of one clip compare.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["contact_sheet", "explanation_sheet", "heatmap", "overlay", "plot_frame_share", "plot_sweep", "save_png"]

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


def _channel_sum(relevance) -> np.ndarray:
    relevance = np.asarray(relevance, dtype=np.float32)
    if relevance.ndim == 4:  # [T, H, W, C]
        relevance = relevance.sum(axis=-1)
    if relevance.ndim != 3:
        raise ValueError(f"relevance must be [T, H, W] or [T, H, W, C], got shape {relevance.shape}")
    if not np.all(np.isfinite(relevance)):
        raise ValueError("relevance contains NaN or Inf")
    return relevance


def heatmap(relevance, *, cmap: str = "bwr", symmetric: bool = True, scale: float | None = None) -> np.ndarray:
    """Colour a relevance map: uint8 ``[T, H, W, 3]`` from ``[T, H, W]`` or ``[T, H, W, C]`` (summed over C).

    ``symmetric=True`` maps ``[-s, s]`` to the colour map with zero in its middle, ``s = max |R|`` over the clip
    (or ``scale``); ``symmetric=False`` maps ``[min, max]`` to ``[0, 1]`` (for maps that are never negative).
    """
    from matplotlib import colormaps

    r = _channel_sum(relevance)
    if symmetric:
        s = float(np.abs(r).max()) if scale is None else float(scale)
        unit = 0.5 + 0.5 * r / s if s > 0 else np.full_like(r, 0.5)
    else:
        lo, hi = float(r.min()), float(r.max()) if scale is None else float(scale)
        unit = (r - lo) / (hi - lo) if hi > lo else np.zeros_like(r)
    rgba = colormaps[cmap](np.clip(unit, 0, 1))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def overlay(frames, relevance, *, alpha: float = 0.7, weight: str = "constant", **heatmap_kwargs) -> np.ndarray:
    """Heatmap blended over the grey frames.

    ``weight="constant"``: ``alpha * heat + (1 - alpha) * grey`` everywhere (Hiley et al. use 0.7 / 0.3; on dark
    frames the scene then fades behind the colour map's white). ``weight="relevance"``: the heat's weight follows
    the relevance, ``a = alpha * sqrt(|R| / max |R|)`` per pixel, so that the frame shows unchanged where relevance
    is zero and the colour covers it where relevance is largest.

    ``frames`` uint8 ``[T, H, W, 3]``; ``relevance`` ``[T, H', W'(, C)]`` (resized to the frames if needed).
    Returns uint8 ``[T, H, W, 3]``.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if weight not in ("constant", "relevance"):
        raise ValueError(f"weight must be 'constant' or 'relevance', got {weight!r}")
    heat = heatmap(relevance, **heatmap_kwargs)
    if heat.shape[0] != frames.shape[0]:
        raise ValueError(f"relevance has {heat.shape[0]} frames, frames have {frames.shape[0]}")
    size = (frames.shape[2], frames.shape[1])
    resize = heat.shape[1:3] != frames.shape[1:3]
    if resize:
        heat = np.stack([cv2.resize(h, size, interpolation=cv2.INTER_LINEAR) for h in heat])
    a = np.float32(alpha)
    if weight == "relevance":
        m = np.abs(_channel_sum(relevance)).astype(np.float32)
        m = np.sqrt(m / m.max()) if m.max() > 0 else m
        if resize:
            m = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in m])
        a = alpha * np.clip(m, 0, 1)[..., None]
    grey = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    blend = a * heat.astype(np.float32) + (1 - a) * grey[..., None]
    return np.clip(blend.round(), 0, 255).astype(np.uint8)


def explanation_sheet(frames, rows: dict, *, num_columns: int = 8, cell: int = 112, gap: int = 4,
                      title: str | None = None) -> np.ndarray:
    """A grid: the frames in the first row, then one row per relevance map in ``rows`` (name -> map).

    ``frames`` uint8 ``[T, H, W, 3]``; each map ``[T, H, W(, C)]`` is drawn as a signed heatmap (its own scale).
    Returns uint8 RGB.
    """
    frames = np.asarray(frames)
    t_all = frames.shape[0]
    picks = np.linspace(0, t_all - 1, min(num_columns, t_all)).round().astype(int)
    images = [("frames", frames)] + [(name, heatmap(r)) for name, r in rows.items()]
    title_h = 18 if title else 0
    row_h = 16 + cell + gap
    sheet = np.full((title_h + gap + row_h * len(images), gap + (cell + gap) * len(picks), 3), 255, np.uint8)
    if title:
        cv2.putText(sheet, title, (gap, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for r, (name, video) in enumerate(images):
        top = title_h + gap + r * row_h
        cv2.putText(sheet, name, (gap, top + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        for c, t in enumerate(picks):
            h, w = video.shape[1:3]
            zoom = min(cell / h, cell / w)
            img = cv2.resize(np.ascontiguousarray(video[t]), (max(1, round(w * zoom)), max(1, round(h * zoom))),
                             interpolation=cv2.INTER_NEAREST if zoom >= 1 else cv2.INTER_AREA)
            x, y = gap + c * (cell + gap), top + 16
            sheet[y:y + img.shape[0], x:x + img.shape[1]] = img
            if r == 0:
                _label(sheet, str(t), (x + 2, y + img.shape[0] - 4), 0.35)
    return sheet


def plot_frame_share(share, *, fits: dict | None = None, title: str = "relevance share per frame") -> np.ndarray:
    """Plot P_t (``[T]``, or ``[N, T]`` drawn as mean and spread) with optional fitted curves; uint8 RGB image.

    ``fits`` maps a label to ``[T]`` values (e.g. the quadratic and linear fits of Anders et al.).
    """
    share = np.asarray(share, dtype=np.float64)
    if share.ndim not in (1, 2):
        raise ValueError(f"share must be [T] or [N, T], got shape {share.shape}")
    fig, canvas = _figure(5, 3)
    ax = fig.add_subplot()
    t = np.arange(share.shape[-1])
    mean = share if share.ndim == 1 else share.mean(axis=0)
    if share.ndim == 2 and share.shape[0] > 1:
        lo, hi = np.percentile(share, [10, 90], axis=0)
        ax.fill_between(t, lo, hi, alpha=0.25, label="10-90%")
    ax.plot(t, mean, "o-", label="P_t" if share.ndim == 1 else "mean P_t")
    for label, curve in (fits or {}).items():
        ax.plot(t, np.asarray(curve), "--", label=label)
    ax.set_xlabel("frame t")
    ax.set_ylabel("P_t")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _render(fig, canvas)


def _render(fig, canvas) -> np.ndarray:
    """A laid-out figure as a uint8 RGB image ``[H, W, 3]``."""
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, FigureCanvasAgg(fig)


def _step_ticks(ax, values) -> None:
    """A log2 step axis labelled with the exact rationals (1/16 ... 32)."""
    from jaxvx._pipeline_sweep import step_label

    ax.set_xscale("log", base=2)
    ticks = sorted(set(float(v) for v in values))
    ax.set_xticks(ticks)
    ax.set_xticklabels([step_label(v) for v in ticks], fontsize=8)
    ax.minorticks_off()


def plot_sweep(sweep, *, title: str = "") -> np.ndarray:
    """Plot a :func:`jaxvx.pipeline.sweep`: uint8 RGB image.

    Over the steps (when the sweep has several): the model's accuracy, and the border effect B of every method;
    over the offsets (when it has several): the lookahead L of every method. One line per method (and per offset,
    or per step, when both vary); bars are the summary's bootstrap intervals. The step axis is log2, labelled
    1/16 ... 32 (Anders et al.'s figures).
    """
    from jaxvx._pipeline_sweep import SWEEP_METRICS, step_label

    steps = sorted({r["step_value"] for r in sweep.table})
    offsets = sorted({r["offset"] for r in sweep.table})
    panels = []
    if len(steps) > 1:
        panels += [("step", "(model)", "accuracy", "accuracy"), ("step", None, SWEEP_METRICS[0], "border B")]
    if len(offsets) > 1:
        panels += [("offset", None, SWEEP_METRICS[1], "lookahead L")]
    if not panels:  # one setting: its values as points
        panels = [("step", "(model)", "accuracy", "accuracy"), ("step", None, SWEEP_METRICS[0], "border B"),
                  ("step", None, SWEEP_METRICS[1], "lookahead L")]
    fig, canvas = _figure(4.2 * len(panels), 3.4)
    for i, (over, method, metric, label) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        other, others = ("offset", offsets) if over == "step" else ("step", steps)
        for m in [method] if method else sweep.methods:
            for value in others:
                kw = {"offset": int(value)} if other == "offset" else {"step": value}
                s = sweep.series(m, metric, **kw)
                if not len(s["mean"]):
                    continue
                x = s[over]
                err = np.stack([s["mean"] - s["low"], s["high"] - s["mean"]])
                err = np.where(np.isfinite(err), err, 0.0)
                name = "model" if method else m
                if len(others) > 1:
                    name += f", {other} {value if other == 'offset' else step_label(value)}"
                ax.errorbar(x, s["mean"], yerr=err, fmt="o-", capsize=3, label=name)
        if over == "step":
            _step_ticks(ax, steps)
        else:
            ax.set_xticks(offsets)
        ax.set_xlabel("snippet step" if over == "step" else "snippet offset (frames)")
        ax.set_ylabel(label)
        if metric != "accuracy":
            ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_title(label + (" (quadratic coefficient of mean P_t)" if label == "border B" else
                              " (slope of mean P_t)" if label == "lookahead L" else ""), fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _render(fig, canvas)
