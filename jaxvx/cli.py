"""The ``jaxvx`` command line.

    jaxvx data preview --out sheet.png [--variant motion] [--num 10] ...   contact sheet of the synthetic benchmark
    jaxvx data build [--config motion_16x64] [--data-dir DIR]               build it as a TFDS dataset (array_record)
    jaxvx train --model c3d-small --out DIR ...                             train a model (see ``jaxvx train -h``)

Each subcommand is a thin layer over a library function; errors in the input are reported as one line naming the
problem, with exit status 2.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _synthetic_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("synthetic benchmark")
    g.add_argument("--variant", default="motion", choices=["motion", "walk_run"])
    g.add_argument("--split", default="train", choices=["train", "test", "validation"])
    g.add_argument("--frames", type=int, default=16, help="frames per clip (T)")
    g.add_argument("--size", type=int, nargs="+", default=[112], metavar="PX", help="H [W] in pixels")
    g.add_argument("--distractors", type=int, default=2)
    g.add_argument("--context-cue", type=float, default=None, metavar="RATE")
    g.add_argument("--title-frames", type=int, default=0)
    g.add_argument("--action-frames", type=int, default=None)
    g.add_argument("--surround", default="static", choices=["static", "other"])
    g.add_argument("--seed", type=int, default=0)


def _synthetic_config(args) -> dict:
    if len(args.size) not in (1, 2):
        raise ValueError(f"--size takes H or H W, got {args.size}")
    height, width = (args.size * 2)[:2]
    return dict(
        variant=args.variant, num_frames=args.frames, height=height, width=width, distractors=args.distractors,
        context_cue=args.context_cue, title_frames=args.title_frames, action_frames=args.action_frames,
        surround=args.surround, seed=args.seed,
    )


def _preview(args) -> int:
    from jaxvx.data import synthetic
    from jaxvx.viz import contact_sheet, save_png

    source = synthetic(args.split, num_clips=max(args.num, 1), flow=False, **_synthetic_config(args))
    records = [source[i] for i in range(args.num)]
    sheet = contact_sheet(records, class_names=source.class_names, num_columns=args.columns)
    path = save_png(args.out, sheet)
    print(f"wrote {path}: {args.num} clips of {source.config.variant!r} ({args.split}), {sheet.shape[1]}x"
          f"{sheet.shape[0]} px; green = actor box, orange bar = action segment, magenta = context cue")
    return 0


def _build(args) -> int:
    from jaxvx.data import build_synthetic_tfds

    path = build_synthetic_tfds(args.config, data_dir=args.data_dir)
    print(f"built {args.config} in {path}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxvx", description="Explain video classifiers with JAX.")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="the synthetic benchmark and datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    preview = data_sub.add_parser("preview", help="draw a contact sheet of synthetic clips with their ground truth")
    preview.add_argument("--out", default="preview.png", help="PNG to write (default: preview.png)")
    preview.add_argument("--num", type=int, default=10, help="clips, one row each (default: 10)")
    preview.add_argument("--columns", type=int, default=8, help="frames per row (default: 8)")
    _synthetic_options(preview)
    preview.set_defaults(func=_preview)
    build = data_sub.add_parser("build", help="build the synthetic benchmark as a TFDS dataset (array_record)")
    build.add_argument("--config", default="motion_16x64", help="builder config (default: motion_16x64)")
    build.add_argument("--data-dir", default=None, help="TFDS data dir (default: TFDS's, ~/tensorflow_datasets)")
    build.set_defaults(func=_build)

    sub.add_parser("train", help="train a model on the synthetic benchmark (jaxvx train -h)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        from jaxvx.train import cli as train_cli

        return train_cli(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as error:
        print(f"jaxvx: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
