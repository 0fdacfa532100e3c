"""A UCF101-style folder of real clips (symlinks to the shared videos) as a FolderVideos source."""

import os
from collections.abc import Sequence

import numpy as np
import pytest

import jaxvx
from jaxvx import io
from jaxvx.data import FolderVideos, folder

# class folder -> [(file name in the folder, shared clip it links to)]
LAYOUT = {
    "ApplyEyeMakeup": [("v_ApplyEyeMakeup_g08_c01.avi", "ucf101_apply_eye_makeup.avi"),
                       ("v_ApplyEyeMakeup_g09_c02.avi", "ucf101_apply_eye_makeup.avi")],
    "ArmWrestling": [("v_ArmWrestling_g01_c01.mp4", "arm_wrestling.mp4")],
    "Basketball": [("v_Basketball_g01_c01.mp4", "basketball.mp4"),
                   ("v_Basketball_g02_c01.avi", None)],  # None: a broken file (text)
    "CleaningPool": [("v_CleaningPool_g01_c01.MP4", "cleaning_pool.mp4")],
}
SHAPES = {"ucf101_apply_eye_makeup.avi": (240, 320), "arm_wrestling.mp4": (256, 340), "basketball.mp4": (240, 426),
          "cleaning_pool.mp4": (256, 340)}
# official-style class index: not alphabetical, and with a class that has no folder on disk
CLASS_IND = ["Basketball", "ApplyEyeMakeup", "Drumming", "CleaningPool", "ArmWrestling"]


@pytest.fixture
def ucf(tmp_path, shared_videos):
    root = tmp_path / "UCF101"
    for cls, files in LAYOUT.items():
        (root / cls).mkdir(parents=True)
        for name, src in files:
            if src is None:
                (root / cls / name).write_text("not a video\n")
            else:
                os.symlink(shared_videos / src, root / cls / name)
    (root / "ApplyEyeMakeup" / "notes.txt").write_text("ignored")
    (root / "ApplyEyeMakeup" / ".hidden.avi").write_text("ignored")
    (root / "EmptyClass").mkdir()  # no videos: not a class
    (root / "README.avi").write_text("a file at the top level is not a class")
    (tmp_path / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASS_IND, 1)))
    return root


def test_sorted_folder_labels(ucf):
    vids = folder(ucf)
    assert isinstance(vids, FolderVideos) and isinstance(vids, Sequence)
    names = sorted(LAYOUT)
    assert vids.class_names == tuple(names)
    expected = [(c, n) for c in names for n, _ in sorted(LAYOUT[c])]
    assert len(vids) == len(expected) == 6
    assert [os.path.relpath(p, ucf).split(os.sep) for p in vids.paths] == [[c, n] for c, n in expected]
    assert list(vids.labels) == [names.index(c) for c, _ in expected]
    assert all(os.path.isabs(p) for p in vids.paths)


def test_items_decode_lazily_with_max_frames(ucf):
    vids = folder(ucf, max_frames=4)
    src = {n: s for files in LAYOUT.values() for n, s in files}
    for i in range(len(vids)):
        name = os.path.basename(vids.paths[i])
        if src[name] is None:
            continue
        item = vids[i]
        assert set(item) == {"video", "label", "path", "class_name"}
        assert item["video"].dtype == np.uint8 and item["video"].shape == (4, *SHAPES[src[name]], 3)
        assert item["label"] == vids.labels[i] and item["path"] == vids.paths[i]
        assert item["class_name"] == vids.class_names[item["label"]] == os.path.basename(os.path.dirname(item["path"]))
        np.testing.assert_array_equal(item["video"], io.read_video(item["path"], max_frames=4))
    assert vids[-1]["path"] == vids.paths[-1]
    with pytest.raises(IndexError):
        vids[len(vids)]
    with pytest.raises(TypeError):
        vids[0:2]


def test_broken_file_raises_video_error_on_access_only(ucf):
    vids = folder(ucf, max_frames=2)  # building the source decodes nothing
    broken = [i for i, p in enumerate(vids.paths) if p.endswith("g02_c01.avi")]
    assert len(broken) == 1
    with pytest.raises(jaxvx.VideoError, match="v_Basketball_g02_c01.avi"):
        vids[broken[0]]
    assert vids[broken[0] - 1]["video"].shape[0] == 2  # the neighbours still load


def test_class_index(ucf):
    vids = folder(ucf, class_index=ucf.parent / "classInd.txt")
    assert vids.class_names == tuple(CLASS_IND)
    for p, lab in zip(vids.paths, vids.labels):
        assert CLASS_IND[lab] == os.path.basename(os.path.dirname(p))
    (ucf.parent / "small.txt").write_text("1 ApplyEyeMakeup\n2 Basketball\n")
    with pytest.raises(ValueError, match="ArmWrestling"):
        folder(ucf, class_index=ucf.parent / "small.txt")


@pytest.mark.parametrize("content, match", [("1 A\n1 B\n", "twice"), ("1 A\n3 B\n", r"1\.\.2"), ("A 1\n", "line 1"),
                                            ("", "no classes")])
def test_bad_class_index(ucf, content, match):
    (ucf.parent / "bad.txt").write_text(content)
    with pytest.raises(ValueError, match=match):
        folder(ucf, class_index=ucf.parent / "bad.txt")


def test_trainlist_split_keeps_listed_order(ucf):
    ci = ucf.parent / "classInd.txt"
    split = ucf.parent / "trainlist01.txt"
    listed = [("CleaningPool/v_CleaningPool_g01_c01.MP4", 4), ("ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c02.avi", 2),
              ("Basketball/v_Basketball_g01_c01.mp4", 1)]
    split.write_text("".join(f"{p} {lab}\r\n" for p, lab in listed) + "\n")
    vids = folder(ucf, split_file=split, class_index=ci, max_frames=1)
    assert [os.path.relpath(p, ucf).replace(os.sep, "/") for p in vids.paths] == [p for p, _ in listed]
    assert list(vids.labels) == [lab - 1 for _, lab in listed]
    assert vids[0]["class_name"] == "CleaningPool"
    # the label column must agree with the labels in use: sorted folder names disagree with classInd here
    with pytest.raises(ValueError, match="class_index"):
        folder(ucf, split_file=split)


def test_testlist_split_without_labels(ucf):
    split = ucf.parent / "testlist01.txt"
    split.write_text("ArmWrestling/v_ArmWrestling_g01_c01.mp4\nApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi\n")
    vids = folder(ucf, split_file=split)
    assert len(vids) == 2
    assert [vids.class_names[k] for k in vids.labels] == ["ArmWrestling", "ApplyEyeMakeup"]
    assert vids.class_names == tuple(sorted(LAYOUT))


def test_split_with_missing_file(ucf):
    split = ucf.parent / "testlist02.txt"
    split.write_text("ArmWrestling/v_ArmWrestling_g01_c01.mp4\nArmWrestling/v_ArmWrestling_g07_c03.avi\n")
    with pytest.raises(jaxvx.VideoError, match="v_ArmWrestling_g07_c03.avi"):
        folder(ucf, split_file=split)


@pytest.mark.parametrize("content, match", [("a b c\n", "line 1"), ("just_a_file.avi\n", "ClassName/clip"),
                                            ("\n\n", "no videos")])
def test_bad_split_file(ucf, content, match):
    (ucf.parent / "split.txt").write_text(content)
    with pytest.raises(ValueError, match=match):
        folder(ucf, split_file=ucf.parent / "split.txt")


def test_empty_or_missing_root(tmp_path):
    with pytest.raises(ValueError, match="no videos found"):
        folder(tmp_path)
    (tmp_path / "Class").mkdir()
    (tmp_path / "Class" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no videos found"):
        folder(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="max_frames"):
        folder(tmp_path, max_frames=0)


def test_class_names_label_folders_in_a_models_classes(tmp_path, shared_videos):
    """Folders named after a model's classes (``arm_wrestling/`` for "arm wrestling") get that model's labels; a
    folder no class name matches is an error naming it; class_names and class_index exclude each other."""
    names = ["abseiling", "arm wrestling", "cleaning pool", "dribbling basketball"]
    root = tmp_path / "kinetics"
    for cls, src in (("arm_wrestling", "arm_wrestling.mp4"), ("Cleaning-Pool", "cleaning_pool.mp4")):
        (root / cls).mkdir(parents=True)
        os.symlink(shared_videos / src, root / cls / src)
    vids = folder(root, class_names=names)
    assert vids.class_names == tuple(names)
    assert [vids.class_names[k] for k in vids.labels] == ["cleaning pool", "arm wrestling"]  # sorted by folder
    (root / "juggling_fire").mkdir()
    os.symlink(shared_videos / "basketball.mp4", root / "juggling_fire" / "basketball.mp4")
    with pytest.raises(ValueError, match=r"class folders \['juggling_fire'\].*match none"):
        folder(root, class_names=["arm wrestling", "cleaning pool"])
    with pytest.raises(ValueError, match="at most one"):
        folder(root, class_names=names, class_index=tmp_path / "x.txt")
