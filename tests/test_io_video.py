"""Decoding and encoding video files: real clips, broken files, round trips, atomic writes."""

import os
import pathlib
import re
import warnings

import cv2
import numpy as np
import pytest

import jaxvx
from jaxvx import io
from jaxvx.io import _video, _writer

VIDEO_EXTS = {".avi", ".mp4", ".mkv", ".mov", ".webm"}
SMALL_AVI = "ucf101_apply_eye_makeup.avi"
FULL_HD = "ntu_rgbd_S001C001P001R001A001.avi"


def readme_table(root: pathlib.Path) -> dict:
    """{file: (frames, height, width, fps)} parsed from the shared folder's README table (the independent truth)."""
    rows = {}
    for line in (root / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and os.path.splitext(cells[0])[1] in VIDEO_EXTS:
            h, w = re.fullmatch(r"(\d+)\s*x\s*(\d+)", cells[4]).groups()
            rows[cells[0]] = (int(cells[3]), int(h), int(w), float(cells[5]))
    return rows


def smooth_clip(t=8, h=64, w=96):
    tt, yy, xx = np.mgrid[0:t, 0:h, 0:w].astype(np.float64)
    return np.stack(
        [
            127.5 + 100 * np.sin(2 * np.pi * (xx / w + tt / t)),
            127.5 + 100 * np.cos(2 * np.pi * yy / h),
            127.5 + 100 * np.sin(2 * np.pi * (xx + yy) / (h + w)),
        ],
        -1,
    ).round().astype(np.uint8)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return np.inf if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ---------------------------------------------------------------------------------------------------------------
# Real clips


def test_readme_lists_every_clip(shared_videos):
    table = readme_table(shared_videos)
    on_disk = {p.name for p in shared_videos.iterdir() if p.suffix.lower() in VIDEO_EXTS}
    assert on_disk and set(table) == on_disk


def test_video_info_matches_readme_for_every_clip(shared_videos):
    for name, (frames, h, w, fps) in readme_table(shared_videos).items():
        info = io.video_info(shared_videos / name)
        assert isinstance(info, io.VideoInfo)
        assert (info.height, info.width) == (h, w), name
        assert abs(info.num_frames - frames) <= 2, (name, info)
        assert info.fps == pytest.approx(fps, abs=0.01), name


@pytest.mark.slow
def test_read_video_every_clip(shared_videos):
    for name, (frames, h, w, _) in readme_table(shared_videos).items():
        info = io.video_info(shared_videos / name)
        if h * w > 1280 * 720:  # keep full-HD reads short
            v = io.read_video(str(shared_videos / name), max_frames=6)
            assert v.shape == (6, h, w, 3), name
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # an intact file must not warn
                v = io.read_video(shared_videos / name)
            assert v.shape[1:] == (h, w, 3), name
            assert abs(v.shape[0] - info.num_frames) <= 2, (name, v.shape, info)
            assert abs(v.shape[0] - frames) <= 2, name
        assert v.dtype == np.uint8 and v.flags["C_CONTIGUOUS"], name
        assert v.std() > 5, name  # real content, not a blank buffer


def test_read_matches_opencv_rgb(shared_videos):
    """Independent reference: a plain cv2 loop with a BGR->RGB slice."""
    cap = cv2.VideoCapture(str(shared_videos / SMALL_AVI))
    ref = []
    for _ in range(5):
        ok, f = cap.read()
        assert ok
        ref.append(f[..., ::-1])
    cap.release()
    np.testing.assert_array_equal(io.read_video(shared_videos / SMALL_AVI, max_frames=5), np.stack(ref))


def test_max_frames_is_prefix_and_stops_decoding(shared_videos, monkeypatch):
    full = io.read_video(shared_videos / SMALL_AVI)
    part = io.read_video(shared_videos / SMALL_AVI, max_frames=7)
    np.testing.assert_array_equal(part, full[:7])
    assert io.read_video(shared_videos / SMALL_AVI, max_frames=10_000).shape == full.shape

    reads = []
    real = cv2.VideoCapture

    class Counting:
        def __init__(self, *a):
            self._cap = real(*a)

        def read(self, *a):
            reads.append(1)
            return self._cap.read(*a)

        def __getattr__(self, name):
            return getattr(self._cap, name)

    monkeypatch.setattr(_video.cv2, "VideoCapture", Counting)
    v = io.read_video(shared_videos / FULL_HD, max_frames=3)
    assert v.shape == (3, 1080, 1920, 3)
    assert len(reads) == 3  # not 103


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True])
def test_max_frames_validation(shared_videos, bad):
    with pytest.raises((TypeError, ValueError), match="max_frames"):
        io.read_video(shared_videos / SMALL_AVI, max_frames=bad)


# ---------------------------------------------------------------------------------------------------------------
# Broken input


def _assert_video_error(path, reason):
    for fn in (io.read_video, io.video_info):
        with pytest.raises(jaxvx.VideoError, match=reason) as exc:
            fn(path)
        assert str(path) in str(exc.value)
        assert isinstance(exc.value, ValueError)


def test_missing_and_directory(tmp_path):
    _assert_video_error(tmp_path / "nope.mp4", "no such file")
    d = tmp_path / "dir.mp4"
    d.mkdir()
    _assert_video_error(d, "directory")


def test_empty_and_text_files(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    _assert_video_error(empty, "empty")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    _assert_video_error(text, "cannot open")


def test_truncated_mp4_raises(shared_videos, tmp_path):
    """An mp4 cut in half loses its index (moov atom at the end): FFmpeg cannot open it."""
    data = (shared_videos / "arm_wrestling.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    _assert_video_error(cut, "cannot open")


def test_truncated_avi_returns_prefix_with_warning(shared_videos, tmp_path):
    src = shared_videos / SMALL_AVI
    data = src.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    claimed = io.video_info(cut).num_frames
    assert claimed == io.video_info(src).num_frames  # the header still claims the whole clip
    with pytest.warns(io.TruncatedVideoWarning, match=rf"decoded only \d+ frame.*claims {claimed}"):
        v = io.read_video(cut)
    full = io.read_video(src)
    assert 1 <= v.shape[0] < claimed
    assert v.shape[1:] == full.shape[1:]
    # frames before the cut decode exactly as from the intact file (the last one may be damaged)
    np.testing.assert_array_equal(v[: v.shape[0] - 1], full[: v.shape[0] - 1])
    # asking for fewer frames than survive is not a truncation
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert io.read_video(cut, max_frames=5).shape[0] == 5


def test_opens_but_no_decodable_frame(shared_videos, tmp_path):
    """An avi cut just after its header opens (and claims 164 frames) but decodes nothing."""
    data = (shared_videos / SMALL_AVI).read_bytes()
    cut = tmp_path / "header_only.avi"
    cut.write_bytes(data[:12000])
    cap = cv2.VideoCapture(str(cut))
    assert cap.isOpened() and not cap.read()[0]  # the premise, checked on OpenCV directly
    cap.release()
    _assert_video_error(cut, "no frame can be decoded")


# ---------------------------------------------------------------------------------------------------------------
# Writing


def test_rgb_order_via_lossless_roundtrip(tmp_path):
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    frames[0, ..., 0] = 255  # pure red
    frames[1, ..., 1] = 255  # pure green
    frames[2, ..., 2] = 255  # pure blue
    path = tmp_path / "rgb.avi"
    io.write_video(path, frames, fps=10, lossless=True)
    back = io.read_video(path)
    assert back.shape == frames.shape
    assert (back[0] == [255, 0, 0]).all() and (back[1] == [0, 255, 0]).all() and (back[2] == [0, 0, 255]).all()


def test_ffv1_is_bit_exact(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 24, 40, 3), dtype=np.uint8)
    path = tmp_path / "noise.AVI"
    io.write_video(path, frames, fps=12.5, lossless=True)
    np.testing.assert_array_equal(io.read_video(path), frames)
    info = io.video_info(path)
    assert info == (5, pytest.approx(12.5), 24, 40)


@pytest.mark.parametrize("ext, min_db", [(".avi", 30.0), (".mp4", 30.0)])  # measured: MJPG 38 dB, mp4v 36 dB
def test_lossy_roundtrip_psnr(tmp_path, ext, min_db):
    frames = smooth_clip()
    path = tmp_path / f"smooth{ext}"
    io.write_video(str(path), frames, fps=25.0)
    back = io.read_video(path)
    assert back.shape == frames.shape
    assert psnr(back, frames) > min_db
    assert io.video_info(path).fps == pytest.approx(25.0)


def test_write_accepts_jax_arrays_and_overwrites(tmp_path):
    import jax.numpy as jnp

    path = tmp_path / "x.avi"
    io.write_video(path, np.zeros((2, 8, 8, 3), np.uint8), 5, lossless=True)
    frames = np.full((3, 8, 8, 3), 77, np.uint8)
    io.write_video(path, jnp.asarray(frames), 5, lossless=True)
    np.testing.assert_array_equal(io.read_video(path), frames)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.avi"]  # no temporaries left behind


@pytest.mark.parametrize(
    "frames, fps, name, kw, err, match",
    [
        (np.zeros((2, 8, 8, 3), np.float32), 5, "a.avi", {}, TypeError, "uint8"),
        (np.zeros((8, 8, 3), np.uint8), 5, "a.avi", {}, ValueError, r"\[T, H, W, 3\]"),
        (np.zeros((2, 8, 8, 4), np.uint8), 5, "a.avi", {}, ValueError, r"\(2, 8, 8, 4\)"),
        (np.zeros((0, 8, 8, 3), np.uint8), 5, "a.avi", {}, ValueError, "T >= 1"),
        (np.zeros((2, 9, 8, 3), np.uint8), 5, "a.avi", {}, ValueError, "even"),
        (np.zeros((2, 8, 8, 3), np.uint8), 0, "a.avi", {}, ValueError, "fps"),
        (np.zeros((2, 8, 8, 3), np.uint8), float("nan"), "a.avi", {}, ValueError, "fps"),
        (np.zeros((2, 8, 8, 3), np.uint8), -3, "a.avi", {}, ValueError, "fps"),
        (np.zeros((2, 8, 8, 3), np.uint8), 5, "a.gif", {}, ValueError, r"\.avi, \.mp4"),
        (np.zeros((2, 8, 8, 3), np.uint8), 5, "noext", {}, ValueError, "supported extensions"),
        (np.zeros((2, 8, 8, 3), np.uint8), 5, "a.mp4", {"lossless": True}, ValueError, "lossless"),
    ],
)
def test_write_validation(tmp_path, frames, fps, name, kw, err, match):
    with pytest.raises(err, match=match):
        io.write_video(tmp_path / name, frames, fps, **kw)
    assert list(tmp_path.iterdir()) == []


def test_write_missing_folder(tmp_path):
    with pytest.raises(jaxvx.VideoError, match="does not exist"):
        io.write_video(tmp_path / "no" / "a.avi", np.zeros((1, 8, 8, 3), np.uint8), 5)


_REAL_WRITER = cv2.VideoWriter


class _Writer:
    """Stand-in for cv2.VideoWriter: writes through to a real writer, fails at frame `fail_at`, or never opens."""

    def __init__(self, fail_at=None, opens=True):
        self.fail_at, self.opens = fail_at, opens

    def __call__(self, *args):
        self.inner = _REAL_WRITER(*args)
        self.n = 0
        return self

    def isOpened(self):
        return self.opens and self.inner.isOpened()

    def write(self, frame):
        if self.n == self.fail_at:
            raise KeyboardInterrupt("simulated crash")
        self.n += 1
        self.inner.write(frame)

    def release(self):
        self.inner.release()


def test_crash_during_write_leaves_old_file_and_no_partial(tmp_path, monkeypatch):
    path = tmp_path / "clip.avi"
    old = np.full((2, 8, 8, 3), 9, np.uint8)
    io.write_video(path, old, 5, lossless=True)
    monkeypatch.setattr(_video.cv2, "VideoWriter", _Writer(fail_at=2))
    with pytest.raises(KeyboardInterrupt):
        io.write_video(path, np.zeros((6, 8, 8, 3), np.uint8), 5, lossless=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]
    np.testing.assert_array_equal(io.read_video(path), old)
    monkeypatch.setattr(_writer, "_ffmpeg_exe", lambda: None)  # OpenCV's mp4v writer
    with pytest.raises(KeyboardInterrupt), pytest.warns(io.CodecWarning):
        io.write_video(tmp_path / "new.mp4", np.zeros((6, 8, 8, 3), np.uint8), 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]


def test_writer_that_does_not_open(tmp_path, monkeypatch):
    monkeypatch.setattr(_video.cv2, "VideoWriter", _Writer(opens=False))
    monkeypatch.setattr(_writer, "_ffmpeg_exe", lambda: None)  # OpenCV's mp4v writer
    with pytest.raises(jaxvx.VideoError, match="did not open") as exc, pytest.warns(io.CodecWarning):
        io.write_video(tmp_path / "a.mp4", np.zeros((1, 8, 8, 3), np.uint8), 5)
    assert "a.mp4" in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_growth_when_container_under_reports(shared_videos, monkeypatch):
    """Decoding continues past the first allocation (a container that under-reports its length)."""
    full = io.read_video(shared_videos / SMALL_AVI, max_frames=40)
    monkeypatch.setattr(_video, "_MAX_PREALLOCATED_FRAMES", 3)
    np.testing.assert_array_equal(io.read_video(shared_videos / SMALL_AVI, max_frames=40), full)
