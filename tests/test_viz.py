"""Pictures: colours mean what the docstrings say, sizes are right, bad input is named."""

import numpy as np
import pytest

from jaxvx.viz import explanation_sheet, heatmap, overlay, plot_frame_share


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


def test_explanation_sheet_layout():
    frames = np.zeros((16, 32, 32, 3), np.uint8)
    sheet = explanation_sheet(frames, {"a": np.ones((16, 32, 32)), "b": -np.ones((16, 32, 32))}, num_columns=4,
                              cell=64, title="x")
    assert sheet.shape == (18 + 4 + 3 * (16 + 64 + 4), 4 + 4 * 68, 3)


def test_plot_frame_share_is_an_image():
    img = plot_frame_share(np.random.default_rng(0).random((4, 16)), fits={"q": np.linspace(0, 1, 16)})
    assert img.dtype == np.uint8 and img.shape == (300, 500, 3) and img.std() > 10
    with pytest.raises(ValueError, match=r"\[T\] or \[N, T\]"):
        plot_frame_share(np.zeros((1, 2, 3)))
