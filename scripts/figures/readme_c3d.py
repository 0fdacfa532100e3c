"""The README's c3d-small figures, made with the README's commands and copied into docs/images (PNG and SVG):

- explain_c3d_small: ``jaxvx explain --checkpoint c3d-small --method deep_taylor --selective 4 --index 2``
  (its sheet.png / sheet.svg);
- sweep_c3d_small: ``jaxvx run --checkpoint c3d-small --method deep_taylor --step 1/16,...,32 --num-frames 512
  --num-clips 100`` (its sweep.png / sweep.svg). With ``--sweep DIR`` the figure is redrawn from that earlier run's
  sweep.json instead of running the sweep again.

    python scripts/figures/readme_c3d.py docs/images [--sweep sweep]
"""

import argparse
import json
import os
import shutil
import tempfile

from jaxvx import checkpoints, viz
from jaxvx.pipeline import Sweep
from jaxvx.cli import main as jaxvx

EXPLAIN = ["explain", "--checkpoint", "c3d-small", "--method", "deep_taylor", "--selective", "4", "--index", "2"]
NUM_FRAMES = 512
SWEEP = ["run", "--checkpoint", "c3d-small", "--method", "deep_taylor", "--step", "1/16,1/8,1/4,1/2,1,2,4,8,16,32",
         "--num-frames", str(NUM_FRAMES), "--num-clips", "100"]


def copy_pair(source_stem: str, target_stem: str) -> None:
    """Copy ``source_stem.png`` and ``.svg`` to ``target_stem.png`` and ``.svg``."""
    for suffix in (".png", ".svg"):
        shutil.copyfile(source_stem + suffix, target_stem + suffix)
        print(f"wrote {target_stem + suffix}")


def redraw_sweep(folder: str, target_stem: str) -> None:
    """The sweep figure from a finished run's ``sweep.json``, as ``jaxvx run`` draws it."""
    with open(os.path.join(folder, "sweep.json")) as f:
        table = json.load(f)
    card = checkpoints.load_card("c3d-small")
    figure = viz.sweep_figure(Sweep({}, table, "", None), title="c3d-small", chance=1 / len(card["class_names"]),
                              training_step=NUM_FRAMES / int(card["input_shape"][0]))
    for path in viz.save_figure(target_stem + ".png", figure, also=("svg",)):
        print(f"wrote {path}")


def main(images: str, sweep: str | None) -> None:
    with tempfile.TemporaryDirectory() as work:
        assert jaxvx(EXPLAIN + ["--out", os.path.join(work, "explain")]) == 0
        copy_pair(os.path.join(work, "explain", "sheet"), os.path.join(images, "explain_c3d_small"))
        if sweep is None:
            assert jaxvx(SWEEP + ["--out", os.path.join(work, "sweep")]) == 0
            copy_pair(os.path.join(work, "sweep", "sweep"), os.path.join(images, "sweep_c3d_small"))
        else:
            redraw_sweep(sweep, os.path.join(images, "sweep_c3d_small"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="?", default="docs/images")
    parser.add_argument("--sweep", help="an earlier sweep's output folder: redraw its figure, do not run it again")
    args = parser.parse_args()
    main(args.images, args.sweep)
