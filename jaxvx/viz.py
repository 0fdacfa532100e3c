"""Pictures: contact sheets of clips with their ground truth, heatmaps of relevance, overlays and plots.

Images are uint8 ``[H, W, 3]`` RGB arrays; :func:`save_png` writes one. Relevance is signed: heatmaps use a
diverging colour map centred on zero (blue negative, white zero, red positive, as zennit's ``bwr``), scaled per clip
so that frames of one clip compare: by the ``percentile``-th percentile of ``|R|`` over the clip (100: the largest
absolute value; larger values saturate). The explanation sheet takes 99.5: relevance maps of real models are
heavy-tailed (the I3D's deep Taylor map on a real clip has max ``|R|`` 19 times its 99.5th percentile, so scaled by
the maximum the sheet shows almost no colour).

The explanation sheet, the P_t plot and the sweep plot are matplotlib figures (``*_figure``): :func:`render` makes
one an image, :func:`save_figure` writes it as PNG, SVG or PDF (text kept as text); ``explanation_sheet``,
``plot_frame_share`` and ``plot_sweep`` return the rendered image. Their text is 12 pt at 100 dpi (about 12 px cap
height) at the image's natural size.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence

import cv2
import numpy as np

from jaxvx._maps import channel_sum

__all__ = ["contact_sheet", "explanation_figure", "explanation_sheet", "frame_share_figure", "heatmap", "overlay",
           "plot_frame_share", "plot_sweep", "render", "save_figure", "save_png", "sweep_figure"]

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
    """One clip's map ``[T, H, W, C]`` (or ``[T, H, W]``) summed over channels: ``[T, H, W]`` float32, finite."""
    relevance = np.asarray(relevance, dtype=np.float32)
    if relevance.ndim not in (3, 4):
        raise ValueError(f"relevance must be one clip's map [T, H, W, C] or [T, H, W], got shape {relevance.shape}")
    relevance = np.asarray(channel_sum(relevance[None]))[0]
    if not np.all(np.isfinite(relevance)):
        raise ValueError("relevance contains NaN or Inf")
    return relevance


def _check_percentile(percentile) -> float:
    if (isinstance(percentile, bool) or not isinstance(percentile, numbers.Real) or not math.isfinite(percentile)
            or not 0 < percentile <= 100):
        raise ValueError(f"percentile: expected a number in (0, 100] (100: the largest |R|), got {percentile!r}")
    return float(percentile)


def _abs_scale(r: np.ndarray, percentile: float) -> float:
    """The ``percentile``-th percentile of ``|r|`` (100: ``max |r|``); the maximum where that percentile is 0 (a
    sparse map), so that a map with any non-zero value gets a positive scale."""
    a = np.abs(r)
    s = float(a.max()) if percentile >= 100 else float(np.percentile(a, percentile))
    return s if s > 0 else float(a.max())


def heatmap(relevance, *, cmap: str = "bwr", symmetric: bool = True, scale: float | None = None,
            percentile: float = 100.0) -> np.ndarray:
    """Colour a relevance map: uint8 ``[T, H, W, 3]`` from ``[T, H, W]`` or ``[T, H, W, C]`` (summed over C).

    ``symmetric=True`` maps ``[-s, s]`` to the colour map with zero in its middle (values beyond saturate), ``s``
    the ``percentile``-th percentile of ``|R|`` over the clip (100: ``max |R|``; or ``scale``);
    ``symmetric=False`` maps ``[min, max]`` to ``[0, 1]`` (for maps that are never negative).
    """
    from matplotlib import colormaps

    percentile = _check_percentile(percentile)
    r = _channel_sum(relevance)
    if symmetric:
        s = _abs_scale(r, percentile) if scale is None else float(scale)
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
    the relevance, ``a = alpha * min(sqrt(|R| / s), 1)`` per pixel with ``s`` the heatmap's scale (``scale``, or
    the ``percentile``-th percentile of ``|R|``; 100: ``max |R|``), so that the frame shows unchanged where
    relevance is zero and the colour covers it where relevance is largest.

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
        s = heatmap_kwargs.get("scale")
        s = _abs_scale(m, _check_percentile(heatmap_kwargs.get("percentile", 100.0))) if s is None else float(s)
        m = np.sqrt(m / s) if s > 0 else np.zeros_like(m)
        if resize:
            m = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in m])
        a = alpha * np.clip(m, 0, 1)[..., None]
    grey = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    blend = a * heat.astype(np.float32) + (1 - a) * grey[..., None]
    return np.clip(blend.round(), 0, 255).astype(np.uint8)


# Figures drawn with matplotlib: one style, so that every text is readable at the image's natural size (12 pt at
# 100 dpi: a 16.7 px em, about 12 px cap height in DejaVu Sans), and text stays text in SVG and PDF.
_DPI = 100
_STYLE = {
    "font.size": 12, "axes.titlesize": 13, "axes.labelsize": 12, "xtick.labelsize": 12, "ytick.labelsize": 12,
    "legend.fontsize": 12, "figure.titlesize": 14, "figure.dpi": _DPI, "savefig.dpi": _DPI,
    "svg.fonttype": "none", "pdf.fonttype": 42, "svg.hashsalt": "jaxvx",
}
_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
_METADATA = {"svg": {"Date": None}, "pdf": {"CreationDate": None}, "png": {}}
_FIT_STYLES = (("tab:orange", "--"), ("tab:green", "-."), ("tab:purple", ":"), ("tab:brown", (0, (5, 1, 1, 1))))


def _style():
    """A context in which figures are built, rendered and saved with the module's fonts."""
    import matplotlib

    return matplotlib.rc_context(_STYLE)


def _new_figure(width_px: float, height_px: float, *, layout: str | None = None):
    """An empty matplotlib figure of ``width_px x height_px`` pixels at 100 dpi (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / _DPI, height_px / _DPI), dpi=_DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def render(figure) -> np.ndarray:
    """A matplotlib figure as the uint8 RGB image ``[H, W, 3]`` it is at its natural size (100 dpi)."""
    with _style():
        figure.canvas.draw()
        return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def save_figure(path: str | os.PathLike, figure, *, also: Sequence[str] = ()) -> list[str]:
    """Write a matplotlib figure to ``path`` (``.png``, ``.svg`` or ``.pdf``, by its suffix) and, for each suffix in
    ``also`` (e.g. ``("svg",)``), beside it under the same name; returns the paths written, ``path`` first.

    Files are written atomically (a temporary file renamed into place). SVG and PDF keep text as text (SVG
    ``<text>`` elements, PDF TrueType fonts) and carry no creation date, so that the same figure gives the same file.
    """
    path = os.fspath(path)
    stem, suffix = os.path.splitext(path)
    suffixes = [suffix.lower()] + ["." + s.lower().lstrip(".") for s in also]
    unknown = [s for s in suffixes if s not in _FORMATS]
    if unknown:
        raise ValueError(f"figures are written as {sorted(_FORMATS)}, got {unknown} for {path!r}")
    written = []
    for s in dict.fromkeys(suffixes):
        target = path if s == suffix.lower() else stem + s
        folder = os.path.dirname(os.path.abspath(target))
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(target)}.tmp{s}")
        with _style():
            figure.savefig(tmp, format=_FORMATS[s], dpi=_DPI, metadata=_METADATA[_FORMATS[s]])
        os.replace(tmp, target)
        written.append(target)
    return written


def _signed(value: float) -> str:
    """A colour-bar limit: three significant digits with its sign (``+0.0123``, ``-1.5e-05``)."""
    return "0" if value == 0 else f"{value:+.3g}"


def _colour_bar(fig, rect: tuple[float, float, float, float], scale: float, *, cmap: str = "bwr") -> None:
    """A vertical colour bar in figure fraction ``rect`` for the signed range ``[-scale, scale]``, its ends and
    zero printed."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cax = fig.add_axes(rect)
    bar = fig.colorbar(ScalarMappable(Normalize(-scale, scale), cmap=cmap), cax=cax, ticks=[-scale, 0.0, scale])
    bar.ax.set_yticklabels([_signed(-scale), "0", _signed(scale)])
    bar.ax.tick_params(labelsize=_STYLE["ytick.labelsize"])


def _outlined(ax, x: float, y: float, text: str, **kwargs) -> None:
    """White text with a black outline at axes fraction ``(x, y)``: readable on any image."""
    from matplotlib import patheffects

    ax.text(x, y, text, transform=ax.transAxes, color="white", fontsize=_STYLE["font.size"],
            path_effects=[patheffects.withStroke(linewidth=3, foreground="black")], **kwargs)


def explanation_figure(frames, rows: dict, *, num_columns: int = 8, cell: int = 112, gap: int = 4,
                       title: str | None = None, alpha: float = 0.8, percentile: float = 99.5):
    """The frames in the first row, then one row per relevance map in ``rows`` (name -> map), as a matplotlib figure.

    Each map is drawn over its frames in grey (:func:`overlay` with ``weight="relevance"``: where relevance is zero
    the frame shows, where ``|R|`` is largest the colour covers it with opacity ``alpha``), on a diverging colour map
    centred on zero with symmetric limits ``±s``, ``s`` the ``percentile``-th percentile of ``|R|`` over that map's
    clip (100: ``max |R|``; larger values saturate); a colour bar beside each row prints the limits. Frames and
    maps are ``cell`` pixels square (aspect kept), ``gap`` pixels apart, at 100 dpi.

    Args:
        frames: uint8 ``[T, H, W, 3]``.
        rows: name -> relevance ``[T, H', W'(, C)]`` (summed over C; resized to the frames if needed).
        num_columns: frames shown, spread evenly over the clip.
        title: a line above the grid.
        percentile: where the colour scale ends, in percent of ``|R|`` (100: the largest value).

    Returns:
        A ``matplotlib.figure.Figure`` (:func:`render` makes it an image, :func:`save_figure` a file).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if num_columns < 1 or cell < 16:
        raise ValueError(f"num_columns must be >= 1 and cell >= 16, got {num_columns} and {cell}")
    picks = np.linspace(0, frames.shape[0] - 1, min(num_columns, frames.shape[0])).round().astype(int)
    percentile = _check_percentile(percentile)
    scales = {name: _abs_scale(_channel_sum(r), percentile) or 1.0 for name, r in rows.items()}
    what = "max |R|" if percentile >= 100 else f"percentile {percentile:g} of |R|"
    images = [("frames", frames, None)] + [
        (f"{name}   (colour: ±{scales[name]:.3g} = {what}; opacity grows with |R|)",
         overlay(frames, r, alpha=alpha, weight="relevance", scale=scales[name]),
         scales[name]) for name, r in rows.items()]
    pad, head, title_h = 8, 26, 34 if title else 0
    grid_w = len(picks) * (cell + gap) - gap
    bar_w = 130 if rows else 0
    width, height = pad + grid_w + bar_w + pad, title_h + len(images) * (head + cell + gap) + pad
    with _style():
        fig = _new_figure(width, height)
        fig.patch.set_facecolor("white")
        if title:
            fig.text(pad / width, 1 - 8 / height, title, ha="left", va="top", fontsize=_STYLE["figure.titlesize"])
        for r, (name, video, scale) in enumerate(images):
            top = title_h + r * (head + cell + gap)
            fig.text(pad / width, 1 - (top + 4) / height, name, ha="left", va="top")
            y0 = 1 - (top + head + cell) / height
            for c, t in enumerate(picks):
                ax = fig.add_axes(((pad + c * (cell + gap)) / width, y0, cell / width, cell / height))
                ax.imshow(video[t], interpolation="nearest")
                ax.set_axis_off()
                if r == 0:
                    _outlined(ax, 0.04, 0.04, f"t={t}", ha="left", va="bottom")
            if scale is not None:
                _colour_bar(fig, ((pad + grid_w + 12) / width, y0, 14 / width, cell / height), scale)
    return fig


def explanation_sheet(frames, rows: dict, *, num_columns: int = 8, cell: int = 112, gap: int = 4,
                      title: str | None = None, alpha: float = 0.8, percentile: float = 99.5) -> np.ndarray:
    """:func:`explanation_figure` as a uint8 RGB image ``[H', W', 3]``."""
    return render(explanation_figure(frames, rows, num_columns=num_columns, cell=cell, gap=gap, title=title,
                                     alpha=alpha, percentile=percentile))


def frame_share_figure(share, *, fits: dict | None = None, title: str = "relevance share per frame"):
    """P_t (``[T]``, or ``[N, T]`` drawn as its mean and the 10-90 % band of the clips) as a matplotlib figure.

    One panel per fitted curve in ``fits`` (label -> ``[T]`` values, e.g. Anders et al.'s quadratic fit, whose
    leading coefficient is the border effect B, and linear fit, whose slope is the lookahead L), each in its own
    colour and line style, titled with its label; one panel without fits. A dotted line marks the uniform share 1/T
    (no frame preferred). Panels are 500 pixels wide at 100 dpi and share the P_t axis.
    """
    share = np.asarray(share, dtype=np.float64)
    if share.ndim not in (1, 2):
        raise ValueError(f"share must be [T] or [N, T], got shape {share.shape}")
    panels = list((fits or {}).items()) or [(None, None)]
    t = np.arange(share.shape[-1])
    mean = share if share.ndim == 1 else share.mean(axis=0)
    with _style():
        fig = _new_figure(500 * len(panels), 420, layout="constrained")
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
        for i, (ax, (label, curve)) in enumerate(zip(axes, panels)):
            if share.ndim == 2 and share.shape[0] > 1:
                lo, hi = np.percentile(share, [10, 90], axis=0)
                ax.fill_between(t, lo, hi, color="0.8", label="10-90 % of clips")
            ax.axhline(1 / len(t), color="0.4", ls=":", lw=1.2, label="uniform 1/T")
            ax.plot(t, mean, "o-", color="black", ms=4, lw=1, label="P_t" if share.ndim == 1 else "mean P_t")
            if label is not None:
                colour, style = _FIT_STYLES[i % len(_FIT_STYLES)]
                ax.plot(t, np.asarray(curve), color=colour, ls=style, lw=2.5, label="fit")
                ax.set_title(f"fit: {label}")
            ax.set_xlabel("frame t")
            ncols = 3 if len(ax.get_legend_handles_labels()[0]) <= 3 else 2
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=ncols, frameon=False, handlelength=2.5)
        axes[0].set_ylabel("P_t (share of relevance)")
        fig.suptitle(title)
    return fig


def plot_frame_share(share, *, fits: dict | None = None, title: str = "relevance share per frame") -> np.ndarray:
    """:func:`frame_share_figure` as a uint8 RGB image ``[H, W, 3]``."""
    return render(frame_share_figure(share, fits=fits, title=title))


def _step_ticks(ax, values) -> None:
    """A log2 step axis labelled with the exact rationals (1/16 ... 32)."""
    from jaxvx.pipeline import step_label

    ax.set_xscale("log", base=2)
    ticks = sorted(set(float(v) for v in values))
    ax.set_xticks(ticks)
    ax.set_xticklabels([step_label(v) for v in ticks], rotation=45 if len(ticks) > 6 else 0)
    ax.minorticks_off()
    ax.margins(x=0.06)


def _sweep_panels(steps: list, offsets: list) -> list[tuple]:
    """The panels of a sweep figure: ``(over, method, metric, label)``, ``method`` None for every method."""
    from jaxvx.pipeline import SWEEP_METRICS

    accuracy = ("step", "(model)", "accuracy", "accuracy")
    border = ("step", None, SWEEP_METRICS[0], "border B")
    lookahead = ("offset", None, SWEEP_METRICS[1], "lookahead L")
    panels = ([accuracy, border] if len(steps) > 1 else []) + ([lookahead] if len(offsets) > 1 else [])
    return panels or [accuracy, border, lookahead]  # one setting: its values as points


def _sweep_lines(ax, sweep, over: str, method: str | None, metric: str, steps: list, offsets: list) -> None:
    """One line with interval bars per method (and per value of the other axis when that varies)."""
    from jaxvx.pipeline import step_label

    other, others = ("offset", offsets) if over == "step" else ("step", steps)
    for m in [method] if method else sweep.methods:
        for value in others:
            s = sweep.series(m, metric, **({"offset": int(value)} if other == "offset" else {"step": value}))
            if not len(s["mean"]):
                continue
            err = np.stack([s["mean"] - s["low"], s["high"] - s["mean"]])
            name = "model" if method else m
            if len(others) > 1:
                name += f", {other} {value if other == 'offset' else step_label(value)}"
            colour = {"color": "black"} if method and len(others) == 1 else {}
            ax.errorbar(s[over], s["mean"], yerr=np.where(np.isfinite(err), err, 0.0), fmt="o-", capsize=4,
                        label=name, **colour)


def sweep_figure(sweep, *, title: str = "", chance: float | None = None, training_step: float | None = 1,
                 confidence: float = 0.95):
    """A :func:`jaxvx.pipeline.sweep` as a matplotlib figure.

    Over the steps (when the sweep has several): the model's accuracy and the border effect B of every method;
    over the offsets (when it has several): the lookahead L of every method. One line per method (and per offset,
    or per step, when both vary); bars are the summary's bootstrap intervals at level ``confidence``. The step axis
    is log2, labelled 1/16 ... 32 (Anders et al.'s figures). Panels are 420 pixels wide at 100 dpi.

    Args:
        chance: the accuracy of guessing (1/K for K balanced classes), drawn as a dotted line; None: not drawn.
        training_step: the step at which the snippets show the model the time scale it was trained at (1 for clips
            like its training clips; N / T for synthetic clips rendered N frames long for a T-frame model), drawn
            as a vertical line on the step panels; None: not drawn.
        confidence: the level of the intervals, for their label.
    """
    from jaxvx.pipeline import step_label

    steps = sorted({r["step_value"] for r in sweep.table})
    offsets = sorted({r["offset"] for r in sweep.table})
    panels = _sweep_panels(steps, offsets)
    with _style():
        fig = _new_figure(420 * len(panels), 480, layout="constrained")
        for i, (over, method, metric, label) in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), i + 1)
            _sweep_lines(ax, sweep, over, method, metric, steps, offsets)
            if over == "step":
                _step_ticks(ax, steps)
                if training_step is not None:
                    ax.axvline(training_step, color="tab:red", ls="--", lw=1.2, zorder=0,
                               label=f"training time scale (step {step_label(training_step)})")
            else:
                ax.set_xticks(offsets)
            if metric == "accuracy" and chance is not None:
                ax.axhline(chance, color="0.3", ls=":", lw=1.5, label=f"chance ({chance:.2g})")
            elif metric != "accuracy":
                ax.axhline(0.0, color="0.5", lw=1, zorder=0, label=f"{label.split()[-1]} = 0")
                ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
            ax.set_xlabel("snippet step (log scale)" if over == "step" else "snippet offset (frames)")
            ax.set_ylabel(label + ("" if metric == "accuracy" else " (quadratic coef.)" if over == "step"
                                   else " (slope)"))
            ax.set_title(f"{label}, bars: {100 * confidence:g} % bootstrap CI")
        _legend_below(fig)
        if title:
            fig.suptitle(title)
    return fig


def _legend_below(fig) -> None:
    """One legend under the panels of a figure: every label its axes draw, once."""
    entries = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncols=min(len(entries), 3),
                   frameon=False)


def plot_sweep(sweep, *, title: str = "", chance: float | None = None, training_step: float | None = 1,
               confidence: float = 0.95) -> np.ndarray:
    """:func:`sweep_figure` as a uint8 RGB image ``[H, W, 3]``."""
    return render(sweep_figure(sweep, title=title, chance=chance, training_step=training_step,
                               confidence=confidence))
