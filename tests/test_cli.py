"""The command line: ``jaxvx data preview`` writes a contact sheet; bad input is one clear line, exit status 2."""

import subprocess
import sys

import cv2
import numpy as np

from jaxvx.cli import main


def test_preview_writes_a_sheet_with_one_row_per_clip(tmp_path, capsys):
    out = tmp_path / "sheet.png"
    assert main(["data", "preview", "--out", str(out), "--num", "3", "--frames", "8", "--size", "48",
                 "--title-frames", "2", "--context-cue", "1"]) == 0
    image = cv2.imread(str(out))
    assert image is not None and image.ndim == 3
    # 3 rows of (18 title + 112 cell + 5 bar + 4 gap) + 4 px border; 8 columns of 112 + 4
    assert image.shape[:2] == (4 + 3 * 139, 4 + 8 * 116)
    assert image.std() > 20  # frames, not an empty canvas
    assert "wrote" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file left behind"


def test_preview_draws_the_actor_box(tmp_path):
    out = tmp_path / "sheet.png"
    assert main(["data", "preview", "--out", str(out), "--num", "1", "--columns", "1", "--distractors", "0",
                 "--size", "112"]) == 0
    rgb = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    green = np.all(rgb == (40, 255, 40), axis=-1)
    assert green.sum() > 40  # the box outline


def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys):
    assert main(["data", "preview", "--out", str(tmp_path / "x.png"), "--frames", "4", "--title-frames", "4"]) == 2
    assert "title_frames must be < num_frames" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "jaxvx", "data", "preview", "-h"], capture_output=True, text=True)
    assert result.returncode == 0 and "--out" in result.stdout


def test_synthetic_clips_follow_the_card_and_truth_lands_on_the_model_grid():
    """A checkpoint trained on clips rendered at 64 x 64 and resized to 32 x 32: ``explain`` / ``run`` render at 64
    (as in training) and the ground truth is mapped through the card's resize onto the 32 x 32 input grid."""
    from jaxvx import data
    from jaxvx.cli import _card_synthetic_config, _truth_on_model_grid

    card = {"input_shape": [8, 32, 32, 3],
            "data": {"config": {"variant": "motion", "num_frames": 8, "height": 64, "width": 64, "distractors": 1}},
            "preprocess": {"size": [32, 32], "resize": "direct", "crop": "none"}}
    config = _card_synthetic_config(card)
    assert (config["height"], config["width"], config["num_frames"]) == (64, 64, 8)
    record = data.synthetic("test", num_clips=1, **config)[0]
    truth = _truth_on_model_grid(record, card)
    assert truth["motion"].shape == (8, 32, 32) and truth["actor"].shape == (8, 32, 32)
    boxes = truth["boxes"][truth["present"]]
    raw = np.asarray(record["boxes"])[record["present"]]
    np.testing.assert_array_equal(boxes[:, :2], np.floor(raw[:, :2] / 2))  # x_min, y_min halve
    np.testing.assert_array_equal(boxes[:, 2:], np.ceil((raw[:, 2:] + 1) / 2) - 1)  # inclusive max
    # the mapped motion mask still marks pixels inside the mapped boxes
    t = int(np.argmax(truth["motion"].reshape(8, -1).sum(1)))
    ys, xs = np.nonzero(truth["motion"][t])
    x0, y0, x1, y1 = truth["boxes"][t]
    assert ((xs >= x0 - 1) & (xs <= x1 + 1) & (ys >= y0 - 1) & (ys <= y1 + 1)).mean() > 0.9
    # a card without a data config: clips rendered at the model's input size
    assert _card_synthetic_config({"input_shape": [16, 24, 40, 3]}) == {"height": 24, "width": 40, "num_frames": 16}
