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
