"""Video files that used to take a run down or mislead it: uncompressed AVI (OpenCV aborts on it), folder entries
that are not readable files, whole files decoded for a few frames, and mp4s that browsers do not play."""

import errno
import os
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import tracemalloc
import warnings

import cv2
import numpy as np
import pytest

import jaxvx
from jaxvx import data, io
from jaxvx.data import _folder
from jaxvx.io import _video, _writer

from _avi import dib_avi, dib_frame

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------------------------
# Uncompressed AVI, written byte by byte


def noise(t, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


DIB_CASES = {  # name: (frames [T, H, W], dib_avi keywords)
    "bgr24_64x48": ((6, 48, 64), {}),
    "bgr24_320x240": ((4, 240, 320), {}),
    "bgr24_63x47_padded_rows": ((5, 47, 63), {}),
    "bgr24_top_down": ((3, 48, 64), {"bottom_up": False}),
    "fourcc_DIB": ((3, 48, 64), {"fourcc": b"DIB "}),
    "bgrx32": ((3, 30, 40), {"bits": 32}),
}

_READ_IN_CHILD = textwrap.dedent("""
    import sys, numpy as np
    from jaxvx import data, io
    folder, names = sys.argv[1], sys.argv[2:]
    out = {}
    for name in names:
        path = f"{folder}/{name}.avi"
        out[name] = io.read_video(path)
        out[name + "/info"] = np.array(io.video_info(path), dtype=np.float64)
    out["folder"] = data.folder(folder + "/..")[0]["video"]
    np.savez(folder + "/decoded.npz", **out)
""")


def test_uncompressed_avi_decodes_exactly_and_does_not_abort_the_process(tmp_path):
    """OpenCV corrupts its heap on bottom-up BGR24 AVI (SIGABRT); decoded in a child process so a crash shows as
    its exit status, not as pytest dying."""
    clips = tmp_path / "Class"
    clips.mkdir()
    truth = {}
    for k, (name, (shape, kw)) in enumerate(DIB_CASES.items()):
        truth[name] = noise(*shape, seed=k)
        (clips / f"{name}.avi").write_bytes(dib_avi(truth[name], fps=12, **kw))
    child = subprocess.run([sys.executable, "-c", _READ_IN_CHILD, str(clips), *DIB_CASES], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, f"exit status {child.returncode}: {child.stderr[-2000:]}"
    decoded = np.load(clips / "decoded.npz")
    for name, frames in truth.items():
        np.testing.assert_array_equal(decoded[name], frames, err_msg=name)  # rows the right way up, RGB
        t, h, w, _ = frames.shape
        assert tuple(decoded[name + "/info"]) == (t, 12.0, h, w), name
    np.testing.assert_array_equal(decoded["folder"], truth[sorted(DIB_CASES)[0]])


def test_uncompressed_avi_prefix_indices_and_truncation(tmp_path):
    frames = noise(10, 24, 34)
    path = tmp_path / "raw.avi"
    path.write_bytes(dib_avi(frames))
    np.testing.assert_array_equal(io.read_video(path, max_frames=3), frames[:3])
    np.testing.assert_array_equal(io.read_video(path, indices=[7, 2, 7]), frames[[7, 2, 7]])
    np.testing.assert_array_equal(np.stack(list(io.iter_frames(path))), frames)  # what jaxvx stream can read
    whole = path.read_bytes()
    frame_chunk = 8 + len(dib_frame(frames[0]))
    cut = whole.index(b"movi") + 4 + 6 * frame_chunk + 100  # inside frame 6
    (tmp_path / "cut.avi").write_bytes(whole[:cut])
    with pytest.warns(io.TruncatedVideoWarning, match="decoded only 6 frame"):
        np.testing.assert_array_equal(io.read_video(tmp_path / "cut.avi"), frames[:6])
    with pytest.warns(io.TruncatedVideoWarning):
        video, idx = io.read_sampled(tmp_path / "cut.avi", lambda n: io.segment_indices(n, 3))
    np.testing.assert_array_equal(idx, io.segment_indices(6, 3))
    np.testing.assert_array_equal(video, frames[idx])
    with pytest.raises(jaxvx.VideoError, match="frame 8 was asked for but only 6"):
        io.read_video(tmp_path / "cut.avi", indices=[8])


def test_uncompressed_avi_with_an_unsupported_depth(tmp_path):
    path = tmp_path / "gray.avi"
    body = bytearray(dib_avi(noise(2, 8, 8)))
    at = body.index(b"strf") + 8 + 14  # biBitCount
    body[at:at + 2] = struct.pack("<H", 8)
    path.write_bytes(bytes(body))
    with pytest.raises(jaxvx.VideoError, match="8-bit frames.*only 24- and 32-bit"):
        io.read_video(path)


# ---------------------------------------------------------------------------------------------------------------
# What a path is, in words


def _stat(mode: int, size: int = 10) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, 0, 0, size, 0, 0, 0))


@pytest.mark.parametrize("mode, size, reason", [
    (stat.S_IFDIR | 0o755, 4096, "it is a directory"),
    (stat.S_IFIFO | 0o644, 0, "FIFO"),
    (stat.S_IFSOCK | 0o644, 0, "socket"),
    (stat.S_IFCHR | 0o644, 0, "device"),
    (stat.S_IFREG | 0o644, 0, "the file is empty"),
])
def test_mode_reasons(mode, size, reason):
    assert reason in _video._mode_problem(_stat(mode, size))


def test_readable_regular_file_has_no_mode_reason():
    assert _video._mode_problem(_stat(stat.S_IFREG | 0o644)) is None


@pytest.mark.parametrize("err, reason", [
    (OSError(errno.ELOOP, "Too many levels of symbolic links"), "symbolic link loop"),
    (PermissionError(errno.EACCES, "Permission denied"), "cannot be searched"),
    (FileNotFoundError(errno.ENOENT, "No such file"), "no such file"),
    (OSError(errno.EIO, "Input/output error"), "Input/output error"),
])
def test_stat_reasons(tmp_path, err, reason):
    assert reason in _video._stat_problem(str(tmp_path / "nowhere.avi"), err)


def _deny(monkeypatch, module, name, denied: set, fail):
    """Make ``module.name(path)`` fail for ``denied`` paths (root ignores chmod 000, so permissions are faked)."""
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda path: fail(path) if os.fspath(path) in denied else real(path))


def _forbid(tmp_path, monkeypatch, locked_file, locked_folder):
    """chmod 000 a file and a folder; where that does not stop this user (root), fake the refusals instead."""
    os.chmod(locked_file, 0)
    os.chmod(locked_folder, 0)
    if os.access(locked_file, os.R_OK):
        _deny(monkeypatch, _video, "_readable", {str(locked_file)}, lambda p: False)

        def refuse(path):
            raise PermissionError(errno.EACCES, "Permission denied", path)

        _deny(monkeypatch, _folder, "_listing", {str(locked_folder)}, refuse)


def test_folder_records_every_unreadable_entry_with_its_reason(tmp_path, monkeypatch):
    root = tmp_path / "set"
    cls = root / "Class"
    cls.mkdir(parents=True)
    io.write_video(cls / "good.avi", noise(3, 8, 8), 5, lossless=True)
    (cls / "empty.avi").write_bytes(b"")
    (cls / "dir.avi").mkdir()
    os.mkfifo(cls / "fifo.avi")
    os.symlink(cls / "loop.avi", cls / "loop.avi")
    os.symlink(tmp_path / "gone.mp4", cls / "dangling.mp4")
    (cls / "locked.avi").write_bytes(b"RIFF....")
    (root / "Locked").mkdir()
    (root / "Locked" / "x.avi").write_bytes(b"x")
    os.symlink(root / "TopLoop", root / "TopLoop")
    try:
        _forbid(tmp_path, monkeypatch, cls / "locked.avi", root / "Locked")
        vids = data.folder(root)
        expect = {
            "Class/dangling.mp4": "dangling symbolic link",
            "Class/dir.avi": "it is a directory",
            "Class/empty.avi": "the file is empty",
            "Class/fifo.avi": "FIFO (named pipe)",
            "Class/locked.avi": "this user may not read the file",
            "Class/loop.avi": "symbolic link loop",
            "Locked": "may not list the folder",
            "TopLoop": "symbolic link loop",
        }
        relative = [os.path.relpath(p, root) for p in vids.paths]
        assert sorted(relative) == sorted([*expect, "Class/good.avi"])
        assert vids.class_names == ("Class", "Locked")  # the unlistable folder is still a class
        assert vids.labels[relative.index("TopLoop")] == -1
        from jaxvx.pipeline._clips import iterate as _iterate  # what jaxvx run records as "skipped"

        got = {}
        worker = threading.Thread(target=lambda: got.update(
            {cid: rec for _, rec, cid in _iterate(vids, process_index=0, process_count=1, limit=None)}))
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), "reading the FIFO blocked"
        np.testing.assert_array_equal(got.pop("Class/good.avi")["video"], noise(3, 8, 8))
        for cid, reason in expect.items():
            assert isinstance(got[cid], jaxvx.VideoError), cid
            assert reason in str(got[cid]) and cid.split("/")[-1] in str(got[cid]), (cid, str(got[cid]))
    finally:
        os.chmod(root / "Locked", 0o755)


def test_split_file_lists_an_unreadable_entry_and_a_missing_one(tmp_path):
    cls = tmp_path / "Class"
    cls.mkdir()
    io.write_video(cls / "good.avi", noise(2, 8, 8), 5, lossless=True)
    os.symlink(cls / "loop.avi", cls / "loop.avi")
    split = tmp_path / "list.txt"
    split.write_text("Class/good.avi\nClass/loop.avi\n")
    vids = data.folder(tmp_path, split_file=split)
    with pytest.raises(jaxvx.VideoError, match="symbolic link loop"):
        vids[1]
    split.write_text("Class/good.avi\nClass/absent.avi\n")
    with pytest.raises(jaxvx.VideoError, match="absent.avi.*does not exist"):
        data.folder(tmp_path, split_file=split)


# ---------------------------------------------------------------------------------------------------------------
# Only the frames the sampling needs


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """A 240-frame 120 x 160 MJPG clip and its frames as decoded in full."""
    path = tmp_path_factory.mktemp("long") / "long.avi"
    tt = np.arange(240)[:, None, None, None]
    io.write_video(path, np.broadcast_to((tt * 7 + np.arange(3) * 60) % 256, (240, 120, 160, 3)).astype(np.uint8),
                   25)
    return path, io.read_video(path)


def _counting(monkeypatch):
    counts = {"read": 0, "skip": 0}
    for name in counts:
        real = getattr(_video._CvReader, name)

        def counted(self, _real=real, _name=name):
            counts[_name] += 1
            return _real(self)

        monkeypatch.setattr(_video._CvReader, name, counted)
    return counts


def test_sampled_reads_convert_only_the_picked_frames_and_stop_after_the_last(long_clip, monkeypatch):
    path, full = long_clip
    counts = _counting(monkeypatch)
    video, idx = io.read_sampled(path, lambda n: io.snippet_indices(n, 16, 2, 5))
    np.testing.assert_array_equal(video, full[idx])
    assert counts == {"read": 16, "skip": int(idx.max()) + 1 - 16}  # frames 36 .. 239 never decoded

    counts.update(read=0, skip=0)
    vids = data.folder(path.parent.parent, sample=lambda n: io.segment_indices(n, 8))
    item = vids[0]
    np.testing.assert_array_equal(item["indices"], io.segment_indices(240, 8))
    np.testing.assert_array_equal(item["video"], full[item["indices"]])
    assert counts["read"] == 8 and counts["read"] + counts["skip"] == int(item["indices"].max()) + 1


def test_a_snippet_needs_only_its_span(long_clip):
    path, full = long_clip
    for length, step, offset in [(16, 1, 0), (16, 2, 5), (8, "1/3", 3), (4, 7, 200)]:
        span = io.snippet_span(length, step, offset)
        assert span == int(io.snippet_indices(10_000, length, step, offset).max()) + 1
        for n in (span, span + 1, 240):
            if offset < min(n, span):
                np.testing.assert_array_equal(io.snippet_indices(n, length, step, offset, pad="loop"),
                                              io.snippet_indices(min(n, span), length, step, offset, pad="loop"))
    prefix = data.folder(path.parent.parent).reading(max_frames=io.snippet_span(16, 2, 5))[0]["video"]
    np.testing.assert_array_equal(prefix[io.snippet_indices(len(prefix), 16, 2, 5)],
                                  full[io.snippet_indices(240, 16, 2, 5)])


def test_sampled_read_holds_only_the_picked_frames(long_clip):
    """Peak Python-visible memory (numpy arrays, OpenCV's frames) of a 16-frame read of a 240-frame clip."""
    path, full = long_clip
    frame_bytes = full[0].nbytes
    tracemalloc.start()
    try:
        io.read_sampled(path, lambda n: io.segment_indices(n, 16))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < (16 + 8) * frame_bytes, f"peak {peak / frame_bytes:.1f} frames"  # the whole clip: 240 frames


# ---------------------------------------------------------------------------------------------------------------
# mp4 that browsers play


def _fourcc(path) -> str:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        return int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace").lower()
    finally:
        cap.release()


def test_mp4_is_h264_when_imageio_ffmpeg_is_installed(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    frames = noise(5, 32, 48)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither a codec warning nor JAX's warning about forking
        io.write_video(tmp_path / "overlay.mp4", frames, 10)
    assert _fourcc(tmp_path / "overlay.mp4") in ("avc1", "h264")
    back = io.read_video(tmp_path / "overlay.mp4")
    assert back.shape == frames.shape
    assert io.video_info(tmp_path / "overlay.mp4").fps == pytest.approx(10)
    assert os.listdir(tmp_path) == ["overlay.mp4"]


def test_mp4_falls_back_to_mp4v_with_a_warning_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(_writer, "_ffmpeg_exe", lambda: None)
    with pytest.warns(io.CodecWarning, match=r"mp4v.*pip install 'jaxvx\[h264\]'"):
        io.write_video(tmp_path / "overlay.mp4", noise(3, 16, 16), 10)
    assert _fourcc(tmp_path / "overlay.mp4") in ("mp4v", "fmp4")  # FFmpeg names MPEG-4 Part 2 'FMP4'


def test_interrupted_h264_write_leaves_nothing(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    with pytest.raises(KeyboardInterrupt):
        with io.VideoWriter(tmp_path / "x.mp4", 10) as writer:
            writer.write(noise(1, 16, 16)[0])
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_iter_frames_checks_the_path_at_the_call(tmp_path, long_clip):
    with pytest.raises(jaxvx.VideoError, match="no such file"):
        io.iter_frames(tmp_path / "absent.avi")
    path, full = long_clip
    frames = io.iter_frames(path)
    np.testing.assert_array_equal(next(frames), full[0])
    np.testing.assert_array_equal(next(frames), full[1])
    frames.close()


def test_writer_checks_each_frame(tmp_path):
    writer = io.VideoWriter(tmp_path / "x.avi", 10, lossless=True)
    writer.write(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"frame 1 has shape \(8, 10, 3\), the first frame \(8, 8, 3\)"):
        writer.write(np.zeros((8, 10, 3), np.uint8))
    writer.close()
    assert io.read_video(tmp_path / "x.avi").shape == (1, 8, 8, 3)
