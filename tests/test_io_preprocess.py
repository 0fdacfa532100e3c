"""Resize, centre crop and normalisation of frames into model input."""

import functools

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvx import io

KIN_MEAN = np.array([0.43216, 0.394666, 0.37645])
KIN_STD = np.array([0.22803, 0.22145, 0.216989])
SPORTS1M = np.array([101.41, 97.66, 90.25])


def coord_frames(t=3, h=20, w=30):
    """Float frames whose channel 0 is the row, channel 1 the column and channel 2 the frame index."""
    tt, yy, xx = np.mgrid[0:t, 0:h, 0:w]
    return np.stack([yy, xx, tt], -1).astype(np.float32)


@pytest.fixture(scope="module")
def real_frames(shared_videos):
    return io.read_video(shared_videos / "ucf101_apply_eye_makeup.avi", max_frames=4)  # [4, 240, 320, 3]


def test_default_shapes_and_dtype(real_frames):
    out = io.preprocess(real_frames)
    assert isinstance(out, jax.Array) and out.dtype == jnp.float32 and out.shape == (4, 112, 112, 3)
    batched = io.preprocess(np.stack([real_frames, real_frames])[None].astype(np.float64))
    assert batched.shape == (1, 2, 4, 112, 112, 3) and batched.dtype == jnp.float32
    np.testing.assert_allclose(batched[0, 1], out, atol=1e-5)
    # default normalisation is x / 255: values in [0, 1]
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


@pytest.mark.parametrize("hw, expected", [((240, 320), (128, 171)), ((320, 240), (171, 128)), ((64, 64), (128, 128)),
                                          ((1080, 1920), (128, 228)), ((100, 250), (128, 320))])
def test_short_side_resize_shape(hw, expected):
    x = jax.ShapeDtypeStruct((1, *hw, 3), jnp.uint8)  # shapes only: nothing is compiled or run
    out = jax.eval_shape(lambda a: io.preprocess(a, size=None, crop="none"), x)
    assert out.shape == (1, *expected, 3) and out.dtype == jnp.float32
    # the exact aspect ratio is kept to within half a pixel
    long_in, short_in = max(hw), min(hw)
    assert abs(max(expected) - long_in * 128 / short_in) <= 0.5


def test_normalisation_exact_on_constant_frames():
    rng = np.random.default_rng(0)
    for _ in range(5):
        v = rng.integers(0, 256, 3)
        mean, std = rng.uniform(0, 1, 3), rng.uniform(0.1, 2, 3)
        x = np.broadcast_to(v.astype(np.uint8), (2, 40, 50, 3))
        out = np.asarray(io.preprocess(x, size=(16, 24), short_side=30, mean=mean, std=std))
        expected = (v / 255.0 - mean) / std  # float64 reference
        np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("resize_kw", [{"resize": "none"}, {"resize": "direct", "resize_to": (20, 30)}])
def test_center_crop_takes_the_middle(resize_kw):
    x = coord_frames()
    out = np.asarray(io.preprocess(x, size=(10, 12), **resize_kw)) * 255.0  # undo the default x / 255
    top, left = (20 - 10) // 2, (30 - 12) // 2
    np.testing.assert_allclose(out, x[:, top : top + 10, left : left + 12], atol=1e-3)
    # identity resize + crop equal to the input size: the input itself
    same = np.asarray(io.preprocess(x, size=(20, 30), **resize_kw)) * 255.0
    np.testing.assert_allclose(same, x, atol=1e-3)


def test_resize_upsampling_matches_cv2_linear(real_frames):
    x = real_frames[:2, 100:160, 40:120].astype(np.float32)  # 60 x 80 -> 150 x 200
    out = np.asarray(io.preprocess(x, resize="direct", resize_to=(150, 200), crop="none", size=None)) * 255.0
    ref = np.stack([cv2.resize(f, (200, 150), interpolation=cv2.INTER_LINEAR) for f in x])
    assert np.abs(out - ref).max() < 0.01  # measured 0.0015 (float rounding only)


@pytest.mark.parametrize("target, max_mean", [((128, 171), 1.5), ((112, 112), 2.0), ((60, 80), 3.0)])
def test_resize_downsampling_close_to_cv2_area(real_frames, target, max_mean):
    """Antialiased bilinear (triangle filter) vs OpenCV's box-filter INTER_AREA on real footage.

    Measured mean |diff| on 0..255: 0.70 (128x171), 1.01 (112x112), 1.87 (60x80). Plain INTER_LINEAR (aliasing)
    is further away in every case.
    """
    x = real_frames.astype(np.float32)
    h, w = target
    out = np.asarray(io.preprocess(x, resize="direct", resize_to=target, crop="none", size=None)) * 255.0
    area = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in x])
    linear = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in x])
    d_area, d_linear = np.abs(out - area).mean(), np.abs(out - linear).mean()
    assert d_area < max_mean
    assert d_area < d_linear


def test_jit_and_vmap(real_frames):
    x = np.stack([real_frames, real_frames[::-1]])  # [2, 4, 240, 320, 3]
    f = jax.jit(functools.partial(io.preprocess, preset="c3d"))
    eager = io.preprocess(x, preset="c3d")
    np.testing.assert_allclose(f(x), eager, atol=1e-4)
    np.testing.assert_allclose(jax.vmap(f)(jnp.asarray(x)), eager, atol=1e-4)


def test_presets_documented_numbers():
    c3d = io.PRESETS["c3d"]
    np.testing.assert_allclose(np.array(c3d["mean"]) * 255, SPORTS1M, atol=1e-9)
    np.testing.assert_allclose(np.array(c3d["std"]) * 255, 1.0, atol=1e-12)
    assert (c3d["resize"], tuple(c3d["resize_to"]), tuple(c3d["size"]), c3d["crop"]) == (
        "direct", (128, 171), (112, 112), "center")
    for name in ("r2plus1d", "kinetics"):
        p = io.PRESETS[name]
        np.testing.assert_allclose(p["mean"], KIN_MEAN)
        np.testing.assert_allclose(p["std"], KIN_STD)
        assert (p["resize"], tuple(p["resize_to"]), tuple(p["size"]), p["crop"]) == (
            "direct", (128, 171), (112, 112), "center")
    li = io.PRESETS["li2021"]
    np.testing.assert_allclose(li["mean"], KIN_MEAN)
    np.testing.assert_allclose(li["std"], KIN_STD)
    assert tuple(li["resize_to"]) == (112, 112) and tuple(li["size"]) == (112, 112)


@pytest.mark.parametrize("preset", ["c3d", "r2plus1d", "kinetics", "li2021"])
def test_presets_on_constant_frames(preset):
    v = np.array([200, 50, 120])
    x = np.broadcast_to(v.astype(np.uint8), (2, 240, 320, 3))
    out = np.asarray(io.preprocess(x, preset=preset))
    assert out.shape == (2, 112, 112, 3)
    expected = v - SPORTS1M if preset == "c3d" else (v / 255.0 - KIN_MEAN) / KIN_STD
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), atol=1e-4)


def test_c3d_resizes_directly_then_crops_middle():
    """A 128x171 coordinate frame is already the c3d resize size: the output is rows 8..119, columns 29..140."""
    x = coord_frames(2, 128, 171)
    out = np.asarray(io.preprocess(x, preset="c3d", mean=0.0, std=1 / 255))
    np.testing.assert_allclose(out, x[:, 8:120, 29:141], atol=1e-3)
    # a 4:3 frame is squashed to 128x171, not short-side resized: row 0 of the 240-row input maps to row 0
    big = coord_frames(1, 240, 320)
    out = np.asarray(io.preprocess(big, preset="c3d", mean=0.0, std=1 / 255))
    # row coordinate after direct resize at output row r (crop top 8): (r + 8 + 0.5) * 240 / 128 - 0.5
    rows = (np.arange(112) + 8 + 0.5) * 240 / 128 - 0.5
    np.testing.assert_allclose(out[0, :, 56, 0], rows, atol=0.05)


def test_explicit_kwargs_override_preset(real_frames):
    out = io.preprocess(real_frames, preset="c3d", mean=0.0, std=1.0)
    ref = io.preprocess(real_frames, resize="direct", resize_to=(128, 171))
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert io.preprocess(real_frames, preset="li2021", size=(64, 64), resize_to=(64, 64)).shape == (4, 64, 64, 3)
    assert io.PRESETS["c3d"]["size"] == (112, 112)  # presets are not mutated by overrides


@pytest.mark.parametrize(
    "shape, kw, err, match",
    [
        ((20, 30, 3), {}, ValueError, "rank >= 4"),
        ((2, 20, 30, 4), {}, ValueError, "3 channels"),
        ((2, 20, 30, 3), {"size": (0, 5)}, ValueError, "size"),
        ((2, 20, 30, 3), {"size": (200, 5)}, ValueError, "larger than the resized frame"),
        ((2, 20, 30, 3), {"preset": "vgg"}, ValueError, "preset"),
        ((2, 20, 30, 3), {"resize": "area"}, ValueError, "resize"),
        ((2, 20, 30, 3), {"crop": "random"}, ValueError, "crop"),
        ((2, 20, 30, 3), {"resize": "none", "crop": "none"}, ValueError, "crop='none'"),
        ((2, 20, 30, 3), {"std": (1.0, 0.0, 1.0)}, ValueError, "std"),
        ((2, 20, 30, 3), {"mean": (0.1, 0.2)}, ValueError, "mean"),
        ((2, 20, 30, 3), {"short_side": 12.5}, ValueError, "short_side"),
        ((2, 20, 30, 3), {"resize": "direct", "resize_to": (5,)}, ValueError, "resize_to"),
        ((2, 20, 30, 3), {"resize": "direct", "short_side": (16, 16)}, ValueError, "resize_to"),
    ],
)
def test_validation(shape, kw, err, match):
    with pytest.raises(err, match=match):
        io.preprocess(np.zeros(shape, np.uint8), **kw)


@pytest.mark.parametrize("spec", [None, "c3d", "i3d", "li2021", {"resize": "short_side", "short_side": 40,
                                                                 "size": (32, 32), "crop": "center"}])
@pytest.mark.parametrize("hw", [(60, 90), (240, 320), (300, 200)])
def test_input_geometry_is_the_crop_preprocess_makes(spec, hw):
    from jaxvx.io import input_geometry, preprocess_options

    h, w = hw
    frames = np.zeros((1, h, w, 3), np.uint8)
    geo = input_geometry(h, w, spec)
    assert io.preprocess(frames, **preprocess_options(spec)).shape[1:3] == (geo.ch, geo.cw)
    assert geo.identity == (spec is None)
    assert geo.top == (geo.rh - geo.ch) // 2 and geo.left == (geo.rw - geo.cw) // 2


def test_input_geometry_errors_name_the_argument():
    from jaxvx.io import input_geometry

    with pytest.raises(ValueError, match="height must be an int >= 1, got 0"):
        input_geometry(0, 10)
    with pytest.raises(ValueError, match=r"unknown keywords \['sise'\]"):
        input_geometry(10, 10, {"sise": 4})
    with pytest.raises(ValueError, match="crop size"):
        input_geometry(10, 10, {"size": 32, "resize": "none"})
    with pytest.raises(TypeError, match="preprocess must be None, a preset name or a dict"):
        input_geometry(10, 10, 3)
