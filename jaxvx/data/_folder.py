"""A folder of videos in the UCF101 layout (``root/ClassName/clip.avi``) as a lazily decoded sequence source.

Nothing on disk stops the scan: a video-named entry that is not a readable file (a directory, a FIFO, a dangling
symbolic link, a link loop, an unreadable or empty file) is an item whose access raises :class:`jaxvx.VideoError`
with the reason (:func:`jaxvx.io.path_problem`), and so is a class folder that cannot be listed, so a run over the
folder records each as skipped with its reason and goes on.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence

from jaxvx._checks import is_int
from jaxvx._errors import VideoError
from jaxvx.io._video import _check_max_frames, _stat_problem, read_sampled, read_video

__all__ = ["folder", "FolderVideos", "VIDEO_EXTENSIONS"]

#: File extensions (lower case) recognised as videos when scanning a folder.
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm")


class FolderVideos(Sequence):
    """Videos of a folder with integer labels; item ``i`` is decoded on access.

    Build it with :func:`jaxvx.data.folder`.

    Attributes
    ----------
    root : str
        The folder.
    class_names : tuple of str
        Class names; label ``k`` is ``class_names[k]``.
    paths : tuple of str
        Video paths, in item order.
    labels : tuple of int
        Labels in ``[0, len(class_names))``, in item order.
    max_frames : int or None
        Passed to :func:`jaxvx.io.read_video` for every item.
    sample : callable or None
        ``sample(num_frames) -> int [K]``: decode only these frames of every item (:func:`jaxvx.io.read_sampled`),
        e.g. ``functools.partial(jaxvx.io.segment_indices, length=16)``. Not together with ``max_frames``.
    problems : mapping of str to str
        Items known at scan time to be unreadable (a class folder that cannot be listed, a top-level entry that
        cannot be looked up), path -> reason; their label is their class's, or -1 when they match no class.

    Notes
    -----
    ``videos[i]`` returns ``{"video": uint8 [T, H, W, 3] RGB, "label": int, "path": str, "class_name": str}``,
    with ``"indices"`` (int64 ``[K]``, the frames taken) when ``sample`` is set. A file that cannot be decoded, or
    an item in ``problems``, raises :class:`jaxvx.VideoError` from ``__getitem__`` naming the path and the reason;
    callers that want to skip such files catch it.
    """

    def __init__(self, root: str, class_names, paths, labels, max_frames: int | None = None,
                 sample: Callable | None = None, problems: Mapping[str, str] | None = None):
        self.root = root
        self.class_names = tuple(class_names)
        self.paths = tuple(paths)
        self.labels = tuple(int(v) for v in labels)
        self.max_frames = _check_max_frames(max_frames)
        self.sample = sample
        self.problems = dict(problems or {})
        if len(self.paths) != len(self.labels):
            raise ValueError(f"paths and labels differ in length: {len(self.paths)} != {len(self.labels)}")
        if sample is not None and max_frames is not None:
            raise ValueError(f"max_frames and sample: give at most one, got max_frames={max_frames} and sample")
        if sample is not None and not callable(sample):
            raise TypeError(f"sample must be a callable num_frames -> indices, got {type(sample).__name__}")

    def reading(self, *, max_frames: int | None = None, sample: Callable | None = None) -> FolderVideos:
        """The same videos decoded another way: at most ``max_frames`` from the start, or only ``sample``'s frames
        (a snippet of ``length`` frames with ``step`` and ``offset`` needs only the first
        :func:`jaxvx.io.snippet_span` frames)."""
        return FolderVideos(self.root, self.class_names, self.paths, self.labels, max_frames=max_frames,
                            sample=sample, problems=self.problems)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        if not is_int(index):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        n = len(self.paths)
        i = int(index)
        if not -n <= i < n:
            raise IndexError(f"index {index} out of range for {n} videos")
        i %= n
        path, label = self.paths[i], self.labels[i]
        if path in self.problems:
            raise VideoError(f"cannot read {path!r}: {self.problems[path]}")
        record = {"label": label, "path": path, "class_name": self.class_names[label]}
        if self.sample is None:
            return {"video": read_video(path, max_frames=self.max_frames), **record}
        video, indices = read_sampled(path, self.sample)
        return {"video": video, "indices": indices, **record}

    def __repr__(self) -> str:
        return f"FolderVideos(root={self.root!r}, videos={len(self)}, classes={len(self.class_names)})"


def _is_video(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def _listing(folder_path: str) -> list[str]:
    """The names in a folder, sorted; raises OSError when it cannot be listed."""
    return sorted(os.listdir(folder_path))


def _missing(path: str) -> bool:
    """No entry at all under this name (not even a dangling link; a path that cannot be searched is not missing:
    reading it says why)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def _list_problem(err: OSError) -> str:
    if isinstance(err, PermissionError):
        return "permission denied: this user may not list the folder"
    return f"the folder cannot be listed: {err.strerror or err}"


def _scan(root: str) -> tuple[dict[str, list[str]], dict[str, str], dict[str, str]]:
    """``(videos, unlisted, unresolved)``: class folder -> sorted video-named entries (whatever they are; reading
    one says what is wrong with it), class folder -> why it cannot be listed, and top-level entry -> why it cannot
    be looked up (a dangling link or a link loop: it may have been a class folder). Hidden entries, top-level
    files and folders holding no video-named entry are left out."""
    videos: dict[str, list[str]] = {}
    unlisted: dict[str, str] = {}
    unresolved: dict[str, str] = {}
    for name in _listing(root):
        path = os.path.join(root, name)
        if name.startswith("."):
            continue
        try:
            if not stat.S_ISDIR(os.stat(path).st_mode):
                continue
        except OSError as err:
            unresolved[name] = _stat_problem(path, err)
            continue
        try:
            files = [f for f in _listing(path) if _is_video(f)]
        except OSError as err:
            unlisted[name] = _list_problem(err)
            continue
        if files:
            videos[name] = files
    return videos, unlisted, unresolved


def _read_lines(path: str, what: str) -> list[tuple[int, str]]:
    if not os.path.isfile(path):
        raise ValueError(f"{what} {path!r} does not exist or is not a file")
    with open(path, encoding="utf-8") as fh:
        return [(n, line.strip()) for n, line in enumerate(fh, 1) if line.strip()]


def _read_class_index(path: str) -> tuple[str, ...]:
    """Parse a UCF101 ``classInd.txt``: lines ``"<1-based id> <ClassName>"``, ids 1..K each exactly once."""
    by_id: dict[int, str] = {}
    for n, line in _read_lines(path, "class_index"):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"class_index {path!r} line {n}: expected '<id> <ClassName>', got {line!r}")
        cid, name = int(parts[0]), parts[1]
        if cid in by_id:
            raise ValueError(f"class_index {path!r} line {n}: id {cid} appears twice")
        by_id[cid] = name
    if not by_id:
        raise ValueError(f"class_index {path!r} lists no classes")
    if sorted(by_id) != list(range(1, len(by_id) + 1)):
        raise ValueError(f"class_index {path!r}: ids must be 1..{len(by_id)}, each once; got {sorted(by_id)}")
    names = tuple(by_id[k] for k in range(1, len(by_id) + 1))
    if len(set(names)) != len(names):
        raise ValueError(f"class_index {path!r}: a class name appears twice")
    return names


def class_name_key(name: str) -> str:
    """A class name compared loosely: case folded, ``_`` and ``-`` read as spaces, runs of spaces as one
    (``"Arm_Wrestling"`` and ``"arm wrestling"`` are the same class)."""
    return " ".join(name.replace("_", " ").replace("-", " ").casefold().split())


def folder(root, *, split_file=None, class_index=None, class_names=None,
           max_frames: int | None = None, sample: Callable | None = None) -> FolderVideos:
    """Videos in the UCF101 layout ``root/ClassName/*.avi`` (also .mp4, .mkv, .mov, .webm) with labels.

    Parameters
    ----------
    root : str or os.PathLike
        Folder whose subfolders are classes. Hidden entries (names starting with ".") and files directly in
        ``root`` are ignored; subfolders holding no video are not classes.
    split_file : str or os.PathLike, optional
        An official UCF101 split file: ``trainlistNN.txt`` lines ``"ClassName/clip.avi <1-based label>"`` or
        ``testlistNN.txt`` lines ``"ClassName/clip.avi"``. Only the listed videos are kept, in listed order; a
        listed file missing under ``root`` raises :class:`jaxvx.VideoError` naming it. A label column must agree
        with the labels used (1-based): pass ``class_index`` when only some of the official classes are on disk.
    class_index : str or os.PathLike, optional
        UCF101 ``classInd.txt`` (lines ``"1 ApplyEyeMakeup"``); labels are its ids minus one and ``class_names``
        lists all of its classes (even those absent from disk). Default: the sorted names of the class folders.
    class_names : sequence of str, optional
        A model's class names (e.g. a checkpoint card's ``class_names``): labels are indices into it, each class
        folder matched to a name by :func:`class_name_key` (``arm_wrestling/`` is ``"arm wrestling"``); a folder
        that matches none is a ValueError naming it. Not together with ``class_index``.
    max_frames : int, optional
        Passed to :func:`jaxvx.io.read_video` for every item.
    sample : callable, optional
        ``sample(num_frames) -> int [K]``: decode only these frames of each item (:func:`jaxvx.io.read_sampled`).

    Returns
    -------
    FolderVideos
        Sorted by (class folder, file name) without a split file. Every non-hidden entry with a video extension
        in a class folder is an item, whatever it is (reading one that is not a readable video file raises
        :class:`jaxvx.VideoError` with the reason); a class folder that cannot be listed is one item (a class,
        in the default labelling), and a top-level dangling link or link loop one more (label -1 unless its name
        matches a class), both in ``problems`` and raising :class:`jaxvx.VideoError` with the reason when read.

    Raises
    ------
    ValueError
        ``root`` is not a folder, holds no videos, a split or class-index file is malformed, or a video's folder
        is not in the class index.
    jaxvx.VideoError
        A file listed in ``split_file`` is missing.
    """
    max_frames = _check_max_frames(max_frames)
    root_s = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root_s):
        raise ValueError(f"root {root_s!r} does not exist or is not a folder")

    found, unlisted, unresolved = _scan(root_s)
    if not found and not unlisted:
        raise ValueError(
            f"no videos found under {root_s!r}: expected the UCF101 layout root/ClassName/clip.avi with extensions "
            f"{', '.join(VIDEO_EXTENSIONS)}" + (f"; entries that cannot be looked up: {unresolved}" if unresolved else "")
        )
    classes = sorted({*found, *unlisted})

    if class_index is not None and class_names is not None:
        raise ValueError("class_index, class_names: give at most one of them")
    if class_names is not None:
        class_names = tuple(str(c) for c in class_names)
        keyed = {class_name_key(c): k for k, c in enumerate(class_names)}
        label_of = {cls: keyed[class_name_key(cls)] for cls in classes if class_name_key(cls) in keyed}
        missing = sorted(set(found) - set(label_of))
        if missing:
            raise ValueError(f"class_names: the class folders {missing} of {root_s!r} match none of the "
                             f"{len(class_names)} class names (compared case-insensitively, '_' as ' ')")
    else:
        class_names = _read_class_index(os.fspath(class_index)) if class_index is not None else tuple(classes)
        label_of = {name: k for k, name in enumerate(class_names)}
    problems = {os.path.join(root_s, name): why for name, why in {**unlisted, **unresolved}.items()}

    def label_for(cls: str, where: str) -> int:
        if cls not in label_of:
            raise ValueError(f"{where}: class folder {cls!r} is not in the class index {os.fspath(class_index)!r}")
        return label_of[cls]

    paths: list[str] = []
    labels: list[int] = []
    if split_file is None:
        for name in sorted({*classes, *unresolved}):
            if name in found:
                lab = label_for(name, os.path.join(root_s, name))
                paths += [os.path.join(root_s, name, f) for f in found[name]]
                labels += [lab] * len(found[name])
            else:  # a folder that cannot be listed, or an entry that cannot be looked up: one skipped item
                paths.append(os.path.join(root_s, name))
                labels.append(label_of.get(name, -1))
    else:
        split_s = os.fspath(split_file)
        for n, line in _read_lines(split_s, "split_file"):
            parts = line.split()
            if len(parts) not in (1, 2):
                raise ValueError(
                    f"split_file {split_s!r} line {n}: expected 'ClassName/clip.avi [label]', got {line!r}"
                )
            rel = parts[0].replace("\\", "/")
            segs = [s for s in rel.split("/") if s]
            if len(segs) != 2:
                raise ValueError(f"split_file {split_s!r} line {n}: expected a 'ClassName/clip' path, got {rel!r}")
            cls = segs[0]
            full = os.path.join(root_s, *segs)
            if _missing(full):
                raise VideoError(f"video {full!r} listed in split_file {split_s!r} (line {n}) does not exist")
            lab = label_for(cls, f"split_file {split_s!r} line {n}")
            if len(parts) == 2:
                if not parts[1].isdigit() or int(parts[1]) - 1 != lab:
                    hint = (
                        "" if class_index is not None else " (labels come from sorted folder names; pass class_index)"
                    )
                    raise ValueError(
                        f"split_file {split_s!r} line {n}: label {parts[1]!r} of {rel!r} does not match the 1-based "
                        f"label {lab + 1} of class {cls!r}{hint}"
                    )
            paths.append(full)
            labels.append(lab)
        if not paths:
            raise ValueError(f"split_file {split_s!r} lists no videos")
    return FolderVideos(root_s, class_names, paths, labels, max_frames=max_frames, sample=sample, problems=problems)
