"""Pictures: colours mean what the docstrings say, maps lie over their frames, text is readable at the natural
size, vector files hold text, sizes are right, bad input is named."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from matplotlib.text import Text

from jaxvx.pipeline import SWEEP_METRICS, Sweep
from jaxvx.viz import (explanation_figure, explanation_sheet, frame_share_figure, heatmap, overlay,
                       plot_frame_share, plot_sweep, render, save_figure, sweep_figure)


def test_heatmap_is_diverging_and_centred_on_zero():
    r = np.zeros((1, 1, 3), np.float32)
    r[0, 0] = [-2.0, 0.0, 2.0]
    heat = heatmap(r)[0, 0].astype(int)
    neg, zero, pos = heat
    assert neg[2] > neg[0] + 100  # blue for negative
    assert pos[0] > pos[2] + 100  # red for positive
    assert np.all(zero > 240)  # white at zero
    # the scale is symmetric: -1 and +1 on a clip whose extreme is 2 are equally far from white
    half = heatmap(np.array([[[-1.0, 1.0, 2.0]]]))[0, 0].astype(int)
    assert abs((255 - half[0]).sum() - (255 - half[1]).sum()) <= 6  # the colour map is a 256-entry table


def test_heatmap_sums_channels_and_rejects_nan():
    r = np.random.default_rng(0).normal(size=(2, 4, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(heatmap(r), heatmap(r.sum(-1)))
    r[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        heatmap(r)
    with pytest.raises(ValueError, match=r"\[T, H, W\]"):
        heatmap(np.zeros((4, 5)))


def test_overlay_blends_heat_over_grey_and_resizes():
    frames = np.full((3, 8, 8, 3), 100, np.uint8)
    relevance = np.zeros((3, 4, 4), np.float32)
    relevance[:, :2] = 1.0
    out = overlay(frames, relevance, alpha=0.7)
    assert out.shape == frames.shape and out.dtype == np.uint8
    # zero relevance: 0.7 * white + 0.3 * grey(100)
    np.testing.assert_allclose(out[0, 7, 7], 0.7 * 255 + 0.3 * 100, atol=1)
    assert out[0, 0, 0, 0] > out[0, 0, 0, 2] + 100  # positive: red
    with pytest.raises(ValueError, match="frames"):
        overlay(frames, np.zeros((2, 8, 8)))


def test_overlay_weighted_by_relevance_keeps_the_frame_where_relevance_is_zero():
    frames = np.full((2, 8, 8, 3), 100, np.uint8)
    relevance = np.zeros((2, 8, 8), np.float32)
    relevance[:, 0, 0] = 4.0
    relevance[:, 0, 1] = 1.0  # a quarter of the maximum: weight 0.7 * sqrt(1/4)
    out = overlay(frames, relevance, alpha=0.7, weight="relevance").astype(np.float64)
    np.testing.assert_array_equal(out[:, 4:, 4:], 100)  # no relevance: the grey frame itself
    np.testing.assert_allclose(out[0, 0, 0], 0.7 * np.array([255, 0, 0]) + 0.3 * 100, atol=1)  # bwr at +max
    # bwr at 0.5 + 0.5 / 4 is (255, 190, 190); weight 0.35
    np.testing.assert_allclose(out[0, 0, 1], 0.35 * np.array([255, 190, 190]) + 0.65 * 100, atol=1)
    with pytest.raises(ValueError, match="weight"):
        overlay(frames, relevance, weight="max")


def _pixels(fig, ax) -> tuple[slice, slice]:
    """The rows and columns of a rendered figure's image that axes ``ax`` covers."""
    box = ax.get_window_extent()
    height = fig.canvas.get_width_height()[1]
    return (slice(int(np.ceil(height - box.y1)), int(height - box.y0)), slice(int(np.ceil(box.x0)), int(box.x1)))


def _stripes() -> tuple[np.ndarray, np.ndarray]:
    """Frames with vertical stripes (8 dark, 8 bright columns), and a map: positive on the left half, zero on the
    right, negative in the bottom-left corner."""
    frames = np.full((8, 32, 32, 3), 30, np.uint8)
    frames[:, :, 8:16] = frames[:, :, 24:32] = 220
    relevance = np.zeros((8, 32, 32), np.float32)
    relevance[:, :, :16] = 2.0
    relevance[:, 28:, :4] = -2.0
    return frames, relevance


def test_explanation_sheet_has_a_signed_colour_bar_blue_white_red_with_its_limits():
    frames, relevance = _stripes()
    fig = explanation_figure(frames, {"grad": relevance}, num_columns=4, title="t")
    image = render(fig)
    bar = fig.axes[-1]  # frames row, map row, then the colour bar
    rows, cols = _pixels(fig, bar)
    column = image[rows, (cols.start + cols.stop) // 2].astype(int)
    top, middle, bottom = column[2], column[len(column) // 2], column[-3]
    assert top[0] > 200 and top[2] < 60  # +max: red at the top
    assert np.all(middle > 235)  # zero: white in the middle
    assert bottom[2] > 200 and bottom[0] < 60  # -max: blue at the bottom
    assert [t.get_text() for t in bar.get_yticklabels()] == ["-2", "0", "+2"]  # symmetric limits printed
    np.testing.assert_allclose(bar.get_ylim(), (-2.0, 2.0))


def test_explanation_sheet_draws_each_map_over_its_frames_in_grey():
    frames, relevance = _stripes()
    fig = explanation_figure(frames, {"grad": relevance}, num_columns=4, cell=64)
    image = render(fig).astype(int)
    rows, cols = _pixels(fig, fig.axes[4])  # the map row's first panel
    panel = image[rows, cols]
    h, w = panel.shape[:2]
    dark, bright = panel[h // 2, int(w * 0.6)], panel[h // 2, int(w * 0.85)]  # zero relevance: the grey frame
    assert np.ptp(dark) <= 2 and np.ptp(bright) <= 2 and bright[0] - dark[0] > 150
    hot_dark, hot_bright = panel[h // 2, int(w * 0.1)], panel[h // 2, int(w * 0.4)]  # +max: red over the stripes
    assert hot_dark[0] > hot_dark[2] + 100 and hot_bright[0] > hot_bright[2] + 100
    assert hot_bright[1] - hot_dark[1] > 30  # the stripes show under the heat: 0.2 of their contrast at +max
    cold = panel[int(h * 0.97), int(w * 0.03)]
    assert cold[2] > cold[0] + 100  # -max: blue


def test_explanation_sheet_layout_follows_cell_and_columns():
    frames = np.zeros((16, 32, 32, 3), np.uint8)
    rows = {"a": np.ones((16, 32, 32)), "b": -np.ones((16, 32, 32))}
    small = explanation_sheet(frames, rows, num_columns=4, cell=64, title="x")
    wide = explanation_sheet(frames, rows, num_columns=8, cell=64, title="x")
    assert small.dtype == np.uint8 and wide.shape[0] == small.shape[0]
    assert wide.shape[1] - small.shape[1] == 4 * (64 + 4)
    assert explanation_sheet(frames, rows, num_columns=4, cell=96).shape[0] - small.shape[0] == 3 * 32 - 34
    with pytest.raises(ValueError, match=r"uint8 \[T, H, W, 3\]"):
        explanation_sheet(np.zeros((4, 8, 8)), rows)


def _sweep(steps=(0.25, 1.0, 4.0), offsets=(0,)) -> Sweep:
    """A sweep table as :func:`jaxvx.pipeline.sweep` gathers it: accuracy, B and L per setting."""
    from jaxvx.pipeline import step_label

    table = []
    for i, (step, offset) in enumerate((s, o) for s in steps for o in offsets):
        for method, metric, mean in [("(model)", "accuracy", 0.2 + 0.2 * i), ("grad", SWEEP_METRICS[0], 1e-3 / (i + 1)),
                                     ("grad", SWEEP_METRICS[1], -1e-3 + 1e-4 * i)]:
            table.append({"step": step_label(step), "step_value": step, "offset": offset, "method": method,
                          "metric": metric, "mean": mean, "low": mean - abs(mean) / 10,
                          "high": mean + abs(mean) / 10, "n": 10, "note": ""})
    return Sweep({}, table, "", None)


def test_sweep_figure_marks_chance_the_training_step_and_labels_the_intervals():
    fig = sweep_figure(_sweep(), chance=0.1, training_step=4, confidence=0.9)
    accuracy, border = fig.axes
    labels = accuracy.get_legend_handles_labels()[1]
    assert "chance (0.1)" in labels and "training time scale (step 4)" in labels
    chance = next(line for line in accuracy.get_lines() if line.get_label() == "chance (0.1)")
    np.testing.assert_allclose(chance.get_ydata(), 0.1)
    for ax in (accuracy, border):
        trained = next(line for line in ax.get_lines() if line.get_label() == "training time scale (step 4)")
        np.testing.assert_allclose(trained.get_xdata(), 4)
        assert "90 % bootstrap CI" in ax.get_title()
    assert "B = 0" in border.get_legend_handles_labels()[1]
    assert [t.get_text() for t in accuracy.get_xticklabels()] == ["1/4", "1", "4"]
    plain = sweep_figure(_sweep(), training_step=None)  # nothing the caller does not know is drawn
    assert not any("chance" in t or "training" in t for ax in plain.axes for t in ax.get_legend_handles_labels()[1])
    assert plot_sweep(_sweep(steps=(1.0,), offsets=(0, 2))).shape[1] == 420  # L over the offset only


def test_frame_share_draws_each_fit_in_a_panel_of_its_own_and_style():
    t = np.arange(16)
    fits = {"quadratic (B=+1.00e-03)": 1e-3 * (t - 7.5) ** 2, "linear (L=-2.00e-03)": 0.08 - 2e-3 * t}
    fig = frame_share_figure(np.full(16, 1 / 16), fits=fits)
    assert len(fig.axes) == 2 and [ax.get_title() for ax in fig.axes] == [f"fit: {k}" for k in fits]
    drawn = [next(line for line in ax.get_lines() if line.get_label() == "fit") for ax in fig.axes]
    assert drawn[0].get_color() != drawn[1].get_color() and drawn[0].get_linestyle() != drawn[1].get_linestyle()
    for line, curve in zip(drawn, fits.values()):
        np.testing.assert_allclose(line.get_ydata(), curve)
    uniform = next(line for line in fig.axes[0].get_lines() if line.get_label() == "uniform 1/T")
    np.testing.assert_allclose(uniform.get_ydata(), 1 / 16)


def test_plot_frame_share_is_an_image():
    img = plot_frame_share(np.random.default_rng(0).random((4, 16)), fits={"q": np.linspace(0, 1, 16)})
    assert img.dtype == np.uint8 and img.shape == (420, 500, 3) and img.std() > 10
    with pytest.raises(ValueError, match=r"\[T\] or \[N, T\]"):
        plot_frame_share(np.zeros((1, 2, 3)))


def _figures():
    frames, relevance = _stripes()
    return {"sheet": explanation_figure(frames, {"grad": relevance}, title="HHHH"),
            "frame_share": frame_share_figure(np.full(16, 1 / 16), fits={"q": np.zeros(16)}),
            "sweep": sweep_figure(_sweep(), chance=0.1)}


@pytest.mark.parametrize("name", ["sheet", "frame_share", "sweep"])
def test_every_text_has_a_cap_height_of_at_least_12_pixels(name):
    fig = _figures()[name]
    render(fig)
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    assert len(texts) > 5
    cap = 0.729  # DejaVu Sans: capital height / em
    small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() * fig.dpi / 72 * cap < 11.9]
    assert not small


def test_a_capital_letter_is_12_pixels_tall_in_the_image():
    fig = _figures()["sheet"]  # title "HHHH", black on white above the grid
    band = render(fig)[:40, :200].min(axis=-1) < 128
    rows = np.flatnonzero(band.any(axis=1))
    assert rows.size and rows[-1] - rows[0] + 1 >= 12


def test_save_figure_writes_png_beside_svg_and_pdf_with_text_as_text(tmp_path):
    fig = _figures()["sheet"]
    paths = save_figure(tmp_path / "sheet.png", fig, also=("svg", ".pdf"))
    assert paths == [str(tmp_path / f"sheet.{s}") for s in ("png", "svg", "pdf")]
    import cv2

    png = cv2.imread(paths[0])
    assert png.shape == render(fig).shape
    root = ET.parse(paths[1]).getroot()  # valid XML
    assert root.tag.endswith("svg")
    texts = ["".join(e.itertext()) for e in root.iter() if e.tag.endswith("text")]
    assert "HHHH" in texts and "+2" in texts
    assert open(paths[2], "rb").read(5) == b"%PDF-"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sheet.pdf", "sheet.png", "sheet.svg"]  # no temporaries
    again = save_figure(tmp_path / "again.svg", fig)
    assert open(again[0]).read() == open(paths[1]).read()  # no date: the same figure, the same file
    with pytest.raises(ValueError, match="jpg"):
        save_figure(tmp_path / "x.jpg", fig)


def test_percentile_scale_saturates_the_tail_so_the_bulk_shows():
    """A heavy-tailed map (one voxel 100 times the rest) scaled by its maximum is white almost everywhere; at the
    99th percentile the bulk takes the full colour and the outlier saturates, in the heatmap, the overlay's
    opacity and the sheet's colour bar."""
    r = np.full((2, 10, 10), 1.0, np.float32)
    r[0, 0, 0] = 100.0
    by_max, by_p99 = heatmap(r)[1, 5, 5].astype(int), heatmap(r, percentile=99)[1, 5, 5].astype(int)
    assert by_max[1] > 240 and by_p99[1] < 10  # near white against full red
    np.testing.assert_array_equal(heatmap(r, percentile=99)[0, 0, 0], heatmap(r, percentile=99)[1, 5, 5])
    frames = np.full((2, 10, 10, 3), 100, np.uint8)
    faint = overlay(frames, r, weight="relevance")[1, 5, 5].astype(int)
    strong = overlay(frames, r, weight="relevance", percentile=99)[1, 5, 5].astype(int)
    assert strong[0] - strong[1] > 150 > faint[0] - faint[1]
    big = np.full((2, 20, 20), 1.0, np.float32)
    big[0, 0, 0] = 100.0  # 1 of 800: the 99.5th percentile lies in the bulk
    fig = explanation_figure(np.full((2, 20, 20, 3), 100, np.uint8), {"m": big}, num_columns=2, cell=32)
    np.testing.assert_allclose(fig.axes[-1].get_ylim(), (-1.0, 1.0))
    assert any("percentile 99.5 of |R|" in t.get_text() for t in fig.texts)
    small = explanation_figure(np.full((2, 20, 20, 3), 100, np.uint8), {"m": big * 2.94e-4}, num_columns=8)
    render(small)  # lay the text out
    width = small.canvas.get_width_height()[0]
    labels = small.axes[-1].get_yticklabels()
    assert labels[0].get_text() == "-0.000294"  # the longest limit the format makes
    assert all(t.get_window_extent().x1 <= width for t in labels), [t.get_window_extent().x1 for t in labels]
    for bad in (0, 101, True, "max", float("nan")):
        with pytest.raises(ValueError, match="percentile"):
            heatmap(r, percentile=bad)
    np.testing.assert_array_equal(heatmap(r, percentile=np.float32(99)), heatmap(r, percentile=99))


def test_percentile_scale_of_a_sparse_map_falls_back_to_its_maximum():
    r = np.zeros((1, 20, 20), np.float32)
    r[0, 3, 4] = -2.0  # 0.25 % of the pixels: the 99th percentile of |R| is 0
    np.testing.assert_array_equal(heatmap(r, percentile=99)[0, 3, 4], [0, 0, 255])  # -max: bwr's blue end
    frames = np.full((1, 20, 20, 3), 100, np.uint8)
    out = overlay(frames, r, alpha=0.7, weight="relevance", percentile=99).astype(np.float64)
    np.testing.assert_allclose(out[0, 3, 4], 0.7 * np.array([0, 0, 255]) + 0.3 * 100, atol=1)  # full opacity
